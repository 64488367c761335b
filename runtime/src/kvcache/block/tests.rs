use proptest::prelude::*;

use super::*;

fn seq(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

#[test]
fn equal_prefixes_share_full_blocks_and_count_hits_in_tokens() {
    let mut m = BlockManager::new(4, 64, 0);
    let a = m.acquire(&seq(0..10)).unwrap();
    assert_eq!((a.cached_tokens, a.tokens), (0, 10));
    let mut b_tokens = seq(0..8);
    b_tokens.extend([100, 101, 102]);
    let b = m.acquire(&b_tokens).unwrap();
    assert_eq!(b.cached_tokens, 8, "two full blocks are shared");
    let s = m.stats();
    assert_eq!(
        s.active_blocks,
        3 + 1,
        "a's three blocks plus b's private tail"
    );
    assert_eq!(s.logical_blocks, 6);
    assert_eq!((s.query_tokens, s.hit_tokens), (21, 8));
    assert!((s.hit_rate() - 8.0 / 21.0).abs() < 1e-12);
    m.check_invariants().unwrap();
}

#[test]
fn released_blocks_stay_cached_and_hit_again() {
    let mut m = BlockManager::new(4, 64, 0);
    let a = m.acquire(&seq(0..10)).unwrap();
    m.release(a.seq).unwrap();
    let s = m.stats();
    assert_eq!((s.active_blocks, s.cached_blocks), (0, 3));
    let again = m.acquire(&seq(0..10)).unwrap();
    assert_eq!(
        again.cached_tokens, 10,
        "the partial block is shared exactly too"
    );
    assert_eq!(m.stats().cow_copies, 0);
    m.check_invariants().unwrap();
}

#[test]
fn diverging_inside_a_shared_partial_block_copies_it() {
    let mut m = BlockManager::new(4, 64, 0);
    let a = m.acquire(&seq(0..6)).unwrap(); // [0..4) full, [4,5] partial
    let mut b_tokens = seq(0..6);
    b_tokens.extend([50, 51]);
    let b = m.acquire(&b_tokens).unwrap();
    assert_eq!(
        b.cached_tokens, 6,
        "the 2 tokens of the partial block are copied"
    );
    assert_eq!(m.stats().cow_copies, 1);
    assert_eq!(
        m.tokens_of(a.seq).unwrap(),
        seq(0..6),
        "the original is untouched"
    );
    assert_eq!(m.tokens_of(b.seq).unwrap(), b_tokens);
    m.check_invariants().unwrap();
}

#[test]
fn fork_shares_the_partial_block_and_append_copies_on_write() {
    let mut m = BlockManager::new(4, 64, 0);
    let parent = m.acquire(&seq(0..6)).unwrap().seq;
    let child = m.fork(parent).unwrap();
    let s = m.stats();
    assert_eq!((s.active_blocks, s.logical_blocks), (2, 4));
    m.append(child, &[7, 7, 7]).unwrap();
    assert_eq!(m.stats().cow_copies, 1);
    assert_eq!(m.tokens_of(parent).unwrap(), seq(0..6));
    let mut want = seq(0..6);
    want.extend([7, 7, 7]);
    assert_eq!(m.tokens_of(child).unwrap(), want);
    // A private partial block is written in place.
    m.append(parent, &[9]).unwrap();
    assert_eq!(m.stats().cow_copies, 1);
    m.check_invariants().unwrap();
}

#[test]
fn eviction_takes_least_recent_unreferenced_blocks_longest_prefix_first() {
    let mut m = BlockManager::new(2, 4, 0);
    let a = m.acquire(&[1, 2, 3, 4]).unwrap().seq; // blocks A0 A1
    let b = m.acquire(&[5, 6, 7, 8]).unwrap().seq; // blocks B0 B1
    m.release(a).unwrap();
    m.release(b).unwrap();
    // One new block evicts A1 (oldest release, deeper than A0).
    let c = m.acquire(&[9, 9]).unwrap();
    assert_eq!(c.cached_tokens, 0);
    assert_eq!(m.stats().evictions, 1);
    let a_again = m.acquire(&[1, 2, 3, 4]).unwrap();
    assert_eq!(a_again.cached_tokens, 2, "A0 survived, A1 was evicted");
    m.check_invariants().unwrap();
}

#[test]
fn allocation_fails_typed_when_everything_is_referenced_and_changes_nothing() {
    let mut m = BlockManager::new(2, 3, 0);
    let a = m.acquire(&[1, 2, 3, 4]).unwrap();
    let before = m.stats();
    let err = m.acquire(&[5, 6, 7, 8]).unwrap_err();
    assert_eq!(
        err,
        KvError::OutOfBlocks {
            needed: 2,
            available: 1,
            capacity: 3
        }
    );
    let after = m.stats();
    assert_eq!(after.alloc_failures, 1);
    assert_eq!(
        (after.active_blocks, after.query_tokens),
        (before.active_blocks, before.query_tokens)
    );
    // Sharing still works at full capacity: the same prompt needs no new block.
    assert_eq!(m.acquire(&[1, 2, 3, 4]).unwrap().cached_tokens, 4);
    m.release(a.seq).unwrap();
    assert_eq!(m.release(a.seq), Err(KvError::UnknownSequence(a.seq)));
    m.check_invariants().unwrap();
}

#[test]
fn salts_keep_tenants_apart() {
    let mut a = BlockManager::new(4, 16, 1);
    let x = a.acquire(&seq(0..8)).unwrap();
    a.release(x.seq).unwrap();
    assert_eq!(a.cached_prefix(&seq(0..8), &a.hashes(&seq(0..8))), 8);
    let b = BlockManager::new(4, 16, 2);
    assert_ne!(a.hashes(&seq(0..8)), b.hashes(&seq(0..8)));
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize, usize, u32),
    Fork(usize),
    Append(usize, Vec<u32>),
    Release(usize),
}

