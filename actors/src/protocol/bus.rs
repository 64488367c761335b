//! Messages of the message bus. An undelivered message comes back to its sender in the error.

use actix::prelude::*;
use agentos_runtime::tools::Envelope;

use super::port::ports;

/// Most messages waiting in one inbox.
pub const INBOX_CAPACITY: usize = 256;

/// Why the bus could not place a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No agent by that name.
    #[error("no agent named \"{0}\"")]
    NoSuchAgent(String),
    /// The inbox is at capacity.
    #[error("inbox of \"{0}\" is full ({INBOX_CAPACITY} messages)")]
    InboxFull(String),
}

/// A message the bus could not place, handed back whole so the sender can keep it, retry it
/// or report it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Undelivered {
    /// Why.
    pub reason: BusError,
    /// The body, as sent.
    pub body: String,
}

/// A direct message to one agent's inbox.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Undelivered>")]
pub struct SendDirect {
    /// Sender.
    pub from: String,
    /// Receiving agent.
    pub to: String,
    /// Body.
    pub body: String,
}

/// What a publish reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Inboxes that received it.
    pub delivered: usize,
    /// Subscribers whose inbox was full, with the body handed back once for all of them.
    pub undelivered: Vec<String>,
    /// The body, when some subscriber did not receive it.
    pub returned: Option<String>,
}

/// A topic publish to every subscriber but the sender.
#[derive(Debug, Message)]
#[rtype(result = "Published")]
pub struct Publish {
    /// Sender.
    pub from: String,
    /// Topic.
    pub topic: String,
    /// Body.
    pub body: String,
}

/// Takes up to `max` messages from an inbox, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Envelope>")]
pub struct ReadInbox {
    /// Whose inbox.
    pub agent: String,
    /// Most messages returned.
    pub max: usize,
    /// The identity of the `read_messages` call (`context/s{step}/c{call}`), when a step
    /// core made it: a call read again after a restart should get the same messages.
    pub call: Option<String>,
}

ports! {
    /// Ports of the message bus.
    BusPorts {
        /// Direct messages.
        send: SendDirect,
        /// Topic publishes.
        publish: Publish,
        /// Inbox reads.
        read: ReadInbox,
    }
}
