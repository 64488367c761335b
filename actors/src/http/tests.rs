//! Tests of the control plane. The scheduler's ports are bound to `fake::FakeScheduler`, a
//! small actor that keeps workflows in a map and updates the board on agent control (as the
//! real scheduler promises to). Most tests call [`handle`] directly: here the API itself,
//! `events` the event stream; `socket` runs the server on a loopback port for what needs a
//! connection (limits, timeouts, the stream over the wire); `property` throws random
//! requests at [`handle`].

mod events;
mod fake;
mod property;
mod socket;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use agentos_runtime::config::{ApiSettings, Config};
use agentos_runtime::model::{ControlBlock, InstanceId};
use agentos_runtime::trace::Trace;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue, ALLOW, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::board::Board;
use crate::protocol::SchedulerPorts;

/// The config the tests run: agents `a` (two replicas) and `b`.
const CONFIG: &str = r#"(
    version: 1,
    backends: [(name: "sim", kind: Sim(()))],
    agents: [
        (name: "a", role: "r", backend: "sim", replicas: 2),
        (name: "b", role: "r", backend: "sim"),
    ],
    workflows: [(name: "boot", tasks: [(id: "t", agent: "a")])],
)"#;

/// A server's state with the fake scheduler bound (inside a running actix system), and the
/// switch that shuts it down.
pub(super) struct Fixture {
    pub state: HttpState,
    pub stop: watch::Sender<bool>,
}

/// The state without any actor (ports unbound): for what needs no scheduler.
pub(super) fn bare(token: Option<&str>, trace: Trace) -> Fixture {
    let cfg = Arc::new(Config::parse(CONFIG, "test.ron", Path::new(".")).expect("test config"));
    let board = Arc::new(Board::default());
    for (agent, replica) in [("a", 0), ("a", 1), ("b", 0)] {
        let id = InstanceId {
            agent: agent.into(),
            replica,
        };
        board
            .agents
            .insert(id.clone(), ControlBlock::new(u64::from(replica) + 1, id));
    }
    let (stop, shutdown) = watch::channel(false);
    Fixture {
        state: HttpState {
            board,
            scheduler: SchedulerPorts::default(),
            cfg,
            prometheus: PrometheusBuilder::new().build_recorder().handle(),
            started: Instant::now(),
            simulated_backends: vec!["sim".into()],
            token: token.map(Into::into),
            api: ApiSettings {
                max_body_bytes: 4096,
                ..ApiSettings::default()
            },
            trace,
            shutdown,
            keep_alive: KEEP_ALIVE,
            // No store here: `GET /api/audit` answers 503 unless a test points at one.
            store_path: std::path::PathBuf::from("/nonexistent/agentos-test/store.db"),
            run_id: "test-run".into(),
            resume: None,
            quotas: None,
        },
        stop,
    }
}

/// The state with [`FakeScheduler`] bound to every port the API uses. Must run inside an
/// actix system.
pub(super) fn fixture(token: Option<&str>) -> Fixture {
    let f = bare(token, Trace::open(None, 64).expect("in-memory trace"));
    let fake = fake::FakeScheduler::new(f.state.board.clone()).start();
    let p = &f.state.scheduler;
    p.submit.bind(&fake);
    p.workflows.bind(&fake);
    p.workflow.bind(&fake);
    p.cancel.bind(&fake);
    p.control.bind(&fake);
    p.snapshot.bind(&fake);
    f
}

