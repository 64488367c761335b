//! Events of durable execution: store commits by each writer, attempts resumed from their
//! step journal, at-most-once calls a restart interrupted, runs resumed.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::names as m;
use crate::trace::Trace;

/// Who committed to the store (label `writer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreWriter {
    /// The context pager: pages and step journal rows.
    Pager,
    /// The scheduler: workflow and task state.
    Scheduler,
    /// The message bus: inboxes.
    Bus,
}

impl StoreWriter {
    /// Every writer.
    pub const ALL: [StoreWriter; 3] =
        [StoreWriter::Pager, StoreWriter::Scheduler, StoreWriter::Bus];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StoreWriter::Pager => "pager",
            StoreWriter::Scheduler => "scheduler",
            StoreWriter::Bus => "bus",
        }
    }
}

/// A store transaction committed `rows` rows. No trace line (too frequent).
#[derive(Debug, Clone, Copy)]
pub struct StoreCommitted {
    /// Who committed.
    pub writer: StoreWriter,
    /// Rows made durable.
    pub rows: usize,
    /// From the batch's first write to its commit.
    pub duration: Duration,
}

impl StoreCommitted {
    /// Counts the commit, records its size and duration.
    pub fn emit(&self) {
        let writer = self.writer.label();
        metrics::counter!(m::STORE_COMMITS, "writer" => writer).increment(1);
        metrics::histogram!(m::STORE_COMMIT_BATCH_ROWS, "writer" => writer)
            .record(self.rows as f64);
        metrics::histogram!(m::STORE_COMMIT_DURATION, "writer" => writer)
            .record(self.duration.as_secs_f64());
        tracing::trace!(
            writer,
            rows = self.rows,
            duration_ms = self.duration.as_millis() as u64,
            "store commit"
        );
    }
}

/// A store commit failed: none of its rows were stored. No trace line.
#[derive(Debug, Clone, Copy)]
pub struct StoreCommitFailed {
    /// Who tried to commit.
    pub writer: StoreWriter,
}

impl StoreCommitFailed {
    /// Counts the failure (the caller logs the error itself, with its cause).
    pub fn emit(&self) {
        metrics::counter!(m::STORE_COMMIT_FAILURES, "writer" => self.writer.label()).increment(1);
    }
}

/// An attempt was resumed from its journal after a restart. Trace `attempt_resumed`.
#[derive(Debug, Clone, Copy)]
pub struct AttemptResumed<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The task (`workflow/task`).
    pub task: &'a str,
    /// The attempt's context (`workflow/task#attempt_total`).
    pub context: &'a str,
    /// Journaled steps replayed instead of run again.
    pub steps_replayed: usize,
}

impl AttemptResumed<'_> {
    /// Counts the attempt and its replayed steps, logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::JOURNAL_RESUMED_ATTEMPTS, "agent" => self.agent.to_owned())
            .increment(1);
        metrics::counter!(m::JOURNAL_REPLAYED_STEPS, "agent" => self.agent.to_owned())
            .increment(self.steps_replayed as u64);
        tracing::info!(agent = %self.agent, task = %self.task, context = %self.context,
            steps_replayed = self.steps_replayed, "attempt resumed from its journal");
        if trace.enabled() {
            trace.emit(
                "attempt_resumed",
                json!({"agent": self.agent, "task": self.task, "context": self.context,
                       "steps_replayed": self.steps_replayed}),
            );
        }
    }
}

/// An at-most-once call had started before a restart and its result was never recorded: it
/// was not run again, and the model was told its outcome is unknown. Trace
/// `call_interrupted`.
#[derive(Debug, Clone, Copy)]
pub struct AtMostOnceInterrupted<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The task (`workflow/task`).
    pub task: &'a str,
    /// The call (`context/s{step}/c{call}`).
    pub call: &'a str,
}

impl AtMostOnceInterrupted<'_> {
    /// Counts it by agent and tool, logs a warning, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::JOURNAL_INTERRUPTED_CALLS, "agent" => self.agent.to_owned(),
            "tool" => super::tool_label(self.tool))
        .increment(1);
        tracing::warn!(agent = %self.agent, tool = %self.tool, task = %self.task,
            call = %self.call,
            "at-most-once call interrupted by a restart: not run again, the model is told");
        if trace.enabled() {
            trace.emit(
                "call_interrupted",
                json!({"agent": self.agent, "tool": self.tool, "task": self.task,
                       "call": self.call}),
            );
        }
    }
}

/// A run was resumed after a restart. Trace `run_resumed`.
#[derive(Debug, Clone, Copy)]
pub struct RunResumed<'a> {
    /// The run id.
    pub run_id: &'a str,
    /// How many times this run has been resumed, this one included.
    pub resumes: u32,
    /// Attempts that were running at the crash and continue from their journal.
    pub continued: usize,
}

impl RunResumed<'_> {
    /// Counts it, logs, writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        metrics::counter!(m::RUNS_RESUMED).increment(1);
        tracing::info!(run_id = %self.run_id, resumes = self.resumes,
            continued = self.continued, "run resumed");
        if trace.enabled() {
            trace.emit(
                "run_resumed",
                json!({"run_id": self.run_id, "resumes": self.resumes,
                       "continued": self.continued}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};

    #[test]
    fn a_commit_counts_by_writer_with_its_size_and_duration() {
        let got = metrics_of(|| {
            StoreCommitted {
                writer: StoreWriter::Pager,
                rows: 12,
                duration: Duration::from_millis(3),
            }
            .emit();
            StoreCommitFailed {
                writer: StoreWriter::Bus,
            }
            .emit();
        });
        let w = [("writer", "pager")];
        assert_eq!(got.counter(m::STORE_COMMITS, &w), Some(1));
        assert_eq!(
            got.histogram(m::STORE_COMMIT_BATCH_ROWS, &w),
            Some(vec![12.0])
        );
        assert_eq!(
            got.histogram(m::STORE_COMMIT_DURATION, &w),
            Some(vec![0.003])
        );
        assert_eq!(
            got.counter(m::STORE_COMMIT_FAILURES, &[("writer", "bus")]),
            Some(1)
        );
    }

    #[test]
    fn resumes_and_interrupted_calls_count_and_trace() {
        let mut got = None;
        let lines = trace_of(|trace| {
            got = Some(metrics_of(|| {
                AttemptResumed {
                    agent: "a",
                    task: "w/t",
                    context: "w/t#2",
                    steps_replayed: 3,
                }
                .emit(trace);
                AtMostOnceInterrupted {
                    agent: "a",
                    tool: "run_command",
                    task: "w/t",
                    call: "w/t#2/s2/c0",
                }
                .emit(trace);
                RunResumed {
                    run_id: "r1",
                    resumes: 1,
                    continued: 2,
                }
                .emit(trace);
            }));
        });
        let got = got.expect("metrics captured");
        let a = [("agent", "a")];
        assert_eq!(got.counter(m::JOURNAL_RESUMED_ATTEMPTS, &a), Some(1));
        assert_eq!(got.counter(m::JOURNAL_REPLAYED_STEPS, &a), Some(3));
        assert_eq!(
            got.counter(
                m::JOURNAL_INTERRUPTED_CALLS,
                &[("agent", "a"), ("tool", "run_command")]
            ),
            Some(1)
        );
        assert_eq!(got.counter(m::RUNS_RESUMED, &[]), Some(1));
        let kinds: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
        assert_eq!(
            kinds,
            ["attempt_resumed", "call_interrupted", "run_resumed"]
        );
        assert_eq!(lines[0]["steps_replayed"], 3);
        assert_eq!(lines[1]["call"], "w/t#2/s2/c0");
    }
}
