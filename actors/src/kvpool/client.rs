//! The agents' side of the pool: encode the prompt, acquire a lease, release it on drop.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentos_runtime::config::BackendSpec;
use agentos_runtime::events::{RouteDecided, RoutedBy};
use agentos_runtime::kvcache::{PromptEncoder, RouteOutcome};
use agentos_runtime::llm::{ChatMessage, ToolSpec};

use super::{AcquireLease, PoolSlot, ReleaseLease};

/// Longest wait for the pool's answer before routing without it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// Lease ids are unique in the process, so a restarted pool never confuses an old lease with a
/// new one.
static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// One backend's handle on the pool, shared by every agent of that backend.
#[derive(Debug, Clone)]
pub struct KvClient {
    slot: PoolSlot,
    backend: String,
    replicas: usize,
    encoder: Arc<PromptEncoder>,
    /// Round-robin position used when the pool cannot be asked.
    fallback_next: Arc<AtomicUsize>,
}

/// A held lease: where the call goes and what is cached there. Dropping it releases the lease.
#[derive(Debug)]
pub struct KvLease {
    /// Replica index the call goes to.
    pub replica: usize,
    /// Leading prompt tokens cached on that replica (0 when routed without the pool).
    pub cached_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Whether the pool chose (false: the fallback did).
    pub routed_by_pool: bool,
    lease: u64,
    slot: PoolSlot,
}

impl Drop for KvLease {
    fn drop(&mut self) {
        // `do_send` ignores the mailbox bound on purpose: a lost release would leave the
        // replica's load and blocks claimed forever. If the acquire was never delivered, the
        // pool ignores the unknown lease.
        if let Some(pool) = self.slot.get() {
            pool.do_send(ReleaseLease { lease: self.lease });
        }
    }
}

impl KvClient {
    /// A client for `backend`, reaching the pool through `slot`.
    pub fn new(slot: PoolSlot, backend: &BackendSpec) -> Self {
        Self {
            slot,
            backend: backend.name.clone(),
            replicas: backend.replicas.max(1),
            encoder: Arc::new(PromptEncoder::new(backend.tokenizer)),
            fallback_next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Acquires a lease for this prompt. Never fails and waits at most [`ACQUIRE_TIMEOUT`]:
    /// without an answer from the pool the call is routed round robin and counted as
    /// `policy="fallback", outcome="unavailable"`.
    pub async fn acquire(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> KvLease {
        let tokens: Arc<[u32]> = self.encoder.encode(messages, tools).into();
        let lease = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
        let answer = match self.slot.get() {
            Some(pool) => pool
                .send(AcquireLease {
                    lease,
                    backend: self.backend.clone(),
                    tokens: tokens.clone(),
                })
                .timeout(ACQUIRE_TIMEOUT)
                .await
                .ok()
                .flatten(),
            None => None,
        };
        match answer {
            Some(g) => KvLease {
                replica: g.replica,
                cached_tokens: g.cached_tokens,
                prompt_tokens: g.prompt_tokens,
                routed_by_pool: true,
                lease,
                slot: self.slot.clone(),
            },
            None => {
                RouteDecided {
                    backend: &self.backend,
                    routed_by: RoutedBy::Fallback,
                    outcome: RouteOutcome::Unavailable,
                }
                .emit();
                KvLease {
                    replica: self.fallback_next.fetch_add(1, Ordering::Relaxed) % self.replicas,
                    cached_tokens: 0,
                    prompt_tokens: tokens.len(),
                    routed_by_pool: false,
                    lease,
                    slot: self.slot.clone(),
                }
            }
        }
    }
}
