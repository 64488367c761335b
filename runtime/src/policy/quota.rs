//! The quota book: rate limits and budgets of every scope, reserved before a call and
//! reconciled after it.
//!
//! A call applies to four scopes: the whole run ([`Scope::Global`]), its backend, its agent and
//! its workflow. Each scope may carry a rate limit (token buckets for tokens and requests), a
//! budget (USD and tokens per hour, day or run) and, for a backend, a concurrency limit.
//! [`QuotaBook::admit`] is all-or-nothing over every scope that applies: it reserves the
//! call's worst case (prompt plus `max_tokens`) or takes nothing. [`QuotaBook::settle`] then
//! gives back what the call did not use, charges what it used beyond the reservation, and adds
//! the real cost to the budgets. A call that failed without the server counting it gives
//! everything back.
//!
//! Budget windows are calendar windows in UTC, so the book is told the wall clock
//! (`wall_ms`, milliseconds since the Unix epoch) wherever a window matters; rate buckets run
//! on the monotonic clock (`now`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use super::bucket::TokenBucket;
use super::window::WindowLog;
use crate::llm::Usage;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
/// USD amounts within this much of a limit count as on it (float rounding of sums).
const USD_EPSILON: f64 = 1e-9;

/// What a limit or budget applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every call of the run.
    Global,
    /// Calls to one backend.
    Backend(String),
    /// Calls made by one agent.
    Agent(String),
    /// Calls made for one workflow.
    Workflow(String),
}

impl Scope {
    /// The scope as text: `global`, `backend:x`, `agent:x` or `workflow:x`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Parses [`Scope::key`]'s text; `None` for anything else (or an empty name).
    pub fn parse(key: &str) -> Option<Scope> {
        if key == "global" {
            return Some(Scope::Global);
        }
        let (kind, name) = key.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        let name = name.to_owned();
        match kind {
            "backend" => Some(Scope::Backend(name)),
            "agent" => Some(Scope::Agent(name)),
            "workflow" => Some(Scope::Workflow(name)),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Backend(n) => write!(f, "backend:{n}"),
            Scope::Agent(n) => write!(f, "agent:{n}"),
            Scope::Workflow(n) => write!(f, "workflow:{n}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

/// A rate limit: tokens and/or requests per `per`, with optional bucket sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSpec {
    /// Tokens (prompt plus completion) allowed per `per`.
    pub tokens: Option<u64>,
    /// Requests allowed per `per`.
    pub requests: Option<u64>,
    /// The period the limits are counted over.
    pub per: Duration,
    /// Token bucket size; default `max(1, tokens / 10)`.
    pub burst_tokens: Option<u64>,
    /// Request bucket size; default `max(1, requests / 10)`.
    pub burst_requests: Option<u64>,
}

impl RateSpec {
    /// The token bucket size, if tokens are limited.
    pub fn token_burst(&self) -> Option<u64> {
        self.tokens
            .map(|l| self.burst_tokens.unwrap_or(default_burst(l)))
    }

    /// The request bucket size, if requests are limited.
    pub fn request_burst(&self) -> Option<u64> {
        self.requests
            .map(|l| self.burst_requests.unwrap_or(default_burst(l)))
    }
}

/// A tenth of the limit, at least one.
fn default_burst(limit: u64) -> u64 {
    (limit / 10).max(1)
}

/// The window a budget is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetWindow {
    /// Fixed UTC hours.
    Hour,
    /// Fixed UTC days.
    Day,
    /// The book's whole life: one window that starts at 0 and never resets.
    Run,
}

impl BudgetWindow {
    /// The window's length in milliseconds; `None` for [`BudgetWindow::Run`].
    pub fn len_ms(&self) -> Option<u64> {
        match self {
            BudgetWindow::Hour => Some(HOUR_MS),
            BudgetWindow::Day => Some(DAY_MS),
            BudgetWindow::Run => None,
        }
    }

    /// Start (ms since the epoch) of the window containing `wall_ms`.
    pub fn start_ms(&self, wall_ms: u64) -> u64 {
        self.len_ms().map_or(0, |len| wall_ms / len * len)
    }

    /// When the window containing `wall_ms` ends; `None` for [`BudgetWindow::Run`].
    pub fn reset_ms(&self, wall_ms: u64) -> Option<u64> {
        self.len_ms()
            .map(|len| self.start_ms(wall_ms).saturating_add(len))
    }

    /// `hour`, `day` or `run`.
    pub fn label(&self) -> &'static str {
        match self {
            BudgetWindow::Hour => "hour",
            BudgetWindow::Day => "day",
            BudgetWindow::Run => "run",
        }
    }

    /// The adjective used in sentences: `hourly`, `daily` or `run`.
    fn adjective(&self) -> &'static str {
        match self {
            BudgetWindow::Hour => "hourly",
            BudgetWindow::Day => "daily",
            BudgetWindow::Run => "run",
        }
    }
}

impl Serialize for BudgetWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// What a caller should do when a budget is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnExhausted {
    /// Wait for the window to reset.
    Wait,
    /// Fail the call.
    Fail,
}

/// A budget: USD and/or tokens per window.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpec {
    /// USD allowed per window.
    pub usd: Option<f64>,
    /// Tokens (prompt plus completion) allowed per window.
    pub tokens: Option<u64>,
    /// The window the budget is counted over.
    pub window: BudgetWindow,
    /// Fraction of the budget at which a [`QuotaNotice::SoftLimit`] fires.
    pub soft_fraction: f64,
    /// What callers do once it is exhausted.
    pub on_exhausted: OnExhausted,
}

/// A backend's prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens served from the prefix cache.
    pub cached_input: f64,
}

impl Price {
    /// The cost of a call that used `u`.
    pub fn cost(&self, u: &Usage) -> f64 {
        let cached = u.cached_tokens.min(u.prompt_tokens);
        let uncached = u.prompt_tokens - cached;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input
            + u.completion_tokens as f64 * self.output)
            / 1e6
    }

    /// The most a call of `prompt` tokens generating up to `max_tokens` can cost (no cache).
    pub fn estimate(&self, prompt: u64, max_tokens: u64) -> f64 {
        (prompt as f64 * self.input + max_tokens as f64 * self.output) / 1e6
    }
}

/// A call asking for admission. An empty agent, backend or workflow name means the call
/// has no such scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRequest<'a> {
    /// The calling agent.
    pub agent: &'a str,
    /// The backend called.
    pub backend: &'a str,
    /// The workflow the call is made for.
    pub workflow: &'a str,
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// The most tokens the call may generate.
    pub max_tokens: u64,
}

impl CallRequest<'_> {
    /// The worst-case tokens of the call: prompt plus `max_tokens`.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.max_tokens)
    }

    /// The scopes the call applies to, in order.
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes = vec![Scope::Global];
        let named = [
            (self.backend, Scope::Backend as fn(String) -> Scope),
            (self.agent, Scope::Agent),
            (self.workflow, Scope::Workflow),
        ];
        for (name, make) in named {
            if !name.is_empty() {
                scopes.push(make(name.to_owned()));
            }
        }
        scopes
    }
}

/// A granted reservation, outstanding until [`QuotaBook::settle`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReservationId(pub u64);

/// The book's answer to [`QuotaBook::admit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Go ahead; settle the reservation when the call ends.
    Granted(ReservationId),
    /// Try again later: at `until` (a rate bucket refills), or once a reservation is released
    /// (`None`: a concurrency limit, or a budget held by calls in flight).
    Wait {
        /// When to try again, if known.
        until: Option<Instant>,
        /// The scope that refused.
        scope: Scope,
        /// Why, as a sentence.
        reason: String,
    },
    /// A budget has no room for the call in its current window.
    Exhausted {
        /// The budgeted scope.
        scope: Scope,
        /// Why, as a sentence.
        reason: String,
        /// When the window resets (ms since the epoch); `None` for a run budget.
        resets_at_ms: Option<u64>,
        /// What the budget says callers should do.
        on_exhausted: OnExhausted,
    },
}

/// A budget threshold crossed by a settled call.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaNotice {
    /// Spending passed the soft fraction (once per scope per window).
    SoftLimit {
        /// The budgeted scope.
        scope: Scope,
        /// Its window.
        window: BudgetWindow,
        /// USD spent in the window.
        spent_usd: f64,
        /// Tokens spent in the window.
        spent_tokens: u64,
        /// The larger of the USD and token fractions spent.
        fraction: f64,
    },
    /// Spending reached the limit (once per scope per window).
    Exhausted {
        /// The budgeted scope.
        scope: Scope,
        /// Its window.
        window: BudgetWindow,
    },
}

