//! The `Agent` actor: one per declared agent replica. It carries a [`ControlBlock`] and runs
//! one task attempt at a time through the step loop in [`step`].
//!
//! The attempt runs as a future spawned on the actor's context, wrapped in the per-attempt
//! timeout and in `catch_unwind`. A panic inside the step (a bug, or the simulator's injected
//! panic) does not unwind through actix: the agent marks its [`ExitNotice`] as crashed and
//! stops; its supervisor tells the scheduler (which returns the lease as a failed attempt) and
//! rebuilds the agent from its spec.

pub mod step;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_runtime::config::AgentSpec;
use agentos_runtime::llm::LlmBackend;
use agentos_runtime::metrics as m;
use agentos_runtime::model::{AgentState, ControlBlock, InstanceId};
use agentos_runtime::sched::{Dispatch, Outcome, Report};
use agentos_runtime::tools::{ToolContext, ToolRegistry};
use agentos_runtime::trace::Trace;
use futures::FutureExt;

use crate::registry::Registry;
use crate::scheduler::{AgentIdle, TaskReport};
use crate::supervisor::ExitNotice;

/// Runs one attempt of a task. Sent by the scheduler with `try_send`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunTask {
    /// The lease and the task.
    pub dispatch: Dispatch,
}

/// Asks an idle agent to announce itself to the scheduler again (after a scheduler restart).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Announce;

/// Stops the agent (supervisor shutdown or restart).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopAgent;

/// Everything an agent instance needs that does not change while it runs.
pub struct AgentEnv {
    /// The agent's config.
    pub spec: Arc<AgentSpec>,
    /// This instance.
    pub instance: InstanceId,
    /// Its backend.
    pub backend: Arc<dyn LlmBackend>,
    /// Its backend's handle on the KV-cache pool (`None`: every call goes to replica 0).
    pub kv: Option<crate::kvpool::KvClient>,
    /// Built-in tools.
    pub tools: ToolRegistry,
    /// Tool context (the task field is filled per attempt).
    pub tool_ctx: ToolContext,
    /// Where the scheduler is.
    pub registry: Arc<Registry>,
    /// The trace.
    pub trace: Trace,
    /// The backend's encoding (counts the tool definitions sent with every prompt).
    pub tokenizer: agentos_runtime::tokenize::Encoding,
}

/// Supervisor child id of an instance.
pub fn child_id(instance: &InstanceId) -> String {
    format!("agent {instance}")
}

static NEXT_PID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The agent actor.
pub struct Agent {
    env: Arc<AgentEnv>,
    cb: Arc<Mutex<ControlBlock>>,
    notice: ExitNotice,
    busy: bool,
}

impl Agent {
    /// A new incarnation (fresh control block and pid).
    pub fn new(env: Arc<AgentEnv>, notice: ExitNotice) -> Self {
        let pid = NEXT_PID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cb = ControlBlock::new(pid, env.instance.clone());
        Self {
            env,
            cb: Arc::new(Mutex::new(cb)),
            notice,
            busy: false,
        }
    }

    fn announce(&self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if let Some(s) = self.env.registry.scheduler() {
            let msg = AgentIdle {
                instance: self.env.instance.clone(),
                addr: ctx.address().recipient(),
            };
            if let Err(SendError::Full(_) | SendError::Closed(_)) = s.try_send(msg) {
                // The scheduler is busy or restarting: try again shortly.
                ctx.run_later(Duration::from_millis(20), |act, ctx| act.announce(ctx));
            }
        }
    }

    fn send_report(&self, msg: TaskReport, tries: u32, ctx: &mut Context<Self>) {
        let Some(s) = self.env.registry.scheduler() else {
            tracing::warn!(instance = %self.env.instance, "no scheduler; report dropped (its lease was revoked)");
            return;
        };
        match s.try_send(msg) {
            Ok(()) => {}
            Err(SendError::Full(msg)) | Err(SendError::Closed(msg)) if tries < 500 => {
                ctx.run_later(Duration::from_millis(10), move |act, ctx| {
                    act.send_report(msg, tries + 1, ctx)
                });
            }
            Err(_) => {
                tracing::warn!(instance = %self.env.instance, "scheduler unreachable; report dropped")
            }
        }
    }
}

