//! Messages of the [`ContextPager`](super::ContextPager).

use std::collections::BTreeMap;

use actix::prelude::*;
use agentos_runtime::context::{AgentStats, BuiltPrompt, PageId, PagerError};
use agentos_runtime::llm::ChatMessage;

/// Why a pager request failed.
#[derive(Debug, thiserror::Error)]
pub enum PagerFailure {
    /// The core refused or failed (budget, isolation, store).
    #[error(transparent)]
    Pager(#[from] PagerError),
    /// The pager could not serve the request now (restarting, overloaded, store unavailable).
    #[error("context pager unavailable: {0}")]
    Unavailable(String),
}

impl PagerFailure {
    /// Whether the attempt may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            PagerFailure::Pager(e) => e.is_retryable(),
            PagerFailure::Unavailable(_) => true,
        }
    }

    /// Bounded label for the `outcome` of [`agentos_runtime::metrics::PAGER_REQUESTS`].
    pub fn outcome_label(&self) -> &'static str {
        match self {
            PagerFailure::Pager(PagerError::BudgetTooSmall { .. }) => "budget",
            PagerFailure::Pager(PagerError::Store(_)) => "store",
            PagerFailure::Unavailable(_) => "unavailable",
            PagerFailure::Pager(_) => "other",
        }
    }
}

/// Opens the context of one task attempt with its pinned pages; attaches the shared pages
/// of the task's unquoted upstream tasks. Answers the pinned tokens.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, PagerFailure>")]
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
}

/// Appends one exchange (assistant message and its tool results) as one group.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PageId>, PagerFailure>")]
pub struct AppendPages {
    /// The agent.
    pub agent: String,
    /// The context.
    pub context: String,
    /// The messages.
    pub messages: Vec<ChatMessage>,
}

/// Builds the prompt within the agent's budget.
#[derive(Debug, Message)]
#[rtype(result = "Result<BuiltPrompt, PagerFailure>")]
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
#[rtype(result = "Result<(), PagerFailure>")]
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
#[rtype(result = "Result<(), PagerFailure>")]
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
#[rtype(result = "Result<(), PagerFailure>")]
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
#[rtype(result = "Result<(), PagerFailure>")]
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

/// Stops the pager.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopPager;
