//! The context pager end to end: `config/long-context.ron` pages context out to the store and
//! back, every prompt stays within its budget, and a task input that outgrows the budget at
//! run time fails with a clear, final error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentos_actors::system::{boot, BootOptions, RunEnd};
use agentos_runtime::config::Config;
use agentos_runtime::model::TaskState;
use agentos_runtime::store::Store;
use serde_json::Value;

use crate::helpers::{parse, repo, run, task};

struct Traced {
    end: RunEnd,
    snapshot: agentos_actors::protocol::RunSnapshot,
    stats: std::collections::BTreeMap<String, agentos_runtime::context::AgentStats>,
    run_id: String,
    events: Vec<Value>,
}

fn run_traced(cfg: Config, data_dir: &Path) -> Traced {
    let trace = data_dir.join("trace.jsonl");
    let traced = actix_rt::System::new().block_on({
        let trace = trace.clone();
        let data_dir = data_dir.to_path_buf();
        async move {
            let opts = BootOptions {
                trace: Some(trace),
                data_dir: Some(data_dir),
                prometheus: None,
                event_window: 0,
                resume: Default::default(),
            };
            let sys = boot(Arc::new(cfg), opts).expect("boot");
            let end = sys
                .wait(actix_rt::time::sleep(Duration::from_secs(60)))
                .await;
            let snapshot = sys.snapshot().await.expect("snapshot");
            sys.stop().await;
            let stats = sys.board.pager_stats();
            Traced {
                end,
                snapshot,
                stats,
                run_id: sys.run_id.clone(),
                events: Vec::new(),
            }
        }
    });
    let events = std::fs::read_to_string(&trace)
        .expect("trace written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    Traced { events, ..traced }
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn long_context_pages_out_faults_in_and_stays_within_budget() {
    let cfg = Config::load(&repo().join("config/long-context.ron")).expect("valid config");
    let dir = tempfile::tempdir().unwrap();
    let r = run_traced(cfg, dir.path());
    assert_eq!(r.end, RunEnd::Completed);
    for t in &r.snapshot.tasks {
        assert_eq!(t.state, TaskState::Succeeded, "{}: {:?}", t.task, t.reason);
    }
    for agent in ["reader", "auditor"] {
        let s = &r.stats[agent];
        assert!(s.page_faults > 0, "{agent}: no page faults: {s:?}");
        assert!(s.tokens_saved > 0, "{agent}: no tokens saved: {s:?}");
        assert!(s.evicted_pages > 0, "{agent}: nothing evicted: {s:?}");
        assert!(s.max_prompt_tokens <= s.budget_tokens, "{agent}: {s:?}");
    }
    let prompts = of_kind(&r.events, "prompt_built");
    assert!(prompts.len() >= 20, "{} prompts", prompts.len());
    for p in &prompts {
        let (tokens, budget) = (p["tokens"].as_u64().unwrap(), p["budget"].as_u64().unwrap());
        assert!(tokens <= budget, "prompt over budget: {p}");
    }
    assert!(!of_kind(&r.events, "page_evicted").is_empty());
    let faults = of_kind(&r.events, "page_fault");
    assert!(!faults.is_empty());
    assert!(faults.iter().all(|f| f["tokens"].as_u64().unwrap() > 0));
    // The writer received both studies as shared pages (its input quotes neither).
    let writer = prompts.iter().find(|p| p["agent"] == "writer").unwrap();
    assert_eq!(
        writer["messages"].as_u64(),
        Some(4),
        "system, task and two shared pages"
    );

    let store_path = dir.path().join("store.db");
    assert!(store_path.is_file(), "the store file exists");
    let store = Store::open(&store_path).unwrap();
    let pages = store.count_pages(&r.run_id).unwrap();
    // Every page ever appended is there: 2 pinned + 2 per exchange, per context.
    assert!(pages >= 2 * 2 + 2 * (11 + 8), "only {pages} pages stored");
    assert_eq!(store.count_pages("some-other-run").unwrap(), 0);
}

#[test]
fn a_rendered_input_larger_than_the_budget_fails_the_task_with_a_clear_final_error() {
    let long = "word ".repeat(600);
    let cfg = parse(&format!(
        r#"(
    version: 1,
    runtime: (data_dir: "../.agentos"),
    backends: [(name: "sim", kind: Sim((latency: (base_ms: 1))))],
    agents: [
        (name: "talker", role: "talks", backend: "sim", sim: (script: [Answer("{long}")])),
        (name: "small", role: "listens", backend: "sim",
         context: (window_tokens: 512, reserve_output_tokens: 128),
         retry: (max_attempts: 3, initial_backoff_ms: 10)),
    ],
    workflows: [(name: "w", tasks: [
        (id: "a", agent: "talker", input: "say a lot"),
        (id: "b", agent: "small", input: "Answer this: {{{{a}}}}", depends_on: ["a"]),
    ])],
)"#
    ));
    let dir = tempfile::tempdir().unwrap();
    let f = run(cfg, dir.path());
    let b = task(&f.snapshot, "w/b");
    assert_eq!(b.state, TaskState::Failed);
    let reason = b.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("agent \"small\"") && reason.contains("context budget is 384"),
        "{reason}"
    );
    assert_eq!(b.attempts, 1, "a budget error is final, not retried");
}

#[test]
fn a_store_that_cannot_be_opened_is_a_start_up_error() {
    let cfg = parse(
        r#"(version: 1, backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    let dir = tempfile::tempdir().unwrap();
    // A folder where the database file should be.
    std::fs::create_dir_all(dir.path().join("store.db")).unwrap();
    let err = actix_rt::System::new().block_on(async move {
        let opts = BootOptions {
            trace: None,
            data_dir: Some(dir.path().to_path_buf()),
            prometheus: None,
            event_window: 0,
            resume: Default::default(),
        };
        match boot(Arc::new(cfg), opts) {
            Ok(_) => panic!("boot should fail"),
            Err(e) => format!("{e:#}"),
        }
    });
    assert!(err.contains("cannot open the store at"), "{err}");
}
