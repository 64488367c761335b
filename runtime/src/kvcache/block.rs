//! The block manager of one replica: paged KV blocks with reference counts, a hash-chain index
//! of full blocks, an LRU of unreferenced blocks, and copy-on-write of shared partial blocks.
//!
//! # Model
//! A sequence (one acquired prompt) is a list of physical blocks of `block_size` tokens; the
//! last one may be partial. Blocks are in one of three states, which always sum to the
//! capacity:
//! - **active**: referenced by at least one live sequence (`refcount > 0`);
//! - **cached**: unreferenced but still holding KV, kept in an LRU and reused on a hit;
//! - **free**: empty.
//!
//! [`BlockManager::acquire`] walks the prompt's hash chain: every full block found resident is
//! shared (refcount + 1). At the first block that is not, it looks at the resident blocks behind
//! the same parent: if one holds exactly the prompt's remaining tokens (a partial block), it is
//! shared too; if one starts with some of them, those tokens are **copied on write** into a
//! fresh private block (the sequence diverges inside a shared block). The rest is allocated
//! fresh. [`BlockManager::fork`] shares all of a sequence's blocks, partial block included;
//! [`BlockManager::append`] copies a shared partial block before writing into it.
//!
//! Allocation takes a free (never used) block, else evicts the least recently used
//! cached block (ties: the longer prefix first, so chains shrink from the tail). Referenced
//! blocks are never evicted: when nothing is left, the call fails with
//! [`KvError::OutOfBlocks`] and changes nothing.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::hash::{chain, root};
use super::{KvError, KvStats};

mod siblings;
use siblings::Siblings;

/// A live sequence's id, unique within its manager.
pub type SeqId = u64;

type BlockId = u32;

/// Most resident siblings compared when looking for a partial match (keeps lookups bounded when
/// thousands of continuations hang off one prefix).
const MAX_SIBLINGS: usize = 32;

#[derive(Debug, Clone, Default)]
struct Block {
    rc: u32,
    /// Chain hash of the parent block (the root for the first block).
    parent: u64,
    /// Chain hash of the content (final once the block is full).
    hash: Option<u64>,
    tokens: Vec<u32>,
    /// Position in the chain (0 = first block); the eviction tie-break.
    depth: u32,
    last_used: u64,
}

#[derive(Debug, Clone)]
struct Seq {
    blocks: Vec<BlockId>,
    len: usize,
}

/// The result of [`BlockManager::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The new sequence; release it with [`BlockManager::release`].
    pub seq: SeqId,
    /// Leading prompt tokens whose KV was already resident.
    pub cached_tokens: usize,
    /// Prompt tokens.
    pub tokens: usize,
}

/// What a prompt would reuse, found without changing anything.
#[derive(Debug, Default)]
struct Match {
    /// Full blocks found by hash, in order.
    hits: Vec<BlockId>,
    /// A resident block behind the last hit sharing `common` leading tokens with the next chunk.
    partial: Option<(BlockId, usize)>,
    /// `partial` holds exactly the last (partial) chunk: share it instead of copying.
    exact: bool,
}

/// The block manager of one replica (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    capacity: usize,
    root: u64,
    blocks: Vec<Block>,
    lru: BTreeSet<(u64, Reverse<u32>, BlockId)>,
    by_hash: HashMap<u64, BlockId>,
    children: Siblings,
    seqs: HashMap<SeqId, Seq>,
    next_seq: SeqId,
    tick: u64,
    active: usize,
    logical: usize,
    stats: KvStats,
}

