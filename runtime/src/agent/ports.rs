//! The small traits the step core runs over. The actor system implements them over its actors
//! (the context pager, the KV-cache pool, the built-in tools, typed events); the tests
//! implement them with fakes.

use futures::future::BoxFuture;

use crate::context::{BuiltPrompt, JournalMeta, Opened, PageMessage, PagerError, ToolDetail};
use crate::durable::SideEffect;
use std::time::Duration;

use crate::llm::{ChatMessage, ChatRequest, ToolSpec, Usage};
use crate::tools::{Tool, ToolContext, ToolError, ToolOutput, ToolRegistry};

/// Why the prompt source failed a request.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// The core refused or failed (budget, isolation, store).
    #[error(transparent)]
    Pager(#[from] PagerError),
    /// The source could not serve the request now (restarting, overloaded, store unavailable).
    #[error("context pager unavailable: {0}")]
    Unavailable(String),
}

impl PromptError {
    /// Whether the attempt may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            PromptError::Pager(e) => e.is_retryable(),
            PromptError::Unavailable(_) => true,
        }
    }
}

/// Opens the context of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The agent.
    pub agent: String,
    /// The context id (`workflow/task#attempt_total`).
    pub context: String,
    /// The task key (`workflow/task`), to find its shared pages.
    pub task: String,
    /// The system prompt (pinned).
    pub system: String,
    /// The task input (pinned).
    pub input: String,
    /// Upstream outputs (`workflow/task`) to attach as shared pages.
    pub shared: Vec<String>,
    /// Also build the first prompt in the same request, with this many tokens of tool
    /// definitions beside it, if the context opens fresh ([`Opened::first_prompt`]): one
    /// round trip to the pager instead of two for an attempt's first step.
    pub build: Option<u64>,
}

/// A task's output, published to its workflow as a shared page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOutput {
    /// The workflow.
    pub workflow: String,
    /// The task key (`workflow/task`).
    pub key: String,
    /// The agent that produced it.
    pub owner: String,
    /// The text.
    pub text: String,
}

/// What the future of a record answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The request's own result, once it is committed (`durability: sync`).
    Answer,
    /// That the request is queued (at once, unless the source's queue is full: then once
    /// there is room). Nobody waits for its result, so nobody is woken for it: the source
    /// reports a failure on its own, as a warning (`durability: async` and `exit`; a shared
    /// page in every mode).
    Queued,
}

