//! `agentos sim-server`: AgentOS's own `openai` backend running a workflow against the
//! simulator served over HTTP, and what raw HTTP clients get for bad requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use agentos_actors::simserver::{SimServer, SimServerConfig};
use agentos_runtime::model::TaskState;
use serde_json::Value;

use crate::helpers::{parse, run, task};

/// Starts a sim-server on `127.0.0.1:0` on its own thread; returns its address. The server
/// lives until the test process ends.
pub(crate) fn start(cfg: SimServerConfig) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (listener, addr) = agentos_actors::simserver::bind("127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tx.send(addr).unwrap();
            SimServer::new(cfg).serve(listener, stop_rx).await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server up")
}

/// Sends raw bytes, returns (status, headers, body).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_lowercase(), body.to_owned())
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String, String) {
    raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn agentos_openai_backend_runs_a_tool_workflow_against_the_sim_server() {
    let addr = start(
        SimServerConfig::parse("(seed: 3, latency: (base_ms: 2, per_output_token_ms: 0))").unwrap(),
    );
    let cfg = parse(&format!(
        r#"(version: 1, runtime: (max_concurrency: 4),
          backends: [(name: "served", kind: OpenAi((base_url: "http://{addr}/v1",
              model: "whatever", timeout_secs: 10)))],
          agents: [(name: "calc", role: "Use the calculator.", backend: "served",
                    tools: ["calculator"], max_steps: 4, replicas: 2)],
          workflows: [(name: "w", tasks: [
              (id: "a", agent: "calc", input: "(1234 * 5678) / 7"),
              (id: "b", agent: "calc", input: "2 ^ 10"),
              (id: "c", agent: "calc", input: "sqrt(16) + 1"),
          ])])"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let done = run(cfg, dir.path());
    for (key, value) in [("w/a", "1000950.28"), ("w/b", "1024"), ("w/c", "5")] {
        let t = task(&done.snapshot, key);
        assert_eq!(t.state, TaskState::Succeeded, "{key}: {t:?}");
        let out = t.output.as_deref().unwrap_or_default();
        assert!(
            out.starts_with("[simulated]") && out.contains(value),
            "{key}: {out}"
        );
    }

    let (status, head, body) = raw(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(head.contains("x-agentos-simulator: true"), "{head}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["simulator"], true);
    // Two LLM turns per task: the tool call, then the answer.
    assert_eq!(health["served_total"], 6);
}

fn health(addr: SocketAddr) -> Value {
    let (status, _, body) = raw(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `base_urls` naming replicas of one sim-server: AgentOS's KV-cache pool routes each call,
/// the replica it names serves it from its own prefix cache, and the cached tokens the server
/// reports reach the run summary.
#[test]
fn base_urls_reach_distinct_replicas_whose_caches_report_hits() {
    let addr = start(
        SimServerConfig::parse(
            "(seed: 5, replicas: 2, latency: (base_ms: 100, per_prompt_token_us: 0, \
             per_output_token_ms: 0))",
        )
        .unwrap(),
    );
    // No load slack: a replica may not take more than its fair share of the calls in flight,
    // so the four tasks dispatched together spread over both replicas; a task's second call
    // still finds its first call's prefix (on its replica, or the shared head on the other).
    let cfg = parse(&format!(
        r#"(version: 1, runtime: (max_concurrency: 4),
          backends: [(name: "served", kind: OpenAi((
              base_urls: ["http://{addr}/r/0/v1", "http://{addr}/r/1/v1"],
              model: "whatever", timeout_secs: 10)),
              cache: (load_slack: 0.0))],
          agents: [(name: "calc", role: "Use the calculator for every arithmetic question, then answer with the number.",
                    backend: "served", tools: ["calculator"], max_steps: 4, replicas: 4)],
          workflows: [(name: "w", tasks: [
              (id: "a", agent: "calc", input: "2 ^ 10"),
              (id: "b", agent: "calc", input: "sqrt(16) + 1"),
              (id: "c", agent: "calc", input: "3 * 3"),
              (id: "d", agent: "calc", input: "10 - 4"),
          ])])"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let done = run(cfg, dir.path());
    let mut cached_total = 0;
    for (key, value) in [("w/a", "1024"), ("w/b", "5"), ("w/c", "9"), ("w/d", "6")] {
        let t = task(&done.snapshot, key);
        assert_eq!(t.state, TaskState::Succeeded, "{key}: {t:?}");
        assert!(
            t.output.as_deref().unwrap_or_default().contains(value),
            "{key}: {t:?}"
        );
        assert!(
            t.cached_tokens > 0 && t.cached_tokens < t.prompt_tokens,
            "{key}: cached {} of {} prompt tokens",
            t.cached_tokens,
            t.prompt_tokens
        );
        cached_total += t.cached_tokens;
    }

    let health = health(addr);
    let replicas = health["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    let mut hits = 0;
    for r in replicas {
        let served = r["served_total"].as_u64().unwrap();
        let hit = r["cache"]["hit_tokens"].as_u64().unwrap();
        assert!(served > 0 && hit > 0, "every replica served and hit: {r}");
        assert_eq!(r["in_flight"], 0);
        hits += hit;
    }
    // Two LLM turns per task, and every cached token the run counted was a hit on a replica.
    assert_eq!(health["served_total"], 8);
    assert_eq!(hits, cached_total);
}

#[test]
fn bad_requests_get_json_errors_never_a_crash() {
    let addr =
        start(SimServerConfig::parse("(latency: (base_ms: 0), max_body_bytes: 4096)").unwrap());
    let completions = "/v1/chat/completions";
    for (body, needle) in [
        ("{not json", "invalid request body"),
        (r#"{"messages": 3}"#, "invalid type"),
        (
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
            "messages[0].role",
        ),
        (
            r#"{"messages": [{"role": "user", "content": "x"}], "tools": [{"function": 1}]}"#,
            "invalid type",
        ),
    ] {
        let (status, _, resp) = post(addr, completions, body);
        assert_eq!(status, 400, "{body} -> {resp}");
        assert!(error_message(&resp).contains(needle), "{needle}: {resp}");
    }
    let huge = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(5000)
    );
    let (status, _, resp) = post(addr, completions, &huge);
    assert_eq!(status, 413, "{resp}");

    let (status, head, resp) = raw(
        addr,
        format!("GET {completions} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 405);
    assert!(head.contains("allow: post"), "{head}");
    assert!(error_message(&resp).contains("use POST"));

    let (status, _, resp) = post(addr, "/v2/other", "{}");
    assert_eq!(status, 404);
    assert!(error_message(&resp).contains("/v2/other"));
    let hello = r#"{"messages": [{"role": "user", "content": "hi"}]}"#;
    let (status, _, resp) = post(addr, "/r/1/v1/chat/completions", hello);
    assert_eq!(status, 404);
    assert!(
        error_message(&resp).contains("no replica 1: this simulator has 1 replica"),
        "{resp}"
    );
    for path in [
        "/r/x/v1/chat/completions",
        "/r/-0/v1/models",
        "/r/0/v2/models",
    ] {
        let (status, _, resp) = post(addr, path, hello);
        assert_eq!(status, 404, "{path}: {resp}");
        assert!(error_message(&resp).contains(path), "{path}: {resp}");
    }
    let (status, head, resp) = post(addr, "/r/0/v1/chat/completions", hello);
    assert_eq!(status, 200, "{resp}");
    assert!(head.contains("x-agentos-replica: 0"), "{head}");

    // Still serving after all that.
    let (status, head, resp) = post(
        addr,
        completions,
        r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#,
    );
    assert_eq!(status, 200, "{resp}");
    assert!(head.contains("server: agentos-sim-server"));
    let reply: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(reply["model"], "agentos-simulator");
    assert_eq!(reply["choices"][0]["message"]["role"], "assistant");
    let (status, _, models) = raw(
        addr,
        format!("GET /v1/models HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(status, 200);
    assert!(models.contains("agentos-simulator"));
}
