//! Events of the context pager and its store.
//!
//! The pager core ([`crate::context::Pager`]) sees every page move and every build, including
//! moves outside builds and builds that fail half way, so it updates the metrics:
//! [`PagerResidency`], [`PagesSwapped`], [`PromptCounted`], [`StoreOpFinished`]. The pager actor
//! gets the built prompt back and writes the trace lines: [`PromptBuilt`], [`PagesMoved`].
//! Splitting them keeps each metric counted exactly once.

use std::time::Duration;

use serde_json::json;

use super::labels::{MoveDirection, StoreOp};
use super::names as m;
use crate::context::table::Moves;
use crate::context::{BuiltPrompt, PageMove};
use crate::trace::Trace;

/// An agent's resident and swapped pages changed (totals over its open contexts). No trace
/// line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagerResidency<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Resident pages.
    pub resident_pages: u64,
    /// Tokens of the resident pages.
    pub resident_tokens: u64,
    /// Pages in the store only.
    pub swapped_pages: u64,
    /// Tokens of the swapped pages.
    pub swapped_tokens: u64,
}

impl PagerResidency<'_> {
    /// Sets the four gauges.
    pub fn emit(&self) {
        ResidencyGauges::of(self.agent).set(self);
    }
}

/// One agent's four residency gauges, resolved once (a pager keeps them per agent, so that a
/// change costs four atomic stores instead of four registry lookups by label).
#[derive(Clone)]
pub struct ResidencyGauges([metrics::Gauge; 4]);

impl std::fmt::Debug for ResidencyGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResidencyGauges")
    }
}

impl ResidencyGauges {
    /// The gauges of `agent` in the current recorder.
    pub fn of(agent: &str) -> Self {
        let a = agent.to_owned();
        Self([
            metrics::gauge!(m::PAGER_RESIDENT_PAGES, "agent" => a.clone()),
            metrics::gauge!(m::PAGER_RESIDENT_TOKENS, "agent" => a.clone()),
            metrics::gauge!(m::PAGER_SWAPPED_PAGES, "agent" => a.clone()),
            metrics::gauge!(m::PAGER_SWAPPED_TOKENS, "agent" => a),
        ])
    }

    /// Sets them to `r`'s figures (`r.agent` is not looked at).
    pub fn set(&self, r: &PagerResidency<'_>) {
        let [p, k, q, l] = &self.0;
        p.set(r.resident_pages as f64);
        k.set(r.resident_tokens as f64);
        q.set(r.swapped_pages as f64);
        l.set(r.swapped_tokens as f64);
    }
}

/// Pages of an agent moved between the resident set and the store during one pager
/// operation. No trace line (see [`PagesMoved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagesSwapped<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// The eviction policy that chose the victims (`unknown` for an undeclared agent).
    pub policy: &'a str,
    /// What moved.
    pub moves: Moves,
}

impl PagesSwapped<'_> {
    /// Counts faults and swapped-in tokens, evictions (by policy) and swapped-out tokens;
    /// nothing for a direction in which nothing moved.
    pub fn emit(&self) {
        let mv = &self.moves;
        if mv.faults == 0 && mv.evicted_pages == 0 {
            return;
        }
        let a = self.agent.to_owned();
        if mv.faults > 0 {
            metrics::counter!(m::PAGER_FAULTS, "agent" => a.clone()).increment(mv.faults);
            metrics::counter!(m::PAGER_SWAP_IN_TOKENS, "agent" => a.clone())
                .increment(mv.swap_in_tokens);
        }
        if mv.evicted_pages > 0 {
            metrics::counter!(m::PAGER_EVICTIONS, "agent" => a.clone(),
                "policy" => self.policy.to_owned())
            .increment(mv.evicted_pages);
            metrics::counter!(m::PAGER_SWAP_OUT_TOKENS, "agent" => a).increment(mv.swap_out_tokens);
        }
        tracing::trace!(agent = %self.agent, faults = mv.faults, evicted = mv.evicted_pages,
            "pages swapped");
    }
}

/// The pager core built a prompt. No trace line (see [`PromptBuilt`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptCounted<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// The prompt.
    pub prompt: &'a BuiltPrompt,
}

impl PromptCounted<'_> {
    /// Counts the prompt and the tokens its summaries saved; records tokens / budget.
    pub fn emit(&self) {
        let a = self.agent.to_owned();
        let p = self.prompt;
        metrics::counter!(m::PAGER_PROMPTS, "agent" => a.clone()).increment(1);
        metrics::counter!(m::PAGER_TOKENS_SAVED, "agent" => a.clone()).increment(p.tokens_saved);
        if p.budget > 0 {
            metrics::histogram!(m::PAGER_BUDGET_UTILISATION, "agent" => a)
                .record(p.tokens as f64 / p.budget as f64);
        }
    }

    /// [`PromptCounted::emit`] through `series`, the agent's.
    pub fn emit_with(&self, series: &PromptSeries) {
        let p = self.prompt;
        series.prompts.increment(1);
        series.tokens_saved.increment(p.tokens_saved);
        if p.budget > 0 {
            let ratio = p.tokens as f64 / p.budget as f64;
            match &series.utilisation {
                Some(h) => h.record(ratio),
                None => metrics::histogram!(m::PAGER_BUDGET_UTILISATION,
                    "agent" => self.agent.to_owned())
                .record(ratio),
            }
        }
    }
}

