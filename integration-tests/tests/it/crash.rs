//! Durable execution under SIGKILL: the crash harness.
//!
//! The workflow of [`workflow`] (22 tasks with real side effects: files, a shared log written
//! by commands, a bus message, retries and a fallback) runs as the real `agentos` binary:
//! `agentos run CFG --data-dir D --json` first, then `... --resume` after every kill. The
//! harness kills it with SIGKILL at 20 seeded-random points, resumes it each time, lets the
//! last resume run to completion, and checks what a user would see:
//!
//! - the final `--json` summary: every task succeeded;
//! - the audit log (`agentos audit --data-dir D --json`): no task succeeded twice, no
//!   journaled LLM call (task, attempt, step) was made twice, no at-most-once tool call
//!   (`run_command`, `send_message`, `publish`) started or ran twice;
//! - the workspace: every file holds its final content, and the shared log has no duplicate
//!   line (a `run_command` that ran twice would have appended its line twice).
//!
//! The kill points come from `AGENTOS_CRASH_SEED` (default [`DEFAULT_SEED`]); every failure
//! message names the seed, so `AGENTOS_CRASH_SEED=<seed> cargo test -p
//! agentos-integration-tests --test it crash` replays the same kill points (the same delays:
//! where in the run they land still depends on the machine's speed).

mod audit;
mod workflow;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{agentos_bin, wait_until, Proc};
use workflow::{Setup, MESSAGE, WORKFLOW};

/// Seed of the kill points when `AGENTOS_CRASH_SEED` is not set.
pub const DEFAULT_SEED: u64 = 20_261_201;

/// Kills per harness run.
const KILLS: usize = 20;

/// How far past the start-up a kill may land, milliseconds. Start-up (loading the config,
/// booting, resuming: about a second in a debug build) is measured on the first start; each
/// later kill is drawn uniformly between half the start-up and the start-up plus this span,
/// so kills land while the process boots or resumes, between steps and mid-call. A run without
/// crashes spends about 2.5 s past its start-up, so 20 kills rarely let it finish early.
const KILL_SPAN_MS: u64 = 600;

/// No kill lands later than this after its process started.
const KILL_MAX_MS: u64 = 3_000;

/// The whole harness, every start, kill and the final run included.
const OVERALL: Duration = Duration::from_secs(90);

/// A clean run, and the final resume.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The kill schedule's seed: `AGENTOS_CRASH_SEED`, or [`DEFAULT_SEED`].
fn seed() -> u64 {
    match std::env::var("AGENTOS_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("AGENTOS_CRASH_SEED must be an integer, got {s:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

/// splitmix64: a tiny seeded generator, so a seed gives the same kill delays everywhere.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Prints how to replay the run if the test fails, whatever assertion fails.
struct Replay(String);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash harness failed; {}", self.0);
        }
    }
}

/// `agentos run CFG --data-dir D --json`, with `--resume` when `resume`.
fn start(setup: &Setup, resume: bool, name: &str) -> Proc {
    let mut cmd = Command::new(agentos_bin());
    cmd.arg("run")
        .arg(setup.config())
        .arg("--data-dir")
        .arg(setup.data_dir())
        .arg("--json");
    if resume {
        cmd.arg("--resume");
    }
    Proc::spawn(cmd, setup.dir.path(), name)
}

/// The tasks of a `run --json` summary that did not succeed, as `task: state (reason)`; panics
/// when stdout is not a summary or lacks one of the workflow's tasks.
fn unsucceeded(stdout: &str, replay: &str) -> Vec<String> {
    let summary: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("`run --json` printed no summary ({e}); {replay}:\n{stdout}"));
    let rows = summary["tasks"].as_array().cloned().unwrap_or_default();
    let mut bad = Vec::new();
    for id in workflow::tasks() {
        let key = format!("{WORKFLOW}/{id}");
        match rows.iter().find(|t| t["task"] == key.as_str()) {
            None => bad.push(format!("{key}: missing from the summary")),
            Some(t) if t["state"] == "succeeded" => {}
            Some(t) => bad.push(format!("{key}: {} ({})", t["state"], t["reason"])),
        }
    }
    bad
}

/// The task `id` of a `run --json` summary.
fn row(stdout: &str, id: &str) -> Value {
    let summary: Value = serde_json::from_str(stdout).expect("a JSON summary");
    let key = format!("{WORKFLOW}/{id}");
    summary["tasks"]
        .as_array()
        .and_then(|rows| rows.iter().find(|t| t["task"] == key.as_str()).cloned())
        .unwrap_or_else(|| panic!("no task {key} in the summary"))
}

