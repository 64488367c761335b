//! Retention: [`Store::gc`] removes whole runs (every row of theirs, in every table) and gives
//! the space back; [`Store::size_report`] counts a run's rows per table.
//!
//! # What gc never removes
//! A run that did not finish (status `running` or `interrupted`) can still be resumed, and
//! `running` may also mean "alive in a server right now": gc cannot tell a crashed run from a
//! live one by reading the file. So such runs are kept, whatever the policy, unless
//! `include_unfinished` is set; then an unfinished run goes only when the policy selects it
//! like any other (beyond the newest `n`, or started before the cutoff). Runs kept for that
//! reason are listed in [`GcReport::kept_unfinished`].
//!
//! The rows go in one transaction (a crash removes all of a run or nothing), then `VACUUM`
//! and a WAL checkpoint shrink the file. `VACUUM` needs the file to itself; when another
//! process holds it (a server running on the same data directory), the rows are still gone
//! and [`GcReport::vacuumed`] says the file was not shrunk.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreError};

/// Every table whose rows belong to a run (column `run_id`), `runs` last.
pub const RUN_TABLES: &[&str] = &[
    "pages",
    "shared_pages",
    "workflows",
    "tasks",
    "agent_controls",
    "journal",
    "inbox",
    "audit",
    "runs",
];

/// Which runs to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPolicy {
    /// Keep the newest `n` runs (by start time, whatever their status); remove the older.
    KeepRuns(usize),
    /// Remove runs started longer ago than this.
    OlderThan(Duration),
}

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Runs removed, oldest first.
    pub runs_removed: Vec<String>,
    /// Rows removed over every table.
    pub rows_removed: u64,
    /// Runs the policy selected but that did not finish, kept (`include_unfinished` unset).
    pub kept_unfinished: Vec<String>,
    /// Bytes of the store file and its write-ahead log before (0 in memory).
    pub bytes_before: u64,
    /// The same after.
    pub bytes_after: u64,
    /// Whether `VACUUM` ran (false when another connection held the file, or nothing was
    /// removed).
    pub vacuumed: bool,
}

/// Rows of one run per table, and the size of the whole database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SizeReport {
    /// `(table, rows of the run)`, in [`RUN_TABLES`] order.
    pub rows: Vec<(String, u64)>,
    /// `page_count * page_size` of the database (every run, free pages included).
    pub db_bytes: u64,
    /// Free pages' bytes (`freelist_count * page_size`): what `VACUUM` would give back.
    pub free_bytes: u64,
}

impl SizeReport {
    /// Rows of the run over every table.
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().map(|(_, n)| n).sum()
    }
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Bytes of the file at `path` and its `-wal` companion (missing files count 0).
fn file_bytes(path: Option<&Path>) -> u64 {
    let Some(path) = path else { return 0 };
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) + len(Path::new(&wal))
}

impl Store {
    /// Removes the runs `policy` selects (see the module docs for what is kept), then shrinks
    /// the file.
    pub fn gc(
        &mut self,
        policy: &GcPolicy,
        include_unfinished: bool,
    ) -> Result<GcReport, StoreError> {
        self.gc_at(policy, include_unfinished, now_ms())
    }

    /// [`Store::gc`] as if the time were `now_ms`.
    pub fn gc_at(
        &mut self,
        policy: &GcPolicy,
        include_unfinished: bool,
        now_ms: i64,
    ) -> Result<GcReport, StoreError> {
        let mut report = GcReport {
            bytes_before: file_bytes(self.path()),
            ..GcReport::default()
        };
        let runs = self.runs()?; // newest first
        let selected: Vec<_> = match *policy {
            GcPolicy::KeepRuns(n) => runs.into_iter().skip(n).collect(),
            GcPolicy::OlderThan(age) => {
                let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                let cutoff = now_ms.saturating_sub(age);
                runs.into_iter().filter(|r| r.started_ms < cutoff).collect()
            }
        };
        let mut doomed = Vec::new();
        for run in selected.into_iter().rev() {
            if run.status.resumable() && !include_unfinished {
                report.kept_unfinished.push(run.run_id);
            } else {
                doomed.push(run.run_id);
            }
        }
        if !doomed.is_empty() {
            let op = "remove runs";
            let tx = self.conn.transaction().map_err(io(op))?;
            for table in RUN_TABLES {
                let mut stmt = tx
                    .prepare(&format!("DELETE FROM {table} WHERE run_id = ?1"))
                    .map_err(io(op))?;
                for run in &doomed {
                    report.rows_removed += stmt.execute(params![run]).map_err(io(op))? as u64;
                }
            }
            tx.commit().map_err(io(op))?;
            report.runs_removed = doomed;
            report.vacuumed = self.vacuum();
        }
        report.bytes_after = file_bytes(self.path());
        Ok(report)
    }

    /// `VACUUM`, then a WAL checkpoint that truncates the log. False when it could not run.
    fn vacuum(&mut self) -> bool {
        let done = self.conn.execute_batch("VACUUM").and_then(|()| {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        });
        if let Err(e) = &done {
            tracing::warn!(error = %e, "store VACUUM did not run; the rows are removed but the file keeps its size");
        }
        done.is_ok()
    }

