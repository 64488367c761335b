//! Phase one: the RON text as strict serde structs.
//!
//! Every struct denies unknown fields and names its defaults, so a typo is an error and a
//! missing optional field has one documented value. Nothing here is checked beyond its type;
//! [`super::validate`] does the rest.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Schema version; only 1 exists.
    pub version: u32,
    /// Runtime-wide settings.
    #[serde(default)]
    pub runtime: RawRuntime,
    /// LLM backends.
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    /// Tool settings.
    #[serde(default)]
    pub tools: RawTools,
    /// Agents.
    #[serde(default)]
    pub agents: Vec<RawAgent>,
    /// Workflows.
    #[serde(default)]
    pub workflows: Vec<RawWorkflow>,
}

/// `runtime: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// Most tasks running at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Data directory, relative to the config's folder.
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Supervisor limits.
    #[serde(default)]
    pub supervisor: RawSupervisor,
    /// Lease grace past the attempt timeout, in seconds.
    #[serde(default = "default_lease_grace_secs")]
    pub lease_grace_secs: f64,
    /// Priority points gained per second of waiting.
    #[serde(default = "default_aging_per_sec")]
    pub aging_per_sec: f64,
    /// Graceful shutdown wait in seconds.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: f64,
    /// Arbiter threads the agents are spread over (default: one per core).
    #[serde(default)]
    pub worker_threads: Option<u32>,
    /// The control-plane API of `serve`.
    #[serde(default)]
    pub api: RawApi,
    /// Limits on tasks spawned at run time.
    #[serde(default)]
    pub spawn: RawSpawn,
    /// `required` (default), `best_effort` or `off`: see [`crate::sandbox::SandboxMode`].
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxMode,
    /// `sync` (default), `async` or `exit`: see [`crate::durable::Durability`].
    #[serde(default)]
    pub durability: crate::durable::Durability,
    /// Ordering policy, preemption and resource-aware concurrency.
    #[serde(default)]
    pub scheduling: RawScheduling,
    /// Global rate limits and budget.
    #[serde(default)]
    pub quotas: RawQuotas,
}

/// `api: (...)` in `runtime`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// Environment variable holding the bearer token of `/api/*`.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Largest request body in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest a client may take to send a request (headers and body), in seconds.
    #[serde(default = "default_api_request_timeout_secs")]
    pub request_timeout_secs: f64,
    /// Events kept in memory for `GET /api/events` resumption.
    #[serde(default = "default_event_window")]
    pub event_window: u32,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            token_env: None,
            max_body_bytes: default_max_body_bytes(),
            max_connections: default_max_connections(),
            request_timeout_secs: default_api_request_timeout_secs(),
            event_window: default_event_window(),
        }
    }
}

fn default_max_body_bytes() -> u64 {
    1 << 20
}
fn default_max_connections() -> u32 {
    256
}
fn default_api_request_timeout_secs() -> f64 {
    10.0
}
fn default_event_window() -> u32 {
    10_000
}

/// `spawn: (...)` in `runtime`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpawn {
    /// Most tasks spawned at run time in one workflow.
    #[serde(default = "default_max_spawned_tasks")]
    pub max_tasks_per_workflow: u32,
    /// How deep spawned tasks may spawn (1: only declared tasks spawn).
    #[serde(default = "default_max_spawn_depth")]
    pub max_depth: u32,
}

impl Default for RawSpawn {
    fn default() -> Self {
        Self {
            max_tasks_per_workflow: default_max_spawned_tasks(),
            max_depth: default_max_spawn_depth(),
        }
    }
}

fn default_max_spawned_tasks() -> u32 {
    64
}
fn default_max_spawn_depth() -> u32 {
    2
}

