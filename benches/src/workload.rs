//! The workloads, as run inside a variant's child process: AgentOS booted from a generated
//! config, and the plain-tokio baseline that calls the same backend and tools directly.

use std::sync::Arc;
use std::time::Instant;

use agentos_actors::system::{boot, build_backends, BootOptions, RunEnd};
use agentos_runtime::config::Config;
use agentos_runtime::durable::Durability;
use agentos_runtime::llm::{ChatMessage, ChatRequest, LlmBackend, RequestMeta, Role};
use agentos_runtime::model::TaskState;
use agentos_runtime::tools::{FileSettings, ToolContext, ToolRegistry};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::measure::{self_usage, Capture, Percentiles, Sample};

/// Name of the only agent in generated configs.
pub const AGENT: &str = "worker";

/// A generated workload: `tasks` tasks for `agents` replicas of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Replicas of the agent (concurrent agents).
    pub agents: usize,
    /// Tasks, one per agent unless said otherwise.
    pub tasks: usize,
    /// `None`: the in-process `sim` backend with zero latency, scripted to take `steps` steps
    /// per task (calculator calls, then an answer). `Some(url)`: the `openai` backend against
    /// a sim-server at `url` (`http://host:port/v1`): two steps per task.
    pub server: Option<String>,
    /// Steps per task with the in-process simulator.
    pub steps: u32,
    /// When the journal and the scheduler's state reach the store (`runtime.durability`).
    #[serde(default)]
    pub durability: Durability,
}

