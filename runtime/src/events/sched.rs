//! Events of the scheduler: task state changes, retries, fallbacks, leases, attempts, and the
//! per-state task counts.

use std::time::Duration;

use serde_json::json;

use super::labels::AttemptOutcome;
use super::names as m;
use crate::model::{InstanceId, TaskKey, TaskState};
use crate::sched::StaleLease;
use crate::trace::Trace;

/// A task changed state. Trace `task_state`.
#[derive(Debug, Clone, Copy)]
pub struct TaskStateChanged<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The agent responsible.
    pub agent: &'a str,
    /// The state left.
    pub from: TaskState,
    /// The state entered.
    pub to: TaskState,
    /// Attempts so far.
    pub attempt: u32,
    /// Why (terminal states, retries).
    pub reason: Option<&'a str>,
    /// Time from first dispatch to now, when `to` is terminal and the task's record is known.
    pub duration: Option<Duration>,
}

impl TaskStateChanged<'_> {
    /// Writes the trace line; a terminal `to` also counts the task as finished and records its
    /// duration (when known).
    pub fn emit(&self, trace: &Trace) {
        if self.to.is_terminal() {
            metrics::counter!(m::SCHED_TASKS_FINISHED, "state" => self.to.label()).increment(1);
            if let Some(d) = self.duration {
                metrics::histogram!(m::SCHED_TASK_DURATION, "state" => self.to.label())
                    .record(d.as_secs_f64());
            }
        }
        tracing::debug!(task = %self.task, agent = %self.agent, from = %self.from, to = %self.to,
            attempt = self.attempt, reason = ?self.reason, "task state");
        if trace.enabled() {
            trace.emit(
                "task_state",
                json!({"task": self.task.to_string(), "agent": self.agent, "from": self.from,
                       "to": self.to, "attempt": self.attempt, "reason": self.reason}),
            );
        }
    }
}

/// A failed attempt will run again on the same agent after a backoff. Trace `task_retry`.
#[derive(Debug, Clone, Copy)]
pub struct TaskRetried<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The agent.
    pub agent: &'a str,
    /// The attempt that failed.
    pub failed_attempt: u32,
    /// The backoff before the next attempt.
    pub backoff: Duration,
    /// The failure.
    pub reason: &'a str,
}

impl TaskRetried<'_> {
    /// Counts the retry, logs a warning, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_TASK_RETRIES, "agent" => self.agent.to_owned()).increment(1);
        let backoff_secs = self.backoff.as_secs_f64();
        tracing::warn!(task = %self.task, agent = %self.agent, failed_attempt = self.failed_attempt,
            backoff_secs, reason = %self.reason, "attempt failed; retrying");
        if trace.enabled() {
            trace.emit(
                "task_retry",
                json!({"task": self.task.to_string(), "agent": self.agent,
                       "failed_attempt": self.failed_attempt, "backoff_secs": backoff_secs,
                       "reason": self.reason}),
            );
        }
    }
}

/// A task's attempts on one agent are spent; it moves to the fallback agent. Trace
/// `task_fallback`.
#[derive(Debug, Clone, Copy)]
pub struct TaskFellBack<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The agent whose attempts are spent.
    pub from: &'a str,
    /// The agent taking over.
    pub to: &'a str,
    /// Attempts made on `from`.
    pub after_attempts: u32,
}

impl TaskFellBack<'_> {
    /// Counts the fallback, logs a warning, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_TASK_FALLBACKS, "from" => self.from.to_owned(),
            "to" => self.to.to_owned())
        .increment(1);
        tracing::warn!(task = %self.task, from = %self.from, to = %self.to,
            after_attempts = self.after_attempts, "task handed to its fallback agent");
        if trace.enabled() {
            trace.emit(
                "task_fallback",
                json!({"task": self.task.to_string(), "from": self.from, "to": self.to,
                       "after_attempts": self.after_attempts}),
            );
        }
    }
}

/// A lease was revoked because its agent did not report in time. No trace line (the task's
/// state change has one).
#[derive(Debug, Clone, Copy)]
pub struct LeaseExpired<'a> {
    /// The agent that held the lease.
    pub agent: &'a str,
}

