//! Who runs next, and who gives way: the ordering policies across agents and workflows
//! (`runtime.scheduling.policy`), the effective concurrency limit, and preemption.
//!
//! - `priority`: the best head of every agent's ready queue (effective priority, FIFO).
//! - `fair_share`: weighted fair share of tokens by stride scheduling
//!   ([`FairShare`](crate::policy::fair::FairShare)); the flow is the agent or the workflow.
//!   Each dispatch charges its flow an estimate, corrected when the attempt reports.
//! - `least_attained_service`: the task whose workflow used the fewest tokens so far, by
//!   service level ([`level`](crate::policy::las::level)); priority and FIFO within a level.
//!
//! Policies that look past the head of an agent's queue (fair share by workflow, LAS) scan
//! the ready tasks of the agents that have an idle instance: O(ready tasks) per dispatch.
//!
//! Preemption (`runtime.scheduling.preemption`): when a ready task cannot start because every
//! slot it could use is taken (the concurrency limit, or every instance of its agent busy),
//! the running attempt of lowest base priority that is at least `priority_gap` points worse
//! than the waiting task's effective priority is asked to give way. The agent honours the
//! request at its next step boundary once its slice is used; a request no longer justified is
//! withdrawn.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::{LeaseId, SchedEvent, SchedulerCore};
use crate::config::quota::{SchedPolicy, ShareBy};
use crate::llm::Usage;
use crate::model::InstanceId;
use crate::policy::fair::FairShare;
use crate::policy::las;

/// Tokens a flow is charged at dispatch before it has a history of its own.
const DEFAULT_ESTIMATE: u64 = 1000;

/// The policy state of the scheduler core.
#[derive(Debug)]
pub(super) struct Share {
    policy: SchedPolicy,
    by: ShareBy,
    quantum: u64,
    fair: Option<FairShare>,
    /// The effective concurrency limit and why it is what it is.
    pub(super) limit: usize,
    pub(super) limit_reason: String,
    /// Leases asked to give way, with the reason sent.
    pub(super) flagged: HashMap<LeaseId, String>,
}

impl Share {
    pub(super) fn new(cfg: &crate::config::Config) -> Self {
        let s = &cfg.runtime.scheduling;
        let fair = (s.policy == SchedPolicy::FairShare).then(|| {
            let mut f = FairShare::new(DEFAULT_ESTIMATE);
            match s.fair_share_by {
                ShareBy::Agent => {
                    for a in &cfg.agents {
                        f.set_weight(&a.name, a.weight);
                    }
                }
                ShareBy::Workflow => {
                    for w in &cfg.workflows {
                        f.set_weight(&w.name, w.weight);
                    }
                }
            }
            f
        });
        Self {
            policy: s.policy,
            by: s.fair_share_by,
            quantum: s.las_quantum_tokens.max(1),
            fair,
            limit: cfg.runtime.max_concurrency,
            limit_reason: "configured max_concurrency".into(),
            flagged: HashMap::new(),
        }
    }
}

/// One dispatch choice: the agent and the task index.
type Choice = (String, usize);

impl SchedulerCore {
    /// The effective concurrency limit now, and why.
    pub fn concurrency(&self) -> (usize, &str) {
        (self.share.limit, &self.share.limit_reason)
    }

    /// Sets the effective concurrency limit (resource pressure), within
    /// `1..=max_concurrency`. Running attempts are not stopped when it drops: no new ones
    /// start until the count is below it.
    pub fn set_concurrency(&mut self, limit: usize, reason: impl Into<String>) {
        self.share.limit = limit.clamp(1, self.cfg.runtime.max_concurrency.max(1));
        self.share.limit_reason = reason.into();
    }

    /// The instances whose LLM call the quota gate holds now: their leases stop running out
    /// while held, and a lease released is given the time it was held.
    ///
    /// O(held now + held before), not a walk over every lease: the actor asks on every event.
    pub fn hold_leases(&mut self, held: &HashSet<InstanceId>, now: Instant) {
        let released: Vec<LeaseId> = self
            .leases
            .held()
            .filter(|id| {
                self.leases
                    .get(id)
                    .is_some_and(|l| !held.contains(&l.instance))
            })
            .collect();
        for id in released {
            self.leases.update(&id, |l| {
                if let Some(since) = l.held_since.take() {
                    l.deadline += now.saturating_duration_since(since);
                }
            });
        }
        for instance in held {
            let Some(id) = self.leases.of_instance(instance) else {
                continue;
            };
            if self.leases.get(&id).is_some_and(|l| l.held_since.is_none()) {
                self.leases.update(&id, |l| l.held_since = Some(now));
            }
        }
    }

