//! The scheduler's state: workflows, task records and agent controls, one row each, written
//! whole (upsert) whenever they change, in group-committed batches together with the audit
//! entries of the same changes. A resume reads them back with [`Store::load_state`].

use rusqlite::{params, Connection, Row};

use super::{Store, StoreError};

/// One workflow (declared, submitted or spawned into).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRow {
    /// Its id, unique within the run.
    pub id: String,
    /// Position in the workflow table.
    pub seq: u64,
    /// The name it was submitted under.
    pub name: String,
    /// `declared` or `submitted`.
    pub origin: String,
    /// Who declared or submitted it.
    pub by: String,
    /// The workflow as accepted, JSON of `WorkflowSpec`.
    pub spec: String,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// Who cancelled it.
    pub cancelled_by: Option<String>,
    /// Its terminal state, once reached.
    pub finished: Option<String>,
    /// Unix seconds of its acceptance.
    pub submitted_at: f64,
}

/// One task record.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// Workflow id.
    pub workflow: String,
    /// Task id within the workflow.
    pub task: String,
    /// Position in the task table.
    pub seq: u64,
    /// The task that spawned it (`workflow/task`).
    pub spawned_by: Option<String>,
    /// The identity of the `spawn_task` call that created it.
    pub spawn_call: Option<String>,
    /// Spawn depth (0: declared or submitted).
    pub depth: u32,
    /// The agent it was declared for.
    pub agent: String,
    /// Its input template.
    pub input: String,
    /// Upstream task ids.
    pub depends_on: Vec<String>,
    /// Priority boost.
    pub priority_boost: i64,
    /// State label.
    pub state: String,
    /// The agent it is on now.
    pub current_agent: String,
    /// The fallback chain so far.
    pub chain: Vec<String>,
    /// Attempts on the current agent.
    pub attempts_on_agent: u32,
    /// Attempts on every agent.
    pub attempts_total: u32,
    /// JSON list of attempt records.
    pub history: String,
    /// Output of the success.
    pub output: Option<String>,
    /// Reason of the terminal state.
    pub reason: Option<String>,
    /// Last attempt error.
    pub last_error: Option<String>,
    /// Instance that finished it.
    pub finished_by: Option<String>,
    /// Tokens used.
    pub prompt_tokens: u64,
    /// Tokens used.
    pub completion_tokens: u64,
    /// Tokens used.
    pub cached_tokens: u64,
    /// Unix milliseconds when a waiting retry is due (a wall-clock deadline).
    pub retry_at_ms: Option<i64>,
    /// Unix milliseconds of the last change.
    pub updated_ms: i64,
}

/// An agent's lifecycle control (suspended or killed; absent rows are active).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRow {
    /// The agent.
    pub agent: String,
    /// `active`, `suspended` or `killed`.
    pub status: String,
    /// Why (a kill's reason).
    pub why: Option<String>,
}

/// One audit entry that is not already a journal or page row: a state transition, an API
/// action, an agent control, a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Kind (`task_state`, `workflow_accepted`, `workflow_cancelled`, `agent_control`, `run_started`, `run_resumed`, ...).
    pub kind: String,
    /// Who did it: an agent instance, an API caller, `scheduler`, `system`.
    pub actor: String,
    /// Agent concerned.
    pub agent: Option<String>,
    /// Instance concerned.
    pub instance: Option<String>,
    /// Task concerned (`workflow/task`).
    pub task: Option<String>,
    /// Attempt (over every agent).
    pub attempt: Option<u32>,
    /// Step.
    pub step: Option<u32>,
    /// JSON object with the rest.
    pub detail: String,
}

/// Rows to write together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateBatch {
    /// Workflows that changed.
    pub workflows: Vec<WorkflowRow>,
    /// Tasks that changed.
    pub tasks: Vec<TaskRow>,
    /// Agent controls that changed.
    pub controls: Vec<ControlRow>,
    /// New audit entries.
    pub audit: Vec<AuditRow>,
    /// Quota counters that changed (not tied to the run: they span runs).
    pub quotas: Vec<super::QuotaRow>,
}

