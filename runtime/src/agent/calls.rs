//! One attempt's tool calls and journal records: what the loop and the replay share.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use crate::context::{JournalMeta, PageMessage, ToolDetail};
use crate::durable::{interrupted_result, CallId, SideEffect};
use crate::llm::{ChatMessage, ToolCall, Usage};
use crate::sched::{Dispatch, Outcome};
use crate::tools::{ToolContext, ToolError};

use super::step::failed;
use super::{
    AgentSetup, AtMostOnceInterrupted, EventSink, PagerRequestFinished, PromptError, SharedOutput,
    StepEvent, StepPorts, ToolCalled, Wait,
};

/// What every step of one attempt shares.
pub(super) struct Attempt<'a> {
    pub setup: &'a AgentSetup,
    pub ports: &'a StepPorts,
    pub d: &'a Dispatch,
    pub agent: &'a str,
    /// `workflow/task`.
    pub task: String,
    /// `workflow/task#attempt_total`.
    pub context: String,
    /// The tool context (task filled in); each call gets its own identity.
    pub tool_ctx: ToolContext,
    /// Records queued under `sync` whose commit is confirmed at the next step boundary (see
    /// [`Attempt::confirm_records`]), each with what it records.
    pub pending: Mutex<Vec<(String, PendingRecord)>>,
}

/// A queued record's answer.
pub(super) type PendingRecord = BoxFuture<'static, Result<(), PromptError>>;