impl Default for RawRuntime {
    fn default() -> Self {
        Self {
            max_concurrency: default_max_concurrency(),
            data_dir: default_data_dir(),
            supervisor: RawSupervisor::default(),
            lease_grace_secs: default_lease_grace_secs(),
            aging_per_sec: default_aging_per_sec(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
            worker_threads: None,
            api: RawApi::default(),
            spawn: RawSpawn::default(),
            sandbox: crate::sandbox::SandboxMode::default(),
            durability: crate::durable::Durability::default(),
            scheduling: RawScheduling::default(),
            quotas: RawQuotas::default(),
        }
    }
}

fn default_max_concurrency() -> u32 {
    4
}
fn default_data_dir() -> String {
    ".agentos".into()
}
fn default_lease_grace_secs() -> f64 {
    5.0
}
fn default_aging_per_sec() -> f64 {
    1.0
}
fn default_shutdown_timeout_secs() -> f64 {
    10.0
}

/// `supervisor: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSupervisor {
    /// Restarts allowed within the window.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Window in seconds.
    #[serde(default = "default_within_secs")]
    pub within_secs: f64,
    /// First restart delay in milliseconds.
    #[serde(default = "default_restart_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Largest restart delay in milliseconds.
    #[serde(default = "default_restart_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl Default for RawSupervisor {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            within_secs: default_within_secs(),
            backoff_initial_ms: default_restart_backoff_initial_ms(),
            backoff_max_ms: default_restart_backoff_max_ms(),
        }
    }
}

fn default_max_restarts() -> u32 {
    5
}
fn default_within_secs() -> f64 {
    10.0
}
fn default_restart_backoff_initial_ms() -> u64 {
    10
}
fn default_restart_backoff_max_ms() -> u64 {
    1000
}

/// `(name: ..., kind: ...)` in `backends`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Unique name.
    pub name: String,
    /// Implementation and settings.
    pub kind: RawBackendKind,
    /// BPE encoding used to count and encode prompt tokens (default `o200k_base`).
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// KV-cache model and routing across the backend's replicas.
    #[serde(default)]
    pub cache: RawCache,
    /// US dollars per million tokens, for budgets.
    #[serde(default)]
    pub price: Option<RawPrice>,
    /// The server's rate limits and the calls in flight.
    #[serde(default)]
    pub limits: RawBackendLimits,
}

/// `cache: (...)` of a backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Tokens per KV block.
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// Blocks per replica.
    #[serde(default = "default_capacity_blocks")]
    pub capacity_blocks: usize,
    /// `round_robin`, `least_loaded` or `prefix_aware`.
    #[serde(default = "default_routing")]
    pub routing: String,
    /// Load slack of `prefix_aware` routing, as a fraction of the fair share.
    #[serde(default = "default_load_slack")]
    pub load_slack: f64,
    /// Per-tenant salt of the block hash chains.
    #[serde(default)]
    pub salt: Option<String>,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            block_size: default_block_size(),
            capacity_blocks: default_capacity_blocks(),
            routing: default_routing(),
            load_slack: default_load_slack(),
            salt: None,
        }
    }
}

fn default_block_size() -> usize {
    crate::kvcache::DEFAULT_BLOCK_SIZE
}
fn default_capacity_blocks() -> usize {
    crate::kvcache::DEFAULT_CAPACITY_BLOCKS
}
fn default_routing() -> String {
    crate::kvcache::RoutingPolicy::default().name().into()
}
fn default_load_slack() -> f64 {
    crate::kvcache::DEFAULT_LOAD_SLACK
}

/// `OpenAi((...))` or `Sim((...))`.
#[derive(Debug, Clone, Deserialize)]
pub enum RawBackendKind {
    /// OpenAI-compatible server.
    OpenAi(RawOpenAi),
    /// The simulator.
    Sim(#[serde(default)] RawSim),
}

/// OpenAI-compatible settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenAi {
    /// Base URL up to `/v1` (one replica).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Base URLs of several replicas serving the same model (instead of `base_url`).
    #[serde(default)]
    pub base_urls: Option<Vec<String>>,
    /// Model name.
    pub model: String,
    /// Environment variable with the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Request timeout in seconds.
    #[serde(default = "default_request_timeout_secs")]
    pub timeout_secs: f64,
    /// `max_tokens` per request.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
}

fn default_request_timeout_secs() -> f64 {
    60.0
}

/// Simulator settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSim {
    /// Seed.
    #[serde(default)]
    pub seed: u64,
    /// Latency model.
    #[serde(default)]
    pub latency: RawSimLatency,
    /// Fault rates.
    #[serde(default)]
    pub faults: RawSimFaults,
    /// Simulated replicas, each with its own prefix cache.
    #[serde(default = "default_sim_replicas")]
    pub replicas: u32,
    /// Calls each replica serves at once; 0 = unlimited.
    #[serde(default)]
    pub slots: u32,
}

