//! Recovery of the scheduler core from its stored rows and the journal: unit cases and a
//! property test that crashes a run at a random point (with the last state batches lost, as
//! under `durability: async`), recovers, and runs it to the end.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::store::StateBatch;

fn config() -> Arc<Config> {
    let text = r#"(
        version: 1,
        runtime: (max_concurrency: 3, aging_per_sec: 0.0),
        backends: [(name: "sim", kind: Sim(()))],
        agents: [
            (name: "a", role: "r", backend: "sim", fallback: "b", replicas: 2,
             retry: (max_attempts: 2, initial_backoff_ms: 60000, max_backoff_ms: 60000, jitter: 0.0)),
            (name: "b", role: "r", backend: "sim", retry: (max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 1, jitter: 0.0)),
        ],
        workflows: [(name: "w", tasks: [
            (id: "t1", agent: "a", input: "start"),
            (id: "t2", agent: "a", input: "after {{t1}}", depends_on: ["t1"]),
            (id: "t3", agent: "b", depends_on: ["t1"]),
            (id: "t4", agent: "a", depends_on: ["t2", "t3"]),
        ])],
    )"#;
    Arc::new(Config::parse(text, "test.ron", Path::new(".")).expect("valid config"))
}

fn key(task: &str) -> TaskKey {
    TaskKey {
        workflow: "w".into(),
        task: task.into(),
    }
}

fn inst(agent: &str, replica: u32) -> InstanceId {
    InstanceId {
        agent: agent.into(),
        replica,
    }
}

fn ok(lease: LeaseId, output: &str) -> Report {
    Report {
        lease,
        outcome: Outcome::Succeeded {
            output: output.into(),
        },
        usage: Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
        },
    }
}

fn fail(lease: LeaseId) -> Report {
    Report {
        lease,
        outcome: Outcome::Failed {
            reason: "boom".into(),
            retryable: true,
            retry_after: None,
        },
        usage: Usage::default(),
    }
}

/// The store as the writer leaves it: batches applied in order, rows replaced whole.
#[derive(Default, Clone)]
struct FakeStore {
    state: StateBatch,
}

impl FakeStore {
    fn apply(&mut self, b: StateBatch) {
        for w in b.workflows {
            match self.state.workflows.iter_mut().find(|x| x.id == w.id) {
                Some(x) => *x = w,
                None => self.state.workflows.push(w),
            }
        }
        for t in b.tasks {
            match self
                .state
                .tasks
                .iter_mut()
                .find(|x| x.workflow == t.workflow && x.task == t.task)
            {
                Some(x) => *x = t,
                None => self.state.tasks.push(t),
            }
        }
        for c in b.controls {
            self.state.controls.retain(|x| x.agent != c.agent);
            self.state.controls.push(c);
        }
        self.state.workflows.sort_by_key(|w| w.seq);
        self.state.tasks.sort_by_key(|t| t.seq);
    }
}

fn idle_all(core: &mut SchedulerCore) {
    for (a, n) in [("a", 2), ("b", 1)] {
        for r in 0..n {
            core.agent_idle(inst(a, r));
        }
    }
}

#[test]
fn a_crash_mid_run_keeps_successes_and_continues_the_running_attempt() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    let mut journal = Vec::new();
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    assert_eq!(d.len(), 1);
    journal.push((
        format!("{}#{}", d[0].key, d[0].attempt_total),
        "a".to_owned(),
    ));
    core.report(ok(d[0].lease, "ONE"), now).unwrap();
    core.agent_idle(d[0].instance.clone());
    let (d, _) = core.dispatch(now);
    assert_eq!(d.len(), 2, "t2 and t3 run");
    for x in &d {
        journal.push((
            format!("{}#{}", x.key, x.attempt_total),
            x.instance.agent.to_string(),
        ));
    }
    store.apply(core.take_changes(now, 1_000));
    // Crash. t1 succeeded; t2 and t3 were running their first attempts.
    let (mut back, rec) =
        SchedulerCore::recover(config(), &store.state, &journal, now, 2_000).unwrap();
    assert_eq!(rec.succeeded, 1);
    assert_eq!(rec.continued, 2);
    assert_eq!(back.task(&key("t1")).unwrap().state, TaskState::Succeeded);
    assert_eq!(
        back.task(&key("t1")).unwrap().output.as_deref(),
        Some("ONE")
    );
    idle_all(&mut back);
    let (d, _) = back.dispatch(now);
    let mut got: Vec<(String, u32)> = d
        .iter()
        .map(|x| (x.key.task.clone(), x.attempt_total))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("t2".to_owned(), 1), ("t3".to_owned(), 1)],
        "the running attempts continue under their own numbers; t1 is not run again"
    );
    assert_eq!(
        d.iter().find(|x| x.key.task == "t2").unwrap().input,
        "after ONE"
    );
}

