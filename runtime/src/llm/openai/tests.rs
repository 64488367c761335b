use std::time::Duration;

use serde_json::json;

use super::*;
use crate::llm::{RequestMeta, ToolSpec};

fn settings() -> OpenAiSettings {
    OpenAiSettings {
        base_url: "http://localhost:8000/v1/".into(),
        base_urls: Vec::new(),
        model: "test-model".into(),
        api_key_env: None,
        request_timeout: Duration::from_secs(30),
        max_tokens: Some(256),
        temperature: Some(0.5),
    }
}

fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        messages,
        tools: Vec::new().into(),
        max_tokens: None,
        meta: RequestMeta::default(),
        encoded: None,
    }
}

#[test]
fn url_trims_trailing_slash() {
    let backend = OpenAiBackend::new("local", settings()).unwrap();
    assert_eq!(
        backend.inner.urls,
        ["http://localhost:8000/v1/chat/completions"]
    );
    assert_eq!(backend.kind(), "openai");
    assert!(!backend.is_simulated());
}

#[test]
fn each_replica_has_its_endpoint() {
    let mut s = settings();
    s.base_urls = vec!["http://a:1/v1".into(), "http://b:2/v1/".into()];
    let backend = OpenAiBackend::new("local", s).unwrap();
    assert_eq!(
        backend.inner.urls,
        [
            "http://a:1/v1/chat/completions",
            "http://b:2/v1/chat/completions"
        ]
    );
}

#[test]
fn parses_cached_tokens_from_prompt_token_details() {
    let body = json!({
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 2,
                  "prompt_tokens_details": {"cached_tokens": 32}},
    });
    let reply = parse_reply(body.to_string().as_bytes(), &request(vec![])).unwrap();
    assert_eq!(reply.usage.cached_tokens, 32);
}

#[test]
fn request_body_carries_messages_tools_and_limits() {
    let mut req = request(vec![
        ChatMessage::system("be brief"),
        ChatMessage::user("add 2 and 3"),
        ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![ToolCall::new(
                "call_1",
                "calculator",
                json!({"expr": "2+3"}),
            )],
            tool_call_id: None,
        },
        ChatMessage::tool("call_1", "5"),
    ]);
    req.tools = vec![ToolSpec {
        name: "calculator".into(),
        description: "Evaluates arithmetic.".into(),
        parameters: json!({"type": "object", "properties": {"expr": {"type": "string"}}}),
    }]
    .into();
    let body = request_body(&settings(), &req);
    assert_eq!(
        body,
        json!({
            "model": "test-model",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "add 2 and 3"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": "{\"expr\":\"2+3\"}"},
                }]},
                {"role": "tool", "content": "5", "tool_call_id": "call_1"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "calculator",
                "description": "Evaluates arithmetic.",
                "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
            }}],
            "max_tokens": 256,
            "temperature": 0.5,
        })
    );
}

#[test]
fn request_body_omits_empty_tools_and_unset_options() {
    let mut s = settings();
    s.max_tokens = None;
    s.temperature = None;
    let body = request_body(&s, &request(vec![ChatMessage::user("hi")]));
    assert_eq!(
        body,
        json!({"model": "test-model", "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[test]
fn request_max_tokens_overrides_settings() {
    let mut req = request(vec![ChatMessage::user("hi")]);
    req.max_tokens = Some(7);
    assert_eq!(request_body(&settings(), &req)["max_tokens"], json!(7));
}

#[test]
fn assistant_text_with_tool_calls_keeps_its_text() {
    let m = ChatMessage {
        role: Role::Assistant,
        content: "let me check".into(),
        tool_calls: vec![ToolCall::new("a", "t", json!({}))],
        tool_call_id: None,
    };
    assert_eq!(wire_message(&m)["content"], json!("let me check"));
    assert_eq!(
        wire_message(&ChatMessage::assistant(""))["content"],
        json!("")
    );
}

#[test]
fn parses_text_reply_with_usage() {
    let body = json!({
        "id": "x", "object": "chat.completion", "extra": [1, 2],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                     "finish_reason": "length", "logprobs": null}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    });
    let reply = parse_reply(body.to_string().as_bytes(), &request(vec![])).unwrap();
    assert_eq!(reply.message, ChatMessage::assistant("hello"));
    assert_eq!(reply.finish_reason, "length");
    assert_eq!(
        reply.usage,
        Usage {
            prompt_tokens: 12,
            completion_tokens: 3,
            cached_tokens: 0,
        }
    );
}

#[test]
fn parses_tool_calls_with_null_content() {
    let body = json!({
        "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "read_file", "arguments": "{\"path\": \"src/lib.rs\"}"}},
            {"type": "function", "function": {"name": "list_dir", "arguments": ""}},
            {"id": "call_c", "type": "function",
             "function": {"name": "calculator", "arguments": {"expr": "1+1"}}},
        ]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9},
    });
    let reply = parse_reply(body.to_string().as_bytes(), &request(vec![])).unwrap();
    assert_eq!(reply.message.role, Role::Assistant);
    assert_eq!(reply.message.content, "");
    assert_eq!(reply.finish_reason, "tool_calls");
    assert_eq!(
        reply.message.tool_calls,
        vec![
            ToolCall::new("call_a", "read_file", json!({"path": "src/lib.rs"})),
            ToolCall::new("call_1", "list_dir", json!({})),
            ToolCall::new("call_c", "calculator", json!({"expr": "1+1"})),
        ]
    );
}

