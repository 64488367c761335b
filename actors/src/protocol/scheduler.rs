//! Messages the scheduler handles, and the run snapshot it answers with.

use std::time::Instant;

use actix::prelude::*;
use agentos_runtime::model::{InstanceId, TaskState};
use agentos_runtime::sched::{AttemptRecord, Report, SchedulerCore};
use serde::Serialize;

use super::agent::{Announce, RunTask};
use super::control::{CancelWorkflow, ControlAgent, GetWorkflow, ListWorkflows, SubmitWorkflow};
use super::port::ports;

/// An agent instance is idle and can take a task.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AgentIdle {
    /// Who.
    pub instance: InstanceId,
    /// Where to send its next task.
    pub run: Recipient<RunTask>,
    /// Where to ask it to announce itself again (after a scheduler restart).
    pub announce: Recipient<Announce>,
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
    }
}

/// One task as the summary and `/api/tasks` show it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    /// `workflow/task`.
    pub task: String,
    /// State.
    pub state: TaskState,
    /// Attempts over the whole fallback chain.
    pub attempts: u32,
    /// Agent responsible now (or at the end).
    pub agent: String,
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

/// Every task of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSnapshot {
    /// Whether every task is terminal.
    pub done: bool,
    /// Tasks in declaration order.
    pub tasks: Vec<TaskSummary>,
}

impl RunSnapshot {
    /// Snapshot of `core` at `now`.
    pub fn of(core: &SchedulerCore, now: Instant) -> Self {
        Self {
            done: core.is_done(),
            tasks: core
                .tasks()
                .iter()
                .map(|t| TaskSummary {
                    task: t.key.to_string(),
                    state: t.state,
                    attempts: t.attempts_total,
                    agent: t.current_agent.clone(),
                    finished_by: t.finished_by.clone(),
                    prompt_tokens: t.usage.prompt_tokens,
                    completion_tokens: t.usage.completion_tokens,
                    cached_tokens: t.usage.cached_tokens,
                    duration_secs: t.duration(now).as_secs_f64(),
                    reason: t.reason.clone(),
                    output: t.output.clone(),
                    history: t.attempts.clone(),
                })
                .collect(),
        }
    }

    /// How many tasks are in `state`.
    pub fn count(&self, state: TaskState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }
}
