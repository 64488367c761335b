//! The `KvCachePool` actor: AgentOS's model of the backends' KV caches, and the router that
//! uses it.
//!
//! It owns a [`PoolCore`] (block managers per backend replica, loads, live leases) and answers
//! typed messages ([`messages`]). Agents go through a [`KvClient`]: it encodes the prompt,
//! acquires a lease (chosen replica and cached prefix) before each LLM call and releases it
//! after, from a drop guard, so errors, timeouts, panics and dropped attempts release too.
//!
//! # Failure semantics
//! - The pool is a permanent child of the root supervisor. A restarted pool starts with empty
//!   caches and no leases, as a restarted serving engine would; releases of leases taken
//!   before the restart are ignored.
//! - If the pool is down, or does not answer within [`client::ACQUIRE_TIMEOUT`], the call still
//!   runs: the client routes it round robin on its own and counts it as
//!   `policy="fallback", outcome="unavailable"`. Nothing waits on the pool longer than that.
//! - Metrics are published from here: blocks by state and in-flight calls per replica, prefix
//!   query and hit tokens, copy-on-write copies, evictions, allocation failures, routing
//!   decisions, and `agentos_kvcache_cache_config_info`.

pub mod client;
pub mod messages;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use agentos_runtime::config::Config;
use agentos_runtime::kvcache::pool::BackendStats;
use agentos_runtime::kvcache::{Grant, KvStats, PoolCore, RouteOutcome, RoutingPolicy};
use agentos_runtime::metrics as m;

use crate::supervisor::ExitNotice;
pub use client::{KvClient, KvLease};
pub use messages::{AcquireLease, GetKvStats, ReleaseLease, StopKvPool, TrackUpperBound};

/// Mailbox capacity: every agent may have one acquire and one release queued at once.
pub const MAILBOX: usize = 4096;

/// Where the current pool lives; the supervisor's start function fills it on every start.
#[derive(Debug, Clone, Default)]
pub struct PoolSlot {
    addr: Arc<RwLock<Option<Addr<KvCachePool>>>>,
    upper_bound: Arc<AtomicBool>,
}