/// Warns that a record (`what`: "the reply of step 2") was not stored and nothing waited for
/// it: the step core, or a source that reports the failures of [`Wait::Queued`] records.
pub fn not_stored(agent: &str, what: &str, e: &PromptError) {
    tracing::warn!(agent, record = %what, error = %e,
        "journal record not stored; a resumed attempt would do this step again");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A record that was refused or lost while the loop waits for each one (`sync`).
fn record_failed(sink: &dyn EventSink, agent: &str, what: &str, e: PromptError) -> Outcome {
    sink.emit(StepEvent::PagerRequest(&PagerRequestFinished {
        agent,
        outcome: super::step::pager_outcome(&e),
    }));
    failed(
        format!(
            "context pager: cannot record {what} in the journal (runtime.durability: sync), so \
             a restart could not resume from it: {e}"
        ),
        true,
    )
}

impl Attempt<'_> {
    pub fn sink(&self) -> &dyn EventSink {
        self.ports.events.as_ref()
    }

    fn meta(&self, step: u32, duration: Duration) -> JournalMeta {
        JournalMeta {
            step,
            instance: self.setup.instance_label.clone(),
            task: self.task.clone(),
            attempt: self.d.attempt,
            at_ms: now_ms(),
            duration_ms: duration.as_millis() as u64,
        }
    }

    /// The side-effect class of `tool`: the agent's override, else the tool's own, else
    /// at-most-once (the safe guess for a tool nobody classified).
    pub fn class_of(&self, tool: &str) -> SideEffect {
        self.setup
            .spec
            .side_effects
            .get(tool)
            .copied()
            .or_else(|| self.ports.tools.class(tool))
            .unwrap_or(SideEffect::AtMostOnce)
    }

    /// Waits for a record under `sync`, or, when `defer`, leaves its commit to be confirmed
    /// at the next step boundary ([`Attempt::confirm_records`]); otherwise (made with
    /// [`Wait::Queued`]) lets it commit in the background: it is queued, in order, and
    /// nothing is woken when it is stored.
    async fn record(
        &self,
        what: String,
        mut record: PendingRecord,
        defer: bool,
    ) -> Result<(), Outcome> {
        if self.setup.durability.waits() {
            if !defer {
                return record
                    .await
                    .map_err(|e| record_failed(self.sink(), self.agent, &what, e));
            }
            // Polled once now, so that a record waiting for room in a full queue takes its
            // place before the requests made after it.
            if let std::task::Poll::Ready(done) = futures::poll!(record.as_mut()) {
                return done.map_err(|e| record_failed(self.sink(), self.agent, &what, e));
            }
            self.pending_records().push((what, record));
            return Ok(());
        }
        // Queued without an answer (`Wait::Queued`): this waits only for room in a full
        // queue, and the source reports a record it could not store.
        if let Err(e) = record.await {
            not_stored(self.agent, &what, &e);
        }
        Ok(())
    }

    /// How a record's future answers in this attempt's durability mode.
    fn wait(&self) -> Wait {
        if self.setup.durability.waits() {
            Wait::Answer
        } else {
            Wait::Queued
        }
    }

    /// The records whose commit is still to be confirmed.
    fn pending_records(&self) -> std::sync::MutexGuard<'_, Vec<(String, PendingRecord)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under `sync`, waits for every deferred record's commit: called at each step boundary
    /// (once the next prompt is built, before the next LLM call) and before an answer counts.
    /// A record the pager could not store fails the attempt, as if it had been awaited.
    /// Requests are served in order, so by the time the next prompt comes back they are
    /// normally answered already: one round trip per step instead of one per record.
    pub async fn confirm_records(&self) -> Result<(), Outcome> {
        let pending = std::mem::take(&mut *self.pending_records());
        for (what, record) in pending {
            record
                .await
                .map_err(|e| record_failed(self.sink(), self.agent, &what, e))?;
        }
        Ok(())
    }

    /// Records an LLM reply of `step`. Under `sync` its commit is awaited before any of its
    /// calls runs, unless every call is pure (running a pure call again after a crash harms
    /// nothing) or it calls none (the answer counts only once it is confirmed): then it is
    /// confirmed at the next step boundary.
    pub async fn record_reply(
        &self,
        step: u32,
        reply: &ChatMessage,
        usage: Usage,
        finish_reason: &str,
        duration: Duration,
    ) -> Result<(), Outcome> {
        let defer = reply
            .tool_calls
            .iter()
            .all(|c| self.class_of(&c.name) == SideEffect::Pure);
        let record = self.ports.prompts.record_reply(
            self.agent,
            &self.context,
            self.meta(step, duration),
            PageMessage::encoded(reply.clone(), self.setup.tokenizer),
            usage,
            finish_reason,
            self.wait(),
        );
        self.record(format!("the reply of step {step}"), record, defer)
            .await
    }

    async fn record_result(
        &self,
        step: u32,
        index: u32,
        call: &ToolCall,
        content: String,
        outcome: &str,
        duration: Duration,
    ) -> Result<(), Outcome> {
        let detail = ToolDetail {
            tool: call.name.clone(),
            class: self.class_of(&call.name),
            outcome: Some(outcome.to_owned()),
        };
        let record = self.ports.prompts.record_tool_result(
            self.agent,
            &self.context,
            self.meta(step, duration),
            index,
            PageMessage::encoded(
                ChatMessage::tool(call.id.clone(), content),
                self.setup.tokenizer,
            ),
            detail,
            self.wait(),
        );
        // A result's commit is confirmed at the next step boundary under `sync`: the call has
        // run, and a later at-most-once call's start marker, which is awaited, is queued
        // after it.
        self.record(
            format!("the result of {} (step {step}, call {index})", call.name),
            record,
            true,
        )
        .await
    }

    /// Runs call `index` of `step` and records its result. An at-most-once call runs only
    /// once its start marker is committed (whatever the durability). A tool that is not
    /// granted, unknown, given bad arguments, failing or hanging yields an error result.
    pub async fn run_call(&self, step: u32, index: u32, call: &ToolCall) -> Result<(), Outcome> {
        let t0 = Instant::now();
        let class = self.class_of(&call.name);
        let result = if !self.setup.spec.tools.contains(&call.name) {
            Err(ToolError::NotGranted(call.name.clone()))
        } else if let Some(why) = &call.invalid_arguments {
            // Counted as a step the model can correct, never a failed attempt.
            Err(ToolError::InvalidArguments(why.clone()))
        } else if self.ports.tools.spec(&call.name).is_none() {
            Err(ToolError::Unknown(call.name.clone()))
        } else {
            match self.start(step, index, call, class).await? {
                Err(e) => Err(e),
                Ok(()) => self.call_tool(step, index, call).await,
            }
        };
        sink_tool_called(self, step, call, result.as_ref(), t0.elapsed());
        let (content, outcome) = match result {
            Ok(out) => (out.content, "ok"),
            Err(e) => (format!("error: {e}"), e.outcome_label()),
        };
        self.record_result(step, index, call, content, outcome, t0.elapsed())
            .await
    }

    /// Commits the start marker of an at-most-once call. `Ok(Err(_))`: the call must not run
    /// (the marker was not stored and the loop does not wait for records).
    async fn start(
        &self,
        step: u32,
        index: u32,
        call: &ToolCall,
        class: SideEffect,
    ) -> Result<Result<(), ToolError>, Outcome> {
        if class != SideEffect::AtMostOnce {
            return Ok(Ok(()));
        }
        let marker = self.ports.prompts.record_tool_start(
            self.agent,
            &self.context,
            self.meta(step, Duration::ZERO),
            index,
            &call.name,
            class,
        );
        match marker.await {
            Ok(()) => Ok(Ok(())),
            Err(e) if self.setup.durability.waits() => Err(record_failed(
                self.sink(),
                self.agent,
                &format!("the start of {} (step {step}, call {index})", call.name),
                e,
            )),
            Err(e) => Ok(Err(ToolError::Failed(format!(
                "not run: its start could not be recorded ({e}), and an at-most-once call \
                 runs only once it is; try again later"
            )))),
        }
    }

    async fn call_tool(
        &self,
        step: u32,
        index: u32,
        call: &ToolCall,
    ) -> Result<crate::tools::ToolOutput, ToolError> {
        let mut ctx = self.tool_ctx.clone();
        ctx.call = Some(CallId {
            context: self.context.clone(),
            step,
            call: index,
        });
        let timeout = self.setup.tool_timeout;
        match self
            .ports
            .tools
            .call(&call.name, &ctx, call.arguments.clone())
        {
            None => Err(ToolError::Unknown(call.name.clone())),
            Some(running) => tokio::time::timeout(timeout, running)
                .await
                .unwrap_or(Err(ToolError::Timeout(timeout))),
        }
    }

    /// An at-most-once call that started before a restart and has no recorded result: it is
    /// not run again; the model is told its outcome is unknown.
    pub async fn interrupted(&self, step: u32, index: u32, call: &ToolCall) -> Result<(), Outcome> {
        let id = CallId {
            context: self.context.clone(),
            step,
            call: index,
        }
        .to_string();
        self.sink()
            .emit(StepEvent::CallInterrupted(&AtMostOnceInterrupted {
                agent: self.agent,
                tool: &call.name,
                task: &self.task,
                call: &id,
            }));
        let content = interrupted_result(&call.name);
        self.record_result(step, index, call, content, "interrupted", Duration::ZERO)
            .await
    }

    /// Ends the attempt with a final answer: refused when it was cut off before it said
    /// anything, else shared with the workflow and returned.
    pub async fn final_answer(&self, step: u32, content: String, cut_off: bool) -> Outcome {
        let (agent, task) = (self.agent, &self.task);
        if cut_off && content.trim().is_empty() {
            return failed(
                format!(
                    "the reply at step {step} was cut off at max_tokens \
                     (finish_reason: length) before it said anything"
                ),
                true,
            );
        }
        if cut_off {
            tracing::warn!(agent, task = %task, step,
                "final answer was cut off at max_tokens (finish_reason: length)");
        }
        let share = SharedOutput {
            workflow: self.d.key.workflow.clone(),
            key: task.clone(),
            owner: agent.to_owned(),
            text: content.clone(),
        };
        // Queued now, so it comes before any dependent's open. A failure costs only the
        // shared page for unquoted dependents (the output still reaches them through their
        // input templates), and its answer would come before its commit in any mode: in
        // every mode nothing waits for its result.
        if let Err(e) = self.ports.prompts.share(share).await {
            tracing::warn!(agent, task, error = %e, "task output not shared");
        }
        if let Err(outcome) = self.confirm_records().await {
            return outcome;
        }
        Outcome::Succeeded { output: content }
    }
}

fn sink_tool_called(
    a: &Attempt<'_>,
    step: u32,
    call: &ToolCall,
    result: Result<&crate::tools::ToolOutput, &ToolError>,
    duration: Duration,
) {
    a.sink().emit(StepEvent::ToolCalled(&ToolCalled {
        agent: a.agent,
        instance: &a.setup.instance,
        task: &a.task,
        attempt: a.d.attempt,
        step,
        tool: &call.name,
        arguments: &call.arguments,
        result,
        duration,
    }));
}
