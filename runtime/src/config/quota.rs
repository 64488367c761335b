//! The validated `scheduling`, `quotas`, `price` and `limits` sections: how ready tasks are
//! ordered, when a running task gives way, and what the fleet may spend.
//!
//! These are the user's settings; the policy cores (`crate::policy::{quota, fair, las,
//! governor, aimd}`) hold the state they drive.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Token and request buckets over a window (`rate: (...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimitSpec {
    /// Tokens per window (prompt + `max_tokens` reserved before a call, reconciled after).
    pub tokens: Option<u64>,
    /// Requests per window.
    pub requests: Option<u64>,
    /// The window (a minute unless the config says otherwise).
    pub window: Duration,
    /// Most tokens taken at once; `None`: a tenth of `tokens`.
    pub burst_tokens: Option<u64>,
    /// Most requests started at once; `None`: a tenth of `requests`.
    pub burst_requests: Option<u64>,
}

/// A budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetWindowSpec {
    /// Fixed UTC hours.
    Hour,
    /// Fixed UTC days.
    Day,
    /// The run's whole life.
    Run,
}

/// What a hard budget limit does to the task that meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhaustedSpec {
    /// The task gives way and waits for the window to reset, its attempt kept.
    Wait,
    /// The attempt fails for good with "budget exhausted".
    Fail,
}

/// A spending limit (`budget: (...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimitSpec {
    /// US dollars per window.
    pub usd: Option<f64>,
    /// Tokens (prompt + completion) per window.
    pub tokens: Option<u64>,
    /// The window.
    pub window: BudgetWindowSpec,
    /// Fraction of the limit that raises the soft-limit warning.
    pub soft: f64,
    /// What the hard limit does.
    pub on_exhausted: OnExhaustedSpec,
}

/// The quotas of one scope (the runtime, an agent, a workflow).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaSpec {
    /// Token and request buckets.
    #[serde(default)]
    pub rate: Option<RateLimitSpec>,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<BudgetLimitSpec>,
}

impl QuotaSpec {
    /// Whether the scope has no limit at all.
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.budget.is_none()
    }
}

/// US dollars per million tokens of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceSpec {
    /// Prompt tokens not served from the cache.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens served from the cache.
    pub cached_input: f64,
}

/// What a backend's server allows (`limits: (...)`), and its price.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendLimits {
    /// Prices for budgets; `None`: calls to this backend cost nothing in USD.
    pub price: Option<PriceSpec>,
    /// The server's token and request buckets.
    pub rate: Option<RateLimitSpec>,
    /// Most calls in flight; `None`: no limit.
    pub max_concurrency: Option<usize>,
    /// Whether the limit adapts (AIMD) to 429s and latency under `max_concurrency`.
    pub adaptive: bool,
    /// The adaptive limit's floor.
    pub min_concurrency: usize,
    /// With no `rate`, learn the server's buckets from its rate-limit headers.
    pub learn_from_headers: bool,
}

/// How ready tasks are ordered across agents (and workflows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedPolicy {
    /// Effective priority (agent priority + task boost + aging), FIFO among equals.
    #[default]
    Priority,
    /// Weighted fair share of the tokens served, by agent or by workflow.
    FairShare,
    /// The workflow that used the fewest tokens so far goes first (program-level LAS).
    LeastAttainedService,
}

impl SchedPolicy {
    /// The config spelling.
    pub fn label(self) -> &'static str {
        match self {
            SchedPolicy::Priority => "priority",
            SchedPolicy::FairShare => "fair_share",
            SchedPolicy::LeastAttainedService => "least_attained_service",
        }
    }
}

/// What fair share divides between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareBy {
    /// Agents, weighted by `agents[].weight`.
    #[default]
    Agent,
    /// Workflows, weighted by `workflows[].weight`.
    Workflow,
}

/// When a running task gives way to a better one.
#[derive(Debug, Clone, PartialEq)]
pub struct PreemptionSpec {
    /// Steps an attempt may run before it can be preempted; `None`: no step slice.
    pub slice_steps: Option<u32>,
    /// Time an attempt may run before it can be preempted; `None`: no time slice.
    pub slice: Option<Duration>,
    /// How many priority points better the waiting task must be.
    pub priority_gap: u32,
}

/// Concurrency lowered under CPU and memory pressure, within bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConcurrency {
    /// The floor.
    pub min_concurrency: usize,
    /// CPU use (0..1) above which concurrency is lowered.
    pub cpu_high: f64,
    /// CPU use below which it is raised back.
    pub cpu_low: f64,
    /// Memory use (0..1) above which concurrency is lowered.
    pub memory_high: f64,
    /// Memory use below which it is raised back.
    pub memory_low: f64,
}

/// `runtime.scheduling`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulingSpec {
    /// The ordering policy.
    pub policy: SchedPolicy,
    /// What fair share divides between.
    pub fair_share_by: ShareBy,
    /// First service level of `least_attained_service`, tokens (levels double from there).
    pub las_quantum_tokens: u64,
    /// Time slices and preemption; `None`: a running task is never preempted.
    pub preemption: Option<PreemptionSpec>,
    /// Resource-aware concurrency; `None`: `max_concurrency` holds whatever the load.
    pub adaptive: Option<AdaptiveConcurrency>,
}
