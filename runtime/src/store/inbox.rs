//! Bus inboxes: every direct message and topic delivery is a row until it is read. A read is
//! keyed by the identity of the `read_messages` call that took it, so the same call run again
//! after a restart gets the same messages back (the tool is idempotent), and a message sent
//! but not yet read is still in its inbox after a resume.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// One message in an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    /// Bus sequence number, increasing within the run.
    pub seq: u64,
    /// Receiving agent.
    pub to: String,
    /// Sending agent.
    pub from: String,
    /// The topic of a publish.
    pub topic: Option<String>,
    /// The body.
    pub body: String,
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

impl Store {
    /// Stores delivered messages, all or nothing.
    pub fn put_inbox(&mut self, run_id: &str, rows: &[InboxRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write_atomic("write inbox", rows.len(), |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO inbox (run_id, seq, to_agent, from_agent, topic, body) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(io("write inbox"))?;
            for m in rows {
                stmt.execute(params![run_id, m.seq as i64, m.to, m.from, m.topic, m.body])
                    .map_err(io("write inbox"))?;
            }
            Ok(())
        })
    }

    /// Marks messages `seqs` as read by the call `call`, all or nothing.
    pub fn mark_read(&mut self, run_id: &str, seqs: &[u64], call: &str) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write_atomic("mark read", seqs.len(), |conn| {
            let mut stmt = conn
                .prepare_cached("UPDATE inbox SET read_by = ?3 WHERE run_id = ?1 AND seq = ?2")
                .map_err(io("mark read"))?;
            for s in seqs {
                stmt.execute(params![run_id, *s as i64, call])
                    .map_err(io("mark read"))?;
            }
            Ok(())
        })
    }

    /// Messages of run `run_id` not read yet, oldest first.
    pub fn unread(&self, run_id: &str) -> Result<Vec<InboxRow>, StoreError> {
        self.inbox_where(run_id, "read_by IS NULL", None)
    }

    /// Messages taken by the call `call`, oldest first.
    pub fn read_by(&self, run_id: &str, call: &str) -> Result<Vec<InboxRow>, StoreError> {
        self.inbox_where(run_id, "read_by = ?2", Some(call))
    }

    /// The highest bus sequence number used in run `run_id`.
    pub fn last_bus_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT MAX(seq) FROM inbox WHERE run_id = ?1",
                params![run_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()
            .map(|v| v.flatten().unwrap_or(0).max(0) as u64)
            .map_err(io("read inbox"))
    }

    fn inbox_where(
        &self,
        run_id: &str,
        cond: &str,
        call: Option<&str>,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, to_agent, from_agent, topic, body FROM inbox
                 WHERE run_id = ?1 AND {cond} ORDER BY seq"
            ))
            .map_err(io("read inbox"))?;
        let map = |r: &rusqlite::Row<'_>| {
            Ok(InboxRow {
                seq: r.get::<_, i64>(0)? as u64,
                to: r.get(1)?,
                from: r.get(2)?,
                topic: r.get(3)?,
                body: r.get(4)?,
            })
        };
        let rows = match call {
            Some(c) => stmt.query_map(params![run_id, c], map),
            None => stmt.query_map(params![run_id], map),
        }
        .map_err(io("read inbox"))?;
        rows.collect::<Result<_, _>>().map_err(io("read inbox"))
    }
}
