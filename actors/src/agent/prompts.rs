//! The agents' side of the context pager: a [`PromptSource`] over the pager's ports.

use agentos_runtime::agent::{OpenRequest, PromptError, PromptSource, SharedOutput};
use agentos_runtime::context::BuiltPrompt;
use agentos_runtime::llm::ChatMessage;
use futures::future::BoxFuture;

use crate::protocol::{
    AppendPages, BuildPrompt, CloseContext, OpenContext, PagerPorts, PortError, SharePage,
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

// No limit of its own on a pager request: a fleet larger than the pager's queue waits for
// room (it slows down, it does not fail attempts), and the attempt timeout bounds the wait.
impl PromptSource for PagerPrompts {
    fn open(&self, r: OpenRequest) -> BoxFuture<'static, Result<u64, PromptError>> {
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
