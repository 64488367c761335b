//! Cache statistics, counted the way serving engines define them.

use serde::Serialize;

/// Counters and gauges of one replica's block manager (or a sum of several).
///
/// - Prefix-cache **queries** and **hits** are in tokens: every acquired prompt queries all its
///   tokens; hits are the tokens whose KV was already resident (full blocks found by hash, plus
///   tokens copied from or shared with a resident partial block). Hit rate =
///   `hit_tokens / query_tokens`.
/// - **Sharing**: `logical_blocks` is what the live sequences would hold without sharing (each
///   its own blocks), `active_blocks` what they hold physically. `peak_*` keeps both at the
///   moment the logical demand peaked, so `1 - peak_active / peak_logical` is the share of
///   blocks saved by sharing under the heaviest load.
/// - Blocks by state (`active`, `cached`, `free`) always sum to `capacity_blocks`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KvStats {
    /// Prompt tokens looked up.
    pub query_tokens: u64,
    /// Prompt tokens found resident.
    pub hit_tokens: u64,
    /// Acquired prompts.
    pub acquires: u64,
    /// Copy-on-write copies of shared partial blocks.
    pub cow_copies: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
    /// Acquires refused because every block was referenced.
    pub alloc_failures: u64,
    /// Blocks referenced by live sequences.
    pub active_blocks: u64,
    /// Unreferenced blocks still holding reusable KV (the LRU).
    pub cached_blocks: u64,
    /// Empty blocks.
    pub free_blocks: u64,
    /// Physical blocks of the replica.
    pub capacity_blocks: u64,
    /// Blocks the live sequences would hold without sharing.
    pub logical_blocks: u64,
    /// Largest `logical_blocks` seen.
    pub peak_logical_blocks: u64,
    /// `active_blocks` at the moment of `peak_logical_blocks`.
    pub peak_active_blocks: u64,
}

impl KvStats {
    /// `hit_tokens / query_tokens`, 0 before any query.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hit_tokens, self.query_tokens)
    }

    /// Share of blocks saved by sharing at peak demand: `1 - peak_active / peak_logical`.
    pub fn sharing_saved_ratio(&self) -> f64 {
        if self.peak_logical_blocks == 0 {
            0.0
        } else {
            1.0 - ratio(self.peak_active_blocks, self.peak_logical_blocks).min(1.0)
        }
    }

    /// Adds another replica's figures (peaks add up too: an upper estimate across replicas).
    pub fn merge(&mut self, o: &KvStats) {
        self.query_tokens += o.query_tokens;
        self.hit_tokens += o.hit_tokens;
        self.acquires += o.acquires;
        self.cow_copies += o.cow_copies;
        self.evictions += o.evictions;
        self.alloc_failures += o.alloc_failures;
        self.active_blocks += o.active_blocks;
        self.cached_blocks += o.cached_blocks;
        self.free_blocks += o.free_blocks;
        self.capacity_blocks += o.capacity_blocks;
        self.logical_blocks += o.logical_blocks;
        self.peak_logical_blocks += o.peak_logical_blocks;
        self.peak_active_blocks += o.peak_active_blocks;
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