/// Without kills, the workflow runs to completion, lasts long enough for kills to land
/// mid-run, and every side effect happens exactly once: the baseline the harness relies on.
#[test]
fn the_crash_workflow_runs_clean_with_every_side_effect_once() {
    let setup = Setup::new();
    let started = Instant::now();
    let mut run = start(&setup, false, "clean");
    let status = run.exit_within(RUN_LIMIT);
    let took = started.elapsed();
    let (out, err) = (run.stdout(), run.stderr());
    assert!(
        status.is_some_and(|s| s.success()),
        "run ended with {status:?}; stderr:\n{err}\nstdout:\n{out}"
    );
    let bad = unsucceeded(&out, "clean run");
    assert!(bad.is_empty(), "tasks that did not succeed: {bad:#?}");
    assert!(
        took >= Duration::from_millis(1500),
        "the run took only {took:?}: too short for kills to land mid-run"
    );
    assert_eq!(setup.wrong_files(), Vec::<String>::new());
    let mut lines = setup.log_lines();
    lines.sort();
    let mut expected: Vec<String> = workflow::writers()
        .iter()
        .map(|t| workflow::log_line(t))
        .collect();
    expected.sort();
    assert_eq!(lines, expected, "every command ran exactly once");

    // Retries and the fallback happened as the faults say.
    let attempts = |id: &str| row(&out, id)["attempts"].as_u64();
    assert_eq!(attempts("w03"), Some(2), "w03 retried after its error");
    assert_eq!(attempts("w11"), Some(2), "w11 retried after its panic");
    assert_eq!(attempts("w01"), Some(1), "{}", row(&out, "w01"));
    let rescued = row(&out, "rescued");
    assert_eq!(rescued["attempts"], 3, "two on flaky, one on rescue");
    assert_eq!(rescued["finished_by"], "rescue#0", "{rescued}");
    // The bus message reached the listener.
    let listen = row(&out, "listen");
    assert!(
        listen["output"].as_str().unwrap_or("").contains(MESSAGE),
        "{listen}"
    );
}

/// 20 SIGKILLs at seeded-random points, a resume after each, then a run to completion: every
/// task succeeds once, nothing journaled is redone, nothing at-most-once runs twice.
#[test]
fn twenty_kills_and_resumes_lose_nothing_and_repeat_nothing() {
    kills_and_resumes("sync", KILLS, "crash::twenty_kills");
}

/// The same under `durability: async`, where the last records of a step may be lost in a
/// crash (and redone on resume): 10 kills.
#[test]
fn under_async_ten_kills_and_resumes_lose_nothing_and_repeat_nothing() {
    kills_and_resumes("async", KILLS / 2, "crash::under_async");
}

