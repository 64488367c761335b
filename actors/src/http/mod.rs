//! The HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /healthz`, and a small
//! read-only JSON API: `GET /api/tasks` (every task with state, attempts and reasons) and
//! `GET /api/agents` (every agent's control block, with its context pager statistics).
//!
//! Served with hyper on the actor system's own runtime. Unknown paths answer 404 and other
//! methods 405, both with a JSON error; nothing a client sends can panic the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::board::Board;
use crate::protocol::{GetSnapshot, Port, RunSnapshot};

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// What the system publishes (control blocks, pager statistics, the fatal signal).
    pub board: Arc<Board>,
    /// The scheduler's snapshot port.
    pub snapshot: Port<GetSnapshot>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Process start, for uptime.
    pub started: Instant,
    /// Names of simulated backends (reported by `/healthz`).
    pub simulated_backends: Vec<String>,
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and its real address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until `shutdown` turns `true`. Each connection runs as its own local task.
pub async fn serve(listener: TcpListener, state: HttpState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        actix_rt::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn route(req: Request<Incoming>, state: &HttpState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/api/tasks" | "/api/agents");
    if !known {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no such endpoint: {path}"),
                   "endpoints": ["/metrics", "/healthz", "/api/tasks", "/api/agents"]}),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": format!("{} is not allowed on {path}; use GET", req.method())}),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(state.prometheus.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => healthz(state).await,
        "/api/tasks" => match snapshot(state).await {
            Ok(s) => json_response(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()),
            Err(why) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": why})),
        },
        _ => json_response(StatusCode::OK, agents(state)),
    }
}

/// Every control block, each with its agent's context pager statistics under `pager`.
fn agents(state: &HttpState) -> serde_json::Value {
    let stats = state.board.pager_stats();
    let blocks = state.board.control_blocks();
    let mut out = Vec::with_capacity(blocks.len());
    for cb in blocks {
        let mut v = serde_json::to_value(&cb).unwrap_or_default();
        if let (Some(obj), Some(s)) = (v.as_object_mut(), stats.get(&cb.id.agent)) {
            obj.insert("pager".into(), serde_json::to_value(s).unwrap_or_default());
        }
        out.push(v);
    }
    serde_json::Value::Array(out)
}

async fn snapshot(state: &HttpState) -> Result<RunSnapshot, String> {
    state
        .snapshot
        .ask(GetSnapshot, Duration::from_secs(2))
        .await
        .map_err(|e| format!("scheduler did not answer: {e}"))
}

async fn healthz(state: &HttpState) -> Response<Full<Bytes>> {
    let fatal = state.board.fatal.borrow().clone();
    let snap = snapshot(state).await;
    let mut counts = serde_json::Map::new();
    if let Ok(s) = &snap {
        for t in &s.tasks {
            let n = counts.entry(t.state.label()).or_insert(json!(0));
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }
    let healthy = fatal.is_none() && snap.is_ok();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "uptime_secs": state.started.elapsed().as_secs_f64(),
            "scheduler": if snap.is_ok() { "up" } else { "down" },
            "fatal": fatal,
            "done": snap.as_ref().map(|s| s.done).unwrap_or(false),
            "tasks": counts,
            "agents": state.board.agents.len(),
            "simulated_backends": state.simulated_backends,
        }),
    )
}
