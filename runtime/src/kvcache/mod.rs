//! The KV-cache model: paged prompt blocks with exact sharing, and cache-aware routing.
//!
//! Serving engines (vLLM's automatic prefix caching, SGLang's RadixAttention) keep the KV blocks
//! of prompt prefixes and skip their prefill. This module models those caches so the runtime can
//! account for sharing exactly and route each call to the replica that already holds its prefix.
//!
//! - [`hash`]: prompts as token sequences ([`PromptEncoder`]) and the block hash chain.
//! - [`block`]: the [`BlockManager`] of one replica: reference-counted physical blocks, an LRU of
//!   cached blocks, copy-on-write of shared partial blocks, typed allocation failure.
//! - [`stats`]: [`KvStats`], counted the way engines define them.
//! - [`router`]: the routing policies (`round_robin`, `least_loaded`, `prefix_aware`).
//! - [`pool`]: [`PoolCore`], every backend's replicas, loads and live leases; the
//!   `KvCachePool` actor owns one.
//!
//! No actix here: the simulator uses the same [`BlockManager`] as its per-replica cache.

pub mod block;
pub mod hash;
pub mod pool;
pub mod router;
pub mod stats;

pub use block::{Acquired, BlockManager, SeqId};
pub use hash::PromptEncoder;
pub use pool::{BackendStats, Grant, PoolCore};
pub use router::{Decision, RouteOutcome, Router, RoutingPolicy};
pub use stats::KvStats;

/// Default tokens per block (vLLM's default).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Default blocks per replica: 8192 blocks of 16 tokens hold 131072 tokens.
pub const DEFAULT_CAPACITY_BLOCKS: usize = 8192;

/// Largest block size a config may set, in tokens.
pub const MAX_BLOCK_SIZE: usize = 4096;

/// Most blocks per replica a config may set: 16M blocks (a quarter billion tokens at 16 per
/// block).
pub const MAX_CAPACITY_BLOCKS: usize = 1 << 24;

/// Default load slack of `prefix_aware` routing (see [`Router`]).
pub const DEFAULT_LOAD_SLACK: f64 = 0.5;

/// The `cache` section of a backend, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct KvCacheSettings {
    /// Tokens per block (at least 1).
    pub block_size: usize,
    /// Physical blocks per replica.
    pub capacity_blocks: usize,
    /// How calls are spread over the backend's replicas.
    pub routing: RoutingPolicy,
    /// How far above its fair share of in-flight calls a replica may go before `prefix_aware`
    /// routing passes it over: `0.5` allows 50 % more than an even split.
    pub load_slack: f64,
    /// Per-tenant salt mixed into the root of every hash chain: backends with different salts
    /// never share blocks, even for equal prompts. `None` means no salt.
    pub salt: Option<String>,
}

impl Default for KvCacheSettings {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            capacity_blocks: DEFAULT_CAPACITY_BLOCKS,
            routing: RoutingPolicy::default(),
            load_slack: DEFAULT_LOAD_SLACK,
            salt: None,
        }
    }
}

impl KvCacheSettings {
    /// The salt as the 64-bit value mixed into the chain root (0 without a salt).
    pub fn salt_value(&self) -> u64 {
        self.salt.as_deref().map_or(0, hash::salt_of)
    }

    /// A block manager of one replica with these settings.
    pub fn manager(&self) -> BlockManager {
        BlockManager::new(self.block_size, self.capacity_blocks, self.salt_value())
    }
}

/// Why the block manager refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Every block is referenced by a live sequence; the caller queues or preempts.
    #[error(
        "out of KV blocks: the prompt needs {needed} new blocks but only {available} of {capacity} can be reused or evicted"
    )]
    OutOfBlocks {
        /// New blocks the request needs.
        needed: usize,
        /// Blocks free or evictable right now.
        available: usize,
        /// Blocks of the replica.
        capacity: usize,
    },
    /// The sequence is not live (never acquired, or already released).
    #[error("no live sequence {0}")]
    UnknownSequence(u64),
}
