//! The pager's worker thread: it owns the [`Pager`] core and its store connection, so swap I/O
//! never runs on the arbiter thread. The actor sends closures; each reply comes back on a
//! oneshot channel.
//!
//! **The one writer**: the system boots one worker and every writer of the run uses its
//! connection: the pager's jobs, and the scheduler's and the bus's store jobs
//! ([`Worker::call_store`], behind a [`crate::store_worker::StoreWorker`]). One connection
//! means SQLite never drops its page cache because another connection wrote, and writes of
//! different writers queued together commit together. A pager restart keeps the thread and
//! rebuilds the core over a fresh connection ([`Worker::reset`]).
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
//! **Linger** ([`WorkerConfig::linger`]): a job that allows it ([`Commit`]: the scheduler's
//! rows, opening and closing a context in every mode; a step's build and records too under
//! `async` and `exit`) is answered as soon as it has run, and the transaction stays open for
//! the jobs of the next [`LINGER`], until a job that must wait for its commit (a step's build
//! under `sync`, a start marker, a flush) or the end of the linger commits it. A transaction
//! that then fails loses writes already answered, as a crash a moment earlier would; the
//! store jobs' lost hooks still run.
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

use std::sync::Arc;

use agentos_runtime::context::{ContextSettings, Pager, SharedStats, StoreSwap};
use agentos_runtime::events::{StoreCommitFailed, StoreCommitted, StoreWriter};
use agentos_runtime::store::{Store, StoreError};
use std::sync::mpsc::RecvTimeoutError;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use agentos_runtime::agent::PromptError as PagerFailure;

/// The pager's jobs waiting for the worker at most. Callers beyond that wait for room, in
/// FIFO order (backpressure): a fleet larger than the queue slows down instead of failing
/// attempts. Store jobs do not count: their callers are actors that must not wait, and what
/// they send is bounded by the work the system does (one batch of rows per scheduler pump).
pub const QUEUE_CAPACITY: usize = 4096;

/// Most jobs taken off the queue and run together (and so in one store transaction, unless
/// the worker lingers, when a transaction may hold several such batches).
pub const MAX_BATCH: usize = 256;

/// How long a transaction stays open for more work: what a crash can lose of the writes that
/// nothing waited for.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

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
    /// A store job's writer and the rows it wrote, for the commit figures (the pager's rows
    /// are counted by its swap).
    rows: Option<(StoreWriter, usize)>,
    /// When it may be answered under a linger.
    commit: Commit,
    /// Runs when the job's writes did not make it to the file (a store job's hook).
    lost: Option<LostHook>,
}

type LostHook = Box<dyn FnOnce() + Send>;

impl Ran {
    /// Answers the job: its own result, or `failed` when its writes were lost. The lost hook
    /// runs when the answer is an error.
    fn finish(self, failed: Option<PagerFailure>) {
        if !self.ok || failed.is_some() {
            if let Some(hook) = self.lost {
                hook();
            }
        }
        (self.reply)(failed);
    }

    /// Answers the job before its commit; returns the hook to run if the commit fails.
    fn answer_early(self) -> Option<LostHook> {
        let hook = if self.ok { self.lost } else { None };
        Ran { lost: None, ..self }.finish(None);
        hook
    }
}

/// A queued job, with the room it takes in the pager's queue (none for store jobs).
struct Queued {
    job: Job,
    room: Option<OwnedSemaphorePermit>,
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
    /// `None`: every transaction commits as soon as its batch has run, and every job is
    /// answered after its commit. `Some(d)` (the system's choice, every mode): a job that
    /// allows it ([`Commit`]) is answered as soon as it has run, and the transaction stays
    /// open for the jobs that come in the next `d`, until one of them must wait for its
    /// commit: fewer commits, and nothing waits for a commit it does not need.
    pub linger: Option<std::time::Duration>,
    /// Whether a step's own requests ([`Commit::Step`]) wait for their commit
    /// (`durability: sync`).
    pub steps_wait: bool,
}

