//! `quotas`: a fleet of agents against a sim-server that enforces OpenAI-style limits (tokens
//! and requests per short window, HTTP 429 with `Retry-After`, `x-ratelimit-*` headers).
//!
//! - `agentos_limits`: the `openai` backend has `limits.rate` equal to the server's limits
//!   (default bursts, a tenth of each limit): the quota gate paces the fleet's calls to the
//!   server's refill rate, and its sliding-window log keeps every window within the limit.
//! - `no_limits` (the baseline, today's behaviour without `limits`): every agent calls at
//!   once; a 429 fails the attempt, which is retried after its backoff or the `Retry-After`.
//!
//! Both run the same tasks with the same retry policy, each against a fresh server. The
//! figures come from the server's `/healthz` (`rate_limits`: accepted and refused requests,
//! accepted tokens, the busiest window) and the run's task summaries.

use serde::Serialize;
use serde_json::json;

use super::{now, Ctx};
use crate::goals::{Figure, Goal, GoalReport};
use crate::inproc;
use crate::simhost::SimHost;
use agentos_actors::simserver::SimServerConfig;

/// The rate-limit window of the server and of the backend's limits, seconds.
pub const WINDOW_SECS: f64 = 2.0;

/// `max_tokens` of every request.
pub const MAX_TOKENS: u64 = 64;

/// The workload's size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// Agent instances, one task each.
    pub agents: usize,
    /// Tokens per window, the server's limit and the backend's.
    pub tokens_per_window: u64,
    /// Requests per window, the server's limit and the backend's.
    pub requests_per_window: u64,
}

/// The sizes of a full run and of a smoke run.
pub fn sizes(smoke: bool) -> Sizes {
    if smoke {
        Sizes {
            agents: 20,
            tokens_per_window: 4_000,
            requests_per_window: 40,
        }
    } else {
        Sizes {
            agents: 250,
            tokens_per_window: 16_000,
            requests_per_window: 130,
        }
    }
}

/// One variant as measured.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaVariant {
    /// `agentos_limits` or `no_limits`.
    pub variant: String,
    /// Wall time from boot to the last task's end, seconds.
    pub wall_secs: f64,
    /// Tasks that succeeded.
    pub tasks_succeeded: usize,
    /// Tasks that did not.
    pub tasks_failed: usize,
    /// Attempts over all tasks (a 429 ends an attempt).
    pub attempts: u64,
    /// Requests the server accepted.
    pub accepted_requests: u64,
    /// Requests the server refused with 429 (its `limited_requests`).
    pub limited_requests: u64,
    /// Real tokens (prompt + completion) of the accepted requests.
    pub accepted_tokens: u64,
    /// The most real tokens accepted in any window.
    pub max_window_tokens: u64,
    /// The most requests accepted in any window.
    pub max_window_requests: u64,
    /// The most real tokens of calls AgentOS sent within any window, by send time (from the
    /// trace): the client's side of `max_window_tokens`.
    pub max_window_tokens_sent: u64,
    /// `wall_secs / window`.
    pub windows_elapsed: f64,
    /// `accepted_tokens / (tokens_per_window × windows_elapsed)`.
    pub utilization: f64,
}

/// The server's settings (RON, as `agentos sim-server --config` takes it).
pub fn server_config(s: &Sizes) -> String {
    format!(
        "(seed: 1, latency: (base_ms: 50, per_prompt_token_us: 20, per_output_token_ms: 1.0), \
         max_concurrent: 64, tokens_per_window: {}, requests_per_window: {}, \
         limit_window_secs: {WINDOW_SECS})",
        s.tokens_per_window, s.requests_per_window
    )
}

/// How a variant's backend knows the server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    /// `limits.rate` equal to the server's.
    Configured,
    /// Nothing configured, and learning from the headers turned off: today's behaviour.
    Naive,
    /// Nothing configured: learned from the replies' `x-ratelimit-*` headers.
    Learned,
}

