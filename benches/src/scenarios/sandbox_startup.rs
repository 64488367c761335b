//! `sandbox_startup`: what the command sandbox adds to starting one `run_command`.
//!
//! The same `run_command` call of `true` goes through the real tool 100 times (20 with
//! `--smoke`), after a short warm-up, in three variants:
//! - `direct`: no sandbox (`runtime.sandbox: off`): tokio spawns `true`;
//! - `launcher_only`: through `agentos sandbox-exec` with every confinement switched off
//!   (only the re-exec and the `setrlimit`s): the price of the launcher itself;
//! - `sandboxed`: the full policy this machine offers (Landlock, user and network namespaces,
//!   rlimits and, as root, a pids cgroup per command).
//!
//! The launcher is the runner itself (`agentos-bench sandbox-exec` is `agentos sandbox-exec`,
//! built from the same tree), or the binary `AGENTOS_SANDBOX_LAUNCHER` names.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_runtime::sandbox::{self, AgentSandbox, Sandbox, SandboxMode, SandboxStatus};
use agentos_runtime::tools::{CommandSettings, FileSettings, ToolContext, ToolRegistry};
use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use super::Ctx;
use crate::measure::median;
use crate::report::Machine;

/// The scenario's JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct StartupReport {
    /// Always `sandbox_startup`.
    pub scenario: &'static str,
    /// Smoke size.
    pub smoke: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Whether the runner was root (the process limit then uses a pids cgroup).
    pub root: bool,
    /// Landlock ABI of the kernel.
    pub landlock_abi: u32,
    /// Timed calls per variant.
    pub runs: usize,
    /// Why the sandboxed variants did not run (no launcher), if they did not.
    pub skipped: Option<String>,
    /// One entry per variant.
    pub variants: Vec<StartupVariant>,
}

/// One variant's timings, in milliseconds per call.
#[derive(Debug, Clone, Serialize)]
pub struct StartupVariant {
    /// `direct`, `launcher_only` or `sandboxed`.
    pub variant: &'static str,
    /// Median.
    pub median_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Every call, in order.
    pub samples_ms: Vec<f64>,
}

fn launcher() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(sandbox::LAUNCHER_ENV) {
        return Ok(PathBuf::from(p));
    }
    // The runner is its own launcher: `agentos-bench sandbox-exec ...` runs the same code as
    // `agentos sandbox-exec ...`, so the measured launcher is always built from this tree.
    std::env::current_exe().context("own executable")
}

/// Runs the scenario. Without a launcher only `direct` runs, and the report says why.
pub fn run(ctx: &Ctx) -> anyhow::Result<StartupReport> {
    let runs = if ctx.smoke { 20 } else { 100 };
    let skipped = match launcher() {
        Ok(path) => {
            sandbox::set_launcher(path);
            sandbox::status()
                .launcher_error
                .clone()
                .map(|e| format!("the launcher does not answer: {e}"))
        }
        Err(e) => Some(format!("{e:#}")),
    };
    let status = sandbox::status().clone();
    let bare = SandboxStatus {
        landlock_abi: 0,
        namespaces: false,
        pids_cgroup: None,
        ..status.clone()
    };
    let ws = tempfile::tempdir()?;
    let tmp = tempfile::tempdir()?;
    let root = ws.path().canonicalize()?;
    let build = |mode, status: &SandboxStatus| -> anyhow::Result<Option<Arc<Sandbox>>> {
        Ok(Sandbox::new(
            "bench",
            mode,
            &AgentSandbox::default(),
            &root,
            tmp.path(),
            status,
        )?
        .map(Arc::new))
    };
    let mut variants = vec![("direct", None)];
    if skipped.is_none() {
        variants.push(("launcher_only", build(SandboxMode::BestEffort, &bare)?));
        variants.push(("sandboxed", build(SandboxMode::BestEffort, &status)?));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let registry = ToolRegistry::builtin();
    let tool = registry
        .get("run_command")
        .context("run_command is built in")?;
    let mut out = Vec::new();
    for (variant, sandbox) in variants {
        eprintln!("  sandbox_startup {variant} × {runs}");
        let cx = ToolContext {
            agent: "bench".into(),
            task: "bench/true".into(),
            workspace: Some(root.clone()),
            command_allowlist: Arc::new(vec![vec!["true".into()]]),
            command: Arc::new(CommandSettings {
                timeout: Duration::from_secs(10),
                ..CommandSettings::default()
            }),
            files: Arc::new(FileSettings::default()),
            bus: None,
            spawner: None,
            sandbox,
            call: None,
        };
        let mut samples_ms = Vec::new();
        for i in 0..runs + 5 {
            let started = Instant::now();
            let result = rt.block_on(tool.call(&cx, json!({"argv": ["true"]})));
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let result = result.map_err(|e| anyhow::anyhow!("{variant}: {e}"))?;
            anyhow::ensure!(
                result.data["exit_code"] == 0,
                "{variant}: `true` failed: {}",
                result.content
            );
            // The first five warm the page cache and the allocator.
            if i >= 5 {
                samples_ms.push(ms);
            }
        }
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        out.push(StartupVariant {
            variant,
            median_ms: median(samples_ms.clone()),
            p90_ms: sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
            min_ms: sorted[0],
            samples_ms,
        });
    }
    Ok(StartupReport {
        scenario: "sandbox_startup",
        smoke: ctx.smoke,
        machine: ctx.machine.clone(),
        root: status.root,
        landlock_abi: status.landlock_abi,
        runs,
        skipped,
        variants: out,
    })
}

/// The markdown section.
pub fn render(r: &StartupReport) -> String {
    let mut out = String::from("\n## `sandbox_startup`\n\n");
    let _ = writeln!(
        out,
        "What the command sandbox adds to one `run_command`: the tool runs `true` {} times per \
         variant (after 5 warm-up calls), in the runner's process. `direct`: no sandbox. \
         `launcher_only`: through `agentos sandbox-exec` with every confinement off (the \
         re-exec and the `setrlimit`s). `sandboxed`: the full policy (Landlock ABI {}, user and \
         network namespaces, rlimits{}). Milliseconds per call, spawn to reaped exit.{}\n",
        r.runs,
        r.landlock_abi,
        if r.root {
            ", and as root a pids cgroup created, joined, emptied and removed per command"
        } else {
            ""
        },
        if r.smoke {
            " Smoke run: numbers are not meaningful."
        } else {
            ""
        }
    );
    if let Some(why) = &r.skipped {
        let _ = writeln!(out, "Sandboxed variants skipped: {why}\n");
    }
    out.push_str("| variant | median ms | p90 ms | min ms | median added ms |\n");
    out.push_str("|---|---:|---:|---:|---:|\n");
    let base = r
        .variants
        .iter()
        .find(|v| v.variant == "direct")
        .map_or(0.0, |v| v.median_ms);
    for v in &r.variants {
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:+.2} |",
            v.variant,
            v.median_ms,
            v.p90_ms,
            v.min_ms,
            v.median_ms - base
        );
    }
    out.push('\n');
    out
}
