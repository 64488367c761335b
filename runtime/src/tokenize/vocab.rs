//! One encoding's vocabulary: every token's bytes in one contiguous arena, found by a hash table
//! of spans into it. No token owns an allocation.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher as _;

/// A token id. In these encodings a token's id is also its merge priority (lower merges first).
pub(super) type Rank = u32;

/// The longest token either vocabulary has is 128 bytes; a span stores its length in 8 bits.
const MAX_TOKEN_LEN: usize = u8::MAX as usize;

/// A span stores its offset in the arena in the other 24 bits.
const MAX_ARENA_LEN: usize = 1 << 24;

/// A fixed seed, so that the table (and its probe lengths) are the same in every process.
const HASH_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The byte strings of one encoding and their ranks.
pub(super) struct Vocab {
    /// Every token's bytes, in rank order, back to back.
    arena: Vec<u8>,
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
    /// Parses a `.tiktoken` file: one `base64-token rank` line per token, ranks counting up from
    /// zero in line order (which lets the arena be filled in one pass, without sorting).
    ///
    /// # Panics
    ///
    /// On a malformed file. Only the files vendored with this crate are parsed, and the tests
    /// parse each of them.
    pub(super) fn parse(file: &str) -> Self {
        let file = file.as_bytes();
        let tokens = file.iter().filter(|&&b| b == b'\n').count();
        // Base64 takes 4 digits for 3 bytes, and each line adds a rank: half is plenty.
        let mut arena = Vec::with_capacity(file.len() / 2);
        let mut table = HashTable::with_capacity(tokens);
        let hasher = FixedState::with_seed(HASH_SEED);
        let mut rest = file;
        let mut next_rank: Rank = 0;
        while !rest.is_empty() {
            let line_len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (line, after) = rest.split_at(line_len);
            rest = after.get(1..).unwrap_or_default();
            let space = line
                .iter()
                .position(|&b| b == b' ')
                .expect("a vendored line has a token and a rank");
            let (digits, rank) = (&line[..space], &line[space + 1..]);
            assert_eq!(
                parse_rank(rank),
                Some(next_rank),
                "vendored ranks count up from zero in line order"
            );
            let offset = arena.len();
            assert!(
                decode_base64(digits, &mut arena),
                "a vendored token is base64"
            );
            let len = arena.len() - offset;
            assert!(
                len <= MAX_TOKEN_LEN && arena.len() <= MAX_ARENA_LEN,
                "a vendored token fits a span"
            );
            let entry = Entry {
                span: ((offset as u32) << 8) | len as u32,
                rank: next_rank,
            };
            let hash = hasher.hash_one(&arena[offset..]);
            table.insert_unique(hash, entry, |e| hasher.hash_one(e.bytes(&arena)));
            next_rank += 1;
        }
        arena.shrink_to_fit();
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
            .find(hash, |e| e.bytes(&self.arena) == bytes)
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

    /// Bytes held: the arena plus the table's buckets (one control byte each).
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.table.capacity() * (std::mem::size_of::<Entry>() + 1)
    }
}

/// The value of each standard base64 digit; `0xff` for bytes that are not one.
const BASE64_DIGITS: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Appends the bytes `digits` (padded standard base64) encode to `out`; false if they are not
/// base64. Written out rather than taken from a crate: 200k calls on tokens of a few bytes each
/// made a general decoder's per-call setup the largest cost of loading a vocabulary.
fn decode_base64(digits: &[u8], out: &mut Vec<u8>) -> bool {
    let digits = digits
        .strip_suffix(b"==")
        .or_else(|| digits.strip_suffix(b"="))
        .unwrap_or(digits);
    let mut invalid = 0u8;
    let mut value = |d: u8| {
        let v = BASE64_DIGITS[d as usize];
        invalid |= v;
        u32::from(v)
    };
    let mut quads = digits.chunks_exact(4);
    for q in &mut quads {
        let n = value(q[0]) << 18 | value(q[1]) << 12 | value(q[2]) << 6 | value(q[3]);
        out.extend_from_slice(&n.to_be_bytes()[1..]);
    }
    match *quads.remainder() {
        [] => {}
        [a, b] => {
            let n = value(a) << 18 | value(b) << 12;
            out.push((n >> 16) as u8);
        }
        [a, b, c] => {
            let n = value(a) << 18 | value(b) << 12 | value(c) << 6;
            out.extend_from_slice(&n.to_be_bytes()[1..3]);
        }
        _ => return false,
    }
    // Digit values are below 64; only the marker for a non-digit sets the top bits.
    invalid & 0xc0 == 0
}

/// A rank in decimal digits, if it is one.
fn parse_rank(digits: &[u8]) -> Option<Rank> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0 as Rank, |n, &d| {
        let d = d.checked_sub(b'0').filter(|&d| d < 10)?;
        n.checked_mul(10)?.checked_add(Rank::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_padded_base64() {
        for (digits, bytes) in [
            ("", &b""[..]),
            ("IQ==", b"!"),
            ("aGk=", b"hi"),
            ("YWJj", b"abc"),
            ("IGhlbGxv", b" hello"),
            ("/+8=", b"\xff\xef"),
        ] {
            let mut out = vec![7];
            assert!(decode_base64(digits.as_bytes(), &mut out), "{digits}");
            assert_eq!(&out[1..], bytes, "{digits}");
        }
        for bad in ["I", "I!==", "aGk-", "a b="] {
            assert!(!decode_base64(bad.as_bytes(), &mut Vec::new()), "{bad}");
        }
    }

    #[test]
    fn parses_decimal_ranks() {
        assert_eq!(parse_rank(b"0"), Some(0));
        assert_eq!(parse_rank(b"199997"), Some(199_997));
        assert_eq!(parse_rank(b""), None);
        assert_eq!(parse_rank(b"12a"), None);
        assert_eq!(parse_rank(b"99999999999"), None);
    }

    #[test]
    fn finds_tokens_by_their_bytes() {
        // Every single byte (a byte-level vocabulary has them all), then `!"` and `"!!`.
        let base64 = |bytes: &[u8]| {
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    s.push(char::from(alphabet[(n >> (18 - 6 * i)) as usize & 63]));
                }
            }
            while !s.len().is_multiple_of(4) {
                s.push('=');
            }
            s
        };
        let mut file = String::new();
        for byte in 0..=u8::MAX {
            file += &format!("{} {byte}\n", base64(&[byte]));
        }
        file += &format!("{} 256\n{} 257", base64(b"!\""), base64(b"\"!!"));
        let vocab = Vocab::parse(&file);
        assert_eq!(vocab.len(), 258);
        assert_eq!(vocab.rank(b"!\""), Some(256));
        assert_eq!(vocab.rank(b"\"!!"), Some(257));
        assert_eq!(vocab.rank(b"\"!"), None);
        assert_eq!(vocab.byte_rank(b'"'), 34);
        assert_eq!(vocab.rank(&[0xff]), Some(255));
    }
}
