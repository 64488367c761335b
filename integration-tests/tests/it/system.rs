//! The actor system end to end: the demo, supervision, retries, fallbacks, failures, metrics.

use std::time::Duration;

use agentos_actors::system::RunEnd;
use agentos_runtime::model::TaskState;

use crate::helpers::{http, parse, repo, run, run_with, task};

#[test]
fn demo_completes_with_every_task_succeeded_and_really_fixes_the_bug() {
    let data = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/demo.ron")).unwrap();
    let done = run(parse(&text), data.path());
    assert_eq!(done.end, RunEnd::Completed);
    for t in &done.snapshot.tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    }
    // Supervision: the analyst panicked once and was rebuilt; its task came back as a failed attempt.
    let analyse = task(&done.snapshot, "repair/analyse");
    assert_eq!(analyse.attempts, 2);
    assert!(
        analyse.history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("panicked"),
        "{:?}",
        analyse.history
    );
    assert!(done.restarts >= 1);
    // The analysis ran the real test suite and saw it fail.
    assert!(
        analyse.output.as_deref().unwrap().contains("def median"),
        "{:?}",
        analyse.output
    );
    // Retries ran out on the patcher; the fallback agent wrote the patch.
    let patch = task(&done.snapshot, "repair/patch");
    assert_eq!(patch.finished_by.as_deref(), Some("senior_patcher#0"));
    assert_eq!(patch.attempts, 3);
    // The tests really ran again after the patch, as a child process, and passed.
    let test = task(&done.snapshot, "repair/test");
    let out = test.output.as_deref().unwrap();
    assert!(out.contains("exit code 0") && out.contains("OK"), "{out}");
    // The patch went to the run's copy; the shipped example stays broken for the next run.
    let copy = std::fs::read_dir(done.run_dir.join("workspaces"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(std::fs::read_to_string(copy.join("stats.py"))
        .unwrap()
        .contains("ordered[middle - 1]"));
    let original = std::fs::read_to_string(repo().join("examples/calc-repo/stats.py")).unwrap();
    assert!(!original.contains("ordered[middle - 1]"));
    // The reporter got the planner's bus message.
    let report = task(&done.snapshot, "repair/report");
    assert!(
        report.output.as_deref().unwrap().contains("plan ready"),
        "{:?}",
        report.output
    );
}

#[test]
fn injected_panics_and_hangs_complete_through_restarts() {
    let data = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/faults.ron")).unwrap();
    let done = run(parse(&text), data.path());
    assert_eq!(done.end, RunEnd::Completed);
    assert!(
        done.snapshot
            .tasks
            .iter()
            .all(|t| t.state == TaskState::Succeeded),
        "{:#?}",
        done.snapshot.tasks
    );
    assert!(
        done.restarts >= 1,
        "the chaos backend should have panicked at least once"
    );
    let failed_attempts: Vec<&str> = done
        .snapshot
        .tasks
        .iter()
        .flat_map(|t| t.history.iter().filter_map(|a| a.error.as_deref()))
        .collect();
    assert!(
        failed_attempts.iter().any(|e| e.contains("panicked")),
        "{failed_attempts:?}"
    );
}

const TWO_AGENTS: &str = r#"(
    version: 1,
    backends: [(name: "sim", kind: Sim((latency: (base_ms: 1))))],
    agents: [
        (name: "flaky", role: "r", backend: "sim", fallback: "backup",
         retry: (max_attempts: 2, initial_backoff_ms: 5, max_backoff_ms: 10),
         sim: (faults: [(attempt: 1, kind: Error), (attempt: 2, kind: Hang)]), timeout_secs: 0.3),
        (name: "backup", role: "r", backend: "sim", retry: (max_attempts: 1), sim: (faults: BACKUP_FAULTS)),
        (name: "fine", role: "r", backend: "sim"),
    ],
    workflows: [(name: "w", tasks: [
        (id: "first", agent: "flaky", input: "go"),
        (id: "second", agent: "fine", input: "{{first}}", depends_on: ["first"]),
        (id: "third", agent: "fine", depends_on: ["second"]),
        (id: "independent", agent: "fine", input: "unrelated"),
    ])],
)"#;

