//! The step journal's identities. The content of a journaled LLM reply or tool result is its
//! page (see [`super::pages`]); a journal row says which attempt, step and call it belongs to,
//! which instance made it and when, and points at the page. An at-most-once call also gets a
//! `tool_start` row, committed before the call runs, with no page.

use rusqlite::{params, Connection, Row};

use super::{Store, StoreError};

/// Kind of a journal row.
pub mod kind {
    /// An LLM reply (its page is the assistant message).
    pub const REPLY: &str = "reply";
    /// An at-most-once tool call is about to run.
    pub const TOOL_START: &str = "tool_start";
    /// A tool call's result (its page is the tool message).
    pub const TOOL_RESULT: &str = "tool_result";
}

/// One journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// The attempt's context (`workflow/task#attempt`).
    pub context: String,
    /// Step within the attempt.
    pub step: u32,
    /// Call index within the step's reply (0 for the reply itself).
    pub call: u32,
    /// One of [`kind`].
    pub kind: String,
    /// The agent.
    pub agent: String,
    /// The instance (`agent#replica`).
    pub instance: String,
    /// The task (`workflow/task`).
    pub task: String,
    /// The attempt over every agent.
    pub attempt: u32,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// How long the call took.
    pub duration_ms: u64,
    /// The page holding the content, if any.
    pub page_id: Option<u64>,
    /// JSON object: usage and finish reason of a reply; tool name, side-effect class and
    /// outcome of a tool call.
    pub detail: String,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// The journal columns after the run id, in [`journal_from_row`]'s order (a macro, so that the
/// statements below are constants).
macro_rules! journal_columns {
    () => {
        "context, step, call, kind, agent, instance, task, attempt, at_ms, duration_ms, page_id, \
         detail"
    };
}

const INSERT_JOURNAL: &str = concat!(
    "INSERT OR REPLACE INTO journal (run_id, ",
    journal_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
);
const SELECT_JOURNAL: &str = concat!(
    "SELECT ",
    journal_columns!(),
    " FROM journal WHERE run_id = ?1 AND context = ?2 ORDER BY step, call, kind"
);

/// Inserts `rows` (one statement each), inside whatever transaction is open.
fn insert_journal(conn: &Connection, run_id: &str, rows: &[JournalRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(INSERT_JOURNAL)
        .map_err(io("write journal"))?;
    for j in rows {
        stmt.execute(params![
            run_id,
            j.context,
            j.step as i64,
            j.call as i64,
            j.kind,
            j.agent,
            j.instance,
            j.task,
            j.attempt as i64,
            j.at_ms,
            j.duration_ms as i64,
            j.page_id.map(|p| p as i64),
            j.detail
        ])
        .map_err(io("write journal"))?;
    }
    Ok(())
}

fn journal_from_row(r: &Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        context: r.get(0)?,
        step: r.get::<_, i64>(1)? as u32,
        call: r.get::<_, i64>(2)? as u32,
        kind: r.get(3)?,
        agent: r.get(4)?,
        instance: r.get(5)?,
        task: r.get(6)?,
        attempt: r.get::<_, i64>(7)? as u32,
        at_ms: r.get(8)?,
        duration_ms: r.get::<_, i64>(9)?.max(0) as u64,
        page_id: r.get::<_, Option<i64>>(10)?.map(|p| p as u64),
        detail: r.get(11)?,
    })
}

impl Store {
    /// Writes journal rows of run `run_id` all or nothing (its own transaction, or a part of
    /// the open batch). A row written again (same context, step, call and kind) is replaced.
    pub fn put_journal(&mut self, run_id: &str, rows: &[JournalRow]) -> Result<(), StoreError> {
        self.write_atomic("write journal", rows.len(), |conn| {
            insert_journal(conn, run_id, rows)
        })
    }

    /// Writes a record's pages and its journal rows together: both or neither, so a journal
    /// row never lacks its page and a page is never left without its row.
    pub fn put_record(
        &mut self,
        run_id: &str,
        pages: &[super::PageRow],
        journal: &[JournalRow],
    ) -> Result<(), StoreError> {
        self.write_atomic("write record", pages.len() + journal.len(), |conn| {
            super::pages::insert_pages(conn, run_id, pages)?;
            insert_journal(conn, run_id, journal)
        })
    }

    /// Every journal row of one context, in step and call order.
    pub fn load_journal(&self, run_id: &str, context: &str) -> Result<Vec<JournalRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_JOURNAL)
            .map_err(io("read journal"))?;
        let rows = stmt
            .query_map(params![run_id, context], journal_from_row)
            .map_err(io("read journal"))?;
        rows.collect::<Result<_, _>>().map_err(io("read journal"))
    }
}
