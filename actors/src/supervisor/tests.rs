use std::cell::Cell;
use std::rc::Rc;

use super::*;

struct Crashy {
    notice: ExitNotice,
}

impl Actor for Crashy {
    type Context = Context<Self>;
    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Crashy {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Self::Context) {
        panic!("boom");
    }
}

#[derive(Message, Default)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Quit> for Crashy {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

fn settings(max_restarts: u32) -> SupervisorSettings {
    SupervisorSettings {
        max_restarts,
        within: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
    }
}

type Addrs = Rc<std::cell::RefCell<Vec<Addr<Crashy>>>>;

fn crashy_spec(id: &str, restart: RestartType, starts: Rc<Cell<u32>>, addrs: Addrs) -> ChildSpec {
    ChildSpec {
        id: id.into(),
        kind: "test",
        restart,
        start: Box::new(move |notice| {
            starts.set(starts.get() + 1);
            let addr = Crashy { notice }.start();
            addrs.borrow_mut().push(addr.clone());
            ChildHandle::stop_with(addr, Quit::default)
        }),
        on_exit: None,
    }
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

#[actix_rt::test]
async fn a_panicking_child_is_rebuilt() {
    let starts = Rc::new(Cell::new(0));
    let addrs: Addrs = Default::default();
    let counter = Arc::new(AtomicU64::new(0));
    let spec = crashy_spec("c", RestartType::Permanent, starts.clone(), addrs.clone());
    let _sup = Supervisor::new(
        "t",
        Strategy::OneForOne,
        settings(5),
        vec![spec],
        ExitNotice::detached(),
    )
    .count_restarts_in(counter.clone())
    .start();
    until(|| starts.get() == 1).await;
    let first = addrs.borrow()[0].clone();
    first.do_send(Boom);
    until(|| starts.get() == 2).await;
    assert_eq!(counter.load(Ordering::Relaxed), 1);
    let second = addrs.borrow()[1].clone();
    assert!(second.connected());
}

#[actix_rt::test]
async fn temporary_children_are_not_restarted_and_intensity_escalates() {
    let starts = Rc::new(Cell::new(0));
    let temp_starts = Rc::new(Cell::new(0));
    let addrs: Addrs = Default::default();
    let temp_addrs: Addrs = Default::default();
    let gave_up = Rc::new(Cell::new(false));
    let flag = gave_up.clone();
    let sup = Supervisor::new(
        "t",
        Strategy::OneForOne,
        settings(2),
        vec![
            crashy_spec(
                "temp",
                RestartType::Temporary,
                temp_starts.clone(),
                temp_addrs.clone(),
            ),
            crashy_spec(
                "perm",
                RestartType::Permanent,
                starts.clone(),
                addrs.clone(),
            ),
        ],
        ExitNotice::detached(),
    )
    .on_give_up(move |_| flag.set(true))
    .start();
    until(|| starts.get() == 1 && temp_starts.get() == 1).await;
    temp_addrs.borrow()[0].do_send(Boom);
    for n in 1..=2 {
        let addr = addrs.borrow()[n - 1].clone();
        addr.do_send(Boom);
        until(|| starts.get() == n as u32 + 1).await;
    }
    // The third crash within the window exceeds max_restarts = 2.
    let addr = addrs.borrow()[2].clone();
    addr.do_send(Boom);
    until(|| gave_up.get()).await;
    until(|| !sup.connected()).await;
    assert_eq!(temp_starts.get(), 1, "temporary child must not restart");
}

#[actix_rt::test]
async fn one_for_all_restarts_siblings() {
    let a = Rc::new(Cell::new(0));
    let b = Rc::new(Cell::new(0));
    let addrs_a: Addrs = Default::default();
    let addrs_b: Addrs = Default::default();
    let _sup = Supervisor::new(
        "t",
        Strategy::OneForAll,
        settings(5),
        vec![
            crashy_spec("a", RestartType::Permanent, a.clone(), addrs_a.clone()),
            crashy_spec("b", RestartType::Permanent, b.clone(), addrs_b.clone()),
        ],
        ExitNotice::detached(),
    )
    .start();
    until(|| a.get() == 1 && b.get() == 1).await;
    let first_b = addrs_b.borrow()[0].clone();
    addrs_a.borrow()[0].do_send(Boom);
    until(|| a.get() == 2 && b.get() == 2).await;
    until(|| !first_b.connected()).await;
}
