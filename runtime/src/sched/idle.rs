//! The idle instances of one agent, first idle first served.
//!
//! Every operation is O(log n) in the number of idle instances: agents announce themselves one
//! by one at start (100k replicas are 100k announcements), and instances die one by one at
//! shutdown, so a linear membership test or removal here makes booting and stopping a large
//! fleet quadratic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::model::InstanceId;

/// A FIFO set of the idle instances of one agent: each instance is in it at most once. It
/// keeps the agent's name once and each instance by its replica number.
#[derive(Debug)]
pub(crate) struct IdleQueue {
    /// Whose instances these are.
    agent: Arc<str>,
    /// Arrival ticket -> replica, in arrival order.
    order: BTreeMap<u64, u32>,
    /// Replica -> its ticket in `order`.
    tickets: HashMap<u32, u64>,
    next: u64,
}

impl IdleQueue {
    /// An empty queue of `agent`'s instances.
    pub(crate) fn new(agent: Arc<str>) -> Self {
        Self {
            agent,
            order: BTreeMap::new(),
            tickets: HashMap::new(),
            next: 0,
        }
    }

    /// Whether no instance is idle.
    pub(crate) fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Whether `instance` is queued.
    #[cfg(test)]
    pub(crate) fn contains(&self, instance: &InstanceId) -> bool {
        self.mine(instance) && self.tickets.contains_key(&instance.replica)
    }

    /// Queues `instance` (one of this queue's agent's) at the back, unless it is already
    /// queued (then it keeps its place).
    pub(crate) fn push_back(&mut self, instance: InstanceId) {
        debug_assert!(
            self.mine(&instance),
            "{instance} queued with {}",
            self.agent
        );
        if self.tickets.contains_key(&instance.replica) {
            return;
        }
        let ticket = self.next;
        self.next += 1;
        self.order.insert(ticket, instance.replica);
        self.tickets.insert(instance.replica, ticket);
    }

    /// Takes the instance that has been idle longest.
    pub(crate) fn pop_front(&mut self) -> Option<InstanceId> {
        let (_, replica) = self.order.pop_first()?;
        self.tickets.remove(&replica);
        Some(InstanceId {
            agent: self.agent.clone(),
            replica,
        })
    }

    /// Removes `instance` wherever it is queued.
    pub(crate) fn remove(&mut self, instance: &InstanceId) {
        if !self.mine(instance) {
            return;
        }
        if let Some(ticket) = self.tickets.remove(&instance.replica) {
            self.order.remove(&ticket);
        }
    }

    fn mine(&self, instance: &InstanceId) -> bool {
        instance.agent == self.agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn inst(replica: u32) -> InstanceId {
        InstanceId {
            agent: "a".into(),
            replica,
        }
    }

    #[test]
    fn first_idle_first_served_and_no_duplicates() {
        let mut q = IdleQueue::new("a".into());
        q.push_back(inst(2));
        q.push_back(inst(0));
        q.push_back(inst(2));
        q.push_back(inst(1));
        q.remove(&inst(0));
        assert_eq!(q.pop_front(), Some(inst(2)));
        assert_eq!(q.pop_front(), Some(inst(1)));
        assert_eq!(q.pop_front(), None);
        assert!(q.is_empty());
    }

    proptest! {
        /// Behaves exactly like the `VecDeque` with a membership test it replaces.
        #[test]
        fn matches_a_deduplicated_vecdeque(ops in proptest::collection::vec((0u8..3, 0u32..8), 0..200)) {
            let mut q = IdleQueue::new("a".into());
            let mut model: VecDeque<InstanceId> = VecDeque::new();
            for (op, r) in ops {
                match op {
                    0 => {
                        if !model.contains(&inst(r)) {
                            model.push_back(inst(r));
                        }
                        q.push_back(inst(r));
                    }
                    1 => prop_assert_eq!(q.pop_front(), model.pop_front()),
                    _ => {
                        model.retain(|i| *i != inst(r));
                        q.remove(&inst(r));
                    }
                }
                prop_assert_eq!(q.is_empty(), model.is_empty());
                prop_assert_eq!(q.contains(&inst(r)), model.contains(&inst(r)));
            }
        }
    }
}