/// Prompts from a small family so that prefixes collide often: one of 3 heads, cut at a random
/// length, then a short tail chosen by `tail`.
fn prompt(head: usize, len: usize, tail: u32) -> Vec<u32> {
    let mut p: Vec<u32> = (0..len as u32)
        .map(|i| i * 7 + head as u32 * 1000)
        .collect();
    p.extend((0..tail % 4).map(|i| 50_000 + tail * 10 + i));
    p
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..40usize, 0..20u32).prop_map(|(h, l, t)| Op::Acquire(h, l, t)),
        1 => any::<usize>().prop_map(Op::Fork),
        2 => (any::<usize>(), prop::collection::vec(0..5u32, 0..9)).prop_map(|(i, t)| Op::Append(i, t)),
        3 => any::<usize>().prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Against a model of live holders: refcounts equal holders, every live sequence reads back
    /// exactly its tokens (so nothing it references was freed or evicted), capacity holds, and
    /// blocks by state sum to the capacity.
    #[test]
    fn block_manager_matches_the_model(ops in prop::collection::vec(op(), 1..80), bs in 1..6usize, cap in 1..40usize) {
        let mut m = BlockManager::new(bs, cap, 0);
        let mut live: Vec<(SeqId, Vec<u32>)> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire(h, l, t) => {
                    let p = prompt(h, l, t);
                    match m.acquire(&p) {
                        Ok(a) => {
                            prop_assert!(a.cached_tokens <= p.len());
                            live.push((a.seq, p));
                        }
                        Err(KvError::OutOfBlocks { needed, available, .. }) => prop_assert!(needed > available),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Fork(i) if !live.is_empty() => {
                    let (s, t) = live[i % live.len()].clone();
                    let f = m.fork(s).unwrap();
                    live.push((f, t));
                }
                Op::Append(i, extra) if !live.is_empty() => {
                    let k = i % live.len();
                    if m.append(live[k].0, &extra).is_ok() {
                        live[k].1.extend(&extra);
                    }
                }
                Op::Release(i) if !live.is_empty() => {
                    let (s, _) = live.swap_remove(i % live.len());
                    m.release(s).unwrap();
                }
                _ => {}
            }
            m.check_invariants().map_err(TestCaseError::fail)?;
            for (s, t) in &live {
                prop_assert_eq!(&m.tokens_of(*s).unwrap(), t);
            }
            let st = m.stats();
            prop_assert_eq!(st.active_blocks + st.cached_blocks + st.free_blocks, cap as u64);
            prop_assert!(st.hit_tokens <= st.query_tokens);
        }
    }

    /// With room for everything (no eviction), a prompt seen before hits completely, and any
    /// prompt hits at least its longest block-aligned common prefix with an earlier one.
    #[test]
    fn equal_prefixes_always_hit_once_cached(prompts in prop::collection::vec((0..3usize, 0..40usize, 0..20u32), 1..40), bs in 1..6usize, release in any::<bool>()) {
        let mut m = BlockManager::new(bs, 100_000, 0);
        let mut seen: Vec<Vec<u32>> = Vec::new();
        for (h, l, t) in prompts {
            let p = prompt(h, l, t);
            let a = m.acquire(&p).unwrap();
            let best = seen.iter().map(|q| q.iter().zip(&p).take_while(|(x, y)| x == y).count() / bs * bs).max().unwrap_or(0);
            prop_assert!(a.cached_tokens >= best, "hit {} < aligned common prefix {}", a.cached_tokens, best);
            if seen.contains(&p) {
                prop_assert_eq!(a.cached_tokens, p.len());
            }
            if release {
                m.release(a.seq).unwrap();
            }
            seen.push(p);
        }
        prop_assert_eq!(m.stats().evictions, 0);
    }
}

