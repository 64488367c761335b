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

/// The demo's tasks as `run --json` reports them: id, state, output.
fn demo_tasks(worker_threads: Option<u32>) -> Vec<(String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo().join("examples");
    let mut text = std::fs::read_to_string(repo().join("config/demo.ron"))
        .unwrap()
        .replace("\"../examples/", &format!("\"{}/", examples.display()));
    if let Some(n) = worker_threads {
        text = text.replacen("runtime: (", &format!("runtime: (worker_threads: {n}, "), 1);
    }
    let cfg = write_config(dir.path(), &text);
    let out = Command::new(bin())
        .arg("run")
        .arg(&cfg)
        .arg("--json")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let field = |t: &serde_json::Value, k: &str| t[k].as_str().unwrap_or_default().to_owned();
    let mut tasks: Vec<_> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (field(t, "task"), field(t, "state"), field(t, "output")))
        .collect();
    tasks.sort();
    tasks
}

#[test]
fn agents_on_the_system_arbiter_run_the_demo_as_on_their_own() {
    let own = demo_tasks(None);
    assert!(own.len() >= 5, "{own:?}");
    assert!(
        own.iter().all(|(_, state, _)| state == "succeeded"),
        "{own:?}"
    );
    assert_eq!(
        demo_tasks(Some(0)),
        own,
        "worker_threads: 0 changes where the agents run, not what they do"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        dir.path(),
        r#"(version: 1, runtime: (worker_threads: 2000),
            backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", tasks: [(id: "x", agent: "a")])])"#,
    );
    let out = Command::new(bin()).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runtime.worker_threads must be 0..=1024, got 2000"),
        "{err}"
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

/// A port nothing listens on: bound, then released.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-workflow RON file.
fn workflow_file(dir: &Path) -> PathBuf {
    let path = dir.join("flow.ron");
    std::fs::write(
        &path,
        "(name: \"review\",\n tasks: [(id: \"a\", agent: \"coder\"), (id: \"b\", agent: \"coder\", depends_on: [\"a\"])])",
    )
    .unwrap();
    path
}

#[test]
fn client_commands_exit_3_when_no_server_listens() {
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow_file(dir.path());
    let server = format!("http://127.0.0.1:{}", free_port());
    let commands: Vec<Vec<String>> = vec![
        vec!["ps".into()],
        vec!["tasks".into()],
        vec!["tasks".into(), "--workflow".into(), "w".into()],
        vec!["workflows".into()],
        vec!["suspend".into(), "coder".into()],
        vec!["cancel".into(), "review".into()],
        vec!["events".into(), "--follow".into()],
        vec!["submit".into(), flow.display().to_string(), "--wait".into()],
    ];
    for args in commands {
        let out = Command::new(bin())
            .args(&args)
            .args(["--server", &server])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: cannot reach the AgentOS server at {server}"
            )),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The address may come from the environment instead.
    let out = Command::new(bin())
        .arg("ps")
        .env("AGENTOS_SERVER", &server)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&server));
}

#[test]
fn a_bad_server_url_is_a_command_line_error() {
    let out = Command::new(bin())
        .args(["ps", "--server", "127.0.0.1:9464"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid server URL"));
}

#[test]
fn submit_checks_the_file_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: an exit 2 proves the file was refused before any request.
    let server = format!("http://127.0.0.1:{}", free_port());
    let submit = |file: &Path| {
        let out = Command::new(bin())
            .arg("submit")
            .arg(file)
            .args(["--server", &server])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = submit(&dir.path().join("missing.ron"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("missing.ron"),
        "{err}"
    );

    let bad = dir.path().join("bad.ron");
    std::fs::write(&bad, "(name: \"w\",\n tasks: [(id: \"a\", agnt: \"x\")])").unwrap();
    let (code, err) = submit(&bad);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.ron:2:") && err.contains("agnt"), "{err}");

    let json = dir.path().join("bad.json");
    std::fs::write(&json, "{\"name\": \"w\", \"tasks\": [}").unwrap();
    let (code, err) = submit(&json);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad.json:1:") && err.contains("invalid JSON"),
        "{err}"
    );

    let empty = dir.path().join("empty.ron");
    std::fs::write(&empty, "(version: 1, agents: [])").unwrap();
    let (code, err) = submit(&empty);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("holds no workflows"), "{err}");
}

const NO_WORKFLOWS: &str = r#"(version: 1,
    backends: [(name: "sim", kind: Sim((latency: (base_ms: 0))))],
    agents: [(name: "a", role: "r", backend: "sim")])"#;

