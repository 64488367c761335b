//! The scheduler's control-plane handlers: submit, list, inspect and cancel workflows;
//! suspend, resume and kill agents; tasks spawned by running tasks.
//!
//! Every handler changes the core, records its events, and pumps (a submitted workflow's
//! ready tasks are dispatched at once). Agent actions also move the agent's suspend switch on
//! the board (kill and resume of a killed agent go through the agent supervisor), and the
//! reply waits until the board shows every instance in its new state, so that the API
//! answers with up-to-date control blocks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_runtime::model::{AgentState, InstanceId};
use agentos_runtime::sched::{AgentAction, SpawnError};

use super::Scheduler;
use crate::board::Board;
use crate::protocol::{
    agent_child_id, CancelWorkflow, ControlAgent, GetWorkflow, ListWorkflows, Refused, SpawnTask,
    StartChild, SubmitWorkflow, Submitted, TerminateChild,
};
use agentos_runtime::store::AuditRow;

/// Longest a control reply waits for the board to show the new state.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Waits for the commit of a handler's changes; a failed one turns `ok` into a refusal
/// saying that it was not stored.
async fn stored<T>(commit: Option<super::Stored>, ok: T) -> Result<T, Refused> {
    match commit {
        None => Ok(ok),
        Some(commit) => match commit.wait().await {
            Some(Ok(())) => Ok(ok),
            Some(Err(why)) => Err(Refused::Unavailable(format!(
                "done in memory, but the store did not commit it (it would not survive a \
                 crash): {why}"
            ))),
            None => Err(Refused::Unavailable(
                "done in memory, but the store thread is gone".into(),
            )),
        },
    }
}

impl Handler<SubmitWorkflow> for Scheduler {
    type Result = ResponseFuture<Result<Submitted, Refused>>;

    fn handle(&mut self, m: SubmitWorkflow, ctx: &mut Self::Context) -> Self::Result {
        // Its quotas apply before its first task can make a call (before the pump below).
        let spec = (!m.spec.quotas.is_empty()).then(|| m.spec.clone());
        let submitted = self
            .state()
            .core
            .submit(m.spec, m.idempotency_key, &m.by, Instant::now());
        let (id, created, events) = match submitted {
            Ok(x) => x,
            Err(refused) => return Box::pin(async move { Err(refused) }),
        };
        if let (Some(spec), true) = (spec, created) {
            self.add_workflow_quotas(&id, &spec);
        }
        self.record(events);
        self.pump(ctx);
        // A submission is acknowledged once it is stored: a crash after the reply keeps it.
        Box::pin(stored(self.take_ack(), Submitted { id, created }))
    }
}

impl Handler<ListWorkflows> for Scheduler {
    type Result = MessageResult<ListWorkflows>;

    fn handle(&mut self, _: ListWorkflows, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state().core.views(Instant::now()))
    }
}

impl Handler<GetWorkflow> for Scheduler {
    type Result = MessageResult<GetWorkflow>;

    fn handle(&mut self, m: GetWorkflow, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state().core.view(&m.0, true, Instant::now()))
    }
}

impl Handler<CancelWorkflow> for Scheduler {
    type Result = ResponseFuture<Result<agentos_runtime::sched::WorkflowView, Refused>>;

    fn handle(&mut self, m: CancelWorkflow, ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let events = match self.state().core.cancel_workflow(&m.id, &m.by, now) {
            Ok(e) => e,
            Err(refused) => return Box::pin(async move { Err(refused) }),
        };
        // Who cancelled it, as its own audit entry (the tasks' entries carry it in a reason).
        self.audit(AuditRow {
            at_ms: super::unix_ms(),
            kind: "workflow_cancelled".into(),
            actor: m.by.clone(),
            agent: None,
            instance: None,
            task: None,
            attempt: None,
            step: None,
            detail: serde_json::json!({"workflow": m.id}).to_string(),
        });
        self.record(events);
        self.pump(ctx);
        let view = self.state().core.view(&m.id, true, Instant::now());
        let ack = self.take_ack();
        Box::pin(async move {
            let view = view.ok_or_else(|| Refused::NotFound(format!("no workflow {:?}", m.id)))?;
            stored(ack, view).await
        })
    }
}

impl Handler<SpawnTask> for Scheduler {
    type Result = ResponseFuture<Result<String, SpawnError>>;

    fn handle(&mut self, m: SpawnTask, ctx: &mut Self::Context) -> Self::Result {
        let spawned = self
            .state()
            .core
            .spawn(&m.parent, m.request, Instant::now());
        let (key, events) = match spawned {
            Ok(x) => x,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.record(events);
        self.pump(ctx);
        // The model learns the new task's id only once the task is stored: its journaled
        // tool result never names a task a crash could lose.
        let ack = self.take_ack();
        Box::pin(async move {
            stored(ack, key.to_string())
                .await
                .map_err(|e| SpawnError::Unavailable(e.to_string()))
        })
    }
}

impl Handler<ControlAgent> for Scheduler {
    type Result = ResponseFuture<Result<(), Refused>>;

    fn handle(&mut self, m: ControlAgent, ctx: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let (result, replicas) = {
            let mut s = self.state();
            let replicas = s.core.config().agent(&m.agent).map_or(0, |a| a.replicas);
            let result = match m.action {
                AgentAction::Suspend => s.core.suspend(&m.agent, &m.by).map(|e| (e, false)),
                AgentAction::Resume => s
                    .core
                    .resume(&m.agent, &m.by, now)
                    .map(|(killed, e)| (e, killed)),
                AgentAction::Kill => s.core.kill(&m.agent, &m.by, now).map(|e| (e, false)),
            };
            (result, replicas)
        };
        let (events, was_killed) = match result {
            Ok(x) => x,
            Err(refused) => return Box::pin(async move { Err(refused) }),
        };
        let agent: Arc<str> = m.agent.as_str().into();
        let instances: Vec<InstanceId> = (0..replicas)
            .map(|replica| InstanceId {
                agent: agent.clone(),
                replica,
            })
            .collect();
        let board = self.links.board.clone();
        if let Some(switch) = board.suspended.get(&m.agent) {
            switch.send_replace(m.action == AgentAction::Suspend);
        }
        match m.action {
            AgentAction::Kill => {
                for i in &instances {
                    self.links.agents.terminate.tell(TerminateChild {
                        id: agent_child_id(i),
                        reason: format!("killed by {}", m.by),
                    });
                }
            }
            AgentAction::Resume if was_killed => {
                for i in &instances {
                    self.links.agents.start.tell(StartChild(agent_child_id(i)));
                }
            }
            _ => {}
        }
        self.record(events);
        self.pump(ctx);
        let action = m.action;
        let ack = self.take_ack();
        Box::pin(async move {
            stored(ack, ()).await?;
            settled(&board, &instances, action).await;
            Ok(())
        })
    }
}

/// Waits (bounded) until every instance's control block shows what `action` leads to.
async fn settled(board: &Arc<Board>, instances: &[InstanceId], action: AgentAction) {
    let shows = |state: AgentState| match action {
        AgentAction::Suspend => matches!(state, AgentState::Suspended | AgentState::Terminated),
        AgentAction::Resume => !matches!(state, AgentState::Suspended | AgentState::Terminated),
        AgentAction::Kill => state == AgentState::Terminated,
    };
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let done = instances.iter().all(|i| match board.agents.get(i) {
            Some(cb) => shows(cb.state),
            // Not started yet (or never): nothing to wait for.
            None => true,
        });
        if done || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
