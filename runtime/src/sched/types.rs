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
    /// Its agent is suspended: the deadline does not run until it is resumed.
    pub paused: bool,
    /// The task's base priority (agent priority + boost), for preemption.
    pub priority: i32,
    /// Tokens charged to its fair-share flow at dispatch (an estimate, corrected at report).
    pub charged: u64,
    /// Since when its holder's LLM call waits at the quota gate: the deadline does not run
    /// meanwhile (the attempt's own timeout leaves that time out too).
    pub held_since: Option<Instant>,
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
    /// Upstream tasks (`workflow/task`) whose outputs the attempt reads as shared pages: those
    /// it waits for but does not quote in its input (spawned children included).
    pub shared: Vec<String>,
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
    /// The attempt gave way at a step boundary (preempted, or waiting for a budget window):
    /// not a failure. The same attempt continues later from its journal, on any instance.
    Yielded {
        /// Readable reason.
        reason: String,
        /// Not before this long (a budget window's reset); `None`: as soon as it is its turn.
        resume_after: Option<Duration>,
        /// Preempted by a better task (rather than waiting for a budget).
        preempted: bool,
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

/// One attempt, for the summary (and the store, as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// Index of its workflow in the core's workflow table.
    pub workflow: usize,
    /// The task that spawned it at run time, if any.
    pub spawned_by: Option<String>,
    /// How many spawns deep it is (0 for declared and submitted tasks).
    pub depth: u32,
    /// Tasks it spawned so far (its dependents also wait for them).
    pub spawned: u32,
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
    /// The identity of the `spawn_task` call that created it (a repeat of that call after a
    /// restart answers this task instead of spawning another).
    pub spawn_call: Option<String>,
    /// How many of `deps` the task was declared (or spawned) with; later entries are tasks
    /// spawned by one of its upstream tasks.
    pub declared_deps: usize,
    /// An attempt that was running when the process died: the next dispatch continues it
    /// (same attempt number, so the same journal) instead of starting a new one.
    pub resume: Option<u32>,
    /// Usage reported by runs of the current attempt that gave way (preempted, waiting for a
    /// budget): not in `usage` yet, because the run that continues the attempt reports the
    /// journaled usage again.
    pub yielded_usage: Usage,
}

impl TaskRecord {
    pub(crate) fn new(key: TaskKey, workflow: usize, spec: &TaskSpec, deps: Vec<usize>) -> Self {
        let deps_len = deps.len();
        Self {
            key,
            workflow,
            spawned_by: None,
            depth: 0,
            spawned: 0,
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
            spawn_call: None,
            declared_deps: deps_len,
            resume: None,
            yielded_usage: Usage::default(),
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

/// Where a workflow came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowOrigin {
    /// Declared in the config the system booted with.
    Declared,
    /// Submitted to the running system through the API.
    Submitted,
}

impl WorkflowOrigin {
    /// Lower-case label (metrics, traces).
    pub fn label(self) -> &'static str {
        match self {
            WorkflowOrigin::Declared => "declared",
            WorkflowOrigin::Submitted => "submitted",
        }
    }
}

/// A workflow's state, derived from its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Some task is not terminal yet.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Every task is terminal and at least one failed or was skipped.
    Failed,
    /// Cancelled by a request (or by shutdown).
    Cancelled,
}

impl WorkflowState {
    /// Every state (for metrics).
    pub const ALL: [WorkflowState; 4] = [
        WorkflowState::Running,
        WorkflowState::Succeeded,
        WorkflowState::Failed,
        WorkflowState::Cancelled,
    ];

