//! Generating one admitted request's reply on its replica: waiting for a batch slot, the
//! request's default script, the simulator call, and stopping at `max_tokens`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentos_runtime::config::{SimBehaviour, SimStep};
use agentos_runtime::llm::{ChatRequest, LlmBackend, LlmError, RequestMeta, Role};
use hyper::header::HeaderName;
use hyper::StatusCode;

use super::replica::Replica;
use super::{error, json_reply, unix_now, wire, Reply, SimServer, REPLICA_HEADER};

impl SimServer {
    /// Waits for a slot of `state` (replica `replica`) and generates the reply; returns it with
    /// the real tokens (prompt + completion) when one was generated.
    pub(super) async fn generate(
        &self,
        replica: usize,
        state: &Replica,
        req: wire::WireRequest,
        meta: RequestMeta,
        id: &str,
    ) -> (Reply, Option<u64>) {
        let step = meta.step as usize;
        let _slot = match &state.slots {
            None => None,
            Some(slots) => match slots.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    if self.cfg.max_queue > 0
                        && state.queued.load(Ordering::Relaxed) >= self.cfg.max_queue
                    {
                        let resp = self.too_many(&format!(
                            "the queue of replica {replica} is full ({} requests waiting for {} slots)",
                            self.cfg.max_queue, self.cfg.max_concurrent
                        ));
                        return (resp, None);
                    }
                    let _queued = Counted::new(&state.queued);
                    // The semaphore is never closed, so acquire cannot fail.
                    slots.acquire().await.ok()
                }
            },
        };
        let _in_flight = Counted::new(&state.in_flight);

        let mut behaviours = HashMap::new();
        let has_tool_result = req.messages.iter().any(|m| m.role == Role::Tool);
        if let (Some(tool), false) = (req.tools.first(), has_tool_result) {
            let prompt = req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map_or("", |m| m.content.as_str());
            let call = SimStep::Call {
                tool: tool.name.clone(),
                args: wire::derive_arguments(tool, prompt),
            };
            behaviours.insert(
                meta.agent.clone(),
                SimBehaviour {
                    script: vec![call; step + 1],
                    faults: Vec::new(),
                },
            );
        }
        // Same caches as every other request; only the default script is this request's.
        let backend = self.backend.with_behaviours(behaviours);
        let max_tokens = req.max_tokens;
        let call = backend.chat(ChatRequest {
            messages: req.messages,
            tools: req.tools.into(),
            max_tokens,
            meta,
            encoded: None,
        });
        let failed = match tokio::time::timeout(self.cfg.hang_timeout, call).await {
            Ok(Ok(mut reply)) => {
                // The simulator does not stop at max_tokens; a server must.
                if let Some(max) = max_tokens {
                    wire::cap_completion(&mut reply, max);
                }
                state.served.fetch_add(1, Ordering::Relaxed);
                let mut resp = json_reply(
                    StatusCode::OK,
                    &wire::reply_body(id, &self.cfg.model, unix_now(), &reply),
                );
                resp.headers_mut()
                    .insert(HeaderName::from_static(REPLICA_HEADER), replica.into());
                let real = reply
                    .usage
                    .prompt_tokens
                    .saturating_add(reply.usage.completion_tokens);
                return (resp, Some(real));
            }
            Ok(Err(LlmError::Injected(msg))) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("simulated server error: {msg}"),
            ),
            Ok(Err(e)) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &e.to_string(),
            ),
            Err(_) => error(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                &format!(
                    "simulated hang: no reply within {:?}",
                    self.cfg.hang_timeout
                ),
            ),
        };
        (failed, None)
    }
}

/// Increments a gauge for as long as it lives (decrements on drop, also when a client goes
/// away and the request future is dropped).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
