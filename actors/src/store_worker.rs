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
        self.run_or(rows, f, || {})
    }

    /// [`StoreWorker::run`], calling `lost` on the store thread when the job's writes did not
    /// make it to the file (the job failed, or its batch did not commit), whether or not
    /// anyone waits for the answer.
    pub fn run_or<T, F, L>(&self, rows: usize, f: F, lost: L) -> Ack<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        L: FnOnce() + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |store: &mut Store| {
            let out = f(store).map_err(|e| e.to_string());
            let reply: Reply = Box::new(move |failed: Option<String>| {
                let out = match failed {
                    Some(why) => Err(why),
                    None => out,
                };
                if out.is_err() {
                    lost();
                }
                let _ = reply.send(out);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use agentos_runtime::store::{AuditRow, StateBatch};

    use super::*;

    fn audit(kind: &str) -> StateBatch {
        StateBatch {
            audit: vec![AuditRow {
                at_ms: 1,
                kind: kind.into(),
                actor: "test".into(),
                agent: None,
                instance: None,
                task: None,
                attempt: None,
                step: None,
                detail: "{}".into(),
            }],
            ..StateBatch::default()
        }
    }

    #[actix_rt::test]
    async fn a_lost_write_calls_its_hook_and_a_stored_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let worker = StoreWorker::start("test", path.clone(), StoreWriter::Scheduler).unwrap();
        let lost = Arc::new(AtomicUsize::new(0));
        let hook = |lost: &Arc<AtomicUsize>| {
            let lost = lost.clone();
            move || {
                lost.fetch_add(1, Ordering::SeqCst);
            }
        };
        let ok = audit("fine");
        let done = worker
            .run_or(1, move |db| db.write_state("r", &ok), hook(&lost))
            .await
            .unwrap();
        assert!(done.is_ok());
        assert_eq!(lost.load(Ordering::SeqCst), 0);
        // The disk refuses audit rows from now on.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'full'); END;",
        )
        .unwrap();
        let bad = audit("refused");
        let failed = worker
            .run_or(1, move |db| db.write_state("r", &bad), hook(&lost))
            .await
            .unwrap();
        assert!(failed.unwrap_err().contains("full"));
        assert_eq!(lost.load(Ordering::SeqCst), 1);
    }
}
