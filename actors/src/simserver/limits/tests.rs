use proptest::prelude::*;

use super::*;

fn limits(
    tokens: Option<u64>,
    requests: Option<u64>,
    window: Duration,
    now: Instant,
) -> RateLimits {
    let cfg = SimServerConfig {
        tokens_per_window: tokens,
        requests_per_window: requests,
        limit_window: window,
        ..SimServerConfig::default()
    };
    RateLimits::new(&cfg, now)
}

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_charge_drops_remaining_and_settling_gives_the_unused_part_back() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), None, MINUTE, t0);
    let charge = l.admit(t0, 300).unwrap();
    let tokens = charge.snapshot().tokens.unwrap();
    assert_eq!((tokens.limit, tokens.remaining), (1_000, 700));
    // 300 tokens at 1,000 per minute refill in 18 s.
    assert_eq!(tokens.reset, Duration::from_secs(18));
    assert_eq!(charge.snapshot().requests, None);
    charge.settle(120, t0);
    let after = l.peek(t0).tokens.unwrap();
    assert_eq!(after.remaining, 880);
    assert_eq!(after.reset, Duration::from_millis(7_200));
    let health = l.health();
    assert_eq!(health["accepted_requests"], 1);
    assert_eq!(health["accepted_tokens"], 120);
    assert_eq!(health["max_window_tokens"], 120);
}

#[test]
fn buckets_refill_continuously_up_to_the_limit() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), Some(10), MINUTE, t0);
    l.admit(t0, 1_000).unwrap().settle(1_000, t0);
    assert_eq!(l.peek(t0).tokens.unwrap().remaining, 0);
    assert_eq!(
        l.peek(t0 + Duration::from_secs(15))
            .tokens
            .unwrap()
            .remaining,
        250
    );
    assert_eq!(
        l.peek(t0 + Duration::from_secs(30))
            .tokens
            .unwrap()
            .remaining,
        500
    );
    let full = l.peek(t0 + Duration::from_secs(600));
    assert_eq!(full.tokens.unwrap().remaining, 1_000);
    assert_eq!(full.tokens.unwrap().reset, Duration::ZERO);
    assert_eq!(full.requests.unwrap().remaining, 10);
}

#[test]
fn a_request_over_the_request_limit_is_refused_without_charge() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), Some(2), MINUTE, t0);
    let a = l.admit(t0, 10).unwrap();
    assert_eq!(a.snapshot().requests.unwrap().remaining, 1);
    let b = l.admit(t0, 10).unwrap();
    let refusal = l.admit(t0, 10).unwrap_err();
    assert_eq!(refusal.kind, LimitKind::Requests);
    assert_eq!(
        (refusal.limit, refusal.remaining, refusal.requested),
        (2, 0, 1)
    );
    assert!(!refusal.too_large);
    // One request of 2 per minute comes back in 30 s.
    assert_eq!(refusal.wait, Duration::from_secs(30));
    assert_eq!(refusal.retry_after_secs(), 30);
    assert_eq!(
        refusal.snapshot.tokens.unwrap().remaining,
        980,
        "no tokens charged"
    );
    let message = refusal.message("m", MINUTE);
    assert!(
        message.starts_with("Rate limit reached for requests on m per 1m0s: limit 2, remaining 0"),
        "{message}"
    );
    drop((a, b));
    assert_eq!(
        l.peek(t0).tokens.unwrap().remaining,
        1_000,
        "unsettled charges come back"
    );
    assert_eq!(
        l.peek(t0).requests.unwrap().remaining,
        0,
        "requests stay counted"
    );
    let health = l.health();
    assert_eq!(health["accepted_requests"], 2);
    assert_eq!(health["limited_requests"], 1);
    assert_eq!(health["accepted_tokens"], 0);
    assert_eq!(health["max_window_requests"], 2);
}

#[test]
fn a_request_over_the_token_limit_waits_for_the_refill_it_needs() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), None, Duration::from_secs(2), t0);
    l.admit(t0, 900).unwrap().settle(900, t0);
    let refusal = l.admit(t0, 300).unwrap_err();
    assert_eq!(refusal.kind, LimitKind::Tokens);
    assert_eq!((refusal.remaining, refusal.requested), (100, 300));
    // 200 missing tokens at 500 per second: 400 ms, so Retry-After is 1.
    assert_eq!(refusal.wait, Duration::from_millis(400));
    assert_eq!(refusal.retry_after_secs(), 1);
    let message = refusal.message("sim", Duration::from_secs(2));
    assert!(message.contains("try again in 400ms"), "{message}");
    assert!(l.admit(t0 + Duration::from_millis(400), 300).is_ok());
}

#[test]
fn a_request_larger_than_the_limit_can_never_pass() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), None, MINUTE, t0);
    let refusal = l.admit(t0, 1_001).unwrap_err();
    assert!(refusal.too_large);
    assert_eq!(refusal.wait, MINUTE);
    assert_eq!(refusal.retry_after_secs(), 60);
    let message = refusal.message("sim", MINUTE);
    assert!(
        message.starts_with("Request too large for sim on tokens"),
        "{message}"
    );
    assert!(message.contains("requested 1001"), "{message}");
}

