//! The OpenAI chat-completions wire format, as the simulator reads and writes it.
//!
//! Requests are read leniently where clients differ (content as a string, `null` or a list of
//! text parts; `developer` as a system role; unknown fields ignored) and strictly where the
//! meaning would be lost (wrong types, unknown roles, tool results without `tool_call_id`):
//! those are HTTP 400 with a message naming the field.

use agentos_runtime::llm::{approx_tokens, ChatMessage, ChatResponse, Role, ToolCall, ToolSpec};
use serde::Deserialize;
use serde_json::{json, Value};

/// A parsed `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct WireRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Tools offered to the model.
    pub tools: Vec<ToolSpec>,
    /// `max_tokens` or `max_completion_tokens`.
    pub max_tokens: Option<u32>,
    /// The client's `user` field, if any (used as the simulated agent name).
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    messages: Vec<Message>,
    #[serde(default)]
    tools: Option<Vec<Tool>>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: ToolFunction,
}

#[derive(Deserialize)]
struct ToolFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// Parses a request body; the error is the message of an HTTP 400.
pub fn parse_request(body: &[u8]) -> Result<WireRequest, String> {
    let body: Body =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if body.stream == Some(true) {
        return Err("stream: true is not supported by the simulator; send stream: false".into());
    }
    if body.messages.is_empty() {
        return Err("messages must not be empty".into());
    }
    let messages = body
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let tools = body
        .tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if t.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(format!("tools[{i}].type must be \"function\""));
            }
            Ok(ToolSpec {
                name: t.function.name,
                description: t.function.description.unwrap_or_default(),
                parameters: t.function.parameters.unwrap_or_else(|| json!({})),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WireRequest {
        messages,
        tools,
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        user: body.user.filter(|u| !u.is_empty()),
    })
}

fn message(i: usize, m: Message) -> Result<ChatMessage, String> {
    let role = match m.role.as_str() {
        "system" | "developer" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(format!(
            "messages[{i}].role must be system, developer, user, assistant or tool, got {other:?}"
        ))
        }
    };
    let content = match m.content {
        Value::Null => String::new(),
        Value::String(s) => s,
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.get("text").and_then(Value::as_str).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(""),
        _ => {
            return Err(format!(
                "messages[{i}].content must be a string, null or a list of content parts"
            ))
        }
    };
    let tool_calls = m
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let arguments = match c.function.arguments {
                Value::String(s) if s.trim().is_empty() => json!({}),
                Value::String(s) => serde_json::from_str(&s).map_err(|e| {
                    format!(
                        "messages[{i}].tool_calls: arguments of {:?} are not JSON: {e}",
                        c.id
                    )
                })?,
                Value::Null => json!({}),
                other => other,
            };
            Ok(ToolCall::new(c.id, c.function.name, arguments))
        })
        .collect::<Result<Vec<_>, String>>()?;
    if role == Role::Tool && m.tool_call_id.is_none() {
        return Err(format!("messages[{i}]: a tool message needs tool_call_id"));
    }
    Ok(ChatMessage {
        role,
        content,
        tool_calls,
        tool_call_id: m.tool_call_id,
    })
}

/// The JSON body of a successful reply.
pub fn reply_body(id: &str, model: &str, created: u64, reply: &ChatResponse) -> Value {
    let m = &reply.message;
    let mut message = json!({
        "role": "assistant",
        "content": if m.content.is_empty() && !m.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(m.content.clone())
        },
    });
    if !m.tool_calls.is_empty() {
        message["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                // Arguments cut off at max_tokens go out as the raw text they were cut to.
                let arguments = match (&c.invalid_arguments, &c.arguments) {
                    (Some(_), Value::String(raw)) => raw.clone(),
                    _ => c.arguments.to_string(),
                };
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": arguments},
                })
            })
            .collect();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "agentos-simulator",
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": reply.finish_reason,
        }],
        "usage": {
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "total_tokens": reply.usage.prompt_tokens + reply.usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.usage.cached_tokens},
        },
    })
}

