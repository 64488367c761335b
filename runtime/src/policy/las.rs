//! Least attained service, by levels: Autellix's program-level LAS, discretized.
//!
//! A workflow's attained service is the tokens its calls have used so far. Ready tasks are
//! ordered first by the level of their workflow's attained service, then by the usual
//! priority and FIFO order. A short workflow therefore overtakes long ones (it sits on a lower
//! level), while tasks of workflows of similar size share a level and keep FIFO order among
//! themselves, so the scheduler does not thrash between workflows that differ by a few tokens.
//!
//! Levels grow geometrically: level 0 until a workflow has used one quantum, then one level
//! per doubling, so a workflow needs twice the service to fall one level further behind.

/// The highest level: every workflow past `quantum * 2^15` tokens shares it.
pub const MAX_LEVEL: u32 = 16;

/// The level of a workflow that has used `attained_tokens`: 0 while below `quantum`, then
/// `floor(log2(attained / quantum)) + 1`, capped at [`MAX_LEVEL`]. A zero quantum counts as 1.
pub fn level(attained_tokens: u64, quantum: u64) -> u32 {
    let ratio = attained_tokens / quantum.max(1);
    if ratio == 0 {
        return 0;
    }
    // floor(log2(ratio)) + 1 is the bit length of the integer ratio, since
    // floor(log2(x)) = floor(log2(floor(x))) for x >= 1.
    (u64::BITS - ratio.leading_zeros()).min(MAX_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_zero_until_one_quantum() {
        assert_eq!(level(0, 1000), 0);
        assert_eq!(level(999, 1000), 0);
        assert_eq!(level(1000, 1000), 1);
    }

    #[test]
    fn one_level_per_doubling() {
        let q = 1000;
        assert_eq!(level(1999, q), 1);
        assert_eq!(level(2000, q), 2);
        assert_eq!(level(3999, q), 2);
        assert_eq!(level(4000, q), 3);
        assert_eq!(level(8000, q), 4);
        assert_eq!(level(1_000_000, q), 10);
    }

    #[test]
    fn capped_and_safe_at_the_edges() {
        assert_eq!(level(u64::MAX, 1), MAX_LEVEL);
        assert_eq!(level(1000 << 15, 1000), MAX_LEVEL);
        assert_eq!(level((1000 << 15) - 1, 1000), 15);
        assert_eq!(level(5, 0), 3);
        assert_eq!(level(0, 0), 0);
    }

    #[test]
    fn levels_never_decrease_with_service() {
        let mut last = 0;
        for t in (0..200_000u64).step_by(97) {
            let l = level(t, 512);
            assert!(l >= last, "{t}");
            last = l;
        }
        assert_eq!(last, 9);
    }

    #[test]
    fn a_short_workflow_overtakes_a_long_one_and_fifo_holds_within_a_level() {
        // (workflow attained tokens, FIFO sequence) of ready tasks.
        let mut ready = [(50_000u64, 1u32), (3_000, 2), (200, 3), (2_500, 4)];
        ready.sort_by_key(|&(attained, seq)| (level(attained, 1000), seq));
        let order: Vec<u32> = ready.iter().map(|&(_, s)| s).collect();
        assert_eq!(order, [3, 2, 4, 1]);
    }
}
