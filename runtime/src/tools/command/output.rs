//! The child's output and end: capped reads, the process-group killer, the result text.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::tools::ToolOutput;

/// Kills a process group with `SIGKILL` when dropped, unless disarmed.
pub(super) struct GroupKiller {
    pub(super) pgid: Option<Pid>,
}

impl GroupKiller {
    pub(super) fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already empty) is the expected outcome once everything has exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    pub(super) fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` to the end, keeping the first `cap` bytes and discarding the rest.
pub(super) async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let Some(mut reader) = reader else {
        return Ok((Vec::new(), false));
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = cap.saturating_sub(kept.len());
        if n > room {
            truncated = true;
        }
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

pub(super) fn render(
    argv: &[String],
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
    truncated: bool,
    cap: usize,
    duration_ms: u64,
) -> ToolOutput {
    use std::os::unix::process::ExitStatusExt;

    let stdout = String::from_utf8_lossy(stdout);
    let stderr = String::from_utf8_lossy(stderr);
    let mut content = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "exited".to_owned(),
    };
    content.push_str("\n--- stdout ---\n");
    content.push_str(&stdout);
    if !stdout.is_empty() && !stdout.ends_with('\n') {
        content.push('\n');
    }
    content.push_str("--- stderr ---\n");
    content.push_str(&stderr);
    if truncated {
        if !stderr.is_empty() && !stderr.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(&format!("(output cut at {cap} bytes per stream)"));
    }
    ToolOutput {
        content,
        data: json!({
            "argv": argv,
            "exit_code": status.code(),
            "signal": status.signal(),
            "stdout": stdout,
            "stderr": stderr,
            "truncated": truncated,
            "duration_ms": duration_ms,
        }),
    }
}
