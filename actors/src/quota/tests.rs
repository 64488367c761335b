use super::*;

fn config(text: &str) -> Config {
    Config::parse(text, "test.ron", std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

/// A server's headers: 5 of 10 requests left, refilled in 500 ms (so a 1 s window).
fn half_used() -> RateLimitInfo {
    RateLimitInfo {
        limit_requests: Some(10),
        remaining_requests: Some(5),
        reset_requests: Some(Duration::from_millis(500)),
        ..RateLimitInfo::default()
    }
}

fn request(agent: &str, prompt: u64, max: u64) -> GateRequest {
    GateRequest {
        agent: agent.into(),
        instance: InstanceId {
            agent: agent.into(),
            replica: 0,
        },
        backend: "sim".into(),
        workflow: "w".into(),
        prompt_tokens: prompt,
        max_tokens: max,
    }
}

const BASE: &str = r#"
(
    version: 1,
    backends: [(name: "sim", kind: Sim(()), price: (input: 1000000.0, output: 1000000.0))],
    agents: [
        (name: "a", role: "r", backend: "sim",
         quotas: (budget: (usd: 100.0, window: day, on_exhausted: fail))),
        (name: "b", role: "r", backend: "sim",
         quotas: (rate: (tokens: 100, window_secs: 1.0, burst_tokens: 50))),
    ],
    workflows: [(name: "w", tasks: [(id: "t", agent: "a")])],
)
"#;

#[test]
fn no_quota_anywhere_means_no_gate() {
    let cfg = config(
        r#"(version: 1, backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    assert!(QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).is_none());
}

#[tokio::test]
async fn a_budget_refuses_the_call_that_would_pass_it_and_names_the_scope() {
    let gate = QuotaGate::from_config(&config(BASE), "run-1", Trace::disabled()).unwrap();
    // $1 per token: 60 prompt + 30 max = $90 fits in $100.
    let p = GatePort(gate.clone())
        .admit(request("a", 60, 30))
        .await
        .unwrap();
    p.settle(
        Some(Usage {
            prompt_tokens: 60,
            completion_tokens: 20,
            cached_tokens: 0,
        }),
        Duration::from_millis(1),
        false,
    );
    // $80 spent: a call that may cost $30 more is refused, and the task is told to fail.
    let refused = match GatePort(gate.clone()).admit(request("a", 10, 20)).await {
        Err(r) => r,
        Ok(_) => panic!("a call past the budget was admitted"),
    };
    assert!(!refused.wait);
    assert!(refused.reason.contains("agent:a"), "{}", refused.reason);
    let rows = gate.take_dirty_rows();
    let row = rows.iter().find(|r| r.scope == "agent:a").unwrap();
    assert_eq!(row.spent_tokens, 80);
    assert!((row.spent_usd - 80.0).abs() < 1e-6);
}

#[tokio::test]
async fn restored_counters_of_this_window_count_and_older_ones_do_not() {
    let gate = QuotaGate::from_config(&config(BASE), "run-1", Trace::disabled()).unwrap();
    let day = 86_400_000u64;
    let today = wall_ms() / day * day;
    gate.restore(&[QuotaRow {
        scope: "agent:a".into(),
        window: "day".into(),
        window_start_ms: today as i64,
        spent_usd: 95.0,
        spent_tokens: 95,
    }]);
    assert!(GatePort(gate.clone())
        .admit(request("a", 10, 0))
        .await
        .is_err());

    let fresh = QuotaGate::from_config(&config(BASE), "run-1", Trace::disabled()).unwrap();
    fresh.restore(&[QuotaRow {
        scope: "agent:a".into(),
        window: "day".into(),
        window_start_ms: (today - day) as i64,
        spent_usd: 95.0,
        spent_tokens: 95,
    }]);
    assert!(GatePort(fresh.clone())
        .admit(request("a", 10, 0))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_rate_limit_holds_the_call_until_the_bucket_refills() {
    let gate = QuotaGate::from_config(&config(BASE), "run-1", Trace::disabled()).unwrap();
    // Burst 50: the first call takes 40, the next needs 40 and waits for a refill at 100/s.
    let first = GatePort(gate.clone())
        .admit(request("b", 30, 10))
        .await
        .unwrap();
    first.settle(
        Some(Usage {
            prompt_tokens: 30,
            completion_tokens: 10,
            cached_tokens: 0,
        }),
        Duration::ZERO,
        false,
    );
    let t0 = tokio::time::Instant::now();
    let second = GatePort(gate.clone())
        .admit(request("b", 30, 10))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    drop(second);
    assert_eq!(gate.book().outstanding(), 0);
}

#[tokio::test]
async fn a_backend_without_a_configured_rate_learns_its_buckets_from_the_headers() {
    let cfg = config(
        r#"(version: 1,
            backends: [(name: "api", kind: OpenAi((base_url: "http://127.0.0.1:9/v1", model: "m")))],
            agents: [(name: "a", role: "r", backend: "api")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    let gate =
        QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).expect("openai backends learn");
    let port = GatePort(gate.clone());
    let ask = || GateRequest {
        backend: "api".into(),
        ..request("a", 10, 10)
    };
    // Nothing learned yet: calls go straight through.
    for _ in 0..3 {
        drop(port.admit(ask()).await.unwrap());
    }
    // 10 requests per window; 5 used refill in 500 ms: the window is 1 s (10 per second).
    gate.observe("api", &half_used());
    let status = gate.status();
    let api = status
        .iter()
        .find(|s| s.scope == Scope::Backend("api".into()))
        .expect("a learned scope");
    assert_eq!(
        api.requests_capacity,
        Some(1),
        "burst: a tenth of the limit"
    );
    // Paced at 10 per second from now on.
    let t0 = Instant::now();
    for _ in 0..4 {
        let p = port.admit(ask()).await.unwrap();
        p.settle(
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 1,
                cached_tokens: 0,
            }),
            Duration::ZERO,
            false,
        );
    }
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_configured_rate_is_not_overridden_by_learning() {
    let cfg = config(
        r#"(version: 1,
            backends: [(name: "api", kind: OpenAi((base_url: "http://127.0.0.1:9/v1", model: "m")),
                        limits: (rate: (requests: 100)))],
            agents: [(name: "a", role: "r", backend: "api")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    let gate = QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).unwrap();
    gate.observe("api", &half_used());
    let status = gate.status();
    let api = status
        .iter()
        .find(|s| s.scope == Scope::Backend("api".into()))
        .unwrap();
    assert_eq!(
        api.requests_capacity,
        Some(10),
        "the configured burst (100 / 10)"
    );
}

#[tokio::test]
async fn a_run_budget_comes_back_only_for_the_same_run() {
    let cfg = config(
        r#"(version: 1, backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim",
                      quotas: (budget: (tokens: 100, window: run)))],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    let row = |run: &str| QuotaRow {
        scope: "agent:a".into(),
        window: format!("run:{run}"),
        window_start_ms: 0,
        spent_usd: 0.0,
        spent_tokens: 95,
    };
    let gate = QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).unwrap();
    gate.restore(&[row("run-0")]);
    assert!(
        GatePort(gate.clone())
            .admit(request("a", 10, 0))
            .await
            .is_ok(),
        "another run's budget is not this one's"
    );
    let resumed = QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).unwrap();
    resumed.restore(&[row("run-1")]);
    assert!(GatePort(resumed.clone())
        .admit(request("a", 10, 0))
        .await
        .is_err());
    // And it is stored under its run.
    let p = GatePort(gate.clone())
        .admit(request("a", 1, 0))
        .await
        .unwrap();
    p.settle(
        Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 0,
            cached_tokens: 0,
        }),
        Duration::ZERO,
        false,
    );
    let rows = gate.take_dirty_rows();
    assert!(rows.iter().any(|r| r.window == "run:run-1"), "{rows:?}");
}

#[test]
fn hostile_rate_limit_headers_are_absorbed_not_panicked_on() {
    let cfg = config(
        r#"(version: 1,
            backends: [(name: "api", kind: OpenAi((base_url: "http://127.0.0.1:9/v1", model: "m")))],
            agents: [(name: "a", role: "r", backend: "api")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#,
    );
    let gate = QuotaGate::from_config(&cfg, "run-1", Trace::disabled()).unwrap();
    for (limit, remaining, reset) in [
        (u64::MAX, u64::MAX - 1, Duration::from_secs(86_400)),
        (u64::MAX, 0, Duration::from_nanos(1)),
        (1, 0, Duration::MAX),
        (0, 0, Duration::from_secs(1)),
    ] {
        let info = RateLimitInfo {
            limit_requests: Some(limit),
            remaining_requests: Some(remaining),
            reset_requests: Some(reset),
            limit_tokens: Some(limit),
            remaining_tokens: Some(remaining),
            reset_tokens: Some(reset),
            retry_after: Some(reset),
            ..RateLimitInfo::default()
        };
        gate.observe("api", &info);
        gate.observe("nobody", &info);
    }
    assert!(!gate.status().is_empty());
}
