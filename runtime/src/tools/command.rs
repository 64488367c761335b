//! `run_command`: an allowlisted argv run as a child process.
//!
//! The sandbox:
//! - **Allowlist.** The argv must start with one of the agent's allowed prefixes, compared element
//!   by element (`["cargo", "test"]` allows `cargo test --lib` but not `cargo publish`). No shell
//!   is involved unless a prefix names one. An empty prefix allows nothing.
//! - **Working directory** is the agent's workspace root; an agent without one cannot run commands.
//! - **Environment** is cleared; only the variables named in [`CommandSettings::env_allow`] are
//!   copied from the runtime's own environment.
//! - **Process group.** The child leads a new process group. When the wall timeout passes, the
//!   whole group gets `SIGKILL`, so background grandchildren die with it. When the child exits on
//!   its own, whatever it left running in its group is killed too: nothing outlives the call.
//!   Dropping the call's future kills the group as well. (A process that leaves the group with
//!   `setsid` escapes this; if it keeps the pipes open, the call runs into its timeout.)
//! - **Output.** stdout and stderr are read concurrently and each is capped at
//!   [`CommandSettings::max_output_bytes`]; reading continues past the cap (discarding) so the
//!   child never blocks on a full pipe. Output is decoded as UTF-8, lossily.
//!
//! A non-zero exit is a normal result, not an error: the model gets the exit code and output.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{CommandSettings, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// How long to wait for a killed child to be reaped before giving up on it (tokio reaps it later).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The `run_command` tool.
///
/// Arguments: `{"argv": [string, ...]}`. Result data: `{"argv", "exit_code" (null if killed by a
/// signal), "signal", "stdout", "stderr", "truncated", "duration_ms"}`.
#[derive(Debug, Clone, Copy)]
pub struct RunCommand;

impl Tool for RunCommand {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "run_command".into(),
            description: "Run an allowed program (no shell) in the workspace and return its exit \
                          code, stdout and stderr."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "argv": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "description": "Program and arguments, e.g. [\"cargo\", \"test\"]."
                    }
                },
                "required": ["argv"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let prepared = prepare(ctx, &args);
        let settings = Arc::clone(&ctx.command);
        Box::pin(async move {
            let (argv, cwd) = prepared?;
            run(&argv, &cwd, &settings).await
        })
    }
}

fn prepare(
    ctx: &ToolContext,
    args: &serde_json::Value,
) -> Result<(Vec<String>, PathBuf), ToolError> {
    let argv = parse_argv(args)?;
    check_allowed(&argv, &ctx.command_allowlist)?;
    let cwd = ctx.workspace.clone().ok_or_else(|| {
        ToolError::CommandRefused("agent has no workspace to run commands in".into())
    })?;
    Ok((argv, cwd))
}

fn parse_argv(args: &serde_json::Value) -> Result<Vec<String>, ToolError> {
    let Some(items) = args.get("argv").and_then(|v| v.as_array()) else {
        return Err(ToolError::InvalidArguments(
            "`argv` (array of strings) is required".into(),
        ));
    };
    let argv = items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| ToolError::InvalidArguments(format!("`argv[{i}]` must be a string")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match argv.first() {
        None => Err(ToolError::InvalidArguments(
            "`argv` must contain at least the program".into(),
        )),
        Some(program) if program.is_empty() => Err(ToolError::InvalidArguments(
            "`argv[0]` (the program) is empty".into(),
        )),
        Some(_) => Ok(argv),
    }
}

/// Ok if `argv` starts with one of the non-empty `allowlist` prefixes, element by element.
pub fn check_allowed(argv: &[String], allowlist: &[Vec<String>]) -> Result<(), ToolError> {
    let allowed = allowlist
        .iter()
        .any(|prefix| !prefix.is_empty() && argv.starts_with(prefix));
    if allowed {
        return Ok(());
    }
    let program = argv.first().map_or("", String::as_str);
    let prefixes: Vec<String> = allowlist
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| format!("`{}`", p.join(" ")))
        .collect();
    Err(ToolError::CommandRefused(if prefixes.is_empty() {
        format!("`{program}` is not allowed: this agent may not run any command")
    } else {
        format!(
            "`{program}` is not allowed with these arguments; allowed prefixes: {}",
            prefixes.join(", ")
        )
    }))
}

/// Kills a process group with `SIGKILL` when dropped, unless disarmed.
struct GroupKiller {
    pgid: Option<Pid>,
}

