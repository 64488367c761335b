//! [`PoolCore`]: every backend's replicas, their block managers, loads and live leases.
//!
//! A lease is one LLM call's claim on a replica: [`PoolCore::acquire`] routes the prompt, records
//! its blocks on the chosen replica's [`BlockManager`] and counts the call in that replica's
//! load; [`PoolCore::release`] undoes both, leaving the blocks cached. Lease ids come from the
//! caller, so a caller that gave up waiting for the answer can still release what it asked for.
//!
//! For an `openai` backend the managers are an approximate model of each server's own cache
//! (what production prefix-aware routers keep); for the simulator they mirror the simulator's
//! per-replica caches, which use the same settings.

use std::collections::HashMap;

use super::router::{Decision, RouteOutcome, Router, RoutingPolicy};
use super::{BlockManager, KvCacheSettings, KvError, KvStats, SeqId};

/// Capacity of the upper-bound model: large enough never to evict in a benchmark, and
/// allocated lazily.
const UNBOUNDED_BLOCKS: usize = u32::MAX as usize;

/// The answer to an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The replica the call goes to.
    pub replica: usize,
    /// Leading prompt tokens cached there.
    pub cached_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// The policy that chose.
    pub policy: RoutingPolicy,
    /// What the choice found.
    pub outcome: RouteOutcome,
    /// `false` when the replica had no room for the prompt's blocks (every block referenced):
    /// the call still goes there, as a real engine would queue or preempt, but its blocks are
    /// not recorded.
    pub recorded: bool,
}

#[derive(Debug)]
struct BackendPool {
    settings: KvCacheSettings,
    replicas: Vec<BlockManager>,
    loads: Vec<usize>,
    router: Router,
    upper: Option<BlockManager>,
}

#[derive(Debug, Clone)]
struct Lease {
    backend: String,
    replica: usize,
    seq: Option<SeqId>,
}

/// The state of the `KvCachePool` actor (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct PoolCore {
    backends: HashMap<String, BackendPool>,
    leases: HashMap<u64, Lease>,
}

/// A backend's figures.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct BackendStats {
    /// Per replica, by index.
    pub replicas: Vec<KvStats>,
    /// Calls in flight per replica.
    pub loads: Vec<usize>,
    /// Every replica summed.
    pub total: KvStats,
    /// The same prompts against one unbounded cache: the hit rate no router can beat. Only
    /// when the pool was built [`PoolCore::with_upper_bound`].
    pub upper_bound: Option<KvStats>,
}

impl PoolCore {
    /// A pool of `(backend name, cache settings, replica count)`.
    pub fn new(backends: impl IntoIterator<Item = (String, KvCacheSettings, usize)>) -> Self {
        let backends = backends
            .into_iter()
            .map(|(name, settings, n)| {
                let n = n.max(1);
                let pool = BackendPool {
                    replicas: (0..n).map(|_| settings.manager()).collect(),
                    loads: vec![0; n],
                    router: Router::new(settings.routing, settings.load_slack)
                        .with_block_size(settings.block_size),
                    settings,
                    upper: None,
                };
                (name, pool)
            })
            .collect();
        Self {
            backends,
            leases: HashMap::new(),
        }
    }

    /// Also replays every prompt against one unbounded cache per backend, to report the best
    /// hit rate any router could reach. Memory grows with every distinct prompt: for
    /// benchmarks, not for long-running servers.
    pub fn with_upper_bound(mut self) -> Self {
        for b in self.backends.values_mut() {
            b.upper = Some(BlockManager::new(
                b.settings.block_size,
                UNBOUNDED_BLOCKS,
                b.settings.salt_value(),
            ));
        }
        self
    }

    /// The cache settings and replica count of `backend`.
    pub fn backend(&self, backend: &str) -> Option<(&KvCacheSettings, usize)> {
        self.backends
            .get(backend)
            .map(|b| (&b.settings, b.replicas.len()))
    }

    /// Names of the backends.
    pub fn backend_names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    /// Routes a prompt on `backend` and records lease `lease` there. `None` when the backend is
    /// unknown. A lease id already live is released first.
    pub fn acquire(&mut self, lease: u64, backend: &str, tokens: &[u32]) -> Option<Grant> {
        if self.leases.contains_key(&lease) {
            self.release(lease);
        }
        let b = self.backends.get_mut(backend)?;
        let hashes = b.replicas[0].hashes(tokens);
        let cached: Vec<usize> = b
            .replicas
            .iter()
            .map(|m| m.cached_prefix(tokens, &hashes))
            .collect();
        let Decision { replica, outcome } = b.router.choose(&cached, &b.loads);
        if let Some(upper) = b.upper.as_mut() {
            if let Ok(a) = upper.acquire_hashed(tokens, &hashes) {
                let _ = upper.release(a.seq);
            }
        }
        let (seq, cached_tokens) = match b.replicas[replica].acquire_hashed(tokens, &hashes) {
            Ok(a) => (Some(a.seq), a.cached_tokens),
            Err(KvError::OutOfBlocks { .. } | KvError::UnknownSequence(_)) => {
                (None, cached[replica])
            }
        };
        b.loads[replica] += 1;
        self.leases.insert(
            lease,
            Lease {
                backend: backend.to_owned(),
                replica,
                seq,
            },
        );
        Some(Grant {
            replica,
            cached_tokens,
            prompt_tokens: tokens.len(),
            policy: b.router.policy(),
            outcome,
            recorded: seq.is_some(),
        })
    }