impl Commit {
    /// Whether a job of this class is answered before its commit under `cfg`.
    fn early(self, cfg: &WorkerConfig) -> bool {
        cfg.linger.is_some()
            && match self {
                Commit::Early => true,
                Commit::Step => !cfg.steps_wait,
                Commit::Before => false,
            }
    }
}

/// When a job is answered under a linger ([`WorkerConfig::linger`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// As soon as it has run; its writes commit within the linger, or with the next job that
    /// waits for its commit (opening and closing a context, sharing a result, the
    /// scheduler's rows: a crash that loses them is one a moment earlier).
    Early,
    /// A step's build and records: once committed under `sync` ([`WorkerConfig::steps_wait`]),
    /// as soon as run under `async` and `exit`.
    Step,
    /// Once its writes are committed, in every mode (an at-most-once call's start marker, a
    /// write whose caller answers a client only once it is stored).
    Before,
}

fn build_core(cfg: &WorkerConfig) -> Result<Core, String> {
    let store = Store::open(&cfg.store_path).map_err(|e| e.to_string())?;
    let swap = StoreSwap::new(store, cfg.run_id.clone()).map_err(|e| e.to_string())?;
    Ok(Pager::new(swap, cfg.settings.clone(), cfg.stats.clone()))
}

/// The writers with a job in a transaction, and the rows of the store jobs among them.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    pager: bool,
    scheduler: Option<usize>,
    bus: Option<usize>,
}

impl Tally {
    fn add(&mut self, rows: Option<(StoreWriter, usize)>) {
        match rows {
            None | Some((StoreWriter::Pager, _)) => self.pager = true,
            Some((StoreWriter::Scheduler, n)) => *self.scheduler.get_or_insert(0) += n,
            Some((StoreWriter::Bus, n)) => *self.bus.get_or_insert(0) += n,
        }
    }

    /// The store writers with a job in it, and their rows.
    fn store_writers(&self) -> impl Iterator<Item = (StoreWriter, usize)> {
        [
            self.scheduler.map(|n| (StoreWriter::Scheduler, n)),
            self.bus.map(|n| (StoreWriter::Bus, n)),
        ]
        .into_iter()
        .flatten()
    }

    /// Counts a lost transaction once for each writer with a job in it.
    fn failed(&self) {
        if self.pager {
            StoreCommitFailed {
                writer: StoreWriter::Pager,
            }
            .emit();
        }
        for (writer, _) in self.store_writers() {
            StoreCommitFailed { writer }.emit();
        }
    }
}

/// The transaction the worker has open.
struct Open {
    since: Instant,
    /// Whether it is a store transaction (a lone job outside one commits on its own).
    in_batch: bool,
    /// Jobs run in it whose answers wait for its commit.
    waiting: Vec<Ran>,
    /// Jobs run in it that were answered before its commit (lingering only).
    answered: usize,
    /// The lost hooks of those jobs, run if the transaction does not commit.
    answered_lost: Vec<LostHook>,
    tally: Tally,
}

impl Open {
    /// The jobs answered before the commit lost their writes (`why`): says so, and runs
    /// their lost hooks.
    fn answered_are_lost(&mut self, why: &str) {
        if self.answered > 0 {
            tracing::warn!(
                jobs = self.answered,
                "writes answered before their commit are lost: {why}"
            );
            self.answered = 0;
        }
        for hook in self.answered_lost.drain(..) {
            hook();
        }
    }
}

/// The worker thread's state: the core (with the store connection), and the transaction
/// open across batches while the worker lingers.
struct State {
    cfg: WorkerConfig,
    core: Option<Core>,
    open: Option<Open>,
}

impl State {
    /// Whether this worker answers jobs before their commit and lingers on a transaction.
    fn lingering(&self) -> Option<std::time::Duration> {
        self.cfg.linger
    }

