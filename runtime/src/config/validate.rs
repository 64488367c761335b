//! Phase two: validation that collects every problem before failing.
//!
//! Each [`ConfigError`] names the entity (`agent "planner"`) and carries `file:line:col` where
//! the [`SpanIndex`] finds one. Relative paths resolve against the config file's folder.

use crate::kvcache::{KvCacheSettings, RoutingPolicy};
use crate::tokenize::Encoding;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, RawConfig};
use super::span::{EntityKind, Position, SpanIndex};
use super::*;
use crate::model::dag::find_cycle;

mod backend;
mod quota;
mod sandbox;
use crate::tools::{CommandSettings, FileSettings, BUILTIN_TOOLS};

/// One config problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name or origin label.
    pub origin: String,
    /// Where, if known.
    pub position: Option<Position>,
    /// The entity, e.g. `agent "planner"`; empty for file-level problems.
    pub entity: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}: ", self.origin, p)?,
            None => write!(f, "{}: ", self.origin)?,
        }
        if !self.entity.is_empty() {
            write!(f, "{}: ", self.entity)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config, in file order where positions are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} config error{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(crate) fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            position: None,
            entity: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cfg = load_str(&text, &origin, &base)?;
    cfg.source = Some(path.to_path_buf());
    Ok(cfg)
}

pub(crate) fn load_str(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let spans = SpanIndex::new(text);
    let options =
        ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
    let raw: RawConfig = options.from_str(text).map_err(|e| {
        let position = Position {
            line: e.span.start.line,
            col: e.span.start.col,
        };
        let entity = spans.entity_at(spans.offset(position)).unwrap_or_default();
        ConfigErrors(vec![ConfigError {
            origin: origin.to_owned(),
            position: Some(position),
            entity,
            message: e.code.to_string(),
        }])
    })?;
    let mut v = Validator {
        origin,
        spans: &spans,
        base,
        errors: Vec::new(),
    };
    let cfg = v.config(raw);
    if v.errors.is_empty() {
        Ok(cfg)
    } else {
        let mut errors = v.errors;
        errors.sort_by_key(|e| {
            e.position.unwrap_or(Position {
                line: usize::MAX,
                col: 0,
            })
        });
        Err(ConfigErrors(errors))
    }
}

pub(crate) fn parse_workflow(
    cfg: &Config,
    text: &str,
    format: WorkflowFormat,
    origin: &str,
) -> Result<WorkflowSpec, WorkflowRejected> {
    let one = |position: Option<Position>, message: String| {
        WorkflowRejected::Malformed(ConfigError {
            origin: origin.to_owned(),
            position,
            entity: String::new(),
            message,
        })
    };
    // RON positions are found by the span index; JSON ones come from serde_json, and the
    // entity names in JSON errors carry no position.
    let spans = match format {
        WorkflowFormat::Ron => SpanIndex::new(&format!("(workflows: [{text}])")),
        WorkflowFormat::Json => SpanIndex::new(""),
    };
    let raw: raw::RawWorkflow = match format {
        WorkflowFormat::Json => serde_json::from_str(text).map_err(|e| {
            one(
                Some(Position {
                    line: e.line(),
                    col: e.column(),
                }),
                format!("invalid JSON: {e}"),
            )
        })?,
        WorkflowFormat::Ron => ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| {
                one(
                    Some(Position {
                        line: e.span.start.line,
                        col: e.span.start.col,
                    }),
                    format!("invalid RON: {}", e.code),
                )
            })?,
    };
    let base = cfg
        .source
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut v = Validator {
        origin,
        spans: &spans,
        base: &base,
        errors: Vec::new(),
    };
    v.check_name(EntityKind::Workflow, &raw.name, None);
    let spec = v.workflow(&raw, |name| cfg.agent(name).is_some());
    v.workflow_quotas(&spec, cfg);
    if v.errors.is_empty() {
        Ok(spec)
    } else {
        let mut errors = v.errors;
        if format == WorkflowFormat::Json {
            for e in &mut errors {
                e.position = e.position.or_else(|| json_position(text, &raw, &e.entity));
            }
            errors.sort_by_key(|e| {
                e.position.unwrap_or(Position {
                    line: usize::MAX,
                    col: 0,
                })
            });
        }
        if format == WorkflowFormat::Ron {
            // Positions were found in the wrapped text, 13 columns shifted on
            // the first line only; report them against the body as sent.
            for e in &mut errors {
                if let Some(p) = &mut e.position {
                    if p.line == 1 {
                        p.col = p.col.saturating_sub(13).max(1);
                    }
                }
            }
        }
        Err(WorkflowRejected::Invalid(ConfigErrors(errors)))
    }
}