    /// The fair-share flows: (flow, weight, tokens served), when fair share is on.
    pub fn shares(&self) -> Vec<(String, f64, u64)> {
        self.share
            .fair
            .as_ref()
            .map_or_else(Vec::new, FairShare::shares)
    }

    /// A workflow's weight (submitted workflows carry their own).
    pub(super) fn register_flow(&mut self, workflow: usize) {
        if self.share.by != ShareBy::Workflow {
            return;
        }
        let (id, weight) = {
            let w = &self.workflows[workflow];
            (w.id.clone(), w.spec.weight)
        };
        if let Some(f) = &mut self.share.fair {
            f.set_weight(&id, weight);
        }
    }

    /// A finished workflow is no fair-share flow any more (their number stays bounded).
    pub(super) fn forget_flow(&mut self, workflow: usize) {
        if self.share.by != ShareBy::Workflow {
            return;
        }
        let id = self.workflows[workflow].id.clone();
        if let Some(f) = &mut self.share.fair {
            f.remove(&id);
        }
    }

    /// The next task to dispatch and its agent, by the configured policy, among agents with
    /// an idle instance (and not suspended).
    pub(super) fn choose(&mut self) -> Option<Choice> {
        if self.share.policy == SchedPolicy::Priority {
            // The hot path: the best queue head, no allocation but the chosen name.
            return self
                .idle
                .iter()
                .filter(|(agent, q)| {
                    !q.is_empty()
                        && (self.suspended.is_empty() || !self.suspended.contains(agent.as_str()))
                })
                .filter_map(|(agent, _)| self.ready.peek(agent).map(|(k, idx)| (k, agent, idx)))
                .min()
                .map(|(_, agent, idx)| (agent.clone(), idx));
        }
        let candidates: Vec<&String> = self
            .idle
            .iter()
            .filter(|(agent, q)| {
                !q.is_empty()
                    && (self.suspended.is_empty() || !self.suspended.contains(agent.as_str()))
                    && self.ready.peek(agent).is_some()
            })
            .map(|(agent, _)| agent)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        match (self.share.policy, self.share.by) {
            // Answered above, without building the candidate list.
            (SchedPolicy::Priority, _) => None,
            (SchedPolicy::FairShare, ShareBy::Agent) => {
                let names: Vec<String> = candidates.into_iter().cloned().collect();
                // Agents with work but no free instance keep their place meanwhile.
                let waiting = self.ready_agents();
                let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
                let fair = self.share.fair.as_mut()?;
                let agent = fair
                    .pick_backlogged(names.iter().map(String::as_str), &waiting)?
                    .to_owned();
                let (_, idx) = self.ready.peek(&agent)?;
                Some((agent, idx))
            }
            (SchedPolicy::FairShare, ShareBy::Workflow) => {
                let names: Vec<String> = candidates.into_iter().cloned().collect();
                let mut flows = HashSet::new();
                for a in &names {
                    for (_, idx) in self.ready.iter(a) {
                        flows.insert(self.workflows[self.tasks[idx].workflow].id.clone());
                    }
                }
                let mut flows: Vec<String> = flows.into_iter().collect();
                flows.sort();
                // Workflows with ready tasks whose agents have no free instance.
                let mut waiting: BTreeSet<String> = BTreeSet::new();
                for a in self.ready_agents() {
                    for (_, idx) in self.ready.iter(&a) {
                        waiting.insert(self.workflows[self.tasks[idx].workflow].id.clone());
                    }
                }
                let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
                let fair = self.share.fair.as_mut()?;
                let flow = fair
                    .pick_backlogged(flows.iter().map(String::as_str), &waiting)?
                    .to_owned();
                names
                    .iter()
                    .flat_map(|a| self.ready.iter(a).map(move |(k, idx)| (k, a, idx)))
                    .filter(|&(_, _, idx)| self.workflows[self.tasks[idx].workflow].id == flow)
                    .min()
                    .map(|(_, a, idx)| (a.clone(), idx))
            }
            (SchedPolicy::LeastAttainedService, _) => candidates
                .into_iter()
                .flat_map(|a| self.ready.iter(a).map(move |(k, idx)| (k, a, idx)))
                .map(|(k, a, idx)| {
                    let attained = self.workflows[self.tasks[idx].workflow].attained;
                    ((las::level(attained, self.share.quantum), k), a, idx)
                })
                .min()
                .map(|(_, a, idx)| (a.clone(), idx)),
        }
    }

