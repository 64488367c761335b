//! Events of the KV-cache pool: routing decisions, per-replica cache statistics, the cache
//! configuration, and the zero series registered when the pool starts. None has a trace line.

use super::labels::{KvBlockState, RoutedBy};
use super::names as m;
use crate::kvcache::{KvCacheSettings, KvStats, RouteOutcome};

/// Reads one counter from a replica's statistics.
type ReadCounter = fn(&KvStats) -> u64;

/// The per-replica counters, with how to read each from [`KvStats`].
const REPLICA_COUNTERS: [(&str, ReadCounter); 5] = [
    (m::KV_PREFIX_QUERY_TOKENS, |s| s.query_tokens),
    (m::KV_PREFIX_HIT_TOKENS, |s| s.hit_tokens),
    (m::KV_COW_COPIES, |s| s.cow_copies),
    (m::KV_EVICTIONS, |s| s.evictions),
    (m::KV_ALLOC_FAILURES, |s| s.alloc_failures),
];

/// A replica was chosen for an LLM call. No trace line (the call's `llm_call` line names the
/// replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecided<'a> {
    /// Backend name.
    pub backend: &'a str,
    /// Who chose: the pool's policy, or the client's fallback.
    pub routed_by: RoutedBy,
    /// What the choice found.
    pub outcome: RouteOutcome,
}

impl RouteDecided<'_> {
    /// Counts the decision.
    pub fn emit(&self) {
        metrics::counter!(m::KV_ROUTING_DECISIONS, "backend" => self.backend.to_owned(),
            "policy" => self.routed_by.label(), "outcome" => self.outcome.label())
        .increment(1);
        if self.routed_by == RoutedBy::Fallback {
            tracing::debug!(backend = %self.backend, "KV-cache pool unavailable; routing round robin");
        }
    }
}

/// A replica's cache statistics, published after it changed. No trace line.
///
/// The pool's counters restart from zero with the pool, while Prometheus counters only go up:
/// `before` is what was last published for the replica, and only growth is added.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvReplicaPublished<'a> {
    /// Backend name.
    pub backend: &'a str,
    /// Replica index.
    pub replica: usize,
    /// The replica's statistics now.
    pub now: &'a KvStats,
    /// The statistics last published (default when none were).
    pub before: &'a KvStats,
    /// LLM calls in flight on the replica, if known.
    pub inflight: Option<usize>,
}

impl KvReplicaPublished<'_> {
    /// Adds the counters' growth, sets the block gauges and the in-flight gauge.
    pub fn emit(&self) {
        ReplicaMetrics::of(self.backend, self.replica).publish(self);
    }
}

/// One replica's cache metrics, resolved once (the pool keeps them per replica and publishes
/// after every lease: atomic updates instead of registry lookups by label).
#[derive(Clone)]
pub struct ReplicaMetrics {
    counters: [metrics::Counter; 5],
    blocks: [metrics::Gauge; 3],
    inflight: metrics::Gauge,
}

impl std::fmt::Debug for ReplicaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaMetrics")
    }
}

impl ReplicaMetrics {
    /// The metrics of `replica` of `backend` in the current recorder.
    pub fn of(backend: &str, replica: usize) -> Self {
        let b = backend.to_owned();
        let r = replica.to_string();
        let counters = REPLICA_COUNTERS.map(
            |(name, _)| metrics::counter!(name, "backend" => b.clone(), "replica" => r.clone()),
        );
        let blocks = [
            KvBlockState::Active,
            KvBlockState::Cached,
            KvBlockState::Free,
        ]
        .map(|state| {
            metrics::gauge!(m::KV_BLOCKS, "backend" => b.clone(), "replica" => r.clone(),
                "state" => state.label())
        });
        let inflight = metrics::gauge!(m::KV_REPLICA_INFLIGHT, "backend" => b, "replica" => r);
        Self {
            counters,
            blocks,
            inflight,
        }
    }

    /// Publishes `e`'s figures (`e.backend` and `e.replica` are not looked at).
    pub fn publish(&self, e: &KvReplicaPublished<'_>) {
        for ((_, read), counter) in REPLICA_COUNTERS.iter().zip(&self.counters) {
            let (new, old) = (read(e.now), read(e.before));
            if new > old {
                counter.increment(new - old);
            }
        }
        let blocks = [e.now.active_blocks, e.now.cached_blocks, e.now.free_blocks];
        for (gauge, v) in self.blocks.iter().zip(blocks) {
            gauge.set(v as f64);
        }
        if let Some(load) = e.inflight {
            self.inflight.set(load as f64);
        }
    }
}

/// A backend's cache configuration, published when the pool starts. No trace line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvCacheConfigured<'a> {
    /// Backend name.
    pub backend: &'a str,
    /// Its cache settings.
    pub settings: &'a KvCacheSettings,
    /// Its replicas.
    pub replicas: usize,
}

