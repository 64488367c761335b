//! The ready queue: per-agent priority order with aging, FIFO among equals.
//!
//! A task's effective priority is `priority + aging_per_sec * seconds_waited`. Because every
//! waiting task ages at the same rate, the order between two tasks never changes while they
//! wait, so the queue stores a fixed key `priority - aging_per_sec * enqueued_at` (in
//! milli-units) and needs no re-sorting: a task that has waited long enough overtakes newer,
//! higher-priority ones exactly when its effective priority passes theirs.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Ready tasks (by index) grouped by the agent that should run them.
#[derive(Debug)]
pub struct ReadyQueue {
    epoch: Instant,
    aging_per_sec: f64,
    seq: u64,
    by_agent: HashMap<String, BTreeSet<(i64, u64, usize)>>,
    len: usize,
}

impl ReadyQueue {
    /// An empty queue; `epoch` anchors the aging clock.
    pub fn new(epoch: Instant, aging_per_sec: f64) -> Self {
        Self {
            epoch,
            aging_per_sec,
            seq: 0,
            by_agent: HashMap::new(),
            len: 0,
        }
    }

    /// Queues task `idx` for `agent` with a base priority.
    pub fn push(&mut self, agent: &str, idx: usize, priority: i32, now: Instant) {
        let waited_from = now.saturating_duration_since(self.epoch).as_secs_f64();
        let key = (priority as f64 - self.aging_per_sec * waited_from) * 1000.0;
        // Negated so that the BTreeSet's first element is the best.
        let key = -(key as i64);
        self.seq += 1;
        self.by_agent
            .entry(agent.to_owned())
            .or_default()
            .insert((key, self.seq, idx));
        self.len += 1;
    }

    /// The best queued task for `agent`, without removing it: `(order key, task index)`.
    pub fn peek(&self, agent: &str) -> Option<((i64, u64), usize)> {
        self.by_agent
            .get(agent)
            .and_then(|s| s.first())
            .map(|&(k, seq, idx)| ((k, seq), idx))
    }

    /// Every task queued for `agent`, best first: `(order key, task index)`.
    pub fn iter<'a>(&'a self, agent: &str) -> impl Iterator<Item = ((i64, u64), usize)> + 'a {
        self.by_agent
            .get(agent)
            .into_iter()
            .flat_map(|s| s.iter().map(|&(k, seq, idx)| ((k, seq), idx)))
    }

    /// Agents with at least one queued task.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.by_agent
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(a, _)| a.as_str())
    }

    /// The effective priority at `now` (base + aging), in whole points, of a task queued
    /// with order key `key` (the first part of [`ReadyQueue::peek`]'s key).
    pub fn effective(&self, key: i64, now: Instant) -> i64 {
        let since = now.saturating_duration_since(self.epoch).as_secs_f64();
        (-(key as f64) / 1000.0 + self.aging_per_sec * since).round() as i64
    }

    /// Removes and returns the best queued task for `agent`.
    pub fn pop(&mut self, agent: &str) -> Option<usize> {
        let set = self.by_agent.get_mut(agent)?;
        let (_, _, idx) = set.pop_first()?;
        self.len -= 1;
        Some(idx)
    }

    /// Removes task `idx` from `agent`'s queue; answers whether it was queued there.
    pub fn remove(&mut self, agent: &str, idx: usize) -> bool {
        let Some(set) = self.by_agent.get_mut(agent) else {
            return false;
        };
        let before = set.len();
        set.retain(|&(_, _, i)| i != idx);
        let removed = before - set.len();
        self.len -= removed;
        removed > 0
    }

    /// Removes and returns every task queued for `agent`, best first.
    pub fn drain_agent(&mut self, agent: &str) -> Vec<usize> {
        let Some(set) = self.by_agent.remove(agent) else {
            return Vec::new();
        };
        self.len -= set.len();
        set.into_iter().map(|(_, _, i)| i).collect()
    }

    /// Empties the queue (shutdown cancels every task at once).
    pub fn clear(&mut self) {
        self.by_agent.clear();
        self.len = 0;
    }

    /// Number of queued tasks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn higher_priority_first_then_fifo() {
        let t0 = Instant::now();
        let mut q = ReadyQueue::new(t0, 0.0);
        q.push("a", 1, 10, t0);
        q.push("a", 2, 50, t0);
        q.push("a", 3, 50, t0);
        assert_eq!(q.pop("a"), Some(2));
        assert_eq!(q.pop("a"), Some(3));
        assert_eq!(q.pop("a"), Some(1));
        assert_eq!(q.pop("a"), None);
        assert!(q.is_empty());
    }

    #[test]
    fn aging_lets_old_tasks_overtake() {
        let t0 = Instant::now();
        let mut q = ReadyQueue::new(t0, 1.0);
        q.push("a", 1, 10, t0);
        // 30 s later a priority-30 task arrives: the old one is at effective 40 by then.
        q.push("a", 2, 30, t0 + Duration::from_secs(30));
        assert_eq!(q.pop("a"), Some(1));
        // A priority-50 task beats it.
        q.push("a", 3, 10, t0);
        q.push("a", 4, 50, t0 + Duration::from_secs(30));
        assert_eq!(q.pop("a"), Some(4));
    }

    #[test]
    fn queues_are_per_agent() {
        let t0 = Instant::now();
        let mut q = ReadyQueue::new(t0, 0.0);
        q.push("a", 1, 10, t0);
        q.push("b", 2, 90, t0);
        assert_eq!(q.pop("a"), Some(1));
        assert_eq!(q.len(), 1);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.pop("b"), None);
    }
}
