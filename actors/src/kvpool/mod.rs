//! The `KvCachePool` actor: AgentOS's model of the backends' KV caches, and the router that
//! uses it.
//!
//! It owns a [`PoolCore`] (block managers per backend replica, loads, live leases) and answers
//! the typed messages of [`crate::protocol::kv`]. Agents go through their router
//! (`agent::router`): it encodes the prompt, acquires a lease (chosen replica and cached
//! prefix) before each LLM call and releases it after, from a drop guard, so errors,
//! timeouts, panics and dropped attempts release too.
//!
//! # Failure semantics
//! - The pool is a permanent child of the root supervisor. A restarted pool starts with empty
//!   caches and no leases, as a restarted serving engine would; releases of leases taken
//!   before the restart are ignored.
//! - If the pool is down, or does not answer within 500 ms (the router's `ACQUIRE_TIMEOUT`), the call
//!   still runs: the router routes it round robin on its own and counts it as
//!   `policy="fallback", outcome="unavailable"`. Nothing waits on the pool longer than that.
//! - Metrics are published from here: blocks by state and in-flight calls per replica, prefix
//!   query and hit tokens, copy-on-write copies, evictions, allocation failures, routing
//!   decisions, and `agentos_kvcache_cache_config_info`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use agentos_runtime::config::Config;
use agentos_runtime::events::{
    KvCacheConfigured, KvReplicaPublished, KvSeriesRegistered, ReplicaMetrics, RouteDecided,
    RoutedBy,
};
use agentos_runtime::kvcache::pool::BackendStats;
use agentos_runtime::kvcache::{Grant, KvStats, PoolCore};
use agentos_runtime::policy::supervision::RestartType;

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{AcquireLease, GetKvStats, KvPorts, ReleaseLease, TrackUpperBound};

/// Mailbox capacity: every agent may have one acquire and one release queued at once.
pub const MAILBOX: usize = 4096;

/// The pool's child spec: permanent; every start binds `ports`. While `upper_bound` is set,
/// every start also tracks the unbounded-cache upper bound (see [`TrackUpperBound`]).
pub fn child_spec(cfg: Arc<Config>, ports: KvPorts, upper_bound: Arc<AtomicBool>) -> ChildSpec {
    ChildSpec::new(
        "kv_pool",
        "kv_pool",
        RestartType::Permanent,
        move |notice| {
            let mut pool = KvCachePool::new(cfg.clone(), notice);
            if upper_bound.load(Ordering::Relaxed) {
                pool = pool.with_upper_bound();
            }
            let addr = pool.start();
            ports.bind(&addr);
            ChildHandle::stop_or_hard_stop(addr, || StopKvPool)
        },
    )
}

/// Stops the pool.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopKvPool;

/// The pool actor.
pub struct KvCachePool {
    cfg: Arc<Config>,
    core: PoolCore,
    /// Counters last published per backend and replica, to publish deltas, with the
    /// replica's metric handles.
    published: HashMap<String, Vec<Option<(KvStats, ReplicaMetrics)>>>,
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
        let inflight = self
            .core
            .stats(backend)
            .and_then(|s| s.loads.get(replica).copied());
        if !self.published.contains_key(backend) {
            self.published.insert(backend.to_owned(), Vec::new());
        }
        let Some(replicas) = self.published.get_mut(backend) else {
            return;
        };
        if replicas.len() <= replica {
            replicas.resize_with(replica + 1, || None);
        }
        let (before, metrics) = replicas[replica]
            .get_or_insert_with(|| (KvStats::default(), ReplicaMetrics::of(backend, replica)));
        metrics.publish(&KvReplicaPublished {
            backend,
            replica,
            now: &now,
            before,
            inflight,
        });
        *before = now;
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

impl Handler<HardStop> for KvCachePool {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Sent only when the stop message was not obeyed within the shutdown timeout.
        ctx.terminate();
    }
}
