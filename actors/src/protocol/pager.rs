//! Messages of the context pager. Failures are the step core's
//! [`PromptError`](agentos_runtime::agent::PromptError).

use std::collections::BTreeMap;

use actix::prelude::*;
use agentos_runtime::agent::PromptError;
use agentos_runtime::context::{
    AgentStats, BuiltPrompt, JournalMeta, Opened, PageId, PageMessage, ToolDetail,
};
use agentos_runtime::durable::SideEffect;
use agentos_runtime::llm::{ChatMessage, Usage};

use super::port::ports;

/// Opens the context of one task attempt with its pinned pages; attaches the shared pages
/// of the task's unquoted upstream tasks. Answers the pinned tokens. A context the store
/// already holds (a resumed attempt) is reopened, and its journal comes back.
#[derive(Debug, Message)]
#[rtype(result = "Result<Opened, PromptError>")]
pub struct OpenContext {
    /// The agent.
    pub agent: String,
    /// The context id (`workflow/task#attempt_total`).
    pub context: String,
    /// The task key (`workflow/task`), to find its shared pages.
    pub task: String,
    /// The system prompt.
    pub system: String,
    /// The task input.
    pub input: String,
    /// Upstream outputs (`workflow/task`) to attach as shared pages, if published.
    pub shared: Vec<String>,
    /// Also build the first prompt with this tool overhead if the context opens fresh
    /// (`Opened::first_prompt`).
    pub build: Option<u64>,
}

/// Appends one exchange (assistant message and its tool results) as one group.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PageId>, PromptError>")]
pub struct AppendPages {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// The messages.
    pub messages: Vec<ChatMessage>,
}

/// Records an LLM reply as a new page group with its `reply` journal row. Answers the page.
#[derive(Debug, Message)]
#[rtype(result = "Result<PageId, PromptError>")]
pub struct RecordReply {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// Step, instance, task, attempt, time and duration.
    pub meta: JournalMeta,
    /// The assistant message (encoded by the agent).
    pub reply: PageMessage,
    /// Its token usage.
    pub usage: Usage,
    /// The server's finish reason.
    pub finish_reason: String,
}

/// Records that an at-most-once call is about to run (a `tool_start` journal row).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PromptError>")]
pub struct RecordToolStart {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// Step, instance, task, attempt, time.
    pub meta: JournalMeta,
    /// The call's index in the step's reply.
    pub call: u32,
    /// The tool.
    pub tool: String,
    /// Its side-effect class.
    pub class: SideEffect,
}

/// Records a tool result into the group of its step's reply, with its `tool_result` journal
/// row. Answers the page.
#[derive(Debug, Message)]
#[rtype(result = "Result<PageId, PromptError>")]
pub struct RecordToolResult {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// Step, instance, task, attempt, time and duration.
    pub meta: JournalMeta,
    /// The call's index in the step's reply.
    pub call: u32,
    /// The tool message (encoded by the agent).
    pub message: PageMessage,
    /// Tool, class and outcome.
    pub detail: ToolDetail,
}

/// Builds the prompt within the agent's budget.
#[derive(Debug, Message)]
#[rtype(result = "Result<BuiltPrompt, PromptError>")]
pub struct BuildPrompt {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// Tokens the request adds beside the messages (tool definitions).
    pub overhead_tokens: u64,
    /// Pages to fault in and keep for this prompt.
    pub want: Vec<PageId>,
}

/// Pins or unpins a page.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PromptError>")]
pub struct PinPage {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// The page.
    pub page: PageId,
    /// Pin (`true`) or unpin.
    pub pinned: bool,
}

/// Sets a page's importance (0..1).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PromptError>")]
pub struct SetImportance {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// The page.
    pub page: PageId,
    /// 0..1.
    pub importance: f64,
}

/// Publishes a task's output as a shared page of its workflow.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PromptError>")]
pub struct SharePage {
    /// The workflow.
    pub workflow: String,
    /// The key (`workflow/task`).
    pub key: String,
    /// The agent that produced it.
    pub owner: String,
    /// The text.
    pub text: String,
}

/// Closes a context (its pages stay in the store).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), PromptError>")]
pub struct CloseContext {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
}

/// Paging statistics by agent.
#[derive(Debug, Message)]
#[rtype(result = "BTreeMap<String, AgentStats>")]
pub struct GetPagerStats;

ports! {
    /// Ports of the context pager.
    PagerPorts {
        /// Opens an attempt's context.
        open: OpenContext,
        /// Appends an exchange.
        append: AppendPages,
        /// Records an LLM reply.
        record_reply: RecordReply,
        /// Records an at-most-once call's start.
        record_tool_start: RecordToolStart,
        /// Records a tool result.
        record_tool_result: RecordToolResult,
        /// Builds a prompt.
        build: BuildPrompt,
        /// Shares a task's output.
        share: SharePage,
        /// Closes a context.
        close: CloseContext,
        /// Statistics.
        stats: GetPagerStats,
    }
}
