//! Events of quotas, rate limits, fair share and preemption: calls held back or charged,
//! budget limits reached, attempts that gave way, concurrency limits moved.

use std::time::Duration;

use serde_json::json;

use super::names as m;
use crate::model::{InstanceId, TaskKey};
use crate::trace::Trace;

/// A running attempt gave way at a step boundary; the same attempt continues later.
#[derive(Debug)]
pub struct TaskYielded<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The instance that ran it.
    pub instance: &'a InstanceId,
    /// The attempt (it keeps its number).
    pub attempt: u32,
    /// Why.
    pub reason: &'a str,
    /// Preempted by a better task (`false`: waiting for a budget window).
    pub preempted: bool,
}

impl TaskYielded<'_> {
    /// Counts it, logs it, traces it.
    pub fn emit(&self, trace: &Trace) {
        let kind = if self.preempted {
            "preempted"
        } else {
            "budget_wait"
        };
        metrics::counter!(m::SCHED_PREEMPTIONS, "agent" => self.instance.agent.clone(), "kind" => kind)
            .increment(1);
        tracing::info!(task = %self.task, instance = %self.instance, attempt = self.attempt, kind, reason = self.reason, "attempt gave way");
        trace.emit(
            "task_yielded",
            json!({
                "task": self.task.to_string(),
                "instance": self.instance.to_string(),
                "attempt": self.attempt,
                "kind": kind,
                "reason": self.reason,
            }),
        );
    }
}

/// A running attempt was asked to give way (`reason: Some`), or the request was withdrawn.
#[derive(Debug)]
pub struct PreemptionRequested<'a> {
    /// The task.
    pub task: &'a TaskKey,
    /// The instance running it.
    pub instance: &'a InstanceId,
    /// Why, or `None`: withdrawn.
    pub reason: Option<&'a str>,
}

impl PreemptionRequested<'_> {
    /// Traces it (no metric: the preemption itself is counted when it happens).
    pub fn emit(&self, trace: &Trace) {
        tracing::debug!(task = %self.task, instance = %self.instance, reason = ?self.reason, "preemption requested");
        trace.emit(
            "preemption_requested",
            json!({
                "task": self.task.to_string(),
                "instance": self.instance.to_string(),
                "reason": self.reason,
                "withdrawn": self.reason.is_none(),
            }),
        );
    }
}

/// Which limit held a call back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleLimit {
    /// A token or request bucket.
    Rate,
    /// The calls in flight.
    Concurrency,
}

impl ThrottleLimit {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ThrottleLimit::Rate => "rate",
            ThrottleLimit::Concurrency => "concurrency",
        }
    }
}

/// An LLM call was held back by a limit, then admitted. No trace line (too frequent).
#[derive(Debug)]
pub struct CallThrottled<'a> {
    /// The scope whose limit held it (`global`, `backend:x`, `agent:x`, `workflow:x`).
    pub scope: &'a str,
    /// Which limit.
    pub limit: ThrottleLimit,
    /// The backend called.
    pub backend: &'a str,
    /// How long the call waited in all.
    pub waited: Duration,
}

impl CallThrottled<'_> {
    /// Counts the wait; a wait on the backend's own rate limit is a 429 avoided.
    pub fn emit(&self) {
        metrics::counter!(m::QUOTA_THROTTLED, "scope" => self.scope.to_owned(), "limit" => self.limit.label())
            .increment(1);
        metrics::histogram!(m::QUOTA_THROTTLE_WAIT, "scope" => self.scope.to_owned())
            .record(self.waited.as_secs_f64());
        if self.limit == ThrottleLimit::Rate && self.scope.starts_with("backend:") {
            metrics::counter!(m::RATELIMIT_AVOIDED, "backend" => self.backend.to_owned())
                .increment(1);
        }
    }
}

/// An LLM call was settled: what the server counted and what it cost.
#[derive(Debug)]
pub struct CallCharged<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The backend.
    pub backend: &'a str,
    /// Prompt + completion tokens.
    pub tokens: u64,
    /// US dollars by the backend's price table.
    pub usd: f64,
    /// The server answered 429 (or 503).
    pub overloaded: bool,
}

impl CallCharged<'_> {
    /// Counts tokens, dollars and 429s.
    pub fn emit(&self) {
        let labels = [
            ("agent", self.agent.to_owned()),
            ("backend", self.backend.to_owned()),
        ];
        metrics::counter!(m::QUOTA_TOKENS, &labels).increment(self.tokens);
        if self.usd > 0.0 {
            metrics::gauge!(m::QUOTA_USD, &labels).increment(self.usd);
        }
        if self.overloaded {
            metrics::counter!(m::RATELIMIT_RECEIVED, "backend" => self.backend.to_owned())
                .increment(1);
        }
    }
}

