//! Unit tests of `run_command` without the sandbox launcher (it lives in the `agentos`
//! binary; `integration-tests/tests/it/sandbox.rs` runs it for real).
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
