//! The `Scheduler` actor: owns the [`SchedulerCore`] and turns its decisions into messages.
//!
//! Agents announce themselves idle ([`AgentIdle`]) and report each attempt ([`TaskReport`]);
//! supervisors report dead agents ([`AgentDown`]). After every message the scheduler "pumps":
//! it revokes expired leases (and asks the agent supervisor to restart their holders), hands
//! ready tasks to idle agents with bounded `try_send`, updates metrics and the trace, and
//! arms one timer for the next retry or lease deadline.
//!
//! The core lives behind an `Arc<Mutex<_>>` owned by the child spec, so a restarted scheduler
//! resumes the same DAGs. Leases of the previous incarnation are returned as failed attempts.

mod messages;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix::prelude::*;
use agentos_runtime::metrics as m;
use agentos_runtime::model::{InstanceId, TaskState};
use agentos_runtime::sched::{Outcome, SchedEvent, SchedulerCore};
use agentos_runtime::trace::Trace;
use serde_json::json;

pub use messages::*;

use crate::agent::RunTask;
use crate::registry::Registry;
use crate::supervisor::{ExitNotice, RestartChild};

/// The scheduler actor.
pub struct Scheduler {
    core: Arc<Mutex<SchedulerCore>>,
    registry: Arc<Registry>,
    trace: Trace,
    notice: ExitNotice,
    agents: std::collections::HashMap<InstanceId, Recipient<RunTask>>,
    timer: Option<SpawnHandle>,
}

impl Scheduler {
    /// A scheduler over a shared core.
    pub fn new(
        core: Arc<Mutex<SchedulerCore>>,
        registry: Arc<Registry>,
        trace: Trace,
        notice: ExitNotice,
    ) -> Self {
        Self {
            core,
            registry,
            trace,
            notice,
            agents: Default::default(),
            timer: None,
        }
    }

