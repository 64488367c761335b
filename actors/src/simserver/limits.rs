//! The sim-server's OpenAI-style rate limits, and the accounting `/healthz` reports.
//!
//! # Enforcement
//! `requests_per_window` and `tokens_per_window` are two token buckets, over the whole server
//! (every replica together), as OpenAI's limits are. Each holds at most its limit, starts
//! full and refills continuously at `limit / limit_window`. A request is charged when it
//! arrives ([`RateLimits::admit`]): one request, and its prompt tokens plus its `max_tokens`
//! (or [`DEFAULT_COMPLETION_ESTIMATE`] when the request sets none). If either bucket lacks
//! its amount, nothing is charged and the request is refused (HTTP 429); a request whose
//! amount exceeds the limit itself can never pass and is refused as too large. Once the reply
//! is generated, the charge is settled against the real usage ([`Charge::settle`]): the unused
//! part of `max_tokens` is given back, and usage beyond the charge (a reply longer than the
//! default estimate) is taken, which may leave the bucket in debt. A request that produces no
//! reply (an error, a hang, a full queue, a client that hung up) gets its tokens back; its
//! request stays counted.
//!
//! The buckets count in exact integer units (a token is `limit_window` in nanoseconds of
//! units, and a nanosecond refills `limit` units), so figures do not drift.
//!
//! Note that a bucket admits up to twice its limit within one window: a full bucket at the
//! start of the window plus a window's refill. That is how a token bucket (and OpenAI) works;
//! a client that paces itself to `limit / window` stays within the limit.
//!
//! # Accounting
//! [`RateLimits::health`] reports accepted and limited requests, the real tokens of accepted
//! requests, and the busiest window: the most requests, and the most real tokens, accepted in
//! any window `[t, t + limit_window)`. A request's tokens are attributed to its **arrival**
//! (they are known only when its reply is done, but it was admitted, and charged, then); with
//! that attribution the figure is exact: every window whose sum a completion changes is
//! recomputed, and entries are kept until no window they share with a request still in flight
//! can exist.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentos_runtime::llm::ratelimit::{
    format_reset, LIMIT_REQUESTS, LIMIT_TOKENS, REMAINING_REQUESTS, REMAINING_TOKENS,
    RESET_REQUESTS, RESET_TOKENS,
};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::config::MAX_LIMIT_WINDOW;
use super::SimServerConfig;

/// Completion tokens charged at arrival for a request that sets neither `max_tokens` nor
/// `max_completion_tokens`; the charge is settled against the real usage afterwards.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Which limit refused a request (the OpenAI error `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `requests_per_window`.
    Requests,
    /// `tokens_per_window`.
    Tokens,
}

impl LimitKind {
    /// `requests` or `tokens`, as OpenAI spells the error type.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
        }
    }
}

/// One bucket as a reply's headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketView {
    /// The limit per window.
    pub limit: u64,
    /// Whole units left (0 while in debt).
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// Both buckets at one moment; `None` for a limit that is not configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The request bucket.
    pub requests: Option<BucketView>,
    /// The token bucket.
    pub tokens: Option<BucketView>,
}

