//! Events of agents and their steps: state changes, LLM calls, tool calls, steps, pager
//! requests, crashes.

use std::time::Duration;

use serde_json::json;

use super::labels::{tool_label, LlmOutcome, PagerOutcome, ToolOutcome};
use super::names as m;
use crate::llm::{LlmError, Usage};
use crate::model::{AgentState, InstanceId};
use crate::tools::{ToolError, ToolOutput};
use crate::trace::Trace;

/// An agent instance moved between states. No trace line.
///
/// Keeps the [`AGENTS`](m::AGENTS) gauge balanced: `from` is decremented, `to` incremented.
/// `from: None` is an instance that just started; `to: None` one that stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentStateChanged {
    /// The state left, `None` when the instance starts.
    pub from: Option<AgentState>,
    /// The state entered, `None` when the instance stops.
    pub to: Option<AgentState>,
}

impl AgentStateChanged {
    /// Updates the gauge.
    pub fn emit(&self) {
        self.apply(|s, by| metrics::gauge!(m::AGENTS, "state" => s.label()).increment(by));
    }

    /// [`AgentStateChanged::emit`] through the gauges `metrics` holds.
    pub fn emit_with(&self, metrics: &AgentMetrics) {
        self.apply(|s, by| metrics.states[state_index(s)].increment(by));
    }

    /// Moves the gauge of `from` by -1 and that of `to` by +1.
    fn apply(&self, add: impl Fn(AgentState, f64)) {
        if self.from == self.to {
            return;
        }
        if let Some(from) = self.from {
            add(from, -1.0);
        }
        if let Some(to) = self.to {
            add(to, 1.0);
        }
        tracing::trace!(from = ?self.from, to = ?self.to, "agent state");
    }
}

/// The position of `s` in [`AgentState::ALL`].
fn state_index(s: AgentState) -> usize {
    match s {
        AgentState::Ready => 0,
        AgentState::Running => 1,
        AgentState::Waiting => 2,
        AgentState::Suspended => 3,
        AgentState::Terminated => 4,
    }
}

/// The series an agent's steps update every time, resolved once per agent (its replicas'
/// sinks share one): a step then costs atomic updates, not a registry lookup by name and
/// labels, with the label strings built each time, per series. Events this does not hold
/// (another backend than the agent's own, a failed pager request) are looked up as before.
#[derive(Clone)]
pub struct AgentMetrics {
    backend: String,
    /// [`m::AGENTS`] per state, in [`AgentState::ALL`]'s order.
    states: [metrics::Gauge; 5],
    llm: LlmOk,
    steps: metrics::Counter,
    step_duration: metrics::Histogram,
    pager_ok: metrics::Counter,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl AgentMetrics {
    /// The series of `agent`, whose backend is `backend`, in the current recorder.
    pub fn of(agent: &str, backend: &str) -> Self {
        let a = agent.to_owned();
        Self {
            backend: backend.to_owned(),
            states: AgentState::ALL.map(|s| metrics::gauge!(m::AGENTS, "state" => s.label())),
            llm: LlmOk::of(backend, agent),
            steps: metrics::counter!(m::AGENT_STEPS, "agent" => a.clone()),
            step_duration: metrics::histogram!(m::AGENT_STEP_DURATION, "agent" => a.clone()),
            pager_ok: metrics::counter!(m::PAGER_REQUESTS, "agent" => a,
                "outcome" => PagerOutcome::Ok.label()),
        }
    }
}

/// The series an answered LLM call updates.
#[derive(Clone)]
struct LlmOk {
    duration: metrics::Histogram,
    requests: metrics::Counter,
    prompt_tokens: metrics::Counter,
    completion_tokens: metrics::Counter,
}

impl LlmOk {
    fn of(backend: &str, agent: &str) -> Self {
        let (b, a) = (backend.to_owned(), agent.to_owned());
        Self {
            duration: metrics::histogram!(m::LLM_REQUEST_DURATION, "backend" => b.clone()),
            requests: metrics::counter!(m::LLM_REQUESTS, "backend" => b.clone(),
                "outcome" => LlmOutcome::Ok.label()),
            prompt_tokens: metrics::counter!(m::LLM_PROMPT_TOKENS, "backend" => b.clone(),
                "agent" => a.clone()),
            completion_tokens: metrics::counter!(m::LLM_COMPLETION_TOKENS, "backend" => b,
                "agent" => a),
        }
    }
}

/// An LLM call answered. Trace `llm_call` with `ok: true`.
#[derive(Debug, Clone, Copy)]
pub struct LlmCallFinished<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Agent instance.
    pub instance: &'a InstanceId,
    /// Task key (`workflow/task`).
    pub task: &'a str,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Step within the attempt, from 0.
    pub step: u32,
    /// Backend name.
    pub backend: &'a str,
    /// Whether the backend is a simulator.
    pub simulated: bool,
    /// Replica that served the call.
    pub replica: usize,
    /// Tokens of the call.
    pub usage: Usage,
    /// Why generation stopped.
    pub finish_reason: &'a str,
    /// Tool calls in the reply.
    pub tool_calls: usize,
    /// Latency of the call.
    pub duration: Duration,
}

