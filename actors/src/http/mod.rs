//! The HTTP control plane: `GET /metrics` (Prometheus text format), `GET /healthz`, and the
//! JSON API under `/api/` that `agentos serve` offers: submit, list, inspect and cancel
//! workflows; suspend, resume and kill agents; stream the trace as Server-Sent Events; read
//! the audit log from the store (`/api/audit`); read the OpenAPI document of all of it
//! (`/api/openapi.json`).
//!
//! # Layout
//! - this module: [`HttpState`], [`ApiRequest`], the accept loop ([`serve`]) and the limits
//!   applied before a request reaches the router;
//! - [`routes`]: the route table and [`handle`], which answers an [`ApiRequest`] without any
//!   socket (tests call it directly);
//! - `handlers`: the endpoints; `sse`: the event stream; `audit`: the audit log (a blocking
//!   read of the store); `auth`: the bearer token;
//!   `openapi`: the document generated from the route table; `reply`: response helpers.
//!
//! # Limits
//! Nothing a client sends can panic the server or hold it without bound:
//! - at most `api.max_connections` connections are served at once; the accept loop waits for
//!   one to end before it accepts the next (the rest wait in the listen backlog);
//! - a request's head must arrive within `api.request_timeout`, and then its body within
//!   `api.request_timeout` (else 408 and the connection closes);
//! - a body over `api.max_body_bytes` is refused with 413, from its `Content-Length` before
//!   it is read, or by counting while it is read;
//! - with a token set, an `/api/*` request without it is refused (401) before its body is read.
//!
//! Every answered request is counted by route template, method and status
//! ([`ApiRequestFinished`]).

mod audit;
mod auth;
mod handlers;
pub mod openapi;
mod quotas;
mod reply;
pub mod routes;
pub mod sse;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_runtime::config::{ApiSettings, Config};
use agentos_runtime::events::api::{ApiMethod, ApiRequestFinished};
use agentos_runtime::trace::Trace;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::board::Board;
use crate::protocol::SchedulerPorts;
use crate::system::{ResumeInfo, RunningSystem};

pub use handlers::{MAX_IDEMPOTENCY_KEY_BYTES, SCHEDULER_WAIT};
pub use reply::{ApiBody, ApiResponse};
pub use routes::{handle, Endpoint, Route, Verb, ROUTES};

/// How often a quiet event stream sends a keep-alive comment in `serve`.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long open connections get to finish their current request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest request head (request line and headers) hyper buffers.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What the handlers read. Cheap to clone (handles and small settings).
#[derive(Clone)]
pub struct HttpState {
    /// What the system publishes (control blocks, pager statistics, the fatal signal).
    pub board: Arc<Board>,
    /// The scheduler's ports (snapshots and the control-plane messages).
    pub scheduler: SchedulerPorts,
    /// The config the system runs: submitted workflows are validated against its agents.
    pub cfg: Arc<Config>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Process start, for uptime.
    pub started: Instant,
    /// Names of simulated backends (reported by `/healthz`).
    pub simulated_backends: Vec<String>,
    /// When set, every `/api/*` request needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Body, connection and time limits.
    pub api: ApiSettings,
    /// The trace, whose event window feeds `GET /api/events`.
    pub trace: Trace,
    /// Turns `true` (or its sender is dropped) when the server shuts down: the accept loop
    /// stops, open connections finish their request, event streams end.
    pub shutdown: watch::Receiver<bool>,
    /// How often a quiet event stream sends a keep-alive comment ([`KEEP_ALIVE`]).
    pub keep_alive: Duration,
    /// The store file `GET /api/audit` reads (with its own connection, per request).
    pub store_path: PathBuf,
    /// The run this server runs: the default of `GET /api/audit`, shown by `/healthz`.
    pub run_id: String,
    /// Which run this system resumed and from where (shown by `/healthz`).
    pub resume: Option<ResumeInfo>,
    /// The quota gate (`GET /api/quotas`), when the config has quotas.
    pub quotas: Option<std::sync::Arc<crate::quota::QuotaGate>>,
}

