//! `scale`: AgentOS with 100,000 agents. Two measurements, each repetition in its own child
//! process ([`child`]):
//!
//! - Memory per idle agent: N idle replicas of one `sim` agent and no tasks are booted; once
//!   every one has started (its control block is on the board), the growth of the resident set
//!   since just before boot, divided by N, and the time that took.
//! - N agents × 1 step: N replicas, one one-step task each (the `sim` script is a single
//!   answer), all at once (`max_concurrency` = N); wall time, tasks/s, peak RSS and failures,
//!   the child bounded by the runner's child limit; a repetition slower than [`SLOW_REP`] is
//!   the last.
//!
//! Both also time how long the tree takes to stop afterwards (bounded by [`STOP_LIMIT`]).

pub mod child;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::{child_limit, now, Ctx};
use crate::child::run_json;
use crate::goals::Goal;
use crate::measure::median;
use crate::report::{Machine, VariantResult};
use child::{IdleSample, Spec, StepSample, STOP_LIMIT};

/// Goal: resident memory per idle agent at the largest size, bytes.
pub const IDLE_BYTES_GOAL: f64 = 2048.0;
/// A one-step repetition slower than this is the last of its size: the others would take as
/// long, and at that length run-to-run noise no longer matters.
pub const SLOW_REP: Duration = Duration::from_secs(30);

/// The scenario's JSON report (`results/scale.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Always `scale`.
    pub scenario: &'static str,
    /// What it measures.
    pub description: String,
    /// Workload parameters.
    pub params: serde_json::Value,
    /// The machine.
    pub machine: Machine,
    /// Unix seconds when it finished.
    pub generated_at: u64,
    /// Whether this was a tiny smoke run (the goals need not hold then).
    pub smoke: bool,
    /// Repetitions asked for per measurement and size.
    pub reps: usize,
    /// Memory per idle agent, one row per size.
    pub idle: Vec<IdleResult>,
    /// N agents × 1 step, one row per size.
    pub steps: Vec<StepResult>,
    /// The goals, each with its verdict.
    pub goals: Vec<Goal>,
}

/// Memory per idle agent at one size: medians over the repetitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IdleResult {
    /// Agent instances.
    pub agents: usize,
    /// Why it did not run, if it did not (no numbers are given then).
    pub skipped: Option<String>,
    /// Repetitions measured.
    pub reps: usize,
    /// Median time until every instance had started, seconds.
    pub spawn_secs: f64,
    /// Median instances started per second.
    pub agents_per_sec: f64,
    /// Median resident memory growth, MiB.
    pub rss_growth_mib: f64,
    /// Median resident memory growth per agent, bytes.
    pub bytes_per_agent: f64,
    /// Median peak RSS of the child, MiB.
    pub peak_rss_mib: f64,
    /// Median time the tree took to stop, over the repetitions where it stopped in time.
    pub stop_secs: Option<f64>,
    /// Repetitions whose tree did not stop within the limit.
    pub stop_overdue: usize,
    /// Every repetition as measured.
    pub samples: Vec<IdleSample>,
}

impl IdleResult {
    fn from_samples(agents: usize, samples: Vec<IdleSample>) -> Self {
        let m = |f: &dyn Fn(&IdleSample) -> f64| median(samples.iter().map(f).collect());
        let mib = (1u64 << 20) as f64;
        let (stop_secs, stop_overdue) = stops(samples.iter().map(|s| s.stop_secs));
        Self {
            agents,
            skipped: None,
            reps: samples.len(),
            spawn_secs: m(&|s| s.spawn_secs),
            agents_per_sec: m(&|s| s.agents as f64 / s.spawn_secs.max(1e-9)),
            rss_growth_mib: m(&|s| s.rss_after_bytes.saturating_sub(s.rss_before_bytes) as f64)
                / mib,
            bytes_per_agent: m(&|s| s.bytes_per_agent()),
            peak_rss_mib: m(&|s| s.peak_rss_bytes as f64) / mib,
            stop_secs,
            stop_overdue,
            samples,
        }
    }
}

/// N agents × 1 step at one size.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepResult {
    /// Medians over the repetitions, as in `overhead`.
    pub result: VariantResult,
    /// Median time the tree took to stop, over the repetitions where it stopped in time.
    pub stop_secs: Option<f64>,
    /// Repetitions whose tree did not stop within the limit.
    pub stop_overdue: usize,
    /// Every repetition as measured.
    pub samples: Vec<StepSample>,
}

