//! The `Agent` actor: one per declared agent replica, on one of the worker arbiters. It holds
//! the lease of at most one task attempt, runs it through the step core
//! ([`agentos_runtime::agent::run_attempt`], which enforces the attempt timeout), catches a
//! panic inside it, and reports the outcome to the scheduler.
//!
//! A panic inside the step (a bug, or the simulator's injected panic) does not unwind through
//! actix: the agent marks its [`ExitNotice`] as crashed and stops; its supervisor's exit hook
//! tells the scheduler (which returns the lease as a failed attempt) and the supervisor
//! rebuilds the agent from its spec.
//!
//! # Layout
//! - this file: the actor, its environment and its [`child_spec`];
//! - [`sink`]: step events to typed events and the agent's control block on the board;
//! - [`prompts`]: the step core's prompt source over the context pager's ports;
//! - [`router`]: the step core's router over the KV-cache pool's ports (prompt encoding);
//! - [`bus`]: the bus tools' port over the message bus's ports.

pub mod bus;
pub mod prompts;
pub mod router;
pub mod sink;
pub mod spawn;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_runtime::agent::{run_attempt, AgentSetup, AttemptControl, StepPorts};
use agentos_runtime::events::agent::{AgentCrashed, AgentMetrics, AgentStateChanged};
use agentos_runtime::model::{AgentState, ControlBlock, InstanceId};
use agentos_runtime::policy::supervision::RestartType;
use agentos_runtime::sched::{LeaseId, Outcome, Report};
use agentos_runtime::trace::Trace;
use futures::FutureExt;
use tokio::sync::watch;

use crate::board::Board;
use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{
    agent_child_label, AgentDown, AgentIdle, AgentLink, Announce, CancelAttempt, Port,
    PreemptAttempt, RunTask, SchedulerPorts, TaskReport,
};
use sink::AgentSink;

/// Stops the agent (supervisor shutdown or restart).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopAgent;

/// Everything the instances of one agent share, none of which changes while they run.
///
/// It is replica 0's environment: an attempt of replica `r` runs with a copy of `setup` and
/// `ports` re-addressed to `r` ([`AgentEnv::attempt`]), so an idle instance holds no more than
/// its id and this shared environment.
pub struct AgentEnv {
    /// Config, identity (replica 0's), tool context, limits.
    pub setup: AgentSetup,
    /// The step core's peers (`events`: replica 0's sink).
    pub ports: StepPorts,
    /// The agent's suspend switch.
    pub suspended: watch::Receiver<bool>,
    /// The scheduler.
    pub scheduler: SchedulerPorts,
    /// Where the control blocks are published.
    pub board: Arc<Board>,
    /// The trace.
    pub trace: Trace,
    /// The agent's step series, shared by its replicas' sinks.
    pub metrics: Arc<AgentMetrics>,
}

impl AgentEnv {
    /// The sink of `instance`: its step events, and its control block on the board.
    pub fn sink(&self, instance: &InstanceId) -> AgentSink {
        AgentSink::new(
            instance.clone(),
            self.board.clone(),
            self.trace.clone(),
            self.suspended.clone(),
            self.metrics.clone(),
        )
    }

    /// The setup and ports of an attempt of `instance`: the shared ones, with the instance's
    /// id and sink.
    pub fn attempt(&self, instance: &InstanceId) -> (AgentSetup, StepPorts) {
        let mut setup = self.setup.clone();
        if setup.instance != *instance {
            setup.instance = instance.clone();
            setup.instance_label = instance.to_string();
        }
        let ports = StepPorts {
            events: Arc::new(self.sink(instance)),
            ..self.ports.clone()
        };
        (setup, ports)
    }
}

/// Follows the suspend switch of `instances`' agent for all of them (see
/// [`sink::follow_switch`]); spawned once per tree.
pub fn follow_switch(instances: &AgentInstances) -> impl std::future::Future<Output = ()> {
    let env = &instances.env;
    sink::follow_switch(
        Arc::downgrade(&env.board),
        env.setup.instance.agent.clone(),
        instances.replicas,
        env.suspended.clone(),
    )
}

/// The instances of one declared agent: their environment, how many, and where they run.
#[derive(Clone)]
pub struct AgentInstances {
    /// What they share.
    pub env: Arc<AgentEnv>,
    /// How many replicas.
    pub replicas: u32,
    /// The worker arbiters; replica `r` runs on `arbiters[(first + r) % arbiters.len()]`, so
    /// the instances of every agent, one after another, go round robin over them.
    pub arbiters: Arc<[ArbiterHandle]>,
    /// Instances of the agents declared before this one.
    pub first: usize,
}

