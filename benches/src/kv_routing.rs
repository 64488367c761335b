//! The KV-routing scenario: how much prefill cache-aware routing saves, measured end to end.
//!
//! Two workloads run through the real actor system (scheduler, agents, `KvCachePool`) against
//! the simulator with [`REPLICAS`] replicas of [`SLOTS`] batch slots, each keeping its own
//! prefix cache and charging prefill only for uncached prompt tokens:
//!
//! - `multi_turn`: N agents share a system prompt of about 1.9k tokens; each has a private
//!   task context of 400 to 700 words and a multi-turn conversation (tool calls, then an
//!   answer), so every call repeats the agent's earlier turns.
//! - `fork`: one long shared document, N continuations (distinct questions appended to it).
//!
//! Each workload runs once per routing policy (`prefix_aware`, `round_robin`,
//! `least_loaded`), in the same process, one after the other. Per policy the report gives the
//! engine-side hit rate (cached prompt tokens the simulator reported / prompt tokens), the
//! upper bound (the same prompts against one unbounded cache: what no router can beat), the
//! pool's share of blocks saved by sharing at peak, and the wall-clock makespan and throughput.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_actors::system::{boot, BootOptions, RunEnd};
use agentos_runtime::config::Config;
use agentos_runtime::kvcache::RoutingPolicy;
use serde::Serialize;

/// Simulated replicas of the backend.
pub const REPLICAS: usize = 4;

/// Calls each simulated replica serves at once (its batch slots); more wait in line, so a
/// replica's throughput is bounded and prefill saved by cache hits shortens the run.
pub const SLOTS: usize = 4;

/// LLM calls per agent in `multi_turn` (tool calls, then the answer).
pub const TURNS: usize = 4;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct KvRoutingReport {
    /// Agents (tasks) per workload.
    pub agents: usize,
    /// Replicas of the simulated backend.
    pub replicas: usize,
    /// Workloads, each with one row per policy.
    pub workloads: Vec<WorkloadReport>,
}

/// One workload under every policy.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// `multi_turn` or `fork`.
    pub name: String,
    /// One row per routing policy.
    pub policies: Vec<PolicyReport>,
}

/// One workload under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// Routing policy.
    pub policy: String,
    /// LLM calls made.
    pub calls: u64,
    /// Prompt tokens sent.
    pub prompt_tokens: u64,
    /// Prompt tokens the simulator served from its replicas' caches.
    pub cached_tokens: u64,
    /// `cached_tokens / prompt_tokens`, as the engine saw it.
    pub hit_rate: f64,
    /// Hit rate of the pool's model of the replicas (should track `hit_rate`).
    pub model_hit_rate: f64,
    /// Hit rate of the same prompts against one unbounded cache.
    pub upper_bound_hit_rate: f64,
    /// `hit_rate / upper_bound_hit_rate`.
    pub share_of_upper_bound: f64,
    /// Share of blocks saved by sharing at peak demand (pool model, all replicas).
    pub blocks_saved_ratio: f64,
    /// Copy-on-write copies (pool model).
    pub cow_copies: u64,
    /// Evictions (pool model).
    pub evictions: u64,
    /// Wall clock from boot to the last task's end, seconds.
    pub makespan_secs: f64,
    /// Calls per second of makespan.
    pub calls_per_sec: f64,
    /// Tasks that did not succeed (0 in a healthy run).
    pub failed_tasks: usize,
}

/// The policies compared, in report order.
pub const POLICIES: [RoutingPolicy; 3] = [
    RoutingPolicy::PrefixAware,
    RoutingPolicy::RoundRobin,
    RoutingPolicy::LeastLoaded,
];

/// Runs both workloads with `agents` agents under every policy. Must not run inside an actix
/// system (it starts its own, one per run).
pub fn run(agents: usize) -> anyhow::Result<KvRoutingReport> {
    let agents = agents.max(1);
    // Load the BPE tables before anything is timed.
    let _ = agentos_runtime::tokenize::Encoding::default().count("warm up");
    let mut workloads = Vec::new();
    for name in ["multi_turn", "fork"] {
        let mut policies = Vec::new();
        for policy in POLICIES {
            let text = config_text(name, agents, policy);
            let cfg = Config::parse(&text, "kv-routing.ron", Path::new("."))
                .map_err(|e| anyhow::anyhow!("generated config is invalid: {e}"))?;
            policies.push(run_once(cfg, policy)?);
        }
        workloads.push(WorkloadReport {
            name: name.into(),
            policies,
        });
    }
    Ok(KvRoutingReport {
        agents,
        replicas: REPLICAS,
        workloads,
    })
}

