//! Shared helpers: run a config in-process, poll with a deadline, plain HTTP GETs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_actors::protocol::RunSnapshot;
use agentos_actors::system::{boot, BootOptions, RunEnd};
use agentos_runtime::config::Config;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `agentos` binary, built by this crate as `agentos-it` (the same `main`), so that cargo
/// builds it for these tests whatever packages are tested.
pub fn agentos_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agentos-it"))
}

/// Makes the built `agentos` binary this process's sandbox launcher (once): in-process runs
/// are not `agentos` themselves, so `run_command` needs to be told where the launcher is.
pub fn use_built_launcher() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        agentos_runtime::sandbox::set_launcher(agentos_bin());
    });
}

/// Polls `condition` every 20 ms until it holds (true) or `limit` passes (false).
pub fn holds_within(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses config text as if it were a file in `config/` (so relative paths work there).
pub fn parse(text: &str) -> Config {
    Config::parse(text, "test.ron", &repo().join("config"))
        .unwrap_or_else(|e| panic!("config invalid:\n{e}"))
}

/// What a finished in-process run left behind.
pub struct Finished {
    pub end: RunEnd,
    pub snapshot: RunSnapshot,
    pub restarts: u64,
    pub run_dir: PathBuf,
    /// Whatever `during` returned while the system was up.
    pub probe: Option<String>,
}

/// Boots `cfg` in a fresh actix system on this thread, waits for the run to end (at most
/// `limit`), and stops it. `during` runs while the system is up, with its `/metrics` address.
pub fn run_with(
    cfg: Config,
    data_dir: &Path,
    limit: Duration,
    during: Option<Box<dyn FnOnce(SocketAddr) -> String + Send>>,
) -> Finished {
    use_built_launcher();
    actix_rt::System::new().block_on(async move {
        let prometheus = agentos_actors::telemetry::prometheus().expect("recorder");
        let opts = BootOptions {
            trace: None,
            data_dir: Some(data_dir.to_path_buf()),
            prometheus: Some(prometheus.clone()),
            event_window: 0,
            resume: Default::default(),
        };
        let sys = boot(Arc::new(cfg), opts).expect("boot");
        let (listener, addr) = agentos_actors::http::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let state = agentos_actors::http::HttpState::new(&sys, prometheus, None, stop_rx);
        actix_rt::spawn(agentos_actors::http::serve(listener, state));
        let end = sys.wait(actix_rt::time::sleep(limit)).await;
        assert_ne!(
            end,
            RunEnd::Interrupted,
            "run did not finish within {limit:?}"
        );
        let probe = match during {
            Some(f) => Some(
                tokio::task::spawn_blocking(move || f(addr))
                    .await
                    .expect("probe"),
            ),
            None => None,
        };
        let snapshot = sys.snapshot().await.expect("snapshot");
        sys.stop().await;
        stop_tx.send_replace(true);
        Finished {
            end,
            snapshot,
            restarts: sys
                .agent_restarts
                .load(std::sync::atomic::Ordering::Relaxed),
            run_dir: sys.run_dir.clone(),
            probe,
        }
    })
}

/// `run_with` without a probe and a 60 s limit.
pub fn run(cfg: Config, data_dir: &Path) -> Finished {
    run_with(cfg, data_dir, Duration::from_secs(60), None)
}

/// The summary row of `task` (`workflow/task`).
pub fn task<'a>(s: &'a RunSnapshot, key: &str) -> &'a agentos_actors::protocol::TaskSummary {
    s.tasks
        .iter()
        .find(|t| t.task == key)
        .unwrap_or_else(|| panic!("no task {key}"))
}

/// A blocking HTTP/1.1 request; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `probe` (every 50 ms) until it answers `Some`, and returns that; fails the test,
/// naming `what`, when `within` has passed.
pub fn wait_until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process of the test whose output goes to files (so a killed child never blocks a
/// pipe). Killed (SIGKILL, by its pid) and reaped when dropped, if it is still running.
pub struct Proc {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
    status: Option<std::process::ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr in `dir/<name>.out` and `dir/<name>.err`.
    pub fn spawn(mut cmd: std::process::Command, dir: &Path, name: &str) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let file = |p: &Path| std::fs::File::create(p).expect("output file");
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            child,
            out,
            err,
            status: None,
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits at most `limit` for it to exit by itself.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        holds_within(limit, || self.exited().is_some());
        self.exited()
    }

    /// Sends SIGKILL (unless it has exited) and reaps it. True if the kill found it running.
    pub fn kill(&mut self) -> bool {
        if self.exited().is_some() {
            return false;
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        true
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished child printed, read through pipes (so it works for a child that may not
/// write files, such as one under a file-size limit).
pub struct Output {
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end, at most `limit`: past it the child is killed (by its pid) and the
/// test fails, naming `what`.
pub fn output_within(mut cmd: std::process::Command, limit: Duration, what: &str) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let mut status = None;
    let ended = holds_within(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(
        ended,
        "{what} did not end within {limit:?}; stderr:\n{stderr}"
    );
    Output {
        code: status.and_then(|s| s.code()),
        stdout,
        stderr,
    }
}
