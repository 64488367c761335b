//! Config schema (RON, version 1), loading and validation.
//!
//! Loading has two phases:
//! 1. [`raw`]: strict serde structs (`deny_unknown_fields`, named defaults) parsed with RON.
//! 2. [`validate`]: checks that collect **every** problem (duplicates, dangling references,
//!    dependency and fallback cycles, out-of-range numbers, empty workflows), each naming the
//!    entity and, where it can be found, its `file:line:col`; then builds the types below.
//!
//! The schema is documented for users in `config/README.md`.

mod context;
pub mod quota;
pub mod raw;
pub mod span;
pub mod validate;

use crate::tokenize::Encoding;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::{ConfigError, ConfigErrors};

/// The validated config the runtime uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// File the config was read from (for messages); `None` when parsed from a string.
    pub source: Option<PathBuf>,
    /// Runtime-wide settings.
    pub runtime: RuntimeSettings,
    /// LLM backends by declaration order.
    pub backends: Vec<BackendSpec>,
    /// Tool settings.
    pub tools: ToolsSettings,
    /// Agents by declaration order.
    pub agents: Vec<AgentSpec>,
    /// Workflows by declaration order.
    pub workflows: Vec<WorkflowSpec>,
}

impl Config {
    /// Whether LLM calls pass a quota gate: some quota, price or backend limit is
    /// configured, or an `openai` backend learns its server's limits from its headers. A
    /// config without one has no gate (and no cost for it on the hot path).
    pub fn counts_calls(&self) -> bool {
        !self.runtime.quotas.is_empty()
            || self.agents.iter().any(|a| !a.quotas.is_empty())
            || self.workflows.iter().any(|w| !w.quotas.is_empty())
            || self.backends.iter().any(|b| {
                b.limits.price.is_some()
                    || b.limits.rate.is_some()
                    || b.limits.max_concurrency.is_some()
                    || (b.limits.learn_from_headers && matches!(b.kind, BackendKind::OpenAi(_)))
            })
    }

    /// Reads and validates a config file. Relative paths inside it resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        validate::load_file(path)
    }

    /// Parses and validates config text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        validate::load_str(text, origin, base_dir)
    }

    /// The agent called `name`.
    pub fn agent(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// Parses and validates one workflow submitted to a running system, against this
    /// config's agents: the same checks as a config's `workflows[]` entry. `format` says
    /// whether `text` is JSON or RON; `origin` labels the errors (e.g. `request body`).
    pub fn parse_workflow(
        &self,
        text: &str,
        format: WorkflowFormat,
        origin: &str,
    ) -> Result<WorkflowSpec, WorkflowRejected> {
        validate::parse_workflow(self, text, format, origin)
    }

    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendSpec> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// The syntax of a submitted workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowFormat {
    /// `application/json`.
    Json,
    /// `application/ron`.
    Ron,
}

/// Why a submitted workflow was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowRejected {
    /// The text is not well-formed JSON or RON, or does not have a workflow's shape (an
    /// unknown field, a missing one, a wrong type). The error says where.
    #[error("{0}")]
    Malformed(ConfigError),
    /// It parsed, but failed validation; every problem is listed.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// Runtime-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    /// Most tasks running at once across all workflows.
    pub max_concurrency: usize,
    /// Where run artifacts (workspace copies, later the store) go; absolute.
    pub data_dir: PathBuf,
    /// Supervisor restart limits and backoff.
    pub supervisor: SupervisorSettings,
    /// Extra time past a task's attempt timeout before its lease is revoked.
    pub lease_grace: Duration,
    /// How much a waiting task's effective priority grows per second of waiting.
    pub aging_per_sec: f64,
    /// How long `serve` waits for in-flight steps on shutdown before returning them.
    pub shutdown_timeout: Duration,
    /// Arbiter threads the agents are spread over (default one per core); 0: the agents run
    /// on the system arbiter, with the scheduler.
    pub worker_threads: usize,
    /// The control-plane API.
    pub api: ApiSettings,
    /// Limits on tasks spawned at run time.
    pub spawn: SpawnLimits,
    /// What to do when the kernel lacks a sandbox feature (`runtime.sandbox`).
    pub sandbox: crate::sandbox::SandboxMode,
    /// When the journal and the scheduler's state reach the store (`runtime.durability`).
    pub durability: crate::durable::Durability,
    /// Ordering policy, preemption and resource-aware concurrency (`runtime.scheduling`).
    pub scheduling: quota::SchedulingSpec,
    /// Global rate limits and budget (`runtime.quotas`).
    pub quotas: quota::QuotaSpec,
}