    /// Ends lease `lease`; returns its backend and replica, or `None` if it was not live (never
    /// acquired here, already released, or acquired before a restart).
    pub fn release(&mut self, lease: u64) -> Option<(String, usize)> {
        let l = self.leases.remove(&lease)?;
        if let Some(b) = self.backends.get_mut(&l.backend) {
            b.loads[l.replica] = b.loads[l.replica].saturating_sub(1);
            if let Some(seq) = l.seq {
                let _ = b.replicas[l.replica].release(seq);
            }
        }
        Some((l.backend, l.replica))
    }

    /// Live leases.
    pub fn live_leases(&self) -> usize {
        self.leases.len()
    }

    /// One replica's figures.
    pub fn replica_stats(&self, backend: &str, replica: usize) -> Option<KvStats> {
        self.backends
            .get(backend)?
            .replicas
            .get(replica)
            .map(BlockManager::stats)
    }

    /// A backend's figures.
    pub fn stats(&self, backend: &str) -> Option<BackendStats> {
        let b = self.backends.get(backend)?;
        let replicas: Vec<KvStats> = b.replicas.iter().map(BlockManager::stats).collect();
        let mut total = KvStats::default();
        for r in &replicas {
            total.merge(r);
        }
        Some(BackendStats {
            replicas,
            loads: b.loads.clone(),
            total,
            upper_bound: b.upper.as_ref().map(BlockManager::stats),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(policy: RoutingPolicy) -> PoolCore {
        let settings = KvCacheSettings {
            block_size: 4,
            capacity_blocks: 64,
            routing: policy,
            load_slack: 1.0,
            salt: None,
        };
        PoolCore::new([("b".to_string(), settings, 3)]).with_upper_bound()
    }

    #[test]
    fn prefix_aware_sends_a_repeated_prefix_back_to_its_replica() {
        let mut p = pool(RoutingPolicy::PrefixAware);
        let prompt: Vec<u32> = (0..20).collect();
        let first = p.acquire(1, "b", &prompt).unwrap();
        assert_eq!(
            (first.cached_tokens, first.outcome),
            (0, RouteOutcome::Miss)
        );
        p.release(1).unwrap();
        let mut longer = prompt.clone();
        longer.extend([77, 78]);
        let second = p.acquire(2, "b", &longer).unwrap();
        assert_eq!(second.replica, first.replica);
        assert_eq!(
            (second.cached_tokens, second.outcome),
            (20, RouteOutcome::Hit)
        );
        assert_eq!(p.stats("b").unwrap().loads.iter().sum::<usize>(), 1);
        p.release(2).unwrap();
        assert_eq!(p.release(2), None, "a lease is released once");
        let s = p.stats("b").unwrap();
        assert_eq!(s.total.hit_tokens, 20);
        assert_eq!(s.upper_bound.unwrap().hit_tokens, 20);
        assert_eq!(p.live_leases(), 0);
    }

    #[test]
    fn unknown_backend_gets_no_grant() {
        let mut p = pool(RoutingPolicy::RoundRobin);
        assert!(p.acquire(1, "nope", &[1, 2, 3]).is_none());
        assert_eq!(p.live_leases(), 0);
    }

    #[test]
    fn a_full_replica_still_takes_the_call_unrecorded() {
        let settings = KvCacheSettings {
            block_size: 2,
            capacity_blocks: 2,
            ..KvCacheSettings::default()
        };
        let mut p = PoolCore::new([("b".to_string(), settings, 1)]);
        assert!(p.acquire(1, "b", &[1, 2, 3, 4]).unwrap().recorded);
        let g = p.acquire(2, "b", &[5, 6, 7, 8]).unwrap();
        assert!(!g.recorded);
        assert_eq!(p.stats("b").unwrap().total.alloc_failures, 1);
        assert_eq!(p.stats("b").unwrap().loads, vec![2]);
        p.release(2).unwrap();
        p.release(1).unwrap();
        assert_eq!(p.stats("b").unwrap().total.active_blocks, 0);
    }
}
