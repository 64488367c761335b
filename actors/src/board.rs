//! The board: what the running system publishes for many readers (the HTTP API, the run
//! summary, benchmarks), each entry written only by its owner.
//!
//! - `agents`: every agent instance's control block. Each agent writes its own entry (it
//!   inserts it when it starts and updates it as it works); nobody else writes there, but
//!   its agent's suspend-switch follower, which shows the switch moving on every instance's
//!   entry (`agent::sink::follow_switch`).
//! - `pager`: paging statistics by agent, written by the context pager's worker only.
//! - `done` / `fatal`: the run's end signals, sent by the scheduler (every task terminal) and
//!   by the root supervisor (it gave up).
//! - `suspended`: each agent's suspend switch, set by the scheduler (the control plane) and
//!   watched by the agent's instances and its follower.
//!
//! A reader takes a snapshot; it never holds a lock that an owner waits on for long.

use agentos_runtime::context::SharedStats;
use agentos_runtime::model::{ControlBlock, InstanceId};
use dashmap::DashMap;
use std::collections::HashMap;
use tokio::sync::watch;

/// Published state of one running system.
#[derive(Debug)]
pub struct Board {
    /// Control block of every agent instance, by instance; each agent writes its own entry
    /// (and its agent's suspend-switch follower the switch's moves).
    pub agents: DashMap<InstanceId, ControlBlock>,
    /// Paging statistics by agent (written by the context pager).
    pub pager: SharedStats,
    /// Becomes `true` when every task reached a terminal state.
    pub done: watch::Sender<bool>,
    /// Set when the root supervisor gave up.
    pub fatal: watch::Sender<Option<String>>,
    /// Each declared agent's suspend switch, written by the scheduler only; the agent's
    /// instances watch it.
    pub suspended: HashMap<String, watch::Sender<bool>>,
    /// The scheduler's concurrency and fair-share figures (written by it once a second).
    pub sched: std::sync::Mutex<SchedView>,
}

/// The scheduler's concurrency and fair-share figures, for `GET /api/quotas` and `ps`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SchedView {
    /// The ordering policy.
    pub policy: String,
    /// The concurrency limit in force.
    pub limit: usize,
    /// The configured `max_concurrency`.
    pub max: usize,
    /// Why the limit is what it is.
    pub reason: String,
    /// Tasks running now.
    pub running: usize,
    /// Fair-share flows: tokens served and weight.
    pub shares: Vec<FlowShare>,
}

/// One fair-share flow.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowShare {
    /// Agent or workflow.
    pub flow: String,
    /// Its weight.
    pub weight: f64,
    /// Tokens served so far.
    pub tokens: u64,
}

impl Default for Board {
    fn default() -> Self {
        Self::new(std::iter::empty::<&str>())
    }
}

impl Board {
    /// A board with a suspend switch (off) for each of `agents`.
    pub fn new<'a>(agents: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            agents: DashMap::new(),
            pager: SharedStats::default(),
            done: watch::channel(false).0,
            sched: std::sync::Mutex::default(),
            fatal: watch::channel(None).0,
            suspended: agents
                .into_iter()
                .map(|a| (a.to_owned(), watch::channel(false).0))
                .collect(),
        }
    }

    /// A receiver of `agent`'s suspend switch (one that never turns on for an unknown agent).
    pub fn suspend_switch(&self, agent: &str) -> watch::Receiver<bool> {
        match self.suspended.get(agent) {
            Some(tx) => tx.subscribe(),
            None => watch::channel(false).1,
        }
    }

    /// Control blocks of `agent`'s instances, by replica.
    pub fn control_blocks_of(&self, agent: &str) -> Vec<ControlBlock> {
        let mut out: Vec<ControlBlock> = self
            .agents
            .iter()
            .filter(|e| &*e.key().agent == agent)
            .map(|e| e.value().clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
    /// Snapshot of every control block, sorted by instance.
    pub fn control_blocks(&self) -> Vec<ControlBlock> {
        let mut out: Vec<ControlBlock> = self.agents.iter().map(|e| e.value().clone()).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Snapshot of the paging statistics.
    pub fn pager_stats(
        &self,
    ) -> std::collections::BTreeMap<String, agentos_runtime::context::AgentStats> {
        // The pager's worker holds this lock only to copy in new figures; a poisoned lock still
        // holds the last complete figures.
        self.pager.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Updates `instance`'s control block in place (its owner only), if it is on the board.
    pub fn update(&self, instance: &InstanceId, f: impl FnOnce(&mut ControlBlock)) {
        if let Some(mut cb) = self.agents.get_mut(instance) {
            f(&mut cb);
        }
    }
}