/// Settings of the control-plane API (`serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// Environment variable holding the bearer token; `None`: no token unless the CLI names
    /// one. Without a token, `serve` listens on loopback only.
    pub token_env: Option<String>,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send its request (headers and body); then 408.
    pub request_timeout: Duration,
    /// Events kept in memory for `Last-Event-ID` resumption of `GET /api/events`.
    pub event_window: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            token_env: None,
            max_body_bytes: 1 << 20,
            max_connections: 256,
            request_timeout: Duration::from_secs(10),
            event_window: 10_000,
        }
    }
}

/// Limits on `spawn_task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnLimits {
    /// Most tasks spawned at run time in one workflow.
    pub max_tasks_per_workflow: u32,
    /// Deepest spawn: a declared task is depth 0, its children 1, and so on; a task at
    /// depth `max_depth` cannot spawn.
    pub max_depth: u32,
}

impl Default for SpawnLimits {
    fn default() -> Self {
        Self {
            max_tasks_per_workflow: 64,
            max_depth: 2,
        }
    }
}

/// Restart intensity and backoff of every supervisor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupervisorSettings {
    /// Most restarts allowed within `within`; one more escalates to the parent.
    pub max_restarts: u32,
    /// The intensity window.
    pub within: Duration,
    /// First restart delay.
    pub backoff_initial: Duration,
    /// Largest restart delay.
    pub backoff_max: Duration,
}

/// One LLM backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Unique name agents refer to.
    pub name: String,
    /// Which implementation and its settings.
    pub kind: BackendKind,
    /// The encoding prompts to this backend are counted and cut into blocks with.
    pub tokenizer: Encoding,
    /// Replicas serving this backend (1 unless the config lists several); calls are routed
    /// among them by `cache.routing`.
    pub replicas: usize,
    /// The KV-cache model and routing policy of the replicas.
    pub cache: crate::kvcache::KvCacheSettings,
    /// Price, rate limits and calls in flight (`price`, `limits`).
    pub limits: quota::BackendLimits,
}

/// The backend implementations.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendKind {
    /// OpenAI-compatible HTTP server.
    OpenAi(OpenAiSettings),
    /// The deterministic simulator.
    Sim(SimSettings),
}

impl BackendKind {
    /// `"openai"` or `"sim"`.
    pub fn label(&self) -> &'static str {
        match self {
            BackendKind::OpenAi(_) => "openai",
            BackendKind::Sim(_) => "sim",
        }
    }
}

/// Settings of an OpenAI-compatible backend.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiSettings {
    /// Base URL up to and including `/v1`, e.g. `https://api.openai.com/v1` (replica 0).
    pub base_url: String,
    /// Base URL of every replica, by replica index; `base_urls[0] == base_url`.
    pub base_urls: Vec<String>,
    /// Model name sent in each request.
    pub model: String,
    /// Environment variable holding the API key; `None` sends no `Authorization` header.
    pub api_key_env: Option<String>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// `max_tokens` sent with each request, if any.
    pub max_tokens: Option<u32>,
    /// Sampling temperature, if any.
    pub temperature: Option<f32>,
}

/// Settings of the simulator.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// Seed of every random choice; same seed and same requests give the same replies.
    pub seed: u64,
    /// Latency model.
    pub latency: SimLatency,
    /// Fault injection rates, each 0..=1, drawn per call.
    pub faults: SimFaults,
    /// Calls each simulated replica serves at once (its batch slots); the rest wait in FIFO
    /// order. `0` means unlimited.
    pub slots: usize,
}

/// The simulator's latency model: `ttft = base + per_prompt_token * uncached_prompt_tokens`,
/// then `per_output_token * completion_tokens` of decode. Prompt tokens already in the chosen
/// replica's prefix cache cost no prefill.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimLatency {
    /// Fixed part of time to first token.
    pub base: Duration,
    /// Prefill cost per prompt token.
    pub per_prompt_token: Duration,
    /// Decode cost per output token.
    pub per_output_token: Duration,
}

/// Fault injection rates of the simulator, each a probability per call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimFaults {
    /// Probability that a call returns a retryable error.
    pub error_rate: f64,
    /// Probability that a call panics (exercises supervision).
    pub panic_rate: f64,
    /// Probability that a call never returns (exercises timeouts).
    pub hang_rate: f64,
}

