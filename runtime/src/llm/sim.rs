//! The deterministic LLM **simulator**.
//!
//! [`SimBackend`] is not a language model: it answers from per-agent scripts declared in the
//! config and, past a script, with a final answer that says it is simulated. It exists for
//! offline runs, tests and load tests, and models three things of a real backend:
//!
//! - **Behaviour**: scripted tool calls and answers by step index ([`SimBehaviour`]);
//!   `{{last_tool_result}}` in an answer is replaced by the latest tool result.
//! - **Cost**: token counts (the same approximations as [`approx_tokens`]) and a latency model,
//!   `base + per_prompt_token × uncached_prompt_tokens + per_output_token × completion_tokens`.
//! - **Replicas with prefix caches** ([`SimBackend::with_prefix_cache`], always on in a booted
//!   system): each simulated replica keeps its own [`BlockManager`]. A call to replica
//!   `meta.replica` holds its prompt's blocks while it runs; prompt tokens already resident
//!   there cost no prefill and are reported as `usage.cached_tokens`. Prompt tokens are then
//!   counted with the backend's tokenizer (the sequence the KV-cache pool also sees).
//! - **Batch slots** (`slots` in the config): each replica serves that many calls at once and
//!   queues the rest in FIFO order, so a replica's throughput is bounded like a real
//!   engine's and prefill saved by cache hits shortens everyone's wait.
//! - **Faults**: errors, panics and hangs, forced on a given attempt and step, or drawn at the
//!   rates of [`SimFaults`](crate::config::SimFaults).
//!
//! # Determinism
//! Every random choice comes from a small RNG (splitmix64) seeded with an FNV-1a hash of the
//! backend seed and the request's agent, task, attempt and step. The same seed and the same
//! requests give the same replies and faults regardless of call order or concurrency. With
//! prefix caches, latencies also depend on what each replica served before, so they are equal
//! for equal request sequences (same requests, same order, same replicas).
//!
//! Faults happen without latency: an error returns at once, a panic is raised when the future
//! is first polled (inside the caller's task, to exercise supervision), a hang never resolves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

use super::{
    approx_prompt_tokens, approx_tokens, ChatMessage, ChatRequest, ChatResponse, LlmBackend,
    LlmError, RequestMeta, Role, ToolCall, Usage,
};
use crate::config::{SimBehaviour, SimFaultKind, SimSettings, SimStep};
use crate::kvcache::{BlockManager, KvCacheSettings, PromptEncoder, SeqId};
use crate::tokenize::Encoding;

/// Placeholder in a scripted answer replaced by the content of the latest tool result.
pub const LAST_TOOL_RESULT: &str = "{{last_tool_result}}";

/// Most characters of the latest input quoted in the simulator's default final answer.
const QUOTE_CHARS: usize = 160;

/// Salt of the per-call fault draw, so other draws from the same call stay independent.
const FAULT_SALT: u64 = 0x6661_756c_7473; // "faults"

/// The simulator backend (see the [module docs](self)).
///
/// Cloning is cheap and shares the replicas: their prefix caches and their slots.
#[derive(Debug, Clone)]
pub struct SimBackend {
    name: String,
    settings: SimSettings,
    behaviours: Arc<HashMap<String, SimBehaviour>>,
    cache: Option<Arc<SimCache>>,
    /// One semaphore of `settings.slots` permits per replica; empty when unlimited.
    slots: Arc<Vec<Semaphore>>,
}

/// The simulated replicas' prefix caches.
#[derive(Debug)]
struct SimCache {
    encoder: PromptEncoder,
    replicas: Mutex<Vec<BlockManager>>,
}

/// A call's blocks on its replica, released when the call ends or is dropped.
struct CacheHold {
    cache: Arc<SimCache>,
    replica: usize,
    seq: SeqId,
}

impl Drop for CacheHold {
    fn drop(&mut self) {
        let mut replicas = self
            .cache
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(m) = replicas.get_mut(self.replica) {
            let _ = m.release(self.seq);
        }
    }
}

/// What one simulated call does, decided before its future runs.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Reply after sleeping for the modelled latency.
    Reply(ChatResponse, Duration),
    /// Return this injected error.
    Error(String),
    /// Panic with this message when polled.
    Panic(String),
    /// Never resolve.
    Hang,
}

