//! `agentos serve` as a service: the control-plane API and the CLI client, against a real
//! `agentos serve` child process on a loopback port (port 0; the address is read from its
//! `listening on http://ADDR` line). Every child is killed by pid when its test ends, and
//! every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::wait_until;

/// The `agentos` binary (built by this crate as `agentos-it`).
fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentos-it")
}

/// The longest any single wait in these tests may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Agents on simulated backends: `coder` answers at once; `flaky` fails its only attempt;
/// `slow` (two replicas) takes 1.5 s per call; `sleeper` and `primary` take 20 s, so their
/// tasks stay running until something is done about them; `primary` falls back to `backup`.
const AGENTS: &str = r#"(version: 1,
    runtime: (shutdown_timeout_secs: 1),
    backends: [
        (name: "fast", kind: Sim((latency: (base_ms: 1, per_prompt_token_us: 0, per_output_token_ms: 0)))),
        (name: "slow", kind: Sim((latency: (base_ms: 1500, per_prompt_token_us: 0, per_output_token_ms: 0)))),
        (name: "stuck", kind: Sim((latency: (base_ms: 20000, per_prompt_token_us: 0, per_output_token_ms: 0)))),
    ],
    agents: [
        (name: "coder", role: "writes code", backend: "fast"),
        (name: "flaky", role: "fails", backend: "fast", retry: (max_attempts: 1),
         sim: (faults: [(attempt: 1, kind: Error)])),
        (name: "slow", role: "takes its time", backend: "slow", replicas: 2),
        (name: "sleeper", role: "takes very long", backend: "stuck"),
        (name: "primary", role: "takes very long", backend: "stuck", retry: (max_attempts: 1),
         fallback: "backup"),
        (name: "backup", role: "takes over", backend: "fast"),
    ],
    WORKFLOWS
)"#;

fn agents_config() -> String {
    AGENTS.replace("WORKFLOWS", "")
}

/// A running `agentos serve`; killed by pid when dropped.
struct Serve {
    child: Child,
    /// `host:port` to connect to.
    addr: String,
    /// Everything it wrote to stdout after the address line.
    stdout: Arc<Mutex<Vec<String>>>,
    /// Everything it wrote to stderr, for failure messages.
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// `agentos serve` of `config` on `127.0.0.1:0`.
    fn start(config: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        Self::start_on("127.0.0.1:0", config, args, env)
    }

    fn start_on(listen: &str, config: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.ron"), config).unwrap();
        Self::launch(dir, listen, args, env)
    }

    /// Kills this server with SIGKILL (a crash: nothing is flushed) and starts `serve` again
    /// on the same config and data directory.
    fn crash_and_restart(mut self) -> Serve {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        Self::launch(dir, "127.0.0.1:0", &[], &[])
    }

