//! A token bucket with continuous refill, debt and server corrections.
//!
//! The bucket holds at most `capacity` tokens and refills at `rate` tokens per second. A take
//! is admitted only when the level covers it; a request bigger than the whole bucket waits for
//! a full bucket and takes all of it, and the rest is charged when the call is reconciled.
//! A charge is a take without admission: what the level cannot cover becomes debt, and refills
//! pay the debt before the level rises again. The level is never negative and never above the
//! capacity, so over any interval `T` admissions take at most `capacity + rate * T`.

use std::time::{Duration, Instant};

/// Levels within this much of a need count as covering it (float rounding of refills).
const EPSILON: f64 = 1e-6;

/// The longest wait the bucket answers; a bucket that never refills answers this.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A token bucket (tokens, or requests counted as one token each).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u64,
    rate: f64,
    level: f64,
    debt: f64,
    last: Instant,
    hold: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket refilling `limit` tokens every `per`, holding at most `burst` (at least 1).
    pub fn new(limit: u64, per: Duration, burst: u64, now: Instant) -> Self {
        let secs = per.as_secs_f64();
        let rate = if secs > 0.0 { limit as f64 / secs } else { 0.0 };
        let capacity = burst.max(1);
        Self {
            capacity,
            rate,
            level: capacity as f64,
            debt: 0.0,
            last: now,
            hold: None,
        }
    }

    /// The most tokens the bucket holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Refill rate in tokens per second.
    pub fn rate_per_sec(&self) -> f64 {
        self.rate
    }

    /// Whole tokens available now, after refill and net of debt.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        (self.level + EPSILON).floor().max(0.0) as u64
    }

    /// Tokens still owed from charges the level could not cover.
    pub fn debt(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.debt.ceil() as u64
    }

    /// The instant before which nothing is admitted (a server's Retry-After), if later than `now`.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.hold.filter(|&t| t > now)
    }

    /// Takes `min(n, capacity)` tokens if they are available; otherwise answers how long until
    /// they will be (and no earlier than a hold).
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let need = n.min(self.capacity) as f64;
        let held = self.held_until(now).map(|t| t.duration_since(now));
        if held.is_none() && self.level + EPSILON >= need {
            self.level = (self.level - need).max(0.0);
            return Ok(());
        }
        let refill_wait = self.wait_for(need);
        Err(held.map_or(refill_wait, |h| h.max(refill_wait)))
    }

    /// Returns `n` tokens (a refund): they pay debt first, and the level never exceeds capacity.
    pub fn give_back(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.credit(n as f64);
    }

    /// Takes `n` tokens without admission; what the level cannot cover becomes debt.
    pub fn charge(&mut self, n: u64, now: Instant) {
        self.refill(now);
        let n = n as f64;
        let covered = n.min(self.level);
        self.level -= covered;
        self.debt += n - covered;
    }

    /// The server says it has `remaining` left: the level drops to it if higher, never rises.
    ///
    /// `reset_in` (when the server's window is full again) is not used: continuous refill at
    /// the configured rate already models the server refilling.
    pub fn observe_remaining(&mut self, remaining: u64, reset_in: Option<Duration>, now: Instant) {
        let _ = reset_in;
        self.lower_to(remaining, now);
    }

    /// Lowers the level to `remaining` if higher; answers whether it was lowered.
    pub fn lower_to(&mut self, remaining: u64, now: Instant) -> bool {
        self.refill(now);
        let remaining = remaining as f64;
        if self.level > remaining + EPSILON {
            self.level = remaining;
            true
        } else {
            false
        }
    }

    /// Admits nothing before `t` (a server's Retry-After); a later hold extends an earlier one.
    pub fn hold_until(&mut self, t: Instant) {
        self.hold = Some(self.hold.map_or(t, |h| h.max(t)));
    }

    /// Adds the refill since the last update: debt first, then the level up to capacity.
    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        let added = self.rate * now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.credit(added);
    }

    /// Adds `amount` tokens: pays debt first, then raises the level up to capacity.
    fn credit(&mut self, amount: f64) {
        let paid = amount.min(self.debt);
        self.debt -= paid;
        self.level = (self.level + amount - paid).min(self.capacity as f64);
    }

    /// How long until the level (net of debt) reaches `need`.
    fn wait_for(&self, need: f64) -> Duration {
        let missing = need - self.level + self.debt;
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        if self.rate <= 0.0 {
            return MAX_WAIT;
        }
        let secs = missing / self.rate;
        if !secs.is_finite() || secs >= MAX_WAIT.as_secs_f64() {
            return MAX_WAIT;
        }
        // At least a nanosecond, so that a caller waiting for the answer makes progress.
        Duration::from_secs_f64(secs).max(Duration::from_nanos(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn starts_full_and_refills_continuously() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(600, MINUTE, 100, t0);
        assert_eq!(b.capacity(), 100);
        assert!((b.rate_per_sec() - 10.0).abs() < 1e-9);
        assert_eq!(b.try_take(100, t0), Ok(()));
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.try_take(20, t0), Err(Duration::from_secs(2)));
        assert_eq!(b.available(t0 + Duration::from_secs(3)), 30);
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 100);
    }

    #[test]
    fn burst_is_at_least_one() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, MINUTE, 0, t0);
        assert_eq!(b.capacity(), 1);
        assert_eq!(b.try_take(1, t0), Ok(()));
        assert!(b.try_take(1, t0).is_err());
    }

    #[test]
    fn a_request_bigger_than_the_bucket_waits_for_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, MINUTE, 10, t0);
        assert_eq!(b.try_take(5, t0), Ok(()));
        assert_eq!(b.try_take(50, t0), Err(Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(b.try_take(50, t1), Ok(()));
        assert_eq!(b.available(t1), 0);
        // The other 40 are charged at reconciliation and paid from refills.
        b.charge(40, t1);
        assert_eq!(b.debt(t1), 40);
        assert_eq!(b.available(t1 + Duration::from_secs(40)), 0);
        assert_eq!(b.available(t1 + Duration::from_secs(45)), 5);
    }

    #[test]
    fn refunds_pay_debt_first_and_never_overfill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, MINUTE, 10, t0);
        b.charge(15, t0);
        assert_eq!((b.available(t0), b.debt(t0)), (0, 5));
        b.give_back(8, t0);
        assert_eq!((b.available(t0), b.debt(t0)), (3, 0));
        b.give_back(100, t0);
        assert_eq!(b.available(t0), 10);
    }

    #[test]
    fn the_server_can_lower_but_not_raise_the_level() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, MINUTE, 10, t0);
        b.observe_remaining(4, Some(Duration::from_secs(6)), t0);
        assert_eq!(b.available(t0), 4);
        b.observe_remaining(9, None, t0);
        assert_eq!(b.available(t0), 4);
        assert!(!b.lower_to(7, t0));
        assert!(b.lower_to(2, t0));
    }

    #[test]
    fn a_hold_delays_admission() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(60, MINUTE, 10, t0);
        b.hold_until(t0 + Duration::from_secs(3));
        b.hold_until(t0 + Duration::from_secs(1));
        assert_eq!(b.try_take(1, t0), Err(Duration::from_secs(3)));
        assert_eq!(b.held_until(t0), Some(t0 + Duration::from_secs(3)));
        assert_eq!(b.try_take(1, t0 + Duration::from_secs(3)), Ok(()));
    }

    #[test]
    fn a_bucket_that_never_refills_answers_the_longest_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, MINUTE, 1, t0);
        assert_eq!(b.try_take(1, t0), Ok(()));
        assert_eq!(b.try_take(1, t0), Err(MAX_WAIT));
        let z = TokenBucket::new(5, Duration::ZERO, 5, t0);
        assert_eq!(z.rate_per_sec(), 0.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Take(u64),
        GiveBack(u64),
        Charge(u64),
        Observe(u64),
        Hold(u64),
    }

    fn op() -> impl Strategy<Value = (u64, Op)> {
        let op = prop_oneof![
            4 => (0..300u64).prop_map(Op::Take),
            1 => (0..300u64).prop_map(Op::GiveBack),
            1 => (0..300u64).prop_map(Op::Charge),
            1 => (0..300u64).prop_map(Op::Observe),
            1 => (0..2000u64).prop_map(Op::Hold),
        ];
        (0..3000u64, op)
    }

    /// Applies `op` at `now`; answers the tokens it took through admission.
    fn apply(b: &mut TokenBucket, op: &Op, now: Instant) -> u64 {
        match *op {
            Op::Take(n) => {
                if b.try_take(n, now).is_ok() {
                    return n.min(b.capacity());
                }
            }
            Op::GiveBack(n) => b.give_back(n, now),
            Op::Charge(n) => b.charge(n, now),
            Op::Observe(n) => b.observe_remaining(n, None, now),
            Op::Hold(ms) => b.hold_until(now + Duration::from_millis(ms)),
        }
        0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the sequence, the level stays in `[0, capacity]` and debt is never negative.
        #[test]
        fn level_stays_within_bounds(
            ops in prop::collection::vec(op(), 1..120),
            limit in 0..2000u64,
            burst in 0..300u64,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(limit, Duration::from_secs(10), burst, t0);
            let mut now = t0;
            for (gap_ms, op) in &ops {
                now += Duration::from_millis(*gap_ms);
                apply(&mut b, op, now);
                prop_assert!(b.level >= 0.0, "level {}", b.level);
                prop_assert!(b.level <= b.capacity as f64, "level {} > {}", b.level, b.capacity);
                prop_assert!(b.debt >= 0.0);
                prop_assert!(b.debt == 0.0 || b.level == 0.0, "debt with a level");
            }
        }

        /// Over any interval `T`, admissions take at most `capacity + rate * T`.
        #[test]
        fn admissions_are_bounded_by_capacity_plus_refill(
            ops in prop::collection::vec(op(), 1..150),
            limit in 1..2000u64,
            burst in 1..300u64,
        ) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(limit, Duration::from_secs(10), burst, t0);
            let mut now = t0;
            let mut taken: Vec<(Instant, u64)> = Vec::new();
            for (gap_ms, op) in ops.iter().filter(|(_, o)| !matches!(o, Op::GiveBack(_))) {
                now += Duration::from_millis(*gap_ms);
                let n = apply(&mut b, op, now);
                taken.push((now, n));
            }
            for (i, &(start, _)) in taken.iter().enumerate() {
                let mut sum = 0u64;
                for &(t, n) in &taken[i..] {
                    sum += n;
                    let bound = b.capacity as f64 + b.rate * (t - start).as_secs_f64();
                    prop_assert!(sum as f64 <= bound + 1e-3, "{sum} > {bound}");
                }
            }
        }
    }
}