impl HttpState {
    /// The state for serving `sys`: its board, scheduler ports, config (and the config's API
    /// limits), trace, store file and run; uptime counted from now; keep-alives every [`KEEP_ALIVE`]. With
    /// `token`, every `/api/*` request needs it. `shutdown` stops the server (see
    /// [`HttpState::shutdown`]).
    pub fn new(
        sys: &RunningSystem,
        prometheus: PrometheusHandle,
        token: Option<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            board: sys.board.clone(),
            scheduler: sys.ports.scheduler.clone(),
            cfg: sys.cfg.clone(),
            prometheus,
            started: Instant::now(),
            simulated_backends: sys.simulated_backends.clone(),
            token,
            api: sys.cfg.runtime.api.clone(),
            trace: sys.trace.clone(),
            shutdown,
            keep_alive: KEEP_ALIVE,
            store_path: sys.store_path.clone(),
            run_id: sys.run_id.clone(),
            resume: sys.resume.clone(),
            quotas: sys.quotas.clone(),
        }
    }
}

/// One request as the router sees it: the head, and the whole body (already read, within
/// the limits).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path, still percent-encoded (segments are decoded after routing).
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The client's address, when it came over a socket.
    pub peer: Option<SocketAddr>,
}

impl ApiRequest {
    /// A request for `method` and `target` (`/path?query`) without headers or body.
    pub fn new(method: Method, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (target, None),
        };
        Self {
            method,
            path: path.to_owned(),
            query,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            peer: None,
        }
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its real address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves once `shutdown` turns `true` or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Serves until `state.shutdown` turns `true`. Each connection runs as its own local task and
/// holds one of `api.max_connections` permits while it lasts.
pub async fn serve(listener: TcpListener, state: HttpState) {
    let state = Arc::new(state);
    let permits = Arc::new(Semaphore::new(state.api.max_connections.max(1)));
    let mut shutdown = state.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopping(&mut shutdown) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                actix_rt::spawn(connection(stream, peer, state.clone(), permit));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection until the client closes it, or until shutdown (then the request in
/// progress may finish, within [`SHUTDOWN_GRACE`]).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<HttpState>,
    _permit: OwnedSemaphorePermit,
) {
    let for_service = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = for_service.clone();
        async move { Ok::<_, Infallible>(serve_request(req, peer, &state).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.api.request_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = state.shutdown.clone();
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stopping(&mut shutdown) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, %peer, "http connection ended with an error");
    }
}

/// Applies the limits, reads the body, routes, and counts the request.
async fn serve_request(req: Request<Incoming>, peer: SocketAddr, state: &HttpState) -> ApiResponse {
    let started = Instant::now();
    let route = routes::route_label(req.uri().path());
    let method = ApiMethod::of(req.method().as_str());
    let resp = match read(req, peer, state).await {
        Ok(req) => handle(req, state).await,
        Err(resp) => resp,
    };
    ApiRequestFinished {
        route,
        method,
        status: resp.status().as_u16(),
        duration: started.elapsed(),
    }
    .emit();
    resp
}

/// The request with its body, or the response that refuses it: 401 before the body is read
/// (when a token is set), 413 from `Content-Length` or while reading, 408 when the body is
/// too slow, 400 when it breaks off.
async fn read(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: &HttpState,
) -> Result<ApiRequest, ApiResponse> {
    let (parts, body) = req.into_parts();
    if auth::guarded(parts.uri.path()) {
        if let Some(denied) = auth::check(&parts.headers, state.token.as_deref()) {
            return Err(closing(denied));
        }
    }
    let limit = state.api.max_body_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(closing(routes::too_large(limit)));
    }
    let body = match tokio::time::timeout(
        state.api.request_timeout,
        Limited::new(body, limit).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(closing(routes::too_large(limit)))
        }
        Ok(Err(e)) => {
            return Err(closing(reply::error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )))
        }
        Err(_) => {
            return Err(closing(reply::error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body took longer than {:?} (api.request_timeout)",
                    state.api.request_timeout
                ),
            )))
        }
    };
    Ok(ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        peer: Some(peer),
    })
}

/// Marks a response that leaves the body (partly) unread: the connection cannot carry another
/// request after it.
fn closing(mut resp: ApiResponse) -> ApiResponse {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
