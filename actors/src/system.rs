//! Booting the actor tree from a validated config, and shutting it down.
//!
//! ```text
//! RootSupervisor (one_for_one)
//! ├── MessageBus
//! ├── KvCachePool       (restarts with empty caches, like a restarted engine)
//! ├── ContextPager      (page tables; swap to the SQLite store)
//! ├── ResourceMonitor
//! ├── Scheduler
//! └── AgentSupervisor (one_for_one)
//!     └── Agent × (replicas of every declared agent)
//! ```
//!
//! [`boot`] must run inside an actix `System`. It builds the backends, prepares workspaces
//! (copies them into this run's folder under the data directory when the config asks), starts
//! the tree, and returns a [`RunningSystem`] to wait on and shut down. It opens (creating and
//! migrating) the store `<data_dir>/store.db` and writes this run's row first, so a store that
//! cannot be opened or written is a start-up error, never a failure mid-run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use agentos_runtime::config::{BackendKind, Config};
use agentos_runtime::kvcache::BackendStats;
use agentos_runtime::llm::openai::OpenAiBackend;
use agentos_runtime::llm::sim::SimBackend;
use agentos_runtime::llm::LlmBackend;
use agentos_runtime::model::InstanceId;
use agentos_runtime::policy::supervision::{RestartType, Strategy};
use agentos_runtime::sched::SchedulerCore;
use agentos_runtime::tools::{ToolContext, ToolRegistry};
use agentos_runtime::trace::Trace;
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::agent::{child_id, Agent, AgentEnv, StopAgent};
use crate::bus::{BusHandle, MessageBus, StopBus};
use crate::kvpool::{GetKvStats, KvCachePool, KvClient, PoolSlot, StopKvPool};
use crate::monitor::{ResourceMonitor, StopMonitor};
use crate::pager::{ContextPager, StopPager, WorkerConfig};
use crate::registry::Registry;
use crate::scheduler::{AgentDown, CancelAll, Drain, GetSnapshot, RunSnapshot, Scheduler};
use crate::supervisor::{ChildHandle, ChildSpec, ExitNotice, StopTree, Supervisor};

/// Options that come from the command line rather than the config.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Write the JSON-lines trace here.
    pub trace: Option<PathBuf>,
    /// Overrides `runtime.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Prometheus handle, for upkeep by the resource monitor.
    pub prometheus: Option<PrometheusHandle>,
}

/// A booted system.
pub struct RunningSystem {
    /// The config it runs.
    pub cfg: Arc<Config>,
    /// Live addresses and state.
    pub registry: Arc<Registry>,
    /// The root supervisor.
    pub root: Addr<Supervisor>,
    /// The trace.
    pub trace: Trace,
    /// This run's folder under the data directory.
    pub run_dir: PathBuf,
    /// Names of backends that are simulators.
    pub simulated_backends: Vec<String>,
    /// Restarts performed by the agent supervisor.
    pub agent_restarts: Arc<AtomicU64>,
    /// Where the KV-cache pool is (its address changes when it restarts).
    pub kv_pool: PoolSlot,
    /// The store file (`<data_dir>/store.db`).
    pub store_path: PathBuf,
    /// This run's id: the key of its rows in the store (the run folder's name).
    pub run_id: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task reached a terminal state.
    Completed,
    /// Shut down by a signal; unfinished tasks were cancelled.
    Interrupted,
    /// The root supervisor gave up.
    Fatal(String),
}

/// Builds every backend named in the config.
pub fn build_backends(cfg: &Config) -> anyhow::Result<HashMap<String, Arc<dyn LlmBackend>>> {
    let mut out: HashMap<String, Arc<dyn LlmBackend>> = HashMap::new();
    for b in &cfg.backends {
        let backend: Arc<dyn LlmBackend> = match &b.kind {
            BackendKind::OpenAi(s) => Arc::new(
                OpenAiBackend::new(&b.name, s.clone())
                    .with_context(|| format!("backend \"{}\"", b.name))?,
            ),
            BackendKind::Sim(s) => {
                let behaviours = cfg
                    .agents
                    .iter()
                    .filter(|a| a.backend == b.name)
                    .map(|a| (a.name.clone(), a.sim.clone()))
                    .collect();
                Arc::new(
                    SimBackend::new(&b.name, s.clone(), behaviours).with_prefix_cache(
                        b.tokenizer,
                        &b.cache,
                        b.replicas,
                    ),
                )
            }
        };
        out.insert(b.name.clone(), backend);
    }
    Ok(out)
}

