//! A sim-server hosted by the runner process on its own thread, shared by every variant of a
//! scenario (the variants are child processes, so the server's CPU is not theirs).

use std::net::SocketAddr;
use std::time::Duration;

use agentos_actors::simserver::{bind, SimServer, SimServerConfig};
use anyhow::Context as _;
use tokio::sync::watch;

/// A running sim-server; stops when dropped.
pub struct SimHost {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimHost {
    /// Starts a server with `cfg` on `127.0.0.1:0`.
    pub fn start(cfg: SimServerConfig) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sim-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                    match bind(any_port).await {
                        Ok((listener, addr)) => {
                            let _ = tx.send(Ok(addr));
                            SimServer::new(cfg).serve(listener, stop_rx).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into()));
                        }
                    }
                });
            })
            .context("cannot start the sim-server thread")?;
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .context("sim-server did not start")??;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `GET /healthz`, parsed (a plain HTTP/1.1 request on a blocking socket: the runner has
    /// no HTTP client of its own, and this is one request after a run).
    pub fn healthz(&self) -> anyhow::Result<serde_json::Value> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr)
            .with_context(|| format!("cannot connect to the sim-server at {}", self.addr))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .context("reading /healthz")?;
        let (head, body) = reply
            .split_once("\r\n\r\n")
            .context("/healthz answered no HTTP reply")?;
        anyhow::ensure!(
            head.starts_with("HTTP/1.1 200"),
            "/healthz answered {}",
            head.lines().next().unwrap_or_default()
        );
        serde_json::from_str(body).context("/healthz answered no JSON")
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
