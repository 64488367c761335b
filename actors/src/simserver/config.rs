//! `agentos sim-server --config FILE`: the simulator's settings as a small RON file.
//!
//! ```ron
//! (
//!     model: "agentos-simulator",
//!     seed: 7,
//!     latency: (base_ms: 20, per_prompt_token_us: 20, per_output_token_ms: 0.5),
//!     faults: (error_rate: 0.01, rate_limit_rate: 0.01, hang_rate: 0.0),
//!     // Four replicas, each with its own prefix cache, reached at /r/0/v1 .. /r/3/v1.
//!     replicas: 4,
//!     cache: (block_size: 16, capacity_blocks: 8192),
//!     tokenizer: "o200k_base",
//!     // Per replica: batch slots, and requests waiting for one.
//!     max_concurrent: 16,
//!     max_queue: 1000,
//!     // OpenAI-style limits, all replicas together: at most 200,000 tokens and 500
//!     // requests per 60-second window (token buckets; see below).
//!     tokens_per_window: 200000,
//!     requests_per_window: 500,
//!     limit_window_secs: 60,
//! )
//! ```
//!
//! Every field may be left out; the defaults are those of [`SimServerConfig::default`]: one
//! replica with a prefix cache of the same defaults as a backend's `cache` section in an AgentOS
//! config. `cache: None` turns the prefix caches off (every prompt token is then prefilled and
//! counted with the simulator's approximation instead of the tokenizer). Unknown fields are
//! errors, like everywhere else in AgentOS configs.
//!
//! # Rate limits
//! `tokens_per_window` and `requests_per_window` (each optional; left out means no such
//! limit) make the server enforce limits the way OpenAI does, over the whole server (every
//! replica together): each is a token bucket holding at most the limit and refilled
//! continuously at `limit / limit_window_secs`. A request is charged when it arrives: one
//! request, and its prompt tokens plus its `max_tokens` (or `max_completion_tokens`; without
//! either, [`DEFAULT_COMPLETION_ESTIMATE`](super::limits::DEFAULT_COMPLETION_ESTIMATE)
//! tokens). If a bucket lacks the amount, the reply is HTTP 429 (error `type` `requests` or
//! `tokens`, code `rate_limit_exceeded`) with a `Retry-After` in whole seconds, and nothing is
//! generated. When the reply is done, the part of the charge it did not use is given back.
//! Every chat-completion reply carries `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and
//! `x-ratelimit-reset-*` for the limits configured. `limit_window_secs` defaults to 60 (OpenAI's
//! per-minute limits); benchmarks use short windows such as 2 s so a run sees many of them. It
//! has millisecond precision and is at most a day. Limits of 0, or a window of 0, are errors.

use std::path::Path;
use std::time::Duration;

use agentos_runtime::config::{SimFaults, SimLatency, SimSettings};
use agentos_runtime::kvcache::{
    KvCacheSettings, DEFAULT_BLOCK_SIZE, DEFAULT_CAPACITY_BLOCKS, MAX_BLOCK_SIZE,
    MAX_CAPACITY_BLOCKS,
};
use agentos_runtime::tokenize::Encoding;
use serde::Deserialize;

use super::SimServerError;

