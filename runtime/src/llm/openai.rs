//! OpenAI-compatible chat-completions backend.
//!
//! Speaks `POST {base_url}/chat/completions` as served by OpenAI, vLLM, the llama.cpp server,
//! Ollama and LM Studio. It sends the conversation and the granted tools, reads `tool_calls`
//! and `usage`, and maps every failure to a typed [`LlmError`]:
//!
//! | what happened                     | error                        | retryable |
//! |-----------------------------------|------------------------------|-----------|
//! | no reply within `request_timeout` | [`LlmError::Timeout`]        | yes       |
//! | HTTP 429 (`Retry-After` honoured) | [`LlmError::RateLimited`]    | yes       |
//! | HTTP 5xx (`Retry-After` honoured) | [`LlmError::Server`]         | yes       |
//! | other HTTP 4xx                    | [`LlmError::Rejected`]       | no        |
//! | body not a chat completion        | [`LlmError::Malformed`]      | yes       |
//! | connection refused, reset, DNS    | [`LlmError::Transport`]      | yes       |
//! | API key variable unset or empty   | [`LlmError::MissingApiKey`]  | no        |
//!
//! Tool-call arguments are parsed leniently: raw control characters inside strings, a code
//! fence and trailing commas are repaired. Arguments that still do not parse do not fail the
//! call: the [`ToolCall`] carries the raw text and an
//! [`invalid_arguments`](ToolCall::invalid_arguments) message for the model, which says when
//! the reply was cut off at `max_tokens` (`finish_reason: length`).
//!
//! Every reply that carries rate-limit figures (`x-ratelimit-*`, `Retry-After`; successes,
//! 429s and 5xx alike) is reported to the backend's [`RateLimitObserver`], if it has one
//! ([`OpenAiBackend::with_observer`]), before the call returns; see [`super::ratelimit`].
//!
//! The API key is read from the environment variable named in the config at call time, sent
//! as a sensitive `Authorization: Bearer` header and never logged. Reply bodies are capped at
//! [`MAX_BODY_BYTES`]; nothing a server sends can panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{json, Value};

use super::ratelimit::{self, parse_retry_after, RateLimitObserver};
use super::{
    approx_prompt_tokens, approx_tokens, ChatMessage, ChatRequest, ChatResponse, LlmBackend,
    LlmError, Role, ToolCall, Usage,
};
use crate::config::OpenAiSettings;

mod arguments;

/// Largest reply body accepted; a longer one is [`LlmError::Malformed`].
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes read from the body of an error reply (the rest is ignored).
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Most characters of a non-JSON error body kept in an error message.
const MAX_MESSAGE_CHARS: usize = 500;

/// Most characters of unparseable tool-call arguments quoted back to the model.
const MAX_RAW_ARGUMENT_CHARS: usize = 200;

/// An OpenAI-compatible backend. Cheap to share: one HTTP client (and connection pool) per
/// backend, cloned into each request's future.
#[derive(Debug)]
pub struct OpenAiBackend {
    name: String,
    inner: Arc<Inner>,
    observer: Option<Observer>,
}

/// The rate-limit observer, shared with every request's future.
#[derive(Clone)]
struct Observer(Arc<dyn RateLimitObserver>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimitObserver")
    }
}

#[derive(Debug)]
struct Inner {
    settings: OpenAiSettings,
    /// `{base_url}/chat/completions` of every replica, by replica index.
    urls: Vec<String>,
    client: reqwest::Client,
}

impl OpenAiBackend {
    /// Builds the backend; the API key is read from the environment at call time.
    ///
    /// Fails with [`LlmError::Transport`] only if the HTTP client cannot be built (TLS setup).
    pub fn new(name: &str, settings: OpenAiSettings) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .map_err(|e| LlmError::Transport(format!("cannot build HTTP client: {}", chain(&e))))?;
        let bases = if settings.base_urls.is_empty() {
            std::slice::from_ref(&settings.base_url)
        } else {
            settings.base_urls.as_slice()
        };
        let urls = bases
            .iter()
            .map(|b| format!("{}/chat/completions", b.trim_end_matches('/')))
            .collect();
        Ok(Self {
            name: name.into(),
            inner: Arc::new(Inner {
                settings,
                urls,
                client,
            }),
            observer: None,
        })
    }

    /// Reports the rate-limit figures of every reply that carries any (successes, 429s and
    /// 5xx alike) to `observer`, before the call returns. Without one, nothing is parsed.
    pub fn with_observer(mut self, observer: Arc<dyn RateLimitObserver>) -> Self {
        self.observer = Some(Observer(observer));
        self
    }
}

