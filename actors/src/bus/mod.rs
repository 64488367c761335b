//! The `MessageBus` actor: direct messages to an agent's inbox and topic publish/subscribe.
//!
//! Inboxes are per agent name (replicas share one) and bounded at [`INBOX_CAPACITY`]. A
//! message the bus cannot place (no such agent, full inbox) comes back to its sender whole in
//! the error ([`Undelivered`]), never dropped silently and never blocking the sender; the bus
//! tools show it to the model. Subscriptions come from the agents' `subscribe` lists in the
//! config.

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use agentos_runtime::events::labels::{BusDropReason, BusKind};
use agentos_runtime::events::system::{BusMessageDelivered, BusMessageDropped, BusMessageSent};
use agentos_runtime::policy::supervision::RestartType;
use agentos_runtime::tools::Envelope;

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{
    BusError, BusPorts, Publish, Published, ReadInbox, SendDirect, Undelivered, INBOX_CAPACITY,
};

/// The bus's child spec: permanent; every start binds `ports`. A restarted bus starts with
/// empty inboxes.
pub fn child_spec(agents: Vec<(String, Vec<String>)>, ports: BusPorts) -> ChildSpec {
    ChildSpec::new("bus", "bus", RestartType::Permanent, move |notice| {
        let addr = MessageBus::new(&agents, notice).start();
        ports.bind(&addr);
        ChildHandle::stop_or_hard_stop(addr, || StopBus)
    })
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
    notice: ExitNotice,
}

impl MessageBus {
    /// A bus for `agents` with their topic subscriptions.
    pub fn new(agents: &[(String, Vec<String>)], notice: ExitNotice) -> Self {
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
            notice,
        }
    }

    /// Places `env` in `to`'s inbox, or hands it back with the reason.
    fn deliver(&mut self, to: &str, env: Envelope) -> Result<(), (BusError, Envelope)> {
        let Some(inbox) = self.inboxes.get_mut(to) else {
            BusMessageDropped {
                reason: BusDropReason::NoSuchAgent,
            }
            .emit();
            return Err((BusError::NoSuchAgent(to.to_owned()), env));
        };
        if inbox.len() >= INBOX_CAPACITY {
            BusMessageDropped {
                reason: BusDropReason::InboxFull,
            }
            .emit();
            return Err((BusError::InboxFull(to.to_owned()), env));
        }
        inbox.push_back(env);
        BusMessageDelivered.emit();
        Ok(())
    }
}

impl Actor for MessageBus {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<SendDirect> for MessageBus {
    type Result = Result<(), Undelivered>;

    fn handle(&mut self, msg: SendDirect, _: &mut Self::Context) -> Self::Result {
        BusMessageSent {
            kind: BusKind::Direct,
        }
        .emit();
        self.seq += 1;
        let env = Envelope {
            from: msg.from,
            topic: None,
            body: msg.body,
            seq: self.seq,
        };
        self.deliver(&msg.to, env)
            .map_err(|(reason, env)| Undelivered {
                reason,
                body: env.body,
            })
    }
}

impl Handler<Publish> for MessageBus {
    type Result = MessageResult<Publish>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        BusMessageSent {
            kind: BusKind::Publish,
        }
        .emit();
        self.seq += 1;
        let subscribers = self.topics.get(&msg.topic).cloned().unwrap_or_default();
        if subscribers.is_empty() {
            BusMessageDropped {
                reason: BusDropReason::NoSubscribers,
            }
            .emit();
        }
        let mut out = Published::default();
        for to in subscribers.iter().filter(|s| **s != msg.from) {
            let env = Envelope {
                from: msg.from.clone(),
                topic: Some(msg.topic.clone()),
                body: msg.body.clone(),
                seq: self.seq,
            };
            match self.deliver(to, env) {
                Ok(()) => out.delivered += 1,
                Err(_) => out.undelivered.push(to.clone()),
            }
        }
        if !out.undelivered.is_empty() {
            out.returned = Some(msg.body);
        }
        MessageResult(out)
    }
}

impl Handler<ReadInbox> for MessageBus {
    type Result = MessageResult<ReadInbox>;

    fn handle(&mut self, msg: ReadInbox, _: &mut Self::Context) -> Self::Result {
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

impl Handler<HardStop> for MessageBus {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Sent only when the stop message was not obeyed within the shutdown timeout.
        ctx.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_message_to_a_full_inbox_comes_back_whole() {
        let bus = MessageBus::new(&[("a".into(), vec![])], ExitNotice::detached()).start();
        for i in 0..INBOX_CAPACITY {
            bus.send(SendDirect {
                from: "b".into(),
                to: "a".into(),
                body: format!("m{i}"),
            })
            .await
            .unwrap()
            .unwrap();
        }
        let back = bus
            .send(SendDirect {
                from: "b".into(),
                to: "a".into(),
                body: "one too many".into(),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(back.reason, BusError::InboxFull("a".into()));
        assert_eq!(back.body, "one too many");
        let unknown = bus
            .send(SendDirect {
                from: "b".into(),
                to: "nobody".into(),
                body: "hello?".into(),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(unknown.reason, BusError::NoSuchAgent("nobody".into()));
        assert_eq!(unknown.body, "hello?");
    }

    #[actix_rt::test]
    async fn a_publish_reports_who_did_not_get_it() {
        let agents = [
            ("a".to_owned(), vec!["news".to_owned()]),
            ("b".to_owned(), vec!["news".to_owned()]),
        ];
        let bus = MessageBus::new(&agents, ExitNotice::detached()).start();
        for i in 0..INBOX_CAPACITY {
            bus.send(SendDirect {
                from: "x".into(),
                to: "a".into(),
                body: format!("m{i}"),
            })
            .await
            .unwrap()
            .unwrap();
        }
        let p = bus
            .send(Publish {
                from: "x".into(),
                topic: "news".into(),
                body: "extra".into(),
            })
            .await
            .unwrap();
        assert_eq!(p.delivered, 1);
        assert_eq!(p.undelivered, ["a"]);
        assert_eq!(p.returned.as_deref(), Some("extra"));
    }
}