/// Validated sim-server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimServerConfig {
    /// Model name reported in replies and by `/v1/models`; says it is a simulator.
    pub model: String,
    /// The simulator's seed, latency model and error/hang rates (panics are never injected:
    /// a crash inside a server would only kill a connection).
    pub sim: SimSettings,
    /// Probability per request of an HTTP 429 with `Retry-After`.
    pub rate_limit_rate: f64,
    /// `Retry-After` sent with a 429 (simulated or queue full).
    pub retry_after: Duration,
    /// Simulated replicas (1..=[`MAX_REPLICAS`]), each with its own prefix cache, batch slots
    /// and queue; replica `i` is served under `/r/{i}/v1`, replica 0 also under `/v1`.
    pub replicas: usize,
    /// Each replica's prefix cache (block size, capacity, salt); `None` means no cache.
    pub cache: Option<KvCacheSettings>,
    /// The encoding prompts are tokenized with for the prefix caches.
    pub tokenizer: Encoding,
    /// Requests each replica serves at the same time (batch slots); `0` means unlimited.
    pub max_concurrent: usize,
    /// Requests waiting for a slot of a replica before new ones to that replica get a 429;
    /// `0` means unlimited.
    pub max_queue: usize,
    /// A simulated hang answers HTTP 504 after this long (it holds its slot meanwhile).
    pub hang_timeout: Duration,
    /// Largest request body accepted; larger ones get HTTP 413.
    pub max_body_bytes: usize,
    /// Tokens (prompt + `max_tokens` at arrival, settled to the real usage) allowed per
    /// `limit_window`, all replicas together; `None` means no token limit.
    pub tokens_per_window: Option<u64>,
    /// Requests allowed per `limit_window`, all replicas together; `None` means no request
    /// limit.
    pub requests_per_window: Option<u64>,
    /// The window the limits refill over (and `/healthz` measures the busiest window with):
    /// whole milliseconds, at most [`MAX_LIMIT_WINDOW`].
    pub limit_window: Duration,
}

/// Default model name.
pub const DEFAULT_MODEL: &str = "agentos-simulator";

/// Most replicas one sim-server simulates (the same bound as a `sim` backend's `replicas`).
pub const MAX_REPLICAS: usize = 1024;

/// Longest `limit_window_secs` accepted: a day.
pub const MAX_LIMIT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for SimServerConfig {
    fn default() -> Self {
        let raw = RawSimServer::default();
        // The raw defaults are valid by construction (checked by a unit test).
        Self::from_raw(raw).unwrap_or_else(|_| unreachable!("defaults are valid"))
    }
}

impl SimServerConfig {
    /// Reads and validates a RON file.
    pub fn load(path: &Path) -> Result<Self, SimServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimServerError::Config {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|message| SimServerError::Config {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates RON text; the error lists every problem, one per line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawSimServer = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| format!("{e}"))?;
        Self::from_raw(raw).map_err(|errors| errors.join("\n"))
    }

