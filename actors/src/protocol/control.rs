//! The control plane's messages to the scheduler: submit, list, inspect and cancel workflows,
//! and suspend, resume or kill agents. The HTTP API sends them; the scheduler answers.
//!
//! After a [`ControlAgent`] reply, the board already shows the agent's new state: the
//! scheduler answers only once every instance's control block reflects it (or after a short
//! bound, for an instance that does not answer).

use actix::prelude::*;
use agentos_runtime::config::WorkflowSpec;
pub use agentos_runtime::sched::Refused;
use agentos_runtime::sched::{AgentAction, WorkflowView};
use serde::Serialize;

/// Submits a validated workflow (validated against the config by the caller).
#[derive(Debug, Message)]
#[rtype(result = "Result<Submitted, Refused>")]
pub struct SubmitWorkflow {
    /// The workflow, as validated.
    pub spec: WorkflowSpec,
    /// A retried submit with the same key returns the first workflow.
    pub idempotency_key: Option<String>,
    /// Who asked (for reasons and the trace), e.g. `api 127.0.0.1:50412`.
    pub by: String,
}

/// A submitted workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submitted {
    /// The workflow's id (its tasks are `id/task`).
    pub id: String,
    /// `false` when an earlier submit with the same idempotency key is returned.
    pub created: bool,
}

/// Every workflow, without task outputs.
#[derive(Debug, Message)]
#[rtype(result = "Vec<WorkflowView>")]
pub struct ListWorkflows;

/// One workflow with every task (outputs included), or `None`.
#[derive(Debug, Message)]
#[rtype(result = "Option<WorkflowView>")]
pub struct GetWorkflow(pub String);

/// Cancels a workflow: pending and ready tasks become Cancelled, running attempts are stopped
/// and become Cancelled. Answers the workflow afterwards.
#[derive(Debug, Message)]
#[rtype(result = "Result<WorkflowView, Refused>")]
pub struct CancelWorkflow {
    /// Workflow id.
    pub id: String,
    /// Who asked.
    pub by: String,
}

/// Suspends, resumes or kills every instance of an agent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Refused>")]
pub struct ControlAgent {
    /// Agent name.
    pub agent: String,
    /// What to do.
    pub action: AgentAction,
    /// Who asked.
    pub by: String,
}