    fn launch(dir: tempfile::TempDir, listen: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let cfg = dir.path().join("serve.ron");
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg(&cfg)
            .args(["--listen", listen, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .env_remove("AGENTOS_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start agentos serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "serve printed no address; stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .replace("0.0.0.0", "127.0.0.1");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        std::thread::spawn(move || {
            while let Ok(line) = rx.recv() {
                lines.lock().unwrap().push(line);
            }
        });
        Serve {
            child,
            addr,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// An API call without a token.
    fn call(&self, method: &str, path: &str, body: Option<(&str, &str)>) -> Reply {
        call(&self.addr, method, path, &[], body)
    }

    /// Submits a workflow as JSON; answers the reply.
    fn submit(&self, workflow: &Value, key: Option<&str>) -> Reply {
        let body = workflow.to_string();
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        call(
            &self.addr,
            "POST",
            "/api/workflows",
            &headers,
            Some(("application/json", &body)),
        )
    }

    /// Submits a workflow that must be accepted; answers its id.
    fn submit_ok(&self, workflow: &Value) -> String {
        let r = self.submit(workflow, None);
        assert_eq!(r.status, 201, "{} / {}", r.body, self.stderr());
        let v = r.json();
        assert_eq!(v["created"], true, "{v}");
        v["id"].as_str().expect("an id").to_owned()
    }

    /// The workflow's current view.
    fn view(&self, id: &str) -> Value {
        let r = self.call("GET", &format!("/api/workflows/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Waits until the workflow is no longer running; answers its view.
    fn finished(&self, id: &str) -> Value {
        wait_until(LIMIT, &format!("workflow {id} finishes"), || {
            let v = self.view(id);
            (v["state"] != "running").then_some(v)
        })
    }

    /// `agentos ARGS --server <this>` with `env`, bounded by [`LIMIT`].
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .args(["--server", &self.url()])
            .env_remove("AGENTOS_TOKEN")
            .env_remove("AGENTOS_SERVER");
        for (k, v) in env {
            cmd.env(k, v);
        }
        bounded(cmd)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished command left.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end, killing it (by pid) and failing the test after [`LIMIT`].
fn bounded(mut cmd: Command) -> Ran {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agentos");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            let out = out.expect("wait for agentos");
            Ran {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "agentos {:?} did not finish within {LIMIT:?}",
                cmd.get_args()
            );
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on its own connection. `body` is (content type, text).
fn call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect to serve");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some((kind, text)) => {
            req.push_str(&format!(
                "Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            ));
        }
        None if method != "GET" => req.push_str("Content-Length: 0\r\n\r\n"),
        None => req.push_str("\r\n"),
    }
    stream.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let (head, body) = split_answer(&raw);
    let status = status_of(&head);
    Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The status code of an answer's head (0 when there is none).
fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Splits an answer into its lower-cased head and its body, de-chunked where it was sent in
/// chunks (an unfinished last chunk is kept as far as it came).
fn split_answer(raw: &[u8]) -> (String, Vec<u8>) {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (String::from_utf8_lossy(raw).to_lowercase(), Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let mut body = &raw[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (head, body.to_vec());
    }
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..eol]);
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let chunk = &body[eol + 2..];
        out.extend_from_slice(&chunk[..size.min(chunk.len())]);
        if chunk.len() < size + 2 {
            break;
        }
        body = &chunk[size + 2..];
    }
    (head, out)
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: u64,
    kind: String,
    data: Value,
}

/// Reads `GET path` as an event stream (sending `Last-Event-ID: after` when given) until it
/// has been quiet for 700 ms after the first event, or 10 s without any.
fn read_events(addr: &str, path: &str, after: Option<u64>) -> (u16, Vec<Event>) {
    let mut stream = TcpStream::connect(addr).expect("connect to serve");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    if let Some(id) = after {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut last_data = Instant::now();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading events: {e}"),
        }
        let (_, body) = split_answer(&raw);
        let quiet = if body.windows(2).any(|w| w == b"\n\n") {
            Duration::from_millis(700)
        } else {
            Duration::from_secs(10)
        };
        if last_data.elapsed() > quiet || started.elapsed() > LIMIT {
            break;
        }
    }
    let (head, body) = split_answer(&raw);
    let status = status_of(&head);
    let text = String::from_utf8_lossy(&body).replace("\r\n", "\n");
    let events = text
        .split("\n\n")
        .filter_map(|block| {
            let (mut id, mut kind, mut data) = (None, "message".to_owned(), Vec::new());
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.parse::<u64>().ok(),
                    "event" => kind = value.to_owned(),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            let data = data.join("\n");
            Some(Event {
                id: id?,
                kind,
                data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
            })
        })
        .collect();
    (status, events)
}

/// A workflow as JSON: `(id, agent, depends_on)` per task.
fn workflow(name: &str, tasks: &[(&str, &str, &[&str])]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(id, agent, deps)| json!({"id": id, "agent": agent, "depends_on": deps}))
        .collect();
    json!({"name": name, "tasks": tasks})
}

/// `(task, state)` of every task of a view.
fn states(view: &Value) -> Vec<(String, String)> {
    view["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            (
                t["task"].as_str().unwrap_or("").to_owned(),
                t["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The task `key` of a view.
fn task<'a>(view: &'a Value, key: &str) -> &'a Value {
    view["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task"] == key))
        .unwrap_or_else(|| panic!("no task {key} in {view}"))
}

/// Asserts `condition` holds at every check for `window` (an observation, not a wait).
fn holds_for(window: Duration, what: &str, mut condition: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        if let Err(why) = condition() {
            panic!("{what}: {why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn submit_wait_prints_the_tasks_and_exits_like_run() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "good.ron",
        r#"(name: "review", tasks: [
            (id: "plan", agent: "coder"),
            (id: "patch", agent: "coder", input: "after {{plan}}", depends_on: ["plan"]),
        ])"#,
    );
    let ran = serve.cli(&["submit", &good, "--wait"], &[]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let id = ran.stdout.lines().next().unwrap().to_owned();
    assert!(
        ran.stdout
            .contains(&format!("workflow {id} (review): succeeded")),
        "{}",
        ran.stdout
    );
    for t in ["plan", "patch"] {
        let row = ran
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id}/{t} ")))
            .unwrap_or_else(|| panic!("no row for {t}: {}", ran.stdout));
        assert!(row.contains("succeeded"), "{row}");
    }
    assert_eq!(serve.view(&id)["state"], "succeeded");

    // A failing workflow: exit 1, the reason in the table.
    let bad = write(
        dir.path(),
        "bad.json",
        &workflow("doomed", &[("x", "flaky", &[]), ("y", "coder", &["x"])]).to_string(),
    );
    let ran = serve.cli(&["submit", &bad, "--wait"], &[]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("): failed"), "{}", ran.stdout);
    assert!(ran.stdout.contains("skipped"), "{}", ran.stdout);

    // --json: the final view, as the server gave it.
    let ran = serve.cli(&["submit", &good, "--wait", "--json"], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let v: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["name"], "review");
    assert_ne!(v["id"], id.as_str(), "a second submit is a new workflow");
}

#[test]
fn a_resubmit_with_the_same_idempotency_key_returns_the_first_workflow() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let w = workflow("once", &[("a", "coder", &[])]);
    let first = serve.submit(&w, Some("key-1"));
    assert_eq!(first.status, 201, "{}", first.body);
    let first = first.json();
    assert_eq!(first["created"], true);
    let again = serve.submit(&w, Some("key-1"));
    assert_eq!(again.status, 200, "{}", again.body);
    let again = again.json();
    assert_eq!(again["created"], false);
    assert_eq!(again["id"], first["id"]);
    // Another key is another workflow.
    let other = serve.submit(&w, Some("key-2"));
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["id"], first["id"]);
    let list = serve.call("GET", "/api/workflows", None);
    assert_eq!(list.status, 200);
    let named_once = list
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"] == "once")
        .count();
    assert_eq!(named_once, 2, "{}", list.body);

    // The CLI: same key, same id, and it says so.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "once.json", &w.to_string());
    let a = serve.cli(&["submit", &file, "--idempotency-key", "cli-key"], &[]);
    let b = serve.cli(&["submit", &file, "--idempotency-key", "cli-key"], &[]);
    assert_eq!(
        (a.code, b.code),
        (Some(0), Some(0)),
        "{}{}",
        a.stderr,
        b.stderr
    );
    assert_eq!(a.stdout, b.stdout);
    assert!(b.stderr.contains("already submitted"), "{}", b.stderr);
}

#[test]
fn an_invalid_workflow_is_refused_with_every_error() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let w = workflow(
        "broken",
        &[
            ("a", "nobody", &[]),
            ("b", "ghost_agent", &["missing_task"]),
        ],
    );
    let r = serve.submit(&w, None);
    assert_eq!(r.status, 422, "{}", r.body);
    let v = r.json();
    assert!(v["error"].is_string(), "{v}");
    let errors = v["errors"].as_array().expect("errors listed");
    assert!(errors.len() >= 3, "{v}");
    let all = v["errors"].to_string();
    for needle in ["nobody", "ghost_agent", "missing_task"] {
        assert!(all.contains(needle), "{needle} not reported: {v}");
    }
    for e in errors {
        assert!(e["message"].is_string() && e.get("entity").is_some(), "{e}");
    }
    // Nothing was created.
    let list = serve.call("GET", "/api/workflows", None).json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|w| w["name"] != "broken"),
        "{list}"
    );
    // Malformed bodies are 400 with an error, in either syntax.
    let r = call(
        &serve.addr,
        "POST",
        "/api/workflows",
        &[],
        Some(("application/json", r#"{"name": 3"#)),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"].is_string());
    let r = call(
        &serve.addr,
        "POST",
        "/api/workflows",
        &[],
        Some((
            "application/ron",
            "(name: \"w\", tasks: [(id: \"a\", colour: 1)])",
        )),
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // The CLI prints each error at its place in the RON file it sent.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.ron",
        "(name: \"broken\",\n tasks: [(id: \"a\", agent: \"nobody\"),\n         (id: \"b\", agent: \"nobody\", depends_on: [\"a\"])])",
    );
    let ran = serve.cli(&["submit", &file], &[]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr
            .starts_with("error: the server refused the request (422)"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains(&format!("{file}:2:")) && ran.stderr.contains(&format!("{file}:3:")),
        "{}",
        ran.stderr
    );
}

#[test]
fn a_suspended_agent_gets_no_task_until_it_is_resumed() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let ran = serve.cli(&["suspend", "slow"], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .starts_with("suspend: agent \"slow\" (2 instances: ")
            && ran.stdout.contains("slow#0 suspended")
            && ran.stdout.contains("slow#1 suspended"),
        "{}",
        ran.stdout
    );
    let ps = serve.cli(&["ps"], &[]);
    assert_eq!(ps.code, Some(0));
    for i in 0..2 {
        let row = ps
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("slow#{i} ")))
            .unwrap_or_else(|| panic!("no slow#{i}: {}", ps.stdout));
        assert!(row.contains("suspended"), "{row}");
    }

    let id = serve.submit_ok(&workflow(
        "held",
        &[("a", "slow", &[]), ("b", "slow", &[]), ("c", "coder", &[])],
    ));
    // Other agents keep working...
    wait_until(LIMIT, "the coder's task finishes", || {
        (task(&serve.view(&id), &format!("{id}/c"))["state"] == "succeeded").then_some(())
    });
    // ...but nothing is dispatched to the suspended one.
    holds_for(
        Duration::from_millis(1500),
        "no dispatch while suspended",
        || {
            let v = serve.view(&id);
            for (t, state) in states(&v) {
                if t != format!("{id}/c") && !matches!(state.as_str(), "pending" | "ready") {
                    return Err(format!("{t} is {state}"));
                }
            }
            Ok(())
        },
    );

    let r = serve.call("POST", "/api/agents/slow/resume", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["action"], "resume");
    let blocks = v["control_blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|b| b["state"] != "suspended"), "{v}");
    let done = serve.finished(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        serve
            .call("POST", "/api/agents/nobody/suspend", None)
            .status,
        404
    );
}

#[test]
fn a_killed_agents_task_completes_on_the_fallback() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let id = serve.submit_ok(&workflow("rescue", &[("job", "primary", &[])]));
    let key = format!("{id}/job");
    wait_until(LIMIT, "the job runs on the primary", || {
        (task(&serve.view(&id), &key)["state"] == "running").then_some(())
    });
    let r = serve.call("POST", "/api/agents/primary/kill", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["action"], "kill");
    // The primary's call takes 20 s: finishing well before that means the kill moved the
    // task on, to the fallback.
    let started = Instant::now();
    let done = serve.finished(&id);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(done["state"], "succeeded", "{done}");
    let job = task(&done, &key);
    assert!(
        job["finished_by"]
            .as_str()
            .is_some_and(|f| f.starts_with("backup#")),
        "{job}"
    );
    let history = job["history"].as_array().unwrap();
    assert_eq!(history[0]["agent"], "primary", "{job}");
    assert!(history[0]["error"].is_string(), "{job}");
    assert_eq!(history.last().unwrap()["agent"], "backup", "{job}");
}

