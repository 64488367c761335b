//! The `Scheduler` actor: owns the [`SchedulerCore`] and turns its decisions into messages.
//!
//! Agents announce themselves idle ([`AgentIdle`]) and report each attempt ([`TaskReport`]);
//! the agent supervisor's exit hook reports dead agents ([`AgentDown`]). After every message
//! the scheduler "pumps": it revokes expired leases (and asks the agent supervisor to restart
//! their holders, which counts against its restart intensity), hands ready tasks to idle
//! agents with bounded `try_send`, records typed events, and arms one timer for the next retry
//! or lease deadline.
//!
//! Its state (the core and the agents it knows) lives with the child spec
//! ([`SchedulerState`]), so a restarted scheduler resumes the same DAGs. Leases of the
//! previous incarnation are returned as failed attempts and every known agent is asked to
//! announce itself again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use agentos_runtime::durable::Durability;
use agentos_runtime::events::control::{
    AgentControlled, AttemptCancelled, TaskSpawned, WorkflowAccepted, WorkflowFinished,
};
use agentos_runtime::events::labels::AttemptOutcome;
use agentos_runtime::events::sched::{
    AttemptFinished, LeaseExpired, StaleReport, TaskCountGauges, TaskCounts, TaskFellBack,
    TaskRetried, TaskStateChanged,
};
use agentos_runtime::model::{InstanceId, TaskState};
use agentos_runtime::policy::supervision::RestartType;
use agentos_runtime::sched::{AgentStatus, Outcome, SchedEvent, SchedulerCore};
use agentos_runtime::store::AuditRow;
use agentos_runtime::trace::Trace;

use crate::board::Board;
use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{
    agent_child_id, AgentDown, AgentIdle, AgentLink, AgentSupervisorPorts, CancelAll,
    CancelAttempt, Drain, FlushState, GetSnapshot, PreemptAttempt, PressureSample, RestartChild,
    RunSnapshot, RunTask, SchedulerPorts, TaskReport, TerminateChild,
};
use crate::store_worker::{Ack, StoreWorker};
use agentos_runtime::events::quota::{
    ConcurrencyChanged, ConcurrencySampled, FairShareServed, PreemptionRequested, TaskYielded,
};
use agentos_runtime::policy::governor::{Pressure, PressureGovernor};

/// Where the scheduler stores its state.
#[derive(Debug, Clone)]
pub struct StateStore {
    /// The store thread.
    pub worker: StoreWorker,
    /// The run's id (key of every row).
    pub run_id: String,
    /// When rows are written: as they change (`sync`, `async`) or at the end (`exit`).
    pub durability: Durability,
    /// Set by the store thread when a batch was lost (its commit failed), with the batch's
    /// audit entries: the next batch rewrites every row and carries them again.
    pub lost: Arc<Mutex<Option<Vec<AuditRow>>>>,
}

impl StateStore {
    /// A store for run `run_id` through `worker`.
    pub fn new(worker: StoreWorker, run_id: String, durability: Durability) -> Self {
        Self {
            worker,
            run_id,
            durability,
            lost: Arc::default(),
        }
    }

    /// Writes `batch`; if it is lost, the next batch makes up for it.
    fn write(&self, batch: agentos_runtime::store::StateBatch) -> Ack<()> {
        // Nothing waits for these rows (dispatch does not) but a client's answer, which
        // waits for a flush after them (`commit_of`).
        self.write_as(batch, false)
    }

    /// [`StateStore::write`], answered once committed when `committed`, else as soon as it
    /// has run (under a lingering store thread).
    fn write_as(&self, batch: agentos_runtime::store::StateBatch, committed: bool) -> Ack<()> {
        let run = self.run_id.clone();
        let lost = self.lost.clone();
        let audit = batch.audit.clone();
        let rows = batch.len();
        let write = move |db: &mut agentos_runtime::store::Store| db.write_state(&run, &batch);
        let lost = move || {
            // std Mutex, held only to swap a Vec; a poisoned one still holds the entries.
            let mut slot = lost.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(Vec::new).extend(audit);
        };
        if committed {
            self.worker.run_or(rows, write, lost)
        } else {
            self.worker.run_early(rows, write, lost)
        }
    }

