//! [`boot`]: from a validated config to a running actor tree.
//!
//! It builds the backends, creates this run's folder, opens (creating and migrating) the store
//! `<data_dir>/store.db` and writes this run's row first, so a store that cannot be opened or
//! written is a start-up error, never a failure mid-run. It copies workspaces, starts the
//! worker arbiters, builds one agent environment per instance (restarts reuse them), creates
//! every port, and starts the tree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use agentos_runtime::agent::{AgentSetup, AgentTools, CallGate, Slice, StepPorts};
use agentos_runtime::config::{BackendKind, Config};
use agentos_runtime::events::agent::AgentMetrics;
use agentos_runtime::events::sandbox::SandboxConfigured;
use agentos_runtime::events::system::RunStarted;
use agentos_runtime::llm::openai::OpenAiBackend;
use agentos_runtime::llm::ratelimit::RateLimitObserver;
use agentos_runtime::llm::sim::SimBackend;
use agentos_runtime::llm::LlmBackend;
use agentos_runtime::model::InstanceId;
use agentos_runtime::sandbox::{self, Sandbox};
use agentos_runtime::sched::AgentStatus;
use agentos_runtime::tools::{BusPort, ToolContext, ToolRegistry};
use agentos_runtime::trace::Trace;
use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;

use super::running::RunningSystem;
use super::tree::{self, SystemPorts, TreeParts};
use super::workspace::prepare_workspaces;
use crate::agent::bus::BusLink;
use crate::agent::prompts::PagerPrompts;
use crate::agent::router::KvRouter;
use crate::agent::sink::AgentSink;
use crate::agent::spawn::SpawnLink;
use crate::agent::{AgentEnv, AgentInstances};
use crate::board::Board;
use crate::pager::WorkerConfig;
use crate::quota::QuotaGate;
use crate::scheduler::SchedulerState;
use crate::store_worker::StoreWorker;
use agentos_runtime::events::durability::StoreWriter;

/// Options that come from the command line rather than the config.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// Write the JSON-lines trace here.
    pub trace: Option<PathBuf>,
    /// Overrides `runtime.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Prometheus handle, for upkeep by the resource monitor.
    pub prometheus: Option<PrometheusHandle>,
    /// Trace events kept in memory for the API's event stream (`GET /api/events`); `0` keeps
    /// none, so a run without the API builds no event it does not write.
    pub event_window: usize,
    /// Whether to continue an unfinished run of the config.
    pub resume: super::resume::ResumeMode,
}

/// Builds every backend named in the config.
pub fn build_backends(cfg: &Config) -> anyhow::Result<HashMap<String, Arc<dyn LlmBackend>>> {
    build_backends_observed(cfg, None)
}

