//! Routing policies: which replica of a backend serves the next call.
//!
//! - `round_robin`: replicas in turn, blind to caches and load.
//! - `least_loaded`: the replica with the fewest calls in flight.
//! - `prefix_aware` (default): the replica with the longest cached prefix of the prompt,
//!   bounded by load. A replica may take the call only while its in-flight calls stay within
//!   its fair share plus the slack: `load + 1 <= ceil((total + 1) / replicas × (1 + slack))`.
//!   Among those, the longest cached prefix wins, then the lighter load; remaining ties rotate.
//!   The least loaded replica always qualifies, so a choice always exists.

use serde::Serialize;

/// How calls are spread over a backend's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingPolicy {
    /// Replicas in turn.
    RoundRobin,
    /// Fewest calls in flight.
    LeastLoaded,
    /// Longest cached prefix, bounded by load.
    #[default]
    PrefixAware,
}

impl RoutingPolicy {
    /// Every policy.
    pub const ALL: [RoutingPolicy; 3] = [
        RoutingPolicy::RoundRobin,
        RoutingPolicy::LeastLoaded,
        RoutingPolicy::PrefixAware,
    ];

    /// The config and metric label name.
    pub fn name(self) -> &'static str {
        match self {
            RoutingPolicy::RoundRobin => "round_robin",
            RoutingPolicy::LeastLoaded => "least_loaded",
            RoutingPolicy::PrefixAware => "prefix_aware",
        }
    }

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What a routing decision found, for the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteOutcome {
    /// The chosen replica holds the longest cached prefix there is (and it is not empty).
    Hit,
    /// No replica held any of the prompt (or the chosen one holds none of it).
    Miss,
    /// The replica with the longest prefix was over its share; a shorter one was taken.
    Overloaded,
    /// The pool could not be asked; the caller routed on its own.
    Unavailable,
}

impl RouteOutcome {
    /// Every outcome.
    pub const ALL: [RouteOutcome; 4] = [
        RouteOutcome::Hit,
        RouteOutcome::Miss,
        RouteOutcome::Overloaded,
        RouteOutcome::Unavailable,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RouteOutcome::Hit => "hit",
            RouteOutcome::Miss => "miss",
            RouteOutcome::Overloaded => "overloaded",
            RouteOutcome::Unavailable => "unavailable",
        }
    }
}

/// One routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Chosen replica index.
    pub replica: usize,
    /// What the choice found.
    pub outcome: RouteOutcome,
}

/// A policy with its rotation state.
#[derive(Debug, Clone)]
pub struct Router {
    policy: RoutingPolicy,
    slack: f64,
    /// Cached prefixes are compared in whole units of this many tokens (the block size).
    granularity: usize,
    next: usize,
}

impl Router {
    /// A router with `policy`; `slack` is the load slack of `prefix_aware`.
    pub fn new(policy: RoutingPolicy, slack: f64) -> Self {
        Self {
            policy,
            slack: if slack.is_finite() {
                slack.max(0.0)
            } else {
                0.0
            },
            granularity: 1,
            next: 0,
        }
    }

    /// Compares cached prefixes in whole blocks of `block_size` tokens: a replica whose prefix
    /// is longer by less than a block saves less prefill than the queueing an unbalanced load
    /// costs, so within the same number of blocks the less loaded replica wins.
    pub fn with_block_size(mut self, block_size: usize) -> Self {
        self.granularity = block_size.max(1);
        self
    }

    /// Its policy.
    pub fn policy(&self) -> RoutingPolicy {
        self.policy
    }