#[test]
fn cancel_leaves_nothing_running() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let id = serve.submit_ok(&workflow(
        "chain",
        &[
            ("a", "sleeper", &[]),
            ("b", "sleeper", &["a"]),
            ("c", "coder", &["b"]),
        ],
    ));
    wait_until(LIMIT, "the first task runs", || {
        (task(&serve.view(&id), &format!("{id}/a"))["state"] == "running").then_some(())
    });
    let r = serve.call("DELETE", &format!("/api/workflows/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "cancelled", "{}", r.body);
    let v = wait_until(LIMIT, "every task is terminal", || {
        let v = serve.view(&id);
        states(&v)
            .iter()
            .all(|(_, s)| !matches!(s.as_str(), "pending" | "ready" | "running"))
            .then_some(v)
    });
    for (t, s) in states(&v) {
        assert_eq!(s, "cancelled", "{t}: {v}");
    }
    let all = serve.call("GET", "/api/tasks", None).json();
    assert!(
        all["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] != "running"),
        "{all}"
    );
    let agents = serve.call("GET", "/api/agents", None).json();
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["current_task"].is_null()),
        "{agents}"
    );
    // Cancelling it again is a conflict; an unknown workflow is not found.
    assert_eq!(
        serve
            .call("DELETE", &format!("/api/workflows/{id}"), None)
            .status,
        409
    );
    assert_eq!(
        serve.call("DELETE", "/api/workflows/no_such", None).status,
        404
    );

    // The CLI's cancel.
    let other = serve.submit_ok(&workflow("chain", &[("a", "sleeper", &[])]));
    let ran = serve.cli(&["cancel", &other], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .starts_with(&format!("cancelled workflow {other}: cancelled")),
        "{}",
        ran.stdout
    );
    let ran = serve.cli(&["cancel", "no_such"], &[]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("(404)"), "{}", ran.stderr);

    // The audit log says who cancelled what.
    let audit = serve.call("GET", "/api/audit?limit=10000", None);
    assert_eq!(audit.status, 200, "{}", audit.body);
    let entries = audit.json()["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for wf in [&id, &other] {
        let e = entries
            .iter()
            .find(|e| e["kind"] == "workflow_cancelled" && e["detail"]["workflow"] == wf.as_str())
            .unwrap_or_else(|| panic!("no workflow_cancelled entry for {wf}: {}", audit.body));
        assert!(
            e["actor"].as_str().is_some_and(|a| a.starts_with("api ")),
            "{e}"
        );
    }
}

