//! Adaptive concurrency for a backend: additive increase, multiplicative decrease (AIMD) under
//! the configured maximum.
//!
//! The limit starts at the maximum. Every `limit` successes raise it by one. An overload (a
//! 429 or 503) halves it, and a success whose latency is more than twice the baseline lowers it
//! gently (×0.9): queueing at the server shows in latency before it shows in errors. The
//! baseline is the lowest value a slow EWMA of latencies has reached.
//!
//! A decrease happens at most once per wave: after one, the next may only come once as many
//! calls have completed as the old limit allowed in flight. The calls of a wave were all sent
//! before the server pushed back, so a burst of 429s from one wave halves the limit once.

use std::time::Duration;

/// Weight of a new latency in the slow EWMA.
const EWMA_ALPHA: f64 = 0.05;
/// A latency above this multiple of the baseline counts as a sign of queueing.
const SLOW_FACTOR: f64 = 2.0;
/// The lowest baseline used in the comparison (seconds), so near-zero latencies of a local or
/// simulated backend do not make every call look slow.
const MIN_BASELINE_SECS: f64 = 0.001;
/// Factor of a gentle decrease (latency).
const GENTLE: f64 = 0.9;
/// Factor of an overload decrease (429, 503).
const OVERLOAD: f64 = 0.5;

/// An adaptive concurrency limit in `[min, max]`.
#[derive(Debug, Clone)]
pub struct AimdLimit {
    min: usize,
    max: usize,
    limit: usize,
    successes: usize,
    since_decrease: usize,
    wave: usize,
    ewma: Option<f64>,
    baseline: Option<f64>,
    reason: String,
}

impl AimdLimit {
    /// A limit between `min` (at least 1) and `max` (at least `min`), starting at `max`.
    pub fn new(min: usize, max: usize) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            min,
            max,
            limit: max,
            successes: 0,
            since_decrease: 0,
            wave: 0,
            ewma: None,
            baseline: None,
            reason: format!("starts at the maximum of {max}"),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The lower bound.
    pub fn min(&self) -> usize {
        self.min
    }

    /// The upper bound (the configured concurrency).
    pub fn max(&self) -> usize {
        self.max
    }

