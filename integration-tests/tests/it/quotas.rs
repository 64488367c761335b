//! Quotas, preemption and resource-aware concurrency in a running system: a budget's hard
//! stop fails the task with the reason and its counter outlives the run; a preempted task
//! continues as the same attempt from its journal; injected pressure lowers the concurrency
//! and its end raises it back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_actors::protocol::SubmitWorkflow;
use agentos_actors::system::{boot, BootOptions, RunningSystem};
use agentos_runtime::config::{Config, WorkflowFormat, WorkflowSpec};
use agentos_runtime::model::TaskState;
use agentos_runtime::store::Store;

use crate::helpers::{parse, run, run_with, task};
use crate::lifecycle::view;

/// One agent on the simulator whose budget is counted in tokens over the day.
fn budget_config(tokens: u64) -> Config {
    parse(&format!(
        r#"(
        version: 1,
        backends: [(name: "sim", kind: Sim((seed: 3)))],
        agents: [(name: "a", role: "r", backend: "sim",
                  context: (window_tokens: 4000, reserve_output_tokens: 100),
                  retry: (max_attempts: 3),
                  quotas: (budget: (tokens: {tokens}, window: day, on_exhausted: fail)))],
        workflows: [(name: "w", tasks: [(id: "t", agent: "a", input: "hello")])],
    )"#
    ))
}

#[test]
fn a_budget_hard_stop_fails_the_task_with_the_reason_and_the_count_outlives_the_run() {
    let data = tempfile::tempdir().unwrap();
    let probe: Box<dyn FnOnce(std::net::SocketAddr) -> String + Send> =
        Box::new(|addr| crate::helpers::http(addr, "GET", "/api/quotas").1);
    let first = run_with(
        budget_config(100_000),
        data.path(),
        Duration::from_secs(60),
        Some(probe),
    );
    let t = task(&first.snapshot, "w/t");
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    let used = t.prompt_tokens + t.completion_tokens;
    assert!(used > 0);
    // The day's counter is in the store, exactly what the task used.
    let store = Store::open(&Store::path_in(data.path())).unwrap();
    let rows = store.quota_counters().unwrap();
    let row = rows
        .iter()
        .find(|r| r.scope == "agent:a")
        .expect("counter row");
    assert_eq!(row.spent_tokens, used, "{rows:?}");
    drop(store);
    // The API shows the same figures, and what is left.
    let quotas: serde_json::Value = serde_json::from_str(first.probe.as_deref().unwrap()).unwrap();
    let scope = quotas["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scope"] == "agent:a")
        .unwrap_or_else(|| panic!("{quotas:#}"));
    assert_eq!(scope["budget"]["spent_tokens"], used);
    assert_eq!(scope["budget"]["remaining_tokens"], 100_000 - used);
    assert_eq!(scope["budget"]["window"], "day");
    assert_eq!(quotas["spent"]["tokens"], used);

    // A new run on the same data folder, with a budget that leaves less than one call's
    // reservation (prompt + 100): the day is not reset, the call is refused, the task fails
    // for good without retries, and says why.
    let second = run(budget_config(used + 50), data.path());
    let t = task(&second.snapshot, "w/t");
    assert_eq!(t.state, TaskState::Failed, "{t:?}");
    let reason = t.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("budget exhausted"), "{reason}");
    assert!(reason.contains("agent:a"), "{reason}");
    assert_eq!(t.attempts, 1, "a budget refusal is not retried: {t:?}");
    assert_eq!(t.prompt_tokens + t.completion_tokens, 0, "no call was made");
}

