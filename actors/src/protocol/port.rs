//! [`Port`]: a typed, restart-safe handle on whichever actor currently handles one message.
//!
//! A supervisor's start function binds the ports of the actor it starts, on every start, so a
//! restarted actor is reached through the same ports its peers were given at boot. Peers never
//! hold an actor's `Addr` and never name its type: a port is a [`Recipient`] slot.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

/// Why a request through a [`Port`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// No actor was ever bound to the port (it has not started yet).
    #[error("not running")]
    Unbound,
    /// The actor stopped (or is restarting) before it answered.
    #[error("stopped before it answered (restarting?)")]
    Closed,
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A slot holding the current recipient of `M`. Cheap to clone; clones share the slot.
pub struct Port<M>
where
    M: Message + Send,
    M::Result: Send,
{
    // std RwLock: reads vastly outnumber writes (one per restart), no await while held, and a
    // poisoned lock still holds a valid recipient, so poisoning is ignored.
    slot: Arc<RwLock<Option<Recipient<M>>>>,
}

impl<M> Clone for Port<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
        }
    }
}

impl<M> Default for Port<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn default() -> Self {
        Self {
            slot: Arc::new(RwLock::new(None)),
        }
    }
}

impl<M> std::fmt::Debug for Port<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("message", &std::any::type_name::<M>())
            .field("bound", &self.get().is_some())
            .finish()
    }
}

impl<M> Port<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    /// Points the port at `addr`'s actor (called by the actor's start function).
    pub fn bind<A>(&self, addr: &Addr<A>)
    where
        A: Actor + Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone().recipient());
    }

    /// The current recipient, if an actor was bound.
    pub fn get(&self) -> Option<Recipient<M>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends `msg` and waits for the answer (waiting for mailbox room) as long as it takes;
    /// the caller bounds the wait (the step core's attempt timeout does for agents).
    pub async fn call(&self, msg: M) -> Result<M::Result, PortError> {
        let to = self.get().ok_or(PortError::Unbound)?;
        to.send(msg).await.map_err(|_| PortError::Closed)
    }

    /// Sends `msg` and waits for the answer (waiting for mailbox room), at most `limit`.
    pub async fn ask(&self, msg: M, limit: Duration) -> Result<M::Result, PortError> {
        let to = self.get().ok_or(PortError::Unbound)?;
        match tokio::time::timeout(limit, to.send(msg)).await {
            Err(_) => Err(PortError::Timeout(limit)),
            Ok(Err(_)) => Err(PortError::Closed),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    /// Sends `msg` if the mailbox has room. An undelivered message comes back in the error
    /// (`Closed` also when nothing is bound), so the sender can requeue it.
    pub fn try_tell(&self, msg: M) -> Result<(), SendError<M>> {
        match self.get() {
            Some(to) => to.try_send(msg),
            None => Err(SendError::Closed(msg)),
        }
    }

    /// Sends `msg` ignoring the mailbox bound (for rare messages that must not be lost:
    /// releases, closes, exit notices). Answers whether an actor was bound.
    pub fn tell(&self, msg: M) -> bool {
        match self.get() {
            Some(to) => {
                to.do_send(msg);
                true
            }
            None => false,
        }
    }
}

/// Declares a group of ports, one per message an actor handles, with a `bind` that points
/// all of them at one actor.
macro_rules! ports {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $msg:ty),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $crate::protocol::Port<$msg>,)+
        }

        impl $name {
            /// Points every port of the group at `addr`'s actor.
            pub fn bind<A>(&self, addr: &actix::Addr<A>)
            where
                A: actix::Actor<Context = actix::Context<A>> $(+ actix::Handler<$msg>)+,
            {
                $(self.$field.bind(addr);)+
            }
        }
    };
}
pub(crate) use ports;