    /// The baseline latency: the lowest the slow EWMA has been; `None` before any success.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.map(Duration::from_secs_f64)
    }

    /// A call succeeded after `latency`.
    pub fn on_success(&mut self, latency: Duration) {
        self.since_decrease = self.since_decrease.saturating_add(1);
        let secs = latency.as_secs_f64();
        let slow = self
            .baseline
            .map(|b| b.max(MIN_BASELINE_SECS))
            .filter(|&b| secs > SLOW_FACTOR * b);
        self.track(secs);
        if let Some(baseline) = slow {
            if self.may_decrease() {
                let why =
                    format!("latency {secs:.3}s above {SLOW_FACTOR}x the {baseline:.3}s baseline");
                self.decrease(GENTLE, &why);
            }
            return;
        }
        self.increase();
    }

    /// A call was refused as overload (429 or 503).
    pub fn on_overload(&mut self) {
        self.since_decrease = self.since_decrease.saturating_add(1);
        if self.may_decrease() {
            self.decrease(OVERLOAD, "overloaded (429 or 503)");
        }
    }

    /// Why the limit last changed.
    pub fn last_change_reason(&self) -> &str {
        &self.reason
    }

    /// Feeds the slow EWMA and lowers the baseline to it.
    fn track(&mut self, secs: f64) {
        if !secs.is_finite() {
            return;
        }
        let ewma = self.ewma.map_or(secs, |e| e + EWMA_ALPHA * (secs - e));
        self.ewma = Some(ewma);
        self.baseline = Some(self.baseline.map_or(ewma, |b| b.min(ewma)));
    }

    /// +1 once `limit` fast successes have accumulated.
    fn increase(&mut self) {
        if self.limit >= self.max {
            self.successes = 0;
            return;
        }
        self.successes += 1;
        if self.successes >= self.limit {
            self.successes = 0;
            self.limit += 1;
            self.reason = format!(
                "{} calls succeeded: raised to {}",
                self.limit - 1,
                self.limit
            );
        }
    }

    /// Whether the calls in flight at the last decrease have all completed.
    fn may_decrease(&self) -> bool {
        self.since_decrease >= self.wave
    }

    /// Multiplies the limit by `factor` (at least −1, not below `min`) and opens a new wave.
    fn decrease(&mut self, factor: f64, why: &str) {
        let old = self.limit;
        let scaled = (old as f64 * factor).floor() as usize;
        let new = scaled.min(old.saturating_sub(1)).max(self.min);
        self.wave = old;
        self.since_decrease = 0;
        self.successes = 0;
        if new != old {
            self.limit = new;
            self.reason = format!("{why}: lowered from {old} to {new}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_at_the_maximum_and_orders_its_bounds() {
        let a = AimdLimit::new(2, 16);
        assert_eq!((a.limit(), a.min(), a.max()), (16, 2, 16));
        assert_eq!(a.last_change_reason(), "starts at the maximum of 16");
        let b = AimdLimit::new(0, 0);
        assert_eq!((b.min(), b.max(), b.limit()), (1, 1, 1));
    }

    #[test]
    fn a_wave_of_overloads_halves_once() {
        let mut a = AimdLimit::new(1, 16);
        for _ in 0..16 {
            a.on_overload();
        }
        assert_eq!(a.limit(), 8);
        assert_eq!(
            a.last_change_reason(),
            "overloaded (429 or 503): lowered from 16 to 8"
        );
        // The next wave's overload halves again.
        a.on_overload();
        assert_eq!(a.limit(), 4);
    }

    #[test]
    fn overloads_stop_at_the_minimum() {
        let mut a = AimdLimit::new(3, 16);
        for _ in 0..200 {
            a.on_overload();
        }
        assert_eq!(a.limit(), 3);
    }

    #[test]
    fn successes_raise_the_limit_by_one_per_limit() {
        let mut a = AimdLimit::new(1, 8);
        a.on_overload();
        assert_eq!(a.limit(), 4);
        for _ in 0..3 {
            a.on_success(100 * MS);
        }
        assert_eq!(a.limit(), 4);
        a.on_success(100 * MS);
        assert_eq!(a.limit(), 5);
        assert_eq!(a.last_change_reason(), "4 calls succeeded: raised to 5");
        for _ in 0..100 {
            a.on_success(100 * MS);
        }
        assert_eq!(a.limit(), 8);
    }

    #[test]
    fn slow_successes_lower_the_limit_gently_once_per_wave() {
        let mut a = AimdLimit::new(1, 20);
        for _ in 0..50 {
            a.on_success(100 * MS);
        }
        assert_eq!(a.baseline(), Some(100 * MS));
        for _ in 0..19 {
            a.on_success(500 * MS);
        }
        assert_eq!(a.limit(), 18, "{}", a.last_change_reason());
        assert!(a
            .last_change_reason()
            .starts_with("latency 0.500s above 2x the 0.100s baseline"));
        // Slow calls do not count towards an increase.
        for _ in 0..18 {
            a.on_success(500 * MS);
        }
        assert_eq!(a.limit(), 16);
    }

    #[test]
    fn near_zero_latencies_are_not_slow() {
        let mut a = AimdLimit::new(1, 4);
        for _ in 0..100 {
            a.on_success(Duration::ZERO);
            a.on_success(Duration::from_micros(500));
        }
        assert_eq!(a.limit(), 4);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Success(u64),
        Overload,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            3 => (1..2000u64).prop_map(Event::Success),
            1 => Just(Event::Overload),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The limit stays in `[min, max]` and, once overloads stop, climbs back to `max`.
        #[test]
        fn stays_in_bounds_and_recovers(
            min in 1..10usize,
            extra in 0..40usize,
            events in prop::collection::vec(event(), 0..300),
        ) {
            let max = min + extra;
            let mut a = AimdLimit::new(min, max);
            let mut fastest = Duration::from_millis(2000);
            for e in &events {
                match *e {
                    Event::Success(ms) => {
                        fastest = fastest.min(Duration::from_millis(ms));
                        a.on_success(Duration::from_millis(ms));
                    }
                    Event::Overload => a.on_overload(),
                }
                prop_assert!((min..=max).contains(&a.limit()), "{}", a.limit());
            }
            for _ in 0..max * max {
                a.on_success(fastest);
                prop_assert!((min..=max).contains(&a.limit()));
            }
            prop_assert_eq!(a.limit(), max);
        }
    }
}
