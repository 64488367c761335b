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
use agentos_runtime::events::{
    KvCacheConfigured, KvReplicaPublished, KvSeriesRegistered, RouteDecided, RoutedBy,
};
use agentos_runtime::kvcache::pool::BackendStats;
use agentos_runtime::kvcache::{Grant, KvStats, PoolCore};

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
        let inflight = self
            .core
            .stats(backend)
            .and_then(|s| s.loads.get(replica).copied());
        KvReplicaPublished {
            backend,
            replica,
            now: &now,
            before: &before,
            inflight,
        }
        .emit();
        self.published.insert(key, now);
    }
}

impl Actor for KvCachePool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        let cfg = self.cfg.clone();
        for b in &cfg.backends {
            KvCacheConfigured {
                backend: &b.name,
                settings: &b.cache,
                replicas: b.replicas,
            }
            .emit();
            KvSeriesRegistered {
                backend: &b.name,
                replicas: b.replicas,
            }
            .emit();
            for replica in 0..b.replicas {
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
        RouteDecided {
            backend: &msg.backend,
            routed_by: RoutedBy::Policy(grant.policy),
            outcome: grant.outcome,
        }
        .emit();
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