    fn from_raw(raw: RawSimServer) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut millis = |name: &str, v: f64, scale: f64| -> Duration {
            match Duration::try_from_secs_f64(v * scale) {
                Ok(d) if v.is_finite() && v <= 3.6e6 / (scale * 1e3) => d,
                _ => {
                    errors.push(format!(
                        "{name} must be a finite number >= 0 (and under an hour), got {v}"
                    ));
                    Duration::ZERO
                }
            }
        };
        let latency = SimLatency {
            base: millis("latency.base_ms", raw.latency.base_ms, 1e-3),
            per_prompt_token: millis(
                "latency.per_prompt_token_us",
                raw.latency.per_prompt_token_us,
                1e-6,
            ),
            per_output_token: millis(
                "latency.per_output_token_ms",
                raw.latency.per_output_token_ms,
                1e-3,
            ),
        };
        let retry_after = millis("retry_after_secs", raw.retry_after_secs, 1.0);
        let hang_timeout = millis("hang_timeout_secs", raw.hang_timeout_secs, 1.0);
        let f = &raw.faults;
        for (name, v) in [
            ("faults.error_rate", f.error_rate),
            ("faults.rate_limit_rate", f.rate_limit_rate),
            ("faults.hang_rate", f.hang_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(format!("{name} must be within 0..=1, got {v}"));
            }
        }
        if f.error_rate + f.rate_limit_rate + f.hang_rate > 1.0 {
            errors.push("faults: the rates must add up to at most 1".into());
        }
        if raw.model.trim().is_empty() {
            errors.push("model must not be empty".into());
        }
        if raw.max_body_bytes < 1024 {
            errors.push(format!(
                "max_body_bytes must be at least 1024, got {}",
                raw.max_body_bytes
            ));
        }
        if !(1..=MAX_REPLICAS).contains(&raw.replicas) {
            errors.push(format!(
                "replicas must be within 1..={MAX_REPLICAS}, got {}",
                raw.replicas
            ));
        }
        let tokenizer = Encoding::from_name(&raw.tokenizer).unwrap_or_else(|| {
            let known: Vec<_> = Encoding::ALL.iter().map(|e| e.name()).collect();
            errors.push(format!(
                "unknown tokenizer {:?}; known encodings: {}",
                raw.tokenizer,
                known.join(", ")
            ));
            Encoding::default()
        });
        let cache = raw.cache.map(|c| cache_settings(c, &mut errors));
        for (name, limit, what) in [
            ("tokens_per_window", raw.tokens_per_window, "token"),
            ("requests_per_window", raw.requests_per_window, "request"),
        ] {
            if limit == Some(0) {
                errors.push(format!(
                    "{name} must be at least 1, got 0 (leave it out for no {what} limit)"
                ));
            }
        }
        let limit_window = limit_window(raw.limit_window_secs, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            model: raw.model,
            sim: SimSettings {
                seed: raw.seed,
                latency,
                faults: SimFaults {
                    error_rate: f.error_rate,
                    panic_rate: 0.0,
                    hang_rate: f.hang_rate,
                },
                // The server queues requests itself (`max_concurrent`).
                slots: 0,
            },
            rate_limit_rate: f.rate_limit_rate,
            retry_after,
            replicas: raw.replicas,
            cache,
            tokenizer,
            max_concurrent: raw.max_concurrent,
            max_queue: raw.max_queue,
            hang_timeout,
            max_body_bytes: raw.max_body_bytes,
            tokens_per_window: raw.tokens_per_window,
            requests_per_window: raw.requests_per_window,
            limit_window,
        })
    }
}

/// `limit_window_secs` as a whole number of milliseconds, within 1 ms ..= a day.
fn limit_window(secs: f64, errors: &mut Vec<String>) -> Duration {
    let max = MAX_LIMIT_WINDOW.as_secs();
    let millis = (secs * 1e3).round();
    if !secs.is_finite() || !(1.0..=max as f64 * 1e3).contains(&millis) {
        errors.push(format!(
            "limit_window_secs must be a number of seconds within 0.001..={max} \
             (millisecond precision), got {secs}"
        ));
        return Duration::from_secs(DEFAULT_LIMIT_WINDOW_SECS);
    }
    // Within 1..=86_400_000, so the cast is exact.
    Duration::from_millis(millis as u64)
}

/// Default `limit_window_secs`: OpenAI's per-minute limits.
const DEFAULT_LIMIT_WINDOW_SECS: u64 = 60;

/// Checks the `cache` section against the bounds an AgentOS config enforces.
fn cache_settings(c: RawCache, errors: &mut Vec<String>) -> KvCacheSettings {
    if !(1..=MAX_BLOCK_SIZE).contains(&c.block_size) {
        errors.push(format!(
            "cache.block_size must be within 1..={MAX_BLOCK_SIZE} tokens, got {}",
            c.block_size
        ));
    }
    if !(1..=MAX_CAPACITY_BLOCKS).contains(&c.capacity_blocks) {
        errors.push(format!(
            "cache.capacity_blocks must be within 1..={MAX_CAPACITY_BLOCKS}, got {}",
            c.capacity_blocks
        ));
    }
    if c.salt.as_deref().is_some_and(str::is_empty) {
        errors.push("cache.salt must not be empty (leave it out for no salt)".into());
    }
    KvCacheSettings {
        block_size: c.block_size,
        capacity_blocks: c.capacity_blocks,
        salt: c.salt,
        // Routing and load slack are the client's business.
        ..KvCacheSettings::default()
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSimServer {
    model: String,
    seed: u64,
    latency: RawLatency,
    faults: RawFaults,
    retry_after_secs: f64,
    replicas: usize,
    cache: Option<RawCache>,
    tokenizer: String,
    max_concurrent: usize,
    max_queue: usize,
    hang_timeout_secs: f64,
    max_body_bytes: usize,
    tokens_per_window: Option<u64>,
    requests_per_window: Option<u64>,
    limit_window_secs: f64,
}

impl Default for RawSimServer {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            seed: 0,
            latency: RawLatency::default(),
            faults: RawFaults::default(),
            retry_after_secs: 1.0,
            replicas: 1,
            cache: Some(RawCache::default()),
            tokenizer: Encoding::default().name().into(),
            max_concurrent: 0,
            max_queue: 0,
            hang_timeout_secs: 60.0,
            max_body_bytes: 4 * 1024 * 1024,
            tokens_per_window: None,
            requests_per_window: None,
            limit_window_secs: DEFAULT_LIMIT_WINDOW_SECS as f64,
        }
    }
}

