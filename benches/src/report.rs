//! Scenario reports: the JSON written to `benches/results/<scenario>.json` and its markdown
//! table for `benches/RESULTS.md`.

use serde::{Deserialize, Serialize};

use crate::measure::{median, Sample};

/// The machine a report was measured on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// CPU model name (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// Operating system and kernel.
    pub os: String,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// `git rev-parse --short HEAD` (with `-dirty` for local changes), if available.
    pub git_commit: Option<String>,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let pretty = read("/etc/os-release")
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.into());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            os: if kernel.is_empty() {
                pretty
            } else {
                format!("{pretty}, Linux {kernel}")
            },
            memory_bytes,
            git_commit: git_commit(),
        }
    }
}

fn git_commit() -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = run(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// One variant at one size: medians over its repetitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    /// Variant name (`agentos`, `tokio_direct`, `sequential`, `langgraph`, ...).
    pub variant: String,
    /// Concurrent agents (or requests) of this run.
    pub agents: usize,
    /// Why the variant did not run, if it did not (no numbers are given then).
    pub skipped: Option<String>,
    /// Repetitions measured.
    pub reps: usize,
    /// Median wall time, seconds.
    pub wall_secs: f64,
    /// Median steps per second.
    pub steps_per_sec: f64,
    /// Median tasks per second.
    pub tasks_per_sec: f64,
    /// Median of the per-run step latency p50, ms.
    pub step_p50_ms: f64,
    /// Median of the per-run step latency p95, ms.
    pub step_p95_ms: f64,
    /// Median of the per-run step latency p99, ms.
    pub step_p99_ms: f64,
    /// Median of the per-run mean task latency, ms.
    pub task_avg_ms: f64,
    /// Median of the per-run task latency p95, ms.
    pub task_p95_ms: f64,
    /// Median peak RSS of the variant's process, MiB.
    pub peak_rss_mib: f64,
    /// Median CPU time (user + system) of the variant's process, seconds.
    pub cpu_secs: f64,
    /// Failed tasks summed over repetitions.
    pub failed: u64,
    /// Every repetition as measured.
    pub samples: Vec<Sample>,
}

impl VariantResult {
    /// Medians over `samples`.
    pub fn from_samples(variant: &str, agents: usize, samples: Vec<Sample>) -> Self {
        let m = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        Self {
            variant: variant.into(),
            agents,
            skipped: None,
            reps: samples.len(),
            wall_secs: m(&|s| s.wall_secs),
            steps_per_sec: m(&|s| s.steps as f64 / s.wall_secs.max(1e-9)),
            tasks_per_sec: m(&|s| s.tasks as f64 / s.wall_secs.max(1e-9)),
            step_p50_ms: m(&|s| s.step_latency.p50_ms),
            step_p95_ms: m(&|s| s.step_latency.p95_ms),
            step_p99_ms: m(&|s| s.step_latency.p99_ms),
            task_avg_ms: m(&|s| s.task_latency.mean_ms),
            task_p95_ms: m(&|s| s.task_latency.p95_ms),
            peak_rss_mib: m(&|s| s.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
            cpu_secs: m(&|s| s.cpu_secs),
            failed: samples.iter().map(|s| s.failed).sum(),
            samples,
        }
    }

    /// A variant that did not run, with the reason.
    pub fn skipped(variant: &str, agents: usize, why: impl Into<String>) -> Self {
        Self {
            variant: variant.into(),
            agents,
            skipped: Some(why.into()),
            ..Self::default()
        }
    }
}

/// AgentOS against one baseline at one size, from the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Concurrent agents (or requests).
    pub agents: usize,
    /// The baseline variant.
    pub baseline: String,
    /// AgentOS tasks/s ÷ baseline tasks/s (above 1: AgentOS is faster).
    pub throughput: f64,
    /// AgentOS p99 step latency ÷ baseline's (below 1: AgentOS is faster); 0 where the
    /// baseline does not measure steps.
    pub step_p99: f64,
    /// AgentOS mean task latency ÷ baseline's.
    pub task_avg: f64,
    /// AgentOS peak RSS ÷ baseline's.
    pub peak_rss: f64,
    /// AgentOS CPU time ÷ baseline's.
    pub cpu: f64,
}