    /// Rebuilds the core over a fresh connection (the old one is closed first: it may hold
    /// the transaction's write lock), forgetting what the store no longer has.
    fn rebuild(&mut self) {
        self.core = None;
        self.core = build_core(&self.cfg).ok();
    }

    fn begin(&mut self, batch_len: usize) -> &mut Open {
        if let Some(c) = self.core.as_mut() {
            // Rows a failed earlier transaction left uncounted are not this one's.
            c.swap_mut().take_rows_written();
        }
        // A lone job needs no transaction (its writes commit on their own) unless the worker
        // lingers, when the transaction stays open for the jobs to come.
        let wanted = batch_len > 1 || self.lingering().is_some();
        let in_batch = match self.core.as_mut() {
            Some(c) if wanted => c.swap_mut().store_mut().begin_batch().is_ok(),
            _ => false,
        };
        self.open.insert(Open {
            since: Instant::now(),
            in_batch,
            waiting: Vec::new(),
            answered: 0,
            answered_lost: Vec::new(),
            tally: Tally::default(),
        })
    }

    /// Fails the open transaction's waiting jobs with `why`: its writes are gone.
    fn lose(&mut self, why: &str) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        open.answered_are_lost(why);
        for r in open.waiting.drain(..) {
            let failed = r.ok.then(|| PagerFailure::Unavailable(why.to_owned()));
            r.finish(failed);
        }
        open.in_batch = false;
    }

    /// Runs `batch` in the open transaction (one is begun if none is), then commits unless
    /// the worker lingers and nothing in it waits for the commit.
    fn run_batch(&mut self, batch: Vec<Job>) {
        if self.open.is_none() {
            self.begin(batch.len());
        }
        let linger = self.lingering();
        for job in batch {
            let core = &mut self.core;
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(core)));
            let open = self.open.as_mut().expect("a transaction is open");
            match ran {
                Ok(ran) => {
                    open.tally.add(ran.rows);
                    let rolled_back = open.in_batch
                        && self
                            .core
                            .as_ref()
                            .is_some_and(|c| !c.swap().store().in_transaction());
                    if rolled_back {
                        // SQLite rolled the whole transaction back (a full disk, an I/O
                        // error): the failing job keeps its own error, the others fail.
                        open.tally.failed();
                        tracing::error!(
                            "the store rolled back a transaction; rebuilding the pager from the store"
                        );
                        open.waiting.push(ran);
                        self.rebuild();
                        self.lose("the store rolled back the batch this request was in");
                        // Like after a panic, the rest of the batch runs without one.
                        continue;
                    }
                    if ran.commit.early(&self.cfg) {
                        open.answered_lost.extend(ran.answer_early());
                        open.answered += 1;
                    } else {
                        open.waiting.push(ran);
                    }
                }
                Err(_) => {
                    tracing::error!(
                        "context pager job panicked; rebuilding the pager from the store"
                    );
                    // The fresh connection drops the transaction's uncommitted writes: the
                    // jobs run in it so far fail too. The rest runs without one.
                    let in_batch = open.in_batch;
                    self.rebuild();
                    if in_batch {
                        self.lose("the pager restarted before this request was stored");
                    } else if let Some(open) = self.open.as_mut() {
                        // Outside a transaction, each write is committed already.
                        for r in open.waiting.drain(..) {
                            r.finish(None);
                        }
                    }
                }
            }
        }
        let open = self.open.as_ref().expect("a transaction is open");
        let keep_open = linger
            .is_some_and(|l| open.in_batch && open.waiting.is_empty() && open.since.elapsed() < l);
        if !keep_open {
            self.commit();
        }
    }

    /// Commits the open transaction and answers the jobs waiting for it.
    fn commit(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let failure = if open.in_batch {
            match self
                .core
                .as_mut()
                .map(|c| c.swap_mut().store_mut().commit_batch())
            {
                Some(Err(e)) => {
                    open.tally.failed();
                    tracing::error!(error = %e, "the store cannot commit; rebuilding the pager from the store");
                    open.answered_are_lost("the commit failed");
                    self.rebuild();
                    Some(e.to_string())
                }
                _ => None,
            }
        } else {
            None
        };
        if failure.is_none() {
            let rows = self
                .core
                .as_mut()
                .map_or(0, |c| c.swap_mut().take_rows_written());
            let duration = open.since.elapsed();
            if rows > 0 {
                StoreCommitted {
                    writer: StoreWriter::Pager,
                    rows,
                    duration,
                }
                .emit();
            }
            // Each other writer whose jobs ran counts this commit once, with its own rows.
            for (writer, rows) in open.tally.store_writers() {
                StoreCommitted {
                    writer,
                    rows,
                    duration,
                }
                .emit();
            }
        }
        for r in open.waiting {
            r.finish(failure.clone().map(|why| {
                PagerFailure::Unavailable(format!("the store did not commit this request: {why}"))
            }));
        }
    }
}