/// Same units and defaults as the `sim` backend's `latency` in an AgentOS config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLatency {
    base_ms: f64,
    per_prompt_token_us: f64,
    per_output_token_ms: f64,
}

impl Default for RawLatency {
    fn default() -> Self {
        Self {
            base_ms: 20.0,
            per_prompt_token_us: 20.0,
            per_output_token_ms: 0.5,
        }
    }
}

/// Same fields, units and defaults as a backend's `cache` section (routing aside).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCache {
    block_size: usize,
    capacity_blocks: usize,
    salt: Option<String>,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            capacity_blocks: DEFAULT_CAPACITY_BLOCKS,
            salt: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFaults {
    error_rate: f64,
    rate_limit_rate: f64,
    hang_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = SimServerConfig::default();
        assert_eq!(c.model, DEFAULT_MODEL);
        assert_eq!(c.sim.latency.base, Duration::from_millis(20));
        assert_eq!(c.sim.latency.per_prompt_token, Duration::from_micros(20));
        assert_eq!(c.max_concurrent, 0);
        assert_eq!(c.replicas, 1);
        assert_eq!(c.tokenizer, Encoding::O200kBase);
        let cache = c.cache.clone().unwrap();
        assert_eq!(cache.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(cache.capacity_blocks, DEFAULT_CAPACITY_BLOCKS);
        assert_eq!(cache.salt, None);
        assert_eq!((c.tokens_per_window, c.requests_per_window), (None, None));
        assert_eq!(c.limit_window, Duration::from_secs(60));
        assert_eq!(SimServerConfig::parse("()").unwrap(), c);
    }

    #[test]
    fn parses_rate_limits() {
        let c = SimServerConfig::parse(
            "(tokens_per_window: 30000, requests_per_window: 50, limit_window_secs: 2)",
        )
        .unwrap();
        assert_eq!(c.tokens_per_window, Some(30_000));
        assert_eq!(c.requests_per_window, Some(50));
        assert_eq!(c.limit_window, Duration::from_secs(2));
        let c =
            SimServerConfig::parse("(requests_per_window: 3, limit_window_secs: 0.25)").unwrap();
        assert_eq!(
            (c.tokens_per_window, c.requests_per_window),
            (None, Some(3))
        );
        assert_eq!(c.limit_window, Duration::from_millis(250));
        let c = SimServerConfig::parse("(limit_window_secs: 86400)").unwrap();
        assert_eq!(c.limit_window, MAX_LIMIT_WINDOW);
    }

    #[test]
    fn zero_limits_and_bad_windows_are_refused_with_clear_messages() {
        let e = SimServerConfig::parse(
            "(tokens_per_window: 0, requests_per_window: 0, limit_window_secs: 0)",
        )
        .unwrap_err();
        for needle in [
            "tokens_per_window must be at least 1, got 0 (leave it out for no token limit)",
            "requests_per_window must be at least 1, got 0 (leave it out for no request limit)",
            "limit_window_secs must be a number of seconds within 0.001..=86400 \
             (millisecond precision), got 0",
        ] {
            assert!(e.contains(needle), "{needle} missing from: {e}");
        }
        for bad in ["-1", "0.0004", "86400.001", "1e300", "inf", "NaN"] {
            let e = SimServerConfig::parse(&format!("(limit_window_secs: {bad})")).unwrap_err();
            assert!(e.contains("limit_window_secs must be"), "{bad}: {e}");
        }
        // Negative counts fail in the parser, as for every other count in the file.
        let e = SimServerConfig::parse("(tokens_per_window: -5)").unwrap_err();
        assert!(e.contains("1:22") && e.contains("out of bounds"), "{e}");
        let e = SimServerConfig::parse("(limit_window: 2)").unwrap_err();
        assert!(e.contains("limit_window"), "{e}");
    }

    #[test]
    fn parses_every_field() {
        let c = SimServerConfig::parse(
            "(model: \"m\", seed: 3, latency: (base_ms: 0, per_prompt_token_us: 0, \
             per_output_token_ms: 0), faults: (error_rate: 0.1, rate_limit_rate: 0.2, \
             hang_rate: 0.3), retry_after_secs: 2, max_concurrent: 4, max_queue: 5, \
             hang_timeout_secs: 1.5, max_body_bytes: 2048, replicas: 3, \
             cache: (block_size: 8, capacity_blocks: 64, salt: \"team\"), \
             tokenizer: \"cl100k_base\")",
        )
        .unwrap();
        assert_eq!(c.replicas, 3);
        assert_eq!(c.tokenizer, Encoding::Cl100kBase);
        let cache = c.cache.clone().unwrap();
        assert_eq!((cache.block_size, cache.capacity_blocks), (8, 64));
        assert_eq!(cache.salt.as_deref(), Some("team"));
        let off = SimServerConfig::parse("(cache: None, replicas: 2)").unwrap();
        assert_eq!((off.cache, off.replicas), (None, 2));
        assert_eq!(c.sim.seed, 3);
        assert!(c.sim.latency.base.is_zero());
        assert_eq!(c.sim.faults.hang_rate, 0.3);
        assert_eq!(c.sim.faults.panic_rate, 0.0);
        assert_eq!(c.rate_limit_rate, 0.2);
        assert_eq!(c.retry_after, Duration::from_secs(2));
        assert_eq!((c.max_concurrent, c.max_queue), (4, 5));
        assert_eq!(c.hang_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn collects_every_error() {
        let e = SimServerConfig::parse(
            "(model: \" \", latency: (base_ms: -1), faults: (error_rate: 2), \
             max_body_bytes: 10, replicas: 0, tokenizer: \"p50k\", \
             cache: (block_size: 0, capacity_blocks: 16777217, salt: \"\"))",
        )
        .unwrap_err();
        for needle in [
            "latency.base_ms",
            "faults.error_rate",
            "model",
            "max_body_bytes",
            "replicas must be within 1..=1024, got 0",
            "unknown tokenizer \"p50k\"; known encodings: o200k_base, cl100k_base",
            "cache.block_size must be within 1..=4096",
            "cache.capacity_blocks must be within 1..=16777216",
            "cache.salt must not be empty",
        ] {
            assert!(e.contains(needle), "{needle} missing from: {e}");
        }
        let e = SimServerConfig::parse("(sed: 1)").unwrap_err();
        assert!(e.contains("sed"), "{e}");
        let e = SimServerConfig::parse("(replicas: 1025)").unwrap_err();
        assert!(e.contains("got 1025"), "{e}");
        let e = SimServerConfig::parse("(cache: (routing: \"round_robin\"))").unwrap_err();
        assert!(e.contains("routing"), "{e}");
    }
}
