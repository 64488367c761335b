//! The `agentos` command line.
//!
//! `check`, `run` and `serve` work on a config file; `sim-server` serves the simulator; the
//! client subcommands (`submit`, `workflows`, `tasks`, `ps`, `suspend`, `resume`, `kill`,
//! `cancel`, `events`, in [`crate::client`]) speak a running `serve`'s control-plane API;
//! `audit`, `gc` and `runs` (in `store`) open a data directory's store file directly.
//!
//! Exit codes:
//! - `0`: `check` found no problem; `run` finished with every task succeeded; `serve` shut down
//!   cleanly; a client command got what it asked for (`submit --wait`: every workflow
//!   succeeded).
//! - `1`: `run` finished but at least one task failed, was skipped or was cancelled;
//!   `submit --wait`: a workflow failed or was cancelled.
//! - `2`: the config has errors, or the command line is wrong: `run` of a config without
//!   workflows (nothing to run), `serve` (or `run --metrics-addr`) on a non-loopback address
//!   without an API token. For client commands: the server refused the request (any 4xx or
//!   5xx answer, printed as the server gave it), or the file or URL given is unreadable or
//!   invalid. Also when `runtime.sandbox` is `required` and this machine cannot confine
//!   commands. For `audit`, `gc` and `runs`: no store in the data directory, an unknown
//!   `--run`, or a bad `--since` / `--older-than`.
//! - `3`: a runtime error: the system could not start (data dir, trace file, address in use)
//!   or the root supervisor gave up; for `audit`, `gc` and `runs`, the store could not be read
//!   or written. For client commands: the server could not be reached
//!   (connection refused, timeout) or did not answer like an AgentOS server.
//! - `130`: `run` was interrupted by SIGINT/SIGTERM; unfinished tasks were cancelled.
//!
//! # The API token
//! `serve` (and `run --metrics-addr`) read the bearer token of `/api/*` from the environment
//! variable named by `--token-env VAR`, else by `runtime.api.token_env` in the config. An
//! unset or empty variable means no token, which is allowed on loopback addresses only.
//! Clients send the token they find in `$AGENTOS_TOKEN`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use agentos_runtime::config::Config;
use agentos_runtime::model::TaskState;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::client::progress::{self, Progress};
use crate::client::ClientCommand;
use crate::http::{self, HttpState};
use crate::system::{boot, BootOptions, ResumeMode, ResumeRefused, RunEnd, RunningSystem};
use crate::{summary, telemetry};

mod service;
mod store;

