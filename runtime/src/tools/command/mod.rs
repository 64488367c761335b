//! `run_command`: an allowlisted argv run as a child process, confined by the agent's sandbox.
//!
//! - **Allowlist.** The argv must start with one of the agent's allowed prefixes, compared element
//!   by element (`["cargo", "test"]` allows `cargo test --lib` but not `cargo publish`). No shell
//!   is involved unless a prefix names one. An empty prefix allows nothing.
//! - **Sandbox.** With a [`Sandbox`](crate::sandbox::Sandbox) in the context (every mode but
//!   `off`), the child is the `agentos sandbox-exec` launcher, which confines itself (files,
//!   network, processes, resource limits) and then `exec`s the argv; `TMPDIR` is the agent's
//!   private temp directory. A command the sandbox stopped comes back as
//!   [`ToolError::SandboxDenied`], saying what was denied, followed by the command's output.
//!   Successful results carry the policy in `data.sandbox`, so the trace names it.
//! - **Working directory** is the agent's workspace root; an agent without one cannot run commands.
//! - **Environment** is cleared; only the variables named in [`CommandSettings::env_allow`] are
//!   copied from the runtime's own environment.
//! - **Process group.** The child leads a new process group. When the wall timeout passes, the
//!   whole group gets `SIGKILL`, so background grandchildren die with it. When the child exits on
//!   its own, whatever it left running in its group is killed too: nothing outlives the call.
//!   Dropping the call's future kills the group as well. A process that leaves the group with
//!   `setsid` escapes this unless the command has a pids cgroup (as root), whose members are
//!   all killed when the call ends.
//! - **Output.** stdout and stderr are read concurrently and each is capped at
//!   [`CommandSettings::max_output_bytes`]; reading continues past the cap (discarding) so the
//!   child never blocks on a full pipe. Output is decoded as UTF-8, lossily.
//!
//! A non-zero exit is a normal result, not an error: the model gets the exit code and output.

mod output;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::unistd::Pid;
use serde_json::json;

use self::output::{read_capped, render, GroupKiller};
use super::{CommandSettings, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;
use crate::sandbox::{Ending, Sandbox};

/// How long to wait for a killed child to be reaped before giving up on it (tokio reaps it later).
const REAP_GRACE: Duration = Duration::from_secs(5);

/// The `run_command` tool.
///
/// Arguments: `{"argv": [string, ...]}`. Result data: `{"argv", "exit_code" (null if killed by a
/// signal), "signal", "stdout", "stderr", "truncated", "duration_ms"}`.
#[derive(Debug, Clone, Copy)]
pub struct RunCommand;

impl Tool for RunCommand {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::AtMostOnce
    }

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
        let sandbox = ctx.sandbox.clone();
        Box::pin(async move {
            let (argv, cwd) = prepared?;
            run(&argv, &cwd, &settings, sandbox.as_deref()).await
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

/// How long the command's cgroup may take to empty once the command is over.
const CGROUP_PATIENCE: Duration = Duration::from_secs(2);

async fn run(
    argv: &[String],
    cwd: &Path,
    settings: &CommandSettings,
    sandbox: Option<&Sandbox>,
) -> Result<ToolOutput, ToolError> {
    let Some((program, rest)) = argv.split_first() else {
        return Err(ToolError::InvalidArguments(
            "`argv` must contain at least the program".into(),
        ));
    };
    let started = Instant::now();
    let mut launch = match sandbox {
        Some(sandbox) => Some(
            sandbox
                .launch(argv)
                .map_err(|e| ToolError::Failed(format!("cannot sandbox `{program}`: {e}")))?,
        ),
        None => None,
    };
    let mut cmd = match &launch {
        Some(l) => {
            let mut cmd = tokio::process::Command::new(&l.program);
            cmd.args(&l.args);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(rest);
            cmd
        }
    };
    cmd.current_dir(cwd)
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
    if let Some(l) = &launch {
        for (name, value) in &l.env {
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

    let cgroup = launch.as_mut().and_then(|l| l.cgroup.take());
    let finished = tokio::time::timeout(settings.timeout, async {
        tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap), async {
            let status = child.wait().await;
            // The leader is gone; anything it left in its group (or, with a cgroup, anywhere)
            // would keep the pipes open.
            group.kill();
            if let Some(c) = &cgroup {
                c.kill_members();
            }
            status
        })
    })
    .await;

    let Ok((out, err, status)) = finished else {
        group.kill();
        // The group is dead; reap the leader so no zombie is left (bounded, just in case).
        let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
        group.disarm();
        let pids_limit_hit = match cgroup {
            Some(c) => c.finish(CGROUP_PATIENCE).await,
            None => false,
        };
        tracing::debug!(program = %program, timeout = ?settings.timeout, "command timed out");
        if let Some(sandbox) = sandbox.filter(|_| pids_limit_hit) {
            let denials = sandbox.denials(&Ending {
                signal: None,
                output: ["", ""],
                pids_limit_hit,
            });
            let mut message: Vec<String> = denials.into_iter().map(|d| d.message).collect();
            message.push(format!(
                "the command then ran into its {:?} wall timeout and was killed",
                settings.timeout
            ));
            message.push(sandbox.summary_line());
            return Err(ToolError::SandboxDenied(message.join("\n")));
        }
        return Err(ToolError::Timeout(settings.timeout));
    };
    group.disarm();
    let pids_limit_hit = match cgroup {
        Some(c) => c.finish(CGROUP_PATIENCE).await,
        None => false,
    };
    let failed = |e: std::io::Error| ToolError::Failed(format!("running `{program}`: {e}"));
    let status = status.map_err(failed)?;
    let (stdout, out_cut) = out.map_err(failed)?;
    let (stderr, err_cut) = err.map_err(failed)?;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut result = render(
        argv,
        status,
        &stdout,
        &stderr,
        out_cut || err_cut,
        cap,
        duration_ms,
    );
    let Some(sandbox) = sandbox else {
        return Ok(result);
    };
    let text = |data: &serde_json::Value| data.as_str().unwrap_or_default().to_owned();
    let (stdout, stderr) = (text(&result.data["stdout"]), text(&result.data["stderr"]));
    if let Some((setup, message)) = sandbox.launcher_failure(status.code(), &stderr) {
        return Err(ToolError::Failed(if setup {
            format!("the sandbox could not be set up for `{program}`: {message}")
        } else if message.contains("Permission denied") {
            format!(
                "{message}: the sandbox may run only programs under the system paths and the \
                 agent's sandbox.read_paths"
            )
        } else {
            message
        }));
    }
    let denials = sandbox.denials(&Ending {
        signal: status.signal(),
        output: [&stdout, &stderr],
        pids_limit_hit,
    });
    result.data["sandbox"] = sandbox.describe();
    if denials.is_empty() {
        return Ok(result);
    }
    let said: Vec<String> = denials.into_iter().map(|d| d.message).collect();
    result.data["sandbox_denials"] = json!(said);
    if status.success() {
        // It coped; the model still learns what was refused.
        result
            .content
            .push_str(&format!("\n(note: {})", said.join("; ")));
        return Ok(result);
    }
    Err(ToolError::SandboxDenied(format!(
        "{}\n{}\n{}",
        said.join("\n"),
        result.content.trim_end(),
        sandbox.summary_line()
    )))
}

#[cfg(test)]
mod tests;
