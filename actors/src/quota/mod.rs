//! The quota gate: every LLM call passes it before it is sent.
//!
//! One [`QuotaBook`] (rate buckets, budgets, prices, calls in flight) for the whole process,
//! behind a mutex held for a few microseconds per call: no actor round trip on the hot path.
//! A call asks for admission with its exact prompt tokens and `max_tokens`:
//! - granted: the reservation (prompt + `max_tokens`, and the estimated USD) is taken from
//!   every scope that applies (global, backend, agent, workflow); when the call returns, it
//!   is reconciled with the real `usage` (the unused part given back), or given back whole if
//!   the call never reached the server;
//! - held back by a rate bucket or a concurrency limit: the call waits (time not counted
//!   against the attempt), woken when the bucket refills or a call ends;
//! - a budget exhausted: refused; the step core fails the attempt ("budget exhausted") or
//!   yields it until the window resets, as the budget's `on_exhausted` says.
//!
//! The gate also learns from the server: the `openai` backend hands it every reply's
//! `x-ratelimit-*` and `Retry-After` headers ([`RateLimitObserver`]), which lower the
//! backend's buckets before the server starts refusing; and each backend with
//! `limits.max_concurrency` has an adaptive limit ([`AimdLimit`]) that halves on 429/503 and
//! grows back additively.
//!
//! Budget counters are durable: the scheduler writes the changed ones with its state batches
//! ([`QuotaGate::take_dirty_rows`]) and boot restores them ([`QuotaGate::restore`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentos_runtime::agent::{CallGate, CallPermit, GateRefusal, GateRequest};
use agentos_runtime::config::quota::{
    BudgetLimitSpec, BudgetWindowSpec, OnExhaustedSpec, PriceSpec, QuotaSpec, RateLimitSpec,
};
use agentos_runtime::config::{BackendKind, Config, WorkflowSpec};
use agentos_runtime::events::quota::{
    BudgetLimitReached, CallCharged, CallThrottled, ConcurrencyChanged, ConcurrencySampled,
    QuotaRemaining, ServerLimitLearned, ThrottleLimit,
};
use agentos_runtime::llm::ratelimit::{RateLimitInfo, RateLimitObserver};
use agentos_runtime::llm::Usage;
use agentos_runtime::model::InstanceId;
use agentos_runtime::policy::aimd::AimdLimit;
use agentos_runtime::policy::quota::{
    Admission, BudgetCounter, BudgetSpec, BudgetWindow, CallRequest, OnExhausted, Price, QuotaBook,
    QuotaNotice, RateSpec, ReservationId, Scope, ScopeStatus,
};
use agentos_runtime::store::QuotaRow;
use agentos_runtime::trace::Trace;
use futures::future::BoxFuture;
use tokio::sync::Notify;

/// Longest a held-back call sleeps before it looks again (a missed wake-up costs this much).
const RECHECK: Duration = Duration::from_millis(250);

/// The gate shared by every agent.
pub struct QuotaGate {
    book: Mutex<QuotaBook>,
    /// Woken whenever a reservation is released.
    released: Notify,
    /// Adaptive concurrency per backend (those with `limits.max_concurrency` and `adaptive`).
    aimd: Mutex<HashMap<String, AimdLimit>>,
    prices: HashMap<String, Price>,
    /// Backends whose buckets are learned from their headers (no `rate` configured).
    learnable: HashSet<String>,
    /// What was learned so far, per backend.
    learned: Mutex<HashMap<String, RateSpec>>,
    /// Instances whose call waits here now (their leases must not run out meanwhile).
    held: Mutex<HashSet<InstanceId>>,
    /// The run whose `run`-window budgets this gate counts.
    run_id: String,
    trace: Trace,
}

impl std::fmt::Debug for QuotaGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaGate").finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The policy form of a configured rate limit.
pub fn rate_spec(r: &RateLimitSpec) -> RateSpec {
    RateSpec {
        tokens: r.tokens,
        requests: r.requests,
        per: r.window,
        burst_tokens: r.burst_tokens,
        burst_requests: r.burst_requests,
    }
}

