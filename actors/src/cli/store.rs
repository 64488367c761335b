//! `audit`, `gc` and `runs`: commands that open a data directory's store file directly (no
//! server needed; a running one may keep writing, SQLite's WAL lets both go on).
//!
//! Exit codes: `0` done; `2` the command line is wrong (a bad `--since` or `--older-than`, an
//! unknown `--run`) or there is no store in the data directory; `3` the store could not be
//! read or written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use agentos_runtime::store::audit::{format_rfc3339_ms, parse_age, parse_since};
use agentos_runtime::store::{
    AuditEntry, AuditQuery, GcPolicy, GcReport, RunRow, Store, StoreError,
};
use serde_json::{json, Value};

use crate::client::table::{Align, Table};

/// What `agentos audit` was asked.
#[derive(Debug, Clone)]
pub struct AuditArgs {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The run (the newest when `None`).
    pub run: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this task (`workflow/task`).
    pub task: Option<String>,
    /// `10m`, `2h`, `7d` or an RFC 3339 time.
    pub since: Option<String>,
    /// At most this many entries (the newest).
    pub limit: usize,
    /// JSON lines instead of a table.
    pub json: bool,
}

/// Why a store command stopped.
enum Failure {
    /// Exit 2: the command line, or no store there.
    Usage(String),
    /// Exit 3: the store failed.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(why)) => {
            eprintln!("error: {why}");
            ExitCode::from(2)
        }
        Err(Failure::Store(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens the store of `data_dir`, refusing to create one where there is none.
fn open(data_dir: &Path) -> Result<Store, Failure> {
    let path = Store::path_in(data_dir);
    if !path.is_file() {
        return Err(Failure::Usage(format!(
            "no store at {} (is {} the --data-dir of a run?)",
            path.display(),
            data_dir.display()
        )));
    }
    Ok(Store::open(&path)?)
}

/// Prints `text` to stdout; a closed stdout (`| head`) ends the command quietly.
fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// `agentos audit`.
pub fn audit(args: AuditArgs) -> ExitCode {
    finish(run_audit(args))
}

fn run_audit(args: AuditArgs) -> Result<(), Failure> {
    let since_ms = match &args.since {
        Some(s) => {
            Some(parse_since(s, now_ms()).map_err(|e| Failure::Usage(format!("--since: {e}")))?)
        }
        None => None,
    };
    let store = open(&args.data_dir)?;
    let run = match args.run {
        Some(r) => {
            if store.run(&r)?.is_none() {
                return Err(Failure::Usage(format!(
                    "no run {r:?} in {} (`agentos runs --data-dir {}` lists them)",
                    args.data_dir.display(),
                    args.data_dir.display()
                )));
            }
            r
        }
        None => match store.runs()?.into_iter().next() {
            Some(newest) => newest.run_id,
            None => {
                eprintln!("no runs in {}", args.data_dir.display());
                return Ok(());
            }
        },
    };
    let entries = store.audit(&AuditQuery {
        run: Some(run.clone()),
        agent: args.agent,
        task: args.task,
        since_ms,
        limit: args.limit,
    })?;
    if args.json {
        let mut text = String::new();
        for e in &entries {
            text.push_str(&serde_json::to_string(e).unwrap_or_default());
            text.push('\n');
        }
        out(&text);
    } else {
        eprintln!("run {run}: {} entries", entries.len());
        out(&audit_table(&entries));
    }
    Ok(())
}

/// The entries as a table for people: time, kind, actor, task, attempt/step, what happened.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut t = Table::new(&[
        ("AT", Align::Left),
        ("KIND", Align::Left),
        ("ACTOR", Align::Left),
        ("TASK", Align::Left),
        ("ATTEMPT/STEP", Align::Right),
        ("WHAT", Align::Left),
    ]);
    for e in entries {
        let place = match (e.attempt, e.step) {
            (Some(a), Some(s)) => format!("{a}/{s}"),
            (Some(a), None) => a.to_string(),
            (None, Some(s)) => format!("-/{s}"),
            (None, None) => "-".into(),
        };
        t.row(vec![
            e.at.clone(),
            e.kind.clone(),
            e.actor.clone(),
            e.task.clone().unwrap_or_else(|| "-".into()),
            place,
            summary(e),
        ]);
    }
    t.render()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line about an entry.
