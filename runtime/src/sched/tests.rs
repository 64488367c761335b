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
        (&*d[0].instance.agent, d[0].attempt, d[0].attempt_total),
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

mod control {
    use super::*;
    use crate::config::{TaskSpec, WorkflowSpec};

    fn key(wf: &str, id: &str) -> TaskKey {
        TaskKey {
            workflow: wf.into(),
            task: id.into(),
        }
    }

    fn one_task(name: &str, agent: &str) -> WorkflowSpec {
        WorkflowSpec {
            name: name.into(),
            tasks: vec![TaskSpec {
                id: "only".into(),
                agent: agent.into(),
                input: "go".into(),
                depends_on: vec![],
                priority_boost: 0,
            }],
            weight: 1.0,
            quotas: Default::default(),
        }
    }

    fn spawn_req(agent: &str, deps: &[&str]) -> SpawnRequest {
        SpawnRequest {
            agent: agent.into(),
            input: "part".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            call: None,
        }
    }

    #[test]
    fn a_submitted_workflow_gets_a_fresh_id_and_an_idempotent_resubmit_returns_it() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        assert_eq!(
            core.take_pending().len(),
            1,
            "the declared workflow is accepted"
        );
        let (id, created, events) = core
            .submit(one_task("w", "b"), Some("k1".into()), "api", now)
            .unwrap();
        assert_eq!(id, "w-2", "`w` is taken by the declared workflow");
        assert!(created);
        assert!(matches!(events[0], SchedEvent::WorkflowAccepted { .. }));
        let (again, created, _) = core
            .submit(one_task("w", "b"), Some("k1".into()), "api", now)
            .unwrap();
        assert_eq!((again.as_str(), created), ("w-2", false));
        let err = core
            .submit(one_task("other", "b"), Some("k1".into()), "api", now)
            .unwrap_err();
        assert!(matches!(err, Refused::Conflict(_)), "{err}");
        assert_eq!(core.workflows().len(), 2, "no second copy was made");
        assert_eq!(
            core.task(&key("w-2", "only")).unwrap().state,
            TaskState::Ready
        );
    }

    #[test]
    fn cancel_leaves_nothing_running_and_absorbs_the_late_report() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        core.agent_idle(inst("a"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].key.task, "t1");
        let events = core.cancel_workflow("w", "api test", now).unwrap();
        assert!(events.iter().any(|e| matches!(e,
            SchedEvent::AttemptCancelled { lease, .. } if *lease == d[0].lease)));
        assert!(events.iter().any(|e| matches!(
            e,
            SchedEvent::WorkflowFinished {
                state: WorkflowState::Cancelled,
                ..
            }
        )));
        for t in ["t1", "t2", "t3"] {
            assert_eq!(state(&core, t), TaskState::Cancelled, "{t}");
            let reason = core.task(&key("w", t)).unwrap().reason.clone().unwrap();
            assert!(reason.contains("cancelled by api test"), "{reason}");
        }
        assert_eq!(core.running(), 0);
        // The stopped attempt reports later: absorbed, tokens kept, state unchanged.
        assert!(core.report(ok(d[0].lease, "late"), now).unwrap().is_empty());
        assert_eq!(state(&core, "t1"), TaskState::Cancelled);
        assert_eq!(core.task(&key("w", "t1")).unwrap().usage.prompt_tokens, 10);
        let again = core.cancel_workflow("w", "api", now).unwrap_err();
        assert!(matches!(again, Refused::Conflict(_)));
        assert!(matches!(
            core.cancel_workflow("nope", "api", now),
            Err(Refused::NotFound(_))
        ));
    }

    #[test]
    fn a_suspended_agent_gets_no_dispatch_and_its_lease_does_not_expire() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        core.suspend("a", "op").unwrap();
        core.agent_idle(inst("a"));
        assert!(core.dispatch(now).0.is_empty(), "suspended: no dispatch");
        assert_eq!(state(&core, "t1"), TaskState::Ready);
        core.resume("a", "op", now).unwrap();
        let (d, _) = core.dispatch(now);
        assert_eq!(d.len(), 1);
        core.suspend("a", "op").unwrap();
        let much_later = now + Duration::from_secs(3600);
        assert!(core.expire(much_later).0.is_empty(), "paused lease kept");
        assert_eq!(core.next_deadline(), None);
        core.resume("a", "op", much_later).unwrap();
        assert!(core.next_deadline().unwrap() > much_later, "fresh deadline");
        core.report(ok(d[0].lease, "OUT"), much_later).unwrap();
        assert_eq!(state(&core, "t1"), TaskState::Succeeded);
        assert!(matches!(
            core.suspend("zz", "op"),
            Err(Refused::NotFound(_))
        ));
    }

    #[test]
    fn kill_moves_the_running_task_to_its_fallback_and_resume_undoes_it() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        core.agent_idle(inst("a"));
        let (d, _) = core.dispatch(now);
        let events = core.kill("a", "op", now).unwrap();
        assert!(events
            .iter()
            .any(|e| matches!(e, SchedEvent::Fallback { to, .. } if to == "b")));
        let t1 = core.task(&key("w", "t1")).unwrap();
        assert_eq!(
            (t1.state, t1.current_agent.as_str()),
            (TaskState::Ready, "b")
        );
        assert!(t1.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("killed by op"));
        // The killed instance's report is stale; a killed agent never becomes idle.
        assert!(core.report(ok(d[0].lease, "x"), now).is_err());
        core.agent_idle(inst("a"));
        core.agent_idle(inst("b"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].instance, inst("b"));
        assert_eq!(core.agent_status("a"), Some(AgentStatus::Killed));
        assert!(matches!(
            core.kill("a", "op", now),
            Err(Refused::Conflict(_))
        ));
        let (was_killed, _) = core.resume("a", "op", now).unwrap();
        assert!(was_killed);
        assert_eq!(core.agent_status("a"), Some(AgentStatus::Active));
    }

    #[test]
    fn kill_without_fallback_fails_the_task_naming_the_kill() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        core.submit(one_task("solo", "b"), None, "api", now)
            .unwrap();
        let events = core.kill("b", "op", now).unwrap();
        let only = core.task(&key("solo", "only")).unwrap();
        assert_eq!(only.state, TaskState::Failed);
        assert!(only
            .reason
            .as_deref()
            .unwrap()
            .contains("agent b was killed by op"));
        assert!(events.iter().any(|e| matches!(e,
            SchedEvent::WorkflowFinished { id, state: WorkflowState::Failed } if id == "solo")));
    }

    #[test]
    fn spawned_tasks_run_and_the_spawners_dependents_wait_for_them() {
        let now = Instant::now();
        let mut core = SchedulerCore::new(config(4), now);
        core.agent_idle(inst("a"));
        let (d, _) = core.dispatch(now);
        let (c1, events) = core.spawn("w/t1", spawn_req("b", &[]), now).unwrap();
        assert_eq!(c1, key("w", "t1.1"));
        assert!(matches!(
            events[0],
            SchedEvent::TaskSpawned { depth: 1, .. }
        ));
        let (c2, _) = core.spawn("w/t1", spawn_req("b", &["t1.1"]), now).unwrap();
        assert_eq!(core.task(&c1).unwrap().state, TaskState::Ready);
        assert_eq!(core.task(&c2).unwrap().state, TaskState::Pending);
        // t2 depends on t1: a child may not wait for it (that would be a cycle).
        let err = core
            .spawn("w/t1", spawn_req("b", &["t2"]), now)
            .unwrap_err();
        assert!(matches!(err, SpawnError::Cycle(_)), "{err}");
        let err = core
            .spawn("w/t1", spawn_req("b", &["nope"]), now)
            .unwrap_err();
        assert!(matches!(err, SpawnError::UnknownDependency(_)));
        let err = core.spawn("w/t1", spawn_req("zz", &[]), now).unwrap_err();
        assert!(matches!(err, SpawnError::UnknownAgent(_)));
        let err = core.spawn("w/t2", spawn_req("b", &[]), now).unwrap_err();
        assert!(matches!(err, SpawnError::NotRunning(_)), "t2 is pending");
        core.report(ok(d[0].lease, "planned"), now).unwrap();
        assert_eq!(
            state(&core, "t2"),
            TaskState::Pending,
            "t2 waits for the children"
        );
        core.agent_idle(inst("b"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].key, c1);
        // A child may spawn (depth 1 < max_depth 2); a grandchild may not.
        let (g, _) = core.spawn("w/t1.1", spawn_req("b", &[]), now).unwrap();
        assert_eq!(core.task(&g).unwrap().depth, 2);
        core.report(ok(d[0].lease, "c1"), now).unwrap();
        core.agent_idle(inst("b"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].key, g);
        let err = core
            .spawn("w/t1.1.1", spawn_req("b", &[]), now)
            .unwrap_err();
        assert!(matches!(err, SpawnError::TooDeep { .. }), "{err}");
        core.report(ok(d[0].lease, "g"), now).unwrap();
        core.agent_idle(inst("b"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].key, c2);
        core.report(ok(d[0].lease, "c2"), now).unwrap();
        assert_eq!(state(&core, "t2"), TaskState::Ready, "every child done");
        let view = core.view("w", true, now).unwrap();
        assert_eq!(view.spawned, 3);
        let t2 = view.tasks.iter().find(|t| t.id == "t2").unwrap();
        assert_eq!(t2.depends_on, vec!["t1", "t1.1", "t1.2", "t1.1.1"]);
        // The reducer reads its children's outputs as shared pages; t1 is quoted in its input.
        core.agent_idle(inst("b"));
        let (d, _) = core.dispatch(now);
        assert_eq!(d[0].key.task, "t2");
        assert_eq!(d[0].input, "after planned");
        assert_eq!(d[0].shared, vec!["w/t1.1", "w/t1.2", "w/t1.1.1"]);
    }

    #[test]
    fn spawning_past_the_per_workflow_limit_is_refused() {
        let text = r#"(
            version: 1,
            runtime: (spawn: (max_tasks_per_workflow: 2)),
            backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", tasks: [(id: "t1", agent: "a", input: "x")])],
        )"#;
        let cfg = Arc::new(Config::parse(text, "t.ron", Path::new(".")).unwrap());
        let now = Instant::now();
        let mut core = SchedulerCore::new(cfg, now);
        core.agent_idle(inst("a"));
        let (d, _) = core.dispatch(now);
        core.spawn("w/t1", spawn_req("a", &[]), now).unwrap();
        core.spawn("w/t1", spawn_req("a", &[]), now).unwrap();
        let err = core.spawn("w/t1", spawn_req("a", &[]), now).unwrap_err();
        assert!(matches!(err, SpawnError::TooMany { limit: 2, .. }), "{err}");
        assert!(err.to_string().contains("max_tasks_per_workflow"));
        core.report(ok(d[0].lease, "done"), now).unwrap();
        assert!(!core.is_done(), "children still to run");
    }
}