impl StateBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.workflows.is_empty()
            && self.tasks.is_empty()
            && self.controls.is_empty()
            && self.audit.is_empty()
            && self.quotas.is_empty()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.workflows.len()
            + self.tasks.len()
            + self.controls.len()
            + self.audit.len()
            + self.quotas.len()
    }

    /// Adds `other`'s rows after this batch's.
    pub fn extend(&mut self, other: StateBatch) {
        self.workflows.extend(other.workflows);
        self.tasks.extend(other.tasks);
        self.controls.extend(other.controls);
        self.audit.extend(other.audit);
        // Counters are whole rows: a later one of the same scope supersedes.
        for q in other.quotas {
            self.quotas.retain(|r| r.scope != q.scope);
            self.quotas.push(q);
        }
    }
}

fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |source| StoreError::Io { op, source }
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(what: &str, s: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("{what}: {e}").into(),
        )
    })
}

/// The task columns after the run id, in [`task_from_row`]'s order (a macro, so that the
/// statements below are constants).
macro_rules! task_columns {
    () => {
        "workflow, task, seq, spawned_by, spawn_call, depth, agent, input, depends_on, \
         priority_boost, state, current_agent, chain, attempts_on_agent, attempts_total, history, \
         output, reason, last_error, finished_by, prompt_tokens, completion_tokens, cached_tokens, \
         retry_at_ms, updated_ms"
    };
}

const INSERT_WORKFLOW: &str = "INSERT OR REPLACE INTO workflows (run_id, id, seq, name, origin, \
    by_whom, spec, idempotency_key, cancelled_by, finished, submitted_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const INSERT_TASK: &str = concat!(
    "INSERT OR REPLACE INTO tasks (run_id, ",
    task_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
);
const INSERT_CONTROL: &str =
    "INSERT OR REPLACE INTO agent_controls (run_id, agent, status, why) VALUES (?1, ?2, ?3, ?4)";
const INSERT_AUDIT: &str = "INSERT INTO audit (run_id, at_ms, kind, actor, agent, instance, task, \
    attempt, step, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
const SELECT_TASKS: &str = concat!(
    "SELECT ",
    task_columns!(),
    " FROM tasks WHERE run_id = ?1 ORDER BY seq"
);

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        workflow: r.get(0)?,
        task: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        spawned_by: r.get(3)?,
        spawn_call: r.get(4)?,
        depth: r.get::<_, i64>(5)? as u32,
        agent: r.get(6)?,
        input: r.get(7)?,
        depends_on: parse_list("depends_on", &r.get::<_, String>(8)?)?,
        priority_boost: r.get(9)?,
        state: r.get(10)?,
        current_agent: r.get(11)?,
        chain: parse_list("chain", &r.get::<_, String>(12)?)?,
        attempts_on_agent: r.get::<_, i64>(13)? as u32,
        attempts_total: r.get::<_, i64>(14)? as u32,
        history: r.get(15)?,
        output: r.get(16)?,
        reason: r.get(17)?,
        last_error: r.get(18)?,
        finished_by: r.get(19)?,
        prompt_tokens: r.get::<_, i64>(20)? as u64,
        completion_tokens: r.get::<_, i64>(21)? as u64,
        cached_tokens: r.get::<_, i64>(22)? as u64,
        retry_at_ms: r.get(23)?,
        updated_ms: r.get(24)?,
    })
}

impl Store {
    /// Writes `batch` for run `run_id`, all or nothing (its own transaction, or a part of the
    /// open batch).
    pub fn write_state(&mut self, run_id: &str, batch: &StateBatch) -> Result<(), StoreError> {
        self.write_atomic("write scheduler state", batch.len(), |conn| {
            insert_state(conn, run_id, batch)
        })
    }

    /// Appends audit entries of run `run_id`.
    pub fn append_audit(&mut self, run_id: &str, rows: &[AuditRow]) -> Result<(), StoreError> {
        self.write_atomic("write audit", rows.len(), |conn| {
            insert_audit(conn, run_id, rows)
        })
    }

