//! The `agentos` command line.
//!
//! Exit codes:
//! - `0`: `check` found no problem; `run` finished with every task succeeded; `serve` shut down
//!   cleanly.
//! - `1`: `run` finished but at least one task failed, was skipped or was cancelled.
//! - `2`: the config has errors, or the command line is wrong.
//! - `3`: a runtime error: the system could not start (data dir, trace file, address in use)
//!   or the root supervisor gave up.
//! - `130`: `run` was interrupted by SIGINT/SIGTERM; unfinished tasks were cancelled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentos_runtime::config::Config;
use agentos_runtime::model::TaskState;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::http::{self, HttpState};
use crate::system::{boot, BootOptions, RunEnd, RunningSystem};
use crate::{summary, telemetry};

/// AgentOS: an operating-system-style runtime for LLM agents, where every agent is an actor.
#[derive(Debug, Parser)]
#[command(name = "agentos", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config and print every problem at once (exit 0 if clean, 2 on errors).
    Check {
        /// The RON config file.
        file: PathBuf,
    },
    /// Run the config's workflows to completion and print a summary per task.
    ///
    /// Exits 0 only if every task succeeded; 1 if any failed, was skipped or cancelled; 2 on
    /// config errors; 3 on runtime errors; 130 when interrupted.
    Run {
        /// The RON config file.
        file: PathBuf,
        /// Write every state transition, LLM call and tool call here, one JSON object per line.
        #[arg(long, value_name = "FILE.jsonl")]
        trace: Option<PathBuf>,
        /// Serve /metrics, /healthz and /api/* on this address while the run lasts
        /// (e.g. 127.0.0.1:9464; port 0 picks a free port and prints it).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Data directory (run folders, workspace copies); overrides runtime.data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Print the summary as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Keep the system up: serve /metrics, /healthz and /api/*, run the declared workflows,
    /// and shut down gracefully on SIGINT/SIGTERM.
    Serve {
        /// The RON config file.
        file: PathBuf,
        /// Address to listen on (port 0 picks a free port and prints it).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
        listen: SocketAddr,
        /// Write the JSON-lines trace here.
        #[arg(long, value_name = "FILE.jsonl")]
        trace: Option<PathBuf>,
        /// Data directory; overrides runtime.data_dir.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Serve the `sim` backend (a simulator, not a language model) as an OpenAI-compatible
    /// endpoint: POST /v1/chat/completions, GET /v1/models, GET /healthz.
    ///
    /// Exits 0 on SIGINT/SIGTERM, 2 on config errors, 3 if the address cannot be bound.
    SimServer {
        /// Address to listen on (port 0 picks a free port and prints it).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8088")]
        listen: SocketAddr,
        /// RON file with the simulator's settings (seed, latency, faults, concurrency limit).
        #[arg(long, value_name = "FILE.ron")]
        config: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    telemetry::init_logging();
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Check { file } => match load(&file) {
            Ok(cfg) => {
                let tasks: usize = cfg.workflows.iter().map(|w| w.tasks.len()).sum();
                println!(
                    "{}: ok ({} backends, {} agents, {} workflows, {} tasks)",
                    file.display(),
                    cfg.backends.len(),
                    cfg.agents.len(),
                    cfg.workflows.len(),
                    tasks
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run {
            file,
            trace,
            metrics_addr,
            data_dir,
            json,
        } => start(&file, trace, data_dir, |cfg, opts| {
            run(cfg, opts, metrics_addr, json)
        }),
        Command::Serve {
            file,
            listen,
            trace,
            data_dir,
        } => start(&file, trace, data_dir, |cfg, opts| serve(cfg, opts, listen)),
        Command::SimServer { listen, config } => crate::simserver::main(listen, config),
    }
}

/// Loads the config (exit 2 on errors) and runs `body` inside a fresh actix system (exit 3 on
/// runtime errors).
fn start<F, Fut>(
    file: &Path,
    trace: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    body: F,
) -> ExitCode
where
    F: FnOnce(Config, BootOptions) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let cfg = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = BootOptions {
        trace,
        data_dir,
        prometheus: None,
    };
    exit_on_error(actix_rt::System::new().block_on(body(cfg, opts)))
}

fn exit_on_error(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(3)
    })
}

fn load(file: &Path) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|errors| {
        eprint!("{errors}");
        ExitCode::from(2)
    })
}

