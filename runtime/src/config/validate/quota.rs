//! Validation of `runtime.scheduling`, every `quotas` section, and the backends' `price` and
//! `limits`: every number in range, every limit meaningful, with the entity and its line.

use super::*;
use crate::config::quota::*;

impl Validator<'_> {
    pub(super) fn scheduling(&mut self, s: &raw::RawScheduling, max: usize) -> SchedulingSpec {
        let at = At::Key("scheduling");
        if s.las_quantum_tokens == 0 {
            self.err(
                at,
                "runtime.scheduling.las_quantum_tokens must be at least 1",
            );
        }
        let preemption = s.preemption.as_ref().map(|p| {
            let at = At::Key("preemption");
            if p.slice_steps.is_none() && p.slice_secs.is_none() {
                self.err(
                    at,
                    "runtime.scheduling.preemption needs slice_steps, slice_secs or both",
                );
            }
            if p.slice_steps == Some(0) {
                self.err(
                    at,
                    "runtime.scheduling.preemption.slice_steps must be at least 1",
                );
            }
            if let Some(v) = p.slice_secs.filter(|&v| !positive_secs(v)) {
                self.err(
                    at,
                    format!("runtime.scheduling.preemption.slice_secs must be > 0, got {v}"),
                );
            }
            if p.priority_gap > 100 {
                self.err(
                    at,
                    format!(
                        "runtime.scheduling.preemption.priority_gap must be within 0..=100, got {}",
                        p.priority_gap
                    ),
                );
            }
            PreemptionSpec {
                slice_steps: p.slice_steps,
                slice: p.slice_secs.map(secs),
                priority_gap: p.priority_gap,
            }
        });
        let adaptive = s.adaptive_concurrency.as_ref().map(|a| {
            let at = At::Key("adaptive_concurrency");
            if a.min_concurrency == 0 || a.min_concurrency as usize > max {
                self.err(
                    at,
                    format!(
                        "runtime.scheduling.adaptive_concurrency.min_concurrency must be within \
                         1..=max_concurrency ({max}), got {}",
                        a.min_concurrency
                    ),
                );
            }
            for (name, low, high) in [
                ("cpu", a.cpu_low, a.cpu_high),
                ("memory", a.memory_low, a.memory_high),
            ] {
                let fraction = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
                if !fraction(low) || !fraction(high) || low >= high {
                    self.err(
                        at,
                        format!(
                            "runtime.scheduling.adaptive_concurrency: {name}_low ({low}) and \
                             {name}_high ({high}) must be fractions within (0, 1] with low < high"
                        ),
                    );
                }
            }
            AdaptiveConcurrency {
                min_concurrency: (a.min_concurrency as usize).clamp(1, max.max(1)),
                cpu_high: a.cpu_high,
                cpu_low: a.cpu_low,
                memory_high: a.memory_high,
                memory_low: a.memory_low,
            }
        });
        SchedulingSpec {
            policy: match s.policy {
                raw::RawSchedPolicy::Priority => SchedPolicy::Priority,
                raw::RawSchedPolicy::FairShare => SchedPolicy::FairShare,
                raw::RawSchedPolicy::LeastAttainedService => SchedPolicy::LeastAttainedService,
            },
            fair_share_by: match s.fair_share_by {
                raw::RawShareBy::Agent => ShareBy::Agent,
                raw::RawShareBy::Workflow => ShareBy::Workflow,
            },
            las_quantum_tokens: s.las_quantum_tokens.max(1),
            preemption,
            adaptive,
        }
    }

    /// A `quotas` section; `what` names it in messages (`runtime.quotas`, `quotas`).
    pub(super) fn quotas(&mut self, at: At<'_>, q: &raw::RawQuotas, what: &str) -> QuotaSpec {
        QuotaSpec {
            rate: q
                .rate
                .as_ref()
                .map(|r| self.rate(at, r, &format!("{what}.rate"))),
            budget: q
                .budget
                .as_ref()
                .map(|b| self.budget(at, b, &format!("{what}.budget"))),
        }
    }

    pub(super) fn rate(&mut self, at: At<'_>, r: &raw::RawRate, what: &str) -> RateLimitSpec {
        if r.tokens.is_none() && r.requests.is_none() {
            self.err(at, format!("{what} needs tokens, requests or both"));
        }
        for (name, v) in [
            ("tokens", r.tokens),
            ("requests", r.requests),
            ("burst_tokens", r.burst_tokens),
            ("burst_requests", r.burst_requests),
        ] {
            if v == Some(0) {
                self.err(at, format!("{what}.{name} must be at least 1"));
            }
        }
        if r.burst_tokens.is_some() && r.tokens.is_none() {
            self.err(at, format!("{what}.burst_tokens is set but tokens is not"));
        }
        if r.burst_requests.is_some() && r.requests.is_none() {
            self.err(
                at,
                format!("{what}.burst_requests is set but requests is not"),
            );
        }
        if !positive_secs(r.window_secs) {
            self.err(
                at,
                format!(
                    "{what}.window_secs must be > 0 and at most 31536000, got {}",
                    r.window_secs
                ),
            );
        }
        RateLimitSpec {
            tokens: r.tokens.filter(|&v| v > 0),
            requests: r.requests.filter(|&v| v > 0),
            window: if positive_secs(r.window_secs) {
                secs(r.window_secs)
            } else {
                Duration::from_secs(60)
            },
            burst_tokens: r.burst_tokens.filter(|&v| v > 0),
            burst_requests: r.burst_requests.filter(|&v| v > 0),
        }
    }

    pub(super) fn budget(&mut self, at: At<'_>, b: &raw::RawBudget, what: &str) -> BudgetLimitSpec {
        if b.usd.is_none() && b.tokens.is_none() {
            self.err(at, format!("{what} needs usd, tokens or both"));
        }
        if let Some(v) = b.usd.filter(|v| !(v.is_finite() && *v >= 0.0)) {
            self.err(at, format!("{what}.usd must be a number >= 0, got {v}"));
        }
        if b.tokens == Some(0) {
            self.err(at, format!("{what}.tokens must be at least 1"));
        }
        if !(b.soft.is_finite() && b.soft > 0.0 && b.soft <= 1.0) {
            self.err(
                at,
                format!(
                    "{what}.soft must be a fraction within (0, 1], got {}",
                    b.soft
                ),
            );
        }
        BudgetLimitSpec {
            usd: b.usd.filter(|v| v.is_finite() && *v >= 0.0),
            tokens: b.tokens,
            window: match b.window {
                raw::RawBudgetWindow::Hour => BudgetWindowSpec::Hour,
                raw::RawBudgetWindow::Day => BudgetWindowSpec::Day,
                raw::RawBudgetWindow::Run => BudgetWindowSpec::Run,
            },
            soft: if b.soft.is_finite() {
                b.soft.clamp(0.0, 1.0)
            } else {
                0.8
            },
            on_exhausted: match b.on_exhausted {
                raw::RawOnExhausted::Wait => OnExhaustedSpec::Wait,
                raw::RawOnExhausted::Fail => OnExhaustedSpec::Fail,
            },
        }
    }

    /// A backend's `price` and `limits`.
    pub(super) fn backend_limits(&mut self, b: &raw::RawBackend) -> BackendLimits {
        let at = |f| At::Field(EntityKind::Backend, &b.name, None, f);
        let price = b.price.as_ref().map(|p| {
            let cached = p.cached_input.unwrap_or(p.input);
            let given = [
                Some(("input", p.input)),
                Some(("output", p.output)),
                p.cached_input.map(|c| ("cached_input", c)),
            ];
            for (name, v) in given.into_iter().flatten() {
                if !(v.is_finite() && v >= 0.0) {
                    self.err(
                        at("price"),
                        format!(
                            "price.{name} must be a number >= 0 (USD per million tokens), got {v}"
                        ),
                    );
                }
            }
            let clean = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
            PriceSpec {
                input: clean(p.input),
                output: clean(p.output),
                cached_input: clean(cached),
            }
        });
        let l = &b.limits;
        let rate = l
            .rate
            .as_ref()
            .map(|r| self.rate(at("limits"), r, "limits.rate"));
        if l.max_concurrency == Some(0) {
            self.err(at("limits"), "limits.max_concurrency must be at least 1");
        }
        if l.min_concurrency == 0 || l.max_concurrency.is_some_and(|m| l.min_concurrency > m) {
            self.err(
                at("limits"),
                format!(
                    "limits.min_concurrency must be within 1..=max_concurrency, got {}",
                    l.min_concurrency
                ),
            );
        }
        BackendLimits {
            price,
            rate,
            max_concurrency: l.max_concurrency.filter(|&m| m > 0).map(|m| m as usize),
            adaptive: l.adaptive,
            min_concurrency: (l.min_concurrency.max(1)) as usize,
            learn_from_headers: l.learn_from_headers,
        }
    }

    /// A fair-share weight.
    pub(super) fn weight(&mut self, at: At<'_>, w: f64) -> f64 {
        if !(w.is_finite() && w > 0.0 && w <= 1_000_000.0) {
            self.err(
                at,
                format!("weight must be > 0 and at most 1000000, got {w}"),
            );
            return 1.0;
        }
        w
    }
}
