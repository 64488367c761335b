//! The live leases, indexed for what the scheduler asks on every event.
//!
//! Besides the leases by id, the table keeps:
//! - the lease each instance holds and the lease each task runs under (a report, a dead agent
//!   and a cancel find theirs in O(1));
//! - a deadline index: `(deadline, lease)` for every lease whose deadline runs, that is one
//!   neither paused (its agent is suspended) nor held (its holder waits at the quota gate).
//!   The next deadline is its first entry and expiry takes only the entries that are due, both
//!   O(log n); the scheduler asks after every message, so a walk over every lease there made a
//!   run of n tasks on n agents cost O(n²);
//! - the held leases, so that following the quota gate costs what the gate holds, not a walk
//!   over every lease;
//! - a preemption index: `(priority, started, lease)` for every lease not paused, worst
//!   candidate first.
//!
//! Every change to a lease goes through [`Leases::update`], which keeps the indexes in step.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::{Lease, LeaseId};
use crate::model::InstanceId;

/// The live leases and their indexes.
#[derive(Debug, Default)]
pub(super) struct Leases {
    by_id: HashMap<LeaseId, Lease>,
    by_instance: HashMap<InstanceId, LeaseId>,
    by_task: HashMap<usize, LeaseId>,
    /// Leases whose deadline runs, soonest first.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    /// Leases whose holder waits at the quota gate (`held_since` set).
    held: BTreeSet<LeaseId>,
    /// Leases that may be asked to give way (not paused), lowest priority and oldest first.
    victims: BTreeSet<(i32, Instant, LeaseId)>,
}

impl Leases {
    /// Number of live leases.
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The lease `id`, if live.
    pub(super) fn get(&self, id: &LeaseId) -> Option<&Lease> {
        self.by_id.get(id)
    }

    /// Whether lease `id` is live.
    pub(super) fn contains(&self, id: &LeaseId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Every live lease, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_id.values()
    }

    /// The lease `instance` holds.
    pub(super) fn of_instance(&self, instance: &InstanceId) -> Option<LeaseId> {
        self.by_instance.get(instance).copied()
    }

    /// The lease task `idx` runs under.
    pub(super) fn of_task(&self, idx: usize) -> Option<LeaseId> {
        self.by_task.get(&idx).copied()
    }

    /// Adds a lease (a lease with the same id is replaced).
    pub(super) fn insert(&mut self, lease: Lease) {
        self.remove(&lease.id);
        self.by_instance.insert(lease.instance.clone(), lease.id);
        self.by_task.insert(lease.task, lease.id);
        self.index(Keys::of(&lease));
        self.by_id.insert(lease.id, lease);
    }

    /// Removes lease `id`; answers it if it was live.
    pub(super) fn remove(&mut self, id: &LeaseId) -> Option<Lease> {
        let lease = self.by_id.remove(id)?;
        self.unindex(Keys::of(&lease));
        // Only its own entries: an instance or a task is under one lease at a time, but an
        // entry of another lease is never taken with this one.
        if self.by_instance.get(&lease.instance) == Some(id) {
            self.by_instance.remove(&lease.instance);
        }
        if self.by_task.get(&lease.task) == Some(id) {
            self.by_task.remove(&lease.task);
        }
        Some(lease)
    }

    /// Drops every lease.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Changes lease `id` with `f` (its deadline, pause or hold), keeping the indexes in step;
    /// answers whether it was live. `f` must not change the lease's id, instance or task.
    pub(super) fn update(&mut self, id: &LeaseId, f: impl FnOnce(&mut Lease)) -> bool {
        let Some(lease) = self.by_id.get_mut(id) else {
            return false;
        };
        let (before, task) = (Keys::of(lease), lease.task);
        f(lease);
        debug_assert!(
            lease.id == *id && lease.task == task,
            "a lease keeps its identity"
        );
        let after = Keys::of(lease);
        if before != after {
            self.unindex(before);
            self.index(after);
        }
        true
    }

    /// The soonest deadline that runs (neither paused nor held).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Leases whose running deadline is at or before `now`, soonest first.
    pub(super) fn due(&self, now: Instant) -> Vec<LeaseId> {
        self.deadlines
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Leases whose holder waits at the quota gate.
    pub(super) fn held(&self) -> impl Iterator<Item = LeaseId> + '_ {
        self.held.iter().copied()
    }

    /// Leases that may be asked to give way (not paused): lowest priority first, then the
    /// one running longest, then the oldest lease.
    pub(super) fn victims(&self) -> impl Iterator<Item = &Lease> + '_ {
        self.victims
            .iter()
            .filter_map(|(_, _, id)| self.by_id.get(id))
    }

    fn index(&mut self, k: Keys) {
        if let Some(d) = k.deadline {
            self.deadlines.insert(d);
        }
        if let Some(h) = k.held {
            self.held.insert(h);
        }
        if let Some(v) = k.victim {
            self.victims.insert(v);
        }
    }

    fn unindex(&mut self, k: Keys) {
        if let Some(d) = k.deadline {
            self.deadlines.remove(&d);
        }
        if let Some(h) = k.held {
            self.held.remove(&h);
        }
        if let Some(v) = k.victim {
            self.victims.remove(&v);
        }
    }
}

/// A lease's entries in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keys {
    deadline: Option<(Instant, LeaseId)>,
    held: Option<LeaseId>,
    victim: Option<(i32, Instant, LeaseId)>,
}