/// Where the entity an error names is declared in a JSON workflow: the `"id": "..."` of a
/// task (its first occurrence after the `"tasks"` key), or the workflow's `"name"`.
fn json_position(text: &str, raw: &raw::RawWorkflow, entity: &str) -> Option<Position> {
    let quoted = |s: &str| serde_json::to_string(s).ok();
    let (key, value, from) = if entity.starts_with("task ") {
        let task = raw
            .tasks
            .iter()
            .find(|t| entity == entity_label(EntityKind::Task, &t.id, Some(&raw.name)))?;
        ("id", quoted(&task.id)?, text.find("\"tasks\"").unwrap_or(0))
    } else if entity.starts_with("workflow ") {
        ("name", quoted(&raw.name)?, 0)
    } else {
        return None;
    };
    let pattern = format!(r#""{key}"\s*:\s*{}"#, regex::escape(&value));
    let re = regex::Regex::new(&pattern).ok()?;
    let at = from + re.find(&text[from..])?.start();
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Some(Position { line, col })
}

/// Where an error points.
#[derive(Clone, Copy)]
enum At<'a> {
    File,
    /// The first `key:` of the file (a runtime-wide section).
    Key(&'a str),
    Entity(EntityKind, &'a str, Option<&'a str>),
    Field(EntityKind, &'a str, Option<&'a str>, &'a str),
}

struct Validator<'a> {
    origin: &'a str,
    spans: &'a SpanIndex,
    base: &'a Path,
    errors: Vec<ConfigError>,
}

fn entity_label(kind: EntityKind, name: &str, scope: Option<&str>) -> String {
    match kind {
        EntityKind::Backend => format!("backend \"{name}\""),
        EntityKind::Agent => format!("agent \"{name}\""),
        EntityKind::Workflow => format!("workflow \"{name}\""),
        EntityKind::Task => format!("task \"{}/{name}\"", scope.unwrap_or("?")),
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}

/// Largest number any time or rate setting may hold (a year in seconds): far beyond any sane
/// value, and small enough that deadlines computed from it never overflow.
/// Most concurrent calls per simulated replica.
const MAX_SIM_SLOTS: u32 = 1_000_000;

const MAX_SETTING: f64 = 31_536_000.0;

/// Most blocks per replica.
const MAX_CACHE_BLOCKS: usize = crate::kvcache::MAX_CAPACITY_BLOCKS;

/// Largest block size.
const MAX_BLOCK_SIZE: usize = crate::kvcache::MAX_BLOCK_SIZE;

/// A positive duration setting within [`MAX_SETTING`].
fn positive_secs(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SETTING
}

fn finite_nonneg(v: f64) -> bool {
    v.is_finite() && (0.0..=MAX_SETTING).contains(&v)
}

impl Validator<'_> {
    fn err(&mut self, at: At<'_>, message: impl Into<String>) {
        let (position, entity) = match at {
            At::File => (None, String::new()),
            At::Key(k) => (self.spans.locate_key(k), String::new()),
            At::Entity(k, n, s) => (self.spans.locate(k, n, s), entity_label(k, n, s)),
            At::Field(k, n, s, f) => (self.spans.locate_field(k, n, s, f), entity_label(k, n, s)),
        };
        self.errors.push(ConfigError {
            origin: self.origin.to_owned(),
            position,
            entity,
            message: message.into(),
        });
    }

    fn check_name(&mut self, kind: EntityKind, name: &str, scope: Option<&str>) {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.err(
                At::Entity(kind, name, scope),
                "names must be 1..=64 characters of letters, digits, `_` or `-`",
            );
        }
    }

    fn unique<'n>(
        &mut self,
        kind: EntityKind,
        names: impl IntoIterator<Item = &'n str>,
        scope: Option<&str>,
    ) {
        let mut seen = HashSet::new();
        for n in names {
            if !seen.insert(n) {
                let what = match kind {
                    EntityKind::Task => "task id",
                    _ => "name",
                };
                self.err(
                    At::Entity(kind, n, scope),
                    format!("duplicate {what} \"{n}\""),
                );
            }
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        if raw.version != 1 {
            self.err(
                At::File,
                format!(
                    "unsupported config version {} (this runtime reads version 1)",
                    raw.version
                ),
            );
        }
        let runtime = self.runtime(&raw.runtime);
        let tools = self.tools(&raw.tools);
        for b in &raw.backends {
            self.check_name(EntityKind::Backend, &b.name, None);
        }
        self.unique(
            EntityKind::Backend,
            raw.backends.iter().map(|b| b.name.as_str()),
            None,
        );
        let backends: Vec<BackendSpec> = raw
            .backends
            .iter()
            .map(|b| self.backend(b, &raw.agents))
            .collect();

        for a in &raw.agents {
            self.check_name(EntityKind::Agent, &a.name, None);
        }
        self.unique(
            EntityKind::Agent,
            raw.agents.iter().map(|a| a.name.as_str()),
            None,
        );
        let agents: Vec<AgentSpec> = raw.agents.iter().map(|a| self.agent(a, &raw)).collect();
        self.fallback_cycles(&raw.agents);

        for w in &raw.workflows {
            self.check_name(EntityKind::Workflow, &w.name, None);
        }
        self.unique(
            EntityKind::Workflow,
            raw.workflows.iter().map(|w| w.name.as_str()),
            None,
        );
        let workflows = raw
            .workflows
            .iter()
            .map(|w| self.workflow(w, |name| raw.agents.iter().any(|a| a.name == name)))
            .collect();

        let workflows: Vec<WorkflowSpec> = workflows;
        self.unpriced_budgets(&runtime, &backends, &agents, &workflows);
        Config {
            source: None,
            runtime,
            backends,
            tools,
            agents,
            workflows,
        }
    }

    /// A workflow's quotas need something to enforce them, and a budget in dollars needs a
    /// price: refused otherwise, rather than silently not applied.
    fn workflow_quotas(&mut self, w: &WorkflowSpec, cfg: &Config) {
        if w.quotas.is_empty() {
            return;
        }
        let at = At::Field(EntityKind::Workflow, &w.name, None, "quotas");
        if !cfg.counts_calls() {
            self.err(
                at,
                "declares quotas, but this server's config has no quota gate (no quota, price \
                 or backend limit anywhere): give the config a `runtime.quotas` section or a \
                 backend `price` to enforce workflow quotas",
            );
        } else if w.quotas.budget.as_ref().is_some_and(|b| b.usd.is_some())
            && !cfg.backends.iter().any(|b| b.limits.price.is_some())
        {
            self.err(
                at,
                "quotas.budget.usd is set but no backend has a price: budget in tokens, or \
                 give the backends a price (USD per million tokens)",
            );
        }
    }

    /// A budget in US dollars over backends with no `price` could never be spent: refused.
    fn unpriced_budgets(
        &mut self,
        runtime: &RuntimeSettings,
        backends: &[BackendSpec],
        agents: &[AgentSpec],
        workflows: &[WorkflowSpec],
    ) {
        let priced = |name: &str| {
            backends
                .iter()
                .any(|b| b.name == name && b.limits.price.is_some())
        };
        let usd = |q: &crate::config::quota::QuotaSpec| {
            q.budget.as_ref().is_some_and(|b| b.usd.is_some())
        };
        for a in agents.iter().filter(|a| usd(&a.quotas)) {
            if !priced(&a.backend) {
                self.err(
                    At::Field(EntityKind::Agent, &a.name, None, "quotas"),
                    format!(
                        "quotas.budget.usd is set but backend \"{}\" has no price: give the \
                         backend a price (USD per million tokens) or budget in tokens",
                        a.backend
                    ),
                );
            }
        }
        let any_price = backends.iter().any(|b| b.limits.price.is_some());
        if !any_price {
            for w in workflows.iter().filter(|w| usd(&w.quotas)) {
                self.err(
                    At::Field(EntityKind::Workflow, &w.name, None, "quotas"),
                    "quotas.budget.usd is set but no backend has a price: budget in tokens, or \
                     give the backends a price (USD per million tokens)",
                );
            }
        }
        if usd(&runtime.quotas) && !any_price {
            self.err(
                At::Key("quotas"),
                "runtime.quotas.budget.usd is set but no backend has a price: give the \
                 backends a price (USD per million tokens) or budget in tokens",
            );
        }
    }

    fn runtime(&mut self, r: &raw::RawRuntime) -> RuntimeSettings {
        if !(1..=100_000).contains(&r.max_concurrency) {
            self.err(
                At::File,
                format!(
                    "runtime.max_concurrency must be 1..=100000, got {}",
                    r.max_concurrency
                ),
            );
        }
        for (name, v) in [
            ("lease_grace_secs", r.lease_grace_secs),
            ("aging_per_sec", r.aging_per_sec),
            ("shutdown_timeout_secs", r.shutdown_timeout_secs),
        ] {
            if !finite_nonneg(v) {
                self.err(
                    At::File,
                    format!("runtime.{name} must be within 0..=31536000, got {v}"),
                );
            }
        }
        let s = &r.supervisor;
        if !positive_secs(s.within_secs) {
            self.err(
                At::File,
                format!(
                    "runtime.supervisor.within_secs must be > 0 and at most 31536000, got {}",
                    s.within_secs
                ),
            );
        }
        if s.backoff_initial_ms > s.backoff_max_ms {
            self.err(
                At::File,
                format!(
                    "runtime.supervisor.backoff_initial_ms ({}) is larger than backoff_max_ms ({})",
                    s.backoff_initial_ms, s.backoff_max_ms
                ),
            );
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let worker_threads = match r.worker_threads {
            Some(n) if n > 1024 => {
                self.err(
                    At::File,
                    format!("runtime.worker_threads must be 0..=1024, got {n}"),
                );
                1
            }
            Some(n) => n as usize,
            None => cores,
        };
        let api = &r.api;
        if let Some(var) = &api.token_env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                self.err(
                    At::File,
                    format!("runtime.api.token_env must name an environment variable, got {var:?}"),
                );
            }
        }
        if !(1..=1 << 30).contains(&api.max_body_bytes) {
            self.err(
                At::File,
                format!(
                    "runtime.api.max_body_bytes must be 1..=1073741824, got {}",
                    api.max_body_bytes
                ),
            );
        }
        if !(1..=65_536).contains(&api.max_connections) {
            self.err(
                At::File,
                format!(
                    "runtime.api.max_connections must be 1..=65536, got {}",
                    api.max_connections
                ),
            );
        }
        if !positive_secs(api.request_timeout_secs) {
            self.err(
                At::File,
                format!(
                    "runtime.api.request_timeout_secs must be > 0 and at most 31536000, got {}",
                    api.request_timeout_secs
                ),
            );
        }
        if !(1..=1_000_000).contains(&api.event_window) {
            self.err(
                At::File,
                format!(
                    "runtime.api.event_window must be 1..=1000000, got {}",
                    api.event_window
                ),
            );
        }
        if r.spawn.max_tasks_per_workflow > 100_000 {
            self.err(
                At::File,
                format!(
                    "runtime.spawn.max_tasks_per_workflow must be 0..=100000, got {}",
                    r.spawn.max_tasks_per_workflow
                ),
            );
        }
        if r.spawn.max_depth > 64 {
            self.err(
                At::File,
                format!(
                    "runtime.spawn.max_depth must be 0..=64, got {}",
                    r.spawn.max_depth
                ),
            );
        }
        RuntimeSettings {
            api: ApiSettings {
                token_env: api.token_env.clone(),
                max_body_bytes: api.max_body_bytes.clamp(1, 1 << 30) as usize,
                max_connections: api.max_connections.clamp(1, 65_536) as usize,
                request_timeout: secs(api.request_timeout_secs),
                event_window: api.event_window.clamp(1, 1_000_000) as usize,
            },
            spawn: SpawnLimits {
                max_tasks_per_workflow: r.spawn.max_tasks_per_workflow,
                max_depth: r.spawn.max_depth,
            },
            worker_threads,
            sandbox: r.sandbox,
            durability: r.durability,
            scheduling: self.scheduling(&r.scheduling, r.max_concurrency.max(1) as usize),
            quotas: self.quotas(At::Key("quotas"), &r.quotas, "runtime.quotas"),
            max_concurrency: r.max_concurrency.max(1) as usize,
            data_dir: self.resolve(&r.data_dir),
            supervisor: SupervisorSettings {
                max_restarts: s.max_restarts,
                within: secs(s.within_secs),
                backoff_initial: Duration::from_millis(s.backoff_initial_ms),
                backoff_max: Duration::from_millis(s.backoff_max_ms),
            },
            lease_grace: secs(r.lease_grace_secs),
            aging_per_sec: if r.aging_per_sec.is_finite() {
                r.aging_per_sec.max(0.0)
            } else {
                0.0
            },
            shutdown_timeout: secs(r.shutdown_timeout_secs),
        }
    }

    fn tools(&mut self, t: &raw::RawTools) -> ToolsSettings {
        let c = &t.run_command;
        if !positive_secs(c.timeout_secs) {
            self.err(
                At::File,
                format!(
                    "tools.run_command.timeout_secs must be > 0 and at most 31536000, got {}",
                    c.timeout_secs
                ),
            );
        }
        if c.max_output_bytes == 0 {
            self.err(
                At::File,
                "tools.run_command.max_output_bytes must be at least 1",
            );
        }
        if t.files.max_file_bytes == 0 || t.files.max_matches == 0 {
            self.err(
                At::File,
                "tools.files.max_file_bytes and max_matches must be at least 1",
            );
        }
        if !positive_secs(t.call_timeout_secs) {
            self.err(
                At::File,
                format!(
                    "tools.call_timeout_secs must be > 0 and at most 31536000, got {}",
                    t.call_timeout_secs
                ),
            );
        } else if positive_secs(c.timeout_secs) && t.call_timeout_secs < c.timeout_secs {
            self.err(
                At::File,
                format!(
                    "tools.call_timeout_secs ({}) is shorter than tools.run_command.timeout_secs ({}): \
                     commands would be abandoned before their own timeout kills them",
                    t.call_timeout_secs, c.timeout_secs
                ),
            );
        }
        ToolsSettings {
            call_timeout: secs(t.call_timeout_secs),
            command: CommandSettings {
                timeout: secs(c.timeout_secs),
                max_output_bytes: usize::try_from(c.max_output_bytes).unwrap_or(usize::MAX),
                env_allow: c.env_allow.clone(),
            },
            files: FileSettings {
                max_file_bytes: usize::try_from(t.files.max_file_bytes).unwrap_or(usize::MAX),
                max_matches: t.files.max_matches as usize,
            },
        }
    }

    fn agent(&mut self, a: &raw::RawAgent, raw: &RawConfig) -> AgentSpec {
        let name = a.name.as_str();
        let at = |f| At::Field(EntityKind::Agent, name, None, f);
        let backend = raw.backends.iter().find(|b| b.name == a.backend);
        match backend {
            None => self.err(
                at("backend"),
                format!("backend \"{}\" is not declared", a.backend),
            ),
            Some(b) => {
                if a.sim.is_some() && !matches!(b.kind, raw::RawBackendKind::Sim(_)) {
                    self.err(
                        at("sim"),
                        format!(
                            "has a `sim` behaviour but backend \"{}\" is not a simulator",
                            b.name
                        ),
                    );
                }
            }
        }
        if a.role.trim().is_empty() {
            self.err(at("role"), "role (the system prompt) must not be empty");
        }
        let mut seen = HashSet::new();
        for t in &a.tools {
            if !BUILTIN_TOOLS.contains(&t.as_str()) {
                self.err(
                    at("tools"),
                    format!(
                        "unknown tool \"{t}\" (built-in tools: {})",
                        BUILTIN_TOOLS.join(", ")
                    ),
                );
            } else if !seen.insert(t.as_str()) {
                self.err(at("tools"), format!("tool \"{t}\" granted twice"));
            }
        }
        for t in a.side_effects.keys() {
            if !a.tools.contains(t) {
                self.err(
                    at("side_effects"),
                    format!("side_effects names tool \"{t}\", which the agent is not granted"),
                );
            }
        }
        if !(0..=100).contains(&a.priority) {
            self.err(
                at("priority"),
                format!("priority must be within 0..=100, got {}", a.priority),
            );
        }
        if !(1..=1000).contains(&a.max_steps) {
            self.err(
                at("max_steps"),
                format!("max_steps must be within 1..=1000, got {}", a.max_steps),
            );
        }
        let r = &a.retry;
        if !(1..=100).contains(&r.max_attempts) {
            self.err(
                at("retry"),
                format!(
                    "retry.max_attempts must be within 1..=100, got {}",
                    r.max_attempts
                ),
            );
        }
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            self.err(
                at("retry"),
                format!("retry.multiplier must be >= 1, got {}", r.multiplier),
            );
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            self.err(
                at("retry"),
                format!("retry.jitter must be within 0..=1, got {}", r.jitter),
            );
        }
        if r.initial_backoff_ms > r.max_backoff_ms {
            self.err(
                at("retry"),
                format!(
                    "retry.initial_backoff_ms ({}) is larger than max_backoff_ms ({})",
                    r.initial_backoff_ms, r.max_backoff_ms
                ),
            );
        }
        if !positive_secs(a.timeout_secs) {
            self.err(
                at("timeout_secs"),
                format!(
                    "timeout_secs must be > 0 and at most 31536000, got {}",
                    a.timeout_secs
                ),
            );
        }
        if let Some(fb) = &a.fallback {
            if fb == name {
                self.err(at("fallback"), "an agent cannot be its own fallback");
            } else if !raw.agents.iter().any(|x| &x.name == fb) {
                self.err(
                    at("fallback"),
                    format!("fallback agent \"{fb}\" is not declared"),
                );
            }
        }
        let (context, problems) = super::context::check(a, raw);
        for (field, message) in problems {
            self.err(at(field), message);
        }
        if !(1..=100_000).contains(&a.replicas) {
            self.err(
                at("replicas"),
                format!("replicas must be within 1..=100000, got {}", a.replicas),
            );
        }
        if let Some(w) = &a.workspace {
            for name in &w.exclude {
                if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
                    self.err(
                        at("workspace"),
                        format!(
                            "workspace.exclude entry {name:?} must be a file or folder name, not a path"
                        ),
                    );
                }
            }
        }
        let workspace = a.workspace.as_ref().and_then(|w| {
            let root = self.resolve(&w.root);
            match std::fs::canonicalize(&root) {
                Ok(p) if p.is_dir() => Some(WorkspaceSpec {
                    root: p,
                    copy: w.copy,
                    exclude: w.exclude.clone(),
                }),
                Ok(p) => {
                    self.err(
                        at("workspace"),
                        format!("workspace root {} is not a directory", p.display()),
                    );
                    None
                }
                Err(e) => {
                    self.err(
                        at("workspace"),
                        format!("workspace root {} cannot be opened: {e}", root.display()),
                    );
                    None
                }
            }
        });
        let needs_workspace = ["read_file", "write_file", "list_dir", "grep", "run_command"];
        if a.workspace.is_none() {
            if let Some(t) = a
                .tools
                .iter()
                .find(|t| needs_workspace.contains(&t.as_str()))
            {
                self.err(
                    at("tools"),
                    format!("tool \"{t}\" needs a workspace, but the agent declares none"),
                );
            }
        }
        let grants_command = a.tools.iter().any(|t| t == "run_command");
        if grants_command && a.commands.is_empty() {
            self.err(
                at("commands"),
                "run_command is granted but the `commands` allowlist is empty",
            );
        }
        if !grants_command && !a.commands.is_empty() {
            self.err(
                at("commands"),
                "`commands` are listed but run_command is not granted",
            );
        }
        if a.commands
            .iter()
            .any(|c| c.is_empty() || c[0].trim().is_empty())
        {
            self.err(at("commands"), "every allowed command needs a program name");
        }
        for topic in &a.subscribe {
            if topic.trim().is_empty() {
                self.err(at("subscribe"), "topic names must not be empty");
            }
        }
        let sim = a
            .sim
            .as_ref()
            .map(|s| self.sim_behaviour(a, s))
            .unwrap_or_default();
        let sandbox = self.agent_sandbox(a);
        let weight = self.weight(at("weight"), a.weight);
        let quotas = self.quotas(at("quotas"), &a.quotas, "quotas");
        AgentSpec {
            weight,
            quotas,
            name: a.name.clone(),
            role: a.role.clone(),
            backend: a.backend.clone(),
            tools: a.tools.clone(),
            priority: a.priority.clamp(0, 100) as u8,
            max_steps: a.max_steps.max(1),
            retry: RetryPolicy {
                max_attempts: r.max_attempts.max(1),
                initial_backoff: Duration::from_millis(r.initial_backoff_ms),
                max_backoff: Duration::from_millis(r.max_backoff_ms),
                multiplier: r.multiplier,
                jitter: r.jitter,
            },
            timeout: secs(a.timeout_secs),
            fallback: a.fallback.clone(),
            context_budget_tokens: context.budget_tokens(),
            context,
            workspace,
            commands: a.commands.clone(),
            replicas: a.replicas.max(1),
            subscribe: a.subscribe.clone(),
            sim,
            sandbox,
            side_effects: a.side_effects.clone(),
        }
    }

    fn sim_behaviour(&mut self, a: &raw::RawAgent, s: &raw::RawSimBehaviour) -> SimBehaviour {
        let at = At::Field(EntityKind::Agent, &a.name, None, "sim");
        let mut script = Vec::new();
        for (i, step) in s.script.iter().enumerate() {
            match step {
                raw::RawSimStep::Call { tool, args } => {
                    if !a.tools.contains(tool) {
                        self.err(at, format!("sim script step {i} calls tool \"{tool}\", which the agent is not granted"));
                    }
                    match serde_json::from_str::<serde_json::Value>(args) {
                        Ok(v) if v.is_object() => script.push(SimStep::Call {
                            tool: tool.clone(),
                            args: v,
                        }),
                        Ok(_) => self.err(
                            at,
                            format!("sim script step {i}: args must be a JSON object"),
                        ),
                        Err(e) => self.err(
                            at,
                            format!("sim script step {i}: args are not valid JSON: {e}"),
                        ),
                    }
                }
                raw::RawSimStep::Answer(text) => script.push(SimStep::Answer(text.clone())),
            }
        }
        let mut faults = Vec::new();
        for f in &s.faults {
            if f.attempt == 0 {
                self.err(at, "sim fault attempts count from 1");
            }
            faults.push(SimForcedFault {
                attempt: f.attempt,
                step: f.step,
                kind: match f.kind {
                    raw::RawFaultKind::Error => SimFaultKind::Error,
                    raw::RawFaultKind::Panic => SimFaultKind::Panic,
                    raw::RawFaultKind::Hang => SimFaultKind::Hang,
                },
            });
        }
        SimBehaviour { script, faults }
    }

    fn fallback_cycles(&mut self, agents: &[raw::RawAgent]) {
        let index: HashMap<&str, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i))
            .collect();
        let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
        let deps = |i: usize| {
            agents[i]
                .fallback
                .as_deref()
                .and_then(|f| index.get(f).copied())
                .filter(|&j| j != i)
                .into_iter()
                .collect()
        };
        if let Some(cycle) = find_cycle(&names, deps) {
            self.err(
                At::Field(EntityKind::Agent, &cycle[0], None, "fallback"),
                format!("fallback cycle: {}", cycle.join(" -> ")),
            );
        }
    }

    fn workflow(
        &mut self,
        w: &raw::RawWorkflow,
        agent_declared: impl Fn(&str) -> bool,
    ) -> WorkflowSpec {
        let wf = w.name.as_str();
        if w.tasks.is_empty() {
            self.err(
                At::Entity(EntityKind::Workflow, wf, None),
                "workflow has no tasks",
            );
        }
        for t in &w.tasks {
            self.check_name(EntityKind::Task, &t.id, Some(wf));
        }
        self.unique(
            EntityKind::Task,
            w.tasks.iter().map(|t| t.id.as_str()),
            Some(wf),
        );
        let ids: HashMap<&str, usize> = w
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        for t in &w.tasks {
            let at = |f| At::Field(EntityKind::Task, &t.id, Some(wf), f);
            if !agent_declared(&t.agent) {
                self.err(
                    at("agent"),
                    format!("agent \"{}\" is not declared", t.agent),
                );
            }
            let mut seen = HashSet::new();
            for d in &t.depends_on {
                if d == &t.id {
                    self.err(at("depends_on"), "a task cannot depend on itself");
                } else if !ids.contains_key(d.as_str()) {
                    self.err(
                        at("depends_on"),
                        format!("depends on \"{d}\", which is not a task of workflow \"{wf}\""),
                    );
                } else if !seen.insert(d.as_str()) {
                    self.err(at("depends_on"), format!("lists \"{d}\" twice"));
                }
            }
            match crate::model::template::references(&t.input) {
                Ok(refs) => {
                    for r in refs {
                        if !t.depends_on.iter().any(|d| d == r) {
                            self.err(
                                at("input"),
                                format!("input references {{{{{r}}}}}, but \"{r}\" is not in depends_on"),
                            );
                        }
                    }
                }
                Err(e) => self.err(at("input"), e),
            }
        }
        let names: Vec<&str> = w.tasks.iter().map(|t| t.id.as_str()).collect();
        let deps = |i: usize| {
            w.tasks[i]
                .depends_on
                .iter()
                .filter_map(|d| ids.get(d.as_str()).copied())
                .filter(|&j| j != i)
                .collect()
        };
        if let Some(cycle) = find_cycle(&names, deps) {
            self.err(
                At::Field(EntityKind::Task, &cycle[0], Some(wf), "depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
        WorkflowSpec {
            name: w.name.clone(),
            tasks: w
                .tasks
                .iter()
                .map(|t| TaskSpec {
                    id: t.id.clone(),
                    agent: t.agent.clone(),
                    input: t.input.clone(),
                    depends_on: t.depends_on.clone(),
                    priority_boost: t.priority_boost,
                })
                .collect(),
            weight: self.weight(
                At::Field(EntityKind::Workflow, wf, None, "weight"),
                w.weight,
            ),
            quotas: self.quotas(
                At::Field(EntityKind::Workflow, wf, None, "quotas"),
                &w.quotas,
                "quotas",
            ),
        }
    }
}