#[test]
fn a_retry_backoff_survives_as_a_wall_clock_deadline() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    core.report(fail(d[0].lease), now).unwrap();
    store.apply(core.take_changes(now, 10_000));
    let row = store.state.tasks.iter().find(|t| t.task == "t1").unwrap();
    assert_eq!(
        row.retry_at_ms,
        Some(70_000),
        "60 s backoff from wall time 10 s"
    );
    // Resumed 20 s (wall) later: 40 s still to wait.
    let (mut back, _) = SchedulerCore::recover(
        config(),
        &store.state,
        &[("w/t1#1".into(), "a".into())],
        now,
        30_000,
    )
    .unwrap();
    idle_all(&mut back);
    assert!(back.dispatch(now).0.is_empty(), "the backoff still runs");
    assert!(back.dispatch(now + Duration::from_secs(39)).0.is_empty());
    let (d, _) = back.dispatch(now + Duration::from_secs(41));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].attempt_total, 2, "a new attempt after the failed one");
}

#[test]
fn the_journal_wins_over_a_row_that_lagged() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    store.apply(core.take_changes(now, 0));
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    // The Running row never reached the store, but the attempt's context did.
    let journal = vec![(
        format!("{}#{}", d[0].key, d[0].attempt_total),
        "a".to_owned(),
    )];
    let (mut back, rec) = SchedulerCore::recover(config(), &store.state, &journal, now, 0).unwrap();
    assert_eq!(rec.continued, 1);
    idle_all(&mut back);
    let (d, _) = back.dispatch(now);
    assert_eq!((d[0].key.task.as_str(), d[0].attempt_total), ("t1", 1));
}

#[test]
fn a_changed_dag_or_a_missing_agent_is_refused_with_every_reason() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    store.apply(core.take_changes(now, 0));
    let text = r#"(
        version: 1,
        backends: [(name: "sim", kind: Sim(()))],
        agents: [(name: "a", role: "r", backend: "sim")],
        workflows: [(name: "w", tasks: [(id: "t1", agent: "a", input: "start")])],
    )"#;
    let changed = Arc::new(Config::parse(text, "t.ron", Path::new(".")).unwrap());
    let err = SchedulerCore::recover(changed, &store.state, &[], now, 0).unwrap_err();
    let all = err.to_string();
    assert!(all.contains("workflow w: its DAG changed"), "{all}");
    assert!(
        all.contains("agent b, which the config no longer declares"),
        "{all}"
    );
}

#[test]
fn spawned_tasks_come_back_with_their_edges_and_a_repeated_spawn_call_is_answered() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    let req = SpawnRequest {
        agent: "b".into(),
        input: "child".into(),
        depends_on: vec![],
        call: Some("w/t1#1/s0/c0".into()),
    };
    let (child, _) = core.spawn("w/t1", req.clone(), now).unwrap();
    assert_eq!(child.task, "t1.1");
    store.apply(core.take_changes(now, 0));
    let journal = vec![("w/t1#1".to_owned(), "a".to_owned())];
    let (mut back, _) = SchedulerCore::recover(config(), &store.state, &journal, now, 0).unwrap();
    let (again, events) = back.spawn("w/t1", req, now).unwrap_or_else(|e| {
        // t1 is not running until it is dispatched again.
        panic!("{e}")
    });
    let _ = d;
    assert_eq!(again, child, "the same call answers the task it spawned");
    assert!(events.is_empty());
    // t2 and t3 wait for the child as well as for t1.
    let t2 = back.task(&key("t2")).unwrap();
    assert!(t2.deps.contains(&back.index[&key("t1.1")]));
}

