//! Agent identity, states and the control block each agent actor carries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One actor instance of a declared agent: `name#replica`.
///
/// The name is shared: every replica's id (and every copy of it, on the board, in the
/// scheduler's registry) points at the one string boot made for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct InstanceId {
    /// Agent name from the config.
    #[serde(serialize_with = "ser_name")]
    pub agent: Arc<str>,
    /// Replica index, from 0.
    pub replica: u32,
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.agent, self.replica)
    }
}

/// An agent instance's state, as an OS would show a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Idle, waiting for a task.
    Ready,
    /// Working on a task (thinking or running a tool).
    Running,
    /// Waiting on an LLM reply.
    Waiting,
    /// Held back (shutdown draining).
    Suspended,
    /// Stopped for good, or crashed and awaiting restart.
    Terminated,
}

impl AgentState {
    /// Every state (for metrics).
    pub const ALL: [AgentState; 5] = [
        AgentState::Ready,
        AgentState::Running,
        AgentState::Waiting,
        AgentState::Suspended,
        AgentState::Terminated,
    ];

    /// Lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            AgentState::Ready => "ready",
            AgentState::Running => "running",
            AgentState::Waiting => "waiting",
            AgentState::Suspended => "suspended",
            AgentState::Terminated => "terminated",
        }
    }
}

/// What an agent actor knows about itself: the process control block of AgentOS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlBlock {
    /// Process-wide unique id of this incarnation (changes on restart).
    pub pid: u64,
    /// Instance identity.
    pub id: InstanceId,
    /// Current state.
    pub state: AgentState,
    /// Task being worked on (`workflow/task`), if any.
    pub current_task: Option<String>,
    /// LLM steps taken, over this incarnation's life.
    pub steps: u64,
    /// Prompt tokens sent.
    pub tokens_in: u64,
    /// Completion tokens received.
    pub tokens_out: u64,
    /// LLM calls made.
    pub llm_calls: u64,
    /// Tool calls made.
    pub tool_calls: u64,
    /// Tasks finished (either way).
    pub tasks_done: u64,
    /// Time spent working on tasks.
    #[serde(serialize_with = "ser_secs")]
    pub busy: Duration,
}

impl ControlBlock {
    /// A fresh control block in state `Ready`.
    pub fn new(pid: u64, id: InstanceId) -> Self {
        Self {
            pid,
            id,
            state: AgentState::Ready,
            current_task: None,
            steps: 0,
            tokens_in: 0,
            tokens_out: 0,
            llm_calls: 0,
            tool_calls: 0,
            tasks_done: 0,
            busy: Duration::ZERO,
        }
    }
}

fn ser_name<S: serde::Serializer>(name: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name)
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