    /// What to wait for before answering a client whose change `ack` carries: the write was
    /// answered before its commit, so the answer waits for a flush too.
    fn commit_of(&self, ack: Ack<()>) -> Stored {
        Stored {
            write: ack,
            flush: Some(self.worker.flush()),
        }
    }
}

/// The commit of a handler's changes, to wait for before answering a client.
#[derive(Debug)]
pub(crate) struct Stored {
    write: Ack<()>,
    flush: Option<Ack<()>>,
}

impl Stored {
    /// Whether the changes are stored (`Err`: why not); `None` when the store thread is gone.
    pub(crate) async fn wait(self) -> Option<Result<(), String>> {
        let written = self.write.await.ok()?;
        match self.flush {
            Some(flush) if written.is_ok() => flush.await.ok(),
            _ => Some(written),
        }
    }
}

/// What outlives a scheduler incarnation: the task table and the agents it knows.
#[derive(Debug)]
pub struct SchedulerState {
    core: SchedulerCore,
    agents: HashMap<InstanceId, AgentLink>,
    store: Option<StateStore>,
    /// Audit entries not written yet.
    audit: Vec<AuditRow>,
    /// The quota gate, whose budget counters are written with the state.
    quotas: Option<Arc<crate::quota::QuotaGate>>,
    /// Lowers the concurrency under CPU and memory pressure (`adaptive_concurrency`).
    governor: Option<PressureGovernor>,
}

impl SchedulerState {
    /// The state of a fresh run over `core`, stored nowhere.
    pub fn new(core: SchedulerCore) -> Self {
        Self {
            core,
            agents: HashMap::new(),
            store: None,
            audit: Vec::new(),
            quotas: None,
            governor: None,
        }
    }

    /// With the quota gate whose counters are stored with the state.
    pub fn with_quotas(mut self, quotas: Option<Arc<crate::quota::QuotaGate>>) -> Self {
        self.quotas = quotas;
        self
    }

    /// With a governor that lowers the concurrency under resource pressure.
    pub fn with_governor(mut self, governor: Option<PressureGovernor>) -> Self {
        self.governor = governor;
        self
    }

