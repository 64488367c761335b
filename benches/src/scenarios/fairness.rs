//! `fairness`: four agents with equal weights share a small concurrency limit; one of them is
//! chatty (replies more than ten times longer, and its whole batch arrived first).
//!
//! - `fair_share` (ours): `runtime.scheduling.policy: fair_share` (by agent): stride
//!   scheduling on the tokens each agent was served.
//! - `priority` (the baseline): the default policy, priority then FIFO across agents.
//!
//! The tasks are declared in one workflow: the chatty agent's batch first, then the quiet
//! agents' tasks taking turns (a noisy neighbour that submitted first). Tokens served per agent are the
//! prompt + completion tokens of its `llm_call` events in the trace, counted over the window
//! where every agent is backlogged: from boot to the first moment an agent has no task left
//! (its last task's terminal `task_state`). Jain's index is taken over those four totals.

use std::collections::BTreeMap;
use std::time::Duration;

use agentos_runtime::policy::fair::jain;
use serde::Serialize;
use serde_json::json;

use super::{now, Ctx};
use crate::goals::{Figure, Goal, GoalReport};
use crate::inproc;

/// Calls served at once (`runtime.max_concurrency`).
pub const SLOTS: usize = 2;

/// The agents, the chatty one first.
pub const AGENTS: [&str; 4] = ["chatty", "quiet1", "quiet2", "quiet3"];

/// Words of the chatty agent's reply.
pub const CHATTY_WORDS: usize = 160;

/// Words of a quiet agent's reply.
pub const QUIET_WORDS: usize = 12;

/// The workload's size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// Tasks of the chatty agent.
    pub chatty_tasks: usize,
    /// Tasks of each quiet agent.
    pub quiet_tasks: usize,
}

/// The sizes of a full run and of a smoke run.
pub fn sizes(smoke: bool) -> Sizes {
    if smoke {
        Sizes {
            chatty_tasks: 8,
            quiet_tasks: 16,
        }
    } else {
        Sizes {
            chatty_tasks: 40,
            quiet_tasks: 150,
        }
    }
}

/// One agent over the backlogged window.
#[derive(Debug, Clone, Serialize)]
pub struct AgentShare {
    /// Agent name.
    pub agent: String,
    /// Tokens served (prompt + completion) within the window.
    pub tokens: u64,
    /// Share of the window's tokens.
    pub share: f64,
    /// LLM calls within the window.
    pub calls: usize,
    /// Tokens served over the whole run.
    pub tokens_total: u64,
}

/// One variant as measured.
#[derive(Debug, Clone, Serialize)]
pub struct FairnessVariant {
    /// `fair_share` or `priority`.
    pub variant: String,
    /// Wall time from boot to the last task's end, seconds.
    pub wall_secs: f64,
    /// Tasks that did not succeed.
    pub failed: usize,
    /// Seconds from boot until the first agent ran out of tasks.
    pub window_secs: f64,
    /// The agent that ran out first.
    pub first_done: String,
    /// Per agent, in [`AGENTS`] order.
    pub agents: Vec<AgentShare>,
    /// Jain's index over the agents' tokens within the window.
    pub jain: f64,
}

/// The order tasks are declared in: the chatty agent's batch first (it arrived first), then
/// the quiet agents' tasks, taking turns.
fn arrival_order(s: &Sizes) -> Vec<(usize, usize)> {
    let chatty = (0..s.chatty_tasks).map(|k| (0, k));
    let quiet = (0..s.quiet_tasks).flat_map(|k| (1..AGENTS.len()).map(move |a| (a, k)));
    chatty.chain(quiet).collect()
}