impl LlmBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "openai"
    }
    fn is_simulated(&self) -> bool {
        false
    }
    fn chat(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        let inner = Arc::clone(&self.inner);
        let backend = self.name.clone();
        let observer = self.observer.clone();
        Box::pin(async move {
            let started = Instant::now();
            let observe = |headers: &HeaderMap, status: u16| {
                if let Some(Observer(observer)) = &observer {
                    observe_headers(observer.as_ref(), &backend, headers, status);
                }
            };
            let result = inner.call(&request, observe).await;
            match &result {
                Ok(reply) => tracing::debug!(
                    backend = %backend,
                    agent = %request.meta.agent,
                    task = %request.meta.task,
                    prompt_tokens = reply.usage.prompt_tokens,
                    completion_tokens = reply.usage.completion_tokens,
                    finish_reason = %reply.finish_reason,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "chat completion"
                ),
                Err(e) => tracing::debug!(
                    backend = %backend,
                    agent = %request.meta.agent,
                    task = %request.meta.task,
                    outcome = e.outcome_label(),
                    error = %e,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "chat completion failed"
                ),
            }
            result
        })
    }
}

impl Inner {
    /// Sends one request; `observe` sees the reply's headers and status as soon as they
    /// arrive, whatever the status.
    async fn call(
        &self,
        request: &ChatRequest,
        observe: impl FnOnce(&HeaderMap, u16),
    ) -> Result<ChatResponse, LlmError> {
        let auth = match &self.settings.api_key_env {
            Some(var) => Some(auth_header(var, |v| std::env::var(v).ok())?),
            None => None,
        };
        let mut builder = self
            .client
            .post(&self.urls[request.meta.replica % self.urls.len()])
            .json(&request_body(&self.settings, request));
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let mut response = builder.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        observe(response.headers(), status.as_u16());
        if status.is_success() {
            if response
                .content_length()
                .is_some_and(|len| len > MAX_BODY_BYTES as u64)
            {
                return Err(too_large());
            }
            let (body, complete) = read_body(&mut response, MAX_BODY_BYTES)
                .await
                .map_err(|e| self.transport(&e))?;
            if !complete {
                return Err(too_large());
            }
            return parse_reply(&body, request);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The status decides the error; a body that cannot be read only loses the message.
        let body = read_body(&mut response, MAX_ERROR_BODY_BYTES)
            .await
            .map(|(body, _)| body)
            .unwrap_or_default();
        Err(status_error(
            status.as_u16(),
            retry_after,
            error_message(&body, status.canonical_reason()),
        ))
    }

    fn transport(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.settings.request_timeout)
        } else {
            LlmError::Transport(chain(e))
        }
    }
}

/// The `Authorization` header for the key held in `var`, looked up with `lookup`.
fn auth_header(
    var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<HeaderValue, LlmError> {
    let key = lookup(var)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| LlmError::MissingApiKey(var.to_string()))?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
        // Never echo the key itself.
        LlmError::Transport(format!(
            "the API key in {var} contains characters not allowed in an HTTP header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Reads the body in chunks, stopping after `limit` bytes. Returns the bytes read and whether
/// the body was read to its end within the limit.
async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn too_large() -> LlmError {
    LlmError::Malformed(format!(
        "reply body is larger than {} MiB",
        MAX_BODY_BYTES / (1024 * 1024)
    ))
}

/// An error and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The JSON body of a chat-completions request.
fn request_body(settings: &OpenAiSettings, request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(wire_message).collect();
    let mut body = json!({
        "model": settings.model,
        "messages": messages,
    });
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    if let Some(max_tokens) = request.max_tokens.or(settings.max_tokens) {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = settings.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

fn wire_message(m: &ChatMessage) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let content = if m.role == Role::Assistant && m.content.is_empty() && !m.tool_calls.is_empty() {
        Value::Null
    } else {
        Value::String(m.content.clone())
    };
    let mut wire = json!({ "role": role, "content": content });
    if !m.tool_calls.is_empty() {
        let calls: Vec<Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                // Servers parse the arguments of earlier calls (llama.cpp fails the request on
                // invalid JSON), so a call whose arguments did not parse goes back as `{}`; its
                // tool error quotes what the model wrote.
                let arguments = match c.invalid_arguments {
                    Some(_) => "{}".to_string(),
                    None => c.arguments.to_string(),
                };
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": arguments },
                })
            })
            .collect();
        wire["tool_calls"] = Value::Array(calls);
    }
    if let Some(id) = &m.tool_call_id {
        wire["tool_call_id"] = json!(id);
    }
    wire
}

/// Tells `observer` the rate-limit figures in `headers`, if there are any.
fn observe_headers(
    observer: &dyn RateLimitObserver,
    backend: &str,
    headers: &HeaderMap,
    status: u16,
) {
    let info = ratelimit::from_headers(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        status,
    );
    if !info.is_empty() {
        observer.observe(backend, &info);
    }
}