/// Builds every backend; the `openai` ones hand every reply's rate-limit headers to
/// `observer` (the quota gate).
pub fn build_backends_observed(
    cfg: &Config,
    observer: Option<Arc<dyn RateLimitObserver>>,
) -> anyhow::Result<HashMap<String, Arc<dyn LlmBackend>>> {
    let mut out: HashMap<String, Arc<dyn LlmBackend>> = HashMap::new();
    for b in &cfg.backends {
        let backend: Arc<dyn LlmBackend> = match &b.kind {
            BackendKind::OpenAi(s) => {
                let built = OpenAiBackend::new(&b.name, s.clone())
                    .with_context(|| format!("backend \"{}\"", b.name))?;
                Arc::new(match &observer {
                    Some(o) => built.with_observer(o.clone()),
                    None => built,
                })
            }
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
    // Built first so that a bad backend fails the start before the store is touched; built
    // again below, observed by the quota gate, once the trace exists.
    build_backends(&cfg)?;
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
    let store_path = agentos_runtime::store::Store::path_in(&data_dir);
    // Open, migrate and write once now: a bad store fails the start, not a later prompt.
    let prepared = super::resume::prepare(&cfg, &data_dir, &store_path, opts.resume)?;
    let (run_id, run_dir, resume, run_lock) = (
        prepared.run_id,
        prepared.run_dir,
        prepared.resume,
        prepared.lock,
    );
    // A resumed run goes on in the workspace copies it already has.
    let workspaces = prepare_workspaces(&cfg, &run_dir)?;
    let trace = Trace::open(opts.trace.as_deref(), opts.event_window).with_context(|| {
        let file = opts.trace.as_deref().unwrap_or(Path::new("-"));
        format!("cannot create trace file {}", file.display())
    })?;
    RunStarted {
        config: cfg.source.as_deref(),
        run_dir: &run_dir,
        simulated_backends: &simulated_backends,
    }
    .emit(&trace);
    if let Some(r) = &resume {
        agentos_runtime::events::durability::RunResumed {
            run_id: &r.run_id,
            resumes: r.resumes,
            continued: r.attempts_continued,
        }
        .emit(&trace);
    }
    let sandboxes = sandboxes(&cfg, &workspaces, &run_dir, &trace)?;
    let gate = QuotaGate::from_config(&cfg, &run_id, trace.clone());
    if let Some(g) = &gate {
        // Budget counters span runs: a restart does not reset a day's spending.
        let rows = agentos_runtime::store::Store::open(&store_path)
            .and_then(|s| s.quota_counters())
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read quota counters from {}: {e}",
                    store_path.display()
                )
            })?;
        g.restore(&rows);
    }
    let backends =
        build_backends_observed(&cfg, gate.clone().map(|g| g as Arc<dyn RateLimitObserver>))?;

    let board = Arc::new(Board::new(cfg.agents.iter().map(|a| a.name.as_str())));
    // A resumed run's suspended agents stay suspended: their attempts pause at a step boundary.
    for a in &cfg.agents {
        if prepared.core.agent_status(&a.name) == Some(AgentStatus::Suspended) {
            if let Some(switch) = board.suspended.get(&a.name) {
                switch.send_replace(true);
            }
        }
    }
    let ports = SystemPorts::default();
    // `worker_threads: 0`: the agents share the system arbiter (see `docs/runtime-semantics.md`).
    let arbiters: Vec<Arbiter> = (0..cfg.runtime.worker_threads)
        .map(|_| Arbiter::new())
        .collect();
    let handles: Arc<[ArbiterHandle]> = if arbiters.is_empty() {
        Arc::new([Arbiter::current()])
    } else {
        arbiters.iter().map(Arbiter::handle).collect()
    };
    let agents = agent_envs(
        &cfg,
        &backends,
        &workspaces,
        &sandboxes,
        &ports,
        &board,
        &trace,
        handles,
        gate.as_ref(),
    )?;
    let pager = WorkerConfig {
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
        stats: board.pager.clone(),
        // What nothing waits for commits with the next commit that something waits for, or
        // within the linger; under `async` and `exit` no step waits for a commit.
        linger: Some(crate::pager::worker::LINGER),
        steps_wait: cfg.runtime.durability.waits(),
    };
    // One store thread and connection for every writer of the run (see `pager::worker`).
    let store = crate::pager::Worker::start(pager.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the store thread: {e}"))?;
    let durability = cfg.runtime.durability;
    let state_store = crate::scheduler::StateStore::new(
        StoreWorker::on(&store, StoreWriter::Scheduler),
        run_id.clone(),
        durability,
    );
    let bus_store = crate::bus::BusStore {
        worker: StoreWorker::on(&store, StoreWriter::Bus),
        run_id: run_id.clone(),
        wait: durability.waits(),
    };
    let kv_upper_bound = Arc::new(AtomicBool::new(false));
    let agent_restarts = Arc::new(AtomicU64::new(0));
    let root = tree::start(TreeParts {
        cfg: cfg.clone(),
        ports: ports.clone(),
        board: board.clone(),
        trace: trace.clone(),
        scheduler: Arc::new(Mutex::new(
            SchedulerState::stored(prepared.core, state_store)
                .with_quotas(gate.clone())
                .with_governor(governor(&cfg)),
        )),
        pager,
        store: store.clone(),
        agents,
        prometheus: opts.prometheus.clone(),
        kv_upper_bound: kv_upper_bound.clone(),
        agent_restarts: agent_restarts.clone(),
        bus_store: Some(bus_store),
    });
    Ok(RunningSystem {
        cfg,
        board,
        root,
        ports,
        trace,
        run_dir,
        simulated_backends,
        agent_restarts,
        kv_upper_bound,
        store_path,
        store,
        run_id,
        arbiters,
        resume,
        quotas: gate,
        _run_lock: run_lock,
    })
}