/// Panics inside agent steps are caught and handled by supervision; log them as events
/// instead of letting the default hook print a backtrace banner for each. Any other panic is a
/// bug and goes to the default hook, loudly.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::agent::in_contained_step() {
            default(info);
            return;
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::warn!(%location, panic = %msg, "panic (contained by the supervisor)");
    }));
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Serves the HTTP endpoint (`/metrics`, `/healthz`, `/api/*`) for `sys` on `addr`, with the
/// config's API limits. With `token`, every `/api/*` request needs it as a bearer token.
/// Returns the shutdown switch: sending `true` (or dropping it) stops the server, ends event
/// streams and lets open requests finish.
async fn start_http(
    sys: &RunningSystem,
    addr: SocketAddr,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    token: Option<String>,
) -> anyhow::Result<watch::Sender<bool>> {
    let (listener, local) = http::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    println!("listening on http://{local}");
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = HttpState::new(sys, prometheus, token, stop_rx);
    actix_rt::spawn(http::serve(listener, state));
    Ok(stop_tx)
}

async fn run(
    cfg: Config,
    mut opts: BootOptions,
    metrics_addr: Option<SocketAddr>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let prometheus = telemetry::prometheus()?;
    opts.prometheus = Some(prometheus.clone());
    let grace = cfg.runtime.shutdown_timeout;
    let sys = boot(Arc::new(cfg), opts)?;
    let http_stop = match metrics_addr {
        Some(addr) => Some(start_http(&sys, addr, prometheus, None).await?),
        None => None,
    };
    let end = sys.wait(shutdown_signal()).await;
    if end == RunEnd::Interrupted {
        eprintln!(
            "interrupted: letting running attempts finish (up to {grace:?}), cancelling the rest"
        );
        sys.drain(grace, "cancelled: run interrupted by signal")
            .await;
    }
    let snapshot = sys.snapshot().await;
    let kv = sys.kv_stats().await;
    sys.stop().await;
    if let Some(stop) = http_stop {
        stop.send_replace(true);
    }
    let snapshot = snapshot?;
    let pager = sys.board.pager_stats();
    if json {
        let out = summary::JsonSummary {
            snapshot: &snapshot,
            pager: &pager,
            kv: &kv,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let restarts = sys
            .agent_restarts
            .load(std::sync::atomic::Ordering::Relaxed);
        print!(
            "{}",
            summary::render(&snapshot, &sys.simulated_backends, restarts)
        );
        print!("{}", summary::render_pager(&pager));
        print!("{}", summary::render_kv(&kv));
        println!("run folder: {}", sys.run_dir.display());
        println!("store: {} (run {})", sys.store_path.display(), sys.run_id);
    }
    Ok(match end {
        RunEnd::Fatal(why) => {
            eprintln!("error: {why}");
            ExitCode::from(3)
        }
        RunEnd::Interrupted => ExitCode::from(130),
        RunEnd::Completed
            if snapshot
                .tasks
                .iter()
                .all(|t| t.state == TaskState::Succeeded) =>
        {
            ExitCode::SUCCESS
        }
        RunEnd::Completed => ExitCode::from(1),
    })
}

async fn serve(cfg: Config, mut opts: BootOptions, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let prometheus = telemetry::prometheus()?;
    opts.prometheus = Some(prometheus.clone());
    let grace = cfg.runtime.shutdown_timeout;
    let sys = boot(Arc::new(cfg), opts)?;
    let http_stop = start_http(&sys, listen, prometheus, None).await?;
    let mut fatal = sys.board.fatal.subscribe();
    let code = tokio::select! {
        _ = shutdown_signal() => {
            eprintln!("shutting down: letting running attempts finish (up to {grace:?})");
            sys.drain(grace, "cancelled: shutdown").await;
            ExitCode::SUCCESS
        }
        f = fatal.wait_for(|f| f.is_some()) => {
            eprintln!("error: {}", f.ok().and_then(|f| f.clone()).unwrap_or_default());
            ExitCode::from(3)
        }
    };
    sys.stop().await;
    http_stop.send_replace(true);
    Ok(code)
}