impl BlockManager {
    /// A manager of `capacity` blocks of `block_size` tokens whose chains start from `salt`.
    /// Blocks are created lazily, so a huge capacity costs nothing until used.
    pub fn new(block_size: usize, capacity: usize, salt: u64) -> Self {
        Self {
            block_size: block_size.max(1),
            capacity: capacity.min(BlockId::MAX as usize),
            root: root(salt),
            blocks: Vec::new(),
            lru: BTreeSet::new(),
            by_hash: HashMap::new(),
            children: Siblings::default(),
            seqs: HashMap::new(),
            next_seq: 1,
            tick: 0,
            active: 0,
            logical: 0,
            stats: KvStats::default(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Physical blocks.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The full-block hashes of `tokens` under this manager's salt and block size.
    pub fn hashes(&self, tokens: &[u32]) -> Vec<u64> {
        super::hash::chain_blocks(self.root, tokens, self.block_size)
    }

    /// Leading tokens of `tokens` that are resident, without changing anything (for routing).
    /// `hashes` must be [`Self::hashes`] of `tokens`.
    pub fn cached_prefix(&self, tokens: &[u32], hashes: &[u64]) -> usize {
        let m = self.find(tokens, hashes);
        m.hits.len() * self.block_size + m.partial.map_or(0, |(_, c)| c)
    }

    /// Allocates a sequence for a prompt, sharing every resident prefix block.
    pub fn acquire(&mut self, tokens: &[u32]) -> Result<Acquired, KvError> {
        let hashes = self.hashes(tokens);
        self.acquire_hashed(tokens, &hashes)
    }

    /// [`Self::acquire`] with the prompt's [`Self::hashes`] computed by the caller.
    pub fn acquire_hashed(&mut self, tokens: &[u32], hashes: &[u64]) -> Result<Acquired, KvError> {
        let m = self.find(tokens, hashes);
        let chunks = tokens.len().div_ceil(self.block_size);
        let shared = m.hits.len() + usize::from(m.exact);
        let needed = chunks - shared;
        let reused_cached = m
            .hits
            .iter()
            .chain(m.partial.filter(|_| m.exact).as_ref().map(|(b, _)| b))
            .filter(|&&b| self.blocks[b as usize].rc == 0)
            .count();
        self.check_room(needed, self.available() - reused_cached)?;
        self.tick += 1;
        let mut blocks = Vec::with_capacity(chunks);
        for &b in &m.hits {
            self.share(b);
            blocks.push(b);
        }
        let mut parent = m.hits.last().map_or(self.root, |&b| self.chain_hash(b));
        let cached = m.hits.len() * self.block_size + m.partial.map_or(0, |(_, c)| c);
        if let (true, Some((b, _))) = (m.exact, m.partial) {
            self.share(b);
            blocks.push(b);
        } else {
            if m.partial.is_some_and(|(_, c)| c > 0) {
                self.stats.cow_copies += 1;
            }
            for (i, chunk) in tokens
                .chunks(self.block_size)
                .enumerate()
                .skip(m.hits.len())
            {
                let id = self.fill(parent, chunk, i);
                parent = self.blocks[id as usize].hash.unwrap_or(parent);
                blocks.push(id);
            }
        }
        self.stats.acquires += 1;
        self.stats.query_tokens += tokens.len() as u64;
        self.stats.hit_tokens += cached as u64;
        let seq = self.add_seq(blocks, tokens.len());
        Ok(Acquired {
            seq,
            cached_tokens: cached,
            tokens: tokens.len(),
        })
    }

    /// Refuses (and counts) an allocation of `needed` blocks when only `available` are free.
    fn check_room(&mut self, needed: usize, available: usize) -> Result<(), KvError> {
        if needed > available {
            self.stats.alloc_failures += 1;
            return Err(KvError::OutOfBlocks {
                needed,
                available,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// A new sequence sharing every block of `seq`, its partial last block included.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId, KvError> {
        let s = self
            .seqs
            .get(&seq)
            .ok_or(KvError::UnknownSequence(seq))?
            .clone();
        self.tick += 1;
        for &b in &s.blocks {
            self.share(b);
        }
        Ok(self.add_seq(s.blocks, s.len))
    }

    /// Appends generated or new tokens to `seq`. A partial last block shared with another
    /// sequence is copied first (copy-on-write); the copy is private.
    pub fn append(&mut self, seq: SeqId, tokens: &[u32]) -> Result<(), KvError> {
        let s = self.seqs.get(&seq).ok_or(KvError::UnknownSequence(seq))?;
        let bs = self.block_size;
        let fill_last = (bs - s.len % bs) % bs;
        let last = s.blocks.last().copied().filter(|_| fill_last > 0);
        let copy = last.is_some_and(|b| self.blocks[b as usize].rc > 1) && !tokens.is_empty();
        let into_last = fill_last.min(tokens.len());
        let needed = usize::from(copy) + (tokens.len() - into_last).div_ceil(bs);
        let mut blocks = s.blocks.clone();
        let old_len = s.len;
        self.check_room(needed, self.available())?;
        self.tick += 1;
        if let Some(b) = last.filter(|_| into_last > 0) {
            let target = if copy {
                let src = self.blocks[b as usize].clone();
                let id = self.fill(src.parent, &src.tokens, src.depth as usize);
                self.unshare(b);
                self.stats.cow_copies += 1;
                id
            } else {
                b
            };
            self.write_into(target, &tokens[..into_last]);
            if let Some(l) = blocks.last_mut() {
                *l = target;
            }
        }
        let mut parent = blocks.last().map_or(self.root, |&b| self.chain_hash(b));
        let first = blocks.len();
        for (i, chunk) in tokens[into_last..].chunks(bs).enumerate() {
            let id = self.fill(parent, chunk, first + i);
            parent = self.chain_hash(id);
            blocks.push(id);
        }
        self.logical += blocks.len() - self.seqs[&seq].blocks.len();
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.blocks = blocks;
            s.len = old_len + tokens.len();
        }
        self.note_peak();
        Ok(())
    }

    /// Releases a sequence: its blocks' refcounts drop; blocks left unreferenced stay cached.
    pub fn release(&mut self, seq: SeqId) -> Result<(), KvError> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(KvError::UnknownSequence(seq))?;
        self.tick += 1;
        self.logical -= s.blocks.len();
        for b in s.blocks {
            self.unshare(b);
        }
        Ok(())
    }

    /// Live sequences.
    pub fn live(&self) -> usize {
        self.seqs.len()
    }

    /// The tokens `seq` holds, read back from its blocks.
    pub fn tokens_of(&self, seq: SeqId) -> Option<Vec<u32>> {
        let s = self.seqs.get(&seq)?;
        Some(
            s.blocks
                .iter()
                .flat_map(|&b| self.blocks[b as usize].tokens.iter().copied())
                .collect(),
        )
    }

    /// Counters and blocks by state.
    pub fn stats(&self) -> KvStats {
        let cached = self.lru.len();
        KvStats {
            active_blocks: self.active as u64,
            cached_blocks: cached as u64,
            free_blocks: (self.capacity - self.active - cached) as u64,
            capacity_blocks: self.capacity as u64,
            logical_blocks: self.logical as u64,
            ..self.stats
        }
    }

    /// Checks every structural invariant; `Err` names the first one broken. For tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut holders: HashMap<BlockId, u32> = HashMap::new();
        for s in self.seqs.values() {
            for &b in &s.blocks {
                *holders.entry(b).or_default() += 1;
            }
            if s.blocks.len() != s.len.div_ceil(self.block_size) {
                return Err("a sequence holds the wrong number of blocks".into());
            }
        }
        let mut active = 0;
        for (i, b) in self.blocks.iter().enumerate() {
            let id = i as BlockId;
            let held = holders.get(&id).copied().unwrap_or(0);
            if b.rc != held {
                return Err(format!(
                    "block {id} has refcount {} but {held} holders",
                    b.rc
                ));
            }
            let in_lru = self.lru.contains(&(b.last_used, Reverse(b.depth), id));
            if b.rc > 0 {
                active += 1;
                if in_lru {
                    return Err(format!("referenced block {id} is in the LRU"));
                }
            } else if in_lru == b.tokens.is_empty() {
                return Err(format!("block {id}: cached iff it holds KV is violated"));
            }
        }
        if active != self.active || self.blocks.len() > self.capacity {
            return Err("active count or capacity is wrong".into());
        }
        let states = self.active + self.lru.len() + (self.capacity - self.blocks.len());
        if states != self.capacity {
            return Err(format!(
                "blocks by state sum to {states}, capacity is {}",
                self.capacity
            ));
        }
        self.children.check(&self.blocks)
    }

    /// The chain hash of a block's content (what its children hang off).
    fn chain_hash(&self, b: BlockId) -> u64 {
        let blk = &self.blocks[b as usize];
        blk.hash.unwrap_or_else(|| chain(blk.parent, &blk.tokens))
    }

    fn available(&self) -> usize {
        (self.capacity - self.blocks.len()) + self.lru.len()
    }

    fn add_seq(&mut self, blocks: Vec<BlockId>, len: usize) -> SeqId {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.logical += blocks.len();
        self.seqs.insert(seq, Seq { blocks, len });
        self.note_peak();
        seq
    }

    fn note_peak(&mut self) {
        if self.logical as u64 > self.stats.peak_logical_blocks {
            self.stats.peak_logical_blocks = self.logical as u64;
            self.stats.peak_active_blocks = self.active as u64;
        }
    }

    fn find(&self, tokens: &[u32], hashes: &[u64]) -> Match {
        let mut m = Match::default();
        let mut parent = self.root;
        for (i, chunk) in tokens.chunks(self.block_size).enumerate() {
            let full = chunk.len() == self.block_size;
            let h = match hashes.get(i) {
                Some(&h) if full => h,
                _ => chain(parent, chunk),
            };
            if let Some(&b) = self.by_hash.get(&h) {
                let blk = &self.blocks[b as usize];
                if blk.parent == parent && blk.tokens == chunk {
                    if full {
                        m.hits.push(b);
                        parent = h;
                        continue;
                    }
                    m.partial = Some((b, chunk.len()));
                    m.exact = true;
                    break;
                }
            }
            for b in self.children.newest_first(parent).take(MAX_SIBLINGS) {
                let t = &self.blocks[b as usize].tokens;
                let common = t.iter().zip(chunk).take_while(|(a, b)| a == b).count();
                if common > m.partial.map_or(0, |(_, c)| c) {
                    m.partial = Some((b, common));
                }
            }
            break;
        }
        m
    }

    /// Takes a reference on `b`, pulling it out of the LRU if it was cached.
    fn share(&mut self, b: BlockId) {
        let blk = &mut self.blocks[b as usize];
        if blk.rc == 0 {
            self.lru.remove(&(blk.last_used, Reverse(blk.depth), b));
            self.active += 1;
        }
        blk.rc += 1;
        blk.last_used = self.tick;
    }

    /// Drops a reference on `b`; unreferenced, it joins the LRU.
    fn unshare(&mut self, b: BlockId) {
        let tick = self.tick;
        let blk = &mut self.blocks[b as usize];
        blk.rc -= 1;
        if blk.rc == 0 {
            self.active -= 1;
            blk.last_used = tick;
            self.lru.insert((tick, Reverse(blk.depth), b));
        }
    }

    /// A fresh private block holding `chunk` behind `parent`, registered for reuse.
    fn fill(&mut self, parent: u64, chunk: &[u32], depth: usize) -> BlockId {
        let id = self.alloc();
        let tick = self.tick;
        let blk = &mut self.blocks[id as usize];
        *blk = Block {
            rc: 1,
            parent,
            hash: None,
            tokens: chunk.to_vec(),
            depth: depth as u32,
            last_used: tick,
        };
        self.active += 1;
        self.children.push(parent, id);
        self.register(id);
        id
    }

    fn write_into(&mut self, b: BlockId, tokens: &[u32]) {
        if let Some(h) = self.blocks[b as usize].hash.take() {
            if self.by_hash.get(&h) == Some(&b) {
                self.by_hash.remove(&h);
            }
        }
        self.blocks[b as usize].tokens.extend_from_slice(tokens);
        self.register(b);
    }

    /// Indexes a block by the hash of its content, unless an equal block is indexed already.
    fn register(&mut self, b: BlockId) {
        let blk = &mut self.blocks[b as usize];
        let h = chain(blk.parent, &blk.tokens);
        blk.hash = Some(h);
        self.by_hash.entry(h).or_insert(b);
    }

    /// A block to write into: a never-used one, else the LRU's victim. Callers check
    /// [`Self::available`] first.
    fn alloc(&mut self) -> BlockId {
        if self.blocks.len() < self.capacity {
            self.blocks.push(Block::default());
            return (self.blocks.len() - 1) as BlockId;
        }
        // `available()` counted this LRU entry, so the set is not empty here.
        let Some((_, _, victim)) = self.lru.pop_first() else {
            unreachable!("alloc called with nothing available")
        };
        self.stats.evictions += 1;
        let blk = std::mem::take(&mut self.blocks[victim as usize]);
        if let Some(h) = blk.hash {
            if self.by_hash.get(&h) == Some(&victim) {
                self.by_hash.remove(&h);
            }
        }
        self.children.remove(blk.parent, victim);
        victim
    }
}

#[cfg(test)]
mod tests;
