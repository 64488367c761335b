//! Our own supervisor actor. actix does not restart an actor whose handler panics (the actor is
//! dropped and callers see `MailboxError::Closed`), so supervision is built here:
//!
//! - A supervisor owns [`ChildSpec`]s: a start function, a
//!   [`RestartType`](agentos_runtime::policy::supervision::RestartType), a kind label and a
//!   shutdown timeout. A spec of replicas ([`ChildSpec::replicas`]) is that many children
//!   (`label#0`, `label#1`, ...) sharing one start function and hook: each child costs a slot
//!   (its replica number, generation and handle), not a closure of its own.
//! - Each child gets an [`ExitNotice`]. The child calls [`ExitNotice::exited`] from `stopped()`
//!   (or [`ExitNotice::crashed`] after catching a panic); if the child is dropped without either
//!   (a panic unwound through actix), the notice's `Drop` reports an abnormal exit. So every
//!   death reaches the supervisor.
//! - A restart ordered by someone else ([`RestartChild`], sent when a lease expires on a wedged
//!   agent) counts as an abnormal exit of that child.
//! - On an exit, the [`RestartBook`] decides: restart after an exponential backoff, ignore, or
//!   escalate when more than `max_restarts` happened within the window. The [`Strategy`] picks
//!   which children restart (one_for_one, one_for_all, rest_for_one).
//! - [`StopTree`] is a barrier: children stop one at a time in reverse start order, each within
//!   its shutdown timeout or it gets a [`HardStop`]; then the supervisor stops, reports through
//!   its own notice, and only then answers. The replicas of one spec are one step of the
//!   barrier: they are interchangeable, so they are all asked at once and waited for together
//!   (as OTP stops the children of a `simple_one_for_one` supervisor), and 100k agents stop in
//!   one round of messages instead of 100k round trips one after another.
//! - Escalation stops the tree the same way and reports an abnormal exit to the parent through
//!   the supervisor's own notice; the root hands it to `on_give_up`.
//!
//! Stale notices (from a generation that was already replaced) are ignored.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::child::{ChildFamily, ChildId, ChildName};
use crate::protocol::{StartChild, TerminateChild};
use actix::prelude::*;
use agentos_runtime::config::SupervisorSettings;
use agentos_runtime::events::system::{ChildRestarted, SupervisorEscalated};
use agentos_runtime::policy::supervision::{Decision, RestartBook, Strategy};
use tokio::sync::oneshot;

pub use crate::child::{
    ChildExited, ChildHandle, ChildSpec, ExitHook, ExitNotice, ExitReason, HardStop,
};
pub use crate::protocol::RestartChild;

struct Slot {
    /// What this child shares with its replicas (or has to itself).
    family: Rc<ChildFamily>,
    /// Which replica it is; `None` for a child of its own.
    replica: Option<u32>,
    generation: u64,
    handle: Option<ChildHandle>,
    /// Stopped on request and not to be restarted until started again.
    parked: bool,
}

/// The children the stop barrier is waiting for: one child, or the running replicas of one
/// spec.
struct Waiting {
    /// Slot index to the generation that was asked to stop.
    pending: std::collections::HashMap<usize, u64>,
    /// Which step of the barrier this is, for its timer.
    round: u64,
    timer: SpawnHandle,
    hard_stopped: bool,
}

/// A supervisor actor.
pub struct Supervisor {
    name: String,
    strategy: Strategy,
    book: RestartBook,
    slots: Vec<Slot>,
    notice: ExitNotice,
    /// Where the children's exit notices go (set once started).
    exits: Option<Arc<Recipient<ChildExited>>>,
    on_give_up: Option<Box<dyn Fn(String)>>,
    restarts: Option<Arc<AtomicU64>>,
    /// Set once the tree stops (shutdown or escalation): no restarts from then on.
    stopping: bool,
    /// While stopping: children at this index and above are stopped already (the barrier
    /// goes down the slots once, so stopping n children costs O(n), not O(n²)).
    stop_below: usize,
    waiting: Option<Waiting>,
    /// Steps of the stop barrier taken so far.
    stop_rounds: u64,
    /// `StopTree` senders, answered from `stopped()`.
    stopped_waiters: Vec<oneshot::Sender<()>>,
}