/// One agent's prompt series, resolved once (a pager keeps them per agent, so that a build
/// costs atomic updates instead of registry lookups by label).
#[derive(Clone)]
pub struct PromptSeries {
    prompts: metrics::Counter,
    tokens_saved: metrics::Counter,
    /// Resolved for an agent with a budget, the only kind that records one.
    utilisation: Option<metrics::Histogram>,
}

impl std::fmt::Debug for PromptSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptSeries")
    }
}

impl PromptSeries {
    /// The series of `agent` in the current recorder; `budgeted`: whether its context has a
    /// budget.
    pub fn of(agent: &str, budgeted: bool) -> Self {
        let a = agent.to_owned();
        Self {
            prompts: metrics::counter!(m::PAGER_PROMPTS, "agent" => a.clone()),
            tokens_saved: metrics::counter!(m::PAGER_TOKENS_SAVED, "agent" => a.clone()),
            utilisation: budgeted
                .then(|| metrics::histogram!(m::PAGER_BUDGET_UTILISATION, "agent" => a)),
        }
    }
}

/// The pager answered a prompt request. Trace `prompt_built`. No metric (see
/// [`PromptCounted`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptBuilt<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Context id (`workflow/task#attempt_total`).
    pub context: &'a str,
    /// The prompt.
    pub prompt: &'a BuiltPrompt,
}

impl PromptBuilt<'_> {
    /// Logs and writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        let p = self.prompt;
        tracing::debug!(agent = %self.agent, context = %self.context, tokens = p.tokens,
            budget = p.budget, evicted = p.evicted.len(), faulted = p.faulted.len(),
            "prompt built");
        if trace.enabled() {
            trace.emit(
                "prompt_built",
                json!({"agent": self.agent, "context": self.context, "tokens": p.tokens,
                       "budget": p.budget, "messages": p.messages.len(),
                       "evicted": p.evicted.len(), "faulted": p.faulted.len(),
                       "summaries": p.summaries, "tokens_saved": p.tokens_saved}),
            );
        }
    }
}

/// Page groups moved during one build. Trace `page_evicted` or `page_fault`, one line per
/// group. No metric (see [`PagesSwapped`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PagesMoved<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Context id.
    pub context: &'a str,
    /// The eviction policy of the build.
    pub policy: &'a str,
    /// Evicted or faulted in.
    pub direction: MoveDirection,
    /// The groups, each one exchange.
    pub groups: &'a [PageMove],
}

impl PagesMoved<'_> {
    /// Writes one trace line per group.
    pub fn emit(&self, trace: &Trace) {
        if !trace.enabled() {
            return;
        }
        for g in self.groups {
            trace.emit(
                self.direction.trace_kind(),
                json!({"agent": self.agent, "context": self.context, "pages": g.pages,
                       "kind": g.kind.label(), "tokens": g.tokens, "policy": self.policy}),
            );
        }
    }
}

/// One store operation ended. No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOpFinished {
    /// Write or read.
    pub op: StoreOp,
    /// How long it took.
    pub duration: Duration,
}

impl StoreOpFinished {
    /// Records the duration in the operation's histogram.
    pub fn emit(&self) {
        let secs = self.duration.as_secs_f64();
        match self.op {
            StoreOp::Write => metrics::histogram!(m::STORE_WRITE_DURATION).record(secs),
            StoreOp::Read => metrics::histogram!(m::STORE_READ_DURATION).record(secs),
        }
    }

    /// [`StoreOpFinished::emit`] through `series`.
    pub fn emit_with(&self, series: &StoreOpSeries) {
        let secs = self.duration.as_secs_f64();
        match self.op {
            StoreOp::Write => series.write.record(secs),
            StoreOp::Read => series.read.record(secs),
        }
    }
}

/// The two store-operation histograms, resolved once (the pager's store keeps them).
#[derive(Clone)]
pub struct StoreOpSeries {
    write: metrics::Histogram,
    read: metrics::Histogram,
}

impl std::fmt::Debug for StoreOpSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreOpSeries")
    }
}