#[test]
fn retries_exhausted_then_fallback_succeeds() {
    let data = tempfile::tempdir().unwrap();
    let done = run(
        parse(&TWO_AGENTS.replace("BACKUP_FAULTS", "[]")),
        data.path(),
    );
    let first = task(&done.snapshot, "w/first");
    assert_eq!(first.state, TaskState::Succeeded);
    assert_eq!(first.finished_by.as_deref(), Some("backup#0"));
    assert_eq!(first.attempts, 3);
    assert!(first.history[0]
        .error
        .as_deref()
        .unwrap()
        .contains("forced error"));
    assert!(
        first.history[1]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        first.history
    );
    assert!(done
        .snapshot
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Succeeded));
}

#[test]
fn fallback_exhausted_fails_and_skips_dependents_with_reasons() {
    let data = tempfile::tempdir().unwrap();
    let done = run(
        parse(&TWO_AGENTS.replace("BACKUP_FAULTS", "[(attempt: 1, kind: Error)]")),
        data.path(),
    );
    assert_eq!(done.end, RunEnd::Completed);
    let first = task(&done.snapshot, "w/first");
    assert_eq!(first.state, TaskState::Failed);
    let reason = first.reason.as_deref().unwrap();
    assert!(
        reason.contains("3 attempts") && reason.contains("flaky -> backup"),
        "{reason}"
    );
    for key in ["w/second", "w/third"] {
        let t = task(&done.snapshot, key);
        assert_eq!(t.state, TaskState::Skipped);
        assert_eq!(t.reason.as_deref(), Some("upstream task w/first failed"));
        assert_eq!(t.attempts, 0);
    }
    assert_eq!(
        task(&done.snapshot, "w/independent").state,
        TaskState::Succeeded
    );
}

#[test]
fn metrics_and_api_are_served_after_a_run() {
    let data = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("config/demo.ron")).unwrap();
    let probe: Box<dyn FnOnce(std::net::SocketAddr) -> String + Send> = Box::new(|addr| {
        let (status, metrics) = http(addr, "GET", "/metrics");
        assert_eq!(status, 200);
        let (status, health) = http(addr, "GET", "/healthz");
        assert_eq!(status, 200, "{health}");
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["simulated_backends"][0], "sim");
        let (status, tasks) = http(addr, "GET", "/api/tasks");
        assert_eq!(status, 200);
        let tasks: serde_json::Value = serde_json::from_str(&tasks).unwrap();
        assert_eq!(tasks["tasks"].as_array().unwrap().len(), 5);
        let (status, agents) = http(addr, "GET", "/api/agents");
        assert_eq!(status, 200);
        let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
        assert_eq!(agents.as_array().unwrap().len(), 6);
        assert_eq!(http(addr, "GET", "/nope").0, 404);
        assert_eq!(http(addr, "POST", "/metrics").0, 405);
        metrics
    });
    let done = run_with(
        parse(&text),
        data.path(),
        Duration::from_secs(60),
        Some(probe),
    );
    let metrics = done.probe.unwrap();
    for name in [
        "agentos_scheduler_tasks{state=\"succeeded\"}",
        "agentos_scheduler_task_attempts_total",
        "agentos_scheduler_task_retries_total",
        "agentos_scheduler_task_fallbacks_total",
        "agentos_agent_step_duration_seconds_bucket",
        "agentos_llm_requests_total{backend=\"sim\",outcome=\"ok\"}",
        "agentos_llm_requests_total{backend=\"sim\",outcome=\"injected\"}",
        "agentos_llm_prompt_tokens_total",
        "agentos_llm_completion_tokens_total",
        "agentos_tool_calls_total{tool=\"run_command\",outcome=\"ok\"}",
        "agentos_supervisor_restarts_total{kind=\"agent\"}",
        "agentos_bus_messages_sent_total",
        "agentos_bus_messages_delivered_total",
        "agentos_agent_instances",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}
