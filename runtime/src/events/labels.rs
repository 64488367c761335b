//! Label values of the metrics, as enums: every value a label can take is listed once here (or,
//! for domain states such as [`TaskState`](crate::model::TaskState) and
//! [`RouteOutcome`](crate::kvcache::RouteOutcome), beside the type it labels), never repeated as
//! a string literal at a call site.

use crate::context::PagerError;
use crate::kvcache::RoutingPolicy;
use crate::llm::LlmError;
use crate::tools::{ToolError, BUILTIN_TOOLS};

/// `outcome` of [`LLM_REQUESTS`](super::names::LLM_REQUESTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LlmOutcome {
    /// The backend answered.
    Ok,
    /// No reply within the backend's timeout.
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// HTTP 4xx other than 429.
    Rejected,
    /// The reply was not a valid chat completion.
    Malformed,
    /// Connection-level failure.
    Transport,
    /// The API key variable is unset.
    MissingApiKey,
    /// A fault injected by the simulator.
    Injected,
    /// The call never returned: the attempt timed out or panicked while it was in flight.
    Abandoned,
}

impl LlmOutcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LlmOutcome::Ok => "ok",
            LlmOutcome::Timeout => "timeout",
            LlmOutcome::RateLimited => "rate_limited",
            LlmOutcome::ServerError => "server_error",
            LlmOutcome::Rejected => "rejected",
            LlmOutcome::Malformed => "malformed",
            LlmOutcome::Transport => "transport",
            LlmOutcome::MissingApiKey => "missing_api_key",
            LlmOutcome::Injected => "injected",
            LlmOutcome::Abandoned => "abandoned",
        }
    }
}

impl From<&LlmError> for LlmOutcome {
    fn from(e: &LlmError) -> Self {
        match e {
            LlmError::Timeout(_) => LlmOutcome::Timeout,
            LlmError::RateLimited { .. } => LlmOutcome::RateLimited,
            LlmError::Server { .. } => LlmOutcome::ServerError,
            LlmError::Rejected { .. } => LlmOutcome::Rejected,
            LlmError::Malformed(_) => LlmOutcome::Malformed,
            LlmError::Transport(_) => LlmOutcome::Transport,
            LlmError::MissingApiKey(_) => LlmOutcome::MissingApiKey,
            LlmError::Injected(_) => LlmOutcome::Injected,
        }
    }
}

/// `outcome` of [`TOOL_CALLS`](super::names::TOOL_CALLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolOutcome {
    /// The tool returned a result.
    Ok,
    /// The agent's config does not grant the tool.
    NotGranted,
    /// No tool by that name.
    Unknown,
    /// Bad arguments.
    InvalidArguments,
    /// A path refused by the sandbox.
    PathRefused,
    /// A command refused by the allowlist.
    CommandRefused,
    /// The tool ran past its time limit.
    Timeout,
    /// An I/O or execution failure.
    Failed,
    /// A command stopped by the sandbox.
    SandboxDenied,
}

impl ToolOutcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::NotGranted => "not_granted",
            ToolOutcome::Unknown => "unknown",
            ToolOutcome::InvalidArguments => "invalid_arguments",
            ToolOutcome::PathRefused => "path_refused",
            ToolOutcome::CommandRefused => "command_refused",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::Failed => "failed",
            ToolOutcome::SandboxDenied => "sandbox_denied",
        }
    }
}

impl From<&ToolError> for ToolOutcome {
    fn from(e: &ToolError) -> Self {
        match e {
            ToolError::NotGranted(_) => ToolOutcome::NotGranted,
            ToolError::Unknown(_) => ToolOutcome::Unknown,
            ToolError::InvalidArguments(_) => ToolOutcome::InvalidArguments,
            ToolError::PathRefused(_) => ToolOutcome::PathRefused,
            ToolError::CommandRefused(_) => ToolOutcome::CommandRefused,
            ToolError::Timeout(_) => ToolOutcome::Timeout,
            ToolError::Failed(_) => ToolOutcome::Failed,
            ToolError::SandboxDenied(_) => ToolOutcome::SandboxDenied,
        }
    }
}

/// The bounded `tool` label: a built-in tool's name, or `unknown` for any other name (models
/// invent tool names; a label must not grow with them).
pub fn tool_label(name: &str) -> &'static str {
    BUILTIN_TOOLS
        .iter()
        .copied()
        .find(|t| *t == name)
        .unwrap_or("unknown")
}

/// `outcome` of [`SCHED_TASK_ATTEMPTS`](super::names::SCHED_TASK_ATTEMPTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The attempt produced an output.
    Succeeded,
    /// The attempt failed, expired or lost its agent.
    Failed,
}

impl AttemptOutcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
        }
    }
}

/// `kind` of [`BUS_SENT`](super::names::BUS_SENT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusKind {
    /// A message to one agent.
    Direct,
    /// A message to a topic's subscribers.
    Publish,
}

impl BusKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            BusKind::Direct => "direct",
            BusKind::Publish => "publish",
        }
    }
}