impl StoreOpSeries {
    /// The histograms in the current recorder.
    pub fn of() -> Self {
        Self {
            write: metrics::histogram!(m::STORE_WRITE_DURATION),
            read: metrics::histogram!(m::STORE_READ_DURATION),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::PageKind;
    use crate::events::testing::{metrics_of, trace_of};

    fn prompt() -> BuiltPrompt {
        BuiltPrompt {
            messages: Vec::new(),
            ids: Vec::new(),
            tokens: 300,
            budget: 400,
            evicted: vec![PageMove {
                pages: vec![4, 5],
                kind: PageKind::Message,
                tokens: 90,
            }],
            faulted: Vec::new(),
            tokens_saved: 70,
            summaries: 1,
            policy: "lru",
        }
    }

    #[test]
    fn core_events_update_counters_and_gauges() {
        let p = prompt();
        let got = metrics_of(|| {
            PagerResidency {
                agent: "writer",
                resident_pages: 6,
                resident_tokens: 300,
                swapped_pages: 2,
                swapped_tokens: 90,
            }
            .emit();
            PagesSwapped {
                agent: "writer",
                policy: "lru",
                moves: Moves {
                    evicted_pages: 2,
                    swap_out_tokens: 90,
                    faults: 0,
                    swap_in_tokens: 0,
                },
            }
            .emit();
            PromptCounted {
                agent: "writer",
                prompt: &p,
            }
            .emit();
            StoreOpFinished {
                op: StoreOp::Read,
                duration: Duration::from_millis(2),
            }
            .emit();
        });
        let a = [("agent", "writer")];
        assert_eq!(got.gauge(m::PAGER_RESIDENT_PAGES, &a), Some(6.0));
        assert_eq!(got.gauge(m::PAGER_SWAPPED_TOKENS, &a), Some(90.0));
        assert_eq!(
            got.counter(
                m::PAGER_EVICTIONS,
                &[("agent", "writer"), ("policy", "lru")]
            ),
            Some(2)
        );
        assert_eq!(got.counter(m::PAGER_SWAP_OUT_TOKENS, &a), Some(90));
        assert_eq!(got.counter(m::PAGER_FAULTS, &a), None);
        assert_eq!(got.counter(m::PAGER_PROMPTS, &a), Some(1));
        assert_eq!(got.counter(m::PAGER_TOKENS_SAVED, &a), Some(70));
        assert_eq!(
            got.histogram(m::PAGER_BUDGET_UTILISATION, &a),
            Some(vec![0.75])
        );
        assert_eq!(
            got.histogram(m::STORE_READ_DURATION, &[]),
            Some(vec![0.002])
        );
        assert_eq!(got.histogram(m::STORE_WRITE_DURATION, &[]), None);
    }

    #[test]
    fn resolved_series_count_what_a_lookup_counts() {
        let p = prompt();
        let got = metrics_of(|| {
            let prompts = PromptSeries::of("writer", true);
            let store = StoreOpSeries::of();
            for _ in 0..2 {
                PromptCounted {
                    agent: "writer",
                    prompt: &p,
                }
                .emit_with(&prompts);
            }
            // Resolved without a budget, an agent still records a prompt that has one.
            PromptCounted {
                agent: "reader",
                prompt: &p,
            }
            .emit_with(&PromptSeries::of("reader", false));
            for (op, ms) in [(StoreOp::Read, 2), (StoreOp::Write, 3), (StoreOp::Write, 5)] {
                StoreOpFinished {
                    op,
                    duration: Duration::from_millis(ms),
                }
                .emit_with(&store);
            }
        });
        let a = [("agent", "writer")];
        assert_eq!(got.counter(m::PAGER_PROMPTS, &a), Some(2));
        assert_eq!(got.counter(m::PAGER_TOKENS_SAVED, &a), Some(140));
        assert_eq!(
            got.histogram(m::PAGER_BUDGET_UTILISATION, &a),
            Some(vec![0.75, 0.75])
        );
        let r = [("agent", "reader")];
        assert_eq!(got.counter(m::PAGER_PROMPTS, &r), Some(1));
        assert_eq!(
            got.histogram(m::PAGER_BUDGET_UTILISATION, &r),
            Some(vec![0.75])
        );
        assert_eq!(
            got.histogram(m::STORE_READ_DURATION, &[]),
            Some(vec![0.002])
        );
        assert_eq!(
            got.histogram(m::STORE_WRITE_DURATION, &[]),
            Some(vec![0.003, 0.005])
        );
    }

    #[test]
    fn actor_events_write_trace_lines_and_no_metrics() {
        let p = prompt();
        let mut lines = Vec::new();
        let got = metrics_of(|| {
            lines = trace_of(|t| {
                PagesMoved {
                    agent: "writer",
                    context: "wf/draft#1",
                    policy: p.policy,
                    direction: MoveDirection::Evicted,
                    groups: &p.evicted,
                }
                .emit(t);
                PromptBuilt {
                    agent: "writer",
                    context: "wf/draft#1",
                    prompt: &p,
                }
                .emit(t);
            })
        });
        assert_eq!(got.len(), 0);
        assert_eq!(lines.len(), 2);
        let ev = &lines[0];
        assert_eq!(ev["event"], "page_evicted");
        assert_eq!(ev["agent"], "writer");
        assert_eq!(ev["context"], "wf/draft#1");
        assert_eq!(ev["pages"], json!([4, 5]));
        assert_eq!(ev["kind"], "message");
        assert_eq!(ev["tokens"], 90);
        assert_eq!(ev["policy"], "lru");
        let pb = &lines[1];
        assert_eq!(pb["event"], "prompt_built");
        assert_eq!(pb["tokens"], 300);
        assert_eq!(pb["budget"], 400);
        assert_eq!(pb["messages"], 0);
        assert_eq!(pb["evicted"], 1);
        assert_eq!(pb["faulted"], 0);
        assert_eq!(pb["summaries"], 1);
        assert_eq!(pb["tokens_saved"], 70);
    }
}