/// The median of the stop times that are known, and how many are not.
fn stops(times: impl Iterator<Item = Option<f64>>) -> (Option<f64>, usize) {
    let (known, overdue): (Vec<_>, Vec<_>) = times.partition(Option::is_some);
    let known: Vec<f64> = known.into_iter().flatten().collect();
    ((!known.is_empty()).then(|| median(known)), overdue.len())
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<ScaleReport> {
    let (idle_sizes, step_sizes): (&[usize], &[usize]) = if ctx.smoke {
        (&[1_000], &[1_000])
    } else {
        (&[10_000, 100_000], &[100_000])
    };
    let idle: Vec<IdleResult> = idle_sizes.iter().map(|&n| measure_idle(ctx, n)).collect();
    let steps: Vec<StepResult> = step_sizes.iter().map(|&n| measure_steps(ctx, n)).collect();
    let goals = goals(&idle, &steps);
    let description = format!(
        "AgentOS with many agents, each repetition in its own process. Idle agents: N idle \
         replicas of one `sim` agent and no tasks; the growth of the resident set from just \
         before boot until every instance has started (its control block is on the board), \
         divided by N, and the time to spawn them (boot included). One step each: N replicas, \
         one one-step task each (the `sim` script is a single answer, zero latency), all at \
         once (`max_concurrency` = N), `durability: sync`; wall time from before boot to the \
         last task's end (spawning included), peak RSS of the process, and failed tasks; a \
         child still running after {} s is killed, and a repetition slower than {} s is the \
         last. Both then time the tree's stop, which is left behind after {} s. Goals: ≤ \
         {IDLE_BYTES_GOAL} bytes per idle agent and no failed task, at the largest size.",
        child_limit().as_secs(),
        SLOW_REP.as_secs(),
        STOP_LIMIT.as_secs()
    );
    Ok(ScaleReport {
        scenario: "scale",
        description,
        params: json!({"idle_agents": idle_sizes, "step_agents": step_sizes,
                       "steps_per_task": 1, "backend": "sim, zero latency",
                       "child_limit_secs": child_limit().as_secs(),
                       "stop_limit_secs": STOP_LIMIT.as_secs()}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        reps: ctx.reps,
        idle,
        steps,
        goals,
    })
}

/// Runs `spec` in a child of the runner's own executable.
fn run_child<T: serde::de::DeserializeOwned>(ctx: &Ctx, spec: Spec) -> anyhow::Result<T> {
    let mut cmd = Command::new(&ctx.exe);
    cmd.arg(child::SUBCOMMAND)
        .arg(serde_json::to_string(&spec)?);
    run_json(cmd, child_limit())
}

fn progress(what: &str, agents: usize, rep: usize, reps: usize) {
    eprintln!("  {what:>14} × {agents:<6} rep {}/{reps}", rep + 1);
}

/// Memory per idle agent at `agents`.
fn measure_idle(ctx: &Ctx, agents: usize) -> IdleResult {
    let mut samples = Vec::new();
    for rep in 0..ctx.reps {
        progress("idle", agents, rep, ctx.reps);
        match run_child::<IdleSample>(ctx, Spec::Idle { agents }) {
            Ok(s) => samples.push(s),
            Err(e) => {
                eprintln!("    failed: {e:#}");
                return IdleResult {
                    agents,
                    skipped: Some(format!("failed: {e:#}")),
                    ..IdleResult::default()
                };
            }
        }
    }
    IdleResult::from_samples(agents, samples)
}

/// `agents` × 1 step; a repetition slower than [`SLOW_REP`] is the last.
fn measure_steps(ctx: &Ctx, agents: usize) -> StepResult {
    let mut samples: Vec<StepSample> = Vec::new();
    for rep in 0..ctx.reps {
        progress("one_step", agents, rep, ctx.reps);
        match run_child::<StepSample>(ctx, Spec::Steps { agents }) {
            Ok(s) => {
                let slow = s.sample.wall_secs > SLOW_REP.as_secs_f64();
                samples.push(s);
                if slow && rep + 1 < ctx.reps {
                    eprintln!("    slower than {SLOW_REP:?}: the last repetition");
                    break;
                }
            }
            Err(e) => {
                eprintln!("    failed: {e:#}");
                return StepResult {
                    result: VariantResult::skipped("agentos", agents, format!("failed: {e:#}")),
                    ..StepResult::default()
                };
            }
        }
    }
    let (stop_secs, stop_overdue) = stops(samples.iter().map(|s| s.stop_secs));
    StepResult {
        result: VariantResult::from_samples(
            "agentos",
            agents,
            samples.iter().map(|s| s.sample.clone()).collect(),
        ),
        stop_secs,
        stop_overdue,
        samples,
    }
}

/// The goals, judged at the largest size of each measurement.
fn goals(idle: &[IdleResult], steps: &[StepResult]) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(r) = idle.iter().max_by_key(|r| r.agents) {
        goals.push(Goal {
            goal: format!(
                "≤ {IDLE_BYTES_GOAL} bytes per idle agent at {} agents",
                r.agents
            ),
            measured: match &r.skipped {
                Some(why) => format!("did not run: {why}"),
                None => format!(
                    "{:.0} bytes per agent ({:.1} MiB in all)",
                    r.bytes_per_agent, r.rss_growth_mib
                ),
            },
            met: r.skipped.is_none() && r.bytes_per_agent <= IDLE_BYTES_GOAL,
        });
    }
    if let Some(s) = steps.iter().max_by_key(|s| s.result.agents) {
        let r = &s.result;
        goals.push(Goal {
            goal: format!("no failed task at {} agents × 1 step", r.agents),
            measured: match &r.skipped {
                Some(why) => format!("did not run: {why}"),
                None => format!(
                    "{} failed of {}; wall {:.2} s, peak RSS {:.0} MiB",
                    r.failed, r.agents, r.wall_secs, r.peak_rss_mib
                ),
            },
            met: r.skipped.is_none() && r.failed == 0,
        });
    }
    goals
}

/// A stop time, or that the tree did not stop in time in some repetitions.
fn stop_cell(secs: Option<f64>, overdue: usize) -> String {
    match (secs, overdue) {
        (Some(s), 0) => format!("{s:.2}"),
        (Some(s), n) => format!("{s:.2}; {n} over {} s", STOP_LIMIT.as_secs()),
        (None, _) => format!("over {} s", STOP_LIMIT.as_secs()),
    }
}

/// `text` on one line of a table cell (a child's error can span lines).
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The markdown section.
pub fn render(r: &ScaleReport) -> String {
    let mut out = format!("## `{}`\n\n{}\n\n", r.scenario, r.description);
    if r.smoke {
        out.push_str("**Smoke run: tiny sizes, the numbers mean nothing.**\n\n");
    }
    let _ = writeln!(
        out,
        "Parameters: `{}`. Medians of up to {} repetition(s), each in its own process.\n",
        r.params, r.reps
    );
    out.push_str(
        "Idle agents:\n\n\
         | agents | reps | spawn s | agents/s | RSS growth MiB | bytes per agent | peak RSS MiB | stop s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in &r.idle {
        if let Some(why) = &v.skipped {
            let _ = writeln!(out, "| {} | skipped: {} |||||||", v.agents, cell(why));
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.0} | {:.1} | {:.0} | {:.1} | {} |",
            v.agents,
            v.reps,
            v.spawn_secs,
            v.agents_per_sec,
            v.rss_growth_mib,
            v.bytes_per_agent,
            v.peak_rss_mib,
            stop_cell(v.stop_secs, v.stop_overdue)
        );
    }
    out.push_str(
        "\nOne one-step task per agent:\n\n\
         | agents | reps | wall s | tasks/s | task p95 ms | peak RSS MiB | CPU s | failed | stop s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &r.steps {
        let v = &s.result;
        if let Some(why) = &v.skipped {
            let _ = writeln!(out, "| {} | skipped: {} ||||||||", v.agents, cell(why));
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.0} | {:.1} | {:.1} | {:.2} | {} | {} |",
            v.agents,
            v.reps,
            v.wall_secs,
            v.tasks_per_sec,
            v.task_p95_ms,
            v.peak_rss_mib,
            v.cpu_secs,
            v.failed,
            stop_cell(s.stop_secs, s.stop_overdue)
        );
    }
    out.push_str("\n| goal | measured | verdict |\n|---|---|---|\n");
    for g in &r.goals {
        let _ = writeln!(
            out,
            "| {} | {} | **{}** |",
            g.goal,
            cell(&g.measured),
            g.verdict()
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_config_is_valid_and_has_every_replica() {
        let cfg = child::idle_config(1_000).unwrap();
        assert_eq!(cfg.agents.len(), 1);
        assert_eq!(cfg.agents[0].replicas, 1_000);
        assert!(cfg.workflows.is_empty());
    }

    #[test]
    fn goals_are_judged_at_the_largest_size() {
        let sample = |agents, growth: u64| IdleSample {
            agents,
            spawn_secs: 1.0,
            rss_before_bytes: 1 << 20,
            rss_after_bytes: (1 << 20) + growth,
            peak_rss_bytes: 2 << 20,
            stop_secs: None,
        };
        let idle = vec![
            IdleResult::from_samples(10_000, vec![sample(10_000, 50_000_000)]),
            IdleResult::from_samples(100_000, vec![sample(100_000, 150_000_000)]),
        ];
        assert_eq!(idle[1].bytes_per_agent, 1500.0);
        assert_eq!((idle[1].stop_secs, idle[1].stop_overdue), (None, 1));
        let steps = [StepResult {
            result: VariantResult::skipped("agentos", 100_000, "killed"),
            ..StepResult::default()
        }];
        let goals = goals(&idle, &steps);
        assert_eq!(goals.len(), 2);
        assert!(
            goals[0].met && goals[0].goal.contains("100000"),
            "{goals:?}"
        );
        assert!(
            !goals[1].met && goals[1].measured.contains("killed"),
            "{goals:?}"
        );
    }

    #[test]
    fn stop_times_show_when_some_trees_were_left_behind() {
        assert_eq!(
            stops([Some(2.0), None, Some(4.0)].into_iter()),
            (Some(3.0), 1)
        );
        assert_eq!(stop_cell(Some(3.0), 1), "3.00; 1 over 15 s");
        assert_eq!(stop_cell(None, 2), "over 15 s");
        assert_eq!(
            cell("failed (signal: 15):\n a | b\n"),
            "failed (signal: 15): a \\| b"
        );
    }
}
