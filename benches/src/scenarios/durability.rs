//! `durability`: what each `runtime.durability` mode costs per step. The same zero-latency
//! simulator workload as `overhead` (the context pager on, as always, and a real store file
//! in a fresh temporary data directory) runs once per mode, `sync`, `async` and `exit`, each
//! repetition in its own process, the modes taking turns; the report gives the median step latency and wall time per
//! step, their ratio to `exit` (which writes the scheduler's state only at the end) from the
//! same run, and the store's size on disk per 1,000 steps.

use std::fmt::Write as _;

use agentos_runtime::durable::Durability;
use serde::Serialize;
use serde_json::json;

use super::{child_limit, now, Ctx};
use crate::child::{run_variant, Runner, VariantSpec};
use crate::measure::{median, Sample};
use crate::report::{Machine, VariantResult};
use crate::workload::Workload;

/// The modes, in the order they run; the last is the reference of the ratios.
pub const MODES: [Durability; 3] = [Durability::Sync, Durability::Async, Durability::Exit];

/// The scenario's JSON report (`results/durability.json`).
#[derive(Debug, Clone, Serialize)]
pub struct DurabilityReport {
    /// Always `durability`.
    pub scenario: &'static str,
    /// What it measures.
    pub description: String,
    /// Workload parameters.
    pub params: serde_json::Value,
    /// The machine.
    pub machine: Machine,
    /// Unix seconds when it finished.
    pub generated_at: u64,
    /// Whether this was a tiny smoke run (numbers are not meaningful).
    pub smoke: bool,
    /// Repetitions per mode.
    pub reps: usize,
    /// One row per mode, in [`MODES`] order.
    pub modes: Vec<ModeResult>,
}

/// One durability mode: medians over its repetitions, and its cost against `exit`.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// `sync`, `async` or `exit`.
    pub mode: &'static str,
    /// Why it did not run, if it did not (no numbers are given then).
    pub skipped: Option<String>,
    /// Median step latency (LLM call plus its tool calls and records), microseconds.
    pub step_p50_us: f64,
    /// p99 step latency, microseconds.
    pub step_p99_us: f64,
    /// Median wall time per step over the whole run, microseconds.
    pub wall_per_step_us: f64,
    /// `step_p50_us` ÷ `exit`'s (0 where either did not run).
    pub step_p50_vs_exit: f64,
    /// `wall_per_step_us` ÷ `exit`'s (0 where either did not run).
    pub wall_per_step_vs_exit: f64,
    /// Median bytes of the store (database and write-ahead log) per 1,000 steps.
    pub store_bytes_per_1000_steps: f64,
    /// Every repetition as measured.
    pub result: VariantResult,
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<DurabilityReport> {
    let (agents, steps): (usize, u32) = if ctx.smoke { (10, 4) } else { (100, 40) };
    let workload = |mode: Durability| Workload {
        agents,
        tasks: agents,
        server: None,
        steps,
        durability: mode,
    };
    // Repetitions alternate between the modes, so that a machine getting busier or quieter
    // during the scenario weighs on every mode alike.
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); MODES.len()];
    let mut failures: Vec<Option<String>> = vec![None; MODES.len()];
    for rep in 0..ctx.reps.max(1) {
        for (i, &mode) in MODES.iter().enumerate() {
            if failures[i].is_some() {
                continue;
            }
            eprintln!(
                "  {:>14} × {agents:<6} rep {}/{}",
                mode.label(),
                rep + 1,
                ctx.reps.max(1)
            );
            let spec = VariantSpec {
                runner: Runner::Agentos,
                workload: workload(mode),
            };
            match run_variant(&ctx.exe, &spec, child_limit()) {
                Ok(s) => samples[i].push(s),
                Err(e) => {
                    eprintln!("    failed: {e:#}");
                    failures[i] = Some(format!("failed: {e:#}"));
                }
            }
        }
    }
    let mut modes: Vec<ModeResult> = MODES
        .iter()
        .zip(samples.into_iter().zip(failures))
        .map(|(&mode, (samples, failure))| {
            let result = match failure {
                Some(why) => VariantResult::skipped(mode.label(), agents, why),
                None => VariantResult::from_samples(mode.label(), agents, samples),
            };
            let per_step = |f: &dyn Fn(&Sample) -> f64| {
                median(
                    result
                        .samples
                        .iter()
                        .filter(|s| s.steps > 0)
                        .map(|s| f(s) / s.steps as f64)
                        .collect(),
                )
            };
            ModeResult {
                mode: mode.label(),
                skipped: result.skipped.clone(),
                step_p50_us: result.step_p50_ms * 1e3,
                step_p99_us: result.step_p99_ms * 1e3,
                wall_per_step_us: per_step(&|s| s.wall_secs * 1e6),
                step_p50_vs_exit: 0.0,
                wall_per_step_vs_exit: 0.0,
                store_bytes_per_1000_steps: per_step(&|s| s.store_bytes as f64 * 1e3),
                result,
            }
        })
        .collect();
    let exit = modes
        .iter()
        .find(|m| m.mode == Durability::Exit.label() && m.skipped.is_none())
        .map(|m| (m.step_p50_us, m.wall_per_step_us));
    let div = |a: f64, b: f64| if a > 0.0 && b > 0.0 { a / b } else { 0.0 };
    for m in modes.iter_mut().filter(|m| m.skipped.is_none()) {
        if let Some((step, wall)) = exit {
            m.step_p50_vs_exit = div(m.step_p50_us, step);
            m.wall_per_step_vs_exit = div(m.wall_per_step_us, wall);
        }
    }
    let description = format!(
        "{agents} concurrent agents, one task each, {steps} steps per task (calculator calls, \
         then an answer) against the in-process `sim` backend with zero latency, once per \
         `runtime.durability` mode, with a fresh store file in a temporary data directory: \
         `sync` commits a step's records before the next step, `async` commits them in \
         background group commits, `exit` writes the scheduler's state only when the run ends. \
         Ratios are against `exit` in the same run; the store size is the database plus its \
         write-ahead log when the run ended."
    );
    Ok(DurabilityReport {
        scenario: "durability",
        description,
        params: json!({"agents": agents, "steps_per_task": steps, "backend": "sim, zero latency",
                       "modes": MODES.map(Durability::label)}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        reps: ctx.reps,
        modes,
    })
}

/// The markdown section: one row per mode.
pub fn render(r: &DurabilityReport) -> String {
    let mut out = format!("## `{}`\n\n{}\n\n", r.scenario, r.description);
    if r.smoke {
        out.push_str("**Smoke run: tiny sizes, the numbers mean nothing.**\n\n");
    }
    let _ = writeln!(
        out,
        "Parameters: `{}`. Medians of {} repetition(s), each in its own process.\n",
        r.params, r.reps
    );
    out.push_str(
        "| mode | step p50 µs | step p99 µs | wall per step µs | step p50 ÷ exit | wall per step ÷ exit | store KiB per 1,000 steps | failed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let ratio = |v: f64| {
        if v > 0.0 {
            format!("{v:.2}")
        } else {
            "n/a".into()
        }
    };
    for m in &r.modes {
        if let Some(why) = &m.skipped {
            let _ = writeln!(out, "| {} | skipped: {why} |||||||", m.mode);
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} |",
            m.mode,
            m.step_p50_us,
            m.step_p99_us,
            m.wall_per_step_us,
            ratio(m.step_p50_vs_exit),
            ratio(m.wall_per_step_vs_exit),
            m.store_bytes_per_1000_steps / 1024.0,
            m.result.failed
        );
    }
    out.push('\n');
    out
}
