//! The scheduler core's durable side: what changed goes to the store as whole rows, and a
//! resumed run rebuilds the core from them.
//!
//! - Every change marks its task, workflow or agent control dirty;
//!   [`SchedulerCore::take_changes`] turns the marks into rows (a [`StateBatch`]) for the
//!   actor's store writer, which group-commits them.
//! - [`SchedulerCore::recover`] rebuilds a core from the stored rows and the step journal:
//!   1. the workflows in their stored order (declared ones from the config, after checking
//!      that their DAG did not change; submitted ones from their stored spec), then the
//!      spawned tasks in the order they were spawned, which rebuilds every edge;
//!   2. each task's stored state. A succeeded task is never run again. A task that was
//!      Running continues its attempt (same attempt number, so the same context, whose pages
//!      are the journal to replay). A retry waiting out its backoff keeps its wall-clock
//!      deadline;
//!   3. the journal wins over a state row that lagged behind it: an attempt the journal knows
//!      (its context has pages) and the row does not is the one to continue.
//!
//! Refused ([`Incompatible`]) when the config changed so that the stored tasks cannot be
//! placed: an agent a task runs on is gone, or a declared workflow's DAG changed.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::*;
use crate::config::{TaskSpec, WorkflowSpec};
use crate::store::{AuditRow, ControlRow, StateBatch, TaskRow, WorkflowRow};

/// What changed since the rows were last taken.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    tasks: BTreeSet<usize>,
    workflows: BTreeSet<usize>,
    controls: BTreeSet<String>,
}

impl Dirty {
    pub(super) fn task(&mut self, idx: usize) {
        self.tasks.insert(idx);
    }

    pub(super) fn workflow(&mut self, w: usize) {
        self.workflows.insert(w);
    }

    pub(super) fn control(&mut self, agent: &str) {
        if !self.controls.contains(agent) {
            self.controls.insert(agent.to_owned());
        }
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.workflows.is_empty() && self.controls.is_empty()
    }
}

/// Why a stored run cannot be resumed under this config: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the config changed since the run was stored, so it cannot be resumed:\n  - {}", .0.join("\n  - "))]
pub struct Incompatible(pub Vec<String>);

/// What a recovery found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Tasks already in a terminal state (never run again).
    pub finished: usize,
    /// Of those, tasks that succeeded.
    pub succeeded: usize,
    /// Attempts that were running at the crash and continue from their journal.
    pub continued: usize,
    /// Tasks not started, ready, or waiting for a retry.
    pub waiting: usize,
}

impl SchedulerCore {
    /// Rows for everything that changed since the last call (`wall_ms`: now, in Unix
    /// milliseconds, for wall-clock retry deadlines).
    pub fn take_changes(&mut self, now: Instant, wall_ms: i64) -> StateBatch {
        if self.dirty.is_empty() {
            return StateBatch::default();
        }
        let dirty = std::mem::take(&mut self.dirty);
        StateBatch {
            workflows: dirty
                .workflows
                .iter()
                .map(|&w| self.workflow_row(w))
                .collect(),
            tasks: dirty
                .tasks
                .iter()
                .map(|&i| self.task_row(i, now, wall_ms))
                .collect(),
            controls: dirty.controls.iter().map(|a| self.control_row(a)).collect(),
            audit: Vec::new(),
            quotas: Vec::new(),
        }
    }

    /// Marks everything changed: the next [`SchedulerCore::take_changes`] rewrites every row
    /// (after a batch was lost to a failed commit: the rows it had are the current ones again).
    pub fn mark_all_dirty(&mut self) {
        for w in 0..self.workflows.len() {
            self.dirty.workflow(w);
        }
        for i in 0..self.tasks.len() {
            self.dirty.task(i);
        }
        let agents: Vec<String> = self
            .suspended
            .iter()
            .chain(self.killed.keys())
            .cloned()
            .collect();
        for a in agents {
            self.dirty.control(&a);
        }
    }

    /// Rows for everything (a whole checkpoint: `durability: exit` writes one at the end).
    pub fn all_rows(&mut self, now: Instant, wall_ms: i64) -> StateBatch {
        self.dirty = Dirty::default();
        let agents: Vec<String> = self
            .suspended
            .iter()
            .chain(self.killed.keys())
            .cloned()
            .collect();
        StateBatch {
            workflows: (0..self.workflows.len())
                .map(|w| self.workflow_row(w))
                .collect(),
            tasks: (0..self.tasks.len())
                .map(|i| self.task_row(i, now, wall_ms))
                .collect(),
            controls: agents.iter().map(|a| self.control_row(a)).collect(),
            audit: Vec::new(),
            quotas: Vec::new(),
        }
    }

