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
        tools: Vec::new(),
        max_tokens: None,
        meta: RequestMeta::default(),
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
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "calculator".into(),
                arguments: json!({"expr": "2+3"}),
            }],
            tool_call_id: None,
        },
        ChatMessage::tool("call_1", "5"),
    ]);
    req.tools = vec![ToolSpec {
        name: "calculator".into(),
        description: "Evaluates arithmetic.".into(),
        parameters: json!({"type": "object", "properties": {"expr": {"type": "string"}}}),
    }];
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
        tool_calls: vec![ToolCall {
            id: "a".into(),
            name: "t".into(),
            arguments: json!({}),
        }],
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
            ToolCall {
                id: "call_a".into(),
                name: "read_file".into(),
                arguments: json!({"path": "src/lib.rs"}),
            },
            ToolCall {
                id: "call_1".into(),
                name: "list_dir".into(),
                arguments: json!({}),
            },
            ToolCall {
                id: "call_c".into(),
                name: "calculator".into(),
                arguments: json!({"expr": "1+1"}),
            },
        ]
    );
}

#[test]
fn unparseable_arguments_are_malformed() {
    let body = json!({"choices": [{"message": {"content": null, "tool_calls": [
        {"id": "c", "function": {"name": "calculator", "arguments": "{\"expr\": "}}
    ]}}]});
    let err = parse_reply(body.to_string().as_bytes(), &request(vec![])).unwrap_err();
    match err {
        LlmError::Malformed(m) => assert!(
            m.starts_with("tool call `calculator` has unparseable arguments: "),
            "{m}"
        ),
        other => panic!("expected Malformed, got {other:?}"),
    }
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
fn retry_after_accepts_delta_seconds_only() {
    assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
    assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("NaN"), None);
    assert_eq!(parse_retry_after("inf"), None);
    assert_eq!(parse_retry_after("1e300"), None);
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