/// A reply with one `calculator` call whose `arguments` string is `arguments`.
fn reply_with_arguments(arguments: &str, finish_reason: &str) -> Vec<u8> {
    json!({"choices": [{"message": {"content": null, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "calculator", "arguments": arguments}}
    ]}, "finish_reason": finish_reason}]})
    .to_string()
    .into_bytes()
}

fn only_call(body: &[u8]) -> ToolCall {
    let reply = parse_reply(body, &request(vec![])).expect("the reply parses");
    let [call] = <[ToolCall; 1]>::try_from(reply.message.tool_calls).expect("one call");
    call
}

#[test]
fn raw_control_characters_inside_argument_strings_parse() {
    // What a small model served by llama.cpp sends: a raw newline and tab inside a string.
    let call = only_call(&reply_with_arguments(
        "{\"expression\": \"2 +\n\t3\"}",
        "tool_calls",
    ));
    assert_eq!(
        call,
        ToolCall::new("c", "calculator", json!({"expression": "2 +\n\t3"}))
    );
}

#[test]
fn fenced_arguments_with_trailing_commas_parse() {
    let call = only_call(&reply_with_arguments(
        "```json\n{\"expression\": \"1+1\",}\n```\n",
        "tool_calls",
    ));
    assert_eq!(call.arguments, json!({"expression": "1+1"}));
    assert_eq!(call.invalid_arguments, None);
}

#[test]
fn valid_arguments_are_unchanged() {
    let text = r#"{"expression": "2 + 3", "note": "tab\tand \"quotes\""}"#;
    let call = only_call(&reply_with_arguments(text, "tool_calls"));
    assert_eq!(
        call,
        ToolCall::new(
            "c",
            "calculator",
            serde_json::from_str::<Value>(text).unwrap()
        )
    );
}

#[test]
fn truncated_arguments_at_length_say_max_tokens() {
    let raw = "{\"expression\": \"(1234 * 5678";
    let call = only_call(&reply_with_arguments(raw, "length"));
    assert_eq!(call.arguments, json!(raw), "the raw text is kept");
    let message = call.invalid_arguments.expect("invalid arguments");
    assert!(
        message.starts_with("arguments are not valid JSON: "),
        "{message}"
    );
    assert!(message.contains("EOF while parsing"), "{message}");
    assert!(message.contains("cut off at max_tokens"), "{message}");
    assert!(message.contains("finish_reason: length"), "{message}");
    assert!(message.ends_with(&format!("(raw: {raw})")), "{message}");
}

#[test]
fn garbage_arguments_give_invalid_arguments_and_the_reply_still_parses() {
    let body = json!({"choices": [{"message": {"content": "thinking", "tool_calls": [
        {"id": "bad", "function": {"name": "calculator", "arguments": "calculator(6*7)"}},
        {"id": "good", "function": {"name": "calculator", "arguments": "{\"expression\": \"1\"}"}},
    ]}, "finish_reason": "tool_calls"}]});
    let reply = parse_reply(body.to_string().as_bytes(), &request(vec![])).unwrap();
    assert_eq!(reply.message.content, "thinking");
    let [bad, good] = <[ToolCall; 2]>::try_from(reply.message.tool_calls).unwrap();
    assert_eq!(bad.id, "bad");
    assert_eq!(bad.arguments, json!("calculator(6*7)"));
    let message = bad.invalid_arguments.expect("invalid arguments");
    assert!(
        message.starts_with("arguments are not valid JSON: expected value"),
        "{message}"
    );
    assert!(message.ends_with("(raw: calculator(6*7))"), "{message}");
    assert!(!message.contains("max_tokens"), "not cut off: {message}");
    assert_eq!(
        good,
        ToolCall::new("good", "calculator", json!({"expression": "1"}))
    );
}

#[test]
fn invalid_arguments_quote_at_most_200_characters() {
    let raw = format!("{{\"expression\": {}", "9".repeat(1000));
    let call = only_call(&reply_with_arguments(&raw, "stop"));
    let message = call.invalid_arguments.expect("invalid arguments");
    let quoted = message.split_once("(raw: ").unwrap().1;
    assert_eq!(quoted, format!("{}…)", &raw[..MAX_RAW_ARGUMENT_CHARS]));
    assert_eq!(call.arguments, json!(raw), "the whole raw text is kept");
}