#[test]
fn events_resume_after_the_last_event_id() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let id = serve.submit_ok(&workflow(
        "watched",
        &[("a", "coder", &[]), ("b", "coder", &["a"])],
    ));
    assert_eq!(serve.finished(&id)["state"], "succeeded");
    let path = format!("/api/events?workflow={id}");
    let (status, all) = read_events(&serve.addr, &path, None);
    assert_eq!(status, 200);
    assert!(all.len() >= 4, "a few transitions per task: {all:?}");
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert!(
        all.iter()
            .any(|e| e.data.to_string().contains(&format!("{id}/b"))),
        "{all:?}"
    );

    // Reconnecting with the id of an event in the middle gets exactly what came after it.
    let mid = all.len() / 2;
    let (status, rest) = read_events(&serve.addr, &path, Some(ids[mid - 1]));
    assert_eq!(status, 200);
    assert_eq!(rest, all[mid..].to_vec());

    // The CLI prints the same backlog and stops by itself.
    let ran = serve.cli(&["events", "--workflow", &id], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.stdout.lines().count(), all.len(), "{}", ran.stdout);
    assert!(ran.stdout.contains(&format!("{id}/a")), "{}", ran.stdout);
    let after = ids[mid - 1].to_string();
    let ran = serve.cli(
        &["events", "--workflow", &id, "--after", &after, "--json"],
        &[],
    );
    let got: Vec<u64> = ran
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, ids[mid..].to_vec());
}

