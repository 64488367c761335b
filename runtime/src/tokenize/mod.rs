//! Token counting and encoding with a real BPE tokenizer.
//!
//! Each backend names its encoding in the config (`tokenizer: "o200k_base"`); the context pager
//! counts page tokens with it and the KV-cache pool cuts prompts into blocks of its token ids.
//! The ids are those of tiktoken's `encode_ordinary` (the tests check them against
//! `tiktoken-rs`), computed in three steps, one module each:
//!
//! - `split`: tiktoken's split pattern cuts the text into pieces (words with their leading
//!   space, digit groups, punctuation runs, whitespace runs), matched by a DFA;
//! - `vocab`: one table per encoding: every token's bytes in one arena, looked up by a hash
//!   table of spans into it;
//! - `bpe`: each piece that is not a token by itself is merged byte pair by byte pair, lowest
//!   rank first.
//!
//! The vocabularies are the published `.tiktoken` files, vendored in `runtime/assets/`, so
//! nothing is fetched at run time. The build script decodes them into the arena form, which the
//! crate embeds; a process builds an encoding's hash table (and compiles its split pattern) once,
//! when the encoding is first used.
//!
//! A chat message costs its content tokens plus [`MESSAGE_OVERHEAD_TOKENS`] for the role and the
//! separators, and a prompt adds [`REPLY_PRIMING_TOKENS`], the way OpenAI documents chat token
//! accounting for its models.

mod bpe;
#[cfg(test)]
mod equivalence;
mod split;
mod vocab;

use std::fmt;
use std::sync::OnceLock;

use crate::llm::{ChatMessage, Role};
use split::Splitter;
use vocab::{Rank, Vocab};

/// The vocabulary `build.rs` decoded from `assets/<name>.tiktoken`: every token's bytes back to
/// back in rank order, and each token's length.
macro_rules! decoded {
    ($name:literal) => {
        (
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".bytes")).as_slice(),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".lens")).as_slice(),
        )
    };
}

/// Tokens every chat message costs beyond its content (role and separators).
pub const MESSAGE_OVERHEAD_TOKENS: usize = 3;

/// Tokens a chat prompt costs once, for the primed assistant reply.
pub const REPLY_PRIMING_TOKENS: usize = 3;

/// A BPE encoding, chosen per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, o-series. The default.
    #[default]
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5, and most embedding models.
    Cl100kBase,
}

impl Encoding {
    /// Every encoding, for error messages.
    pub const ALL: [Encoding; 2] = [Encoding::O200kBase, Encoding::Cl100kBase];