#[test]
fn an_evicted_sibling_leaves_the_window_of_newest_siblings() {
    let bs = 4;
    let prefix = seq(0..4);
    let with = |tail: &[u32]| [&prefix[..], tail].concat();
    let mut m = BlockManager::new(bs, 1 + 1 + MAX_SIBLINGS, 0);
    m.acquire(&with(&[500, 501, 502])).unwrap();
    let newer: Vec<SeqId> = (0..MAX_SIBLINGS as u32)
        .map(|k| m.acquire(&with(&[1000 + k])).unwrap().seq)
        .collect();
    let query = with(&[500, 501, 999]);
    let hashes = m.hashes(&query);
    assert_eq!(
        m.cached_prefix(&query, &hashes),
        bs,
        "the oldest sibling is behind {MAX_SIBLINGS} newer ones"
    );
    m.release(newer[MAX_SIBLINGS / 2]).unwrap();
    assert_eq!(
        m.cached_prefix(&query, &hashes),
        bs,
        "a cached sibling still counts"
    );
    let other = m.acquire(&[7777]).unwrap().seq;
    assert_eq!(m.stats().evictions, 1, "the released sibling was evicted");
    m.check_invariants().unwrap();
    assert_eq!(
        m.cached_prefix(&query, &hashes),
        bs + 2,
        "with one newer sibling gone, the oldest is looked at"
    );
    m.release(other).unwrap();
    assert_eq!(m.acquire(&query).unwrap().cached_tokens, bs + 2);
    assert_eq!(m.stats().cow_copies, 1, "the 2 matching tokens are copied");
    m.check_invariants().unwrap();
}

#[derive(Debug, Clone)]
enum SibOp {
    Push(u64, BlockId),
    Remove(BlockId, u64),
}

fn sib_op() -> impl Strategy<Value = SibOp> {
    prop_oneof![
        (0..3u64, 0..12 as BlockId).prop_map(|(p, b)| SibOp::Push(p, b)),
        (0..12 as BlockId, 0..3u64).prop_map(|(b, p)| SibOp::Remove(b, p)),
    ]
}

