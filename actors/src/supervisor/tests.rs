use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use agentos_runtime::policy::supervision::RestartType;

use super::*;

/// What the children did, in order, shared by every child of a test.
type Log = Rc<RefCell<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// A test child. It logs its name from `stopped()`.
struct Child {
    name: String,
    notice: ExitNotice,
    log: Log,
    how: How,
}

/// How a test child behaves when asked to stop.
#[derive(Clone, Copy, Default)]
struct How {
    /// Time between `Quit` and the stop.
    stop_delay: Duration,
    /// Vetoes every stop from `stopping()`: only `ctx.terminate()` ends it.
    deaf: bool,
    /// Its handle sends `HardStop` (which it obeys); otherwise the handle has no hard stop.
    hard_stop: bool,
    /// Logs `name: asked` when it gets its `Quit`.
    log_quit: bool,
}

impl Actor for Child {
    type Context = Context<Self>;

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.how.deaf {
            Running::Continue
        } else {
            Running::Stop
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.log.borrow_mut().push(self.name.clone());
        self.notice.exited();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Child {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Self::Context) {
        panic!("boom");
    }
}

#[derive(Message, Default)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Quit> for Child {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Self::Context) {
        if self.how.log_quit {
            self.log.borrow_mut().push(format!("{}: asked", self.name));
        }
        if self.how.stop_delay.is_zero() {
            ctx.stop();
        } else {
            ctx.run_later(self.how.stop_delay, |_, ctx| ctx.stop());
        }
    }
}

impl Handler<HardStop> for Child {
    type Result = ();
    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        self.log
            .borrow_mut()
            .push(format!("{}: hard stop", self.name));
        ctx.terminate();
    }
}

/// What a test sees of one child spec: its starts, every incarnation's address, and the reason
/// of every exit its hook was called with.
#[derive(Clone, Default)]
struct Probe {
    starts: Rc<Cell<u32>>,
    addrs: Rc<RefCell<Vec<Addr<Child>>>>,
    exits: Rc<RefCell<Vec<ExitReason>>>,
}

impl Probe {
    fn starts(&self) -> u32 {
        self.starts.get()
    }

    /// The address of incarnation `n` (0 = the first).
    fn addr(&self, n: usize) -> Addr<Child> {
        self.addrs.borrow()[n].clone()
    }

    fn exits(&self) -> Vec<ExitReason> {
        self.exits.borrow().clone()
    }
}

fn child(id: &str, restart: RestartType, log: &Log) -> (ChildSpec, Probe) {
    child_with(id, restart, log, How::default())
}

fn child_with(id: &str, restart: RestartType, log: &Log, how: How) -> (ChildSpec, Probe) {
    let probe = Probe::default();
    let (seen, log, name) = (probe.clone(), log.clone(), id.to_owned());
    let spec = ChildSpec::new(id, "test", restart, move |notice| {
        seen.starts.set(seen.starts.get() + 1);
        let addr = Child {
            name: name.clone(),
            notice,
            log: log.clone(),
            how,
        }
        .start();
        seen.addrs.borrow_mut().push(addr.clone());
        if how.hard_stop {
            ChildHandle::stop_or_hard_stop(addr, Quit::default)
        } else {
            ChildHandle::stop_with(addr, Quit::default)
        }
    });
    let exits = probe.exits.clone();
    let spec = spec.on_exit(move |reason| exits.borrow_mut().push(reason.clone()));
    (spec, probe)
}

fn settings(max_restarts: u32) -> SupervisorSettings {
    SupervisorSettings {
        max_restarts,
        within: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
    }
}

fn supervise(
    strategy: Strategy,
    settings: SupervisorSettings,
    children: Vec<ChildSpec>,
) -> Addr<Supervisor> {
    Supervisor::new("t", strategy, settings, children, ExitNotice::detached()).start()
}

