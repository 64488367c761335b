//! The `ContextPager` actor: owns every agent's page tables (through the
//! [`agentos_runtime::context::Pager`] core) and answers typed messages: open a context
//! (reopening a stored one with its journal), record replies, tool starts and tool results
//! (the step journal), append pages, build a prompt within the budget, pin, set importance,
//! share, close, stats. Requests reach the core in the order they arrive in the mailbox.
//!
//! The core and its store connection live on a dedicated worker thread ([`worker`]); handlers
//! only queue a closure and await its reply, so swap I/O never blocks the arbiter. Agents do
//! not go through the actor's mailbox at all: each start publishes its worker in a
//! [`WorkerLink`], and the agents' prompt source queues its requests on it directly (one
//! cross-thread hop each way instead of two, and the system arbiter stays free for the
//! scheduler and the KV-cache pool). The actor is
//! a permanent child of the root supervisor. Nothing is lost when it restarts: pages are
//! written through to the store, and a context that is not in memory is rebuilt from it on its
//! next use; a request that was in flight fails with a retryable error.
//!
//! Every build emits a `prompt_built` trace event, and one `page_evicted` / `page_fault` event
//! per exchange group moved.

pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

use actix::prelude::*;
use agentos_runtime::agent::PromptError;
use agentos_runtime::context::SharedStats;
use agentos_runtime::events::labels::MoveDirection;
use agentos_runtime::events::pager::{PagesMoved, PromptBuilt};
use agentos_runtime::policy::supervision::RestartType;
use agentos_runtime::trace::Trace;

pub use worker::{Worker, WorkerConfig};

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{
    AppendPages, BuildPrompt, CloseContext, GetPagerStats, OpenContext, PagerPorts, PinPage,
    RecordReply, RecordToolResult, RecordToolStart, SetImportance, SharePage,
};

/// The worker of the pager that runs now, for the agents to queue their requests on directly.
/// Each start of the pager publishes its worker here and its stop withdraws it; clones share
/// the slot.
#[derive(Debug, Clone, Default)]
pub struct WorkerLink {
    // std RwLock: read on every request, written once per start; never held across an await.
    slot: Arc<RwLock<Option<Worker>>>,
}

impl WorkerLink {
    /// The current worker, if the pager runs.
    pub fn get(&self) -> Option<Worker> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, worker: Option<Worker>) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = worker;
    }
}

/// The pager's child spec: permanent; every start binds `ports` and publishes `worker` in
/// `link`. The worker outlives the actor (the other writers share it): a restart rebuilds its
/// core over a fresh connection instead, so the pager comes back with what the store holds,
/// as a new worker would.
pub fn child_spec(
    config: WorkerConfig,
    trace: Trace,
    ports: PagerPorts,
    link: WorkerLink,
    worker: Worker,
) -> ChildSpec {
    let restart = std::cell::Cell::new(false);
    ChildSpec::new("pager", "pager", RestartType::Permanent, move |notice| {
        if restart.replace(true) {
            worker.reset(config.clone());
        }
        let mut pager = ContextPager::new(config.clone(), trace.clone(), notice);
        pager.link = link.clone();
        // Published before the start function returns, so no agent's request can take the
        // mailbox while a later one goes to the worker directly.
        pager.attach(worker.clone());
        let addr = pager.start();
        ports.bind(&addr);
        ChildHandle::stop_or_hard_stop(addr, || StopPager)
    })
}

/// Stops the pager.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopPager;

/// Mailbox bound: every agent replica may have a request in flight.
pub const MAILBOX_CAPACITY: usize = 4096;

/// The context pager actor.
pub struct ContextPager {
    worker: Option<Worker>,
    link: WorkerLink,
    config: WorkerConfig,
    trace: Trace,
    notice: ExitNotice,
}

impl ContextPager {
    /// A pager over `config`. Which shared pages a context shows comes with each open (the
    /// scheduler computes it from the DAG, spawned tasks included).
    pub fn new(config: WorkerConfig, trace: Trace, notice: ExitNotice) -> Self {
        Self {
            worker: None,
            link: WorkerLink::default(),
            config,
            trace,
            notice,
        }
    }

    /// The statistics this pager updates.
    pub fn stats(&self) -> SharedStats {
        self.config.stats.clone()
    }

    /// Starts a worker thread of its own and publishes it in the link.
    fn start_worker(&mut self) -> std::io::Result<()> {
        self.attach(Worker::start(self.config.clone())?);
        Ok(())
    }

    /// Uses `worker` and publishes it in the link.
    fn attach(&mut self, worker: Worker) {
        self.link.set(Some(worker.clone()));
        self.worker = Some(worker);
    }

