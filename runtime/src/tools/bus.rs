//! Bus tools: `send_message`, `publish`, `read_messages`, through the context's [`BusPort`].
//!
//! The sender is always the calling agent (`ToolContext::agent`); the model cannot forge it.
//! Without a bus in the context every call fails with "message bus not available"; errors from
//! the bus itself (unknown recipient, full inbox, ...) pass through unchanged.
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::json;

use super::{arg_str, BusPort, Envelope, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// `read_messages` default for `max`.
pub const DEFAULT_READ_MAX: usize = 20;
/// Most messages one `read_messages` call takes; larger `max` values are lowered to this.
pub const READ_MAX_LIMIT: usize = 100;

fn bus(ctx: &ToolContext) -> Result<Arc<dyn BusPort>, ToolError> {
    ctx.bus
        .clone()
        .ok_or_else(|| ToolError::Failed("message bus not available".into()))
}

/// A required, non-empty string argument.
fn arg_name<'a>(args: &'a serde_json::Value, key: &str) -> Result<&'a str, ToolError> {
    let value = arg_str(args, key)?;
    if value.trim().is_empty() {
        return Err(ToolError::InvalidArguments(format!(
            "`{key}` must not be empty"
        )));
    }
    Ok(value)
}

type Started<T> = Result<(String, BoxFuture<'static, Result<T, ToolError>>), ToolError>;

/// Checks the arguments and hands the message to the bus; returns the recipient and the reply.
fn start_send(ctx: &ToolContext, args: &serde_json::Value) -> Started<()> {
    let to = arg_name(args, "to")?.to_owned();
    let body = arg_str(args, "body")?.to_owned();
    let reply = bus(ctx)?.send(&ctx.agent, &to, body);
    Ok((to, reply))
}

/// Checks the arguments and hands the message to the bus; returns the topic and the reply.
fn start_publish(ctx: &ToolContext, args: &serde_json::Value) -> Started<usize> {
    let topic = arg_name(args, "topic")?.to_owned();
    let body = arg_str(args, "body")?.to_owned();
    let reply = bus(ctx)?.publish(&ctx.agent, &topic, body);
    Ok((topic, reply))
}

/// The `send_message` tool.
///
/// Arguments: `{"to": agent, "body": string}`. Result data: `{"delivered": true}`.
#[derive(Debug, Clone, Copy)]
pub struct SendMessage;

impl Tool for SendMessage {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::AtMostOnce
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "send_message".into(),
            description: "Send a direct message to another agent's inbox.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "to": {"type": "string", "description": "Name of the receiving agent."},
                    "body": {"type": "string", "description": "Message text."}
                },
                "required": ["to", "body"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let sent = start_send(ctx, &args);
        Box::pin(async move {
            let (to, fut) = sent?;
            fut.await?;
            Ok(ToolOutput {
                content: format!("message delivered to `{to}`"),
                data: json!({"delivered": true}),
            })
        })
    }
}

/// The `publish` tool.
///
/// Arguments: `{"topic": string, "body": string}`. Result data: `{"receivers": n}`.
#[derive(Debug, Clone, Copy)]
pub struct Publish;

impl Tool for Publish {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::AtMostOnce
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "publish".into(),
            description: "Publish a message on a topic to every subscribed agent.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "topic": {"type": "string", "description": "Topic name."},
                    "body": {"type": "string", "description": "Message text."}
                },
                "required": ["topic", "body"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let published = start_publish(ctx, &args);
        Box::pin(async move {
            let (topic, fut) = published?;
            let receivers = fut.await?;
            Ok(ToolOutput {
                content: format!("published on `{topic}` to {receivers} receiver(s)"),
                data: json!({"receivers": receivers}),
            })
        })
    }
}

/// The `read_messages` tool.
///
/// Arguments: `{"max"?: integer}` (default [`DEFAULT_READ_MAX`], lowered to
/// [`READ_MAX_LIMIT`]). Takes the messages out of the inbox, oldest first. Result data:
/// `{"messages": [Envelope, ...]}`.
#[derive(Debug, Clone, Copy)]
pub struct ReadMessages;

impl Tool for ReadMessages {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Idempotent
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_messages".into(),
            description: "Take the oldest messages from this agent's inbox.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "max": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": READ_MAX_LIMIT,
                        "default": DEFAULT_READ_MAX,
                        "description": "Most messages to take."
                    }
                },
                "required": [],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let read = read_max(&args).and_then(|max| {
            Ok(bus(ctx)?.read(&ctx.agent, max, ctx.call.as_ref().map(ToString::to_string)))
        });
        Box::pin(async move {
            let messages = read?.await?;
            Ok(ToolOutput {
                content: render_messages(&messages),
                data: json!({"messages": messages}),
            })
        })
    }
}

