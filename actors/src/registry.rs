//! Where actors find each other. Addresses change when a supervisor restarts a child, so
//! nobody keeps another actor's `Addr` for long: they look it up here at send time.

use std::sync::{Arc, Mutex, RwLock};

use actix::prelude::*;
use agentos_runtime::model::{ControlBlock, InstanceId};
use dashmap::DashMap;
use tokio::sync::watch;

use agentos_runtime::context::SharedStats;

use crate::bus::MessageBus;
use crate::pager::ContextPager;
use crate::scheduler::Scheduler;
use crate::supervisor::Supervisor;

/// Shared, live view of the actor system.
#[derive(Debug)]
pub struct Registry {
    scheduler: RwLock<Option<Addr<Scheduler>>>,
    bus: RwLock<Option<Addr<MessageBus>>>,
    pager: RwLock<Option<Addr<ContextPager>>>,
    /// Paging statistics by agent (updated by the context pager, read by reports).
    pub pager_stats: SharedStats,
    agent_supervisor: RwLock<Option<Addr<Supervisor>>>,
    /// Current address of every agent instance.
    pub agent_addrs: DashMap<InstanceId, Addr<crate::agent::Agent>>,
    /// Control blocks of every agent instance, updated by the agents themselves.
    pub agents: DashMap<InstanceId, Arc<Mutex<ControlBlock>>>,
    /// Becomes `true` when every task reached a terminal state.
    pub done: watch::Sender<bool>,
    /// Set when the root supervisor gave up.
    pub fatal: watch::Sender<Option<String>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            scheduler: RwLock::new(None),
            bus: RwLock::new(None),
            pager: RwLock::new(None),
            pager_stats: SharedStats::default(),
            agent_supervisor: RwLock::new(None),
            agent_addrs: DashMap::new(),
            agents: DashMap::new(),
            done: watch::channel(false).0,
            fatal: watch::channel(None).0,
        }
    }
}

fn read<T: Clone>(lock: &RwLock<Option<T>>) -> Option<T> {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn write<T>(lock: &RwLock<Option<T>>, value: T) {
    *lock.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
}

impl Registry {
    /// The scheduler's current address.
    pub fn scheduler(&self) -> Option<Addr<Scheduler>> {
        read(&self.scheduler)
    }
    /// Records the scheduler's address (on every start).
    pub fn set_scheduler(&self, addr: Addr<Scheduler>) {
        write(&self.scheduler, addr);
    }
    /// The bus's current address.
    pub fn bus(&self) -> Option<Addr<MessageBus>> {
        read(&self.bus)
    }
    /// Records the bus's address.
    pub fn set_bus(&self, addr: Addr<MessageBus>) {
        write(&self.bus, addr);
    }
    /// The context pager's current address.
    pub fn pager(&self) -> Option<Addr<ContextPager>> {
        read(&self.pager)
    }
    /// Records the context pager's address.
    pub fn set_pager(&self, addr: Addr<ContextPager>) {
        write(&self.pager, addr);
    }
    /// The agent supervisor's current address.
    pub fn agent_supervisor(&self) -> Option<Addr<Supervisor>> {
        read(&self.agent_supervisor)
    }
    /// Records the agent supervisor's address.
    pub fn set_agent_supervisor(&self, addr: Addr<Supervisor>) {
        write(&self.agent_supervisor, addr);
    }
    /// Snapshot of every control block, sorted by instance.
    pub fn control_blocks(&self) -> Vec<ControlBlock> {
        let mut out: Vec<ControlBlock> = self
            .agents
            .iter()
            .map(|e| e.value().lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