impl Supervisor {
    /// A supervisor over `children`, started in order (a spec of replicas in replica order).
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
            slots: slots(children),
            notice,
            exits: None,
            on_give_up: None,
            restarts: None,
            stopping: false,
            stop_below: usize::MAX,
            waiting: None,
            stop_rounds: 0,
            stopped_waiters: Vec::new(),
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
        ChildRestarted { kind }.emit();
        if let Some(c) = &self.restarts {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The index of the child with id `id`.
    fn find(&self, id: &str) -> Option<usize> {
        let id = ChildId::parse(id);
        self.slots.iter().position(|s| s.family.is(s.replica, &id))
    }

    fn start_child(&mut self, index: usize, ctx: &mut Context<Self>) {
        let to = self
            .exits
            .get_or_insert_with(|| Arc::new(ctx.address().recipient()))
            .clone();
        let slot = &mut self.slots[index];
        slot.generation += 1;
        let notice = ExitNotice::to(to, index, slot.generation);
        slot.handle = Some((slot.family.start)(slot.replica.unwrap_or(0), notice));
    }

    fn run_hook(&self, index: usize, reason: &ExitReason) {
        let slot = &self.slots[index];
        if let Some(hook) = &slot.family.on_exit {
            hook(slot.replica.unwrap_or(0), reason);
        }
    }

    /// The restart decision after child `index` is gone (its hook already ran).
    fn decide(&mut self, index: usize, reason: &ExitReason, ctx: &mut Context<Self>) {
        let slot = &self.slots[index];
        let id = ChildName(&slot.family, slot.replica).to_string();
        let decision = self
            .book
            .on_exit(slot.family.restart, reason.is_abnormal(), Instant::now());
        tracing::warn!(supervisor = %self.name, child = %id, %reason, ?decision, "child exited");
        match decision {
            Decision::Ignore => {}
            Decision::Escalate => self.escalate(format!("{id} exited: {reason}"), ctx),
            Decision::Restart(delay) => {
                let affected = self.strategy.affected(index, self.slots.len());
                for &i in &affected {
                    if i == index {
                        continue;
                    }
                    // Bump the generation so the sibling's own exit notice is ignored, and run
                    // its hook here instead.
                    let s = &mut self.slots[i];
                    s.generation += 1;
                    if let Some(h) = s.handle.take() {
                        h.stop();
                        self.run_hook(
                            i,
                            &ExitReason::Abnormal(format!("stopped to restart with {id}")),
                        );
                    }
                }
                ctx.run_later(delay, move |act, ctx| {
                    if act.stopping {
                        return;
                    }
                    for i in affected {
                        // Another restart got there first (two exits within one backoff), or
                        // the child was parked meanwhile.
                        if act.slots[i].handle.is_some() || act.slots[i].parked {
                            continue;
                        }
                        let kind = act.slots[i].family.kind;
                        act.start_child(i, ctx);
                        act.count_restart(kind);
                    }
                });
            }
        }
    }

    fn escalate(&mut self, why: String, ctx: &mut Context<Self>) {
        SupervisorEscalated {
            supervisor: &self.name,
            why: &why,
        }
        .emit();
        let why = format!("supervisor {} gave up: {why}", self.name);
        if let Some(f) = &self.on_give_up {
            f(why.clone());
        }
        self.notice.crashed(why);
        self.begin_stop(ctx);
    }

    /// Starts the stop barrier (once).
    fn begin_stop(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_next(ctx);
    }

    /// Asks the last running child (in start order) to stop, with the running replicas of its
    /// spec below it, and waits for their notices; stops the supervisor when none is left.
    fn stop_next(&mut self, ctx: &mut Context<Self>) {
        let below = self.stop_below.min(self.slots.len());
        let Some(top) = self.slots[..below].iter().rposition(|s| s.handle.is_some()) else {
            ctx.stop();
            return;
        };
        let family = self.slots[top].family.clone();
        let mut first = top;
        while first > 0 && Rc::ptr_eq(&self.slots[first - 1].family, &family) {
            first -= 1;
        }
        self.stop_below = first;
        let mut pending = std::collections::HashMap::new();
        for index in (first..=top).rev() {
            let slot = &self.slots[index];
            if let Some(h) = &slot.handle {
                h.stop();
                pending.insert(index, slot.generation);
            }
        }
        self.stop_rounds += 1;
        let round = self.stop_rounds;
        let timer = ctx.run_later(family.shutdown, move |act, ctx| {
            act.stop_overdue(round, ctx)
        });
        self.waiting = Some(Waiting {
            pending,
            round,
            timer,
            hard_stopped: false,
        });
    }

    /// The children the barrier waits for did not stop in time: hard-stop them, or, if that
    /// was already done, abandon them and go on with the next step.
    fn stop_overdue(&mut self, round: u64, ctx: &mut Context<Self>) {
        let Some(waiting) = self.waiting.as_mut().filter(|w| w.round == round) else {
            return;
        };
        // The children of one step share their spec, so its shutdown timeout; one log line
        // per step (a wedged fleet is one line, not one per instance), naming one of them.
        let Some(&some) = waiting.pending.keys().next() else {
            return;
        };
        let (family, replica) = (self.slots[some].family.clone(), self.slots[some].replica);
        let timeout = family.shutdown;
        let children = waiting.pending.len();
        if !waiting.hard_stopped {
            tracing::warn!(supervisor = %self.name, child = %ChildName(&family, replica), children, ?timeout, "children did not stop in time; hard stop");
            waiting.hard_stopped = true;
            for &index in waiting.pending.keys() {
                if let Some(h) = self.slots[index].handle.take() {
                    h.hard_stop();
                }
            }
            waiting.timer = ctx.run_later(timeout, move |act, ctx| act.stop_overdue(round, ctx));
            return;
        }
        let Some(waiting) = self.waiting.take() else {
            return;
        };
        tracing::error!(supervisor = %self.name, child = %ChildName(&family, replica), children, ?timeout, "children did not stop after a hard stop; abandoned");
        let mut abandoned: Vec<usize> = waiting.pending.into_keys().collect();
        abandoned.sort_unstable_by(|a, b| b.cmp(a));
        for index in abandoned {
            self.slots[index].generation += 1;
            self.run_hook(
                index,
                &ExitReason::Abnormal(format!(
                    "did not stop within {timeout:?}, nor within {timeout:?} of a hard stop; abandoned"
                )),
            );
        }
        self.stop_next(ctx);
    }
}

/// One slot per child; a spec of replicas gives one per replica, all sharing its family.
fn slots(children: Vec<ChildSpec>) -> Vec<Slot> {
    let slot = |family: &Rc<ChildFamily>, replica| Slot {
        family: family.clone(),
        replica,
        generation: 0,
        handle: None,
        parked: false,
    };
    let count = children
        .iter()
        .map(|c| c.replicas.map_or(1, |n| n as usize))
        .sum();
    let mut slots = Vec::with_capacity(count);
    for spec in children {
        let family = Rc::new(spec.family);
        match spec.replicas {
            None => slots.push(slot(&family, None)),
            Some(n) => slots.extend((0..n).map(|r| slot(&family, Some(r)))),
        }
    }
    slots
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
        for waiter in self.stopped_waiters.drain(..) {
            // The asker may have stopped waiting; nothing to do then.
            let _ = waiter.send(());
        }
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
        // Whether the barrier waited for this exit, and whether it had hard-stopped it.
        let awaited = self.waiting.as_mut().and_then(|w| {
            (w.pending.get(&msg.index) == Some(&msg.generation)).then(|| {
                w.pending.remove(&msg.index);
                w.hard_stopped
            })
        });
        let reason = match awaited {
            Some(true) => ExitReason::Abnormal(format!(
                "hard-stopped: did not stop within {:?}",
                slot.family.shutdown
            )),
            _ => msg.reason,
        };
        // The hook runs even while the tree stops (escalation, shutdown), so that whatever
        // the child held (an agent's lease) is returned now rather than at its deadline.
        self.run_hook(msg.index, &reason);
        if self.stopping {
            let step_done =
                awaited.is_some() && self.waiting.as_ref().is_some_and(|w| w.pending.is_empty());
            if step_done {
                if let Some(w) = self.waiting.take() {
                    ctx.cancel_future(w.timer);
                }
                self.stop_next(ctx);
            }
            return;
        }
        self.decide(msg.index, &reason, ctx);
    }
}

