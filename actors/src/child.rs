//! What a supervisor knows about its children: how to start one ([`ChildSpec`]), how to stop a
//! running one ([`ChildHandle`]), and how a child reports its death ([`ExitNotice`]).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentos_runtime::policy::supervision::RestartType;

use crate::supervisor::{StopTree, Supervisor};

/// Why a child stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It stopped on purpose.
    Normal,
    /// It crashed (panic, lost actor), was hard-stopped, or was restarted by order, with this
    /// description.
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

const PANICKED: &str = "actor lost to a panic in a handler";

/// A child's way to tell its supervisor it is gone. Reports exactly once; reports an abnormal
/// exit from `Drop` if the child never said anything (it was lost to a panic).
#[derive(Debug)]
pub struct ExitNotice {
    /// The supervisor's mailbox, one recipient shared by the notices of all its children (a
    /// recipient of its own would cost every child three allocations).
    to: Option<Arc<Recipient<ChildExited>>>,
    index: usize,
    generation: u64,
    crash: Option<Box<str>>,
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

    pub(crate) fn to(to: Arc<Recipient<ChildExited>>, index: usize, generation: u64) -> Self {
        Self {
            to: Some(to),
            index,
            generation,
            crash: None,
        }
    }

    /// Marks the coming exit as a crash; call before `ctx.stop()`.
    pub fn crashed(&mut self, why: impl Into<String>) {
        self.crash = Some(why.into().into());
    }

    /// Reports the exit (normal unless [`ExitNotice::crashed`] was called, or the thread is
    /// unwinding from a panic). Call from `stopped()`.
    ///
    /// When a handler panics, actix 0.13 still runs `stopping()` and `stopped()` from the drop
    /// of the actor's context during the unwind, so a panic reaches this call too.
    pub fn exited(&mut self) {
        let reason = match self.crash.take() {
            Some(why) => ExitReason::Abnormal(why.into()),
            None if std::thread::panicking() => ExitReason::Abnormal(PANICKED.into()),
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
                .map_or_else(|| PANICKED.into(), String::from);
            self.report(ExitReason::Abnormal(why));
        }
    }
}

/// The hard stop a supervisor sends to a child that did not stop within its shutdown timeout.
///
/// A child's handler should call `ctx.terminate()`: actix then skips `stopping()` (so a veto
/// does not hold), drops every future spawned on the context, drops the messages still queued,
/// and runs `stopped()`, where the child reports through its [`ExitNotice`]. The message is
/// queued behind whatever the mailbox already holds, and it is handled only when the actor
/// gets to its mailbox: not while a handler blocks the thread, nor while a `ctx.wait` future
/// is pending.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct HardStop;

/// A running child, as far as its supervisor needs to know: how to ask it to stop, and how to
/// force it.
pub struct ChildHandle(Box<dyn StopChild>);

/// How a [`ChildHandle`] stops its child; one allocation holds the child's address and both
/// ways to stop it.
trait StopChild {
    fn stop(&self);
    fn hard_stop(&self);
}

/// Stops with a message made by `make`; hard-stops with [`HardStop`] if `hard`.
struct StopBy<A: Actor, F> {
    addr: Arc<Addr<A>>,
    make: F,
    hard: fn(&Addr<A>),
}

impl<A, M, F> StopChild for StopBy<A, F>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
    F: Fn() -> M,
{
    fn stop(&self) {
        self.addr.do_send((self.make)());
    }

    fn hard_stop(&self) {
        (self.hard)(&self.addr);
    }
}

impl ChildHandle {
    /// A handle that asks `addr`'s actor to stop with message `M`. Its hard stop can only drop
    /// the supervisor's address of the child (see [`ChildHandle::stop_or_hard_stop`]).
    pub fn stop_with<A, M>(addr: impl Into<Arc<Addr<A>>>, make: impl Fn() -> M + 'static) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        Self(Box::new(StopBy {
            addr: addr.into(),
            make,
            hard: |_| {},
        }))
    }

    /// A handle that asks `addr`'s actor to stop with message `M`, and hard-stops it with
    /// [`HardStop`]. (An `Arc` of the address lets the child share it with its peers: each
    /// clone of an `Addr` costs two allocations.)
    pub fn stop_or_hard_stop<A, M>(
        addr: impl Into<Arc<Addr<A>>>,
        make: impl Fn() -> M + 'static,
    ) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<M> + Handler<HardStop>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        Self(Box::new(StopBy {
            addr: addr.into(),
            make,
            hard: |addr| addr.do_send(HardStop),
        }))
    }

    /// A handle for a child supervisor: [`StopTree`] (its barrier runs before it reports its
    /// exit), and [`HardStop`] (it hard-stops its remaining children at once).
    pub fn supervisor(addr: Addr<Supervisor>) -> Self {
        Self::stop_or_hard_stop(addr, || StopTree)
    }

    pub(crate) fn stop(&self) {
        self.0.stop();
    }

    /// Sends the hard stop, if the child has one, and drops the handle (the supervisor's
    /// address of the child).
    pub(crate) fn hard_stop(self) {
        self.0.hard_stop();
    }
}

/// Called with the replica (0 for a child of its own) and the reason of every exit of a child.
pub type ExitHook = Box<dyn Fn(u32, &ExitReason)>;

