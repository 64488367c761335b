//! Our own supervisor actor. actix does not restart an actor whose handler panics (the actor is
//! dropped and callers see `MailboxError::Closed`), so supervision is built here:
//!
//! - A supervisor owns [`ChildSpec`]s: a factory, a [`RestartType`] and a kind label.
//! - Each child gets an [`ExitNotice`]. The child calls [`ExitNotice::exited`] from `stopped()`
//!   (or [`ExitNotice::crashed`] after catching a panic); if the child is dropped without either
//!   (a panic unwound through actix), the notice's `Drop` reports an abnormal exit. So every
//!   death reaches the supervisor.
//! - On an exit, the [`RestartBook`] decides: restart after an exponential backoff, ignore, or
//!   escalate when more than `max_restarts` happened within the window. The [`Strategy`] picks
//!   which children restart (one_for_one, one_for_all, rest_for_one).
//! - Escalation stops every child and the supervisor itself, and reports an abnormal exit to
//!   the parent through the supervisor's own notice; the root hands it to `on_give_up`.
//!
//! Stale notices (from a generation that was already replaced) are ignored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_runtime::config::SupervisorSettings;
use agentos_runtime::metrics as m;
use agentos_runtime::policy::supervision::{Decision, RestartBook, RestartType, Strategy};

/// Why a child stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It stopped on purpose.
    Normal,
    /// It crashed (panic, lost actor) with this description.
    Abnormal(String),
}

impl ExitReason {
    /// Whether the exit was a crash.
    pub fn is_abnormal(&self) -> bool {
        matches!(self, ExitReason::Abnormal(_))
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped"),
            ExitReason::Abnormal(why) => f.write_str(why),
        }
    }
}

/// Sent by a child's [`ExitNotice`] to its supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    /// Child slot.
    pub index: usize,
    /// Incarnation that exited.
    pub generation: u64,
    /// Why.
    pub reason: ExitReason,
}

/// A child's way to tell its supervisor it is gone. Reports exactly once; reports an abnormal
/// exit from `Drop` if the child never said anything (it was lost to a panic).
#[derive(Debug)]
pub struct ExitNotice {
    to: Option<Recipient<ChildExited>>,
    index: usize,
    generation: u64,
    crash: Option<String>,
}

impl ExitNotice {
    /// A notice that reports nowhere (for actors started outside a supervisor, e.g. in tests).
    pub fn detached() -> Self {
        Self {
            to: None,
            index: 0,
            generation: 0,
            crash: None,
        }
    }

    /// Marks the coming exit as a crash; call before `ctx.stop()`.
    pub fn crashed(&mut self, why: impl Into<String>) {
        self.crash = Some(why.into());
    }

    /// Reports the exit (normal unless [`ExitNotice::crashed`] was called). Call from `stopped()`.
    pub fn exited(&mut self) {
        let reason = match self.crash.take() {
            Some(why) => ExitReason::Abnormal(why),
            None => ExitReason::Normal,
        };
        self.report(reason);
    }

    fn report(&mut self, reason: ExitReason) {
        if let Some(to) = self.to.take() {
            to.do_send(ChildExited {
                index: self.index,
                generation: self.generation,
                reason,
            });
        }
    }
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        if self.to.is_some() {
            let why = self
                .crash
                .take()
                .unwrap_or_else(|| "actor lost without stopping (panic in a handler)".into());
            self.report(ExitReason::Abnormal(why));
        }
    }
}

/// A running child, as far as its supervisor needs to know.
pub struct ChildHandle {
    stop: Box<dyn Fn()>,
}

impl ChildHandle {
    /// A handle that asks `addr`'s actor to stop with message `M`.
    pub fn stop_with<A, M>(addr: Addr<A>, make: impl Fn() -> M + 'static) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        Self {
            stop: Box::new(move || addr.do_send(make())),
        }
    }

    /// A handle for a child supervisor.
    pub fn supervisor(addr: Addr<Supervisor>) -> Self {
        Self::stop_with(addr, || StopTree)
    }
}

/// Called with the reason of every exit of a child.
pub type ExitHook = Box<dyn Fn(&ExitReason)>;

/// How to start (and restart) one child.
pub struct ChildSpec {
    /// Unique id within the supervisor, e.g. `agent planner#0`.
    pub id: String,
    /// Label for `agentos_supervisor_restarts_total{kind}`.
    pub kind: &'static str,
    /// When to restart.
    pub restart: RestartType,
    /// Starts an incarnation; the child keeps the notice.
    pub start: Box<dyn Fn(ExitNotice) -> ChildHandle>,
    /// Called on every exit, before any restart (e.g. to return the child's lease).
    pub on_exit: Option<ExitHook>,
}

struct Slot {
    spec: ChildSpec,
    generation: u64,
    handle: Option<ChildHandle>,
}

/// A supervisor actor.
pub struct Supervisor {
    name: String,
    strategy: Strategy,
    book: RestartBook,
    slots: Vec<Slot>,
    notice: ExitNotice,
    on_give_up: Option<Box<dyn Fn(String)>>,
    restarts: Option<Arc<AtomicU64>>,
    stopping: bool,
}

