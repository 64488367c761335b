//! Rate limits as a server announces them: OpenAI's `x-ratelimit-*` headers and `Retry-After`.
//!
//! OpenAI (and servers that copy it: Azure OpenAI, Groq, Together, OpenRouter, vLLM behind a
//! gateway) send on every reply how much of the current window is left:
//!
//! | header                           | field of [`RateLimitInfo`] |
//! |----------------------------------|----------------------------|
//! | `x-ratelimit-limit-requests`     | `limit_requests`           |
//! | `x-ratelimit-limit-tokens`       | `limit_tokens`             |
//! | `x-ratelimit-remaining-requests` | `remaining_requests`       |
//! | `x-ratelimit-remaining-tokens`   | `remaining_tokens`         |
//! | `x-ratelimit-reset-requests`     | `reset_requests`           |
//! | `x-ratelimit-reset-tokens`       | `reset_tokens`             |
//! | `retry-after`                    | `retry_after`              |
//!
//! Reset times come in Go's duration syntax (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) or as a bare
//! number of seconds; [`parse_reset`] reads both and [`format_reset`] writes the former (the
//! sim-server uses it). A client that watches these figures through a [`RateLimitObserver`] can
//! slow down before the server refuses, instead of after a storm of 429s.
//!
//! Nothing here panics on what a server sends: a figure that does not parse is left out.

use std::time::Duration;

/// Longest reset time or retry delay taken from a reset header; longer ones are capped to it.
pub const MAX_RESET: Duration = Duration::from_secs(24 * 60 * 60);

/// `x-ratelimit-limit-requests`: requests allowed per window.
pub const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
/// `x-ratelimit-limit-tokens`: tokens allowed per window.
pub const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
/// `x-ratelimit-remaining-requests`: requests left in the current window.
pub const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
/// `x-ratelimit-remaining-tokens`: tokens left in the current window.
pub const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
/// `x-ratelimit-reset-requests`: time until the request allowance is full again.
pub const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
/// `x-ratelimit-reset-tokens`: time until the token allowance is full again.
pub const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
/// `retry-after`: the delay the server asks for before the next try, in seconds.
pub const RETRY_AFTER: &str = "retry-after";

/// What one reply said about the server's rate limits. Every figure is optional: servers send
/// some, all or none of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitInfo {
    /// Requests allowed per window (`x-ratelimit-limit-requests`).
    pub limit_requests: Option<u64>,
    /// Tokens allowed per window (`x-ratelimit-limit-tokens`).
    pub limit_tokens: Option<u64>,
    /// Requests left (`x-ratelimit-remaining-requests`).
    pub remaining_requests: Option<u64>,
    /// Tokens left (`x-ratelimit-remaining-tokens`).
    pub remaining_tokens: Option<u64>,
    /// Time until the request allowance is full again (`x-ratelimit-reset-requests`).
    pub reset_requests: Option<Duration>,
    /// Time until the token allowance is full again (`x-ratelimit-reset-tokens`).
    pub reset_tokens: Option<Duration>,
    /// The delay asked for before the next try (`retry-after`, delta-seconds).
    pub retry_after: Option<Duration>,
    /// HTTP status of the reply the figures came with.
    pub status: u16,
}

impl RateLimitInfo {
    /// Whether the reply carried no figure at all (the status does not count).
    pub fn is_empty(&self) -> bool {
        self.limit_requests.is_none()
            && self.limit_tokens.is_none()
            && self.remaining_requests.is_none()
            && self.remaining_tokens.is_none()
            && self.reset_requests.is_none()
            && self.reset_tokens.is_none()
            && self.retry_after.is_none()
    }
}

/// Told about the rate-limit figures of every reply that carries any (successes, 429s and
/// 5xx alike), before the call returns. Called on the caller's task: keep it cheap and never
/// block.
pub trait RateLimitObserver: Send + Sync {
    /// `backend` (its name in the config) sent `info`.
    fn observe(&self, backend: &str, info: &RateLimitInfo);
}

/// Reads the rate-limit figures of a reply. `get` looks a header up by its lowercase name and
/// must match names case-insensitively, as HTTP clients' header maps do; `status` is the
/// reply's HTTP status. Values that do not parse are left out.
pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>, status: u16) -> RateLimitInfo {
    let count = |name: &str| get(name).and_then(parse_count);
    let reset = |name: &str| get(name).and_then(parse_reset);
    RateLimitInfo {
        limit_requests: count(LIMIT_REQUESTS),
        limit_tokens: count(LIMIT_TOKENS),
        remaining_requests: count(REMAINING_REQUESTS),
        remaining_tokens: count(REMAINING_TOKENS),
        reset_requests: reset(RESET_REQUESTS),
        reset_tokens: reset(RESET_TOKENS),
        retry_after: get(RETRY_AFTER).and_then(parse_retry_after),
        status,
    }
}