impl GroupKiller {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (group already empty) is the expected outcome once everything has exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `reader` to the end, keeping the first `cap` bytes and discarding the rest.
async fn read_capped<R: AsyncRead + Unpin>(
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

async fn run(
    argv: &[String],
    cwd: &Path,
    settings: &CommandSettings,
) -> Result<ToolOutput, ToolError> {
    let Some((program, rest)) = argv.split_first() else {
        return Err(ToolError::InvalidArguments(
            "`argv` must contain at least the program".into(),
        ));
    };
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest)
        .current_dir(cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in &settings.env_allow {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ToolError::Failed(format!("cannot start `{program}`: {e}")))?;
    // Declared after `child`, so on drop the group is killed before the child handle goes.
    let mut group = GroupKiller {
        pgid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let cap = settings.max_output_bytes;

    let finished = tokio::time::timeout(settings.timeout, async {
        tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap), async {
            let status = child.wait().await;
            // The leader is gone; anything it left in its group would keep the pipes open.
            group.kill();
            status
        })
    })
    .await;

    let Ok((out, err, status)) = finished else {
        group.kill();
        // The group is dead; reap the leader so no zombie is left (bounded, just in case).
        let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
        group.disarm();
        tracing::debug!(program = %program, timeout = ?settings.timeout, "command timed out");
        return Err(ToolError::Timeout(settings.timeout));
    };
    group.disarm();
    let failed = |e: std::io::Error| ToolError::Failed(format!("running `{program}`: {e}"));
    let status = status.map_err(failed)?;
    let (stdout, out_cut) = out.map_err(failed)?;
    let (stderr, err_cut) = err.map_err(failed)?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(render(
        argv,
        status,
        &stdout,
        &stderr,
        out_cut || err_cut,
        cap,
        duration_ms,
    ))
}

fn render(
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::tools::test_support::context;

    fn command_ctx(workspace: &Path, allow: &[&[&str]], settings: CommandSettings) -> ToolContext {
        let mut ctx = context(Some(workspace.to_path_buf()));
        ctx.command_allowlist = Arc::new(
            allow
                .iter()
                .map(|p| p.iter().map(|s| s.to_string()).collect())
                .collect(),
        );
        ctx.command = Arc::new(settings);
        ctx
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// True once `pid` no longer runs (gone, or a zombie nobody has reaped yet).
    fn dead(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    async fn wait_dead(pid: i32) -> bool {
        assert!(Path::new("/proc/self/stat").exists(), "needs /proc");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Waits until `path` holds a full line of pids, then returns them.
    async fn wait_pids(path: &Path) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(path) {
                if text.ends_with('\n') {
                    return text
                        .split_whitespace()
                        .map(|p| p.parse().unwrap())
                        .collect();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no pid file at {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn allowed_command_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(dir.path(), &[&["echo"]], CommandSettings::default());
        let out = RunCommand
            .call(&ctx, json!({"argv": ["echo", "hi"]}))
            .await
            .unwrap();
        assert_eq!(out.data["exit_code"], 0);
        assert_eq!(out.data["stdout"], "hi\n");
        assert_eq!(out.data["stderr"], "");
        assert_eq!(out.data["truncated"], false);
        assert_eq!(
            out.content,
            "exit code 0\n--- stdout ---\nhi\n--- stderr ---\n"
        );
    }

    #[tokio::test]
    async fn nonzero_exit_is_a_result() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(dir.path(), &[&["sh", "-c"]], CommandSettings::default());
        let out = RunCommand
            .call(
                &ctx,
                json!({"argv": ["sh", "-c", "echo out; echo err >&2; pwd; exit 3"]}),
            )
            .await
            .unwrap();
        assert_eq!(out.data["exit_code"], 3);
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(out.data["stdout"], format!("out\n{}\n", cwd.display()));
        assert_eq!(out.data["stderr"], "err\n");
        assert!(out
            .content
            .starts_with("exit code 3\n--- stdout ---\nout\n"));
        assert!(out.content.ends_with("--- stderr ---\nerr\n"));
    }

    #[tokio::test]
    async fn refused_commands() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(
            dir.path(),
            &[&["echo"], &["cargo", "test"]],
            CommandSettings::default(),
        );
        let e = RunCommand
            .call(&ctx, json!({"argv": ["rm", "-rf", "x"]}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::CommandRefused(
                "`rm` is not allowed with these arguments; allowed prefixes: `echo`, `cargo test`"
                    .into()
            )
        );
        let e = RunCommand
            .call(&ctx, json!({"argv": ["cargo", "publish"]}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::CommandRefused(m) if m.starts_with("`cargo`")));
        assert!(check_allowed(&argv(&["cargo"]), &ctx.command_allowlist).is_err());
        assert!(check_allowed(&argv(&["cargo", "test", "--lib"]), &ctx.command_allowlist).is_ok());
        assert!(check_allowed(&argv(&["echo"]), &[vec![]]).is_err());

        let none = command_ctx(dir.path(), &[], CommandSettings::default());
        let e = RunCommand
            .call(&none, json!({"argv": ["echo"]}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::CommandRefused(
                "`echo` is not allowed: this agent may not run any command".into()
            )
        );
        let mut no_ws = ctx.clone();
        no_ws.workspace = None;
        let e = RunCommand
            .call(&no_ws, json!({"argv": ["echo"]}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::CommandRefused(m) if m.contains("no workspace")));
    }

    #[tokio::test]
    async fn bad_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(dir.path(), &[&["echo"]], CommandSettings::default());
        for (args, msg) in [
            (json!({}), "`argv` (array of strings) is required"),
            (
                json!({"argv": "echo hi"}),
                "`argv` (array of strings) is required",
            ),
            (
                json!({"argv": []}),
                "`argv` must contain at least the program",
            ),
            (json!({"argv": ["echo", 1]}), "`argv[1]` must be a string"),
            (json!({"argv": [""]}), "`argv[0]` (the program) is empty"),
        ] {
            let e = RunCommand.call(&ctx, args).await.unwrap_err();
            assert_eq!(e, ToolError::InvalidArguments(msg.into()));
        }
    }

    #[tokio::test]
    async fn missing_program_fails_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(
            dir.path(),
            &[&["agentos-no-such-program"]],
            CommandSettings::default(),
        );
        let e = RunCommand
            .call(&ctx, json!({"argv": ["agentos-no-such-program"]}))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ToolError::Failed(m) if m.starts_with("cannot start `agentos-no-such-program`: ")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn output_is_capped_without_blocking_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CommandSettings {
            max_output_bytes: 1000,
            timeout: Duration::from_secs(20),
            ..CommandSettings::default()
        };
        let ctx = command_ctx(dir.path(), &[&["head"]], settings);
        // 1 MB is far more than a pipe buffer: the child would block if we stopped reading.
        let out = RunCommand
            .call(
                &ctx,
                json!({"argv": ["head", "-c", "1000000", "/dev/zero"]}),
            )
            .await
            .unwrap();
        assert_eq!(out.data["exit_code"], 0);
        assert_eq!(out.data["stdout"].as_str().unwrap().len(), 1000);
        assert_eq!(out.data["truncated"], true);
        assert!(out
            .content
            .ends_with("(output cut at 1000 bytes per stream)"));
    }

    #[tokio::test]
    async fn timeout_kills_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CommandSettings {
            timeout: Duration::from_millis(300),
            ..CommandSettings::default()
        };
        let ctx = command_ctx(dir.path(), &[&["sleep"]], settings);
        let started = Instant::now();
        let e = RunCommand
            .call(&ctx, json!({"argv": ["sleep", "30"]}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::Timeout(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn timeout_kills_background_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CommandSettings {
            timeout: Duration::from_millis(1500),
            ..CommandSettings::default()
        };
        let ctx = command_ctx(dir.path(), &[&["sh", "-c"]], settings);
        let started = Instant::now();
        let e = RunCommand
            .call(
                &ctx,
                json!({"argv": ["sh", "-c", "sleep 30 & echo $$ $! > pids; wait"]}),
            )
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::Timeout(Duration::from_millis(1500)));
        assert!(started.elapsed() < Duration::from_secs(6));
        for pid in wait_pids(&dir.path().join("pids")).await {
            assert!(wait_dead(pid).await, "pid {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn leftover_background_processes_are_killed_at_exit() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(dir.path(), &[&["sh", "-c"]], CommandSettings::default());
        let started = Instant::now();
        let out = RunCommand
            .call(
                &ctx,
                json!({"argv": ["sh", "-c", "sleep 30 & echo $! > pids; echo done"]}),
            )
            .await
            .unwrap();
        assert_eq!(out.data["stdout"], "done\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        for pid in wait_pids(&dir.path().join("pids")).await {
            assert!(wait_dead(pid).await, "pid {pid} outlived the command");
        }
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = command_ctx(dir.path(), &[&["sh", "-c"]], CommandSettings::default());
        let mut call = RunCommand.call(
            &ctx,
            json!({"argv": ["sh", "-c", "sleep 30 & echo $$ $! > pids; wait"]}),
        );
        let pids_file = dir.path().join("pids");
        let pids = tokio::select! {
            r = &mut call => panic!("command finished early: {r:?}"),
            pids = wait_pids(&pids_file) => pids,
        };
        drop(call);
        assert_eq!(pids.len(), 2);
        for pid in pids {
            assert!(wait_dead(pid).await, "pid {pid} survived the drop");
        }
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CommandSettings {
            env_allow: vec!["PATH".into(), "AGENTOS_SURELY_UNSET_VAR".into()],
            ..CommandSettings::default()
        };
        let ctx = command_ctx(dir.path(), &[&["env"]], settings);
        let out = RunCommand
            .call(&ctx, json!({"argv": ["env"]}))
            .await
            .unwrap();
        let stdout = out.data["stdout"].as_str().unwrap();
        let names: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        let expected: Vec<&str> = if std::env::var_os("PATH").is_some() {
            vec!["PATH"]
        } else {
            vec![]
        };
        assert_eq!(names, expected, "env printed: {stdout}");
    }

    #[test]
    fn spec_requires_argv() {
        assert_eq!(RunCommand.spec().parameters["required"], json!(["argv"]));
    }
}