    /// Rows of run `run_id` in each table, and the database's size.
    pub fn size_report(&self, run_id: &str) -> Result<SizeReport, StoreError> {
        let op = "measure store";
        let mut rows = Vec::with_capacity(RUN_TABLES.len());
        for table in RUN_TABLES {
            let n: i64 = self
                .conn
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE run_id = ?1"),
                    params![run_id],
                    |r| r.get(0),
                )
                .map_err(io(op))?;
            rows.push(((*table).to_owned(), n.max(0) as u64));
        }
        let pragma = |name: &str| -> Result<u64, StoreError> {
            self.conn
                .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                .map(|v| v.max(0) as u64)
                .map_err(io(op))
        };
        let page_size = pragma("page_size")?;
        Ok(SizeReport {
            rows,
            db_bytes: pragma("page_count")? * page_size,
            free_bytes: pragma("freelist_count")? * page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditRow, JournalRow, PageRow, RunRow, RunStatus};

    fn run(id: &str, started_ms: i64, status: RunStatus) -> RunRow {
        RunRow {
            run_id: id.into(),
            started_ms,
            config_path: "/c.ron".into(),
            config_hash: "h".into(),
            durability: "sync".into(),
            status,
            finished_ms: None,
            resumes: 0,
            run_dir: String::new(),
            checkpointed: true,
        }
    }

    /// Writes a run with one page, one journal row and one audit row.
    fn fill(s: &mut Store, id: &str, started_ms: i64, status: RunStatus) {
        s.record_run(&run(id, started_ms, status)).unwrap();
        let page = PageRow {
            context: "w/t#1".into(),
            page_id: 0,
            agent: "a".into(),
            group: 0,
            kind: "system".into(),
            pinned: true,
            importance: 1.0,
            tokens: 3,
            shared_key: None,
            message: "x".repeat(2000),
        };
        s.put_pages(id, &[page]).unwrap();
        let j = JournalRow {
            context: "w/t#1".into(),
            step: 0,
            call: 0,
            kind: "reply".into(),
            agent: "a".into(),
            instance: "a#0".into(),
            task: "w/t".into(),
            attempt: 1,
            at_ms: started_ms,
            duration_ms: 1,
            page_id: Some(0),
            detail: "{}".into(),
        };
        s.put_journal(id, &[j]).unwrap();
        let a = AuditRow {
            at_ms: started_ms,
            kind: "run_started".into(),
            actor: "system".into(),
            agent: None,
            instance: None,
            task: None,
            attempt: None,
            step: None,
            detail: "{}".into(),
        };
        s.append_audit(id, &[a]).unwrap();
    }

    fn ids(s: &Store) -> Vec<String> {
        s.runs().unwrap().into_iter().map(|r| r.run_id).collect()
    }

    #[test]
    fn keep_runs_removes_the_oldest_finished_runs_and_keeps_resumable_ones() {
        let mut s = Store::open_in_memory().unwrap();
        fill(&mut s, "r1", 1, RunStatus::Finished);
        fill(&mut s, "r2", 2, RunStatus::Interrupted);
        fill(&mut s, "r3", 3, RunStatus::Finished);
        fill(&mut s, "r4", 4, RunStatus::Running);
        let report = s.gc(&GcPolicy::KeepRuns(1), false).unwrap();
        assert_eq!(report.runs_removed, ["r1", "r3"]);
        assert_eq!(report.kept_unfinished, ["r2"]);
        assert_eq!(
            report.rows_removed,
            2 * 4,
            "page, journal, audit and run rows"
        );
        assert_eq!(
            (report.bytes_before, report.bytes_after),
            (0, 0),
            "in memory"
        );
        assert_eq!(ids(&s), ["r4", "r2"]);
        assert_eq!(s.size_report("r1").unwrap().total_rows(), 0);
        assert_eq!(s.size_report("r2").unwrap().total_rows(), 4);
        let report = s.gc(&GcPolicy::KeepRuns(0), true).unwrap();
        assert_eq!(report.runs_removed, ["r2", "r4"]);
        assert!(ids(&s).is_empty());
        let report = s.gc(&GcPolicy::KeepRuns(0), true).unwrap();
        assert_eq!(report, GcReport::default(), "nothing left to do");
    }

    #[test]
    fn older_than_goes_by_start_time() {
        let mut s = Store::open_in_memory().unwrap();
        let day = 86_400_000;
        fill(&mut s, "old", 0, RunStatus::Finished);
        fill(&mut s, "old-crashed", 1, RunStatus::Running);
        fill(&mut s, "new", 9 * day, RunStatus::Finished);
        let week = GcPolicy::OlderThan(Duration::from_secs(7 * 86_400));
        let report = s.gc_at(&week, false, 10 * day).unwrap();
        assert_eq!(report.runs_removed, ["old"]);
        assert_eq!(report.kept_unfinished, ["old-crashed"]);
        let report = s.gc_at(&week, true, 10 * day).unwrap();
        assert_eq!(report.runs_removed, ["old-crashed"]);
        assert_eq!(ids(&s), ["new"]);
    }

    #[test]
    fn a_file_shrinks_after_gc() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&Store::path_in(dir.path())).unwrap();
        for i in 0..50 {
            fill(&mut s, &format!("r{i:02}"), i, RunStatus::Finished);
        }
        let size = s.size_report("r00").unwrap();
        assert_eq!(size.total_rows(), 4);
        assert_eq!(size.rows[0], ("pages".to_owned(), 1));
        assert!(size.db_bytes > 50 * 2000, "{size:?}");
        let report = s.gc(&GcPolicy::KeepRuns(1), false).unwrap();
        assert_eq!(report.runs_removed.len(), 49);
        assert!(report.vacuumed);
        assert!(
            report.bytes_after < report.bytes_before / 4,
            "{} -> {}",
            report.bytes_before,
            report.bytes_after
        );
        assert_eq!(ids(&s), ["r49"]);
        assert_eq!(s.size_report("r49").unwrap().total_rows(), 4);
    }
}