impl SimBackend {
    /// Builds a simulator with per-agent behaviours (by agent name).
    pub fn new(
        name: &str,
        settings: SimSettings,
        behaviours: HashMap<String, SimBehaviour>,
    ) -> Self {
        Self {
            name: name.into(),
            slots: Arc::new(replica_slots(settings.slots, 1)),
            settings,
            behaviours: Arc::new(behaviours),
            cache: None,
        }
    }

    /// The same simulator (sharing its replicas' caches and slots) answering with other
    /// per-agent behaviours: a server that receives scripts with each request uses one.
    pub fn with_behaviours(&self, behaviours: HashMap<String, SimBehaviour>) -> Self {
        Self {
            behaviours: Arc::new(behaviours),
            ..self.clone()
        }
    }

    /// Gives the simulator `replicas` replicas, each with its own prefix cache of `cache`'s
    /// block size, capacity and salt, over prompts encoded with `tokenizer`. Routing is not
    /// the simulator's business: each call says its replica in `meta.replica`.
    pub fn with_prefix_cache(
        mut self,
        tokenizer: Encoding,
        cache: &KvCacheSettings,
        replicas: usize,
    ) -> Self {
        self.cache = Some(Arc::new(SimCache {
            encoder: PromptEncoder::new(tokenizer),
            replicas: Mutex::new((0..replicas.max(1)).map(|_| cache.manager()).collect()),
        }));
        self.slots = Arc::new(replica_slots(self.settings.slots, replicas.max(1)));
        self
    }

    /// Every replica's cache figures (empty without prefix caches).
    pub fn cache_stats(&self) -> Vec<crate::kvcache::KvStats> {
        self.cache.as_ref().map_or_else(Vec::new, |c| {
            let replicas = c.replicas.lock().unwrap_or_else(|e| e.into_inner());
            replicas.iter().map(BlockManager::stats).collect()
        })
    }

    /// The modelled latency of a call with these token counts:
    /// `base + per_prompt_token × prompt_tokens + per_output_token × completion_tokens`,
    /// saturating instead of overflowing.
    pub fn latency_for(&self, prompt_tokens: u64, completion_tokens: u64) -> Duration {
        let l = &self.settings.latency;
        l.base
            .saturating_add(times(l.per_prompt_token, prompt_tokens))
            .saturating_add(times(l.per_output_token, completion_tokens))
    }

    /// Holds the prompt's blocks on its replica; returns the hold and the cached tokens. A
    /// replica with every block referenced serves the call uncached (a real engine would queue
    /// it; the simulator charges the full prefill instead).
    fn hold(&self, request: &ChatRequest) -> Option<(Option<CacheHold>, u64, u64)> {
        let cache = self.cache.as_ref()?;
        let encoded;
        let tokens: &[u32] = match &request.encoded {
            Some(ids) => ids,
            None => {
                encoded = cache.encoder.encode(&request.messages, &request.tools);
                &encoded
            }
        };
        let mut replicas = cache.replicas.lock().unwrap_or_else(|e| e.into_inner());
        let n = replicas.len();
        let replica = request.meta.replica % n.max(1);
        let acquired = replicas.get_mut(replica)?.acquire(tokens).ok();
        drop(replicas);
        let cached = acquired.map_or(0, |a| a.cached_tokens as u64);
        let hold = acquired.map(|a| CacheHold {
            cache: cache.clone(),
            replica,
            seq: a.seq,
        });
        Some((hold, tokens.len() as u64, cached))
    }

    /// What a call does, without holding its blocks (tests compare plans).
    #[cfg(test)]
    fn plan(&self, request: &ChatRequest) -> Plan {
        self.plan_call(request).0
    }

    fn plan_call(&self, request: &ChatRequest) -> (Plan, Option<CacheHold>) {
        if let Some(fault) = self.plan_faults(request) {
            return (fault, None);
        }
        let behaviour = self.behaviours.get(&request.meta.agent);
        let (message, finish_reason) = reply_message(behaviour, request);
        let (hold, prompt_tokens, cached_tokens) = self
            .hold(request)
            .unwrap_or_else(|| (None, prompt_tokens(request), 0));
        let usage = Usage {
            prompt_tokens,
            completion_tokens: completion_tokens(&message),
            cached_tokens,
        };
        let latency = self.latency_for(
            usage.prompt_tokens - usage.cached_tokens,
            usage.completion_tokens,
        );
        (
            Plan::Reply(
                ChatResponse {
                    message,
                    usage,
                    finish_reason: finish_reason.into(),
                },
                latency,
            ),
            hold,
        )
    }

