//! The agents' side of the KV-cache pool: a [`Router`] that encodes the prompt, acquires a
//! lease through the pool's ports and releases it when the lease drops.
//!
//! Encoding runs here, on the agent's own worker arbiter, never on the system arbiter the
//! scheduler, pager, bus and pool share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::SendError;
use agentos_runtime::agent::{RouteLease, Router};
use agentos_runtime::config::BackendSpec;
use agentos_runtime::events::{RouteDecided, RoutedBy};
use agentos_runtime::kvcache::{PromptEncoder, RouteOutcome};
use agentos_runtime::llm::{ChatMessage, ChatRequest, ToolSpec};
use futures::future::BoxFuture;

use crate::protocol::{AcquireLease, KvPorts, Port, ReleaseLease};

/// Longest wait for the pool's answer before routing without it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);

/// Lease ids are unique in the process, so a restarted pool never confuses an old lease with a
/// new one.
static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// One backend's router, shared by every agent of that backend.
#[derive(Debug, Clone)]
pub struct KvRouter {
    ports: KvPorts,
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
    /// Leading prompt tokens cached on that replica (0 when routed without the pool, and for
    /// a backend of one replica, whose lease the pool is told of, not asked for).
    pub cached_tokens: usize,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Whether the pool chose (false: the fallback did).
    pub routed_by_pool: bool,
    lease: u64,
    release: Port<ReleaseLease>,
}

impl RouteLease for KvLease {
    fn replica(&self) -> usize {
        self.replica
    }
}

impl Drop for KvLease {
    fn drop(&mut self) {
        // `tell` ignores the mailbox bound on purpose: a lost release would leave the
        // replica's load and blocks claimed forever. If the acquire was never delivered, the
        // pool ignores the unknown lease.
        self.release.tell(ReleaseLease { lease: self.lease });
    }
}

impl KvRouter {
    /// A router for `backend`, reaching the pool through `ports`.
    pub fn new(ports: KvPorts, backend: &BackendSpec) -> Self {
        Self {
            ports,
            backend: backend.name.clone(),
            replicas: backend.replicas.max(1),
            encoder: Arc::new(PromptEncoder::new(backend.tokenizer)),
            fallback_next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Acquires a lease for this prompt. Never fails and waits at most [`ACQUIRE_TIMEOUT`]:
    /// without an answer from the pool the call is routed round robin and counted as
    /// `policy="fallback", outcome="unavailable"`.
    pub fn acquire(
        &self,
        messages: &[ChatMessage],
        tools: &[ToolSpec],
    ) -> BoxFuture<'static, KvLease> {
        self.acquire_tokens(self.encoder.encode(messages, tools).into())
    }

    /// [`KvRouter::acquire`] for a prompt already encoded (the sequence
    /// [`PromptEncoder::encode`] lays out).
    ///
    /// A backend of one replica has nothing to choose: the pool is told of the lease (it
    /// counts the call, its cache hits and its load as for any other) and the call goes out
    /// without waiting for the pool's answer, one cross-thread round trip less per step. A
    /// full pool mailbox makes it ask and wait as with several replicas.
    pub fn acquire_tokens(&self, tokens: Arc<[u32]>) -> BoxFuture<'static, KvLease> {
        // The guard exists before the request is sent, so a dropped attempt still releases a
        // lease the pool granted after the caller stopped waiting.
        let mut lease = KvLease {
            replica: 0,
            cached_tokens: 0,
            prompt_tokens: tokens.len(),
            routed_by_pool: false,
            lease: NEXT_LEASE.fetch_add(1, Ordering::Relaxed),
            release: self.ports.release.clone(),
        };
        let mut ask = AcquireLease {
            lease: lease.lease,
            backend: self.backend.clone(),
            tokens,
        };
        if self.replicas == 1 {
            match self.ports.acquire.try_tell(ask) {
                Ok(()) => {
                    lease.routed_by_pool = true;
                    return Box::pin(std::future::ready(lease));
                }
                Err(SendError::Full(back) | SendError::Closed(back)) => ask = back,
            }
        }
        let this = self.clone();
        Box::pin(async move {
            match this.ports.acquire.ask(ask, ACQUIRE_TIMEOUT).await {
                Ok(Some(g)) => {
                    lease.replica = g.replica;
                    lease.cached_tokens = g.cached_tokens;
                    lease.prompt_tokens = g.prompt_tokens;
                    lease.routed_by_pool = true;
                }
                _ => {
                    RouteDecided {
                        backend: &this.backend,
                        routed_by: RoutedBy::Fallback,
                        outcome: RouteOutcome::Unavailable,
                    }
                    .emit();
                    lease.replica =
                        this.fallback_next.fetch_add(1, Ordering::Relaxed) % this.replicas;
                }
            }
            lease
        })
    }
}

impl Router for KvRouter {
    fn route(&self, request: &ChatRequest) -> BoxFuture<'static, Box<dyn RouteLease>> {
        let acquire = match &request.encoded {
            Some(ids) => self.acquire_tokens(ids.clone()),
            None => self.acquire(&request.messages, &request.tools),
        };
        Box::pin(async move { Box::new(acquire.await) as Box<dyn RouteLease> })
    }
}