/// The policy form of a configured budget.
pub fn budget_spec(b: &BudgetLimitSpec) -> BudgetSpec {
    BudgetSpec {
        usd: b.usd,
        tokens: b.tokens,
        window: match b.window {
            BudgetWindowSpec::Hour => BudgetWindow::Hour,
            BudgetWindowSpec::Day => BudgetWindow::Day,
            BudgetWindowSpec::Run => BudgetWindow::Run,
        },
        soft_fraction: b.soft,
        on_exhausted: match b.on_exhausted {
            OnExhaustedSpec::Wait => OnExhausted::Wait,
            OnExhaustedSpec::Fail => OnExhausted::Fail,
        },
    }
}

fn price(p: &PriceSpec) -> Price {
    Price {
        input: p.input,
        output: p.output,
        cached_input: p.cached_input,
    }
}

/// The stored window of a counter: `hour`, `day`, or `run:<run id>` (a run's budget belongs
/// to that run, and comes back only when the same run is resumed).
fn window_label(window: BudgetWindow, run_id: &str) -> String {
    match window {
        BudgetWindow::Run => format!("run:{run_id}"),
        w => w.label().to_owned(),
    }
}

/// The window of a stored counter, if it counts for run `run_id`.
fn window_of(label: &str, run_id: &str) -> Option<BudgetWindow> {
    match label {
        "hour" => Some(BudgetWindow::Hour),
        "day" => Some(BudgetWindow::Day),
        other => (other.strip_prefix("run:") == Some(run_id)).then_some(BudgetWindow::Run),
    }
}

impl QuotaGate {
    /// The gate of `cfg`, or `None` when nothing in it limits, prices or counts calls (then
    /// the step core skips the gate altogether).
    pub fn from_config(cfg: &Config, run_id: &str, trace: Trace) -> Option<Arc<QuotaGate>> {
        let learnable: HashSet<String> = cfg
            .backends
            .iter()
            .filter(|b| {
                matches!(b.kind, BackendKind::OpenAi(_))
                    && b.limits.rate.is_none()
                    && b.limits.learn_from_headers
            })
            .map(|b| b.name.clone())
            .collect();
        if !cfg.counts_calls() {
            return None;
        }
        let now = Instant::now();
        let mut book = QuotaBook::new(now);
        let mut aimd = HashMap::new();
        let mut prices = HashMap::new();
        apply(&mut book, Scope::Global, &cfg.runtime.quotas, now);
        for b in &cfg.backends {
            let scope = Scope::Backend(b.name.clone());
            if let Some(r) = &b.limits.rate {
                book.set_rate(scope.clone(), rate_spec(r), now);
            }
            if let Some(p) = &b.limits.price {
                book.set_price(&b.name, price(p));
                prices.insert(b.name.clone(), price(p));
            }
            if let Some(max) = b.limits.max_concurrency {
                book.set_concurrency(&b.name, max);
                if b.limits.adaptive {
                    aimd.insert(
                        b.name.clone(),
                        AimdLimit::new(b.limits.min_concurrency.min(max), max),
                    );
                }
            }
        }
        for a in &cfg.agents {
            apply(&mut book, Scope::Agent(a.name.clone()), &a.quotas, now);
        }
        for w in &cfg.workflows {
            apply(&mut book, Scope::Workflow(w.name.clone()), &w.quotas, now);
        }
        Some(Arc::new(QuotaGate {
            book: Mutex::new(book),
            released: Notify::new(),
            aimd: Mutex::new(aimd),
            prices,
            learnable,
            learned: Mutex::default(),
            held: Mutex::default(),
            run_id: run_id.to_owned(),
            trace,
        }))
    }

    /// A workflow accepted at run time brings its own quotas (under its id).
    pub fn add_workflow(&self, id: &str, spec: &WorkflowSpec) {
        if !spec.quotas.is_empty() {
            apply(
                &mut self.book(),
                Scope::Workflow(id.to_owned()),
                &spec.quotas,
                Instant::now(),
            );
        }
    }