/// Moves a control block to `state`, keeping the per-state gauge balanced.
pub(crate) fn set_state(cb: &Mutex<ControlBlock>, state: AgentState) {
    let mut cb = cb.lock().unwrap_or_else(|e| e.into_inner());
    if cb.state != state {
        metrics::gauge!(m::AGENTS, "state" => cb.state.label()).decrement(1.0);
        metrics::gauge!(m::AGENTS, "state" => state.label()).increment(1.0);
        cb.state = state;
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
        ctx.set_mailbox_capacity(16);
        metrics::gauge!(m::AGENTS, "state" => AgentState::Ready.label()).increment(1.0);
        let id = self.env.instance.clone();
        self.env
            .registry
            .agent_addrs
            .insert(id.clone(), ctx.address());
        self.env.registry.agents.insert(id, self.cb.clone());
        self.announce(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let mut cb = self.cb.lock().unwrap_or_else(|e| e.into_inner());
        metrics::gauge!(m::AGENTS, "state" => cb.state.label()).decrement(1.0);
        cb.state = AgentState::Terminated;
        drop(cb);
        self.notice.exited();
    }
}

impl Handler<Announce> for Agent {
    type Result = ();

    fn handle(&mut self, _: Announce, ctx: &mut Self::Context) {
        self.announce(ctx);
    }
}

impl Handler<StopAgent> for Agent {
    type Result = ();

    fn handle(&mut self, _: StopAgent, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<RunTask> for Agent {
    type Result = ();

    fn handle(&mut self, msg: RunTask, ctx: &mut Self::Context) {
        let dispatch = msg.dispatch;
        if self.busy {
            // The scheduler never leases to a busy instance; answer anyway so nothing is lost.
            let report = Report {
                lease: dispatch.lease,
                outcome: Outcome::Failed {
                    reason: format!("agent {} was busy", self.env.instance),
                    retryable: true,
                    retry_after: None,
                },
                usage: Default::default(),
            };
            let instance = self.env.instance.clone();
            self.send_report(TaskReport { instance, report }, 0, ctx);
            return;
        }
        self.busy = true;
        {
            let mut cb = self.cb.lock().unwrap_or_else(|e| e.into_inner());
            cb.current_task = Some(dispatch.key.to_string());
        }
        set_state(&self.cb, AgentState::Running);
        let env = self.env.clone();
        let cb = self.cb.clone();
        let timeout = dispatch.timeout;
        let lease = dispatch.lease;
        let started = Instant::now();
        let attempt = async move {
            let work = AssertUnwindSafe(Contained(Box::pin(step::run_attempt(env, cb, dispatch))))
                .catch_unwind();
            match tokio::time::timeout(timeout, work).await {
                Err(_) => Ok(step::AttemptResult {
                    outcome: Outcome::Failed {
                        reason: format!("attempt timed out after {timeout:?}"),
                        retryable: true,
                        retry_after: None,
                    },
                    usage: Default::default(),
                }),
                Ok(Err(payload)) => Err(panic_message(payload.as_ref())),
                Ok(Ok(result)) => Ok(result),
            }
        };
        ctx.spawn(attempt.into_actor(self).map(move |result, act, ctx| {
            {
                let mut cb = act.cb.lock().unwrap_or_else(|e| e.into_inner());
                cb.busy += started.elapsed();
                cb.tasks_done += 1;
                cb.current_task = None;
            }
            match result {
                Ok(r) => {
                    let report = Report {
                        lease,
                        outcome: r.outcome,
                        usage: r.usage,
                    };
                    act.busy = false;
                    set_state(&act.cb, AgentState::Ready);
                    let instance = act.env.instance.clone();
                    act.send_report(TaskReport { instance, report }, 0, ctx);
                    act.announce(ctx);
                }
                Err(why) => {
                    tracing::warn!(instance = %act.env.instance, %why, "agent step panicked; stopping for restart");
                    act.env.trace.emit(
                        "agent_crash",
                        serde_json::json!({"instance": act.env.instance.to_string(), "panic": why}),
                    );
                    act.notice.crashed(format!("panicked: {why}"));
                    ctx.stop();
                }
            }
        }));
    }
}