async fn until(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 5 s"
        );
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sends `StopTree` and waits for the answer (at most 5 s).
async fn stop_tree(sup: &Addr<Supervisor>) {
    actix_rt::time::timeout(Duration::from_secs(5), sup.send(StopTree))
        .await
        .expect("StopTree answered within 5 s")
        .expect("supervisor reachable");
}

/// Lets the supervisor handle everything already in its mailbox.
async fn round_trip(sup: &Addr<Supervisor>) {
    assert!(!sup.send(RestartChild("nobody".into())).await.unwrap());
}

#[actix_rt::test]
async fn one_for_one_rebuilds_only_the_panicking_child() {
    let log = Log::default();
    let (a, pa) = child("a", RestartType::Permanent, &log);
    let (b, pb) = child("b", RestartType::Permanent, &log);
    let counter = Arc::new(AtomicU64::new(0));
    let _sup = Supervisor::new(
        "t",
        Strategy::OneForOne,
        settings(5),
        vec![a, b],
        ExitNotice::detached(),
    )
    .count_restarts_in(counter.clone())
    .start();
    until(|| pa.starts() == 1 && pb.starts() == 1).await;
    pa.addr(0).do_send(Boom);
    until(|| pa.starts() == 2).await;
    assert_eq!(counter.load(Ordering::Relaxed), 1);
    assert!(pa.addr(1).connected());
    assert_eq!(pb.starts(), 1, "a sibling is left alone");
    assert!(pb.addr(0).connected());
    assert!(pb.exits().is_empty());
    assert!(pa.exits()[0].is_abnormal());
}

#[actix_rt::test]
async fn temporary_children_are_not_restarted_and_intensity_escalates() {
    let log = Log::default();
    let (temp, pt) = child("temp", RestartType::Temporary, &log);
    let (perm, pp) = child("perm", RestartType::Permanent, &log);
    let gave_up = Rc::new(Cell::new(false));
    let flag = gave_up.clone();
    let sup = Supervisor::new(
        "t",
        Strategy::OneForOne,
        settings(2),
        vec![temp, perm],
        ExitNotice::detached(),
    )
    .on_give_up(move |_| flag.set(true))
    .start();
    until(|| pp.starts() == 1 && pt.starts() == 1).await;
    pt.addr(0).do_send(Boom);
    for n in 1..=2 {
        pp.addr(n - 1).do_send(Boom);
        until(|| pp.starts() == n as u32 + 1).await;
    }
    // The third crash within the window exceeds max_restarts = 2.
    pp.addr(2).do_send(Boom);
    until(|| gave_up.get()).await;
    until(|| !sup.connected()).await;
    assert_eq!(pt.starts(), 1, "temporary child must not restart");
}

#[actix_rt::test]
async fn one_for_all_restarts_siblings() {
    let log = Log::default();
    let (a, pa) = child("a", RestartType::Permanent, &log);
    let (b, pb) = child("b", RestartType::Permanent, &log);
    let _sup = supervise(Strategy::OneForAll, settings(5), vec![a, b]);
    until(|| pa.starts() == 1 && pb.starts() == 1).await;
    pa.addr(0).do_send(Boom);
    until(|| pa.starts() == 2 && pb.starts() == 2).await;
    until(|| !pb.addr(0).connected()).await;
    assert_eq!(pb.exits().len(), 1, "the sibling's hook runs once");
    assert!(pb.exits()[0].is_abnormal());
}

#[actix_rt::test]
async fn rest_for_one_restarts_the_child_and_those_started_after_it() {
    let log = Log::default();
    let (a, pa) = child("a", RestartType::Permanent, &log);
    let (b, pb) = child("b", RestartType::Permanent, &log);
    let (c, pc) = child("c", RestartType::Permanent, &log);
    let _sup = supervise(Strategy::RestForOne, settings(5), vec![a, b, c]);
    until(|| pa.starts() == 1 && pb.starts() == 1 && pc.starts() == 1).await;
    pb.addr(0).do_send(Boom);
    until(|| pb.starts() == 2 && pc.starts() == 2).await;
    until(|| !pc.addr(0).connected()).await;
    assert_eq!(
        pa.starts(),
        1,
        "a child started before the failed one is left alone"
    );
    assert!(pa.addr(0).connected());
    assert!(pa.exits().is_empty());
}