    /// Everything stored of run `run_id`'s scheduler state, workflows and tasks in table
    /// order (the batch's audit list is empty).
    pub fn load_state(&self, run_id: &str) -> Result<StateBatch, StoreError> {
        let op = "read scheduler state";
        let mut out = StateBatch::default();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, seq, name, origin, by_whom, spec, idempotency_key, cancelled_by,
                 finished, submitted_at FROM workflows WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(io(op))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(WorkflowRow {
                    id: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    name: r.get(2)?,
                    origin: r.get(3)?,
                    by: r.get(4)?,
                    spec: r.get(5)?,
                    idempotency_key: r.get(6)?,
                    cancelled_by: r.get(7)?,
                    finished: r.get(8)?,
                    submitted_at: r.get(9)?,
                })
            })
            .map_err(io(op))?;
        out.workflows = rows.collect::<Result<_, _>>().map_err(io(op))?;
        let mut stmt = self.conn.prepare(SELECT_TASKS).map_err(io(op))?;
        let rows = stmt
            .query_map(params![run_id], task_from_row)
            .map_err(io(op))?;
        out.tasks = rows.collect::<Result<_, _>>().map_err(|e| match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, why) => StoreError::Corrupt {
                what: format!("task row of run {run_id}"),
                detail: why.to_string(),
            },
            source => StoreError::Io { op, source },
        })?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT agent, status, why FROM agent_controls WHERE run_id = ?1 ORDER BY agent",
            )
            .map_err(io(op))?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                Ok(ControlRow {
                    agent: r.get(0)?,
                    status: r.get(1)?,
                    why: r.get(2)?,
                })
            })
            .map_err(io(op))?;
        out.controls = rows.collect::<Result<_, _>>().map_err(io(op))?;
        Ok(out)
    }

    /// The contexts (`workflow/task#attempt`) of run `run_id` that have pages, with the
    /// agent owning each: the attempts the journal knows, whatever the task rows say.
    pub fn journaled_contexts(&self, run_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let op = "read journaled attempts";
        let mut stmt = self
            .conn
            .prepare("SELECT context, agent FROM pages WHERE run_id = ?1 AND page_id = 0")
            .map_err(io(op))?;
        let rows = stmt
            .query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(io(op))?;
        rows.collect::<Result<_, _>>().map_err(io(op))
    }
}

/// Inserts `batch`'s rows (one statement each), inside whatever transaction is open. A
/// statement is prepared only for the tables the batch has rows for.
fn insert_state(conn: &Connection, run_id: &str, batch: &StateBatch) -> Result<(), StoreError> {
    let op = "write scheduler state";
    if !batch.workflows.is_empty() {
        let mut wf = conn.prepare_cached(INSERT_WORKFLOW).map_err(io(op))?;
        for w in &batch.workflows {
            wf.execute(params![
                run_id,
                w.id,
                w.seq as i64,
                w.name,
                w.origin,
                w.by,
                w.spec,
                w.idempotency_key,
                w.cancelled_by,
                w.finished,
                w.submitted_at
            ])
            .map_err(io(op))?;
        }
    }
    if !batch.tasks.is_empty() {
        let mut task = conn.prepare_cached(INSERT_TASK).map_err(io(op))?;
        for t in &batch.tasks {
            task.execute(params![
                run_id,
                t.workflow,
                t.task,
                t.seq as i64,
                t.spawned_by,
                t.spawn_call,
                t.depth as i64,
                t.agent,
                t.input,
                json_list(&t.depends_on),
                t.priority_boost,
                t.state,
                t.current_agent,
                json_list(&t.chain),
                t.attempts_on_agent as i64,
                t.attempts_total as i64,
                t.history,
                t.output,
                t.reason,
                t.last_error,
                t.finished_by,
                t.prompt_tokens as i64,
                t.completion_tokens as i64,
                t.cached_tokens as i64,
                t.retry_at_ms,
                t.updated_ms
            ])
            .map_err(io(op))?;
        }
    }
    if !batch.controls.is_empty() {
        let mut ctl = conn.prepare_cached(INSERT_CONTROL).map_err(io(op))?;
        for c in &batch.controls {
            ctl.execute(params![run_id, c.agent, c.status, c.why])
                .map_err(io(op))?;
        }
    }
    insert_audit(conn, run_id, &batch.audit)?;
    if !batch.quotas.is_empty() {
        super::quota::put(conn, &batch.quotas, unix_ms_now())?;
    }
    Ok(())
}

fn insert_audit(conn: &Connection, run_id: &str, rows: &[AuditRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(INSERT_AUDIT)
        .map_err(io("write audit"))?;
    for a in rows {
        stmt.execute(params![
            run_id,
            a.at_ms,
            a.kind,
            a.actor,
            a.agent,
            a.instance,
            a.task,
            a.attempt.map(i64::from),
            a.step.map(i64::from),
            a.detail
        ])
        .map_err(io("write audit"))?;
    }
    Ok(())
}
