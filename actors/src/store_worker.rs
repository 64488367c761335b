//! [`StoreWorker`]: where a writer's store jobs run, group-committing whatever is queued
//! together: on the pager's worker, which the system shares between every writer of a run
//! ([`StoreWorker::on`]), or on a thread of its own with its own connection
//! ([`StoreWorker::start`]).
//!
//! The scheduler (its state rows and audit entries) and the bus (its inboxes) each hold one,
//! so their SQLite I/O never runs on an arbiter thread. Jobs queued while a batch runs go
//! into the next one: under load many small commits become one WAL commit. Every job's writes
//! stay all or nothing on their own (the store makes each write atomic); a reply goes out
//! only once its batch is committed, so an acknowledged write is stored.
//!
//! Some failures (a full disk, an I/O error) make SQLite roll back the whole batch, not just
//! the failing write. The jobs run in it so far then fail as lost, and the rest of the queue
//! goes on in a new batch, so no job is told its write failed when it was stored, or the
//! other way round.
//!
//! The queue is unbounded on purpose: its callers are actors that must not block, and what
//! they send is bounded by the work the system does (one batch of rows per scheduler pump).

use std::path::PathBuf;
use std::time::Instant;

use agentos_runtime::events::durability::{StoreCommitFailed, StoreCommitted, StoreWriter};
use agentos_runtime::store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::pager::worker::Commit;
use crate::pager::Worker;

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// A job's answer, sent once its batch is committed (or failed).
pub type Ack<T> = oneshot::Receiver<Result<T, String>>;

type Reply = Box<dyn FnOnce(Option<String>) + Send>;
/// A job runs on the store and answers its row count, whether it succeeded, and its reply.
type Job = Box<dyn FnOnce(&mut Store) -> Ran + Send>;

/// What a job did.
struct Ran {
    /// Rows it wrote, for the batch-size figures.
    rows: usize,
    /// Whether it succeeded (a failed job's reply carries its own error).
    ok: bool,
    reply: Reply,
}

/// Handle to a store thread; the thread ends when every handle is dropped and the queue is
/// done.
#[derive(Debug, Clone)]
pub struct StoreWorker {
    thread: Thread,
}

