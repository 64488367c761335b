//! Which run a boot starts or continues, and the scheduler core it starts from.
//!
//! - A fresh run gets a new folder and a `runs` row (`running`), and starts from the config.
//! - A resume (`run --resume`, or `serve` finding an unfinished run of the same config)
//!   continues the newest unfinished run of this config file in the data directory: same run
//!   id, same folder (so the same workspace copies), its scheduler core rebuilt from the stored
//!   rows and the journal ([`SchedulerCore::recover`]).
//! - Refused ([`ResumeRefused`], exit 2) when there is nothing to resume, when the run used
//!   `durability: exit` and died before its end (nothing of it was stored), or when the
//!   config changed incompatibly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agentos_runtime::config::Config;
use agentos_runtime::durable::Durability;
use agentos_runtime::sched::{config_hash, SchedulerCore};
use agentos_runtime::store::{AuditRow, RunRow, RunStatus, Store};
use anyhow::Context as _;

use super::running::ResumeInfo;
use super::workspace::new_run_dir;
use crate::scheduler::unix_ms;

/// Whether a boot continues an earlier run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResumeMode {
    /// Always a new run (`run` without `--resume`).
    #[default]
    Fresh,
    /// Continue the newest unfinished run of the config; refuse if there is none
    /// (`run --resume`).
    Required,
    /// Continue the newest unfinished run of the config if there is one (`serve`).
    Auto,
}

/// A resume that cannot be done, and why (the CLI exits 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResumeRefused(pub String);

/// What boot starts from.
pub(super) struct Prepared {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub core: SchedulerCore,
    pub resume: Option<ResumeInfo>,
    /// Held while this process runs the run (see [`lock_run`]).
    pub lock: std::fs::File,
}

