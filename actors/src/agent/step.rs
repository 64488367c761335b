//! The step loop of one attempt: build messages -> call the backend -> run tool calls ->
//! repeat, until a final answer or `max_steps`.
//!
//! The prompt is kept within the agent's `context_budget_tokens`: when it would overflow, the
//! oldest tool exchanges (an assistant message with its tool results) are dropped, never the
//! system prompt or the task. (The context pager replaces this with paging to a store.)

use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentos_runtime::llm::{
    approx_prompt_tokens, ChatMessage, ChatRequest, RequestMeta, Role, Usage,
};
use agentos_runtime::metrics as m;
use agentos_runtime::model::{AgentState, ControlBlock};
use agentos_runtime::sched::{Dispatch, Outcome};
use agentos_runtime::tools::{ToolError, BUILTIN_TOOLS};
use serde_json::json;

use super::{set_state, AgentEnv};

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
    let mut messages = vec![
        ChatMessage::system(spec.role.clone()),
        ChatMessage::user(d.input.clone()),
    ];
    let mut usage = Usage::default();
    let fail = |reason: String, retryable: bool, usage: Usage| AttemptResult {
        outcome: Outcome::Failed {
            reason,
            retryable,
            retry_after: None,
        },
        usage,
    };

    for step in 0..spec.max_steps {
        let step_started = Instant::now();
        if let Err(why) = fit_budget(&mut messages, spec.context_budget_tokens) {
            return fail(why, false, usage);
        }
        let mut request = ChatRequest {
            messages: messages.clone(),
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
        let t0 = Instant::now();
        // The lease picks the replica and lives until the call ends: it is released when it
        // drops, so errors, the attempt timeout, panics and dropped attempts release it too.
        let kv_lease = match &env.kv {
            Some(kv) => Some(kv.acquire(&request.messages, &request.tools).await),
            None => None,
        };
        request.meta.replica = kv_lease.as_ref().map_or(0, |l| l.replica);
        let guard = AbandonedCall(Some(backend_name.clone()));
        let replica = request.meta.replica;
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
            return AttemptResult {
                outcome: Outcome::Succeeded {
                    output: reply.message.content,
                },
                usage,
            };
        }
        messages.push(ChatMessage {
            role: Role::Assistant,
            ..reply.message
        });
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
            messages.push(ChatMessage::tool(call.id, content));
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

/// Drops the oldest tool exchanges until the prompt fits `budget` tokens. The system prompt and
/// the task (the first two messages) always stay. Fails when even those do not fit.
pub fn fit_budget(messages: &mut Vec<ChatMessage>, budget: u64) -> Result<(), String> {
    loop {
        let tokens = approx_prompt_tokens(messages);
        if tokens <= budget {
            return Ok(());
        }
        // Find the oldest assistant message after the pinned pair and drop it with the tool
        // results that answer it, so every tool result still follows its call.
        let Some(start) = messages
            .iter()
            .skip(2)
            .position(|m| m.role == Role::Assistant)
            .map(|i| i + 2)
        else {
            return Err(format!(
                "prompt needs {tokens} tokens but the context budget is {budget}, and nothing more can be dropped"
            ));
        };
        let end = messages[start + 1..]
            .iter()
            .position(|m| m.role != Role::Tool)
            .map(|i| start + 1 + i)
            .unwrap_or(messages.len());
        messages.drain(start..end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_budget_drops_oldest_exchange_first() {
        let big = "word ".repeat(200);
        let mut msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("task"),
            ChatMessage::assistant(big.clone()),
            ChatMessage::tool("c1", big.clone()),
            ChatMessage::assistant("short"),
            ChatMessage::tool("c2", "ok"),
        ];
        fit_budget(&mut msgs, 100).unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[2].content, "short");
        assert_eq!(msgs[3].tool_call_id.as_deref(), Some("c2"));
    }

    #[test]
    fn fit_budget_fails_when_pinned_messages_overflow() {
        let mut msgs = vec![
            ChatMessage::system("sys"),
            ChatMessage::user("word ".repeat(500)),
        ];
        let err = fit_budget(&mut msgs, 100).unwrap_err();
        assert!(err.contains("context budget is 100"), "{err}");
        assert_eq!(msgs.len(), 2);
    }
}