    /// The state of a run over `core` whose changes go to `store`.
    pub fn stored(core: SchedulerCore, store: StateStore) -> Self {
        Self {
            store: Some(store),
            ..Self::new(core)
        }
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// Who the scheduler talks to besides the agents that announce themselves.
#[derive(Debug, Clone)]
pub struct SchedulerLinks {
    /// Its own ports (bound on every start).
    pub ports: SchedulerPorts,
    /// The agent supervisor (restarts of wedged agents).
    pub agents: AgentSupervisorPorts,
    /// Where the run's `done` signal goes.
    pub board: Arc<Board>,
    /// The trace.
    pub trace: Trace,
}

/// The scheduler's child spec: permanent; its state stays with the spec across restarts.
pub fn child_spec(state: Arc<Mutex<SchedulerState>>, links: SchedulerLinks) -> ChildSpec {
    ChildSpec::new(
        "scheduler",
        "scheduler",
        RestartType::Permanent,
        move |notice| {
            let addr = Scheduler::new(state.clone(), links.clone(), notice).start();
            links.ports.bind(&addr);
            ChildHandle::stop_or_hard_stop(addr, || StopScheduler)
        },
    )
}

/// Stops the scheduler actor (its state stays with the child spec).
#[derive(Debug, Default, Message)]
#[rtype(result = "()")]
pub struct StopScheduler;

/// The scheduler actor.
pub struct Scheduler {
    state: Arc<Mutex<SchedulerState>>,
    links: SchedulerLinks,
    notice: ExitNotice,
    /// The pump at the next deadline (leases, retries), and when it is set for.
    timer: Option<(SpawnHandle, Instant)>,
    /// The commit of the rows written by the last pump (control-plane replies wait for it).
    last_ack: Option<Ack<()>>,
    /// The write of what reports and announcements changed, due within [`PERSIST_LINGER`].
    persist_due: Option<SpawnHandle>,
    /// The task counts last set on the gauges by this incarnation.
    counts: Option<TaskCountArray>,
    /// Those gauges, resolved once.
    count_gauges: TaskCountGauges,
}

/// Tasks in each state, in [`TaskState::ALL`] order.
type TaskCountArray = [(TaskState, usize); 7];

impl Scheduler {
    /// A scheduler over shared state.
    pub fn new(
        state: Arc<Mutex<SchedulerState>>,
        links: SchedulerLinks,
        notice: ExitNotice,
    ) -> Self {
        Self {
            state,
            links,
            notice,
            timer: None,
            last_ack: None,
            persist_due: None,
            counts: None,
            count_gauges: TaskCountGauges::of(),
        }
    }

    /// Sets the task-count gauges whose count changed since this incarnation last set them
    /// (every one when `all`, as the tick does): a pump changes two counts at most.
    fn emit_counts(&mut self, counts: TaskCountArray, all: bool) {
        let mut changed = counts;
        let mut n = 0;
        for (i, &c) in counts.iter().enumerate() {
            if all || self.counts.is_none_or(|last| last[i] != c) {
                changed[n] = c;
                n += 1;
            }
        }
        if n > 0 {
            TaskCounts {
                counts: &changed[..n],
            }
            .emit_with(&self.count_gauges);
        }
        self.counts = Some(counts);
    }

    /// Sends what changed to the store (nothing under `durability: exit`, which writes
    /// everything at the end); answers the commit to wait for, if anything was sent.
    fn persist(&mut self) -> Option<Ack<()>> {
        let mut guard = self.state();
        // Borrowed field by field, not cloned: this runs after every message.
        let s = &mut *guard;
        let store = s.store.as_ref()?;
        if store.durability == Durability::Exit {
            return None;
        }
        let lost = store.lost.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(audit) = lost {
            // A batch did not commit: what it had is the current state again, written whole.
            s.core.mark_all_dirty();
            s.audit.splice(0..0, audit);
        }
        let mut batch = s.core.take_changes(Instant::now(), unix_ms());
        batch.audit = std::mem::take(&mut s.audit);
        if let Some(q) = &s.quotas {
            batch.quotas = q.take_dirty_rows();
        }
        if batch.is_empty() {
            return None;
        }
        Some(store.write(batch))
    }

    /// Adds an audit entry the scheduler's events do not carry; written with the next batch.
    pub(crate) fn audit(&self, row: AuditRow) {
        let mut s = self.state();
        if s.store.is_some() {
            s.audit.push(row);
        }
    }

    /// The commit of this handler's changes, to wait for before replying.
    pub(crate) fn take_ack(&mut self) -> Option<Stored> {
        let ack = self.last_ack.take()?;
        let s = self.state();
        Some(match &s.store {
            Some(store) => store.commit_of(ack),
            None => Stored {
                write: ack,
                flush: None,
            },
        })
    }

    fn state(&self) -> MutexGuard<'_, SchedulerState> {
        // std Mutex: only this actor (one incarnation at a time, one thread) locks it, never
        // across an await. A poisoned lock means a previous incarnation panicked mid-update;
        // the state is still the best record of the run, so keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the core (expiries, dispatch) and writes what changed at once: a control-plane
    /// handler's reply waits for that write ([`Scheduler::take_ack`]).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.pump_as(ctx, true);
    }

    /// [`Scheduler::pump`] for an agent's report or announcement, which nobody waits for: what
    /// changed is written within [`PERSIST_LINGER`], with what the pumps until then change.
    fn pump_lazily(&mut self, ctx: &mut Context<Self>) {
        self.pump_as(ctx, false);
    }

    fn pump_as(&mut self, ctx: &mut Context<Self>, write_now: bool) {
        let now = Instant::now();
        self.hold_leases(now);
        let (expired, mut events) = self.state().core.expire(now);
        for instance in &expired {
            LeaseExpired {
                agent: &instance.agent,
            }
            .emit();
            self.state().agents.remove(instance);
            // Counted by the agent supervisor like a crash: intensity, backoff, escalation.
            self.links
                .agents
                .restart
                .tell(RestartChild(agent_child_id(instance)));
        }
        let mut state = self.state();
        let (dispatches, more) = state.core.dispatch(now);
        events.extend(more);
        for d in dispatches {
            let instance = d.instance.clone();
            let delivered = match state.agents.get(&instance) {
                Some(link) => link.try_run(RunTask { dispatch: d }).map_err(|e| match e {
                    SendError::Full(_) => "mailbox full",
                    SendError::Closed(_) => "mailbox closed",
                }),
                None => Err("not registered"),
            };
            if let Err(why) = delivered {
                state.agents.remove(&instance);
                let ev =
                    state
                        .core
                        .agent_gone(&instance, &format!("task not delivered: {why}"), now);
                events.extend(ev);
            }
        }
        drop(state);
        self.record(events);
        if write_now {
            if let Some(h) = self.persist_due.take() {
                ctx.cancel_future(h);
            }
            self.last_ack = self.persist();
        } else {
            self.last_ack = None;
            if self.persist_due.is_none() {
                self.persist_due = Some(ctx.run_later(PERSIST_LINGER, |act, _| {
                    act.persist_due = None;
                    // Nobody waits for it; a lost batch is made up for by the next one.
                    drop(act.persist());
                }));
            }
        }
        let (counts, done, next) = {
            let s = self.state();
            (s.core.counts(), s.core.is_done(), s.core.next_deadline())
        };
        self.emit_counts(counts, false);
        if done && !*self.links.board.done.borrow() {
            self.links.board.done.send_replace(true);
        }
        // The timer is moved only when the next deadline comes before it: one that fires
        // early just pumps and is set again. Cancelling and setting it on every pump cost
        // actix a scan of the context's futures per cancel, for every pump between two polls
        // (quadratic in the reports handled in one go: 1.2% of a 10k-agent run).
        match (next, self.timer) {
            (Some(at), Some((_, set_for))) if set_for <= at => {}
            (Some(at), _) => {
                if let Some((h, _)) = self.timer.take() {
                    ctx.cancel_future(h);
                }
                let delay = at.saturating_duration_since(Instant::now());
                let h = ctx.run_later(delay, |act, ctx| {
                    act.timer = None;
                    act.pump(ctx);
                });
                self.timer = Some((h, at));
            }
            (None, _) => {}
        }
    }

    fn record(&self, events: Vec<SchedEvent>) {
        {
            let mut s = self.state();
            if s.store.is_some() && !events.is_empty() {
                let rows = s.core.audit_rows(&events, unix_ms());
                s.audit.extend(rows);
            }
        }
        let trace = &self.links.trace;
        for ev in events {
            match ev {
                SchedEvent::TaskState {
                    task,
                    agent,
                    from,
                    to,
                    attempt,
                    reason,
                } => {
                    let duration = if to.is_terminal() {
                        self.state()
                            .core
                            .task(&task)
                            .map(|rec| rec.duration(Instant::now()))
                    } else {
                        None
                    };
                    TaskStateChanged {
                        task: &task,
                        agent: &agent,
                        from,
                        to,
                        attempt,
                        reason: reason.as_deref(),
                        duration,
                    }
                    .emit(trace);
                }
                SchedEvent::Retry {
                    task,
                    agent,
                    attempt,
                    delay,
                    reason,
                } => TaskRetried {
                    task: &task,
                    agent: &agent,
                    failed_attempt: attempt,
                    backoff: delay,
                    reason: &reason,
                }
                .emit(trace),
                SchedEvent::Fallback {
                    task,
                    from,
                    to,
                    after_attempts,
                } => TaskFellBack {
                    task: &task,
                    from: &from,
                    to: &to,
                    after_attempts,
                }
                .emit(trace),
                SchedEvent::WorkflowAccepted {
                    id,
                    origin,
                    by,
                    tasks,
                } => WorkflowAccepted {
                    id: &id,
                    origin,
                    by: &by,
                    tasks,
                }
                .emit(trace),
                SchedEvent::WorkflowFinished { id, state } => {
                    WorkflowFinished { id: &id, state }.emit(trace)
                }
                SchedEvent::TaskSpawned {
                    task,
                    parent,
                    agent,
                    depth,
                } => TaskSpawned {
                    task: &task,
                    parent: &parent,
                    agent: &agent,
                    depth,
                }
                .emit(trace),
                SchedEvent::AgentControlled { agent, action, by } => AgentControlled {
                    agent: &agent,
                    action,
                    by: &by,
                }
                .emit(trace),
                SchedEvent::Yielded {
                    task,
                    instance,
                    attempt,
                    reason,
                    preempted,
                } => TaskYielded {
                    task: &task,
                    instance: &instance,
                    attempt,
                    reason: &reason,
                    preempted,
                }
                .emit(trace),
                SchedEvent::PreemptRequested {
                    task,
                    instance,
                    lease,
                    reason,
                } => {
                    PreemptionRequested {
                        task: &task,
                        instance: &instance,
                        reason: reason.as_deref(),
                    }
                    .emit(trace);
                    let link = self.state().agents.get(&instance).cloned();
                    if let Some(link) = link {
                        link.preempt(PreemptAttempt { lease, reason });
                    }
                }
                SchedEvent::AttemptCancelled {
                    task,
                    instance,
                    lease,
                    reason,
                } => {
                    AttemptCancelled {
                        task: &task,
                        instance: &instance,
                        reason: &reason,
                    }
                    .emit(trace);
                    // Rare and must not be lost: `do_send` ignores the mailbox bound.
                    let link = self.state().agents.get(&instance).cloned();
                    if let Some(link) = link {
                        link.cancel(CancelAttempt { lease, reason });
                    }
                }
            }
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        // Leases held under a previous incarnation cannot be reported to us reliably: return
        // them as failed attempts, then ask every known agent to announce itself again.
        let now = Instant::now();
        let mut events = self.state().core.take_pending();
        let announce: Vec<AgentLink> = {
            let mut s = self.state();
            let held: Vec<InstanceId> = s.core.leases().map(|l| l.instance.clone()).collect();
            for instance in held {
                events.extend(s.core.agent_gone(&instance, "scheduler restarted", now));
            }
            s.agents.values().cloned().collect()
        };
        self.record(events);
        for a in announce {
            a.announce();
        }
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // What the last reports changed goes to the store before the store's last commit.
        if self.persist_due.take().is_some() {
            drop(self.persist());
        }
        self.notice.exited();
    }
}

/// How long the rows that agents' reports and announcements change gather before they go to
/// the store (the store's own linger): a task that starts and ends within it is written once,
/// and one store job carries the changes of every pump in between, instead of a job, and a
/// wake-up of the store thread, per pump.
const PERSIST_LINGER: std::time::Duration = crate::pager::worker::LINGER;

/// How often quota counters reach the store (when they changed) and the gauges are refreshed.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

impl Scheduler {
    /// Leases whose holder waits at the quota gate do not run out meanwhile.
    fn hold_leases(&self, now: Instant) {
        let mut s = self.state();
        let Some(gate) = s.quotas.clone() else {
            return;
        };
        if s.core.running() > 0 {
            s.core.hold_leases(&gate.held(), now);
        }
    }

    /// Once a second: stores changed quota counters, refreshes the task-count, quota,
    /// concurrency and fair-share gauges, and follows the leases the quota gate holds.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let gated = {
            let s = self.state();
            s.quotas.is_some() && s.core.running() > 0
        };
        if gated {
            // Re-arms the deadline of a lease the gate has just released.
            self.pump(ctx);
        }
        if let Some(ack) = self.persist() {
            // Nobody waits for it; a lost batch is made up for by the next one.
            drop(ack);
        }
        // Every count once a tick, so that no gauge lags behind for long whatever happened.
        let counts = self.state().core.counts();
        self.emit_counts(counts, true);
        let s = self.state();
        if let Some(q) = &s.quotas {
            q.status();
        }
        let (limit, reason) = s.core.concurrency();
        ConcurrencySampled {
            scope: "global",
            limit,
            current: s.core.running(),
        }
        .emit();
        let shares = s.core.shares();
        for (flow, _, tokens) in &shares {
            FairShareServed {
                flow,
                tokens: *tokens,
            }
            .emit();
        }
        let view = crate::board::SchedView {
            policy: s.core.config().runtime.scheduling.policy.label().to_owned(),
            limit,
            max: s.core.config().runtime.max_concurrency,
            reason: reason.to_owned(),
            running: s.core.running(),
            shares: shares
                .into_iter()
                .map(|(flow, weight, tokens)| crate::board::FlowShare {
                    flow,
                    weight,
                    tokens,
                })
                .collect(),
        };
        drop(s);
        *self
            .links
            .board
            .sched
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = view;
    }
}

