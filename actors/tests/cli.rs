//! The `agentos` binary as a user runs it: exit codes, error output, `serve` with a graceful
//! shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentos")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("c.ron");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_demo_and_rejects_bad_configs_with_exit_2() {
    let ok = Command::new(bin())
        .arg("check")
        .arg(repo().join("config/demo.ron"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (1 backends, 6 agents"));

    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        r#"(version: 1, backends: [], agents: [(name: "planner", role: "r", backend: "gpt", priority: 101)],
            workflows: [(name: "w", tasks: [])])"#,
    );
    let out = Command::new(bin()).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("3 config errors"), "{err}");
    assert!(
        err.contains("agent \"planner\": backend \"gpt\" is not declared"),
        "{err}"
    );
    assert!(
        err.contains("priority must be within 0..=100, got 101"),
        "{err}"
    );
    assert!(
        err.contains("workflow \"w\": workflow has no tasks"),
        "{err}"
    );
    assert!(err.contains("c.ron:1:"), "positions: {err}");

    let missing = Command::new(bin())
        .args(["check", "/nonexistent/x.ron"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let usage = Command::new(bin()).args(["run"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn run_exits_1_when_a_task_fails_and_prints_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"(version: 1,
            backends: [(name: "sim", kind: Sim((latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0))))],
            agents: [(name: "a", role: "r", backend: "sim", retry: (max_attempts: 1),
                      sim: (faults: [(attempt: 1, kind: Error)]))],
            workflows: [(name: "w", tasks: [(id: "x", agent: "a"), (id: "y", agent: "a", depends_on: ["x"])])])"#,
    );
    let trace = dir.path().join("t.jsonl");
    let out = Command::new(bin())
        .arg("run")
        .arg(&cfg)
        .arg("--trace")
        .arg(&trace)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("SIMULATOR"), "{stdout}");
    assert!(
        stdout.contains("w/x") && stdout.contains("failed") && stdout.contains("forced error"),
        "{stdout}"
    );
    assert!(stdout.contains("upstream task w/x failed"), "{stdout}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["event"] == "llm_call" && l["ok"] == false));
    assert!(lines
        .iter()
        .any(|l| l["event"] == "task_state" && l["to"] == "skipped"));
}

#[test]
fn run_json_reports_pager_and_kv_cache_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("run")
        .arg(repo().join("config/kv-routing.ron"))
        .arg("--json")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let total = &v["kv"]["sim"]["total"];
    let queried = total["query_tokens"].as_u64().unwrap();
    let hits = total["hit_tokens"].as_u64().unwrap();
    // Twelve agents share one long system prompt: once it is cached, most of every prompt hits.
    assert!(queried > 0 && hits * 2 > queried, "{total}");
    assert_eq!(v["kv"]["sim"]["replicas"].as_array().unwrap().len(), 4);
    assert!(
        v["pager"]["researcher"]["prompts"].as_u64().unwrap() >= 12,
        "{}",
        v["pager"]
    );
}

/// Sends SIGTERM to `child` and waits for it to exit, failing the test after `within`.
fn terminate(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit within {within:?} of SIGTERM",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        raw.split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default(),
    )
}

#[test]
fn serve_answers_http_and_shuts_down_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // One quick task and one that takes ~1.5 s: SIGTERM arrives while it runs, and it must
    // either finish or come back cancelled with a reason, never vanish.
    let cfg = write_config(
        dir.path(),
        r#"(version: 1, runtime: (shutdown_timeout_secs: 5),
            backends: [(name: "sim", kind: Sim((latency: (base_ms: 1)))),
                       (name: "slow", kind: Sim((latency: (base_ms: 1500))))],
            agents: [(name: "a", role: "r", backend: "sim"), (name: "s", role: "r", backend: "slow")],
            workflows: [(name: "w", tasks: [(id: "quick", agent: "a"), (id: "long", agent: "s")])])"#,
    );
    let trace = dir.path().join("t.jsonl");
    let mut child = Command::new(bin())
        .arg("serve")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--trace")
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect(&line)
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(&addr, "/api/tasks");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["tasks"][0]["state"] == "succeeded" {
            assert_eq!(v["tasks"][1]["state"], "running");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quick task never finished: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, health) = get(&addr, "/healthz");
    assert_eq!(status, 200, "{health}");
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("agentos_scheduler_tasks{state=\"running\"} 1"),
        "{metrics}"
    );

    let status = terminate(&mut child, Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "serve did not exit cleanly after SIGTERM"
    );
    // The in-flight step was allowed to finish: the long task succeeded after the signal.
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert!(
        trace
            .lines()
            .any(|l| l.contains("\"task\":\"w/long\"") && l.contains("\"to\":\"succeeded\"")),
        "{trace}"
    );
}

#[test]
fn sim_server_serves_until_sigterm_and_rejects_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.ron");
    std::fs::write(
        &bad,
        "(faults: (error_rate: 3), max_body_bytes: 1, colour: 1)",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["sim-server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.ron") && err.contains("colour"), "{err}");

    let good = dir.path().join("good.ron");
    std::fs::write(&good, "(model: \"sim-test\", latency: (base_ms: 1))").unwrap();
    let mut child = Command::new(bin())
        .args(["sim-server", "--listen", "127.0.0.1:0", "--config"])
        .arg(&good)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("simulator"), "{line}");
    let addr = line
        .trim()
        .rsplit_once("http://")
        .and_then(|(_, a)| a.strip_suffix("/v1"))
        .expect(&line)
        .to_owned();
    let (status, body) = get(&addr, "/healthz");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["simulator"], true);
    assert_eq!(health["model"], "sim-test");

    let status = terminate(&mut child, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "sim-server did not stop cleanly on SIGTERM"
    );
}
