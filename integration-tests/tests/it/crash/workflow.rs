//! The crash harness's workflow: a DAG of 22 tasks whose side effects are all visible from
//! outside the process, written as a config into a temporary folder.
//!
//! ```text
//!   w01 .. w08 ──> m1 ─┐
//!   w09 .. w16 ──> m2 ─┤
//!   announce ──> listen┼──> final
//!   rescued ───────────┘
//! ```
//!
//! - Every `wNN`, `m1`, `m2`, `final` and `rescued` task writes its own file
//!   (`files/<task>.txt`, known content) with `write_file` (idempotent), then appends the line
//!   `ran <task>` to the shared `log.txt` with `run_command` (at most once) running
//!   `agentos-it append-line`, then answers. Each task has its own agent, because simulator
//!   scripts belong to agents, not tasks.
//! - `announce` sends a bus message to `listener` (`send_message`, at most once); `listen`
//!   reads it (`read_messages`) and quotes it in its answer.
//! - Retries: `w03`'s first attempt fails with an injected error after its file is written,
//!   `w11`'s first attempt panics in its first step (a supervisor restart).
//! - Fallback: `rescued` starts on `flaky`, whose two attempts both fail (the second after
//!   writing the file), and moves to `rescue`, which finishes it.
//!
//! No forced fault lies after a `run_command` step, so on a run without crashes every
//! `ran <task>` line is written exactly once.
//!
//! Every LLM call takes 200 ms on the simulator and at most 3 tasks run at once, so a run
//! without crashes lasts about 3 s: long enough for kills to land mid-run.

use std::path::{Path, PathBuf};

use crate::helpers::agentos_bin;

/// Modelled latency of one LLM call, milliseconds.
pub const CALL_MS: u64 = 200;

/// The message `announce` sends to `listener`.
pub const MESSAGE: &str = "hello from announce";

/// Workflow name: every task is `crash/<id>`.
pub const WORKFLOW: &str = "crash";

/// The tasks that write a file and log a line, in DAG order.
pub fn writers() -> Vec<String> {
    let mut ids: Vec<String> = (1..=16).map(|i| format!("w{i:02}")).collect();
    ids.extend(["m1", "m2", "rescued", "final"].map(String::from));
    ids
}

/// Every task id of the workflow.
pub fn tasks() -> Vec<String> {
    let mut ids = writers();
    ids.extend(["announce", "listen"].map(String::from));
    ids
}

/// The content `write_file` leaves in `files/<task>.txt`.
pub fn content(task: &str) -> String {
    format!("final content of {task}")
}

/// The line `run_command` appends to `log.txt` for `task`.
pub fn log_line(task: &str) -> String {
    format!("ran {task}")
}

/// A workflow set up in a temporary folder: `crash.ron`, its workspace `ws/` and the data
/// directory `data/`.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// Writes the config (`runtime.durability: sync`) and creates the empty workspace.
    pub fn new() -> Setup {
        Self::with_durability("sync")
    }

    /// The same under `runtime.durability: mode`.
    pub fn with_durability(mode: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("ws")).expect("workspace");
        let text = config_text().replace(
            "sandbox: off,",
            &format!("sandbox: off,\n        durability: {mode},"),
        );
        std::fs::write(dir.path().join("crash.ron"), text).expect("config");
        Setup { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("crash.ron")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// The shared log's lines (empty when it does not exist yet).
    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.workspace().join("log.txt"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Files whose content is not what `write_file` wrote last, with what they hold.
    pub fn wrong_files(&self) -> Vec<String> {
        writers()
            .iter()
            .filter_map(|t| {
                let path = self.workspace().join("files").join(format!("{t}.txt"));
                match std::fs::read_to_string(&path) {
                    Ok(text) if text == content(t) => None,
                    Ok(text) => Some(format!("{}: holds {text:?}", path.display())),
                    Err(e) => Some(format!("{}: {e}", path.display())),
                }
            })
            .collect()
    }

    /// Log lines that appear more than once (with their count), and lines no task writes.
    pub fn bad_log_lines(&self) -> (Vec<String>, Vec<String>) {
        let expected: Vec<String> = writers().iter().map(|t| log_line(t)).collect();
        let lines = self.log_lines();
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for l in &lines {
            *counts.entry(l.as_str()).or_default() += 1;
        }
        let dupes = counts
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(l, n)| format!("{l:?} ×{n}"))
            .collect();
        let unknown = lines
            .iter()
            .filter(|l| !expected.contains(l))
            .cloned()
            .collect();
        (dupes, unknown)
    }
}