/// The AgentOS config of a variant (`policy`: `fair_share` or `priority`).
fn config_text(s: &Sizes, policy: &str) -> String {
    let reply = |words: usize| -> String {
        let vocab = ["tokens", "flow", "across", "every", "agent"];
        let words: Vec<&str> = vocab.iter().copied().cycle().take(words).collect();
        words.join(" ")
    };
    let mut agents = String::new();
    for (a, name) in AGENTS.iter().enumerate() {
        let reply = reply(if a == 0 { CHATTY_WORDS } else { QUIET_WORDS });
        agents.push_str(&format!(
            "(name: \"{name}\", role: \"You answer.\", backend: \"sim\", weight: 1.0,
              replicas: {replicas}, max_steps: 2, sim: (script: [Answer(\"{reply}\")])),",
            // More instances than slots, so an agent whose call just ended still has an
            // idle instance when the scheduler hands out the freed slot.
            replicas = SLOTS + 1,
        ));
    }
    let mut tasks = String::new();
    for (a, k) in arrival_order(s) {
        tasks.push_str(&format!(
            "(id: \"{name}-{k}\", agent: \"{name}\", input: \"Question {k} of {name}.\"),",
            name = AGENTS[a]
        ));
    }
    format!(
        "(version: 1,
          runtime: (max_concurrency: {SLOTS}, scheduling: (policy: {policy})),
          backends: [(name: \"sim\", kind: Sim((seed: 1,
                      latency: (base_ms: 10, per_prompt_token_us: 20, per_output_token_ms: 0.5))))],
          agents: [{agents}],
          workflows: [(name: \"mix\", tasks: [{tasks}])])"
    )
}

fn measure(name: &str, run: &inproc::Run) -> anyhow::Result<FairnessVariant> {
    let agent_of: BTreeMap<&str, &str> = run
        .snapshot
        .tasks
        .iter()
        .map(|t| (t.task.as_str(), t.agent.as_str()))
        .collect();
    // Each agent's last terminal state: it is backlogged until then.
    let mut last: BTreeMap<&str, f64> = BTreeMap::new();
    for e in &run.ends {
        if let Some(&agent) = agent_of.get(e.task.as_str()) {
            let t = last.entry(agent).or_insert(f64::MIN);
            *t = t.max(e.at);
        }
    }
    let (first_done, end) = AGENTS
        .iter()
        .filter_map(|a| last.get(a).map(|&t| (*a, t)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .ok_or_else(|| anyhow::anyhow!("{name}: no task ended"))?;
    let mut agents = Vec::new();
    for a in AGENTS {
        let mine = run.calls.iter().filter(|c| c.agent == a && c.ok);
        let within: Vec<_> = mine.clone().filter(|c| c.at <= end).collect();
        agents.push(AgentShare {
            agent: a.into(),
            tokens: within.iter().map(|c| c.tokens).sum(),
            share: 0.0,
            calls: within.len(),
            tokens_total: mine.map(|c| c.tokens).sum(),
        });
    }
    let total: u64 = agents.iter().map(|a| a.tokens).sum();
    for a in &mut agents {
        a.share = a.tokens as f64 / total.max(1) as f64;
    }
    let tokens: Vec<f64> = agents.iter().map(|a| a.tokens as f64).collect();
    Ok(FairnessVariant {
        variant: name.into(),
        wall_secs: run.wall_secs,
        failed: run.failed(),
        window_secs: end - run.booted_at,
        first_done: first_done.into(),
        agents,
        jain: jain(&tokens),
    })
}

/// Runs the scenario: fair share, then the baseline.
pub fn run(ctx: &Ctx) -> anyhow::Result<GoalReport<FairnessVariant>> {
    let s = sizes(ctx.smoke);
    let mut variants = Vec::new();
    for policy in ["fair_share", "priority"] {
        eprintln!("  {policy:>14} × {:<6}", s.chatty_tasks + 3 * s.quiet_tasks);
        let cfg = inproc::config(&config_text(&s, policy), "fairness.ron")?;
        let run = inproc::run(cfg, Duration::from_secs(300), |_, _| async { Ok(()) })?;
        variants.push(measure(policy, &run)?);
    }
    let (ours, base) = (&variants[0], &variants[1]);
    let mut figures = vec![
        Figure::new("Jain's index over tokens served", ours.jain, base.jain),
        Figure::new(
            "chatty agent's share of tokens",
            ours.agents[0].share,
            base.agents[0].share,
        ),
    ];
    for (o, b) in ours.agents.iter().zip(&base.agents).skip(1) {
        figures.push(Figure::new(
            format!("{}'s share of tokens", o.agent),
            o.share,
            b.share,
        ));
    }
    figures.push(Figure::new(
        "backlogged window, s",
        ours.window_secs,
        base.window_secs,
    ));
    figures.push(Figure::new("makespan, s", ours.wall_secs, base.wall_secs));
    figures.push(Figure::new(
        "failed tasks",
        ours.failed as f64,
        base.failed as f64,
    ));
    let goals = vec![
        Goal {
            goal: "Jain's index over tokens per agent ≥ 0.95 while all are backlogged".into(),
            measured: format!("{:.3} (baseline {:.3})", ours.jain, base.jain),
            met: ours.jain >= 0.95,
        },
        Goal {
            goal: "every task succeeds".into(),
            measured: format!("{} failed", ours.failed),
            met: ours.failed == 0,
        },
    ];
    let description = format!(
        "Four agents with equal weights (`weight: 1.0`) share `max_concurrency: {SLOTS}` on the \
         in-process `sim` backend (10 ms base latency, 0.5 ms per output token). `chatty` has \
         {} tasks whose reply is {CHATTY_WORDS} words; `quiet1`..`quiet3` have {} tasks each, \
         replying {QUIET_WORDS} words. The tasks are declared in one workflow, the chatty \
         agent's batch first (a noisy neighbour that submitted first), then the quiet agents' \
         tasks taking turns. `fair_share`: `scheduling: (policy: fair_share)` (by agent). \
         Baseline `priority`: the default policy (priority, then FIFO). Tokens per agent = \
         prompt + completion tokens of its `llm_call` trace events that ended while every \
         agent still had tasks (boot to the first agent's last terminal `task_state`).",
        s.chatty_tasks, s.quiet_tasks
    );
    Ok(GoalReport {
        scenario: "fairness",
        description,
        params: json!({"chatty_tasks": s.chatty_tasks, "quiet_tasks": s.quiet_tasks,
                       "chatty_reply_words": CHATTY_WORDS, "quiet_reply_words": QUIET_WORDS,
                       "max_concurrency": SLOTS,
                       "replicas_per_agent": SLOTS + 1}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        ours: "fair_share".into(),
        baseline: "priority".into(),
        variants,
        figures,
        goals,
    })
}

/// The markdown section.
pub fn render(r: &GoalReport<FairnessVariant>) -> String {
    let mut table = String::from(
        "| variant | agent | tokens in window | share | calls in window | tokens in run |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for v in &r.variants {
        for a in &v.agents {
            table.push_str(&format!(
                "| {} | {} | {} | {:.1}% | {} | {} |\n",
                v.variant,
                a.agent,
                a.tokens,
                a.share * 100.0,
                a.calls,
                a.tokens_total
            ));
        }
    }
    table.push_str(
        "\n| variant | Jain's index | window s | first out of tasks | makespan s | failed |\n\
         |---|---:|---:|---|---:|---:|\n",
    );
    for v in &r.variants {
        table.push_str(&format!(
            "| {} | {:.3} | {:.2} | {} | {:.2} | {} |\n",
            v.variant, v.jain, v.window_secs, v.first_done, v.wall_secs, v.failed
        ));
    }
    crate::goals::render(r, &table)
}