/// One scope's limits and usage, for status pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeStatus {
    /// The scope.
    pub scope: Scope,
    /// Tokens in its token bucket.
    pub tokens_available: Option<u64>,
    /// Its token bucket's size.
    pub tokens_capacity: Option<u64>,
    /// Requests in its request bucket.
    pub requests_available: Option<u64>,
    /// Its request bucket's size.
    pub requests_capacity: Option<u64>,
    /// Its budget.
    pub budget: Option<BudgetStatus>,
    /// Outstanding reservations that include the scope.
    pub in_flight: usize,
    /// Its concurrency limit (backends only).
    pub concurrency_limit: Option<usize>,
}

/// A budget's current window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// The window kind.
    pub window: BudgetWindow,
    /// Start of the current window (ms since the epoch).
    pub window_start_ms: u64,
    /// When it resets; `None` for a run budget.
    pub resets_at_ms: Option<u64>,
    /// USD spent in the window.
    pub spent_usd: f64,
    /// Tokens spent in the window.
    pub spent_tokens: u64,
    /// The USD limit.
    pub limit_usd: Option<f64>,
    /// The token limit.
    pub limit_tokens: Option<u64>,
    /// USD left (not counting calls in flight).
    pub remaining_usd: Option<f64>,
    /// Tokens left (not counting calls in flight).
    pub remaining_tokens: Option<u64>,
    /// Whether spending passed the soft fraction.
    pub soft_reached: bool,
    /// Whether spending reached a limit.
    pub exhausted: bool,
}

/// A budget's spending in one window, as stored durably.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetCounter {
    /// [`Scope::key`] of the budgeted scope.
    pub scope: String,
    /// The window kind.
    pub window: BudgetWindow,
    /// Start of the window (ms since the epoch).
    pub window_start_ms: u64,
    /// USD spent in it.
    pub spent_usd: f64,
    /// Tokens spent in it.
    pub spent_tokens: u64,
}

/// Which of a scope's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tokens,
    Requests,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Tokens => "tokens",
            Kind::Requests => "requests",
        }
    }
}

/// A scope's rate limit and its buckets.
#[derive(Debug)]
struct Rate {
    spec: RateSpec,
    tokens: Option<TokenBucket>,
    requests: Option<TokenBucket>,
    /// The tokens of the last window (reserved, then real): no window exceeds the limit.
    window: Option<WindowLog>,
}

impl Rate {
    fn new(spec: RateSpec, now: Instant) -> Self {
        let bucket = |limit: Option<u64>, burst: Option<u64>| {
            limit
                .zip(burst)
                .map(|(l, b)| TokenBucket::new(l, spec.per, b, now))
        };
        Self {
            tokens: bucket(spec.tokens, spec.token_burst()),
            requests: bucket(spec.requests, spec.request_burst()),
            window: spec.tokens.map(|l| WindowLog::new(l, spec.per)),
            spec,
        }
    }

    fn bucket(&mut self, kind: Kind) -> Option<&mut TokenBucket> {
        match kind {
            Kind::Tokens => self.tokens.as_mut(),
            Kind::Requests => self.requests.as_mut(),
        }
    }
}

/// A budget and its current window.
#[derive(Debug)]
struct Budget {
    spec: BudgetSpec,
    window: BudgetWindow,
    window_start_ms: u64,
    spent_usd: f64,
    spent_tokens: u64,
    reserved_usd: f64,
    reserved_tokens: u64,
    reserved_calls: usize,
    soft_sent: bool,
    exhausted_sent: bool,
    dirty: bool,
}

/// How a budget answers a call's estimate.
enum Verdict {
    Fits,
    /// No room while calls in flight hold reservations.
    Busy(String),
    /// No room in this window.
    Hard(String),
}

impl Budget {
    fn new(spec: BudgetSpec) -> Self {
        Self {
            window: spec.window,
            window_start_ms: 0,
            spec,
            spent_usd: 0.0,
            spent_tokens: 0,
            reserved_usd: 0.0,
            reserved_tokens: 0,
            reserved_calls: 0,
            soft_sent: false,
            exhausted_sent: false,
            dirty: false,
        }
    }

    /// Moves to the window containing `wall_ms` if it is a later one (or the kind changed).
    fn roll(&mut self, wall_ms: u64) {
        let start = self.spec.window.start_ms(wall_ms);
        if self.window == self.spec.window && start <= self.window_start_ms {
            return;
        }
        self.window = self.spec.window;
        self.window_start_ms = start;
        self.spent_usd = 0.0;
        self.spent_tokens = 0;
        self.soft_sent = false;
        self.exhausted_sent = false;
    }

