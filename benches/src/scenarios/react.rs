//! `react`: the shape of the AutoAgents benchmark, in-process. N requests submitted at once,
//! each a ReAct exchange of two LLM turns and one calculator call (turn 1 the model calls the
//! calculator, the tool runs, turn 2 the model answers), with a zero-latency LLM inside the
//! process on both sides, so that what is measured is each framework's own cost.
//!
//! AgentOS runs the in-process `sim` backend scripted to call the calculator, then answer
//! (one agent with a replica per request), under `durability: sync` (the default) and
//! `async`. LangGraph runs `benches/python/langgraph_react.py`: a `StateGraph` with an LLM
//! node that is a plain function, a `ToolNode` and the conditional edge between them, in the
//! venv of `frameworks`. If the venv cannot be made, LangGraph is reported as skipped with the
//! reason and the goals are not evaluated; no number is ever made up.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use agentos_runtime::durable::Durability;
use serde::Serialize;
use serde_json::json;

use super::{frameworks, Ctx};
use crate::child::{run_sample, Runner};
use crate::goals::Goal;
use crate::report::{ScenarioReport, VariantResult, AGENTOS};
use crate::workload::Workload;

/// The AgentOS variant under `durability: async`.
pub const AGENTOS_ASYNC: &str = "agentos_async";
/// The LangGraph variant.
pub const LANGGRAPH: &str = "langgraph";
/// Goal: AgentOS serves at least this many times LangGraph's requests per second.
pub const THROUGHPUT_GOAL: f64 = 100.0;
/// Goal: AgentOS's task p95 is at most 1/this of LangGraph's.
pub const P95_GOAL: f64 = 20.0;

/// The scenario's JSON report (`results/react.json`): the usual report (without its `ratios`,
/// which `comparisons` replace), each AgentOS variant against LangGraph, and the goals.
#[derive(Debug, Clone, Serialize)]
pub struct ReactReport {
    /// Every variant at every size, as in the other framework scenarios.
    #[serde(flatten)]
    pub report: ScenarioReport,
    /// Each AgentOS variant ÷ LangGraph at each size where both ran.
    pub comparisons: Vec<Comparison>,
    /// The goals, each with its verdict; empty when LangGraph did not run.
    pub goals: Vec<Goal>,
    /// Why the goals were not evaluated, if they were not.
    pub goals_skipped: Option<String>,
}

