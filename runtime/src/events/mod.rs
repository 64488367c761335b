//! Typed telemetry events: one struct per thing that happens. Its `emit()` updates the metrics,
//! writes the trace line and logs through `tracing`, all in one place, so a metric name, a label
//! value or a trace field is spelled once. This module is the only place allowed to call the
//! `metrics` macros (`clippy.toml` bans them elsewhere).
//!
//! - [`names`]: every metric name, its help text and histogram buckets (re-exported as
//!   `crate::metrics` for existing callers).
//! - [`labels`]: the label values, as enums.
//! - [`agent`]: agent states, LLM calls, tool calls, steps, pager requests, crashes.
//! - [`sched`]: task state changes, retries, fallbacks, leases, attempts, task counts.
//! - [`control`]: workflows accepted and finished, spawned tasks, operator actions on agents,
//!   cancelled attempts.
//! - [`system`]: supervisors, the message bus, the resource monitor, build info, run start
//!   and stop.
//! - [`kvcache`]: routing decisions, per-replica cache statistics, cache configuration.
//! - [`durability`]: store commits by writer, attempts resumed from their journal,
//!   interrupted at-most-once calls, resumed runs.
//! - [`pager`]: resident and swapped pages, page moves, built prompts, store timings.
//! - [`sandbox`]: what the command sandbox enforces, and the commands it stopped.
//! - [`api`]: requests answered by the control plane's HTTP API.
//!
//! # Conventions
//! - Events borrow (`&'a str`, `&'a T`): building one costs nothing, and the caller keeps its
//!   values.
//! - An event that writes a trace line has `emit(&self, trace: &Trace)`; one that has no trace
//!   line has `emit(&self)`. The signature says which. A disabled [`Trace`] drops the line, the
//!   metrics still update, and the JSON is not even built.
//! - Trace lines are `{"ts", "event": <kind>, ...fields}`; `docs/trace-events.md` lists every
//!   kind and its fields.
//! - Logs use key-value fields. Routine events log at `debug` (or `trace` when they are very
//!   frequent), retries, crashes and restarts at `warn`, escalations at `error`.
//! - Where one occurrence is seen in two places, the metrics and the trace line are separate
//!   events, so nothing counts twice: the pager core counts every page move and built prompt
//!   ([`pager::PagesSwapped`], [`pager::PromptCounted`]), while the pager actor writes their
//!   trace lines ([`pager::PagesMoved`], [`pager::PromptBuilt`]).
//!
//! [`Trace`]: crate::trace::Trace

pub mod agent;
pub mod api;
pub mod control;
pub mod durability;
pub mod kvcache;
pub mod labels;
pub mod names;
pub mod pager;
pub mod quota;
pub mod sandbox;
pub mod sched;
pub mod system;

pub use agent::{
    AgentCrashed, AgentMetrics, AgentStateChanged, AgentStepFinished, LlmCallAbandoned,
    LlmCallFailed, LlmCallFinished, PagerRequestFinished, ToolCalled,
};
pub use api::{ApiMethod, ApiRequestFinished};
pub use control::{
    AgentControlled, AttemptCancelled, TaskSpawned, WorkflowAccepted, WorkflowFinished,
};
pub use durability::{
    AtMostOnceInterrupted, AttemptResumed, RunResumed, StoreCommitFailed, StoreCommitted,
    StoreWriter,
};
pub use kvcache::{
    KvCacheConfigured, KvReplicaPublished, KvSeriesRegistered, ReplicaMetrics, RouteDecided,
};
pub use labels::{
    tool_label, AttemptOutcome, BusDropReason, BusKind, KvBlockState, LlmOutcome, MoveDirection,
    PagerOutcome, RoutedBy, StoreOp, ToolOutcome,
};
pub use pager::{
    PagerResidency, PagesMoved, PagesSwapped, PromptBuilt, PromptCounted, PromptSeries,
    ResidencyGauges, StoreOpFinished, StoreOpSeries,
};
pub use sched::{
    AttemptFinished, LeaseExpired, StaleReport, TaskCountGauges, TaskCounts, TaskFellBack,
    TaskRetried, TaskStateChanged,
};
pub use system::{
    BuildInfo, BusMessageDelivered, BusMessageDropped, BusMessageSent, ChildRestarted,
    ResourceSampled, RunStarted, RunStopped, SupervisorEscalated,
};

#[cfg(test)]
pub(crate) mod testing {
    //! Captures what events do: the metrics they touch (a [`DebuggingRecorder`] local to the
    //! test's thread) and the trace lines they write (a trace file in a temporary directory).

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;
    use serde_json::Value;

    use crate::trace::Trace;

    /// One captured series: kind, name, sorted labels, value.
    type Series = (MetricKind, String, Vec<(String, String)>, DebugValue);

    /// The metrics one closure touched.
    pub(crate) struct Captured(Vec<Series>);

    /// Runs `f` with a fresh recorder on this thread and returns what it recorded.
    pub(crate) fn metrics_of(f: impl FnOnce()) -> Captured {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, f);
        Captured(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(ck, _, _, value)| {
                    let (kind, key) = ck.into_parts();
                    let mut labels: Vec<(String, String)> = key
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    labels.sort();
                    (kind, key.name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    impl Captured {
        fn find(
            &self,
            kind: MetricKind,
            name: &str,
            labels: &[(&str, &str)],
        ) -> Option<&DebugValue> {
            let mut want: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            want.sort();
            self.0
                .iter()
                .find(|(k, n, l, _)| *k == kind && n == name && *l == want)
                .map(|(_, _, _, v)| v)
        }

        /// The counter `name` with exactly these labels.
        pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
            match self.find(MetricKind::Counter, name, labels) {
                Some(DebugValue::Counter(v)) => Some(*v),
                _ => None,
            }
        }

        /// The gauge `name` with exactly these labels.
        pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            match self.find(MetricKind::Gauge, name, labels) {
                Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
                _ => None,
            }
        }

        /// The values recorded into histogram `name` with exactly these labels.
        pub(crate) fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Vec<f64>> {
            match self.find(MetricKind::Histogram, name, labels) {
                Some(DebugValue::Histogram(v)) => Some(v.iter().map(|x| x.into_inner()).collect()),
                _ => None,
            }
        }

        /// How many series were touched.
        pub(crate) fn len(&self) -> usize {
            self.0.len()
        }
    }

    /// Runs `f` with a trace writing to a temporary file and returns its lines.
    pub(crate) fn trace_of(f: impl FnOnce(&Trace)) -> Vec<Value> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("trace.jsonl");
        let trace = Trace::to_file(&path).expect("trace file");
        f(&trace);
        trace.close().expect("trace written");
        std::fs::read_to_string(&path)
            .expect("trace readable")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}