/// A count header: a non-negative integer, surrounding whitespace allowed.
fn parse_count(value: &str) -> Option<u64> {
    let value = value.trim();
    // `u64::from_str` accepts a leading `+`; a count is plain digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses a `Retry-After` value given in delta-seconds (integer or decimal). HTTP dates,
/// negative numbers, NaN, infinities, values too large for a [`Duration`] and anything else
/// unparseable give `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses a reset time: Go's duration syntax as OpenAI sends it (`1s`, `6m0s`, `20ms`,
/// `1h2m3.5s`, `0.5s`; units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), or a bare number of seconds
/// (`12`, `1.5`). Surrounding whitespace is allowed. Negative values, signs, exponents, empty
/// strings and anything else give `None`; values over [`MAX_RESET`] (a day) are capped to it.
/// Precision is the nanosecond (finer fractions are dropped).
pub fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let cap = MAX_RESET.as_nanos();
    // A bare number is seconds.
    if let Some((number, "")) = decimal(value) {
        return Some(nanos_to_duration(number.nanos(NANOS_PER_SEC).min(cap)));
    }
    let mut rest = value;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = decimal(rest)?;
        let (unit_nanos, after) = unit(after)?;
        total = total.saturating_add(number.nanos(unit_nanos)).min(cap);
        rest = after;
    }
    Some(nanos_to_duration(total))
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Most fraction digits kept: more than enough for a nanosecond of an hour.
const MAX_FRACTION_DIGITS: u32 = 18;

/// A decimal number read from the front of a string.
struct Decimal {
    /// The integer part, saturated.
    whole: u128,
    /// The fraction part as `numerator / 10^digits`.
    numerator: u128,
    digits: u32,
}

impl Decimal {
    /// The number times `unit` nanoseconds, truncated to whole nanoseconds and saturating.
    fn nanos(&self, unit: u128) -> u128 {
        // numerator < 10^18 and unit <= 3.6 * 10^12, so the product fits in a u128.
        let fraction = self.numerator * unit / 10u128.pow(self.digits);
        self.whole.saturating_mul(unit).saturating_add(fraction)
    }
}

/// Reads `digits[.digits]` (at least one digit on either side of the dot) from the front of
/// `s`; returns the number and the rest.
fn decimal(s: &str) -> Option<(Decimal, &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut whole: u128 = 0;
    for b in s[..int_len].bytes() {
        whole = whole
            .saturating_mul(10)
            .saturating_add(u128::from(b - b'0'));
    }
    let mut rest = &s[int_len..];
    let (mut numerator, mut digits, mut frac_len) = (0u128, 0u32, 0usize);
    if let Some(after_dot) = rest.strip_prefix('.') {
        frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        for b in after_dot[..frac_len].bytes() {
            if digits < MAX_FRACTION_DIGITS {
                numerator = numerator * 10 + u128::from(b - b'0');
                digits += 1;
            }
        }
        rest = &after_dot[frac_len..];
    }
    if int_len == 0 && frac_len == 0 {
        return None;
    }
    Some((
        Decimal {
            whole,
            numerator,
            digits,
        },
        rest,
    ))
}

/// Reads a Go duration unit from the front of `s`; returns its length in nanoseconds and the
/// rest. Two-letter units are tried first (`ms` before `m`).
fn unit(s: &str) -> Option<(u128, &str)> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("h", 3_600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
    ];
    UNITS
        .iter()
        .find_map(|(name, nanos)| s.strip_prefix(name).map(|rest| (*nanos, rest)))
}

