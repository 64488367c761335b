//! The scheduler's control-plane handlers: submit, list, inspect and cancel workflows;
//! suspend, resume and kill agents.

use actix::prelude::*;
use agentos_runtime::sched::WorkflowView;

use super::Scheduler;
use crate::protocol::{
    CancelWorkflow, ControlAgent, GetWorkflow, ListWorkflows, Refused, SubmitWorkflow, Submitted,
};

impl Handler<SubmitWorkflow> for Scheduler {
    type Result = Result<Submitted, Refused>;

    fn handle(&mut self, _: SubmitWorkflow, _: &mut Self::Context) -> Self::Result {
        Err(Refused::Conflict("submission is being wired".into()))
    }
}

impl Handler<ListWorkflows> for Scheduler {
    type Result = MessageResult<ListWorkflows>;

    fn handle(&mut self, _: ListWorkflows, _: &mut Self::Context) -> Self::Result {
        MessageResult(Vec::<WorkflowView>::new())
    }
}

impl Handler<GetWorkflow> for Scheduler {
    type Result = MessageResult<GetWorkflow>;

    fn handle(&mut self, _: GetWorkflow, _: &mut Self::Context) -> Self::Result {
        MessageResult(None)
    }
}

impl Handler<CancelWorkflow> for Scheduler {
    type Result = Result<WorkflowView, Refused>;

    fn handle(&mut self, m: CancelWorkflow, _: &mut Self::Context) -> Self::Result {
        Err(Refused::NotFound(m.id))
    }
}

impl Handler<ControlAgent> for Scheduler {
    type Result = ResponseFuture<Result<(), Refused>>;

    fn handle(&mut self, m: ControlAgent, _: &mut Self::Context) -> Self::Result {
        Box::pin(async move { Err(Refused::NotFound(m.agent)) })
    }
}