impl Supervisor {
    /// A supervisor over `children`, started in order.
    pub fn new(
        name: impl Into<String>,
        strategy: Strategy,
        settings: SupervisorSettings,
        children: Vec<ChildSpec>,
        notice: ExitNotice,
    ) -> Self {
        Self {
            name: name.into(),
            strategy,
            book: RestartBook::new(settings),
            slots: children
                .into_iter()
                .map(|spec| Slot {
                    spec,
                    generation: 0,
                    handle: None,
                })
                .collect(),
            notice,
            on_give_up: None,
            restarts: None,
            stopping: false,
        }
    }

    /// What the root does when its own restart intensity is exceeded.
    pub fn on_give_up(mut self, f: impl Fn(String) + 'static) -> Self {
        self.on_give_up = Some(Box::new(f));
        self
    }

    /// Counts every restart this supervisor performs in `counter` (for run summaries).
    pub fn count_restarts_in(mut self, counter: Arc<AtomicU64>) -> Self {
        self.restarts = Some(counter);
        self
    }

    fn count_restart(&self, kind: &'static str) {
        metrics::counter!(m::SUPERVISOR_RESTARTS, "kind" => kind).increment(1);
        if let Some(c) = &self.restarts {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let recipient = ctx.address().recipient();
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let notice = ExitNotice {
            to: Some(recipient),
            index,
            generation: slot.generation,
            crash: None,
        };
        slot.handle = Some((slot.spec.start)(notice));
    }

    fn escalate(&mut self, why: String, ctx: &mut Context<Self>) {
        metrics::counter!(m::SUPERVISOR_ESCALATIONS, "supervisor" => self.name.clone())
            .increment(1);
        tracing::error!(supervisor = %self.name, %why, "restart intensity exceeded; escalating");
        let why = format!("supervisor {} gave up: {why}", self.name);
        if let Some(f) = &self.on_give_up {
            f(why.clone());
        }
        self.notice.crashed(why);
        self.stop_children();
        ctx.stop();
    }

    fn stop_children(&mut self) {
        self.stopping = true;
        for slot in self.slots.iter_mut().rev() {
            if let Some(h) = slot.handle.take() {
                (h.stop)();
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        for i in 0..self.slots.len() {
            self.start_child(i, ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Self::Context) {
        let Some(slot) = self.slots.get_mut(msg.index) else {
            return;
        };
        if slot.generation != msg.generation {
            return;
        }
        slot.handle = None;
        // The hook runs even while the tree stops (escalation, shutdown), so that whatever
        // the child held (an agent's lease) is returned now rather than at its deadline.
        if let Some(hook) = &slot.spec.on_exit {
            hook(&msg.reason);
        }
        if self.stopping {
            return;
        }
        let id = slot.spec.id.clone();
        let decision =
            self.book
                .on_exit(slot.spec.restart, msg.reason.is_abnormal(), Instant::now());
        tracing::warn!(supervisor = %self.name, child = %id, reason = %msg.reason, ?decision, "child exited");
        match decision {
            Decision::Ignore => {}
            Decision::Escalate => self.escalate(format!("{id} exited: {}", msg.reason), ctx),
            Decision::Restart(delay) => {
                let affected = self.strategy.affected(msg.index, self.slots.len());
                for &i in &affected {
                    if i != msg.index {
                        // Bump the generation so the sibling's own exit notice is ignored, and
                        // run its hook here instead.
                        let s = &mut self.slots[i];
                        s.generation += 1;
                        if let Some(h) = s.handle.take() {
                            (h.stop)();
                            if let Some(hook) = &s.spec.on_exit {
                                hook(&ExitReason::Abnormal(format!(
                                    "stopped to restart with {id}"
                                )));
                            }
                        }
                    }
                }
                ctx.run_later(delay, move |act, ctx| {
                    if act.stopping {
                        return;
                    }
                    for i in affected {
                        let kind = act.slots[i].spec.kind;
                        act.start_child(i, ctx);
                        act.count_restart(kind);
                    }
                });
            }
        }
    }
}

/// Stops every child (in reverse start order) and then the supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopTree;

impl Handler<StopTree> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: StopTree, ctx: &mut Self::Context) {
        self.stop_children();
        ctx.run_later(Duration::from_millis(1), |_, ctx| ctx.stop());
    }
}

/// Restarts one child by id now (used when a lease expires on a wedged agent).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RestartChild(pub String);

impl Handler<RestartChild> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Self::Context) -> bool {
        let Some(index) = self.slots.iter().position(|s| s.spec.id == msg.0) else {
            return false;
        };
        let slot = &mut self.slots[index];
        slot.generation += 1;
        if let Some(h) = slot.handle.take() {
            (h.stop)();
        }
        let kind = slot.spec.kind;
        self.count_restart(kind);
        self.start_child(index, ctx);
        true
    }
}

#[cfg(test)]
mod tests;