    /// The fault this call suffers, if any.
    fn plan_faults(&self, request: &ChatRequest) -> Option<Plan> {
        let meta = &request.meta;
        let behaviour = self.behaviours.get(&meta.agent);
        let forced = behaviour.and_then(|b| {
            b.faults
                .iter()
                .find(|f| f.attempt == meta.attempt && f.step == meta.step)
        });
        if let Some(fault) = forced {
            return Some(match fault.kind {
                SimFaultKind::Error => Plan::Error(format!(
                    "forced error on attempt {} step {}",
                    meta.attempt, meta.step
                )),
                SimFaultKind::Panic => {
                    Plan::Panic(format!("simulated panic (forced) in {}", at(meta)))
                }
                SimFaultKind::Hang => Plan::Hang,
            });
        }

        let faults = &self.settings.faults;
        let u = draw_unit(
            self.settings.seed,
            &[
                &meta.agent,
                &meta.task,
                &meta.attempt.to_string(),
                &meta.step.to_string(),
            ],
            FAULT_SALT,
        );
        if u < faults.panic_rate {
            return Some(Plan::Panic(format!(
                "simulated panic (random, rate {}) in {}",
                faults.panic_rate,
                at(meta)
            )));
        }
        if u < faults.panic_rate + faults.error_rate {
            return Some(Plan::Error(format!(
                "random error (rate {}) on attempt {} step {}",
                faults.error_rate, meta.attempt, meta.step
            )));
        }
        if u < faults.panic_rate + faults.error_rate + faults.hang_rate {
            return Some(Plan::Hang);
        }
        None
    }
}

impl LlmBackend for SimBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "sim"
    }
    fn is_simulated(&self) -> bool {
        true
    }
    fn chat(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        if self.slots.is_empty() {
            return self.serve(request);
        }
        // A replica with all slots busy queues the call (FIFO, tokio's fair semaphore). The
        // call is planned once it holds a slot, so its cache hits are those of the moment it
        // is served, as in an engine's scheduler.
        let this = self.clone();
        Box::pin(async move {
            let replica = request.meta.replica % this.slots.len();
            let _slot = match this.slots.get(replica) {
                // The semaphores are never closed, so acquiring only waits.
                Some(s) => s.acquire().await.ok(),
                None => None,
            };
            this.serve(request).await
        })
    }
}

impl SimBackend {
    /// Serves one call at once: plans it, holds its blocks, and sleeps its modelled latency.
    fn serve(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let (plan, hold) = self.plan_call(&request);
        let meta = &request.meta;
        match plan {
            Plan::Reply(reply, latency) if latency.is_zero() => {
                drop(hold);
                Box::pin(futures::future::ready(Ok(reply)))
            }
            Plan::Reply(reply, latency) => Box::pin(async move {
                // The blocks stay held while the call runs, and are released when it ends or
                // is dropped.
                let _hold = hold;
                tokio::time::sleep(latency).await;
                Ok(reply)
            }),
            Plan::Error(message) => {
                tracing::debug!(backend = %self.name, agent = %meta.agent, task = %meta.task,
                    attempt = meta.attempt, step = meta.step, "simulator injecting an error");
                Box::pin(futures::future::ready(Err(LlmError::Injected(message))))
            }
            Plan::Panic(message) => {
                tracing::debug!(backend = %self.name, agent = %meta.agent, task = %meta.task,
                    attempt = meta.attempt, step = meta.step, "simulator injecting a panic");
                Box::pin(panic_when_polled(message))
            }
            Plan::Hang => {
                tracing::debug!(backend = %self.name, agent = %meta.agent, task = %meta.task,
                    attempt = meta.attempt, step = meta.step, "simulator injecting a hang");
                Box::pin(std::future::pending())
            }
        }
    }
}