impl Snapshot {
    /// Writes the `x-ratelimit-*` headers of the configured limits into `headers`.
    pub fn write(&self, headers: &mut HeaderMap) {
        let pairs = [
            (
                self.requests,
                LIMIT_REQUESTS,
                REMAINING_REQUESTS,
                RESET_REQUESTS,
            ),
            (self.tokens, LIMIT_TOKENS, REMAINING_TOKENS, RESET_TOKENS),
        ];
        for (view, limit, remaining, reset) in pairs {
            let Some(v) = view else { continue };
            headers.insert(HeaderName::from_static(limit), v.limit.into());
            headers.insert(HeaderName::from_static(remaining), v.remaining.into());
            // Go duration syntax is plain ASCII, always a valid header value.
            if let Ok(value) = HeaderValue::from_str(&format_reset(v.reset)) {
                headers.insert(HeaderName::from_static(reset), value);
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused it.
    pub kind: LimitKind,
    /// That limit, per window.
    pub limit: u64,
    /// Whole units left in its bucket.
    pub remaining: u64,
    /// What the request asked of it.
    pub requested: u64,
    /// The request can never pass: it asks more than the limit itself.
    pub too_large: bool,
    /// Time until the bucket holds `requested` (a whole window when it never will).
    pub wait: Duration,
    /// The buckets as they stand (nothing was charged).
    pub snapshot: Snapshot,
}

impl Refusal {
    /// `Retry-After` in whole seconds: the wait rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64
    }

    /// The OpenAI-style error message, for `model` and a window of `window`.
    pub fn message(&self, model: &str, window: Duration) -> String {
        let kind = self.kind.name();
        let window = format_reset(window);
        if self.too_large {
            format!(
                "Request too large for {model} on {kind} per {window}: limit {}, requested {}. \
                 The prompt or max_tokens must be reduced; retrying cannot help.",
                self.limit, self.requested
            )
        } else {
            format!(
                "Rate limit reached for {kind} on {model} per {window}: limit {}, remaining {}, \
                 requested {}. Please try again in {}.",
                self.limit,
                self.remaining,
                self.requested,
                format_reset(self.wait)
            )
        }
    }
}

/// A token bucket in exact integer units: a whole unit of the limit is `window_nanos` units,
/// and each nanosecond refills `limit` units.
#[derive(Debug)]
struct Bucket {
    limit: u64,
    window_nanos: i128,
    /// Units held; negative while in debt.
    level: i128,
    at: Instant,
}

impl Bucket {
    fn new(limit: u64, window: Duration, now: Instant) -> Self {
        let window_nanos = i128::try_from(window.as_nanos())
            .unwrap_or(i128::MAX)
            .max(1);
        let mut bucket = Self {
            limit,
            window_nanos,
            level: 0,
            at: now,
        };
        bucket.level = bucket.capacity();
        bucket
    }

    fn capacity(&self) -> i128 {
        i128::from(self.limit).saturating_mul(self.window_nanos)
    }

    fn units(&self, amount: u64) -> i128 {
        i128::from(amount).saturating_mul(self.window_nanos)
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.at {
            return;
        }
        let elapsed = i128::try_from(now.duration_since(self.at).as_nanos()).unwrap_or(i128::MAX);
        let gained = elapsed.saturating_mul(i128::from(self.limit));
        self.level = self.level.saturating_add(gained).min(self.capacity());
        self.at = now;
    }

    /// Nanoseconds of refill until the bucket holds `units`, rounded up.
    fn nanos_until(&self, units: i128) -> Duration {
        let missing = units.saturating_sub(self.level).max(0);
        let per_nano = i128::from(self.limit.max(1));
        // Rounded up; both are non-negative.
        let nanos = missing / per_nano + i128::from(missing % per_nano != 0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn view(&self) -> BucketView {
        BucketView {
            limit: self.limit,
            remaining: u64::try_from(self.level.max(0) / self.window_nanos).unwrap_or(u64::MAX),
            reset: self.nanos_until(self.capacity()),
        }
    }

    /// A refusal if the bucket lacks `amount`.
    fn lacks(&self, kind: LimitKind, amount: u64) -> Option<Refusal> {
        let units = self.units(amount);
        if units <= self.level {
            return None;
        }
        let too_large = amount > self.limit;
        Some(Refusal {
            kind,
            limit: self.limit,
            remaining: self.view().remaining,
            requested: amount,
            too_large,
            wait: if too_large {
                Duration::from_nanos(u64::try_from(self.window_nanos).unwrap_or(u64::MAX))
            } else {
                self.nanos_until(units)
            },
            snapshot: Snapshot::default(),
        })
    }
}

/// The server's rate limits and accounting (see the [module docs](self)).
#[derive(Debug)]
pub struct RateLimits {
    window: Duration,
    tokens_per_window: Option<u64>,
    requests_per_window: Option<u64>,
    // A std mutex: it is held for a few arithmetic steps, never across an await. Poisoning is
    // ignored: nothing in the critical sections panics, and every update leaves the state
    // consistent.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    accepted_requests: u64,
    limited_requests: u64,
    accepted_tokens: u64,
    /// Arrivals of accepted requests within the last window, oldest first.
    arrivals: VecDeque<Instant>,
    max_window_requests: u64,
    /// (arrival, real tokens) of completed requests that may still share a window with a
    /// future completion, sorted by arrival.
    completed: VecDeque<(Instant, u64)>,
    max_window_tokens: u64,
    /// Arrivals of admitted requests not yet settled, with their counts.
    in_flight: BTreeMap<Instant, usize>,
}

impl RateLimits {
    /// The limits of `cfg`, with full buckets as of `now`. A window outside what the config
    /// accepts (1 ms ..= [`MAX_LIMIT_WINDOW`]; possible only for a config built by hand) is
    /// clamped into it.
    pub fn new(cfg: &SimServerConfig, now: Instant) -> Self {
        let window = cfg
            .limit_window
            .clamp(Duration::from_millis(1), MAX_LIMIT_WINDOW);
        Self {
            window,
            tokens_per_window: cfg.tokens_per_window,
            requests_per_window: cfg.requests_per_window,
            state: Mutex::new(State {
                requests: cfg.requests_per_window.map(|l| Bucket::new(l, window, now)),
                tokens: cfg.tokens_per_window.map(|l| Bucket::new(l, window, now)),
                accepted_requests: 0,
                limited_requests: 0,
                accepted_tokens: 0,
                arrivals: VecDeque::new(),
                max_window_requests: 0,
                completed: VecDeque::new(),
                max_window_tokens: 0,
                in_flight: BTreeMap::new(),
            }),
        }
    }

    /// Whether a token limit is configured (only then are prompts counted at arrival).
    pub fn limits_tokens(&self) -> bool {
        self.tokens_per_window.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The buckets as of `now`, charging nothing.
    pub fn peek(&self, now: Instant) -> Snapshot {
        let mut state = self.lock();
        state.refill(now);
        state.snapshot()
    }

    /// Admits a request arriving at `now` that asks for `tokens` (prompt + `max_tokens`), or
    /// refuses it. An admitted request is charged one request and `tokens`; the [`Charge`]
    /// gives the tokens back when dropped unless it is settled.
    pub fn admit(&self, now: Instant, tokens: u64) -> Result<Charge<'_>, Refusal> {
        let mut state = self.lock();
        state.refill(now);
        let refusal = state
            .requests
            .as_ref()
            .and_then(|b| b.lacks(LimitKind::Requests, 1))
            .or_else(|| {
                state
                    .tokens
                    .as_ref()
                    .and_then(|b| b.lacks(LimitKind::Tokens, tokens))
            });
        if let Some(mut refusal) = refusal {
            state.limited_requests += 1;
            refusal.snapshot = state.snapshot();
            return Err(refusal);
        }
        if let Some(b) = &mut state.requests {
            b.level -= b.units(1);
        }
        if let Some(b) = &mut state.tokens {
            b.level = b.level.saturating_sub(b.units(tokens));
        }
        state.accepted_requests += 1;
        state.arrivals.push_back(now);
        while state
            .arrivals
            .front()
            .is_some_and(|a| *a + self.window <= now)
        {
            state.arrivals.pop_front();
        }
        state.max_window_requests = state.max_window_requests.max(state.arrivals.len() as u64);
        *state.in_flight.entry(now).or_insert(0) += 1;
        let snapshot = state.snapshot();
        Ok(Charge {
            limits: self,
            arrival: now,
            charged: tokens,
            snapshot,
            settled: false,
        })
    }

    /// Settles the charge of a request that arrived at `arrival`: gives back (or takes) the
    /// difference between `charged` and `real`, and accounts `real` to the busiest window.
    /// `real: None` means the request produced nothing: every charged token comes back.
    fn settle(&self, arrival: Instant, charged: u64, real: Option<u64>, now: Instant) {
        let mut state = self.lock();
        state.refill(now);
        let used = real.unwrap_or(0);
        if let Some(b) = &mut state.tokens {
            let back = i128::from(charged) - i128::from(used);
            b.level = b
                .level
                .saturating_add(back.saturating_mul(b.window_nanos))
                .min(b.capacity());
        }
        if let Some(n) = state.in_flight.get_mut(&arrival) {
            *n -= 1;
            if *n == 0 {
                state.in_flight.remove(&arrival);
            }
        }
        if let Some(real) = real {
            state.accepted_tokens = state.accepted_tokens.saturating_add(real);
            state.account_tokens(arrival, real, self.window);
        }
        state.prune_completed(self.window, now);
    }

    /// The `rate_limits` object of `/healthz`.
    pub fn health(&self) -> Value {
        let state = self.lock();
        json!({
            "limit_window_ms": u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            "tokens_per_window": self.tokens_per_window,
            "requests_per_window": self.requests_per_window,
            "accepted_requests": state.accepted_requests,
            "limited_requests": state.limited_requests,
            "accepted_tokens": state.accepted_tokens,
            "max_window_tokens": state.max_window_tokens,
            "max_window_requests": state.max_window_requests,
        })
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        for b in [&mut self.requests, &mut self.tokens].into_iter().flatten() {
            b.refill(now);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.as_ref().map(Bucket::view),
            tokens: self.tokens.as_ref().map(Bucket::view),
        }
    }

    /// Adds `(arrival, real)` and recomputes every window `[s, s + window)` it falls in, for
    /// `s` an arrival of a completed request (the busiest window starts at one).
    fn account_tokens(&mut self, arrival: Instant, real: u64, window: Duration) {
        let at = self.completed.partition_point(|(a, _)| *a <= arrival);
        self.completed.insert(at, (arrival, real));
        let first = self
            .completed
            .partition_point(|(a, _)| *a + window <= arrival);
        let (mut end, mut sum) = (first, 0u64);
        for start in first..=at {
            let Some(&(s, _)) = self.completed.get(start) else {
                break;
            };
            while let Some(&(a, t)) = self.completed.get(end) {
                if a >= s + window {
                    break;
                }
                sum = sum.saturating_add(t);
                end += 1;
            }
            self.max_window_tokens = self.max_window_tokens.max(sum);
            if let Some(&(_, t)) = self.completed.get(start) {
                sum = sum.saturating_sub(t);
            }
        }
    }

    /// Drops completed entries that can share no window with a request still in flight or
    /// yet to come (those arrive at or after the oldest in-flight arrival, or after `now`).
    fn prune_completed(&mut self, window: Duration, now: Instant) {
        let oldest = self
            .in_flight
            .keys()
            .next()
            .copied()
            .map_or(now, |a| a.min(now));
        while self
            .completed
            .front()
            .is_some_and(|(a, _)| *a + window <= oldest)
        {
            self.completed.pop_front();
        }
    }
}

/// An admitted request's charge. Settle it with the real usage once the reply is generated;
/// dropped unsettled (no reply), it gives every charged token back.
#[derive(Debug)]
pub struct Charge<'a> {
    limits: &'a RateLimits,
    arrival: Instant,
    charged: u64,
    snapshot: Snapshot,
    settled: bool,
}

impl Charge<'_> {
    /// The buckets right after this request was charged: what its reply's headers show.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
    }

    /// Settles the charge against the real usage (prompt + completion tokens) at `now`.
    pub fn settle(mut self, real: u64, now: Instant) {
        self.settled = true;
        self.limits
            .settle(self.arrival, self.charged, Some(real), now);
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limits
                .settle(self.arrival, self.charged, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