/// A pager job running `f` on the core, whose result (or the failure that replaces it when
/// its writes are lost) goes to `answer`, after its commit or early as `commit` allows.
fn core_job<T, F, A>(commit: Commit, f: F, answer: A) -> Job
where
    T: Send + 'static,
    F: FnOnce(&mut Core) -> Result<T, agentos_runtime::context::PagerError> + Send + 'static,
    A: FnOnce(Result<T, PagerFailure>) + Send + 'static,
{
    Box::new(move |core: &mut Option<Core>| {
        let out = match core.as_mut() {
            Some(c) => f(c).map_err(PagerFailure::Pager),
            None => Err(PagerFailure::Unavailable(
                "the store could not be opened".into(),
            )),
        };
        Ran {
            ok: out.is_ok(),
            reply: Box::new(move |lost: Option<PagerFailure>| {
                answer(match lost {
                    Some(failure) => Err(failure),
                    None => out,
                })
            }),
            rows: None,
            commit,
            lost: None,
        }
    })
}

/// Handle to the worker thread; dropping it ends the thread once queued jobs are done.
#[derive(Debug, Clone)]
pub struct Worker {
    tx: std::sync::mpsc::Sender<Queued>,
    /// Room in the pager's queue ([`QUEUE_CAPACITY`]); fair, so waiters get it in FIFO order.
    room: Arc<Semaphore>,
}

