//! The ordering policies, preemption, yields and the effective concurrency limit.

use super::*;

use std::path::Path;

use crate::config::WorkflowSpec;

fn core_of(runtime: &str, agents: &str, workflows: &str) -> SchedulerCore {
    let text = format!(
        r#"(
        version: 1,
        runtime: ({runtime}),
        backends: [(name: "sim", kind: Sim(()))],
        agents: [{agents}],
        workflows: [{workflows}],
    )"#
    );
    let cfg = Config::parse(&text, "test.ron", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    SchedulerCore::new(Arc::new(cfg), Instant::now())
}

fn inst(agent: &str, replica: u32) -> InstanceId {
    InstanceId {
        agent: agent.into(),
        replica,
    }
}

fn done(lease: LeaseId, tokens: u64) -> Report {
    Report {
        lease,
        outcome: Outcome::Succeeded { output: "x".into() },
        usage: Usage {
            prompt_tokens: tokens,
            completion_tokens: 0,
            cached_tokens: 0,
        },
    }
}

/// A workflow with one task for agent `high`.
fn urgent(core: &SchedulerCore) -> WorkflowSpec {
    core.config()
        .parse_workflow(
            r#"{"name": "urgent", "tasks": [{"id": "h", "agent": "high"}]}"#,
            crate::config::WorkflowFormat::Json,
            "test",
        )
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One agent `a`, one task `w/t`, one slot.
fn single() -> SchedulerCore {
    core_of(
        "max_concurrency: 1",
        r#"(name: "a", role: "r", backend: "sim")"#,
        r#"(name: "w", tasks: [(id: "t", agent: "a")])"#,
    )
}

/// The report of an attempt that gave way.
fn yielded(
    lease: LeaseId,
    usage: Usage,
    resume_after: Option<Duration>,
    preempted: bool,
) -> Report {
    Report {
        lease,
        outcome: Outcome::Yielded {
            reason: if preempted { "preempted" } else { "budget" }.into(),
            resume_after,
            preempted,
        },
        usage,
    }
}

fn tasks(agent: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!(r#"(id: "{agent}{i}", agent: "{agent}")"#))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_yielded_attempt_keeps_its_number_and_its_usage_counts_once() {
    let now = Instant::now();
    let mut core = single();
    core.agent_idle(inst("a", 0));
    let (d, _) = core.dispatch(now);
    assert_eq!(d[0].attempt_total, 1);
    let used = Usage {
        prompt_tokens: 100,
        completion_tokens: 10,
        cached_tokens: 0,
    };
    let events = core
        .report(yielded(d[0].lease, used, None, true), now)
        .unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        SchedEvent::Yielded {
            preempted: true,
            attempt: 1,
            ..
        }
    )));
    let key = TaskKey {
        workflow: "w".into(),
        task: "t".into(),
    };
    assert_eq!(core.task(&key).unwrap().state, TaskState::Ready);
    assert!(
        core.task(&key).unwrap().attempts.is_empty(),
        "a yield is no failed attempt"
    );
    core.agent_idle(inst("a", 0));
    let (d, _) = core.dispatch(now);
    assert_eq!(
        (d[0].attempt, d[0].attempt_total),
        (1, 1),
        "the same attempt goes on"
    );
    // The run that continues it reports the journaled usage again, plus its own.
    let mut report = done(d[0].lease, 0);
    report.usage = Usage {
        prompt_tokens: 150,
        completion_tokens: 20,
        cached_tokens: 0,
    };
    core.report(report, now).unwrap();
    let t = core.task(&key).unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.usage.prompt_tokens, 150, "counted once, not 250");
    assert_eq!(t.usage.completion_tokens, 20);
}

#[test]
fn a_budget_wait_puts_the_task_back_after_the_reset() {
    let now = Instant::now();
    let mut core = single();
    core.agent_idle(inst("a", 0));
    let (d, _) = core.dispatch(now);
    let wait = Some(Duration::from_secs(30));
    core.report(yielded(d[0].lease, Usage::default(), wait, false), now)
        .unwrap();
    core.agent_idle(inst("a", 0));
    assert!(
        core.dispatch(now).0.is_empty(),
        "not before the window resets"
    );
    assert_eq!(core.next_deadline(), Some(now + Duration::from_secs(30)));
    let (d, _) = core.dispatch(now + Duration::from_secs(31));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attempt_total, 1);
}

#[test]
fn a_better_task_waiting_for_a_full_slot_preempts_the_worst_running_one() {
    let now = Instant::now();
    let mut core = core_of(
        "max_concurrency: 2, aging_per_sec: 0.0, scheduling: (preemption: (slice_steps: 1, priority_gap: 10))",
        r#"(name: "low", role: "r", backend: "sim", priority: 10, replicas: 2),
           (name: "mid", role: "r", backend: "sim", priority: 15),
           (name: "high", role: "r", backend: "sim", priority: 90)"#,
        &format!(
            r#"(name: "w", tasks: [{}, (id: "m", agent: "mid")])"#,
            tasks("low", 2)
        ),
    );
    core.agent_idle(inst("low", 0));
    core.agent_idle(inst("low", 1));
    let (d, ev) = core.dispatch(now);
    assert_eq!(d.len(), 2);
    assert!(
        !ev.iter()
            .any(|e| matches!(e, SchedEvent::PreemptRequested { .. })),
        "mid is only 5 points better: under the gap"
    );
    // A high-priority workflow arrives; every slot is taken.
    let spec = urgent(&core);
    core.agent_idle(inst("high", 0));
    core.submit(spec, None, "test", now).unwrap();
    let (_, ev) = core.dispatch(now);
    let asked: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            SchedEvent::PreemptRequested {
                lease,
                reason: Some(r),
                ..
            } => Some((*lease, r.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "one slot is needed: one attempt is asked");
    assert!(asked[0].1.contains("urgent/h"), "{}", asked[0].1);
    // It yields; the slot goes to the high-priority task, and the request is not repeated.
    core.report(yielded(asked[0].0, Usage::default(), None, true), now)
        .unwrap();
    let (d, ev) = core.dispatch(now);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key.task, "h");
    assert!(!ev.iter().any(|e| matches!(
        e,
        SchedEvent::PreemptRequested {
            reason: Some(_),
            ..
        }
    )));
}