fn default_sim_replicas() -> u32 {
    1
}

impl Default for RawSim {
    fn default() -> Self {
        Self {
            seed: 0,
            latency: RawSimLatency::default(),
            faults: RawSimFaults::default(),
            replicas: default_sim_replicas(),
            slots: 0,
        }
    }
}

/// Simulator latency model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimLatency {
    /// Fixed time to first token, ms.
    #[serde(default = "default_sim_base_ms")]
    pub base_ms: f64,
    /// Prefill per prompt token, microseconds.
    #[serde(default = "default_sim_per_prompt_token_us")]
    pub per_prompt_token_us: f64,
    /// Decode per output token, ms.
    #[serde(default = "default_sim_per_output_token_ms")]
    pub per_output_token_ms: f64,
}

impl Default for RawSimLatency {
    fn default() -> Self {
        Self {
            base_ms: default_sim_base_ms(),
            per_prompt_token_us: default_sim_per_prompt_token_us(),
            per_output_token_ms: default_sim_per_output_token_ms(),
        }
    }
}

fn default_sim_base_ms() -> f64 {
    20.0
}
fn default_sim_per_prompt_token_us() -> f64 {
    20.0
}
fn default_sim_per_output_token_ms() -> f64 {
    0.5
}

/// Simulator fault rates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimFaults {
    /// Probability of a retryable error per call.
    #[serde(default)]
    pub error_rate: f64,
    /// Probability of a panic per call.
    #[serde(default)]
    pub panic_rate: f64,
    /// Probability of a hang per call.
    #[serde(default)]
    pub hang_rate: f64,
}

/// `tools: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTools {
    /// `run_command` settings.
    #[serde(default)]
    pub run_command: RawCommandTool,
    /// File tool settings.
    #[serde(default)]
    pub files: RawFileTools,
    /// Longest any one tool call may run, in seconds.
    #[serde(default = "default_tool_call_timeout_secs")]
    pub call_timeout_secs: f64,
}

impl Default for RawTools {
    fn default() -> Self {
        Self {
            run_command: RawCommandTool::default(),
            files: RawFileTools::default(),
            call_timeout_secs: default_tool_call_timeout_secs(),
        }
    }
}

fn default_tool_call_timeout_secs() -> f64 {
    120.0
}

/// `run_command: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommandTool {
    /// Wall timeout in seconds.
    #[serde(default = "default_command_timeout_secs")]
    pub timeout_secs: f64,
    /// Output cap in bytes (stdout and stderr each).
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: u64,
    /// Environment variables passed through.
    #[serde(default = "default_env_allow")]
    pub env_allow: Vec<String>,
}

impl Default for RawCommandTool {
    fn default() -> Self {
        Self {
            timeout_secs: default_command_timeout_secs(),
            max_output_bytes: default_max_output_bytes(),
            env_allow: default_env_allow(),
        }
    }
}

fn default_command_timeout_secs() -> f64 {
    30.0
}
fn default_max_output_bytes() -> u64 {
    64 * 1024
}
fn default_env_allow() -> Vec<String> {
    vec!["PATH".into(), "LANG".into()]
}

/// `files: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileTools {
    /// Largest file read or written, bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Most grep matches returned.
    #[serde(default = "default_max_matches")]
    pub max_matches: u32,
}

impl Default for RawFileTools {
    fn default() -> Self {
        Self {
            max_file_bytes: default_max_file_bytes(),
            max_matches: default_max_matches(),
        }
    }
}

fn default_max_file_bytes() -> u64 {
    1024 * 1024
}
fn default_max_matches() -> u32 {
    200
}

