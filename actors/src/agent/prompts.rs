//! The agents' side of the context pager: a [`PromptSource`] over the pager's ports.
//!
//! Journal records are queued in the pager's mailbox when the step core makes them, not when
//! their future is first polled: the step core may go on without waiting (`async`
//! durability), and the pager must still see a reply before the tool results that join its
//! group. A record is sent through a fresh recipient, which actix never refuses for a full
//! mailbox (only a sender that already waits for room is parked), so nothing is dropped; the
//! mailbox bound only slows callers that await.

use std::future::Future;

use actix::prelude::*;
use agentos_runtime::agent::{OpenRequest, PromptError, PromptSource, SharedOutput};
use agentos_runtime::context::{BuiltPrompt, JournalMeta, Opened, PageMessage, ToolDetail};
use agentos_runtime::durable::SideEffect;
use agentos_runtime::llm::{ChatMessage, Usage};
use futures::future::BoxFuture;

use crate::protocol::{
    AppendPages, BuildPrompt, CloseContext, OpenContext, PagerPorts, Port, PortError, RecordReply,
    RecordToolResult, RecordToolStart, SharePage,
};

/// Prompts from the context pager.
#[derive(Debug, Clone)]
pub struct PagerPrompts {
    ports: PagerPorts,
}

impl PagerPrompts {
    /// A source over the pager's ports.
    pub fn new(ports: PagerPorts) -> Self {
        Self { ports }
    }
}

fn unavailable(e: PortError) -> PromptError {
    PromptError::Unavailable(e.to_string())
}

/// Sends `msg` now (see the module docs) and returns the answer's future. Dropping the
/// future withdraws the request if the pager has not taken it yet (actix skips a message
/// whose answer nobody waits for), so the step core keeps it alive.
fn queued<M, T>(port: &Port<M>, msg: M) -> impl Future<Output = Result<T, PromptError>> + Send
where
    M: Message<Result = Result<T, PromptError>> + Send + 'static,
    T: Send + 'static,
{
    let sent = port.get().map(|to| to.send(msg));
    async move {
        match sent {
            None => Err(unavailable(PortError::Unbound)),
            Some(answer) => answer.await.map_err(|_| unavailable(PortError::Closed))?,
        }
    }
}

// No limit of its own on a pager request: a fleet larger than the pager's queue waits for
// room (it slows down, it does not fail attempts), and the attempt timeout bounds the wait.
impl PromptSource for PagerPrompts {
    fn open(&self, r: OpenRequest) -> BoxFuture<'static, Result<Opened, PromptError>> {
        let port = self.ports.open.clone();
        let msg = OpenContext {
            agent: r.agent,
            context: r.context,
            task: r.task,
            system: r.system,
            input: r.input,
            shared: r.shared,
        };
        Box::pin(async move { port.call(msg).await.map_err(unavailable)? })
    }

    fn record_reply(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        reply: PageMessage,
        usage: Usage,
        finish_reason: &str,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let msg = RecordReply {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            reply,
            usage,
            finish_reason: finish_reason.to_owned(),
        };
        let answer = queued(&self.ports.record_reply, msg);
        Box::pin(async move { answer.await.map(drop) })
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
        let msg = RecordToolStart {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            call,
            tool: tool.to_owned(),
            class,
        };
        Box::pin(queued(&self.ports.record_tool_start, msg))
    }

    fn record_tool_result(
        &self,
        agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        message: PageMessage,
        detail: ToolDetail,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let msg = RecordToolResult {
            agent: agent.to_owned(),
            context: context.to_owned(),
            meta,
            call,
            message,
            detail,
        };
        let answer = queued(&self.ports.record_tool_result, msg);
        Box::pin(async move { answer.await.map(drop) })
    }

    fn append(
        &self,
        agent: &str,
        context: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let port = self.ports.append.clone();
        let msg = AppendPages {
            agent: agent.to_owned(),
            context: context.to_owned(),
            messages,
        };
        Box::pin(async move { port.call(msg).await.map_err(unavailable)?.map(drop) })
    }

    fn build(
        &self,
        agent: &str,
        context: &str,
        overhead_tokens: u64,
    ) -> BoxFuture<'static, Result<BuiltPrompt, PromptError>> {
        let port = self.ports.build.clone();
        let msg = BuildPrompt {
            agent: agent.to_owned(),
            context: context.to_owned(),
            overhead_tokens,
            want: Vec::new(),
        };
        Box::pin(async move { port.call(msg).await.map_err(unavailable)? })
    }

    fn share(&self, o: SharedOutput) -> BoxFuture<'static, Result<(), PromptError>> {
        let port = self.ports.share.clone();
        let msg = SharePage {
            workflow: o.workflow,
            key: o.key,
            owner: o.owner,
            text: o.text,
        };
        Box::pin(async move { port.call(msg).await.map_err(unavailable)? })
    }

    fn close(&self, agent: &str, context: &str) {
        // Rare and must not be lost: `tell` ignores the mailbox bound.
        self.ports.close.tell(CloseContext {
            agent: agent.to_owned(),
            context: context.to_owned(),
        });
    }
}