#[actix_rt::test]
async fn ordered_restarts_count_toward_intensity_and_escalate() {
    let log = Log::default();
    let (c, pc) = child("c", RestartType::Permanent, &log);
    let gave_up = Rc::new(Cell::new(None));
    let why = gave_up.clone();
    let sup = Supervisor::new(
        "t",
        Strategy::OneForOne,
        settings(2),
        vec![c],
        ExitNotice::detached(),
    )
    .on_give_up(move |w| why.set(Some(w)))
    .start();
    until(|| pc.starts() == 1).await;

    assert!(sup.send(RestartChild("c".into())).await.unwrap());
    until(|| pc.starts() == 2).await;
    // The replaced incarnation stops and reports; that stale notice changes nothing.
    until(|| !pc.addr(0).connected()).await;
    round_trip(&sup).await;
    assert_eq!(pc.starts(), 2);
    assert_eq!(
        pc.exits().len(),
        1,
        "the hook runs once per ordered restart"
    );

    assert!(sup.send(RestartChild("c".into())).await.unwrap());
    until(|| pc.starts() == 3).await;
    // A third restart within the window exceeds max_restarts = 2.
    assert!(sup.send(RestartChild("c".into())).await.unwrap());
    until(|| !sup.connected()).await;
    let why = gave_up.take().expect("the supervisor escalated");
    assert!(why.contains("restart ordered"), "{why}");
    assert_eq!(pc.starts(), 3, "no restart after the escalation");
    let exits = pc.exits();
    assert_eq!(exits.len(), 3);
    assert!(exits.iter().all(ExitReason::is_abnormal));
}

#[actix_rt::test]
async fn ordered_restarts_wait_for_the_backoff() {
    let log = Log::default();
    let (c, pc) = child("c", RestartType::Permanent, &log);
    let backoff = SupervisorSettings {
        max_restarts: 5,
        within: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(40),
        backoff_max: Duration::from_secs(1),
    };
    let sup = supervise(Strategy::OneForOne, backoff, vec![c]);
    until(|| pc.starts() == 1).await;
    for (n, delay) in [(2, 40), (3, 80)] {
        let asked = Instant::now();
        assert!(sup.send(RestartChild("c".into())).await.unwrap());
        assert_eq!(pc.starts(), n - 1, "not restarted before the backoff");
        until(|| pc.starts() == n).await;
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(delay),
            "restart {n} after {waited:?}, backoff {delay} ms"
        );
    }
}

#[actix_rt::test]
async fn stop_tree_is_a_barrier_in_reverse_start_order() {
    let log = Log::default();
    let slow = |ms| How {
        stop_delay: Duration::from_millis(ms),
        ..How::default()
    };
    let (a, _) = child("a", RestartType::Permanent, &log);
    let inner_log = log.clone();
    let inner = ChildSpec::new(
        "inner",
        "supervisor",
        RestartType::Permanent,
        move |notice| {
            let (x, _) = child("x", RestartType::Permanent, &inner_log);
            let (y, _) = child_with("y", RestartType::Permanent, &inner_log, slow(20));
            let sup = Supervisor::new(
                "inner",
                Strategy::OneForOne,
                settings(5),
                vec![x, y],
                notice,
            );
            ChildHandle::supervisor(sup.start())
        },
    );
    let hook_log = log.clone();
    let inner = inner.on_exit(move |_| hook_log.borrow_mut().push("inner".into()));
    let (c, _) = child_with("c", RestartType::Permanent, &log, slow(30));
    let root = supervise(Strategy::OneForOne, settings(5), vec![a, inner, c]);
    // Every child is up once the inner supervisor answers.
    round_trip(&root).await;

    stop_tree(&root).await;
    log.borrow_mut().push("reply".into());
    assert_eq!(entries(&log), ["c", "y", "x", "inner", "a", "reply"]);
}