/// One agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Unique name.
    pub name: String,
    /// System prompt.
    pub role: String,
    /// Backend name.
    pub backend: String,
    /// Granted tools.
    #[serde(default)]
    pub tools: Vec<String>,
    /// 0..=100.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// LLM calls per attempt.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Retry policy.
    #[serde(default)]
    pub retry: RawRetry,
    /// Per-attempt timeout, seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Fallback agent.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Prompt token budget (shorthand for a `context` with this window and no reserve).
    #[serde(default)]
    pub context_budget_tokens: Option<u64>,
    /// Context window, reserved output, eviction policy, summariser.
    #[serde(default)]
    pub context: Option<RawContext>,
    /// Workspace.
    #[serde(default)]
    pub workspace: Option<RawWorkspace>,
    /// Allowed argv prefixes.
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    /// Actor instances.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Bus topics.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Simulator behaviour.
    #[serde(default)]
    pub sim: Option<RawSimBehaviour>,
    /// The sandbox of this agent's commands.
    #[serde(default)]
    pub sandbox: RawAgentSandbox,
    /// Side-effect class per tool, overriding the tool's own (`{"run_command": idempotent}`).
    #[serde(default)]
    pub side_effects: std::collections::BTreeMap<String, crate::durable::SideEffect>,
    /// Fair-share weight.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Rate limits and budget of this agent.
    #[serde(default)]
    pub quotas: RawQuotas,
}

fn default_weight() -> f64 {
    1.0
}

fn default_priority() -> i64 {
    50
}
fn default_max_steps() -> u32 {
    8
}
fn default_timeout_secs() -> f64 {
    60.0
}
fn default_replicas() -> u32 {
    1
}

/// `context: (...)` of an agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContext {
    /// The model's context window, tokens.
    #[serde(default = "default_window_tokens")]
    pub window_tokens: u64,
    /// Tokens kept free for the reply.
    #[serde(default = "default_reserve_output_tokens")]
    pub reserve_output_tokens: u64,
    /// `lru` or `lru_importance`.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// Reserved for a backend writing summaries of evicted pages; validation refuses it (not
    /// supported yet), with a message saying so instead of "unknown field".
    #[serde(default)]
    pub summarizer: Option<String>,
}

impl Default for RawContext {
    fn default() -> Self {
        Self {
            window_tokens: default_window_tokens(),
            reserve_output_tokens: default_reserve_output_tokens(),
            policy: default_policy(),
            summarizer: None,
        }
    }
}

fn default_window_tokens() -> u64 {
    8192
}
fn default_reserve_output_tokens() -> u64 {
    1024
}
fn default_policy() -> String {
    "lru_importance".into()
}

/// `retry: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts on this agent.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff, ms.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Largest backoff, ms.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Growth factor.
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Spread, 0..=1.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.2
}

/// `workspace: (...)`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkspace {
    /// Root folder, relative to the config's folder.
    pub root: String,
    /// Copy into the data directory before the run.
    #[serde(default)]
    pub copy: bool,
    /// Names of files and folders (at any depth) left out of the copy.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `sim: (...)` on an agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSimBehaviour {
    /// Scripted replies.
    #[serde(default)]
    pub script: Vec<RawSimStep>,
    /// Forced faults.
    #[serde(default)]
    pub faults: Vec<RawForcedFault>,
}

/// A scripted reply.
#[derive(Debug, Clone, Deserialize)]
pub enum RawSimStep {
    /// `Call(tool: "...", args: "<json>")`.
    Call {
        /// Tool name.
        tool: String,
        /// JSON arguments as a string.
        #[serde(default = "default_args")]
        args: String,
    },
    /// `Answer("...")`.
    Answer(String),
}

fn default_args() -> String {
    "{}".into()
}

/// A forced fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForcedFault {
    /// Attempt, 1-based.
    pub attempt: u32,
    /// Step, 0-based.
    #[serde(default)]
    pub step: u32,
    /// What happens.
    pub kind: RawFaultKind,
}

/// Fault kinds.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum RawFaultKind {
    /// Retryable error.
    Error,
    /// Panic.
    Panic,
    /// Hang.
    Hang,
}

/// One workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflow {
    /// Unique name.
    pub name: String,
    /// Tasks.
    #[serde(default)]
    pub tasks: Vec<RawTask>,
    /// Fair-share weight (with `fair_share_by: workflow`).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Rate limits and budget of this workflow.
    #[serde(default)]
    pub quotas: RawQuotas,
}

/// One task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    /// Id within the workflow.
    pub id: String,
    /// Agent name.
    pub agent: String,
    /// Input text.
    #[serde(default)]
    pub input: String,
    /// Upstream task ids.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Priority added to the agent's.
    #[serde(default)]
    pub priority_boost: i16,
}