    /// The larger of the USD and token fractions spent; `None` without limits.
    fn fraction(&self) -> Option<f64> {
        let usd = self.spec.usd.map(|l| ratio(self.spent_usd, l));
        let tokens = self
            .spec
            .tokens
            .map(|l| ratio(self.spent_tokens as f64, l as f64));
        match (usd, tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn verdict(&self, scope: &Scope, usd: f64, tokens: u64) -> Verdict {
        let usd_verdict = self.spec.usd.map(|l| self.usd_verdict(scope, l, usd));
        let token_verdict = self
            .spec
            .tokens
            .map(|l| self.token_verdict(scope, l, tokens));
        let verdicts = [usd_verdict, token_verdict];
        let mut busy = None;
        for v in verdicts.into_iter().flatten() {
            match v {
                Verdict::Hard(_) => return v,
                Verdict::Busy(_) if busy.is_none() => busy = Some(v),
                _ => {}
            }
        }
        busy.unwrap_or(Verdict::Fits)
    }

    fn usd_verdict(&self, scope: &Scope, limit: f64, est: f64) -> Verdict {
        let adj = self.window.adjective();
        let spent = self.spent_usd;
        if spent + USD_EPSILON >= limit {
            return Verdict::Hard(format!(
                "{scope} {adj} budget exhausted: spent ${spent:.4} of ${limit:.2}"
            ));
        }
        if spent + est > limit + USD_EPSILON {
            return Verdict::Hard(format!(
                "{scope} {adj} budget: spent ${spent:.4} of ${limit:.2}, \
                 this call may cost up to ${est:.4}"
            ));
        }
        if spent + self.reserved_usd + est > limit + USD_EPSILON {
            let reserved = self.reserved_usd;
            return Verdict::Busy(format!(
                "{scope} {adj} budget: spent ${spent:.4} and ${reserved:.4} reserved by calls \
                 in flight of ${limit:.2}, this call may cost up to ${est:.4}"
            ));
        }
        Verdict::Fits
    }

    fn token_verdict(&self, scope: &Scope, limit: u64, est: u64) -> Verdict {
        let adj = self.window.adjective();
        let spent = self.spent_tokens;
        if spent >= limit {
            return Verdict::Hard(format!(
                "{scope} {adj} token budget exhausted: spent {spent} of {limit} tokens"
            ));
        }
        if spent.saturating_add(est) > limit {
            return Verdict::Hard(format!(
                "{scope} {adj} token budget: spent {spent} of {limit} tokens, \
                 this call may use up to {est}"
            ));
        }
        if spent
            .saturating_add(self.reserved_tokens)
            .saturating_add(est)
            > limit
        {
            let reserved = self.reserved_tokens;
            return Verdict::Busy(format!(
                "{scope} {adj} token budget: spent {spent} and {reserved} reserved by calls \
                 in flight of {limit} tokens, this call may use up to {est}"
            ));
        }
        Verdict::Fits
    }

    fn reserve(&mut self, usd: f64, tokens: u64) {
        self.reserved_usd += usd;
        self.reserved_tokens = self.reserved_tokens.saturating_add(tokens);
        self.reserved_calls += 1;
    }

    fn release(&mut self, usd: f64, tokens: u64) {
        self.reserved_calls = self.reserved_calls.saturating_sub(1);
        self.reserved_tokens = self.reserved_tokens.saturating_sub(tokens);
        self.reserved_usd = (self.reserved_usd - usd).max(0.0);
        if self.reserved_calls == 0 {
            // Drop the float rounding the sums accumulated.
            self.reserved_usd = 0.0;
            self.reserved_tokens = 0;
        }
    }

    fn spend(&mut self, usd: f64, tokens: u64) {
        self.spent_usd += usd;
        self.spent_tokens = self.spent_tokens.saturating_add(tokens);
        self.dirty = true;
    }

    /// Notices for thresholds crossed and not yet announced in this window.
    fn notices(&mut self, scope: &Scope) -> Vec<QuotaNotice> {
        let Some(fraction) = self.fraction() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !self.soft_sent && fraction >= self.spec.soft_fraction {
            self.soft_sent = true;
            out.push(QuotaNotice::SoftLimit {
                scope: scope.clone(),
                window: self.window,
                spent_usd: self.spent_usd,
                spent_tokens: self.spent_tokens,
                fraction,
            });
        }
        if !self.exhausted_sent && fraction >= 1.0 {
            self.exhausted_sent = true;
            out.push(QuotaNotice::Exhausted {
                scope: scope.clone(),
                window: self.window,
            });
        }
        out
    }

    /// Marks thresholds already passed as announced (after a restore).
    fn mark_announced(&mut self) {
        let fraction = self.fraction().unwrap_or(0.0);
        self.soft_sent = self.fraction().is_some() && fraction >= self.spec.soft_fraction;
        self.exhausted_sent = fraction >= 1.0;
    }

    fn counter(&self, scope: &Scope) -> BudgetCounter {
        BudgetCounter {
            scope: scope.key(),
            window: self.window,
            window_start_ms: self.window_start_ms,
            spent_usd: self.spent_usd,
            spent_tokens: self.spent_tokens,
        }
    }

    fn status(&self) -> BudgetStatus {
        let fraction = self.fraction().unwrap_or(0.0);
        BudgetStatus {
            window: self.window,
            window_start_ms: self.window_start_ms,
            resets_at_ms: self.window.reset_ms(self.window_start_ms),
            spent_usd: self.spent_usd,
            spent_tokens: self.spent_tokens,
            limit_usd: self.spec.usd,
            limit_tokens: self.spec.tokens,
            remaining_usd: self.spec.usd.map(|l| (l - self.spent_usd).max(0.0)),
            remaining_tokens: self
                .spec
                .tokens
                .map(|l| l.saturating_sub(self.spent_tokens)),
            soft_reached: self.fraction().is_some() && fraction >= self.spec.soft_fraction,
            exhausted: fraction >= 1.0,
        }
    }
}

/// `spent / limit`; a zero (or negative) limit is spent from the start.
fn ratio(spent: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        spent / limit
    } else {
        1.0
    }
}

/// "per minute", "per hour", ... for a rate period.
fn per_label(per: Duration) -> String {
    match per.as_secs() {
        1 if per.subsec_nanos() == 0 => "per second".to_owned(),
        60 if per.subsec_nanos() == 0 => "per minute".to_owned(),
        3600 if per.subsec_nanos() == 0 => "per hour".to_owned(),
        86400 if per.subsec_nanos() == 0 => "per day".to_owned(),
        _ => format!("per {per:?}"),
    }
}

/// A granted call's reservation.
#[derive(Debug)]
struct Reservation {
    backend: String,
    scopes: Vec<Scope>,
    taken: Vec<(Scope, Kind, u64)>,
    budgets: Vec<Scope>,
    usd: f64,
    tokens: u64,
}

/// A bucket's refusal: how long, where, why.
struct Refusal {
    wait: Duration,
    scope: Scope,
    reason: String,
}

/// Rate limits, budgets, prices and concurrency of every scope, and the reservations of calls
/// in flight.
#[derive(Debug, Default)]
pub struct QuotaBook {
    rates: BTreeMap<Scope, Rate>,
    budgets: BTreeMap<Scope, Budget>,
    prices: HashMap<String, Price>,
    concurrency: HashMap<String, usize>,
    in_flight: HashMap<String, usize>,
    holds: HashMap<String, Instant>,
    reservations: HashMap<u64, Reservation>,
    next_id: u64,
    corrections: u64,
    spent_usd: f64,
    spent_tokens: u64,
}

impl QuotaBook {
    /// An empty book: no limits, no budgets, every backend free.
    pub fn new(now: Instant) -> Self {
        // Buckets take their clock from `set_rate`; nothing else needs one at creation.
        let _ = now;
        Self::default()
    }

    /// Sets `scope`'s rate limit. Re-setting the same limit keeps the buckets; a new one
    /// starts no fuller than the old bucket was.
    pub fn set_rate(&mut self, scope: Scope, spec: RateSpec, now: Instant) {
        let mut rate = Rate::new(spec, now);
        if let Some(old) = self.rates.get_mut(&scope) {
            if old.spec == rate.spec {
                return;
            }
            carry_level(old.tokens.as_mut(), rate.tokens.as_mut(), now);
            carry_level(old.requests.as_mut(), rate.requests.as_mut(), now);
        }
        self.rates.insert(scope, rate);
    }

    /// Sets `scope`'s budget; spending so far in the current window is kept.
    pub fn set_budget(&mut self, scope: Scope, spec: BudgetSpec) {
        match self.budgets.get_mut(&scope) {
            Some(b) => b.spec = spec,
            None => {
                self.budgets.insert(scope, Budget::new(spec));
            }
        }
    }

    /// Sets `backend`'s prices (a backend without prices costs nothing).
    pub fn set_price(&mut self, backend: &str, price: Price) {
        self.prices.insert(backend.to_owned(), price);
    }

    /// Sets how many calls may be in flight to `backend` (at least 1).
    pub fn set_concurrency(&mut self, backend: &str, limit: usize) {
        self.concurrency.insert(backend.to_owned(), limit.max(1));
    }

    /// `backend`'s concurrency limit, if it has one.
    pub fn concurrency(&self, backend: &str) -> Option<usize> {
        self.concurrency.get(backend).copied()
    }

    /// Calls in flight to `backend`.
    pub fn in_flight(&self, backend: &str) -> usize {
        self.in_flight.get(backend).copied().unwrap_or(0)
    }

    /// Admits the call or refuses it, over every scope that applies: budgets first, then the
    /// backend's concurrency, then every rate bucket. Nothing is taken unless all agree.
    pub fn admit(&mut self, req: &CallRequest<'_>, now: Instant, wall_ms: u64) -> Admission {
        let scopes = req.scopes();
        let usd = self
            .price(req.backend)
            .estimate(req.prompt_tokens, req.max_tokens);
        let tokens = req.tokens();
        if let Some(refusal) = self.check_budgets(&scopes, usd, tokens, wall_ms) {
            return refusal;
        }
        if let Some(refusal) = self.check_backend(req.backend, now) {
            return refusal;
        }
        let taken = match self.take_buckets(&scopes, tokens, now) {
            Ok(taken) => taken,
            Err(r) => {
                return Admission::Wait {
                    until: now.checked_add(r.wait),
                    scope: r.scope,
                    reason: r.reason,
                }
            }
        };
        Admission::Granted(self.grant(req.backend, scopes, taken, usd, tokens, now))
    }

    /// Settles a reservation. `None`: the call failed and the server counted nothing, so
    /// everything is given back. `Some(usage)`: buckets get back what the call did not use (or
    /// are charged what it used beyond the reservation), and budgets add the real cost to the
    /// window current at `wall_ms`. Unknown or already settled ids are ignored. Answers the
    /// budget thresholds the call crossed.
    pub fn settle(
        &mut self,
        id: ReservationId,
        actual: Option<Usage>,
        now: Instant,
        wall_ms: u64,
    ) -> Vec<QuotaNotice> {
        let Some(r) = self.reservations.remove(&id.0) else {
            return Vec::new();
        };
        if let Some(n) = self.in_flight.get_mut(&r.backend) {
            *n = n.saturating_sub(1);
        }
        self.reconcile_buckets(id.0, &r, actual.as_ref(), now);
        let cost = actual.map(|u| (self.price(&r.backend).cost(&u), used_tokens(&u)));
        if let Some((usd, tokens)) = cost {
            self.spent_usd += usd;
            self.spent_tokens = self.spent_tokens.saturating_add(tokens);
        }
        let mut notices = Vec::new();
        for scope in &r.budgets {
            let Some(b) = self.budgets.get_mut(scope) else {
                continue;
            };
            b.release(r.usd, r.tokens);
            if let Some((usd, tokens)) = cost {
                b.roll(wall_ms);
                b.spend(usd, tokens);
                notices.extend(b.notices(scope));
            }
        }
        notices
    }

