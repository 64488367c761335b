//! The control plane's side of the scheduler core: workflows submitted at run time, cancel,
//! agent suspend / resume / kill, and tasks spawned by running tasks.
//!
//! The rules:
//! - A submitted workflow gets the id of its name, or `name-N` when that id is taken. An
//!   idempotency key returns the first workflow submitted under it; the same key with a
//!   different workflow is refused.
//! - Cancel: pending and ready tasks become Cancelled with a reason naming the caller; running
//!   attempts are revoked at once (an [`SchedEvent::AttemptCancelled`] tells the actor to stop
//!   them) and become Cancelled too, so nothing is left Running. The stopped attempt's late
//!   report is absorbed: its tokens count, its outcome does not.
//! - Suspend: no new dispatch to the agent; its leases stop their deadlines until resumed (the
//!   agents pause at their next step boundary). Ready tasks wait.
//! - Kill: the agent takes no more tasks. Its running tasks come back as failed attempts and,
//!   like its ready and retrying tasks, move to their fallback at once (or fail, naming the
//!   kill). Resume undoes a kill: the actor restarts the instances.
//! - Spawn: a running task adds a task to its own workflow. `depends_on` may name only tasks
//!   of the workflow that do not wait for the spawning task, so no cycle can form. The
//!   spawning task's dependents also wait for every task it spawned (fan out, then reduce).
//!   Limits: `runtime.spawn.max_tasks_per_workflow` and `runtime.spawn.max_depth`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;
use crate::config::{TaskSpec, WorkflowSpec};