    fn core(&self) -> MutexGuard<'_, SchedulerCore> {
        // A poisoned lock means a previous incarnation panicked mid-update; the state is still
        // the best record of the run, so keep going with it.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (expired, mut events) = self.core().expire(now);
        for instance in &expired {
            metrics::counter!(m::SCHED_LEASE_EXPIRED).increment(1);
            metrics::counter!(m::SCHED_TASK_ATTEMPTS, "agent" => instance.agent.clone(), "outcome" => "failed")
                .increment(1);
            self.agents.remove(instance);
            if let Some(sup) = self.registry.agent_supervisor() {
                sup.do_send(RestartChild(crate::agent::child_id(instance)));
            }
        }
        let (dispatches, more) = self.core().dispatch(now);
        events.extend(more);
        for d in dispatches {
            let instance = d.instance.clone();
            let delivered = match self.agents.get(&instance) {
                Some(r) => r.try_send(RunTask { dispatch: d }).map_err(|e| match e {
                    SendError::Full(_) => "mailbox full",
                    SendError::Closed(_) => "mailbox closed",
                }),
                None => Err("not registered"),
            };
            if let Err(why) = delivered {
                self.agents.remove(&instance);
                let ev =
                    self.core()
                        .agent_gone(&instance, &format!("task not delivered: {why}"), now);
                events.extend(ev);
            }
        }
        self.record(events);
        let (counts, done, next) = {
            let core = self.core();
            (core.counts(), core.is_done(), core.next_deadline())
        };
        for (state, n) in counts {
            metrics::gauge!(m::SCHED_TASKS, "state" => state.label()).set(n as f64);
        }
        if done && !*self.registry.done.borrow() {
            self.registry.done.send_replace(true);
        }
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        if let Some(at) = next {
            let delay = at.saturating_duration_since(Instant::now());
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.pump(ctx);
            }));
        }
    }

    fn record(&self, events: Vec<SchedEvent>) {
        for ev in events {
            match ev {
                SchedEvent::TaskState {
                    task,
                    agent,
                    from,
                    to,
                    attempt,
                    reason,
                } => {
                    tracing::debug!(%task, %agent, %from, %to, attempt, ?reason, "task state");
                    if to.is_terminal() {
                        metrics::counter!(m::SCHED_TASKS_FINISHED, "state" => to.label())
                            .increment(1);
                        if let Some(rec) = self.core().task(&task) {
                            metrics::histogram!(m::SCHED_TASK_DURATION, "state" => to.label())
                                .record(rec.duration(Instant::now()).as_secs_f64());
                        }
                    }
                    self.trace.emit(
                        "task_state",
                        json!({"task": task.to_string(), "agent": agent, "from": from, "to": to,
                               "attempt": attempt, "reason": reason}),
                    );
                }
                SchedEvent::Retry {
                    task,
                    agent,
                    attempt,
                    delay,
                    reason,
                } => {
                    metrics::counter!(m::SCHED_TASK_RETRIES, "agent" => agent.clone()).increment(1);
                    self.trace.emit(
                        "task_retry",
                        json!({"task": task.to_string(), "agent": agent, "failed_attempt": attempt,
                               "backoff_secs": delay.as_secs_f64(), "reason": reason}),
                    );
                }
                SchedEvent::Fallback {
                    task,
                    from,
                    to,
                    after_attempts,
                } => {
                    metrics::counter!(m::SCHED_TASK_FALLBACKS, "from" => from.clone(), "to" => to.clone())
                        .increment(1);
                    self.trace.emit(
                        "task_fallback",
                        json!({"task": task.to_string(), "from": from, "to": to, "after_attempts": after_attempts}),
                    );
                }
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.registry.set_scheduler(ctx.address());
        // Leases held under a previous incarnation cannot be reported to us reliably: return
        // them as failed attempts, then ask every agent to announce itself again.
        let now = Instant::now();
        let held: Vec<InstanceId> = self.core().leases().map(|l| l.instance.clone()).collect();
        let mut events = Vec::new();
        for instance in held {
            events.extend(
                self.core()
                    .agent_gone(&instance, "scheduler restarted", now),
            );
        }
        self.record(events);
        for entry in self.registry.agent_addrs.iter() {
            entry.value().do_send(crate::agent::Announce);
        }
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<AgentIdle> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentIdle, ctx: &mut Self::Context) {
        self.agents.insert(msg.instance.clone(), msg.addr);
        self.core().agent_idle(msg.instance);
        self.pump(ctx);
    }
}

impl Handler<AgentDown> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentDown, ctx: &mut Self::Context) {
        self.agents.remove(&msg.instance);
        let now = Instant::now();
        let held = self.core().leases().any(|l| l.instance == msg.instance);
        if held {
            metrics::counter!(m::SCHED_TASK_ATTEMPTS, "agent" => msg.instance.agent.clone(), "outcome" => "failed")
                .increment(1);
        }
        let events = self.core().agent_gone(&msg.instance, &msg.reason, now);
        self.record(events);
        self.pump(ctx);
    }
}

impl Handler<TaskReport> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskReport, ctx: &mut Self::Context) {
        let outcome = match &msg.report.outcome {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
        };
        let result = self.core().report(msg.report, Instant::now());
        match result {
            Ok(events) => {
                metrics::counter!(m::SCHED_TASK_ATTEMPTS, "agent" => msg.instance.agent.clone(), "outcome" => outcome)
                    .increment(1);
                self.record(events);
            }
            Err(stale) => {
                metrics::counter!(m::SCHED_STALE_REPORTS).increment(1);
                tracing::warn!(instance = %msg.instance, %stale, "late report ignored");
            }
        }
        self.pump(ctx);
    }
}

impl Handler<GetSnapshot> for Scheduler {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(RunSnapshot::of(&self.core(), Instant::now()))
    }
}

impl Handler<Drain> for Scheduler {
    type Result = usize;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> usize {
        let mut core = self.core();
        core.drain();
        core.running()
    }
}

impl Handler<CancelAll> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: CancelAll, ctx: &mut Self::Context) {
        let events = self.core().cancel_all(&msg.reason, Instant::now());
        self.record(events);
        self.pump(ctx);
    }
}

/// Task counts by state, for callers that only need the totals.
pub fn count(snapshot: &RunSnapshot, state: TaskState) -> usize {
    snapshot.tasks.iter().filter(|t| t.state == state).count()
}

impl Handler<StopScheduler> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: StopScheduler, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
