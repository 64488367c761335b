//! Reading `agentos audit --data-dir D --json` and finding repeated work in it.
//!
//! An entry carries its run, `at_ms`, `kind` (`task_state`, `llm_call`, `tool_call`,
//! `tool_started`, `api`, `run_started`, `run_resumed`), agent, instance, task
//! (`workflow/task`), attempt, step and a JSON `detail`. The reader takes a JSON array, an
//! object with an `entries` array, or one JSON object per line, and a `detail` given as an
//! object or as a string holding one.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::workflow::{self, WORKFLOW};
use crate::helpers::{agentos_bin, Proc};

/// Tools whose calls must never run twice.
const AT_MOST_ONCE: [&str; 3] = ["run_command", "send_message", "publish"];

/// One audit entry, as far as the harness needs it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: String,
    pub task: Option<String>,
    pub attempt: Option<u64>,
    pub step: Option<u64>,
    pub detail: Value,
    /// The entry as printed, for failure messages.
    pub raw: Value,
}

impl Entry {
    fn of(raw: Value) -> Entry {
        let detail = match &raw["detail"] {
            Value::String(s) => {
                serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
            }
            other => other.clone(),
        };
        Entry {
            kind: raw["kind"].as_str().unwrap_or_default().to_owned(),
            task: raw["task"].as_str().map(str::to_owned),
            attempt: raw["attempt"].as_u64(),
            step: raw["step"].as_u64(),
            detail,
            raw,
        }
    }

    /// The tool a `tool_call` or `tool_started` entry is about.
    fn tool(&self) -> Option<&str> {
        ["tool", "name", "tool_name"]
            .iter()
            .find_map(|k| self.detail[*k].as_str())
    }

    /// The call's position in its step's reply, or else its arguments: what tells two calls
    /// of one step apart.
    fn call(&self) -> String {
        ["call", "call_index", "index", "call_id"]
            .iter()
            .map(|k| &self.detail[*k])
            .find(|v| !v.is_null())
            .or_else(|| {
                ["arguments", "args"]
                    .iter()
                    .map(|k| &self.detail[*k])
                    .find(|v| !v.is_null())
            })
            .map(Value::to_string)
            .unwrap_or_default()
    }

    fn at(&self) -> String {
        format!(
            "{} attempt {:?} step {:?}",
            self.task.as_deref().unwrap_or("-"),
            self.attempt,
            self.step
        )
    }
}

/// Every entry of every run in `data_dir`; panics (naming `replay`) when `audit` fails.
pub fn read(data_dir: &Path, replay: &str) -> Vec<Entry> {
    let mut cmd = Command::new(agentos_bin());
    cmd.arg("audit")
        .arg("--data-dir")
        .arg(data_dir)
        // Every entry of the run, not the newest 100 a table shows.
        .args(["--limit", "10000000"])
        .arg("--json");
    let out_dir = data_dir.parent().unwrap_or(data_dir);
    let mut proc = Proc::spawn(cmd, out_dir, "audit");
    let status = proc.exit_within(Duration::from_secs(30));
    let text = proc.stdout();
    assert!(
        status.is_some_and(|s| s.success()),
        "`agentos audit --json` ended with {status:?}; {replay}\nstderr:\n{}",
        proc.stderr()
    );
    parse(&text)
        .unwrap_or_else(|| panic!("`agentos audit --json` printed no entries; {replay}:\n{text}"))
}

/// The entries of `audit --json` output.
pub fn parse(text: &str) -> Option<Vec<Entry>> {
    let list = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => items,
        Ok(Value::Object(mut o)) => match o.remove("entries") {
            Some(Value::Array(items)) => items,
            _ => vec![Value::Object(o)],
        },
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()
            .ok()?,
    };
    Some(list.into_iter().map(Entry::of).collect())
}