/// `sandbox: (...)` of an agent: what its commands may reach, and their limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentSandbox {
    /// Allow the network.
    #[serde(default)]
    pub network: bool,
    /// Extra paths to read and execute (relative ones resolve against the config's folder).
    #[serde(default)]
    pub read_paths: Vec<String>,
    /// Processes and threads at once.
    #[serde(default = "default_sandbox_max_processes")]
    pub max_processes: u64,
    /// Address space per process, bytes.
    #[serde(default = "default_sandbox_max_memory_bytes")]
    pub max_memory_bytes: u64,
    /// CPU seconds per process.
    #[serde(default = "default_sandbox_max_cpu_secs")]
    pub max_cpu_secs: u64,
    /// Largest file written, bytes.
    #[serde(default = "default_sandbox_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Open files per process.
    #[serde(default = "default_sandbox_max_open_files")]
    pub max_open_files: u64,
}

impl Default for RawAgentSandbox {
    fn default() -> Self {
        Self {
            network: false,
            read_paths: Vec::new(),
            max_processes: default_sandbox_max_processes(),
            max_memory_bytes: default_sandbox_max_memory_bytes(),
            max_cpu_secs: default_sandbox_max_cpu_secs(),
            max_file_bytes: default_sandbox_max_file_bytes(),
            max_open_files: default_sandbox_max_open_files(),
        }
    }
}

fn default_sandbox_max_processes() -> u64 {
    crate::sandbox::SandboxLimits::default().max_processes
}
fn default_sandbox_max_memory_bytes() -> u64 {
    crate::sandbox::SandboxLimits::default().max_memory_bytes
}
fn default_sandbox_max_cpu_secs() -> u64 {
    crate::sandbox::SandboxLimits::default().max_cpu_secs
}
fn default_sandbox_max_file_bytes() -> u64 {
    crate::sandbox::SandboxLimits::default().max_file_bytes
}
fn default_sandbox_max_open_files() -> u64 {
    crate::sandbox::SandboxLimits::default().max_open_files
}

/// `rate: (...)`: token and request buckets over a window (a minute by default: TPM and RPM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    /// Tokens (prompt + `max_tokens` reserved, real usage reconciled) per window.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Requests per window.
    #[serde(default)]
    pub requests: Option<u64>,
    /// The window, seconds.
    #[serde(default = "default_rate_window_secs")]
    pub window_secs: f64,
    /// Most tokens taken at once (default: a tenth of `tokens`).
    #[serde(default)]
    pub burst_tokens: Option<u64>,
    /// Most requests started at once (default: a tenth of `requests`).
    #[serde(default)]
    pub burst_requests: Option<u64>,
}

fn default_rate_window_secs() -> f64 {
    60.0
}

/// `budget: (...)`: a spending limit over a window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// US dollars per window, priced by each backend's `price`.
    #[serde(default)]
    pub usd: Option<f64>,
    /// Tokens (prompt + completion) per window.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// `hour`, `day` (fixed UTC windows) or `run` (the run's whole life).
    #[serde(default = "default_budget_window")]
    pub window: RawBudgetWindow,
    /// Fraction of the limit at which a warning, an event and a metric fire.
    #[serde(default = "default_soft_fraction")]
    pub soft: f64,
    /// `wait` (for the window to reset) or `fail` (the task fails, "budget exhausted").
    #[serde(default = "default_on_exhausted")]
    pub on_exhausted: RawOnExhausted,
}

fn default_budget_window() -> RawBudgetWindow {
    RawBudgetWindow::Day
}
fn default_soft_fraction() -> f64 {
    0.8
}
fn default_on_exhausted() -> RawOnExhausted {
    RawOnExhausted::Fail
}

/// A budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBudgetWindow {
    /// Fixed UTC hours.
    Hour,
    /// Fixed UTC days.
    Day,
    /// The run's whole life.
    Run,
}

/// What a hard budget limit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnExhausted {
    /// The task waits for the window to reset.
    Wait,
    /// The task fails with "budget exhausted".
    Fail,
}

/// `quotas: (...)` of the runtime (global), an agent or a workflow.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotas {
    /// Token and request buckets.
    #[serde(default)]
    pub rate: Option<RawRate>,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<RawBudget>,
}