    fn worker(&self) -> Result<Worker, PromptError> {
        self.worker
            .clone()
            .ok_or_else(|| PromptError::Unavailable("the worker thread did not start".into()))
    }
}

impl Actor for ContextPager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if self.worker.is_some() {
            return;
        }
        match self.start_worker() {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot start the context pager's worker thread");
                self.notice
                    .crashed(format!("cannot start worker thread: {e}"));
                ctx.stop();
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The worker's thread ends once its last handle is gone.
        self.link.set(None);
        self.notice.exited();
    }
}

type Reply<T> = ResponseFuture<Result<T, PromptError>>;
/// A request's answer, sendable (agents await it on their own arbiters).
pub(crate) type Answer<T> = futures::future::BoxFuture<'static, Result<T, PromptError>>;

/// Queues `f` on the worker, answered as `commit` says under a linger.
fn run_as<T, F>(worker: Result<Worker, PromptError>, commit: worker::Commit, f: F) -> Answer<T>
where
    T: Send + 'static,
    F: FnOnce(
            &mut agentos_runtime::context::Pager<agentos_runtime::context::StoreSwap>,
        ) -> Result<T, agentos_runtime::context::PagerError>
        + Send
        + 'static,
{
    // Queued on the worker now, while the message is handled: requests reach the core in
    // mailbox order.
    match worker {
        Ok(w) => Box::pin(w.call_as(commit, f)),
        Err(e) => Box::pin(async move { Err(e) }),
    }
}

/// Each request's work on the core, queued on `worker` now. The actor's handlers and the
/// agents' prompt source (which queues on the worker directly) share these.
pub(crate) trait OnWorker:
    Message<Result = Result<<Self as OnWorker>::Answer, PromptError>> + Send + Sized + 'static
{
    /// What the request answers.
    type Answer: Send + 'static;
    /// Queues the request on `worker` (see [`run_as`]).
    fn on(self, worker: Result<Worker, PromptError>, trace: &Trace) -> Answer<Self::Answer>;
    /// The pager's port for this request (used while no worker is published: before the
    /// pager's first start has run, or while it restarts).
    fn port(ports: &PagerPorts) -> &crate::protocol::Port<Self>;
}

/// A request that can be queued with no answer ([`Worker::tell_as`]): nothing is woken when
/// it is done, and `failed` runs on the worker thread if it fails.
pub(crate) trait TellWorker: OnWorker {
    /// Queues the request on `worker`; the answer says only that it is queued.
    fn tell<L>(self, worker: &Worker, failed: L) -> Answer<()>
    where
        L: FnOnce(PromptError) + Send + 'static;
}

macro_rules! on_worker {
    ($msg:ty => $answer:ty, $port:ident, |$p:ident, $m:ident| $body:expr) => {
        on_worker!($msg => $answer, $port, worker::Commit::Early, |$p, $m| $body);
    };
    ($msg:ty => $answer:ty, $port:ident, $commit:expr, |$p:ident, $m:ident| $body:expr) => {
        impl OnWorker for $msg {
            type Answer = $answer;
            fn on(self, worker: Result<Worker, PromptError>, _: &Trace) -> Answer<$answer> {
                let $m = self;
                run_as(worker, $commit, move |$p| $body)
            }
            fn port(ports: &PagerPorts) -> &crate::protocol::Port<Self> {
                &ports.$port
            }
        }

        impl TellWorker for $msg {
            fn tell<L>(self, worker: &Worker, failed: L) -> Answer<()>
            where
                L: FnOnce(PromptError) + Send + 'static,
            {
                let $m = self;
                Box::pin(worker.tell_as($commit, move |$p| $body, failed))
            }
        }

        impl Handler<$msg> for ContextPager {
            type Result = Reply<$answer>;

            fn handle(&mut self, m: $msg, _: &mut Self::Context) -> Self::Result {
                m.on(self.worker(), &self.trace)
            }
        }
    };
}

on_worker!(AppendPages => Vec<agentos_runtime::context::PageId>, append, |p, m| {
    p.append(&m.agent, &m.context, m.messages)
});
on_worker!(RecordReply => agentos_runtime::context::PageId, record_reply, worker::Commit::Step, |p, m| {
    p.record_reply(&m.agent, &m.context, &m.meta, m.reply, m.usage, &m.finish_reason)
});
// An at-most-once call runs only once its start is stored, in every mode.
on_worker!(RecordToolStart => (), record_tool_start, worker::Commit::Before, |p, m| {
    p.record_tool_start(&m.agent, &m.context, &m.meta, m.call, &m.tool, m.class)
});
on_worker!(RecordToolResult => agentos_runtime::context::PageId, record_tool_result, worker::Commit::Step, |p, m| {
    p.record_tool_result(&m.agent, &m.context, &m.meta, m.call, m.message, &m.detail)
});
on_worker!(SharePage => (), share, |p, m| p.share(&m.workflow, &m.key, &m.owner, &m.text));
on_worker!(CloseContext => (), close, |p, m| p.close(&m.agent, &m.context));