#[test]
fn a_call_with_invalid_arguments_goes_back_as_an_empty_object() {
    let m = ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![ToolCall::with_invalid_arguments(
            "c",
            "calculator",
            "{\"expression\": ",
            "arguments are not valid JSON",
        )],
        tool_call_id: None,
    };
    assert_eq!(
        wire_message(&m)["tool_calls"][0]["function"]["arguments"],
        json!("{}")
    );
}

#[test]
fn invalid_arguments_survive_serde_and_are_omitted_when_unset() {
    let call = ToolCall::with_invalid_arguments("c", "calculator", "{", "why");
    let text = serde_json::to_string(&call).unwrap();
    assert_eq!(serde_json::from_str::<ToolCall>(&text).unwrap(), call);
    let valid = serde_json::to_value(ToolCall::new("c", "calculator", json!({}))).unwrap();
    assert_eq!(
        valid,
        json!({"id": "c", "name": "calculator", "arguments": {}})
    );
    let old: ToolCall =
        serde_json::from_value(json!({"id": "c", "name": "t", "arguments": {}})).unwrap();
    assert_eq!(old.invalid_arguments, None);
}

#[test]
fn missing_choices_are_malformed() {
    for body in [r#"{"choices": []}"#, r#"{"object": "chat.completion"}"#] {
        assert_eq!(
            parse_reply(body.as_bytes(), &request(vec![])),
            Err(LlmError::Malformed("reply has no choices".into()))
        );
    }
}

#[test]
fn invalid_json_is_malformed_with_serde_message() {
    for body in [
        "not json",
        "",
        r#"{"choices": [{"message": {"content": 5}}]}"#,
    ] {
        match parse_reply(body.as_bytes(), &request(vec![])) {
            Err(LlmError::Malformed(m)) => {
                assert!(m.starts_with("reply is not a chat completion: "), "{m}");
                assert!(m.contains("line 1"), "serde message expected: {m}");
            }
            other => panic!("expected Malformed for {body:?}, got {other:?}"),
        }
    }
}

#[test]
fn missing_usage_is_estimated_and_finish_reason_defaults_to_stop() {
    let messages = vec![
        ChatMessage::system("you are terse"),
        ChatMessage::user("say something"),
    ];
    let body = json!({"choices": [{"message": {"content": "something quite short"}}]});
    let reply = parse_reply(body.to_string().as_bytes(), &request(messages.clone())).unwrap();
    assert_eq!(reply.finish_reason, "stop");
    assert_eq!(reply.usage.prompt_tokens, approx_prompt_tokens(&messages));
    assert_eq!(
        reply.usage.completion_tokens,
        approx_tokens("something quite short")
    );

    // Partial usage: the missing half is estimated.
    let body = json!({"choices": [{"message": {"content": "ok"}, "finish_reason": null}],
                      "usage": {"prompt_tokens": 40}});
    let reply = parse_reply(body.to_string().as_bytes(), &request(messages)).unwrap();
    assert_eq!(reply.finish_reason, "stop");
    assert_eq!(reply.usage.prompt_tokens, 40);
    assert_eq!(reply.usage.completion_tokens, approx_tokens("ok"));
}

#[test]
fn status_maps_to_typed_errors() {
    let e = status_error(429, Some(Duration::from_secs(1)), "slow down".into());
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert!(matches!(
        status_error(503, None, "m".into()),
        LlmError::Server { status: 503, .. }
    ));
    let e = status_error(503, Some(Duration::from_secs(3)), "overloaded".into());
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    let e = status_error(404, None, "no such model".into());
    assert!(matches!(e, LlmError::Rejected { status: 404, .. }));
    assert!(!e.is_retryable());
    assert!(matches!(
        status_error(302, None, "m".into()),
        LlmError::Malformed(_)
    ));
}