/// A run under `durability: exit` that is killed stored none of its progress: `--resume`
/// refuses it with a message saying so (exit 2) instead of starting it over silently.
#[test]
fn an_exit_mode_run_killed_mid_run_is_refused_on_resume() {
    let setup = Setup::with_durability("exit");
    let mut first = start(&setup, false, "exit-first");
    let files = setup.workspace().join("files");
    wait_until(Duration::from_secs(20), "the first write", || {
        (files.exists() || first.exited().is_some()).then_some(())
    });
    assert!(first.kill(), "the run ended before its kill");
    let mut again = start(&setup, true, "exit-resume");
    let status = again.exit_within(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", again.stderr());
    assert!(
        again.stderr().contains("durability: exit") && again.stderr().contains("without --resume"),
        "{}",
        again.stderr()
    );
}

fn kills_and_resumes(durability: &str, kills: usize, test: &str) {
    let seed = seed();
    let replay = format!(
        "replay with AGENTOS_CRASH_SEED={seed} cargo test -p agentos-integration-tests --test it \
         {test}"
    );
    let _replay = Replay(replay.clone());
    let setup = Setup::with_durability(durability);
    let deadline = Instant::now() + OVERALL;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut rng = SplitMix(seed);
    let mut landed = Vec::new();
    let mut finished = None;
    let mut stored_finished = false;
    let mut startup_ms = 0;
    for i in 0..kills {
        let name = format!("segment-{i:02}");
        let spawned = Instant::now();
        let mut proc = start(&setup, i > 0, &name);
        let delay = if i == 0 {
            // The first kill counts from the first side effect, so that the run is recorded
            // in the store and there is something to resume; that is also the start-up.
            let files = setup.workspace().join("files");
            wait_until(
                Duration::from_secs(20).min(left()),
                "the first write",
                || (files.exists() || proc.exited().is_some()).then_some(()),
            );
            startup_ms = spawned.elapsed().as_millis() as u64;
            rng.between(0, KILL_SPAN_MS)
        } else {
            rng.between(startup_ms / 2, startup_ms + KILL_SPAN_MS)
                .min(KILL_MAX_MS)
                .saturating_sub(spawned.elapsed().as_millis() as u64)
        };
        if let Some(status) = proc.exit_within(Duration::from_millis(delay)) {
            if i > 0 && status.code() == Some(2) && proc.stderr().contains("no unfinished run") {
                // The kill before landed after the run was stored as finished (while it
                // printed its summary): nothing is left to resume. The audit log below
                // still has to show every task succeeded exactly once.
                stored_finished = true;
                break;
            }
            // It finished (or failed) by itself before its kill.
            assert!(
                status.success(),
                "{name} (resume: {}) exited with {status} before its kill at {delay} ms; \
                 {replay}\nstderr:\n{}\nstdout:\n{}",
                i > 0,
                proc.stderr(),
                proc.stdout()
            );
            finished = Some(proc);
            break;
        }
        if proc.kill() {
            landed.push(spawned.elapsed().as_millis() as u64);
        }
        assert!(!left().is_zero(), "out of time after {i} kills; {replay}");
    }
    let last = match finished {
        Some(p) => Some(p),
        None if stored_finished => None,
        None => {
            let mut p = start(&setup, true, "final");
            let status = p.exit_within(RUN_LIMIT.min(left()));
            assert!(
                status.is_some_and(|s| s.success()),
                "the final resume ended with {status:?}; {replay}\nstderr:\n{}\nstdout:\n{}",
                p.stderr(),
                p.stdout()
            );
            Some(p)
        }
    };
    assert!(
        landed.len() >= kills / 2,
        "only {} kills landed mid-run (at {landed:?} ms after their start; start-up \
         {startup_ms} ms): the run ended too soon for the harness to mean anything; {replay}",
        landed.len()
    );
    if let Some(last) = &last {
        let bad = unsucceeded(&last.stdout(), &replay);
        assert!(
            bad.is_empty(),
            "after {} kills, tasks that did not succeed: {bad:#?}; {replay}",
            landed.len()
        );
    }
    let wrong = setup.wrong_files();
    assert!(
        wrong.is_empty(),
        "files without their final content: {wrong:#?}; {replay}"
    );
    let (dupes, unknown) = setup.bad_log_lines();
    assert!(
        dupes.is_empty() && unknown.is_empty(),
        "a command ran twice: duplicate log lines {dupes:?}, unexpected lines {unknown:?}; \
         {replay}"
    );

    let entries = audit::read(&setup.data_dir(), &replay);
    let problems = audit::problems(&entries);
    assert!(
        problems.is_empty(),
        "the audit log of {} entries shows repeated work after {} kills:\n{}\n{replay}",
        entries.len(),
        landed.len(),
        problems.join("\n")
    );
}

/// A deterministic crash inside an at-most-once call: the command has appended its line and
/// still runs when the runtime is killed. The resumed attempt does not run it again; the model
/// reads that the call was interrupted by a restart, and the task still completes.
#[test]
fn a_command_cut_off_by_a_crash_is_not_run_again_and_the_model_is_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("ws")).expect("workspace");
    let bin = agentos_bin();
    let bin = bin.display();
    let config = format!(
        r##"(
    version: 1,
    runtime: (sandbox: off),
    tools: (call_timeout_secs: 30),
    backends: [(name: "sim", kind: Sim((latency: (base_ms: 1, per_prompt_token_us: 0, per_output_token_ms: 0))))],
    agents: [(name: "ops", role: "You run one command.", backend: "sim",
        tools: ["run_command"], workspace: (root: "ws"), commands: [["{bin}", "append-line"]],
        sim: (script: [
            Call(tool: "run_command", args: r#"{{"argv": ["{bin}", "append-line", "log.txt", "once", "--then-sleep-ms", "1500"]}}"#),
            Answer("after the command: {{{{last_tool_result}}}}"),
        ]))],
    workflows: [(name: "w", tasks: [(id: "t", agent: "ops", input: "go")])],
)
"##
    );
    let cfg = dir.path().join("cut.ron");
    std::fs::write(&cfg, config).expect("config");
    let data = dir.path().join("data");
    let log = dir.path().join("ws/log.txt");
    let run = |resume: bool, name: &str| {
        let mut cmd = Command::new(agentos_bin());
        cmd.arg("run")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .arg("--json");
        if resume {
            cmd.arg("--resume");
        }
        Proc::spawn(cmd, dir.path(), name)
    };
    let mut first = run(false, "first");
    wait_until(Duration::from_secs(20), "the command's line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("once"))
    });
    assert!(
        first.kill(),
        "the run ended before the kill: {}",
        first.stderr()
    );
    let mut second = run(true, "second");
    let status = second.exit_within(RUN_LIMIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        second.stderr()
    );
    let summary: Value = serde_json::from_str(&second.stdout()).expect("JSON summary");
    let task = summary["tasks"]
        .as_array()
        .and_then(|t| t.first())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(task["state"], "succeeded", "{task}");
    let output = task["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("interrupted by a restart"),
        "the model was told: {output}"
    );
    // The orphaned command only sleeps after its write, and ends by itself.
    let lines = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        ["once"],
        "the command ran once"
    );
}
