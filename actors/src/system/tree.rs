//! The supervisor tree, assembled from each actor module's `child_spec()`.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use agentos_runtime::config::{Config, SupervisorSettings};
use agentos_runtime::policy::supervision::{RestartType, Strategy};
use agentos_runtime::trace::Trace;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::agent::AgentInstances;
use crate::board::Board;
use crate::child::{ChildHandle, ChildSpec, ExitNotice};
use crate::pager::WorkerConfig;
use crate::protocol::{AgentSupervisorPorts, BusPorts, KvPorts, PagerPorts, SchedulerPorts};
use crate::scheduler::{SchedulerLinks, SchedulerState};
use crate::supervisor::Supervisor;

/// Every port of the system, created once at boot and bound by each actor's start function.
#[derive(Debug, Clone, Default)]
pub struct SystemPorts {
    /// The scheduler.
    pub scheduler: SchedulerPorts,
    /// The context pager.
    pub pager: PagerPorts,
    /// The context pager's worker, which agents queue their requests on directly.
    pub pager_worker: crate::pager::WorkerLink,
    /// The KV-cache pool.
    pub kv: KvPorts,
    /// The message bus.
    pub bus: BusPorts,
    /// The agent supervisor.
    pub agents: AgentSupervisorPorts,
}

/// What the tree is built from.
pub struct TreeParts {
    /// The config.
    pub cfg: Arc<Config>,
    /// Ports.
    pub ports: SystemPorts,
    /// The board.
    pub board: Arc<Board>,
    /// The trace.
    pub trace: Trace,
    /// The scheduler's state (outlives its incarnations).
    pub scheduler: Arc<Mutex<SchedulerState>>,
    /// The pager's worker settings.
    pub pager: WorkerConfig,
    /// The pager's worker, which the scheduler and the bus store through too.
    pub store: crate::pager::Worker,
    /// The instances of every agent.
    pub agents: Vec<AgentInstances>,
    /// Prometheus handle for the monitor's upkeep.
    pub prometheus: Option<PrometheusHandle>,
    /// While set, every start of the KV pool tracks the unbounded-cache upper bound.
    pub kv_upper_bound: Arc<AtomicBool>,
    /// Restarts performed by the agent supervisor.
    pub agent_restarts: Arc<AtomicU64>,
    /// Where the bus keeps its inboxes.
    pub bus_store: Option<crate::bus::BusStore>,
}

/// Starts the root supervisor over the whole tree.
pub fn start(parts: TreeParts) -> Addr<Supervisor> {
    let settings = parts.cfg.runtime.supervisor;
    let TreeParts {
        cfg,
        ports,
        board,
        trace,
        scheduler,
        pager,
        store,
        agents,
        prometheus,
        kv_upper_bound,
        agent_restarts,
        bus_store,
    } = parts;
    let bus_agents: Vec<(String, Vec<String>)> = cfg
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.subscribe.clone()))
        .collect();
    let links = SchedulerLinks {
        ports: ports.scheduler.clone(),
        agents: ports.agents.clone(),
        board: board.clone(),
        trace: trace.clone(),
    };
    let children = vec![
        crate::bus::child_spec(bus_agents, ports.bus.clone(), bus_store),
        crate::kvpool::child_spec(cfg.clone(), ports.kv.clone(), kv_upper_bound),
        crate::pager::child_spec(
            pager,
            trace.clone(),
            ports.pager.clone(),
            ports.pager_worker.clone(),
            store,
        ),
        crate::monitor::child_spec(
            prometheus,
            cfg.runtime
                .scheduling
                .adaptive
                .is_some()
                .then(|| ports.scheduler.pressure.clone()),
        ),
        crate::scheduler::child_spec(scheduler, links),
        agent_supervisor(settings, agents, ports.clone(), agent_restarts),
    ];
    let fatal = board.clone();
    Supervisor::new(
        "root",
        Strategy::OneForOne,
        settings,
        children,
        ExitNotice::detached(),
    )
    .on_give_up(move |why| {
        fatal.fatal.send_replace(Some(why));
    })
    .start()
}

/// The agent supervisor: one_for_one over every agent instance; restarts rebuild agents from
/// their agent's environment.
fn agent_supervisor(
    settings: SupervisorSettings,
    agents: Vec<AgentInstances>,
    ports: SystemPorts,
    restarts: Arc<AtomicU64>,
) -> ChildSpec {
    // One follower of each agent's suspend switch for the tree's life, whichever incarnation
    // of the agent supervisor runs its instances.
    for a in &agents {
        actix::spawn(crate::agent::follow_switch(a));
    }
    let agents = Arc::new(agents);
    ChildSpec::new(
        "agents",
        "agent_supervisor",
        RestartType::Permanent,
        move |notice| {
            let children = agents
                .iter()
                .map(|a| crate::agent::child_spec(a.clone(), ports.scheduler.down.clone()))
                .collect();
            let sup = Supervisor::new("agents", Strategy::OneForOne, settings, children, notice)
                .count_restarts_in(restarts.clone());
            let addr = sup.start();
            ports.agents.bind(&addr);
            ChildHandle::supervisor(addr)
        },
    )
}
