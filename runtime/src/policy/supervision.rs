//! Supervision policy, in the Erlang/OTP mould: restart types, strategies, restart intensity
//! and backoff. The supervisor actors own one [`RestartBook`] each and ask it what to do when a
//! child exits. Every exit goes through the book: a crash, a normal stop, and a restart ordered
//! from outside (a lease that expired on a wedged agent), which counts as an abnormal exit. So
//! a child that keeps wedging is backed off and, past the intensity, escalates like one that
//! keeps crashing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::backoff::exponential;
use crate::config::SupervisorSettings;

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartType {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (panic, crash, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

impl RestartType {
    /// Whether a child of this type is restarted after an exit that was `abnormal` or not.
    pub fn restarts(self, abnormal: bool) -> bool {
        match self {
            RestartType::Permanent => true,
            RestartType::Transient => abnormal,
            RestartType::Temporary => false,
        }
    }
}

/// Which children are restarted when one exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that exited.
    OneForOne,
    /// Every child.
    OneForAll,
    /// The child that exited and every child started after it.
    RestForOne,
}

impl Strategy {
    /// Indices (in start order) of the children to restart when child `failed` of `count` exits.
    pub fn affected(self, failed: usize, count: usize) -> Vec<usize> {
        match self {
            Strategy::OneForOne => vec![failed],
            Strategy::OneForAll => (0..count).collect(),
            Strategy::RestForOne => (failed..count).collect(),
        }
    }
}

/// What the supervisor should do about an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay.
    Restart(Duration),
    /// Leave the child stopped.
    Ignore,
    /// Too many restarts: stop and let the parent decide.
    Escalate,
}

/// Restart history of one supervisor: intensity within a sliding window, and the backoff that
/// grows with consecutive restarts in that window.
#[derive(Debug, Clone)]
pub struct RestartBook {
    settings: SupervisorSettings,
    recent: VecDeque<Instant>,
}

impl RestartBook {
    /// An empty book.
    pub fn new(settings: SupervisorSettings) -> Self {
        Self {
            settings,
            recent: VecDeque::new(),
        }
    }

    /// Decides about an exit of a child of `restart` type at `now`, and records a restart.
    /// `abnormal` is true for a crash and for a restart ordered from outside.
    pub fn on_exit(&mut self, restart: RestartType, abnormal: bool, now: Instant) -> Decision {
        if !restart.restarts(abnormal) {
            return Decision::Ignore;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > self.settings.within)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.settings.max_restarts {
            return Decision::Escalate;
        }
        self.recent.push_back(now);
        let n = self.recent.len() as u32;
        Decision::Restart(exponential(
            self.settings.backoff_initial,
            self.settings.backoff_max,
            2.0,
            n,
        ))
    }

    /// Restarts recorded within the current window.
    pub fn recent_restarts(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SupervisorSettings {
        SupervisorSettings {
            max_restarts: 3,
            within: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(25),
        }
    }

    #[test]
    fn restart_types() {
        let mut book = RestartBook::new(settings());
        let now = Instant::now();
        assert_eq!(
            book.on_exit(RestartType::Temporary, true, now),
            Decision::Ignore
        );
        assert_eq!(
            book.on_exit(RestartType::Transient, false, now),
            Decision::Ignore
        );
        assert!(matches!(
            book.on_exit(RestartType::Transient, true, now),
            Decision::Restart(_)
        ));
        assert!(matches!(
            book.on_exit(RestartType::Permanent, false, now),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn intensity_escalates_and_window_slides() {
        let mut book = RestartBook::new(settings());
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            book.on_exit(RestartType::Permanent, true, t0),
            Decision::Restart(ms(10))
        );
        assert_eq!(
            book.on_exit(RestartType::Permanent, true, t0),
            Decision::Restart(ms(20))
        );
        assert_eq!(
            book.on_exit(RestartType::Permanent, true, t0),
            Decision::Restart(ms(25))
        );
        assert_eq!(
            book.on_exit(RestartType::Permanent, true, t0),
            Decision::Escalate
        );
        // After the window, restarts are allowed again and backoff starts over.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            book.on_exit(RestartType::Permanent, true, later),
            Decision::Restart(ms(10))
        );
        assert_eq!(book.recent_restarts(), 1);
    }

    #[test]
    fn strategies_pick_children() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), vec![1]);
        assert_eq!(Strategy::OneForAll.affected(1, 4), vec![0, 1, 2, 3]);
        assert_eq!(Strategy::RestForOne.affected(1, 4), vec![1, 2, 3]);
    }
}
