//! The audit log and retention end to end, through the built binary: `agentos run` writes a
//! run into a data directory's store, `agentos runs` lists it, `agentos audit` reads its log
//! back (table and JSON lines), `agentos gc` removes it and shrinks the file; `agentos serve`
//! answers `GET /api/audit` for its own run and names the run in `/healthz`.
//!
//! `the_audit_log_shows_the_runs_llm_and_tool_calls` checks entries that the journal and audit
//! writers of durable execution produce (LLM calls, tool calls, task state changes, the run
//! start); it fails on a tree without them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{agentos_bin, http, output_within, repo, wait_until, Output};

/// The longest one command may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `agentos ARGS` to its end; kills it (by pid) and fails the test after [`LIMIT`].
fn agentos(args: &[&str]) -> Output {
    let mut cmd = Command::new(agentos_bin());
    cmd.args(args)
        .env_remove("AGENTOS_TOKEN")
        // The demo's run_command needs the sandbox launcher: this very binary.
        .env(agentos_runtime::sandbox::LAUNCHER_ENV, agentos_bin());
    output_within(cmd, LIMIT, &format!("agentos {args:?}"))
}

/// `agentos run config/demo.ron --data-dir DATA`, which must succeed.
fn run_demo(data: &Path) {
    let demo = repo().join("config/demo.ron");
    let ran = agentos(&[
        "run",
        &demo.to_string_lossy(),
        "--data-dir",
        &data.to_string_lossy(),
    ]);
    assert_eq!(
        ran.code,
        Some(0),
        "run failed:\n{}{}",
        ran.stdout,
        ran.stderr
    );
}

/// Every line of `text` as JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn store_bytes(data: &Path) -> u64 {
    let len = |name: &str| std::fs::metadata(data.join(name)).map_or(0, |m| m.len());
    len("store.db") + len("store.db-wal")
}

