//! The route table and [`handle`]: one request in, one response out, no socket involved.
//!
//! [`ROUTES`] is the single list of what the server answers: the router matches against it,
//! the OpenAPI document is generated from it, and the metrics label requests with its
//! templates. A template's `{name}` matches one non-empty path segment, which is
//! percent-decoded (as UTF-8) before a handler sees it.

use std::collections::BTreeSet;

use hyper::header::ALLOW;
use hyper::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::reply::{self, ApiResponse};
use super::{audit, auth, handlers, quotas, sse, ApiRequest, HttpState};
use agentos_runtime::events::api::UNMATCHED_ROUTE;
use agentos_runtime::sched::AgentAction;

/// Longest path parameter (a workflow id, an agent name) accepted, in bytes after decoding.
pub const MAX_SEGMENT_BYTES: usize = 128;

/// The methods routes use (`HEAD` is answered wherever `GET` is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// `GET` (and `HEAD`).
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl Verb {
    /// The method's name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET || method == Method::HEAD,
            Verb::Post => method == Method::POST,
            Verb::Delete => method == Method::DELETE,
        }
    }
}

/// What a route does; [`handle`] dispatches on it with an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Prometheus text format.
    Metrics,
    /// Liveness and task counts.
    Healthz,
    /// The OpenAPI document.
    OpenApi,
    /// Every task.
    Tasks,
    /// Every agent instance's control block.
    Agents,
    /// Suspend an agent.
    SuspendAgent,
    /// Resume an agent.
    ResumeAgent,
    /// Kill an agent.
    KillAgent,
    /// List workflows.
    ListWorkflows,
    /// Submit a workflow.
    SubmitWorkflow,
    /// One workflow.
    GetWorkflow,
    /// Cancel a workflow.
    CancelWorkflow,
    /// Server-Sent Events of the trace.
    Events,
    /// The audit log of a run, from the store.
    Audit,
    /// Remaining quotas and budgets, concurrency and fair share.
    Quotas,
}

/// One route: a method and a path template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path, with `{name}` for a parameter segment.
    pub template: &'static str,
    /// What it does.
    pub endpoint: Endpoint,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
}

const fn route(
    verb: Verb,
    template: &'static str,
    endpoint: Endpoint,
    summary: &'static str,
) -> Route {
    Route {
        verb,
        template,
        endpoint,
        summary,
    }
}

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    route(
        Verb::Get,
        "/metrics",
        Endpoint::Metrics,
        "Prometheus metrics (text format).",
    ),
    route(
        Verb::Get,
        "/healthz",
        Endpoint::Healthz,
        "Health: scheduler reachable, no fatal error.",
    ),
    route(
        Verb::Get,
        "/api/openapi.json",
        Endpoint::OpenApi,
        "This document.",
    ),
    route(
        Verb::Get,
        "/api/tasks",
        Endpoint::Tasks,
        "Every task with state, attempts and reasons.",
    ),
    route(
        Verb::Get,
        "/api/agents",
        Endpoint::Agents,
        "Every agent instance's control block.",
    ),
    route(
        Verb::Post,
        "/api/agents/{name}/suspend",
        Endpoint::SuspendAgent,
        "Suspend an agent: no new dispatch; running attempts pause at their next step.",
    ),
    route(
        Verb::Post,
        "/api/agents/{name}/resume",
        Endpoint::ResumeAgent,
        "Resume a suspended or killed agent.",
    ),
    route(
        Verb::Post,
        "/api/agents/{name}/kill",
        Endpoint::KillAgent,
        "Kill every instance of an agent; running tasks come back as failed attempts.",
    ),
    route(
        Verb::Get,
        "/api/workflows",
        Endpoint::ListWorkflows,
        "Every workflow, without tasks.",
    ),
    route(
        Verb::Post,
        "/api/workflows",
        Endpoint::SubmitWorkflow,
        "Submit a workflow (validated like a config's workflows[] entry).",
    ),
    route(
        Verb::Get,
        "/api/workflows/{id}",
        Endpoint::GetWorkflow,
        "One workflow with every task and its output.",
    ),
    route(
        Verb::Delete,
        "/api/workflows/{id}",
        Endpoint::CancelWorkflow,
        "Cancel a workflow: unfinished tasks become cancelled.",
    ),
    route(
        Verb::Get,
        "/api/events",
        Endpoint::Events,
        "Server-Sent Events of the trace, filtered, resumable with Last-Event-ID.",
    ),
    route(
        Verb::Get,
        "/api/audit",
        Endpoint::Audit,
        "The audit log of a run: state changes, API actions, LLM and tool calls, oldest first.",
    ),
    route(
        Verb::Get,
        "/api/quotas",
        Endpoint::Quotas,
        "Remaining rate limits and budgets per scope, the concurrency limit and fair shares.",
    ),
];

