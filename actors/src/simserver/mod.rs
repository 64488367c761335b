//! `agentos sim-server`: the `sim` backend served as an OpenAI-compatible HTTP endpoint.
//!
//! Routes: `POST /v1/chat/completions`, `GET /v1/models` (replica 0),
//! `POST /r/{i}/v1/chat/completions`, `GET /r/{i}/v1/models` (replica `i`), and `GET /healthz`
//! (see [`replica`]). Every reply carries
//! `x-agentos-simulator: true` and `server: agentos-sim-server`, the model is called
//! `agentos-simulator` unless the config says otherwise, and `/healthz` reports
//! `"simulator": true`: nobody can mistake it for a real model.
//!
//! # What it answers
//! External clients have no per-agent script, so the server picks a documented, deterministic
//! default for each request:
//! - if the request offers `tools` and the conversation holds no tool result yet, it calls the
//!   **first** tool, with arguments derived from the latest user message
//!   ([`wire::derive_arguments`]): a ReAct-style agent sees one tool call, then
//! - otherwise it answers with the simulator's final answer, which quotes the latest tool
//!   result (or user message) and starts with `[simulated]`.
//!
//! Latency, token counts and faults are those of [`SimBackend`], driven with a request
//! identity derived from the conversation: agent = the request's `user` field (or `client`),
//! task = a hash of the system prompt and first user message, step = the number of assistant
//! messages so far, attempt = how many times this server has seen this exact point of the
//! conversation (so a retried request draws its faults afresh, deterministically). The same
//! seed and the same conversations give the same replies in any order.
//!
//! # Replicas and prefix caches
//! The server simulates `replicas` replicas of one model. One [`SimBackend`] is built at start
//! with [`SimBackend::with_prefix_cache`]: each replica keeps its own prefix cache (a
//! [`BlockManager`](agentos_runtime::kvcache::BlockManager) over the prompt encoded with
//! `tokenizer`). Each request derives a backend with its default script
//! ([`SimBackend::with_behaviours`], sharing the caches) and is served by the replica its path
//! names: prompt tokens already resident there cost no prefill and come back as
//! `usage.prompt_tokens_details.cached_tokens`. Replies also carry `x-agentos-replica`.
//! `/healthz` lists every replica's queue and cache figures (query and hit tokens, blocks by
//! state). Latencies depend on what each replica served before, so they are equal for equal
//! request sequences (same requests, same order, same replicas); replies and faults do not
//! depend on the replica at all.
//!
//! # Capacity
//! Each replica has its own `max_concurrent` batch slots, like a real inference server per
//! GPU; the rest wait in FIFO order (tokio's fair semaphore). Past `max_queue` requests
//! waiting for one replica, new ones to that replica get HTTP 429 with `Retry-After`: an
//! overloaded replica pushes back without slowing the others, so a client's load-aware
//! routing has something to react to. Simulated errors are HTTP 500,
//! simulated rate limits HTTP 429 with `Retry-After`, simulated hangs HTTP 504 after
//! `hang_timeout_secs`.
//!
//! # Rate limits
//! With `tokens_per_window` and/or `requests_per_window` the server enforces OpenAI-style
//! limits over all replicas together ([`limits`]): a request is charged at arrival (one
//! request; prompt tokens, counted as the reply's `usage.prompt_tokens` will count them, plus
//! `max_tokens`), refused with HTTP 429 (`type` `requests` or `tokens`, code
//! `rate_limit_exceeded`, `Retry-After` in whole seconds) when a bucket lacks it, and settled
//! against the real usage once the reply is generated. Replies honour `max_tokens`
//! ([`wire::cap_completion`]). Every chat-completion reply carries the `x-ratelimit-*` headers
//! of the configured limits: the buckets right after the request was charged (or, for a
//! refused one, as they stand). `/healthz` reports the accounting under `rate_limits`:
//! accepted and limited requests (these 429s only, not the simulated ones of
//! `rate_limit_rate`), accepted tokens, and the busiest window of requests and of tokens.
//! Simulated 429s (`rate_limit_rate`) are drawn before the limits and charge nothing.
//!
//! Nothing a client sends can panic the server: bad JSON and wrong types are HTTP 400, bodies
//! over `max_body_bytes` are 413, unknown paths 404, wrong methods 405, all with an OpenAI-style
//! JSON error body.

