//! The `MessageBus` actor: direct messages to an agent's inbox and topic publish/subscribe.
//!
//! Inboxes are per agent name (replicas share one) and bounded at [`INBOX_CAPACITY`]; a message
//! to a full inbox is dropped and counted, never blocking the sender. Subscriptions come from
//! the agents' `subscribe` lists in the config. Agents use the bus through the built-in tools
//! `send_message`, `publish` and `read_messages` ([`BusHandle`] implements their port).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use agentos_runtime::metrics as m;
use agentos_runtime::tools::{BusPort, Envelope, ToolError};
use futures::future::BoxFuture;

use crate::registry::Registry;
use crate::supervisor::ExitNotice;

/// Most messages waiting in one inbox.
pub const INBOX_CAPACITY: usize = 256;

/// Why the bus refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No agent by that name.
    #[error("no agent named \"{0}\"")]
    NoSuchAgent(String),
    /// The inbox is at capacity.
    #[error("inbox of \"{0}\" is full ({INBOX_CAPACITY} messages)")]
    InboxFull(String),
}

/// Direct message.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), BusError>")]
pub struct Send {
    /// Sender.
    pub from: String,
    /// Receiving agent.
    pub to: String,
    /// Body.
    pub body: String,
}

/// Topic publish; answers how many inboxes received it.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Publish {
    /// Sender.
    pub from: String,
    /// Topic.
    pub topic: String,
    /// Body.
    pub body: String,
}

/// Takes up to `max` messages from an inbox.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Envelope>")]
pub struct Read {
    /// Whose inbox.
    pub agent: String,
    /// Most messages returned.
    pub max: usize,
}

/// Stops the bus.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopBus;

/// The bus actor.
pub struct MessageBus {
    inboxes: HashMap<String, VecDeque<Envelope>>,
    topics: HashMap<String, Vec<String>>,
    seq: u64,
    registry: Arc<Registry>,
    notice: ExitNotice,
}

impl MessageBus {
    /// A bus for `agents` with their topic subscriptions.
    pub fn new(
        agents: &[(String, Vec<String>)],
        registry: Arc<Registry>,
        notice: ExitNotice,
    ) -> Self {
        let mut topics: HashMap<String, Vec<String>> = HashMap::new();
        for (agent, subs) in agents {
            for t in subs {
                topics.entry(t.clone()).or_default().push(agent.clone());
            }
        }
        Self {
            inboxes: agents
                .iter()
                .map(|(a, _)| (a.clone(), VecDeque::new()))
                .collect(),
            topics,
            seq: 0,
            registry,
            notice,
        }
    }

    fn deliver(&mut self, to: &str, env: Envelope) -> Result<(), BusError> {
        let inbox = self
            .inboxes
            .get_mut(to)
            .ok_or_else(|| BusError::NoSuchAgent(to.to_owned()))?;
        if inbox.len() >= INBOX_CAPACITY {
            metrics::counter!(m::BUS_DROPPED, "reason" => "inbox_full").increment(1);
            return Err(BusError::InboxFull(to.to_owned()));
        }
        inbox.push_back(env);
        metrics::counter!(m::BUS_DELIVERED).increment(1);
        Ok(())
    }
}

impl Actor for MessageBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.registry.set_bus(ctx.address());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<Send> for MessageBus {
    type Result = Result<(), BusError>;

    fn handle(&mut self, msg: Send, _: &mut Self::Context) -> Self::Result {
        metrics::counter!(m::BUS_SENT, "kind" => "direct").increment(1);
        self.seq += 1;
        let env = Envelope {
            from: msg.from,
            topic: None,
            body: msg.body,
            seq: self.seq,
        };
        let result = self.deliver(&msg.to, env);
        if let Err(BusError::NoSuchAgent(_)) = &result {
            metrics::counter!(m::BUS_DROPPED, "reason" => "no_such_agent").increment(1);
        }
        result
    }
}

impl Handler<Publish> for MessageBus {
    type Result = usize;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> usize {
        metrics::counter!(m::BUS_SENT, "kind" => "publish").increment(1);
        self.seq += 1;
        let subscribers = self.topics.get(&msg.topic).cloned().unwrap_or_default();
        if subscribers.is_empty() {
            metrics::counter!(m::BUS_DROPPED, "reason" => "no_subscribers").increment(1);
        }
        let mut n = 0;
        for to in subscribers.iter().filter(|s| **s != msg.from) {
            let env = Envelope {
                from: msg.from.clone(),
                topic: Some(msg.topic.clone()),
                body: msg.body.clone(),
                seq: self.seq,
            };
            if self.deliver(to, env).is_ok() {
                n += 1;
            }
        }
        n
    }
}

impl Handler<Read> for MessageBus {
    type Result = MessageResult<Read>;

    fn handle(&mut self, msg: Read, _: &mut Self::Context) -> Self::Result {
        let Some(inbox) = self.inboxes.get_mut(&msg.agent) else {
            return MessageResult(Vec::new());
        };
        let n = msg.max.min(inbox.len());
        MessageResult(inbox.drain(..n).collect())
    }
}

impl Handler<StopBus> for MessageBus {
    type Result = ();

    fn handle(&mut self, _: StopBus, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The bus as the tools see it: looks the bus up at call time (it may have been restarted) and
/// waits at most [`BusHandle::TIMEOUT`] for an answer.
#[derive(Debug, Clone)]
pub struct BusHandle {
    registry: Arc<Registry>,
}

impl BusHandle {
    /// How long a tool waits for the bus.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// A handle over the registry's bus.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    fn ask<M>(&self, msg: M) -> BoxFuture<'static, Result<M::Result, ToolError>>
    where
        M: Message + std::marker::Send + 'static,
        M::Result: std::marker::Send,
        MessageBus: Handler<M>,
    {
        let bus = self.registry.bus();
        Box::pin(async move {
            let bus = bus.ok_or_else(|| ToolError::Failed("message bus not available".into()))?;
            bus.send(msg)
                .timeout(Self::TIMEOUT)
                .await
                .map_err(|e| ToolError::Failed(format!("message bus did not answer: {e}")))
        })
    }
}

impl BusPort for BusHandle {
    fn send(
        &self,
        from: &str,
        to: &str,
        body: String,
    ) -> BoxFuture<'static, Result<(), ToolError>> {
        let fut = self.ask(Send {
            from: from.to_owned(),
            to: to.to_owned(),
            body,
        });
        Box::pin(async move { fut.await?.map_err(|e| ToolError::Failed(e.to_string())) })
    }

    fn publish(
        &self,
        from: &str,
        topic: &str,
        body: String,
    ) -> BoxFuture<'static, Result<usize, ToolError>> {
        self.ask(Publish {
            from: from.to_owned(),
            topic: topic.to_owned(),
            body,
        })
    }

    fn read(
        &self,
        agent: &str,
        max: usize,
    ) -> BoxFuture<'static, Result<Vec<Envelope>, ToolError>> {
        self.ask(Read {
            agent: agent.to_owned(),
            max,
        })
    }
}