/// `low` runs four slow steps; `high` is 80 points better and arrives while it runs, with the
/// only slot taken.
const PREEMPT: &str = r##"(
    version: 1,
    runtime: (max_concurrency: 1, aging_per_sec: 0.0,
              scheduling: (preemption: (slice_steps: 1, priority_gap: 10))),
    backends: [(name: "sim", kind: Sim((seed: 1, latency: (base_ms: 150))))],
    agents: [
        (name: "low", role: "r", backend: "sim", priority: 10, tools: ["calculator"],
         timeout_secs: 30, replicas: 1,
         sim: (script: [
            Call(tool: "calculator", args: r#"{"expression": "1+1"}"#),
            Call(tool: "calculator", args: r#"{"expression": "2+2"}"#),
            Call(tool: "calculator", args: r#"{"expression": "3+3"}"#),
            Answer("low done"),
         ])),
        (name: "high", role: "r", backend: "sim", priority: 90),
    ],
    workflows: [(name: "bulk", tasks: [(id: "l", agent: "low")])],
)"##;

fn with_system<F, Fut>(config: &str, body: F)
where
    F: FnOnce(RunningSystem, Arc<Config>, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = RunningSystem>,
{
    let data = tempfile::tempdir().unwrap();
    let cfg = Arc::new(parse(config));
    let opts = BootOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..BootOptions::default()
    };
    let dir = data.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let sys = boot(cfg.clone(), opts).expect("boot");
        let sys = body(sys, cfg, dir).await;
        sys.stop().await;
    });
}

async fn until<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "not reached within {limit:?}: {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn urgent(cfg: &Config) -> WorkflowSpec {
    cfg.parse_workflow(
        r#"{"name": "urgent", "tasks": [{"id": "h", "agent": "high"}]}"#,
        WorkflowFormat::Json,
        "test",
    )
    .expect("valid workflow")
}

#[test]
fn a_preempted_task_continues_as_the_same_attempt_from_its_journal() {
    with_system(PREEMPT, |sys, cfg, dir| async move {
        // The low task is running its first step.
        until(Duration::from_secs(5), "low running", || {
            sys.board
                .control_blocks_of("low")
                .first()
                .and_then(|c| c.current_task.clone())
        })
        .await;
        while sys.ports.scheduler.submit.get().is_none() {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let msg = SubmitWorkflow {
            spec: urgent(&cfg),
            idempotency_key: None,
            by: "test".into(),
        };
        let ask = sys.ports.scheduler.submit.ask(msg, Duration::from_secs(2));
        let id = ask.await.unwrap().expect("accepted").id;
        let deadline = Instant::now() + Duration::from_secs(15);
        let (urgent_done, bulk_done) = loop {
            let u = view(&sys, &id).await;
            let b = view(&sys, "bulk").await;
            if b.tasks[0].state.is_terminal() {
                break (u, b);
            }
            assert!(Instant::now() < deadline, "bulk never finished: {b:#?}");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(urgent_done.tasks[0].state, TaskState::Succeeded);
        let low = &bulk_done.tasks[0];
        assert_eq!(low.state, TaskState::Succeeded, "{low:?}");
        assert_eq!(low.output.as_deref(), Some("low done"));
        assert_eq!(
            low.attempts, 1,
            "preemption is not a failed attempt: {low:?}"
        );
        // The high task finished first: it did not wait for the low one's four steps.
        assert!(
            urgent_done.tasks[0].duration_secs < low.duration_secs,
            "urgent {urgent_done:#?} vs low {low:?}"
        );
        // The same attempt's journal holds each of its four replies once: no step ran twice.
        let store = Store::open(&Store::path_in(&dir)).unwrap();
        let journal = store.load_journal(&sys.run_id, "bulk/l#1").unwrap();
        let replies = journal.iter().filter(|r| r.kind == "reply").count();
        assert_eq!(replies, 4, "{journal:#?}");
        sys
    });
}

const PRESSURE: &str = r#"(
    version: 1,
    runtime: (max_concurrency: 8,
              scheduling: (adaptive_concurrency: (min_concurrency: 2, cpu_high: 0.9, cpu_low: 0.5,
                                                  memory_high: 0.99, memory_low: 0.98))),
    backends: [(name: "sim", kind: Sim(()))],
    agents: [(name: "a", role: "r", backend: "sim")],
)"#;

#[test]
fn injected_pressure_lowers_the_concurrency_and_its_end_raises_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pressure");
    std::fs::write(&file, "cpu=0.99 memory=0.10").unwrap();
    // Only systems with adaptive_concurrency read it, and this is the only test with it.
    std::env::set_var("AGENTOS_PRESSURE_FILE", &file);
    with_system(PRESSURE, |sys, _, _| async move {
        let sched = || sys.board.sched.lock().unwrap().clone();
        let low = until(Duration::from_secs(15), "limit lowered", || {
            let s = sched();
            (s.max == 8 && s.limit < 8).then_some(s)
        })
        .await;
        assert!(
            low.reason.contains("cpu") && low.reason.contains("injected"),
            "{low:?}"
        );
        assert!(low.limit >= 2, "never below min_concurrency: {low:?}");
        std::fs::write(&file, "cpu=0.10 memory=0.10").unwrap();
        let back = until(Duration::from_secs(15), "limit raised back", || {
            let s = sched();
            (s.limit > low.limit && s.reason.contains("cleared")).then_some(s)
        })
        .await;
        assert!(back.limit <= 8, "{back:?}");
        sys
    });
    std::env::remove_var("AGENTOS_PRESSURE_FILE");
}