/// A budget's soft or hard limit was reached.
#[derive(Debug)]
pub struct BudgetLimitReached<'a> {
    /// The scope.
    pub scope: &'a str,
    /// `hour`, `day` or `run`.
    pub window: &'a str,
    /// Soft (a warning) or hard (calls refused).
    pub soft: bool,
    /// Spent so far in the window.
    pub spent_usd: f64,
    /// Tokens so far in the window.
    pub spent_tokens: u64,
}

impl BudgetLimitReached<'_> {
    /// Counts it, warns, traces it.
    pub fn emit(&self, trace: &Trace) {
        let level = if self.soft { "soft" } else { "hard" };
        metrics::counter!(m::QUOTA_BUDGET_LIMITS, "scope" => self.scope.to_owned(), "level" => level)
            .increment(1);
        tracing::warn!(
            scope = self.scope,
            window = self.window,
            level,
            spent_usd = self.spent_usd,
            spent_tokens = self.spent_tokens,
            "budget limit reached"
        );
        trace.emit(
            "budget_limit",
            json!({
                "scope": self.scope,
                "window": self.window,
                "level": level,
                "spent_usd": self.spent_usd,
                "spent_tokens": self.spent_tokens,
            }),
        );
    }
}

/// A server's rate-limit headers lowered a backend's bucket.
#[derive(Debug)]
pub struct ServerLimitLearned<'a> {
    /// The backend.
    pub backend: &'a str,
}

impl ServerLimitLearned<'_> {
    /// Counts it.
    pub fn emit(&self) {
        metrics::counter!(m::RATELIMIT_LEARNED, "backend" => self.backend.to_owned()).increment(1);
    }
}

/// What is left of one limit (gauge).
#[derive(Debug)]
pub struct QuotaRemaining<'a> {
    /// The scope.
    pub scope: &'a str,
    /// `tokens`, `requests`, `budget_usd` or `budget_tokens`.
    pub kind: &'static str,
    /// What is left.
    pub value: f64,
}

impl QuotaRemaining<'_> {
    /// Sets the gauge.
    pub fn emit(&self) {
        metrics::gauge!(m::QUOTA_REMAINING, "scope" => self.scope.to_owned(), "kind" => self.kind)
            .set(self.value);
    }
}

/// A concurrency limit in force now, and what runs under it.
#[derive(Debug)]
pub struct ConcurrencySampled<'a> {
    /// `global` or `backend:NAME`.
    pub scope: &'a str,
    /// The limit.
    pub limit: usize,
    /// Running now.
    pub current: usize,
}

impl ConcurrencySampled<'_> {
    /// Sets both gauges.
    pub fn emit(&self) {
        metrics::gauge!(m::CONCURRENCY_LIMIT, "scope" => self.scope.to_owned())
            .set(self.limit as f64);
        metrics::gauge!(m::CONCURRENCY_CURRENT, "scope" => self.scope.to_owned())
            .set(self.current as f64);
    }
}

/// A concurrency limit moved (resource pressure, or the adaptive backend limit).
#[derive(Debug)]
pub struct ConcurrencyChanged<'a> {
    /// `global` or `backend:NAME`.
    pub scope: &'a str,
    /// Before.
    pub from: usize,
    /// After.
    pub to: usize,
    /// Why.
    pub reason: &'a str,
}

impl ConcurrencyChanged<'_> {
    /// Sets the gauge, logs, traces.
    pub fn emit(&self, trace: &Trace) {
        metrics::gauge!(m::CONCURRENCY_LIMIT, "scope" => self.scope.to_owned()).set(self.to as f64);
        tracing::info!(
            scope = self.scope,
            from = self.from,
            to = self.to,
            reason = self.reason,
            "concurrency limit changed"
        );
        trace.emit(
            "concurrency_changed",
            json!({"scope": self.scope, "from": self.from, "to": self.to, "reason": self.reason}),
        );
    }
}

/// Tokens served to a fair-share flow (gauge).
#[derive(Debug)]
pub struct FairShareServed<'a> {
    /// The flow (agent or workflow).
    pub flow: &'a str,
    /// Tokens served so far.
    pub tokens: u64,
}

impl FairShareServed<'_> {
    /// Sets the gauge.
    pub fn emit(&self) {
        metrics::gauge!(m::FAIR_SHARE_TOKENS, "flow" => self.flow.to_owned())
            .set(self.tokens as f64);
    }
}