fn run_once(cfg: Config, policy: RoutingPolicy) -> anyhow::Result<PolicyReport> {
    let data_dir = tempfile::tempdir()?;
    let data_path = data_dir.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let started = Instant::now();
        let opts = BootOptions {
            data_dir: Some(data_path),
            ..BootOptions::default()
        };
        let sys = boot(Arc::new(cfg), opts)?;
        // Set before any actor starts, so the upper bound sees every prompt.
        sys.track_kv_upper_bound();
        let end = sys
            .wait(actix_rt::time::sleep(Duration::from_secs(1800)))
            .await;
        let makespan = started.elapsed().as_secs_f64();
        anyhow::ensure!(end == RunEnd::Completed, "run ended with {end:?}");
        let snapshot = sys.snapshot().await?;
        let stats =
            sys.kv_stats().await.remove("sim").ok_or_else(|| {
                anyhow::anyhow!("the KV-cache pool did not answer for backend sim")
            })?;
        sys.stop().await;
        let prompt_tokens: u64 = snapshot.tasks.iter().map(|t| t.prompt_tokens).sum();
        let cached_tokens: u64 = snapshot.tasks.iter().map(|t| t.cached_tokens).sum();
        let failed_tasks = snapshot.tasks.iter().filter(|t| t.output.is_none()).count();
        let calls = stats.total.acquires;
        let upper = stats.upper_bound.unwrap_or_default();
        let hit_rate = ratio(cached_tokens, prompt_tokens);
        Ok(PolicyReport {
            policy: policy.name().into(),
            calls,
            prompt_tokens,
            cached_tokens,
            hit_rate,
            model_hit_rate: stats.total.hit_rate(),
            upper_bound_hit_rate: upper.hit_rate(),
            share_of_upper_bound: if upper.hit_rate() > 0.0 {
                hit_rate / upper.hit_rate()
            } else {
                0.0
            },
            blocks_saved_ratio: stats.total.sharing_saved_ratio(),
            cow_copies: stats.total.cow_copies,
            evictions: stats.total.evictions,
            makespan_secs: makespan,
            calls_per_sec: if makespan > 0.0 {
                calls as f64 / makespan
            } else {
                0.0
            },
            failed_tasks,
        })
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Deterministic filler text: `words` pseudo-random words from a small vocabulary, seeded.
fn words(seed: u64, words: usize) -> String {
    const VOCAB: &[&str] = &[
        "agent", "buffer", "cache", "deploy", "error", "fixture", "graph", "handler", "index",
        "journal", "kernel", "latency", "module", "network", "offset", "parser", "queue",
        "replica", "schema", "token", "update", "vector", "worker", "yield", "zone", "alpha",
        "budget", "commit", "delta", "event",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::new();
    for i in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(VOCAB[(x % VOCAB.len() as u64) as usize]);
        if x.is_multiple_of(11) {
            let _ = write!(out, " {}", x % 997);
        }
    }
    out
}

/// The shared system prompt: about 1.9k tokens of numbered rules.
fn system_prompt() -> String {
    let mut s = String::from("You are a member of a fleet of repair agents. Follow every rule.\n");
    for i in 0..110 {
        let _ = writeln!(s, "Rule {i}: {}.", words(1000 + i, 11));
    }
    s
}

/// The generated config of one workload under one policy (also shows the schema in use; see
/// `config/kv-routing.ron` for a hand-written example).
pub fn config_text(workload: &str, agents: usize, policy: RoutingPolicy) -> String {
    let role = system_prompt();
    let concurrency = agents.min(64);
    let (script, tools) = if workload == "multi_turn" {
        let mut script = String::new();
        for t in 0..TURNS - 1 {
            let _ = write!(
                script,
                "Call(tool: \"calculator\", args: \"{{\\\"expression\\\": \\\"{} * 7\\\"}}\"),",
                t + 2
            );
        }
        script.push_str("Answer(\"done: {{last_tool_result}}\")");
        (script, "[\"calculator\"]")
    } else {
        (String::from("Answer(\"answered\")"), "[]")
    };
    let document = words(7, 700);
    let mut tasks = String::new();
    for i in 0..agents {
        let input = if workload == "multi_turn" {
            // 400..700 words: private contexts of different lengths, so agents do not move in
            // lock step (which would let blind policies land on the same replica every turn).
            format!("Case {i}: {}", words(i as u64 + 1, 400 + (i * 37) % 300))
        } else {
            format!(
                "Document: {document}\n\nQuestion {i}: {}",
                words(i as u64 + 50_000, 12)
            )
        };
        let _ = write!(
            tasks,
            "(id: \"t{i}\", agent: \"worker\", input: {input:?}),"
        );
    }
    format!(
        r#"(
    version: 1,
    runtime: (max_concurrency: {concurrency}),
    backends: [(
        name: "sim",
        kind: Sim((seed: 1, replicas: {REPLICAS}, slots: {SLOTS},
                   latency: (base_ms: 5, per_prompt_token_us: 100, per_output_token_ms: 0.1))),
        cache: (block_size: 16, capacity_blocks: 16384, routing: "{policy}", load_slack: 0.5),
    )],
    agents: [(name: "worker", role: {role:?}, backend: "sim", tools: {tools}, replicas: {concurrency},
              max_steps: {max_steps}, timeout_secs: 600, context_budget_tokens: 16384,
              sim: (script: [{script}]))],
    workflows: [(name: "{workload}", tasks: [{tasks}])],
)"#,
        policy = policy.name(),
        max_steps = TURNS + 1,
    )
}

/// The report as markdown tables, one per workload.
pub fn render_markdown(r: &KvRoutingReport) -> String {
    let mut out = String::new();
    for w in &r.workloads {
        let _ = writeln!(
            out,
            "\n**{}**, {} agents, {} simulated replicas\n",
            w.name, r.agents, r.replicas
        );
        out.push_str("| policy | calls | hit rate | upper bound | of bound | model hit rate | blocks saved by sharing | CoW copies | evictions | makespan (s) | calls/s |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &w.policies {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {} | {} | {:.2} | {:.1} |",
                p.policy,
                p.calls,
                p.hit_rate * 100.0,
                p.upper_bound_hit_rate * 100.0,
                p.share_of_upper_bound * 100.0,
                p.model_hit_rate * 100.0,
                p.blocks_saved_ratio * 100.0,
                p.cow_copies,
                p.evictions,
                p.makespan_secs,
                p.calls_per_sec
            );
        }
    }
    out
}
