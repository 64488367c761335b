//! The step loop of one attempt: build the prompt -> call the backend -> run tool calls ->
//! repeat, until a final answer or `max_steps`.
//!
//! Every prompt is built by the `ContextPager` within the agent's context budget: the attempt
//! opens a context (system prompt and task input pinned), appends each exchange (the
//! assistant message with its tool results) as one page group, and asks for a prompt before
//! every LLM call. On success the output is shared with the workflow; the context is closed
//! when the attempt ends, however it ends (its pages stay in the store).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use agentos_runtime::llm::{ChatMessage, ChatRequest, RequestMeta, Role, Usage};
use agentos_runtime::metrics as m;
use agentos_runtime::model::{AgentState, ControlBlock};
use agentos_runtime::sched::{Dispatch, Outcome};
use agentos_runtime::tools::{ToolError, BUILTIN_TOOLS};
use serde_json::json;

use super::{set_state, AgentEnv};
use crate::pager::{
    AppendPages, BuildPrompt, CloseContext, ContextPager, OpenContext, PagerFailure, SharePage,
};
use crate::registry::Registry;

/// How an attempt ended, with the tokens it used.
#[derive(Debug)]
pub struct AttemptResult {
    /// Success with output, or failure with a reason.
    pub outcome: Outcome,
    /// Tokens used.
    pub usage: Usage,
}

/// Runs one attempt of `d` on this agent.
pub async fn run_attempt(
    env: Arc<AgentEnv>,
    cb: Arc<Mutex<ControlBlock>>,
    d: Dispatch,
) -> AttemptResult {
    let spec = &env.spec;
    let backend_name = env.backend.name().to_owned();
    let agent = spec.name.clone();
    let task = d.key.to_string();
    let tools = env.tools.specs(&spec.tools);
    let mut tool_ctx = env.tool_ctx.clone();
    tool_ctx.task = task.clone();
    let mut usage = Usage::default();
    let fail = |reason: String, retryable: bool, usage: Usage| AttemptResult {
        outcome: Outcome::Failed {
            reason,
            retryable,
            retry_after: None,
        },
        usage,
    };

    let context = format!("{}#{}", d.key, d.attempt_total);
    let pager_fail = |what: &str, e: PagerFailure, usage: Usage| {
        metrics::counter!(m::PAGER_REQUESTS, "agent" => agent.clone(), "outcome" => e.outcome_label())
            .increment(1);
        fail(
            format!("context pager: {what}: {e}"),
            e.is_retryable(),
            usage,
        )
    };
    let open = OpenContext {
        agent: agent.clone(),
        context: context.clone(),
        task: task.clone(),
        system: spec.role.clone(),
        input: d.input.clone(),
    };
    if let Err(e) = ask(&env.registry, open).await {
        return pager_fail("cannot open the context", e, usage);
    }
    let _close = CloseOnDrop {
        registry: env.registry.clone(),
        agent: agent.clone(),
        context: context.clone(),
    };
    // Tool definitions travel with every prompt; the budget must hold them too.
    let overhead_tokens = if tools.is_empty() {
        0
    } else {
        serde_json::to_string(&tools).map_or(0, |j| env.tokenizer.count(&j) as u64)
    };

    for step in 0..spec.max_steps {
        let step_started = Instant::now();
        let build = BuildPrompt {
            agent: agent.clone(),
            context: context.clone(),
            overhead_tokens,
            want: Vec::new(),
        };
        let built = match ask(&env.registry, build).await {
            Ok(b) => b,
            Err(e) => return pager_fail("cannot build the prompt", e, usage),
        };
        metrics::counter!(m::PAGER_REQUESTS, "agent" => agent.clone(), "outcome" => "ok")
            .increment(1);
        let mut request = ChatRequest {
            messages: built.messages,
            tools: tools.clone(),
            max_tokens: None,
            meta: RequestMeta {
                agent: agent.clone(),
                task: task.clone(),
                attempt: d.attempt,
                step,
                replica: 0,
            },
        };
        set_state(&cb, AgentState::Waiting);
        // The lease picks the replica and lives until the call ends: it is released when it
        // drops, so errors, the attempt timeout, panics and dropped attempts release it too.
        let kv_lease = match &env.kv {
            Some(kv) => Some(kv.acquire(&request.messages, &request.tools).await),
            None => None,
        };
        request.meta.replica = kv_lease.as_ref().map_or(0, |l| l.replica);
        let guard = AbandonedCall(Some(backend_name.clone()));
        let replica = request.meta.replica;
        let t0 = Instant::now();
        let reply = env.backend.chat(request).await;
        guard.disarm();
        drop(kv_lease);
        let llm_secs = t0.elapsed().as_secs_f64();
        set_state(&cb, AgentState::Running);
        metrics::histogram!(m::LLM_REQUEST_DURATION, "backend" => backend_name.clone())
            .record(llm_secs);
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!(m::LLM_REQUESTS, "backend" => backend_name.clone(), "outcome" => e.outcome_label())
                    .increment(1);
                env.trace.emit(
                    "llm_call",
                    json!({"agent": agent, "instance": env.instance.to_string(), "task": task, "attempt": d.attempt,
                           "step": step, "backend": backend_name, "ok": false, "error": e.to_string(),
                           "duration_secs": llm_secs}),
                );
                let outcome = Outcome::Failed {
                    reason: format!(
                        "LLM call to backend {backend_name} failed at step {step}: {e}"
                    ),
                    retryable: e.is_retryable(),
                    retry_after: e.retry_after(),
                };
                return AttemptResult { outcome, usage };
            }
        };
        metrics::counter!(m::LLM_REQUESTS, "backend" => backend_name.clone(), "outcome" => "ok")
            .increment(1);
        metrics::counter!(m::LLM_PROMPT_TOKENS, "backend" => backend_name.clone(), "agent" => agent.clone())
            .increment(reply.usage.prompt_tokens);
        metrics::counter!(m::LLM_COMPLETION_TOKENS, "backend" => backend_name.clone(), "agent" => agent.clone())
            .increment(reply.usage.completion_tokens);
        usage += reply.usage;
        {
            let mut c = cb.lock().unwrap_or_else(|e| e.into_inner());
            c.steps += 1;
            c.llm_calls += 1;
            c.tokens_in += reply.usage.prompt_tokens;
            c.tokens_out += reply.usage.completion_tokens;
        }
        env.trace.emit(
            "llm_call",
            json!({"agent": agent, "instance": env.instance.to_string(), "task": task, "attempt": d.attempt,
                   "step": step, "backend": backend_name, "simulated": env.backend.is_simulated(), "ok": true,
                   "replica": replica, "prompt_tokens": reply.usage.prompt_tokens, "cached_tokens": reply.usage.cached_tokens, "completion_tokens": reply.usage.completion_tokens,
                   "finish_reason": reply.finish_reason, "tool_calls": reply.message.tool_calls.len(),
                   "duration_secs": llm_secs}),
        );
        let calls = reply.message.tool_calls.clone();
        if calls.is_empty() {
            record_step(&agent, step_started);
            let share = SharePage {
                workflow: d.key.workflow.clone(),
                key: task.clone(),
                owner: agent.clone(),
                text: reply.message.content.clone(),
            };
            if let Err(e) = ask(&env.registry, share).await {
                // The output still reaches dependents through their input templates; only the
                // shared page for unquoted dependents is missing.
                tracing::warn!(agent = %agent, task = %task, error = %e, "task output not shared");
            }
            return AttemptResult {
                outcome: Outcome::Succeeded {
                    output: reply.message.content,
                },
                usage,
            };
        }
        let mut exchange = vec![ChatMessage {
            role: Role::Assistant,
            ..reply.message
        }];
        for call in calls {
            let t0 = Instant::now();
            let result = if !spec.tools.iter().any(|t| t == &call.name) {
                Err(ToolError::NotGranted(call.name.clone()))
            } else {
                match env.tools.get(&call.name) {
                    Some(tool) => tool.call(&tool_ctx, call.arguments.clone()).await,
                    None => Err(ToolError::Unknown(call.name.clone())),
                }
            };
            let secs = t0.elapsed().as_secs_f64();
            // Labels stay bounded even when a model invents tool names.
            let label = BUILTIN_TOOLS
                .iter()
                .copied()
                .find(|t| *t == call.name)
                .unwrap_or("unknown");
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.outcome_label(),
            };
            metrics::counter!(m::TOOL_CALLS, "tool" => label, "outcome" => outcome).increment(1);
            metrics::histogram!(m::TOOL_CALL_DURATION, "tool" => label).record(secs);
            cb.lock().unwrap_or_else(|e| e.into_inner()).tool_calls += 1;
            let (content, trace_result) = match result {
                Ok(out) => (out.content, json!({"ok": true, "data": out.data})),
                Err(e) => (
                    format!("error: {e}"),
                    json!({"ok": false, "error": e.to_string()}),
                ),
            };
            env.trace.emit(
                "tool_call",
                json!({"agent": agent, "instance": env.instance.to_string(), "task": task, "attempt": d.attempt,
                       "step": step, "tool": call.name, "arguments": call.arguments, "result": trace_result,
                       "duration_secs": secs}),
            );
            exchange.push(ChatMessage::tool(call.id, content));
        }
        let append = AppendPages {
            agent: agent.clone(),
            context: context.clone(),
            messages: exchange,
        };
        if let Err(e) = ask(&env.registry, append).await {
            return pager_fail("cannot append the tool exchange", e, usage);
        }
        record_step(&agent, step_started);
    }
    fail(
        format!("no final answer within max_steps ({})", spec.max_steps),
        false,
        usage,
    )
}

