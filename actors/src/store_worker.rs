//! [`StoreWorker`]: a thread that owns one store connection and runs the jobs sent to it,
//! group-committing whatever is queued together.
//!
//! The scheduler (its state rows and audit entries) and the bus (its inboxes) each own one,
//! so their SQLite I/O never runs on an arbiter thread. Jobs queued while a batch runs go
//! into the next one: under load many small commits become one WAL commit. Every job's writes
//! stay all or nothing on their own (the store writes each in a savepoint); a reply goes out
//! only once its batch is committed, so an acknowledged write is stored.
//!
//! The queue is unbounded on purpose: its callers are actors that must not block, and what
//! they send is bounded by the work the system does (one batch of rows per scheduler pump).

use std::path::PathBuf;
use std::time::Instant;

use agentos_runtime::events::durability::{StoreCommitFailed, StoreCommitted, StoreWriter};
use agentos_runtime::store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A job's answer, sent once its batch is committed (or failed).
pub type Ack<T> = oneshot::Receiver<Result<T, String>>;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
type Job = Box<dyn FnOnce(&mut Store) -> (usize, Reply) + Send>;

/// Handle to a store thread; the thread ends when every handle is dropped and the queue is
/// done.
#[derive(Debug, Clone)]
pub struct StoreWorker {
    tx: mpsc::UnboundedSender<Job>,
}

impl StoreWorker {
    /// Opens the store at `path` on a new thread named `agentos-<name>`.
    pub fn start(name: &str, path: PathBuf, writer: StoreWriter) -> Result<StoreWorker, String> {
        let store = Store::open(&path).map_err(|e| e.to_string())?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name(format!("agentos-{name}"))
            .spawn(move || {
                let mut store = store;
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(&mut store, batch, writer);
                }
            })
            .map_err(|e| format!("cannot start the {name} store thread: {e}"))?;
        Ok(StoreWorker { tx })
    }

    /// Runs `f` on the store; the answer comes once its batch is committed. `rows` is what
    /// the job writes, for the batch-size figures.
    pub fn run<T, F>(&self, rows: usize, f: F) -> Ack<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |store: &mut Store| {
            let out = f(store).map_err(|e| e.to_string());
            let reply: Reply = Box::new(move |lost: Option<String>| {
                let _ = reply.send(match lost {
                    Some(why) => Err(why),
                    None => out,
                });
            });
            (rows, reply)
        });
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            // The thread is gone: answer at once.
            drop(job);
            let (reply, rx) = oneshot::channel();
            let _ = reply.send(Err("the store thread is gone".into()));
            return rx;
        }
        rx
    }
}

fn run_batch(store: &mut Store, batch: Vec<Job>, writer: StoreWriter) {
    let t0 = Instant::now();
    let in_batch = batch.len() > 1 && store.begin_batch().is_ok();
    let mut replies = Vec::with_capacity(batch.len());
    let mut rows = 0;
    for job in batch {
        let (n, reply) = job(store);
        rows += n;
        replies.push(reply);
    }
    let lost = if in_batch {
        store.commit_batch().err().map(|e| e.to_string())
    } else {
        None
    };
    match &lost {
        None => StoreCommitted {
            writer,
            rows,
            duration: t0.elapsed(),
        }
        .emit(),
        Some(why) => {
            tracing::error!(error = %why, ?writer, "store batch did not commit");
            StoreCommitFailed { writer }.emit();
        }
    }
    for reply in replies {
        reply(lost.clone());
    }
}