impl LeaseExpired<'_> {
    /// Counts the expiry and the attempt as failed.
    pub fn emit(&self) {
        metrics::counter!(m::SCHED_LEASE_EXPIRED).increment(1);
        AttemptFinished {
            agent: self.agent,
            outcome: AttemptOutcome::Failed,
        }
        .emit();
        tracing::warn!(agent = %self.agent, "lease expired; the agent will be restarted");
    }
}

/// An attempt ended (reported, or returned because its agent died). No trace line.
#[derive(Debug, Clone, Copy)]
pub struct AttemptFinished<'a> {
    /// The agent.
    pub agent: &'a str,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

impl AttemptFinished<'_> {
    /// Counts the attempt.
    pub fn emit(&self) {
        metrics::counter!(m::SCHED_TASK_ATTEMPTS, "agent" => self.agent.to_owned(),
            "outcome" => self.outcome.label())
        .increment(1);
    }
}

/// A report arrived under a lease that is no longer live and was ignored. No trace line.
#[derive(Debug, Clone, Copy)]
pub struct StaleReport<'a> {
    /// The reporting instance.
    pub instance: &'a InstanceId,
    /// The refusal.
    pub stale: &'a StaleLease,
}

impl StaleReport<'_> {
    /// Counts the report and logs a warning.
    pub fn emit(&self) {
        metrics::counter!(m::SCHED_STALE_REPORTS).increment(1);
        tracing::warn!(instance = %self.instance, stale = %self.stale, "late report ignored");
    }
}

/// How many tasks are in each state now. No trace line.
#[derive(Debug, Clone, Copy)]
pub struct TaskCounts<'a> {
    /// `(state, tasks)` pairs; states not listed keep their last value.
    pub counts: &'a [(TaskState, usize)],
}

impl TaskCounts<'_> {
    /// Sets the per-state gauge.
    pub fn emit(&self) {
        for (state, n) in self.counts {
            metrics::gauge!(m::SCHED_TASKS, "state" => state.label()).set(*n as f64);
        }
    }

    /// [`TaskCounts::emit`] through `gauges`.
    pub fn emit_with(&self, gauges: &TaskCountGauges) {
        for (state, n) in self.counts {
            if let Some(i) = TaskState::ALL.iter().position(|s| s == state) {
                gauges.0[i].set(*n as f64);
            }
        }
    }
}

/// The per-state task gauges, in [`TaskState::ALL`]'s order, resolved once (the scheduler
/// keeps them: a pump's count changes cost atomic stores, not registry lookups).
#[derive(Clone)]
pub struct TaskCountGauges([metrics::Gauge; TaskState::ALL.len()]);

impl std::fmt::Debug for TaskCountGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskCountGauges")
    }
}