impl Keys {
    fn of(l: &Lease) -> Self {
        Self {
            deadline: (!l.paused && l.held_since.is_none()).then_some((l.deadline, l.id)),
            held: l.held_since.is_some().then_some(l.id),
            victim: (!l.paused).then_some((l.priority, l.started, l.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn lease(id: u64, at: Instant, offset_ms: u64) -> Lease {
        Lease {
            id: LeaseId(id),
            task: id as usize,
            instance: InstanceId {
                agent: "a".into(),
                replica: id as u32,
            },
            started: at,
            deadline: at + Duration::from_millis(offset_ms),
            paused: false,
            priority: (id % 3) as i32,
            charged: 0,
            held_since: None,
        }
    }

    /// The answers of a walk over every lease, as the scheduler did before the indexes.
    fn scan_next(l: &Leases) -> Option<Instant> {
        l.iter()
            .filter(|l| !l.paused && l.held_since.is_none())
            .map(|l| l.deadline)
            .min()
    }

    fn scan_due(l: &Leases, now: Instant) -> BTreeSet<LeaseId> {
        l.iter()
            .filter(|l| !l.paused && l.held_since.is_none() && l.deadline <= now)
            .map(|l| l.id)
            .collect()
    }

    fn scan_victims(l: &Leases) -> Vec<LeaseId> {
        let mut v: Vec<(i32, Instant, LeaseId)> = l
            .iter()
            .filter(|l| !l.paused)
            .map(|l| (l.priority, l.started, l.id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, id)| id).collect()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(u64),
        Settle(u8),
        Pause(u8),
        Resume(u8, u64),
        Hold(u8),
        Release(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..5_000).prop_map(Op::Create),
            3 => any::<u8>().prop_map(Op::Settle),
            2 => any::<u8>().prop_map(Op::Pause),
            2 => (any::<u8>(), 0u64..5_000).prop_map(|(i, d)| Op::Resume(i, d)),
            2 => any::<u8>().prop_map(Op::Hold),
            2 => any::<u8>().prop_map(Op::Release),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Under any sequence of lease create / settle / pause / resume / hold / release, the
        /// indexes answer what a walk over every lease answers.
        #[test]
        fn indexes_agree_with_a_scan(
            ops in proptest::collection::vec((op(), 0u64..200), 0..200),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut leases = Leases::default();
            let mut next = 1u64;
            for (op, step_ms) in ops {
                now += Duration::from_millis(step_ms);
                let ids: Vec<LeaseId> = {
                    let mut ids: Vec<LeaseId> = leases.iter().map(|l| l.id).collect();
                    ids.sort();
                    ids
                };
                let pick = |i: u8| ids.get(i as usize % ids.len().max(1)).copied();
                match op {
                    Op::Create(ms) => {
                        // Equal deadlines and priorities happen: ids break the ties.
                        leases.insert(lease(next, now, ms - ms % 100));
                        next += 1;
                    }
                    Op::Settle(i) => {
                        if let Some(id) = pick(i) {
                            prop_assert!(leases.remove(&id).is_some());
                            prop_assert!(leases.remove(&id).is_none());
                        }
                    }
                    Op::Pause(i) => {
                        if let Some(id) = pick(i) {
                            leases.update(&id, |l| l.paused = true);
                        }
                    }
                    Op::Resume(i, ms) => {
                        if let Some(id) = pick(i) {
                            leases.update(&id, |l| {
                                if l.paused {
                                    l.paused = false;
                                    l.deadline = now + Duration::from_millis(ms);
                                }
                            });
                        }
                    }
                    Op::Hold(i) => {
                        if let Some(id) = pick(i) {
                            leases.update(&id, |l| {
                                l.held_since.get_or_insert(now);
                            });
                        }
                    }
                    Op::Release(i) => {
                        if let Some(id) = pick(i) {
                            leases.update(&id, |l| {
                                if let Some(since) = l.held_since.take() {
                                    l.deadline += now.saturating_duration_since(since);
                                }
                            });
                        }
                    }
                    Op::Clear => leases.clear(),
                }
                prop_assert_eq!(leases.next_deadline(), scan_next(&leases));
                for probe in [now, now + Duration::from_millis(1_000), now + Duration::from_secs(60)] {
                    let due = leases.due(probe);
                    prop_assert!(due.windows(2).all(|w| {
                        let at = |id: &LeaseId| leases.get(id).map(|l| l.deadline);
                        at(&w[0]) <= at(&w[1])
                    }), "soonest first");
                    prop_assert_eq!(due.into_iter().collect::<BTreeSet<_>>(), scan_due(&leases, probe));
                }
                let held: BTreeSet<LeaseId> = leases.held().collect();
                let scanned: BTreeSet<LeaseId> = leases
                    .iter()
                    .filter(|l| l.held_since.is_some())
                    .map(|l| l.id)
                    .collect();
                prop_assert_eq!(held, scanned);
                let victims: Vec<LeaseId> = leases.victims().map(|l| l.id).collect();
                prop_assert_eq!(victims, scan_victims(&leases));
                for l in leases.iter() {
                    prop_assert_eq!(leases.of_instance(&l.instance), Some(l.id));
                    prop_assert_eq!(leases.of_task(l.task), Some(l.id));
                }
                prop_assert_eq!(leases.by_instance.len(), leases.len());
                prop_assert_eq!(leases.by_task.len(), leases.len());
            }
        }
    }
}
