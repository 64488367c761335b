//! [`run_attempt`]: the loop of one attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::calls::Attempt;
use super::control::PauseClock;
use super::replay::resume;
use super::AttemptControl;

use crate::context::PagerError;
use crate::kvcache::PromptEncoder;
use crate::llm::{ChatMessage, ChatRequest, RequestMeta, Role, Usage};
use crate::model::AgentState;
use crate::sched::{Dispatch, Outcome};

use super::{
    AgentSetup, AgentStepFinished, AgentTools, EventSink, GateRefusal, GateRequest,
    LlmCallAbandoned, LlmCallFailed, LlmCallFinished, OpenRequest, PagerOutcome,
    PagerRequestFinished, PromptError, PromptSource, StepEvent, StepPorts,
};

/// How an attempt ended, with the tokens it used.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    /// Success with output, or failure with a reason.
    pub outcome: Outcome,
    /// Tokens used by every LLM call that returned, whatever the outcome: a failed or timed
    /// out attempt spent them too.
    pub usage: Usage,
}

/// Runs one attempt of `d` within its timeout `d.timeout` (time spent suspended not counted),
/// until it ends or `control` cancels it.
pub async fn run_attempt(
    setup: &AgentSetup,
    ports: &StepPorts,
    d: &Dispatch,
    control: &AttemptControl,
) -> AttemptResult {
    let mut usage = Usage::default();
    let clock = PauseClock::default();
    let outcome = {
        let work = steps(setup, ports, d, control, &clock, &mut usage);
        tokio::pin!(work);
        let start = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let (paused, paused_now) = clock.paused(now);
            let ran = now.saturating_duration_since(start).saturating_sub(paused);
            if ran >= d.timeout && !paused_now {
                break failed(format!("attempt timed out after {:?}", d.timeout), true);
            }
            // While paused the deadline moves; look again after a while.
            let wake = now + d.timeout.saturating_sub(ran).max(Duration::from_millis(1));
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = tokio::time::sleep_until(wake) => {}
                reason = control.cancelled() => break failed(format!("cancelled: {reason}"), false),
            }
        }
    };
    AttemptResult { outcome, usage }
}

/// Whether the attempt should give way now: a preemption is requested and the slice is used.
fn preempt_due(
    setup: &AgentSetup,
    control: &AttemptControl,
    clock: &PauseClock,
    steps_run: u32,
    run_started: tokio::time::Instant,
) -> Option<String> {
    let slice = setup.slice?;
    if steps_run == 0 {
        return None;
    }
    let reason = control.preempt_requested()?;
    let now = tokio::time::Instant::now();
    let ran = now
        .saturating_duration_since(run_started)
        .saturating_sub(clock.paused(now).0);
    let used = slice.steps.is_some_and(|s| steps_run >= s) || slice.time.is_some_and(|t| ran >= t);
    used.then_some(reason)
}

/// The outcome of a call the quota gate refused.
fn refused(refusal: GateRefusal, step: u32) -> Outcome {
    if refusal.wait {
        Outcome::Yielded {
            reason: format!("waiting for quota at step {step}: {}", refusal.reason),
            resume_after: refusal.resets_in,
            preempted: false,
        }
    } else {
        failed(format!("budget exhausted: {}", refusal.reason), false)
    }
}

pub(super) fn failed(reason: String, retryable: bool) -> Outcome {
    Outcome::Failed {
        reason,
        retryable,
        retry_after: None,
    }
}

pub(super) fn pager_outcome(e: &PromptError) -> PagerOutcome {
    match e {
        PromptError::Pager(PagerError::BudgetTooSmall { .. }) => PagerOutcome::Budget,
        PromptError::Pager(PagerError::Store(_)) => PagerOutcome::Store,
        PromptError::Unavailable(_) => PagerOutcome::Unavailable,
        PromptError::Pager(_) => PagerOutcome::Other,
    }
}

fn pager_failed(sink: &dyn EventSink, agent: &str, what: &str, e: PromptError) -> Outcome {
    sink.emit(StepEvent::PagerRequest(&PagerRequestFinished {
        agent,
        outcome: pager_outcome(&e),
    }));
    failed(format!("context pager: {what}: {e}"), e.is_retryable())
}