/// A request with headers and a body.
pub(super) fn req(
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> ApiRequest {
    let mut r = ApiRequest::new(method, target);
    for (k, v) in headers {
        r.headers.append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    r.body = body.to_owned().into();
    r
}

/// What a client sees: the status, the headers and the JSON body (`Null` if not JSON).
pub(super) async fn call(state: &HttpState, r: ApiRequest) -> (StatusCode, HeaderMap, Value) {
    let resp = handle(r, state).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("full body")
        .to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(super) async fn get(state: &HttpState, target: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(state, req(Method::GET, target, &[], "")).await;
    (s, v)
}

const GOOD: &str = r#"{"name": "fix", "tasks": [
    {"id": "plan", "agent": "a", "input": "go"},
    {"id": "do", "agent": "b", "input": "after {{plan}}", "depends_on": ["plan"], "priority_boost": 3}
]}"#;

#[actix_rt::test]
async fn a_token_guards_the_api_but_not_health_or_metrics() {
    let f = fixture(Some("s3cret"));
    let (status, headers, body) = call(&f.state, req(Method::GET, "/api/agents", &[], "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[WWW_AUTHENTICATE], "Bearer realm=\"agentos\"");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let wrong = [(AUTHORIZATION.as_str(), "Bearer s3cres")];
    let (status, _, _) = call(&f.state, req(Method::GET, "/api/agents", &wrong, "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown API paths are not revealed without the token either.
    let (status, _, _) = call(&f.state, req(Method::GET, "/api/nope", &[], "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let right = [(AUTHORIZATION.as_str(), "Bearer s3cret")];
    let (status, _, body) = call(&f.state, req(Method::GET, "/api/agents", &right, "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().unwrap().len(), 3);
    let (status, health) = get(&f.state, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    // The sandbox report names its mode and what it enforces (or misses, and why).
    assert!(health["sandbox"]["mode"].is_string(), "{health}");
    assert!(health["sandbox"]["enforced"].is_array(), "{health}");
    // Which run this is, and that it was not resumed.
    assert_eq!(health["run"], json!({"id": "test-run", "resumed": null}));
    assert_eq!(get(&f.state, "/metrics").await.0, StatusCode::OK);
}

#[actix_rt::test]
async fn a_submitted_workflow_is_created_once_per_idempotency_key() {
    let f = fixture(None);
    let key = [("idempotency-key", "k-1")];
    let (status, headers, body) =
        call(&f.state, req(Method::POST, "/api/workflows", &key, GOOD)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body, json!({"id": "fix", "created": true}));
    assert_eq!(headers[LOCATION], "/api/workflows/fix");

    let (status, _, body) = call(&f.state, req(Method::POST, "/api/workflows", &key, GOOD)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"id": "fix", "created": false}));

    let (status, headers, body) =
        call(&f.state, req(Method::POST, "/api/workflows", &[], GOOD)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["id"], "fix-2");
    assert_eq!(headers[LOCATION], "/api/workflows/fix-2");

    let (status, list) = get(&f.state, "/api/workflows").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fix", "fix-2"]);
    let (status, one) = get(&f.state, "/api/workflows/fix").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["state"], "running");
    assert_eq!(
        one["submitted_by"], "api",
        "no peer address without a socket"
    );
}

#[actix_rt::test]
async fn ron_bodies_are_accepted_with_their_content_type() {
    let f = fixture(None);
    let ron = [("content-type", "application/ron; charset=utf-8")];
    let body = r#"(name: "ronny", tasks: [(id: "x", agent: "b")])"#;
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &ron, body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], "ronny");
    // The same RON sent as JSON is malformed JSON.
    let (status, _, _) = call(&f.state, req(Method::POST, "/api/workflows", &[], body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let xml = [("content-type", "application/xml")];
    let (status, _, _) = call(&f.state, req(Method::POST, "/api/workflows", &xml, GOOD)).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // `curl -d '{...}'` without a content type labels the JSON form-urlencoded.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &form, GOOD)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

#[actix_rt::test]
async fn malformed_bodies_are_400_saying_where() {
    let f = fixture(None);
    let broken = "{\"name\": \"w\",\n  \"tasks\": [\n    {\"id\": \"x\", \"agent\": }\n]}";
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &[], broken)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["line"], 3, "{v}");
    assert!(v["col"].as_u64().unwrap() > 1, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("request body:3:"),
        "{v}"
    );

    let unknown_field = r#"{"name": "w", "tasks": [], "colour": "red"}"#;
    let (status, _, v) = call(
        &f.state,
        req(Method::POST, "/api/workflows", &[], unknown_field),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("colour"), "{v}");

    let mut not_utf8 = req(Method::POST, "/api/workflows", &[], "");
    not_utf8.body = hyper::body::Bytes::from_static(b"{\"name\": \"\xff\"}");
    let (status, _, v) = call(&f.state, not_utf8).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("offset 10"), "{v}");
}

#[actix_rt::test]
async fn an_invalid_workflow_is_422_listing_every_error() {
    let f = fixture(None);
    let bad = r#"{"name": "bad", "tasks": [
        {"id": "x", "agent": "nobody"},
        {"id": "y", "agent": "a", "depends_on": ["ghost"]},
        {"id": "y", "agent": "b"}
    ]}"#;
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &[], bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let errors = v["errors"].as_array().unwrap();
    assert!(errors.len() >= 3, "{v}");
    let text = v.to_string();
    for needle in ["nobody", "ghost", "\\\"y\\\""] {
        assert!(text.contains(needle), "{needle} missing from {v}");
    }
    for e in errors {
        assert!(e["message"].is_string() && e["entity"].is_string(), "{e}");
    }
    assert!(v["error"]
        .as_str()
        .unwrap()
        .starts_with(&format!("the workflow has {} errors", errors.len())));
    assert_eq!(
        get(&f.state, "/api/workflows").await.1,
        json!([]),
        "nothing was submitted"
    );
}

#[actix_rt::test]
async fn bodies_over_the_limit_are_413_and_bad_keys_400() {
    let f = fixture(None);
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(5000));
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &[], &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].as_str().unwrap().contains("4096"));
    let long_key = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES + 1);
    for key in [long_key.as_str(), "", "has space"] {
        let h = [("idempotency-key", key)];
        let (status, _, _) = call(&f.state, req(Method::POST, "/api/workflows", &h, GOOD)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
    }
}

