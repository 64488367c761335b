//! The child side of `scale`: `agentos-bench __scale <spec>` boots AgentOS as the spec says,
//! measures, and prints one JSON line; then it stops the tree, times that, and prints the line
//! again with the stop time. A tree that does not stop within [`STOP_LIMIT`] is left behind: a
//! watchdog thread ends the process, and the first line (with no stop time) is the result.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_actors::system::{boot, BootOptions, RunEnd, RunningSystem};
use agentos_runtime::config::Config;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::measure::{current_rss, peak_rss, Capture, Sample};
use crate::workload::{run_sample, Workload};

/// The hidden subcommand that runs one measurement.
pub const SUBCOMMAND: &str = "__scale";
/// How long the idle agents may take to start before the child gives up.
const START_LIMIT: Duration = Duration::from_secs(120);
/// How long the tree may take to stop once measured.
pub const STOP_LIMIT: Duration = Duration::from_secs(15);

/// What a child measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spec {
    /// `agents` idle replicas of one agent, no tasks: memory and spawn time.
    Idle {
        /// Agent instances.
        agents: usize,
    },
    /// `agents` replicas, one one-step task each, all at once.
    Steps {
        /// Agent instances and tasks.
        agents: usize,
    },
}

/// What an idle-memory child measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdleSample {
    /// Agent instances booted.
    pub agents: usize,
    /// From just before boot until every instance had started, seconds.
    pub spawn_secs: f64,
    /// Resident set just before boot, bytes.
    pub rss_before_bytes: u64,
    /// Resident set once every instance had started, bytes.
    pub rss_after_bytes: u64,
    /// Peak resident set of the child until then, bytes.
    pub peak_rss_bytes: u64,
    /// Time the tree took to stop; `None` if it did not within [`STOP_LIMIT`].
    pub stop_secs: Option<f64>,
}

impl IdleSample {
    /// Resident memory growth per agent, bytes.
    pub fn bytes_per_agent(&self) -> f64 {
        self.rss_after_bytes.saturating_sub(self.rss_before_bytes) as f64
            / self.agents.max(1) as f64
    }
}

/// What a one-step child measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepSample {
    /// The run as `overhead` reports it.
    #[serde(flatten)]
    pub sample: Sample,
    /// Time the tree took to stop; `None` if it did not within [`STOP_LIMIT`].
    pub stop_secs: Option<f64>,
}

/// `agentos-bench __scale <spec>`: runs the spec and prints its sample.
pub fn main(spec: &str) -> ExitCode {
    let run = serde_json::from_str::<Spec>(spec)
        .with_context(|| format!("scale spec {spec:?}"))
        .and_then(|spec| match spec {
            Spec::Idle { agents } => run_idle(agents),
            Spec::Steps { agents } => run_steps(agents),
        });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn opts(data_dir: PathBuf) -> BootOptions {
    BootOptions {
        trace: None,
        data_dir: Some(data_dir),
        prometheus: None,
        event_window: 0,
        resume: Default::default(),
    }
}

/// The config of `agents` idle replicas of one `sim` agent, no tasks.
pub(super) fn idle_config(agents: usize) -> anyhow::Result<Config> {
    let text = format!(
        "(version: 1, runtime: (max_concurrency: {agents}),
          backends: [(name: \"sim\", kind: Sim((latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0))))],
          agents: [(name: \"idle\", role: \"r\", backend: \"sim\", replicas: {agents})],
          workflows: [])"
    );
    parse(&text)
}

fn parse(text: &str) -> anyhow::Result<Config> {
    Config::parse(text, "bench.ron", std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("generated config is invalid:\n{e}"))
}

/// Boots `agents` idle agents and measures until every one has started.
fn run_idle(agents: usize) -> anyhow::Result<()> {
    let cfg = Arc::new(idle_config(agents)?);
    let data = tempfile::tempdir().context("temporary data dir")?;
    let data_dir = data.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let rss_before_bytes = current_rss();
        let started = Instant::now();
        let sys = boot(cfg, opts(data_dir.clone()))?;
        // Polled: an agent's start shows only on the board. The millisecond's sleep leaves
        // the core to the arbiters that start them.
        while sys.board.agents.len() < agents {
            if started.elapsed() > START_LIMIT {
                anyhow::bail!(
                    "{} of {agents} agents started in {START_LIMIT:?}",
                    sys.board.agents.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sample = IdleSample {
            agents,
            spawn_secs: started.elapsed().as_secs_f64(),
            rss_before_bytes,
            rss_after_bytes: current_rss(),
            peak_rss_bytes: peak_rss(),
            stop_secs: None,
        };
        finish(&sys, sample, data_dir, |s, secs| s.stop_secs = Some(secs)).await
    })
}

/// Runs `agents` one-step tasks on as many replicas until every task has ended. (No deadline
/// inside the child: the scheduler keeps this thread busy for as long as tasks report, so a
/// timer here would fire late; the parent's limit bounds the run.)
fn run_steps(agents: usize) -> anyhow::Result<()> {
    let w = Workload {
        agents,
        tasks: agents,
        server: None,
        steps: 1,
        durability: Default::default(),
    };
    let cfg = Arc::new(parse(&w.config_text())?);
    let capture = Capture::install(agentos_runtime::metrics::AGENT_STEP_DURATION)?;
    let data = tempfile::tempdir().context("temporary data dir")?;
    let data_dir = data.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let started = Instant::now();
        let sys = boot(cfg, opts(data_dir.clone()))?;
        let end = sys.wait(std::future::pending()).await;
        let wall_secs = started.elapsed().as_secs_f64();
        if let RunEnd::Fatal(why) = end {
            anyhow::bail!("AgentOS stopped: {why}");
        }
        let snapshot = sys.snapshot().await?;
        let sample = StepSample {
            sample: run_sample(wall_secs, capture.take(), &snapshot, 0),
            stop_secs: None,
        };
        finish(&sys, sample, data_dir, |s, secs| s.stop_secs = Some(secs)).await
    })
}

/// Prints `sample`, stops the tree within [`STOP_LIMIT`] and prints `sample` again with the
/// time that took. Past the limit, a watchdog thread removes `data_dir` and ends the process
/// (the tree's own threads are the ones stuck, this one among them).
async fn finish<T: Serialize>(
    sys: &RunningSystem,
    mut sample: T,
    data_dir: PathBuf,
    stopped: fn(&mut T, f64),
) -> anyhow::Result<()> {
    print_line(&sample)?;
    std::thread::spawn(move || {
        std::thread::sleep(STOP_LIMIT);
        eprintln!("the tree did not stop within {STOP_LIMIT:?}; leaving it");
        let _ = std::fs::remove_dir_all(&data_dir);
        std::process::exit(0);
    });
    let t0 = Instant::now();
    sys.stop().await;
    stopped(&mut sample, t0.elapsed().as_secs_f64());
    print_line(&sample)
}

fn print_line<T: Serialize>(sample: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(sample)?)?;
    out.flush()?;
    Ok(())
}