fn nanos_to_duration(nanos: u128) -> Duration {
    // Callers cap at MAX_RESET, far below u64::MAX seconds.
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in u32.
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// Formats a reset time the way OpenAI sends it (Go's duration syntax) at millisecond
/// precision, rounding up so a client never waits too little: `0s`, `250ms`, `1s`, `1.5s`,
/// `6m0s`, `1h2m3.5s`. [`parse_reset`] reads it back exactly for whole milliseconds.
pub fn format_reset(d: Duration) -> String {
    let millis = d.as_nanos().div_ceil(1_000_000);
    if millis == 0 {
        return "0s".into();
    }
    if millis < 1_000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, frac) = (rest / 1_000, rest % 1_000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs.to_string());
    if frac > 0 {
        let digits = format!("{frac:03}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn reset_reads_openais_formats() {
        assert_eq!(parse_reset("1s"), ms(1_000));
        assert_eq!(parse_reset("6m0s"), ms(360_000));
        assert_eq!(parse_reset("20ms"), ms(20));
        assert_eq!(parse_reset("1h2m3.5s"), ms(3_723_500));
        assert_eq!(parse_reset("0.5s"), ms(500));
        assert_eq!(parse_reset(".5s"), ms(500));
        assert_eq!(parse_reset("5.s"), ms(5_000));
        assert_eq!(parse_reset("0s"), ms(0));
        assert_eq!(parse_reset(" 17ms "), ms(17));
        assert_eq!(parse_reset("1.5ms"), Some(Duration::from_micros(1_500)));
        assert_eq!(parse_reset("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_reset("250µs"), Some(Duration::from_micros(250)));
        assert_eq!(parse_reset("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_reset("2m"), ms(120_000));
        assert_eq!(parse_reset("1m30s"), ms(90_000));
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_reset("12"), ms(12_000));
        assert_eq!(parse_reset("1.5"), ms(1_500));
        assert_eq!(parse_reset("0"), ms(0));
        assert_eq!(parse_reset("0.001"), ms(1));
    }

    #[test]
    fn garbage_and_negative_resets_are_none() {
        for bad in [
            "", " ", "-1s", "-1", "+1s", "s", "ms", "1x", "1 s", "1s ms", "1.2.3s", "..s", "1e3",
            "inf", "NaN", "1d", "1S", "1hh", "h1", ".", "1s-", "1m-5s",
        ] {
            assert_eq!(parse_reset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn absurd_resets_are_capped_at_a_day() {
        assert_eq!(parse_reset("25h"), Some(MAX_RESET));
        assert_eq!(parse_reset("86401"), Some(MAX_RESET));
        assert_eq!(parse_reset(&"9".repeat(400)), Some(MAX_RESET));
        assert_eq!(
            parse_reset(&format!("{}h", "9".repeat(400))),
            Some(MAX_RESET)
        );
        assert_eq!(
            parse_reset(&format!("0.{}s", "9".repeat(400))),
            Some(Duration::from_nanos(999_999_999))
        );
        assert_eq!(parse_reset(&"1h".repeat(100)), Some(MAX_RESET));
        assert_eq!(parse_reset("24h"), Some(MAX_RESET));
        assert_eq!(parse_reset("23h59m59.999s"), ms(86_399_999));
    }

    #[test]
    fn format_writes_openais_style() {
        let f = |n: u64| format_reset(Duration::from_millis(n));
        assert_eq!(f(0), "0s");
        assert_eq!(f(250), "250ms");
        assert_eq!(f(1_000), "1s");
        assert_eq!(f(1_500), "1.5s");
        assert_eq!(f(1_250), "1.25s");
        assert_eq!(f(59_999), "59.999s");
        assert_eq!(f(360_000), "6m0s");
        assert_eq!(f(3_723_500), "1h2m3.5s");
        assert_eq!(f(3_600_000), "1h0m0s");
        // Sub-millisecond remainders round up.
        assert_eq!(format_reset(Duration::from_nanos(1)), "1ms");
        assert_eq!(format_reset(Duration::from_micros(1_000_001)), "1.001s");
        assert_eq!(format_reset(Duration::MAX).chars().last(), Some('s'));
    }

    #[test]
    fn retry_after_accepts_delta_seconds_only() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("inf"), None);
        assert_eq!(parse_retry_after("1e300"), None);
    }

    /// A header lookup over `pairs`, case-insensitive like an HTTP client's header map.
    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn headers_give_every_figure() {
        let pairs = [
            ("X-RateLimit-Limit-Requests", "500"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-requests", " 499 "),
            ("X-RATELIMIT-REMAINING-TOKENS", "29000"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("Retry-After", "3"),
        ];
        let info = from_headers(lookup(&pairs), 429);
        assert_eq!(
            info,
            RateLimitInfo {
                limit_requests: Some(500),
                limit_tokens: Some(30_000),
                remaining_requests: Some(499),
                remaining_tokens: Some(29_000),
                reset_requests: ms(120),
                reset_tokens: ms(360_000),
                retry_after: ms(3_000),
                status: 429,
            }
        );
        assert!(!info.is_empty());
    }

    #[test]
    fn missing_or_bad_headers_are_left_out() {
        let info = from_headers(lookup(&[("content-type", "application/json")]), 200);
        assert!(info.is_empty());
        assert_eq!(info.status, 200);
        let pairs = [
            ("x-ratelimit-limit-requests", "-5"),
            ("x-ratelimit-limit-tokens", "+7"),
            ("x-ratelimit-remaining-requests", "1.5"),
            ("x-ratelimit-remaining-tokens", "99999999999999999999999"),
            ("x-ratelimit-reset-requests", "soon"),
            ("x-ratelimit-reset-tokens", "-1s"),
            ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ];
        assert!(from_headers(lookup(&pairs), 200).is_empty());
        let only = from_headers(lookup(&[("x-ratelimit-remaining-tokens", "0")]), 200);
        assert_eq!(only.remaining_tokens, Some(0));
        assert!(!only.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,40}") {
            let parsed = parse_reset(&s);
            prop_assert!(parsed.is_none_or(|d| d <= MAX_RESET));
            let _ = parse_retry_after(&s);
            let _ = from_headers(|_| Some(s.as_str()), 200);
        }

        #[test]
        fn duration_like_strings_never_panic(s in "[0-9.hmsuµn -]{0,24}") {
            prop_assert!(parse_reset(&s).is_none_or(|d| d <= MAX_RESET));
        }

        #[test]
        fn formatted_resets_read_back_exactly(millis in 0u64..=86_400_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_reset(&format_reset(d)), Some(d));
        }

        #[test]
        fn formatting_rounds_up_to_the_millisecond(nanos in 0u64..=86_400_000_000_000) {
            let d = Duration::from_nanos(nanos);
            let back = parse_reset(&format_reset(d)).unwrap_or_default();
            prop_assert!(back >= d && back - d < Duration::from_millis(1), "{d:?} -> {back:?}");
        }
    }
}
