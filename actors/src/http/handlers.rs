//! The endpoints behind the routes: reads of the board and the scheduler, workflow
//! submission and cancellation, agent control.
//!
//! Every scheduler request is bounded ([`SCHEDULER_WAIT`]); a scheduler that does not answer
//! (restarting, overloaded) is a 503, never a hung request.

use std::time::Duration;

use agentos_runtime::config::{ConfigError, WorkflowFormat, WorkflowRejected};
use agentos_runtime::sched::AgentAction;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use hyper::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::reply::{self, ApiResponse};
use super::{ApiRequest, HttpState};
use crate::protocol::{
    CancelWorkflow, ControlAgent, GetSnapshot, GetWorkflow, ListWorkflows, PortError, Refused,
    RunSnapshot, SubmitWorkflow,
};

/// Longest the API waits for the scheduler to answer one request.
pub const SCHEDULER_WAIT: Duration = Duration::from_secs(10);

/// What a workflow id keeps unescaped in a `Location` (RFC 3986 unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Who a request came from, for the scheduler's reasons and trace: `api <peer>`.
fn by(req: &ApiRequest) -> String {
    match req.peer {
        Some(peer) => format!("api {peer}"),
        None => "api".to_owned(),
    }
}

fn unanswered(e: PortError) -> ApiResponse {
    reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the scheduler did not answer: {e}"),
    )
}

fn refused(r: Refused) -> ApiResponse {
    match r {
        Refused::NotFound(m) => reply::error(StatusCode::NOT_FOUND, m),
        Refused::Conflict(m) => reply::error(StatusCode::CONFLICT, m),
        Refused::Unavailable(m) => reply::error(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// `GET /metrics`.
pub(crate) fn metrics(state: &HttpState) -> ApiResponse {
    reply::full(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(state.prometheus.render()),
    )
}

async fn snapshot(state: &HttpState) -> Result<RunSnapshot, PortError> {
    state
        .scheduler
        .snapshot
        .ask(GetSnapshot, Duration::from_secs(2))
        .await
}

/// `GET /api/tasks`.
pub(crate) async fn tasks(state: &HttpState) -> ApiResponse {
    match snapshot(state).await {
        Ok(s) => reply::json(StatusCode::OK, &s),
        Err(e) => unanswered(e),
    }
}

/// `GET /healthz`: 200 while the scheduler answers and the root supervisor has not given up.
pub(crate) async fn healthz(state: &HttpState) -> ApiResponse {
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
    reply::json(
        status,
        &json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "uptime_secs": state.started.elapsed().as_secs_f64(),
            "scheduler": if snap.is_ok() { "up" } else { "down" },
            "fatal": fatal,
            "done": snap.as_ref().map(|s| s.done).unwrap_or(false),
            "tasks": counts,
            "agents": state.board.agents.len(),
            "simulated_backends": state.simulated_backends,
            // This run, and the run it continued (with what was kept) when it was resumed.
            "run": {"id": state.run_id, "resumed": state.resume},
            // What confines run_command here; under best_effort, what is missing and why.
            // (The machine was probed at start; this reads the cached result.)
            "sandbox": agentos_runtime::sandbox::report(
                state.cfg.runtime.sandbox,
                agentos_runtime::sandbox::status(),
            ),
        }),
    )
}

/// The control blocks of `agent`'s instances (every agent's with `None`), each with its
/// agent's context pager statistics under `pager`.
fn control_blocks(state: &HttpState, agent: Option<&str>) -> Vec<Value> {
    let stats = state.board.pager_stats();
    state
        .board
        .control_blocks()
        .into_iter()
        .filter(|cb| match agent {
            Some(a) => &*cb.id.agent == a,
            None => true,
        })
        .map(|cb| {
            let mut v = serde_json::to_value(&cb).unwrap_or_default();
            if let (Some(obj), Some(s)) = (v.as_object_mut(), stats.get(&*cb.id.agent)) {
                obj.insert("pager".into(), serde_json::to_value(s).unwrap_or_default());
            }
            v
        })
        .collect()
}

/// `GET /api/agents`.
pub(crate) fn agents(state: &HttpState) -> ApiResponse {
    reply::json(StatusCode::OK, &control_blocks(state, None))
}

/// `POST /api/agents/{name}/{suspend,resume,kill}`: 200 with the agent's control blocks as
/// they are once the scheduler answered (it answers after the board shows the new state).
pub(crate) async fn control_agent(
    req: &ApiRequest,
    state: &HttpState,
    agent: &str,
    action: AgentAction,
) -> ApiResponse {
    if state.cfg.agent(agent).is_none() {
        let declared: Vec<&str> = state.cfg.agents.iter().map(|a| a.name.as_str()).collect();
        return reply::json(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no agent named \"{agent}\" in the config"),
                    "agents": declared}),
        );
    }
    let msg = ControlAgent {
        agent: agent.to_owned(),
        action,
        by: by(req),
    };
    match state.scheduler.control.ask(msg, SCHEDULER_WAIT).await {
        Err(e) => unanswered(e),
        Ok(Err(r)) => refused(r),
        Ok(Ok(())) => reply::json(
            StatusCode::OK,
            &json!({"agent": agent, "action": action,
                    "control_blocks": control_blocks(state, Some(agent))}),
        ),
    }
}