impl Scheduler {
    /// A workflow submitted at run time brings its own quotas.
    pub(crate) fn add_workflow_quotas(
        &self,
        id: &str,
        spec: &agentos_runtime::config::WorkflowSpec,
    ) {
        if let Some(q) = &self.state().quotas {
            q.add_workflow(id, spec);
        }
    }
}

impl Handler<PressureSample> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: PressureSample, ctx: &mut Self::Context) {
        let change = {
            let mut s = self.state();
            let Some(g) = s.governor.as_mut() else {
                return;
            };
            let mut change = g.observe(
                Pressure {
                    cpu: msg.cpu,
                    memory: msg.memory,
                },
                Instant::now(),
            );
            if let Some(c) = &mut change {
                if msg.injected {
                    c.reason.push_str(" (injected)");
                }
                s.core.set_concurrency(c.to, c.reason.clone());
            }
            change
        };
        if let Some(c) = change {
            ConcurrencyChanged {
                scope: "global",
                from: c.from,
                to: c.to,
                reason: &c.reason,
            }
            .emit(&self.links.trace);
            self.pump(ctx);
        }
    }
}

impl Scheduler {
    /// Takes `instance` as idle, reachable through `link`; `false` when it was stopped
    /// instead (its agent is killed).
    fn idle(&mut self, instance: InstanceId, link: AgentLink) -> bool {
        let killed = self.state().core.agent_status(&instance.agent) == Some(AgentStatus::Killed);
        if killed {
            // An instance of a killed agent is up again without a resume (its supervisor was
            // rebuilt and forgot it was parked): stop it again instead of leaving it idle.
            self.links.agents.terminate.tell(TerminateChild {
                id: agent_child_id(&instance),
                reason: "its agent is killed".into(),
            });
            return false;
        }
        let mut s = self.state();
        s.agents.insert(instance.clone(), link);
        s.core.agent_idle(instance);
        true
    }
}