/// `reason` of [`BUS_DROPPED`](super::names::BUS_DROPPED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusDropReason {
    /// The recipient's inbox was at its bound.
    InboxFull,
    /// No agent by that name.
    NoSuchAgent,
    /// A publish to a topic nobody subscribes to.
    NoSubscribers,
}

impl BusDropReason {
    /// Every reason (zero series are registered for each).
    pub const ALL: [BusDropReason; 3] = [
        BusDropReason::InboxFull,
        BusDropReason::NoSuchAgent,
        BusDropReason::NoSubscribers,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            BusDropReason::InboxFull => "inbox_full",
            BusDropReason::NoSuchAgent => "no_such_agent",
            BusDropReason::NoSubscribers => "no_subscribers",
        }
    }
}

/// `outcome` of [`PAGER_REQUESTS`](super::names::PAGER_REQUESTS), as agents see their requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PagerOutcome {
    /// The pager answered.
    Ok,
    /// The context budget cannot hold the pinned pages.
    Budget,
    /// The store failed.
    Store,
    /// The pager could not serve the request (restarting, overloaded, not running).
    Unavailable,
    /// Any other refusal (isolation, unknown context).
    Other,
}

impl PagerOutcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            PagerOutcome::Ok => "ok",
            PagerOutcome::Budget => "budget",
            PagerOutcome::Store => "store",
            PagerOutcome::Unavailable => "unavailable",
            PagerOutcome::Other => "other",
        }
    }
}

impl From<&PagerError> for PagerOutcome {
    fn from(e: &PagerError) -> Self {
        match e {
            PagerError::BudgetTooSmall { .. } => PagerOutcome::Budget,
            PagerError::Store(_) => PagerOutcome::Store,
            _ => PagerOutcome::Other,
        }
    }
}

/// `policy` of [`KV_ROUTING_DECISIONS`](super::names::KV_ROUTING_DECISIONS): who chose the
/// replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoutedBy {
    /// The pool, with the backend's routing policy.
    Policy(RoutingPolicy),
    /// The client on its own (round robin), because the pool could not be asked.
    Fallback,
}

impl RoutedBy {
    /// Every value (zero series are registered for each).
    pub const ALL: [RoutedBy; 4] = [
        RoutedBy::Policy(RoutingPolicy::RoundRobin),
        RoutedBy::Policy(RoutingPolicy::LeastLoaded),
        RoutedBy::Policy(RoutingPolicy::PrefixAware),
        RoutedBy::Fallback,
    ];

    /// The label value: the policy's name, or `fallback`.
    pub fn label(self) -> &'static str {
        match self {
            RoutedBy::Policy(p) => p.name(),
            RoutedBy::Fallback => "fallback",
        }
    }
}

/// `state` of [`KV_BLOCKS`](super::names::KV_BLOCKS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvBlockState {
    /// Referenced by live sequences.
    Active,
    /// Unreferenced but holding reusable KV.
    Cached,
    /// Empty.
    Free,
}

impl KvBlockState {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            KvBlockState::Active => "active",
            KvBlockState::Cached => "cached",
            KvBlockState::Free => "free",
        }
    }
}

/// Which way pages moved between the resident set and the store; picks the trace kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveDirection {
    /// Out of the resident set (`page_evicted`).
    Evicted,
    /// Back in from the store (`page_fault`).
    Faulted,
}

impl MoveDirection {
    /// The trace event kind.
    pub fn trace_kind(self) -> &'static str {
        match self {
            MoveDirection::Evicted => "page_evicted",
            MoveDirection::Faulted => "page_fault",
        }
    }
}

/// A store operation, picking the histogram it is timed into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOp {
    /// A write transaction ([`STORE_WRITE_DURATION`](super::names::STORE_WRITE_DURATION)).
    Write,
    /// A read ([`STORE_READ_DURATION`](super::names::STORE_READ_DURATION)).
    Read,
}

/// `kind` of [`SUPERVISOR_RESTARTS`](super::names::SUPERVISOR_RESTARTS): every supervised actor
/// kind, for the zero series. [`ChildRestarted`](super::ChildRestarted) takes the kind the
/// supervisor's child spec names.
pub const SUPERVISED_KINDS: &[&str] = &[
    "agent",
    "scheduler",
    "bus",
    "kv_pool",
    "pager",
    "monitor",
    "agent_supervisor",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn error_labels_match_the_error_types() {
        assert_eq!(
            LlmOutcome::from(&LlmError::Timeout(Duration::from_secs(1))).label(),
            "timeout"
        );
        assert_eq!(
            LlmOutcome::from(&LlmError::Server {
                status: 503,
                retry_after: None,
                message: String::new()
            })
            .label(),
            "server_error"
        );
        assert_eq!(
            ToolOutcome::from(&ToolError::NotGranted("x".into())).label(),
            "not_granted"
        );
        assert_eq!(tool_label("calculator"), "calculator");
        assert_eq!(tool_label("made_up"), "unknown");
        assert_eq!(RoutedBy::Fallback.label(), "fallback");
        assert_eq!(
            RoutedBy::Policy(RoutingPolicy::PrefixAware).label(),
            "prefix_aware"
        );
    }
}