#[test]
fn serve_refuses_a_non_loopback_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), NO_WORKFLOWS);
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg(&cfg)
            .args(["--listen", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .env_remove("AGENTOS_TEST_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = serve(&[], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without an API token"),
        "{err}"
    );
    assert!(
        err.contains("--token-env") && err.contains("token_env"),
        "{err}"
    );
    // An empty variable counts as unset.
    let (code, err) = serve(
        &["--token-env", "AGENTOS_TEST_TOKEN"],
        &[("AGENTOS_TEST_TOKEN", "")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("$AGENTOS_TEST_TOKEN is unset or empty"),
        "{err}"
    );
    // The config may name the variable too; nothing was booted, so no data dir appeared.
    let named = write_config(
        dir.path(),
        &NO_WORKFLOWS.replace(
            "(version: 1,",
            "(version: 1, runtime: (api: (token_env: \"AGENTOS_TEST_TOKEN\")),",
        ),
    );
    assert_eq!(named, cfg);
    let (code, err) = serve(&[], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("$AGENTOS_TEST_TOKEN is unset or empty"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists());
}

#[test]
fn run_refuses_a_config_without_workflows_that_check_and_serve_accept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), NO_WORKFLOWS);
    let check = Command::new(bin()).arg("check").arg(&cfg).output().unwrap();
    assert_eq!(check.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&check.stdout).contains("0 workflows, 0 tasks"));
    let run = Command::new(bin())
        .arg("run")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("declares no workflows: nothing to run"),
        "{err}"
    );

    // serve stays up with nothing to do, says where its API is, and stops on SIGTERM.
    let mut child = Command::new(bin())
        .arg("serve")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    for _ in 0..4 {
        stdout.read_line(&mut banner).unwrap();
    }
    assert!(
        banner.starts_with("listening on http://127.0.0.1:"),
        "{banner}"
    );
    assert!(banner.contains("api: /api/"), "{banner}");
    assert!(banner.contains("no token required"), "{banner}");
    assert!(banner.contains("0 declared (0 tasks)"), "{banner}");
    let addr = banner
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("listening on http://"))
        .unwrap()
        .to_owned();
    let (status, _) = get(&addr, "/healthz");
    assert_eq!(status, 200);
    let status = terminate(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}