#[test]
fn usage_beyond_the_charge_leaves_a_debt() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), None, MINUTE, t0);
    l.admit(t0, 100).unwrap().settle(1_400, t0);
    let tokens = l.peek(t0).tokens.unwrap();
    assert_eq!(tokens.remaining, 0);
    // 400 in debt, then 1,000 to refill: 84 s.
    assert_eq!(tokens.reset, Duration::from_secs(84));
    let refusal = l.admit(t0, 1).unwrap_err();
    assert_eq!(refusal.wait, Duration::from_millis(24_060));
}

#[test]
fn without_limits_everything_passes_and_is_accounted() {
    let t0 = Instant::now();
    let l = limits(None, None, Duration::from_secs(2), t0);
    assert!(!l.limits_tokens());
    for i in 0..5 {
        let at = t0 + Duration::from_millis(500 * i);
        let charge = l.admit(at, 0).unwrap();
        assert_eq!(charge.snapshot(), Snapshot::default());
        charge.settle(10, at);
    }
    let health = l.health();
    assert_eq!(health["accepted_requests"], 5);
    assert_eq!(health["accepted_tokens"], 50);
    // Arrivals at 0, 0.5, 1, 1.5 s share a 2 s window; 2 s does not.
    assert_eq!(health["max_window_requests"], 4);
    assert_eq!(health["max_window_tokens"], 40);
    assert_eq!(health["limit_window_ms"], 2_000);
    assert_eq!(health["tokens_per_window"], Value::Null);
}

#[test]
fn a_hand_built_config_cannot_make_the_limits_panic() {
    let t0 = Instant::now();
    for window in [Duration::ZERO, Duration::MAX] {
        let l = limits(Some(0), Some(u64::MAX), window, t0);
        let refusal = l.admit(t0, 5).unwrap_err();
        assert!(refusal.too_large, "{refusal:?}");
        let later = t0 + Duration::from_secs(3_600);
        assert!(l.admit(later, 1).is_err());
        let _ = (l.peek(later), l.health());
    }
    let l = limits(Some(u64::MAX), None, Duration::MAX, t0);
    l.admit(t0, u64::MAX)
        .unwrap()
        .settle(u64::MAX, t0 + MAX_LIMIT_WINDOW);
    assert_eq!(l.health()["accepted_tokens"], u64::MAX);
}

#[test]
fn snapshots_write_openai_headers_for_configured_limits_only() {
    let t0 = Instant::now();
    let l = limits(Some(1_000), None, MINUTE, t0);
    let mut headers = HeaderMap::new();
    l.admit(t0, 250).unwrap().snapshot().write(&mut headers);
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "750");
    assert_eq!(headers["x-ratelimit-reset-tokens"], "15s");
    assert!(!headers.contains_key("x-ratelimit-limit-requests"));
}

/// The busiest window of point masses, by brute force over every window start.
fn brute_force_max(points: &[(Duration, u64)], window: Duration) -> u64 {
    points
        .iter()
        .map(|(s, _)| {
            points
                .iter()
                .filter(|(a, _)| a >= s && *a < *s + window)
                .map(|(_, t)| t)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Requests arrive in order and complete in any order; the busiest window of real tokens
    /// (attributed to arrivals) matches the brute-force model, and so does that of requests.
    #[test]
    fn busiest_windows_match_a_brute_force_model(
        requests in prop::collection::vec((0u64..400, 0u64..3_000, 0u64..500), 1..40),
        window_ms in 1u64..1_500,
    ) {
        let t0 = Instant::now();
        let window = Duration::from_millis(window_ms);
        let l = limits(None, None, window, t0);
        let mut arrival = Duration::ZERO;
        let mut events = Vec::new();
        let mut points = Vec::new();
        for (gap, latency, tokens) in &requests {
            arrival += Duration::from_millis(*gap);
            points.push((arrival, *tokens));
            events.push((arrival, Duration::from_millis(*latency), *tokens));
        }
        // Replay in time order: admissions at arrival, settlements at arrival + latency.
        let mut charges: Vec<Option<Charge<'_>>> = Vec::new();
        let mut timeline: Vec<(Duration, bool, usize)> = Vec::new();
        for (i, (a, lat, _)) in events.iter().enumerate() {
            timeline.push((*a, false, i));
            timeline.push((*a + *lat, true, i));
        }
        // Ties: admissions first (a zero-latency request settles after it arrives).
        timeline.sort_by_key(|(at, settle, i)| (*at, *settle, *i));
        for (at, settle, i) in timeline {
            if settle {
                let charge = charges[i].take().expect("admitted before settled");
                charge.settle(events[i].2, t0 + at);
            } else {
                charges.push(Some(l.admit(t0 + at, 0).expect("no limits")));
            }
        }
        let health = l.health();
        prop_assert_eq!(health["max_window_tokens"].as_u64(), Some(brute_force_max(&points, window)));
        let counts: Vec<(Duration, u64)> = points.iter().map(|(a, _)| (*a, 1)).collect();
        prop_assert_eq!(health["max_window_requests"].as_u64(), Some(brute_force_max(&counts, window)));
        let total: u64 = points.iter().map(|(_, t)| t).sum();
        prop_assert_eq!(health["accepted_tokens"].as_u64(), Some(total));
    }
}