/// Stops the tree as a barrier: every child in reverse start order, each waited for up to its
/// shutdown timeout (then hard-stopped, then abandoned after as long again), then the
/// supervisor itself. The reply comes after the supervisor's `stopped()`, so
/// `addr.send(StopTree).await` returns when the subtree is down; `do_send` stops it without
/// waiting.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct StopTree;

impl Handler<StopTree> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopTree, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.stopped_waiters.push(tx);
        self.begin_stop(ctx);
        Box::pin(async move {
            // An error means the supervisor is gone without answering; it is down either way.
            let _ = rx.await;
        })
    }
}

/// Hard-stops the tree: every running child gets its hard stop at once, in reverse start
/// order, without waiting, and the supervisor terminates. Sent by a parent whose shutdown
/// timeout for this supervisor ran out.
impl Handler<HardStop> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        tracing::warn!(supervisor = %self.name, "hard stop");
        self.stopping = true;
        if let Some(w) = self.waiting.take() {
            ctx.cancel_future(w.timer);
        }
        let reason = ExitReason::Abnormal(format!("hard-stopped with supervisor {}", self.name));
        for index in (0..self.slots.len()).rev() {
            let slot = &mut self.slots[index];
            if let Some(h) = slot.handle.take() {
                slot.generation += 1;
                h.hard_stop();
                self.run_hook(index, &reason);
            }
        }
        ctx.terminate();
    }
}