#[test]
fn the_api_needs_the_token_when_one_is_set() {
    let config = agents_config().replace(
        "runtime: (shutdown_timeout_secs: 1)",
        "runtime: (shutdown_timeout_secs: 1, api: (token_env: \"AGENTOS_IT_TOKEN\"))",
    );
    let serve = Serve::start(&config, &[], &[("AGENTOS_IT_TOKEN", "s3cret")]);
    wait_until(LIMIT, "the banner", || {
        let out = serve.stdout.lock().unwrap().join("\n");
        out.contains("auth:").then_some(())
    });
    let banner = serve.stdout.lock().unwrap().join("\n");
    assert!(banner.contains("bearer token is required"), "{banner}");
    assert!(!banner.contains("s3cret"), "{banner}");

    for path in ["/api/tasks", "/api/agents", "/api/workflows"] {
        let r = serve.call("GET", path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.json()["error"].is_string());
        let wrong = call(
            &serve.addr,
            "GET",
            path,
            &[("Authorization", "Bearer nope")],
            None,
        );
        assert_eq!(wrong.status, 401, "{path}");
        let right = call(
            &serve.addr,
            "GET",
            path,
            &[("Authorization", "Bearer s3cret")],
            None,
        );
        assert_eq!(right.status, 200, "{path}: {}", right.body);
    }
    let r = serve.submit(&workflow("w", &[("a", "coder", &[])]), None);
    assert_eq!(r.status, 401, "a submit without the token is refused");

    let ran = serve.cli(&["ps"], &[]);
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("(401)") && ran.stderr.contains("AGENTOS_TOKEN"),
        "{}",
        ran.stderr
    );
    let ran = serve.cli(&["ps"], &[("AGENTOS_TOKEN", "s3cret")]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("coder#0"), "{}", ran.stdout);
}

