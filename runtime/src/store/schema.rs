//! Schema versions and migrations, counted in SQLite's `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the file one version up and runs in its own transaction
//! together with the version bump, so a crash mid-migration leaves the previous version intact.
//!
//! - 1: runs, context pages and shared pages (the context pager's swap).
//! - 2: durable execution: the run's config hash, durability mode and status; the scheduler's
//!   workflows, tasks and agent controls; the step journal's identities; bus inboxes; the
//!   audit log. Runs written by version 1 count as finished (they cannot be resumed: their
//!   task state was never stored).
//! - 3: quota counters: what each budgeted scope spent in its current window, across runs
//!   (a restart, or a fresh run on the same data folder, does not reset a day's budget).

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` takes the file from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs and context pages.
    "CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        started_ms  INTEGER NOT NULL
    );
    CREATE TABLE pages (
        run_id      TEXT    NOT NULL,
        context     TEXT    NOT NULL,
        page_id     INTEGER NOT NULL,
        agent       TEXT    NOT NULL,
        grp         INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        pinned      INTEGER NOT NULL,
        importance  REAL    NOT NULL,
        tokens      INTEGER NOT NULL,
        shared_key  TEXT,
        message     TEXT    NOT NULL,
        PRIMARY KEY (run_id, context, page_id)
    ) WITHOUT ROWID;
    CREATE TABLE shared_pages (
        run_id      TEXT    NOT NULL,
        shared_key  TEXT    NOT NULL,
        workflow    TEXT    NOT NULL,
        owner       TEXT    NOT NULL,
        tokens      INTEGER NOT NULL,
        message     TEXT    NOT NULL,
        PRIMARY KEY (run_id, shared_key)
    ) WITHOUT ROWID;",
    // 2: durable execution. Runs learn their config, mode and end; the scheduler's state, the
    // step journal's identities, bus inboxes and the audit log get their tables.
    "ALTER TABLE runs ADD COLUMN config_path TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN config_hash TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN durability TEXT NOT NULL DEFAULT 'sync';
    ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'finished';
    ALTER TABLE runs ADD COLUMN finished_ms INTEGER;
    ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN run_dir TEXT NOT NULL DEFAULT '';
    ALTER TABLE runs ADD COLUMN checkpointed INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE workflows (
        run_id          TEXT    NOT NULL,
        id              TEXT    NOT NULL,
        seq             INTEGER NOT NULL,
        name            TEXT    NOT NULL,
        origin          TEXT    NOT NULL,
        by_whom         TEXT    NOT NULL,
        spec            TEXT    NOT NULL,
        idempotency_key TEXT,
        cancelled_by    TEXT,
        finished        TEXT,
        submitted_at    REAL    NOT NULL,
        PRIMARY KEY (run_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE tasks (
        run_id            TEXT    NOT NULL,
        workflow          TEXT    NOT NULL,
        task              TEXT    NOT NULL,
        seq               INTEGER NOT NULL,
        spawned_by        TEXT,
        spawn_call        TEXT,
        depth             INTEGER NOT NULL,
        agent             TEXT    NOT NULL,
        input             TEXT    NOT NULL,
        depends_on        TEXT    NOT NULL,
        priority_boost    INTEGER NOT NULL,
        state             TEXT    NOT NULL,
        current_agent     TEXT    NOT NULL,
        chain             TEXT    NOT NULL,
        attempts_on_agent INTEGER NOT NULL,
        attempts_total    INTEGER NOT NULL,
        history           TEXT    NOT NULL,
        output            TEXT,
        reason            TEXT,
        last_error        TEXT,
        finished_by       TEXT,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens     INTEGER NOT NULL,
        retry_at_ms       INTEGER,
        updated_ms        INTEGER NOT NULL,
        PRIMARY KEY (run_id, workflow, task)
    ) WITHOUT ROWID;
    CREATE TABLE agent_controls (
        run_id  TEXT NOT NULL,
        agent   TEXT NOT NULL,
        status  TEXT NOT NULL,
        why     TEXT,
        PRIMARY KEY (run_id, agent)
    ) WITHOUT ROWID;
    CREATE TABLE journal (
        run_id      TEXT    NOT NULL,
        context     TEXT    NOT NULL,
        step        INTEGER NOT NULL,
        call        INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        agent       TEXT    NOT NULL,
        instance    TEXT    NOT NULL,
        task        TEXT    NOT NULL,
        attempt     INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        page_id     INTEGER,
        detail      TEXT    NOT NULL,
        PRIMARY KEY (run_id, context, step, call, kind)
    ) WITHOUT ROWID;
    CREATE TABLE inbox (
        run_id     TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        to_agent   TEXT    NOT NULL,
        from_agent TEXT    NOT NULL,
        topic      TEXT,
        body       TEXT    NOT NULL,
        read_by    TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id    TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL,
        kind      TEXT    NOT NULL,
        actor     TEXT    NOT NULL,
        agent     TEXT,
        instance  TEXT,
        task      TEXT,
        attempt   INTEGER,
        step      INTEGER,
        detail    TEXT    NOT NULL
    );
    CREATE INDEX audit_by_run ON audit (run_id, at_ms);",
    // 3: quota counters.
    "CREATE TABLE quota_counters (
        scope           TEXT    PRIMARY KEY,
        window          TEXT    NOT NULL,
        window_start_ms INTEGER NOT NULL,
        spent_usd       REAL    NOT NULL,
        spent_tokens    INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL
    ) WITHOUT ROWID;",
];

/// The newest schema version this program knows.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The file's schema version.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StoreError::Io {
            op: "read schema version",
            source,
        })
}

/// Brings the file up to [`CURRENT_VERSION`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = version(conn)?;
    if found > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: CURRENT_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let io = |source| StoreError::Io {
            op: "migrate schema",
            source,
        };
        let tx = conn.transaction().map_err(io)?;
        tx.execute_batch(sql).map_err(io)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(io)?;
        tx.commit().map_err(io)?;
    }
    Ok(())
}
