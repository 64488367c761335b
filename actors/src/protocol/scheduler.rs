//! Messages the scheduler handles, and the run snapshot it answers with.

use std::time::Instant;

use actix::prelude::*;
use agentos_runtime::model::{InstanceId, TaskState};
use agentos_runtime::sched::{Report, SchedulerCore};
use serde::Serialize;

use super::control::{CancelWorkflow, ControlAgent, GetWorkflow, ListWorkflows, SubmitWorkflow};
use super::port::ports;

/// An agent instance is idle and can take a task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentIdle {
    /// Who.
    pub instance: InstanceId,
    /// Where to send its next task, and the attempt's cancel and preemption requests (and
    /// where to ask it to announce itself again after a scheduler restart).
    pub link: super::AgentLink,
}

/// A running task adds a task to its workflow (`spawn_task`). Answers the new task's key
/// (`workflow/id`) or the refusal the model reads.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, agentos_runtime::sched::SpawnError>")]
pub struct SpawnTask {
    /// The spawning task (`workflow/task`).
    pub parent: String,
    /// What to add.
    pub request: agentos_runtime::sched::SpawnRequest,
}

/// An agent instance died (sent by its supervisor's exit hook); its lease comes back as a
/// failed attempt.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentDown {
    /// Who.
    pub instance: InstanceId,
    /// Why.
    pub reason: String,
}

/// An agent's report on one attempt.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TaskReport {
    /// Who ran it.
    pub instance: InstanceId,
    /// Lease, outcome and usage.
    pub report: Report,
    /// The instance is idle again, as an [`AgentIdle`] with this link would say: one message
    /// at the end of an attempt instead of two. `None` from a busy instance.
    pub idle: Option<super::AgentLink>,
}

/// Asks for a [`RunSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "RunSnapshot")]
pub struct GetSnapshot;

/// Stops dispatching new tasks (graceful shutdown); answers how many are still running.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Drain;

/// Cancels every unfinished task with a reason.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelAll {
    /// Why.
    pub reason: String,
}

/// Writes everything the scheduler has not stored yet (all of its state under
/// `durability: exit`) and answers once it is committed, with the error if it was not.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct FlushState;

/// The resource monitor's latest sample: CPU and memory use as fractions of the machine.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct PressureSample {
    /// CPU use of this process over the sampling period, as a fraction of every core.
    pub cpu: f64,
    /// Memory in use on the machine, as a fraction of the total.
    pub memory: f64,
    /// Where the figures came from: `false` sampled, `true` read from the pressure file
    /// (`AGENTOS_PRESSURE_FILE`, for drills and tests).
    pub injected: bool,
}

ports! {
    /// Ports of the scheduler.
    SchedulerPorts {
        /// Agents announce themselves idle.
        idle: AgentIdle,
        /// Agents report attempts.
        report: TaskReport,
        /// The agent supervisor reports dead agents.
        down: AgentDown,
        /// Snapshots for the API and the summary.
        snapshot: GetSnapshot,
        /// Graceful shutdown, step 1.
        drain: Drain,
        /// Graceful shutdown, step 2.
        cancel_all: CancelAll,
        /// Control plane: submit a workflow.
        submit: SubmitWorkflow,
        /// Control plane: list workflows.
        workflows: ListWorkflows,
        /// Control plane: one workflow.
        workflow: GetWorkflow,
        /// Control plane: cancel a workflow.
        cancel: CancelWorkflow,
        /// Control plane: suspend, resume or kill an agent.
        control: ControlAgent,
        /// Running tasks add tasks to their workflow.
        spawn: SpawnTask,
        /// The end of a run: store what is not stored yet.
        flush: FlushState,
        /// Resource pressure from the monitor.
        pressure: PressureSample,
    }
}

pub use agentos_runtime::sched::TaskSummary;

/// Every task of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSnapshot {
    /// Whether every task is terminal.
    pub done: bool,
    /// Tasks by workflow (in the order workflows were accepted), each workflow's in declaration
    /// order followed by the tasks spawned at run time.
    pub tasks: Vec<TaskSummary>,
}

impl RunSnapshot {
    /// Snapshot of `core` at `now`.
    pub fn of(core: &SchedulerCore, now: Instant) -> Self {
        Self {
            done: core.is_done(),
            // Workflow by workflow, each in declaration order with its spawned tasks last.
            tasks: core
                .workflows()
                .iter()
                .flat_map(|w| w.tasks.iter().map(|&i| core.summary(i, now)))
                .collect(),
        }
    }

    /// How many tasks are in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }
}
