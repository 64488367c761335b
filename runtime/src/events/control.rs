//! Events of the control plane as the scheduler sees it: workflows accepted and finished,
//! tasks spawned at run time, agents suspended, resumed or killed, attempts cancelled.

use serde_json::json;

use super::names as m;
use crate::model::{InstanceId, TaskKey};
use crate::sched::{AgentAction, WorkflowOrigin, WorkflowState};
use crate::trace::Trace;

/// A workflow was accepted (declared at boot, or submitted). Trace `workflow_accepted`.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowAccepted<'a> {
    /// Workflow id.
    pub id: &'a str,
    /// Declared or submitted.
    pub origin: WorkflowOrigin,
    /// Who submitted it.
    pub by: &'a str,
    /// Number of tasks.
    pub tasks: usize,
}

impl WorkflowAccepted<'_> {
    /// Counts it by origin, logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_WORKFLOWS_ACCEPTED, "origin" => self.origin.label())
            .increment(1);
        tracing::info!(workflow = %self.id, origin = self.origin.label(), by = %self.by,
            tasks = self.tasks, "workflow accepted");
        if trace.enabled() {
            trace.emit(
                "workflow_accepted",
                json!({"workflow": self.id, "origin": self.origin, "by": self.by,
                       "tasks": self.tasks}),
            );
        }
    }
}

/// Every task of a workflow is terminal. Trace `workflow_finished`.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowFinished<'a> {
    /// Workflow id.
    pub id: &'a str,
    /// How it ended.
    pub state: WorkflowState,
}

impl WorkflowFinished<'_> {
    /// Counts it by state (cancelled included), logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_WORKFLOWS_FINISHED, "state" => self.state.label()).increment(1);
        tracing::info!(workflow = %self.id, state = self.state.label(), "workflow finished");
        if trace.enabled() {
            trace.emit(
                "workflow_finished",
                json!({"workflow": self.id, "state": self.state}),
            );
        }
    }
}

/// A running task added a task to its workflow. Trace `task_spawned`.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpawned<'a> {
    /// The new task.
    pub task: &'a TaskKey,
    /// The spawning task.
    pub parent: &'a TaskKey,
    /// The agent that runs it.
    pub agent: &'a str,
    /// Its spawn depth.
    pub depth: u32,
}

impl TaskSpawned<'_> {
    /// Counts it by agent, logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_TASKS_SPAWNED, "agent" => self.agent.to_owned()).increment(1);
        tracing::debug!(task = %self.task, parent = %self.parent, agent = %self.agent,
            depth = self.depth, "task spawned");
        if trace.enabled() {
            trace.emit(
                "task_spawned",
                json!({"task": self.task.to_string(), "workflow": self.task.workflow,
                       "parent": self.parent.to_string(), "agent": self.agent,
                       "depth": self.depth}),
            );
        }
    }
}

/// An operator suspended, resumed or killed an agent. Trace `agent_control`.
#[derive(Debug, Clone, Copy)]
pub struct AgentControlled<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// What was done.
    pub action: AgentAction,
    /// Who asked.
    pub by: &'a str,
}

impl AgentControlled<'_> {
    /// Counts it by agent and action, logs a warning (an operator intervened), writes the
    /// trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_AGENT_CONTROLS, "agent" => self.agent.to_owned(),
            "action" => self.action.label())
        .increment(1);
        tracing::warn!(agent = %self.agent, action = self.action.label(), by = %self.by,
            "agent controlled by an operator");
        if trace.enabled() {
            trace.emit(
                "agent_control",
                json!({"agent": self.agent, "action": self.action, "by": self.by}),
            );
        }
    }
}

/// A running attempt was told to stop: its task was cancelled. Trace `attempt_cancelled`.
#[derive(Debug, Clone, Copy)]
pub struct AttemptCancelled<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The instance running it.
    pub instance: &'a InstanceId,
    /// Why.
    pub reason: &'a str,
}

impl AttemptCancelled<'_> {
    /// Counts it by agent, logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::SCHED_ATTEMPTS_CANCELLED, "agent" => self.instance.agent.clone())
            .increment(1);
        tracing::info!(task = %self.task, instance = %self.instance, reason = %self.reason,
            "running attempt cancelled");
        if trace.enabled() {
            trace.emit(
                "attempt_cancelled",
                json!({"task": self.task.to_string(), "agent": &*self.instance.agent,
                       "instance": self.instance.to_string(), "reason": self.reason}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};

    #[test]
    fn control_events_count_and_trace() {
        let task = TaskKey {
            workflow: "w-2".into(),
            task: "plan.1".into(),
        };
        let parent = TaskKey {
            workflow: "w-2".into(),
            task: "plan".into(),
        };
        let mut lines = Vec::new();
        let got = metrics_of(|| {
            lines = trace_of(|t| {
                WorkflowAccepted {
                    id: "w-2",
                    origin: WorkflowOrigin::Submitted,
                    by: "api",
                    tasks: 2,
                }
                .emit(t);
                TaskSpawned {
                    task: &task,
                    parent: &parent,
                    agent: "worker",
                    depth: 1,
                }
                .emit(t);
                AgentControlled {
                    agent: "worker",
                    action: AgentAction::Suspend,
                    by: "api",
                }
                .emit(t);
                WorkflowFinished {
                    id: "w-2",
                    state: WorkflowState::Cancelled,
                }
                .emit(t);
            })
        });
        assert_eq!(
            got.counter(m::SCHED_WORKFLOWS_ACCEPTED, &[("origin", "submitted")]),
            Some(1)
        );
        assert_eq!(
            got.counter(m::SCHED_TASKS_SPAWNED, &[("agent", "worker")]),
            Some(1)
        );
        assert_eq!(
            got.counter(
                m::SCHED_AGENT_CONTROLS,
                &[("agent", "worker"), ("action", "suspend")]
            ),
            Some(1)
        );
        assert_eq!(
            got.counter(m::SCHED_WORKFLOWS_FINISHED, &[("state", "cancelled")]),
            Some(1)
        );
        let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "workflow_accepted",
                "task_spawned",
                "agent_control",
                "workflow_finished"
            ]
        );
        assert_eq!(lines[1]["parent"], "w-2/plan");
        assert_eq!(lines[1]["workflow"], "w-2");
        assert_eq!(lines[2]["action"], "suspend");
    }
}