/// What a path and method found in the table.
enum Lookup {
    /// This route, with its raw (still percent-encoded) parameter segments.
    Hit(&'static Route, Vec<String>),
    /// The path exists, not with this method.
    WrongMethod(BTreeSet<Verb>),
    /// No route has this path.
    Miss,
}

fn find(method: &Method, path: &str) -> Lookup {
    let mut allowed = BTreeSet::new();
    for r in ROUTES {
        if let Some(params) = match_template(r.template, path) {
            if r.verb.allows(method) {
                return Lookup::Hit(r, params);
            }
            allowed.insert(r.verb);
        }
    }
    if allowed.is_empty() {
        Lookup::Miss
    } else {
        Lookup::WrongMethod(allowed)
    }
}

/// The raw segments that `path` gives the template's parameters, if it matches.
fn match_template(template: &str, path: &str) -> Option<Vec<String>> {
    let mut t = template.split('/');
    let mut p = path.split('/');
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(params),
            (Some(ts), Some(ps)) if ts.starts_with('{') => {
                if ps.is_empty() {
                    return None;
                }
                params.push(ps.to_owned());
            }
            (Some(ts), Some(ps)) if ts == ps => {}
            _ => return None,
        }
    }
}

/// The metrics label of `path`: the template of the first route with that path, whatever the
/// method, or [`UNMATCHED_ROUTE`].
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| match_template(r.template, path).is_some())
        .map_or(UNMATCHED_ROUTE, |r| r.template)
}

/// Decodes a path parameter: percent-decoding to UTF-8, bounded length, no control
/// characters and no `/` (a `%2F` cannot smuggle in another segment).
fn decode_segment(raw: &str) -> Result<String, String> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "a path segment is not UTF-8 once percent-decoded".to_owned())?;
    if decoded.is_empty() || decoded.len() > MAX_SEGMENT_BYTES {
        return Err(format!(
            "a path parameter must be 1 to {MAX_SEGMENT_BYTES} bytes long"
        ));
    }
    if decoded.chars().any(|c| c.is_control() || c == '/') {
        return Err("a path parameter may not hold '/' or control characters".to_owned());
    }
    Ok(decoded.into_owned())
}

/// Answers one request. Everything that reaches the server goes through here, so nothing a
/// client sends can do more than get an error status: authorization first (for `/api/*`),
/// then the route, then the body limit, then the endpoint.
pub async fn handle(req: ApiRequest, state: &HttpState) -> ApiResponse {
    if auth::guarded(&req.path) {
        if let Some(denied) = auth::check(&req.headers, state.token.as_deref()) {
            return denied;
        }
    }
    let (route, raw) = match find(&req.method, &req.path) {
        Lookup::Hit(r, raw) => (r, raw),
        Lookup::Miss => return not_found(&req.path),
        Lookup::WrongMethod(allowed) => return wrong_method(&req, &allowed),
    };
    if req.body.len() > state.api.max_body_bytes {
        return too_large(state.api.max_body_bytes);
    }
    let mut params = Vec::with_capacity(raw.len());
    for r in &raw {
        match decode_segment(r) {
            Ok(p) => params.push(p),
            Err(why) => return reply::error(StatusCode::BAD_REQUEST, why),
        }
    }
    let param = params.first().map(String::as_str).unwrap_or_default();
    match route.endpoint {
        Endpoint::Metrics => handlers::metrics(state),
        Endpoint::Healthz => handlers::healthz(state).await,
        Endpoint::OpenApi => reply::json(StatusCode::OK, &super::openapi::document()),
        Endpoint::Tasks => handlers::tasks(state).await,
        Endpoint::Agents => handlers::agents(state),
        Endpoint::SuspendAgent => {
            handlers::control_agent(&req, state, param, AgentAction::Suspend).await
        }
        Endpoint::ResumeAgent => {
            handlers::control_agent(&req, state, param, AgentAction::Resume).await
        }
        Endpoint::KillAgent => handlers::control_agent(&req, state, param, AgentAction::Kill).await,
        Endpoint::ListWorkflows => handlers::list_workflows(state).await,
        Endpoint::SubmitWorkflow => handlers::submit_workflow(&req, state).await,
        Endpoint::GetWorkflow => handlers::get_workflow(state, param).await,
        Endpoint::CancelWorkflow => handlers::cancel_workflow(&req, state, param).await,
        Endpoint::Events => sse::events(&req, state),
        Endpoint::Audit => audit::audit(&req, state).await,
        Endpoint::Quotas => quotas::quotas(state).await,
    }
}