    fn book(&self) -> MutexGuard<'_, QuotaBook> {
        // Held for a few instructions, never across an await; a poisoned book still holds
        // the last figures.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every scope's limits and usage now (`GET /api/quotas`), and the gauges refreshed.
    pub fn status(&self) -> Vec<ScopeStatus> {
        let rows = self.book().status(Instant::now(), wall_ms());
        for s in &rows {
            publish_remaining(s);
            if let (Scope::Backend(_), Some(limit)) = (&s.scope, s.concurrency_limit) {
                ConcurrencySampled {
                    scope: &s.scope.key(),
                    limit,
                    current: s.in_flight,
                }
                .emit();
            }
        }
        rows
    }

    /// A budgeted scope's window and what it spent there.
    fn spent_in(&self, scope: &Scope) -> (&'static str, f64, u64) {
        self.book()
            .status(Instant::now(), wall_ms())
            .into_iter()
            .find(|s| &s.scope == scope)
            .and_then(|s| s.budget)
            .map_or(("run", 0.0, 0), |b| {
                (b.window.label(), b.spent_usd, b.spent_tokens)
            })
    }

    /// Restores budget counters read from the store (rows of a window that has passed are
    /// ignored: that window reset while the process was down).
    pub fn restore(&self, rows: &[QuotaRow]) {
        let counters: Vec<BudgetCounter> = rows
            .iter()
            .filter_map(|r| {
                Some(BudgetCounter {
                    scope: r.scope.clone(),
                    window: window_of(&r.window, &self.run_id)?,
                    window_start_ms: r.window_start_ms.max(0) as u64,
                    spent_usd: r.spent_usd,
                    spent_tokens: r.spent_tokens,
                })
            })
            .collect();
        self.book().restore(&counters, wall_ms());
    }

    /// Budget counters changed since the last call, as store rows.
    pub fn take_dirty_rows(&self) -> Vec<QuotaRow> {
        self.book()
            .take_dirty_counters()
            .into_iter()
            .map(|c| QuotaRow {
                scope: c.scope,
                window: window_label(c.window, &self.run_id),
                window_start_ms: c.window_start_ms.min(i64::MAX as u64) as i64,
                spent_usd: c.spent_usd,
                spent_tokens: c.spent_tokens,
            })
            .collect()
    }

    /// All-time USD and tokens settled by this process.
    pub fn spent_total(&self) -> (f64, u64) {
        self.book().spent_total()
    }

    fn settle(&self, p: &Permit, usage: Option<Usage>, latency: Duration, overloaded: bool) {
        let notices = self.book().settle(p.id, usage, Instant::now(), wall_ms());
        self.released.notify_waiters();
        let usd = usage
            .as_ref()
            .and_then(|u| self.prices.get(&p.backend).map(|pr| pr.cost(u)))
            .unwrap_or(0.0);
        CallCharged {
            agent: &p.agent,
            backend: &p.backend,
            tokens: usage.map_or(0, |u| u.total()),
            usd,
            overloaded,
        }
        .emit();
        for n in notices {
            let (scope, window, soft, spent_usd, spent_tokens) = match n {
                QuotaNotice::SoftLimit {
                    scope,
                    window,
                    spent_usd,
                    spent_tokens,
                    ..
                } => (scope, window, true, spent_usd, spent_tokens),
                QuotaNotice::Exhausted { scope, window } => (scope, window, false, 0.0, 0),
            };
            BudgetLimitReached {
                scope: &scope.key(),
                window: window.label(),
                soft,
                spent_usd,
                spent_tokens,
            }
            .emit(&self.trace);
        }
        self.adapt(&p.backend, latency, overloaded, usage.is_some());
    }

    /// Feeds the backend's adaptive concurrency limit and applies a change to the book.
    fn adapt(&self, backend: &str, latency: Duration, overloaded: bool, answered: bool) {
        let change = {
            let mut aimd = self.aimd.lock().unwrap_or_else(|e| e.into_inner());
            let Some(limit) = aimd.get_mut(backend) else {
                return;
            };
            let before = limit.limit();
            if overloaded {
                limit.on_overload();
            } else if answered {
                limit.on_success(latency);
            }
            let after = limit.limit();
            (before != after).then(|| (before, after, limit.last_change_reason().to_owned()))
        };
        if let Some((from, to, reason)) = change {
            self.book().set_concurrency(backend, to);
            if to > from {
                self.released.notify_waiters();
            }
            ConcurrencyChanged {
                scope: &format!("backend:{backend}"),
                from,
                to,
                reason: &reason,
            }
            .emit(&self.trace);
        }
    }