impl Handler<AgentIdle> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentIdle, ctx: &mut Self::Context) {
        if self.idle(msg.instance, msg.link) {
            self.pump_lazily(ctx);
        }
    }
}

impl Handler<AgentDown> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: AgentDown, ctx: &mut Self::Context) {
        let now = Instant::now();
        let events = {
            let mut s = self.state();
            s.agents.remove(&msg.instance);
            if s.core.holds(&msg.instance) {
                AttemptFinished {
                    agent: &msg.instance.agent,
                    outcome: AttemptOutcome::Failed,
                }
                .emit();
            }
            s.core.agent_gone(&msg.instance, &msg.reason, now)
        };
        self.record(events);
        self.pump(ctx);
    }
}

impl Handler<TaskReport> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: TaskReport, ctx: &mut Self::Context) {
        let outcome = match &msg.report.outcome {
            Outcome::Succeeded { .. } => Some(AttemptOutcome::Succeeded),
            Outcome::Failed { .. } => Some(AttemptOutcome::Failed),
            // Not an ended attempt: it continues later (counted as a preemption).
            Outcome::Yielded { .. } => None,
        };
        let result = self.state().core.report(msg.report, Instant::now());
        match msg.idle {
            // The instance is free now: counted before the pump hands out the slot it freed.
            Some(link) => {
                self.idle(msg.instance.clone(), link);
            }
            None if result.is_ok() => {
                let mut s = self.state();
                if s.agents.contains_key(&msg.instance) {
                    s.core.agent_idle(msg.instance.clone());
                }
            }
            None => {}
        }
        match result {
            Ok(events) => {
                if let Some(outcome) = outcome {
                    AttemptFinished {
                        agent: &msg.instance.agent,
                        outcome,
                    }
                    .emit();
                }
                self.record(events);
            }
            Err(stale) => StaleReport {
                instance: &msg.instance,
                stale: &stale,
            }
            .emit(),
        }
        self.pump_lazily(ctx);
    }
}

