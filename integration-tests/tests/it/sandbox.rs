//! The command sandbox end to end: the built `agentos` binary is the launcher, every command a
//! real child process. Each escape the sandbox exists for (reading secrets, writing outside the
//! workspace, the network, a fork bomb, memory, CPU and file-size hogs) is denied and reported
//! to the model; honest work (the demo's test suite) still runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_runtime::sandbox::{self, AgentSandbox, Sandbox, SandboxLimits, SandboxMode};
use agentos_runtime::tools::{
    CommandSettings, FileSettings, ToolContext, ToolError, ToolOutput, ToolRegistry,
};
use serde_json::{json, Value};

use crate::helpers::{agentos_bin, holds_within, repo, use_built_launcher};

/// A workspace, a private temp directory and a context whose `run_command` is sandboxed.
struct Confined {
    ws: tempfile::TempDir,
    _tmp: tempfile::TempDir,
    ctx: ToolContext,
}

impl Confined {
    fn new(spec: AgentSandbox, timeout: Duration) -> Confined {
        use_built_launcher();
        let status = sandbox::status();
        assert!(
            status.missing().is_empty(),
            "this machine must offer every sandbox feature: {:?}",
            status.missing()
        );
        let ws = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = ws.path().canonicalize().unwrap();
        let sandbox = Sandbox::new(
            "prober",
            SandboxMode::Required,
            &spec,
            &root,
            tmp.path(),
            status,
        )
        .expect("sandbox")
        .expect("not off");
        let ctx = ToolContext {
            agent: "prober".into(),
            task: "wf/probe".into(),
            workspace: Some(root),
            command_allowlist: Arc::new(vec![vec!["python3".into()]]),
            command: Arc::new(CommandSettings {
                timeout,
                ..CommandSettings::default()
            }),
            files: Arc::new(FileSettings::default()),
            bus: None,
            spawner: None,
            sandbox: Some(Arc::new(sandbox)),
            call: None,
        };
        Confined { ws, _tmp: tmp, ctx }
    }

    fn default_limits() -> Confined {
        Confined::new(AgentSandbox::default(), Duration::from_secs(20))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.ws.path().join(name)
    }

    fn run(&self, argv: &[&str]) -> Result<ToolOutput, ToolError> {
        let registry = ToolRegistry::builtin();
        let tool = registry.get("run_command").expect("run_command");
        let call = tool.call(&self.ctx, json!({ "argv": argv }));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(call)
    }

    /// Writes `script` as `name` in the workspace and runs it with python3.
    fn python(&self, name: &str, script: &str) -> Result<ToolOutput, ToolError> {
        std::fs::write(self.path(name), script).unwrap();
        self.run(&["python3", name])
    }
}

/// The message of a sandbox denial; panics on anything else.
fn denied(result: Result<ToolOutput, ToolError>) -> String {
    match result {
        Err(ToolError::SandboxDenied(message)) => message,
        other => panic!("expected a sandbox denial, got {other:#?}"),
    }
}

fn limits(f: impl FnOnce(&mut SandboxLimits)) -> AgentSandbox {
    let mut spec = AgentSandbox::default();
    f(&mut spec.limits);
    spec
}

#[test]
fn secrets_and_the_home_directory_are_unreadable() {
    let c = Confined::default_limits();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_dir() && !h.starts_with(std::env::temp_dir()))
        .unwrap_or_else(|| PathBuf::from("/root"));
    let secret = tempfile::Builder::new()
        .prefix(".agentos-sandbox-probe")
        .tempfile_in(&home)
        .unwrap();
    std::fs::write(secret.path(), "token=hunter2\n").unwrap();
    let msg = denied(c.python("read_passwd.py", "print(open('/etc/passwd').read())\n"));
    assert!(
        msg.starts_with("permission denied by the sandbox: `/etc/passwd` is outside the workspace"),
        "{msg}"
    );
    assert!(!msg.contains("root:x:0:0"), "{msg}");
    let script = format!(
        "print(open({:?}).read())\n",
        secret.path().display().to_string()
    );
    let msg = denied(c.python("read_home.py", &script));
    assert!(
        msg.contains(&format!("`{}`", secret.path().display())),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
    let listing = format!(
        "import os\nprint(os.listdir({:?}))\n",
        home.display().to_string()
    );
    let msg = denied(c.python("list_home.py", &listing));
    assert!(msg.contains("permission denied by the sandbox"), "{msg}");
}