impl Worker {
    /// Starts the thread. The core is built on it (opening the store is I/O too).
    pub fn start(cfg: WorkerConfig) -> std::io::Result<Worker> {
        let (tx, rx) = std::sync::mpsc::channel::<Queued>();
        std::thread::Builder::new()
            .name("agentos-store".into())
            .spawn(move || {
                let core = match build_core(&cfg) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(error = %e, "context pager cannot open the store");
                        None
                    }
                };
                let mut state = State {
                    cfg,
                    core,
                    open: None,
                };
                loop {
                    // While a lingering transaction is open, wait for more work until it is
                    // due; then commit it.
                    let due = match (&state.open, state.lingering()) {
                        (Some(open), Some(linger)) => {
                            Some(linger.saturating_sub(open.since.elapsed()))
                        }
                        _ => None,
                    };
                    let first = match due {
                        Some(left) => match rx.recv_timeout(left) {
                            Ok(q) => q,
                            Err(RecvTimeoutError::Timeout) => {
                                state.commit();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        },
                        None => match rx.recv() {
                            Ok(q) => q,
                            Err(_) => break,
                        },
                    };
                    // A job leaves the queue here, and gives its room back.
                    let Queued { job, room } = first;
                    drop(room);
                    let mut batch = vec![job];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(q) => batch.push(q.job),
                            Err(_) => break,
                        }
                    }
                    state.run_batch(batch);
                }
                // Every handle is gone: what is still open commits.
                state.commit();
            })?;
        Ok(Worker {
            tx,
            room: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
        })
    }

    /// Queues `f` now (see the module docs on order) and returns a future of its result,
    /// answered once its writes are committed, or at once under a linger
    /// ([`WorkerConfig::linger`]).
    pub fn call<T, F>(&self, f: F) -> impl Future<Output = Result<T, PagerFailure>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> Result<T, agentos_runtime::context::PagerError> + Send + 'static,
    {
        self.call_as(Commit::Early, f)
    }

    /// [`Worker::call`], answered before or only after its commit as `commit` says.
    pub fn call_as<T, F>(
        &self,
        commit: Commit,
        f: F,
    ) -> impl Future<Output = Result<T, PagerFailure>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> Result<T, agentos_runtime::context::PagerError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let queued = self.queue(core_job(commit, f, move |out| {
            let _ = reply.send(out);
        }));
        async move {
            queued.await?;
            rx.await.unwrap_or_else(|_| {
                Err(PagerFailure::Unavailable(
                    "the request failed inside the pager (internal error)".into(),
                ))
            })
        }
    }

    /// [`Worker::call_as`] for a caller that does not wait for the result: there is no reply
    /// channel and nothing is woken when the job is answered. `failed` runs on the worker
    /// thread if the job fails or its writes are lost before it is answered (as with
    /// [`Worker::call_as`], writes answered early and lost later are logged by the worker).
    ///
    /// The future answers once the job is queued: at once, unless the queue is full. Keep it
    /// alive until then; dropped earlier, the job is withdrawn.
    pub fn tell_as<T, F, L>(
        &self,
        commit: Commit,
        f: F,
        failed: L,
    ) -> impl Future<Output = Result<(), PagerFailure>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&mut Core) -> Result<T, agentos_runtime::context::PagerError> + Send + 'static,
        L: FnOnce(PagerFailure) + Send + 'static,
    {
        self.queue(core_job(commit, f, move |out: Result<T, PagerFailure>| {
            if let Err(e) = out {
                failed(e);
            }
        }))
    }

    /// Queues a pager job now when there is room; else the future waits for room, in FIFO
    /// order (the semaphore is fair: no later caller takes room a waiter is owed).
    fn queue(&self, job: Job) -> impl Future<Output = Result<(), PagerFailure>> + Send + 'static {
        let queued = match self.room.clone().try_acquire_owned() {
            Ok(room) => self.send(job, Some(room)).map(|()| None),
            Err(TryAcquireError::NoPermits) => Ok(Some((self.clone(), job))),
            Err(TryAcquireError::Closed) => Err(()),
        };
        async move {
            let gone = || PagerFailure::Unavailable("the worker thread is gone".into());
            match queued {
                Err(()) => Err(gone()),
                Ok(Some((worker, job))) => {
                    let room = worker
                        .room
                        .clone()
                        .acquire_owned()
                        .await
                        .map_err(|_| gone())?;
                    worker.send(job, Some(room)).map_err(|()| gone())
                }
                Ok(None) => Ok(()),
            }
        }
    }

    /// Queues a store job of `writer` now, which writes `rows` rows (for the commit figures):
    /// it runs on this worker's connection, in a batch with whatever else is queued, and its
    /// answer comes once that batch is committed, or, under a linger and with
    /// [`Commit::Early`], as soon as it has run. `lost` runs on the worker thread when the
    /// job's writes did not make it to the file (the job failed, or its transaction did not
    /// commit), whether or not anyone waits for the answer, and even after an early answer.
    /// Never waits for room.
    pub fn call_store<T, F, L>(
        &self,
        writer: StoreWriter,
        commit: Commit,
        (rows, f): (usize, F),
        lost: L,
    ) -> oneshot::Receiver<Result<T, String>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        L: FnOnce() + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |core: &mut Option<Core>| {
            let out = match core.as_mut() {
                Some(c) => f(c.swap_mut().store_mut()).map_err(|e| e.to_string()),
                None => Err("the store could not be opened".to_owned()),
            };
            Ran {
                ok: out.is_ok(),
                reply: Box::new(move |failed: Option<PagerFailure>| {
                    let _ = reply.send(match failed {
                        Some(why) => Err(why.to_string()),
                        None => out,
                    });
                }),
                rows: Some((writer, rows)),
                commit,
                lost: Some(Box::new(lost)),
            }
        });
        if self.send(job, None).is_err() {
            // The thread is gone: answer at once.
            let (reply, rx) = oneshot::channel();
            let _ = reply.send(Err("the store thread is gone".into()));
            return rx;
        }
        rx
    }

    /// Answers once everything queued before it is committed.
    pub fn flush(&self) -> impl Future<Output = Result<(), PagerFailure>> + Send + 'static {
        self.call_as(Commit::Before, |_| Ok(()))
    }

    /// Rebuilds the pager's core over a fresh store connection once the jobs queued before
    /// are done: its memory comes back from the store on first use (a pager restart).
    pub fn reset(&self, cfg: WorkerConfig) {
        let job: Job = Box::new(move |core: &mut Option<Core>| {
            // Close the old connection first.
            *core = None;
            *core = match build_core(&cfg) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "context pager cannot reopen the store");
                    None
                }
            };
            Ran {
                ok: true,
                reply: Box::new(|_| {}),
                rows: None,
                commit: Commit::Early,
                lost: None,
            }
        });
        let _ = self.send(job, None);
    }

    fn send(&self, job: Job, room: Option<OwnedSemaphorePermit>) -> Result<(), ()> {
        self.tx.send(Queued { job, room }).map_err(|_| ())
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
        refusing_worker_lingering(dir, None).await
    }

    /// [`refusing_worker`] with `linger`.
    async fn refusing_worker_lingering(
        dir: &Path,
        linger: Option<std::time::Duration>,
    ) -> (Worker, WorkerConfig) {
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
            linger,
            steps_wait: false,
        };
        let worker = Worker::start(cfg.clone()).unwrap();
        // Once a job ran, the store is open and migrated.
        worker.flush().await.unwrap();
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

    #[actix_rt::test]
    async fn a_told_job_answers_once_queued_and_only_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, cfg) = refusing_worker(dir.path()).await;
        let (report, reports) = std::sync::mpsc::channel::<(&str, PagerFailure)>();
        let tell = |context: &'static str| {
            let report = report.clone();
            worker.tell_as(
                Commit::Step,
                move |p| p.open("a", context, "sys", "task", &[]).map(|_| ()),
                move |e| report.send((context, e)).unwrap(),
            )
        };
        let release = hold(&worker);
        // Answered while the worker is still held: nothing waits for the job to run.
        tell("w/kept#1").await.unwrap();
        tell("bad").await.unwrap();
        tell("doomed").await.unwrap();
        tell("w/after#1").await.unwrap();
        release.send(()).unwrap();
        worker.flush().await.unwrap();
        drop(report);
        let mut reported: Vec<_> = reports.iter().collect();
        reported.sort_by_key(|(c, _)| *c);
        assert_eq!(
            reported.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            ["bad", "doomed", "w/kept#1"],
            "the refused job, the one the store rolled back, and the one lost with it: {reported:?}"
        );
        assert!(
            matches!(&reported[2].1, PagerFailure::Unavailable(m) if m.contains("rolled back")),
            "{reported:?}"
        );
        assert_eq!(stored_pages(&cfg, "w/kept#1"), 0);
        assert_eq!(stored_pages(&cfg, "w/after#1"), 2);
    }

    /// A scheduler write queued between pager requests.
    fn state_write(
        worker: &Worker,
        kind: &str,
        lost: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let batch = crate::store_worker::tests::audit(kind);
        let lost = lost.clone();
        worker.call_store(
            StoreWriter::Scheduler,
            Commit::Before,
            (1, move |db: &mut Store| db.write_state("r1", &batch)),
            move || {
                lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
        )
    }

    fn audit_kinds(cfg: &WorkerConfig) -> Vec<String> {
        let conn = rusqlite::Connection::open(&cfg.store_path).unwrap();
        let mut stmt = conn.prepare("SELECT kind FROM audit ORDER BY id").unwrap();
        let kinds = stmt.query_map([], |r| r.get(0)).unwrap();
        kinds.map(Result::unwrap).collect()
    }

    #[actix_rt::test]
    async fn store_jobs_share_the_pagers_batches_and_fail_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, cfg) = refusing_worker(dir.path()).await;
        let lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A batch with a pager request and a store job commits both.
        let release = hold(&worker);
        let page = open(&worker, "w/a#1");
        let state = state_write(&worker, "kept", &lost);
        release.send(()).unwrap();
        page.await.unwrap();
        state.await.unwrap().unwrap();
        assert_eq!(stored_pages(&cfg, "w/a#1"), 2);
        // A batch the store rolls back loses the store job run before the failing request:
        // its answer says so and its hook runs; the store job queued after it commits.
        let release = hold(&worker);
        let before = state_write(&worker, "rolled back", &lost);
        let doomed = open(&worker, "doomed");
        let after = state_write(&worker, "after", &lost);
        release.send(()).unwrap();
        let before = before.await.unwrap();
        assert!(
            before.as_ref().is_err_and(|e| e.contains("rolled back")),
            "{before:?}"
        );
        assert!(doomed.await.is_err());
        after.await.unwrap().unwrap();
        assert_eq!(lost.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(audit_kinds(&cfg), ["kept", "after"]);
    }

    #[actix_rt::test]
    async fn a_reset_rebuilds_the_core_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (worker, cfg) = refusing_worker(dir.path()).await;
        open(&worker, "w/a#1").await.unwrap();
        let in_memory = || worker.call(|p| Ok(p.open_contexts()));
        assert_eq!(in_memory().await.unwrap(), 1);
        worker.reset(cfg.clone());
        assert_eq!(in_memory().await.unwrap(), 0, "a reset core starts empty");
        // What was stored comes back on first use.
        open(&worker, "w/a#1").await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/a#1"), 2);
    }

    #[actix_rt::test]
    async fn a_lingering_worker_answers_before_the_commit_and_a_flush_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        // A linger no test outlasts: only a job that must wait ends the transaction.
        let linger = Some(std::time::Duration::from_secs(600));
        let (worker, cfg) = refusing_worker_lingering(dir.path(), linger).await;
        open(&worker, "w/a#1").await.unwrap();
        assert_eq!(
            stored_pages(&cfg, "w/a#1"),
            0,
            "answered, not committed yet"
        );
        worker.flush().await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/a#1"), 2);
        // A start marker waits for its commit, and so commits what was queued before it.
        open(&worker, "w/b#1").await.unwrap();
        let lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A store write answered before its commit, counting its lost hook in `lost`.
        let early_write = |lost: &Arc<std::sync::atomic::AtomicUsize>| {
            let lost = lost.clone();
            worker.call_store(
                StoreWriter::Scheduler,
                Commit::Early,
                (0, |_: &mut Store| Ok(())),
                move || {
                    lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                },
            )
        };
        early_write(&lost).await.unwrap().unwrap();
        assert_eq!(stored_pages(&cfg, "w/b#1"), 0);
        worker.call_as(Commit::Before, |_| Ok(())).await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/b#1"), 2);
        // A transaction the store rolls back runs the lost hook of a write answered early.
        early_write(&lost).await.unwrap().unwrap();
        open(&worker, "w/c#1").await.unwrap();
        assert!(open(&worker, "doomed").await.is_err());
        assert_eq!(lost.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            stored_pages(&cfg, "w/c#1"),
            0,
            "lost with the rolled-back transaction"
        );
        // The pager forgot it too: the context opens again and is stored.
        open(&worker, "w/c#1").await.unwrap();
        worker.flush().await.unwrap();
        assert_eq!(stored_pages(&cfg, "w/c#1"), 2);
    }
}