/// The AgentOS config of a variant.
pub fn config_text(s: &Sizes, url: &str, limited: Limits) -> String {
    let limits = match limited {
        Limits::Configured => format!(
            ", limits: (rate: (tokens: {}, requests: {}, window_secs: {WINDOW_SECS}))",
            s.tokens_per_window, s.requests_per_window
        ),
        Limits::Naive => ", limits: (learn_from_headers: false)".into(),
        Limits::Learned => String::new(),
    };
    let mut tasks = String::new();
    for i in 0..s.agents {
        tasks.push_str(&format!(
            "(id: \"t{i}\", agent: \"worker\", input: \"{}\"),",
            crate::workload::input(i)
        ));
    }
    format!(
        "(version: 1, runtime: (max_concurrency: {n}),
          backends: [(name: \"llm\", kind: OpenAi((base_url: \"{url}\", model: \"agentos-simulator\",
                      timeout_secs: 60, max_tokens: {MAX_TOKENS})){limits})],
          agents: [(name: \"worker\", role: \"You compute. Use the calculator, then answer.\",
                    backend: \"llm\", tools: [\"calculator\"], max_steps: 4, replicas: {n},
                    timeout_secs: 600, retry: (max_attempts: 100))],
          workflows: [(name: \"w\", tasks: [{tasks}])])",
        n = s.agents
    )
}

