//! Where an agent's step events go: typed events (metrics, trace, logs) and the agent's own
//! entry on the [`Board`].

use std::sync::Arc;

use agentos_runtime::agent::{EventSink, StepEvent};
use agentos_runtime::events::agent::AgentStateChanged;
use agentos_runtime::model::{AgentState, InstanceId};
use agentos_runtime::trace::Trace;

use crate::board::Board;

/// One instance's sink; it writes only that instance's control block.
#[derive(Debug, Clone)]
pub struct AgentSink {
    instance: InstanceId,
    board: Arc<Board>,
    trace: Trace,
}

impl AgentSink {
    /// A sink for `instance`.
    pub fn new(instance: InstanceId, board: Arc<Board>, trace: Trace) -> Self {
        Self {
            instance,
            board,
            trace,
        }
    }

    /// Moves the instance's control block to `to`, keeping the per-state gauge balanced.
    pub fn set_state(&self, to: AgentState) {
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
        }
    }
}