    /// Parses a config name such as `"o200k_base"`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// This encoding's tokenizer, built on first use. `OnceLock` makes concurrent first
    /// callers wait for one build rather than each building their own.
    fn tokenizer(self) -> &'static Tokenizer {
        static O200K: OnceLock<Tokenizer> = OnceLock::new();
        static CL100K: OnceLock<Tokenizer> = OnceLock::new();
        match self {
            Encoding::O200kBase => O200K.get_or_init(|| {
                let (arena, lens) = decoded!("o200k_base");
                Tokenizer::new(arena, lens, &split::O200K_PATTERNS)
            }),
            Encoding::Cl100kBase => CL100K.get_or_init(|| {
                let (arena, lens) = decoded!("cl100k_base");
                Tokenizer::new(arena, lens, &split::CL100K_PATTERNS)
            }),
        }
    }

    /// The token ids of `text`. Special-token text is encoded as ordinary text, so input can
    /// never smuggle control tokens in.
    pub fn encode(self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4);
        self.tokenizer().encode(text, |id| ids.push(id));
        ids
    }

    /// How many tokens `text` has.
    pub fn count(self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        let mut n = 0;
        self.tokenizer().encode(text, |_| n += 1);
        n
    }

    /// Tokens of one chat message: overhead, content, and any tool calls it carries.
    pub fn count_message(self, message: &ChatMessage) -> usize {
        let calls: usize = message
            .tool_calls
            .iter()
            .map(|c| self.count(&c.name) + self.count(&c.arguments.to_string()))
            .sum();
        MESSAGE_OVERHEAD_TOKENS + self.count(&message.content) + calls
    }

    /// Tokens of a whole prompt: every message plus the reply priming.
    pub fn count_prompt(self, messages: &[ChatMessage]) -> usize {
        REPLY_PRIMING_TOKENS
            + messages
                .iter()
                .map(|m| self.count_message(m))
                .sum::<usize>()
    }

    /// The token ids of a prompt in order, with a marker token per message role, so that two
    /// prompts share an id prefix exactly when they share a message prefix. This is the sequence
    /// the KV-cache pool cuts into blocks.
    pub fn encode_prompt(self, messages: &[ChatMessage]) -> Vec<u32> {
        let tokenizer = self.tokenizer();
        let mut ids = Vec::new();
        for m in messages {
            ids.push(role_marker(m.role));
            tokenizer.encode(&m.content, |id| ids.push(id));
            for c in &m.tool_calls {
                tokenizer.encode(&c.name, |id| ids.push(id));
                tokenizer.encode(&c.arguments.to_string(), |id| ids.push(id));
            }
        }
        ids
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One encoding: its split pattern and its vocabulary.
struct Tokenizer {
    splitter: Splitter,
    vocab: Vocab,
}

impl Tokenizer {
    fn new(arena: &'static [u8], lens: &[u8], patterns: &[&str]) -> Self {
        Tokenizer {
            splitter: Splitter::new(patterns),
            vocab: Vocab::new(arena, lens),
        }
    }

    /// Calls `out` with each token id of `text`, in order.
    fn encode(&self, text: &str, mut out: impl FnMut(Rank)) {
        self.splitter.for_each_piece(text, |piece| {
            bpe::encode_piece(&self.vocab, piece.as_bytes(), &mut out)
        });
    }
}

/// Ids above every real vocabulary, standing for a message boundary with its role.
fn role_marker(role: Role) -> u32 {
    const BASE: u32 = u32::MAX - 8;
    BASE + match role {
        Role::System => 0,
        Role::User => 1,
        Role::Assistant => 2,
        Role::Tool => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(Encoding::from_name(e.name()), Some(e));
        }
        assert_eq!(Encoding::from_name("gpt2"), None);
    }

    #[test]
    fn counts_match_the_published_encodings() {
        // "hello world" is two tokens in both encodings; ids checked against tiktoken.
        assert_eq!(
            Encoding::Cl100kBase.encode("hello world"),
            vec![15339, 1917]
        );
        assert_eq!(Encoding::O200kBase.encode("hello world"), vec![24912, 2375]);
        assert_eq!(Encoding::O200kBase.count(""), 0);
        assert!(Encoding::O200kBase.count(&"word ".repeat(100)) >= 100);
    }

    #[test]
    fn each_vocabulary_is_one_compact_table() {
        // Every token of the published file; on the heap only a hash table of 8-byte entries
        // (and a control byte each), the token bytes being embedded.
        for (e, tokens) in [
            (Encoding::O200kBase, 199_998),
            (Encoding::Cl100kBase, 100_256),
        ] {
            let vocab = &e.tokenizer().vocab;
            assert_eq!(vocab.len(), tokens, "{e}");
            assert!(
                vocab.heap_bytes() < 12 * tokens,
                "{e}: {} bytes",
                vocab.heap_bytes()
            );
        }
    }

    #[test]
    fn special_token_text_is_ordinary() {
        let ids = Encoding::Cl100kBase.encode("<|endoftext|>");
        assert!(
            ids.len() > 1,
            "must not be the single special token: {ids:?}"
        );
    }

    #[test]
    fn prompt_counts_include_overheads() {
        let msgs = vec![ChatMessage::system("be brief"), ChatMessage::user("hi")];
        let e = Encoding::O200kBase;
        assert_eq!(
            e.count_prompt(&msgs),
            REPLY_PRIMING_TOKENS
                + 2 * MESSAGE_OVERHEAD_TOKENS
                + e.count("be brief")
                + e.count("hi")
        );
    }

    #[test]
    fn equal_message_prefixes_give_equal_id_prefixes() {
        let e = Encoding::O200kBase;
        let a = e.encode_prompt(&[ChatMessage::system("shared"), ChatMessage::user("one")]);
        let b = e.encode_prompt(&[ChatMessage::system("shared"), ChatMessage::user("two")]);
        let shared = e.encode_prompt(&[ChatMessage::system("shared")]);
        assert!(a.starts_with(&shared) && b.starts_with(&shared));
        assert_ne!(a, b);
        // A role change alone changes the sequence.
        let c = e.encode_prompt(&[ChatMessage::user("shared")]);
        assert_ne!(c, shared);
    }
}
