//! Runs: one row per run of a config, with what a resume needs to find and check it.

use rusqlite::{params, OptionalExtension, Row};

use super::{Store, StoreError};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Started and not ended: either still going or crashed. `--resume` continues it.
    Running,
    /// Every task reached a terminal state.
    Finished,
    /// Stopped by a signal before every task ended; `--resume` continues it.
    Interrupted,
    /// Died under `durability: exit` before its end: none of its progress was stored, so it
    /// cannot be continued; a later start left it behind.
    Abandoned,
}

impl RunStatus {
    /// The stored spelling.
    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "interrupted" => RunStatus::Interrupted,
            "abandoned" => RunStatus::Abandoned,
            _ => RunStatus::Finished,
        }
    }

    /// Whether a resume may continue a run in this status.
    pub fn resumable(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Interrupted)
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// The run id (its folder's name).
    pub run_id: String,
    /// Unix milliseconds of the first start.
    pub started_ms: i64,
    /// The config file, canonical (empty for runs written before durable execution).
    pub config_path: String,
    /// Hash of what decides task identity: agents and declared workflows.
    pub config_hash: String,
    /// `sync`, `async` or `exit`.
    pub durability: String,
    /// Where it stands.
    pub status: RunStatus,
    /// Unix milliseconds of its end, once ended.
    pub finished_ms: Option<i64>,
    /// Times it was resumed.
    pub resumes: u32,
    /// The run folder.
    pub run_dir: String,
    /// Whether its scheduler state is in the store (false for an `exit` run until its end).
    pub checkpointed: bool,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

const RUN_COLUMNS: &str = "run_id, started_ms, config_path, config_hash, durability, status, \
                           finished_ms, resumes, run_dir, checkpointed";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        started_ms: r.get(1)?,
        config_path: r.get(2)?,
        config_hash: r.get(3)?,
        durability: r.get(4)?,
        status: RunStatus::parse(&r.get::<_, String>(5)?),
        finished_ms: r.get(6)?,
        resumes: r.get::<_, i64>(7)?.max(0) as u32,
        run_dir: r.get(8)?,
        checkpointed: r.get(9)?,
    })
}

impl Store {
    /// Records a new run (replacing nothing: an existing row is left as it is).
    pub fn record_run(&self, run: &RunRow) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR IGNORE INTO runs ({RUN_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    run.run_id,
                    run.started_ms,
                    run.config_path,
                    run.config_hash,
                    run.durability,
                    run.status.label(),
                    run.finished_ms,
                    run.resumes as i64,
                    run.run_dir,
                    run.checkpointed
                ],
            )
            .map(|_| ())
            .map_err(io("record run"))
    }

    /// The run `run_id`.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                params![run_id],
                run_from_row,
            )
            .optional()
            .map_err(io("read run"))
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<RunRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY started_ms DESC, run_id DESC"
            ))
            .map_err(io("list runs"))?;
        let rows = stmt.query_map([], run_from_row).map_err(io("list runs"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(io("list runs"))
    }

    /// The newest run of the config at `config_path` that did not finish.
    pub fn latest_unfinished(&self, config_path: &str) -> Result<Option<RunRow>, StoreError> {
        Ok(self
            .runs()?
            .into_iter()
            .find(|r| r.config_path == config_path && r.status.resumable()))
    }

    /// Sets a run's status (and its end time for an ended run).
    pub fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let finished = (status != RunStatus::Running).then_some(at_ms);
        self.conn
            .execute(
                "UPDATE runs SET status = ?2, finished_ms = ?3 WHERE run_id = ?1",
                params![run_id, status.label(), finished],
            )
            .map(|_| ())
            .map_err(io("update run"))
    }

    /// Counts a resume of `run_id` and marks it running again.
    pub fn count_resume(&self, run_id: &str) -> Result<u32, StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET resumes = resumes + 1, status = 'running', finished_ms = NULL
                 WHERE run_id = ?1",
                params![run_id],
            )
            .map_err(io("count resume"))?;
        Ok(self.run(run_id)?.map_or(0, |r| r.resumes))
    }

    /// Marks whether `run_id`'s scheduler state is in the store.
    pub fn set_checkpointed(&self, run_id: &str, checkpointed: bool) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE runs SET checkpointed = ?2 WHERE run_id = ?1",
                params![run_id, checkpointed],
            )
            .map(|_| ())
            .map_err(io("update run"))
    }
}