/// A whole scenario, as written to `benches/results/<scenario>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// What it measures.
    pub description: String,
    /// Workload parameters (steps per task, server latency model, ...).
    pub params: serde_json::Value,
    /// The machine.
    pub machine: Machine,
    /// Unix seconds when it finished.
    pub generated_at: u64,
    /// Whether this was a tiny smoke run (numbers are not meaningful).
    pub smoke: bool,
    /// Repetitions per variant and size.
    pub reps: usize,
    /// Every variant at every size.
    pub results: Vec<VariantResult>,
    /// AgentOS against each baseline, per size.
    pub ratios: Vec<Ratio>,
}

/// The name of AgentOS's own variant in every scenario.
pub const AGENTOS: &str = "agentos";

impl ScenarioReport {
    /// Computes `ratios` from `results`: AgentOS against every other variant at the same size
    /// (or, for a baseline measured at one size only, against that size).
    pub fn compute_ratios(&mut self) {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let mut ratios = Vec::new();
        for ours in self
            .results
            .iter()
            .filter(|r| r.variant == AGENTOS && r.skipped.is_none())
        {
            for other in self
                .results
                .iter()
                .filter(|r| r.variant != AGENTOS && r.skipped.is_none())
            {
                let same_size = other.agents == ours.agents;
                let single = self
                    .results
                    .iter()
                    .filter(|r| r.variant == other.variant)
                    .count()
                    == 1;
                if !same_size && !single {
                    continue;
                }
                ratios.push(Ratio {
                    agents: ours.agents,
                    baseline: other.variant.clone(),
                    throughput: div(ours.tasks_per_sec, other.tasks_per_sec),
                    step_p99: div(ours.step_p99_ms, other.step_p99_ms),
                    task_avg: div(ours.task_avg_ms, other.task_avg_ms),
                    peak_rss: div(ours.peak_rss_mib, other.peak_rss_mib),
                    cpu: div(ours.cpu_secs, other.cpu_secs),
                });
            }
        }
        self.ratios = ratios;
    }
}

/// The markdown section of a report: a results table and a ratios table.
pub fn render(r: &ScenarioReport) -> String {
    let mut out = format!("## `{}`\n\n{}\n\n", r.scenario, r.description);
    if r.smoke {
        out.push_str("**Smoke run: tiny sizes, the numbers mean nothing.**\n\n");
    }
    out.push_str(&format!(
        "Parameters: `{}`. Medians of {} repetition(s), each variant in its own process.\n\n",
        r.params, r.reps
    ));
    out.push_str(
        "| agents | variant | wall s | steps/s | tasks/s | step p50 ms | step p95 ms | step p99 ms | task avg ms | task p95 ms | peak RSS MiB | CPU s | failed |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in &r.results {
        if let Some(why) = &v.skipped {
            out.push_str(&format!(
                "| {} | {} | skipped: {} |||||||||||\n",
                v.agents, v.variant, why
            ));
            continue;
        }
        let steps_measured = v.samples.iter().any(|s| s.step_latency.count > 0);
        let ms = |x: f64| {
            if steps_measured {
                format!("{x:.3}")
            } else {
                "n/a".into()
            }
        };
        out.push_str(&format!(
            "| {} | {} | {:.3} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |\n",
            v.agents, v.variant, v.wall_secs, v.steps_per_sec, v.tasks_per_sec, ms(v.step_p50_ms),
            ms(v.step_p95_ms), ms(v.step_p99_ms), v.task_avg_ms, v.task_p95_ms, v.peak_rss_mib,
            v.cpu_secs, v.failed
        ));
    }
    if !r.ratios.is_empty() {
        out.push_str(
            "\nAgentOS ÷ baseline (throughput above 1 and the others below 1 favour AgentOS):\n\n\
             | agents | baseline | throughput × | step p99 × | task avg × | peak RSS × | CPU × |\n\
             |---:|---|---:|---:|---:|---:|---:|\n",
        );
        for x in &r.ratios {
            let f = |v: f64| {
                if v > 0.0 {
                    format!("{v:.2}")
                } else {
                    "n/a".into()
                }
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                x.agents,
                x.baseline,
                f(x.throughput),
                f(x.step_p99),
                f(x.task_avg),
                f(x.peak_rss),
                f(x.cpu)
            ));
        }
    }
    out.push('\n');
    out
}