/// One AgentOS variant against LangGraph at one size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Requests of the run.
    pub requests: usize,
    /// `agentos` or `agentos_async`.
    pub variant: String,
    /// Requests per second ÷ LangGraph's (above 1 favours AgentOS).
    pub throughput: f64,
    /// Task latency p95 ÷ LangGraph's (below 1 favours AgentOS).
    pub task_p95: f64,
    /// Peak RSS ÷ LangGraph's (below 1 favours AgentOS).
    pub peak_rss: f64,
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<ReactReport> {
    let sizes: &[usize] = if ctx.smoke {
        &[1, 10]
    } else {
        &[1, 250, 1_000]
    };
    let python = frameworks::python(ctx);
    let versions = python.as_ref().ok().map(|p| frameworks::versions(p));
    let script = ctx.bench_dir.join("python").join("langgraph_react.py");
    let mut results = Vec::new();
    for &n in sizes {
        for (variant, durability) in [
            (AGENTOS, Durability::Sync),
            (AGENTOS_ASYNC, Durability::Async),
        ] {
            let w = Workload {
                agents: n,
                tasks: n,
                server: None,
                steps: 2,
                durability,
            };
            results.push(ctx.measure(variant, Runner::Agentos, &w));
        }
        results.push(match &python {
            Ok(py) => ctx.repeat(LANGGRAPH, n, |_| {
                let mut cmd = Command::new(py);
                cmd.arg(&script).args(["--requests", &n.to_string()]);
                run_sample(cmd, Duration::from_secs(600))
            }),
            Err(why) => VariantResult::skipped(LANGGRAPH, n, why.clone()),
        });
    }
    let description = format!(
        "N requests submitted at once, each a ReAct exchange of two LLM turns and one tool call \
         (turn 1 the model calls the calculator, the tool runs, turn 2 the model answers), \
         with a zero-latency LLM inside the process: what is measured is each framework's own \
         cost. `{AGENTOS}` and `{AGENTOS_ASYNC}`: the in-process `sim` backend scripted to \
         call the calculator, then answer; one agent with a replica per request, \
         `max_concurrency` = N, `durability: sync` (the default) and `async`. `{LANGGRAPH}`: a \
         `StateGraph` with an LLM node that is a plain function returning an `AIMessage` (the \
         calculator call, then the answer), a `ToolNode` with the calculator of `frameworks` \
         and the conditional edge back to the LLM node, all requests through `asyncio.gather` \
         of `ainvoke` (`benches/python/langgraph_react.py`). AgentOS's wall time starts before \
         boot (store, agents, scheduler), LangGraph's after compiling the graph; req/s is \
         successful requests ÷ wall time. Task latency is per request, from the start of its \
         work to its answer. LangGraph's CPU time counts the workload only (its imports are \
         left out); its peak RSS is the whole Python process. Goals: req/s ≥ \
         {THROUGHPUT_GOAL}× LangGraph's and task p95 ≤ 1/{P95_GOAL} of LangGraph's, at every \
         size."
    );
    let mut report = ctx.report(
        "react",
        description,
        json!({"requests": sizes, "llm_turns": 2, "tool_calls": 1,
               "backend": "in-process, zero latency", "python_packages": versions}),
        results,
    );
    // `comparisons` carry both AgentOS variants and the task p95; the generic ratios would
    // compare `agentos` with `agentos_async` as if it were a baseline.
    report.ratios.clear();
    let (comparisons, goals) = compare(&report.results);
    let goals_skipped = report
        .results
        .iter()
        .find(|r| r.variant == LANGGRAPH)
        .and_then(|r| r.skipped.clone())
        .map(|why| format!("LangGraph did not run: {why}"));
    Ok(ReactReport {
        report,
        comparisons,
        goals,
        goals_skipped,
    })
}

/// Each AgentOS variant against LangGraph at the same size, and the goals' verdicts (none at
/// a size where LangGraph did not run).
fn compare(results: &[VariantResult]) -> (Vec<Comparison>, Vec<Goal>) {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut comparisons = Vec::new();
    let mut goals = Vec::new();
    for lg in results
        .iter()
        .filter(|r| r.variant == LANGGRAPH && r.skipped.is_none())
    {
        for ours in results
            .iter()
            .filter(|r| r.variant != LANGGRAPH && r.agents == lg.agents)
        {
            let who = format!("`{}` × {}", ours.variant, ours.agents);
            if let Some(why) = &ours.skipped {
                for goal in [throughput_goal(&who), p95_goal(&who)] {
                    goals.push(Goal {
                        goal,
                        measured: format!("did not run: {why}"),
                        met: false,
                    });
                }
                continue;
            }
            let c = Comparison {
                requests: ours.agents,
                variant: ours.variant.clone(),
                throughput: div(ours.tasks_per_sec, lg.tasks_per_sec),
                task_p95: div(ours.task_p95_ms, lg.task_p95_ms),
                peak_rss: div(ours.peak_rss_mib, lg.peak_rss_mib),
            };
            goals.push(Goal {
                goal: throughput_goal(&who),
                measured: format!(
                    "{:.0} against {:.0} req/s: {:.1}×",
                    ours.tasks_per_sec, lg.tasks_per_sec, c.throughput
                ),
                met: c.throughput >= THROUGHPUT_GOAL && ours.failed == 0,
            });
            goals.push(Goal {
                goal: p95_goal(&who),
                measured: format!(
                    "{:.2} against {:.1} ms: {}",
                    ours.task_p95_ms,
                    lg.task_p95_ms,
                    fraction(c.task_p95)
                ),
                met: ours.task_p95_ms * P95_GOAL <= lg.task_p95_ms && ours.failed == 0,
            });
            comparisons.push(c);
        }
    }
    (comparisons, goals)
}