    fn workflow_row(&self, w: usize) -> WorkflowRow {
        let rec = &self.workflows[w];
        WorkflowRow {
            id: rec.id.clone(),
            seq: w as u64,
            name: rec.name.clone(),
            origin: rec.origin.label().to_owned(),
            by: rec.by.clone(),
            spec: serde_json::to_string(&rec.spec).unwrap_or_default(),
            idempotency_key: rec.idempotency_key.clone(),
            cancelled_by: rec.cancelled_by.clone(),
            finished: rec.finished.map(|s| s.label().to_owned()),
            submitted_at: rec.submitted_at,
        }
    }

    fn task_row(&self, i: usize, now: Instant, wall_ms: i64) -> TaskRow {
        let t = &self.tasks[i];
        let retry_at_ms = self.retry_due.get(&i).map(|&due| {
            let wait = due.saturating_duration_since(now);
            wall_ms.saturating_add(wait.as_millis().min(i64::MAX as u128) as i64)
        });
        TaskRow {
            workflow: t.key.workflow.clone(),
            task: t.key.task.clone(),
            seq: i as u64,
            spawned_by: t.spawned_by.clone(),
            spawn_call: t.spawn_call.clone(),
            depth: t.depth,
            agent: t.chain.first().cloned().unwrap_or_default(),
            input: t.input.clone(),
            depends_on: t.deps[..t.declared_deps.min(t.deps.len())]
                .iter()
                .map(|&d| self.tasks[d].key.task.clone())
                .collect(),
            priority_boost: i64::from(t.priority_boost),
            state: t.state.label().to_owned(),
            current_agent: t.current_agent.clone(),
            chain: t.chain.clone(),
            attempts_on_agent: t.attempts_on_agent,
            attempts_total: t.attempts_total,
            history: serde_json::to_string(&t.attempts).unwrap_or_else(|_| "[]".into()),
            output: t.output.clone(),
            reason: t.reason.clone(),
            last_error: t.last_error.clone(),
            finished_by: t.finished_by.clone(),
            prompt_tokens: t.usage.prompt_tokens,
            completion_tokens: t.usage.completion_tokens,
            cached_tokens: t.usage.cached_tokens,
            retry_at_ms,
            updated_ms: wall_ms,
        }
    }

    /// The audit entries of `events` ([`audit_rows`]), with the instance of a transition out
    /// of Running filled in from the attempt it ended.
    pub fn audit_rows(&self, events: &[SchedEvent], wall_ms: i64) -> Vec<AuditRow> {
        let mut rows = audit_rows(events, wall_ms);
        for (row, ev) in rows.iter_mut().zip(events) {
            if let SchedEvent::TaskState {
                task,
                from: TaskState::Running,
                attempt,
                ..
            } = ev
            {
                // The attempt's record, if this transition ended it (a cancel records none).
                row.instance = self
                    .task(task)
                    .filter(|t| t.attempts.len() == *attempt as usize)
                    .and_then(|t| t.attempts.last())
                    .map(|a| a.instance.clone());
            }
        }
        rows
    }

    fn control_row(&self, agent: &str) -> ControlRow {
        let (status, why) = match self.killed.get(agent) {
            Some(why) => ("killed", Some(why.clone())),
            None if self.suspended.contains(agent) => ("suspended", None),
            None => ("active", None),
        };
        ControlRow {
            agent: agent.to_owned(),
            status: status.to_owned(),
            why,
        }
    }