    /// Feeds a backend's rate-limit headers to its buckets: remaining counts lower them
    /// (never raise them), and a Retry-After holds admission to the backend. Resets are not
    /// used: continuous refill already models the server's window.
    #[allow(clippy::too_many_arguments)]
    pub fn observe_server(
        &mut self,
        backend: &str,
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
        reset_requests: Option<Duration>,
        reset_tokens: Option<Duration>,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let _ = (reset_requests, reset_tokens);
        let hold = retry_after.and_then(|d| now.checked_add(d));
        let scope = Scope::Backend(backend.to_owned());
        let Some(rate) = self.rates.get_mut(&scope) else {
            if let Some(t) = hold {
                self.hold_backend(backend, t);
            }
            return;
        };
        let observed = [
            (Kind::Requests, remaining_requests),
            (Kind::Tokens, remaining_tokens),
        ];
        let mut any_bucket = false;
        for (kind, remaining) in observed {
            let Some(bucket) = rate.bucket(kind) else {
                continue;
            };
            any_bucket = true;
            if let Some(t) = hold {
                bucket.hold_until(t);
            }
            if remaining.is_some_and(|n| bucket.lower_to(n, now)) {
                self.corrections += 1;
            }
        }
        if let (false, Some(t)) = (any_bucket, hold) {
            self.hold_backend(backend, t);
        }
    }

    /// How often a server's remaining count lowered one of the book's buckets.
    pub fn server_corrections(&self) -> u64 {
        self.corrections
    }

    /// Reservations granted and not yet settled.
    pub fn outstanding(&self) -> usize {
        self.reservations.len()
    }

    /// Every scope that has a limit, a budget or a call in flight, sorted by scope.
    pub fn status(&mut self, now: Instant, wall_ms: u64) -> Vec<ScopeStatus> {
        let mut scopes: BTreeSet<Scope> = self.rates.keys().cloned().collect();
        scopes.extend(self.budgets.keys().cloned());
        scopes.extend(self.concurrency.keys().map(|b| Scope::Backend(b.clone())));
        for r in self.reservations.values() {
            scopes.extend(r.scopes.iter().cloned());
        }
        scopes
            .into_iter()
            .map(|s| self.scope_status(s, now, wall_ms))
            .collect()
    }

    /// One counter per budgeted scope, for its current window.
    pub fn counters(&self) -> Vec<BudgetCounter> {
        self.budgets.iter().map(|(s, b)| b.counter(s)).collect()
    }

    /// The counters that changed since the last call.
    pub fn take_dirty_counters(&mut self) -> Vec<BudgetCounter> {
        let mut out = Vec::new();
        for (scope, b) in self.budgets.iter_mut().filter(|(_, b)| b.dirty) {
            b.dirty = false;
            out.push(b.counter(scope));
        }
        out
    }

    /// Restores stored counters (call after `set_budget`). A row of a budget's current window
    /// (same kind and start) restores its spending, and thresholds it passed count as
    /// announced; a row of an older window, an unknown scope or another kind is ignored.
    pub fn restore(&mut self, rows: &[BudgetCounter], wall_ms: u64) {
        for row in rows {
            let Some(b) = Scope::parse(&row.scope).and_then(|s| self.budgets.get_mut(&s)) else {
                continue;
            };
            b.roll(wall_ms);
            if row.window != b.window || row.window_start_ms != b.window_start_ms {
                continue;
            }
            b.spent_usd = row.spent_usd.max(0.0);
            b.spent_tokens = row.spent_tokens;
            b.mark_announced();
        }
    }

    /// All-time USD and tokens of settled calls.
    pub fn spent_total(&self) -> (f64, u64) {
        (self.spent_usd, self.spent_tokens)
    }

    fn price(&self, backend: &str) -> Price {
        self.prices.get(backend).copied().unwrap_or_default()
    }

    fn hold_backend(&mut self, backend: &str, t: Instant) {
        let hold = self.holds.entry(backend.to_owned()).or_insert(t);
        *hold = (*hold).max(t);
    }

    /// The first refusal among the budgets: a hard one (no room this window) before one that
    /// calls in flight cause.
    fn check_budgets(
        &mut self,
        scopes: &[Scope],
        usd: f64,
        tokens: u64,
        wall_ms: u64,
    ) -> Option<Admission> {
        let mut busy = None;
        for scope in scopes {
            let Some(b) = self.budgets.get_mut(scope) else {
                continue;
            };
            b.roll(wall_ms);
            match b.verdict(scope, usd, tokens) {
                Verdict::Fits => {}
                Verdict::Hard(reason) => {
                    return Some(Admission::Exhausted {
                        scope: scope.clone(),
                        reason,
                        resets_at_ms: b.window.reset_ms(b.window_start_ms),
                        on_exhausted: b.spec.on_exhausted,
                    })
                }
                Verdict::Busy(reason) => {
                    busy = busy.or(Some(Admission::Wait {
                        until: None,
                        scope: scope.clone(),
                        reason,
                    }))
                }
            }
        }
        busy
    }

    /// The backend's concurrency limit, then a Retry-After held by the book.
    fn check_backend(&mut self, backend: &str, now: Instant) -> Option<Admission> {
        let scope = Scope::Backend(backend.to_owned());
        let in_flight = self.in_flight(backend);
        if let Some(limit) = self.concurrency(backend).filter(|&l| in_flight >= l) {
            return Some(Admission::Wait {
                until: None,
                reason: format!("{scope}: {in_flight} of {limit} calls in flight"),
                scope,
            });
        }
        let hold = self.holds.get(backend).copied()?;
        if hold <= now {
            self.holds.remove(backend);
            return None;
        }
        let secs = (hold - now).as_secs_f64();
        Some(Admission::Wait {
            until: Some(hold),
            reason: format!("{scope}: the server asked to retry in {secs:.1}s"),
            scope,
        })
    }

    /// Takes from every bucket of `scopes`, or from none: on a refusal, what was taken is given
    /// back and the longest wait is answered.
    fn take_buckets(
        &mut self,
        scopes: &[Scope],
        tokens: u64,
        now: Instant,
    ) -> Result<Vec<(Scope, Kind, u64)>, Refusal> {
        let mut taken = Vec::new();
        let mut worst: Option<Refusal> = None;
        for scope in scopes {
            let Some(rate) = self.rates.get_mut(scope) else {
                continue;
            };
            if let Some(wait) = rate.window.as_mut().and_then(|w| w.wait(tokens, now)) {
                if worst.as_ref().is_none_or(|w| wait > w.wait) {
                    let limit = rate.spec.tokens.unwrap_or_default();
                    let used = rate.window.as_mut().map_or(0, |w| w.used(now));
                    worst = Some(Refusal {
                        wait,
                        scope: scope.clone(),
                        reason: format!(
                            "{scope} tokens per {:?} window: {used} of {limit} counted, needs {tokens}",
                            rate.spec.per
                        ),
                    });
                }
            }
            for (kind, need) in [(Kind::Tokens, tokens), (Kind::Requests, 1)] {
                let per = rate.spec.per;
                let Some(bucket) = rate.bucket(kind) else {
                    continue;
                };
                match bucket.try_take(need, now) {
                    Ok(()) => taken.push((scope.clone(), kind, need.min(bucket.capacity()))),
                    Err(wait) if worst.as_ref().is_none_or(|w| wait > w.wait) => {
                        let reason = refusal_reason(scope, kind, per, bucket, need, now);
                        worst = Some(Refusal {
                            wait,
                            scope: scope.clone(),
                            reason,
                        });
                    }
                    Err(_) => {}
                }
            }
        }
        match worst {
            None => Ok(taken),
            Some(refusal) => {
                for (scope, kind, n) in taken {
                    if let Some(b) = self.rates.get_mut(&scope).and_then(|r| r.bucket(kind)) {
                        b.give_back(n, now);
                    }
                }
                Err(refusal)
            }
        }
    }

