use super::*;

use std::path::Path;

fn config(max_concurrency: u32) -> Arc<Config> {
    let text = format!(
        r#"(
        version: 1,
        runtime: (max_concurrency: {max_concurrency}, aging_per_sec: 0.0),
        backends: [(name: "sim", kind: Sim(()))],
        agents: [
            (name: "a", role: "r", backend: "sim", priority: 10, fallback: "b",
             retry: (max_attempts: 2, initial_backoff_ms: 100, max_backoff_ms: 100, jitter: 0.0)),
            (name: "b", role: "r", backend: "sim", priority: 90, retry: (max_attempts: 1)),
        ],
        workflows: [(name: "w", tasks: [
            (id: "t1", agent: "a", input: "start"),
            (id: "t2", agent: "b", input: "after {{{{t1}}}}", depends_on: ["t1"]),
            (id: "t3", agent: "b", depends_on: ["t2"]),
        ])],
    )"#
    );
    Arc::new(Config::parse(&text, "test.ron", Path::new(".")).expect("valid config"))
}

fn inst(agent: &str) -> InstanceId {
    InstanceId {
        agent: agent.into(),
        replica: 0,
    }
}

fn ok(lease: LeaseId, output: &str) -> Report {
    Report {
        lease,
        outcome: Outcome::Succeeded {
            output: output.into(),
        },
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
        },
    }
}

fn fail(lease: LeaseId, retryable: bool) -> Report {
    Report {
        lease,
        outcome: Outcome::Failed {
            reason: "boom".into(),
            retryable,
            retry_after: None,
        },
        usage: Usage::default(),
    }
}

fn state(core: &SchedulerCore, id: &str) -> TaskState {
    let key = TaskKey {
        workflow: "w".into(),
        task: id.into(),
    };
    core.task(&key).unwrap().state
}

#[test]
fn runs_the_dag_in_order_and_fills_inputs() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    core.agent_idle(inst("b"));
    let (d, _) = core.dispatch(now);
    assert_eq!(d.len(), 1, "only t1 is ready");
    assert_eq!(d[0].key.task, "t1");
    core.report(ok(d[0].lease, "OUT1"), now).unwrap();
    let (d, _) = core.dispatch(now);
    assert_eq!(d[0].key.task, "t2");
    assert_eq!(d[0].input, "after OUT1");
    core.report(ok(d[0].lease, "OUT2"), now).unwrap();
    core.agent_idle(inst("b"));
    let (d, _) = core.dispatch(now);
    core.report(ok(d[0].lease, "OUT3"), now).unwrap();
    assert!(core.is_done());
    assert_eq!(core.counts()[3], (TaskState::Succeeded, 3));
    let t1 = core
        .task(&TaskKey {
            workflow: "w".into(),
            task: "t1".into(),
        })
        .unwrap();
    assert_eq!(t1.usage.prompt_tokens, 10);
    assert_eq!(t1.finished_by.as_deref(), Some("a#0"));
}

#[test]
fn retries_with_backoff_then_falls_back() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    let (d, _) = core.dispatch(now);
    let events = core.report(fail(d[0].lease, true), now).unwrap();
    assert!(events.iter().any(
        |e| matches!(e, SchedEvent::Retry { delay, .. } if *delay == Duration::from_millis(100))
    ));
    core.agent_idle(inst("a"));
    assert!(core.dispatch(now).0.is_empty(), "backoff not over yet");
    assert_eq!(core.next_deadline(), Some(now + Duration::from_millis(100)));
    let later = now + Duration::from_millis(100);
    let (d, _) = core.dispatch(later);
    assert_eq!(d[0].attempt, 2);
    let events = core.report(fail(d[0].lease, true), later).unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, SchedEvent::Fallback { to, .. } if to == "b")));
    core.agent_idle(inst("b"));
    let (d, _) = core.dispatch(later);
    assert_eq!(
        (
            d[0].instance.agent.as_str(),
            d[0].attempt,
            d[0].attempt_total
        ),
        ("b", 1, 3)
    );
    core.report(ok(d[0].lease, "rescued"), later).unwrap();
    assert_eq!(state(&core, "t1"), TaskState::Succeeded);
}

