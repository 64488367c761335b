//! The built-in tools end to end, through `ToolRegistry::builtin()`, with real files and real
//! child processes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_runtime::tools::{
    CommandSettings, FileSettings, ToolContext, ToolError, ToolOutput, ToolRegistry, BUILTIN_TOOLS,
};
use serde_json::{json, Value};

fn context(workspace: &Path, allowlist: &[&[&str]], timeout: Duration) -> ToolContext {
    ToolContext {
        agent: "worker".into(),
        task: "wf/t1".into(),
        workspace: Some(workspace.canonicalize().expect("workspace exists")),
        command_allowlist: Arc::new(
            allowlist
                .iter()
                .map(|p| p.iter().map(|s| s.to_string()).collect())
                .collect(),
        ),
        command: Arc::new(CommandSettings {
            timeout,
            ..CommandSettings::default()
        }),
        files: Arc::new(FileSettings::default()),
        bus: None,
        spawner: None,
        sandbox: None,
        call: None,
    }
}

async fn call(ctx: &ToolContext, tool: &str, args: Value) -> Result<ToolOutput, ToolError> {
    let registry = ToolRegistry::builtin();
    let tool = registry.get(tool).expect("built-in tool exists");
    tool.call(ctx, args).await
}

/// True once `pid` no longer runs (gone, or a zombie nobody has reaped yet).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Polls until `pid` is dead, for at most five seconds.
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

#[test]
fn registry_has_every_builtin_tool() {
    let registry = ToolRegistry::builtin();
    for name in BUILTIN_TOOLS {
        let tool = registry.get(name).expect("listed tool is registered");
        let spec = tool.spec();
        assert_eq!(spec.name, *name);
        assert_eq!(spec.parameters["type"], "object");
    }
}

#[tokio::test]
async fn path_traversal_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.path().join("secret-link"),
    )
    .unwrap();
    let ctx = context(root.path(), &[], Duration::from_secs(5));

    for (path, why) in [
        ("../secret.txt", "contains `..`"),
        ("a/../../secret.txt", "contains `..`"),
        ("/etc/passwd", "is absolute"),
        ("escape/secret.txt", "resolves outside the workspace"),
        ("secret-link", "resolves outside the workspace"),
        ("escape", "resolves outside the workspace"),
    ] {
        for (tool, args) in [
            ("read_file", json!({"path": path})),
            ("write_file", json!({"path": path, "content": "owned"})),
            ("list_dir", json!({"path": path})),
            ("grep", json!({"pattern": "secret", "path": path})),
        ] {
            let err = call(&ctx, tool, args).await.unwrap_err();
            let shown = err.to_string();
            assert!(
                matches!(err, ToolError::PathRefused(_)),
                "{tool} {path}: {shown}"
            );
            assert!(
                shown.starts_with(&format!("path refused: `{path}`")),
                "{shown}"
            );
            assert!(shown.contains(why), "{tool} {path}: {shown}");
        }
    }
    // A recursive grep of the whole workspace does not follow the symlinks out either.
    let out = call(&ctx, "grep", json!({"pattern": "secret"}))
        .await
        .unwrap();
    assert_eq!(out.data["matches"], json!([]));
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret.txt")).unwrap(),
        "secret"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn command_outside_the_allowlist_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        root.path(),
        &[&["echo"], &["git", "status"]],
        Duration::from_secs(5),
    );
    let err = call(
        &ctx,
        "run_command",
        json!({"argv": ["sh", "-c", "echo pwned > pwned.txt"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "command refused: `sh` is not allowed with these arguments; \
         allowed prefixes: `echo`, `git status`"
    );
    let err = call(&ctx, "run_command", json!({"argv": ["git", "push"]}))
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::CommandRefused(_)));
    assert!(!root.path().join("pwned.txt").exists());
}

#[tokio::test]
async fn hanging_command_is_killed_at_its_timeout() {
    let root = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(1);
    let ctx = context(root.path(), &[&["sh", "-c"]], timeout);
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        call(
            &ctx,
            "run_command",
            json!({"argv": ["sh", "-c", "sleep 60 & echo $$ $! > pids; wait"]}),
        ),
    )
    .await
    .expect("the call returns soon after its own timeout");
    let err = result.unwrap_err();
    assert_eq!(err, ToolError::Timeout(timeout));
    assert_eq!(err.to_string(), "timed out after 1s");
    assert!(started.elapsed() < Duration::from_secs(6));

    // The shell and its background child are both gone.
    let pids = std::fs::read_to_string(root.path().join("pids")).unwrap();
    let pids: Vec<i32> = pids
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(wait_dead(pid).await, "pid {pid} outlived the timeout");
    }
}

#[tokio::test]
async fn allowlisted_command_reports_exit_code_and_output() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(root.path(), &[&["sh", "-c"]], Duration::from_secs(20));
    call(
        &ctx,
        "write_file",
        json!({"path": "notes/today.txt", "content": "ship it\n"}),
    )
    .await
    .unwrap();
    let out = call(
        &ctx,
        "run_command",
        json!({"argv": ["sh", "-c", "cat notes/today.txt; echo oops >&2; exit 7"]}),
    )
    .await
    .unwrap();
    assert_eq!(out.data["exit_code"], 7);
    assert_eq!(out.data["stdout"], "ship it\n");
    assert_eq!(out.data["stderr"], "oops\n");
    assert_eq!(out.data["truncated"], false);
    assert_eq!(
        out.content,
        "exit code 7\n--- stdout ---\nship it\n--- stderr ---\noops\n"
    );
}
