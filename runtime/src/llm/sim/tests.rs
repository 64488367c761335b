use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use serde_json::json;

use super::*;
use crate::config::{SimFaults, SimForcedFault, SimLatency};
use crate::llm::ToolSpec;

fn settings(seed: u64) -> SimSettings {
    SimSettings {
        seed,
        latency: SimLatency::default(),
        faults: SimFaults::default(),
        slots: 0,
    }
}

fn meta(agent: &str, task: &str, attempt: u32, step: u32) -> RequestMeta {
    RequestMeta {
        agent: agent.into(),
        task: task.into(),
        attempt,
        step,
        replica: 0,
    }
}

fn request(meta: RequestMeta, messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        messages,
        tools: Vec::new().into(),
        max_tokens: None,
        meta,
        encoded: None,
    }
}

fn coder() -> HashMap<String, SimBehaviour> {
    let behaviour = SimBehaviour {
        script: vec![
            SimStep::Call {
                tool: "read_file".into(),
                args: json!({"path": "README.md"}),
            },
            SimStep::Answer("The file says: {{last_tool_result}}".into()),
        ],
        faults: vec![
            SimForcedFault {
                attempt: 2,
                step: 0,
                kind: SimFaultKind::Error,
            },
            SimForcedFault {
                attempt: 3,
                step: 1,
                kind: SimFaultKind::Panic,
            },
            SimForcedFault {
                attempt: 4,
                step: 0,
                kind: SimFaultKind::Hang,
            },
        ],
    };
    HashMap::from([("coder".to_string(), behaviour)])
}

/// Drives a future that must be ready at once (zero latency, no fault).
fn now<T>(fut: BoxFuture<'static, T>) -> T {
    fut.now_or_never()
        .expect("zero-latency reply resolves on first poll")
}

#[test]
fn is_a_simulator() {
    let sim = SimBackend::new("sim", settings(1), HashMap::new());
    assert!(sim.is_simulated());
    assert_eq!(sim.kind(), "sim");
    assert_eq!(sim.name(), "sim");
}

#[test]
fn script_steps_through_tool_call_then_answer() {
    let sim = SimBackend::new("sim", settings(1), coder());
    let mut messages = vec![
        ChatMessage::system("you code"),
        ChatMessage::user("summarise README"),
    ];

    let first = now(sim.chat(request(meta("coder", "wf/t", 1, 0), messages.clone()))).unwrap();
    assert_eq!(first.finish_reason, "tool_calls");
    assert_eq!(first.message.role, Role::Assistant);
    assert_eq!(
        first.message.tool_calls,
        vec![ToolCall::new(
            "call_0",
            "read_file",
            json!({"path": "README.md"})
        )]
    );

    messages.push(first.message);
    messages.push(ChatMessage::tool("call_0", "older result"));
    messages.push(ChatMessage::user("interleaved note"));
    messages.push(ChatMessage::tool("call_0", "# AgentOS"));
    let second = now(sim.chat(request(meta("coder", "wf/t", 1, 1), messages.clone()))).unwrap();
    assert_eq!(second.finish_reason, "stop");
    assert_eq!(second.message.content, "The file says: # AgentOS");
    assert!(second.message.tool_calls.is_empty());

    // Past the script: the simulated final answer quotes the latest input.
    let third = now(sim.chat(request(meta("coder", "wf/t", 1, 2), messages))).unwrap();
    assert_eq!(third.finish_reason, "stop");
    assert_eq!(
        third.message.content,
        "[simulated] coder finished wf/t: # AgentOS"
    );
}

#[test]
fn answer_without_tool_result_substitutes_empty() {
    let behaviours = HashMap::from([(
        "a".to_string(),
        SimBehaviour {
            script: vec![SimStep::Answer("got [{{last_tool_result}}]".into())],
            faults: vec![],
        },
    )]);
    let sim = SimBackend::new("sim", settings(1), behaviours);
    let reply = now(sim.chat(request(
        meta("a", "w/t", 1, 0),
        vec![ChatMessage::user("x")],
    )));
    assert_eq!(reply.unwrap().message.content, "got []");
}

#[test]
fn unknown_agent_gets_simulated_final_answer_with_bounded_quote() {
    let sim = SimBackend::new("sim", settings(1), HashMap::new());
    let long = "x".repeat(500);
    let reply = now(sim.chat(request(
        meta("writer", "docs/intro", 1, 0),
        vec![ChatMessage::system("s"), ChatMessage::user(long)],
    )))
    .unwrap();
    let expected = format!(
        "[simulated] writer finished docs/intro: {}…",
        "x".repeat(160)
    );
    assert_eq!(reply.message.content, expected);
    assert_eq!(reply.finish_reason, "stop");
}

