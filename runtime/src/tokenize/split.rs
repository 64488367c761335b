//! Pre-splitting text into the pieces BPE merges, with tiktoken's patterns run by a DFA.
//!
//! tiktoken's patterns use possessive quantifiers and one look-ahead, `\s+(?!\S)`, which only
//! a backtracking engine runs. In these patterns a possessive quantifier never gives back what a
//! greedy one would keep, so plain greedy ones match the same. The look-ahead alternative is
//! replaced by a last pattern, `\s+`, and its match is cut short afterwards: a whitespace run of
//! two or more characters followed by more text gives back its last character, which then
//! starts the next piece (" world" after a run of spaces), exactly as `\s+(?!\S)` would. The
//! patterns before it already took runs holding a line break and, in cl100k, runs that end the
//! text.

use std::panic::{RefUnwindSafe, UnwindSafe};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson::{self, WhichCaptures};
use regex_automata::util::pool::Pool;
use regex_automata::{Anchored, Input};

/// The o200k_base patterns: tiktoken's `O200K_BASE_PAT_STR` up to `\s+(?!\S)|\s+`, then the
/// stand-in for those two.
pub(super) const O200K_PATTERNS: [&str; 2] = [
    concat!(
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"|\s*[\r\n]+",
    ),
    r"\s+",
];

/// The cl100k_base patterns: tiktoken's up to `\s+(?!\S)|\s`, possessive quantifiers made
/// greedy, then the stand-in for those two.
pub(super) const CL100K_PATTERNS: [&str; 2] = [
    concat!(
        r"'(?i:[sdmt]|ll|ve|re)",
        r"|[^\r\n\p{L}\p{N}]?\p{L}+",
        r"|\p{N}{1,3}",
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"|\s+$",
        r"|\s*[\r\n]",
    ),
    r"\s+",
];

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// A compiled split pattern, with search scratch space shared by the threads that use it.
///
/// Pieces are found one at a time by an anchored forward search of a lazy DFA: each starts
/// where the last ended, so the match's end is all the search has to find, and no reverse
/// automaton is built. In its default configuration the lazy DFA never quits or gives up.
pub(super) struct Splitter {
    dfa: DFA,
    /// One DFA cache per concurrent user, handed out per text rather than per piece.
    caches: Pool<Cache, CacheFn>,
}

impl Splitter {
    /// Compiles `patterns`; the last one stands in for `\s+(?!\S)` (see the module docs).
    ///
    /// # Panics
    ///
    /// If a pattern does not compile; only the constants above are compiled, and the tests
    /// compile each of them.
    pub(super) fn new(patterns: &[&str]) -> Self {
        let dfa = DFA::builder()
            .thompson(thompson::Config::new().which_captures(WhichCaptures::None))
            .build_many(patterns)
            .expect("the split patterns compile");
        let for_pool = dfa.clone();
        let create: CacheFn = Box::new(move || for_pool.create_cache());
        Splitter {
            dfa,
            caches: Pool::new(create),
        }
    }

    /// Calls `piece` with each piece of `text`, in order; together they cover all of it.
    pub(super) fn for_each_piece(&self, text: &str, mut piece: impl FnMut(&str)) {
        let lookahead = self.dfa.pattern_len() - 1;
        let mut cache = self.caches.get();
        let mut input = Input::new(text).anchored(Anchored::Yes);
        let mut start = 0;
        while start < text.len() {
            input.set_start(start);
            let end = match self.dfa.try_search_fwd(&mut cache, &input) {
                Ok(Some(m)) if m.pattern().as_usize() == lookahead && m.offset() < text.len() => {
                    let run = &text[start..m.offset()];
                    // Give back the last whitespace character unless it is the only one.
                    match run.char_indices().next_back() {
                        Some((last, _)) if last > 0 => start + last,
                        _ => m.offset(),
                    }
                }
                Ok(Some(m)) => m.offset(),
                // Every character starts a match of some alternative, and the search cannot
                // fail; should either happen, the rest of the text is one piece, not lost.
                Ok(None) | Err(_) => text.len(),
            };
            // Every alternative consumes at least one character; the guard keeps a broken
            // pattern from looping forever.
            let end = if end > start { end } else { text.len() };
            piece(&text[start..end]);
            start = end;
        }
    }
}