/// `GET /api/workflows`.
pub(crate) async fn list_workflows(state: &HttpState) -> ApiResponse {
    match state
        .scheduler
        .workflows
        .ask(ListWorkflows, SCHEDULER_WAIT)
        .await
    {
        Ok(list) => reply::json(StatusCode::OK, &list),
        Err(e) => unanswered(e),
    }
}

/// `GET /api/workflows/{id}`.
pub(crate) async fn get_workflow(state: &HttpState, id: &str) -> ApiResponse {
    match state
        .scheduler
        .workflow
        .ask(GetWorkflow(id.to_owned()), SCHEDULER_WAIT)
        .await
    {
        Ok(Some(view)) => reply::json(StatusCode::OK, &view),
        Ok(None) => reply::error(StatusCode::NOT_FOUND, format!("no workflow \"{id}\"")),
        Err(e) => unanswered(e),
    }
}

/// `DELETE /api/workflows/{id}`.
pub(crate) async fn cancel_workflow(req: &ApiRequest, state: &HttpState, id: &str) -> ApiResponse {
    let msg = CancelWorkflow {
        id: id.to_owned(),
        by: by(req),
    };
    match state.scheduler.cancel.ask(msg, SCHEDULER_WAIT).await {
        Ok(Ok(view)) => reply::json(StatusCode::OK, &view),
        Ok(Err(r)) => refused(r),
        Err(e) => unanswered(e),
    }
}

/// The body's syntax from `Content-Type`: JSON when absent, `None` when unsupported.
fn body_format(headers: &HeaderMap) -> Option<WorkflowFormat> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Some(WorkflowFormat::Json);
    };
    let essence = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        // `curl -d` labels its body form-urlencoded unless told otherwise; what it sends here
        // is the JSON the user typed, so it is read as JSON (a body that is not gets a 400).
        "application/json" | "text/json" | "application/x-www-form-urlencoded" | "" => {
            Some(WorkflowFormat::Json)
        }
        "application/ron" | "text/ron" => Some(WorkflowFormat::Ron),
        other if other.ends_with("+json") => Some(WorkflowFormat::Json),
        _ => None,
    }
}

/// The `Idempotency-Key` header, if any: 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] visible ASCII
/// characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters")
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES
        || !bytes.iter().all(u8::is_ascii_graphic)
    {
        return Err(bad());
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn error_json(e: &ConfigError) -> Value {
    json!({
        "entity": e.entity,
        "message": e.message,
        "line": e.position.map(|p| p.line),
        "col": e.position.map(|p| p.col),
    })
}

/// The 400 or 422 of a rejected workflow.
fn rejected(r: WorkflowRejected) -> ApiResponse {
    match r {
        WorkflowRejected::Malformed(e) => reply::json(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": e.to_string(),
                "line": e.position.map(|p| p.line),
                "col": e.position.map(|p| p.col),
                "errors": [error_json(&e)],
            }),
        ),
        WorkflowRejected::Invalid(errors) => {
            let n = errors.0.len();
            let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            reply::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({
                    "error": format!("the workflow has {n} error{}: {}",
                        if n == 1 { "" } else { "s" }, lines.join("; ")),
                    "errors": errors.0.iter().map(error_json).collect::<Vec<_>>(),
                }),
            )
        }
    }
}

/// `POST /api/workflows`: validate like the config, then submit. 201 with `Location` for a
/// new workflow, 200 for a retried submit with the same idempotency key.
pub(crate) async fn submit_workflow(req: &ApiRequest, state: &HttpState) -> ApiResponse {
    let key = match idempotency_key(&req.headers) {
        Ok(k) => k,
        Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
    };
    let Some(format) = body_format(&req.headers) else {
        return reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a workflow is sent as application/json (the default) or application/ron",
        );
    };
    let text = match std::str::from_utf8(&req.body) {
        Ok(t) => t,
        Err(e) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body is not UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        }
    };
    let spec = match state.cfg.parse_workflow(text, format, "request body") {
        Ok(spec) => spec,
        Err(r) => return rejected(r),
    };
    let msg = SubmitWorkflow {
        spec,
        idempotency_key: key,
        by: by(req),
    };
    match state.scheduler.submit.ask(msg, SCHEDULER_WAIT).await {
        Err(e) => unanswered(e),
        Ok(Err(r)) => refused(r),
        Ok(Ok(s)) => {
            let status = if s.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let location = format!("/api/workflows/{}", utf8_percent_encode(&s.id, SEGMENT));
            reply::with_header(reply::json(status, &s), LOCATION, &location)
        }
    }
}