use service::{api_token, serve_banner, ApiToken};

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
    /// config errors or a refused resume; 3 on runtime and store errors; 130 when interrupted
    /// (the run can then be resumed with --resume).
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
        /// Environment variable holding the API's bearer token (overrides
        /// runtime.api.token_env); needed for a non-loopback --metrics-addr.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// Continue the newest unfinished run of this config in the data directory (after a
        /// crash or an interrupt) instead of starting a new one.
        #[arg(long)]
        resume: bool,
    },
    /// Keep the system up as a service: serve /metrics, /healthz and the control-plane API
    /// (/api/*), run the declared workflows (there may be none) and the submitted ones, and
    /// shut down gracefully on SIGINT/SIGTERM.
    ///
    /// Off loopback the API needs a bearer token (--token-env or runtime.api.token_env);
    /// without one, serve refuses to start (exit 2). An unfinished run of the same config in
    /// the data directory (a crash, or an earlier shutdown with work left) is resumed.
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
        /// Environment variable holding the API's bearer token (overrides
        /// runtime.api.token_env). An unset or empty variable means no token.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
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
    /// Print a run's audit log: task state changes, API actions, LLM calls (with their prompt
    /// and reply) and tool calls, oldest first (the newest --limit entries).
    ///
    /// Reads the store of --data-dir directly; a running server may keep writing. Exits 2 when
    /// there is no store there or an argument is wrong, 3 when the store cannot be read.
    Audit {
        /// The data directory holding store.db.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The run (default: the newest; `agentos runs` lists them).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Only entries about this agent.
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        /// Only entries about this task.
        #[arg(long, value_name = "WORKFLOW/TASK")]
        task: Option<String>,
        /// Only entries since then: an age (10m, 2h, 7d) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many entries (the newest).
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove old runs from a data directory's store (every row of theirs) and compact it.
    ///
    /// Runs that did not finish (running or interrupted: they can be resumed) are kept unless
    /// --include-unfinished is given. Prints what was removed and the size before and after.
    Gc {
        /// The data directory holding store.db.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Keep the newest N runs, remove the older ones.
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "older_than",
            required_unless_present = "older_than"
        )]
        keep_runs: Option<usize>,
        /// Remove runs started longer ago than this (30m, 12h, 7d, 4w).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Also remove selected runs that did not finish (they can no longer be resumed).
        #[arg(long)]
        include_unfinished: bool,
    },
    /// List the runs in a data directory's store: id, status, resumes, start, config.
    Runs {
        /// The data directory holding store.db.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Client subcommands: they talk to a running `serve`.
    #[command(flatten)]
    Client(ClientCommand),
    /// The sandbox launcher `run_command` starts: confines itself, then runs ARGV.
    #[command(hide = true)]
    SandboxExec {
        /// Print what the kernel offers (JSON) and exit.
        #[arg(long)]
        probe: bool,
        /// The policy to apply (JSON).
        #[arg(long)]
        policy: Option<String>,
        /// The command.
        #[arg(last = true)]
        argv: Vec<String>,
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
            token_env,
            resume,
        } => {
            let cfg = match load(&file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if cfg.workflows.is_empty() {
                eprintln!(
                    "error: {} declares no workflows: nothing to run (`agentos serve {}` \
                     keeps a system up for submitted workflows)",
                    file.display(),
                    file.display()
                );
                return ExitCode::from(2);
            }
            let token = match metrics_addr {
                Some(addr) => match api_token(&cfg, token_env.as_deref(), addr) {
                    Ok(t) => t,
                    Err(code) => return code,
                },
                None => ApiToken::default(),
            };
            let mode = if resume {
                ResumeMode::Required
            } else {
                ResumeMode::Fresh
            };
            start(cfg, trace, data_dir, mode, |cfg, opts| {
                run(cfg, opts, metrics_addr.map(|a| (a, token)), json)
            })
        }
        Command::Serve {
            file,
            listen,
            trace,
            data_dir,
            token_env,
        } => {
            let cfg = match load(&file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            // Checked before anything boots: a refused start leaves nothing behind.
            let token = match api_token(&cfg, token_env.as_deref(), listen) {
                Ok(t) => t,
                Err(code) => return code,
            };
            start(cfg, trace, data_dir, ResumeMode::Auto, |cfg, opts| {
                serve(cfg, opts, listen, token)
            })
        }
        Command::Audit {
            data_dir,
            run,
            agent,
            task,
            since,
            limit,
            json,
        } => store::audit(store::AuditArgs {
            data_dir,
            run,
            agent,
            task,
            since,
            limit,
            json,
        }),
        Command::Gc {
            data_dir,
            keep_runs,
            older_than,
            include_unfinished,
        } => store::gc(
            &data_dir,
            keep_runs,
            older_than.as_deref(),
            include_unfinished,
        ),
        Command::Runs { data_dir, json } => store::runs(&data_dir, json),
        Command::SimServer { listen, config } => crate::simserver::main(listen, config),
        Command::Client(command) => crate::client::main(command),
        Command::SandboxExec {
            probe,
            policy,
            argv,
        } => crate::sandbox_exec::main(probe, policy, argv),
    }
}

/// Runs `body` with the loaded config inside a fresh actix system (exit 3 on runtime
/// errors).
fn start<F, Fut>(
    cfg: Config,
    trace: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    resume: ResumeMode,
    body: F,
) -> ExitCode
where
    F: FnOnce(Config, BootOptions) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    if let Err(refused) = agentos_runtime::sandbox::check(&cfg, agentos_runtime::sandbox::status())
    {
        eprintln!("error: {refused}");
        return ExitCode::from(2);
    }
    let opts = BootOptions {
        trace,
        data_dir,
        prometheus: None,
        event_window: 0,
        resume,
    };
    exit_on_error(actix_rt::System::new().block_on(body(cfg, opts)))
}

