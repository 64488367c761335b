//! The pager's worker thread: it owns the [`Pager`] core and its store connection, so swap I/O
//! never runs on the arbiter thread. The actor sends closures; each reply comes back on a
//! oneshot channel.
//!
//! **Group commit**: the worker takes every job already queued (up to [`MAX_BATCH`]) and runs
//! them inside one store transaction; each job's writes stay all-or-nothing on their own (a
//! savepoint), and replies go out only after the batch commits, so an acknowledged page is
//! always stored. Under load this turns many small WAL commits into one.
//!
//! **Order**: a job is queued when [`Worker::call`] is called, not when its future is first
//! polled, so requests the actor handles one after another reach the core in that order
//! (the step journal relies on it: a tool result joins the group of the reply recorded just
//! before it). Only when the queue is full does a job wait for room, in FIFO order.
//!
//! Every batch that wrote rows emits [`StoreCommitted`] once it is committed (or
//! [`StoreCommitFailed`]); a lone job's writes commit on their own and count as one commit.
//!
//! A panic inside a job is caught: the core is rebuilt with empty memory over a fresh store
//! connection (page tables come back from the store on first use), the jobs of the batch run
//! so far lose their uncommitted writes and fail as retryable, and so does the caller of the
//! panicking job. A batch that cannot commit fails the same way, after the core is rebuilt
//! from what the store holds.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use agentos_runtime::context::{ContextSettings, Pager, SharedStats, StoreSwap};
use agentos_runtime::events::{StoreCommitFailed, StoreCommitted, StoreWriter};
use agentos_runtime::store::Store;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use agentos_runtime::agent::PromptError as PagerFailure;

/// Jobs waiting for the worker at most. Callers beyond that wait for room, in FIFO order
/// (backpressure): a fleet larger than the queue slows down instead of failing attempts.
pub const QUEUE_CAPACITY: usize = 4096;

/// Most jobs committed in one store transaction.
pub const MAX_BATCH: usize = 256;

type Core = Pager<StoreSwap>;
/// A job's reply, sent once its batch is committed: `None` sends the job's own result,
/// `Some(failure)` replaces it (the batch was lost).
type Reply = Box<dyn FnOnce(Option<PagerFailure>) + Send>;
type Job = Box<dyn FnOnce(&mut Option<Core>) -> Reply + Send>;

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

/// Runs `batch` in one store transaction and answers every job once it is committed.
fn run_batch(cfg: &WorkerConfig, core: &mut Option<Core>, batch: Vec<Job>) {
    let started = Instant::now();
    if let Some(c) = core.as_mut() {
        // Rows a failed earlier batch left uncounted are not this batch's.
        c.swap_mut().take_rows_written();
    }
    // A lone job needs no batch: its writes commit on their own.
    let mut in_batch = match core.as_mut() {
        Some(c) if batch.len() > 1 => c.swap_mut().store_mut().begin_batch().is_ok(),
        _ => false,
    };
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    for job in batch {
        match std::panic::catch_unwind(AssertUnwindSafe(|| job(core))) {
            Ok(reply) => replies.push(reply),
            Err(_) => {
                tracing::error!("context pager job panicked; rebuilding the pager from the store");
                // The fresh connection drops the batch's uncommitted writes: the jobs answered
                // so far in it fail too. The rest of the batch runs without one.
                // Close the old connection first: it may hold the batch's write lock.
                *core = None;
                *core = build_core(cfg).ok();
                let lost = || {
                    Some(PagerFailure::Unavailable(
                        "the pager restarted before this request was stored".into(),
                    ))
                };
                if in_batch {
                    for reply in replies.drain(..) {
                        reply(lost());
                    }
                }
                in_batch = false;
            }
        }
    }
    let failure = if in_batch {
        match core
            .as_mut()
            .map(|c| c.swap_mut().store_mut().commit_batch())
        {
            Some(Err(e)) => {
                StoreCommitFailed {
                    writer: StoreWriter::Pager,
                }
                .emit();
                tracing::error!(error = %e, "context pager cannot commit; rebuilding from the store");
                // Close the old connection first: it may hold the batch's write lock.
                *core = None;
                *core = build_core(cfg).ok();
                Some(e.to_string())
            }
            _ => None,
        }
    } else {
        None
    };
    if failure.is_none() {
        let rows = core
            .as_mut()
            .map_or(0, |c| c.swap_mut().take_rows_written());
        if rows > 0 {
            StoreCommitted {
                writer: StoreWriter::Pager,
                rows,
                duration: started.elapsed(),
            }
            .emit();
        }
    }
    for reply in replies {
        reply(failure.clone().map(|why| {
            PagerFailure::Unavailable(format!("the store did not commit this request: {why}"))
        }));
    }
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
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(&cfg, &mut core, batch);
                }
            })?;
        Ok(Worker { tx })
    }

    /// Queues `f` now (see the module docs on order) and returns a future of its result,
    /// answered once its writes are committed.
    pub fn call<T, F>(&self, f: F) -> impl Future<Output = Result<T, PagerFailure>> + Send + 'static
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
            Box::new(move |lost: Option<PagerFailure>| {
                let _ = reply.send(match lost {
                    Some(failure) => Err(failure),
                    None => out,
                });
            })
        });
        // Queued now when there is room; else it waits for room, in FIFO order.
        let waiting = match self.tx.try_send(job) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(job)) => Ok(Some((self.tx.clone(), job))),
            Err(TrySendError::Closed(_)) => Err(()),
        };
        async move {
            let gone = || PagerFailure::Unavailable("the worker thread is gone".into());
            match waiting {
                Err(()) => return Err(gone()),
                Ok(Some((tx, job))) => tx.send(job).await.map_err(|_| gone())?,
                Ok(None) => {}
            }
            rx.await.unwrap_or_else(|_| {
                Err(PagerFailure::Unavailable(
                    "the request failed inside the pager (internal error)".into(),
                ))
            })
        }
    }
}