#[test]
fn same_inputs_give_same_reply() {
    let mut s = settings(42);
    s.latency.base = Duration::from_millis(3);
    let a = SimBackend::new("sim", s.clone(), coder());
    let b = SimBackend::new("other", s, coder());
    for step in 0..3 {
        let req = request(
            meta("coder", "wf/t", 1, step),
            vec![ChatMessage::user("go")],
        );
        assert_eq!(a.plan(&req), a.plan(&req));
        assert_eq!(a.plan(&req), b.plan(&req));
    }
}

/// Outcome of the random fault draw for a call, by name.
fn outcome(sim: &SimBackend, task: &str) -> &'static str {
    match sim.plan(&request(
        meta("worker", task, 1, 0),
        vec![ChatMessage::user("go")],
    )) {
        Plan::Reply(..) => "reply",
        Plan::Error(_) => "error",
        Plan::Panic(_) => "panic",
        Plan::Hang => "hang",
    }
}

#[test]
fn fault_outcomes_depend_on_seed_not_on_call_order() {
    let faults = SimFaults {
        error_rate: 0.3,
        panic_rate: 0.1,
        hang_rate: 0.1,
    };
    let sim = |seed| {
        let mut s = settings(seed);
        s.faults = faults;
        SimBackend::new("sim", s, HashMap::new())
    };
    let (one, two) = (sim(1), sim(2));
    let tasks: Vec<String> = (0..64).map(|i| format!("wf/t{i}")).collect();
    let forward: Vec<_> = tasks.iter().map(|t| outcome(&one, t)).collect();
    let mut backward: Vec<_> = tasks.iter().rev().map(|t| outcome(&one, t)).collect();
    backward.reverse();
    assert_eq!(forward, backward, "call order must not matter");
    let other_seed: Vec<_> = tasks.iter().map(|t| outcome(&two, t)).collect();
    assert_ne!(forward, other_seed, "a different seed changes the faults");
}

#[test]
fn fault_rates_are_honoured() {
    let mut s = settings(7);
    s.faults = SimFaults {
        error_rate: 0.2,
        panic_rate: 0.05,
        hang_rate: 0.1,
    };
    let sim = SimBackend::new("sim", s, HashMap::new());
    let n = 2000;
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for i in 0..n {
        *counts
            .entry(outcome(&sim, &format!("wf/t{i}")))
            .or_default() += 1;
    }
    for (kind, rate) in [
        ("error", 0.2),
        ("panic", 0.05),
        ("hang", 0.1),
        ("reply", 0.65),
    ] {
        let got = f64::from(counts.get(kind).copied().unwrap_or(0)) / f64::from(n);
        // Five standard deviations of a binomial proportion at n = 2000.
        let tolerance = 5.0 * (rate * (1.0 - rate) / f64::from(n)).sqrt();
        assert!(
            (got - rate).abs() <= tolerance,
            "{kind}: got {got}, want {rate} ± {tolerance}"
        );
    }
}

#[test]
fn zero_rates_never_fault() {
    let sim = SimBackend::new("sim", settings(3), HashMap::new());
    assert!((0..500).all(|i| outcome(&sim, &format!("t{i}")) == "reply"));
}

#[test]
fn draw_unit_is_stable_and_in_range() {
    let a = draw_unit(1, &["agent", "task"], 0);
    assert_eq!(a, draw_unit(1, &["agent", "task"], 0));
    assert_ne!(a, draw_unit(2, &["agent", "task"], 0));
    assert_ne!(a, draw_unit(1, &["agent", "task"], 1));
    assert_ne!(draw_unit(1, &["ab", "c"], 0), draw_unit(1, &["a", "bc"], 0));
    for i in 0..1000 {
        let u = draw_unit(i, &[], i);
        assert!((0.0..1.0).contains(&u), "{u}");
    }
}

#[test]
fn forced_error_hits_only_its_attempt_and_step() {
    let sim = SimBackend::new("sim", settings(1), coder());
    let req = |attempt, step| request(meta("coder", "wf/t", attempt, step), vec![]);
    assert_eq!(
        now(sim.chat(req(2, 0))),
        Err(LlmError::Injected(
            "forced error on attempt 2 step 0".into()
        ))
    );
    assert!(now(sim.chat(req(2, 1))).is_ok());
    assert!(now(sim.chat(req(1, 0))).is_ok());
    // Another agent with the same attempt and step is unaffected.
    assert!(now(sim.chat(request(meta("other", "wf/t", 2, 0), vec![]))).is_ok());
}