/// The loop; `usage` accumulates as calls return, so the caller still has it when the loop
/// is cut short by the attempt timeout.
async fn steps(
    setup: &AgentSetup,
    ports: &StepPorts,
    d: &Dispatch,
    control: &AttemptControl,
    clock: &PauseClock,
    usage: &mut Usage,
) -> Outcome {
    let spec = &setup.spec;
    let agent = spec.name.as_str();
    let instance = &setup.instance;
    let sink = ports.events.as_ref();
    let backend = ports.backend.name();
    let task = d.key.to_string();
    let tools = setup
        .tools
        .get_or_init(|| AgentTools::prepare(&spec.tools, ports.tools.as_ref(), setup.tokenizer));
    // The prompt's token ids are laid out for whoever models a prefix cache.
    let wants_ids = ports.router.is_some() || ports.backend.is_simulated();
    let mut tool_ctx = setup.tool_ctx.clone();
    tool_ctx.task.clone_from(&task);

    // Tool definitions travel with every prompt; the budget must hold them too.
    let overhead_tokens = tools.overhead_tokens;
    let context = format!("{}#{}", d.key, d.attempt_total);
    let open = OpenRequest {
        agent: agent.to_owned(),
        context: context.clone(),
        task: task.clone(),
        system: spec.role.clone(),
        input: d.input.clone(),
        shared: d.shared.clone(),
        build: Some(overhead_tokens),
    };
    let mut opened = match ports.prompts.open(open).await {
        Ok(o) => o,
        Err(e) => return pager_failed(sink, agent, "cannot open the context", e),
    };
    let _close = CloseOnDrop {
        prompts: ports.prompts.clone(),
        agent: agent.to_owned(),
        context: context.clone(),
    };
    let attempt = Attempt {
        setup,
        ports,
        d,
        agent,
        task: task.clone(),
        context: context.clone(),
        tool_ctx,
        pending: Default::default(),
    };
    // Built with the open when the context opened fresh (no journal to resume from).
    let mut first_prompt = opened.first_prompt.take();
    let first_step = match resume(&attempt, &opened.journal, usage).await {
        Ok(step) => step,
        Err(outcome) => return outcome,
    };

    let run_started = tokio::time::Instant::now();
    for step in first_step..spec.max_steps {
        // The step boundary: a suspended agent's attempt waits here, context kept.
        if control.is_suspended() {
            // The context may change while the attempt waits: the prompt is built afresh.
            first_prompt = None;
            sink.emit(StepEvent::State(AgentState::Suspended));
            control.gate(clock).await;
            sink.emit(StepEvent::State(AgentState::Running));
        }
        // A preempted attempt gives way here, once its slice is used (and it ran a step, so
        // that every run makes progress).
        if let Some(reason) = preempt_due(setup, control, clock, step - first_step, run_started) {
            // The attempt continues from its journal: the steps it ran must be in it.
            if let Err(outcome) = attempt.confirm_records().await {
                return outcome;
            }
            return Outcome::Yielded {
                reason: format!("preempted at step {step}: {reason}"),
                resume_after: None,
                preempted: true,
            };
        }
        let step_started = Instant::now();
        let built = match first_prompt.take() {
            Some(b) => b,
            None => match ports.prompts.build(agent, &context, overhead_tokens).await {
                Ok(b) => b,
                Err(e) => return pager_failed(sink, agent, "cannot build the prompt", e),
            },
        };
        // The previous step's records are committed before this step's call goes out.
        if let Err(outcome) = attempt.confirm_records().await {
            return outcome;
        }
        sink.emit(StepEvent::PagerRequest(&PagerRequestFinished {
            agent,
            outcome: PagerOutcome::Ok,
        }));
        let permit = match &ports.gate {
            Some(gate) => {
                let request = GateRequest {
                    agent: agent.to_owned(),
                    instance: instance.clone(),
                    backend: backend.to_owned(),
                    workflow: d.key.workflow.clone(),
                    prompt_tokens: built.tokens,
                    max_tokens: setup.call_max_tokens,
                };
                // Time held back by a rate limit is not the attempt's: it does not count
                // against its timeout.
                clock.begin(tokio::time::Instant::now());
                let admitted = gate.admit(request).await;
                clock.end(tokio::time::Instant::now());
                match admitted {
                    Ok(p) => Some(p),
                    Err(refusal) => return refused(refusal, step),
                }
            }
            None => None,
        };
        let encoded = wants_ids
            .then(|| PromptEncoder::layout(&built.messages, &built.ids, &tools.ids))
            .flatten()
            .map(Arc::from);
        let mut request = ChatRequest {
            messages: built.messages,
            tools: tools.specs.clone(),
            encoded,
            // Under token quotas every call carries the cap it reserved: the reservation bounds it.
            max_tokens: setup
                .cap_calls
                .then(|| u32::try_from(setup.call_max_tokens).unwrap_or(u32::MAX)),
            meta: RequestMeta {
                agent: agent.to_owned(),
                task: task.clone(),
                attempt: d.attempt,
                step,
                replica: 0,
            },
        };
        sink.emit(StepEvent::State(AgentState::Waiting));
        // The lease picks the replica and lives until the call ends: it is released when it
        // drops, so errors, the attempt timeout, panics and dropped attempts release it too.
        let lease = match &ports.router {
            Some(router) => Some(router.route(&request).await),
            None => None,
        };
        let replica = lease.as_ref().map_or(0, |l| l.replica());
        request.meta.replica = replica;
        let guard = AbandonedCall {
            sink: Some(ports.events.clone()),
            backend,
        };
        let t0 = Instant::now();
        let reply = ports.backend.chat(request).await;
        guard.disarm();
        drop(lease);
        let duration = t0.elapsed();
        if let Some(permit) = permit {
            let (usage, overloaded) = match &reply {
                Ok(r) => (Some(r.usage), false),
                Err(e) => (None, e.is_overload()),
            };
            permit.settle(usage, duration, overloaded);
        }
        sink.emit(StepEvent::State(AgentState::Running));
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                sink.emit(StepEvent::LlmFailed(&LlmCallFailed {
                    agent,
                    instance,
                    task: &task,
                    attempt: d.attempt,
                    step,
                    backend,
                    error: &e,
                    duration,
                }));
                return Outcome::Failed {
                    reason: format!("LLM call to backend {backend} failed at step {step}: {e}"),
                    retryable: e.is_retryable(),
                    retry_after: e.retry_after(),
                };
            }
        };
        *usage += reply.usage;
        sink.emit(StepEvent::LlmFinished(&LlmCallFinished {
            agent,
            instance,
            task: &task,
            attempt: d.attempt,
            step,
            backend,
            simulated: ports.backend.is_simulated(),
            replica,
            usage: reply.usage,
            finish_reason: &reply.finish_reason,
            tool_calls: reply.message.tool_calls.len(),
            duration,
        }));
        let message = ChatMessage {
            role: Role::Assistant,
            ..reply.message
        };
        if let Err(outcome) = attempt
            .record_reply(step, &message, reply.usage, &reply.finish_reason, duration)
            .await
        {
            return outcome;
        }
        if message.tool_calls.is_empty() {
            sink.emit(StepEvent::StepFinished(&AgentStepFinished {
                agent,
                duration: step_started.elapsed(),
            }));
            let cut_off = reply.finish_reason == "length";
            return attempt.final_answer(step, message.content, cut_off).await;
        }
        for (index, call) in message.tool_calls.iter().enumerate() {
            if let Err(outcome) = attempt.run_call(step, index as u32, call).await {
                return outcome;
            }
        }
        sink.emit(StepEvent::StepFinished(&AgentStepFinished {
            agent,
            duration: step_started.elapsed(),
        }));
    }
    failed(
        format!("no final answer within max_steps ({})", spec.max_steps),
        false,
    )
}

/// Reports an LLM call that never returned (the attempt timed out, was cancelled or panicked)
/// when it is dropped before [`AbandonedCall::disarm`].
struct AbandonedCall<'a> {
    sink: Option<Arc<dyn EventSink>>,
    backend: &'a str,
}

impl AbandonedCall<'_> {
    fn disarm(mut self) {
        self.sink = None;
    }
}

impl Drop for AbandonedCall<'_> {
    fn drop(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.emit(StepEvent::LlmAbandoned(&LlmCallAbandoned {
                backend: self.backend,
            }));
        }
    }
}

/// Closes the attempt's context however the attempt ends (answer, failure, timeout, panic).
struct CloseOnDrop {
    prompts: Arc<dyn PromptSource>,
    agent: String,
    context: String,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.prompts.close(&self.agent, &self.context);
    }
}
