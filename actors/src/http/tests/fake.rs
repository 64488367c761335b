//! [`FakeScheduler`]: a stand-in for the scheduler's control-plane handlers. It keeps
//! workflows in a map and, on agent control, updates the board before it answers (the
//! contract the real scheduler keeps).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use agentos_runtime::model::{AgentState, InstanceId};
use agentos_runtime::sched::{AgentAction, WorkflowOrigin, WorkflowState, WorkflowView};

use crate::board::Board;
use crate::protocol::{
    CancelWorkflow, ControlAgent, GetSnapshot, GetWorkflow, ListWorkflows, Refused, RunSnapshot,
    SubmitWorkflow, Submitted,
};

/// A stand-in for the scheduler's control-plane handlers.
pub(crate) struct FakeScheduler {
    board: Arc<Board>,
    workflows: BTreeMap<String, WorkflowView>,
    keys: HashMap<String, String>,
}

impl Actor for FakeScheduler {
    type Context = Context<Self>;
}

fn view(id: &str, by: &str, state: WorkflowState) -> WorkflowView {
    WorkflowView {
        id: id.to_owned(),
        name: id.to_owned(),
        origin: WorkflowOrigin::Submitted,
        submitted_by: by.to_owned(),
        submitted_at: 0.0,
        state,
        cancelled_by: None,
        spawned: 0,
        counts: BTreeMap::new(),
        tasks: Vec::new(),
    }
}

impl Handler<SubmitWorkflow> for FakeScheduler {
    type Result = Result<Submitted, Refused>;
    fn handle(&mut self, m: SubmitWorkflow, _: &mut Self::Context) -> Self::Result {
        if let Some(id) = m.idempotency_key.as_ref().and_then(|k| self.keys.get(k)) {
            return Ok(Submitted {
                id: id.clone(),
                created: false,
            });
        }
        if m.spec.name == "refused" {
            return Err(Refused::Conflict("shutting down".into()));
        }
        let id = if self.workflows.contains_key(&m.spec.name) {
            format!("{}-{}", m.spec.name, self.workflows.len() + 1)
        } else {
            m.spec.name.clone()
        };
        self.workflows
            .insert(id.clone(), view(&id, &m.by, WorkflowState::Running));
        if let Some(k) = m.idempotency_key {
            self.keys.insert(k, id.clone());
        }
        Ok(Submitted { id, created: true })
    }
}

impl Handler<ListWorkflows> for FakeScheduler {
    type Result = MessageResult<ListWorkflows>;
    fn handle(&mut self, _: ListWorkflows, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.workflows.values().cloned().collect())
    }
}

impl Handler<GetWorkflow> for FakeScheduler {
    type Result = Option<WorkflowView>;
    fn handle(&mut self, m: GetWorkflow, _: &mut Self::Context) -> Self::Result {
        self.workflows.get(&m.0).cloned()
    }
}

impl Handler<CancelWorkflow> for FakeScheduler {
    type Result = Result<WorkflowView, Refused>;
    fn handle(&mut self, m: CancelWorkflow, _: &mut Self::Context) -> Self::Result {
        let w = self
            .workflows
            .get_mut(&m.id)
            .ok_or_else(|| Refused::NotFound(format!("no workflow {}", m.id)))?;
        if w.state.is_terminal() {
            return Err(Refused::Conflict(format!("{} already finished", m.id)));
        }
        w.state = WorkflowState::Cancelled;
        w.cancelled_by = Some(m.by);
        Ok(w.clone())
    }
}

impl Handler<ControlAgent> for FakeScheduler {
    type Result = Result<(), Refused>;
    fn handle(&mut self, m: ControlAgent, _: &mut Self::Context) -> Self::Result {
        let to = match m.action {
            AgentAction::Suspend => AgentState::Suspended,
            AgentAction::Resume => AgentState::Ready,
            AgentAction::Kill => AgentState::Terminated,
        };
        let ids: Vec<InstanceId> = self
            .board
            .agents
            .iter()
            .filter(|e| *e.key().agent == *m.agent)
            .map(|e| e.key().clone())
            .collect();
        for id in &ids {
            let mut conflict = false;
            self.board.update(id, |cb| {
                if m.action == AgentAction::Resume && cb.state != AgentState::Suspended {
                    conflict = true;
                }
            });
            if conflict {
                return Err(Refused::Conflict(format!("{} is not suspended", m.agent)));
            }
        }
        for id in &ids {
            self.board.update(id, |cb| cb.state = to);
        }
        Ok(())
    }
}

impl Handler<GetSnapshot> for FakeScheduler {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(RunSnapshot {
            done: false,
            tasks: Vec::new(),
        })
    }
}

impl FakeScheduler {
    /// A scheduler with no workflows that controls the agents on `board`.
    pub(crate) fn new(board: Arc<Board>) -> Self {
        Self {
            board,
            workflows: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }
}