/// Boots the actor tree. Must be called from inside a running actix `System`.
pub fn boot(cfg: Arc<Config>, opts: BootOptions) -> anyhow::Result<RunningSystem> {
    let backends = build_backends(&cfg)?;
    let simulated_backends: Vec<String> = cfg
        .backends
        .iter()
        .filter(|b| matches!(b.kind, BackendKind::Sim(_)))
        .map(|b| b.name.clone())
        .collect();
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| cfg.runtime.data_dir.clone());
    let run_dir = new_run_dir(&data_dir)?;
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let store_path = agentos_runtime::store::Store::path_in(&data_dir);
    {
        // Open, migrate and write once now: a bad store fails the start, not a later prompt.
        let store = agentos_runtime::store::Store::open(&store_path)?;
        agentos_runtime::context::StoreSwap::new(store, run_id.clone())?;
    }
    let workspaces = prepare_workspaces(&cfg, &run_dir)?;
    let trace = match &opts.trace {
        Some(p) => Trace::to_file(p)
            .with_context(|| format!("cannot create trace file {}", p.display()))?,
        None => Trace::disabled(),
    };
    trace.emit(
        "run_started",
        serde_json::json!({"config": cfg.source.as_ref().map(|p| p.display().to_string()),
                           "run_dir": run_dir.display().to_string(),
                           "simulated_backends": simulated_backends}),
    );
    let registry = Arc::new(Registry::default());
    let core = Arc::new(Mutex::new(SchedulerCore::new(cfg.clone(), Instant::now())));
    let tools = ToolRegistry::builtin();
    let bus_port: Arc<dyn agentos_runtime::tools::BusPort> =
        Arc::new(BusHandle::new(registry.clone()));
    let agent_restarts = Arc::new(AtomicU64::new(0));
    let kv_pool = PoolSlot::default();
    let kv_clients: HashMap<String, KvClient> = cfg
        .backends
        .iter()
        .map(|b| (b.name.clone(), KvClient::new(kv_pool.clone(), b)))
        .collect();

    // Agent environments, built once; restarts reuse them.
    let mut envs: Vec<Arc<AgentEnv>> = Vec::new();
    for a in &cfg.agents {
        let spec = Arc::new(a.clone());
        let backend = backends
            .get(&a.backend)
            .cloned()
            .with_context(|| format!("agent \"{}\": backend \"{}\" missing", a.name, a.backend))?;
        let workspace = a.workspace.as_ref().map(|w| {
            workspaces
                .get(&w.root)
                .cloned()
                .unwrap_or_else(|| w.root.clone())
        });
        for replica in 0..a.replicas {
            let tool_ctx = ToolContext {
                agent: a.name.clone(),
                task: String::new(),
                workspace: workspace.clone(),
                command_allowlist: Arc::new(a.commands.clone()),
                command: Arc::new(cfg.tools.command.clone()),
                files: Arc::new(cfg.tools.files.clone()),
                bus: Some(bus_port.clone()),
            };
            envs.push(Arc::new(AgentEnv {
                spec: spec.clone(),
                instance: InstanceId {
                    agent: a.name.clone(),
                    replica,
                },
                backend: backend.clone(),
                kv: kv_clients.get(&a.backend).cloned(),
                tools: tools.clone(),
                tool_ctx,
                registry: registry.clone(),
                trace: trace.clone(),
                tokenizer: cfg
                    .backend(&a.backend)
                    .map(|b| b.tokenizer)
                    .unwrap_or_default(),
            }));
        }
    }
    let envs = Rc::new(envs);
    let settings = cfg.runtime.supervisor;

    let agent_children = {
        let envs = envs.clone();
        let registry = registry.clone();
        move || -> Vec<ChildSpec> {
            envs.iter()
                .map(|env| {
                    let env = env.clone();
                    let down_registry = registry.clone();
                    let instance = env.instance.clone();
                    ChildSpec::new(
                        child_id(&env.instance),
                        "agent",
                        RestartType::Permanent,
                        move |notice| {
                            ChildHandle::stop_with(Agent::new(env.clone(), notice).start(), || {
                                StopAgent
                            })
                        },
                    )
                    .on_exit(move |reason| {
                        if let Some(s) = down_registry.scheduler() {
                            s.do_send(AgentDown {
                                instance: instance.clone(),
                                reason: reason.to_string(),
                            });
                        }
                    })
                })
                .collect()
        }
    };

    let bus_agents: Vec<(String, Vec<String>)> = cfg
        .agents
        .iter()
        .map(|a| (a.name.clone(), a.subscribe.clone()))
        .collect();
    let pager_config = WorkerConfig {
        store_path: store_path.clone(),
        run_id: run_id.clone(),
        settings: cfg
            .agents
            .iter()
            .map(|a| {
                let settings = agentos_runtime::context::ContextSettings {
                    budget_tokens: a.context_budget_tokens,
                    policy: a.context.policy,
                    encoding: cfg
                        .backend(&a.backend)
                        .map(|b| b.tokenizer)
                        .unwrap_or_default(),
                };
                (a.name.clone(), settings)
            })
            .collect(),
        stats: registry.pager_stats.clone(),
    };
    let shares = Arc::new(agentos_runtime::context::shared::implicit_shares(&cfg));
    let root_children = vec![
        ChildSpec::new("bus", "bus", RestartType::Permanent, {
            let registry = registry.clone();
            move |notice| {
                let addr = MessageBus::new(&bus_agents, registry.clone(), notice).start();
                registry.set_bus(addr.clone());
                ChildHandle::stop_with(addr, || StopBus)
            }
        }),
        ChildSpec::new("kv_pool", "kv_pool", RestartType::Permanent, {
            let cfg = cfg.clone();
            let slot = kv_pool.clone();
            move |notice| {
                let mut pool = KvCachePool::new(cfg.clone(), notice);
                if slot.tracks_upper_bound() {
                    pool = pool.with_upper_bound();
                }
                let addr = pool.start();
                slot.set(addr.clone());
                ChildHandle::stop_with(addr, || StopKvPool)
            }
        }),
        ChildSpec::new("pager", "pager", RestartType::Permanent, {
            let registry = registry.clone();
            let trace = trace.clone();
            move |notice| {
                let addr =
                    ContextPager::new(pager_config.clone(), shares.clone(), trace.clone(), notice)
                        .start();
                registry.set_pager(addr.clone());
                ChildHandle::stop_with(addr, || StopPager)
            }
        }),
        ChildSpec::new("monitor", "monitor", RestartType::Permanent, {
            let prometheus = opts.prometheus.clone();
            move |notice| {
                ChildHandle::stop_with(
                    ResourceMonitor::new(prometheus.clone(), notice).start(),
                    || StopMonitor,
                )
            }
        }),
        ChildSpec::new("scheduler", "scheduler", RestartType::Permanent, {
            let registry = registry.clone();
            let trace = trace.clone();
            move |notice| {
                let addr =
                    Scheduler::new(core.clone(), registry.clone(), trace.clone(), notice).start();
                registry.set_scheduler(addr.clone());
                ChildHandle::stop_with(addr, crate::scheduler::StopScheduler::default)
            }
        }),
        ChildSpec::new("agents", "agent_supervisor", RestartType::Permanent, {
            let registry = registry.clone();
            let restarts = agent_restarts.clone();
            move |notice| {
                let sup = Supervisor::new(
                    "agents",
                    Strategy::OneForOne,
                    settings,
                    agent_children(),
                    notice,
                )
                .count_restarts_in(restarts.clone());
                let addr = sup.start();
                registry.set_agent_supervisor(addr.clone());
                ChildHandle::supervisor(addr)
            }
        }),
    ];
    let fatal_registry = registry.clone();
    let root = Supervisor::new(
        "root",
        Strategy::OneForOne,
        settings,
        root_children,
        ExitNotice::detached(),
    )
    .on_give_up(move |why| {
        fatal_registry.fatal.send_replace(Some(why));
    })
    .start();
    Ok(RunningSystem {
        cfg,
        registry,
        root,
        trace,
        run_dir,
        simulated_backends,
        agent_restarts,
        kv_pool,
        store_path,
        run_id,
    })
}