    /// Chooses a replica given each replica's cached prefix (tokens) and in-flight calls. Both
    /// slices have one entry per replica and at least one entry.
    pub fn choose(&mut self, cached: &[usize], loads: &[usize]) -> Decision {
        let n = loads.len().max(1);
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        // Replicas in rotated order, so ties do not all land on replica 0.
        let order = (0..n).map(|i| (start + i) % n);
        let replica = match self.policy {
            RoutingPolicy::RoundRobin => start,
            RoutingPolicy::LeastLoaded => order.min_by_key(|&r| loads[r]).unwrap_or(0),
            RoutingPolicy::PrefixAware => {
                let total: usize = loads.iter().sum();
                let fair = (total + 1) as f64 / n as f64;
                let limit = ((fair * (1.0 + self.slack)).ceil() as usize).max(1);
                order
                    .filter(|&r| loads[r] < limit)
                    .min_by_key(|&r| (std::cmp::Reverse(cached[r] / self.granularity), loads[r]))
                    .or_else(|| (0..n).min_by_key(|&r| loads[r]))
                    .unwrap_or(0)
            }
        };
        let best = cached.iter().copied().max().unwrap_or(0);
        let got = cached.get(replica).copied().unwrap_or(0);
        // As the choice itself does, count prefixes in whole blocks.
        let (best_blocks, got_blocks) = (best / self.granularity, got / self.granularity);
        let outcome = if got_blocks != best_blocks && self.policy == RoutingPolicy::PrefixAware {
            RouteOutcome::Overloaded
        } else if got == 0 {
            RouteOutcome::Miss
        } else {
            RouteOutcome::Hit
        };
        Decision { replica, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in RoutingPolicy::ALL {
            assert_eq!(RoutingPolicy::from_name(p.name()), Some(p));
        }
        assert_eq!(RoutingPolicy::from_name("random"), None);
        assert_eq!(RoutingPolicy::default(), RoutingPolicy::PrefixAware);
    }

    #[test]
    fn round_robin_rotates_and_least_loaded_picks_the_lightest() {
        let mut rr = Router::new(RoutingPolicy::RoundRobin, 0.0);
        let picks: Vec<_> = (0..5)
            .map(|_| rr.choose(&[0, 0, 0], &[9, 0, 0]).replica)
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1]);
        let mut ll = Router::new(RoutingPolicy::LeastLoaded, 0.0);
        assert_eq!(ll.choose(&[50, 0, 0], &[3, 1, 2]).replica, 1);
    }

    #[test]
    fn prefix_aware_prefers_the_longest_prefix_within_its_share() {
        let mut r = Router::new(RoutingPolicy::PrefixAware, 0.5);
        let d = r.choose(&[0, 64, 32, 0], &[1, 1, 1, 1]);
        assert_eq!(
            d,
            Decision {
                replica: 1,
                outcome: RouteOutcome::Hit
            }
        );
        // Replica 1 is far above its share (fair 9/4, limit ceil(2.25 * 1.5) = 4): next best.
        let d = r.choose(&[0, 64, 32, 0], &[1, 5, 1, 1]);
        assert_eq!(
            d,
            Decision {
                replica: 2,
                outcome: RouteOutcome::Overloaded
            }
        );
        let d = r.choose(&[0, 0, 0, 0], &[2, 0, 1, 1]);
        assert_eq!(
            d,
            Decision {
                replica: 1,
                outcome: RouteOutcome::Miss
            }
        );
    }

    #[test]
    fn prefix_aware_without_slack_still_finds_a_replica_and_spreads_a_cold_start() {
        let mut r = Router::new(RoutingPolicy::PrefixAware, 0.0);
        let mut loads = [0usize; 4];
        for _ in 0..8 {
            let d = r.choose(&[16, 16, 16, 16], &loads);
            loads[d.replica] += 1;
        }
        assert_eq!(loads, [2, 2, 2, 2]);
    }

    #[test]
    fn prefix_aware_compares_prefixes_in_whole_blocks() {
        let mut r = Router::new(RoutingPolicy::PrefixAware, 0.5).with_block_size(16);
        // 40 vs 35 cached tokens: both two full blocks, so the idle replica wins.
        assert_eq!(r.choose(&[40, 35], &[1, 0]).replica, 1);
        // 48 vs 35: three blocks against two, the longer prefix wins despite its load.
        assert_eq!(r.choose(&[48, 35], &[1, 0]).replica, 0);
    }
}