fn read_max(args: &serde_json::Value) -> Result<usize, ToolError> {
    match args.get("max") {
        None | Some(serde_json::Value::Null) => Ok(DEFAULT_READ_MAX),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(usize::try_from(n)
                .unwrap_or(READ_MAX_LIMIT)
                .min(READ_MAX_LIMIT)),
            _ => Err(ToolError::InvalidArguments(
                "`max` must be a positive integer".into(),
            )),
        },
    }
}

fn render_messages(messages: &[Envelope]) -> String {
    if messages.is_empty() {
        return "no new messages".into();
    }
    let mut out = format!("{} message(s):", messages.len());
    for m in messages {
        out.push_str(&match &m.topic {
            Some(topic) => format!("\n[#{}] from {} on `{topic}`: {}", m.seq, m.from, m.body),
            None => format!("\n[#{}] from {}: {}", m.seq, m.from, m.body),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use super::*;
    use crate::tools::test_support::context;

    /// In-memory bus: inboxes by agent, subscribers by topic.
    #[derive(Default)]
    struct FakeBus {
        state: Mutex<FakeState>,
        /// The call identity of every read.
        reads: Mutex<Vec<Option<String>>>,
    }

    #[derive(Default)]
    struct FakeState {
        seq: u64,
        inboxes: BTreeMap<String, VecDeque<Envelope>>,
        topics: BTreeMap<String, Vec<String>>,
    }

    impl FakeState {
        fn deliver(&mut self, to: &str, from: &str, topic: Option<&str>, body: &str) -> bool {
            self.seq += 1;
            let seq = self.seq;
            match self.inboxes.get_mut(to) {
                Some(inbox) => {
                    inbox.push_back(Envelope {
                        from: from.into(),
                        topic: topic.map(Into::into),
                        body: body.into(),
                        seq,
                    });
                    true
                }
                None => false,
            }
        }
    }

    impl FakeBus {
        fn new(agents: &[&str], topics: &[(&str, &[&str])]) -> Arc<Self> {
            let bus = Self::default();
            {
                let mut s = bus.state.lock().unwrap();
                for a in agents {
                    s.inboxes.insert((*a).into(), VecDeque::new());
                }
                for (t, subs) in topics {
                    s.topics
                        .insert((*t).into(), subs.iter().map(|s| (*s).into()).collect());
                }
            }
            Arc::new(bus)
        }
    }

    impl BusPort for FakeBus {
        fn send(
            &self,
            from: &str,
            to: &str,
            body: String,
        ) -> BoxFuture<'static, Result<(), ToolError>> {
            let ok = self.state.lock().unwrap().deliver(to, from, None, &body);
            let to = to.to_owned();
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(ToolError::Failed(format!("no agent named `{to}`")))
                }
            })
        }

        fn publish(
            &self,
            from: &str,
            topic: &str,
            body: String,
        ) -> BoxFuture<'static, Result<usize, ToolError>> {
            let mut s = self.state.lock().unwrap();
            let subs = s.topics.get(topic).cloned().unwrap_or_default();
            let n = subs
                .iter()
                .filter(|to| s.deliver(to, from, Some(topic), &body))
                .count();
            Box::pin(async move { Ok(n) })
        }

        fn read(
            &self,
            agent: &str,
            max: usize,
            call: Option<String>,
        ) -> BoxFuture<'static, Result<Vec<Envelope>, ToolError>> {
            self.reads.lock().unwrap().push(call);
            let mut s = self.state.lock().unwrap();
            let inbox = s.inboxes.entry(agent.into()).or_default();
            let n = max.min(inbox.len());
            let taken: Vec<_> = inbox.drain(..n).collect();
            Box::pin(async move { Ok(taken) })
        }
    }

    fn ctx_for(agent: &str, bus: &Arc<FakeBus>) -> ToolContext {
        let mut ctx = context(None);
        ctx.agent = agent.into();
        ctx.bus = Some(bus.clone() as Arc<dyn BusPort>);
        ctx
    }

    #[tokio::test]
    async fn read_messages_passes_its_call_identity_to_the_bus() {
        let bus = FakeBus::new(&["bob"], &[]);
        let mut bob = ctx_for("bob", &bus);
        ReadMessages.call(&bob, json!({})).await.unwrap();
        bob.call = Some(crate::durable::CallId {
            context: "wf/t#1".into(),
            step: 0,
            call: 2,
        });
        ReadMessages.call(&bob, json!({})).await.unwrap();
        assert_eq!(
            *bus.reads.lock().unwrap(),
            vec![None, Some("wf/t#1/s0/c2".to_owned())]
        );
    }

    #[tokio::test]
    async fn send_then_read() {
        let bus = FakeBus::new(&["alice", "bob"], &[]);
        let alice = ctx_for("alice", &bus);
        let bob = ctx_for("bob", &bus);
        let out = SendMessage
            .call(&alice, json!({"to": "bob", "body": "hi bob"}))
            .await
            .unwrap();
        assert_eq!(out.data, json!({"delivered": true}));
        assert_eq!(out.content, "message delivered to `bob`");

        let out = ReadMessages.call(&bob, json!({})).await.unwrap();
        assert_eq!(
            out.data,
            json!({"messages": [{"from": "alice", "topic": null, "body": "hi bob", "seq": 1}]})
        );
        assert_eq!(out.content, "1 message(s):\n[#1] from alice: hi bob");
        let out = ReadMessages.call(&bob, json!({})).await.unwrap();
        assert_eq!(out.data, json!({"messages": []}));
        assert_eq!(out.content, "no new messages");
    }

    #[tokio::test]
    async fn publish_counts_receivers() {
        let bus = FakeBus::new(&["a", "b", "c"], &[("news", &["b", "c"])]);
        let a = ctx_for("a", &bus);
        let out = Publish
            .call(&a, json!({"topic": "news", "body": "extra"}))
            .await
            .unwrap();
        assert_eq!(out.data, json!({"receivers": 2}));
        assert_eq!(out.content, "published on `news` to 2 receiver(s)");
        let out = ReadMessages
            .call(&ctx_for("c", &bus), json!({}))
            .await
            .unwrap();
        assert_eq!(out.data["messages"][0]["topic"], "news");
        assert_eq!(out.content, "1 message(s):\n[#2] from a on `news`: extra");
        let out = Publish
            .call(&a, json!({"topic": "quiet", "body": "x"}))
            .await
            .unwrap();
        assert_eq!(out.data, json!({"receivers": 0}));
    }

    #[tokio::test]
    async fn read_respects_max() {
        let bus = FakeBus::new(&["a", "b"], &[]);
        let a = ctx_for("a", &bus);
        for i in 0..130 {
            SendMessage
                .call(&a, json!({"to": "b", "body": format!("m{i}")}))
                .await
                .unwrap();
        }
        let b = ctx_for("b", &bus);
        let out = ReadMessages.call(&b, json!({"max": 2})).await.unwrap();
        let bodies: Vec<_> = out.data["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(bodies, ["m0", "m1"]);
        let out = ReadMessages.call(&b, json!({})).await.unwrap();
        assert_eq!(
            out.data["messages"].as_array().unwrap().len(),
            DEFAULT_READ_MAX
        );
        let out = ReadMessages.call(&b, json!({"max": 1000})).await.unwrap();
        assert_eq!(
            out.data["messages"].as_array().unwrap().len(),
            READ_MAX_LIMIT
        );
        for bad in [json!(0), json!(-3), json!("5"), json!(2.5)] {
            let e = ReadMessages
                .call(&b, json!({"max": bad}))
                .await
                .unwrap_err();
            assert_eq!(
                e,
                ToolError::InvalidArguments("`max` must be a positive integer".into())
            );
        }
    }

    #[tokio::test]
    async fn errors() {
        let no_bus = context(None);
        for (tool, args) in [
            (&SendMessage as &dyn Tool, json!({"to": "b", "body": "x"})),
            (&Publish, json!({"topic": "t", "body": "x"})),
            (&ReadMessages, json!({})),
        ] {
            let e = tool.call(&no_bus, args).await.unwrap_err();
            assert_eq!(e, ToolError::Failed("message bus not available".into()));
        }
        let bus = FakeBus::new(&["a"], &[]);
        let a = ctx_for("a", &bus);
        let e = SendMessage
            .call(&a, json!({"to": "ghost", "body": "x"}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::Failed("no agent named `ghost`".into()));
        let e = SendMessage.call(&a, json!({"to": "b"})).await.unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments("`body` (string) is required".into())
        );
        let e = SendMessage
            .call(&a, json!({"to": " ", "body": "x"}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments("`to` must not be empty".into())
        );
        let e = Publish.call(&a, json!({"body": "x"})).await.unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments("`topic` (string) is required".into())
        );
    }

    #[test]
    fn specs_list_required_arguments() {
        assert_eq!(
            SendMessage.spec().parameters["required"],
            json!(["to", "body"])
        );
        assert_eq!(
            Publish.spec().parameters["required"],
            json!(["topic", "body"])
        );
        assert_eq!(ReadMessages.spec().parameters["required"], json!([]));
    }
}
