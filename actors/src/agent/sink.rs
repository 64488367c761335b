//! Where an agent's step events go: typed events (metrics, trace, logs) and the agent's own
//! entry on the [`Board`].

use std::sync::Arc;

use agentos_runtime::agent::{EventSink, StepEvent};
use agentos_runtime::events::agent::AgentStateChanged;
use agentos_runtime::model::{AgentState, InstanceId};
use agentos_runtime::trace::Trace;
use tokio::sync::watch;

use crate::board::Board;

/// One instance's sink; it writes only that instance's control block.
#[derive(Debug, Clone)]
pub struct AgentSink {
    instance: InstanceId,
    board: Arc<Board>,
    trace: Trace,
    suspended: watch::Receiver<bool>,
}

impl AgentSink {
    /// A sink for `instance`; `suspended` is its agent's suspend switch.
    pub fn new(
        instance: InstanceId,
        board: Arc<Board>,
        trace: Trace,
        suspended: watch::Receiver<bool>,
    ) -> Self {
        Self {
            instance,
            board,
            trace,
            suspended,
        }
    }

    /// The agent's suspend switch.
    pub fn suspend_switch(&self) -> watch::Receiver<bool> {
        self.suspended.clone()
    }

    /// Moves the instance's control block to `to`, keeping the per-state gauge balanced. While
    /// the agent is suspended it shows Suspended whatever it is doing (an attempt finishing
    /// its current call), until it terminates.
    pub fn set_state(&self, to: AgentState) {
        let to = if *self.suspended.borrow() && to != AgentState::Terminated {
            AgentState::Suspended
        } else {
            to
        };
        self.write_state(to);
    }

    /// The suspend switch moved: show Suspended, or what the instance is doing.
    pub fn switch_moved(&self) {
        let to = if *self.suspended.borrow() {
            AgentState::Suspended
        } else {
            let busy = self
                .board
                .agents
                .get(&self.instance)
                .is_some_and(|cb| cb.current_task.is_some());
            if busy {
                AgentState::Running
            } else {
                AgentState::Ready
            }
        };
        let terminated = self
            .board
            .agents
            .get(&self.instance)
            .is_some_and(|cb| cb.state == AgentState::Terminated);
        if !terminated {
            self.write_state(to);
        }
    }

    fn write_state(&self, to: AgentState) {
        let mut from = None;
        self.board.update(&self.instance, |cb| {
            if cb.state != to {
                from = Some(cb.state);
                cb.state = to;
            }
        });
        if from.is_some() {
            AgentStateChanged { from, to: Some(to) }.emit();
        }
    }
}

impl EventSink for AgentSink {
    fn emit(&self, event: StepEvent<'_>) {
        match event {
            StepEvent::State(to) => self.set_state(to),
            StepEvent::LlmFinished(e) => {
                e.emit(&self.trace);
                self.board.update(&self.instance, |cb| {
                    cb.steps += 1;
                    cb.llm_calls += 1;
                    cb.tokens_in += e.usage.prompt_tokens;
                    cb.tokens_out += e.usage.completion_tokens;
                });
            }
            StepEvent::LlmFailed(e) => {
                e.emit(&self.trace);
                self.board.update(&self.instance, |cb| cb.llm_calls += 1);
            }
            StepEvent::LlmAbandoned(e) => e.emit(),
            StepEvent::ToolCalled(e) => {
                e.emit(&self.trace);
                self.board.update(&self.instance, |cb| cb.tool_calls += 1);
            }
            StepEvent::StepFinished(e) => e.emit(),
            StepEvent::PagerRequest(e) => e.emit(),
            StepEvent::Resumed(e) => e.emit(&self.trace),
            StepEvent::CallInterrupted(e) => e.emit(&self.trace),
        }
    }
}