impl KvCacheConfigured<'_> {
    /// Sets the info gauge (always 1; the facts are labels).
    pub fn emit(&self) {
        metrics::gauge!(m::KV_CACHE_CONFIG_INFO,
            "backend" => self.backend.to_owned(),
            "block_size" => self.settings.block_size.to_string(),
            "capacity_blocks" => self.settings.capacity_blocks.to_string(),
            "replicas" => self.replicas.to_string(),
            "routing" => self.settings.routing.name())
        .set(1.0);
    }
}

/// The pool started for a backend: its counter series are created at zero, so that their
/// first increase shows in `rate()`. No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSeriesRegistered<'a> {
    /// Backend name.
    pub backend: &'a str,
    /// Its replicas.
    pub replicas: usize,
}

impl KvSeriesRegistered<'_> {
    /// Registers routing decisions for every policy (and `fallback`) and outcome, and the
    /// per-replica counters.
    pub fn emit(&self) {
        for routed_by in RoutedBy::ALL {
            for outcome in RouteOutcome::ALL {
                metrics::counter!(m::KV_ROUTING_DECISIONS, "backend" => self.backend.to_owned(),
                    "policy" => routed_by.label(), "outcome" => outcome.label())
                .increment(0);
            }
        }
        for replica in 0..self.replicas {
            let r = replica.to_string();
            for (name, _) in REPLICA_COUNTERS {
                metrics::counter!(name, "backend" => self.backend.to_owned(), "replica" => r.clone())
                    .increment(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::metrics_of;
    use crate::kvcache::RoutingPolicy;

    #[test]
    fn route_decision_is_labelled_by_policy_and_outcome() {
        let got = metrics_of(|| {
            RouteDecided {
                backend: "local",
                routed_by: RoutedBy::Policy(RoutingPolicy::PrefixAware),
                outcome: RouteOutcome::Hit,
            }
            .emit();
            RouteDecided {
                backend: "local",
                routed_by: RoutedBy::Fallback,
                outcome: RouteOutcome::Unavailable,
            }
            .emit();
        });
        let decisions = |p, o| {
            got.counter(
                m::KV_ROUTING_DECISIONS,
                &[("backend", "local"), ("policy", p), ("outcome", o)],
            )
        };
        assert_eq!(decisions("prefix_aware", "hit"), Some(1));
        assert_eq!(decisions("fallback", "unavailable"), Some(1));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn replica_publication_adds_only_growth() {
        let before = KvStats {
            query_tokens: 100,
            hit_tokens: 40,
            ..KvStats::default()
        };
        let now = KvStats {
            query_tokens: 160,
            // A restarted pool: lower than published; nothing is added.
            hit_tokens: 10,
            evictions: 2,
            active_blocks: 3,
            cached_blocks: 4,
            free_blocks: 5,
            ..KvStats::default()
        };
        let got = metrics_of(|| {
            KvReplicaPublished {
                backend: "local",
                replica: 1,
                now: &now,
                before: &before,
                inflight: Some(2),
            }
            .emit()
        });
        let labels = [("backend", "local"), ("replica", "1")];
        assert_eq!(got.counter(m::KV_PREFIX_QUERY_TOKENS, &labels), Some(60));
        // The replica's series exist from its first publication on, at 0 when nothing grew.
        assert_eq!(got.counter(m::KV_PREFIX_HIT_TOKENS, &labels), Some(0));
        assert_eq!(got.counter(m::KV_EVICTIONS, &labels), Some(2));
        let blocks = |s| {
            got.gauge(
                m::KV_BLOCKS,
                &[("backend", "local"), ("replica", "1"), ("state", s)],
            )
        };
        assert_eq!(blocks("active"), Some(3.0));
        assert_eq!(blocks("cached"), Some(4.0));
        assert_eq!(blocks("free"), Some(5.0));
        assert_eq!(got.gauge(m::KV_REPLICA_INFLIGHT, &labels), Some(2.0));
    }

    #[test]
    fn start_registers_config_and_zero_series() {
        let settings = KvCacheSettings {
            block_size: 16,
            capacity_blocks: 1024,
            routing: RoutingPolicy::LeastLoaded,
            load_slack: 0.5,
            salt: None,
        };
        let got = metrics_of(|| {
            KvCacheConfigured {
                backend: "local",
                settings: &settings,
                replicas: 2,
            }
            .emit();
            KvSeriesRegistered {
                backend: "local",
                replicas: 2,
            }
            .emit();
        });
        assert_eq!(
            got.gauge(
                m::KV_CACHE_CONFIG_INFO,
                &[
                    ("backend", "local"),
                    ("block_size", "16"),
                    ("capacity_blocks", "1024"),
                    ("replicas", "2"),
                    ("routing", "least_loaded")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            got.counter(
                m::KV_ROUTING_DECISIONS,
                &[
                    ("backend", "local"),
                    ("policy", "fallback"),
                    ("outcome", "miss")
                ]
            ),
            Some(0)
        );
        assert_eq!(
            got.counter(m::KV_COW_COPIES, &[("backend", "local"), ("replica", "1")]),
            Some(0)
        );
        // 1 info gauge + 4 × 4 routing series + 2 replicas × 5 counters.
        assert_eq!(got.len(), 1 + 16 + 10);
    }
}