impl Handler<GetSnapshot> for Scheduler {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(RunSnapshot::of(&self.state().core, Instant::now()))
    }
}

impl Handler<Drain> for Scheduler {
    type Result = usize;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> usize {
        let mut s = self.state();
        s.core.drain();
        s.core.running()
    }
}

impl Handler<CancelAll> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: CancelAll, ctx: &mut Self::Context) {
        let events = self.state().core.cancel_all(&msg.reason, Instant::now());
        self.record(events);
        self.pump(ctx);
    }
}

impl Handler<FlushState> for Scheduler {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: FlushState, _: &mut Self::Context) -> Self::Result {
        let ack = {
            let mut s = self.state();
            match s.store.clone() {
                None => None,
                Some(store) => {
                    let now = Instant::now();
                    let mut batch = if store.durability == Durability::Exit {
                        s.core.all_rows(now, unix_ms())
                    } else {
                        s.core.take_changes(now, unix_ms())
                    };
                    if let Some(audit) = store.lost.lock().unwrap_or_else(|e| e.into_inner()).take()
                    {
                        if store.durability != Durability::Exit {
                            s.core.mark_all_dirty();
                            batch.extend(s.core.take_changes(now, unix_ms()));
                        }
                        s.audit.splice(0..0, audit);
                    }
                    batch.audit = std::mem::take(&mut s.audit);
                    if let Some(q) = &s.quotas {
                        // Under `exit` the counters' only write.
                        batch.quotas = q.take_dirty_rows();
                    }
                    // Sent even when empty: its commit comes after every earlier batch's.
                    Some(store.write_as(batch, true))
                }
            }
        };
        Box::pin(async move {
            match ack {
                None => Ok(()),
                Some(ack) => ack
                    .await
                    .unwrap_or_else(|_| Err("the store thread is gone".into())),
            }
        })
    }
}

impl Handler<StopScheduler> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: StopScheduler, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<HardStop> for Scheduler {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Sent only when the stop message was not obeyed within the shutdown timeout.
        ctx.terminate();
    }
}

mod control;