/// Runs the scenario: the limited fleet, then the baseline, each against a fresh server.
pub fn run(ctx: &Ctx) -> anyhow::Result<GoalReport<QuotaVariant>> {
    let s = sizes(ctx.smoke);
    let server_text = server_config(&s);
    let mut variants = Vec::new();
    for (name, limited) in [
        ("agentos_limits", Limits::Configured),
        ("no_limits", Limits::Naive),
        ("learned_from_headers", Limits::Learned),
    ] {
        eprintln!("  {name:>14} × {:<6}", s.agents);
        let server =
            SimHost::start(SimServerConfig::parse(&server_text).map_err(anyhow::Error::msg)?)?;
        let cfg = inproc::config(&config_text(&s, &server.base_url(), limited), "quotas.ron")?;
        let run = inproc::run(cfg, std::time::Duration::from_secs(300), |_, _| async {
            Ok(())
        })?;
        let health = server.healthz()?;
        let limits = &health["rate_limits"];
        let n = |k: &str| limits[k].as_u64().unwrap_or(0);
        let windows_elapsed = run.wall_secs / WINDOW_SECS;
        variants.push(QuotaVariant {
            variant: name.into(),
            wall_secs: run.wall_secs,
            tasks_succeeded: run.snapshot.tasks.len() - run.failed(),
            tasks_failed: run.failed(),
            attempts: run
                .snapshot
                .tasks
                .iter()
                .map(|t| u64::from(t.attempts))
                .sum(),
            accepted_requests: n("accepted_requests"),
            limited_requests: n("limited_requests"),
            accepted_tokens: n("accepted_tokens"),
            max_window_tokens: n("max_window_tokens"),
            max_window_requests: n("max_window_requests"),
            max_window_tokens_sent: inproc::busiest_window(&run.calls, WINDOW_SECS),
            windows_elapsed,
            utilization: n("accepted_tokens") as f64
                / (s.tokens_per_window as f64 * windows_elapsed).max(1e-9),
        });
    }
    let (ours, base) = (&variants[0], &variants[1]);
    let f = |name: &str, a: f64, b: f64| Figure::new(name, a, b);
    let figures = vec![
        f(
            "most tokens in a window",
            ours.max_window_tokens as f64,
            base.max_window_tokens as f64,
        ),
        f(
            "most tokens in a window, by AgentOS's send times",
            ours.max_window_tokens_sent as f64,
            base.max_window_tokens_sent as f64,
        ),
        f(
            "most requests in a window",
            ours.max_window_requests as f64,
            base.max_window_requests as f64,
        ),
        f(
            "share of the token limit used",
            ours.utilization,
            base.utilization,
        ),
        f(
            "429s (server's limited_requests)",
            ours.limited_requests as f64,
            base.limited_requests as f64,
        ),
        f("attempts", ours.attempts as f64, base.attempts as f64),
        f("wall s", ours.wall_secs, base.wall_secs),
        f(
            "failed tasks",
            ours.tasks_failed as f64,
            base.tasks_failed as f64,
        ),
    ];
    let ceiling = s.tokens_per_window + MAX_TOKENS;
    let goals = vec![
        Goal {
            goal: "most tokens in any window ≤ limit + one max_tokens".into(),
            measured: format!("{} ≤ {ceiling}", ours.max_window_tokens),
            met: ours.max_window_tokens <= ceiling,
        },
        Goal {
            goal: "≥ 95% of the token limit used".into(),
            measured: format!("{:.1}%", ours.utilization * 100.0),
            met: ours.utilization >= 0.95,
        },
        Goal {
            goal: "429s at least 10× fewer than the baseline".into(),
            measured: format!("{} vs {}", ours.limited_requests, base.limited_requests),
            met: ours.limited_requests * 10 <= base.limited_requests,
        },
        Goal {
            goal: "every task succeeds".into(),
            measured: format!("{} failed", ours.tasks_failed),
            met: ours.tasks_failed == 0,
        },
    ];
    let description = format!(
        "{} agents, one task each (a calculator call, then an answer: two LLM calls), through \
         the `openai` backend (`max_tokens: {MAX_TOKENS}`) against `agentos sim-server` \
         enforcing {} tokens and {} requests per {WINDOW_SECS} s window (token buckets as \
         OpenAI's, HTTP 429 with `Retry-After`, `x-ratelimit-*` headers). `agentos_limits`: \
         the backend's `limits.rate` equals the server's limits (default bursts: a tenth of \
         each limit; the gate's sliding-window log keeps every window within the limit). \
         Baseline `no_limits`: no `limits` and \
         `learn_from_headers: false` (today's behaviour: a 429 fails the attempt, retried after \
         its backoff or `Retry-After`). For reference, `learned_from_headers`: no `limits`, \
         the buckets learned from the server's `x-ratelimit-*` headers. All with `retry: (max_attempts: \
         100)` so that every task finishes; each against a fresh server. Token and request \
         figures are the server's `/healthz` `rate_limits` (real tokens of accepted requests, \
         attributed to their arrival; the busiest window of {WINDOW_SECS} s); share used = \
         accepted tokens / (limit × wall time / window).",
        s.agents,
        s.tokens_per_window,
        s.requests_per_window,
    );
    Ok(GoalReport {
        scenario: "quotas",
        description,
        params: json!({"agents": s.agents, "tokens_per_window": s.tokens_per_window,
                       "requests_per_window": s.requests_per_window, "window_secs": WINDOW_SECS,
                       "max_tokens": MAX_TOKENS, "burst_tokens": s.tokens_per_window / 10,
                       "server": server_text}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        ours: "agentos_limits".into(),
        baseline: "no_limits".into(),
        variants,
        figures,
        goals,
    })
}

/// The markdown section.
pub fn render(r: &GoalReport<QuotaVariant>) -> String {
    let mut table = String::from(
        "| variant | wall s | tasks ok | failed | attempts | accepted requests | 429s | accepted tokens | most tokens in a window | same, by send time | most requests in a window | windows | share of limit used |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in &r.variants {
        table.push_str(&format!(
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1}% |\n",
            v.variant,
            v.wall_secs,
            v.tasks_succeeded,
            v.tasks_failed,
            v.attempts,
            v.accepted_requests,
            v.limited_requests,
            v.accepted_tokens,
            v.max_window_tokens,
            v.max_window_tokens_sent,
            v.max_window_requests,
            v.windows_elapsed,
            v.utilization * 100.0
        ));
    }
    crate::goals::render(r, &table)
}