impl RunningSystem {
    /// Waits until every task is terminal, the root gives up, or `interrupt` resolves.
    pub async fn wait(&self, interrupt: impl std::future::Future<Output = ()>) -> RunEnd {
        let mut done = self.registry.done.subscribe();
        let mut fatal = self.registry.fatal.subscribe();
        tokio::select! {
            _ = done.wait_for(|d| *d) => RunEnd::Completed,
            f = fatal.wait_for(|f| f.is_some()) => RunEnd::Fatal(
                f.ok().and_then(|f| f.clone()).unwrap_or_else(|| "root supervisor gave up".into())),
            _ = interrupt => RunEnd::Interrupted,
        }
    }

    /// A snapshot of every task.
    pub async fn snapshot(&self) -> anyhow::Result<RunSnapshot> {
        let scheduler = self
            .registry
            .scheduler()
            .context("scheduler is not running")?;
        scheduler
            .send(GetSnapshot)
            .timeout(Duration::from_secs(5))
            .await
            .context("scheduler did not answer")
    }

    /// The KV-cache pool's figures for every backend, by name (empty if the pool does not
    /// answer within five seconds).
    pub async fn kv_stats(&self) -> BTreeMap<String, BackendStats> {
        let mut out = BTreeMap::new();
        let Some(pool) = self.kv_pool.get() else {
            return out;
        };
        for b in &self.cfg.backends {
            let ask = pool.send(GetKvStats {
                backend: b.name.clone(),
            });
            if let Ok(Ok(Some(stats))) = tokio::time::timeout(Duration::from_secs(5), ask).await {
                out.insert(b.name.clone(), stats);
            }
        }
        out
    }

