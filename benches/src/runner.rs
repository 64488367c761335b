//! The `agentos-bench` command line: runs scenarios, writes `results/<scenario>.json`, the
//! markdown fragment `results/<scenario>.md`, the chart `results/scaling.svg` and
//! `RESULTS.md` (regenerated from every fragment present, so running one scenario keeps the
//! others' sections).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use agentos_runtime::durable::Durability;
use anyhow::Context as _;
use clap::Parser;

use crate::report::{Machine, ScenarioReport};
use crate::scenarios::{registry, Ctx};

/// Runs AgentOS benchmark scenarios against their baselines, each variant in its own process.
#[derive(Debug, Parser)]
#[command(name = "agentos-bench", about, long_about = None)]
pub struct Args {
    /// Scenarios to run (`all`, or names: overhead, llm_bound, frameworks, ...); `report`
    /// runs none and only regenerates RESULTS.md and the chart from `results/`.
    #[arg(default_value = "all")]
    pub scenarios: Vec<String>,
    /// Tiny sizes and one repetition, for CI; LangGraph only if its venv exists already.
    #[arg(long)]
    pub smoke: bool,
    /// Repetitions per variant and size (medians are reported); default 5, or 1 with --smoke.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Where `results/` and `RESULTS.md` go (default: the `benches/` folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Durability mode of the `overhead` workloads: sync (the default), async or exit.
    #[arg(long, value_name = "MODE", default_value = "sync", value_parser = parse_durability)]
    pub durability: Durability,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    Durability::from_label(s).ok_or_else(|| format!("{s:?} is not sync, async or exit"))
}

/// The `benches/` folder of the source tree.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let mut argv = std::env::args();
    if std::env::args().nth(1).as_deref() == Some("__variant") {
        let spec = argv.nth(2).unwrap_or_default();
        return match crate::child::run_in_child(&spec) {
            Ok(sample) => {
                println!("{}", serde_json::to_string(&sample).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the scenarios `args` names and writes every output file.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let scenarios = registry();
    let known: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    for name in &args.scenarios {
        if name != "all" && name != "report" && !known.contains(&name.as_str()) {
            anyhow::bail!(
                "unknown scenario {name:?}; known: all, report, {}",
                known.join(", ")
            );
        }
    }
    let all = args.scenarios.iter().any(|s| s == "all");
    let out = args.out.clone().unwrap_or_else(bench_dir);
    let results = out.join("results");
    std::fs::create_dir_all(&results)
        .with_context(|| format!("cannot create {}", results.display()))?;
    let ctx = Ctx {
        smoke: args.smoke,
        reps: args.reps.unwrap_or(if args.smoke { 1 } else { 5 }).max(1),
        exe: std::env::current_exe().context("own executable")?,
        bench_dir: bench_dir(),
        machine: Machine::describe(),
        allow_venv_setup: !args.smoke,
        durability: args.durability,
    };
    let started = Instant::now();
    for s in scenarios
        .iter()
        .filter(|s| all || args.scenarios.iter().any(|n| n == s.name))
    {
        eprintln!(
            "scenario {} ({:.0} s elapsed)",
            s.name,
            started.elapsed().as_secs_f64()
        );
        let (json, markdown) = s
            .run(&ctx)
            .with_context(|| format!("scenario {}", s.name))?;
        write(
            &results.join(format!("{}.json", s.name)),
            &serde_json::to_string_pretty(&json)?,
        )?;
        write(&results.join(format!("{}.md", s.name)), &markdown)?;
    }
    let charted: Vec<ScenarioReport> = ["overhead", "llm_bound"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(results.join(format!("{n}.json"))).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect();
    if !charted.is_empty() {
        crate::chart::draw(&charted, &results.join("scaling.svg"))?;
    }
    write(&out.join("RESULTS.md"), &results_md(&ctx, &results, &known))?;
    eprintln!(
        "done in {:.0} s; see {}",
        started.elapsed().as_secs_f64(),
        out.join("RESULTS.md").display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn results_md(ctx: &Ctx, results: &Path, names: &[&str]) -> String {
    let m = &ctx.machine;
    let mut out = format!(
        "# AgentOS benchmark results\n\n\
         Generated by `cargo run --release -p agentos-benches --bin agentos-bench -- all`; do not \
         edit by hand. Each scenario's JSON (with every repetition) is in `results/`.\n\n\
         Machine: {} cores, {}, {}, {:.1} GiB RAM, commit {}.\n\n",
        m.cores,
        m.cpu_model,
        m.os,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.git_commit.as_deref().unwrap_or("unknown"),
    );
    if results.join("scaling.svg").exists() {
        out.push_str(
            "![throughput and p99 step latency against agent count](results/scaling.svg)\n\n",
        );
    }
    for name in names {
        if let Ok(section) = std::fs::read_to_string(results.join(format!("{name}.md"))) {
            out.push_str(&section);
        }
    }
    out
}