impl Handler<RestartChild> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Self::Context) -> bool {
        if self.stopping {
            return false;
        }
        let Some(index) = self.find(&msg.0) else {
            return false;
        };
        let slot = &mut self.slots[index];
        let Some(handle) = slot.handle.take() else {
            // Down already, with its restart (if any) under way.
            return false;
        };
        // A new generation: the replaced incarnation's own exit notice will be ignored.
        slot.generation += 1;
        handle.stop();
        let reason = ExitReason::Abnormal("restart ordered (lease expired)".into());
        self.run_hook(index, &reason);
        self.decide(index, &reason, ctx);
        true
    }
}

impl Handler<TerminateChild> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: TerminateChild, _: &mut Self::Context) -> bool {
        if self.stopping {
            return false;
        }
        let Some(index) = self.find(&msg.id) else {
            return false;
        };
        let slot = &mut self.slots[index];
        slot.parked = true;
        let Some(handle) = slot.handle.take() else {
            // Down already (a restart under way is skipped now that it is parked).
            return false;
        };
        // A new generation: the stopped incarnation's own exit notice is ignored, so this
        // exit is neither counted against the restart intensity nor restarted.
        slot.generation += 1;
        handle.hard_stop();
        self.run_hook(index, &ExitReason::Abnormal(msg.reason));
        true
    }
}

impl Handler<StartChild> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: StartChild, ctx: &mut Self::Context) -> bool {
        if self.stopping {
            return false;
        }
        let Some(index) = self.find(&msg.0) else {
            return false;
        };
        if !self.slots[index].parked {
            return false;
        }
        self.slots[index].parked = false;
        if self.slots[index].handle.is_none() {
            self.start_child(index, ctx);
        }
        true
    }
}

#[cfg(test)]
mod tests;
