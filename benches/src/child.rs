//! Running each variant in its own child process, so that peak RSS and CPU time belong to
//! that variant alone. The runner re-invokes its own executable with the hidden `__variant`
//! subcommand; the child runs one [`VariantSpec`] and prints one [`Sample`] as JSON.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::measure::Sample;
use crate::workload::{run_agentos, run_direct, Workload};

/// Which implementation runs the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// AgentOS: the actor system booted from a generated config.
    Agentos,
    /// Plain tokio tasks calling the backend and tools directly.
    TokioDirect,
    /// One task after another, calling the backend and tools directly.
    Sequential,
}

/// What a child runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSpec {
    /// The implementation.
    pub runner: Runner,
    /// The workload.
    pub workload: Workload,
}

/// Child side: runs `spec_json` and returns the sample.
pub fn run_in_child(spec_json: &str) -> anyhow::Result<Sample> {
    let spec: VariantSpec = serde_json::from_str(spec_json).context("variant spec")?;
    match spec.runner {
        Runner::Agentos => run_agentos(&spec.workload),
        Runner::TokioDirect => run_direct(&spec.workload, false),
        Runner::Sequential => run_direct(&spec.workload, true),
    }
}

/// Parent side: runs `spec` in a child of `exe`, at most `limit`.
pub fn run_variant(exe: &Path, spec: &VariantSpec, limit: Duration) -> anyhow::Result<Sample> {
    let json = serde_json::to_string(spec)?;
    let mut cmd = Command::new(exe);
    cmd.arg("__variant").arg(json);
    run_sample(cmd, limit)
}

/// Runs `cmd`, which must print a [`Sample`] as JSON on its last stdout line, at most `limit`;
/// past it the child is killed.
pub fn run_sample(cmd: Command, limit: Duration) -> anyhow::Result<Sample> {
    run_json(cmd, limit)
}

/// Runs `cmd`, which must print a `T` as JSON on its last stdout line, at most `limit`; past
/// it the child is killed.
pub fn run_json<T: DeserializeOwned>(mut cmd: Command, limit: Duration) -> anyhow::Result<T> {
    let what = format!("{cmd:?}");
    let what: String = what.chars().take(200).collect();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut stderr = child.stderr.take().context("child stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what} ran past {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let tail: String = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        anyhow::bail!("{what} failed ({status}):\n{tail}");
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("{what} printed no sample: {stdout}"))
}