/// 413 for a body over `limit` bytes.
pub(crate) fn too_large(limit: usize) -> ApiResponse {
    reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body over {limit} bytes (api.max_body_bytes)"),
    )
}

fn endpoints() -> Vec<String> {
    ROUTES
        .iter()
        .map(|r| format!("{} {}", r.verb.as_str(), r.template))
        .collect()
}

fn not_found(path: &str) -> ApiResponse {
    let shown: String = path.chars().take(200).collect();
    reply::json(
        StatusCode::NOT_FOUND,
        &json!({"error": format!("no such endpoint: {shown}"), "endpoints": endpoints()}),
    )
}

fn wrong_method(req: &ApiRequest, allowed: &BTreeSet<Verb>) -> ApiResponse {
    let mut names: Vec<&str> = Vec::new();
    for v in allowed {
        names.push(v.as_str());
        if *v == Verb::Get {
            names.push("HEAD");
        }
    }
    let allow = names.join(", ");
    let method: String = req.method.as_str().chars().take(32).collect();
    let resp = reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; use {allow}",
            route_label(&req.path)
        ),
    );
    reply::with_header(resp, ALLOW, &allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_only() {
        assert_eq!(
            match_template("/api/workflows", "/api/workflows"),
            Some(vec![])
        );
        assert_eq!(
            match_template("/api/workflows/{id}", "/api/workflows/w%201"),
            Some(vec!["w%201".to_owned()])
        );
        assert_eq!(
            match_template("/api/workflows/{id}", "/api/workflows/"),
            None
        );
        assert_eq!(
            match_template("/api/workflows/{id}", "/api/workflows/a/b"),
            None
        );
        assert_eq!(match_template("/api/workflows", "/api/workflows/"), None);
        assert_eq!(match_template("/api/workflows", "/api/workflowsx"), None);
        assert_eq!(
            match_template("/api/agents/{name}/kill", "/api/agents/a/kill"),
            Some(vec!["a".to_owned()])
        );
    }

    #[test]
    fn segments_decode_safely() {
        assert_eq!(decode_segment("w%201").unwrap(), "w 1");
        assert_eq!(decode_segment("caf%C3%A9").unwrap(), "café");
        assert!(decode_segment("%FF").is_err(), "not UTF-8");
        assert!(decode_segment("a%2Fb").is_err(), "no smuggled slash");
        assert!(decode_segment("a%0Ab").is_err(), "no control characters");
        assert!(decode_segment(&"x".repeat(MAX_SEGMENT_BYTES + 1)).is_err());
        assert!(decode_segment(&"x".repeat(MAX_SEGMENT_BYTES)).is_ok());
        assert_eq!(
            decode_segment("%zz").unwrap(),
            "%zz",
            "a stray % stays as it is"
        );
    }

    #[test]
    fn labels_are_templates_never_raw_paths() {
        assert_eq!(route_label("/api/workflows/abc-123"), "/api/workflows/{id}");
        assert_eq!(route_label("/api/agents/x/kill"), "/api/agents/{name}/kill");
        assert_eq!(route_label("/nope/abc"), UNMATCHED_ROUTE);
    }

    #[test]
    fn every_route_is_unique() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.verb, r.template)), "{r:?} twice");
        }
    }
}