/// Starts a sim-server on loopback that allows 10 requests per second (OpenAI-style buckets,
/// 429s with `retry-after`); answers its address.
fn limited_server() -> std::net::SocketAddr {
    crate::simserver::start(
        agentos_actors::simserver::SimServerConfig::parse(
            "(seed: 4, latency: (base_ms: 5, per_output_token_ms: 0), \
              requests_per_window: 10, limit_window_secs: 1)",
        )
        .expect("sim-server config"),
    )
}

/// 429s the server sent so far.
fn limited(addr: std::net::SocketAddr) -> u64 {
    let (status, body) = crate::helpers::http(addr, "GET", "/healthz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["rate_limits"]["limited_requests"]
        .as_u64()
        .expect("limited_requests")
}

/// Twelve two-call tasks on twelve instances against the limited server.
fn fleet(addr: std::net::SocketAddr, limits: &str) -> Config {
    let tasks: Vec<String> = (0..12)
        .map(|i| format!(r#"(id: "t{i}", agent: "calc", input: "{i} + 1")"#))
        .collect();
    parse(&format!(
        r#"(version: 1, runtime: (max_concurrency: 12),
          backends: [(name: "api", kind: OpenAi((base_url: "http://{addr}/v1", model: "m",
                      timeout_secs: 10)), limits: ({limits}))],
          agents: [(name: "calc", role: "Use the calculator.", backend: "api",
                    tools: ["calculator"], max_steps: 4, replicas: 12, timeout_secs: 60,
                    retry: (max_attempts: 30, initial_backoff_ms: 50, max_backoff_ms: 200))],
          workflows: [(name: "w", tasks: [{}])])"#,
        tasks.join(", ")
    ))
}

#[test]
fn the_fleet_slows_down_before_the_server_refuses() {
    let run_against = |limits: &str| {
        let addr = limited_server();
        let data = tempfile::tempdir().unwrap();
        let done = run(fleet(addr, limits), data.path());
        for i in 0..12 {
            let t = task(&done.snapshot, &format!("w/t{i}"));
            assert_eq!(t.state, TaskState::Succeeded, "{limits}: {t:?}");
        }
        limited(addr)
    };
    // Today's behaviour: no limiter, a 429 fails the attempt, which retries after Retry-After.
    let naive = run_against("learn_from_headers: false");
    // The server's limits configured: the fleet never goes past them.
    let configured = run_against("rate: (requests: 10, window_secs: 1.0, burst_requests: 2)");
    // Nothing configured: the limits are learned from the first replies' headers.
    let learned = run_against("");
    eprintln!("429s received: naive {naive}, configured {configured}, learned {learned}");
    assert!(naive > 0, "the naive fleet should meet 429s");
    assert_eq!(configured, 0, "naive {naive}, learned {learned}");
    assert!(learned < naive, "naive {naive}, learned {learned}");
}
