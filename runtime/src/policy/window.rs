//! A sliding-window log of tokens: what the calls admitted in the last `window` reserved,
//! each entry brought down to the call's real usage when it settles.
//!
//! The token bucket paces calls, but a bucket cannot bound the tokens a server counts in a
//! window: a call's unused reservation is refunded when it returns and spent again by calls
//! in the same window, so a window can see the limit, plus the burst, plus the refunds of the
//! calls in flight at its start. The log closes that gap. A call is admitted only if the
//! entries of the last `window` (reserved for calls in flight, real for settled ones) plus
//! its own reservation stay within the limit. Every window, not only those ending at an
//! admission, then holds at most the limit: a window's last admission saw every earlier entry
//! of the window with a value no smaller than its final one. Only a call that uses more than
//! it reserved (a prompt counted differently by the server, a reply past `max_tokens`) can
//! exceed it, by what it overshot.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The log of one scope's token limit.
#[derive(Debug, Clone)]
pub struct WindowLog {
    limit: u64,
    window: Duration,
    /// (admitted at, reservation id, tokens), oldest first.
    entries: VecDeque<(Instant, u64, u64)>,
    sum: u64,
}

impl WindowLog {
    /// An empty log of `limit` tokens per `window`.
    pub fn new(limit: u64, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window: window.max(Duration::from_millis(1)),
            entries: VecDeque::new(),
            sum: 0,
        }
    }

    /// Tokens counted in the window ending at `now`.
    pub fn used(&mut self, now: Instant) -> u64 {
        self.prune(now);
        self.sum
    }

    /// `None` if `need` tokens fit now; else how long until enough entries leave the window.
    /// A need larger than the whole limit fits an empty window (it could never fit otherwise).
    pub fn wait(&mut self, need: u64, now: Instant) -> Option<Duration> {
        self.prune(now);
        if self.sum == 0 || self.sum.saturating_add(need) <= self.limit {
            return None;
        }
        let mut left = self.sum;
        for &(at, _, n) in &self.entries {
            left -= n;
            if left == 0 || left.saturating_add(need) <= self.limit {
                let leaves = at + self.window;
                return Some(
                    leaves
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1)),
                );
            }
        }
        Some(self.window)
    }

    /// Records reservation `id` of `tokens`, admitted at `now`.
    pub fn record(&mut self, id: u64, tokens: u64, now: Instant) {
        self.prune(now);
        self.entries.push_back((now, id, tokens));
        self.sum = self.sum.saturating_add(tokens);
    }

    /// Reservation `id` used `tokens` (0: the server counted nothing). An entry already out of
    /// the window is gone: nothing to do.
    pub fn settle(&mut self, id: u64, tokens: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.1 == id) {
            self.sum = self.sum - e.2 + tokens;
            e.2 = tokens;
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(at, _, n)) = self.entries.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.entries.pop_front();
            self.sum -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_full_window_waits_for_its_oldest_entries() {
        let t0 = Instant::now();
        let mut log = WindowLog::new(100, Duration::from_secs(10));
        assert_eq!(log.wait(60, t0), None);
        log.record(1, 60, t0);
        log.record(2, 30, t0 + Duration::from_secs(4));
        assert_eq!(
            log.wait(20, t0 + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        // The first call used 20 of its 60: room again at once.
        log.settle(1, 20);
        assert_eq!(log.wait(20, t0 + Duration::from_secs(5)), None);
        assert_eq!(log.used(t0 + Duration::from_secs(11)), 30);
        assert_eq!(log.used(t0 + Duration::from_secs(15)), 0);
    }

    #[test]
    fn a_need_beyond_the_limit_fits_only_an_empty_window() {
        let t0 = Instant::now();
        let mut log = WindowLog::new(100, Duration::from_secs(1));
        assert_eq!(log.wait(500, t0), None);
        log.record(1, 500, t0);
        assert!(log.wait(1, t0).is_some());
    }

    proptest! {
        /// Admitting only what fits, with usage at most the reservation settled in any order,
        /// no window of real usage ever holds more than the limit.
        #[test]
        fn no_window_exceeds_the_limit(
            calls in proptest::collection::vec((0u64..400, 1u64..80, 0u64..100, 0u64..3000), 1..200),
        ) {
            let t0 = Instant::now();
            let window = Duration::from_millis(1000);
            let mut log = WindowLog::new(300, window);
            let mut admitted: Vec<(u64, u64)> = Vec::new(); // (ms, real tokens)
            let mut pending: Vec<(u64, u64, u64)> = Vec::new(); // (settle at ms, id, real)
            let mut t = 0u64;
            for (id, (gap, reserve, used_pct, settle_after)) in calls.into_iter().enumerate() {
                t += gap;
                let now = t0 + Duration::from_millis(t);
                pending.retain(|&(at, pid, real)| {
                    if at <= t { log.settle(pid, real); false } else { true }
                });
                if log.wait(reserve, now).is_none() {
                    let real = reserve * used_pct / 100;
                    log.record(id as u64, reserve, now);
                    admitted.push((t, real));
                    pending.push((t + settle_after, id as u64, real));
                }
            }
            for &(start, _) in &admitted {
                let in_window: u64 = admitted
                    .iter()
                    .filter(|&&(at, _)| at >= start && at < start + 1000)
                    .map(|&(_, n)| n)
                    .sum();
                prop_assert!(in_window <= 300, "window from {start} ms holds {in_window}");
            }
        }
    }
}