impl Workload {
    /// The AgentOS config of this workload (RON).
    pub fn config_text(&self) -> String {
        let agents = self.agents.max(1);
        let backend = match &self.server {
            None => "(name: \"llm\", kind: Sim((latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0))))".to_owned(),
            Some(url) => format!(
                "(name: \"llm\", kind: OpenAi((base_url: \"{url}\", model: \"agentos-simulator\", timeout_secs: 300)))"
            ),
        };
        let sim = if self.server.is_none() {
            let mut script = String::new();
            for _ in 1..self.steps.max(1) {
                script.push_str(
                    "Call(tool: \"calculator\", args: r#\"{\"expression\": \"1 + 1\"}\"#),",
                );
            }
            script.push_str("Answer(\"done: {{last_tool_result}}\")");
            format!("sim: (script: [{script}]),")
        } else {
            String::new()
        };
        let mut text = format!(
            "(version: 1, runtime: (max_concurrency: {agents}, durability: {}),
              backends: [{backend}],
              agents: [(name: \"{AGENT}\", role: \"You compute. Use the calculator, then answer.\",
                        backend: \"llm\", tools: [\"calculator\"], max_steps: {}, replicas: {agents},
                        timeout_secs: 600, {sim})],
              workflows: [(name: \"w\", tasks: [",
            self.durability.label(),
            self.steps.max(2) + 2
        );
        for i in 0..self.tasks {
            text.push_str(&format!(
                "(id: \"t{i}\", agent: \"{AGENT}\", input: \"{}\"),",
                input(i)
            ));
        }
        text.push_str("])])");
        text
    }

    fn config(&self) -> anyhow::Result<Config> {
        Config::parse(&self.config_text(), "bench.ron", std::path::Path::new("."))
            .map_err(|e| anyhow::anyhow!("generated config is invalid:\n{e}"))
    }
}

/// The prompt of task `i`: an expression the calculator can evaluate (the sim-server passes
/// the prompt as the tool's argument).
pub fn input(i: usize) -> String {
    format!("({} * 7) + {}", i + 1, i % 13)
}

/// Runs the workload on AgentOS: boot, wait for every task, stop.
pub fn run_agentos(w: &Workload) -> anyhow::Result<Sample> {
    let cfg = w.config()?;
    let capture = Capture::install(agentos_runtime::metrics::AGENT_STEP_DURATION)?;
    let data = tempfile::tempdir().context("temporary data dir")?;
    let data_dir = data.path().to_path_buf();
    let (wall, snapshot, store) = actix_rt::System::new().block_on(async move {
        let started = Instant::now();
        let opts = BootOptions {
            trace: None,
            data_dir: Some(data_dir),
            prometheus: None,
            event_window: 0,
            resume: Default::default(),
        };
        let sys = boot(Arc::new(cfg), opts)?;
        let end = sys.wait(std::future::pending()).await;
        let wall = started.elapsed().as_secs_f64();
        let snapshot = sys.snapshot().await;
        sys.stop().await;
        let store = sys.store_path.clone();
        if let RunEnd::Fatal(why) = end {
            anyhow::bail!("AgentOS stopped: {why}");
        }
        Ok::<_, anyhow::Error>((wall, snapshot?, store))
    })?;
    Ok(run_sample(
        wall,
        capture.take(),
        &snapshot,
        store_bytes(&store),
    ))
}

/// The sample of one AgentOS run: its wall time, the captured step durations, and the tasks
/// of its final snapshot (succeeded ones count; the rest failed), with this process's peak
/// RSS and CPU time.
pub fn run_sample(
    wall_secs: f64,
    steps: Vec<f64>,
    snapshot: &agentos_actors::protocol::RunSnapshot,
    store_bytes: u64,
) -> Sample {
    let ok = snapshot
        .tasks
        .iter()
        .filter(|t| t.state == TaskState::Succeeded)
        .count() as u64;
    let (peak_rss_bytes, cpu_secs) = self_usage();
    Sample {
        wall_secs,
        steps: steps.len() as u64,
        tasks: ok,
        failed: snapshot.tasks.len() as u64 - ok,
        step_latency: Percentiles::of_secs(steps),
        task_latency: Percentiles::of_secs(
            snapshot.tasks.iter().map(|t| t.duration_secs).collect(),
        ),
        peak_rss_bytes,
        cpu_secs,
        store_bytes,
    }
}

/// Bytes of the store on disk: the database file and its write-ahead log.
fn store_bytes(store: &std::path::Path) -> u64 {
    let mut wal = store.as_os_str().to_owned();
    wal.push("-wal");
    [store.to_path_buf(), std::path::PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// What one direct task measured.
struct Direct {
    ok: bool,
    steps: Vec<f64>,
    secs: f64,
}

/// Runs the workload without AgentOS: one plain tokio task per agent on a current-thread
/// runtime (the same single thread AgentOS's actor system uses), calling the same backend and
/// the same calculator directly. With `sequential`, one task after another instead.
pub fn run_direct(w: &Workload, sequential: bool) -> anyhow::Result<Sample> {
    let cfg = w.config()?;
    let spec = cfg
        .agents
        .first()
        .cloned()
        .context("generated config has an agent")?;
    let backend = build_backends(&cfg)?
        .remove("llm")
        .context("generated config has backend llm")?;
    let tools = ToolRegistry::builtin();
    let ctx = ToolContext {
        agent: AGENT.into(),
        task: String::new(),
        workspace: None,
        command_allowlist: Arc::new(Vec::new()),
        command: Arc::new(Default::default()),
        files: Arc::new(FileSettings::default()),
        bus: None,
        spawner: None,
        sandbox: None,
        call: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let tasks: Vec<(String, String)> = cfg
        .workflows
        .iter()
        .flat_map(|wf| {
            wf.tasks
                .iter()
                .map(move |t| (format!("{}/{}", wf.name, t.id), t.input.clone()))
        })
        .collect();
    let spec = Arc::new(spec);
    let (wall, results) = rt.block_on(async move {
        let started = Instant::now();
        let mut results = Vec::with_capacity(tasks.len());
        if sequential {
            for (key, input) in tasks {
                results.push(
                    direct_task(
                        backend.clone(),
                        tools.clone(),
                        ctx.clone(),
                        spec.clone(),
                        key,
                        input,
                    )
                    .await,
                );
            }
        } else {
            let handles: Vec<_> = tasks
                .into_iter()
                .map(|(key, input)| {
                    tokio::spawn(direct_task(
                        backend.clone(),
                        tools.clone(),
                        ctx.clone(),
                        spec.clone(),
                        key,
                        input,
                    ))
                })
                .collect();
            for h in handles {
                results.push(h.await.unwrap_or(Direct {
                    ok: false,
                    steps: Vec::new(),
                    secs: 0.0,
                }));
            }
        }
        (started.elapsed().as_secs_f64(), results)
    });
    let ok = results.iter().filter(|r| r.ok).count() as u64;
    let (peak_rss_bytes, cpu_secs) = self_usage();
    Ok(Sample {
        wall_secs: wall,
        steps: results.iter().map(|r| r.steps.len() as u64).sum(),
        tasks: ok,
        failed: results.len() as u64 - ok,
        step_latency: Percentiles::of_secs(
            results
                .iter()
                .flat_map(|r| r.steps.iter().copied())
                .collect(),
        ),
        task_latency: Percentiles::of_secs(results.iter().map(|r| r.secs).collect()),
        peak_rss_bytes,
        cpu_secs,
        store_bytes: 0,
    })
}

/// The agent loop without the runtime: call, run tools, repeat until an answer.
async fn direct_task(
    backend: Arc<dyn LlmBackend>,
    tools: ToolRegistry,
    mut ctx: ToolContext,
    spec: Arc<agentos_runtime::config::AgentSpec>,
    key: String,
    input: String,
) -> Direct {
    let started = Instant::now();
    let specs = tools.specs(&spec.tools);
    ctx.task = key.clone();
    let mut messages = vec![
        ChatMessage::system(spec.role.clone()),
        ChatMessage::user(input),
    ];
    let mut steps = Vec::new();
    for step in 0..spec.max_steps {
        let t0 = Instant::now();
        let request = ChatRequest {
            messages: messages.clone(),
            tools: specs.clone().into(),
            max_tokens: None,
            encoded: None,
            meta: RequestMeta {
                agent: spec.name.clone(),
                task: key.clone(),
                attempt: 1,
                step,
                replica: 0,
            },
        };
        let Ok(reply) = backend.chat(request).await else {
            break;
        };
        let calls = reply.message.tool_calls.clone();
        if calls.is_empty() {
            steps.push(t0.elapsed().as_secs_f64());
            return Direct {
                ok: true,
                steps,
                secs: started.elapsed().as_secs_f64(),
            };
        }
        messages.push(ChatMessage {
            role: Role::Assistant,
            ..reply.message
        });
        for call in calls {
            let content = match tools.get(&call.name) {
                Some(tool) => match tool.call(&ctx, call.arguments.clone()).await {
                    Ok(out) => out.content,
                    Err(e) => format!("error: {e}"),
                },
                None => format!("error: unknown tool `{}`", call.name),
            };
            messages.push(ChatMessage::tool(call.id, content));
        }
        steps.push(t0.elapsed().as_secs_f64());
    }
    Direct {
        ok: false,
        steps,
        secs: started.elapsed().as_secs_f64(),
    }
}