impl TaskCountGauges {
    /// The gauges in the current recorder.
    pub fn of() -> Self {
        Self(TaskState::ALL.map(|s| metrics::gauge!(m::SCHED_TASKS, "state" => s.label())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};

    fn key() -> TaskKey {
        TaskKey {
            workflow: "wf".into(),
            task: "draft".into(),
        }
    }

    #[test]
    fn terminal_state_counts_and_times_the_task() {
        let k = key();
        let mut lines = Vec::new();
        let got = metrics_of(|| {
            lines = trace_of(|t| {
                TaskStateChanged {
                    task: &k,
                    agent: "writer",
                    from: TaskState::Ready,
                    to: TaskState::Running,
                    attempt: 1,
                    reason: None,
                    duration: None,
                }
                .emit(t);
                TaskStateChanged {
                    task: &k,
                    agent: "writer",
                    from: TaskState::Running,
                    to: TaskState::Failed,
                    attempt: 3,
                    reason: Some("no final answer"),
                    duration: Some(Duration::from_secs(4)),
                }
                .emit(t);
            })
        });
        assert_eq!(
            got.counter(m::SCHED_TASKS_FINISHED, &[("state", "failed")]),
            Some(1)
        );
        assert_eq!(
            got.counter(m::SCHED_TASKS_FINISHED, &[("state", "running")]),
            None
        );
        assert_eq!(
            got.histogram(m::SCHED_TASK_DURATION, &[("state", "failed")]),
            Some(vec![4.0])
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "task_state");
        assert_eq!(lines[0]["reason"], serde_json::Value::Null);
        let l = &lines[1];
        assert_eq!(l["task"], "wf/draft");
        assert_eq!(l["agent"], "writer");
        assert_eq!(l["from"], "running");
        assert_eq!(l["to"], "failed");
        assert_eq!(l["attempt"], 3);
        assert_eq!(l["reason"], "no final answer");
    }

    #[test]
    fn retry_and_fallback_are_counted_and_traced() {
        let k = key();
        let mut lines = Vec::new();
        let got = metrics_of(|| {
            lines = trace_of(|t| {
                TaskRetried {
                    task: &k,
                    agent: "writer",
                    failed_attempt: 1,
                    backoff: Duration::from_millis(1500),
                    reason: "timeout",
                }
                .emit(t);
                TaskFellBack {
                    task: &k,
                    from: "writer",
                    to: "editor",
                    after_attempts: 2,
                }
                .emit(t);
            })
        });
        assert_eq!(
            got.counter(m::SCHED_TASK_RETRIES, &[("agent", "writer")]),
            Some(1)
        );
        assert_eq!(
            got.counter(
                m::SCHED_TASK_FALLBACKS,
                &[("from", "writer"), ("to", "editor")]
            ),
            Some(1)
        );
        assert_eq!(lines[0]["event"], "task_retry");
        assert_eq!(lines[0]["failed_attempt"], 1);
        assert_eq!(lines[0]["backoff_secs"], 1.5);
        assert_eq!(lines[0]["reason"], "timeout");
        assert_eq!(lines[1]["event"], "task_fallback");
        assert_eq!(lines[1]["from"], "writer");
        assert_eq!(lines[1]["to"], "editor");
        assert_eq!(lines[1]["after_attempts"], 2);
    }

    #[test]
    fn lease_expiry_fails_the_attempt() {
        let id = InstanceId {
            agent: "writer".into(),
            replica: 0,
        };
        let got = metrics_of(|| {
            LeaseExpired { agent: "writer" }.emit();
            AttemptFinished {
                agent: "writer",
                outcome: AttemptOutcome::Succeeded,
            }
            .emit();
            StaleReport {
                instance: &id,
                stale: &StaleLease(crate::sched::LeaseId(7)),
            }
            .emit();
            TaskCounts {
                counts: &[(TaskState::Pending, 3), (TaskState::Running, 1)],
            }
            .emit();
        });
        assert_eq!(got.counter(m::SCHED_LEASE_EXPIRED, &[]), Some(1));
        assert_eq!(got.counter(m::SCHED_STALE_REPORTS, &[]), Some(1));
        let attempts = |o| {
            got.counter(
                m::SCHED_TASK_ATTEMPTS,
                &[("agent", "writer"), ("outcome", o)],
            )
        };
        assert_eq!(attempts("failed"), Some(1));
        assert_eq!(attempts("succeeded"), Some(1));
        assert_eq!(
            got.gauge(m::SCHED_TASKS, &[("state", "pending")]),
            Some(3.0)
        );
        assert_eq!(
            got.gauge(m::SCHED_TASKS, &[("state", "running")]),
            Some(1.0)
        );
    }

    #[test]
    fn resolved_task_gauges_set_only_the_states_listed() {
        let got = metrics_of(|| {
            let gauges = TaskCountGauges::of();
            TaskCounts {
                counts: &[(TaskState::Pending, 3), (TaskState::Running, 1)],
            }
            .emit_with(&gauges);
            TaskCounts {
                counts: &[(TaskState::Running, 2)],
            }
            .emit_with(&gauges);
        });
        let state = |s| got.gauge(m::SCHED_TASKS, &[("state", s)]);
        assert_eq!(state("pending"), Some(3.0));
        assert_eq!(state("running"), Some(2.0));
        assert_eq!(state("succeeded"), Some(0.0));
    }
}