/// Tool settings shared by every agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolsSettings {
    /// `run_command` settings.
    pub command: crate::tools::CommandSettings,
    /// File tool settings.
    pub files: crate::tools::FileSettings,
    /// Longest any one tool call may run; past it the call is abandoned and the model reads
    /// a timeout error. `run_command` kills its child at its own, shorter timeout.
    pub call_timeout: Duration,
}

/// Retry policy of an agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts on this agent before falling back (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Growth factor per attempt (>= 1).
    pub multiplier: f64,
    /// Random spread, 0..=1: the delay is scaled by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
}

/// An agent's workspace for file tools and commands.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceSpec {
    /// Absolute root as declared (resolved against the config's folder).
    pub root: PathBuf,
    /// Copy the root into the run's data directory first, so the original stays untouched.
    pub copy: bool,
    /// Names of files and folders, at any depth, that the copy leaves out (e.g. caches).
    pub exclude: Vec<String>,
}

/// What the simulator does for this agent, step by step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimBehaviour {
    /// Replies by step index within an attempt; past the end, the simulator answers finally.
    pub script: Vec<SimStep>,
    /// Faults forced on given attempts (on top of the backend's random rates).
    pub faults: Vec<SimForcedFault>,
}

/// One scripted simulator reply.
#[derive(Debug, Clone, PartialEq)]
pub enum SimStep {
    /// Call a tool with these JSON arguments.
    Call {
        /// Tool name.
        tool: String,
        /// JSON arguments.
        args: serde_json::Value,
    },
    /// Give this final answer. `{{last_tool_result}}` is replaced by the previous tool result.
    Answer(String),
}

/// A fault the simulator forces on one attempt of this agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimForcedFault {
    /// Attempt number (1-based) on this agent.
    pub attempt: u32,
    /// Step index within that attempt.
    pub step: u32,
    /// What happens.
    pub kind: SimFaultKind,
}

/// Kinds of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFaultKind {
    /// A retryable error.
    Error,
    /// A panic inside the agent's step.
    Panic,
    /// A call that never returns.
    Hang,
}

/// One agent (or a pool of identical replicas).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// Unique name.
    pub name: String,
    /// System prompt.
    pub role: String,
    /// Backend name.
    pub backend: String,
    /// Granted tools.
    pub tools: Vec<String>,
    /// 0..=100; higher runs first.
    pub priority: u8,
    /// Most LLM calls per attempt.
    pub max_steps: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Agent that takes a task after this one's attempts are spent.
    pub fallback: Option<String>,
    /// Token budget of the prompt: `context.window_tokens - context.reserve_output_tokens`.
    pub context_budget_tokens: u64,
    /// Context window, eviction policy and summariser.
    pub context: ContextSpec,
    /// Workspace for file tools and commands.
    pub workspace: Option<WorkspaceSpec>,
    /// Argv prefixes `run_command` may run.
    pub commands: Vec<Vec<String>>,
    /// Number of identical actor instances.
    pub replicas: u32,
    /// Bus topics this agent receives.
    pub subscribe: Vec<String>,
    /// Simulator behaviour (only with a `sim` backend).
    pub sim: SimBehaviour,
    /// The sandbox of this agent's commands.
    pub sandbox: crate::sandbox::AgentSandbox,
    /// Side-effect classes that override the tools' own, by tool name.
    pub side_effects: std::collections::BTreeMap<String, crate::durable::SideEffect>,
    /// Fair-share weight (`scheduling.policy: fair_share`).
    pub weight: f64,
    /// This agent's rate limits and budget.
    pub quotas: quota::QuotaSpec,
}

/// How an agent's context window is managed by the context pager.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextSpec {
    /// The model's context window, tokens.
    pub window_tokens: u64,
    /// Tokens kept free for the reply.
    pub reserve_output_tokens: u64,
    /// Eviction policy.
    pub policy: crate::context::PolicyKind,
}

impl ContextSpec {
    /// Most prompt tokens: window minus reserved output.
    pub fn budget_tokens(&self) -> u64 {
        self.window_tokens
            .saturating_sub(self.reserve_output_tokens)
    }
}

/// One workflow: a DAG of tasks. Serializable: the store keeps submitted workflows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkflowSpec {
    /// Unique name.
    pub name: String,
    /// Tasks in declaration order.
    pub tasks: Vec<TaskSpec>,
    /// Fair-share weight (`scheduling.fair_share_by: workflow`).
    #[serde(default = "one")]
    pub weight: f64,
    /// This workflow's rate limits and budget.
    #[serde(default, skip_serializing_if = "quota::QuotaSpec::is_empty")]
    pub quotas: quota::QuotaSpec,
}

