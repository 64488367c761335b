//! Context pages: the pager's swap space. Pages are written once (write-through at append,
//! in one transaction per batch) and read back on a page fault or when a restarted pager
//! rebuilds a page table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{Store, StoreError};

/// One stored page of an agent's context.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRow {
    /// The context (one per task attempt), unique within the run.
    pub context: String,
    /// Page id, unique within the context, in conversation order.
    pub page_id: u64,
    /// The agent owning the context.
    pub agent: String,
    /// Exchange group the page belongs to (pages of a group move together).
    pub group: u64,
    /// Page kind label (`system`, `task`, `message`, `tool_result`, `summary`, `shared`).
    pub kind: String,
    /// Pinned when written.
    pub pinned: bool,
    /// Importance, 0..1.
    pub importance: f64,
    /// Tokens of the page in the agent's encoding.
    pub tokens: u64,
    /// For a shared page: the key of the shared page it shows.
    pub shared_key: Option<String>,
    /// The chat message, as JSON.
    pub message: String,
}

/// One workflow-level shared page.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedRow {
    /// Key, unique within the run (`workflow/task`).
    pub key: String,
    /// The workflow it belongs to.
    pub workflow: String,
    /// Agent that published it.
    pub owner: String,
    /// Tokens (in the owner's encoding).
    pub tokens: u64,
    /// The chat message, as JSON.
    pub message: String,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

fn page_from_row(r: &Row<'_>) -> rusqlite::Result<PageRow> {
    Ok(PageRow {
        context: r.get(0)?,
        page_id: r.get::<_, i64>(1)? as u64,
        agent: r.get(2)?,
        group: r.get::<_, i64>(3)? as u64,
        kind: r.get(4)?,
        pinned: r.get(5)?,
        importance: r.get(6)?,
        tokens: r.get::<_, i64>(7)? as u64,
        shared_key: r.get(8)?,
        message: r.get(9)?,
    })
}

/// The page columns after the run id, in [`page_from_row`]'s order (a macro, so that the
/// statements below are constants).
macro_rules! page_columns {
    () => {
        "context, page_id, agent, grp, kind, pinned, importance, tokens, shared_key, message"
    };
}

const INSERT_PAGE: &str = concat!(
    "INSERT OR REPLACE INTO pages (run_id, ",
    page_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
);
const SELECT_PAGE: &str = concat!(
    "SELECT ",
    page_columns!(),
    " FROM pages WHERE run_id = ?1 AND context = ?2 AND page_id = ?3"
);
const SELECT_CONTEXT: &str = concat!(
    "SELECT ",
    page_columns!(),
    " FROM pages WHERE run_id = ?1 AND context = ?2 ORDER BY page_id"
);

/// Inserts `rows` (one statement each), inside whatever transaction is open.
pub(super) fn insert_pages(
    conn: &Connection,
    run_id: &str,
    rows: &[PageRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(INSERT_PAGE)
        .map_err(io("write pages"))?;
    for p in rows {
        stmt.execute(params![
            run_id,
            p.context,
            p.page_id as i64,
            p.agent,
            p.group as i64,
            p.kind,
            p.pinned,
            p.importance,
            p.tokens as i64,
            p.shared_key,
            p.message
        ])
        .map_err(io("write pages"))?;
    }
    Ok(())
}

impl Store {
    /// Writes `rows` of run `run_id` all or nothing (its own transaction, or a part of the
    /// open batch). A page written again (same run, context and id) is replaced.
    pub fn put_pages(&mut self, run_id: &str, rows: &[PageRow]) -> Result<(), StoreError> {
        self.write_atomic("write pages", rows.len(), |conn| {
            insert_pages(conn, run_id, rows)
        })
    }

    /// Reads pages `ids` of one context; missing ids are simply absent from the result.
    pub fn get_pages(
        &self,
        run_id: &str,
        context: &str,
        ids: &[u64],
    ) -> Result<Vec<PageRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_PAGE)
            .map_err(io("read pages"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = stmt
                .query_row(params![run_id, context, *id as i64], page_from_row)
                .optional()
                .map_err(io("read pages"))?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Every page of one context, in page order.
    pub fn load_context(&self, run_id: &str, context: &str) -> Result<Vec<PageRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(SELECT_CONTEXT)
            .map_err(io("load context"))?;
        let rows = stmt
            .query_map(params![run_id, context], page_from_row)
            .map_err(io("load context"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(io("load context"))
    }

    /// Number of pages stored for run `run_id`.
    pub fn count_pages(&self, run_id: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM pages WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(io("count pages"))
    }

    /// Writes (or replaces) one shared page.
    pub fn put_shared(&mut self, run_id: &str, row: &SharedRow) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO shared_pages (run_id, shared_key, workflow, owner, tokens, \
                 message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    run_id,
                    row.key,
                    row.workflow,
                    row.owner,
                    row.tokens as i64,
                    row.message
                ])
            })
            .map(|_| ())
            .map_err(io("write shared page"))
    }

    /// Reads one shared page.
    pub fn get_shared(&self, run_id: &str, key: &str) -> Result<Option<SharedRow>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT shared_key, workflow, owner, tokens, message FROM shared_pages \
                 WHERE run_id = ?1 AND shared_key = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![run_id, key], |r| {
                    Ok(SharedRow {
                        key: r.get(0)?,
                        workflow: r.get(1)?,
                        owner: r.get(2)?,
                        tokens: r.get::<_, i64>(3)? as u64,
                        message: r.get(4)?,
                    })
                })
            })
            .optional()
            .map_err(io("read shared page"))
    }
}