#[derive(Debug, Clone)]
enum Thread {
    /// A thread of its own.
    Own(mpsc::UnboundedSender<Job>),
    /// The pager's worker, for `writer`.
    Shared(Worker, StoreWriter),
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
        Ok(StoreWorker {
            thread: Thread::Own(tx),
        })
    }

    /// Runs `writer`'s jobs on `worker`'s thread and connection, batched with the jobs of
    /// every other writer queued there.
    pub fn on(worker: &Worker, writer: StoreWriter) -> StoreWorker {
        StoreWorker {
            thread: Thread::Shared(worker.clone(), writer),
        }
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
        self.run_as(Commit::Before, rows, f, lost)
    }

    /// [`StoreWorker::run_or`], answered as soon as the job has run when it shares a worker
    /// that lingers; its commit comes within the linger, and `lost` still runs if it does
    /// not. [`StoreWorker::flush`] waits for that commit.
    pub fn run_early<T, F, L>(&self, rows: usize, f: F, lost: L) -> Ack<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        L: FnOnce() + Send + 'static,
    {
        self.run_as(Commit::Early, rows, f, lost)
    }

    /// Answers once everything queued before it is committed (or failed to be).
    pub fn flush(&self) -> Ack<()> {
        self.run(0, |_| Ok(()))
    }

    fn run_as<T, F, L>(&self, commit: Commit, rows: usize, f: F, lost: L) -> Ack<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        L: FnOnce() + Send + 'static,
    {
        let tx = match &self.thread {
            Thread::Own(tx) => tx,
            Thread::Shared(worker, writer) => {
                return worker.call_store(*writer, commit, (rows, f), lost)
            }
        };
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |store: &mut Store| {
            let out = f(store).map_err(|e| e.to_string());
            let ok = out.is_ok();
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
            Ran { rows, ok, reply }
        });
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
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
    let mut left = batch.len();
    let mut in_batch = left > 1 && store.begin_batch().is_ok();
    let mut ran: Vec<Ran> = Vec::with_capacity(batch.len());
    for job in batch {
        left -= 1;
        ran.push(job(store));
        if in_batch && !store.in_transaction() {
            // SQLite rolled the whole batch back (a full disk, an I/O error): every job run in
            // it so far lost its writes. The failing one keeps its own error.
            tracing::error!(
                ?writer,
                "the store rolled back a batch; its writes are lost"
            );
            StoreCommitFailed { writer }.emit();
            for r in ran.drain(..) {
                let lost =
                    r.ok.then(|| "the store rolled back the batch this write was in".to_owned());
                (r.reply)(lost);
            }
            in_batch = left > 1 && store.begin_batch().is_ok();
        }
    }
    let lost = if in_batch {
        store.commit_batch().err().map(|e| e.to_string())
    } else {
        None
    };
    match &lost {
        // Every job was answered already (their batch was rolled back).
        None if ran.is_empty() => {}
        None => StoreCommitted {
            writer,
            rows: ran.iter().map(|r| r.rows).sum(),
            duration: t0.elapsed(),
        }
        .emit(),
        Some(why) => {
            tracing::error!(error = %why, ?writer, "store batch did not commit");
            StoreCommitFailed { writer }.emit();
        }
    }
    for r in ran {
        (r.reply)(lost.clone());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use agentos_runtime::store::{AuditRow, StateBatch};

    use super::*;

    /// A batch of one audit entry of `kind`.
    pub(crate) fn audit(kind: &str) -> StateBatch {
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

    fn audit_rows(kinds: &[&str]) -> StateBatch {
        let mut batch = StateBatch::default();
        for k in kinds {
            batch.extend(audit(k));
        }
        batch
    }

    /// Starts a worker on a fresh file whose audit table refuses the kinds `refused` (the
    /// statement fails) and `doom` (SQLite rolls back the whole transaction, as on a full
    /// disk).
    fn refusing_worker(dir: &std::path::Path) -> (StoreWorker, std::path::PathBuf) {
        let path = dir.join("store.db");
        let worker = StoreWorker::start("test", path.clone(), StoreWriter::Scheduler).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit WHEN NEW.kind = 'refused'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER doom BEFORE INSERT ON audit WHEN NEW.kind = 'doom'
                 BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
        )
        .unwrap();
        (worker, path)
    }

    /// Holds the worker's thread until the returned sender is used, so that the jobs queued
    /// meanwhile run as one batch.
    fn hold(worker: &StoreWorker) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        drop(worker.run(0, move |_| {
            let _ = started.send(());
            let _ = held.recv();
            Ok(())
        }));
        running
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the store thread never ran the holding job");
        release
    }

    fn stored_kinds(path: &std::path::Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT kind FROM audit ORDER BY id").unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    #[actix_rt::test]
    async fn a_failing_job_in_a_batch_leaves_none_of_its_rows_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, path) = refusing_worker(dir.path());
        let release = hold(&worker);
        let write = |kinds: &[&str]| {
            let batch = audit_rows(kinds);
            worker.run(batch.len(), move |db| db.write_state("r", &batch))
        };
        let a = write(&["a"]);
        let b = write(&["b", "refused"]);
        let c = write(&["c"]);
        release.send(()).unwrap();
        assert!(a.await.unwrap().is_ok());
        assert!(b.await.unwrap().unwrap_err().contains("refused"));
        assert!(c.await.unwrap().is_ok());
        assert_eq!(stored_kinds(&path), ["a", "c"]);
    }

    #[actix_rt::test]
    async fn a_batch_the_store_rolls_back_fails_the_jobs_in_it_and_the_rest_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, path) = refusing_worker(dir.path());
        let lost = Arc::new(AtomicUsize::new(0));
        let release = hold(&worker);
        let write = |kind: &'static str| {
            let batch = audit(kind);
            let lost = lost.clone();
            worker.run_or(
                1,
                move |db| db.write_state("r", &batch),
                move || {
                    lost.fetch_add(1, Ordering::SeqCst);
                },
            )
        };
        let a = write("a");
        let doomed = write("doom");
        let c = write("c");
        let d = write("d");
        release.send(()).unwrap();
        let a = a.await.unwrap();
        assert!(
            a.as_ref().is_err_and(|e| e.contains("rolled back")),
            "a write rolled back with its batch is not acknowledged: {a:?}"
        );
        assert!(doomed.await.unwrap().unwrap_err().contains("disk full"));
        assert!(c.await.unwrap().is_ok());
        assert!(d.await.unwrap().is_ok());
        assert_eq!(lost.load(Ordering::SeqCst), 2);
        assert_eq!(stored_kinds(&path), ["c", "d"]);
    }
}