#[test]
fn off_loopback_serve_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "c.ron", &agents_config());
    let mut cmd = Command::new(bin());
    cmd.args(["serve", &cfg, "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("AGENTOS_IT_TOKEN");
    let ran = bounded(cmd);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("without an API token"),
        "{}",
        ran.stderr
    );
    assert!(ran.stdout.is_empty(), "nothing was served: {}", ran.stdout);

    // With a token it serves, and the token is what lets a client in.
    let serve = Serve::start_on(
        "0.0.0.0:0",
        &agents_config(),
        &["--token-env", "AGENTOS_IT_TOKEN"],
        &[("AGENTOS_IT_TOKEN", "0ff-loopback")],
    );
    assert_eq!(serve.call("GET", "/api/agents", None).status, 401);
    let r = call(
        &serve.addr,
        "GET",
        "/api/agents",
        &[("Authorization", "Bearer 0ff-loopback")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_cli_lists_workflows_tasks_agents_and_events() {
    let config = AGENTS.replace(
        "WORKFLOWS",
        r#"workflows: [(name: "declared", tasks: [(id: "x", agent: "coder")])],"#,
    );
    let serve = Serve::start(&config, &[], &[]);
    assert_eq!(serve.finished("declared")["state"], "succeeded");
    let id = serve.submit_ok(&workflow("extra", &[("a", "coder", &[])]));
    assert_eq!(serve.finished(&id)["state"], "succeeded");

    let ran = serve.cli(&["workflows"], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert!(lines[0].starts_with("ID"), "{}", ran.stdout);
    let declared = lines.iter().find(|l| l.starts_with("declared ")).unwrap();
    assert!(
        declared.contains(" declared ") && declared.contains("succeeded"),
        "{declared}"
    );
    let extra = lines
        .iter()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap();
    assert!(extra.contains("submitted"), "{extra}");

    let ran = serve.cli(&["tasks", "--workflow", &id], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{id}/a ")),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("declared/x"), "{}", ran.stdout);
    let ran = serve.cli(&["tasks", "--json"], &[]);
    let v: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(v["tasks"].as_array().unwrap().len(), 2, "{v}");
    let ran = serve.cli(&["tasks", "--workflow", "no_such"], &[]);
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("(404)"), "{}", ran.stderr);

    let ran = serve.cli(&["ps", "--json"], &[]);
    let blocks: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    let names: Vec<String> = blocks
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{}#{}",
                b["id"]["agent"].as_str().unwrap(),
                b["id"]["replica"]
            )
        })
        .collect();
    for expected in ["coder#0", "slow#0", "slow#1", "backup#0"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }

    let ran = serve.cli(&["events", "--task", &format!("{id}/a")], &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(!ran.stdout.is_empty());
    assert!(
        ran.stdout
            .lines()
            .all(|l| l.contains(&format!("{id}/a")) && !l.contains("declared/x")),
        "{}",
        ran.stdout
    );
}

#[test]
fn serve_runs_config_dynamic_and_the_api_shows_its_spawned_tasks() {
    let text = std::fs::read_to_string(crate::helpers::repo().join("config/dynamic.ron")).unwrap();
    let serve = Serve::start(&text, &[], &[]);
    let v = serve.finished("jobs");
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["spawned"], 4, "{v}");
    for i in 1..=4 {
        let t = task(&v, &format!("jobs/split.{i}"));
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["spawned_by"], "split", "{t}");
        assert_eq!(t["agent"], "worker", "{t}");
    }
    let merge = task(&v, "jobs/merge");
    let deps: Vec<&str> = merge["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(deps, ["split", "split.1", "split.2", "split.3", "split.4"]);
    // The spawns are in the event stream and in the metrics like any other task.
    let (status, events) = read_events(&serve.addr, "/api/events?workflow=jobs", None);
    assert_eq!(status, 200);
    let spawned = events.iter().filter(|e| e.kind == "task_spawned").count();
    assert_eq!(spawned, 4, "{events:?}");
    let metrics = serve.call("GET", "/metrics", None);
    assert!(
        metrics
            .body
            .contains("agentos_scheduler_tasks_spawned_total{agent=\"worker\"} 4"),
        "{}",
        metrics.body
    );
}

#[test]
fn a_crashed_server_resumes_its_submitted_workflow_on_restart() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let flow = workflow(
        "durable",
        &[
            ("a", "coder", &[]),
            ("b", "slow", &["a"]),
            ("c", "coder", &["b"]),
        ],
    );
    let r = serve.submit(&flow, Some("k-durable"));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    wait_until(LIMIT, "b runs (a is done)", || {
        (task(&serve.view(&id), &format!("{id}/b"))["state"] == "running").then_some(())
    });
    let serve = serve.crash_and_restart();
    let (code, health) = {
        let r = serve.call("GET", "/healthz", None);
        (r.status, r.json())
    };
    assert_eq!(code, 200);
    let resumed = &health["run"]["resumed"];
    assert_eq!(resumed["resumes"], 1, "{health}");
    assert_eq!(resumed["attempts_continued"], 1, "b continues: {health}");
    // The submission survived, under its id and its idempotency key.
    let again = serve.submit(&flow, Some("k-durable"));
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.json()["created"], false);
    let done = serve.finished(&id);
    assert_eq!(done["state"], "succeeded", "{done} / {}", serve.stderr());
    let a = task(&done, &format!("{id}/a"));
    assert_eq!(
        a["attempts"], 1,
        "a succeeded before the crash and did not run again: {a}"
    );
    let b = task(&done, &format!("{id}/b"));
    assert_eq!(
        b["attempts"], 1,
        "b's attempt continued, it was not a new one: {b}"
    );
}