/// What the audit shows was done twice, or not at all; empty when all is well.
pub fn problems(entries: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    // Every task succeeded exactly once.
    for id in workflow::tasks() {
        let key = format!("{WORKFLOW}/{id}");
        let successes: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.kind == "task_state" && e.task.as_deref() == Some(key.as_str()))
            .filter(|e| {
                e.detail["to"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("succeeded"))
            })
            .collect();
        if successes.len() != 1 {
            out.push(format!(
                "{key} succeeded {} times: {:?}",
                successes.len(),
                raws(&successes)
            ));
        }
    }
    // No journaled LLM call was made twice.
    let llm = group(entries, |e| {
        (e.kind == "llm_call").then(|| (e.task.clone(), e.attempt, e.step, String::new()))
    });
    if llm.is_empty() {
        out.push("no llm_call entries at all: the audit recorded no LLM call".into());
    }
    for same in llm.values().filter(|v| v.len() > 1) {
        out.push(format!(
            "LLM call of {} made {} times: {:?}",
            same[0].at(),
            same.len(),
            raws(same)
        ));
    }
    // No at-most-once call started or ran twice.
    for kind in ["tool_started", "tool_call"] {
        let calls = group(entries, |e| {
            (e.kind == kind && e.tool().is_some_and(|t| AT_MOST_ONCE.contains(&t)))
                .then(|| (e.task.clone(), e.attempt, e.step, e.call()))
        });
        if kind == "tool_call" && calls.is_empty() {
            out.push("no tool_call entries of run_command or send_message at all".into());
        }
        for same in calls.values().filter(|v| v.len() > 1) {
            out.push(format!(
                "{kind} of {} ({}, call {}) recorded {} times: {:?}",
                same[0].at(),
                same[0].tool().unwrap_or("?"),
                same[0].call(),
                same.len(),
                raws(same)
            ));
        }
    }
    out
}

type Key = (Option<String>, Option<u64>, Option<u64>, String);

fn group(entries: &[Entry], key: impl Fn(&Entry) -> Option<Key>) -> BTreeMap<Key, Vec<&Entry>> {
    let mut groups: BTreeMap<Key, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        if let Some(k) = key(e) {
            groups.entry(k).or_default().push(e);
        }
    }
    groups
}

fn raws(entries: &[&Entry]) -> Vec<String> {
    entries.iter().map(|e| e.raw.to_string()).collect()
}

#[test]
fn the_reader_takes_arrays_objects_and_lines_and_finds_repeats() {
    let entry = |kind: &str, task: &str, step: u64, detail: Value| {
        serde_json::json!({"run": "r", "at_ms": 1, "kind": kind, "agent": "a", "task": task,
                           "attempt": 1, "step": step, "detail": detail})
    };
    let mut all: Vec<Value> = workflow::tasks()
        .iter()
        .map(|id| {
            entry(
                "task_state",
                &format!("{WORKFLOW}/{id}"),
                0,
                serde_json::json!({"from": "running", "to": "succeeded"}),
            )
        })
        .collect();
    let cmd = serde_json::json!({"tool": "run_command", "call": 0, "arguments": {"argv": ["x"]}});
    all.push(entry("llm_call", "crash/w01", 0, Value::Null));
    all.push(entry("tool_call", "crash/w01", 1, cmd.clone()));
    let lines: String = all.iter().map(|v| format!("{v}\n")).collect();
    let array = Value::Array(all.clone()).to_string();
    let object = serde_json::json!({ "entries": all.clone() }).to_string();
    for text in [&lines, &array, &object] {
        let entries = parse(text).expect("parsed");
        assert_eq!(entries.len(), all.len());
        assert_eq!(problems(&entries), Vec::<String>::new());
    }
    // A detail given as a string is read too; a repeated command is found.
    all.push(entry(
        "tool_call",
        "crash/w01",
        1,
        Value::String(cmd.to_string()),
    ));
    all.push(entry("llm_call", "crash/w01", 0, Value::Null));
    let found = problems(&parse(&Value::Array(all).to_string()).unwrap());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("LLM call of crash/w01 attempt Some(1) step Some(0) made 2"));
    assert!(found[1].starts_with("tool_call of crash/w01"), "{found:#?}");
}