/// One canned answer: status, content type, body.
type Answer = (u16, &'static str, String);

/// A stand-in for `agentos serve` that answers canned responses by `METHOD /path` (query
/// left out) and records every request it gets. Each route holds a list of answers: they are
/// given in turn, the last one over and over. An event-stream answer is written and the
/// connection then held open until the client closes it, as a live stream would be (or
/// closed at once, for the content type `text/event-stream; then-close`).
struct Canned {
    addr: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Canned {
    fn start(routes: Vec<(&'static str, Vec<Answer>)>) -> Self {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<Mutex<HashMap<&str, Vec<Answer>>>> =
            Arc::new(Mutex::new(routes.into_iter().collect()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (routes, seen) = (routes.clone(), seen.clone());
                std::thread::spawn(move || Self::answer(stream, &routes, &seen));
            }
        });
        Canned { addr, requests }
    }

    fn answer(
        mut stream: TcpStream,
        routes: &std::sync::Mutex<std::collections::HashMap<&str, Vec<Answer>>>,
        seen: &std::sync::Mutex<Vec<String>>,
    ) {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while raw.len() < head_end + length {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&raw).to_string());
        let mut words = head.split_whitespace();
        let method = words.next().unwrap_or("");
        let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
        let route = format!("{method} {path}");
        let (status, kind, body) = {
            let mut routes = routes.lock().unwrap();
            match routes.get_mut(route.as_str()) {
                Some(answers) if answers.len() > 1 => answers.remove(0),
                Some(answers) => answers[0].clone(),
                None => (
                    404,
                    "application/json",
                    r#"{"error": "no such route"}"#.into(),
                ),
            }
        };
        if let Some(rest) = kind.strip_prefix("text/event-stream") {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n{body}"
            );
            let _ = stream.flush();
            // Held open like a live stream, until the client hangs up; `; then-close` ends
            // it right away, like a server going down.
            if rest != "; then-close" {
                let _ = stream.read(&mut buf);
            }
            return;
        }
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn server(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Runs `agentos ARGS --server <this>` with `env`; returns (exit code, stdout, stderr).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .args(["--server", &self.server()])
            .env_remove("AGENTOS_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn json_answer(status: u16, body: serde_json::Value) -> Answer {
    (status, "application/json", body.to_string())
}

fn task_json(task: &str, state: &str, reason: Option<&str>) -> serde_json::Value {
    serde_json::json!({"task": task, "workflow": task.split('/').next().unwrap(),
        "id": task.split('/').nth(1).unwrap(), "state": state, "attempts": 1, "agent": "coder",
        "depends_on": [], "spawned_by": null, "finished_by": null, "prompt_tokens": 12,
        "completion_tokens": 4, "cached_tokens": 0, "duration_secs": 0.5, "reason": reason,
        "output": null, "history": []})
}

#[test]
fn client_tables_json_and_refusals_as_the_server_gave_them() {
    let block = serde_json::json!({"pid": 3, "id": {"agent": "coder", "replica": 0},
        "state": "suspended", "current_task": null, "steps": 2, "tokens_in": 50,
        "tokens_out": 9, "llm_calls": 2, "tool_calls": 0, "tasks_done": 1, "busy": 0.75});
    let server = Canned::start(vec![
        (
            "GET /api/agents",
            vec![json_answer(200, serde_json::json!([block]))],
        ),
        (
            "GET /api/tasks",
            vec![json_answer(
                200,
                serde_json::json!({"done": false, "tasks": [
                    task_json("review/a", "succeeded", Some("completed")),
                    task_json("review/b", "running", None)]}),
            )],
        ),
        (
            "POST /api/agents/coder/suspend",
            vec![json_answer(
                200,
                serde_json::json!({"agent": "coder", "action": "suspend", "control_blocks": [block]}),
            )],
        ),
        (
            "POST /api/agents/nobody/kill",
            vec![json_answer(
                404,
                serde_json::json!({"error": "no agent \"nobody\""}),
            )],
        ),
        (
            "POST /api/workflows",
            vec![json_answer(
                422,
                serde_json::json!({"error": "the workflow has 2 errors", "errors": [
                    {"entity": "task \"review/a\"", "message": "agent \"coder\" is not declared", "line": 2, "col": 12},
                    {"entity": "task \"review/b\"", "message": "agent \"coder\" is not declared", "line": 2, "col": 40}]}),
            )],
        ),
    ]);

    let (code, out, err) = server.run(&["ps"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("INSTANCE  PID  STATE"), "{out}");
    assert!(
        lines[1].starts_with("coder#0     3  suspended") && lines[1].contains("50/9"),
        "{out}"
    );

    let (code, out, _) = server.run(&["tasks", "--json"], &[("AGENTOS_TOKEN", "t0k")]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tasks"][1]["state"], "running");
    let (_, out, _) = server.run(&["tasks"], &[]);
    assert!(
        out.contains("review/a  succeeded") && out.contains("completed"),
        "{out}"
    );

    let (code, out, err) = server.run(&["suspend", "coder"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "suspend: agent \"coder\" (1 instance: coder#0 suspended)\n"
    );

    let (code, out, err) = server.run(&["kill", "nobody"], &[]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    assert_eq!(
        err,
        "error: the server refused the request (404): no agent \"nobody\"\n"
    );

    // A 422 lists every error, at its place in the file that was sent as it is.
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow_file(dir.path());
    let (code, out, err) = server.run(&["submit", flow.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    let shown = flow.display();
    assert_eq!(
        err,
        format!(
            "error: the server refused the request (422): the workflow has 2 errors\n  \
             {shown}:2:12: task \"review/a\": agent \"coder\" is not declared\n  \
             {shown}:2:40: task \"review/b\": agent \"coder\" is not declared\n"
        )
    );

    // What went over the wire: the token when set, the file as RON, nothing else.
    let requests = server.requests();
    let tasks = requests
        .iter()
        .find(|r| r.starts_with("GET /api/tasks "))
        .unwrap();
    assert!(
        tasks.to_lowercase().contains("authorization: bearer t0k"),
        "{tasks}"
    );
    let ps = requests
        .iter()
        .find(|r| r.starts_with("GET /api/agents "))
        .unwrap();
    assert!(!ps.to_lowercase().contains("authorization"), "{ps}");
    let post = requests
        .iter()
        .find(|r| r.starts_with("POST /api/workflows "))
        .unwrap();
    assert!(
        post.to_lowercase()
            .contains("content-type: application/ron"),
        "{post}"
    );
    assert!(
        post.ends_with(&std::fs::read_to_string(&flow).unwrap()),
        "{post}"
    );
}

#[test]
fn submit_wait_polls_until_the_workflow_ends_and_exits_1_when_it_failed() {
    let view = |state: &str, tasks: Vec<serde_json::Value>| {
        serde_json::json!({"id": "review-2", "name": "review", "origin": "submitted",
            "submitted_by": "api", "submitted_at": 0.0, "state": state, "cancelled_by": null,
            "spawned": 0, "counts": {}, "tasks": tasks})
    };
    let server = Canned::start(vec![
        (
            "POST /api/workflows",
            vec![
                json_answer(201, serde_json::json!({"id": "review-2", "created": true})),
                json_answer(200, serde_json::json!({"id": "review-2", "created": false})),
            ],
        ),
        (
            "GET /api/workflows/review-2",
            vec![
                json_answer(
                    200,
                    view(
                        "running",
                        vec![
                            task_json("review-2/a", "running", None),
                            task_json("review-2/b", "pending", None),
                        ],
                    ),
                ),
                json_answer(
                    200,
                    view(
                        "failed",
                        vec![
                            task_json("review-2/a", "failed", Some("forced error")),
                            task_json(
                                "review-2/b",
                                "skipped",
                                Some("upstream task review-2/a failed"),
                            ),
                        ],
                    ),
                ),
            ],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let flow = workflow_file(dir.path());
    let flow = flow.to_str().unwrap();
    let (code, out, err) = server.run(&["submit", flow, "--wait", "--idempotency-key", "k1"], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "review-2", "{out}");
    assert_eq!(lines[1], "workflow review-2 (review): failed", "{out}");
    assert!(lines[2].starts_with("TASK"), "{out}");
    assert!(
        lines[3].contains("failed") && lines[3].ends_with("forced error"),
        "{out}"
    );
    assert!(
        lines[4].ends_with("upstream task review-2/a failed"),
        "{out}"
    );
    assert!(
        err.contains("submitted workflow \"review\" as review-2"),
        "{err}"
    );
    let polls = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/workflows/review-2 "))
        .count();
    assert_eq!(polls, 2, "polled until the workflow was no longer running");

    // The replay: same key, same id; --json prints the server's answer.
    let (code, out, _) = server.run(&["submit", flow, "--idempotency-key", "k1", "--json"], &[]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v, serde_json::json!({"id": "review-2", "created": false}));
    let keys: Vec<bool> = server
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /api/workflows "))
        .map(|r| r.to_lowercase().contains("idempotency-key: k1"))
        .collect();
    assert_eq!(keys, [true, true]);
}

#[test]
fn events_print_the_backlog_then_stop_when_the_stream_goes_quiet() {
    let backlog = "retry: 1000\n\nid: 41\nevent: task_state\ndata: {\"task\":\"w/a\",\"to\":\"running\"}\n\n\
                   : keep-alive\n\nid: 42\nevent: llm_call\ndata: {\"agent\":\"coder\",\"ok\":true}\n\n";
    let server = Canned::start(vec![(
        "GET /api/events",
        vec![(200, "text/event-stream", backlog.to_owned())],
    )]);
    let started = Instant::now();
    let (code, out, err) = server.run(&["events", "--workflow", "w", "--after", "40"], &[]);
    assert_eq!(code, Some(0), "{err}");
    // The stream stays open; the client's own cut-off ended the command.
    assert!(started.elapsed() < Duration::from_secs(8));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("41")
            && lines[0].contains("task_state")
            && lines[0].contains("to=running"),
        "{out}"
    );
    assert!(
        lines[1].contains("42") && lines[1].contains("agent=coder"),
        "{out}"
    );

    let (_, out, _) = server.run(&["events", "--json"], &[]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"id": 41, "event": "task_state", "data": {"task": "w/a", "to": "running"}})
    );

    let requests = server.requests();
    let filtered = requests[0].to_lowercase();
    assert!(
        filtered.starts_with("get /api/events?workflow=w "),
        "{filtered}"
    );
    assert!(filtered.contains("last-event-id: 40"), "{filtered}");
    assert!(filtered.contains("accept: text/event-stream"), "{filtered}");
    assert!(!requests[1].to_lowercase().contains("last-event-id"));
}

#[test]
fn events_follow_reconnects_after_the_last_event_seen() {
    let backlog = "id: 7\nevent: task_state\ndata: {\"to\":\"ready\"}\n\n";
    let server = Canned::start(vec![(
        "GET /api/events",
        vec![
            (200, "text/event-stream; then-close", backlog.to_owned()),
            json_answer(
                410,
                serde_json::json!({"error": "event 7 is no longer held"}),
            ),
        ],
    )]);
    let (code, out, err) = server.run(&["events", "--follow", "--agent", "coder"], &[]);
    // The stream broke, the client came back for what follows event 7, and printed the
    // refusal of that as the server gave it.
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("task_state") && out.contains("to=ready"),
        "{out}"
    );
    assert!(err.contains("reconnecting after event 7"), "{err}");
    assert!(err.contains("(410): event 7 is no longer held"), "{err}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(!requests[0].to_lowercase().contains("last-event-id"));
    let again = requests[1].to_lowercase();
    assert!(again.starts_with("get /api/events?agent=coder "), "{again}");
    assert!(again.contains("last-event-id: 7"), "{again}");
}