fn summary(e: &AuditEntry) -> String {
    let d = &e.detail;
    match e.kind.as_str() {
        "llm_call" => {
            let usage = &d["usage"];
            let tokens = match (usage.get("prompt_tokens"), usage.get("completion_tokens")) {
                (Some(p), Some(c)) => format!("{p}+{c} tokens, "),
                _ => String::new(),
            };
            let calls: Vec<String> = d["reply"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| text(&c["name"]))
                .collect();
            if calls.is_empty() {
                format!("{tokens}reply: {}", text(&d["reply"]["content"]))
            } else {
                format!("{tokens}calls {}", calls.join(", "))
            }
        }
        "tool_call" | "tool_started" => {
            let mut s = format!("{}({})", text(&d["tool"]), text(&d["arguments"]));
            if e.kind == "tool_call" {
                s.push_str(&format!(" -> {}", text(&d["result"])));
            }
            s
        }
        "task_state" => {
            let mut s = format!("{} -> {}", text(&d["from"]), text(&d["to"]));
            if !d["reason"].is_null() {
                s.push_str(&format!(": {}", text(&d["reason"])));
            }
            s
        }
        _ => text(d),
    }
}

/// `agentos gc`: `keep_runs` or `older_than` (clap makes it exactly one).
pub fn gc(
    data_dir: &Path,
    keep_runs: Option<usize>,
    older_than: Option<&str>,
    include_unfinished: bool,
) -> ExitCode {
    finish(run_gc(data_dir, keep_runs, older_than, include_unfinished))
}

fn run_gc(
    data_dir: &Path,
    keep_runs: Option<usize>,
    older_than: Option<&str>,
    include_unfinished: bool,
) -> Result<(), Failure> {
    let policy = match (keep_runs, older_than) {
        (Some(n), _) => GcPolicy::KeepRuns(n),
        (None, Some(age)) => GcPolicy::OlderThan(
            parse_age(age).map_err(|e| Failure::Usage(format!("--older-than: {e}")))?,
        ),
        (None, None) => {
            return Err(Failure::Usage(
                "say which runs to remove: --keep-runs N or --older-than AGE".into(),
            ))
        }
    };
    let mut store = open(data_dir)?;
    let report = store.gc(&policy, include_unfinished)?;
    out(&gc_text(&report));
    Ok(())
}

/// What gc did, for people.
pub fn gc_text(r: &GcReport) -> String {
    let mut s = format!(
        "removed {} run{} ({} rows)\n",
        r.runs_removed.len(),
        if r.runs_removed.len() == 1 { "" } else { "s" },
        r.rows_removed
    );
    for id in &r.runs_removed {
        s.push_str(&format!("  removed {id}\n"));
    }
    for id in &r.kept_unfinished {
        s.push_str(&format!(
            "  kept {id}: it did not finish and can be resumed (--include-unfinished removes it)\n"
        ));
    }
    s.push_str(&format!(
        "store size: {} -> {} bytes{}\n",
        r.bytes_before,
        r.bytes_after,
        if r.runs_removed.is_empty() || r.vacuumed {
            ""
        } else {
            " (not compacted: another process holds the store; run gc again when it is idle)"
        }
    ));
    s
}

/// `agentos runs`.
pub fn runs(data_dir: &Path, json: bool) -> ExitCode {
    finish(run_runs(data_dir, json))
}