/// The typed error for a non-2xx status.
fn status_error(status: u16, retry_after: Option<Duration>, message: String) -> LlmError {
    match status {
        429 => LlmError::RateLimited {
            retry_after,
            message,
        },
        500..=599 => LlmError::Server {
            status,
            retry_after,
            message,
        },
        400..=499 => LlmError::Rejected { status, message },
        // 1xx and 3xx (redirects are followed, so one left over is unusable) are not answers.
        _ => LlmError::Malformed(format!("unexpected HTTP status {status}: {message}")),
    }
}

/// The server's message from an error body: `error.message` (or `error` as a string, or a
/// top-level `message`) of a JSON body, else the text truncated to 500 characters.
fn error_message(body: &[u8], reason: Option<&str>) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let found = json
            .pointer("/error/message")
            .and_then(Value::as_str)
            .or_else(|| json.get("error").and_then(Value::as_str))
            .or_else(|| json.get("message").and_then(Value::as_str));
        if let Some(message) = found {
            return message.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return reason.unwrap_or("(empty body)").to_string();
    }
    truncate_chars(text, MAX_MESSAGE_CHARS)
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

// Reply structs: only the fields we read; unknown fields are ignored.

#[derive(Deserialize)]
struct WireReply {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireReplyMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireReplyMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A string of JSON per the protocol; some servers send the object itself.
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Parses a 2xx body into a [`ChatResponse`]; usage missing from the reply is estimated.
fn parse_reply(body: &[u8], request: &ChatRequest) -> Result<ChatResponse, LlmError> {
    let reply: WireReply = serde_json::from_slice(body)
        .map_err(|e| LlmError::Malformed(format!("reply is not a chat completion: {e}")))?;
    let choice = reply
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Malformed("reply has no choices".into()))?;
    let finish_reason = choice.finish_reason.unwrap_or_else(|| "stop".into());
    let tool_calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            let id = call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{i}"));
            tool_call(
                id,
                call.function.name,
                call.function.arguments,
                &finish_reason,
            )
        })
        .collect();
    let message = ChatMessage {
        role: Role::Assistant,
        content: choice.message.content.unwrap_or_default(),
        tool_calls,
        tool_call_id: None,
    };
    let usage = reply.usage.unwrap_or(WireUsage {
        prompt_tokens: None,
        completion_tokens: None,
        prompt_tokens_details: None,
    });
    let usage = Usage {
        prompt_tokens: usage
            .prompt_tokens
            .unwrap_or_else(|| approx_prompt_tokens(&request.messages)),
        completion_tokens: usage
            .completion_tokens
            .unwrap_or_else(|| approx_completion_tokens(&message)),
        cached_tokens: usage
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
    };
    Ok(ChatResponse {
        message,
        usage,
        finish_reason,
    })
}

/// One tool call of the reply. Arguments are a string of JSON per the protocol (parsed
/// leniently), or the object itself; empty or missing ones mean `{}`. Arguments that do not
/// parse give a call with [`ToolCall::invalid_arguments`] set.
fn tool_call(id: String, name: String, raw: Value, finish_reason: &str) -> ToolCall {
    let text = match raw {
        Value::String(text) if text.trim().is_empty() => return ToolCall::new(id, name, json!({})),
        Value::String(text) => text,
        Value::Null => return ToolCall::new(id, name, json!({})),
        other => return ToolCall::new(id, name, other),
    };
    match arguments::parse(&text) {
        Ok(arguments) => ToolCall::new(id, name, arguments),
        Err(e) => {
            let cut_off = finish_reason == "length";
            tracing::debug!(tool = %name, error = %e, cut_off, "tool call arguments are not valid JSON");
            let message = invalid_arguments_message(&e, &text, cut_off);
            ToolCall::with_invalid_arguments(id, name, text, message)
        }
    }
}

/// What the model is told about arguments that did not parse.
fn invalid_arguments_message(error: &serde_json::Error, raw: &str, cut_off: bool) -> String {
    let raw = truncate_chars(raw, MAX_RAW_ARGUMENT_CHARS);
    if cut_off {
        format!(
            "arguments are not valid JSON: {error}; the reply was cut off at max_tokens \
             (finish_reason: length), so they are incomplete: send shorter arguments (raw: {raw})"
        )
    } else {
        format!("arguments are not valid JSON: {error} (raw: {raw})")
    }
}

fn approx_completion_tokens(message: &ChatMessage) -> u64 {
    approx_tokens(&message.content)
        + message
            .tool_calls
            .iter()
            .map(|c| approx_tokens(&c.name) + approx_tokens(&c.arguments.to_string()))
            .sum::<u64>()
}

#[cfg(test)]
mod tests;