#[actix_rt::test]
async fn refusals_map_to_404_and_409() {
    let f = fixture(None);
    let refused = r#"{"name": "refused", "tasks": [{"id": "x", "agent": "a"}]}"#;
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/workflows", &[], refused)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["error"], "shutting down");

    assert_eq!(
        get(&f.state, "/api/workflows/nope").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _, _) = call(
        &f.state,
        req(Method::DELETE, "/api/workflows/nope", &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    call(&f.state, req(Method::POST, "/api/workflows", &[], GOOD)).await;
    let (status, _, v) = call(&f.state, req(Method::DELETE, "/api/workflows/fix", &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["state"], "cancelled");
    assert_eq!(v["cancelled_by"], "api");
    let (status, _, _) = call(&f.state, req(Method::DELETE, "/api/workflows/fix", &[], "")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[actix_rt::test]
async fn agent_control_answers_the_agents_control_blocks() {
    let f = fixture(None);
    let (status, _, v) = call(
        &f.state,
        req(Method::POST, "/api/agents/a/suspend", &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["agent"], "a");
    assert_eq!(v["action"], "suspend");
    let blocks = v["control_blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "only a's instances: {v}");
    assert!(blocks.iter().all(|b| b["state"] == "suspended"), "{v}");

    let (status, _, _) = call(&f.state, req(Method::POST, "/api/agents/b/resume", &[], "")).await;
    assert_eq!(status, StatusCode::CONFLICT, "b is not suspended");
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/agents/a/resume", &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(v["control_blocks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["state"] == "ready"));
    let (status, _, v) = call(&f.state, req(Method::POST, "/api/agents/b/kill", &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["control_blocks"][0]["state"], "terminated");

    let (status, _, v) = call(&f.state, req(Method::POST, "/api/agents/zed/kill", &[], "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["agents"], json!(["a", "b"]));
}

#[actix_rt::test]
async fn unknown_paths_are_404_listing_endpoints_and_wrong_methods_405() {
    let f = fixture(None);
    let (status, v) = get(&f.state, "/api/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let endpoints = v["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), ROUTES.len());
    assert!(endpoints.contains(&json!("DELETE /api/workflows/{id}")));

    let (status, headers, _) = call(&f.state, req(Method::PUT, "/api/workflows", &[], "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[ALLOW], "GET, HEAD, POST");
    let (status, headers, _) = call(&f.state, req(Method::POST, "/healthz", &[], "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[ALLOW], "GET, HEAD");
    let (status, headers, _) =
        call(&f.state, req(Method::GET, "/api/agents/a/kill", &[], "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers[ALLOW], "POST");
    // A percent-encoded slash does not make a second segment.
    let (status, _, _) = call(&f.state, req(Method::GET, "/api/workflows/a%2Fb", &[], "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[actix_rt::test]
async fn an_unbound_scheduler_is_503_not_a_hang() {
    let f = bare(None, Trace::disabled());
    for target in ["/api/workflows", "/api/workflows/x", "/api/tasks"] {
        assert_eq!(
            get(&f.state, target).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{target}"
        );
    }
    let (status, v) = get(&f.state, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["scheduler"], "down");
    let (status, v) = get(&f.state, "/api/events").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no window: {v}");
}

/// A concrete path for a template, with `seg` for every parameter.
pub(super) fn path_of(template: &str, seg: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { seg } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[actix_rt::test]
async fn the_openapi_document_lists_exactly_the_routes_the_router_answers() {
    let f = fixture(None);
    let (status, doc) = get(&f.state, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.push((method.to_ascii_uppercase(), path.clone()));
            // Every path parameter of the template is declared.
            for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
                let name = name.trim_end_matches('}');
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{method} {path}: {name} undeclared"
                );
            }
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        }
    }
    documented.sort();
    let mut table: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.verb.as_str().to_owned(), r.template.to_owned()))
        .collect();
    table.sort();
    assert_eq!(documented, table);

    // And the router answers every documented operation (no 404 "no such endpoint", no
    // 405): the document cannot promise a route the router lacks.
    for (method, path) in &documented {
        let target = path_of(path, "a");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let r = req(m, &target, &[], GOOD);
        if path == "/api/events" {
            // A stream never ends; its head says it was routed.
            let resp = handle(r, &f.state).await;
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            continue;
        }
        let (status, headers, v) = call(&f.state, r).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {target}");
        assert!(
            v.get("endpoints").is_none() && headers.get(ALLOW).is_none(),
            "{method} {target} was not routed: {status} {v}"
        );
    }
}

#[actix_rt::test]
async fn healthz_says_which_run_was_resumed() {
    let mut f = fixture(None);
    f.state.resume = Some(crate::system::ResumeInfo {
        run_id: "test-run".into(),
        resumes: 2,
        tasks_succeeded: 3,
        attempts_continued: 1,
        tasks_waiting: 4,
    });
    let (_, health) = get(&f.state, "/healthz").await;
    assert_eq!(health["run"]["id"], "test-run");
    assert_eq!(health["run"]["resumed"]["resumes"], 2);
    assert_eq!(health["run"]["resumed"]["attempts_continued"], 1);
}

#[actix_rt::test]
async fn the_audit_log_is_read_from_the_store_with_validated_parameters() {
    use agentos_runtime::store::{AuditRow, RunRow, RunStatus, Store};
    let mut f = fixture(Some("tok"));
    let auth = [(AUTHORIZATION.as_str(), "Bearer tok")];
    let (status, _, _) = call(&f.state, req(Method::GET, "/api/audit", &[], "")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, v) = call(&f.state, req(Method::GET, "/api/audit", &auth, "")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no store: {v}");

    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let mut store = Store::open(&path).unwrap();
    for (run, started) in [("old", 1), ("test-run", 2)] {
        store
            .record_run(&RunRow {
                run_id: run.into(),
                started_ms: started,
                config_path: String::new(),
                config_hash: String::new(),
                durability: "sync".into(),
                status: RunStatus::Running,
                finished_ms: None,
                resumes: 0,
                run_dir: String::new(),
                checkpointed: true,
            })
            .unwrap();
        let rows: Vec<AuditRow> = (0..3)
            .map(|i| AuditRow {
                at_ms: 1_000 * i,
                kind: "api".into(),
                actor: format!("api 127.0.0.1:{i}"),
                agent: Some(if i == 0 { "a" } else { "b" }.into()),
                instance: None,
                task: Some("w/t".into()),
                attempt: None,
                step: None,
                detail: json!({"action": "suspend", "run": run}).to_string(),
            })
            .collect();
        store.append_audit(run, &rows).unwrap();
    }
    f.state.store_path = path;

    let get_audit = |target: &str| req(Method::GET, target, &auth, "");
    let (status, _, v) = call(&f.state, get_audit("/api/audit")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["run"], "test-run", "this server's run by default");
    assert_eq!(v["count"], 3);
    assert_eq!(v["entries"][0]["detail"]["run"], "test-run");
    assert_eq!(v["entries"][0]["at"], "1970-01-01T00:00:00.000Z");
    let (_, _, v) = call(&f.state, get_audit("/api/audit?run=old&agent=b&limit=1")).await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["entries"][0]["actor"], "api 127.0.0.1:2", "the newest");
    let (_, _, v) = call(&f.state, get_audit("/api/audit?since=1970-01-01T00:00:01Z")).await;
    assert_eq!(v["count"], 2);
    let (status, _, v) = call(&f.state, get_audit("/api/audit?run=nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    for bad in ["limit=100000", "since=soon", "task=t", "colour=red"] {
        let (status, _, v) = call(&f.state, get_audit(&format!("/api/audit?{bad}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
}
