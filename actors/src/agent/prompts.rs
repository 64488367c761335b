//! The agents' side of the context pager: a [`PromptSource`] that queues each request on the
//! pager's worker directly (through the [`WorkerLink`] its current start published), not
//! through the pager actor's mailbox.
//!
//! Journal records are queued on the worker when the step core makes them, not when their
//! future is first polled: the step core may go on without waiting (`async` durability), and
//! the pager must still see a reply before the tool results that join its group. Requests of
//! one agent reach the core in the order they were made; the worker's queue bound only slows
//! callers that await (a full queue makes a request wait for room, in FIFO order).

use agentos_runtime::agent::{OpenRequest, PromptError, PromptSource, SharedOutput, Wait};
use agentos_runtime::context::{BuiltPrompt, JournalMeta, Opened, PageMessage, ToolDetail};
use agentos_runtime::durable::SideEffect;
use agentos_runtime::llm::{ChatMessage, Usage};
use agentos_runtime::trace::Trace;
use futures::future::BoxFuture;

use crate::pager::{OnWorker, TellWorker, WorkerLink};
fn unavailable(e: PortError) -> PromptError {
    PromptError::Unavailable(e.to_string())
}

use crate::protocol::{
    AppendPages, BuildPrompt, CloseContext, OpenContext, PagerPorts, PortError, RecordReply,
    RecordToolResult, RecordToolStart, SharePage,
};

/// Prompts from the context pager.
#[derive(Debug, Clone)]
pub struct PagerPrompts {
    ports: PagerPorts,
    worker: WorkerLink,
    trace: Trace,
}

impl PagerPrompts {
    /// A source over the pager's worker link (`ports` carries what must not be lost while
    /// the pager restarts: the closing of a context).
    pub fn new(ports: PagerPorts, worker: WorkerLink, trace: Trace) -> Self {
        Self {
            ports,
            worker,
            trace,
        }
    }

    /// Queues `msg` on the current worker now (see the module docs) and returns the
    /// answer's future.
    fn queue<M: OnWorker>(&self, msg: M) -> BoxFuture<'static, Result<M::Answer, PromptError>>
    where
        M::Answer: Send,
    {
        if let Some(worker) = self.worker.get() {
            return msg.on(Ok(worker), &self.trace);
        }
        // No worker published yet (the pager's first start has not run) or the pager
        // restarts: the actor's mailbox holds the request until it runs.
        let sent = M::port(&self.ports).get().map(|to| to.send(msg));
        Box::pin(async move {
            match sent {
                None => Err(unavailable(PortError::Unbound)),
                Some(answer) => answer.await.map_err(|_| unavailable(PortError::Closed))?,
            }
        })
    }

    /// Queues `msg` as `wait` says: with [`Wait::Answer`] as [`PagerPrompts::queue`] does
    /// (its answer is dropped); with [`Wait::Queued`] with no answer, `failed` reporting a
    /// failure instead.
    fn queue_as<M, L>(
        &self,
        msg: M,
        wait: Wait,
        failed: L,
    ) -> BoxFuture<'static, Result<(), PromptError>>
    where
        M: TellWorker,
        M::Answer: Send,
        L: FnOnce(PromptError) + Send + 'static,
    {
        match (wait, self.worker.get()) {
            (Wait::Queued, Some(worker)) => msg.tell(&worker, failed),
            (Wait::Queued, None) => {
                // The pager restarts: its mailbox holds the request, and something must
                // wait for its answer to report a failure.
                let answer = self.queue(msg);
                drop(tokio::spawn(async move {
                    if let Err(e) = answer.await {
                        failed(e);
                    }
                }));
                Box::pin(std::future::ready(Ok(())))
            }
            (Wait::Answer, _) => {
                let answer = self.queue(msg);
                Box::pin(async move { answer.await.map(drop) })
            }
        }
    }
}

/// Reports a journal record of `step` (`record`: "reply", "tool result") that was not
/// stored when nothing waited for it.
fn not_stored(
    agent: &str,
    record: &'static str,
    step: u32,
) -> impl FnOnce(PromptError) + Send + 'static {
    let agent = agent.to_owned();
    move |e| {
        let what = format!("the {record} of step {step}");
        agentos_runtime::agent::not_stored(&agent, &what, &e);
    }
}

// No limit of its own on a pager request: a fleet larger than the pager's queue waits for
// room (it slows down, it does not fail attempts), and the attempt timeout bounds the wait.
impl PromptSource for PagerPrompts {
    fn open(&self, r: OpenRequest) -> BoxFuture<'static, Result<Opened, PromptError>> {
        self.queue(OpenContext {
            agent: r.agent,
            context: r.context,
            task: r.task,
            system: r.system,
            input: r.input,
            shared: r.shared,
            build: r.build,
        })
    }

    fn record_reply(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        reply: PageMessage,
        usage: Usage,
        finish_reason: &str,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let failed = not_stored(agent, "reply", meta.step);
        let msg = RecordReply {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            reply,
            usage,
            finish_reason: finish_reason.to_owned(),
        };
        self.queue_as(msg, wait, failed)
    }

    fn record_tool_start(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        tool: &str,
        class: SideEffect,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        self.queue(RecordToolStart {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            call,
            tool: tool.to_owned(),
            class,
        })
    }

    fn record_tool_result(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        message: PageMessage,
        detail: ToolDetail,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let failed = not_stored(agent, "tool result", meta.step);
        let msg = RecordToolResult {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            call,
            message,
            detail,
        };
        self.queue_as(msg, wait, failed)
    }

    fn append(
        &self,
        agent: &str,
        context: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let answer = self.queue(AppendPages {
            agent: agent.to_owned(),
            context: context.to_owned(),
            messages,
        });
        Box::pin(async move { answer.await.map(drop) })
    }

    fn build(
        &self,
        agent: &str,
        context: &str,
        overhead_tokens: u64,
    ) -> BoxFuture<'static, Result<BuiltPrompt, PromptError>> {
        self.queue(BuildPrompt {
            agent: agent.to_owned(),
            context: context.to_owned(),
            overhead_tokens,
            want: Vec::new(),
        })
    }

    fn share(&self, o: SharedOutput) -> BoxFuture<'static, Result<(), PromptError>> {
        let (owner, key) = (o.owner.clone(), o.key.clone());
        let failed = move |e: PromptError| {
            tracing::warn!(agent = owner, task = key, error = %e, "task output not shared");
        };
        let msg = SharePage {
            workflow: o.workflow,
            key: o.key,
            owner: o.owner,
            text: o.text,
        };
        self.queue_as(msg, Wait::Queued, failed)
    }

    fn close(&self, agent: &str, context: &str) {
        let msg = CloseContext {
            agent: agent.to_owned(),
            context: context.to_owned(),
        };
        let runtime = tokio::runtime::Handle::try_current();
        match (self.worker.get(), runtime) {
            // Fire and forget, with no answer; kept alive while it waits for room in a full
            // queue (its future queues it then).
            (Some(w), Ok(rt)) => {
                let mut queued = msg.tell(&w, drop);
                let waker = futures::task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                if queued.as_mut().poll(&mut cx).is_pending() {
                    drop(rt.spawn(queued));
                }
            }
            // Rare and must not be lost: the pager actor handles it (once it runs again;
            // `tell` ignores the mailbox bound).
            _ => {
                self.ports.close.tell(msg);
            }
        }
    }
}