    /// Lower-case label (metrics, traces).
    pub fn label(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    /// Whether the workflow will never change state again.
    pub fn is_terminal(self) -> bool {
        self != WorkflowState::Running
    }
}

/// What the scheduler keeps about one workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRecord {
    /// Unique id: the declared name, or `name-N` for a submitted copy of a name in use.
    pub id: String,
    /// The name it was declared or submitted with.
    pub name: String,
    /// Declared or submitted.
    pub origin: WorkflowOrigin,
    /// Who submitted it (`config` for declared workflows).
    pub by: String,
    /// Its tasks (indices into the task table), declared first, then spawned ones.
    pub tasks: Vec<usize>,
    /// Tasks spawned at run time so far.
    pub spawned: u32,
    /// Tasks not yet terminal.
    pub open: usize,
    /// Set when it was cancelled by a request.
    pub cancelled_by: Option<String>,
    /// The terminal state, once reached.
    pub finished: Option<WorkflowState>,
    /// The spec it was submitted with (to recognise an idempotent resubmit).
    pub spec: crate::config::WorkflowSpec,
    /// Wall-clock time it was accepted, seconds since the Unix epoch.
    pub submitted_at: f64,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// Tokens its tasks' attempts used so far (least attained service orders by it).
    pub attained: u64,
}

impl WorkflowRecord {
    /// Its current state.
    pub fn state(&self) -> WorkflowState {
        self.finished.unwrap_or(WorkflowState::Running)
    }
}

/// One task as the summary and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    /// `workflow/task`.
    pub task: String,
    /// Workflow id.
    pub workflow: String,
    /// Task id within the workflow.
    pub id: String,
    /// State.
    pub state: TaskState,
    /// Attempts over the whole fallback chain.
    pub attempts: u32,
    /// Agent responsible now (or at the end).
    pub agent: String,
    /// Upstream tasks (ids within the workflow), spawned children included.
    pub depends_on: Vec<String>,
    /// The task that spawned it, if it was spawned at run time.
    pub spawned_by: Option<String>,
    /// Instance that produced the output.
    pub finished_by: Option<String>,
    /// Prompt tokens over all attempts, failed ones included.
    pub prompt_tokens: u64,
    /// Completion tokens over all attempts, failed ones included.
    pub completion_tokens: u64,
    /// Prompt tokens the backend served from its prefix cache, over all attempts.
    pub cached_tokens: u64,
    /// Seconds from first dispatch to the end (or now).
    pub duration_secs: f64,
    /// Reason of the terminal state.
    pub reason: Option<String>,
    /// Output, if it succeeded.
    pub output: Option<String>,
    /// Every attempt.
    pub history: Vec<AttemptRecord>,
}

/// One workflow as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowView {
    /// Unique id.
    pub id: String,
    /// Name it was declared or submitted with.
    pub name: String,
    /// Declared or submitted.
    pub origin: WorkflowOrigin,
    /// Who submitted it.
    pub submitted_by: String,
    /// Seconds since the Unix epoch.
    pub submitted_at: f64,
    /// Running, or how it ended.
    pub state: WorkflowState,
    /// Who cancelled it, if it was cancelled by a request.
    pub cancelled_by: Option<String>,
    /// Tasks spawned at run time.
    pub spawned: u32,
    /// Number of tasks in each state (only states with tasks).
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    /// Every task, in order (empty in listings).
    pub tasks: Vec<TaskSummary>,
}

/// What an operator can do to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// No new dispatch; running attempts pause at their next step boundary.
    Suspend,
    /// Undo a suspend (or restart a killed agent's instances).
    Resume,
    /// Stop every instance; running tasks come back as failed attempts.
    Kill,
}

impl AgentAction {
    /// Lower-case label (metrics, traces).
    pub fn label(self) -> &'static str {
        match self {
            AgentAction::Suspend => "suspend",
            AgentAction::Resume => "resume",
            AgentAction::Kill => "kill",
        }
    }
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum Refused {
    /// No such workflow or agent.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the current state (already finished, key reused for another body,
    /// shutting down).
    #[error("{0}")]
    Conflict(String),
    /// Accepted in memory but not stored (the store failed): not guaranteed to survive a
    /// crash; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
}

/// What the scheduler holds about an agent's lifecycle (its instances' states are on the
/// board).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Gets tasks.
    Active,
    /// No new dispatch; running attempts pause at their next step boundary.
    Suspended,
    /// Its instances are stopped; its tasks go to their fallback.
    Killed,
}