// ---- property test against a model ----

#[derive(Debug, Clone)]
enum Op {
    /// Dispatch to idle instances.
    Dispatch,
    /// The n-th running lease reports success.
    Succeed(usize),
    /// The n-th running lease reports a retryable failure.
    Fail(usize),
    /// Time passes (retries become due).
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Dispatch),
        3 => (0usize..3).prop_map(Op::Succeed),
        1 => (0usize..3).prop_map(Op::Fail),
        1 => Just(Op::Tick),
    ]
}

struct Sim {
    core: SchedulerCore,
    now: Instant,
    running: Vec<Dispatch>,
    /// Contexts opened (the journal): key#attempt -> agent.
    journal: Vec<(String, String)>,
    /// Every (task, attempt) that reported success, over every incarnation.
    successes: Vec<(String, u32)>,
    /// Outputs of successes, by task.
    outputs: HashMap<String, String>,
    /// Every dispatch of this incarnation, as its context.
    dispatched: Vec<String>,
}

impl Sim {
    fn step(&mut self, op: &Op) {
        match op {
            Op::Dispatch => {
                let (d, _) = self.core.dispatch(self.now);
                for x in d {
                    let ctx = format!("{}#{}", x.key, x.attempt_total);
                    self.dispatched.push(ctx.clone());
                    if !self.journal.iter().any(|(c, _)| *c == ctx) {
                        self.journal.push((ctx, x.instance.agent.to_string()));
                    }
                    self.running.push(x);
                }
            }
            Op::Succeed(n) | Op::Fail(n) if *n < self.running.len() => {
                let x = self.running.remove(*n);
                let report = if matches!(op, Op::Succeed(_)) {
                    // A replayed attempt produces the output its journal holds.
                    let out = format!("out-{}-{}", x.key, x.attempt_total);
                    self.successes.push((x.key.to_string(), x.attempt_total));
                    self.outputs.insert(x.key.to_string(), out.clone());
                    ok(x.lease, &out)
                } else {
                    fail(x.lease)
                };
                self.core.report(report, self.now).unwrap();
                self.core.agent_idle(x.instance);
            }
            Op::Succeed(_) | Op::Fail(_) => {}
            Op::Tick => self.now += Duration::from_secs(61),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn recovery_after_a_crash_at_any_point_never_runs_a_success_twice(
        before in proptest::collection::vec(op(), 0..40),
        lost in 0usize..3,
        after_seed in any::<u64>(),
    ) {
        let start = Instant::now();
        let mut sim = Sim {
            core: SchedulerCore::new(config(), start),
            now: start,
            running: Vec::new(),
            journal: Vec::new(),
            successes: Vec::new(),
            outputs: HashMap::new(),
            dispatched: Vec::new(),
        };
        idle_all(&mut sim.core);
        let mut batches = Vec::new();
        for op in &before {
            sim.step(op);
            batches.push(sim.core.take_changes(sim.now, 0));
        }
        // The crash: the last `lost` batches never reached the store.
        let mut store = FakeStore::default();
        let keep = batches.len().saturating_sub(lost);
        for b in batches.into_iter().take(keep) {
            store.apply(b);
        }
        let stored_success: HashSet<String> = store
            .state
            .tasks
            .iter()
            .filter(|t| t.state == "succeeded")
            .map(|t| format!("{}/{}", t.workflow, t.task))
            .collect();
        let (core, _) = SchedulerCore::recover(config(), &store.state, &sim.journal, sim.now, 0)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        sim.core = core;
        let at_crash: HashMap<String, u32> = sim
            .running
            .iter()
            .map(|x| (x.key.to_string(), x.attempt_total))
            .collect();
        sim.running.clear();
        sim.dispatched.clear();
        idle_all(&mut sim.core);
        // Run to the end; failures now and then (seeded), successes otherwise.
        let mut rng = crate::policy::backoff::SplitMix64::new(after_seed);
        for _ in 0..400 {
            if sim.core.is_done() {
                break;
            }
            sim.step(&Op::Dispatch);
            if sim.running.is_empty() {
                sim.step(&Op::Tick);
                continue;
            }
            let n = (rng.next_unit() * sim.running.len() as f64) as usize % sim.running.len();
            if rng.next_unit() < 0.15 {
                sim.step(&Op::Fail(n));
            } else {
                sim.step(&Op::Succeed(n));
            }
        }
        prop_assert!(sim.core.is_done(), "the resumed run ends");
        for key in &stored_success {
            // A task whose success was stored never ran again after the crash.
            let after = sim.successes.iter().filter(|(k, _)| k == key).count();
            prop_assert_eq!(after, 1, "task {} succeeded {} times", key, after);
        }
        let unique: HashSet<&String> = sim.dispatched.iter().collect();
        prop_assert_eq!(unique.len(), sim.dispatched.len(), "a context was opened twice");
        for (task, n) in &at_crash {
            // The attempt running at the crash goes on under its own number.
            let first = sim
                .dispatched
                .iter()
                .find(|c| c.starts_with(&format!("{task}#")));
            prop_assert_eq!(first, Some(&format!("{task}#{n}")));
        }
        for t in sim.core.tasks() {
            if t.state == TaskState::Succeeded {
                prop_assert_eq!(t.output.as_ref(), sim.outputs.get(&t.key.to_string()));
            }
        }
    }
}

#[test]
fn a_task_running_on_an_agent_killed_before_the_crash_moves_to_its_fallback_fresh() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let mut store = FakeStore::default();
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    store.apply(core.take_changes(now, 0));
    // The kill's rows are stored, the attempt's failure row is not (it lagged).
    let mut kill_batch = StateBatch::default();
    core.kill("a", "ops", now).unwrap();
    let all = core.take_changes(now, 0);
    kill_batch.controls = all.controls;
    store.apply(kill_batch);
    let journal = vec![(
        format!("{}#{}", d[0].key, d[0].attempt_total),
        "a".to_owned(),
    )];
    let (mut back, _) = SchedulerCore::recover(config(), &store.state, &journal, now, 0).unwrap();
    idle_all(&mut back);
    let (d, _) = back.dispatch(now);
    assert_eq!(d.len(), 1);
    assert_eq!(
        &*d[0].instance.agent, "b",
        "the killed agent's task went to its fallback"
    );
    assert_eq!(
        d[0].attempt_total, 2,
        "as a new attempt, not agent a's journal"
    );
}

#[test]
fn a_transition_out_of_running_names_the_instance_in_the_audit() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    idle_all(&mut core);
    let (d, _) = core.dispatch(now);
    let events = core.report(ok(d[0].lease, "ONE"), now).unwrap();
    let rows = core.audit_rows(&events, 7);
    let done = rows
        .iter()
        .find(|r| r.kind == "task_state" && r.task.as_deref() == Some("w/t1"))
        .unwrap();
    assert_eq!(
        done.instance.as_deref(),
        Some(d[0].instance.to_string().as_str())
    );
    assert!(
        done.detail.contains("\"to\":\"succeeded\""),
        "{}",
        done.detail
    );
    assert_eq!(done.at_ms, 7);
}

#[test]
fn after_a_lost_batch_every_row_is_written_again() {
    let now = Instant::now();
    let mut core = SchedulerCore::new(config(), now);
    let all = core.take_changes(now, 0);
    assert_eq!(all.tasks.len(), 4);
    assert!(core.take_changes(now, 0).is_empty());
    core.kill("b", "ops", now).unwrap();
    let _lost = core.take_changes(now, 0);
    core.mark_all_dirty();
    let again = core.take_changes(now, 0);
    assert_eq!((again.workflows.len(), again.tasks.len()), (1, 4));
    assert_eq!(again.controls.len(), 1, "the kill is written again");
    assert_eq!(again.controls[0].status, "killed");
}