fn run_runs(data_dir: &Path, json: bool) -> Result<(), Failure> {
    let store = open(data_dir)?;
    let runs = store.runs()?;
    if json {
        let mut text = String::new();
        for r in &runs {
            text.push_str(&run_json(r).to_string());
            text.push('\n');
        }
        out(&text);
        return Ok(());
    }
    let mut t = Table::new(&[
        ("RUN", Align::Left),
        ("STATUS", Align::Left),
        ("RESUMES", Align::Right),
        ("DURABILITY", Align::Left),
        ("STARTED", Align::Left),
        ("CONFIG", Align::Left),
    ]);
    for r in &runs {
        t.row(vec![
            r.run_id.clone(),
            r.status.label().into(),
            r.resumes.to_string(),
            r.durability.clone(),
            format_rfc3339_ms(r.started_ms),
            if r.config_path.is_empty() {
                "-".into()
            } else {
                r.config_path.clone()
            },
        ]);
    }
    if t.is_empty() {
        eprintln!("no runs in {}", data_dir.display());
    } else {
        out(&t.render());
    }
    Ok(())
}

fn run_json(r: &RunRow) -> Value {
    json!({
        "run_id": r.run_id,
        "status": r.status.label(),
        "resumable": r.status.resumable(),
        "resumes": r.resumes,
        "durability": r.durability,
        "started_ms": r.started_ms,
        "started": format_rfc3339_ms(r.started_ms),
        "finished_ms": r.finished_ms,
        "config_path": r.config_path,
        "config_hash": r.config_hash,
        "run_dir": r.run_dir,
        "checkpointed": r.checkpointed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentos_runtime::store::{AuditRow, RunStatus};

    fn store_with_run(dir: &Path) {
        let mut s = Store::open(&Store::path_in(dir)).unwrap();
        s.record_run(&RunRow {
            run_id: "r1".into(),
            started_ms: 1_000,
            config_path: "/c.ron".into(),
            config_hash: "h".into(),
            durability: "sync".into(),
            status: RunStatus::Finished,
            finished_ms: Some(2_000),
            resumes: 0,
            run_dir: String::new(),
            checkpointed: true,
        })
        .unwrap();
        s.append_audit(
            "r1",
            &[AuditRow {
                at_ms: 1_500,
                kind: "task_state".into(),
                actor: "scheduler".into(),
                agent: Some("a".into()),
                instance: None,
                task: Some("w/t".into()),
                attempt: Some(1),
                step: None,
                detail: r#"{"from":"ready","to":"running"}"#.into(),
            }],
        )
        .unwrap();
    }

    fn args(dir: &Path) -> AuditArgs {
        AuditArgs {
            data_dir: dir.to_path_buf(),
            run: None,
            agent: None,
            task: None,
            since: None,
            limit: 100,
            json: false,
        }
    }

    #[test]
    fn a_missing_store_is_a_usage_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            run_audit(args(dir.path())),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            run_runs(dir.path(), false),
            Err(Failure::Usage(_))
        ));
        assert!(!Store::path_in(dir.path()).exists());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        store_with_run(dir.path());
        let mut a = args(dir.path());
        a.since = Some("yesterday".into());
        assert!(matches!(run_audit(a), Err(Failure::Usage(m)) if m.contains("--since")));
        let mut a = args(dir.path());
        a.run = Some("nope".into());
        assert!(matches!(run_audit(a), Err(Failure::Usage(m)) if m.contains("no run")));
        assert!(matches!(
            run_gc(dir.path(), None, Some("7"), false),
            Err(Failure::Usage(m)) if m.contains("--older-than")
        ));
        assert!(run_audit(args(dir.path())).is_ok());
    }

    #[test]
    fn the_table_says_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        store_with_run(dir.path());
        let s = Store::open(&Store::path_in(dir.path())).unwrap();
        let entries = s.audit(&AuditQuery::default()).unwrap();
        let table = audit_table(&entries);
        assert!(table.contains("task_state"), "{table}");
        assert!(table.contains("ready -> running"), "{table}");
        assert!(table.contains("1970-01-01T00:00:01.500Z"), "{table}");
        let report = GcReport {
            runs_removed: vec!["r1".into()],
            rows_removed: 2,
            kept_unfinished: vec!["r2".into()],
            bytes_before: 10,
            bytes_after: 5,
            vacuumed: true,
        };
        let text = gc_text(&report);
        assert!(text.contains("removed 1 run (2 rows)"), "{text}");
        assert!(text.contains("kept r2"), "{text}");
        assert!(text.contains("10 -> 5 bytes"), "{text}");
    }
}
