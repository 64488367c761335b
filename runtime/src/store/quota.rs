//! Quota counters: what each budgeted scope spent in its current window. One row per scope,
//! across runs: a restart, or a fresh run on the same data folder, keeps a day's spending.
//! The scheduler writes them with its state batches; boot reads them back.

use rusqlite::params;

use super::{Store, StoreError};

/// One scope's spending in its current window.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaRow {
    /// `global`, `backend:NAME`, `agent:NAME` or `workflow:NAME`.
    pub scope: String,
    /// `hour`, `day` or `run`.
    pub window: String,
    /// Start of the window, milliseconds since the Unix epoch (0 for `run`).
    pub window_start_ms: i64,
    /// US dollars spent in the window.
    pub spent_usd: f64,
    /// Tokens spent in the window.
    pub spent_tokens: u64,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

/// Writes `rows` (whole rows: the newest figures replace the stored ones).
pub(super) fn put(
    tx: &rusqlite::Connection,
    rows: &[QuotaRow],
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "write quota counters";
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO quota_counters
             (scope, window, window_start_ms, spent_usd, spent_tokens, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(io(op))?;
    for r in rows {
        stmt.execute(params![
            r.scope,
            r.window,
            r.window_start_ms,
            r.spent_usd,
            r.spent_tokens as i64,
            now_ms
        ])
        .map_err(io(op))?;
    }
    Ok(())
}

impl Store {
    /// Every stored quota counter, by scope.
    pub fn quota_counters(&self) -> Result<Vec<QuotaRow>, StoreError> {
        let op = "read quota counters";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT scope, window, window_start_ms, spent_usd, spent_tokens
                 FROM quota_counters ORDER BY scope",
            )
            .map_err(io(op))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(QuotaRow {
                    scope: r.get(0)?,
                    window: r.get(1)?,
                    window_start_ms: r.get(2)?,
                    spent_usd: r.get(3)?,
                    spent_tokens: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .map_err(io(op))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(io(op))
    }
}