#[actix_rt::test]
async fn a_child_that_ignores_its_stop_is_hard_stopped_after_its_shutdown_timeout() {
    let log = Log::default();
    let deaf = How {
        deaf: true,
        hard_stop: true,
        ..How::default()
    };
    let (a, _) = child("a", RestartType::Permanent, &log);
    let (b, pb) = child_with("b", RestartType::Permanent, &log, deaf);
    let b = b.shutdown_timeout(Duration::from_millis(30));
    let root = supervise(Strategy::OneForOne, settings(5), vec![a, b]);
    until(|| pb.starts() == 1).await;

    let asked = Instant::now();
    stop_tree(&root).await;
    log.borrow_mut().push("reply".into());
    assert!(asked.elapsed() >= Duration::from_millis(30));
    assert_eq!(entries(&log), ["b: hard stop", "b", "a", "reply"]);
    let exits = pb.exits();
    assert_eq!(exits.len(), 1);
    assert!(
        exits[0].to_string().contains("hard-stopped"),
        "{}",
        exits[0]
    );
}

#[actix_rt::test]
async fn a_child_that_outlives_its_hard_stop_is_abandoned() {
    let log = Log::default();
    // Deaf, and its handle has no hard-stop message: the hard stop can only drop the handle,
    // and the test keeps another address alive.
    let deaf = How {
        deaf: true,
        ..How::default()
    };
    let (a, _) = child("a", RestartType::Permanent, &log);
    let (b, pb) = child_with("b", RestartType::Permanent, &log, deaf);
    let b = b.shutdown_timeout(Duration::from_millis(20));
    let root = supervise(Strategy::OneForOne, settings(5), vec![a, b]);
    until(|| pb.starts() == 1).await;

    let asked = Instant::now();
    stop_tree(&root).await;
    log.borrow_mut().push("reply".into());
    assert!(asked.elapsed() >= Duration::from_millis(40));
    assert_eq!(entries(&log), ["a", "reply"]);
    assert!(pb.addr(0).connected(), "nothing could stop it");
    let exits = pb.exits();
    assert_eq!(exits.len(), 1);
    assert!(exits[0].to_string().contains("abandoned"), "{}", exits[0]);
}

#[actix_rt::test]
async fn escalation_stops_the_subtree_before_the_parent_hears() {
    let log = Log::default();
    let inner_log = log.clone();
    let x_probes: Rc<RefCell<Vec<Probe>>> = Default::default();
    let probes = x_probes.clone();
    let inner = ChildSpec::new(
        "inner",
        "supervisor",
        RestartType::Permanent,
        move |notice| {
            let (x, px) = child("x", RestartType::Permanent, &inner_log);
            let (y, _) = child("y", RestartType::Permanent, &inner_log);
            probes.borrow_mut().push(px);
            let sup = Supervisor::new(
                "inner",
                Strategy::OneForOne,
                settings(0),
                vec![x, y],
                notice,
            );
            ChildHandle::supervisor(sup.start())
        },
    );
    let hook_log = log.clone();
    let inner = inner.on_exit(move |reason| {
        hook_log.borrow_mut().push(format!("inner: {reason}"));
    });
    let root = supervise(Strategy::OneForOne, settings(5), vec![inner]);
    round_trip(&root).await;
    until(|| x_probes.borrow().len() == 1 && x_probes.borrow()[0].starts() == 1).await;

    x_probes.borrow()[0].addr(0).do_send(Boom);
    // The root restarts the inner supervisor, which starts x again.
    until(|| x_probes.borrow().len() == 2 && x_probes.borrow()[1].starts() == 1).await;
    let seen = entries(&log);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen[..2],
        ["x", "y"],
        "the sibling stops before the parent hears"
    );
    assert_eq!(
        seen[2],
        "inner: supervisor inner gave up: x exited: actor lost to a panic in a handler"
    );
}