#[test]
fn runs_audit_and_gc_read_and_prune_the_store_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_string_lossy().into_owned();

    // Before any run: no store, a clear error, exit 2, and nothing created.
    for args in [
        vec!["audit", "--data-dir", &d],
        vec!["runs", "--data-dir", &d],
        vec!["gc", "--data-dir", &d, "--keep-runs", "0"],
    ] {
        let ran = agentos(&args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("no store at"),
            "{args:?}: {}",
            ran.stderr
        );
    }
    assert!(!data.join("store.db").exists());

    run_demo(&data);
    let ran = agentos(&["runs", "--data-dir", &d, "--json"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let runs = json_lines(&ran.stdout);
    assert_eq!(runs.len(), 1, "{}", ran.stdout);
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["status"], "finished", "{}", ran.stdout);
    let table = agentos(&["runs", "--data-dir", &d]);
    assert!(table.stdout.starts_with("RUN"), "{}", table.stdout);
    assert!(table.stdout.contains(&run_id), "{}", table.stdout);

    // The newest run by default; every line is an entry of that run, in time order.
    let ran = agentos(&["audit", "--data-dir", &d, "--json", "--limit", "10000"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let entries = json_lines(&ran.stdout);
    for e in &entries {
        assert_eq!(e["run"], run_id.as_str(), "{e}");
        assert!(e["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        assert!(e["kind"].is_string() && e["actor"].is_string(), "{e}");
    }
    let times: Vec<i64> = entries
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let explicit = agentos(&[
        "audit",
        "--data-dir",
        &d,
        "--json",
        "--run",
        &run_id,
        "--limit",
        "10000",
    ]);
    assert_eq!(explicit.stdout, ran.stdout);
    let table = agentos(&["audit", "--data-dir", &d]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.starts_with("AT"), "{}", table.stdout);
    // Filters that match nothing give nothing, not an error.
    let none = agentos(&[
        "audit",
        "--data-dir",
        &d,
        "--json",
        "--agent",
        "nobody",
        "--since",
        "1h",
    ]);
    assert_eq!(
        (none.code, none.stdout.as_str()),
        (Some(0), ""),
        "{}",
        none.stderr
    );

    // Wrong arguments: exit 2 with a message naming the argument.
    for (args, says) in [
        (
            vec!["audit", "--data-dir", &d, "--since", "soon"],
            "--since",
        ),
        (vec!["audit", "--data-dir", &d, "--run", "nope"], "no run"),
        (
            vec!["gc", "--data-dir", &d, "--older-than", "7"],
            "--older-than",
        ),
        (vec!["gc", "--data-dir", &d], "--keep-runs"),
    ] {
        let ran = agentos(&args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(says), "{args:?}: {}", ran.stderr);
    }

    // A second run; gc keeps the newest and says what it removed.
    run_demo(&data);
    let before = store_bytes(&data);
    let ran = agentos(&["gc", "--data-dir", &d, "--keep-runs", "1"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("removed 1 run"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(&format!("removed {run_id}")),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("store size: "), "{}", ran.stdout);
    let runs = json_lines(&agentos(&["runs", "--data-dir", &d, "--json"]).stdout);
    assert_eq!(runs.len(), 1);
    assert_ne!(runs[0]["run_id"], run_id.as_str());
    let gone = agentos(&["audit", "--data-dir", &d, "--run", &run_id]);
    assert_eq!(gone.code, Some(2), "{}", gone.stderr);

    let ran = agentos(&["gc", "--data-dir", &d, "--keep-runs", "0"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stdout.contains("removed 1 run"), "{}", ran.stdout);
    assert!(
        store_bytes(&data) < before,
        "the store did not shrink: {before} -> {}",
        store_bytes(&data)
    );
    let ran = agentos(&["runs", "--data-dir", &d, "--json"]);
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(0), ""));
}

/// Needs the journal and audit writers of durable execution.
#[test]
fn the_audit_log_shows_the_runs_llm_and_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_string_lossy().into_owned();
    run_demo(&data);
    let ran = agentos(&["audit", "--data-dir", &d, "--json", "--limit", "10000"]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let entries = json_lines(&ran.stdout);
    let of = |kind: &str| -> Vec<&Value> { entries.iter().filter(|e| e["kind"] == kind).collect() };
    assert!(
        !of("run_started").is_empty(),
        "no run_started entry:\n{}",
        ran.stdout
    );
    let calls = of("llm_call");
    assert!(!calls.is_empty(), "no llm_call entry:\n{}", ran.stdout);
    for c in &calls {
        assert!(c["detail"]["reply"].is_object(), "{c}");
        assert!(
            c["detail"]["prompt"]
                .as_str()
                .is_some_and(|p| p.contains("[system]")),
            "{c}"
        );
        assert!(c["agent"].is_string() && c["task"].is_string(), "{c}");
    }
    let tools = of("tool_call");
    assert!(
        tools.iter().any(|t| t["detail"]["tool"] == "read_file"),
        "no read_file tool_call:\n{}",
        ran.stdout
    );
    assert!(
        of("task_state")
            .iter()
            .any(|t| t["detail"]["to"] == "succeeded"),
        "no task reached succeeded in the log:\n{}",
        ran.stdout
    );
    // The filters narrow to one agent and one task.
    let patch = agentos(&[
        "audit",
        "--data-dir",
        &d,
        "--json",
        "--task",
        "repair/patch",
        "--limit",
        "10000",
    ]);
    let patch = json_lines(&patch.stdout);
    assert!(!patch.is_empty());
    assert!(
        patch.iter().all(|e| e["task"] == "repair/patch"),
        "{patch:?}"
    );
}

/// `agentos serve` of the demo on a free port; killed by pid when dropped.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_demo(data: &Path) -> Serve {
    let mut child = Command::new(agentos_bin())
        .arg("serve")
        .arg(repo().join("config/demo.ron"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("AGENTOS_TOKEN")
        .env(agentos_runtime::sandbox::LAUNCHER_ENV, agentos_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start agentos serve");
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("serve printed no address")
    });
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .parse()
        .expect("an address");
    Serve { child, addr }
}

#[test]
fn serve_answers_the_audit_log_of_its_run_and_names_it_in_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let serve = serve_demo(&data);
    let health: Value = wait_until(LIMIT, "the demo's workflow to finish", || {
        let (status, body) = http(serve.addr, "GET", "/healthz");
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["done"] == true).then_some(v)
    });
    let run_id = health["run"]["id"]
        .as_str()
        .expect("healthz names the run")
        .to_owned();
    assert!(health["run"]["resumed"].is_null(), "a fresh run: {health}");

    let (status, body) = http(serve.addr, "GET", "/api/audit?limit=10000");
    assert_eq!(status, 200, "{body}");
    let log: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(log["run"], run_id.as_str());
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(log["count"].as_u64(), Some(entries.len() as u64));
    assert!(entries.iter().all(|e| e["run"] == run_id.as_str()));

    for (query, status_wanted) in [
        ("/api/audit?limit=0", 400),
        ("/api/audit?limit=10001", 400),
        ("/api/audit?since=later", 400),
        ("/api/audit?task=patch", 400),
        ("/api/audit?colour=red", 400),
        ("/api/audit?run=no-such-run", 404),
        ("/api/audit?agent=nobody&since=10m", 200),
    ] {
        let (status, body) = http(serve.addr, "GET", query);
        assert_eq!(status, status_wanted, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if status == 200 {
            assert_eq!(v["count"], 0, "{query}: {body}");
        } else {
            assert!(v["error"].is_string(), "{query}: {body}");
        }
    }
    // The document describes it.
    let (_, doc) = http(serve.addr, "GET", "/api/openapi.json");
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(
        doc["paths"]["/api/audit"]["get"].is_object(),
        "not in the OpenAPI document"
    );
}