/// `replicas` semaphores of `slots` permits each; none when `slots` is 0 (unlimited).
fn replica_slots(slots: usize, replicas: usize) -> Vec<Semaphore> {
    if slots == 0 {
        return Vec::new();
    }
    let permits = slots.min(Semaphore::MAX_PERMITS);
    (0..replicas).map(|_| Semaphore::new(permits)).collect()
}

/// Panics once polled, so the panic unwinds through whoever drives the call.
async fn panic_when_polled(message: String) -> Result<ChatResponse, LlmError> {
    panic!("{message}")
}

fn at(meta: &RequestMeta) -> String {
    format!(
        "agent {}, task {}, attempt {}, step {}",
        meta.agent, meta.task, meta.attempt, meta.step
    )
}

/// The scripted reply for this step, or the simulator's final answer past the script.
fn reply_message(
    behaviour: Option<&SimBehaviour>,
    request: &ChatRequest,
) -> (ChatMessage, &'static str) {
    let meta = &request.meta;
    let step = behaviour.and_then(|b| b.script.get(meta.step as usize));
    match step {
        Some(SimStep::Call { tool, args }) => (
            ChatMessage {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall::new(
                    format!("call_{}", meta.step),
                    tool.clone(),
                    args.clone(),
                )],
                tool_call_id: None,
            },
            "tool_calls",
        ),
        Some(SimStep::Answer(text)) => {
            let last_tool = last_content(&request.messages, |r| r == Role::Tool);
            (
                ChatMessage::assistant(text.replace(LAST_TOOL_RESULT, last_tool)),
                "stop",
            )
        }
        None => {
            let input = last_content(&request.messages, |r| matches!(r, Role::User | Role::Tool));
            let quote: String = input.chars().take(QUOTE_CHARS).collect();
            let ellipsis = if input.chars().nth(QUOTE_CHARS).is_some() {
                "…"
            } else {
                ""
            };
            (
                ChatMessage::assistant(format!(
                    "[simulated] {} finished {}: {quote}{ellipsis}",
                    meta.agent, meta.task
                )),
                "stop",
            )
        }
    }
}

/// `per × n`, saturating at [`Duration::MAX`].
fn times(per: Duration, n: u64) -> Duration {
    let nanos = per.as_nanos().saturating_mul(u128::from(n));
    match u64::try_from(nanos / 1_000_000_000) {
        // The remainder is below 10^9, so it fits in u32.
        Ok(secs) => Duration::new(secs, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Content of the latest message whose role matches, or `""`.
fn last_content(messages: &[ChatMessage], role: impl Fn(Role) -> bool) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| role(m.role))
        .map_or("", |m| m.content.as_str())
}

fn prompt_tokens(request: &ChatRequest) -> u64 {
    let tools = if request.tools.is_empty() {
        0
    } else {
        serde_json::to_string(&request.tools[..]).map_or(0, |json| approx_tokens(&json))
    };
    approx_prompt_tokens(&request.messages) + tools
}

fn completion_tokens(message: &ChatMessage) -> u64 {
    let calls: u64 = message
        .tool_calls
        .iter()
        .map(|c| approx_tokens(&c.name) + approx_tokens(&c.arguments.to_string()))
        .sum();
    (approx_tokens(&message.content) + calls).max(1)
}

/// A deterministic draw in `[0, 1)` from `seed`, the `parts` that identify the choice (e.g.
/// agent, task, attempt, step) and a `salt` that separates independent choices about the same
/// parts. Uses an FNV-1a hash of the inputs to seed splitmix64, so it is stable across runs,
/// platforms and Rust versions (unlike `std`'s `RandomState`).
pub fn draw_unit(seed: u64, parts: &[&str], salt: u64) -> f64 {
    let mut hash = Fnv1a::new();
    hash.write(&seed.to_le_bytes());
    for part in parts {
        // Length-prefixed, so `["ab", "c"]` and `["a", "bc"]` differ.
        hash.write(&(part.len() as u64).to_le_bytes());
        hash.write(part.as_bytes());
    }
    hash.write(&salt.to_le_bytes());
    let mut rng = SplitMix64(hash.0);
    // The top 53 bits make an exactly representable fraction in [0, 1).
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// 64-bit FNV-1a.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for simulation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests;