impl LlmCallFinished<'_> {
    /// Counts the request (`outcome="ok"`) and its tokens, records its latency, writes the
    /// trace line.
    pub fn emit(&self, trace: &Trace) {
        self.emit_to(trace, &LlmOk::of(self.backend, self.agent));
    }

    /// [`LlmCallFinished::emit`] through the series `metrics` holds, when the call went to
    /// the agent's own backend.
    pub fn emit_with(&self, trace: &Trace, metrics: &AgentMetrics) {
        if metrics.backend == self.backend {
            self.emit_to(trace, &metrics.llm);
        } else {
            self.emit(trace);
        }
    }

    fn emit_to(&self, trace: &Trace, series: &LlmOk) {
        let secs = self.duration.as_secs_f64();
        series.duration.record(secs);
        series.requests.increment(1);
        series.prompt_tokens.increment(self.usage.prompt_tokens);
        series
            .completion_tokens
            .increment(self.usage.completion_tokens);
        tracing::debug!(agent = %self.agent, instance = %self.instance, task = %self.task,
            attempt = self.attempt, step = self.step, backend = %self.backend,
            replica = self.replica, prompt_tokens = self.usage.prompt_tokens,
            completion_tokens = self.usage.completion_tokens, duration_secs = secs, "LLM call");
        if trace.enabled() {
            trace.emit(
                "llm_call",
                json!({"agent": self.agent, "instance": self.instance.to_string(),
                       "task": self.task, "attempt": self.attempt, "step": self.step,
                       "backend": self.backend, "simulated": self.simulated, "ok": true,
                       "replica": self.replica, "prompt_tokens": self.usage.prompt_tokens,
                       "cached_tokens": self.usage.cached_tokens,
                       "completion_tokens": self.usage.completion_tokens,
                       "finish_reason": self.finish_reason, "tool_calls": self.tool_calls,
                       "duration_secs": secs}),
            );
        }
    }
}

/// An LLM call failed. Trace `llm_call` with `ok: false`.
#[derive(Debug, Clone, Copy)]
pub struct LlmCallFailed<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Agent instance.
    pub instance: &'a InstanceId,
    /// Task key.
    pub task: &'a str,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Step within the attempt, from 0.
    pub step: u32,
    /// Backend name.
    pub backend: &'a str,
    /// Why.
    pub error: &'a LlmError,
    /// Time until the failure.
    pub duration: Duration,
}

impl LlmCallFailed<'_> {
    /// Counts the request with the error's `outcome`, records its latency, writes the trace
    /// line.
    pub fn emit(&self, trace: &Trace) {
        let secs = self.duration.as_secs_f64();
        let outcome = LlmOutcome::from(self.error);
        metrics::histogram!(m::LLM_REQUEST_DURATION, "backend" => self.backend.to_owned())
            .record(secs);
        metrics::counter!(m::LLM_REQUESTS, "backend" => self.backend.to_owned(),
            "outcome" => outcome.label())
        .increment(1);
        tracing::debug!(agent = %self.agent, instance = %self.instance, task = %self.task,
            attempt = self.attempt, step = self.step, backend = %self.backend,
            outcome = outcome.label(), error = %self.error, duration_secs = secs,
            "LLM call failed");
        if trace.enabled() {
            trace.emit(
                "llm_call",
                json!({"agent": self.agent, "instance": self.instance.to_string(),
                       "task": self.task, "attempt": self.attempt, "step": self.step,
                       "backend": self.backend, "ok": false, "error": self.error.to_string(),
                       "duration_secs": secs}),
            );
        }
    }
}