fn exit_on_error(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        // A resume that does not fit is the user's to fix, like a config error.
        if e.downcast_ref::<ResumeRefused>().is_some() {
            ExitCode::from(2)
        } else {
            ExitCode::from(3)
        }
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
    // The API handlers that check the token are wired in with the control-plane routes.
    let _ = token;
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
    metrics: Option<(SocketAddr, ApiToken)>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let prometheus = telemetry::prometheus()?;
    opts.prometheus = Some(prometheus.clone());
    if metrics.is_some() {
        // The API is served: keep the event window for `GET /api/events`.
        opts.event_window = cfg.runtime.api.event_window;
    }
    let grace = cfg.runtime.shutdown_timeout;
    let sandbox =
        agentos_runtime::sandbox::report(cfg.runtime.sandbox, agentos_runtime::sandbox::status());
    let sys = boot(Arc::new(cfg), opts)?;
    let http_stop = match metrics {
        Some((addr, token)) => Some(start_http(&sys, addr, prometheus, token.value).await?),
        None => None,
    };
    let end = {
        // Live progress on a terminal; the bar is gone before anything else is printed.
        let bar = Progress::on_stderr();
        tokio::select! {
            end = sys.wait(shutdown_signal()) => end,
            never = progress::follow_run(&sys, &bar) => match never {},
        }
    };
    if end == RunEnd::Interrupted {
        eprintln!(
            "interrupted: letting running attempts finish (up to {grace:?}); the rest waits \
             for `--resume`"
        );
        sys.pause(grace).await;
    }
    let snapshot = sys.snapshot().await;
    let kv = sys.kv_stats().await;
    let stored = sys.finish().await;
    sys.stop().await;
    if let Err(e) = &stored {
        eprintln!("error: the run's last state was not stored: {e:#}");
    }
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
        if let Some(gate) = &sys.quotas {
            let sched = sys
                .board
                .sched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            print!(
                "{}",
                summary::render_quotas(&gate.status(), gate.spent_total(), &sched)
            );
        }
        print!("{}", summary::render_sandbox(&sandbox));
        println!("run folder: {}", sys.run_dir.display());
        println!("store: {} (run {})", sys.store_path.display(), sys.run_id);
        if let Some(r) = &sys.resume {
            println!(
                "resumed run {} (resume {}): {} tasks had succeeded, {} attempts continued \
                 from their journal",
                r.run_id, r.resumes, r.tasks_succeeded, r.attempts_continued
            );
        }
    }
    if end == RunEnd::Interrupted {
        eprintln!(
            "resume with: agentos run {} --resume --data-dir {}",
            sys.cfg
                .source
                .as_deref()
                .map_or_else(|| "CONFIG".into(), |p| p.display().to_string()),
            sys.store_path
                .parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string())
        );
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

async fn serve(
    cfg: Config,
    mut opts: BootOptions,
    listen: SocketAddr,
    token: ApiToken,
) -> anyhow::Result<ExitCode> {
    let prometheus = telemetry::prometheus()?;
    opts.prometheus = Some(prometheus.clone());
    opts.event_window = cfg.runtime.api.event_window;
    let grace = cfg.runtime.shutdown_timeout;
    let banner = serve_banner(&cfg, listen, &token);
    let sys = boot(Arc::new(cfg), opts)?;
    let http_stop = start_http(&sys, listen, prometheus, token.value).await?;
    // Informational: a reader that took only the `listening on` line and closed the pipe
    // must not bring the service down (print! would panic on a closed stdout).
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    let mut fatal = sys.board.fatal.subscribe();
    let code = tokio::select! {
        _ = shutdown_signal() => {
            eprintln!("shutting down: letting running attempts finish (up to {grace:?}); \
                       unfinished work resumes at the next start on this data directory");
            sys.pause(grace).await;
            ExitCode::SUCCESS
        }
        f = fatal.wait_for(|f| f.is_some()) => {
            eprintln!("error: {}", f.ok().and_then(|f| f.clone()).unwrap_or_default());
            ExitCode::from(3)
        }
    };
    if let Err(e) = sys.finish().await {
        eprintln!("error: the run's last state was not stored: {e:#}");
    }
    sys.stop().await;
    http_stop.send_replace(true);
    Ok(code)
}