/// Where prompts come from: the context pager, which also keeps the step journal.
///
/// # Records
/// A `record_*` request is queued when the method is called, in call order with every other
/// request of the source, and its future answers as its [`Wait`] says. Keep the future
/// alive until it answers: a source may withdraw a record whose future is dropped.
pub trait PromptSource: Send + Sync {
    /// Opens a context with its pinned pages; answers the pinned tokens. A context the store
    /// already holds (a resumed attempt) is reopened instead, and its journal comes back.
    fn open(&self, request: OpenRequest) -> BoxFuture<'static, Result<Opened, PromptError>>;
    /// Records an LLM reply (the assistant message, tool calls or final answer) as a new page
    /// group with its `reply` journal row. The step core encodes the message on its own
    /// thread, so the page keeps its ids without the source encoding it.
    #[allow(clippy::too_many_arguments)]
    fn record_reply(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        reply: PageMessage,
        usage: Usage,
        finish_reason: &str,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>>;
    /// Records that call `call` of step `meta.step` (an at-most-once tool) is about to run.
    fn record_tool_start(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        tool: &str,
        class: SideEffect,
    ) -> BoxFuture<'static, Result<(), PromptError>>;
    /// Records the result of call `call` of step `meta.step`: the tool message joins the
    /// step's reply group.
    #[allow(clippy::too_many_arguments)]
    fn record_tool_result(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        message: PageMessage,
        detail: ToolDetail,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>>;
    /// Appends one exchange (assistant message and its tool results) as one page group, with
    /// no journal row (the step core records instead).
    fn append(
        &self,
        agent: &str,
        context: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'static, Result<(), PromptError>>;
    /// Builds the prompt within the agent's budget; `overhead_tokens` is what the request adds
    /// beside the messages (tool definitions).
    fn build(
        &self,
        agent: &str,
        context: &str,
        overhead_tokens: u64,
    ) -> BoxFuture<'static, Result<BuiltPrompt, PromptError>>;
    /// Publishes a successful output as a shared page of its workflow; answers as
    /// [`Wait::Queued`] does (nothing waits for the page: the source reports a failure).
    fn share(&self, output: SharedOutput) -> BoxFuture<'static, Result<(), PromptError>>;
    /// Closes a context (its pages stay in the store). Fire and forget: it is called from a
    /// drop guard and must not be lost.
    fn close(&self, agent: &str, context: &str);
}

/// One LLM call asking the quota gate for admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRequest {
    /// The agent.
    pub agent: String,
    /// The instance making the call (its lease does not run out while the gate holds it).
    pub instance: crate::model::InstanceId,
    /// The backend.
    pub backend: String,
    /// The task's workflow.
    pub workflow: String,
    /// Exact prompt tokens (the backend's tokenizer).
    pub prompt_tokens: u64,
    /// Most completion tokens the call may produce.
    pub max_tokens: u64,
}

/// Why the gate refused a call.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRefusal {
    /// Readable reason (names the scope and the figures).
    pub reason: String,
    /// `true`: the task waits for the window to reset; `false`: it fails.
    pub wait: bool,
    /// When the window resets, if it does.
    pub resets_in: Option<Duration>,
}

/// An admitted call. Settle it with the call's real usage; dropped unsettled, everything
/// reserved is given back (the call never reached the server).
pub trait CallPermit: Send {
    /// The call ended: `usage` is what the server counted (`None`: nothing, it failed before);
    /// `overloaded`: the server answered 429 or 503.
    fn settle(self: Box<Self>, usage: Option<Usage>, latency: Duration, overloaded: bool);
}

/// The quota gate: rate limits, budgets and calls in flight, checked before each LLM call.
pub trait CallGate: Send + Sync {
    /// Waits while a rate limit or the concurrency limit holds the call back, then admits it
    /// (with its reservation) or refuses it (a budget is exhausted).
    fn admit(
        &self,
        request: GateRequest,
    ) -> BoxFuture<'static, Result<Box<dyn CallPermit>, GateRefusal>>;
}

/// A held route: where one LLM call goes. Dropping it releases the route (the replica's load
/// drops), so every exit path of the call releases it.
pub trait RouteLease: Send {
    /// The backend replica the call goes to.
    fn replica(&self) -> usize;
}

/// Where calls are routed: the KV-cache pool.
pub trait Router: Send + Sync {
    /// Picks a replica for this request's prompt (its `encoded` ids when it has them) and
    /// holds it until the lease drops. Never fails: a router that cannot decide picks a
    /// replica on its own.
    fn route(&self, request: &ChatRequest) -> BoxFuture<'static, Box<dyn RouteLease>>;
}

/// The tools an agent may call, by name.
pub trait ToolBox: Send + Sync {
    /// The spec of the tool called `name`, if it exists.
    fn spec(&self, name: &str) -> Option<ToolSpec>;
    /// The side-effect class of the tool called `name`, if it exists.
    fn class(&self, name: &str) -> Option<SideEffect>;
    /// Starts a call of `name`; `None` when no such tool exists.
    fn call(
        &self,
        name: &str,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<ToolOutput, ToolError>>>;
}

impl ToolBox for ToolRegistry {
    fn spec(&self, name: &str) -> Option<ToolSpec> {
        self.get(name).map(|t| t.spec())
    }

    fn class(&self, name: &str) -> Option<SideEffect> {
        ToolRegistry::class(self, name)
    }

    fn call(
        &self,
        name: &str,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<ToolOutput, ToolError>>> {
        self.get(name)
            .map(|t: &std::sync::Arc<dyn Tool>| t.call(ctx, args))
    }
}
