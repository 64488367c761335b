//! The `MessageBus` actor: direct messages to an agent's inbox and topic publish/subscribe.
//!
//! Inboxes are per agent name (replicas share one) and bounded at [`INBOX_CAPACITY`]. A
//! message the bus cannot place (no such agent, full inbox) comes back to its sender whole in
//! the error ([`Undelivered`]), never dropped silently and never blocking the sender; the bus
//! tools show it to the model. Subscriptions come from the agents' `subscribe` lists in the
//! config.
//!
//! With a store ([`BusStore`]) every delivered message is also a row until it is read, so a
//! message sent and not yet read is still in its inbox after a restart of the bus or of the
//! whole process; every start loads the unread rows before it takes a message. A read is
//! keyed by the identity of its `read_messages` call: the same call made again (its attempt
//! resumed after a crash) gets the same messages back. Under `durability: sync` a send is
//! answered once its row is committed.

use std::collections::{HashMap, VecDeque};

use agentos_runtime::store::{InboxRow, Store};

use actix::prelude::*;
use agentos_runtime::events::labels::{BusDropReason, BusKind};
use agentos_runtime::events::system::{BusMessageDelivered, BusMessageDropped, BusMessageSent};
use agentos_runtime::policy::supervision::RestartType;
use agentos_runtime::tools::Envelope;

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{
    BusError, BusPorts, Publish, Published, ReadInbox, SendDirect, Undelivered, INBOX_CAPACITY,
};
use crate::store_worker::{Ack, StoreWorker};

/// Where the bus keeps its inboxes.
#[derive(Debug, Clone)]
pub struct BusStore {
    /// The store thread.
    pub worker: StoreWorker,
    /// The run's id.
    pub run_id: String,
    /// Answer a send only once its row is committed (`durability: sync`).
    pub wait: bool,
}

/// The bus's child spec: permanent; every start binds `ports`. A restarted bus starts with
/// the unread messages of the store (empty inboxes without one).
pub fn child_spec(
    agents: Vec<(String, Vec<String>)>,
    ports: BusPorts,
    store: Option<BusStore>,
) -> ChildSpec {
    ChildSpec::new("bus", "bus", RestartType::Permanent, move |notice| {
        let addr = MessageBus::new(&agents, notice)
            .with_store(store.clone())
            .start();
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
    store: Option<BusStore>,
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
            store: None,
        }
    }

    /// Keeps the inboxes in `store` too.
    pub fn with_store(mut self, store: Option<BusStore>) -> Self {
        self.store = store;
        self
    }

    /// Stores delivered messages; answers the commit to wait for under `sync`.
    fn persist(&self, rows: Vec<InboxRow>) -> Option<Ack<()>> {
        let store = self.store.as_ref()?;
        if rows.is_empty() {
            return None;
        }
        let run = store.run_id.clone();
        let (n, put) = (rows.len(), move |db: &mut Store| db.put_inbox(&run, &rows));
        if store.wait {
            Some(store.worker.run(n, put))
        } else {
            // Nobody waits: it commits with the store thread's next commit.
            drop(store.worker.run_early(n, put, || {}));
            None
        }
    }

    fn row(to: &str, env: &Envelope) -> InboxRow {
        InboxRow {
            seq: env.seq,
            to: to.to_owned(),
            from: env.from.clone(),
            topic: env.topic.clone(),
            body: env.body.clone(),
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
        let Some(store) = self.store.clone() else {
            return;
        };
        let run = store.run_id.clone();
        let load = store
            .worker
            .run(0, move |db| Ok((db.unread(&run)?, db.last_bus_seq(&run)?)));
        // No message is handled before the stored inboxes are back.
        ctx.wait(
            actix::fut::wrap_future(load).map(|loaded, act: &mut Self, _| match loaded {
                Ok(Ok((rows, seq))) => {
                    act.seq = act.seq.max(seq);
                    for r in rows {
                        let env = Envelope {
                            from: r.from,
                            topic: r.topic,
                            body: r.body,
                            seq: r.seq,
                        };
                        if let Some(inbox) = act.inboxes.get_mut(&r.to) {
                            inbox.push_back(env);
                        }
                    }
                }
                Ok(Err(e)) => tracing::error!(error = %e, "bus inboxes could not be loaded"),
                Err(_) => tracing::error!("bus inboxes could not be loaded: store thread gone"),
            }),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<SendDirect> for MessageBus {
    type Result = ResponseFuture<Result<(), Undelivered>>;

    fn handle(&mut self, msg: SendDirect, _: &mut Self::Context) -> Self::Result {
        let delivered = self.send_direct(msg);
        let ack = match &delivered {
            Ok(row) => self.persist(vec![row.clone()]),
            Err(_) => None,
        };
        Box::pin(async move {
            let row = delivered?;
            if let Some(ack) = ack {
                if !matches!(ack.await, Ok(Ok(()))) {
                    tracing::error!(to = %row.to, "a delivered message could not be stored");
                }
            }
            Ok(())
        })
    }
}

impl MessageBus {
    fn send_direct(&mut self, msg: SendDirect) -> Result<InboxRow, Undelivered> {
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
        let row = Self::row(&msg.to, &env);
        self.deliver(&msg.to, env)
            .map(|()| row)
            .map_err(|(reason, env)| Undelivered {
                reason,
                body: env.body,
            })
    }
}

impl Handler<Publish> for MessageBus {
    type Result = ResponseFuture<Published>;

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
        let mut rows = Vec::new();
        for to in subscribers.iter().filter(|s| **s != msg.from) {
            // One sequence number per inbox row (a row is keyed by it).
            self.seq += 1;
            let env = Envelope {
                from: msg.from.clone(),
                topic: Some(msg.topic.clone()),
                body: msg.body.clone(),
                seq: self.seq,
            };
            let row = Self::row(to, &env);
            match self.deliver(to, env) {
                Ok(()) => {
                    out.delivered += 1;
                    rows.push(row);
                }
                Err(_) => out.undelivered.push(to.clone()),
            }
        }
        if !out.undelivered.is_empty() {
            out.returned = Some(msg.body);
        }
        let ack = self.persist(rows);
        Box::pin(async move {
            if let Some(ack) = ack {
                if !matches!(ack.await, Ok(Ok(()))) {
                    tracing::error!("published messages could not be stored");
                }
            }
            out
        })
    }
}

impl Handler<ReadInbox> for MessageBus {
    type Result = AtomicResponse<Self, Vec<Envelope>>;

    fn handle(&mut self, msg: ReadInbox, _: &mut Self::Context) -> Self::Result {
        let Some(store) = self.store.clone() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(self.take(&msg))));
        };
        let call = msg
            .call
            .clone()
            .unwrap_or_else(|| "unkeyed read".to_owned());
        let run = store.run_id.clone();
        let key = call.clone();
        let earlier = store.worker.run(0, move |db| db.read_by(&run, &key));
        // Atomic: no other message is handled until this read is settled, so two reads never
        // take the same message.
        AtomicResponse::new(Box::pin(actix::fut::wrap_future(earlier).then(
            move |earlier, act: &mut Self, _| {
                let earlier = match earlier {
                    Ok(Ok(rows)) => rows,
                    _ => Vec::new(),
                };
                let (out, ack) = if earlier.is_empty() {
                    let out = act.take(&msg);
                    let seqs: Vec<u64> = out.iter().map(|e| e.seq).collect();
                    let run = store.run_id.clone();
                    let ack = (!seqs.is_empty()).then(|| {
                        store
                            .worker
                            .run(seqs.len(), move |db| db.mark_read(&run, &seqs, &call))
                    });
                    (out, ack.filter(|_| store.wait))
                } else {
                    // The same call, made again: what it took the first time.
                    let out = earlier
                        .into_iter()
                        .map(|r| Envelope {
                            from: r.from,
                            topic: r.topic,
                            body: r.body,
                            seq: r.seq,
                        })
                        .collect();
                    (out, None)
                };
                actix::fut::wrap_future(async move {
                    if let Some(ack) = ack {
                        let _ = ack.await;
                    }
                    out
                })
            },
        )))
    }
}

