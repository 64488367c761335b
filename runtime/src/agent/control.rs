//! [`AttemptControl`]: how the outside world steers a running attempt.
//!
//! - **Suspend**: at its next step boundary (before it builds the next prompt) the attempt
//!   waits, context kept, until the agent is resumed. Time spent paused does not count against
//!   the attempt timeout.
//! - **Cancel**: the attempt stops at once, even while it waits on an LLM call or a tool: the
//!   step loop is dropped, and its drop guards release the KV lease and close the context.
//!
//! - **Preempt**: a better task waits for this one's capacity. At its next step boundary
//!   after its time slice is used ([`AgentSetup::slice`](super::AgentSetup)), the attempt
//!   gives way: it ends as [`Outcome::Yielded`](crate::sched::Outcome), context and journal
//!   kept, and the same attempt continues later. Never inside a tool call or an LLM call. The
//!   request can be withdrawn (`None`) when the better task found capacity elsewhere.
//!
//! All are `tokio::sync::watch` receivers; a dropped sender means "never": an attempt whose
//! controller went away runs on as if nobody steered it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The receiving ends of one attempt's suspend switch and cancel signal. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AttemptControl {
    suspended: Option<watch::Receiver<bool>>,
    cancel: Option<watch::Receiver<Option<String>>>,
    preempt: Option<watch::Receiver<Option<String>>>,
}

impl AttemptControl {
    /// Nobody steers the attempt.
    pub fn none() -> Self {
        Self::default()
    }

    /// Steered by the agent's suspend switch and this attempt's cancel signal (`Some(reason)`
    /// cancels).
    pub fn new(suspended: watch::Receiver<bool>, cancel: watch::Receiver<Option<String>>) -> Self {
        Self {
            suspended: Some(suspended),
            cancel: Some(cancel),
            preempt: None,
        }
    }

    /// Also steered by a preemption request (`Some(reason)`: a better task waits).
    pub fn with_preempt(mut self, preempt: watch::Receiver<Option<String>>) -> Self {
        self.preempt = Some(preempt);
        self
    }

    /// Why the attempt should give way, if a preemption is requested now.
    pub fn preempt_requested(&self) -> Option<String> {
        self.preempt.as_ref().and_then(|rx| rx.borrow().clone())
    }

    /// Whether the agent is suspended now.
    pub fn is_suspended(&self) -> bool {
        self.suspended.as_ref().is_some_and(|s| *s.borrow())
    }

    /// Resolves with the reason once the attempt is cancelled; never, otherwise.
    pub async fn cancelled(&self) -> String {
        if let Some(rx) = &self.cancel {
            let mut rx = rx.clone();
            let reason = match rx.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            };
            if let Some(reason) = reason {
                return reason;
            }
        }
        std::future::pending().await
    }

    /// Waits while the agent is suspended; answers how long it waited.
    pub(super) async fn gate(&self, clock: &PauseClock) -> Duration {
        let Some(rx) = &self.suspended else {
            return Duration::ZERO;
        };
        if !*rx.borrow() {
            return Duration::ZERO;
        }
        let mut rx = rx.clone();
        let started = Instant::now();
        clock.begin(started);
        // A dropped switch counts as resumed.
        let _ = rx.wait_for(|s| !*s).await;
        clock.end(Instant::now());
        started.elapsed()
    }
}

/// Time an attempt spent paused, so that the attempt timeout can leave it out.
#[derive(Debug, Default)]
pub(super) struct PauseClock {
    // (paused so far, paused since)
    inner: Mutex<(Duration, Option<Instant>)>,
}

impl PauseClock {
    pub(super) fn begin(&self, at: Instant) {
        self.lock().1 = Some(at);
    }

    pub(super) fn end(&self, at: Instant) {
        let mut g = self.lock();
        if let Some(since) = g.1.take() {
            g.0 += at.saturating_duration_since(since);
        }
    }

    /// Paused time up to `now`, and whether the attempt is paused right now.
    pub(super) fn paused(&self, now: Instant) -> (Duration, bool) {
        let g = self.lock();
        match g.1 {
            Some(since) => (g.0 + now.saturating_duration_since(since), true),
            None => (g.0, false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Duration, Option<Instant>)> {
        // Held for a few instructions, never across an await; a poisoned lock still holds
        // the last figures.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
