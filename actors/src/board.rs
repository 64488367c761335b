//! The board: what the running system publishes for many readers (the HTTP API, the run
//! summary, benchmarks), each entry written only by its owner.
//!
//! - `agents`: every agent instance's control block. Each agent writes its own entry (it
//!   inserts it when it starts and updates it as it works); nobody else writes there.
//! - `pager`: paging statistics by agent, written by the context pager's worker only.
//! - `done` / `fatal`: the run's end signals, sent by the scheduler (every task terminal) and
//!   by the root supervisor (it gave up).
//!
//! A reader takes a snapshot; it never holds a lock that an owner waits on for long.

use agentos_runtime::context::SharedStats;
use agentos_runtime::model::{ControlBlock, InstanceId};
use dashmap::DashMap;
use tokio::sync::watch;

/// Published state of one running system.
#[derive(Debug)]
pub struct Board {
    /// Control block of every agent instance, by instance; each agent writes its own entry.
    pub agents: DashMap<InstanceId, ControlBlock>,
    /// Paging statistics by agent (written by the context pager).
    pub pager: SharedStats,
    /// Becomes `true` when every task reached a terminal state.
    pub done: watch::Sender<bool>,
    /// Set when the root supervisor gave up.
    pub fatal: watch::Sender<Option<String>>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            agents: DashMap::new(),
            pager: SharedStats::default(),
            done: watch::channel(false).0,
            fatal: watch::channel(None).0,
        }
    }
}

impl Board {
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