    /// The fair-share flow of task `idx`, when fair share is on.
    fn flow(&self, idx: usize) -> Option<String> {
        self.share.fair.as_ref()?;
        Some(match self.share.by {
            ShareBy::Agent => self.tasks[idx].current_agent.clone(),
            ShareBy::Workflow => self.workflows[self.tasks[idx].workflow].id.clone(),
        })
    }

    /// Charges the flow of a task being dispatched its estimate; answers the charge.
    pub(super) fn charge_dispatch(&mut self, idx: usize) -> u64 {
        let Some(flow) = self.flow(idx) else {
            return 0;
        };
        self.share.fair.as_mut().map_or(0, |f| f.begin(&flow))
    }

    /// Credits the service of a report: `fresh` is the usage not credited before (a run that
    /// continues a yielded attempt reports the journaled usage again).
    pub(super) fn credit_service(&mut self, idx: usize, charged: u64, fresh: Usage) {
        let tokens = fresh.total();
        let wf = self.tasks[idx].workflow;
        self.workflows[wf].attained = self.workflows[wf].attained.saturating_add(tokens);
        if let Some(flow) = self.flow(idx) {
            if let Some(f) = self.share.fair.as_mut() {
                f.end(&flow, charged, tokens);
            }
        }
    }

    /// Asks running attempts to give way to better waiting tasks, and withdraws requests no
    /// longer justified. Called after each dispatch round.
    pub(super) fn preempt(&mut self, now: Instant, events: &mut Vec<SchedEvent>) {
        let Some(spec) = self.cfg.runtime.scheduling.preemption.as_ref() else {
            return;
        };
        let gap = i64::from(spec.priority_gap);
        let mut wanted: HashMap<LeaseId, String> = HashMap::new();
        if !self.draining {
            // The best waiting task of each agent that is ready but cannot start.
            let global_full = self.leases.len() >= self.share.limit;
            let mut waiting: Vec<(i64, String, usize)> = self
                .ready_agents()
                .into_iter()
                .filter(|a| global_full || self.idle.get(a).is_none_or(|q| q.is_empty()))
                .filter_map(|a| {
                    let ((key, _), idx) = self.ready.peek(&a)?;
                    Some((self.ready.effective(key, now), a, idx))
                })
                .collect();
            waiting.sort_by_key(|w| std::cmp::Reverse(w.0));
            // Candidates worst first: lowest priority, then running longest (the most likely
            // to have used its slice), from the lease table's index (kept ordered, not sorted
            // per call); each waiting task takes the first that fits.
            let mut taken: HashSet<LeaseId> = HashSet::new();
            for (prio, agent, idx) in waiting {
                let victim = self
                    .leases
                    .victims()
                    .take_while(|v| i64::from(v.priority) + gap <= prio)
                    .find(|v| {
                        !taken.contains(&v.id) && (global_full || *v.instance.agent == *agent)
                    })
                    .map(|v| (v.id, v.priority));
                let Some((lease, victim_prio)) = victim else {
                    continue;
                };
                taken.insert(lease);
                let reason = format!(
                    "task {} (effective priority {prio}) waits; this one has priority {victim_prio}",
                    self.tasks[idx].key
                );
                wanted.insert(lease, reason);
            }
        }
        let withdrawn: Vec<LeaseId> = self
            .share
            .flagged
            .keys()
            .filter(|l| !wanted.contains_key(l))
            .copied()
            .collect();
        for lease in withdrawn {
            self.share.flagged.remove(&lease);
            self.preempt_event(lease, None, events);
        }
        for (lease, reason) in wanted {
            if self.share.flagged.contains_key(&lease) {
                continue;
            }
            self.share.flagged.insert(lease, reason.clone());
            self.preempt_event(lease, Some(reason), events);
        }
    }

    fn preempt_event(&self, lease: LeaseId, reason: Option<String>, events: &mut Vec<SchedEvent>) {
        if let Some(l) = self.leases.get(&lease) {
            events.push(SchedEvent::PreemptRequested {
                task: self.tasks[l.task].key.clone(),
                instance: l.instance.clone(),
                lease,
                reason,
            });
        }
    }

    /// Agents (not suspended) with ready tasks.
    fn ready_agents(&self) -> Vec<String> {
        self.ready
            .agents()
            .filter(|a| self.suspended.is_empty() || !self.suspended.contains(*a))
            .map(str::to_owned)
            .collect()
    }

    /// Agent priority + task boost.
    pub(super) fn base_priority(&self, idx: usize) -> i32 {
        let t = &self.tasks[idx];
        let base = self
            .spec(&t.current_agent)
            .map(|a| a.priority as i32)
            .unwrap_or(50);
        base + t.priority_boost as i32
    }
}
