//! The context pager core: every agent's context window managed like virtual memory.
//!
//! The conversation of one task attempt (a *context*) is a list of pages: the system prompt,
//! the task input, shared workflow pages, the model's messages and tool results. The prompt
//! sent to the model is the *resident set*; the [store](crate::store) is the swap. Nothing an
//! agent was told is lost: every page is written to the store when it is appended
//! (write-through), so eviction only drops the in-memory copy, and a page fault reads it back.
//!
//! - [`table`]: one context's page table and the prompt builder (eviction, fault-in, budget).
//! - [`policy`]: pluggable eviction policies (`lru`, `lru_importance`) and their score.
//! - [`compress`]: the deterministic, extractive summary that stands in for evicted runs.
//! - [`shared`]: workflow-level shared pages (reference-counted, read-only to readers).
//! - [`journal`]: the step journal over the pages: what a resumed attempt replays.
//! - [`swap`]: the swap device trait, backed by the store or by memory (tests, benches).
//! - [`pager`]: [`Pager`], every agent's contexts, isolation between agents, and statistics.
//!
//! # Units of eviction
//! An assistant message that calls tools and the tool results answering it form one *group*
//! and move together: an OpenAI-compatible server rejects a `tool` message whose assistant
//! `tool_calls` message is missing, so a built prompt never splits an exchange.
//!
//! # The budget
//! `budget = context window - reserved output tokens`. A built prompt (reply priming + tool
//! definitions + every message, counted with the agent's backend encoding) never exceeds it.
//! Pinned pages (system prompt, task input) are always resident and always first; a context
//! whose pinned pages alone do not fit is refused with [`PagerError::BudgetTooSmall`].

pub mod compress;
pub mod journal;
pub mod pager;
pub mod policy;
pub mod shared;
pub mod swap;
pub mod table;

#[cfg(test)]
mod journal_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use crate::llm::ChatMessage;
use crate::store::StoreError;

pub use journal::{JournalMeta, JournaledStep, Opened, ReplyDetail, ToolDetail};
pub use pager::{AgentStats, Pager, SharedStats};
pub use policy::PolicyKind;
pub use swap::{MemSwap, StoreSwap, SwapDevice};
pub use table::{PageMessage, PageTable};

/// Id of a page, unique within its context and increasing in conversation order.
pub type PageId = u64;

/// What a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// The agent's role (system prompt). Pinned.
    System,
    /// The task input. Pinned.
    Task,
    /// A message of the conversation (the model's reply, or other text).
    Message,
    /// A tool result.
    ToolResult,
    /// A summary standing in for evicted pages (built per prompt, never stored as a page).
    Summary,
    /// A workflow-level shared page (read-only).
    Shared,
}

impl PageKind {
    /// Every kind.
    pub const ALL: [PageKind; 6] = [
        PageKind::System,
        PageKind::Task,
        PageKind::Message,
        PageKind::ToolResult,
        PageKind::Summary,
        PageKind::Shared,
    ];

    /// Lower-case label (stored, and used as a metric label).
    pub fn label(self) -> &'static str {
        match self {
            PageKind::System => "system",
            PageKind::Task => "task",
            PageKind::Message => "message",
            PageKind::ToolResult => "tool_result",
            PageKind::Summary => "summary",
            PageKind::Shared => "shared",
        }
    }

    /// Parses a [`label`](Self::label).
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == s)
    }

    /// Importance a new page of this kind gets (0..1; settable later).
    pub fn default_importance(self) -> f64 {
        match self {
            PageKind::System | PageKind::Task => 1.0,
            PageKind::Shared => 0.7,
            PageKind::Summary => 0.6,
            PageKind::ToolResult => 0.5,
            PageKind::Message => 0.4,
        }
    }
}

/// Per-agent settings of its contexts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextSettings {
    /// Most prompt tokens: context window minus reserved output tokens.
    pub budget_tokens: u64,
    /// Which eviction policy chooses victims.
    pub policy: PolicyKind,
    /// The backend's encoding, used to count every page once.
    pub encoding: crate::tokenize::Encoding,
}

/// A page that moved in or out of the resident set during a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMove {
    /// The pages (one exchange group).
    pub pages: Vec<PageId>,
    /// Kind of the group's first page.
    pub kind: PageKind,
    /// Tokens moved.
    pub tokens: u64,
}

/// A prompt built within the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltPrompt {
    /// The messages, pinned pages first, then conversation order.
    pub messages: Vec<ChatMessage>,
    /// Each message's token ids in the KV-cache layout (its role marker, content and tool
    /// calls), parallel to `messages`: kept on the pages since they were counted, so the step
    /// core lays out the prompt's sequence without encoding it again.
    pub ids: Vec<std::sync::Arc<[u32]>>,
    /// Exact prompt tokens: reply priming + tool definitions + every message.
    pub tokens: u64,
    /// The budget it was built within.
    pub budget: u64,
    /// Groups evicted by this build.
    pub evicted: Vec<PageMove>,
    /// Groups faulted in from the store by this build.
    pub faulted: Vec<PageMove>,
    /// Tokens the summaries in this prompt stand in for, minus the summaries' own tokens.
    pub tokens_saved: u64,
    /// Summary messages in the prompt.
    pub summaries: usize,
    /// Name of the policy that chose the victims.
    pub policy: &'static str,
}

/// Why a pager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PagerError {
    /// The agent is not declared (no settings).
    #[error("agent \"{0}\" has no context settings")]
    UnknownAgent(String),
    /// No such context, in memory or in the store.
    #[error("agent \"{agent}\": no context {context}")]
    NoSuchContext {
        /// The agent.
        agent: String,
        /// The context.
        context: String,
    },
    /// The context is already open.
    #[error("agent \"{agent}\": context {context} is already open")]
    AlreadyOpen {
        /// The agent.
        agent: String,
        /// The context.
        context: String,
    },
    /// An agent asked for another agent's local pages.
    #[error("agent \"{agent}\" may not read context {context} of agent \"{owner}\"")]
    NotOwner {
        /// Who asked.
        agent: String,
        /// The context.
        context: String,
        /// Who owns it.
        owner: String,
    },
    /// The pinned pages alone exceed the budget.
    #[error("agent \"{agent}\": the pinned pages (system prompt and task input) need {needed} tokens, but the context budget is {budget} (context window minus reserved output tokens)")]
    BudgetTooSmall {
        /// The agent.
        agent: String,
        /// Tokens of the pinned pages plus fixed overheads.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// The page does not exist in the context.
    #[error("context {context}: no page {page}")]
    NoSuchPage {
        /// The context.
        context: String,
        /// The page.
        page: PageId,
    },
    /// A page expected in the store is not there (the store was changed under the pager).
    #[error("context {context}: page {page} is missing from the store")]
    Lost {
        /// The context.
        context: String,
        /// The page.
        page: PageId,
    },
    /// A tool result was recorded while the context's last group is not the reply that
    /// called it (a record out of order, or the reply's record failed).
    #[error("context {context}: step {step} call {call}: the last page group is not the reply calling this tool, so its result cannot join it")]
    NotAReply {
        /// The context.
        context: String,
        /// The step.
        step: u32,
        /// The call index.
        call: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PagerError {
    /// Whether trying the attempt again may help (store hiccups may pass; a budget will not).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PagerError::Store(_)
                | PagerError::NoSuchContext { .. }
                | PagerError::AlreadyOpen { .. }
                | PagerError::Lost { .. }
                | PagerError::NotAReply { .. }
        )
    }
}