#[actix_rt::test]
async fn replicas_share_one_spec_and_are_each_their_own_child() {
    let log = Log::default();
    let starts: Rc<RefCell<Vec<u32>>> = Rc::default();
    let exits: Rc<RefCell<Vec<(u32, ExitReason)>>> = Rc::default();
    let (seen, child_log) = (starts.clone(), log.clone());
    let spec = ChildSpec::replicas("w", "test", RestartType::Permanent, 3, move |r, notice| {
        seen.borrow_mut().push(r);
        let addr = Child {
            name: format!("w#{r}"),
            notice,
            log: child_log.clone(),
            how: How::default(),
        }
        .start();
        ChildHandle::stop_with(addr, Quit::default)
    });
    let hook = exits.clone();
    let spec = spec.on_replica_exit(move |r, reason| hook.borrow_mut().push((r, reason.clone())));
    let (single, ps) = child("w#9", RestartType::Permanent, &log);
    let sup = supervise(Strategy::OneForOne, settings(5), vec![spec, single]);
    until(|| starts.borrow().len() == 3 && ps.starts() == 1).await;
    assert_eq!(
        *starts.borrow(),
        [0, 1, 2],
        "replicas start in replica order"
    );

    assert!(sup.send(RestartChild("w#1".into())).await.unwrap());
    until(|| starts.borrow().len() == 4).await;
    assert_eq!(starts.borrow()[3], 1, "only the replica asked for restarts");
    assert_eq!(exits.borrow().len(), 1);
    assert_eq!(exits.borrow()[0].0, 1, "the hook is told which replica");
    // Ids that name no child: past the last replica, not as `w#r` writes it, the bare label.
    for id in ["w#3", "w#01", "w#+1", "w"] {
        assert!(!sup.send(RestartChild(id.into())).await.unwrap(), "{id}");
    }
    // A child of its own whose id looks like a replica's is found by its whole id.
    assert!(sup.send(RestartChild("w#9".into())).await.unwrap());
    until(|| ps.starts() == 2).await;
    // The replaced incarnations are gone before the barrier is watched.
    until(|| entries(&log).len() == 2).await;

    log.borrow_mut().clear();
    stop_tree(&sup).await;
    let mut stopped = entries(&log);
    assert_eq!(stopped[0], "w#9", "the child started last stops first");
    stopped[1..].sort();
    assert_eq!(stopped, ["w#9", "w#0", "w#1", "w#2"]);
}

#[actix_rt::test]
async fn the_replicas_of_a_spec_are_asked_to_stop_together() {
    let log = Log::default();
    let (first, _) = child("first", RestartType::Permanent, &log);
    let child_log = log.clone();
    let spec = ChildSpec::replicas("w", "test", RestartType::Permanent, 3, move |r, notice| {
        let addr = Child {
            name: format!("w#{r}"),
            notice,
            log: child_log.clone(),
            how: How {
                stop_delay: Duration::from_millis(20),
                log_quit: true,
                ..How::default()
            },
        }
        .start();
        ChildHandle::stop_with(addr, Quit::default)
    });
    let sup = supervise(Strategy::OneForOne, settings(5), vec![first, spec]);
    round_trip(&sup).await;

    stop_tree(&sup).await;
    let log = entries(&log);
    assert_eq!(log.len(), 7, "{log:?}");
    let mut asked = log[..3].to_vec();
    asked.sort();
    assert_eq!(
        asked,
        ["w#0: asked", "w#1: asked", "w#2: asked"],
        "every replica is asked before any has stopped: {log:?}"
    );
    let mut stopped = log[3..6].to_vec();
    stopped.sort();
    assert_eq!(stopped, ["w#0", "w#1", "w#2"]);
    assert_eq!(log[6], "first", "the barrier still waits for all of them");
}