fn throughput_goal(who: &str) -> String {
    format!("{who}: req/s ≥ {THROUGHPUT_GOAL}× LangGraph's")
}

fn p95_goal(who: &str) -> String {
    format!("{who}: task p95 ≤ 1/{P95_GOAL} of LangGraph's")
}

/// A ratio below 1 as `1/k` (`0.05` is `1/20.0`), above it as `k×`.
fn fraction(r: f64) -> String {
    if r <= 0.0 {
        "n/a".into()
    } else if r < 1.0 {
        format!("1/{:.1}", 1.0 / r)
    } else {
        format!("{r:.2}×")
    }
}

/// The markdown section: the results table, each AgentOS variant against LangGraph, the goals.
pub fn render(r: &ReactReport) -> String {
    let mut out = crate::report::render(&r.report);
    if !r.comparisons.is_empty() {
        out.push_str(
            "AgentOS ÷ LangGraph (throughput above 1 and the others below 1 favour AgentOS):\n\n\
             | requests | variant | throughput × | task p95 × | peak RSS × |\n\
             |---:|---|---:|---:|---:|\n",
        );
        for c in &r.comparisons {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.4} | {:.3} |",
                c.requests, c.variant, c.throughput, c.task_p95, c.peak_rss
            );
        }
        out.push('\n');
    }
    if let Some(why) = &r.goals_skipped {
        let _ = writeln!(out, "Goals not evaluated: {why}\n");
    }
    if !r.goals.is_empty() {
        out.push_str("| goal | measured | verdict |\n|---|---|---|\n");
        for g in &r.goals {
            let _ = writeln!(out, "| {} | {} | **{}** |", g.goal, g.measured, g.verdict());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Percentiles, Sample};

    fn result(variant: &str, n: usize, wall: f64, p95_ms: f64) -> VariantResult {
        let sample = Sample {
            wall_secs: wall,
            steps: 2 * n as u64,
            tasks: n as u64,
            task_latency: Percentiles {
                count: n as u64,
                mean_ms: p95_ms / 2.0,
                p50_ms: p95_ms / 2.0,
                p95_ms,
                p99_ms: p95_ms,
            },
            peak_rss_bytes: 100 << 20,
            ..Sample::default()
        };
        VariantResult::from_samples(variant, n, vec![sample])
    }

    #[test]
    fn both_agentos_variants_are_judged_against_langgraph_at_their_size() {
        let results = vec![
            result(AGENTOS, 1000, 0.02, 10.0),
            result(AGENTOS_ASYNC, 1000, 0.05, 100.0),
            result(LANGGRAPH, 1000, 3.0, 3000.0),
            result(AGENTOS, 10, 0.001, 1.0),
            VariantResult::skipped(LANGGRAPH, 10, "no venv"),
        ];
        let (comparisons, goals) = compare(&results);
        assert_eq!(comparisons.len(), 2, "{comparisons:?}");
        assert!((comparisons[0].throughput - 150.0).abs() < 1e-9);
        assert!((comparisons[0].task_p95 - 1.0 / 300.0).abs() < 1e-12);
        assert_eq!(comparisons[1].variant, AGENTOS_ASYNC);
        let verdicts: Vec<bool> = goals.iter().map(|g| g.met).collect();
        assert_eq!(verdicts, [true, true, false, true], "{goals:?}");
        assert!(goals[2].measured.contains("60.0×"), "{goals:?}");
        assert!(goals[3].measured.contains("1/30.0"), "{goals:?}");
    }
}
