//! Messages of the KV-cache pool.

use std::sync::Arc;

use actix::prelude::*;
use agentos_runtime::kvcache::pool::BackendStats;
use agentos_runtime::kvcache::Grant;

use super::port::ports;

/// Routes a prompt on a backend and records its blocks on the chosen replica under `lease`.
/// Answers `None` for an unknown backend.
#[derive(Debug, Message)]
#[rtype(result = "Option<Grant>")]
pub struct AcquireLease {
    /// Chosen by the caller (unique per process), so the caller can release it even when it
    /// stopped waiting for the answer.
    pub lease: u64,
    /// Backend name.
    pub backend: String,
    /// The prompt's token sequence.
    pub tokens: Arc<[u32]>,
}

/// Ends a lease: the replica's load drops and the blocks stay cached. Unknown leases (already
/// released, or acquired before a restart of the pool) are ignored.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseLease {
    /// The lease id given to [`AcquireLease`].
    pub lease: u64,
}

/// A backend's cache and routing figures.
#[derive(Debug, Message)]
#[rtype(result = "Option<BackendStats>")]
pub struct GetKvStats {
    /// Backend name.
    pub backend: String,
}

/// From now on, also replay every prompt against one unbounded cache per backend, to report the
/// best hit rate any router could reach (benchmarks; memory grows with distinct prompts).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TrackUpperBound;

ports! {
    /// Ports of the KV-cache pool.
    KvPorts {
        /// Before each LLM call.
        acquire: AcquireLease,
        /// After each LLM call (from the lease's drop guard).
        release: ReleaseLease,
        /// Figures for the summary and benchmarks.
        stats: GetKvStats,
        /// Benchmarks: track the unbounded-cache upper bound.
        track: TrackUpperBound,
    }
}
