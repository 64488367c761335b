//! The store: one embedded SQLite database file per data directory (`<data_dir>/store.db`).
//!
//! Each table family has its own file, migrated by the same [`schema`] version counter:
//! - [`pages`](PageRow): the context pager's pages (its swap device). A step's exchange
//!   group is also its journal entry: the LLM reply and each tool result are pages, written
//!   as they happen.
//! - [`journal`](JournalRow): the identity of every journaled reply and tool call (context,
//!   step, call, instance, time), pointing at its page; and the start markers of
//!   at-most-once calls.
//! - [`state`](TaskRow): the scheduler's workflows, task records and agent controls, and the
//!   audit entries that are not pages or journal rows.
//! - [`inbox`](InboxRow): bus messages until they are read.
//! - [`runs`](RunRow): one row per run, with its config hash, durability mode and status.
//! - [`audit`]: the audit log, read back as a view over the `audit` table and the journal.
//! - [`gc`]: retention (removing old runs) and the store's size per table.
//!
//! # Why SQLite through `rusqlite` (bundled)
//! - A real, crash-safe database in one file, with no server to run and no system library to
//!   find: the `bundled` feature compiles SQLite into the binary.
//! - The runtime crate has no async runtime of its own; `rusqlite` is synchronous and is driven
//!   from one dedicated thread per user (the pager's worker), so no actor ever blocks on I/O.
//!   `sqlx` would pull an async pool into `runtime/` for a single-writer workload.
//! - WAL journal mode lets readers (a future checkpoint or audit reader) run beside the writer;
//!   every batch of writes is one transaction, so a crash never leaves a half-written page.
//!
//! # The write path
//! A step writes a few small rows, so what SQLite does around them (parsing SQL, opening
//! savepoints) costs as much as the rows. Every statement of the write path is a constant
//! prepared once per connection ([`Connection::prepare_cached`]), savepoints included; a write
//! of several statements runs in one savepoint (`Store::write_atomic`), a write of a single
//! statement in none (a statement is all or nothing on its own).
//!
//! Every row is keyed by the run id, so runs sharing one store never see each other's pages.

pub mod audit;
pub mod gc;
mod inbox;
pub mod journal;
mod pages;
mod quota;
mod runs;
pub mod schema;
mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

pub use audit::{AuditEntry, AuditQuery};
pub use gc::{GcPolicy, GcReport, SizeReport};
pub use inbox::InboxRow;
pub use journal::JournalRow;
pub use pages::{PageRow, SharedRow};
pub use quota::QuotaRow;
pub use runs::{RunRow, RunStatus};
pub use state::{AuditRow, ControlRow, StateBatch, TaskRow, WorkflowRow};

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "store.db";

/// Prepared statements a connection keeps (least recently used ones go first). Well above the
/// number of distinct statements a connection runs, so that none is parsed twice: the pager's
/// and the scheduler's each use about a dozen (their reads and writes, savepoints, batch
/// control); rusqlite's default of 16 would leave no room for the rest.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The savepoint of a write of several statements ([`Store::write_atomic`]). One name for all:
/// a write never nests another, and SQLite releases the innermost of a name first anyway.
const SAVEPOINT: &str = "SAVEPOINT store_write";
const RELEASE: &str = "RELEASE store_write";
const ROLLBACK_TO: &str = "ROLLBACK TO store_write";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be created or opened.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The folder for the database could not be created.
    #[error("cannot create the store folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file holds a schema newer than this program knows.
    #[error("the store at {path} has schema version {found}, newer than this program's {known}; use a newer agentos or another --data-dir")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this program knows.
        known: i64,
    },
    /// A read or write failed.
    #[error("store {op} failed: {source}")]
    Io {
        /// What was being done (`write pages`, `read page`, ...).
        op: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored row could not be decoded.
    #[error("store row is corrupt ({what}): {detail}")]
    Corrupt {
        /// Which row.
        what: String,
        /// Why.
        detail: String,
    },
}

/// A connection to the store. Not `Sync`: each user owns one and drives it from one thread.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

impl Store {
    /// The store file inside `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(STORE_FILE)
    }

    /// Opens (creating it and its folder if needed) and migrates the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL: readers beside the writer; NORMAL: a commit is durable against a process
        // crash (the WAL is fsynced at checkpoints), which is what swap needs.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // `temp_store` stays at its default: with `MEMORY`, SQLite keeps statement and
        // savepoint journals in 1 KiB chunks instead of one 64 KiB buffer, and every savepoint
        // costs more (many small allocations), not less.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut store = Store {
            conn,
            path: Some(path.to_path_buf()),
        };
        store.migrate()?;
        Ok(store)
    }

    /// An in-memory store (tests and benchmarks).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut store = Store { conn, path: None };
        store.migrate()?;
        Ok(store)
    }

    /// Opens a batch: the writes until [`Store::commit_batch`] commit together, each still all
    /// or nothing on its own (group commit: one WAL commit for many page groups).
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock now, waiting for it under the busy timeout. A
        // deferred batch that reads first could not upgrade to a writer while another
        // connection (the scheduler's, the bus's) writes, and SQLite fails such an upgrade at
        // once ("database is locked") instead of waiting.
        self.exec_cached("begin batch", "BEGIN IMMEDIATE")
    }

    /// Commits the open batch. On failure it is rolled back: none of its writes are stored.
    pub fn commit_batch(&mut self) -> Result<(), StoreError> {
        self.exec_cached("commit batch", "COMMIT").inspect_err(|_| {
            // The batch may already be rolled back by SQLite itself; either way, make sure.
            let _ = self.exec_cached("roll back batch", "ROLLBACK");
        })
    }

    /// Whether a transaction is open on this connection: a batch, or a write in progress.
    /// A batch that SQLite rolled back on its own (some errors, such as a full disk, end the
    /// whole transaction) is no longer open, and the writes made in it are gone.
    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Runs one statement without parameters and rows (transaction control), prepared once.
    fn exec_cached(&self, op: &'static str, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
            .map_err(|source| StoreError::Io { op, source })
    }

    /// Runs `write`, which runs `statements` statements, all or nothing: its own transaction
    /// outside a batch, a part of the open batch inside one. A single statement is atomic on
    /// its own (SQLite undoes a failed statement whole); several run in a savepoint, rolled
    /// back if any fails.
    fn write_atomic<T>(
        &mut self,
        op: &'static str,
        statements: usize,
        write: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if statements <= 1 {
            return write(&self.conn);
        }
        self.exec_cached(op, SAVEPOINT)?;
        let done = write(&self.conn).and_then(|out| self.exec_cached(op, RELEASE).map(|()| out));
        if done.is_err() {
            // Undo this write (and close the savepoint) whichever step failed; when SQLite has
            // already rolled back the whole transaction there is no savepoint left, and these
            // fail harmlessly. The first error is the one to report.
            let _ = self.exec_cached(op, ROLLBACK_TO);
            let _ = self.exec_cached(op, RELEASE);
        }
        done
    }

    /// The file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self
            .path
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"));
        schema::migrate(&mut self.conn, &path)
    }

    /// The schema version of the open file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.conn)
    }

    /// Records that run `run_id` started (idempotent).
    pub fn begin_run(&self, run_id: &str, started_ms: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO runs (run_id, started_ms) VALUES (?1, ?2)",
                rusqlite::params![run_id, started_ms],
            )
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                op: "record run",
                source,
            })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;
