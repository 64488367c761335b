//! Messages agents handle, and the ports agents are reached through.

use actix::prelude::*;
use agentos_runtime::sched::Dispatch;

use super::port::ports;

/// Runs one attempt of a task. Sent by the scheduler with `try_send`; a full or closed
/// mailbox returns the lease at once as a failed attempt.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunTask {
    /// The lease and the task.
    pub dispatch: Dispatch,
}

/// Asks an idle agent to announce itself to the scheduler again (after a scheduler restart).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Announce;

/// Restarts one child of a supervisor by id (sent by the scheduler when a lease expires on a
/// wedged agent). Counted like a crash: restart intensity, backoff and escalation apply.
/// Answers whether a running child of that id was found.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RestartChild(pub String);

ports! {
    /// Ports of the agent supervisor.
    AgentSupervisorPorts {
        /// Restarts a wedged agent.
        restart: RestartChild,
    }
}

/// The agent supervisor's child id of an agent instance.
pub fn agent_child_id(instance: &agentos_runtime::model::InstanceId) -> String {
    format!("agent {instance}")
}
