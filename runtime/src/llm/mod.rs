//! LLM backends behind one trait.
//!
//! - [`openai`]: any OpenAI-compatible `/v1/chat/completions` server.
//! - [`sim`]: a deterministic, seeded **simulator** for offline runs and load tests.
//! - [`ratelimit`]: the rate-limit figures servers send (`x-ratelimit-*`, `Retry-After`) and
//!   the [`RateLimitObserver`] an `openai` backend reports them to.
//!
//! Backends return `'static` boxed futures so that actors can drive them without borrowing.
//! Every failure is a typed [`LlmError`]; nothing a server sends can panic the runtime.

pub mod openai;
pub mod ratelimit;
pub mod sim;

pub use ratelimit::{RateLimitInfo, RateLimitObserver};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt (the agent's role).
    System,
    /// Task input and other text addressed to the model.
    User,
    /// The model's own reply.
    Assistant,
    /// The result of a tool call, answering `tool_call_id`.
    Tool,
}

/// One tool call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Id chosen by the backend; the tool result answers it.
    pub id: String,
    /// Name of the tool to call.
    pub name: String,
    /// Parsed JSON arguments. When [`invalid_arguments`](Self::invalid_arguments) is set, the
    /// raw text the model sent, as a JSON string.
    pub arguments: serde_json::Value,
    /// Set when the model's arguments could not be parsed as JSON, even leniently: a message
    /// for the model saying why (the parser's error, the first characters of the raw text,
    /// and whether the reply was cut off at `max_tokens`). Such a call must not reach the
    /// tool; the step loop answers it with this message as a tool error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_arguments: Option<String>,
}

impl ToolCall {
    /// A call with parsed arguments.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
            invalid_arguments: None,
        }
    }

    /// A call whose arguments `raw` did not parse; `message` tells the model why.
    pub fn with_invalid_arguments(
        id: impl Into<String>,
        name: impl Into<String>,
        raw: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: serde_json::Value::String(raw.into()),
            invalid_arguments: Some(message.into()),
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author of the message.
    pub role: Role,
    /// Text content (may be empty for an assistant message that only calls tools).
    pub content: String,
    /// Tool calls requested by an assistant message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }
    /// An assistant message with plain text.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }
    /// A tool result answering `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
    fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A tool as the model sees it: name, description and JSON-schema of its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Tool name, unique within an agent's grant.
    pub name: String,
    /// One-line description for the model.
    pub description: String,
    /// JSON schema (`{"type": "object", ...}`) of the arguments.
    pub parameters: serde_json::Value,
}

/// Who is asking, for tracing and for the simulator's deterministic choices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestMeta {
    /// Agent name from the config.
    pub agent: String,
    /// Task key (`workflow/task`).
    pub task: String,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// Step number within the attempt, starting at 0.
    pub step: u32,
    /// The backend replica that serves the call (chosen by the KV-cache pool; 0 when the
    /// backend has one replica). Out-of-range values are taken modulo the replica count.
    #[serde(default)]
    pub replica: usize,
}

/// One chat-completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The conversation so far, system prompt first.
    pub messages: Vec<ChatMessage>,
    /// Tools the model may call (shared: the same definitions go with every call of an agent).
    pub tools: Arc<[ToolSpec]>,
    /// Cap on completion tokens, if any.
    pub max_tokens: Option<u32>,
    /// Who is asking.
    pub meta: RequestMeta,
    /// The prompt's token ids in the KV-cache layout (the sequence
    /// [`PromptEncoder::encode`](crate::kvcache::PromptEncoder::encode) produces), when the
    /// caller already has them: the step core assembles them from the ids its pages cached
    /// when they were counted, so routers and simulated prefix caches do not encode the
    /// prompt again. `None`: whoever needs them encodes the messages.
    pub encoded: Option<Arc<[u32]>>,
}

/// Token usage reported for one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Prompt tokens served from the replica's prefix cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`; 0 when the server does not say).
    #[serde(default)]
    pub cached_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Each figure minus `other`'s, never below zero.
    pub fn saturating_sub(self, other: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_sub(other.prompt_tokens),
            completion_tokens: self
                .completion_tokens
                .saturating_sub(other.completion_tokens),
            cached_tokens: self.cached_tokens.saturating_sub(other.cached_tokens),
        }
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.prompt_tokens += rhs.prompt_tokens;
        self.completion_tokens += rhs.completion_tokens;
        self.cached_tokens += rhs.cached_tokens;
    }
}

/// A backend's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant message: text, tool calls, or both.
    pub message: ChatMessage,
    /// Token usage of this call.
    pub usage: Usage,
    /// Why generation stopped (`stop`, `tool_calls`, `length`, ...).
    pub finish_reason: String,
}

/// Why an LLM call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// No reply within the backend's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// HTTP 429. Retryable; `retry_after` honours the server's `Retry-After`.
    #[error("rate limited (HTTP 429){}: {message}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited {
        /// Delay the server asked for, if it sent `Retry-After`.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// HTTP 5xx. Retryable; `retry_after` honours the server's `Retry-After`.
    #[error("server error (HTTP {status}){}: {message}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    Server {
        /// HTTP status.
        status: u16,
        /// Delay the server asked for, if it sent `Retry-After`.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// HTTP 4xx other than 429. Final: retrying the same request cannot help.
    #[error("request rejected (HTTP {status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The reply was not a valid chat completion.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// Connection-level failure (refused, reset, DNS).
    #[error("transport error: {0}")]
    Transport(String),
    /// The API key environment variable is unset or empty.
    #[error("environment variable {0} holding the API key is not set")]
    MissingApiKey(String),
    /// A fault injected by the simulator.
    #[error("simulated fault: {0}")]
    Injected(String),
}

impl LlmError {
    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::Timeout(_)
                | LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Transport(_)
                | LlmError::Injected(_)
                | LlmError::Malformed(_)
        )
    }

    /// Whether the server said it is overloaded (HTTP 429 or 503): an adaptive concurrency
    /// limit backs off.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. } | LlmError::Server { status: 503, .. }
        )
    }

    /// The delay the server asked for before the next try, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } | LlmError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Short, bounded label for metrics (`outcome` label); see
    /// [`LlmOutcome`](crate::events::LlmOutcome).
    pub fn outcome_label(&self) -> &'static str {
        crate::events::LlmOutcome::from(self).label()
    }
}

/// An LLM backend: one chat-completion call at a time per future, many futures in flight.
pub trait LlmBackend: Send + Sync + fmt::Debug {
    /// Backend name from the config.
    fn name(&self) -> &str;
    /// `"openai"` or `"sim"`; used as a metric label.
    fn kind(&self) -> &'static str;
    /// Whether this backend is a simulator (run summaries say so).
    fn is_simulated(&self) -> bool;
    /// Sends one request. The future is `'static` and may be dropped to cancel.
    fn chat(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>>;
}

/// Approximate token count used where no tokenizer is configured: one token per ~4 bytes of
/// text, at least one per word-like run. Deterministic and cheap; the context pager replaces it
/// with a real tokenizer.
pub fn approx_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let words = text.split_whitespace().count() as u64;
    let by_bytes = (text.len() as u64).div_ceil(4);
    words.max(by_bytes)
}

/// Approximate prompt tokens of a whole conversation (4 tokens of framing per message).
pub fn approx_prompt_tokens(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| {
            4 + approx_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| approx_tokens(&c.name) + approx_tokens(&c.arguments.to_string()))
                    .sum::<u64>()
        })
        .sum()
}
