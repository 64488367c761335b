//! [`RunningSystem`]: a booted system to wait on, query and shut down.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_runtime::config::Config;
use agentos_runtime::events::system::RunStopped;
use agentos_runtime::kvcache::BackendStats;
use agentos_runtime::trace::Trace;
use anyhow::Context as _;

use super::tree::SystemPorts;
use crate::board::Board;
use crate::protocol::{
    CancelAll, Drain, FlushState, GetKvStats, GetSnapshot, RunSnapshot, TrackUpperBound,
};
use crate::supervisor::{StopTree, Supervisor};
use agentos_runtime::durable::Durability;
use agentos_runtime::store::{RunStatus, Store};

/// A booted system.
pub struct RunningSystem {
    /// The config it runs.
    pub cfg: Arc<Config>,
    /// What the system publishes: control blocks, pager statistics, end signals.
    pub board: Arc<Board>,
    /// The root supervisor.
    pub root: Addr<Supervisor>,
    /// Every actor's ports.
    pub ports: SystemPorts,
    /// The trace.
    pub trace: Trace,
    /// This run's folder under the data directory.
    pub run_dir: PathBuf,
    /// Names of backends that are simulators.
    pub simulated_backends: Vec<String>,
    /// Restarts performed by the agent supervisor.
    pub agent_restarts: Arc<AtomicU64>,
    /// Whether the KV pool tracks the unbounded-cache upper bound.
    pub(super) kv_upper_bound: Arc<AtomicBool>,
    /// The store file (`<data_dir>/store.db`).
    pub store_path: PathBuf,
    /// The store thread every writer of the run shares.
    pub(crate) store: crate::pager::Worker,
    /// This run's id: the key of its rows in the store (the run folder's name).
    pub run_id: String,
    /// The worker arbiters the agents run on.
    pub(super) arbiters: Vec<Arbiter>,
    /// Set when this system continues a run that did not finish (`--resume`, or `serve` on a
    /// data directory with an unfinished run of the same config).
    pub resume: Option<ResumeInfo>,
    /// The quota gate, when the config limits, prices or counts LLM calls.
    pub quotas: Option<Arc<crate::quota::QuotaGate>>,
    /// The run's lock file, held for as long as this system runs the run.
    pub(super) _run_lock: std::fs::File,
}

/// Which run a system resumed and from where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResumeInfo {
    /// The run continued.
    pub run_id: String,
    /// How many times it has been resumed, this time included.
    pub resumes: u32,
    /// Tasks that had already succeeded (never run again).
    pub tasks_succeeded: usize,
    /// Tasks whose attempt was running at the crash and continues from its journal.
    pub attempts_continued: usize,
    /// Tasks not started yet or waiting for a retry.
    pub tasks_waiting: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task reached a terminal state.
    Completed,
    /// Shut down by a signal; unfinished tasks were cancelled.
    Interrupted,
    /// The root supervisor gave up.
    Fatal(String),
}

/// How long a query of a system actor may take before it counts as unanswered.
const ASK: Duration = Duration::from_secs(5);

impl RunningSystem {
    /// Waits until every task is terminal, the root gives up, or `interrupt` resolves.
    pub async fn wait(&self, interrupt: impl std::future::Future<Output = ()>) -> RunEnd {
        let mut done = self.board.done.subscribe();
        let mut fatal = self.board.fatal.subscribe();
        tokio::select! {
            _ = done.wait_for(|d| *d) => RunEnd::Completed,
            f = fatal.wait_for(|f| f.is_some()) => RunEnd::Fatal(
                f.ok().and_then(|f| f.clone()).unwrap_or_else(|| "root supervisor gave up".into())),
            _ = interrupt => RunEnd::Interrupted,
        }
    }

    /// A snapshot of every task.
    pub async fn snapshot(&self) -> anyhow::Result<RunSnapshot> {
        self.ports
            .scheduler
            .snapshot
            .ask(GetSnapshot, ASK)
            .await
            .context("the scheduler did not answer")
    }

    /// The KV-cache pool's figures for every backend, by name (empty if the pool does not
    /// answer within five seconds).
    pub async fn kv_stats(&self) -> BTreeMap<String, BackendStats> {
        let mut out = BTreeMap::new();
        for b in &self.cfg.backends {
            let ask = GetKvStats {
                backend: b.name.clone(),
            };
            if let Ok(Some(stats)) = self.ports.kv.stats.ask(ask, ASK).await {
                out.insert(b.name.clone(), stats);
            }
        }
        out
    }

    /// Makes the KV pool (this incarnation and every later one) track the unbounded-cache
    /// upper bound. Called right after boot, before the actors start, it sees every prompt.
    pub fn track_kv_upper_bound(&self) {
        self.kv_upper_bound.store(true, Ordering::Relaxed);
        self.ports.kv.track.tell(TrackUpperBound);
    }

    /// Graceful shutdown: stop dispatching, give running attempts up to `grace` to finish, then
    /// cancel whatever is left (with `reason`) so every task ends in a terminal state.
    pub async fn drain(&self, grace: Duration, reason: &str) {
        self.pause(grace).await;
        let cancel = CancelAll {
            reason: reason.to_owned(),
        };
        let _ = self
            .ports
            .scheduler
            .cancel_all
            .ask(cancel, Duration::from_secs(2))
            .await;
    }

    /// Graceful stop that keeps the rest for a resume: stop dispatching and give running
    /// attempts up to `grace` to finish. Unfinished tasks stay as they are, in the store.
    pub async fn pause(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let running = self
                .ports
                .scheduler
                .drain
                .ask(Drain, Duration::from_secs(2))
                .await
                .unwrap_or(0);
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of this process's part of the run: stores what the scheduler has not stored
    /// yet (everything under `durability: exit`) and marks the run finished (every task
    /// terminal) or interrupted (resumable).
    pub async fn finish(&self) -> anyhow::Result<()> {
        self.ports
            .scheduler
            .flush
            .ask(FlushState, Duration::from_secs(30))
            .await
            .context("the scheduler did not answer")?
            .map_err(|e| anyhow::anyhow!(e))
            .context("the scheduler's state was not stored")?;
        let done = *self.board.done.borrow();
        let (path, run) = (self.store_path.clone(), self.run_id.clone());
        let exit_mode = self.cfg.runtime.durability == Durability::Exit;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let store = Store::open(&path)?;
            let status = if done {
                RunStatus::Finished
            } else {
                RunStatus::Interrupted
            };
            store.set_run_status(&run, status, crate::scheduler::unix_ms())?;
            if exit_mode {
                store.set_checkpointed(&run, true)?;
            }
            Ok(())
        })
        .await
        .context("the store thread panicked")?
    }

    /// Stops the actor tree (children in reverse start order, each within its shutdown
    /// timeout), the worker arbiters, and flushes the trace.
    pub async fn stop(&self) {
        // The barrier answers once the tree is down; the bound covers a root that is gone.
        let _ = tokio::time::timeout(Duration::from_secs(60), self.root.send(StopTree)).await;
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        // What the stopping tree wrote after `finish` (closed contexts, the last records under
        // `async`) commits before the process may exit.
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), self.store.flush()).await
        {
            tracing::warn!(error = %e, "the store's last writes were not committed");
        }
        RunStopped.emit(&self.trace);
        if let Err(e) = self.trace.close() {
            tracing::error!(error = %e, "trace file could not be written completely");
        }
    }
}