    /// Instances whose call waits at the gate now.
    pub fn held(&self) -> HashSet<InstanceId> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn admit_call(
        self: Arc<Self>,
        req: GateRequest,
    ) -> Result<Box<dyn CallPermit>, GateRefusal> {
        let started = Instant::now();
        let mut held: Option<(Scope, ThrottleLimit)> = None;
        let _registered = Holding {
            gate: &self,
            instance: req.instance.clone(),
        };
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let admission = {
                let call = CallRequest {
                    agent: &req.agent,
                    backend: &req.backend,
                    workflow: &req.workflow,
                    prompt_tokens: req.prompt_tokens,
                    max_tokens: req.max_tokens,
                };
                self.book().admit(&call, Instant::now(), wall_ms())
            };
            match admission {
                Admission::Granted(id) => {
                    if let Some((scope, limit)) = held {
                        CallThrottled {
                            scope: &scope.key(),
                            limit,
                            backend: &req.backend,
                            waited: started.elapsed(),
                        }
                        .emit();
                    }
                    return Ok(Box::new(Permit {
                        gate: self.clone(),
                        id,
                        agent: req.agent,
                        backend: req.backend,
                        settled: false,
                    }));
                }
                Admission::Wait { until, scope, .. } => {
                    let limit = if until.is_some() {
                        ThrottleLimit::Rate
                    } else {
                        ThrottleLimit::Concurrency
                    };
                    if held.is_none() {
                        self.held
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(req.instance.clone());
                    }
                    held = Some((scope, limit));
                    let wake = until
                        .map_or(RECHECK, |t| t.saturating_duration_since(Instant::now()))
                        .min(RECHECK);
                    tokio::select! {
                        _ = &mut released => {}
                        _ = tokio::time::sleep(wake) => {}
                    }
                }
                Admission::Exhausted {
                    scope,
                    reason,
                    resets_at_ms,
                    on_exhausted,
                } => {
                    // A call refused in advance is the hard limit met.
                    let (window, spent_usd, spent_tokens) = self.spent_in(&scope);
                    BudgetLimitReached {
                        scope: &scope.key(),
                        window,
                        soft: false,
                        spent_usd,
                        spent_tokens,
                    }
                    .emit(&self.trace);
                    let resets_in =
                        resets_at_ms.map(|at| Duration::from_millis(at.saturating_sub(wall_ms())));
                    return Err(GateRefusal {
                        reason,
                        wait: on_exhausted == OnExhausted::Wait && resets_in.is_some(),
                        resets_in,
                    });
                }
            }
        }
    }
}

/// Takes an instance off the held list however its wait ends (admitted, refused, dropped).
struct Holding<'a> {
    gate: &'a QuotaGate,
    instance: InstanceId,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.gate
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.instance);
    }
}

/// Sets a scope's limits from its config.
fn apply(book: &mut QuotaBook, scope: Scope, q: &QuotaSpec, now: Instant) {
    if let Some(r) = &q.rate {
        book.set_rate(scope.clone(), rate_spec(r), now);
    }
    if let Some(b) = &q.budget {
        book.set_budget(scope, budget_spec(b));
    }
}

/// Sets the remaining-quota gauges of one scope.
fn publish_remaining(s: &ScopeStatus) {
    let scope = s.scope.key();
    let set = |kind: &'static str, value: Option<f64>| {
        if let Some(value) = value {
            QuotaRemaining {
                scope: &scope,
                kind,
                value,
            }
            .emit();
        }
    };
    set("tokens", s.tokens_available.map(|v| v as f64));
    set("requests", s.requests_available.map(|v| v as f64));
    if let Some(b) = &s.budget {
        set("budget_usd", b.remaining_usd);
        set("budget_tokens", b.remaining_tokens.map(|v| v as f64));
    }
}

