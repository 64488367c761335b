//! Schema versions and migrations, counted in SQLite's `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the file one version up and runs in its own transaction
//! together with the version bump, so a crash mid-migration leaves the previous version intact.
//! Later subsystems (checkpoints, the audit log) add their tables as new entries.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Migration `i` takes the file from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
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