    fn grant(
        &mut self,
        backend: &str,
        scopes: Vec<Scope>,
        taken: Vec<(Scope, Kind, u64)>,
        usd: f64,
        tokens: u64,
        now: Instant,
    ) -> ReservationId {
        let budgets: Vec<Scope> = scopes
            .iter()
            .filter(|s| self.budgets.contains_key(s))
            .cloned()
            .collect();
        for scope in &budgets {
            if let Some(b) = self.budgets.get_mut(scope) {
                b.reserve(usd, tokens);
            }
        }
        *self.in_flight.entry(backend.to_owned()).or_insert(0) += 1;
        self.next_id += 1;
        let id = self.next_id;
        for scope in &scopes {
            if let Some(w) = self.rates.get_mut(scope).and_then(|r| r.window.as_mut()) {
                w.record(id, tokens, now);
            }
        }
        let reservation = Reservation {
            backend: backend.to_owned(),
            scopes,
            taken,
            budgets,
            usd,
            tokens,
        };
        self.reservations.insert(id, reservation);
        ReservationId(id)
    }

    /// Gives back (or charges) the difference between what was taken and what was used.
    fn reconcile_buckets(
        &mut self,
        id: u64,
        r: &Reservation,
        actual: Option<&Usage>,
        now: Instant,
    ) {
        let real = actual.map_or(0, used_tokens);
        for scope in &r.scopes {
            if let Some(w) = self.rates.get_mut(scope).and_then(|rt| rt.window.as_mut()) {
                w.settle(id, real);
            }
        }
        for (scope, kind, taken) in &r.taken {
            let Some(bucket) = self.rates.get_mut(scope).and_then(|rt| rt.bucket(*kind)) else {
                continue;
            };
            let used = match (actual, kind) {
                (None, _) => 0,
                (Some(u), Kind::Tokens) => used_tokens(u),
                (Some(_), Kind::Requests) => 1,
            };
            if used > *taken {
                bucket.charge(used - taken, now);
            } else {
                bucket.give_back(taken - used, now);
            }
        }
    }

    fn scope_status(&mut self, scope: Scope, now: Instant, wall_ms: u64) -> ScopeStatus {
        let in_flight = self
            .reservations
            .values()
            .filter(|r| r.scopes.contains(&scope))
            .count();
        let concurrency_limit = match &scope {
            Scope::Backend(b) => self.concurrency(b),
            _ => None,
        };
        let budget = self.budgets.get_mut(&scope).map(|b| {
            b.roll(wall_ms);
            b.status()
        });
        let rate = self.rates.get_mut(&scope);
        let (tokens, requests) = match rate {
            Some(r) => (
                bucket_state(r.tokens.as_mut(), now),
                bucket_state(r.requests.as_mut(), now),
            ),
            None => (None, None),
        };
        ScopeStatus {
            scope,
            tokens_available: tokens.map(|t| t.0),
            tokens_capacity: tokens.map(|t| t.1),
            requests_available: requests.map(|t| t.0),
            requests_capacity: requests.map(|t| t.1),
            budget,
            in_flight,
            concurrency_limit,
        }
    }
}

/// Tokens a call used: prompt plus completion.
fn used_tokens(u: &Usage) -> u64 {
    u.prompt_tokens.saturating_add(u.completion_tokens)
}

/// `(available, capacity)` of a bucket.
fn bucket_state(bucket: Option<&mut TokenBucket>, now: Instant) -> Option<(u64, u64)> {
    bucket.map(|b| (b.available(now), b.capacity()))
}

/// Lowers a replacement bucket to the level its predecessor had.
fn carry_level(old: Option<&mut TokenBucket>, new: Option<&mut TokenBucket>, now: Instant) {
    if let (Some(old), Some(new)) = (old, new) {
        new.lower_to(old.available(now), now);
    }
}

/// "agent:coder tokens per minute: 1200 of 9000 left, needs 3000".
fn refusal_reason(
    scope: &Scope,
    kind: Kind,
    per: Duration,
    bucket: &mut TokenBucket,
    need: u64,
    now: Instant,
) -> String {
    let per = per_label(per);
    let what = format!("{scope} {} {per}", kind.label());
    if let Some(t) = bucket.held_until(now) {
        let secs = (t - now).as_secs_f64();
        return format!("{what}: the server asked to retry in {secs:.1}s");
    }
    let (available, capacity) = (bucket.available(now), bucket.capacity());
    let mut reason = format!("{what}: {available} of {capacity} left, needs {need}");
    if need > capacity {
        reason.push_str(" (more than the bucket holds: waits for a full bucket)");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: Duration = Duration::from_secs(60);
    /// A wall clock on an hour boundary (2023-11-14T22:00:00Z).
    const WALL: u64 = 472_222 * HOUR_MS;

    fn call(agent: &str, prompt_tokens: u64, max_tokens: u64) -> CallRequest<'_> {
        CallRequest {
            agent,
            backend: "openai",
            workflow: "wf",
            prompt_tokens,
            max_tokens,
        }
    }

    fn usage(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        }
    }

    fn granted(a: Admission) -> ReservationId {
        match a {
            Admission::Granted(id) => id,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn budget(usd: Option<f64>, tokens: Option<u64>, window: BudgetWindow) -> BudgetSpec {
        BudgetSpec {
            usd,
            tokens,
            window,
            soft_fraction: 0.8,
            on_exhausted: OnExhausted::Fail,
        }
    }

    fn tokens_per_minute(tokens: u64, burst: u64) -> RateSpec {
        RateSpec {
            tokens: Some(tokens),
            requests: None,
            per: MINUTE,
            burst_tokens: Some(burst),
            burst_requests: None,
        }
    }

    fn agent(name: &str) -> Scope {
        Scope::Agent(name.to_owned())
    }

    /// $10 per million tokens in and out: 100 + 100 tokens cost $0.002.
    fn priced_book(now: Instant) -> QuotaBook {
        let mut book = QuotaBook::new(now);
        let price = Price {
            input: 10.0,
            output: 10.0,
            cached_input: 1.0,
        };
        book.set_price("openai", price);
        book
    }

    fn status_of(book: &mut QuotaBook, scope: &Scope, now: Instant, wall: u64) -> ScopeStatus {
        let all = book.status(now, wall);
        all.into_iter()
            .find(|s| &s.scope == scope)
            .unwrap_or_else(|| panic!("no status for {scope}"))
    }

    #[test]
    fn scope_keys_round_trip() {
        let scopes = [
            Scope::Global,
            Scope::Backend("openai".into()),
            agent("coder"),
            Scope::Workflow("w:1".into()),
        ];
        let keys: Vec<String> = scopes.iter().map(Scope::key).collect();
        assert_eq!(
            keys,
            ["global", "backend:openai", "agent:coder", "workflow:w:1"]
        );
        for s in &scopes {
            assert_eq!(Scope::parse(&s.key()).as_ref(), Some(s));
        }
        for bad in ["", "agent:", "agent", "team:x", "Global"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&agent("coder")).ok().as_deref(),
            Some("\"agent:coder\"")
        );
    }

    #[test]
    fn windows_are_fixed_utc_windows() {
        let half = WALL + HOUR_MS / 2;
        assert_eq!(BudgetWindow::Hour.start_ms(half), WALL);
        assert_eq!(BudgetWindow::Hour.reset_ms(half), Some(WALL + HOUR_MS));
        let day = BudgetWindow::Day.start_ms(half);
        assert_eq!(day % DAY_MS, 0);
        assert!(day <= half && half < day + DAY_MS);
        assert_eq!(BudgetWindow::Day.reset_ms(half), Some(day + DAY_MS));
        assert_eq!(BudgetWindow::Run.start_ms(half), 0);
        assert_eq!(BudgetWindow::Run.reset_ms(half), None);
        let labels = [BudgetWindow::Hour, BudgetWindow::Day, BudgetWindow::Run].map(|w| w.label());
        assert_eq!(labels, ["hour", "day", "run"]);
    }

    #[test]
    fn prices_count_cached_tokens_at_their_price() {
        let p = Price {
            input: 2.0,
            output: 8.0,
            cached_input: 0.5,
        };
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            cached_tokens: 400,
        };
        assert!((p.cost(&u) - 0.0022).abs() < 1e-12);
        assert!((p.estimate(1000, 500) - 0.006).abs() < 1e-12);
        let bogus = Usage {
            cached_tokens: 5000,
            ..u
        };
        assert!((p.cost(&bogus) - (1000.0 * 0.5 + 800.0) / 1e6).abs() < 1e-12);
    }