    /// Rebuilds the core of a stored run. `journaled` lists the contexts with pages
    /// (`workflow/task#attempt`, owning agent); `now`/`wall_ms` are this moment.
    pub fn recover(
        cfg: Arc<Config>,
        stored: &StateBatch,
        journaled: &[(String, String)],
        now: Instant,
        wall_ms: i64,
    ) -> Result<(SchedulerCore, Recovered), Incompatible> {
        if stored.workflows.is_empty() {
            // Nothing was stored before the crash: the run starts as it did.
            let mut core = SchedulerCore::new(cfg, now);
            core.ready.clear();
            for i in 0..core.tasks.len() {
                core.set_state(i, TaskState::Pending);
            }
            let journal = latest_attempts(journaled);
            for i in 0..core.tasks.len() {
                core.overlay_journal(i, &journal);
            }
            let recovered = core.settle_recovered(now);
            return Ok((core, recovered));
        }
        let mut problems = check_compatible(&cfg, stored);
        let mut core = SchedulerCore::new(
            Arc::new(Config {
                workflows: Vec::new(),
                ..Config::clone(&cfg)
            }),
            now,
        );
        // The same agents as the config the core was built from: its agent index holds.
        core.cfg = cfg.clone();
        core.pending.clear();
        let mut ignored = Vec::new();
        for w in &stored.workflows {
            let spec = if w.origin == WorkflowOrigin::Declared.label() {
                cfg.workflows.iter().find(|d| d.name == w.name).cloned()
            } else {
                serde_json::from_str::<WorkflowSpec>(&w.spec).ok()
            };
            let Some(spec) = spec else {
                problems.push(format!(
                    "workflow {}: its stored definition cannot be read",
                    w.id
                ));
                continue;
            };
            let origin = if w.origin == WorkflowOrigin::Declared.label() {
                WorkflowOrigin::Declared
            } else {
                WorkflowOrigin::Submitted
            };
            let idx = core.add_workflow_as(w.id.clone(), &spec, origin, &w.by, now, &mut ignored);
            let rec = &mut core.workflows[idx];
            rec.submitted_at = w.submitted_at;
            rec.cancelled_by.clone_from(&w.cancelled_by);
            rec.finished = w
                .finished
                .as_deref()
                .and_then(|f| WorkflowState::ALL.into_iter().find(|s| s.label() == f));
            rec.idempotency_key.clone_from(&w.idempotency_key);
            if let Some(key) = &w.idempotency_key {
                core.idempotency.insert(key.clone(), idx);
            }
        }
        for row in stored.tasks.iter().filter(|t| t.spawned_by.is_some()) {
            let parent = TaskKey {
                workflow: row.workflow.clone(),
                task: row.spawned_by.clone().unwrap_or_default(),
            };
            let Some(&p) = core.index.get(&parent) else {
                problems.push(format!(
                    "task {}/{}: the task that spawned it ({parent}) is not in the run",
                    row.workflow, row.task
                ));
                continue;
            };
            let deps: Vec<usize> = row
                .depends_on
                .iter()
                .filter_map(|d| {
                    core.index
                        .get(&TaskKey {
                            workflow: row.workflow.clone(),
                            task: d.clone(),
                        })
                        .copied()
                })
                .collect();
            let spec = TaskSpec {
                id: row.task.clone(),
                agent: row.agent.clone(),
                input: row.input.clone(),
                depends_on: row.depends_on.clone(),
                priority_boost: row.priority_boost.clamp(i16::MIN.into(), i16::MAX.into()) as i16,
            };
            core.attach_spawned(p, &spec, deps, row.spawn_call.clone());
        }
        if !problems.is_empty() {
            return Err(Incompatible(problems));
        }
        for c in &stored.controls {
            match c.status.as_str() {
                "suspended" => {
                    core.suspended.insert(c.agent.clone());
                }
                "killed" => {
                    let why = c
                        .why
                        .clone()
                        .unwrap_or_else(|| format!("agent {} was killed", c.agent));
                    core.killed.insert(c.agent.clone(), why);
                }
                _ => {}
            }
        }
        // Start from a clean slate: states come from the rows, readiness is recomputed.
        core.ready.clear();
        core.delayed.clear();
        let journal = latest_attempts(journaled);
        let rows: HashMap<TaskKey, &TaskRow> = stored
            .tasks
            .iter()
            .map(|r| {
                (
                    TaskKey {
                        workflow: r.workflow.clone(),
                        task: r.task.clone(),
                    },
                    r,
                )
            })
            .collect();
        for i in 0..core.tasks.len() {
            if let Some(row) = rows.get(&core.tasks[i].key) {
                core.overlay_row(i, row, now, wall_ms);
            }
            core.overlay_journal(i, &journal);
        }
        let recovered = core.settle_recovered(now);
        Ok((core, recovered))
    }

    fn set_state(&mut self, idx: usize, to: TaskState) {
        let from = self.tasks[idx].state;
        self.counts[state_slot(from)] -= 1;
        self.counts[state_slot(to)] += 1;
        self.tasks[idx].state = to;
    }