#[test]
fn etc_becomes_readable_when_granted() {
    let spec = AgentSandbox {
        read_paths: vec![PathBuf::from("/etc")],
        ..AgentSandbox::default()
    };
    let c = Confined::new(spec, Duration::from_secs(20));
    let out = c
        .python(
            "read_passwd.py",
            "print(open('/etc/passwd').read().split(':')[0])\n",
        )
        .unwrap();
    assert_eq!(out.data["exit_code"], 0, "{out:#?}");
    assert_eq!(out.data["stdout"], "root\n");
    assert_eq!(out.data["sandbox"]["read_paths"], json!(["/etc"]));
}

#[test]
fn writes_land_only_in_the_workspace_and_tmpdir() {
    let c = Confined::default_limits();
    let outside =
        std::env::temp_dir().join(format!("agentos-sandbox-escape-{}", std::process::id()));
    let script = format!(
        "import os\nopen('inside.txt', 'w').write('ok')\n\
         open(os.path.join(os.environ['TMPDIR'], 'scratch'), 'w').write('ok')\n\
         os.mkdir({:?})\n",
        outside.display().to_string()
    );
    let msg = denied(c.python("escape.py", &script));
    assert!(
        msg.starts_with(&format!(
            "permission denied by the sandbox: write outside the workspace (`{}`)",
            outside.display()
        )),
        "{msg}"
    );
    assert!(
        !outside.exists(),
        "the sandbox let {} be created",
        outside.display()
    );
    assert_eq!(std::fs::read_to_string(c.path("inside.txt")).unwrap(), "ok");
}

#[test]
fn the_network_is_off_unless_granted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')\n"
    );
    let c = Confined::default_limits();
    let msg = denied(c.python("connect.py", &script));
    assert!(
        msg.starts_with("network is disabled for this agent"),
        "{msg}"
    );
    assert!(
        listener.accept().is_err(),
        "a confined command reached the host's loopback"
    );

    let open = Confined::new(
        AgentSandbox {
            network: true,
            ..AgentSandbox::default()
        },
        Duration::from_secs(20),
    );
    let out = open.python("connect.py", &script).unwrap();
    assert_eq!(out.data["stdout"], "connected\n", "{out:#?}");
    assert!(holds_within(Duration::from_secs(5), || listener
        .accept()
        .is_ok()));
}

/// True while a live (not zombie) process runs `script` with `ws` as its working directory.
fn running_in(ws: &Path, script: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let dir = e.path();
        let live = std::fs::read_to_string(dir.join("stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        let runs_script = std::fs::read(dir.join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == script.as_bytes()));
        live && runs_script && std::fs::read_link(dir.join("cwd")).is_ok_and(|cwd| cwd == ws)
    })
}