/// The resource-pressure governor of `runtime.scheduling.adaptive_concurrency`, if set.
fn governor(cfg: &Config) -> Option<agentos_runtime::policy::governor::PressureGovernor> {
    use agentos_runtime::policy::governor::{GovernorSpec, PressureGovernor};
    let a = cfg.runtime.scheduling.adaptive.as_ref()?;
    Some(PressureGovernor::new(GovernorSpec {
        min: a.min_concurrency,
        max: cfg.runtime.max_concurrency,
        cpu_high: a.cpu_high,
        memory_high: a.memory_high,
        cpu_low: a.cpu_low,
        memory_low: a.memory_low,
    }))
}

/// The sandbox of every agent granted `run_command` (none under `runtime.sandbox: off`),
/// recorded in the run folder's `sandbox.json`. Refuses a `required` sandbox this machine
/// cannot give.
fn sandboxes(
    cfg: &Config,
    workspaces: &HashMap<PathBuf, PathBuf>,
    run_dir: &Path,
    trace: &Trace,
) -> anyhow::Result<HashMap<String, Arc<Sandbox>>> {
    let status = sandbox::status();
    let report = sandbox::check(cfg, status)?;
    SandboxConfigured { report: &report }.emit(trace);
    let mut out = HashMap::new();
    for a in cfg
        .agents
        .iter()
        .filter(|a| a.tools.iter().any(|t| t == "run_command"))
    {
        let Some(w) = &a.workspace else { continue };
        let root = workspaces.get(&w.root).unwrap_or(&w.root);
        let tmp = run_dir.join("tmp").join(&a.name);
        let built = Sandbox::new(&a.name, cfg.runtime.sandbox, &a.sandbox, root, &tmp, status)?;
        if let Some(s) = built {
            out.insert(a.name.clone(), Arc::new(s));
        }
    }
    let mut all: Vec<&Sandbox> = out.values().map(Arc::as_ref).collect();
    all.sort_by_key(|s| s.policy().workspace.clone());
    sandbox::record_run(run_dir, cfg.runtime.sandbox, status, &all)
        .with_context(|| format!("cannot write {}/sandbox.json", run_dir.display()))?;
    Ok(out)
}