#[test]
fn error_message_prefers_server_json() {
    let body = br#"{"error": {"message": "model not found", "type": "invalid_request_error"}}"#;
    assert_eq!(error_message(body, None), "model not found");
    assert_eq!(
        error_message(br#"{"error": "bad things"}"#, None),
        "bad things"
    );
    assert_eq!(
        error_message(b"  upstream unavailable \n", None),
        "upstream unavailable"
    );
    assert_eq!(error_message(b"", Some("Bad Gateway")), "Bad Gateway");
    let long = "é".repeat(2000);
    let message = error_message(long.as_bytes(), None);
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(message.ends_with('…'));
}

#[test]
fn api_key_is_required_when_configured() {
    assert_eq!(
        auth_header("KEY_VAR", |_| None).unwrap_err(),
        LlmError::MissingApiKey("KEY_VAR".into())
    );
    assert_eq!(
        auth_header("KEY_VAR", |_| Some("  ".into())).unwrap_err(),
        LlmError::MissingApiKey("KEY_VAR".into())
    );
    let value = auth_header("KEY_VAR", |v| (v == "KEY_VAR").then(|| "sk-test".into())).unwrap();
    assert_eq!(value.to_str().unwrap(), "Bearer sk-test");
    assert!(value.is_sensitive());
    match auth_header("KEY_VAR", |_| Some("sk-\nsecret".into())) {
        Err(LlmError::Transport(m)) => assert!(!m.contains("secret"), "{m}"),
        other => panic!("expected Transport, got {other:?}"),
    }
}

/// Serves each connection on `127.0.0.1:0` one canned HTTP/1.1 reply (`status`, extra
/// `headers`, `body`) after reading the request, then closes it. Returns the base URL.
async fn canned_server(status: u16, headers: &[(&str, &str)], body: Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let body = body.to_string();
    let mut reply = format!(
        "HTTP/1.1 {status} Canned\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        reply.push_str(&format!("{name}: {value}\r\n"));
    }
    reply.push_str("\r\n");
    reply.push_str(&body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                // Read the head, then as many body bytes as it declares.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let wanted = loop {
                    let Ok(n @ 1..) = stream.read(&mut buf).await else {
                        return;
                    };
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        break end + 4 + length;
                    }
                };
                while request.len() < wanted {
                    let Ok(n @ 1..) = stream.read(&mut buf).await else {
                        return;
                    };
                    request.extend_from_slice(&buf[..n]);
                }
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

/// Remembers every report it is given.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, crate::llm::RateLimitInfo)>>);

impl RateLimitObserver for Recorder {
    fn observe(&self, backend: &str, info: &crate::llm::RateLimitInfo) {
        self.0.lock().unwrap().push((backend.to_string(), *info));
    }
}

fn backend_at(base_url: String, observer: &Arc<Recorder>) -> OpenAiBackend {
    let mut s = settings();
    s.base_url = base_url;
    s.request_timeout = Duration::from_secs(20);
    OpenAiBackend::new("edge", s)
        .unwrap()
        .with_observer(Arc::clone(observer) as Arc<dyn RateLimitObserver>)
}

#[tokio::test]
async fn a_success_with_rate_limit_headers_reaches_the_observer() {
    let url = canned_server(
        200,
        &[
            ("X-RateLimit-Limit-Requests", "500"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-remaining-tokens", "29750"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-reset-tokens", "1s"),
        ],
        json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let backend = backend_at(url, &recorder);
    let reply = backend
        .chat(request(vec![ChatMessage::user("hi")]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "hi");
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(
            "edge".to_string(),
            crate::llm::RateLimitInfo {
                limit_requests: Some(500),
                limit_tokens: Some(30_000),
                remaining_requests: Some(499),
                remaining_tokens: Some(29_750),
                reset_requests: Some(Duration::from_millis(120)),
                reset_tokens: Some(Duration::from_secs(1)),
                retry_after: None,
                status: 200,
            }
        )]
    );
}

#[tokio::test]
async fn a_429_with_retry_after_and_a_reset_reaches_the_observer() {
    let url = canned_server(
        429,
        &[
            ("retry-after", "7"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ],
        json!({"error": {"message": "Rate limit reached for tokens", "type": "tokens",
                         "code": "rate_limit_exceeded"}}),
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let backend = backend_at(url, &recorder);
    let err = backend
        .chat(request(vec![ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit reached for tokens".into(),
        }
    );
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(
            "edge".to_string(),
            crate::llm::RateLimitInfo {
                remaining_tokens: Some(0),
                reset_tokens: Some(Duration::from_secs(360)),
                retry_after: Some(Duration::from_secs(7)),
                status: 429,
                ..Default::default()
            }
        )]
    );
}

#[tokio::test]
async fn a_5xx_with_headers_is_observed_and_a_reply_without_any_is_not() {
    let url = canned_server(
        503,
        &[("retry-after", "2")],
        json!({"error": {"message": "overloaded"}}),
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let err = backend_at(url, &recorder)
        .chat(request(vec![ChatMessage::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1.status, 503);
    assert_eq!(seen[0].1.retry_after, Some(Duration::from_secs(2)));

    let url = canned_server(
        200,
        &[],
        json!({"choices": [{"message": {"content": "plain"}}]}),
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let reply = backend_at(url, &recorder)
        .chat(request(vec![ChatMessage::user("hi")]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "plain");
    assert!(
        recorder.0.lock().unwrap().is_empty(),
        "no figures, no report"
    );
}