/// The RON config (paths relative to its own folder: the workspace is `ws`).
pub fn config_text() -> String {
    let bin = agentos_bin();
    let mut agents = String::new();
    let mut tasks = String::new();
    let writer_deps = |id: &str| -> Vec<String> {
        match id {
            "m1" => (1..=8).map(|i| format!("w{i:02}")).collect(),
            "m2" => (9..=16).map(|i| format!("w{i:02}")).collect(),
            "final" => ["m1", "m2", "listen", "rescued"].map(String::from).to_vec(),
            _ => Vec::new(),
        }
    };
    for id in writers() {
        let (agent, faults) = match id.as_str() {
            "w03" => (id.clone(), "(attempt: 1, step: 1, kind: Error)"),
            "w11" => (id.clone(), "(attempt: 1, step: 0, kind: Panic)"),
            "rescued" => ("flaky".to_owned(), ""),
            _ => (id.clone(), ""),
        };
        if id == "rescued" {
            // Both attempts on `flaky` fail before its command runs; `rescue` takes over.
            agents.push_str(&writer_agent(
                "flaky",
                &id,
                &bin,
                "(attempt: 1, step: 0, kind: Error), (attempt: 2, step: 1, kind: Error)",
                r#"retry: (max_attempts: 2, initial_backoff_ms: 20, max_backoff_ms: 100), fallback: "rescue","#,
            ));
            agents.push_str(&writer_agent("rescue", &id, &bin, "", ""));
        } else {
            agents.push_str(&writer_agent(
                &agent,
                &id,
                &bin,
                faults,
                "retry: (max_attempts: 3, initial_backoff_ms: 20, max_backoff_ms: 100),",
            ));
        }
        tasks.push_str(&task(&id, &agent, &writer_deps(&id)));
    }
    agents.push_str(&format!(
        r##"(name: "announcer", role: "You tell the listener something.", backend: "sim",
            tools: ["send_message"],
            sim: (script: [
                Call(tool: "send_message", args: r#"{{"to": "listener", "body": "{MESSAGE}"}}"#),
                Answer("announced: {{{{last_tool_result}}}}"),
            ])),
        (name: "listener", role: "You read your inbox.", backend: "sim",
            tools: ["read_messages"],
            sim: (script: [
                Call(tool: "read_messages", args: "{{}}"),
                Answer("inbox: {{{{last_tool_result}}}}"),
            ])),
"##
    ));
    tasks.push_str(&task("announce", "announcer", &[]));
    tasks.push_str(&task("listen", "listener", &["announce".to_owned()]));
    format!(
        r#"// Generated by the crash harness (integration-tests/tests/it/crash/workflow.rs).
(
    version: 1,
    runtime: (
        max_concurrency: 3,
        sandbox: off,
        supervisor: (max_restarts: 50, within_secs: 10, backoff_initial_ms: 5, backoff_max_ms: 50),
    ),
    backends: [
        (name: "sim", kind: Sim((seed: 7, latency: (base_ms: {CALL_MS}, per_prompt_token_us: 0, per_output_token_ms: 0)))),
    ],
    agents: [
{agents}    ],
    workflows: [(name: "{WORKFLOW}", tasks: [
{tasks}    ])],
)
"#
    )
}

/// An agent that writes `files/<task>.txt`, logs `ran <task>`, and answers.
fn writer_agent(name: &str, task: &str, bin: &Path, faults: &str, extra: &str) -> String {
    let bin = bin.display();
    let content = content(task);
    let line = log_line(task);
    format!(
        r##"(name: "{name}", role: "You write one file and log that you did.", backend: "sim",
            tools: ["write_file", "run_command"], workspace: (root: "ws"),
            commands: [["{bin}", "append-line"]], {extra}
            sim: (script: [
                Call(tool: "write_file", args: r#"{{"path": "files/{task}.txt", "content": "{content}"}}"#),
                Call(tool: "run_command", args: r#"{{"argv": ["{bin}", "append-line", "log.txt", "{line}"]}}"#),
                Answer("{task} done: {{{{last_tool_result}}}}"),
            ], faults: [{faults}])),
"##
    )
}

fn task(id: &str, agent: &str, deps: &[String]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "        (id: \"{id}\", agent: \"{agent}\", input: \"Do your part ({id}).\", depends_on: [{}]),\n",
        deps.join(", ")
    )
}