/// Takes the run's lock file, `<run_dir>/lock`, for as long as the returned file is open: a
/// second process that tries to resume a run that is still alive (a `serve` that is up, a
/// `run` that is still going) is refused instead of running its tasks twice. The kernel drops
/// the lock when the process dies, SIGKILL included, so a crashed run is free to resume.
fn lock_run(run_id: &str, run_dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = run_dir.join("lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the run's lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(ResumeRefused(format!(
                "run {run_id} is still running in another process{}; stop it first, or start \
                 a new run without --resume",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                }
            ))
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // The holder's pid, for the message above; the lock is what counts.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// The config file as runs record it (canonical, so `./c.ron` and `c.ron` are one config).
pub fn config_key(cfg: &Config) -> String {
    cfg.source
        .as_deref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Opens the store and picks (or creates) the run.
pub(super) fn prepare(
    cfg: &Arc<Config>,
    data_dir: &Path,
    store_path: &Path,
    mode: ResumeMode,
) -> anyhow::Result<Prepared> {
    let at = || format!("store {}", store_path.display());
    let mut store = Store::open(store_path).with_context(at)?;
    let key = config_key(cfg);
    let prior = match mode {
        ResumeMode::Fresh => None,
        ResumeMode::Required => Some(store.latest_unfinished(&key).with_context(at)?.ok_or_else(
            || {
                ResumeRefused(format!(
                    "no unfinished run of {key} in {} to resume; start one without --resume",
                    data_dir.display()
                ))
            },
        )?),
        ResumeMode::Auto => store.latest_unfinished(&key).with_context(at)?,
    };
    if let Some(run) = prior {
        if run.durability == Durability::Exit.label() && !run.checkpointed {
            let why = format!(
                "run {} used durability: exit and stopped before its end, so none of its \
                 progress was stored; start it again without --resume",
                run.run_id
            );
            if mode == ResumeMode::Required {
                return Err(ResumeRefused(why).into());
            }
            tracing::warn!(run = %run.run_id, "{why}; starting a new run");
            // Left behind for good: no later start picks it up again.
            store
                .set_run_status(&run.run_id, RunStatus::Abandoned, unix_ms())
                .with_context(at)?;
        } else {
            return resume(cfg, &mut store, store_path, run);
        }
    }
    let run_dir = new_run_dir(data_dir)?;
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let lock = lock_run(&run_id, &run_dir)?;
    let durability = cfg.runtime.durability;
    store
        .record_run(&RunRow {
            run_id: run_id.clone(),
            started_ms: unix_ms(),
            config_path: key,
            config_hash: config_hash(cfg),
            durability: durability.label().to_owned(),
            status: RunStatus::Running,
            finished_ms: None,
            resumes: 0,
            run_dir: run_dir.display().to_string(),
            checkpointed: durability != Durability::Exit,
        })
        .with_context(at)?;
    let mut store = store;
    store
        .append_audit(
            &run_id,
            &[system_entry(
                "run_started",
                serde_json::json!({"pid": std::process::id(), "durability": durability.label()}),
            )],
        )
        .with_context(at)?;
    Ok(Prepared {
        run_id,
        run_dir,
        core: SchedulerCore::new(cfg.clone(), Instant::now()),
        resume: None,
        lock,
    })
}

fn resume(
    cfg: &Arc<Config>,
    store: &mut Store,
    store_path: &Path,
    run: RunRow,
) -> anyhow::Result<Prepared> {
    let at = || format!("store {}", store_path.display());
    let run_dir = PathBuf::from(&run.run_dir);
    if !run_dir.is_dir() {
        anyhow::bail!(
            "cannot resume run {}: its folder {} is gone",
            run.run_id,
            run_dir.display()
        );
    }
    // Before anything is read: the run may still be alive elsewhere.
    let lock = lock_run(&run.run_id, &run_dir)?;
    let state = store.load_state(&run.run_id).with_context(at)?;
    let journaled = store.journaled_contexts(&run.run_id).with_context(at)?;
    let (core, found) =
        SchedulerCore::recover(cfg.clone(), &state, &journaled, Instant::now(), unix_ms())
            .map_err(|e| ResumeRefused(format!("cannot resume run {}: {e}", run.run_id)))?;
    let resumes = store.count_resume(&run.run_id).with_context(at)?;
    let info = ResumeInfo {
        run_id: run.run_id.clone(),
        resumes,
        tasks_succeeded: found.succeeded,
        attempts_continued: found.continued,
        tasks_waiting: found.waiting,
    };
    store
        .append_audit(
            &run.run_id,
            &[system_entry(
                "run_resumed",
                serde_json::json!({"pid": std::process::id(), "resumes": resumes,
                "tasks_succeeded": found.succeeded, "attempts_continued": found.continued,
                "tasks_waiting": found.waiting, "finished": found.finished}),
            )],
        )
        .with_context(at)?;
    Ok(Prepared {
        run_id: run.run_id,
        run_dir,
        core,
        resume: Some(info),
        lock,
    })
}

fn system_entry(kind: &str, detail: serde_json::Value) -> AuditRow {
    AuditRow {
        at_ms: unix_ms(),
        kind: kind.to_owned(),
        actor: "system".to_owned(),
        agent: None,
        instance: None,
        task: None,
        attempt: None,
        step: None,
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file of one task in `dir`, with `runtime` as its runtime section.
    fn config(dir: &Path, runtime: &str) -> Arc<Config> {
        let text = format!(
            r#"(version: 1, runtime: ({runtime}),
            backends: [(name: "b", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "b")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a", input: "x")])])"#
        );
        let file = dir.join("c.ron");
        std::fs::write(&file, text).unwrap();
        Arc::new(Config::load(&file).unwrap())
    }

    #[test]
    fn a_crashed_exit_run_is_refused_by_resume_and_abandoned_by_serve() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "durability: exit");
        let data = dir.path().join("data");
        let path = Store::path_in(&data);
        let first = prepare(&cfg, &data, &path, ResumeMode::Fresh).unwrap();
        // It dies before its end: nothing of it is checkpointed.
        let refused = prepare(&cfg, &data, &path, ResumeMode::Required)
            .err()
            .expect("refused");
        let why = refused.downcast_ref::<ResumeRefused>().expect("a refusal");
        assert!(why.0.contains("durability: exit"), "{why}");
        // serve starts afresh and leaves the dead run behind for good.
        let second = prepare(&cfg, &data, &path, ResumeMode::Auto).unwrap();
        assert!(second.resume.is_none());
        assert_ne!(second.run_id, first.run_id);
        let store = Store::open(&path).unwrap();
        let old = store.run(&first.run_id).unwrap().unwrap();
        assert_eq!(old.status, RunStatus::Abandoned);
        assert!(!old.status.resumable());
    }

    #[test]
    fn a_run_still_alive_in_another_process_is_not_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let data = dir.path().join("data");
        let path = Store::path_in(&data);
        let alive = prepare(&cfg, &data, &path, ResumeMode::Fresh).unwrap();
        // `alive.lock` is held, as a live process holds it.
        let refused = prepare(&cfg, &data, &path, ResumeMode::Required)
            .err()
            .expect("refused while the run is alive");
        let why = refused.downcast_ref::<ResumeRefused>().expect("a refusal");
        assert!(why.0.contains("still running in another process"), "{why}");
        assert!(
            why.0.contains(&format!("pid {}", std::process::id())),
            "{why}"
        );
        drop(alive);
        // The holder is gone (as after a crash): the run resumes.
        let again = prepare(&cfg, &data, &path, ResumeMode::Required).unwrap();
        assert_eq!(again.resume.map(|r| r.resumes), Some(1));
    }

    #[test]
    fn resume_continues_the_newest_unfinished_run_of_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "");
        let data = dir.path().join("data");
        let path = Store::path_in(&data);
        let none = prepare(&cfg, &data, &path, ResumeMode::Required)
            .err()
            .unwrap();
        assert!(none.to_string().contains("no unfinished run"), "{none}");
        let first = prepare(&cfg, &data, &path, ResumeMode::Fresh).unwrap();
        let (id, folder) = (first.run_id.clone(), first.run_dir.clone());
        drop(first); // the process that ran it is gone
        let again = prepare(&cfg, &data, &path, ResumeMode::Required).unwrap();
        assert_eq!(again.run_id, id);
        assert_eq!(again.run_dir, folder);
        assert_eq!(again.resume.as_ref().map(|r| r.resumes), Some(1));
    }
}
