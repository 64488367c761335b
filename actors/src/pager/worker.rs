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
//! from what the store holds; so does a batch that SQLite rolls back on its own while it runs
//! (a full disk, an I/O error), except that the failing job keeps its own error.

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
type Job = Box<dyn FnOnce(&mut Option<Core>) -> Ran + Send>;

/// What a job did: whether it succeeded (a failed job's reply carries its own error), and its
/// reply.
struct Ran {
    ok: bool,
    reply: Reply,
}

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
    let mut replies: Vec<Ran> = Vec::with_capacity(batch.len());
    for job in batch {
        match std::panic::catch_unwind(AssertUnwindSafe(|| job(core))) {
            Ok(ran) => {
                replies.push(ran);
                let rolled_back = in_batch
                    && core
                        .as_ref()
                        .is_some_and(|c| !c.swap().store().in_transaction());
                if rolled_back {
                    StoreCommitFailed {
                        writer: StoreWriter::Pager,
                    }
                    .emit();
                    tracing::error!(
                        "the store rolled back a pager batch; rebuilding the pager from the store"
                    );
                    // The core remembers writes the store no longer has.
                    *core = None;
                    *core = build_core(cfg).ok();
                    for r in replies.drain(..) {
                        (r.reply)(r.ok.then(|| {
                            PagerFailure::Unavailable(
                                "the store rolled back the batch this request was in".into(),
                            )
                        }));
                    }
                    // Like after a panic, the rest of the batch runs without one.
                    in_batch = false;
                }
            }
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
                    for r in replies.drain(..) {
                        (r.reply)(lost());
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
    for r in replies {
        (r.reply)(failure.clone().map(|why| {
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
            Ran {
                ok: out.is_ok(),
                reply: Box::new(move |lost: Option<PagerFailure>| {
                    let _ = reply.send(match lost {
                        Some(failure) => Err(failure),
                        None => out,
                    });
                }),
            }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use agentos_runtime::context::{PagerError, PolicyKind};
    use agentos_runtime::store::Store;
    use agentos_runtime::tokenize::Encoding;

    use super::*;

    /// A worker on a fresh file whose pages table refuses page 1 of the context `bad` (the
    /// statement fails) and any page of `doomed` (SQLite rolls back the whole transaction, as
    /// on a full disk).
    async fn refusing_worker(dir: &Path) -> (Worker, WorkerConfig) {
        let settings = HashMap::from([(
            "a".to_owned(),
            ContextSettings {
                budget_tokens: 300,
                policy: PolicyKind::Lru,
                encoding: Encoding::O200kBase,
            },
        )]);
        let cfg = WorkerConfig {
            store_path: dir.join("store.db"),
            run_id: "r1".into(),
            settings,
            stats: SharedStats::default(),
        };
        let worker = Worker::start(cfg.clone()).unwrap();
        // Once a job ran, the store is open and migrated.
        worker.call(|_| Ok(())).await.unwrap();
        rusqlite::Connection::open(&cfg.store_path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON pages
                     WHEN NEW.context = 'bad' AND NEW.page_id = 1
                     BEGIN SELECT RAISE(ABORT, 'refused'); END;
                 CREATE TRIGGER doom BEFORE INSERT ON pages WHEN NEW.context = 'doomed'
                     BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
            )
            .unwrap();
        (worker, cfg)
    }

    /// Holds the worker's thread until the returned sender is used, so that the jobs queued
    /// meanwhile run as one batch.
    fn hold(worker: &Worker) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        // Queued now; its answer is not needed.
        drop(worker.call(move |_| {
            let _ = started.send(());
            let _ = held.recv();
            Ok(())
        }));
        running
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the worker never ran the holding job");
        release
    }

    /// Opens `context` (two pages: the system prompt and the task).
    fn open(
        worker: &Worker,
        context: &'static str,
    ) -> impl Future<Output = Result<(), PagerFailure>> {
        worker.call(move |p| p.open("a", context, "sys", "task", &[]).map(|_| ()))
    }

    fn stored_pages(cfg: &WorkerConfig, context: &str) -> usize {
        let store = Store::open(&cfg.store_path).unwrap();
        store.load_context(&cfg.run_id, context).unwrap().len()
    }

    #[actix_rt::test]
    async fn a_failing_job_in_a_batch_leaves_none_of_its_rows_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, cfg) = refusing_worker(dir.path()).await;
        let release = hold(&worker);
        let before = open(&worker, "w/before#1");
        let bad = open(&worker, "bad");
        let after = open(&worker, "w/after#1");
        release.send(()).unwrap();
        before.await.unwrap();
        let bad = bad.await;
        assert!(
            matches!(&bad, Err(PagerFailure::Pager(PagerError::Store(_)))),
            "{bad:?}"
        );
        after.await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/before#1"), 2);
        assert_eq!(stored_pages(&cfg, "bad"), 0, "the first page went too");
        assert_eq!(stored_pages(&cfg, "w/after#1"), 2);
    }

    #[actix_rt::test]
    async fn a_batch_the_store_rolls_back_fails_the_requests_in_it_and_the_rest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, cfg) = refusing_worker(dir.path()).await;
        let release = hold(&worker);
        let before = open(&worker, "w/before#1");
        let doomed = open(&worker, "doomed");
        let after = open(&worker, "w/after#1");
        let last = open(&worker, "w/last#1");
        release.send(()).unwrap();
        let before = before.await;
        assert!(
            matches!(&before, Err(PagerFailure::Unavailable(m)) if m.contains("rolled back")),
            "an open rolled back with its batch is not acknowledged: {before:?}"
        );
        let doomed = doomed.await;
        assert!(
            matches!(&doomed, Err(PagerFailure::Pager(PagerError::Store(_)))),
            "{doomed:?}"
        );
        after.await.unwrap();
        last.await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/before#1"), 0);
        assert_eq!(stored_pages(&cfg, "doomed"), 0);
        assert_eq!(stored_pages(&cfg, "w/after#1"), 2);
        assert_eq!(stored_pages(&cfg, "w/last#1"), 2);
        // The pager forgot what the store lost: the context opens again, from scratch.
        open(&worker, "w/before#1").await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/before#1"), 2);
    }
}
