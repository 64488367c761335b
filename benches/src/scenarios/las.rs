//! `las`: short workflows (one task) and long ones (many tasks) on a simulator with a few
//! batch slots.
//!
//! - `las` (ours): `runtime.scheduling.policy: least_attained_service` (the default quantum of
//!   2,000 tokens): ready tasks of the workflows that used the fewest tokens go first.
//! - `fifo` (the baseline): the default policy (priority, then FIFO).
//!
//! Every workflow is declared at boot, long and short ones taking turns (a long one, then
//! some short ones, ...). A workflow's completion time is its `submitted_at` (boot) to the
//! last terminal `task_state` of its tasks in the trace.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::{now, Ctx};
use crate::goals::{Figure, Goal, GoalReport};
use crate::inproc;

/// Batch slots of the simulator, and the concurrency limit.
pub const SLOTS: usize = 4;

/// Words of each task's input (a prompt of about 500 tokens, so a long workflow passes the
/// 2,000-token quantum after four tasks).
pub const INPUT_WORDS: usize = 400;

/// The workload's size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// Long workflows.
    pub long_workflows: usize,
    /// Tasks of each long workflow.
    pub long_tasks: usize,
    /// Short workflows (one task each), declared after each long one in equal groups.
    pub short_workflows: usize,
}

/// The sizes of a full run and of a smoke run.
pub fn sizes(smoke: bool) -> Sizes {
    if smoke {
        Sizes {
            long_workflows: 2,
            long_tasks: 10,
            short_workflows: 6,
        }
    } else {
        Sizes {
            long_workflows: 4,
            long_tasks: 40,
            short_workflows: 40,
        }
    }
}

/// One variant as measured.
#[derive(Debug, Clone, Serialize)]
pub struct LasVariant {
    /// `las` or `fifo`.
    pub variant: String,
    /// Wall time from boot to the last task's end, seconds.
    pub wall_secs: f64,
    /// Tasks that did not succeed.
    pub failed: usize,
    /// Mean completion time of every workflow, seconds.
    pub mean_secs: f64,
    /// Mean completion time of the short workflows, seconds.
    pub short_mean_secs: f64,
    /// Mean completion time of the long workflows, seconds.
    pub long_mean_secs: f64,
    /// Slowest short workflow, seconds.
    pub short_max_secs: f64,
}

