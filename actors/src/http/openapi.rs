//! `GET /api/openapi.json`: an OpenAPI 3.1 document generated from the route table
//! ([`ROUTES`]), so it lists exactly what the router answers. What each endpoint takes and
//! answers is described here, per [`Endpoint`], with an exhaustive match: a new endpoint does
//! not compile until it is documented.

use serde_json::{json, Map, Value};

use super::audit::{DEFAULT_LIMIT as AUDIT_DEFAULT_LIMIT, MAX_LIMIT as AUDIT_MAX_LIMIT};
use super::routes::{Endpoint, Verb, ROUTES};
use super::{auth, handlers::MAX_IDEMPOTENCY_KEY_BYTES, routes::MAX_SEGMENT_BYTES};

/// What one operation takes and answers, beyond its path parameters.
struct Operation {
    /// Query and header parameters.
    params: Vec<Value>,
    /// The request body, if it has one.
    body: Option<Value>,
    /// Status, description, and what the body is.
    responses: Vec<(u16, &'static str, Body)>,
}

/// A response body.
#[derive(Clone)]
enum Body {
    /// JSON with this schema.
    Json(Value),
    /// Text of this media type.
    Text(&'static str),
    /// The common `{"error": ...}` shape.
    Error,
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn op(responses: Vec<(u16, &'static str, Body)>) -> Operation {
    Operation {
        params: Vec::new(),
        body: None,
        responses,
    }
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": schema})
}

fn describe(endpoint: Endpoint) -> Operation {
    let unavailable = (503, "The scheduler did not answer in time.", Body::Error);
    let control = || {
        op(vec![
            (
                200,
                "Done; the board shows the new state.",
                Body::Json(schema("AgentControlled")),
            ),
            (404, "No such agent in the config.", Body::Error),
            (
                409,
                "Not possible in the agent's current state.",
                Body::Error,
            ),
            unavailable.clone(),
        ])
    };
    match endpoint {
        Endpoint::Metrics => op(vec![(
            200,
            "Prometheus text exposition format.",
            Body::Text("text/plain"),
        )]),
        Endpoint::Healthz => op(vec![
            (200, "Healthy.", Body::Json(schema("Health"))),
            (
                503,
                "Unhealthy: the scheduler is down or the run gave up.",
                Body::Json(schema("Health")),
            ),
        ]),
        Endpoint::OpenApi => op(vec![(
            200,
            "This document.",
            Body::Json(json!({"type": "object"})),
        )]),
        Endpoint::Tasks => op(vec![
            (200, "Every task.", Body::Json(schema("RunSnapshot"))),
            unavailable,
        ]),
        Endpoint::Agents => op(vec![(
            200,
            "Every agent instance's control block, with its pager statistics.",
            Body::Json(json!({"type": "array", "items": schema("ControlBlock")})),
        )]),
        Endpoint::SuspendAgent | Endpoint::ResumeAgent | Endpoint::KillAgent => control(),
        Endpoint::ListWorkflows => op(vec![
            (
                200,
                "Every workflow, without its tasks.",
                Body::Json(json!({"type": "array", "items": schema("WorkflowView")})),
            ),
            unavailable,
        ]),
        Endpoint::SubmitWorkflow => Operation {
            params: vec![json!({
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "A retried submit with the same key answers the first workflow.",
                "schema": {"type": "string", "minLength": 1,
                           "maxLength": MAX_IDEMPOTENCY_KEY_BYTES}})],
            body: Some(json!({
            "required": true,
            "description": "One workflow, in the schema of a config's workflows[] entry.",
            "content": {
                "application/json": {"schema": schema("WorkflowSpec")},
                "application/ron": {"schema": {"type": "string"}},
            }})),
            responses: vec![
                (
                    201,
                    "Accepted; Location names the new workflow.",
                    Body::Json(schema("Submitted")),
                ),
                (
                    200,
                    "Already accepted under this Idempotency-Key.",
                    Body::Json(schema("Submitted")),
                ),
                (
                    400,
                    "Malformed JSON or RON (the error says where), or a bad header.",
                    Body::Json(schema("Rejected")),
                ),
                (
                    404,
                    "Refused: something it names does not exist.",
                    Body::Error,
                ),
                (
                    409,
                    "Refused: the key was used for another workflow, or shutting down.",
                    Body::Error,
                ),
                (413, "The body is over api.max_body_bytes.", Body::Error),
                (
                    415,
                    "Neither application/json nor application/ron.",
                    Body::Error,
                ),
                (
                    422,
                    "The workflow is invalid; every error is listed.",
                    Body::Json(schema("Rejected")),
                ),
                unavailable,
            ],
        },
        Endpoint::GetWorkflow => op(vec![
            (
                200,
                "The workflow, with every task.",
                Body::Json(schema("WorkflowView")),
            ),
            (404, "No such workflow.", Body::Error),
            unavailable,
        ]),
        Endpoint::CancelWorkflow => op(vec![
            (
                200,
                "Cancelled; the workflow as it is now.",
                Body::Json(schema("WorkflowView")),
            ),
            (404, "No such workflow.", Body::Error),
            (409, "Already finished.", Body::Error),
            unavailable,
        ]),
        Endpoint::Events => Operation {
            params: vec![
                query(
                    "workflow",
                    "Only events of this workflow.",
                    json!({"type": "string"}),
                ),
                query(
                    "task",
                    "Only events of this task: `wf/task`, or a task id.",
                    json!({"type": "string"}),
                ),
                query(
                    "agent",
                    "Only events of this agent.",
                    json!({"type": "string"}),
                ),
                query(
                    "last_event_id",
                    "Resume after this event id (`0`: the whole window).",
                    json!({"type": "integer", "minimum": 0}),
                ),
                json!({"name": "Last-Event-ID", "in": "header", "required": false,
                       "description": "Resume after this event id (wins over the query).",
                       "schema": {"type": "integer", "minimum": 0}}),
            ],
            body: None,
            responses: vec![
                (
                    200,
                    "Server-Sent Events: `id`, `event` (the trace kind, or `lagged` with \
                       `{\"missed\": n}`), `data` (the trace's JSON line).",
                    Body::Text("text/event-stream"),
                ),
                (400, "A bad filter or event id.", Body::Error),
                (503, "The trace keeps no event window.", Body::Error),
            ],
        },
        Endpoint::Audit => Operation {
            params: vec![
                query(
                    "run",
                    "The run (default: the run this server runs).",
                    json!({"type": "string"}),
                ),
                query(
                    "agent",
                    "Only entries about this agent.",
                    json!({"type": "string"}),
                ),
                query(
                    "task",
                    "Only entries about this task, as `workflow/task`.",
                    json!({"type": "string"}),
                ),
                query(
                    "since",
                    "Only entries since then: an age (`10m`, `2h`, `7d`) or an RFC 3339 time.",
                    json!({"type": "string"}),
                ),
                query(
                    "limit",
                    "At most this many entries, the newest.",
                    json!({"type": "integer", "minimum": 1, "maximum": AUDIT_MAX_LIMIT,
                           "default": AUDIT_DEFAULT_LIMIT}),
                ),
            ],
            body: None,
            responses: vec![
                (
                    200,
                    "The entries, oldest first.",
                    Body::Json(schema("AuditLog")),
                ),
                (
                    400,
                    "A bad query parameter (the error names it).",
                    Body::Error,
                ),
                (404, "No such run in the store.", Body::Error),
                (503, "The store could not be read.", Body::Error),
            ],
        },
        Endpoint::Quotas => Operation {
            params: vec![],
            body: None,
            responses: vec![(
                200,
                "Every scope's remaining rate limits and budget, the spending so far, and the \
                 scheduler's concurrency limit (with its reason) and fair shares.",
                Body::Json(json!({"type": "object",
                    "required": ["scopes", "spent", "scheduling"],
                    "properties": {
                        "scopes": {"type": "array", "items": {"type": "object"}},
                        "spent": {"type": "object"},
                        "scheduling": {"type": "object"}}})),
            )],
        },
    }
}

fn operation(verb: Verb, template: &str, summary: &str, endpoint: Endpoint) -> Value {
    let described = describe(endpoint);
    let mut params: Vec<Value> = template
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SEGMENT_BYTES}})
        })
        .collect();
    params.extend(described.params);
    let mut responses = Map::new();
    let guarded = auth::guarded(template);
    let mut all = described.responses;
    if guarded {
        all.push((
            401,
            "A bearer token is set and the request lacks it.",
            Body::Error,
        ));
    }
    if described.body.is_none() && verb != Verb::Get {
        all.push((413, "The body is over api.max_body_bytes.", Body::Error));
    }
    for (status, description, body) in all {
        let content = match body {
            Body::Json(s) => json_body(s),
            Body::Text(media) => json!({ media: { "schema": {"type": "string"} } }),
            Body::Error => json_body(schema("Error")),
        };
        responses.insert(
            status.to_string(),
            json!({"description": description, "content": content}),
        );
    }
    let mut out = json!({
        "operationId": format!("{endpoint:?}"),
        "summary": summary,
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = described.body {
        out["requestBody"] = body;
    }
    if guarded {
        out["security"] = json!([{"bearer": []}, {}]);
    }
    out
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let item = paths
            .entry(r.template)
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.verb.as_str().to_ascii_lowercase()] =
            operation(r.verb, r.template, r.summary, r.endpoint);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AgentOS control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Submit, inspect and cancel workflows; suspend, resume and kill \
                agents; stream the trace; read the audit log. Under /api, a server started with a token requires \
                `Authorization: Bearer <token>`.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let pos = json!({"type": ["integer", "null"], "minimum": 1});
    json!({
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}},
        "Rejected": {"type": "object", "required": ["error", "errors"], "properties": {
            "error": {"type": "string"},
            "line": pos, "col": pos,
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "entity": {"type": "string"}, "message": {"type": "string"},
                "line": pos, "col": pos}}}}},
        "Submitted": {"type": "object", "required": ["id", "created"], "properties": {
            "id": {"type": "string"}, "created": {"type": "boolean"}}},
        "TaskSpec": {"type": "object", "required": ["id", "agent"],
                     "additionalProperties": false, "properties": {
            "id": {"type": "string"}, "agent": {"type": "string"},
            "input": {"type": "string"},
            "depends_on": {"type": "array", "items": {"type": "string"}},
            "priority_boost": {"type": "integer", "minimum": -32768, "maximum": 32767}}},
        "WorkflowSpec": {"type": "object", "required": ["name"],
                         "additionalProperties": false, "properties": {
            "name": {"type": "string"},
            "tasks": {"type": "array", "items": schema("TaskSpec")}}},
        "WorkflowView": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "origin": {"enum": ["declared", "submitted"]},
            "submitted_by": {"type": "string"}, "submitted_at": {"type": "number"},
            "state": {"enum": ["running", "succeeded", "failed", "cancelled"]},
            "cancelled_by": {"type": ["string", "null"]},
            "spawned": {"type": "integer"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "tasks": {"type": "array", "items": {"type": "object"}}}},
        "RunSnapshot": {"type": "object", "properties": {
            "done": {"type": "boolean"},
            "tasks": {"type": "array", "items": {"type": "object"}}}},
        "ControlBlock": {"type": "object", "properties": {
            "pid": {"type": "integer"},
            "id": {"type": "object", "properties": {
                "agent": {"type": "string"}, "replica": {"type": "integer"}}},
            "state": {"type": "string"},
            "current_task": {"type": ["string", "null"]},
            "pager": {"type": "object"}}},
        "AgentControlled": {"type": "object", "required": ["agent", "action", "control_blocks"],
                            "properties": {
            "agent": {"type": "string"},
            "action": {"enum": ["suspend", "resume", "kill"]},
            "control_blocks": {"type": "array", "items": schema("ControlBlock")}}},
        "Health": {"type": "object", "properties": {
            "status": {"enum": ["ok", "unhealthy"]},
            "uptime_secs": {"type": "number"},
            "scheduler": {"enum": ["up", "down"]},
            "fatal": {"type": ["string", "null"]},
            "done": {"type": "boolean"},
            "tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
            "agents": {"type": "integer"},
            "simulated_backends": {"type": "array", "items": {"type": "string"}},
            "run": {"type": "object", "required": ["id", "resumed"], "properties": {
                "id": {"type": "string"},
                "resumed": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {
                    "run_id": {"type": "string"}, "resumes": {"type": "integer"},
                    "tasks_succeeded": {"type": "integer"},
                    "attempts_continued": {"type": "integer"},
                    "tasks_waiting": {"type": "integer"}}}]}}}}},
        "AuditEntry": {"type": "object",
                       "required": ["run", "at_ms", "at", "kind", "actor", "detail"],
                       "properties": {
            "run": {"type": "string"},
            "at_ms": {"type": "integer"},
            "at": {"type": "string", "format": "date-time"},
            "kind": {"type": "string", "description": "llm_call, tool_call, tool_started, \
                task_state, api, agent_control, run_started, run_resumed, ..."},
            "actor": {"type": "string"},
            "agent": {"type": ["string", "null"]},
            "instance": {"type": ["string", "null"]},
            "task": {"type": ["string", "null"]},
            "attempt": {"type": ["integer", "null"]},
            "step": {"type": ["integer", "null"]},
            "detail": {"type": "object"}}},
        "AuditLog": {"type": "object", "required": ["run", "count", "entries"], "properties": {
            "run": {"type": "string"},
            "count": {"type": "integer"},
            "entries": {"type": "array", "items": schema("AuditEntry")}}},
    })
}
