//! Messages agents handle, and the ports agents are reached through.

use actix::prelude::*;
use agentos_runtime::sched::{Dispatch, LeaseId};

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

/// Stops the attempt running under `lease` at once (its task was cancelled). Ignored when the
/// agent no longer runs that lease.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelAttempt {
    /// The lease the attempt runs under.
    pub lease: LeaseId,
    /// Why (the model never sees it; the attempt's report carries it).
    pub reason: String,
}

/// Asks the attempt running under `lease` to give way at its next step boundary once its
/// time slice is used (`reason: Some`), or withdraws the request (`None`). Ignored when the
/// agent no longer runs that lease.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PreemptAttempt {
    /// The lease the attempt runs under.
    pub lease: LeaseId,
    /// Why (a better task waits), or `None` to withdraw.
    pub reason: Option<String>,
}

/// Stops one child of a supervisor by id and parks it: it is not restarted until a
/// [`StartChild`] (an operator killed the agent). Answers whether a running child was found.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct TerminateChild {
    /// The child id.
    pub id: String,
    /// Why, for the exit hook (the agent's lease comes back with it).
    pub reason: String,
}

/// Starts a parked child again (an operator resumed a killed agent). Answers whether a parked
/// child of that id was found.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct StartChild(pub String);

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
        /// Stops a killed agent's instance for good (until started again).
        terminate: TerminateChild,
        /// Starts a killed agent's instance again.
        start: StartChild,
    }
}

/// The agent supervisor's child id of an agent instance.
pub fn agent_child_id(instance: &agentos_runtime::model::InstanceId) -> String {
    format!("agent {instance}")
}