    /// Puts the stored row's state on task `idx` (readiness comes later).
    fn overlay_row(&mut self, idx: usize, row: &TaskRow, now: Instant, wall_ms: i64) {
        let state = TaskState::from_label(&row.state).unwrap_or(TaskState::Pending);
        {
            let t = &mut self.tasks[idx];
            t.current_agent.clone_from(&row.current_agent);
            t.chain.clone_from(&row.chain);
            if t.chain.is_empty() {
                t.chain.push(row.current_agent.clone());
            }
            t.attempts_on_agent = row.attempts_on_agent;
            t.attempts_total = row.attempts_total;
            t.attempts = serde_json::from_str(&row.history).unwrap_or_default();
            t.output.clone_from(&row.output);
            t.reason.clone_from(&row.reason);
            t.last_error.clone_from(&row.last_error);
            t.finished_by.clone_from(&row.finished_by);
            t.usage = Usage {
                prompt_tokens: row.prompt_tokens,
                completion_tokens: row.completion_tokens,
                cached_tokens: row.cached_tokens,
            };
            if state.is_terminal() {
                t.started = Some(now);
                t.finished = Some(now);
            }
        }
        match state {
            TaskState::Running => {
                // The attempt in flight at the crash: continued, under its own number.
                self.tasks[idx].resume = Some(row.attempts_total.max(1));
                self.set_state(idx, TaskState::Pending);
            }
            TaskState::Ready => {
                if let Some(at) = row.retry_at_ms {
                    let wait = Duration::from_millis(at.saturating_sub(wall_ms).max(0) as u64);
                    self.retry_due.insert(idx, later(now, wait));
                }
                self.set_state(idx, TaskState::Pending);
            }
            s => self.set_state(idx, s),
        }
    }

    /// The journal knows an attempt of task `idx` that its row (if any) does not: continue it.
    fn overlay_journal(&mut self, idx: usize, journal: &HashMap<TaskKey, (u32, String)>) {
        let t = &mut self.tasks[idx];
        if t.state.is_terminal() {
            return;
        }
        let Some((n, agent)) = journal.get(&t.key) else {
            return;
        };
        if *n > t.attempts_total {
            // The row lagged behind the journal: attempt `n` started after it was written.
            if &t.current_agent != agent {
                t.current_agent.clone_from(agent);
                if !t.chain.contains(agent) {
                    t.chain.push(agent.clone());
                }
                t.attempts_on_agent = 0;
            }
            t.attempts_on_agent += n - t.attempts_total;
            t.attempts_total = *n;
            t.resume = Some(*n);
        } else if *n == t.attempts_total && t.resume.is_none() && (t.attempts.len() as u32) < *n {
            // Its latest attempt has pages and no recorded end.
            t.resume = Some(*n);
        }
    }

    /// Makes ready what can run: every non-terminal task was left Pending by the overlay.
    fn settle_recovered(&mut self, now: Instant) -> Recovered {
        let mut out = Recovered::default();
        let mut events = Vec::new();
        for w in 0..self.workflows.len() {
            let open = self.workflows[w]
                .tasks
                .iter()
                .filter(|&&i| !self.tasks[i].state.is_terminal())
                .count();
            let wf = &mut self.workflows[w];
            wf.open = open;
            wf.spawned = wf
                .tasks
                .iter()
                .filter(|&&i| self.tasks[i].spawned_by.is_some())
                .count() as u32;
            if open == 0 && wf.finished.is_none() {
                wf.open = 1;
                let first = wf.tasks.first().copied();
                if let Some(i) = first {
                    self.task_closed(self.tasks[i].workflow, &mut events);
                } else {
                    self.workflows[w].open = 0;
                    self.workflows[w].finished = Some(WorkflowState::Succeeded);
                }
            }
        }
        for i in 0..self.tasks.len() {
            let state = self.tasks[i].state;
            if state.is_terminal() {
                out.finished += 1;
                if state == TaskState::Succeeded {
                    out.succeeded += 1;
                }
                continue;
            }
            if self.tasks[i].resume.is_some() {
                out.continued += 1;
            } else {
                out.waiting += 1;
            }
            let ready = self.tasks[i]
                .deps
                .iter()
                .all(|&d| self.tasks[d].state == TaskState::Succeeded);
            if !ready {
                continue;
            }
            match self.retry_due.get(&i).copied() {
                Some(due) if due > now && self.tasks[i].resume.is_none() => {
                    self.seq += 1;
                    self.delayed.insert((due, self.seq, i));
                    self.set_state(i, TaskState::Ready);
                }
                _ => {
                    self.retry_due.remove(&i);
                    self.make_ready(i, now, &mut events);
                }
            }
        }
        // Everything is as stored; rows are rewritten only as things change from here.
        self.dirty = Dirty::default();
        for i in 0..self.tasks.len() {
            if self.tasks[i].resume.is_some() {
                self.dirty.task(i);
            }
        }
        out
    }
}

