//! Everything that crosses actors: the messages, grouped by the actor that handles them, and
//! the [`Port`]s actors reach each other through.
//!
//! No actor module imports another actor's module. An actor gets, at boot, the port groups of
//! exactly the peers it talks to; the peer's start function binds them on every start, so a
//! restarted peer is reached through the same ports.
//!
//! # Layout
//! - [`port`]: [`Port`], a restart-safe [`Recipient`](actix::Recipient) slot, and the macro
//!   that declares a port group per actor.
//! - [`scheduler`]: idle announcements, reports, dead agents, snapshots, drain and cancel.
//! - [`agent`]: task dispatch, re-announce, and the agent supervisor's restart order.
//! - [`pager`]: contexts, prompts, shared pages, statistics.
//! - [`kv`]: KV-cache leases and figures.
//! - [`bus`]: direct messages, publishes, inbox reads; undelivered messages come back.

pub mod agent;
pub mod bus;
pub mod control;
pub mod kv;
pub mod pager;
pub mod port;
pub mod scheduler;

pub use agent::*;
pub use bus::*;
pub use control::*;
pub use kv::*;
pub use pager::*;
pub use port::{Port, PortError};
pub use scheduler::*;
