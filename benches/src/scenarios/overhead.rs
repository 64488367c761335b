//! `overhead`: N concurrent agents, each running K steps against a zero-latency in-process
//! simulator. Whatever time is spent is the runtime's own. Baseline: plain tokio tasks calling
//! the same backend and tools directly (no scheduler, no actors), the floor AgentOS should
//! approach.

use serde_json::json;

use super::Ctx;
use crate::child::Runner;
use crate::report::ScenarioReport;
use crate::workload::Workload;

/// Steps per task in the full run.
pub const STEPS: u32 = 4;

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let (sizes, steps): (&[usize], u32) = if ctx.smoke {
        (&[5, 20], 2)
    } else {
        (&[10, 100, 1_000, 10_000], STEPS)
    };
    let mut results = Vec::new();
    for &n in sizes {
        let w = Workload {
            agents: n,
            tasks: n,
            server: None,
            steps,
            durability: ctx.durability,
        };
        results.push(ctx.measure("agentos", Runner::Agentos, &w));
        results.push(ctx.measure("tokio_direct", Runner::TokioDirect, &w));
    }
    let description = format!(
        "N concurrent agents, one task each, {steps} steps per task (calculator calls, then an \
             answer) against the in-process `sim` backend with zero latency: pure runtime \
             overhead. Baseline `tokio_direct`: one plain tokio task per agent on the same \
             single-threaded runtime, calling the same backend and tool directly. A \
             zero-latency backend never suspends, so each direct task runs to completion in \
             one go and its task latency is its own run time, while AgentOS interleaves every \
             agent's steps: compare wall time, throughput, step latency, memory and CPU here, \
             not task latency. Durability mode `{mode}` (`agentos-bench --durability`; the \
             `durability` scenario compares the modes).",
        mode = ctx.durability.label()
    );
    Ok(ctx.report(
        "overhead",
        description,
        json!({"agents": sizes, "steps_per_task": steps, "backend": "sim, zero latency",
               "durability": ctx.durability.label()}),
        results,
    ))
}