/// The AgentOS config of a variant (`policy`: `least_attained_service` or `priority`).
fn config_text(s: &Sizes, policy: &str) -> String {
    let filler = |seed: usize| -> String {
        let vocab = [
            "queue", "token", "batch", "slot", "agent", "step", "cache", "reply",
        ];
        (0..INPUT_WORDS)
            .map(|i| vocab[(i * 7 + seed * 3) % vocab.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let per_group = s.short_workflows.div_ceil(s.long_workflows.max(1));
    let mut workflows = String::new();
    let mut short = 0;
    for l in 0..s.long_workflows {
        let mut tasks = String::new();
        for t in 0..s.long_tasks {
            let _ = write!(
                tasks,
                "(id: \"t{t}\", agent: \"worker\", input: \"Part {t} of job {l}: {}\"),",
                filler(l * 1000 + t)
            );
        }
        let _ = write!(workflows, "(name: \"long-{l}\", tasks: [{tasks}]),");
        for _ in 0..per_group {
            if short == s.short_workflows {
                break;
            }
            let _ = write!(
                workflows,
                "(name: \"short-{short}\", tasks: [(id: \"t0\", agent: \"worker\", \
                 input: \"Question {short}: {}\")]),",
                filler(short + 7)
            );
            short += 1;
        }
    }
    format!(
        "(version: 1,
          runtime: (max_concurrency: {SLOTS}, scheduling: (policy: {policy})),
          backends: [(name: \"sim\", kind: Sim((seed: 1, slots: {SLOTS},
                      latency: (base_ms: 30, per_prompt_token_us: 20, per_output_token_ms: 0.5))))],
          agents: [(name: \"worker\", role: \"You answer.\", backend: \"sim\", replicas: {SLOTS},
                    max_steps: 2, sim: (script: [Answer(\"done\")]))],
          workflows: [{workflows}])"
    )
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

fn measure(name: &str, run: &inproc::Run) -> anyhow::Result<LasVariant> {
    let mut done: BTreeMap<&str, f64> = BTreeMap::new();
    for t in &run.snapshot.tasks {
        let end = run
            .ended_at(&t.task)
            .ok_or_else(|| anyhow::anyhow!("{name}: no end of {} in the trace", t.task))?;
        let e = done.entry(t.workflow.as_str()).or_insert(f64::MIN);
        *e = e.max(end);
    }
    let (mut short, mut long) = (Vec::new(), Vec::new());
    for w in &run.workflows {
        let end = done
            .get(w.id.as_str())
            .ok_or_else(|| anyhow::anyhow!("{name}: workflow {} has no task", w.id))?;
        let secs = end - w.submitted_at;
        if w.name.starts_with("short-") {
            short.push(secs);
        } else {
            long.push(secs);
        }
    }
    let all: Vec<f64> = short.iter().chain(&long).copied().collect();
    Ok(LasVariant {
        variant: name.into(),
        wall_secs: run.wall_secs,
        failed: run.failed(),
        mean_secs: mean(&all),
        short_mean_secs: mean(&short),
        long_mean_secs: mean(&long),
        short_max_secs: short.iter().copied().fold(0.0, f64::max),
    })
}

/// Runs the scenario: LAS, then the baseline.
pub fn run(ctx: &Ctx) -> anyhow::Result<GoalReport<LasVariant>> {
    let s = sizes(ctx.smoke);
    let mut variants = Vec::new();
    for (name, policy) in [("las", "least_attained_service"), ("fifo", "priority")] {
        eprintln!("  {name:>14} × {:<6}", s.long_workflows + s.short_workflows);
        let cfg = inproc::config(&config_text(&s, policy), "las.ron")?;
        let run = inproc::run(cfg, Duration::from_secs(300), |_, _| async { Ok(()) })?;
        variants.push(measure(name, &run)?);
    }
    let (ours, base) = (&variants[0], &variants[1]);
    let figures = vec![
        Figure::new(
            "mean workflow completion, s",
            ours.mean_secs,
            base.mean_secs,
        ),
        Figure::new(
            "mean short-workflow completion, s",
            ours.short_mean_secs,
            base.short_mean_secs,
        ),
        Figure::new(
            "slowest short workflow, s",
            ours.short_max_secs,
            base.short_max_secs,
        ),
        Figure::new(
            "mean long-workflow completion, s",
            ours.long_mean_secs,
            base.long_mean_secs,
        ),
        Figure::new("makespan, s", ours.wall_secs, base.wall_secs),
        Figure::new("failed tasks", ours.failed as f64, base.failed as f64),
    ];
    let ratio = ours.mean_secs / base.mean_secs.max(1e-9);
    let goals = vec![
        Goal {
            goal: "mean workflow completion time ≤ 1/2 of FIFO's".into(),
            measured: format!(
                "{:.2} s vs {:.2} s (× {ratio:.3})",
                ours.mean_secs, base.mean_secs
            ),
            met: ratio <= 0.5,
        },
        Goal {
            goal: "every task succeeds".into(),
            measured: format!("{} failed", ours.failed),
            met: ours.failed == 0,
        },
    ];
    let description = format!(
        "{} long workflows of {} independent one-step tasks and {} short workflows of one task, \
         declared at boot taking turns (a long one, then {} short ones, ...), on the in-process \
         `sim` backend with {SLOTS} batch slots (30 ms base latency, 20 µs per prompt token; \
         prompts of about 500 tokens) and `max_concurrency: {SLOTS}`. `las`: \
         `scheduling: (policy: least_attained_service)` with the default 2,000-token quantum. \
         Baseline `fifo`: the default policy (priority, then FIFO). Completion time of a \
         workflow = its `submitted_at` to its last task's terminal `task_state` in the trace.",
        s.long_workflows,
        s.long_tasks,
        s.short_workflows,
        s.short_workflows.div_ceil(s.long_workflows.max(1))
    );
    Ok(GoalReport {
        scenario: "las",
        description,
        params: json!({"long_workflows": s.long_workflows, "long_tasks": s.long_tasks,
                       "short_workflows": s.short_workflows, "slots": SLOTS,
                       "input_words": INPUT_WORDS, "las_quantum_tokens": 2000}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        ours: "las".into(),
        baseline: "fifo".into(),
        variants,
        figures,
        goals,
    })
}

/// The markdown section.
pub fn render(r: &GoalReport<LasVariant>) -> String {
    let mut table = String::from(
        "| variant | mean completion s | short mean s | short max s | long mean s | makespan s | failed |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in &r.variants {
        table.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {} |\n",
            v.variant,
            v.mean_secs,
            v.short_mean_secs,
            v.short_max_secs,
            v.long_mean_secs,
            v.wall_secs,
            v.failed
        ));
    }
    crate::goals::render(r, &table)
}