impl OnWorker for OpenContext {
    type Answer = agentos_runtime::context::Opened;

    /// With `build`, a context that opens fresh also builds its first prompt in the same job
    /// (committed as a build is), and the build's trace events follow the answer.
    fn on(self, worker: Result<Worker, PromptError>, trace: &Trace) -> Answer<Self::Answer> {
        let m = self;
        let commit = match m.build {
            Some(_) => worker::Commit::Step,
            None => worker::Commit::Early,
        };
        let trace = trace.clone();
        let (agent, context) = (m.agent.clone(), m.context.clone());
        let opened = run_as(worker, commit, move |p| {
            let mut opened = p.open(&m.agent, &m.context, &m.system, &m.input, &m.shared)?;
            if let (Some(overhead), true) = (m.build, opened.journal.is_empty()) {
                // A failed build leaves the prompt out: the step core builds again on its own
                // and reports the failure as a build's.
                opened.first_prompt = p.build(&m.agent, &m.context, overhead, &[]).ok();
            }
            Ok(opened)
        });
        Box::pin(async move {
            let opened = opened.await?;
            if let Some(built) = &opened.first_prompt {
                emit_built(&trace, &agent, &context, built);
            }
            Ok(opened)
        })
    }

    fn port(ports: &PagerPorts) -> &crate::protocol::Port<Self> {
        &ports.open
    }
}

impl Handler<OpenContext> for ContextPager {
    type Result = Reply<agentos_runtime::context::Opened>;

    fn handle(&mut self, m: OpenContext, _: &mut Self::Context) -> Self::Result {
        m.on(self.worker(), &self.trace)
    }
}

/// A build's trace events: the page groups it moved, then the prompt.
fn emit_built(
    trace: &Trace,
    agent: &str,
    context: &str,
    built: &agentos_runtime::context::BuiltPrompt,
) {
    for (direction, groups) in [
        (MoveDirection::Evicted, &built.evicted),
        (MoveDirection::Faulted, &built.faulted),
    ] {
        PagesMoved {
            agent,
            context,
            policy: built.policy,
            direction,
            groups,
        }
        .emit(trace);
    }
    PromptBuilt {
        agent,
        context,
        prompt: built,
    }
    .emit(trace);
}

impl OnWorker for BuildPrompt {
    type Answer = agentos_runtime::context::BuiltPrompt;

    /// Also emits the build's trace events once it is answered.
    fn on(self, worker: Result<Worker, PromptError>, trace: &Trace) -> Answer<Self::Answer> {
        let m = self;
        let trace = trace.clone();
        let (agent, context) = (m.agent.clone(), m.context.clone());
        // Its answer confirms the step's records (see `docs/durability.md`).
        let built = run_as(worker, worker::Commit::Step, move |p| {
            p.build(&m.agent, &m.context, m.overhead_tokens, &m.want)
        });
        Box::pin(async move {
            let built = built.await?;
            emit_built(&trace, &agent, &context, &built);
            Ok(built)
        })
    }

    fn port(ports: &PagerPorts) -> &crate::protocol::Port<Self> {
        &ports.build
    }
}

impl Handler<PinPage> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: PinPage, _: &mut Self::Context) -> Self::Result {
        run_as(self.worker(), worker::Commit::Early, move |p| {
            p.set_pinned(&m.agent, &m.context, m.page, m.pinned)
        })
    }
}

impl Handler<SetImportance> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: SetImportance, _: &mut Self::Context) -> Self::Result {
        run_as(self.worker(), worker::Commit::Early, move |p| {
            p.set_importance(&m.agent, &m.context, m.page, m.importance)
        })
    }
}

impl Handler<BuildPrompt> for ContextPager {
    type Result = Reply<agentos_runtime::context::BuiltPrompt>;

    fn handle(&mut self, m: BuildPrompt, _: &mut Self::Context) -> Self::Result {
        m.on(self.worker(), &self.trace)
    }
}

impl Handler<GetPagerStats> for ContextPager {
    type Result = MessageResult<GetPagerStats>;

    fn handle(&mut self, _: GetPagerStats, _: &mut Self::Context) -> Self::Result {
        let stats = self
            .config
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        MessageResult(stats)
    }
}

impl Handler<StopPager> for ContextPager {
    type Result = ();

    fn handle(&mut self, _: StopPager, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<HardStop> for ContextPager {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Sent only when the stop message was not obeyed within the shutdown timeout.
        ctx.terminate();
    }
}