impl PoolSlot {
    /// The pool's current address, if one was started.
    pub fn get(&self) -> Option<Addr<KvCachePool>> {
        self.addr.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the pool's address.
    pub fn set(&self, addr: Addr<KvCachePool>) {
        *self.addr.write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Makes the pool (this one and every later start) track the unbounded-cache upper bound
    /// (see [`TrackUpperBound`]). Called right after boot, before the actors start, it sees
    /// every prompt.
    pub fn track_upper_bound(&self) {
        self.upper_bound.store(true, Ordering::Relaxed);
        if let Some(pool) = self.get() {
            pool.do_send(TrackUpperBound);
        }
    }

    /// Whether [`Self::track_upper_bound`] was called.
    pub fn tracks_upper_bound(&self) -> bool {
        self.upper_bound.load(Ordering::Relaxed)
    }
}

/// The pool actor.
pub struct KvCachePool {
    cfg: Arc<Config>,
    core: PoolCore,
    /// Counters last published per (backend, replica), to publish deltas.
    published: HashMap<(String, usize), KvStats>,
    notice: ExitNotice,
}

impl KvCachePool {
    /// A pool with empty caches for every backend of `cfg`.
    pub fn new(cfg: Arc<Config>, notice: ExitNotice) -> Self {
        let core = PoolCore::new(
            cfg.backends
                .iter()
                .map(|b| (b.name.clone(), b.cache.clone(), b.replicas)),
        );
        Self {
            cfg,
            core,
            published: HashMap::new(),
            notice,
        }
    }

    /// Also tracks the unbounded-cache upper bound (see [`TrackUpperBound`]).
    pub fn with_upper_bound(mut self) -> Self {
        self.core = std::mem::take(&mut self.core).with_upper_bound();
        self
    }

    fn publish(&mut self, backend: &str, replica: usize) {
        let Some(now) = self.core.replica_stats(backend, replica) else {
            return;
        };
        let key = (backend.to_owned(), replica);
        let before = self.published.get(&key).copied().unwrap_or_default();
        let b = backend.to_owned();
        let r = replica.to_string();
        for (name, new, old) in [
            (
                m::KV_PREFIX_QUERY_TOKENS,
                now.query_tokens,
                before.query_tokens,
            ),
            (m::KV_PREFIX_HIT_TOKENS, now.hit_tokens, before.hit_tokens),
            (m::KV_COW_COPIES, now.cow_copies, before.cow_copies),
            (m::KV_EVICTIONS, now.evictions, before.evictions),
            (
                m::KV_ALLOC_FAILURES,
                now.alloc_failures,
                before.alloc_failures,
            ),
        ] {
            // A restarted pool starts from zero; Prometheus counters only go up, so only the
            // growth since the last publication is added.
            if new > old {
                metrics::counter!(name, "backend" => b.clone(), "replica" => r.clone())
                    .increment(new - old);
            }
        }
        for (state, v) in [
            ("active", now.active_blocks),
            ("cached", now.cached_blocks),
            ("free", now.free_blocks),
        ] {
            metrics::gauge!(m::KV_BLOCKS, "backend" => b.clone(), "replica" => r.clone(), "state" => state)
                .set(v as f64);
        }
        if let Some(s) = self.core.stats(backend) {
            if let Some(load) = s.loads.get(replica) {
                metrics::gauge!(m::KV_REPLICA_INFLIGHT, "backend" => b, "replica" => r)
                    .set(*load as f64);
            }
        }
        self.published.insert(key, now);
    }
}

impl Actor for KvCachePool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let cfg = self.cfg.clone();
        for b in &cfg.backends {
            metrics::gauge!(m::KV_CACHE_CONFIG_INFO,
                "backend" => b.name.clone(),
                "block_size" => b.cache.block_size.to_string(),
                "capacity_blocks" => b.cache.capacity_blocks.to_string(),
                "replicas" => b.replicas.to_string(),
                "routing" => b.cache.routing.name())
            .set(1.0);
            for policy in RoutingPolicy::ALL
                .iter()
                .map(|p| p.name())
                .chain(["fallback"])
            {
                for outcome in RouteOutcome::ALL {
                    metrics::counter!(m::KV_ROUTING_DECISIONS, "backend" => b.name.clone(),
                        "policy" => policy, "outcome" => outcome.label())
                    .increment(0);
                }
            }
            for replica in 0..b.replicas {
                let r = replica.to_string();
                for name in [
                    m::KV_PREFIX_QUERY_TOKENS,
                    m::KV_PREFIX_HIT_TOKENS,
                    m::KV_COW_COPIES,
                    m::KV_EVICTIONS,
                    m::KV_ALLOC_FAILURES,
                ] {
                    metrics::counter!(name, "backend" => b.name.clone(), "replica" => r.clone())
                        .increment(0);
                }
                self.publish(&b.name, replica);
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<AcquireLease> for KvCachePool {
    type Result = Option<Grant>;

    fn handle(&mut self, msg: AcquireLease, _: &mut Self::Context) -> Option<Grant> {
        let grant = self.core.acquire(msg.lease, &msg.backend, &msg.tokens)?;
        metrics::counter!(m::KV_ROUTING_DECISIONS, "backend" => msg.backend.clone(),
            "policy" => grant.policy.name(), "outcome" => grant.outcome.label())
        .increment(1);
        self.publish(&msg.backend, grant.replica);
        Some(grant)
    }
}

impl Handler<ReleaseLease> for KvCachePool {
    type Result = ();

    fn handle(&mut self, msg: ReleaseLease, _: &mut Self::Context) {
        if let Some((backend, replica)) = self.core.release(msg.lease) {
            self.publish(&backend, replica);
        }
    }
}

impl Handler<GetKvStats> for KvCachePool {
    type Result = Option<BackendStats>;

    fn handle(&mut self, msg: GetKvStats, _: &mut Self::Context) -> Option<BackendStats> {
        self.core.stats(&msg.backend)
    }
}

impl Handler<TrackUpperBound> for KvCachePool {
    type Result = ();

    fn handle(&mut self, _: TrackUpperBound, _: &mut Self::Context) {
        let core = std::mem::take(&mut self.core);
        self.core = core.with_upper_bound();
    }
}

impl Handler<StopKvPool> for KvCachePool {
    type Result = ();

    fn handle(&mut self, _: StopKvPool, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests;
