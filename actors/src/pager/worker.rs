//! The pager's worker thread: it owns the [`Pager`] core and its store connection, so swap I/O
//! never runs on the arbiter thread. The actor sends closures; each reply comes back on a
//! oneshot channel.
//!
//! A panic inside a job is caught: the core is rebuilt with empty memory over a fresh store
//! connection (page tables come back from the store on first use), and the caller gets a
//! retryable [`PagerFailure::Unavailable`].

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use agentos_runtime::context::{ContextSettings, Pager, SharedStats, StoreSwap};
use agentos_runtime::store::Store;
use tokio::sync::{mpsc, oneshot};

use super::messages::PagerFailure;

/// Jobs waiting for the worker at most. Callers beyond that wait for room, in FIFO order
/// (backpressure): a fleet larger than the queue slows down instead of failing attempts.
pub const QUEUE_CAPACITY: usize = 4096;

type Core = Pager<StoreSwap>;
type Job = Box<dyn FnOnce(&mut Option<Core>) + Send>;

/// What the worker needs to (re)build its core.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The store file.
    pub store_path: PathBuf,
    /// This run's id (key of every row).
    pub run_id: String,
    /// Per-agent settings.
    pub settings: HashMap<String, ContextSettings>,
    /// Statistics shared with reporters.
    pub stats: SharedStats,
}

fn build_core(cfg: &WorkerConfig) -> Result<Core, String> {
    let store = Store::open(&cfg.store_path).map_err(|e| e.to_string())?;
    let swap = StoreSwap::new(store, cfg.run_id.clone()).map_err(|e| e.to_string())?;
    Ok(Pager::new(swap, cfg.settings.clone(), cfg.stats.clone()))
}

/// Handle to the worker thread; dropping it ends the thread once queued jobs are done.
#[derive(Debug, Clone)]
pub struct Worker {
    tx: mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread. The core is built on it (opening the store is I/O too).
    pub fn start(cfg: WorkerConfig) -> std::io::Result<Worker> {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("agentos-pager".into())
            .spawn(move || {
                let mut core = match build_core(&cfg) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "context pager cannot open the store");
                        None
                    }
                };
                while let Some(job) = rx.blocking_recv() {
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut core))).is_err() {
                        tracing::error!(
                            "context pager job panicked; rebuilding the pager from the store"
                        );
                        core = build_core(&cfg).ok();
                    }
                }
            })?;
        Ok(Worker { tx })
    }

    /// Runs `f` on the core and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, PagerFailure>
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> Result<T, agentos_runtime::context::PagerError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |core: &mut Option<Core>| {
            let out = match core.as_mut() {
                Some(c) => f(c).map_err(PagerFailure::Pager),
                None => Err(PagerFailure::Unavailable(
                    "the store could not be opened".into(),
                )),
            };
            let _ = reply.send(out);
        });
        if self.tx.send(job).await.is_err() {
            return Err(PagerFailure::Unavailable(
                "the worker thread is gone".into(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(PagerFailure::Unavailable(
                "the request failed inside the pager (internal error)".into(),
            ))
        })
    }
}