#[test]
fn a_request_no_longer_needed_is_withdrawn() {
    let now = Instant::now();
    let mut core = core_of(
        "max_concurrency: 1, aging_per_sec: 0.0, scheduling: (preemption: (slice_steps: 1))",
        r#"(name: "low", role: "r", backend: "sim", priority: 10),
           (name: "high", role: "r", backend: "sim", priority: 90)"#,
        r#"(name: "w", tasks: [(id: "l", agent: "low")])"#,
    );
    core.agent_idle(inst("low", 0));
    let (d, _) = core.dispatch(now);
    let spec = urgent(&core);
    core.agent_idle(inst("high", 0));
    let (id, _, _) = core.submit(spec, None, "test", now).unwrap();
    let (_, ev) = core.dispatch(now);
    assert!(ev.iter().any(|e| matches!(
        e,
        SchedEvent::PreemptRequested {
            reason: Some(_),
            ..
        }
    )));
    // The urgent workflow is cancelled before the low task yields: the request goes away.
    core.cancel_workflow(&id, "test", now).unwrap();
    let (_, ev) = core.dispatch(now);
    assert!(ev.iter().any(
        |e| matches!(e, SchedEvent::PreemptRequested { lease, reason: None, .. } if *lease == d[0].lease)
    ));
}

#[test]
fn fair_share_gives_a_chatty_agent_no_more_tokens_than_the_others() {
    let now = Instant::now();
    let agents = r#"(name: "chatty", role: "r", backend: "sim"),
                    (name: "quiet", role: "r", backend: "sim")"#;
    let workflows = format!(
        r#"(name: "w", tasks: [{}, {}])"#,
        tasks("chatty", 40),
        tasks("quiet", 40)
    );
    let served = |policy: &str| {
        let mut core = core_of(
            &format!("max_concurrency: 1, scheduling: (policy: {policy})"),
            agents,
            &workflows,
        );
        let mut tokens: HashMap<String, u64> = HashMap::new();
        core.agent_idle(inst("chatty", 0));
        core.agent_idle(inst("quiet", 0));
        // 20 attempts of one slot: a chatty attempt costs 5x a quiet one.
        for _ in 0..20 {
            let (d, _) = core.dispatch(now);
            let d = &d[0];
            let cost = if d.key.task.starts_with("chatty") {
                500
            } else {
                100
            };
            *tokens.entry(d.instance.agent.to_string()).or_default() += cost;
            core.report(done(d.lease, cost), now).unwrap();
            core.agent_idle(d.instance.clone());
        }
        (tokens["chatty"], tokens.get("quiet").copied().unwrap_or(0))
    };
    let (chatty, quiet) = served("fair_share");
    let ratio = chatty as f64 / quiet as f64;
    assert!(
        (0.6..1.7).contains(&ratio),
        "fair share: {chatty} vs {quiet}"
    );
    let (chatty, quiet) = served("priority");
    assert!(
        chatty > 3 * quiet,
        "without fair share: {chatty} vs {quiet}"
    );
}

#[test]
fn least_attained_service_lets_a_fresh_workflow_overtake_a_long_one() {
    let now = Instant::now();
    let mut core = core_of(
        "max_concurrency: 1, scheduling: (policy: least_attained_service, las_quantum_tokens: 100)",
        r#"(name: "a", role: "r", backend: "sim")"#,
        &format!(
            r#"(name: "long", tasks: [{}]), (name: "short", tasks: [(id: "s", agent: "a")])"#,
            tasks("a", 5)
        ),
    );
    core.agent_idle(inst("a", 0));
    let (d, _) = core.dispatch(now);
    assert_eq!(d[0].key.workflow, "long", "equal service: FIFO");
    core.report(done(d[0].lease, 1000), now).unwrap();
    core.agent_idle(inst("a", 0));
    let (d, _) = core.dispatch(now);
    assert_eq!(
        d[0].key.workflow, "short",
        "the long one attained 1000 tokens"
    );
}

#[test]
fn the_effective_limit_holds_new_dispatches_within_bounds() {
    let now = Instant::now();
    let mut core = core_of(
        "max_concurrency: 4",
        r#"(name: "a", role: "r", backend: "sim", replicas: 4)"#,
        &format!(r#"(name: "w", tasks: [{}])"#, tasks("a", 8)),
    );
    core.set_concurrency(2, "cpu 95% above 90%");
    assert_eq!(core.concurrency(), (2, "cpu 95% above 90%"));
    for r in 0..4 {
        core.agent_idle(inst("a", r));
    }
    assert_eq!(core.dispatch(now).0.len(), 2);
    core.set_concurrency(99, "pressure cleared");
    assert_eq!(core.concurrency().0, 4, "never above max_concurrency");
    assert_eq!(core.dispatch(now).0.len(), 2);
    core.set_concurrency(0, "x");
    assert_eq!(core.concurrency().0, 1, "never below one");
}