/// The newest journaled attempt of each task: `workflow/task#N` -> (N, agent).
fn latest_attempts(journaled: &[(String, String)]) -> HashMap<TaskKey, (u32, String)> {
    let mut out: HashMap<TaskKey, (u32, String)> = HashMap::new();
    for (context, agent) in journaled {
        let Some((key, n)) = context.rsplit_once('#') else {
            continue;
        };
        let (Some((workflow, task)), Ok(n)) = (key.split_once('/'), n.parse::<u32>()) else {
            continue;
        };
        let key = TaskKey {
            workflow: workflow.to_owned(),
            task: task.to_owned(),
        };
        let e = out.entry(key).or_insert((0, String::new()));
        if n > e.0 {
            *e = (n, agent.clone());
        }
    }
    out
}

/// Every reason the stored run does not fit `cfg`.
fn check_compatible(cfg: &Config, stored: &StateBatch) -> Vec<String> {
    let mut problems = Vec::new();
    let mut declared_stored = Vec::new();
    for w in stored
        .workflows
        .iter()
        .filter(|w| w.origin == WorkflowOrigin::Declared.label())
    {
        declared_stored.push(w.name.as_str());
        let Some(now) = cfg.workflows.iter().find(|d| d.name == w.name) else {
            problems.push(format!(
                "workflow {} is in the stored run but no longer in the config",
                w.name
            ));
            continue;
        };
        let Ok(then) = serde_json::from_str::<WorkflowSpec>(&w.spec) else {
            problems.push(format!(
                "workflow {}: its stored definition cannot be read",
                w.name
            ));
            continue;
        };
        let shape = |s: &WorkflowSpec| -> Vec<(String, String, Vec<String>)> {
            s.tasks
                .iter()
                .map(|t| (t.id.clone(), t.agent.clone(), t.depends_on.clone()))
                .collect()
        };
        if shape(&then) != shape(now) {
            problems.push(format!(
                "workflow {}: its DAG changed (tasks, their agents or their depends_on)",
                w.name
            ));
        }
    }
    for d in &cfg.workflows {
        if !declared_stored.contains(&d.name.as_str()) {
            problems.push(format!(
                "workflow {} is in the config but not in the stored run",
                d.name
            ));
        }
    }
    for t in &stored.tasks {
        let mut agents: Vec<&str> = vec![t.agent.as_str(), t.current_agent.as_str()];
        agents.extend(t.chain.iter().map(String::as_str));
        agents.dedup();
        for a in agents {
            if cfg.agent(a).is_none() && !t.state_is_terminal() {
                problems.push(format!(
                    "task {}/{} runs on agent {a}, which the config no longer declares",
                    t.workflow, t.task
                ));
                break;
            }
        }
    }
    problems
}

trait RowState {
    fn state_is_terminal(&self) -> bool;
}

impl RowState for TaskRow {
    fn state_is_terminal(&self) -> bool {
        TaskState::from_label(&self.state).is_some_and(TaskState::is_terminal)
    }
}

/// A short hash of what decides task identity (agent names and the declared workflows'
/// shapes), stored with the run to tell a changed config at a glance.
pub fn config_hash(cfg: &Config) -> String {
    // FNV-1a: stable across builds and platforms (std's hasher is not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for a in &cfg.agents {
        eat(&a.name);
    }
    for w in &cfg.workflows {
        eat(&w.name);
        for t in &w.tasks {
            eat(&t.id);
            eat(&t.agent);
            for d in &t.depends_on {
                eat(d);
            }
        }
    }
    format!("{h:016x}")
}