#[test]
fn exhausted_chain_fails_and_skips_downstream_with_reasons() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    let (d, _) = core.dispatch(now);
    // A final error skips the remaining attempts on `a`.
    core.report(fail(d[0].lease, false), now).unwrap();
    core.agent_idle(inst("b"));
    let (d, _) = core.dispatch(now);
    core.report(fail(d[0].lease, true), now).unwrap();
    assert_eq!(state(&core, "t1"), TaskState::Failed);
    assert_eq!(state(&core, "t2"), TaskState::Skipped);
    assert_eq!(state(&core, "t3"), TaskState::Skipped);
    assert!(core.is_done());
    let t1 = &core.tasks()[0];
    let reason = t1.reason.as_deref().unwrap();
    assert!(
        reason.contains("2 attempts") && reason.contains("a -> b") && reason.contains("boom"),
        "{reason}"
    );
    assert_eq!(
        core.tasks()[2].reason.as_deref(),
        Some("upstream task w/t1 failed")
    );
}

#[test]
fn dead_agent_returns_its_lease_and_late_reports_are_refused() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    let (d, _) = core.dispatch(now);
    core.agent_gone(&inst("a"), "panicked", now);
    assert_eq!(state(&core, "t1"), TaskState::Ready);
    assert_eq!(
        core.tasks()[0].attempts[0].error.as_deref(),
        Some("agent a#0 died: panicked")
    );
    assert_eq!(
        core.report(ok(d[0].lease, "late"), now),
        Err(StaleLease(d[0].lease))
    );
    assert_eq!(core.running(), 0);
}

#[test]
fn expired_leases_come_back_and_name_the_instance() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    core.dispatch(now);
    let deadline = core.next_deadline().unwrap();
    let (instances, _) = core.expire(deadline);
    assert_eq!(instances, vec![inst("a")]);
    assert_eq!(state(&core, "t1"), TaskState::Ready);
}

#[test]
fn concurrency_limit_and_cancel() {
    let text = r#"(version: 1, runtime: (max_concurrency: 2),
        backends: [(name: "sim", kind: Sim(()))],
        agents: [(name: "a", role: "r", backend: "sim", replicas: 5)],
        workflows: [(name: "w", tasks: [(id: "x1", agent: "a"), (id: "x2", agent: "a"), (id: "x3", agent: "a")])])"#;
    let cfg = Arc::new(Config::parse(text, "t.ron", Path::new(".")).unwrap());
    let now = Instant::now();
    let mut core = SchedulerCore::new(cfg, now);
    for r in 0..5 {
        core.agent_idle(InstanceId {
            agent: "a".into(),
            replica: r,
        });
    }
    let (d, _) = core.dispatch(now);
    assert_eq!(d.len(), 2);
    assert_eq!(core.running(), 2);
    core.cancel_all("shutdown", now);
    assert!(core.is_done());
    assert!(core.tasks().iter().all(|t| t.state == TaskState::Cancelled));
    assert!(core.report(ok(d[0].lease, "x"), now).is_err());
}

#[test]
fn a_huge_retry_after_is_capped_instead_of_overflowing() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(4), now);
    core.agent_idle(inst("a"));
    let (d, _) = core.dispatch(now);
    let report = Report {
        lease: d[0].lease,
        outcome: Outcome::Failed {
            reason: "429".into(),
            retryable: true,
            retry_after: Some(Duration::MAX),
        },
        usage: Usage::default(),
    };
    core.report(report, now).unwrap();
    assert_eq!(core.next_deadline(), Some(now + MAX_RETRY_AFTER));
}
