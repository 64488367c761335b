//! The bus as the tools see it: a [`BusPort`] over the bus's ports. A message the bus could
//! not place comes back in the error, and the tool shows it to the model, so nothing is lost
//! silently.

use std::time::Duration;

use agentos_runtime::tools::{BusPort, Envelope, ToolError};
use futures::future::BoxFuture;

use crate::protocol::{BusPorts, Publish, ReadInbox, SendDirect};

/// How long a tool waits for the bus.
pub const BUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest part of a returned message body quoted back to the model.
const QUOTE_CHARS: usize = 500;

/// The bus port handed to every agent's tools.
#[derive(Debug, Clone)]
pub struct BusLink {
    ports: BusPorts,
}

impl BusLink {
    /// A link over the bus's ports.
    pub fn new(ports: BusPorts) -> Self {
        Self { ports }
    }
}

fn unanswered(e: crate::protocol::PortError) -> ToolError {
    ToolError::Failed(format!("message bus did not answer: {e}"))
}

fn quote(body: &str) -> String {
    let mut out: String = body.chars().take(QUOTE_CHARS).collect();
    if out.len() < body.len() {
        out.push_str("...");
    }
    out
}

impl BusPort for BusLink {
    fn send(
        &self,
        from: &str,
        to: &str,
        body: String,
    ) -> BoxFuture<'static, Result<(), ToolError>> {
        let port = self.ports.send.clone();
        let msg = SendDirect {
            from: from.to_owned(),
            to: to.to_owned(),
            body,
        };
        Box::pin(async move {
            port.ask(msg, BUS_TIMEOUT)
                .await
                .map_err(unanswered)?
                .map_err(|u| {
                    ToolError::Failed(format!(
                        "message not delivered: {}; it comes back to you unsent: \"{}\"",
                        u.reason,
                        quote(&u.body)
                    ))
                })
        })
    }

    fn publish(
        &self,
        from: &str,
        topic: &str,
        body: String,
    ) -> BoxFuture<'static, Result<usize, ToolError>> {
        let port = self.ports.publish.clone();
        let msg = Publish {
            from: from.to_owned(),
            topic: topic.to_owned(),
            body,
        };
        Box::pin(async move {
            let p = port.ask(msg, BUS_TIMEOUT).await.map_err(unanswered)?;
            match p.returned {
                Some(body) if p.delivered == 0 => Err(ToolError::Failed(format!(
                    "message not delivered: the inboxes of {} are full; it comes back to you \
                     unsent: \"{}\"",
                    p.undelivered.join(", "),
                    quote(&body)
                ))),
                _ => Ok(p.delivered),
            }
        })
    }

    fn read(
        &self,
        agent: &str,
        max: usize,
        call: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Envelope>, ToolError>> {
        let port = self.ports.read.clone();
        let msg = ReadInbox {
            agent: agent.to_owned(),
            max,
            call,
        };
        Box::pin(async move { port.ask(msg, BUS_TIMEOUT).await.map_err(unanswered) })
    }
}