/// An LLM call was dropped before it returned (the attempt timed out or panicked). No trace
/// line: nothing came back to describe.
#[derive(Debug, Clone, Copy)]
pub struct LlmCallAbandoned<'a> {
    /// Backend name.
    pub backend: &'a str,
}

impl LlmCallAbandoned<'_> {
    /// Counts the request as `outcome="abandoned"`.
    pub fn emit(&self) {
        metrics::counter!(m::LLM_REQUESTS, "backend" => self.backend.to_owned(),
            "outcome" => LlmOutcome::Abandoned.label())
        .increment(1);
        tracing::debug!(backend = %self.backend, "LLM call abandoned");
    }
}

/// A tool call finished, either way. Trace `tool_call`.
#[derive(Debug, Clone, Copy)]
pub struct ToolCalled<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Agent instance.
    pub instance: &'a InstanceId,
    /// Task key.
    pub task: &'a str,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Step within the attempt, from 0.
    pub step: u32,
    /// The tool name the model asked for (may be invented; the metric label is bounded).
    pub tool: &'a str,
    /// The arguments the model sent.
    pub arguments: &'a serde_json::Value,
    /// What the tool returned.
    pub result: Result<&'a ToolOutput, &'a ToolError>,
    /// Latency of the call.
    pub duration: Duration,
}

impl ToolCalled<'_> {
    /// Counts the call by bounded tool label and outcome, records its latency, writes the trace
    /// line (`result: {ok: true, data}` or `{ok: false, error}`).
    pub fn emit(&self, trace: &Trace) {
        let secs = self.duration.as_secs_f64();
        let label = tool_label(self.tool);
        let outcome = match self.result {
            Ok(_) => ToolOutcome::Ok,
            Err(e) => ToolOutcome::from(e),
        };
        metrics::counter!(m::TOOL_CALLS, "tool" => label, "outcome" => outcome.label())
            .increment(1);
        metrics::histogram!(m::TOOL_CALL_DURATION, "tool" => label).record(secs);
        tracing::debug!(agent = %self.agent, instance = %self.instance, task = %self.task,
            attempt = self.attempt, step = self.step, tool = %self.tool,
            outcome = outcome.label(), duration_secs = secs, "tool call");
        if trace.enabled() {
            let result = match self.result {
                Ok(out) => json!({"ok": true, "data": out.data}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            };
            trace.emit(
                "tool_call",
                json!({"agent": self.agent, "instance": self.instance.to_string(),
                       "task": self.task, "attempt": self.attempt, "step": self.step,
                       "tool": self.tool, "arguments": self.arguments, "result": result,
                       "duration_secs": secs}),
            );
        }
    }
}

/// One step ended: an LLM call and its tool calls. No trace line (the calls have theirs).
#[derive(Debug, Clone, Copy)]
pub struct AgentStepFinished<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// Length of the step.
    pub duration: Duration,
}

impl AgentStepFinished<'_> {
    /// Counts the step and records its length.
    pub fn emit(&self) {
        self.emit_to(
            &metrics::counter!(m::AGENT_STEPS, "agent" => self.agent.to_owned()),
            &metrics::histogram!(m::AGENT_STEP_DURATION, "agent" => self.agent.to_owned()),
        );
    }

    /// [`AgentStepFinished::emit`] through the series `metrics` holds.
    pub fn emit_with(&self, metrics: &AgentMetrics) {
        self.emit_to(&metrics.steps, &metrics.step_duration);
    }

    fn emit_to(&self, steps: &metrics::Counter, duration: &metrics::Histogram) {
        steps.increment(1);
        duration.record(self.duration.as_secs_f64());
        tracing::trace!(agent = %self.agent, duration_secs = self.duration.as_secs_f64(), "step");
    }
}

