//! The scheduler core: workflow DAG progress, dispatch to idle agent instances, leases on
//! running tasks, retries with backoff, the fallback chain, and terminal states with reasons.
//!
//! It is a plain struct driven by the `Scheduler` actor: every method takes `now` and returns
//! [`SchedEvent`]s for the actor to trace and count. The rules:
//! - A task becomes Ready when every upstream task Succeeded. Ready tasks of one agent are
//!   ordered by effective priority (agent priority + task boost + aging), FIFO among equals;
//!   across agents the best head wins.
//! - At most `max_concurrency` tasks run at once. A running task is held by a [`Lease`] naming
//!   the agent instance and a deadline (attempt timeout + grace). A report under a lease that
//!   is no longer live is refused, so a task never completes twice.
//! - A failed attempt is retried on the same agent with exponential backoff and jitter (or
//!   after the server's `Retry-After`, whichever is longer) until the agent's `max_attempts`;
//!   a final (non-retryable) error skips the remaining attempts. Then the task moves to the
//!   fallback agent with a fresh attempt budget, down the chain. When the chain is spent, the
//!   task is Failed with the last error, and every task downstream is Skipped with a reason
//!   naming the failed task.
//! - An agent instance that dies or lets its lease expire returns its task as a failed attempt.

mod control;
mod durable;
mod idle;
mod leases;
mod share;
mod types;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use durable::{audit_rows, config_hash, Incompatible, Recovered};
pub use types::*;

use idle::IdleQueue;
use leases::Leases;

use crate::config::{AgentSpec, Config};
use crate::llm::Usage;
use crate::model::template;
use crate::model::{InstanceId, TaskKey, TaskState};
use crate::policy::backoff::{exponential, jittered, SplitMix64};
use crate::policy::ready_queue::ReadyQueue;

/// The scheduler's whole state.
#[derive(Debug)]
pub struct SchedulerCore {
    cfg: Arc<Config>,
    /// Agent name -> its index in `cfg.agents` (built once: `Config::agent` walks them all).
    agent_index: HashMap<String, usize>,
    tasks: Vec<TaskRecord>,
    index: HashMap<TaskKey, usize>,
    ready: ReadyQueue,
    delayed: BTreeSet<(Instant, u64, usize)>,
    idle: HashMap<String, IdleQueue>,
    leases: Leases,
    next_lease: u64,
    seq: u64,
    rng: SplitMix64,
    draining: bool,
    counts: [usize; 7],
    workflows: Vec<WorkflowRecord>,
    wf_index: HashMap<String, usize>,
    idempotency: HashMap<String, usize>,
    suspended: HashSet<String>,
    killed: HashMap<String, String>,
    /// Leases revoked by a cancel: the late report is absorbed (its usage kept).
    cancelled: HashMap<LeaseId, usize>,
    /// Events produced while building the declared workflows, for the actor to record.
    pending: Vec<SchedEvent>,
    /// What changed since the last [`SchedulerCore::take_changes`] (rows to store).
    dirty: durable::Dirty,
    /// When each retry that waits out its backoff is due (stored as a wall-clock deadline).
    retry_due: HashMap<usize, Instant>,
    /// Tasks spawned by each `spawn_task` call identity.
    spawn_calls: HashMap<String, usize>,
    /// Ordering policy, effective concurrency, preemption requests.
    share: share::Share,
}

impl SchedulerCore {
    /// Builds the DAGs of every workflow in `cfg`; tasks without upstream are Ready at once.
    pub fn new(cfg: Arc<Config>, now: Instant) -> Self {
        let mut core = Self {
            share: share::Share::new(&cfg),
            ready: ReadyQueue::new(now, cfg.runtime.aging_per_sec),
            agent_index: agent_index(&cfg),
            cfg: cfg.clone(),
            tasks: Vec::new(),
            index: HashMap::new(),
            delayed: BTreeSet::new(),
            idle: HashMap::new(),
            leases: Leases::default(),
            next_lease: 1,
            seq: 0,
            rng: SplitMix64::new(0x5EED_A6E7),
            draining: false,
            counts: [0; 7],
            workflows: Vec::new(),
            wf_index: HashMap::new(),
            idempotency: HashMap::new(),
            suspended: HashSet::new(),
            killed: HashMap::new(),
            cancelled: HashMap::new(),
            pending: Vec::new(),
            dirty: durable::Dirty::default(),
            retry_due: HashMap::new(),
            spawn_calls: HashMap::new(),
        };
        let mut accepted = Vec::new();
        for wf in &cfg.workflows {
            // The initial transitions of declared tasks are not events (as before the control
            // plane); their acceptance is.
            core.add_workflow(wf, WorkflowOrigin::Declared, "config", now, &mut Vec::new());
            let rec = core.workflows.last().map(|w| (w.id.clone(), w.tasks.len()));
            if let Some((id, tasks)) = rec {
                accepted.push(SchedEvent::WorkflowAccepted {
                    id,
                    origin: WorkflowOrigin::Declared,
                    by: "config".into(),
                    tasks,
                });
            }
        }
        core.pending = accepted;
        core
    }