#[tokio::test]
async fn forced_panic_is_raised_when_polled() {
    let sim = SimBackend::new("sim", settings(1), coder());
    // Building the future must not panic; polling it must.
    let fut = sim.chat(request(meta("coder", "wf/t", 3, 1), vec![]));
    let caught = AssertUnwindSafe(fut).catch_unwind().await;
    let payload = caught.expect_err("the forced fault panics");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.starts_with("simulated panic (forced) in agent coder"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn forced_hang_never_resolves() {
    let sim = SimBackend::new("sim", settings(1), coder());
    let fut = sim.chat(request(meta("coder", "wf/t", 4, 0), vec![]));
    let waited = tokio::time::timeout(Duration::from_secs(24 * 3600), fut).await;
    assert!(waited.is_err(), "a hang must not resolve");
}

#[tokio::test(start_paused = true)]
async fn latency_follows_the_model() {
    let mut s = settings(1);
    s.latency = SimLatency {
        base: Duration::from_millis(200),
        per_prompt_token: Duration::from_millis(2),
        per_output_token: Duration::from_millis(10),
    };
    let sim = SimBackend::new("sim", s, coder());
    assert_eq!(sim.latency_for(0, 0), Duration::from_millis(200));
    assert_eq!(
        sim.latency_for(100, 30),
        Duration::from_millis(200 + 200 + 300)
    );
    assert_eq!(
        sim.latency_for(u64::MAX, 0),
        // 2 ms × (1000 q + r) = 2 q s + 2 r ms.
        Duration::from_millis(200)
            + Duration::from_secs(2 * (u64::MAX / 1000))
            + Duration::from_millis(2 * (u64::MAX % 1000)),
        "exact for any token count"
    );
    let mut huge = settings(1);
    huge.latency.per_output_token = Duration::from_secs(u64::MAX / 2);
    let huge = SimBackend::new("sim", huge, HashMap::new());
    assert_eq!(huge.latency_for(0, 3), Duration::MAX, "saturates");

    let mut req = request(
        meta("coder", "wf/t", 1, 0),
        vec![ChatMessage::system("you code"), ChatMessage::user("go")],
    );
    req.tools = vec![ToolSpec {
        name: "read_file".into(),
        description: "Reads a file".into(),
        parameters: json!({"type": "object"}),
    }]
    .into();
    let started = tokio::time::Instant::now();
    let reply = sim.chat(req.clone()).await.unwrap();
    let elapsed = started.elapsed();
    let usage = reply.usage;
    let tools_json = serde_json::to_string(&req.tools[..]).unwrap();
    assert_eq!(
        usage.prompt_tokens,
        approx_prompt_tokens(&req.messages) + approx_tokens(&tools_json)
    );
    assert_eq!(
        usage.completion_tokens,
        approx_tokens("read_file") + approx_tokens(r#"{"path":"README.md"}"#)
    );
    let modelled = sim.latency_for(usage.prompt_tokens, usage.completion_tokens);
    assert!(modelled > Duration::from_millis(200));
    assert!(
        elapsed >= modelled && elapsed < modelled + Duration::from_millis(5),
        "elapsed {elapsed:?}, modelled {modelled:?}"
    );
}

#[test]
fn zero_latency_reply_is_ready_without_a_runtime() {
    // No tokio runtime here: a zero-latency reply must not touch the timer.
    let sim = SimBackend::new("sim", settings(1), HashMap::new());
    let reply = now(sim.chat(request(meta("a", "w/t", 1, 0), vec![]))).unwrap();
    assert_eq!(reply.usage.prompt_tokens, 0);
    assert_eq!(
        reply.usage.completion_tokens,
        approx_tokens(&reply.message.content)
    );
    assert!(reply.usage.completion_tokens >= 1);
}

fn cached_sim(replicas: usize) -> SimBackend {
    let mut s = settings(3);
    s.latency = SimLatency {
        base: Duration::from_millis(10),
        per_prompt_token: Duration::from_millis(1),
        per_output_token: Duration::ZERO,
    };
    let cache = crate::kvcache::KvCacheSettings {
        block_size: 4,
        ..Default::default()
    };
    SimBackend::new("sim", s, HashMap::new()).with_prefix_cache(
        crate::tokenize::Encoding::default(),
        &cache,
        replicas,
    )
}

fn long_prompt(task: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You review code carefully. ".repeat(20)),
        ChatMessage::user(task),
    ]
}

#[tokio::test(start_paused = true)]
async fn cached_prefix_skips_its_prefill_on_the_same_replica_only() {
    let sim = cached_sim(2);
    let mut first = request(meta("a", "w/1", 1, 0), long_prompt("first task"));
    let cold = sim.chat(first.clone()).await.unwrap().usage;
    assert_eq!(cold.cached_tokens, 0);
    assert!(cold.prompt_tokens > 100);

    // Same system prompt, other task, same replica: the head is cached.
    first.messages = long_prompt("second task");
    let started = tokio::time::Instant::now();
    let warm = sim.chat(first.clone()).await.unwrap().usage;
    let elapsed = started.elapsed();
    assert!(
        warm.cached_tokens > 100 && warm.cached_tokens < warm.prompt_tokens,
        "{warm:?}"
    );
    assert_eq!(
        elapsed,
        sim.latency_for(
            warm.prompt_tokens - warm.cached_tokens,
            warm.completion_tokens
        ),
        "prefill is charged for uncached tokens only"
    );

    // Replica 1 has seen nothing.
    first.meta.replica = 1;
    let other = sim.chat(first).await.unwrap().usage;
    assert_eq!(other.cached_tokens, 0);
    let stats = sim.cache_stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].hit_tokens, warm.cached_tokens);
    assert_eq!(stats[0].active_blocks, 0, "finished calls hold no blocks");
}