impl SchedulerCore {
    /// The config the core was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.cfg
    }

    /// Every workflow, in the order it was accepted.
    pub fn workflows(&self) -> &[WorkflowRecord] {
        &self.workflows
    }

    /// The lifecycle status of `agent`, or `None` if the config does not declare it.
    pub fn agent_status(&self, agent: &str) -> Option<AgentStatus> {
        self.spec(agent)?;
        Some(if self.killed.contains_key(agent) {
            AgentStatus::Killed
        } else if self.suspended.contains(agent) {
            AgentStatus::Suspended
        } else {
            AgentStatus::Active
        })
    }

    /// Adds a workflow's DAG; answers its index in the workflow table.
    pub(super) fn add_workflow(
        &mut self,
        spec: &WorkflowSpec,
        origin: WorkflowOrigin,
        by: &str,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) -> usize {
        let id = self.fresh_workflow_id(&spec.name);
        self.add_workflow_as(id, spec, origin, by, now, events)
    }

    /// [`SchedulerCore::add_workflow`] under a given id (a resumed run keeps its ids).
    pub(super) fn add_workflow_as(
        &mut self,
        id: String,
        spec: &WorkflowSpec,
        origin: WorkflowOrigin,
        by: &str,
        now: Instant,
        events: &mut Vec<SchedEvent>,
    ) -> usize {
        let w = self.workflows.len();
        let base = self.tasks.len();
        let local: HashMap<&str, usize> = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), base + i))
            .collect();
        for t in &spec.tasks {
            let key = TaskKey {
                workflow: id.clone(),
                task: t.id.clone(),
            };
            let deps: Vec<usize> = t
                .depends_on
                .iter()
                .filter_map(|d| local.get(d.as_str()).copied())
                .collect();
            self.index.insert(key.clone(), self.tasks.len());
            self.tasks.push(TaskRecord::new(key, w, t, deps));
        }
        for i in base..self.tasks.len() {
            for d in self.tasks[i].deps.clone() {
                self.tasks[d].dependents.push(i);
            }
        }
        let n = self.tasks.len() - base;
        self.counts[state_slot(TaskState::Pending)] += n;
        self.wf_index.insert(id.clone(), w);
        self.workflows.push(WorkflowRecord {
            attained: 0,
            id,
            name: spec.name.clone(),
            origin,
            by: by.to_owned(),
            tasks: (base..self.tasks.len()).collect(),
            spawned: 0,
            open: n,
            cancelled_by: None,
            finished: None,
            spec: spec.clone(),
            submitted_at: unix_now(),
            idempotency_key: None,
        });
        self.dirty.workflow(w);
        self.register_flow(w);
        for i in base..self.tasks.len() {
            self.dirty.task(i);
            if self.tasks[i].deps.is_empty() {
                self.make_ready(i, now, events);
            }
        }
        if n == 0 {
            self.workflows[w].finished = Some(WorkflowState::Succeeded);
        }
        w
    }

    fn fresh_workflow_id(&self, name: &str) -> String {
        if !self.wf_index.contains_key(name) {
            return name.to_owned();
        }
        (2u64..)
            .map(|n| format!("{name}-{n}"))
            .find(|id| !self.wf_index.contains_key(id))
            .unwrap_or_else(|| format!("{name}-{}", self.workflows.len() + 1))
    }

    /// One task of workflow `w` reached a terminal state.
    pub(super) fn task_closed(&mut self, w: usize, events: &mut Vec<SchedEvent>) {
        let Some(rec) = self.workflows.get_mut(w) else {
            return;
        };
        rec.open = rec.open.saturating_sub(1);
        if rec.open > 0 || rec.finished.is_some() {
            return;
        }
        self.dirty.workflow(w);
        let states = rec.tasks.iter().map(|&i| self.tasks[i].state);
        let state = if rec.cancelled_by.is_some() {
            WorkflowState::Cancelled
        } else if states.clone().all(|s| s == TaskState::Succeeded) {
            WorkflowState::Succeeded
        } else if states.clone().any(|s| s == TaskState::Cancelled)
            && !states.clone().any(|s| s == TaskState::Failed)
        {
            WorkflowState::Cancelled
        } else {
            WorkflowState::Failed
        };
        rec.finished = Some(state);
        events.push(SchedEvent::WorkflowFinished {
            id: rec.id.clone(),
            state,
        });
        self.forget_flow(w);
    }

    /// Accepts a workflow (validated against the config by the caller). Answers its id and
    /// whether it is new (`false`: an earlier submit with the same idempotency key).
    pub fn submit(
        &mut self,
        spec: WorkflowSpec,
        idempotency_key: Option<String>,
        by: &str,
        now: Instant,
    ) -> Result<(String, bool, Vec<SchedEvent>), Refused> {
        if let Some(key) = &idempotency_key {
            if let Some(&w) = self.idempotency.get(key) {
                let rec = &self.workflows[w];
                return if rec.spec == spec {
                    Ok((rec.id.clone(), false, Vec::new()))
                } else {
                    Err(Refused::Conflict(format!(
                        "Idempotency-Key {key:?} was already used for workflow {} with a different body",
                        rec.id
                    )))
                };
            }
        }
        if self.draining {
            return Err(Refused::Conflict(
                "the system is shutting down and takes no new workflows".into(),
            ));
        }
        let mut events = Vec::new();
        let tasks = spec.tasks.len();
        let w = self.add_workflow(&spec, WorkflowOrigin::Submitted, by, now, &mut events);
        let id = self.workflows[w].id.clone();
        events.insert(
            0,
            SchedEvent::WorkflowAccepted {
                id: id.clone(),
                origin: WorkflowOrigin::Submitted,
                by: by.to_owned(),
                tasks,
            },
        );
        if let Some(key) = idempotency_key {
            self.workflows[w].idempotency_key = Some(key.clone());
            self.idempotency.insert(key, w);
        }
        Ok((id, true, events))
    }

    /// The workflow `id` with its tasks (`with_tasks`) or only its counts.
    pub fn view(&self, id: &str, with_tasks: bool, now: Instant) -> Option<WorkflowView> {
        let &w = self.wf_index.get(id)?;
        Some(self.view_of(w, with_tasks, now))
    }

    /// Every workflow, without tasks.
    pub fn views(&self, now: Instant) -> Vec<WorkflowView> {
        (0..self.workflows.len())
            .map(|w| self.view_of(w, false, now))
            .collect()
    }

    fn view_of(&self, w: usize, with_tasks: bool, now: Instant) -> WorkflowView {
        let rec = &self.workflows[w];
        let mut counts = BTreeMap::new();
        for &i in &rec.tasks {
            *counts.entry(self.tasks[i].state.label()).or_insert(0) += 1;
        }
        WorkflowView {
            id: rec.id.clone(),
            name: rec.name.clone(),
            origin: rec.origin,
            submitted_by: rec.by.clone(),
            submitted_at: rec.submitted_at,
            state: rec.state(),
            cancelled_by: rec.cancelled_by.clone(),
            spawned: rec.spawned,
            counts,
            tasks: if with_tasks {
                rec.tasks.iter().map(|&i| self.summary(i, now)).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Task `idx` as the summary and the API show it.
    pub fn summary(&self, idx: usize, now: Instant) -> TaskSummary {
        let t = &self.tasks[idx];
        TaskSummary {
            task: t.key.to_string(),
            workflow: t.key.workflow.clone(),
            id: t.key.task.clone(),
            state: t.state,
            attempts: t.attempts_total,
            agent: t.current_agent.clone(),
            depends_on: t
                .deps
                .iter()
                .map(|&d| self.tasks[d].key.task.clone())
                .collect(),
            spawned_by: t.spawned_by.clone(),
            finished_by: t.finished_by.clone(),
            prompt_tokens: t.usage.prompt_tokens,
            completion_tokens: t.usage.completion_tokens,
            cached_tokens: t.usage.cached_tokens,
            duration_secs: t.duration(now).as_secs_f64(),
            reason: t.reason.clone(),
            output: t.output.clone(),
            history: t.attempts.clone(),
        }
    }

    /// Cancels workflow `id` on `by`'s request.
    pub fn cancel_workflow(
        &mut self,
        id: &str,
        by: &str,
        now: Instant,
    ) -> Result<Vec<SchedEvent>, Refused> {
        let &w = self
            .wf_index
            .get(id)
            .ok_or_else(|| Refused::NotFound(format!("no workflow {id:?}")))?;
        if let Some(state) = self.workflows[w].finished {
            return Err(Refused::Conflict(format!(
                "workflow {id} already finished ({})",
                state.label()
            )));
        }
        self.workflows[w].cancelled_by = Some(by.to_owned());
        self.dirty.workflow(w);
        let reason = format!("cancelled: workflow {id} cancelled by {by}");
        let mut events = Vec::new();
        for idx in self.workflows[w].tasks.clone() {
            let state = self.tasks[idx].state;
            if state.is_terminal() {
                continue;
            }
            let agent = self.tasks[idx].current_agent.clone();
            match state {
                TaskState::Running => {
                    let held = self.leases.of_task(idx);
                    if let Some(lease) = held.and_then(|id| self.leases.remove(&id)) {
                        self.cancelled.insert(lease.id, idx);
                        events.push(SchedEvent::AttemptCancelled {
                            task: self.tasks[idx].key.clone(),
                            instance: lease.instance,
                            lease: lease.id,
                            reason: reason.clone(),
                        });
                    }
                }
                // A Ready task is queued, or waits out a retry backoff.
                TaskState::Ready if !self.ready.remove(&agent, idx) => {
                    self.delayed.retain(|&(_, _, i)| i != idx);
                }
                _ => {}
            }
            self.finish(idx, TaskState::Cancelled, reason.clone(), now, &mut events);
        }
        Ok(events)
    }

    fn declared(&self, agent: &str) -> Result<(), Refused> {
        match self.spec(agent) {
            Some(_) => Ok(()),
            None => Err(Refused::NotFound(format!(
                "agent {agent:?} is not declared in the config"
            ))),
        }
    }

    /// Suspends `agent`: no new dispatch, and its leases' deadlines stop until it resumes.
    pub fn suspend(&mut self, agent: &str, by: &str) -> Result<Vec<SchedEvent>, Refused> {
        self.declared(agent)?;
        if self.killed.contains_key(agent) {
            return Err(Refused::Conflict(format!(
                "agent {agent} was killed; resume it first"
            )));
        }
        self.suspended.insert(agent.to_owned());
        self.dirty.control(agent);
        for id in self.leases_of(agent) {
            self.leases.update(&id, |l| l.paused = true);
        }
        Ok(vec![SchedEvent::AgentControlled {
            agent: agent.to_owned(),
            action: AgentAction::Suspend,
            by: by.to_owned(),
        }])
    }

    /// Resumes a suspended agent (its leases get a fresh deadline) or a killed one (answers
    /// `true`: the caller restarts its instances).
    pub fn resume(
        &mut self,
        agent: &str,
        by: &str,
        now: Instant,
    ) -> Result<(bool, Vec<SchedEvent>), Refused> {
        self.declared(agent)?;
        let was_killed = self.killed.remove(agent).is_some();
        self.suspended.remove(agent);
        self.dirty.control(agent);
        let grace = self.cfg.runtime.lease_grace;
        let timeout = self
            .spec(agent)
            .map_or(Duration::from_secs(60), |a| a.timeout);
        for id in self.leases_of(agent) {
            self.leases.update(&id, |l| {
                if l.paused {
                    l.paused = false;
                    l.deadline = later(now, timeout + grace);
                }
            });
        }
        Ok((
            was_killed,
            vec![SchedEvent::AgentControlled {
                agent: agent.to_owned(),
                action: AgentAction::Resume,
                by: by.to_owned(),
            }],
        ))
    }

    /// Kills `agent`: its running tasks come back as failed attempts, and they and its
    /// queued tasks move to their fallback (or fail, naming the kill).
    pub fn kill(
        &mut self,
        agent: &str,
        by: &str,
        now: Instant,
    ) -> Result<Vec<SchedEvent>, Refused> {
        self.declared(agent)?;
        if self.killed.contains_key(agent) {
            return Err(Refused::Conflict(format!(
                "agent {agent} is already killed"
            )));
        }
        let why = format!("agent {agent} was killed by {by}");
        self.killed.insert(agent.to_owned(), why.clone());
        self.suspended.remove(agent);
        self.dirty.control(agent);
        self.idle.remove(agent);
        let mut events = vec![SchedEvent::AgentControlled {
            agent: agent.to_owned(),
            action: AgentAction::Kill,
            by: by.to_owned(),
        }];
        for lease in self.leases_of(agent) {
            let outcome = Outcome::Failed {
                reason: why.clone(),
                retryable: true,
                retry_after: None,
            };
            self.settle(lease, outcome, Usage::default(), now, &mut events);
        }
        let mut queued = self.ready.drain_agent(agent);
        let delayed: Vec<(Instant, u64, usize)> = self
            .delayed
            .iter()
            .filter(|&&(_, _, i)| self.tasks[i].current_agent == agent)
            .copied()
            .collect();
        for entry in delayed {
            self.delayed.remove(&entry);
            queued.push(entry.2);
        }
        for idx in queued {
            self.tasks[idx]
                .last_error
                .get_or_insert_with(|| why.clone());
            self.fall_back_or_fail(idx, now, &mut events);
        }
        Ok(events)
    }

    /// The live leases of `agent`'s instances (a walk over every lease: control actions are
    /// rare, unlike the events the lease indexes serve).
    fn leases_of(&self, agent: &str) -> Vec<LeaseId> {
        self.leases
            .iter()
            .filter(|l| &*l.instance.agent == agent)
            .map(|l| l.id)
            .collect()
    }

    /// Adds a task to the workflow of the running task `parent` (`workflow/task`).
    pub fn spawn(
        &mut self,
        parent: &str,
        req: SpawnRequest,
        now: Instant,
    ) -> Result<(TaskKey, Vec<SchedEvent>), SpawnError> {
        if let Some(&done) = req.call.as_ref().and_then(|c| self.spawn_calls.get(c)) {
            // The same call made again (its attempt resumed after a restart): the task it
            // spawned the first time.
            return Ok((self.tasks[done].key.clone(), Vec::new()));
        }
        let p = parent
            .split_once('/')
            .map(|(w, t)| TaskKey {
                workflow: w.to_owned(),
                task: t.to_owned(),
            })
            .and_then(|k| self.index.get(&k).copied())
            .filter(|&i| self.tasks[i].state == TaskState::Running)
            .ok_or_else(|| SpawnError::NotRunning(parent.to_owned()))?;
        let w = self.tasks[p].workflow;
        let wf_id = self.workflows[w].id.clone();
        if self.workflows[w].finished.is_some() || self.workflows[w].cancelled_by.is_some() {
            return Err(SpawnError::Closed(wf_id));
        }
        if self.spec(&req.agent).is_none() {
            return Err(SpawnError::UnknownAgent(req.agent));
        }
        let limits = self.cfg.runtime.spawn;
        let depth = self.tasks[p].depth;
        if depth >= limits.max_depth {
            return Err(SpawnError::TooDeep {
                task: parent.to_owned(),
                depth,
                limit: limits.max_depth,
            });
        }
        if self.workflows[w].spawned >= limits.max_tasks_per_workflow {
            return Err(SpawnError::TooMany {
                workflow: wf_id,
                limit: limits.max_tasks_per_workflow,
            });
        }
        let downstream = self.downstream_of(p);
        let mut deps = Vec::new();
        let mut seen = HashSet::new();
        for d in &req.depends_on {
            let key = TaskKey {
                workflow: wf_id.clone(),
                task: d.clone(),
            };
            let i = *self
                .index
                .get(&key)
                .ok_or_else(|| SpawnError::UnknownDependency(d.clone()))?;
            if downstream.contains(&i) {
                return Err(SpawnError::Cycle(d.clone()));
            }
            if seen.insert(i) {
                deps.push(i);
            }
        }
        match template::references(&req.input) {
            Ok(refs) => {
                if let Some(r) = refs
                    .iter()
                    .find(|r| !req.depends_on.iter().any(|d| d == *r))
                {
                    return Err(SpawnError::Template(format!(
                        "references {{{{{r}}}}}, but \"{r}\" is not in depends_on"
                    )));
                }
            }
            Err(e) => return Err(SpawnError::Template(e)),
        }
        let n = self.tasks[p].spawned + 1;
        let id = format!("{}.{n}", self.tasks[p].key.task);
        let spec = TaskSpec {
            id: id.clone(),
            agent: req.agent.clone(),
            input: req.input,
            depends_on: req.depends_on,
            priority_boost: self.tasks[p].priority_boost,
        };
        let key = TaskKey {
            workflow: wf_id,
            task: id,
        };
        let idx = self.attach_spawned(p, &spec, deps.clone(), req.call);
        let mut events = vec![SchedEvent::TaskSpawned {
            task: key.clone(),
            parent: self.tasks[p].key.clone(),
            agent: req.agent,
            depth: depth + 1,
        }];
        let failed_dep = deps.iter().copied().find(|&d| {
            matches!(
                self.tasks[d].state,
                TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
            )
        });
        if let Some(d) = failed_dep {
            let root = self.tasks[d].key.clone();
            let reason = format!("upstream task {root} failed");
            self.finish(idx, TaskState::Skipped, reason, now, &mut events);
            self.skip_downstream(idx, &root, now, &mut events);
        } else if deps
            .iter()
            .all(|&d| self.tasks[d].state == TaskState::Succeeded)
        {
            self.make_ready(idx, now, &mut events);
        }
        Ok((key, events))
    }

    /// Adds `spec` as a task spawned by task `p`, waiting for `deps` (and making `p`'s
    /// dependents wait for it); answers its index. The task is Pending.
    pub(super) fn attach_spawned(
        &mut self,
        p: usize,
        spec: &TaskSpec,
        deps: Vec<usize>,
        call: Option<String>,
    ) -> usize {
        let w = self.tasks[p].workflow;
        let key = TaskKey {
            workflow: self.workflows[w].id.clone(),
            task: spec.id.clone(),
        };
        let idx = self.tasks.len();
        let mut rec = TaskRecord::new(key.clone(), w, spec, deps.clone());
        rec.spawned_by = Some(self.tasks[p].key.task.clone());
        rec.depth = self.tasks[p].depth + 1;
        rec.spawn_call = call.clone();
        // The spawning task's dependents wait for this one too.
        let waiting = self.tasks[p].dependents.clone();
        rec.dependents = waiting.clone();
        self.tasks.push(rec);
        self.index.insert(key, idx);
        for &d in &deps {
            self.tasks[d].dependents.push(idx);
        }
        for &d in &waiting {
            self.tasks[d].deps.push(idx);
        }
        self.tasks[p].spawned += 1;
        let wf = &mut self.workflows[w];
        wf.tasks.push(idx);
        wf.spawned += 1;
        wf.open += 1;
        self.counts[state_slot(TaskState::Pending)] += 1;
        if let Some(c) = call {
            self.spawn_calls.insert(c, idx);
        }
        self.dirty.task(idx);
        self.dirty.task(p);
        self.dirty.workflow(w);
        idx
    }

    /// Every task that waits, directly or not, for task `idx`.
    fn downstream_of(&self, idx: usize) -> HashSet<usize> {
        let mut out = HashSet::new();
        let mut stack = self.tasks[idx].dependents.clone();
        while let Some(d) = stack.pop() {
            if out.insert(d) {
                stack.extend(self.tasks[d].dependents.iter().copied());
            }
        }
        out
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