/// How to start (and restart) one child, or a set of alike replicas, and how long each may
/// take to stop.
///
/// A spec of replicas ([`ChildSpec::replicas`]) becomes that many children of the supervisor,
/// `label#0`, `label#1` and so on, that share the one start function and hook: a child costs
/// its supervisor a slot, not a closure of its own.
pub struct ChildSpec {
    pub(crate) family: ChildFamily,
    /// How many replicas; `None` for one child named by the label alone.
    pub(crate) replicas: Option<u32>,
}

/// What the children of one spec share.
pub(crate) struct ChildFamily {
    /// The child's id, or the replicas' ids without `#replica`.
    pub(crate) label: String,
    pub(crate) kind: &'static str,
    pub(crate) restart: RestartType,
    /// Starts an incarnation of the given replica (0 for a child of its own).
    pub(crate) start: Box<dyn Fn(u32, ExitNotice) -> ChildHandle>,
    pub(crate) on_exit: Option<ExitHook>,
    pub(crate) shutdown: Duration,
}

impl ChildFamily {
    /// Whether the child that is `replica` of this family has id `id`.
    pub(crate) fn is(&self, replica: Option<u32>, id: &ChildId<'_>) -> bool {
        match replica {
            None => self.label == id.whole,
            Some(r) => id.replica == Some(r) && self.label == id.label,
        }
    }
}

/// A child id as asked for (by [`RestartChild`](crate::protocol::RestartChild) and its
/// siblings), split once so that looking it up compares numbers, not formatted ids.
pub(crate) struct ChildId<'a> {
    whole: &'a str,
    /// The part before the last `#`, if a replica number follows it.
    label: &'a str,
    replica: Option<u32>,
}

impl<'a> ChildId<'a> {
    pub(crate) fn parse(whole: &'a str) -> Self {
        // Only the number as `label#replica` writes it: no sign, no leading zero.
        let canonical = |n: &str| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        };
        let split = whole
            .rsplit_once('#')
            .filter(|(_, n)| canonical(n))
            .and_then(|(label, n)| Some((label, n.parse().ok()?)));
        Self {
            whole,
            label: split.map_or(whole, |(label, _)| label),
            replica: split.map(|(_, n)| n),
        }
    }
}

/// A child's id for logs and reasons: its family's label, and `#replica` for a replica.
pub(crate) struct ChildName<'a>(pub(crate) &'a ChildFamily, pub(crate) Option<u32>);

impl std::fmt::Display for ChildName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            None => f.write_str(&self.0.label),
            Some(r) => write!(f, "{}#{r}", self.0.label),
        }
    }
}

impl ChildSpec {
    /// How long a child may take to stop before it is hard-stopped, unless set otherwise.
    pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

    /// A child with a unique `id` within its supervisor (e.g. `bus`), a `kind` label for
    /// `agentos_supervisor_restarts_total{kind}`, a restart type, and a `start` function that
    /// starts an incarnation (the child keeps the notice).
    pub fn new(
        id: impl Into<String>,
        kind: &'static str,
        restart: RestartType,
        start: impl Fn(ExitNotice) -> ChildHandle + 'static,
    ) -> Self {
        Self::family(id.into(), kind, restart, None, move |_, notice| {
            start(notice)
        })
    }

    /// `count` alike children with ids `label#0` to `label#(count - 1)` (e.g. `agent
    /// planner#0`), unique within their supervisor; `start` starts an incarnation of the
    /// replica it is given. Otherwise as [`ChildSpec::new`], each replica on its own: its
    /// restarts, its exits, its place in the start order.
    pub fn replicas(
        label: impl Into<String>,
        kind: &'static str,
        restart: RestartType,
        count: u32,
        start: impl Fn(u32, ExitNotice) -> ChildHandle + 'static,
    ) -> Self {
        Self::family(label.into(), kind, restart, Some(count), start)
    }

    fn family(
        label: String,
        kind: &'static str,
        restart: RestartType,
        replicas: Option<u32>,
        start: impl Fn(u32, ExitNotice) -> ChildHandle + 'static,
    ) -> Self {
        Self {
            family: ChildFamily {
                label,
                kind,
                restart,
                start: Box::new(start),
                on_exit: None,
                shutdown: Self::DEFAULT_SHUTDOWN,
            },
            replicas,
        }
    }

    /// Calls `hook` once for every exit of an incarnation, before any restart (e.g. to return
    /// the child's lease).
    pub fn on_exit(self, hook: impl Fn(&ExitReason) + 'static) -> Self {
        self.on_replica_exit(move |_, reason| hook(reason))
    }

    /// As [`ChildSpec::on_exit`], told which replica exited (0 for a child of its own).
    pub fn on_replica_exit(mut self, hook: impl Fn(u32, &ExitReason) + 'static) -> Self {
        self.family.on_exit = Some(Box::new(hook));
        self
    }

    /// How long the child may take to stop when its tree stops before it is hard-stopped
    /// (default [`ChildSpec::DEFAULT_SHUTDOWN`]). It gets as long again to stop after the hard
    /// stop before it is abandoned.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.family.shutdown = timeout;
        self
    }

    /// The child's id, or the replicas' ids without `#replica`.
    pub fn id(&self) -> &str {
        &self.family.label
    }
}