fn one() -> f64 {
    1.0
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    /// Id, unique within the workflow.
    pub id: String,
    /// Agent that runs it first.
    pub agent: String,
    /// Input text; `{{task_id}}` is replaced by that upstream task's output.
    pub input: String,
    /// Tasks that must succeed first.
    pub depends_on: Vec<String>,
    /// Added to the agent's priority for this task (may be negative).
    pub priority_boost: i16,
}

#[cfg(test)]
mod submit_tests {
    use super::*;

    fn cfg() -> Config {
        let text = r#"(
            version: 1,
            backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "r", backend: "sim"), (name: "b", role: "r", backend: "sim")],
        )"#;
        Config::parse(text, "t.ron", Path::new(".")).expect("a config without workflows is valid")
    }

    #[test]
    fn a_valid_workflow_parses_from_json_and_from_ron() {
        let cfg = cfg();
        let json = r#"{"name": "w", "tasks": [
            {"id": "t1", "agent": "a", "input": "go"},
            {"id": "t2", "agent": "b", "input": "after {{t1}}", "depends_on": ["t1"]}]}"#;
        let w = cfg
            .parse_workflow(json, WorkflowFormat::Json, "request body")
            .unwrap();
        assert_eq!(w.tasks[1].depends_on, ["t1"]);
        let ron = r#"(name: "w", tasks: [(id: "t1", agent: "a", input: "go")])"#;
        let w = cfg
            .parse_workflow(ron, WorkflowFormat::Ron, "request body")
            .unwrap();
        assert_eq!(w.name, "w");
    }

    #[test]
    fn every_problem_is_listed_with_its_entity() {
        let cfg = cfg();
        let json = r#"{"name": "w", "tasks": [
            {"id": "t1", "agent": "ghost", "input": "go"},
            {"id": "t2", "agent": "a", "depends_on": ["nope"]},
            {"id": "t3", "agent": "a", "depends_on": ["t4"]},
            {"id": "t4", "agent": "a", "depends_on": ["t3"], "input": "{{t9}}"}]}"#;
        let Err(WorkflowRejected::Invalid(errors)) =
            cfg.parse_workflow(json, WorkflowFormat::Json, "request body")
        else {
            panic!("expected validation errors");
        };
        let text = errors.to_string();
        for needle in [
            "agent \"ghost\" is not declared",
            "depends on \"nope\"",
            "dependency cycle",
            "input references {{t9}}",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(
            errors.0.iter().all(|e| e.entity.starts_with("task ")),
            "{text}"
        );
        assert!(errors.0.len() >= 4);
        // Each error points at its task's "id" in the body, in body order.
        let ghost = errors
            .0
            .iter()
            .find(|e| e.entity == "task \"w/t1\"")
            .unwrap();
        assert_eq!(
            ghost.position.map(|p| (p.line, p.col)),
            Some((2, 14)),
            "{ghost}"
        );
        let nope = errors
            .0
            .iter()
            .find(|e| e.entity == "task \"w/t2\"")
            .unwrap();
        assert_eq!(nope.position.map(|p| p.line), Some(3), "{nope}");
        assert!(nope.to_string().starts_with("request body:3:"), "{nope}");
    }

    #[test]
    fn malformed_text_says_where() {
        let cfg = cfg();
        let bad = "{\"name\": \"w\",\n \"tasks\": [}";
        let Err(WorkflowRejected::Malformed(e)) =
            cfg.parse_workflow(bad, WorkflowFormat::Json, "request body")
        else {
            panic!("expected a syntax error");
        };
        assert_eq!(e.position.map(|p| p.line), Some(2), "{e}");
        assert!(e.to_string().starts_with("request body:2:"), "{e}");
        let unknown = r#"{"name": "w", "tasks": [], "grant": ["run_command"]}"#;
        let Err(WorkflowRejected::Malformed(e)) =
            cfg.parse_workflow(unknown, WorkflowFormat::Json, "request body")
        else {
            panic!("unknown fields are refused");
        };
        assert!(e.message.contains("unknown field"), "{e}");
        let ron = "(name: \"w\", tasks: [(id: 1)])";
        assert!(matches!(
            cfg.parse_workflow(ron, WorkflowFormat::Ron, "request body"),
            Err(WorkflowRejected::Malformed(_))
        ));
    }
}