    #[test]
    fn default_bursts_are_a_tenth_of_the_limit() {
        let spec = RateSpec {
            tokens: Some(90_000),
            requests: Some(5),
            per: MINUTE,
            burst_tokens: None,
            burst_requests: None,
        };
        assert_eq!(
            (spec.token_burst(), spec.request_burst()),
            (Some(9000), Some(1))
        );
        let explicit = RateSpec {
            burst_tokens: Some(90_000),
            ..spec
        };
        assert_eq!(explicit.token_burst(), Some(90_000));
    }

    #[test]
    fn a_budget_stops_calls_once_spent() {
        let t0 = Instant::now();
        let mut book = priced_book(t0);
        book.set_budget(agent("coder"), budget(Some(0.01), None, BudgetWindow::Day));
        let mut notices = Vec::new();
        for _ in 0..5 {
            let id = granted(book.admit(&call("coder", 100, 100), t0, WALL));
            notices.extend(book.settle(id, Some(usage(100, 100)), t0, WALL));
        }
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(matches!(notices[0], QuotaNotice::SoftLimit { .. }));
        assert_eq!(
            notices[1],
            QuotaNotice::Exhausted {
                scope: agent("coder"),
                window: BudgetWindow::Day
            }
        );
        match book.admit(&call("coder", 1, 1), t0, WALL) {
            Admission::Exhausted {
                scope,
                reason,
                resets_at_ms,
                on_exhausted,
            } => {
                assert_eq!(scope, agent("coder"));
                assert_eq!(
                    reason,
                    "agent:coder daily budget exhausted: spent $0.0100 of $0.01"
                );
                assert_eq!(resets_at_ms, BudgetWindow::Day.reset_ms(WALL));
                assert_eq!(on_exhausted, OnExhausted::Fail);
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        // Other agents are not affected.
        granted(book.admit(&call("reviewer", 100, 100), t0, WALL));
    }

    #[test]
    fn a_call_that_cannot_fit_is_refused_before_the_budget_is_spent() {
        let t0 = Instant::now();
        let mut book = priced_book(t0);
        book.set_budget(Scope::Global, budget(None, Some(1000), BudgetWindow::Run));
        match book.admit(&call("coder", 600, 500), t0, WALL) {
            Admission::Exhausted {
                reason,
                resets_at_ms,
                ..
            } => {
                assert_eq!(
                    reason,
                    "global run token budget: spent 0 of 1000 tokens, this call may use up to 1100"
                );
                assert_eq!(resets_at_ms, None);
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        granted(book.admit(&call("coder", 500, 500), t0, WALL));
    }

    #[test]
    fn exhaustion_says_whether_to_wait_or_fail() {
        let t0 = Instant::now();
        let mut book = priced_book(t0);
        let waits = BudgetSpec {
            on_exhausted: OnExhausted::Wait,
            ..budget(None, Some(0), BudgetWindow::Hour)
        };
        book.set_budget(agent("patient"), waits);
        book.set_budget(agent("strict"), budget(None, Some(0), BudgetWindow::Hour));
        let answer = |book: &mut QuotaBook, name| match book.admit(&call(name, 1, 1), t0, WALL) {
            Admission::Exhausted {
                on_exhausted,
                resets_at_ms,
                ..
            } => (on_exhausted, resets_at_ms),
            other => panic!("expected exhaustion, got {other:?}"),
        };
        let reset = Some(WALL + HOUR_MS);
        assert_eq!(answer(&mut book, "patient"), (OnExhausted::Wait, reset));
        assert_eq!(answer(&mut book, "strict"), (OnExhausted::Fail, reset));
    }

    #[test]
    fn calls_in_flight_make_a_budget_wait_rather_than_fail() {
        let t0 = Instant::now();
        let mut book = priced_book(t0);
        book.set_budget(agent("coder"), budget(Some(0.005), None, BudgetWindow::Day));
        let first = granted(book.admit(&call("coder", 100, 100), t0, WALL));
        granted(book.admit(&call("coder", 100, 100), t0, WALL));
        match book.admit(&call("coder", 100, 100), t0, WALL) {
            Admission::Wait {
                until,
                scope,
                reason,
            } => {
                assert_eq!((until, scope), (None, agent("coder")));
                assert!(
                    reason.contains("$0.0040 reserved by calls in flight"),
                    "{reason}"
                );
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        book.settle(first, Some(usage(10, 10)), t0, WALL);
        granted(book.admit(&call("coder", 100, 100), t0, WALL));
    }

    #[test]
    fn the_soft_notice_fires_once_per_window() {
        let t0 = Instant::now();
        let mut book = QuotaBook::new(t0);
        let spec = BudgetSpec {
            soft_fraction: 0.5,
            ..budget(None, Some(1000), BudgetWindow::Hour)
        };
        book.set_budget(agent("coder"), spec);
        let spend = |book: &mut QuotaBook, wall, n| {
            let id = granted(book.admit(&call("coder", 0, n), t0, wall));
            book.settle(id, Some(usage(0, n)), t0, wall)
        };
        assert_eq!(spend(&mut book, WALL, 300), vec![]);
        let soft = spend(&mut book, WALL, 300);
        assert_eq!(
            soft,
            vec![QuotaNotice::SoftLimit {
                scope: agent("coder"),
                window: BudgetWindow::Hour,
                spent_usd: 0.0,
                spent_tokens: 600,
                fraction: 0.6
            }]
        );
        assert_eq!(spend(&mut book, WALL, 100), vec![]);
        let next_hour = WALL + HOUR_MS;
        assert_eq!(spend(&mut book, next_hour, 400), vec![]);
        assert_eq!(spend(&mut book, next_hour, 200).len(), 1);
    }

    #[test]
    fn a_new_window_resets_spending() {
        let t0 = Instant::now();
        let mut book = QuotaBook::new(t0);
        book.set_budget(agent("coder"), budget(None, Some(500), BudgetWindow::Hour));
        let id = granted(book.admit(&call("coder", 0, 500), t0, WALL));
        book.settle(id, Some(usage(0, 500)), t0, WALL);
        assert!(matches!(
            book.admit(&call("coder", 0, 1), t0, WALL + HOUR_MS - 1),
            Admission::Exhausted { .. }
        ));
        let next = WALL + HOUR_MS;
        // Admitted in one hour, settled in the next: the spending counts where it settles.
        let id = granted(book.admit(&call("coder", 0, 200), t0, next));
        book.settle(id, Some(usage(0, 150)), t0, next + HOUR_MS);
        let later = next + HOUR_MS;
        let b = status_of(&mut book, &agent("coder"), t0, later).budget;
        let b = b.unwrap_or_else(|| panic!("no budget status"));
        assert_eq!(
            (b.window_start_ms, b.resets_at_ms),
            (later, Some(later + HOUR_MS))
        );
        assert_eq!((b.spent_tokens, b.remaining_tokens), (150, Some(350)));
        assert!(!b.soft_reached && !b.exhausted);
    }

    #[test]
    fn restore_keeps_the_current_window_and_drops_older_ones() {
        let t0 = Instant::now();
        let spec = budget(Some(1.0), Some(1000), BudgetWindow::Hour);
        let mut first = priced_book(t0);
        first.set_budget(agent("coder"), spec.clone());
        let id = granted(first.admit(&call("coder", 450, 450), t0, WALL));
        let notices = first.settle(id, Some(usage(450, 400)), t0, WALL);
        assert_eq!(notices.len(), 1, "soft limit at 85%");
        let rows = first.counters();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].scope.as_str(),
                rows[0].window,
                rows[0].window_start_ms
            ),
            ("agent:coder", BudgetWindow::Hour, WALL)
        );

        let mut same = priced_book(t0);
        same.set_budget(agent("coder"), spec.clone());
        same.restore(&rows, WALL + 10);
        assert_eq!(same.counters(), rows);
        // The soft notice fired before the restart; it does not fire again.
        let id = granted(same.admit(&call("coder", 10, 10), t0, WALL + 20));
        assert_eq!(same.settle(id, Some(usage(10, 10)), t0, WALL + 20), vec![]);

        let mut later = priced_book(t0);
        later.set_budget(agent("coder"), spec);
        later.restore(&rows, WALL + HOUR_MS);
        let c = &later.counters()[0];
        assert_eq!(
            (c.window_start_ms, c.spent_tokens, c.spent_usd),
            (WALL + HOUR_MS, 0, 0.0)
        );
    }

    #[test]
    fn dirty_counters_are_handed_out_once() {
        let t0 = Instant::now();
        let mut book = QuotaBook::new(t0);
        book.set_budget(agent("a"), budget(None, None, BudgetWindow::Day));
        book.set_budget(agent("b"), budget(None, None, BudgetWindow::Day));
        assert_eq!(book.take_dirty_counters(), vec![]);
        let id = granted(book.admit(&call("a", 5, 5), t0, WALL));
        book.settle(id, Some(usage(5, 3)), t0, WALL);
        let dirty = book.take_dirty_counters();
        assert_eq!(dirty.len(), 1);
        assert_eq!(
            (dirty[0].scope.as_str(), dirty[0].spent_tokens),
            ("agent:a", 8)
        );
        assert_eq!(book.take_dirty_counters(), vec![]);
        assert_eq!(book.spent_total(), (0.0, 8));
    }

    fn limited_book(now: Instant) -> QuotaBook {
        let mut book = priced_book(now);
        let full = RateSpec {
            tokens: Some(60_000),
            requests: Some(600),
            per: MINUTE,
            burst_tokens: Some(6000),
            burst_requests: Some(60),
        };
        book.set_rate(Scope::Global, full.clone(), now);
        book.set_rate(Scope::Backend("openai".into()), full, now);
        book.set_rate(agent("coder"), tokens_per_minute(600, 100), now);
        book
    }

    #[test]
    fn a_failed_call_gives_everything_back() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        book.set_budget(
            Scope::Workflow("wf".into()),
            budget(Some(1.0), None, BudgetWindow::Run),
        );
        let id = granted(book.admit(&call("coder", 50, 50), t0, WALL));
        let g = status_of(&mut book, &Scope::Global, t0, WALL);
        assert_eq!(
            (g.tokens_available, g.requests_available, g.in_flight),
            (Some(5900), Some(59), 1)
        );
        assert_eq!(book.settle(id, None, t0, WALL), vec![]);
        for s in book.status(t0, WALL) {
            assert_eq!(s.tokens_available, s.tokens_capacity, "{}", s.scope);
            assert_eq!(s.requests_available, s.requests_capacity, "{}", s.scope);
            assert_eq!(s.in_flight, 0);
        }
        assert_eq!((book.outstanding(), book.in_flight("openai")), (0, 0));
        assert_eq!(book.spent_total(), (0.0, 0));
        let wf = book.budgets.get(&Scope::Workflow("wf".into()));
        assert_eq!(
            wf.map(|b| (b.reserved_calls, b.reserved_usd)),
            Some((0, 0.0))
        );
    }

    #[test]
    fn an_overshoot_is_charged_as_debt() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        let id = granted(book.admit(&call("coder", 60, 40), t0, WALL));
        book.settle(id, Some(usage(60, 190)), t0, WALL);
        let s = status_of(&mut book, &agent("coder"), t0, WALL);
        assert_eq!(s.tokens_available, Some(0));
        let debt = book
            .rates
            .get_mut(&agent("coder"))
            .and_then(|r| r.tokens.as_mut());
        assert_eq!(debt.map(|b| b.debt(t0)), Some(150));
        // 10 tokens a second: 150 of debt, then 100 to refill the bucket.
        let s = status_of(
            &mut book,
            &agent("coder"),
            t0 + Duration::from_secs(25),
            WALL,
        );
        assert_eq!(s.tokens_available, Some(100));
    }

    #[test]
    fn a_refusal_takes_nothing_and_answers_the_longest_wait() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        let one_request = RateSpec {
            tokens: None,
            requests: Some(60),
            per: MINUTE,
            burst_tokens: None,
            burst_requests: Some(1),
        };
        book.set_rate(Scope::Workflow("wf".into()), one_request, t0);
        granted(book.admit(&call("coder", 50, 50), t0, WALL));
        match book.admit(&call("coder", 50, 50), t0, WALL) {
            Admission::Wait {
                until,
                scope,
                reason,
            } => {
                assert_eq!(until, Some(t0 + Duration::from_secs(10)));
                assert_eq!(scope, agent("coder"));
                assert_eq!(
                    reason,
                    "agent:coder tokens per minute: 0 of 100 left, needs 100"
                );
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        let g = status_of(&mut book, &Scope::Global, t0, WALL);
        assert_eq!(
            (g.tokens_available, g.requests_available),
            (Some(5900), Some(59))
        );
        assert_eq!(book.outstanding(), 1);
    }

    #[test]
    fn a_concurrency_limit_waits_for_a_release() {
        let t0 = Instant::now();
        let mut book = QuotaBook::new(t0);
        book.set_concurrency("openai", 2);
        let a = granted(book.admit(&call("x", 1, 1), t0, WALL));
        granted(book.admit(&call("y", 1, 1), t0, WALL));
        assert_eq!(
            book.admit(&call("z", 1, 1), t0, WALL),
            Admission::Wait {
                until: None,
                scope: Scope::Backend("openai".into()),
                reason: "backend:openai: 2 of 2 calls in flight".into()
            }
        );
        book.settle(a, Some(usage(1, 1)), t0, WALL);
        granted(book.admit(&call("z", 1, 1), t0, WALL));
        let s = status_of(&mut book, &Scope::Backend("openai".into()), t0, WALL);
        assert_eq!((s.in_flight, s.concurrency_limit), (2, Some(2)));
    }

    #[test]
    fn the_server_can_lower_a_bucket_and_hold_a_backend() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        let backend = Scope::Backend("openai".into());
        book.observe_server("openai", Some(100), Some(1000), None, None, None, t0);
        let s = status_of(&mut book, &backend, t0, WALL);
        assert_eq!(
            (s.tokens_available, s.requests_available),
            (Some(1000), Some(60))
        );
        assert_eq!(book.server_corrections(), 1);
        book.observe_server("openai", None, Some(5000), None, None, None, t0);
        assert_eq!(
            book.server_corrections(),
            1,
            "a higher count raises nothing"
        );
        book.observe_server("openai", None, None, None, None, Some(MINUTE / 30), t0);
        match book.admit(&call("coder", 1, 1), t0, WALL) {
            Admission::Wait { until, scope, .. } => {
                assert_eq!((until, scope), (Some(t0 + MINUTE / 30), backend));
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        granted(book.admit(&call("coder", 1, 1), t0 + MINUTE / 30, WALL));
    }

    #[test]
    fn a_backend_without_buckets_still_honours_retry_after() {
        let t0 = Instant::now();
        let mut book = QuotaBook::new(t0);
        let later = t0 + Duration::from_secs(3);
        book.observe_server(
            "openai",
            Some(0),
            Some(0),
            None,
            None,
            Some(Duration::from_secs(3)),
            t0,
        );
        assert!(matches!(
            book.admit(&call("coder", 1, 1), t0, WALL),
            Admission::Wait { until: Some(t), .. } if t == later
        ));
        assert_eq!(book.server_corrections(), 0);
        granted(book.admit(&call("coder", 1, 1), later, WALL));
    }

    #[test]
    fn unknown_and_settled_ids_are_ignored() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        assert_eq!(book.settle(ReservationId(42), None, t0, WALL), vec![]);
        let id = granted(book.admit(&call("coder", 10, 10), t0, WALL));
        book.settle(id, Some(usage(10, 10)), t0, WALL);
        book.settle(id, None, t0, WALL);
        let s = status_of(&mut book, &agent("coder"), t0, WALL);
        assert_eq!(s.tokens_available, Some(80));
        assert_eq!(book.outstanding(), 0);
    }

    #[test]
    fn status_is_sorted_and_serializes_scopes_and_windows_as_text() {
        let t0 = Instant::now();
        let mut book = limited_book(t0);
        book.set_budget(agent("coder"), budget(Some(2.0), None, BudgetWindow::Day));
        book.set_concurrency("openai", 4);
        let scopes: Vec<String> = book
            .status(t0, WALL)
            .iter()
            .map(|s| s.scope.key())
            .collect();
        assert_eq!(scopes, ["global", "backend:openai", "agent:coder"]);
        let s = status_of(&mut book, &agent("coder"), t0, WALL);
        let json = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(json["scope"], "agent:coder");
        assert_eq!(json["budget"]["window"], "day");
        assert_eq!(json["budget"]["remaining_usd"], 2.0);
    }

    /// A book with rate limits on every scope and tracking budgets (no limits).
    fn busy_book(now: Instant) -> QuotaBook {
        let mut book = priced_book(now);
        let spec = |tokens, burst| RateSpec {
            tokens: Some(tokens),
            requests: Some(tokens / 10),
            per: MINUTE,
            burst_tokens: Some(burst),
            burst_requests: None,
        };
        book.set_rate(Scope::Global, spec(600_000, 50_000), now);
        book.set_rate(Scope::Backend("openai".into()), spec(300_000, 20_000), now);
        for name in ["a", "b", "c"] {
            book.set_rate(agent(name), spec(60_000, 5000), now);
        }
        book.set_budget(Scope::Global, budget(None, None, BudgetWindow::Day));
        book.set_budget(agent("a"), budget(None, None, BudgetWindow::Hour));
        book
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit {
            agent: usize,
            prompt: u64,
            max: u64,
        },
        Settle {
            pick: usize,
            outcome: Option<(u64, u64)>,
        },
    }

    fn op() -> impl Strategy<Value = (u64, Op)> {
        let op = prop_oneof![
            (0..3usize, 0..3000u64, 0..3000u64).prop_map(|(agent, prompt, max)| Op::Admit {
                agent,
                prompt,
                max
            }),
            (any::<usize>(), prop::option::of((0..4000u64, 0..4000u64)))
                .prop_map(|(pick, outcome)| Op::Settle { pick, outcome }),
        ];
        (0..5000u64, op)
    }

    const AGENTS: [&str; 3] = ["a", "b", "c"];

    /// Tokens and requests used by settled calls, per scope.
    type Used = HashMap<Scope, (u64, u64)>;

    /// Runs `ops` against `book`; `timed` advances the clocks. Answers the reservations left,
    /// the clock and what settled calls used.
    fn run_ops(
        book: &mut QuotaBook,
        ops: &[(u64, Op)],
        t0: Instant,
        timed: bool,
    ) -> (Vec<ReservationId>, Instant, Used) {
        let (mut now, mut wall) = (t0, WALL);
        let mut live: Vec<(ReservationId, Vec<Scope>)> = Vec::new();
        let mut used = Used::new();
        for (gap, op) in ops {
            if timed {
                now += Duration::from_millis(*gap);
                wall += gap;
            }
            match *op {
                Op::Admit { agent, prompt, max } => {
                    let req = call(AGENTS[agent], prompt, max);
                    if let Admission::Granted(id) = book.admit(&req, now, wall) {
                        live.push((id, req.scopes()));
                    }
                }
                Op::Settle { pick, outcome } if !live.is_empty() => {
                    let (id, scopes) = live.swap_remove(pick % live.len());
                    let actual = outcome.map(|(p, c)| usage(p, c));
                    if let Some(u) = &actual {
                        for s in scopes {
                            let e = used.entry(s).or_default();
                            *e = (e.0 + used_tokens(u), e.1 + 1);
                        }
                    }
                    book.settle(id, actual, now, wall);
                }
                Op::Settle { .. } => {}
            }
        }
        (live.into_iter().map(|(id, _)| id).collect(), now, used)
    }

    fn assert_nothing_reserved(book: &QuotaBook) -> Result<(), TestCaseError> {
        prop_assert_eq!(book.outstanding(), 0);
        prop_assert_eq!(book.in_flight("openai"), 0);
        for b in book.budgets.values() {
            prop_assert_eq!((b.reserved_calls, b.reserved_tokens), (0, 0));
            prop_assert_eq!(b.reserved_usd, 0.0);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// At one instant (no refill), after every reservation is settled each bucket holds its
        /// capacity less exactly the tokens the settled calls used (debt included).
        #[test]
        fn every_reservation_is_released_or_reconciled(ops in prop::collection::vec(op(), 1..80)) {
            let t0 = Instant::now();
            let mut book = busy_book(t0);
            let (left, now, used) = run_ops(&mut book, &ops, t0, false);
            for id in left {
                book.settle(id, None, now, WALL);
            }
            assert_nothing_reserved(&book)?;
            for (scope, rate) in book.rates.iter_mut() {
                let (tokens, requests) = used.get(scope).copied().unwrap_or_default();
                let buckets = [(rate.tokens.as_mut(), tokens), (rate.requests.as_mut(), requests)];
                for (bucket, used) in buckets {
                    let Some(b) = bucket else { continue };
                    let net = b.available(now) as i128 - b.debt(now) as i128;
                    let want = b.capacity() as i128 - used as i128;
                    prop_assert_eq!(net, want, "{}", scope);
                }
            }
        }

        /// With time passing and every call failing, buckets end where refill alone puts them:
        /// full.
        #[test]
        fn failed_calls_leave_buckets_as_refill_alone_would(
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let t0 = Instant::now();
            let mut book = busy_book(t0);
            let failing: Vec<(u64, Op)> = ops
                .into_iter()
                .map(|(gap, op)| match op {
                    Op::Settle { pick, .. } => (gap, Op::Settle { pick, outcome: None }),
                    admit => (gap, admit),
                })
                .collect();
            let (left, now, _) = run_ops(&mut book, &failing, t0, true);
            for id in left {
                book.settle(id, None, now, WALL);
            }
            assert_nothing_reserved(&book)?;
            for s in book.status(now, WALL) {
                prop_assert_eq!(s.tokens_available, s.tokens_capacity, "{}", s.scope);
                prop_assert_eq!(s.requests_available, s.requests_capacity, "{}", s.scope);
            }
        }

        /// The tokens a budget window counts are the sum of the calls settled in it.
        #[test]
        fn window_spending_is_the_sum_of_settled_actuals(
            ops in prop::collection::vec((0..900_000u64, 0..4u8, 1..500u64, 0..500u64), 1..80),
        ) {
            let t0 = Instant::now();
            let mut book = QuotaBook::new(t0);
            book.set_budget(agent("a"), budget(None, None, BudgetWindow::Hour));
            let mut wall = WALL;
            let mut model: HashMap<u64, u64> = HashMap::new();
            let mut live = Vec::new();
            let mut total = 0;
            for (gap, what, p, c) in ops {
                wall += gap;
                if what == 0 && !live.is_empty() {
                    let id = live.remove(0);
                    book.settle(id, Some(usage(p, c)), t0, wall);
                    *model.entry(BudgetWindow::Hour.start_ms(wall)).or_default() += p + c;
                    total += p + c;
                    let row = &book.counters()[0];
                    prop_assert_eq!(row.window_start_ms, BudgetWindow::Hour.start_ms(wall));
                    prop_assert_eq!(Some(&row.spent_tokens), model.get(&row.window_start_ms));
                } else if let Admission::Granted(id) = book.admit(&call("a", p, c), t0, wall) {
                    live.push(id);
                }
            }
            prop_assert_eq!(book.spent_total().1, total);
        }

        /// With many calls in flight using at most what they reserved, the tokens a TPM bucket
        /// hands out (grants less refunds) over any interval `T` stay within
        /// `burst + limit * T / per`, so within `limit + burst` over any minute.
        #[test]
        fn a_tpm_bucket_never_grants_more_than_limit_plus_burst(
            limit in 1000..20_000u64,
            burst in 50..2000u64,
            ops in prop::collection::vec(
                (0..3000u64, any::<bool>(), 1..=2000u64, 0.0..=1.0f64),
                1..200,
            ),
        ) {
            let t0 = Instant::now();
            let mut book = QuotaBook::new(t0);
            book.set_rate(agent("a"), tokens_per_minute(limit, burst), t0);
            let mut now = t0;
            let mut live: Vec<(ReservationId, u64, u64)> = Vec::new();
            let mut events: Vec<(Instant, i64)> = Vec::new();
            for (gap, settle, size, used) in ops {
                now += Duration::from_millis(gap);
                if settle && !live.is_empty() {
                    let (id, need, actual) = live.remove(size as usize % live.len());
                    book.settle(id, Some(usage(0, actual)), now, WALL);
                    events.push((now, -((need - actual) as i64)));
                    continue;
                }
                let need = size.min(burst);
                if let Admission::Granted(id) = book.admit(&call("a", 0, need), now, WALL) {
                    live.push((id, need, (need as f64 * used) as u64));
                    events.push((now, need as i64));
                }
            }
            let rate = limit as f64 / 60.0;
            for (i, &(start, _)) in events.iter().enumerate() {
                let mut net = 0i64;
                for &(t, n) in &events[i..] {
                    net += n;
                    let bound = burst as f64 + rate * (t - start).as_secs_f64();
                    prop_assert!(net as f64 <= bound + 1e-3, "{} > {}", net, bound);
                }
            }
        }
    }
}
