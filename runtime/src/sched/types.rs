//! Records, leases, reports and events of the scheduler core.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::TaskSpec;
use crate::llm::Usage;
use crate::model::{InstanceId, TaskKey, TaskState};

/// Identity of one lease (one attempt of one task on one agent instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct LeaseId(pub u64);

/// A running task held by an agent instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Lease id.
    pub id: LeaseId,
    /// Task index.
    pub task: usize,
    /// Holder.
    pub instance: InstanceId,
    /// When it was handed out.
    pub started: Instant,
    /// When it is revoked if no report came.
    pub deadline: Instant,
}

/// One attempt handed to an agent instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// The lease to report under.
    pub lease: LeaseId,
    /// Which task.
    pub key: TaskKey,
    /// Which instance runs it.
    pub instance: InstanceId,
    /// Attempt number on this agent (from 1).
    pub attempt: u32,
    /// Attempt number over the whole fallback chain (from 1).
    pub attempt_total: u32,
    /// Input with upstream outputs filled in.
    pub input: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Final answer.
    Succeeded {
        /// The task's output.
        output: String,
    },
    /// The attempt failed.
    Failed {
        /// Readable reason.
        reason: String,
        /// Whether another attempt on the same agent may help.
        retryable: bool,
        /// Delay the backend asked for, if any.
        retry_after: Option<Duration>,
    },
}

/// An agent's report on a lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The lease.
    pub lease: LeaseId,
    /// The outcome.
    pub outcome: Outcome,
    /// Tokens used by the attempt.
    pub usage: Usage,
}

/// A report under a lease that is no longer live (expired, revoked or already settled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease {} is not live; the report is ignored", .0 .0)]
pub struct StaleLease(pub LeaseId);

/// One attempt, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// Agent name.
    pub agent: String,
    /// Instance that ran it.
    pub instance: String,
    /// Error, if it failed.
    pub error: Option<String>,
}

/// Everything the scheduler knows about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Identity.
    pub key: TaskKey,
    /// Current state.
    pub state: TaskState,
    /// Input template.
    pub input: String,
    /// Priority added to the agent's.
    pub priority_boost: i16,
    /// Upstream task indices.
    pub deps: Vec<usize>,
    /// Downstream task indices.
    pub dependents: Vec<usize>,
    /// Agent currently responsible (moves down the fallback chain).
    pub current_agent: String,
    /// Agents tried so far, in order.
    pub chain: Vec<String>,
    /// Attempts on the current agent.
    pub attempts_on_agent: u32,
    /// Attempts over the whole chain.
    pub attempts_total: u32,
    /// Every attempt.
    pub attempts: Vec<AttemptRecord>,
    /// Output once Succeeded.
    pub output: Option<String>,
    /// Reason of the terminal state.
    pub reason: Option<String>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Instance that produced the output.
    pub finished_by: Option<String>,
    /// Tokens over all attempts.
    pub usage: Usage,
    /// First dispatch.
    pub started: Option<Instant>,
    /// Terminal state reached.
    pub finished: Option<Instant>,
}

impl TaskRecord {
    pub(crate) fn new(key: TaskKey, spec: &TaskSpec, deps: Vec<usize>) -> Self {
        Self {
            key,
            state: TaskState::Pending,
            input: spec.input.clone(),
            priority_boost: spec.priority_boost,
            deps,
            dependents: Vec::new(),
            current_agent: spec.agent.clone(),
            chain: vec![spec.agent.clone()],
            attempts_on_agent: 0,
            attempts_total: 0,
            attempts: Vec::new(),
            output: None,
            reason: None,
            last_error: None,
            finished_by: None,
            usage: Usage::default(),
            started: None,
            finished: None,
        }
    }

    /// Time from first dispatch to the terminal state (or until now while running).
    pub fn duration(&self, now: Instant) -> Duration {
        match self.started {
            Some(s) => self.finished.unwrap_or(now).saturating_duration_since(s),
            None => Duration::ZERO,
        }
    }
}

/// Something that happened, for traces and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedEvent {
    /// A task changed state.
    TaskState {
        /// Task.
        task: TaskKey,
        /// Agent responsible.
        agent: String,
        /// Old state.
        from: TaskState,
        /// New state.
        to: TaskState,
        /// Attempts so far.
        attempt: u32,
        /// Why (terminal states, retries).
        reason: Option<String>,
    },
    /// A failed attempt will be retried after `delay`.
    Retry {
        /// Task.
        task: TaskKey,
        /// Agent.
        agent: String,
        /// The attempt that failed.
        attempt: u32,
        /// Backoff.
        delay: Duration,
        /// The failure.
        reason: String,
    },
    /// A task moved to its fallback agent.
    Fallback {
        /// Task.
        task: TaskKey,
        /// Agent whose attempts are spent.
        from: String,
        /// Agent taking over.
        to: String,
        /// Attempts made on `from`.
        after_attempts: u32,
    },
}