/// `price: (...)` of a backend: US dollars per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// Prompt tokens not served from the cache.
    pub input: f64,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens served from the cache (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// `limits: (...)` of a backend: what its server allows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendLimits {
    /// Token and request buckets of the whole backend (its server's TPM/RPM).
    #[serde(default)]
    pub rate: Option<RawRate>,
    /// Most calls in flight.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Adapt the calls in flight to 429s and latency (AIMD), under `max_concurrency`.
    #[serde(default = "default_true")]
    pub adaptive: bool,
    /// The adaptive limit's floor.
    #[serde(default = "default_min_concurrency")]
    pub min_concurrency: u32,
    /// With no `rate` configured, learn the server's buckets from its `x-ratelimit-*` headers
    /// (`openai` backends).
    #[serde(default = "default_true")]
    pub learn_from_headers: bool,
}

impl Default for RawBackendLimits {
    fn default() -> Self {
        Self {
            rate: None,
            max_concurrency: None,
            adaptive: true,
            min_concurrency: default_min_concurrency(),
            learn_from_headers: true,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_concurrency() -> u32 {
    1
}

/// How ready tasks are ordered across agents and workflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawSchedPolicy {
    /// Effective priority (priority + boost + aging), FIFO among equals.
    Priority,
    /// Weighted fair share of tokens across agents or workflows.
    FairShare,
    /// Workflows that used the fewest tokens first.
    LeastAttainedService,
}

/// What fair share divides between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawShareBy {
    /// Agents, weighted by `agents[].weight`.
    Agent,
    /// Workflows, weighted by `workflows[].weight`.
    Workflow,
}

/// `scheduling: (...)` in `runtime`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduling {
    /// The ordering policy.
    #[serde(default = "default_sched_policy")]
    pub policy: RawSchedPolicy,
    /// What `fair_share` divides between.
    #[serde(default = "default_share_by")]
    pub fair_share_by: RawShareBy,
    /// Tokens of the first service level of `least_attained_service` (levels double).
    #[serde(default = "default_las_quantum")]
    pub las_quantum_tokens: u64,
    /// Time slices and preemption.
    #[serde(default)]
    pub preemption: Option<RawPreemption>,
    /// Concurrency lowered under CPU and memory pressure.
    #[serde(default)]
    pub adaptive_concurrency: Option<RawAdaptive>,
}

impl Default for RawScheduling {
    fn default() -> Self {
        Self {
            policy: default_sched_policy(),
            fair_share_by: default_share_by(),
            las_quantum_tokens: default_las_quantum(),
            preemption: None,
            adaptive_concurrency: None,
        }
    }
}

fn default_sched_policy() -> RawSchedPolicy {
    RawSchedPolicy::Priority
}
fn default_share_by() -> RawShareBy {
    RawShareBy::Agent
}
fn default_las_quantum() -> u64 {
    2000
}

/// `preemption: (...)` of `scheduling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreemption {
    /// Steps an attempt runs before it may be preempted.
    #[serde(default)]
    pub slice_steps: Option<u32>,
    /// Seconds an attempt runs before it may be preempted.
    #[serde(default)]
    pub slice_secs: Option<f64>,
    /// How many priority points better the waiting task must be.
    #[serde(default = "default_priority_gap")]
    pub priority_gap: u32,
}

fn default_priority_gap() -> u32 {
    10
}

/// `adaptive_concurrency: (...)` of `scheduling`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdaptive {
    /// The floor of the effective concurrency.
    #[serde(default = "default_min_concurrency")]
    pub min_concurrency: u32,
    /// CPU use (0..1) above which concurrency is lowered.
    #[serde(default = "default_cpu_high")]
    pub cpu_high: f64,
    /// CPU use below which it is raised back.
    #[serde(default = "default_cpu_low")]
    pub cpu_low: f64,
    /// Memory use (0..1) above which concurrency is lowered.
    #[serde(default = "default_memory_high")]
    pub memory_high: f64,
    /// Memory use below which it is raised back.
    #[serde(default = "default_memory_low")]
    pub memory_low: f64,
}

fn default_cpu_high() -> f64 {
    0.9
}
fn default_cpu_low() -> f64 {
    0.6
}
fn default_memory_high() -> f64 {
    0.9
}
fn default_memory_low() -> f64 {
    0.75
}