/// The longest common prefix of `tokens`' first unmatched chunk with any resident block behind
/// the last full hit, by scanning every block: what a partial match finds while a parent has no
/// more than [`MAX_SIBLINGS`] children. Also returns how many children that parent has.
fn brute_force_prefix(m: &BlockManager, tokens: &[u32]) -> (usize, usize) {
    let hashes = m.hashes(tokens);
    let mut parent = m.root;
    let mut hits = 0;
    for (chunk, h) in tokens.chunks(m.block_size).zip(&hashes) {
        let hit = m.by_hash.get(h).map(|&b| &m.blocks[b as usize]);
        if !hit.is_some_and(|blk| blk.parent == parent && blk.tokens == chunk) {
            break;
        }
        hits += 1;
        parent = *h;
    }
    let chunk = tokens.chunks(m.block_size).nth(hits).unwrap_or(&[]);
    let behind: Vec<&Block> = m.blocks.iter().filter(|b| b.parent == parent).collect();
    let best = behind
        .iter()
        .map(|b| {
            b.tokens
                .iter()
                .zip(chunk)
                .take_while(|(x, y)| x == y)
                .count()
        })
        .max()
        .unwrap_or(0);
    (hits * m.block_size + best, behind.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Against the list it replaces (push on allocation, `retain` on eviction, read newest first
    /// with `rev()`): the same blocks in the same order under every parent, and removing a block
    /// that is in no list changes nothing.
    #[test]
    fn sibling_lists_match_a_vec_per_parent(ops in prop::collection::vec(sib_op(), 1..120)) {
        let mut s = Siblings::default();
        let mut model: HashMap<u64, Vec<BlockId>> = HashMap::new();
        let mut parent_of: HashMap<BlockId, u64> = HashMap::new();
        for op in ops {
            match op {
                SibOp::Push(p, b) if !parent_of.contains_key(&b) => {
                    s.push(p, b);
                    model.entry(p).or_default().push(b);
                    parent_of.insert(b, p);
                }
                SibOp::Push(..) => {}
                SibOp::Remove(b, p) => match parent_of.remove(&b) {
                    Some(parent) => {
                        s.remove(parent, b);
                        model.entry(parent).or_default().retain(|&x| x != b);
                    }
                    None => s.remove(p, b),
                },
            }
            for p in 0..3 {
                let want: Vec<BlockId> = model.get(&p).into_iter().flatten().rev().copied().collect();
                prop_assert_eq!(s.newest_first(p).collect::<Vec<_>>(), want);
            }
        }
    }

    /// Many continuations of one shared prefix in little room, so siblings are evicted all the
    /// time: the sibling lists stay exactly the resident blocks, and a partial match finds the
    /// best resident sibling whenever there are no more than [`MAX_SIBLINGS`] (never a better
    /// one than exists).
    #[test]
    fn partial_matches_survive_sibling_eviction(
        ops in prop::collection::vec((any::<bool>(), any::<usize>(), prop::collection::vec(0..3u32, 0..10)), 1..80),
        head in 0..9usize,
        bs in 1..5usize,
        cap in 1..48usize,
    ) {
        let mut m = BlockManager::new(bs, cap, 0);
        let mut live: Vec<SeqId> = Vec::new();
        for (acquire, i, tail) in ops {
            let p: Vec<u32> = (100..100 + head as u32).chain(tail).collect();
            let (best, siblings) = brute_force_prefix(&m, &p);
            let found = m.cached_prefix(&p, &m.hashes(&p));
            if siblings <= MAX_SIBLINGS {
                prop_assert_eq!(found, best);
            } else {
                prop_assert!(found <= best, "found {} > best resident {}", found, best);
            }
            if acquire {
                if let Ok(a) = m.acquire(&p) {
                    prop_assert_eq!(a.cached_tokens, found);
                    live.push(a.seq);
                }
            } else if !live.is_empty() {
                let s = live.swap_remove(i % live.len());
                m.release(s).unwrap();
            }
            m.check_invariants().map_err(TestCaseError::fail)?;
        }
    }
}
