//! A store that cannot be used stops `agentos run` at start-up, cleanly: exit code 3 and an
//! `error:` line on stderr that names the store file, never a panic and never an exit 0 with
//! an empty run. Three ways a store fails: its file is garbage, another process holds it
//! locked, and the disk is full (a file-size limit makes every write past it fail with
//! `EFBIG`, as a full disk fails with `ENOSPC`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::{agentos_bin, output_within, Output};

/// One agent, one task, on the simulator: a run that succeeds in well under a second.
const CONFIG: &str = r#"(
    version: 1,
    backends: [(name: "sim", kind: Sim(()))],
    agents: [(name: "a", role: "You answer.", backend: "sim")],
    workflows: [(name: "w", tasks: [(id: "t", agent: "a", input: "hello")])],
)"#;

/// Longest one `agentos run` may take here: the store's busy timeout (5 s) and start-up.
const LIMIT: Duration = Duration::from_secs(30);

/// A temporary folder with the config and a data directory `data/`.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("tiny.ron"), CONFIG).expect("config");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        Dir { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn store(&self) -> PathBuf {
        self.data().join("store.db")
    }

    /// `agentos run tiny.ron --data-dir data` (to be wrapped or run as it is).
    fn run_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            self.dir.path().join("tiny.ron").display().to_string(),
            "--data-dir".into(),
            self.data().display().to_string(),
        ]
    }

    fn run(&self) -> Output {
        let mut cmd = Command::new(agentos_bin());
        cmd.args(self.run_args());
        output_within(cmd, LIMIT, "agentos run")
    }
}

/// Whether the run stopped at start-up with exit 3 and an `error:` line naming the store
/// file; `Err` says what went wrong instead.
fn store_error(case: &str, out: &Output, store: &Path) -> Result<(), String> {
    let all = format!("stderr:\n{}\nstdout:\n{}", out.stderr, out.stdout);
    if out.stderr.contains("panicked") {
        return Err(format!("{case}: agentos panicked; {all}"));
    }
    if out.code != Some(3) {
        return Err(format!("{case}: exit code {:?}, not 3; {all}", out.code));
    }
    let Some(line) = out.stderr.lines().find(|l| l.starts_with("error:")) else {
        return Err(format!("{case}: no `error:` line; {all}"));
    };
    let named = store.display().to_string();
    if !(line.contains("store") && line.contains(&named)) {
        return Err(format!(
            "{case}: the error does not name the store {named}: {line:?}"
        ));
    }
    if out.stdout.contains("succeeded") {
        return Err(format!("{case}: a run was reported; {all}"));
    }
    Ok(())
}

#[test]
fn a_corrupt_store_stops_the_start_with_an_error_naming_it() {
    let d = Dir::new();
    // Not an SQLite file: what a truncated copy or a stray file at that name looks like.
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(d.store(), garbage).unwrap();
    store_error("corrupt store", &d.run(), &d.store()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_store_locked_by_another_process_stops_the_start_with_an_error_naming_it() {
    let d = Dir::new();
    // A first run creates the store, as an earlier run of this data directory would.
    let first = d.run();
    assert_eq!(first.code, Some(0), "first run: {}", first.stderr);
    // Another writer holds it: an exclusive transaction, kept open while agentos starts.
    let other = rusqlite::Connection::open(d.store()).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = d.run();
    other.execute_batch("ROLLBACK").unwrap();
    store_error("locked store", &out, &d.store()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_full_disk_stops_the_start_with_an_error_naming_the_store() {
    // File-size limits in the shell's `ulimit -f` blocks: nothing at all can be written, and
    // the store fills up while its schema is created (25 to 50 KiB, whether the shell counts
    // 512- or 1024-byte blocks; a store with its schema needs about 60 KiB).
    let mut failures = Vec::new();
    for blocks in [0, 50] {
        let d = Dir::new();
        // `trap '' XFSZ` ignores SIGXFSZ, which stays ignored across `exec`: a write past the
        // limit then fails with EFBIG instead of killing the process. stdout and stderr are
        // pipes, which the limit does not cover.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
            ))
            .arg(agentos_bin())
            .args(d.run_args());
        let out = output_within(cmd, LIMIT, "agentos run under a file-size limit");
        let case = format!("full disk (ulimit -f {blocks})");
        if let Err(e) = store_error(&case, &out, &d.store()) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
