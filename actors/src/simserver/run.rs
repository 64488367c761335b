//! Starting the sim-server: binding its address, and the `agentos sim-server` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{SimServer, SimServerConfig, SimServerError};

/// Binds `addr` (port 0 picks a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), SimServerError> {
    let bind_err = |source| SimServerError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// `agentos sim-server`: loads the config (exit 2 on errors), serves on `listen` until SIGINT
/// or SIGTERM (exit 0), exit 3 if the address cannot be bound.
pub fn main(listen: SocketAddr, config: Option<PathBuf>) -> ExitCode {
    let cfg = match config {
        Some(path) => match SimServerConfig::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => SimServerConfig::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(async move {
        let (listener, local) = match bind(listen).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(3);
            }
        };
        println!(
            "agentos sim-server (a simulator, not a language model) serving model {:?} on http://{local}/v1",
            cfg.model
        );
        if cfg.replicas > 1 {
            println!(
                "{} replicas, each with its own {}: http://{local}/r/0/v1 .. http://{local}/r/{}/v1",
                cfg.replicas,
                if cfg.cache.is_some() { "prefix cache" } else { "queue" },
                cfg.replicas - 1
            );
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = SimServer::new(cfg);
        let serving = tokio::spawn(server.serve(listener, stop_rx));
        crate::cli::shutdown_signal().await;
        stop_tx.send_replace(true);
        let _ = serving.await;
        ExitCode::SUCCESS
    })
}