pub mod config;
mod generate;
pub mod limits;
pub mod replica;
mod run;
pub mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentos_runtime::kvcache::PromptEncoder;
use agentos_runtime::llm::sim::{draw_unit, SimBackend};
use agentos_runtime::llm::{
    approx_prompt_tokens, approx_tokens, ChatMessage, RequestMeta, Role, ToolSpec,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::SimServerConfig;
use limits::{RateLimits, Refusal, DEFAULT_COMPLETION_ESTIMATE};
use replica::{Endpoint, Replica};
pub use run::{bind, main};

/// Header present on every reply of the simulator.
pub const SIMULATOR_HEADER: &str = "x-agentos-simulator";

/// Header naming the replica that served a chat completion.
pub const REPLICA_HEADER: &str = "x-agentos-replica";

/// Most conversation points remembered for attempt numbering; past it the memory restarts.
const MAX_REMEMBERED: usize = 100_000;

/// Salts of the server's own deterministic draws.
const CONVERSATION_SALT: u64 = 0x636f_6e76; // "conv"
const RATE_LIMIT_SALT: u64 = 0x7261_7465; // "rate"

/// Why the sim-server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimServerError {
    /// The `--config` file is unreadable or invalid.
    #[error("sim-server config {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// Every problem, one per line.
        message: String,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The server's state, shared by every connection.
#[derive(Debug)]
pub struct SimServer {
    cfg: SimServerConfig,
    /// The template every request derives its backend from; owns the replicas' caches.
    backend: SimBackend,
    replicas: Vec<Replica>,
    seen: Mutex<HashMap<(u64, usize), u32>>,
    started: Instant,
    limits: RateLimits,
    /// Counts prompts at arrival for the token limit, as the replicas' caches encode them;
    /// `None` without a token limit or without caches (then the simulator's approximation).
    encoder: Option<PromptEncoder>,
}

type Reply = Response<Full<Bytes>>;

impl SimServer {
    /// A server with these settings.
    pub fn new(cfg: SimServerConfig) -> Arc<Self> {
        let count = cfg.replicas.max(1);
        let mut backend = SimBackend::new("sim-server", cfg.sim.clone(), HashMap::new());
        if let Some(cache) = &cfg.cache {
            backend = backend.with_prefix_cache(cfg.tokenizer, cache, count);
        }
        let replicas = (0..count)
            .map(|_| Replica::new(cfg.max_concurrent))
            .collect();
        let started = Instant::now();
        let limits = RateLimits::new(&cfg, started);
        let encoder = (limits.limits_tokens() && cfg.cache.is_some())
            .then(|| PromptEncoder::new(cfg.tokenizer));
        Arc::new(Self {
            cfg,
            backend,
            replicas,
            seen: Mutex::new(HashMap::new()),
            started,
            limits,
            encoder,
        })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &SimServerConfig {
        &self.cfg
    }

    /// Chat completions answered with HTTP 200 so far, all replicas together.
    pub fn served(&self) -> u64 {
        self.replicas
            .iter()
            .map(|r| r.served.load(Ordering::Relaxed))
            .sum()
    }

    /// Every replica's prefix-cache figures, by replica index (empty without caches).
    pub fn cache_stats(&self) -> Vec<agentos_runtime::kvcache::KvStats> {
        self.backend.cache_stats()
    }

    /// Serves connections from `listener` until `shutdown` turns `true`. Each connection runs
    /// as its own tokio task.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sim-server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = Arc::clone(&server);
                    async move { Ok::<_, Infallible>(server.route(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "sim-server connection ended with an error");
                }
            });
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let endpoint = match replica::parse_path(&path, self.replicas.len()) {
            Ok(e) => e,
            Err(msg) => return error(StatusCode::NOT_FOUND, "not_found_error", &msg),
        };
        let allowed = endpoint.method();
        if req.method() != allowed {
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                &format!("{} is not allowed on {path}; use {allowed}", req.method()),
            );
            resp.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static(if allowed == Method::POST {
                    "POST"
                } else {
                    "GET"
                }),
            );
            return resp;
        }
        match endpoint {
            Endpoint::Health => self.healthz(),
            Endpoint::Models(_) => json_reply(
                StatusCode::OK,
                &json!({"object": "list", "data": [{
                    "id": self.cfg.model, "object": "model", "created": 0,
                    "owned_by": "agentos-simulator",
                }]}),
            ),
            Endpoint::Completions(replica) => match self.read_body(req).await {
                Ok(body) => self.complete(replica, &body).await,
                Err(resp) => resp,
            },
        }
    }

    fn healthz(&self) -> Reply {
        let stats = self.cache_stats();
        let replicas: Vec<Value> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| r.health(i, stats.get(i)))
            .collect();
        let total = |f: fn(&Replica) -> usize| self.replicas.iter().map(f).sum::<usize>();
        let prefix_cache = self.cfg.cache.as_ref().map_or(Value::Null, |c| {
            json!({
                "block_size": c.block_size,
                "capacity_blocks": c.capacity_blocks,
                "tokenizer": self.cfg.tokenizer.name(),
            })
        });
        json_reply(
            StatusCode::OK,
            &json!({
                "status": "ok",
                "simulator": true,
                "model": self.cfg.model,
                "uptime_secs": self.started.elapsed().as_secs_f64(),
                "in_flight": total(|r| r.in_flight.load(Ordering::Relaxed)),
                "queued": total(|r| r.queued.load(Ordering::Relaxed)),
                "max_concurrent": self.cfg.max_concurrent,
                "served_total": self.served(),
                "prefix_cache": prefix_cache,
                "rate_limits": self.limits.health(),
                "replicas": replicas,
            }),
        )
    }

    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, Reply> {
        let max = self.cfg.max_body_bytes;
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                &format!("request body is larger than {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(too_large());
        }
        match Limited::new(req.into_body(), max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("cannot read request body: {e}"),
            )),
        }
    }

    /// Answers one chat completion on `replica` (an index the path parser checked).
    async fn complete(&self, replica: usize, body: &[u8]) -> Reply {
        let Some(state) = self.replicas.get(replica) else {
            return error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                &format!("no replica {replica}"),
            );
        };
        let req = match wire::parse_request(body) {
            Ok(r) => r,
            Err(msg) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", &msg),
        };
        let seed = self.cfg.sim.seed;
        let first = |role: Role| {
            req.messages
                .iter()
                .find(|m| m.role == role)
                .map_or("", |m| m.content.as_str())
        };
        let conversation = hash(seed, &[first(Role::System), first(Role::User)]);
        let step = req
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let attempt = self.attempt(conversation, req.messages.len());
        let meta = RequestMeta {
            agent: req.user.clone().unwrap_or_else(|| "client".into()),
            task: format!("conv-{conversation:016x}"),
            attempt,
            step: u32::try_from(step).unwrap_or(u32::MAX),
            replica,
        };
        let id = format!("chatcmpl-sim-{conversation:016x}-{step}-{attempt}");

        let draw = draw_unit(
            seed,
            &[
                &meta.agent,
                &meta.task,
                &attempt.to_string(),
                &step.to_string(),
            ],
            RATE_LIMIT_SALT,
        );
        if draw < self.cfg.rate_limit_rate {
            let mut resp = self.too_many(&format!(
                "simulated rate limit (rate {})",
                self.cfg.rate_limit_rate
            ));
            self.limits.peek(Instant::now()).write(resp.headers_mut());
            return resp;
        }

        let asked = if self.limits.limits_tokens() {
            let completion = req
                .max_tokens
                .map_or(DEFAULT_COMPLETION_ESTIMATE, u64::from);
            self.prompt_tokens(&req.messages, &req.tools)
                .saturating_add(completion)
        } else {
            0
        };
        let charge = match self.limits.admit(Instant::now(), asked) {
            Ok(charge) => charge,
            Err(refusal) => return self.limited(&refusal),
        };
        let snapshot = charge.snapshot();
        let (mut resp, real) = self.generate(replica, state, req, meta, &id).await;
        match real {
            Some(real) => charge.settle(real, Instant::now()),
            // Nothing generated: the charge gives its tokens back when dropped.
            None => drop(charge),
        }
        snapshot.write(resp.headers_mut());
        resp
    }

    /// Prompt tokens of a request, counted as its reply's `usage.prompt_tokens` will be: with
    /// the tokenizer the replicas' caches encode with, else the simulator's approximation.
    fn prompt_tokens(&self, messages: &[ChatMessage], tools: &[ToolSpec]) -> u64 {
        if let Some(encoder) = &self.encoder {
            return encoder.encode(messages, tools).len() as u64;
        }
        let tools = if tools.is_empty() {
            0
        } else {
            serde_json::to_string(tools).map_or(0, |json| approx_tokens(&json))
        };
        approx_prompt_tokens(messages) + tools
    }

    /// Attempt number (1-based) of this point of the conversation.
    fn attempt(&self, conversation: u64, len: usize) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        let n = seen.entry((conversation, len)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// HTTP 429 for a request refused by the rate limits.
    fn limited(&self, refusal: &Refusal) -> Reply {
        let mut resp = json_reply(
            StatusCode::TOO_MANY_REQUESTS,
            &wire::rate_limit_body(
                refusal.kind.name(),
                &refusal.message(&self.cfg.model, self.cfg.limit_window),
            ),
        );
        let headers = resp.headers_mut();
        headers.insert(RETRY_AFTER, refusal.retry_after_secs().into());
        refusal.snapshot.write(headers);
        resp
    }

    fn too_many(&self, message: &str) -> Reply {
        let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message);
        let secs = format!("{}", self.cfg.retry_after.as_secs_f64());
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
        resp
    }
}

/// A stable 64-bit hash of `parts` under `seed` (from the simulator's deterministic draw).
fn hash(seed: u64, parts: &[&str]) -> u64 {
    (draw_unit(seed, parts, CONVERSATION_SALT) * (1u64 << 53) as f64) as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(
        HeaderName::from_static(SIMULATOR_HEADER),
        HeaderValue::from_static("true"),
    );
    h.insert(
        hyper::header::SERVER,
        HeaderValue::from_static("agentos-sim-server"),
    );
    resp
}

fn error(status: StatusCode, kind: &str, message: &str) -> Reply {
    json_reply(status, &wire::error_body(kind, message))
}

#[cfg(test)]
mod tests;