/// A task to add to the spawning task's workflow (`spawn_task`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// Agent that runs it.
    pub agent: String,
    /// Its input; `{{id}}` templates may name its `depends_on` tasks.
    pub input: String,
    /// Existing tasks of the workflow it waits for.
    pub depends_on: Vec<String>,
    /// The identity of the `spawn_task` call (`context/sN/cM`): the same call made again
    /// after a restart answers the task it spawned the first time.
    pub call: Option<String>,
}

/// Why a spawn was refused; the model reads it as the tool's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The spawning task is not running under a live lease.
    #[error("task {0} is not running; only a running task can spawn")]
    NotRunning(String),
    /// The agent is not declared.
    #[error("agent \"{0}\" is not declared")]
    UnknownAgent(String),
    /// A `depends_on` entry is not a task of the workflow.
    #[error("depends_on names \"{0}\", which is not a task of this workflow")]
    UnknownDependency(String),
    /// A `depends_on` entry waits for the spawning task's result (it would form a cycle).
    #[error("depends_on names \"{0}\", which waits for the spawning task; that would be a cycle")]
    Cycle(String),
    /// The input template is malformed or references a task not in `depends_on`.
    #[error("input: {0}")]
    Template(String),
    /// `max_spawned_tasks` reached.
    #[error(
        "workflow {workflow} already spawned {limit} tasks (runtime.spawn.max_tasks_per_workflow)"
    )]
    TooMany {
        /// Workflow id.
        workflow: String,
        /// The limit.
        limit: u32,
    },
    /// `max_spawn_depth` reached.
    #[error("task {task} is {depth} spawns deep; runtime.spawn.max_depth is {limit}")]
    TooDeep {
        /// The spawning task.
        task: String,
        /// Its depth.
        depth: u32,
        /// The limit.
        limit: u32,
    },
    /// The workflow is finished or being cancelled.
    #[error("workflow {0} is no longer running")]
    Closed(String),
    /// The spawned task could not be stored, so it was not kept (try again later).
    #[error("the spawned task could not be stored: {0}")]
    Unavailable(String),
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
    /// A workflow was accepted (declared ones at boot, submitted ones at run time).
    WorkflowAccepted {
        /// Workflow id.
        id: String,
        /// Where it came from.
        origin: WorkflowOrigin,
        /// Who submitted it.
        by: String,
        /// Number of tasks.
        tasks: usize,
    },
    /// Every task of a workflow is terminal.
    WorkflowFinished {
        /// Workflow id.
        id: String,
        /// How it ended.
        state: WorkflowState,
    },
    /// A running task added a task to its workflow.
    TaskSpawned {
        /// The new task.
        task: TaskKey,
        /// The task that spawned it.
        parent: TaskKey,
        /// The agent that runs it.
        agent: String,
        /// Its spawn depth.
        depth: u32,
    },
    /// An operator suspended, resumed or killed an agent.
    AgentControlled {
        /// Agent name.
        agent: String,
        /// What was done.
        action: AgentAction,
        /// Who asked.
        by: String,
    },
    /// A running attempt gave way at a step boundary; the same attempt continues later.
    Yielded {
        /// The task.
        task: TaskKey,
        /// The instance that ran it.
        instance: InstanceId,
        /// The attempt (it keeps its number).
        attempt: u32,
        /// Why.
        reason: String,
        /// Preempted by a better task (`false`: waiting for a budget window).
        preempted: bool,
    },
    /// A running attempt is asked to give way at its next step boundary once its slice is
    /// used (`reason: Some`), or the request is withdrawn (`None`).
    PreemptRequested {
        /// The task.
        task: TaskKey,
        /// The instance running it.
        instance: InstanceId,
        /// The lease it holds.
        lease: LeaseId,
        /// Why (the waiting task and the priorities), or `None` to withdraw.
        reason: Option<String>,
    },
    /// A running attempt must stop now: its task was cancelled. The agent instance holding it
    /// is told; its late report is absorbed (usage kept), never applied.
    AttemptCancelled {
        /// The task.
        task: TaskKey,
        /// The instance running it.
        instance: InstanceId,
        /// The lease it held.
        lease: LeaseId,
        /// Why.
        reason: String,
    },
}