#[tokio::test(start_paused = true)]
async fn equal_request_sequences_give_equal_latencies() {
    let run = || async {
        let sim = cached_sim(2);
        let mut out = Vec::new();
        for (i, task) in ["a", "b", "a", "c"].iter().enumerate() {
            let mut req = request(meta("x", "w/t", 1, 0), long_prompt(task));
            req.meta.replica = i % 2;
            let started = tokio::time::Instant::now();
            let usage = sim.chat(req).await.unwrap().usage;
            out.push((usage, started.elapsed()));
        }
        out
    };
    assert_eq!(run().await, run().await);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_releases_its_blocks() {
    let sim = cached_sim(1);
    let fut = sim.chat(request(meta("a", "w/1", 1, 0), long_prompt("t")));
    assert!(sim.cache_stats()[0].active_blocks > 0, "held while running");
    drop(fut);
    assert_eq!(sim.cache_stats()[0].active_blocks, 0);
}

/// A simulator with `replicas` replicas of `slots` slots and a fixed 100 ms per call.
fn slotted_sim(replicas: usize, slots: usize) -> SimBackend {
    let mut s = settings(5);
    s.latency.base = Duration::from_millis(100);
    s.slots = slots;
    SimBackend::new("sim", s, HashMap::new()).with_prefix_cache(
        crate::tokenize::Encoding::default(),
        &crate::kvcache::KvCacheSettings::default(),
        replicas,
    )
}

#[tokio::test(start_paused = true)]
async fn a_replica_with_busy_slots_queues_calls() {
    let sim = slotted_sim(2, 1);
    let call = |task: &str, replica: usize| {
        let mut r = request(meta("a", task, 1, 0), vec![ChatMessage::user("hi")]);
        r.meta.replica = replica;
        sim.chat(r)
    };
    // Two calls on replica 0 with one slot run one after the other: 200 ms.
    let t0 = tokio::time::Instant::now();
    let (a, b) = futures::join!(call("w/1", 0), call("w/2", 0));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(t0.elapsed(), Duration::from_millis(200));
    // One on each replica run side by side: 100 ms.
    let t0 = tokio::time::Instant::now();
    let (a, b) = futures::join!(call("w/3", 0), call("w/4", 1));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    // Unlimited slots never queue.
    let sim = slotted_sim(1, 0);
    let t0 = tokio::time::Instant::now();
    let r = |t: &str| request(meta("a", t, 1, 0), vec![ChatMessage::user("hi")]);
    let (a, b) = futures::join!(sim.chat(r("w/5")), sim.chat(r("w/6")));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_queued_call_gives_its_place_up() {
    let sim = slotted_sim(1, 1);
    let r = |t: &str| request(meta("a", t, 1, 0), vec![ChatMessage::user("hi")]);
    let first = sim.chat(r("w/1"));
    let queued = sim.chat(r("w/2"));
    let t0 = tokio::time::Instant::now();
    // The queued call is abandoned (an attempt timeout) before it gets a slot.
    let (a, _) = futures::join!(first, async {
        let _ = tokio::time::timeout(Duration::from_millis(10), queued).await;
    });
    assert!(a.is_ok());
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    // The slot is free again: a new call is served at once.
    let t0 = tokio::time::Instant::now();
    sim.chat(r("w/3")).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
}