/// Counts an LLM call that never returned (the attempt timed out or the call panicked) as
/// `outcome="abandoned"` when it is dropped before [`AbandonedCall::disarm`].
struct AbandonedCall(Option<String>);

impl AbandonedCall {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonedCall {
    fn drop(&mut self) {
        if let Some(backend) = self.0.take() {
            metrics::counter!(m::LLM_REQUESTS, "backend" => backend, "outcome" => "abandoned")
                .increment(1);
        }
    }
}

fn record_step(agent: &str, started: Instant) {
    metrics::counter!(m::AGENT_STEPS, "agent" => agent.to_owned()).increment(1);
    metrics::histogram!(m::AGENT_STEP_DURATION, "agent" => agent.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// Sends `msg` to the context pager and waits for its answer.
async fn ask<M, R>(registry: &Registry, msg: M) -> Result<R, PagerFailure>
where
    M: Message<Result = Result<R, PagerFailure>> + Send + 'static,
    R: Send + 'static,
    ContextPager: Handler<M>,
{
    let Some(pager) = registry.pager() else {
        return Err(PagerFailure::Unavailable("not running".into()));
    };
    match pager.send(msg).await {
        Ok(r) => r,
        Err(e) => Err(PagerFailure::Unavailable(format!("{e} (restarting?)"))),
    }
}

/// Closes the attempt's context however the attempt ends (answer, failure, timeout, panic).
struct CloseOnDrop {
    registry: Arc<Registry>,
    agent: String,
    context: String,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(pager) = self.registry.pager() {
            // Rare and must not be lost: do_send ignores the mailbox bound.
            pager.do_send(CloseContext {
                agent: std::mem::take(&mut self.agent),
                context: std::mem::take(&mut self.context),
            });
        }
    }
}