#[test]
fn a_fork_bomb_hits_the_process_limit_and_leaves_nothing_behind() {
    let c = Confined::new(limits(|l| l.max_processes = 16), Duration::from_secs(20));
    // Every child forks too, until the kernel refuses; each then lingers a moment.
    let script = "import os, sys, time\n\
        children = 0\n\
        while True:\n\
        \x20   try:\n\
        \x20       pid = os.fork()\n\
        \x20   except OSError as e:\n\
        \x20       print(f'fork refused after {children} children: {e}', file=sys.stderr, flush=True)\n\
        \x20       break\n\
        \x20   if pid == 0:\n\
        \x20       children = 0\n\
        \x20       continue\n\
        \x20   children += 1\n\
        time.sleep(0.5)\n\
        sys.exit(1)\n";
    let started = Instant::now();
    let msg = denied(c.python("forkbomb.py", script));
    assert!(
        msg.starts_with("process limit reached: the command may run at most 16 processes"),
        "{msg}"
    );
    assert!(msg.contains("fork refused after"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let ws = c.ws.path().canonicalize().unwrap();
    assert!(
        holds_within(Duration::from_secs(5), || !running_in(&ws, "forkbomb.py")),
        "fork bomb processes outlived the command"
    );
}

#[test]
fn a_process_that_leaves_the_group_dies_with_the_command_cgroup_as_root() {
    let c = Confined::default_limits();
    let script = "import os, sys, time\n\
        if os.fork() == 0:\n\
        \x20   os.setsid()\n\
        \x20   null = os.open('/dev/null', os.O_RDWR)\n\
        \x20   for fd in (0, 1, 2):\n\
        \x20       os.dup2(null, fd)\n\
        \x20   open('escaped.tmp', 'w').write(str(os.getpid()))\n\
        \x20   os.rename('escaped.tmp', 'escaped')\n\
        \x20   time.sleep(30)\n\
        \x20   os._exit(0)\n\
        while not os.path.exists('escaped'):\n\
        \x20   time.sleep(0.01)\n";
    let out = c.python("escape_group.py", script).unwrap();
    assert_eq!(out.data["exit_code"], 0, "{out:#?}");
    let pid: i32 = std::fs::read_to_string(c.path("escaped"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    };
    if sandbox::status().root {
        // As root every command has its own pids cgroup, emptied when the command ends.
        assert!(
            holds_within(Duration::from_secs(5), || !alive()),
            "pid {pid} left the process group and survived"
        );
    } else {
        // As a normal user the process group is the boundary, and `setsid` leaves it: the
        // documented limit. Clean up what the test started.
        assert!(alive(), "expected pid {pid} to survive outside a cgroup");
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

#[test]
fn a_memory_hog_hits_the_address_space_limit() {
    let c = Confined::new(
        limits(|l| l.max_memory_bytes = 256 << 20),
        Duration::from_secs(20),
    );
    let msg = denied(c.python("hog.py", "block = bytearray(1 << 30)\nprint(len(block))\n"));
    assert!(
        msg.starts_with("memory limit reached: each process may map at most 268435456 bytes"),
        "{msg}"
    );
    assert!(msg.contains("MemoryError"), "{msg}");
}

#[test]
fn a_cpu_spin_is_stopped_by_the_cpu_limit_before_the_wall_timeout() {
    let c = Confined::new(limits(|l| l.max_cpu_secs = 1), Duration::from_secs(20));
    let started = Instant::now();
    let msg = denied(c.python("spin.py", "while True:\n    pass\n"));
    assert!(msg.starts_with("CPU time limit reached"), "{msg}");
    assert!(msg.contains("killed by signal 24"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: the wall timeout, not the CPU limit, stopped it",
        started.elapsed()
    );
}

#[test]
fn a_file_larger_than_the_limit_is_refused() {
    let c = Confined::new(
        limits(|l| l.max_file_bytes = 1 << 20),
        Duration::from_secs(20),
    );
    let msg = denied(c.python(
        "big.py",
        "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (2 << 20))\n",
    ));
    assert!(
        msg.starts_with("file size limit reached: no file may grow past 1048576 bytes"),
        "{msg}"
    );
    let written = std::fs::metadata(c.path("big.bin")).map_or(0, |m| m.len());
    assert!(written <= 1 << 20, "{written} bytes written");
}

fn copy_calc_repo(to: &Path) {
    for entry in std::fs::read_dir(repo().join("examples/calc-repo")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn the_demo_test_suite_still_runs_inside_the_sandbox() {
    let c = Confined::default_limits();
    copy_calc_repo(c.ws.path());
    // The shipped repository has the demo's bug: one failing test, and no sandbox denial.
    let out = c.run(&["python3", "-m", "unittest", "-q"]).unwrap();
    assert_eq!(out.data["exit_code"], 1, "{out:#?}");
    let stderr = out.data["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("Ran 5 tests") && stderr.contains("FAILED (failures=1)"),
        "{stderr}"
    );
    assert!(out.data.get("sandbox_denials").is_none(), "{out:#?}");
    // The result names the policy it ran under (the trace line carries `data`).
    assert_eq!(out.data["sandbox"]["agent"], "prober");
    assert_eq!(out.data["sandbox"]["network"], false);
    assert_eq!(out.data["sandbox"]["max_processes"], 64);
    // With the demo's patch the suite passes.
    let fixed = std::fs::read_to_string(c.path("stats.py"))
        .unwrap()
        .replace(
            "    return ordered[middle]\n",
            "    if len(ordered) % 2 == 0:\n        return (ordered[middle - 1] + ordered[middle]) / 2\n    return ordered[middle]\n",
        );
    std::fs::write(c.path("stats.py"), fixed).unwrap();
    let out = c.run(&["python3", "-m", "unittest", "-q"]).unwrap();
    assert_eq!(out.data["exit_code"], 0, "{out:#?}");
    assert!(
        out.data["stderr"].as_str().unwrap().ends_with("OK\n"),
        "{out:#?}"
    );
}

#[test]
fn a_missing_program_is_a_start_failure() {
    let mut c = Confined::default_limits();
    c.ctx.command_allowlist = Arc::new(vec![vec!["agentos-no-such-program".into()]]);
    let e = c.run(&["agentos-no-such-program"]).unwrap_err();
    assert!(
        matches!(&e, ToolError::Failed(m) if m.starts_with("cannot start `agentos-no-such-program`: ")),
        "{e:?}"
    );
}

/// A config with one agent that runs `python3 job.py` (`script`) once, in `dir`, under
/// `runtime.sandbox: mode` and `agents[].sandbox: sandbox`.
fn one_command_config(dir: &Path, mode: &str, script: &str, sandbox: &str) -> PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("job.py"), script).unwrap();
    let text = format!(
        r##"(
    version: 1,
    runtime: (data_dir: "data", sandbox: {mode}),
    backends: [(name: "sim", kind: Sim((seed: 1)))],
    agents: [(
        name: "runner",
        role: "Runs one job.",
        backend: "sim",
        tools: ["run_command"],
        workspace: (root: "ws"),
        commands: [["python3", "job.py"]],
        sandbox: {sandbox},
        sim: (script: [
            Call(tool: "run_command", args: r#"{{"argv": ["python3", "job.py"]}}"#),
            Answer("job: {{{{last_tool_result}}}}"),
        ]),
    )],
    workflows: [(name: "w", tasks: [(id: "job", agent: "runner", input: "go")])],
)"##
    );
    let path = dir.join("job.ron");
    std::fs::write(&path, text).unwrap();
    path
}

fn agentos(config: &Path, pretend: &str) -> Command {
    let mut cmd = Command::new(agentos_bin());
    cmd.arg("run")
        .arg(config)
        .env("AGENTOS_SANDBOX_PRETEND_MISSING", pretend)
        .env(sandbox::LAUNCHER_ENV, agentos_bin());
    cmd
}

#[test]
fn required_refuses_to_start_without_the_kernel_feature() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_command_config(dir.path(), "required", "print(42)\n", "()");
    let out = agentos(&config, "landlock").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("runtime.sandbox is `required`, but this machine cannot confine commands"),
        "{stderr}"
    );
    assert!(
        stderr.contains("filesystem: Landlock is not available"),
        "{stderr}"
    );
    assert!(stderr.contains("runtime.sandbox: best_effort"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "it started anyway");
    // The same config on the real kernel runs.
    let out = agentos(&config, "").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("job: exit code 0 --- stdout --- 42"),
        "{stdout}"
    );
    assert!(!stdout.contains("sandbox"), "{stdout}");
}

#[test]
fn best_effort_runs_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_command_config(dir.path(), "best_effort", "print(42)\n", "()");
    let out = agentos(&config, "namespaces").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "sandbox (best_effort): not enforced on this machine: network: user and network \
             namespaces are not available (pretended missing"
        ),
        "{stdout}"
    );
    let runs = dir.path().join("data/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("sandbox.json")).unwrap()).unwrap();
    assert_eq!(recorded["mode"], "best_effort");
    let missing: Vec<&str> = recorded["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["feature"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&"network"), "{recorded}");
    assert_eq!(recorded["agents"]["runner"]["network"], false);
    // Files stay confined even so, and the command ran.
    assert!(
        recorded["status"]["landlock_abi"].as_u64().unwrap() > 0,
        "{recorded}"
    );
    assert!(
        stdout.contains("job: exit code 0 --- stdout --- 42"),
        "{stdout}"
    );
}

#[test]
fn off_must_be_written_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_command_config(
        dir.path(),
        "off",
        "print(open('/etc/passwd').read().split(':')[0])\n",
        "()",
    );
    let out = agentos(&config, "").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("WARNING: the sandbox is off (runtime.sandbox: off)"),
        "{stdout}"
    );
    assert!(stdout.contains("--- stdout --- root"), "{stdout}");
}

#[test]
fn the_fork_bomb_is_stopped_for_a_normal_user_too() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = "import os, sys\nn = 0\nwhile True:\n    try:\n        os.fork()\n    except OSError as e:\n        print('refused', e, file=sys.stderr)\n        os._exit(3)\n";
    let config = one_command_config(dir.path(), "required", bomb, "(max_processes: 8)");
    let trace = dir.path().join("trace.jsonl");
    let mut cmd = agentos(&config, "");
    cmd.arg("--trace").arg(&trace);
    if sandbox::status().root {
        // Root is exempt from RLIMIT_NPROC; run as an unprivileged uid, where it is the
        // mechanism (inside the command's own user namespace).
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        for entry in walk(dir.path()) {
            std::os::unix::fs::lchown(&entry, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        cmd.uid(NOBODY).gid(NOBODY).env("HOME", dir.path());
    }
    let out = cmd.output().unwrap();
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    let call = trace
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["event"] == "tool_call")
        .unwrap_or_else(|| {
            panic!(
                "no tool_call in the trace; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let error = call["result"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("process limit reached: the command may run at most 8 processes"),
        "{call}"
    );
    assert!(error.contains("Resource temporarily unavailable"), "{call}");
}

/// `dir` and everything under it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let children: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}

#[test]
fn a_program_outside_the_read_paths_cannot_be_started() {
    let outside = tempfile::tempdir().unwrap();
    let program = outside.path().join("tool.sh");
    std::fs::write(&program, "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = program.display().to_string();
    let mut c = Confined::default_limits();
    c.ctx.command_allowlist = Arc::new(vec![vec![program.clone()]]);
    let e = c.run(&[&program]).unwrap_err();
    assert!(
        matches!(&e, ToolError::Failed(m) if m.starts_with(&format!("cannot start `{program}`: Permission denied"))
            && m.ends_with("the agent's sandbox.read_paths")),
        "{e:?}"
    );
    // Granted as a read path, it runs.
    let mut c = Confined::new(
        AgentSandbox {
            read_paths: vec![outside.path().canonicalize().unwrap()],
            ..AgentSandbox::default()
        },
        Duration::from_secs(20),
    );
    c.ctx.command_allowlist = Arc::new(vec![vec![program.clone()]]);
    let out = c.run(&[&program]).unwrap();
    assert_eq!(out.data["stdout"], "ran\n", "{out:#?}");
}
