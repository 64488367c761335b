//! Task identity and lifecycle states.

use std::fmt;

use serde::Serialize;

/// A task's identity across workflows: `workflow/task`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TaskKey {
    /// Workflow name.
    pub workflow: String,
    /// Task id within the workflow.
    pub task: String,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workflow, self.task)
    }
}

/// Where a task is in its life. Terminal states carry a reason in the task record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for upstream tasks.
    Pending,
    /// Upstream done; waiting for an agent (or for a retry backoff to pass).
    Ready,
    /// Leased to an agent.
    Running,
    /// Finished with an output.
    Succeeded,
    /// Every attempt on every agent of its fallback chain failed.
    Failed,
    /// Not run because an upstream task failed or was skipped.
    Skipped,
    /// Stopped by shutdown before it finished.
    Cancelled,
}

impl TaskState {
    /// Every state, in lifecycle order (for metrics).
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Skipped,
        TaskState::Cancelled,
    ];

    /// Whether the task will never change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
        )
    }

    /// The state whose [`TaskState::label`] is `s`.
    pub fn from_label(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.label() == s)
    }

    /// Lower-case label (metrics, traces, summaries).
    pub fn label(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}