/// The child spec of an agent's instances: one permanent child per replica, on its arbiter,
/// and on every exit the replica's lease goes back to the scheduler through `down` (as a
/// failed attempt).
pub fn child_spec(instances: AgentInstances, down: Port<AgentDown>) -> ChildSpec {
    let agent = instances.env.setup.instance.agent.clone();
    let replicas = instances.replicas;
    let start = move |replica, notice| {
        let AgentInstances {
            env,
            arbiters,
            first,
            ..
        } = &instances;
        let arbiter = &arbiters[(first + replica as usize) % arbiters.len()];
        let env = env.clone();
        // As `Actor::start_in_arbiter`, but with one address that the supervisor's handle, the
        // agent and the scheduler's link to it share.
        let (tx, rx) = actix::dev::channel::channel(MAILBOX_CAPACITY);
        let addr = Arc::new(Addr::new(tx));
        let own = addr.clone();
        arbiter.spawn_fn(move || {
            let ctx = Context::with_receiver(rx);
            actix::spawn(ctx.into_future(Agent::new(env, replica, notice, own)));
        });
        ChildHandle::stop_or_hard_stop(addr, || StopAgent)
    };
    ChildSpec::replicas(
        agent_child_label(&agent),
        "agent",
        RestartType::Permanent,
        replicas,
        start,
    )
    .on_replica_exit(move |replica, reason| {
        // Rare and must not be lost: `tell` ignores the mailbox bound.
        down.tell(AgentDown {
            instance: InstanceId {
                agent: agent.clone(),
                replica,
            },
            reason: reason.to_string(),
        });
    })
}

/// The agent's mailbox bound.
const MAILBOX_CAPACITY: usize = 16;

static NEXT_PID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The agent actor.
///
/// Kept small: an actor lives inline in its task, which the runtime allocates in steps of 128
/// bytes, and an idle instance is little more than this.
pub struct Agent {
    env: Arc<AgentEnv>,
    /// Its own address, shared with its supervisor's handle; its idle announcements send
    /// the scheduler a link through it.
    addr: Arc<Addr<Agent>>,
    notice: ExitNotice,
    /// The signals of the attempt running now.
    attempt: Option<Box<Signals>>,
    /// Which replica of `env`'s agent this is.
    replica: u32,
    busy: bool,
}

/// The signals of a running attempt, by the lease it runs under.
struct Signals {
    lease: LeaseId,
    /// Cancels it (its task was cancelled).
    cancel: watch::Sender<Option<String>>,
    /// Asks it to give way (preemption).
    preempt: watch::Sender<Option<String>>,
}

impl Agent {
    /// A new incarnation of replica `replica` whose mailbox `addr` sends to (it gets a fresh
    /// control block and pid when it starts).
    pub fn new(
        env: Arc<AgentEnv>,
        replica: u32,
        notice: ExitNotice,
        addr: Arc<Addr<Agent>>,
    ) -> Self {
        Self {
            env,
            addr,
            notice,
            attempt: None,
            replica,
            busy: false,
        }
    }

    /// This instance's id.
    fn instance(&self) -> InstanceId {
        InstanceId {
            agent: self.env.setup.instance.agent.clone(),
            replica: self.replica,
        }
    }

    fn announce(&self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let msg = AgentIdle {
            instance: self.instance(),
            link: AgentLink::shared(self.addr.clone()),
        };
        if self.env.scheduler.idle.try_tell(msg).is_err() {
            // The scheduler is busy or restarting: try again shortly.
            ctx.run_later(Duration::from_millis(20), |act, ctx| act.announce(ctx));
        }
    }

    /// Sends `msg`, retrying while the scheduler is busy or restarting; answers whether it
    /// was delivered at once.
    fn send_report(&self, msg: TaskReport, tries: u32, ctx: &mut Context<Self>) -> bool {
        match self.env.scheduler.report.try_tell(msg) {
            Ok(()) => return true,
            Err(SendError::Full(msg)) | Err(SendError::Closed(msg)) if tries < 500 => {
                ctx.run_later(Duration::from_millis(10), move |act, ctx| {
                    act.send_report(msg, tries + 1, ctx);
                });
            }
            Err(_) => {
                tracing::warn!(instance = %self.instance(), "scheduler unreachable for 5 s; report dropped (its lease expires and the task is retried)")
            }
        }
        false
    }
}

