//! `kv_routing`: cache-aware routing across simulated replicas (the workload is in
//! [`crate::kv_routing`]). Sizes 10, 100 and 1000 agents (smoke: 8); every policy of a size
//! runs in the same process one after the other, `reps` times, and the run with the median
//! makespan of each policy is reported (hit rates barely move between runs; makespans do).

use std::fmt::Write as _;

use serde::Serialize;

use super::Ctx;
use crate::kv_routing::{self, KvRoutingReport, PolicyReport, WorkloadReport};
use crate::report::Machine;

/// The scenario's JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct KvScenarioReport {
    /// Always `kv_routing`.
    pub scenario: &'static str,
    /// Smoke size.
    pub smoke: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Repetitions per size; each policy's median-makespan run is kept.
    pub reps: usize,
    /// One report per size.
    pub sizes: Vec<KvRoutingReport>,
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<KvScenarioReport> {
    let sizes: &[usize] = if ctx.smoke { &[8] } else { &[10, 100, 1000] };
    let mut out = Vec::new();
    for &n in sizes {
        let mut runs = Vec::new();
        for rep in 0..ctx.reps {
            eprintln!("  kv_routing × {n:<6} rep {}/{}", rep + 1, ctx.reps);
            runs.push(kv_routing::run(n)?);
        }
        out.push(median_report(runs)?);
    }
    Ok(KvScenarioReport {
        scenario: "kv_routing",
        smoke: ctx.smoke,
        machine: ctx.machine.clone(),
        reps: ctx.reps,
        sizes: out,
    })
}

/// Per workload and policy, the run with the median makespan.
fn median_report(runs: Vec<KvRoutingReport>) -> anyhow::Result<KvRoutingReport> {
    let first = runs
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let workloads = first
        .workloads
        .iter()
        .enumerate()
        .map(|(w, workload)| WorkloadReport {
            name: workload.name.clone(),
            policies: (0..workload.policies.len())
                .map(|p| {
                    let mut all: Vec<&PolicyReport> =
                        runs.iter().map(|r| &r.workloads[w].policies[p]).collect();
                    all.sort_by(|a, b| a.makespan_secs.total_cmp(&b.makespan_secs));
                    all[all.len() / 2].clone()
                })
                .collect(),
        })
        .collect();
    Ok(KvRoutingReport { workloads, ..first })
}

/// The markdown section: one table per workload and size, then the makespan ratios.
pub fn render(r: &KvScenarioReport) -> String {
    let mut out = String::from("\n## kv_routing\n\n");
    let _ = writeln!(
        out,
        "Cache-aware routing on the simulator ({} replicas × {} batch slots, 100 µs prefill per \
         uncached prompt token). Hit rate = cached prompt tokens / prompt tokens as the simulated \
         engine reported them; upper bound = the same prompts against one unbounded cache. \
         Median makespan of {} run(s) per policy; all policies measured in the same run.",
        kv_routing::REPLICAS,
        kv_routing::SLOTS,
        r.reps
    );
    for size in &r.sizes {
        out.push_str(&kv_routing::render_markdown(size));
    }
    out.push_str("\n| workload | agents | makespan prefix_aware ÷ round_robin | ÷ least_loaded | hit rate prefix_aware / upper bound |\n|---|---:|---:|---:|---:|\n");
    for size in &r.sizes {
        for w in &size.workloads {
            let by = |name: &str| w.policies.iter().find(|p| p.policy == name);
            if let (Some(pa), Some(rr), Some(ll)) =
                (by("prefix_aware"), by("round_robin"), by("least_loaded"))
            {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {:.2} | {:.1}% / {:.1}% |",
                    w.name,
                    size.agents,
                    pa.makespan_secs / rr.makespan_secs.max(1e-9),
                    pa.makespan_secs / ll.makespan_secs.max(1e-9),
                    pa.hit_rate * 100.0,
                    pa.upper_bound_hit_rate * 100.0
                );
            }
        }
    }
    out
}