/// The audit entries of scheduler events: state transitions, retries, fallbacks, workflows
/// accepted and finished, spawns, agent controls and cancelled attempts, each with who did it.
pub fn audit_rows(events: &[SchedEvent], wall_ms: i64) -> Vec<AuditRow> {
    let row = |kind: &str, actor: &str, agent: Option<&str>, task: Option<String>| AuditRow {
        at_ms: wall_ms,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        agent: agent.map(str::to_owned),
        instance: None,
        task,
        attempt: None,
        step: None,
        detail: String::new(),
    };
    events
        .iter()
        .filter_map(|ev| {
            Some(match ev {
            SchedEvent::TaskState {
                task,
                agent,
                from,
                to,
                attempt,
                reason,
            } => AuditRow {
                attempt: Some(*attempt),
                detail: state_detail(from.label(), reason.as_deref(), to.label()),
                ..row(
                    "task_state",
                    "scheduler",
                    Some(agent),
                    Some(task.to_string()),
                )
            },
            SchedEvent::Retry {
                task,
                agent,
                attempt,
                delay,
                reason,
            } => AuditRow {
                attempt: Some(*attempt),
                detail: serde_json::json!({"backoff_secs": delay.as_secs_f64(), "reason": reason})
                    .to_string(),
                ..row(
                    "task_retry",
                    "scheduler",
                    Some(agent),
                    Some(task.to_string()),
                )
            },
            SchedEvent::Fallback {
                task,
                from,
                to,
                after_attempts,
            } => AuditRow {
                detail:
                    serde_json::json!({"from": from, "to": to, "after_attempts": after_attempts})
                        .to_string(),
                ..row(
                    "task_fallback",
                    "scheduler",
                    Some(to),
                    Some(task.to_string()),
                )
            },
            SchedEvent::WorkflowAccepted {
                id,
                origin,
                by,
                tasks,
            } => AuditRow {
                detail:
                    serde_json::json!({"workflow": id, "origin": origin.label(), "tasks": tasks})
                        .to_string(),
                ..row("workflow_accepted", by, None, None)
            },
            SchedEvent::WorkflowFinished { id, state } => AuditRow {
                detail: serde_json::json!({"workflow": id, "state": state.label()}).to_string(),
                ..row("workflow_finished", "scheduler", None, None)
            },
            SchedEvent::TaskSpawned {
                task,
                parent,
                agent,
                depth,
            } => AuditRow {
                detail: serde_json::json!({"parent": parent.to_string(), "depth": depth})
                    .to_string(),
                ..row(
                    "task_spawned",
                    &parent.to_string(),
                    Some(agent),
                    Some(task.to_string()),
                )
            },
            SchedEvent::AgentControlled { agent, action, by } => AuditRow {
                detail: serde_json::json!({"action": action.label()}).to_string(),
                ..row("agent_control", by, Some(agent), None)
            },
            SchedEvent::AttemptCancelled {
                task,
                instance,
                reason,
                ..
            } => AuditRow {
                instance: Some(instance.to_string()),
                detail: serde_json::json!({"reason": reason}).to_string(),
                ..row(
                    "attempt_cancelled",
                    "scheduler",
                    Some(&instance.agent),
                    Some(task.to_string()),
                )
            },
            SchedEvent::Yielded {
                task,
                instance,
                attempt,
                reason,
                preempted,
            } => AuditRow {
                instance: Some(instance.to_string()),
                attempt: Some(*attempt),
                detail: serde_json::json!({"reason": reason, "preempted": preempted}).to_string(),
                ..row(
                    "task_yielded",
                    "scheduler",
                    Some(&instance.agent),
                    Some(task.to_string()),
                )
            },
            // A request, not a change: the yield it leads to is recorded.
            SchedEvent::PreemptRequested { .. } => return None,
        })
        })
        .collect()
}

/// The detail of a task transition's audit entry, `{"from":…,"reason":…,"to":…}`, exactly as
/// `json!` writes it (keys sorted) but without building a JSON value first: every task
/// transition writes one.
fn state_detail(from: &str, reason: Option<&str>, to: &str) -> String {
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        from: &'a str,
        reason: Option<&'a str>,
        to: &'a str,
    }
    // Strings and a null only: serializing them to a String cannot fail.
    serde_json::to_string(&Detail { from, reason, to }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transition_detail_reads_as_the_json_value_wrote_it() {
        for (from, reason, to) in [
            ("ready", None, "running"),
            ("running", Some("completed"), "succeeded"),
            ("running", Some("said \"no\"\n\tthen \u{1}é"), "failed"),
        ] {
            let value = serde_json::json!({"from": from, "to": to, "reason": reason}).to_string();
            assert_eq!(state_detail(from, reason, to), value);
        }
    }
}