/// The step core's port over the shared gate.
#[derive(Debug, Clone)]
pub struct GatePort(pub Arc<QuotaGate>);

impl CallGate for GatePort {
    fn admit(
        &self,
        request: GateRequest,
    ) -> BoxFuture<'static, Result<Box<dyn CallPermit>, GateRefusal>> {
        Box::pin(self.0.clone().admit_call(request))
    }
}

impl QuotaGate {
    /// A backend with no configured `rate` gets buckets learned from its headers: its limit
    /// (`x-ratelimit-limit-*`), and its window from how long the server says it takes to
    /// refill what is used (`(limit - remaining)` in `x-ratelimit-reset-*`). Each kind is
    /// learned once; later headers only lower the buckets. Answers the spec when it changed.
    fn learn(&self, backend: &str, info: &RateLimitInfo) -> Option<RateSpec> {
        if !self.learnable.contains(backend) {
            return None;
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let spec = learned.entry(backend.to_owned()).or_insert(RateSpec {
            tokens: None,
            requests: None,
            per: Duration::from_secs(60),
            burst_tokens: None,
            burst_requests: None,
        });
        let first = spec.tokens.is_none() && spec.requests.is_none();
        let mut changed = false;
        for (limit, remaining, reset, slot) in [
            (
                info.limit_tokens,
                info.remaining_tokens,
                info.reset_tokens,
                &mut spec.tokens,
            ),
            (
                info.limit_requests,
                info.remaining_requests,
                info.reset_requests,
                &mut spec.requests,
            ),
        ] {
            let (Some(limit), Some(remaining), Some(reset)) = (limit, remaining, reset) else {
                continue;
            };
            if slot.is_some() || remaining >= limit || limit == 0 || reset.is_zero() {
                continue;
            }
            // The server refills `limit - remaining` in `reset`: its window holds `limit`.
            // In floats, clamped: hostile figures must not overflow a Duration.
            let secs = reset.as_secs_f64() * limit as f64 / (limit - remaining) as f64;
            let window = Duration::try_from_secs_f64(secs.clamp(0.001, 86_400.0))
                .unwrap_or(Duration::from_secs(60));
            if first && !changed {
                spec.per = window;
                *slot = Some(limit);
            } else {
                // Both kinds share one window: scale this limit to it, keeping its rate.
                let scaled = limit as f64 * spec.per.as_secs_f64() / window.as_secs_f64();
                *slot = Some((scaled.round() as u64).max(1));
            }
            changed = true;
        }
        changed.then(|| spec.clone())
    }
}

impl RateLimitObserver for QuotaGate {
    fn observe(&self, backend: &str, info: &RateLimitInfo) {
        if let Some(spec) = self.learn(backend, info) {
            self.book()
                .set_rate(Scope::Backend(backend.to_owned()), spec, Instant::now());
            ServerLimitLearned { backend }.emit();
        }
        let learned = {
            let mut book = self.book();
            let before = book.server_corrections();
            book.observe_server(
                backend,
                info.remaining_requests,
                info.remaining_tokens,
                info.reset_requests,
                info.reset_tokens,
                info.retry_after,
                Instant::now(),
            );
            book.server_corrections() > before
        };
        if learned {
            ServerLimitLearned { backend }.emit();
        }
    }
}

/// An admitted call's reservation.
struct Permit {
    gate: Arc<QuotaGate>,
    id: ReservationId,
    agent: String,
    backend: String,
    settled: bool,
}

impl CallPermit for Permit {
    fn settle(mut self: Box<Self>, usage: Option<Usage>, latency: Duration, overloaded: bool) {
        self.settled = true;
        self.gate.settle(&self, usage, latency, overloaded);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            // The call was dropped before it returned (timeout, cancel): nothing is known of
            // what the server counted; give the reservation back.
            self.gate
                .book()
                .settle(self.id, None, Instant::now(), wall_ms());
            self.gate.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests;