impl MessageBus {
    /// Takes up to `max` messages from the reader's inbox.
    fn take(&mut self, msg: &ReadInbox) -> Vec<Envelope> {
        let Some(inbox) = self.inboxes.get_mut(&msg.agent) else {
            return Vec::new();
        };
        let n = msg.max.min(inbox.len());
        inbox.drain(..n).collect()
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

    fn stored_bus(path: &std::path::Path) -> Addr<MessageBus> {
        let store = BusStore {
            worker: StoreWorker::start(
                "bus-test",
                path.to_path_buf(),
                agentos_runtime::events::durability::StoreWriter::Bus,
            )
            .unwrap(),
            run_id: "r".into(),
            wait: true,
        };
        let agents = [("a".to_owned(), vec![]), ("b".to_owned(), vec![])];
        MessageBus::new(&agents, ExitNotice::detached())
            .with_store(Some(store))
            .start()
    }

    fn read(agent: &str, call: &str) -> ReadInbox {
        ReadInbox {
            agent: agent.into(),
            max: 10,
            call: Some(call.into()),
        }
    }

    #[actix_rt::test]
    async fn unread_messages_survive_a_new_bus_and_a_repeated_read_gets_the_same_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let bus = stored_bus(&path);
        for body in ["one", "two"] {
            bus.send(SendDirect {
                from: "b".into(),
                to: "a".into(),
                body: body.into(),
            })
            .await
            .unwrap()
            .unwrap();
        }
        let first = bus.send(read("a", "w/t#1/s0/c0")).await.unwrap();
        assert_eq!(first.len(), 2);
        bus.send(SendDirect {
            from: "b".into(),
            to: "a".into(),
            body: "three".into(),
        })
        .await
        .unwrap()
        .unwrap();
        // A crash: a new bus over the same store (the old one is gone with its memory).
        drop(bus);
        let bus = stored_bus(&path);
        let again = bus.send(read("a", "w/t#1/s0/c0")).await.unwrap();
        assert_eq!(
            again, first,
            "the same call gets what it took the first time"
        );
        let next = bus.send(read("a", "w/t#1/s1/c0")).await.unwrap();
        let bodies: Vec<&str> = next.iter().map(|e| e.body.as_str()).collect();
        assert_eq!(
            bodies,
            ["three"],
            "the unread message is still in the inbox"
        );
        assert!(
            next[0].seq > first[1].seq,
            "sequence numbers go on after a restart"
        );
        assert!(bus.send(read("a", "w/t#1/s2/c0")).await.unwrap().is_empty());
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