/// An agent's request to the context pager ended, as the agent saw it. No trace line.
#[derive(Debug, Clone, Copy)]
pub struct PagerRequestFinished<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// How it ended.
    pub outcome: PagerOutcome,
}

impl PagerRequestFinished<'_> {
    /// Counts the request by outcome.
    pub fn emit(&self) {
        metrics::counter!(m::PAGER_REQUESTS, "agent" => self.agent.to_owned(),
            "outcome" => self.outcome.label())
        .increment(1);
        if self.outcome != PagerOutcome::Ok {
            tracing::debug!(agent = %self.agent, outcome = self.outcome.label(), "pager request failed");
        }
    }

    /// [`PagerRequestFinished::emit`], counting an answered request through the series
    /// `metrics` holds.
    pub fn emit_with(&self, metrics: &AgentMetrics) {
        if self.outcome == PagerOutcome::Ok {
            metrics.pager_ok.increment(1);
        } else {
            self.emit();
        }
    }
}

/// An agent step panicked; the instance stops to be restarted. Trace `agent_crash`.
#[derive(Debug, Clone, Copy)]
pub struct AgentCrashed<'a> {
    /// The instance.
    pub instance: &'a InstanceId,
    /// The panic message.
    pub panic: &'a str,
}

impl AgentCrashed<'_> {
    /// Logs a warning and writes the trace line. No metric: the restart that follows is
    /// counted by [`ChildRestarted`](super::ChildRestarted).
    pub fn emit(&self, trace: &Trace) {
        tracing::warn!(instance = %self.instance, why = %self.panic,
            "agent step panicked; stopping for restart");
        trace.emit(
            "agent_crash",
            json!({"instance": self.instance.to_string(), "panic": self.panic}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};

    fn instance() -> InstanceId {
        InstanceId {
            agent: "writer".into(),
            replica: 1,
        }
    }

    #[test]
    fn agent_state_change_moves_one_instance_between_gauges() {
        let got = metrics_of(|| {
            AgentStateChanged {
                from: None,
                to: Some(AgentState::Ready),
            }
            .emit();
            AgentStateChanged {
                from: Some(AgentState::Ready),
                to: Some(AgentState::Waiting),
            }
            .emit();
        });
        assert_eq!(got.gauge(m::AGENTS, &[("state", "ready")]), Some(0.0));
        assert_eq!(got.gauge(m::AGENTS, &[("state", "waiting")]), Some(1.0));
    }

    #[test]
    fn an_agents_resolved_series_count_what_a_lookup_counts() {
        let id = instance();
        let call = |backend| LlmCallFinished {
            agent: "writer",
            instance: &id,
            task: "wf/draft",
            attempt: 1,
            step: 0,
            backend,
            simulated: true,
            replica: 0,
            usage: Usage {
                prompt_tokens: 7,
                completion_tokens: 3,
                cached_tokens: 0,
            },
            finish_reason: "stop",
            tool_calls: 0,
            duration: Duration::from_millis(500),
        };
        let got = metrics_of(|| {
            let resolved = AgentMetrics::of("writer", "local");
            let trace = Trace::disabled();
            AgentStateChanged {
                from: None,
                to: Some(AgentState::Ready),
            }
            .emit_with(&resolved);
            AgentStateChanged {
                from: Some(AgentState::Ready),
                to: Some(AgentState::Running),
            }
            .emit_with(&resolved);
            call("local").emit_with(&trace, &resolved);
            // A call to another backend is looked up, not counted as the agent's own.
            call("fallback").emit_with(&trace, &resolved);
            AgentStepFinished {
                agent: "writer",
                duration: Duration::from_millis(250),
            }
            .emit_with(&resolved);
            for outcome in [PagerOutcome::Ok, PagerOutcome::Ok, PagerOutcome::Store] {
                PagerRequestFinished {
                    agent: "writer",
                    outcome,
                }
                .emit_with(&resolved);
            }
        });
        assert_eq!(got.gauge(m::AGENTS, &[("state", "ready")]), Some(0.0));
        assert_eq!(got.gauge(m::AGENTS, &[("state", "running")]), Some(1.0));
        for backend in ["local", "fallback"] {
            let labels = [("backend", backend), ("agent", "writer")];
            assert_eq!(
                got.counter(m::LLM_REQUESTS, &[("backend", backend), ("outcome", "ok")]),
                Some(1)
            );
            assert_eq!(got.counter(m::LLM_PROMPT_TOKENS, &labels), Some(7));
            assert_eq!(got.counter(m::LLM_COMPLETION_TOKENS, &labels), Some(3));
            assert_eq!(
                got.histogram(m::LLM_REQUEST_DURATION, &[("backend", backend)]),
                Some(vec![0.5])
            );
        }
        assert_eq!(got.counter(m::AGENT_STEPS, &[("agent", "writer")]), Some(1));
        assert_eq!(
            got.histogram(m::AGENT_STEP_DURATION, &[("agent", "writer")]),
            Some(vec![0.25])
        );
        let pager = |outcome| {
            got.counter(
                m::PAGER_REQUESTS,
                &[("agent", "writer"), ("outcome", outcome)],
            )
        };
        assert_eq!(pager("ok"), Some(2));
        assert_eq!(pager("store"), Some(1));
    }

    #[test]
    fn finished_llm_call_counts_tokens_and_traces_ok() {
        let id = instance();
        let ev = LlmCallFinished {
            agent: "writer",
            instance: &id,
            task: "wf/draft",
            attempt: 2,
            step: 3,
            backend: "local",
            simulated: true,
            replica: 1,
            usage: Usage {
                prompt_tokens: 120,
                completion_tokens: 30,
                cached_tokens: 64,
            },
            finish_reason: "stop",
            tool_calls: 0,
            duration: Duration::from_millis(250),
        };
        let mut lines = Vec::new();
        let got = metrics_of(|| lines = trace_of(|t| ev.emit(t)));
        let labels = [("backend", "local"), ("agent", "writer")];
        assert_eq!(
            got.counter(m::LLM_REQUESTS, &[("backend", "local"), ("outcome", "ok")]),
            Some(1)
        );
        assert_eq!(got.counter(m::LLM_PROMPT_TOKENS, &labels), Some(120));
        assert_eq!(got.counter(m::LLM_COMPLETION_TOKENS, &labels), Some(30));
        assert_eq!(
            got.histogram(m::LLM_REQUEST_DURATION, &[("backend", "local")]),
            Some(vec![0.25])
        );
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["event"], "llm_call");
        assert_eq!(l["ok"], true);
        assert_eq!(l["instance"], "writer#1");
        assert_eq!(l["task"], "wf/draft");
        assert_eq!(l["attempt"], 2);
        assert_eq!(l["step"], 3);
        assert_eq!(l["simulated"], true);
        assert_eq!(l["replica"], 1);
        assert_eq!(l["prompt_tokens"], 120);
        assert_eq!(l["cached_tokens"], 64);
        assert_eq!(l["completion_tokens"], 30);
        assert_eq!(l["finish_reason"], "stop");
        assert_eq!(l["tool_calls"], 0);
        assert_eq!(l["duration_secs"], 0.25);
    }

    #[test]
    fn failed_llm_call_is_labelled_by_its_error() {
        let id = instance();
        let error = LlmError::RateLimited {
            retry_after: None,
            message: "slow down".into(),
        };
        let ev = LlmCallFailed {
            agent: "writer",
            instance: &id,
            task: "wf/draft",
            attempt: 1,
            step: 0,
            backend: "local",
            error: &error,
            duration: Duration::from_millis(10),
        };
        let mut lines = Vec::new();
        let got = metrics_of(|| lines = trace_of(|t| ev.emit(t)));
        assert_eq!(
            got.counter(
                m::LLM_REQUESTS,
                &[("backend", "local"), ("outcome", "rate_limited")]
            ),
            Some(1)
        );
        assert_eq!(
            got.counter(m::LLM_REQUESTS, &[("backend", "local"), ("outcome", "ok")]),
            None
        );
        assert_eq!(lines[0]["event"], "llm_call");
        assert_eq!(lines[0]["ok"], false);
        assert_eq!(lines[0]["error"], error.to_string());
    }

    #[test]
    fn abandoned_call_counts_without_a_trace() {
        let got = metrics_of(|| LlmCallAbandoned { backend: "local" }.emit());
        assert_eq!(
            got.counter(
                m::LLM_REQUESTS,
                &[("backend", "local"), ("outcome", "abandoned")]
            ),
            Some(1)
        );
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn tool_call_label_is_bounded_and_result_traced() {
        let id = instance();
        let args = json!({"expr": "1+1"});
        let out = ToolOutput {
            content: "2".into(),
            data: json!({"value": 2}),
        };
        let err = ToolError::Unknown("teleport".into());
        let mut lines = Vec::new();
        let got = metrics_of(|| {
            lines = trace_of(|t| {
                for (tool, result) in [("calculator", Ok(&out)), ("teleport", Err(&err))] {
                    ToolCalled {
                        agent: "writer",
                        instance: &id,
                        task: "wf/draft",
                        attempt: 1,
                        step: 0,
                        tool,
                        arguments: &args,
                        result,
                        duration: Duration::from_millis(5),
                    }
                    .emit(t);
                }
            })
        });
        assert_eq!(
            got.counter(m::TOOL_CALLS, &[("tool", "calculator"), ("outcome", "ok")]),
            Some(1)
        );
        assert_eq!(
            got.counter(
                m::TOOL_CALLS,
                &[("tool", "unknown"), ("outcome", "unknown")]
            ),
            Some(1)
        );
        assert_eq!(
            got.histogram(m::TOOL_CALL_DURATION, &[("tool", "unknown")])
                .map(|v| v.len()),
            Some(1)
        );
        assert_eq!(lines[0]["event"], "tool_call");
        assert_eq!(lines[0]["tool"], "calculator");
        assert_eq!(lines[0]["arguments"]["expr"], "1+1");
        assert_eq!(
            lines[0]["result"],
            json!({"ok": true, "data": {"value": 2}})
        );
        assert_eq!(lines[1]["tool"], "teleport");
        assert_eq!(lines[1]["result"]["ok"], false);
        assert_eq!(lines[1]["result"]["error"], err.to_string());
    }

    #[test]
    fn step_and_pager_request_count_per_agent() {
        let got = metrics_of(|| {
            AgentStepFinished {
                agent: "writer",
                duration: Duration::from_secs(2),
            }
            .emit();
            PagerRequestFinished {
                agent: "writer",
                outcome: PagerOutcome::Budget,
            }
            .emit();
        });
        assert_eq!(got.counter(m::AGENT_STEPS, &[("agent", "writer")]), Some(1));
        assert_eq!(
            got.histogram(m::AGENT_STEP_DURATION, &[("agent", "writer")]),
            Some(vec![2.0])
        );
        assert_eq!(
            got.counter(
                m::PAGER_REQUESTS,
                &[("agent", "writer"), ("outcome", "budget")]
            ),
            Some(1)
        );
    }

    #[test]
    fn crash_is_traced_and_metrics_survive_a_disabled_trace() {
        let id = instance();
        let lines = trace_of(|t| {
            AgentCrashed {
                instance: &id,
                panic: "boom",
            }
            .emit(t)
        });
        assert_eq!(lines[0]["event"], "agent_crash");
        assert_eq!(lines[0]["instance"], "writer#1");
        assert_eq!(lines[0]["panic"], "boom");

        let error = LlmError::Transport("refused".into());
        let got = metrics_of(|| {
            LlmCallFailed {
                agent: "writer",
                instance: &id,
                task: "wf/draft",
                attempt: 1,
                step: 0,
                backend: "local",
                error: &error,
                duration: Duration::ZERO,
            }
            .emit(&Trace::disabled())
        });
        assert_eq!(
            got.counter(
                m::LLM_REQUESTS,
                &[("backend", "local"), ("outcome", "transport")]
            ),
            Some(1)
        );
    }
}