/// One environment per agent, shared by its instances, which go round robin over the worker
/// arbiters.
#[allow(clippy::too_many_arguments)]
fn agent_envs(
    cfg: &Config,
    backends: &HashMap<String, Arc<dyn LlmBackend>>,
    workspaces: &HashMap<PathBuf, PathBuf>,
    sandboxes: &HashMap<String, Arc<Sandbox>>,
    ports: &SystemPorts,
    board: &Arc<Board>,
    trace: &Trace,
    arbiters: Arc<[ArbiterHandle]>,
    gate: Option<&Arc<QuotaGate>>,
) -> anyhow::Result<Vec<AgentInstances>> {
    let gate: Option<Arc<dyn CallGate>> =
        gate.map(|g| Arc::new(crate::quota::GatePort(g.clone())) as Arc<dyn CallGate>);
    // Token quotas anywhere: every call carries the completion cap it reserves.
    let token_limits = {
        use agentos_runtime::config::quota::QuotaSpec;
        let counts_tokens = |q: &QuotaSpec| {
            q.rate.as_ref().is_some_and(|r| r.tokens.is_some()) || q.budget.is_some()
        };
        counts_tokens(&cfg.runtime.quotas)
            || cfg.agents.iter().any(|a| counts_tokens(&a.quotas))
            || cfg.workflows.iter().any(|w| counts_tokens(&w.quotas))
            || cfg
                .backends
                .iter()
                .any(|b| b.limits.rate.as_ref().is_some_and(|r| r.tokens.is_some()))
    };
    let slice = cfg.runtime.scheduling.preemption.as_ref().map(|p| Slice {
        steps: p.slice_steps,
        time: p.slice,
    });
    let tools = Arc::new(ToolRegistry::builtin());
    let bus: Arc<dyn BusPort> = Arc::new(BusLink::new(ports.bus.clone()));
    let spawner: Arc<dyn agentos_runtime::tools::SpawnPort> =
        Arc::new(SpawnLink::new(ports.scheduler.spawn.clone()));
    let prompts = Arc::new(PagerPrompts::new(
        ports.pager.clone(),
        ports.pager_worker.clone(),
        trace.clone(),
    ));
    let routers: HashMap<&str, Arc<KvRouter>> = cfg
        .backends
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                Arc::new(KvRouter::new(ports.kv.clone(), b)),
            )
        })
        .collect();
    let command = Arc::new(cfg.tools.command.clone());
    let files = Arc::new(cfg.tools.files.clone());
    let mut out: Vec<AgentInstances> = Vec::new();
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
        let tokenizer = cfg
            .backend(&a.backend)
            .map(|b| b.tokenizer)
            .unwrap_or_default();
        let allowlist = Arc::new(a.commands.clone());
        let backend_max_tokens = cfg.backend(&a.backend).and_then(|b| match &b.kind {
            BackendKind::OpenAi(s) => s.max_tokens,
            BackendKind::Sim(_) => None,
        });
        // Prepared once for every replica (the tools' JSON is encoded once per agent).
        let agent_tools = Arc::new(std::sync::OnceLock::from(AgentTools::prepare(
            &a.tools,
            tools.as_ref(),
            tokenizer,
        )));
        // One name for every replica's id; the environment is replica 0's (see `AgentEnv`).
        let instance = InstanceId {
            agent: a.name.as_str().into(),
            replica: 0,
        };
        let tool_ctx = ToolContext {
            agent: a.name.clone(),
            task: String::new(),
            workspace,
            command_allowlist: allowlist,
            command: command.clone(),
            files: files.clone(),
            bus: Some(bus.clone()),
            spawner: Some(spawner.clone()),
            sandbox: sandboxes.get(&a.name).cloned(),
            call: None,
        };
        let suspended = board.suspend_switch(&a.name);
        let metrics = Arc::new(AgentMetrics::of(&a.name, a.backend.as_str()));
        let sink = AgentSink::new(
            instance.clone(),
            board.clone(),
            trace.clone(),
            suspended.clone(),
            metrics.clone(),
        );
        let step_ports = StepPorts {
            prompts: prompts.clone(),
            router: routers
                .get(a.backend.as_str())
                .map(|r| r.clone() as Arc<dyn agentos_runtime::agent::Router>),
            backend,
            tools: tools.clone(),
            events: Arc::new(sink),
            gate: gate.clone(),
        };
        let mut setup = AgentSetup::new(
            spec,
            instance,
            tool_ctx,
            tokenizer,
            cfg.tools.call_timeout,
            cfg.runtime.durability,
        );
        setup.slice = slice;
        setup.cap_calls = token_limits;
        setup.tools = agent_tools;
        if let Some(max) = backend_max_tokens {
            setup.call_max_tokens = u64::from(max);
        }
        let env = AgentEnv {
            setup,
            ports: step_ports,
            suspended,
            scheduler: ports.scheduler.clone(),
            board: board.clone(),
            trace: trace.clone(),
            metrics,
        };
        let first = out.last().map_or(0, |g| g.first + g.replicas as usize);
        out.push(AgentInstances {
            env: Arc::new(env),
            replicas: a.replicas,
            arbiters: arbiters.clone(),
            first,
        });
    }
    Ok(out)
}
