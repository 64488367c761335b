//! Prompts as token sequences, and the hash chain that names full blocks.
//!
//! A full block's identity is `h(parent, tokens)`: the hash of its parent block (or of the
//! chain root, which carries the per-tenant salt) and its own token ids. Equal prefixes
//! therefore map to equal chains, and a block can only be reused behind the same prefix. The
//! block manager also keeps each block's parent and tokens and compares them on every hit, so
//! a 64-bit collision can never hand out the wrong block.
//!
//! # What the prompt sequence is
//! [`PromptEncoder::encode`] lays a request out the way serving engines render chat templates:
//! the system message first, then the tools JSON (engines put tool definitions into the system
//! turn), then every other message, each message as
//! [`Encoding::encode_prompt`](crate::tokenize::Encoding::encode_prompt) encodes it (a role
//! marker, the content, the tool calls). Agents with the same role and the same tools share the
//! whole head of their prompts.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use crate::llm::{ChatMessage, Role, ToolSpec};
use crate::tokenize::Encoding;

/// Most encoded messages a [`PromptEncoder`] remembers; beyond this it starts afresh.
const MEMO_ENTRIES: usize = 4096;

/// 64-bit mix (the splitmix64 finaliser).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The root of every chain under `salt`.
pub fn root(salt: u64) -> u64 {
    mix(salt ^ 0x6b76_6361_6368_6521)
}

/// The hash of a block holding `tokens` behind the block hashed `parent`.
pub fn chain(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = mix(parent.wrapping_add(0x9e37_79b9_7f4a_7c15));
    for &t in tokens {
        h = mix(h ^ u64::from(t)).rotate_left(5);
    }
    mix(h ^ tokens.len() as u64)
}

