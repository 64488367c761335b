//! One encoding's vocabulary: every token's bytes in one contiguous arena, found by a hash table
//! of spans into it. No token owns an allocation.
//!
//! The build script decodes each vendored `.tiktoken` file into the arena and one length byte
//! per token, in rank order, and the crate embeds both; at run time only the hash table is
//! built.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher as _;

/// A token id. In these encodings a token's id is also its merge priority (lower merges first).
pub(super) type Rank = u32;

/// A span stores its offset in the arena in 24 bits (and the length, at most 255, in 8).
const MAX_ARENA_LEN: usize = 1 << 24;

/// A fixed seed, so that the table (and its probe lengths) are the same in every process.
const HASH_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The byte strings of one encoding and their ranks.
pub(super) struct Vocab {
    /// Every token's bytes, in rank order, back to back.
    arena: &'static [u8],
    /// One entry per token, keyed by the hash of its bytes.
    table: HashTable<Entry>,
    /// The rank of each single byte, which every byte-level BPE vocabulary has.
    byte_ranks: [Rank; 256],
    hasher: FixedState,
}

/// A token: where its bytes lie in the arena, and its rank.
#[derive(Clone, Copy)]
struct Entry {
    /// `offset << 8 | len`.
    span: u32,
    rank: Rank,
}

impl Entry {
    fn bytes(self, arena: &[u8]) -> &[u8] {
        let offset = (self.span >> 8) as usize;
        let len = (self.span & 0xff) as usize;
        &arena[offset..offset + len]
    }
}

impl Vocab {
    /// Indexes `arena`, the bytes of every token back to back, where token `rank` is
    /// `lens[rank]` bytes long.
    ///
    /// # Panics
    ///
    /// If the lengths do not add up to the arena, the arena is over 16 MiB, or a single byte is
    /// no token. Only the vocabularies the build script decodes are indexed, and the tests index
    /// each of them.
    pub(super) fn new(arena: &'static [u8], lens: &[u8]) -> Self {
        assert!(
            arena.len() <= MAX_ARENA_LEN,
            "the arena fits 24-bit offsets"
        );
        let hasher = FixedState::with_seed(HASH_SEED);
        let mut table = HashTable::with_capacity(lens.len());
        let mut offset = 0;
        for (rank, &len) in (0..).zip(lens) {
            let len = usize::from(len);
            let entry = Entry {
                // Both fit: the offset in 24 bits (checked above), the length in 8.
                span: ((offset as u32) << 8) | len as u32,
                rank,
            };
            let hash = hasher.hash_one(&arena[offset..offset + len]);
            table.insert_unique(hash, entry, |e| hasher.hash_one(e.bytes(arena)));
            offset += len;
        }
        assert_eq!(offset, arena.len(), "the lengths cover the arena");
        let mut vocab = Vocab {
            arena,
            table,
            byte_ranks: [Rank::MAX; 256],
            hasher,
        };
        for byte in 0..=u8::MAX {
            vocab.byte_ranks[byte as usize] = vocab
                .rank(&[byte])
                .expect("a byte-level vocabulary has every single byte");
        }
        vocab
    }

    /// The rank of the token whose bytes are exactly `bytes`, if there is one.
    #[inline]
    pub(super) fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        let hash = self.hasher.hash_one(bytes);
        self.table
            .find(hash, |e| e.bytes(self.arena) == bytes)
            .map(|e| e.rank)
    }

    /// The rank of a single byte.
    #[inline]
    pub(super) fn byte_rank(&self, byte: u8) -> Rank {
        self.byte_ranks[byte as usize]
    }

    /// How many tokens there are.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held: the table's buckets (one control byte each). The arena is embedded.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Entry>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_by_their_bytes() {
        // Every single byte (a byte-level vocabulary has them all), then `!"` and `"!!`.
        let mut arena: Vec<u8> = (0..=u8::MAX).collect();
        let mut lens = vec![1; 256];
        arena.extend_from_slice(b"!\"\"!!");
        lens.extend([2, 3]);
        let vocab = Vocab::new(arena.leak(), &lens);
        assert_eq!(vocab.len(), 258);
        assert_eq!(vocab.rank(b"!\""), Some(256));
        assert_eq!(vocab.rank(b"\"!!"), Some(257));
        assert_eq!(vocab.rank(b"\"!"), None);
        assert_eq!(vocab.rank(b""), None);
        assert_eq!(vocab.byte_rank(b'"'), 34);
        assert_eq!(vocab.rank(&[0xff]), Some(255));
    }

    #[test]
    #[should_panic = "the lengths cover the arena"]
    fn lengths_must_cover_the_arena() {
        let arena: Vec<u8> = (0..=u8::MAX).chain([b'x']).collect();
        Vocab::new(arena.leak(), &[1; 256]);
    }
}