thread_local! {
    static IN_STEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is polling an agent step right now. Panics there are caught and turned
/// into a restart, so the process panic hook logs them instead of printing a crash report.
pub fn in_contained_step() -> bool {
    IN_STEP.with(std::cell::Cell::get)
}

/// Marks the thread as inside an agent step while the wrapped future is polled.
struct Contained<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Contained<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        struct Reset(bool);
        impl Drop for Reset {
            fn drop(&mut self) {
                IN_STEP.with(|f| f.set(self.0));
            }
        }
        let _reset = Reset(IN_STEP.with(|f| f.replace(true)));
        self.0.as_mut().poll(cx)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

impl Actor for Agent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let id = self.instance();
        let pid = NEXT_PID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // This incarnation's entry replaces the previous one's; only this actor writes it (but
        // for the suspend switch's moves, see `sink::follow_switch`).
        self.env
            .board
            .agents
            .insert(id.clone(), ControlBlock::new(pid, id.clone()));
        AgentStateChanged {
            from: None,
            to: Some(AgentState::Ready),
        }
        .emit_with(&self.env.metrics);
        // A restarted instance of a suspended agent starts Suspended; later moves of the
        // agent's suspend switch (set by the scheduler for the control plane) are shown by
        // its agent's `sink::follow_switch`.
        if *self.env.suspended.borrow() {
            self.env.sink(&id).switch_moved();
        }
        self.announce(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let mut from = None;
        self.env.board.update(&self.instance(), |cb| {
            from = Some(cb.state);
            cb.state = AgentState::Terminated;
        });
        AgentStateChanged { from, to: None }.emit_with(&self.env.metrics);
        self.notice.exited();
    }
}

impl Handler<Announce> for Agent {
    type Result = ();

    fn handle(&mut self, _: Announce, ctx: &mut Self::Context) {
        self.announce(ctx);
    }
}

impl Handler<CancelAttempt> for Agent {
    type Result = ();

    fn handle(&mut self, msg: CancelAttempt, _: &mut Self::Context) {
        if let Some(a) = self.attempt.as_ref().filter(|a| a.lease == msg.lease) {
            a.cancel.send_replace(Some(msg.reason));
        }
    }
}

impl Handler<PreemptAttempt> for Agent {
    type Result = ();

    fn handle(&mut self, msg: PreemptAttempt, _: &mut Self::Context) {
        if let Some(a) = self.attempt.as_ref().filter(|a| a.lease == msg.lease) {
            a.preempt.send_replace(msg.reason);
        }
    }
}

impl Handler<StopAgent> for Agent {
    type Result = ();

    fn handle(&mut self, _: StopAgent, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<HardStop> for Agent {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Drops the running attempt at once (its drop guards release the KV lease and close
        // the context); `stopped()` still reports the exit.
        ctx.terminate();
    }
}

impl Handler<RunTask> for Agent {
    type Result = ();

    fn handle(&mut self, msg: RunTask, ctx: &mut Self::Context) {
        let dispatch = msg.dispatch;
        let instance = self.instance();
        if self.busy {
            // The scheduler never leases to a busy instance; answer anyway so nothing is lost.
            let report = Report {
                lease: dispatch.lease,
                outcome: Outcome::Failed {
                    reason: format!("agent {instance} was busy"),
                    retryable: true,
                    retry_after: None,
                },
                usage: Default::default(),
            };
            let msg = TaskReport {
                instance,
                report,
                idle: None,
            };
            self.send_report(msg, 0, ctx);
            return;
        }
        self.busy = true;
        let task = dispatch.key.to_string();
        self.env
            .board
            .update(&instance, |cb| cb.current_task = Some(task));
        self.env.sink(&instance).set_state(AgentState::Running);
        let (setup, ports) = self.env.attempt(&instance);
        let lease = dispatch.lease;
        let (cancel, cancelled) = watch::channel(None);
        let (preempt, preempted) = watch::channel(None);
        self.attempt = Some(Box::new(Signals {
            lease,
            cancel,
            preempt,
        }));
        let control =
            AttemptControl::new(self.env.suspended.clone(), cancelled).with_preempt(preempted);
        let started = Instant::now();
        let attempt = async move {
            let step = async { run_attempt(&setup, &ports, &dispatch, &control).await };
            AssertUnwindSafe(Contained(Box::pin(step)))
                .catch_unwind()
                .await
                .map_err(|payload| panic_message(payload.as_ref()))
        };
        ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            let instance = act.instance();
            act.attempt = None;
            act.env.board.update(&instance, |cb| {
                cb.busy += started.elapsed();
                cb.tasks_done += 1;
                cb.current_task = None;
            });
            match result {
                Ok(r) => {
                    let report = Report {
                        lease,
                        outcome: r.outcome,
                        usage: r.usage,
                    };
                    act.busy = false;
                    act.env.sink(&instance).set_state(AgentState::Ready);
                    let msg = TaskReport {
                        instance,
                        report,
                        idle: Some(AgentLink::shared(act.addr.clone())),
                    };
                    if !act.send_report(msg, 0, ctx) {
                        // Not delivered at once: announced on its own too, so that a
                        // restarted scheduler learns of the instance even if the report
                        // is dropped.
                        act.announce(ctx);
                    }
                }
                Err(why) => {
                    AgentCrashed {
                        instance: &instance,
                        panic: &why,
                    }
                    .emit(&act.env.trace);
                    act.notice.crashed(format!("panicked: {why}"));
                    ctx.stop();
                }
            }
        }));
    }
}
