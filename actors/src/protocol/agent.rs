//! Messages agents handle, and the ports agents are reached through.

use std::sync::Arc;

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

/// How the scheduler reaches one agent instance: one handle on the instance's mailbox for
/// the four messages above. (A recipient per message would cost the instance four boxes and
/// eight `Arc`s on every announce; this is one `Arc` of an address, which the instance's
/// supervisor shares.) Cheap to clone.
#[derive(Clone)]
pub struct AgentLink(Arc<dyn AgentMailbox>);

impl AgentLink {
    /// A link through `addr`, shared with whoever else holds it (no new address).
    pub fn shared<A: AgentActor>(addr: Arc<Addr<A>>) -> Self {
        Self(addr)
    }

    /// Sends a task if the mailbox has room; an undelivered one comes back in the error.
    // The error is actix's own, carrying the undelivered task back, as `try_send` does.
    #[allow(clippy::result_large_err)]
    pub fn try_run(&self, msg: RunTask) -> Result<(), SendError<RunTask>> {
        self.0.try_run(msg)
    }

    /// Asks the instance to announce itself again, ignoring the mailbox bound.
    pub fn announce(&self) {
        self.0.announce();
    }

    /// Stops the instance's attempt, ignoring the mailbox bound (rare, must not be lost).
    pub fn cancel(&self, msg: CancelAttempt) {
        self.0.cancel(msg);
    }

    /// Asks the instance's attempt to give way, ignoring the mailbox bound.
    pub fn preempt(&self, msg: PreemptAttempt) {
        self.0.preempt(msg);
    }
}

impl std::fmt::Debug for AgentLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLink").finish_non_exhaustive()
    }
}

/// An actor a link can reach: one that handles the four messages above.
pub trait AgentActor:
    Actor<Context = Context<Self>>
    + Handler<RunTask>
    + Handler<Announce>
    + Handler<CancelAttempt>
    + Handler<PreemptAttempt>
{
}

impl<A> AgentActor for A where
    A: Actor<Context = Context<A>>
        + Handler<RunTask>
        + Handler<Announce>
        + Handler<CancelAttempt>
        + Handler<PreemptAttempt>
{
}

/// What [`AgentLink`] needs of an agent's address.
trait AgentMailbox: Send + Sync {
    #[allow(clippy::result_large_err)]
    fn try_run(&self, msg: RunTask) -> Result<(), SendError<RunTask>>;
    fn announce(&self);
    fn cancel(&self, msg: CancelAttempt);
    fn preempt(&self, msg: PreemptAttempt);
}

impl<A: AgentActor> AgentMailbox for Addr<A> {
    fn try_run(&self, msg: RunTask) -> Result<(), SendError<RunTask>> {
        self.try_send(msg)
    }

    fn announce(&self) {
        self.do_send(Announce);
    }

    fn cancel(&self, msg: CancelAttempt) {
        self.do_send(msg);
    }

    fn preempt(&self, msg: PreemptAttempt) {
        self.do_send(msg);
    }
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

/// The agent supervisor's child id of an agent instance: its agent's
/// [`agent_child_label`] and `#replica`.
pub fn agent_child_id(instance: &agentos_runtime::model::InstanceId) -> String {
    format!("agent {instance}")
}

/// The agent supervisor's label of an agent's instances (their ids without `#replica`).
pub fn agent_child_label(agent: &str) -> String {
    format!("agent {agent}")
}