    /// Graceful shutdown: stop dispatching, give running attempts up to `grace` to finish, then
    /// cancel whatever is left (with `reason`) so every task ends in a terminal state.
    pub async fn drain(&self, grace: Duration, reason: &str) {
        let Some(scheduler) = self.registry.scheduler() else {
            return;
        };
        let deadline = Instant::now() + grace;
        loop {
            let running = scheduler
                .send(Drain)
                .timeout(Duration::from_secs(2))
                .await
                .unwrap_or(0);
            if running == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = scheduler
            .send(CancelAll {
                reason: reason.to_owned(),
            })
            .timeout(Duration::from_secs(2))
            .await;
    }

    /// Stops the actor tree and flushes the trace.
    pub async fn stop(&self) {
        self.root.do_send(StopTree);
        let mut waited = Duration::ZERO;
        while self.root.connected() && waited < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += Duration::from_millis(10);
        }
        self.trace.emit("run_stopped", serde_json::Value::Null);
        if let Err(e) = self.trace.close() {
            tracing::error!(error = %e, "trace file could not be written completely");
        }
    }
}

fn new_run_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = data_dir
        .join("runs")
        .join(format!("{stamp}-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create run folder {}", dir.display()))?;
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// Copies every workspace marked `copy: true` into `run_dir/workspaces/`, once per root.
/// Returns original root -> path to use.
fn prepare_workspaces(cfg: &Config, run_dir: &Path) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
    let mut out = HashMap::new();
    for a in &cfg.agents {
        let Some(w) = &a.workspace else { continue };
        if !w.copy || out.contains_key(&w.root) {
            continue;
        }
        let name = w
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let dest = run_dir
            .join("workspaces")
            .join(format!("{}-{name}", out.len()));
        copy_tree(&w.root, &dest).with_context(|| {
            format!(
                "agent \"{}\": cannot copy workspace {} to {}",
                a.name,
                w.root.display(),
                dest.display()
            )
        })?;
        let dest = std::fs::canonicalize(&dest)?;
        out.insert(w.root.clone(), dest);
    }
    Ok(out)
}

/// Recursive copy of regular files and folders; symlinks are not followed or copied.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            if entry.file_name() == "__pycache__" {
                continue;
            }
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