/// The 64-bit value of a salt string (FNV-1a), stable across runs and platforms.
pub fn salt_of(salt: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Every full-block hash of `tokens`, in order (the trailing partial block has none).
pub fn block_hashes(tokens: &[u32], block_size: usize, salt: u64) -> Vec<u64> {
    chain_blocks(root(salt), tokens, block_size)
}

/// Every full-block hash of `tokens`, chained from `root_hash` (a [`root`] of some salt).
pub fn chain_blocks(root_hash: u64, tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut parent = root_hash;
    tokens
        .chunks_exact(block_size.max(1))
        .map(|c| {
            parent = chain(parent, c);
            parent
        })
        .collect()
}

/// Encoded texts by 128-bit key.
type Memo = HashMap<(u64, u64), Arc<[u32]>>;

/// Turns requests into token sequences with one backend's encoding, remembering the tokens of
/// recent messages: consecutive calls of one agent repeat every earlier message, and agents
/// share their system prompt, so most messages are encoded once.
#[derive(Debug)]
pub struct PromptEncoder {
    encoding: Encoding,
    memo: Mutex<Memo>,
}

impl PromptEncoder {
    /// An encoder for `encoding`.
    pub fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            memo: Mutex::new(HashMap::new()),
        }
    }

    /// The encoding it uses.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The prompt sequence of a request (see the [module docs](self)).
    pub fn encode(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> Vec<u32> {
        let mut out = Vec::new();
        let (head, rest) = match messages.first() {
            Some(m) if m.role == Role::System => (Some(m), &messages[1..]),
            _ => (None, messages),
        };
        if let Some(m) = head {
            out.extend_from_slice(&self.message(m));
        }
        if !tools.is_empty() {
            // Serialising plain structs of strings and JSON values cannot fail; an empty
            // string (no tokens) would only weaken sharing, never correctness.
            let json = serde_json::to_string(tools).unwrap_or_default();
            out.extend_from_slice(&self.memoised(&json, 0x746f_6f6c, |e| e.encode(&json)));
        }
        for m in rest {
            out.extend_from_slice(&self.message(m));
        }
        out
    }

    /// The same sequence as [`PromptEncoder::encode`] from ids already at hand, encoding
    /// nothing: `ids[i]` is message `i` as [`Encoding::encode_prompt`] lays out that message
    /// alone, `tools` the tools JSON encoded. `None` when `ids` does not cover `messages`.
    pub fn layout(messages: &[ChatMessage], ids: &[Arc<[u32]>], tools: &[u32]) -> Option<Vec<u32>> {
        if ids.len() != messages.len() {
            return None;
        }
        let len = ids.iter().map(|i| i.len()).sum::<usize>() + tools.len();
        let mut out = Vec::with_capacity(len);
        let rest = match messages.first() {
            Some(m) if m.role == Role::System => {
                out.extend_from_slice(&ids[0]);
                &ids[1..]
            }
            _ => ids,
        };
        out.extend_from_slice(tools);
        for m in rest {
            out.extend_from_slice(m);
        }
        Some(out)
    }

    fn message(&self, m: &ChatMessage) -> Arc<[u32]> {
        let calls = if m.tool_calls.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&m.tool_calls).unwrap_or_default()
        };
        let key = format!("{:?}\u{0}{calls}", m.role);
        self.memoised(&m.content, salt_of(&key), |e| {
            e.encode_prompt(std::slice::from_ref(m))
        })
    }

    fn memoised(
        &self,
        text: &str,
        tag: u64,
        encode: impl FnOnce(Encoding) -> Vec<u32>,
    ) -> Arc<[u32]> {
        let key = text_key(text, tag);
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        let tokens: Arc<[u32]> = encode(self.encoding).into();
        let mut memo = self.lock();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key, tokens.clone());
        tokens
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A 128-bit key of a text (two independent 64-bit hashes), so memo collisions are negligible.
fn text_key(text: &str, tag: u64) -> (u64, u64) {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    (tag, text).hash(&mut a);
    (a.finish(), salt_of(text) ^ mix(tag) ^ text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_prefixes_give_equal_chains_and_salts_separate_them() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b[40] = 999;
        let ha = block_hashes(&a, 16, 0);
        let hb = block_hashes(&b, 16, 0);
        assert_eq!(ha.len(), 4);
        assert_eq!(ha[..2], hb[..2]);
        assert_ne!(ha[2], hb[2]);
        assert_ne!(ha[3], hb[3], "a changed block changes every later hash");
        assert_ne!(block_hashes(&a, 16, salt_of("tenant-a"))[0], ha[0]);
    }

    #[test]
    fn prompts_share_their_head_and_tools_follow_the_system_prompt() {
        let enc = PromptEncoder::new(Encoding::default());
        let tools = vec![ToolSpec {
            name: "calculator".into(),
            description: "evaluates".into(),
            parameters: json!({"type": "object"}),
        }];
        let sys = ChatMessage::system("You are a careful assistant.");
        let a = enc.encode(&[sys.clone(), ChatMessage::user("first task")], &tools);
        let b = enc.encode(&[sys.clone(), ChatMessage::user("second task")], &tools);
        let sys_only = enc.encode(std::slice::from_ref(&sys), &tools);
        assert!(a.starts_with(&sys_only) && b.starts_with(&sys_only));
        assert_ne!(a, b);
        let no_tools = enc.encode(&[sys, ChatMessage::user("first task")], &[]);
        assert!(no_tools.len() < a.len());
        // Memoised encodings are the same as fresh ones.
        let again = PromptEncoder::new(Encoding::default()).encode(
            &[
                ChatMessage::system("You are a careful assistant."),
                ChatMessage::user("first task"),
            ],
            &tools,
        );
        assert_eq!(again, a);
    }

    #[test]
    fn a_layout_of_cached_ids_is_the_encoded_prompt() {
        let e = Encoding::default();
        let enc = PromptEncoder::new(e);
        let tools = vec![ToolSpec {
            name: "calculator".into(),
            description: "evaluates".into(),
            parameters: json!({"type": "object"}),
        }];
        let tools_ids = e.encode(&serde_json::to_string(&tools).unwrap());
        let call = crate::llm::ToolCall::new("c0", "calculator", json!({"expression": "1 + 1"}));
        let mut reply = ChatMessage::assistant("");
        reply.tool_calls.push(call);
        for messages in [
            vec![
                ChatMessage::system("You compute."),
                ChatMessage::user("(1 * 7) + 0"),
                reply.clone(),
                ChatMessage::tool("c0", "2"),
            ],
            vec![ChatMessage::user("no system prompt"), reply],
        ] {
            let ids: Vec<Arc<[u32]>> = messages
                .iter()
                .map(|m| e.encode_prompt(std::slice::from_ref(m)).into())
                .collect();
            let laid = PromptEncoder::layout(&messages, &ids, &tools_ids);
            assert_eq!(laid, Some(enc.encode(&messages, &tools)));
            let laid = PromptEncoder::layout(&messages, &ids, &[]);
            assert_eq!(laid, Some(enc.encode(&messages, &[])));
            assert_eq!(PromptEncoder::layout(&messages, &ids[1..], &[]), None);
        }
    }
}