#[test]
fn a_suspend_survives_a_crash_and_holds_the_agents_tasks_until_resumed() {
    let serve = Serve::start(&agents_config(), &[], &[]);
    let r = serve.call("POST", "/api/agents/slow/suspend", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = serve.submit_ok(&workflow("held", &[("a", "slow", &[])]));
    let serve = serve.crash_and_restart();
    // The server answers before every instance is up: wait for slow#0 to be listed.
    let ps = wait_until(LIMIT, "slow#0 listed by ps", || {
        let ps = serve.cli(&["ps"], &[]);
        assert_eq!(ps.code, Some(0), "{}", ps.stderr);
        ps.stdout
            .lines()
            .any(|l| l.starts_with("slow#0 "))
            .then_some(ps)
    });
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with("slow#0 ") && l.contains("suspended")),
        "{}",
        ps.stdout
    );
    holds_for(
        Duration::from_millis(1000),
        "no dispatch while suspended",
        || match task(&serve.view(&id), &format!("{id}/a"))["state"].as_str() {
            Some("pending" | "ready") => Ok(()),
            other => Err(format!("a is {other:?}")),
        },
    );
    let r = serve.call("POST", "/api/agents/slow/resume", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let done = serve.finished(&id);
    assert_eq!(done["state"], "succeeded", "{done}");
}
