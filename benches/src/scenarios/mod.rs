//! The scenario registry. A scenario is a function from a [`Ctx`] to a serialisable report and
//! a markdown renderer for it; registering one is a single line in [`registry`].

pub mod durability;
pub mod fairness;
pub mod frameworks;
pub mod kv_routing;
pub mod las;
pub mod llm_bound;
pub mod overhead;
pub mod priority;
pub mod quotas;
pub mod react;
pub mod sandbox_startup;
pub mod scale;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::child::{run_variant, Runner, VariantSpec};
use crate::measure::Sample;
use crate::report::{Machine, ScenarioReport, VariantResult};
use crate::workload::Workload;

/// What every scenario gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Tiny sizes and one repetition, for CI.
    pub smoke: bool,
    /// Repetitions per variant and size (medians are reported).
    pub reps: usize,
    /// The runner's own executable (children re-invoke it).
    pub exe: PathBuf,
    /// The `benches/` folder (results, python script, venv).
    pub bench_dir: PathBuf,
    /// The machine description recorded in every report.
    pub machine: Machine,
    /// Whether `frameworks` may create the Python venv (the full run does; smoke runs only
    /// use one that exists).
    pub allow_venv_setup: bool,
    /// The durability mode of `overhead`'s workloads (`--durability`; the config's default,
    /// `sync`, unless told).
    pub durability: agentos_runtime::durable::Durability,
}

impl Ctx {
    /// Runs `runner` on `workload` `reps` times, each in a fresh child process.
    pub fn measure(&self, variant: &str, runner: Runner, workload: &Workload) -> VariantResult {
        let spec = VariantSpec {
            runner,
            workload: workload.clone(),
        };
        self.repeat(variant, workload.agents, |_| {
            run_variant(&self.exe, &spec, child_limit())
        })
    }

    /// The scenario's report: `results` with this run's machine, settings and the ratios of
    /// AgentOS against every baseline.
    pub fn report(
        &self,
        scenario: &str,
        description: String,
        params: serde_json::Value,
        results: Vec<VariantResult>,
    ) -> ScenarioReport {
        let mut report = ScenarioReport {
            scenario: scenario.into(),
            description,
            params,
            machine: self.machine.clone(),
            generated_at: now(),
            smoke: self.smoke,
            reps: self.reps,
            results,
            ratios: Vec::new(),
        };
        report.compute_ratios();
        report
    }

    /// Runs `once` `reps` times; the first failure makes the variant `skipped` with the reason.
    pub fn repeat(
        &self,
        variant: &str,
        agents: usize,
        mut once: impl FnMut(usize) -> anyhow::Result<Sample>,
    ) -> VariantResult {
        let mut samples = Vec::new();
        for rep in 0..self.reps.max(1) {
            eprintln!(
                "  {variant:>14} × {agents:<6} rep {}/{}",
                rep + 1,
                self.reps.max(1)
            );
            match once(rep) {
                Ok(s) => samples.push(s),
                Err(e) => {
                    eprintln!("    failed: {e:#}");
                    return VariantResult::skipped(variant, agents, format!("failed: {e:#}"));
                }
            }
        }
        VariantResult::from_samples(variant, agents, samples)
    }
}

/// Longest a single child may run.
fn child_limit() -> Duration {
    Duration::from_secs(300)
}

/// What a registered scenario's run returns: its JSON report and its markdown section.
pub type Outcome = anyhow::Result<(serde_json::Value, String)>;

/// A registered scenario: runs, returns its JSON and its markdown section.
pub struct Scenario {
    /// Name on the command line and of `results/<name>.json`.
    pub name: &'static str,
    run: Box<dyn Fn(&Ctx) -> Outcome>,
}

impl Scenario {
    /// Registers `run` (any serialisable report) with its markdown `render`er.
    pub fn new<R: Serialize + 'static>(
        name: &'static str,
        run: fn(&Ctx) -> anyhow::Result<R>,
        render: fn(&R) -> String,
    ) -> Self {
        Self {
            name,
            run: Box::new(move |ctx| {
                let report = run(ctx)?;
                Ok((serde_json::to_value(&report)?, render(&report)))
            }),
        }
    }

    /// Runs the scenario.
    pub fn run(&self, ctx: &Ctx) -> Outcome {
        (self.run)(ctx)
    }
}

/// Every scenario, in the order `all` runs them.
pub fn registry() -> Vec<Scenario> {
    use crate::report::render;
    vec![
        Scenario::new("overhead", overhead::run, render),
        Scenario::new("durability", durability::run, durability::render),
        Scenario::new("llm_bound", llm_bound::run, render),
        Scenario::new("frameworks", frameworks::run, render),
        Scenario::new("kv_routing", kv_routing::run, kv_routing::render),
        Scenario::new(
            "sandbox_startup",
            sandbox_startup::run,
            sandbox_startup::render,
        ),
        Scenario::new("quotas", quotas::run, quotas::render),
        Scenario::new("priority", priority::run, priority::render),
        Scenario::new("fairness", fairness::run, fairness::render),
        Scenario::new("las", las::run, las::render),
        Scenario::new("react", react::run, react::render),
        Scenario::new("scale", scale::run, scale::render),
    ]
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
