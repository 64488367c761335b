//! The `ContextPager` actor: owns every agent's page tables (through the
//! [`agentos_runtime::context::Pager`] core) and answers typed messages: open a context
//! (reopening a stored one with its journal), record replies, tool starts and tool results
//! (the step journal), append pages, build a prompt within the budget, pin, set importance,
//! share, close, stats. Requests reach the core in the order they arrive in the mailbox.
//!
//! The core and its store connection live on a dedicated worker thread ([`worker`]); handlers
//! only queue a closure and await its reply, so swap I/O never blocks the arbiter. The actor is
//! a permanent child of the root supervisor. Nothing is lost when it restarts: pages are
//! written through to the store, and a context that is not in memory is rebuilt from it on its
//! next use; a request that was in flight fails with a retryable error.
//!
//! Every build emits a `prompt_built` trace event, and one `page_evicted` / `page_fault` event
//! per exchange group moved.

pub mod worker;

#[cfg(test)]
mod tests;

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

/// The pager's child spec: permanent; every start binds `ports`.
pub fn child_spec(config: WorkerConfig, trace: Trace, ports: PagerPorts) -> ChildSpec {
    ChildSpec::new("pager", "pager", RestartType::Permanent, move |notice| {
        let addr = ContextPager::new(config.clone(), trace.clone(), notice).start();
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
            config,
            trace,
            notice,
        }
    }

    /// The statistics this pager updates.
    pub fn stats(&self) -> SharedStats {
        self.config.stats.clone()
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
        match Worker::start(self.config.clone()) {
            Ok(w) => self.worker = Some(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the context pager's worker thread");
                self.notice
                    .crashed(format!("cannot start worker thread: {e}"));
                ctx.stop();
            }
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

type Reply<T> = ResponseFuture<Result<T, PromptError>>;

fn run<T, F>(worker: Result<Worker, PromptError>, f: F) -> Reply<T>
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
        Ok(w) => Box::pin(w.call(f)),
        Err(e) => Box::pin(async move { Err(e) }),
    }
}

impl Handler<OpenContext> for ContextPager {
    type Result = Reply<agentos_runtime::context::Opened>;

    fn handle(&mut self, m: OpenContext, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.open(&m.agent, &m.context, &m.system, &m.input, &m.shared)
        })
    }
}

impl Handler<AppendPages> for ContextPager {
    type Result = Reply<Vec<agentos_runtime::context::PageId>>;

    fn handle(&mut self, m: AppendPages, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.append(&m.agent, &m.context, m.messages)
        })
    }
}

impl Handler<RecordReply> for ContextPager {
    type Result = Reply<agentos_runtime::context::PageId>;

    fn handle(&mut self, m: RecordReply, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.record_reply(
                &m.agent,
                &m.context,
                &m.meta,
                m.reply,
                m.usage,
                &m.finish_reason,
            )
        })
    }
}

impl Handler<RecordToolStart> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: RecordToolStart, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.record_tool_start(&m.agent, &m.context, &m.meta, m.call, &m.tool, m.class)
        })
    }
}

impl Handler<RecordToolResult> for ContextPager {
    type Result = Reply<agentos_runtime::context::PageId>;

    fn handle(&mut self, m: RecordToolResult, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.record_tool_result(&m.agent, &m.context, &m.meta, m.call, m.message, &m.detail)
        })
    }
}

impl Handler<BuildPrompt> for ContextPager {
    type Result = Reply<agentos_runtime::context::BuiltPrompt>;

    fn handle(&mut self, m: BuildPrompt, _: &mut Self::Context) -> Self::Result {
        let trace = self.trace.clone();
        let (agent, context) = (m.agent.clone(), m.context.clone());
        let built = run(self.worker(), move |p| {
            p.build(&m.agent, &m.context, m.overhead_tokens, &m.want)
        });
        Box::pin(async move {
            let built = built.await?;
            for (direction, groups) in [
                (MoveDirection::Evicted, &built.evicted),
                (MoveDirection::Faulted, &built.faulted),
            ] {
                PagesMoved {
                    agent: &agent,
                    context: &context,
                    policy: built.policy,
                    direction,
                    groups,
                }
                .emit(&trace);
            }
            PromptBuilt {
                agent: &agent,
                context: &context,
                prompt: &built,
            }
            .emit(&trace);
            Ok(built)
        })
    }
}

impl Handler<PinPage> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: PinPage, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.set_pinned(&m.agent, &m.context, m.page, m.pinned)
        })
    }
}

impl Handler<SetImportance> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: SetImportance, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.set_importance(&m.agent, &m.context, m.page, m.importance)
        })
    }
}

impl Handler<SharePage> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: SharePage, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| {
            p.share(&m.workflow, &m.key, &m.owner, &m.text)
        })
    }
}

impl Handler<CloseContext> for ContextPager {
    type Result = Reply<()>;

    fn handle(&mut self, m: CloseContext, _: &mut Self::Context) -> Self::Result {
        run(self.worker(), move |p| p.close(&m.agent, &m.context))
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