    /// Events produced while the declared workflows were built; taken once.
    pub fn take_pending(&mut self) -> Vec<SchedEvent> {
        std::mem::take(&mut self.pending)
    }

    /// All task records: declared, then submitted and spawned ones in the order they came.
    pub fn tasks(&self) -> &[TaskRecord] {
        &self.tasks
    }

    /// The record of `key`.
    pub fn task(&self, key: &TaskKey) -> Option<&TaskRecord> {
        self.index.get(key).map(|&i| &self.tasks[i])
    }

    /// Number of tasks in each state, in [`TaskState::ALL`] order.
    pub fn counts(&self) -> [(TaskState, usize); 7] {
        TaskState::ALL.map(|s| (s, self.counts[state_slot(s)]))
    }

    /// Whether every task reached a terminal state.
    pub fn is_done(&self) -> bool {
        // From the per-state counts (kept by every transition), not a walk over every task:
        // the actor asks after each message it handles.
        let terminal: usize = TaskState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|&s| self.counts[state_slot(s)])
            .sum();
        terminal == self.tasks.len()
    }

    /// Number of live leases.
    pub fn running(&self) -> usize {
        self.leases.len()
    }

    /// Live leases.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.iter()
    }

    /// Whether `instance` holds a live lease.
    pub fn holds(&self, instance: &InstanceId) -> bool {
        self.leases.of_instance(instance).is_some()
    }

    /// The spec of the agent called `name` (O(1), unlike [`Config::agent`]).
    pub(crate) fn spec(&self, name: &str) -> Option<&AgentSpec> {
        self.agent_index.get(name).map(|&i| &self.cfg.agents[i])
    }

    /// An agent instance is idle and can take a task.
    pub fn agent_idle(&mut self, instance: InstanceId) {
        if self.killed.contains_key(&*instance.agent) {
            return;
        }
        let busy = self.leases.of_instance(&instance).is_some();
        // The agent's name is copied only the first time one of its instances is idle.
        match self.idle.get_mut(&*instance.agent) {
            Some(q) if !busy => q.push_back(instance),
            Some(_) => {}
            None => {
                let mut q = IdleQueue::new(instance.agent.clone());
                let agent = instance.agent.to_string();
                if !busy {
                    q.push_back(instance);
                }
                self.idle.insert(agent, q);
            }
        }
    }

    /// An agent instance died. Its lease, if any, comes back as a failed attempt.
    pub fn agent_gone(
        &mut self,
        instance: &InstanceId,
        reason: &str,
        now: Instant,
    ) -> Vec<SchedEvent> {
        if let Some(q) = self.idle.get_mut(&*instance.agent) {
            q.remove(instance);
        }
        let mut events = Vec::new();
        if let Some(lease) = self.leases.of_instance(instance) {
            let outcome = Outcome::Failed {
                reason: format!("agent {instance} died: {reason}"),
                retryable: true,
                retry_after: None,
            };
            self.settle(lease, outcome, Usage::default(), now, &mut events);
        }
        events
    }

    /// Stops handing out new tasks (graceful shutdown); running ones may still report.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Hands ready tasks to idle instances, best first, up to the concurrency limit.
    pub fn dispatch(&mut self, now: Instant) -> (Vec<Dispatch>, Vec<SchedEvent>) {
        let mut events = Vec::new();
        self.promote_delayed(now, &mut events);
        let mut out = Vec::new();
        if !self.draining {
            while self.leases.len() < self.share.limit {
                let Some((agent, idx)) = self.choose() else {
                    break;
                };
                // Usually the head of its agent's queue: popped, not searched for.
                let taken = if self.ready.peek(&agent).is_some_and(|(_, head)| head == idx) {
                    self.ready.pop(&agent).is_some()
                } else {
                    self.ready.remove(&agent, idx)
                };
                if !taken {
                    break;
                }
                let Some(instance) = self.idle.get_mut(&agent).and_then(IdleQueue::pop_front)
                else {
                    break;
                };
                out.push(self.lease(idx, instance, now, &mut events));
            }
        }
        self.preempt(now, &mut events);
        (out, events)
    }

    /// Settles a lease with the agent's report. Refused if the lease is no longer live.
    pub fn report(&mut self, report: Report, now: Instant) -> Result<Vec<SchedEvent>, StaleLease> {
        if let Some(idx) = self.cancelled.remove(&report.lease) {
            // The task is Cancelled already; the stopped attempt's tokens still count (what
            // a yielded run of it reported is counted already).
            let t = &mut self.tasks[idx];
            t.usage += report.usage.saturating_sub(t.yielded_usage);
            self.dirty.task(idx);
            return Ok(Vec::new());
        }
        if !self.leases.contains(&report.lease) {
            return Err(StaleLease(report.lease));
        }
        let mut events = Vec::new();
        self.settle(report.lease, report.outcome, report.usage, now, &mut events);
        Ok(events)
    }

    /// Revokes leases past their deadline; returns the instances that held them (to be
    /// restarted, since they did not report in time) and the events.
    pub fn expire(&mut self, now: Instant) -> (Vec<InstanceId>, Vec<SchedEvent>) {
        // Soonest first, from the deadline index: only what is due is looked at.
        let expired = self.leases.due(now);
        if expired.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut events = Vec::new();
        let mut instances = Vec::new();
        for id in expired {
            let Some(lease) = self.leases.get(&id) else {
                continue;
            };
            instances.push(lease.instance.clone());
            let reason = format!(
                "lease expired: agent {} did not report within {:.1?}",
                lease.instance,
                lease.deadline.saturating_duration_since(lease.started)
            );
            let outcome = Outcome::Failed {
                reason,
                retryable: true,
                retry_after: None,
            };
            self.settle(id, outcome, Usage::default(), now, &mut events);
        }
        (instances, events)
    }

    /// The next moment something is due: a delayed retry or a lease deadline (a paused or
    /// held lease has none). O(log n): both are the first entry of an ordered index.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = self.delayed.first().map(|&(t, _, _)| t);
        let lease = self.leases.next_deadline();
        match (retry, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Cancels every task that is not terminal (shutdown). Live leases are revoked: late
    /// reports under them are refused.
    pub fn cancel_all(&mut self, reason: &str, now: Instant) -> Vec<SchedEvent> {
        let mut events = Vec::new();
        self.leases.clear();
        self.share.flagged.clear();
        self.cancelled.clear();
        self.delayed.clear();
        self.retry_due.clear();
        self.ready.clear();
        for i in 0..self.tasks.len() {
            if !self.tasks[i].state.is_terminal() {
                self.finish(i, TaskState::Cancelled, reason.to_owned(), now, &mut events);
            }
        }
        events
    }

    fn lease(
        &mut self,
        idx: usize,
        instance: InstanceId,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) -> Dispatch {
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        let agent = self.spec(&instance.agent);
        let timeout = agent.map(|a| a.timeout).unwrap_or(Duration::from_secs(60));
        let priority =
            agent.map_or(50, |a| a.priority as i32) + i32::from(self.tasks[idx].priority_boost);
        let deadline = later(now, timeout + self.cfg.runtime.lease_grace);
        let input = {
            let t = &self.tasks[idx];
            let lookup = |id: &str| {
                let key = TaskKey {
                    workflow: t.key.workflow.clone(),
                    task: id.to_owned(),
                };
                self.index
                    .get(&key)
                    .and_then(|&j| self.tasks[j].output.clone())
            };
            template::render(&t.input, lookup)
        };
        let shared = if self.tasks[idx].deps.is_empty() {
            Vec::new()
        } else {
            let t = &self.tasks[idx];
            let quoted = template::references(&t.input).unwrap_or_default();
            t.deps
                .iter()
                .map(|&d| &self.tasks[d].key)
                .filter(|k| !quoted.contains(&k.task.as_str()))
                .map(TaskKey::to_string)
                .collect()
        };
        let t = &mut self.tasks[idx];
        match t.resume.take() {
            // The attempt that was running when the process died goes on under its own
            // number (and so its own journal); it still counts as one attempt.
            Some(n) => {
                t.attempts_total = t.attempts_total.max(n);
                t.attempts_on_agent = t.attempts_on_agent.max(1);
            }
            None => {
                t.attempts_on_agent += 1;
                t.attempts_total += 1;
            }
        }
        t.started.get_or_insert(now);
        let charged = self.charge_dispatch(idx);
        let t = &self.tasks[idx];
        let dispatch = Dispatch {
            lease: id,
            key: t.key.clone(),
            instance: instance.clone(),
            attempt: t.attempts_on_agent,
            attempt_total: t.attempts_total,
            input,
            timeout,
            shared,
        };
        let paused = self.suspended.contains(&*instance.agent);
        self.leases.insert(Lease {
            id,
            task: idx,
            instance,
            started: now,
            deadline,
            paused,
            priority,
            charged,
            held_since: None,
        });
        self.transition(idx, TaskState::Running, None, events);
        dispatch
    }

    fn settle(
        &mut self,
        lease: LeaseId,
        outcome: Outcome,
        usage: Usage,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) {
        let Some(lease) = self.leases.remove(&lease) else {
            return;
        };
        self.share.flagged.remove(&lease.id);
        let idx = lease.task;
        self.dirty.task(idx);
        // A run that continues a yielded attempt reports the journaled usage again.
        let fresh = usage.saturating_sub(self.tasks[idx].yielded_usage);
        self.credit_service(idx, lease.charged, fresh);
        let t = &mut self.tasks[idx];
        if matches!(outcome, Outcome::Yielded { .. }) {
            t.yielded_usage += fresh;
        } else {
            t.usage += std::mem::take(&mut t.yielded_usage);
            t.usage += fresh;
        }
        let agent = t.current_agent.clone();
        match outcome {
            Outcome::Yielded {
                reason,
                resume_after,
                preempted,
            } => {
                // Not a failure: the same attempt continues later, on any instance.
                t.resume = Some(t.attempts_total);
                events.push(SchedEvent::Yielded {
                    task: t.key.clone(),
                    instance: lease.instance.clone(),
                    attempt: t.attempts_total,
                    reason: reason.clone(),
                    preempted,
                });
                self.transition(idx, TaskState::Ready, Some(reason), events);
                match resume_after {
                    Some(delay) => {
                        self.seq += 1;
                        let due = later(now, delay);
                        self.delayed.insert((due, self.seq, idx));
                        self.retry_due.insert(idx, due);
                    }
                    None => self.make_ready(idx, now, events),
                }
            }
            Outcome::Succeeded { output } => {
                t.output = Some(output);
                t.finished_by = Some(lease.instance.to_string());
                t.attempts.push(AttemptRecord {
                    agent,
                    instance: lease.instance.to_string(),
                    error: None,
                });
                self.finish(idx, TaskState::Succeeded, "completed".into(), now, events);
                for d in self.tasks[idx].dependents.clone() {
                    let dt = &self.tasks[d];
                    if dt.state == TaskState::Pending
                        && dt
                            .deps
                            .iter()
                            .all(|&u| self.tasks[u].state == TaskState::Succeeded)
                    {
                        self.make_ready(d, now, events);
                    }
                }
            }
            Outcome::Failed {
                reason,
                retryable,
                retry_after,
            } => {
                t.attempts.push(AttemptRecord {
                    agent: agent.clone(),
                    instance: lease.instance.to_string(),
                    error: Some(reason.clone()),
                });
                t.last_error = Some(reason.clone());
                // `self.spec`, by fields: `t` is still borrowed.
                let policy = self
                    .agent_index
                    .get(&agent)
                    .map(|&i| self.cfg.agents[i].retry);
                let attempts = t.attempts_on_agent;
                match policy {
                    Some(p)
                        if retryable
                            && attempts < p.max_attempts
                            && !self.killed.contains_key(&agent) =>
                    {
                        let base =
                            exponential(p.initial_backoff, p.max_backoff, p.multiplier, attempts);
                        // A server's Retry-After is honoured, but capped: it is outside input.
                        let delay = jittered(base, p.jitter, self.rng.next_unit())
                            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                        events.push(SchedEvent::Retry {
                            task: t.key.clone(),
                            agent: agent.clone(),
                            attempt: attempts,
                            delay,
                            reason: reason.clone(),
                        });
                        self.seq += 1;
                        let due = later(now, delay);
                        self.delayed.insert((due, self.seq, idx));
                        self.retry_due.insert(idx, due);
                        self.transition(idx, TaskState::Ready, Some(reason), events);
                    }
                    _ => self.fall_back_or_fail(idx, now, events),
                }
            }
        }
    }

    fn fall_back_or_fail(&mut self, idx: usize, now: Instant, events: &mut Vec<SchedEvent>) {
        self.dirty.task(idx);
        self.retry_due.remove(&idx);
        let agent = self.tasks[idx].current_agent.clone();
        let fallback = self.spec(&agent).and_then(|a| a.fallback.clone());
        match fallback {
            Some(next) if !self.tasks[idx].chain.contains(&next) => {
                let t = &mut self.tasks[idx];
                events.push(SchedEvent::Fallback {
                    task: t.key.clone(),
                    from: agent.clone(),
                    to: next.clone(),
                    after_attempts: t.attempts_on_agent,
                });
                t.chain.push(next.clone());
                t.current_agent = next;
                t.attempts_on_agent = 0;
                // A journal belongs to its agent: the fallback starts an attempt of its own.
                t.resume = None;
                self.make_ready(idx, now, events);
            }
            _ => {
                let t = &self.tasks[idx];
                let reason = format!(
                    "failed after {} attempt{} (agents: {}); last error: {}",
                    t.attempts_total,
                    if t.attempts_total == 1 { "" } else { "s" },
                    t.chain.join(" -> "),
                    t.last_error.as_deref().unwrap_or("unknown")
                );
                let root = t.key.clone();
                self.finish(idx, TaskState::Failed, reason, now, events);
                self.skip_downstream(idx, &root, now, events);
            }
        }
    }

    fn skip_downstream(
        &mut self,
        idx: usize,
        root: &TaskKey,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) {
        let mut stack = self.tasks[idx].dependents.clone();
        while let Some(d) = stack.pop() {
            // Downstream of a failed task nothing can be Ready (a Ready task has every
            // upstream succeeded), so nothing needs to leave the ready queue here.
            if self.tasks[d].state.is_terminal() {
                continue;
            }
            let reason = format!("upstream task {root} failed");
            self.finish(d, TaskState::Skipped, reason, now, events);
            stack.extend(self.tasks[d].dependents.iter().copied());
        }
    }

    fn make_ready(&mut self, idx: usize, now: Instant, events: &mut Vec<SchedEvent>) {
        if let Some(why) = self.killed.get(&self.tasks[idx].current_agent) {
            // A killed agent takes no task: on to the fallback (or fail with why).
            let why = why.clone();
            self.tasks[idx].last_error.get_or_insert(why);
            self.fall_back_or_fail(idx, now, events);
            return;
        }
        let priority = self.base_priority(idx);
        let agent = self.tasks[idx].current_agent.clone();
        self.ready.push(&agent, idx, priority, now);
        if self.tasks[idx].state != TaskState::Ready {
            self.transition(idx, TaskState::Ready, None, events);
        }
    }

    fn promote_delayed(&mut self, now: Instant, events: &mut Vec<SchedEvent>) {
        while let Some(&(due, seq, idx)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.remove(&(due, seq, idx));
            self.retry_due.remove(&idx);
            self.make_ready(idx, now, events);
        }
    }

    fn finish(
        &mut self,
        idx: usize,
        state: TaskState,
        reason: String,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) {
        let t = &mut self.tasks[idx];
        t.reason = Some(reason.clone());
        t.finished = Some(now);
        // A yielded attempt that never continued: what it used still counts. (Kept, so that
        // a late report of a cancelled run does not count it twice.)
        let yielded = t.yielded_usage;
        t.usage += yielded;
        self.transition(idx, state, Some(reason), events);
    }

    fn transition(
        &mut self,
        idx: usize,
        to: TaskState,
        reason: Option<String>,
        events: &mut Vec<SchedEvent>,
    ) {
        self.dirty.task(idx);
        let t = &mut self.tasks[idx];
        let from = t.state;
        t.state = to;
        self.counts[state_slot(from)] -= 1;
        self.counts[state_slot(to)] += 1;
        let wf = t.workflow;
        events.push(SchedEvent::TaskState {
            task: t.key.clone(),
            agent: t.current_agent.clone(),
            from,
            to,
            attempt: t.attempts_total,
            reason,
        });
        if to.is_terminal() && !from.is_terminal() {
            self.task_closed(wf, events);
        }
    }
}

/// Longest `Retry-After` the scheduler waits for before retrying anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `now + d`, with `d` capped at a year so that no setting or reply can overflow an `Instant`.
fn later(now: Instant, d: Duration) -> Instant {
    now + d.min(Duration::from_secs(31_536_000))
}

/// Agent name -> index in `cfg.agents` (the first of a name, as [`Config::agent`] finds it).
fn agent_index(cfg: &Config) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(cfg.agents.len());
    for (i, a) in cfg.agents.iter().enumerate() {
        index.entry(a.name.clone()).or_insert(i);
    }
    index
}

fn state_slot(s: TaskState) -> usize {
    TaskState::ALL.iter().position(|&x| x == s).unwrap_or(0)
}

#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod tests;
