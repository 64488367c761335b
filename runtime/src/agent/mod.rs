//! The step core: one attempt's loop, as a plain async function over small traits.
//!
//! ```text
//! open context ─► ┌─ build prompt (PromptSource) ─► route (Router) ─► chat (LlmBackend) ─┐
//!                 │                                                                     │
//!                 └── record results ◄── run tool calls (ToolBox, timeout each) ◄─ record reply
//!                                  ... until a final answer or max_steps
//! ```
//!
//! # Durable steps
//! Every LLM reply and every tool result is recorded in the attempt's journal (the pager's
//! pages); under `runtime.durability: sync` the loop waits for each record's commit, else it
//! goes on and the record commits in the background. An at-most-once call's start marker is
//! always committed before the call runs. An attempt whose context is reopened with a journal
//! (a resume after a restart) replays it: the journaled replies' usage counts, a journaled
//! final answer succeeds at once with no LLM call, and the missing results of the last
//! journaled step are filled in: an at-most-once call that had started is not run again (the
//! model reads [`interrupted_result`](crate::durable::interrupted_result)), any other call is
//! run. See `replay.rs`.
//!
//! - The [`PromptSource`] (the context pager) opens the attempt's context with the system
//!   prompt and task input pinned, builds every prompt within the agent's budget, records
//!   each reply and its tool results as one page group (the journal), publishes the
//!   final output as a shared page, and closes the context however the attempt ends.
//! - The [`Router`] (the KV-cache pool) picks the backend replica for each call and holds it
//!   until the call ends: the lease is a drop guard, released on every exit path.
//! - The [`ToolBox`] runs the tools the agent's config grants; every call has a time limit.
//!   A tool that is not granted, unknown, given arguments that are not valid JSON, failing or
//!   hanging yields an error result the model reads, never a failed attempt.
//! - Every LLM call, tool call, step and state change goes to the [`EventSink`] as a typed
//!   [`StepEvent`]; the actor system turns those into metrics, the trace, the logs and the
//!   agent's control block.
//!
//! - The [`AttemptControl`] suspends the attempt at its next step boundary (paused time does
//!   not count against the timeout) or cancels it at once.
//!
//! No actix here: the actor that runs an attempt only adds the lease, the unwind guard and the
//! report. The tests drive this loop with fakes and paused time.

mod calls;
mod control;
pub mod ports;
mod replay;
mod step;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::context::{JournalMeta, JournaledStep, Opened, ToolDetail};
pub use crate::events::{
    AgentStepFinished, AtMostOnceInterrupted, AttemptResumed, LlmCallAbandoned, LlmCallFailed,
    LlmCallFinished, PagerOutcome, PagerRequestFinished, ToolCalled,
};
pub use calls::not_stored;
pub use control::AttemptControl;
pub use ports::{
    CallGate, CallPermit, GateRefusal, GateRequest, OpenRequest, PromptError, PromptSource,
    RouteLease, Router, SharedOutput, ToolBox, Wait,
};
pub use step::{run_attempt, AttemptResult};

use crate::config::AgentSpec;
use crate::durable::Durability;
use crate::llm::{LlmBackend, ToolSpec};
use crate::model::{AgentState, InstanceId};
use crate::tokenize::Encoding;
use crate::tools::ToolContext;

/// Everything one agent instance needs that does not change while it runs.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// The agent's config.
    pub spec: Arc<AgentSpec>,
    /// This instance.
    pub instance: InstanceId,
    /// `agent#replica`, formatted once.
    pub instance_label: String,
    /// Tool context (the task field is filled per attempt).
    pub tool_ctx: ToolContext,
    /// The backend's encoding (counts the tool definitions sent with every prompt).
    pub tokenizer: Encoding,
    /// Longest a single tool call may run before it is abandoned as timed out.
    pub tool_timeout: Duration,
    /// Whether the loop waits for each journal record's commit (`runtime.durability`).
    pub durability: Durability,
    /// Most completion tokens one call may produce: what the quota gate reserves beside the
    /// prompt (the backend's `max_tokens`, else the agent's `context.reserve_output_tokens`,
    /// else [`DEFAULT_COMPLETION_RESERVE`]).
    pub call_max_tokens: u64,
    /// Whether each call carries `call_max_tokens` as its `max_tokens` (set when token quotas
    /// apply, so that every reservation bounds its call; otherwise the backend decides).
    pub cap_calls: bool,
    /// The time slice after which a preemption request is honoured (`None`: never).
    pub slice: Option<Slice>,
    /// The agent's tool definitions as every call sends them, prepared on the first attempt
    /// and shared by every instance of the agent (boot hands them one cell).
    pub tools: Arc<OnceLock<AgentTools>>,
}