/// An OpenAI-style error body.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// OpenAI's error body for a request refused by a rate limit: `kind` is `requests` or
/// `tokens`, the code `rate_limit_exceeded`.
pub fn rate_limit_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null,
                     "code": "rate_limit_exceeded"}})
}

/// Cuts a reply down to `max_tokens` completion tokens, as a model stops at `max_tokens`:
/// text is cut (counted with the simulator's approximation, [`approx_tokens`]), a tool call
/// whose arguments do not fit keeps the raw text they were cut to (sent as is, so the client
/// sees invalid JSON, as from a real model) and later calls are dropped; the usage then says
/// `max_tokens` completion tokens and `finish_reason` is `length`. A reply within the limit is
/// left alone. Returns whether it was cut.
pub fn cap_completion(reply: &mut ChatResponse, max_tokens: u32) -> bool {
    let max = u64::from(max_tokens);
    if reply.usage.completion_tokens <= max {
        return false;
    }
    let mut budget = max;
    let content = cut_to_tokens(&reply.message.content, budget);
    budget -= approx_tokens(content).min(budget);
    reply.message.content = content.to_string();
    let calls = std::mem::take(&mut reply.message.tool_calls);
    for call in calls {
        let name = approx_tokens(&call.name);
        if name >= budget {
            break;
        }
        budget -= name;
        let raw = call.arguments.to_string();
        let cut = cut_to_tokens(&raw, budget);
        if cut.len() == raw.len() {
            budget -= approx_tokens(cut).min(budget);
            reply.message.tool_calls.push(call);
            continue;
        }
        let message =
            format!("arguments were cut off at max_tokens ({max_tokens}): finish_reason is length");
        reply
            .message
            .tool_calls
            .push(ToolCall::with_invalid_arguments(
                call.id, call.name, cut, message,
            ));
        break;
    }
    reply.usage.completion_tokens = max;
    reply.finish_reason = "length".into();
    true
}

/// The longest prefix of `text` (at a character boundary) that [`approx_tokens`] counts as
/// at most `max` tokens.
fn cut_to_tokens(text: &str, max: u64) -> &str {
    if approx_tokens(text) <= max {
        return text;
    }
    // At most 4 bytes a token ...
    let mut end = usize::try_from(max.saturating_mul(4))
        .unwrap_or(usize::MAX)
        .min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = &text[..end];
    // ... and at most one word a token.
    let words = cut.split_whitespace().count() as u64;
    if words > max {
        let mut seen = 0u64;
        let mut in_word = false;
        for (i, c) in cut.char_indices() {
            let space = c.is_whitespace();
            if !space && !in_word {
                if seen == max {
                    cut = &cut[..i];
                    break;
                }
                seen += 1;
            }
            in_word = !space;
        }
    }
    cut
}

/// Deterministic arguments for `tool`, derived from `prompt` (the latest user message):
/// every property in the tool's JSON schema gets a value by type: strings the prompt
/// (cut to the property's `maxLength`, else 2,000 characters), numbers and integers the
/// prompt's length, booleans `true`, enums their first value, arrays `[]`, objects `{}`.
pub fn derive_arguments(tool: &ToolSpec, prompt: &str) -> Value {
    let mut args = serde_json::Map::new();
    let Some(props) = tool.parameters.get("properties").and_then(Value::as_object) else {
        return Value::Object(args);
    };
    for (name, schema) in props {
        let value = if let Some(first) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            first.clone()
        } else {
            match schema
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("string")
            {
                "integer" | "number" => json!(prompt.chars().count()),
                "boolean" => json!(true),
                "array" => json!([]),
                "object" => json!({}),
                "null" => Value::Null,
                _ => {
                    let max = schema
                        .get("maxLength")
                        .and_then(Value::as_u64)
                        .map_or(2_000, |m| m as usize);
                    Value::String(prompt.chars().take(max).collect())
                }
            }
        };
        args.insert(name.clone(), value);
    }
    Value::Object(args)
}
