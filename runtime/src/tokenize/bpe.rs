//! Byte-pair merging of one piece of pre-split text, the way tiktoken does it: start from single
//! bytes and repeatedly merge the adjacent pair whose concatenation has the lowest rank (the
//! leftmost on a tie), until no adjacent pair is a token.

use super::vocab::{Rank, Vocab};

/// Pieces shorter than this merge in a buffer on the stack; longer ones (rare: a run of letters
/// or symbols without a space) allocate one.
const STACK_PARTS: usize = 64;

/// A segment of the piece being merged.
#[derive(Clone, Copy)]
struct Part {
    /// Where the segment starts in the piece; the next part's `start` is where it ends.
    start: usize,
    /// The rank of this segment joined with the next one, `Rank::MAX` if that is no token.
    pair: Rank,
    /// The rank of the segment itself.
    own: Rank,
}

const EMPTY: Part = Part {
    start: 0,
    pair: Rank::MAX,
    own: Rank::MAX,
};

/// Calls `out` with the ranks `piece` encodes to, in order.
pub(super) fn encode_piece(vocab: &Vocab, piece: &[u8], out: &mut impl FnMut(Rank)) {
    if piece.is_empty() {
    } else if let Some(rank) = vocab.rank(piece) {
        out(rank);
    } else if piece.len() < STACK_PARTS {
        let mut parts = [EMPTY; STACK_PARTS];
        merge(vocab, piece, &mut parts[..piece.len() + 1], out);
    } else {
        let mut parts = vec![EMPTY; piece.len() + 1];
        merge(vocab, piece, &mut parts, out);
    }
}

/// Merges `piece` (at least one byte) in `parts`, one slot per byte plus an end marker.
fn merge(vocab: &Vocab, piece: &[u8], parts: &mut [Part], out: &mut impl FnMut(Rank)) {
    let n = piece.len();
    debug_assert!(n >= 1 && parts.len() == n + 1);
    let mut min = (Rank::MAX, 0);
    for i in 0..n - 1 {
        let pair = vocab.rank(&piece[i..i + 2]).unwrap_or(Rank::MAX);
        if pair < min.0 {
            min = (pair, i);
        }
        parts[i] = Part {
            start: i,
            pair,
            own: vocab.byte_rank(piece[i]),
        };
    }
    parts[n - 1] = Part {
        start: n - 1,
        pair: Rank::MAX,
        own: vocab.byte_rank(piece[n - 1]),
    };
    parts[n] = Part { start: n, ..EMPTY };
    let mut len = n + 1;

    // The rank of part `i` joined with the one after it, while part `i + 1` is still there to
    // be merged into `i` (hence `i + 3`).
    let pair_after_merge = |parts: &[Part], len: usize, i: usize| {
        if i + 3 < len {
            vocab
                .rank(&piece[parts[i].start..parts[i + 3].start])
                .unwrap_or(Rank::MAX)
        } else {
            Rank::MAX
        }
    };

    // O(n·m) for n bytes and m merges, as in tiktoken: pieces are short, and a flat array beats
    // a heap on them.
    while min.0 != Rank::MAX {
        let i = min.1;
        if i > 0 {
            parts[i - 1].pair = pair_after_merge(parts, len, i - 1);
        }
        parts[i].pair = pair_after_merge(parts, len, i);
        parts[i].own = min.0;
        parts.copy_within(i + 2..len, i + 1);
        len -= 1;

        min = (Rank::MAX, 0);
        for (i, part) in parts[..len - 1].iter().enumerate() {
            if part.pair < min.0 {
                min = (part.pair, i);
            }
        }
    }
    for part in &parts[..len - 1] {
        out(part.own);
    }
}