/// An agent's granted tools as its calls send them, prepared once: the definitions, what they
/// add to every prompt, and their token ids in the KV-cache layout.
#[derive(Debug, Clone, Default)]
pub struct AgentTools {
    /// The definitions of the granted tools that exist, in grant order.
    pub specs: Arc<[ToolSpec]>,
    /// Tokens the definitions add to every prompt (their JSON, with the backend's encoding).
    pub overhead_tokens: u64,
    /// The JSON's token ids (what the KV-cache layout puts after the system prompt).
    pub ids: Arc<[u32]>,
}

impl AgentTools {
    /// Prepares the tools `granted` among `tools`, counted with `encoding`. Only granted tools
    /// are offered; a model that calls another one gets an error result.
    pub fn prepare(granted: &[String], tools: &dyn ToolBox, encoding: Encoding) -> Self {
        let specs: Arc<[ToolSpec]> = granted.iter().filter_map(|n| tools.spec(n)).collect();
        let ids: Arc<[u32]> = if specs.is_empty() {
            Arc::from([])
        } else {
            // Serialising plain structs of strings and JSON values cannot fail.
            serde_json::to_string(&specs[..])
                .map(|j| encoding.encode(&j))
                .unwrap_or_default()
                .into()
        };
        Self {
            overhead_tokens: ids.len() as u64,
            specs,
            ids,
        }
    }
}

/// Completion tokens reserved per call when neither the backend nor the agent's context says.
pub const DEFAULT_COMPLETION_RESERVE: u64 = 1024;

/// How long an attempt runs before it may be preempted: either bound used up is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Steps run since the attempt (re)started.
    pub steps: Option<u32>,
    /// Time run since the attempt (re)started, suspended time left out.
    pub time: Option<Duration>,
}

impl AgentSetup {
    /// A setup for `instance` of `spec`.
    pub fn new(
        spec: Arc<AgentSpec>,
        instance: InstanceId,
        tool_ctx: ToolContext,
        tokenizer: Encoding,
        tool_timeout: Duration,
        durability: Durability,
    ) -> Self {
        Self {
            durability,
            call_max_tokens: match spec.context.reserve_output_tokens {
                0 => DEFAULT_COMPLETION_RESERVE,
                n => n,
            },
            cap_calls: false,
            slice: None,
            tools: Arc::default(),
            instance_label: instance.to_string(),
            spec,
            instance,
            tool_ctx,
            tokenizer,
            tool_timeout,
        }
    }
}

/// The peers the step core talks to.
#[derive(Clone)]
pub struct StepPorts {
    /// Where prompts come from (the context pager).
    pub prompts: Arc<dyn PromptSource>,
    /// Where calls are routed (the KV-cache pool); `None`: every call goes to replica 0.
    pub router: Option<Arc<dyn Router>>,
    /// The agent's backend.
    pub backend: Arc<dyn LlmBackend>,
    /// The tools.
    pub tools: Arc<dyn ToolBox>,
    /// Where events go.
    pub events: Arc<dyn EventSink>,
    /// The quota gate; `None`: no quota applies.
    pub gate: Option<Arc<dyn CallGate>>,
}

impl std::fmt::Debug for StepPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepPorts")
            .field("backend", &self.backend.name())
            .field("routed", &self.router.is_some())
            .finish_non_exhaustive()
    }
}

/// What happened during an attempt, as the step core reports it.
#[derive(Debug)]
pub enum StepEvent<'a> {
    /// The instance moved to `Waiting` (an LLM call is in flight) or back to `Running`.
    State(AgentState),
    /// An LLM call returned a reply.
    LlmFinished(&'a LlmCallFinished<'a>),
    /// An LLM call failed.
    LlmFailed(&'a LlmCallFailed<'a>),
    /// An LLM call was dropped before it returned (the attempt timed out or was cancelled).
    LlmAbandoned(&'a LlmCallAbandoned<'a>),
    /// A tool call ended, either way.
    ToolCalled(&'a ToolCalled<'a>),
    /// One step (an LLM call and its tool calls) ended.
    StepFinished(&'a AgentStepFinished<'a>),
    /// A request to the prompt source ended.
    PagerRequest(&'a PagerRequestFinished<'a>),
    /// The attempt was resumed from its journal.
    Resumed(&'a AttemptResumed<'a>),
    /// An at-most-once call interrupted by a restart was not run again; the model is told.
    CallInterrupted(&'a AtMostOnceInterrupted<'a>),
}

/// Where the step core's events go.
pub trait EventSink: Send + Sync {
    /// Records one event. Must not block.
    fn emit(&self, event: StepEvent<'_>);
}
