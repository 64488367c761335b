//! The `openai` backend against a local chat-completions server.
//!
//! Each test starts [`MockServer`] on `127.0.0.1:0` with one canned reply, sends one request
//! through `OpenAiBackend`, and checks both the typed result and what the server received.
//! The workflow tests give the server a script of replies, one per request, and run a whole
//! workflow against it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agentos_runtime::config::OpenAiSettings;
use agentos_runtime::llm::openai::{OpenAiBackend, MAX_BODY_BYTES};
use agentos_runtime::llm::{
    ChatMessage, ChatRequest, LlmBackend, LlmError, RequestMeta, Role, ToolCall, ToolSpec, Usage,
};
use agentos_runtime::model::TaskState;
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::helpers::{parse, run, task};

/// Upper bound on any single test's call; far above what a passing call needs.
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// The reply the mock server sends to every request.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    delay: Duration,
    /// Send the body without `Content-Length` (chunked transfer encoding).
    chunked: bool,
}

impl Canned {
    fn json(status: u16, body: Value) -> Self {
        Self::text(status, body.to_string()).header("content-type", "application/json")
    }
    fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: false,
        }
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the mock server saw of one request.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the backend sends JSON")
    }
}

/// A minimal HTTP/1.1 chat-completions server on an ephemeral port.
struct MockServer {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl MockServer {
    async fn start(canned: Canned) -> Self {
        Self::start_script(vec![canned]).await
    }

    /// A server that answers its n-th request with `script[n]`, and any later one with the
    /// last reply.
    async fn start_script(script: Vec<Canned>) -> Self {
        assert!(!script.is_empty(), "a script needs a reply");
        let script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = Arc::clone(&script);
                let log = Arc::clone(&log);
                let service =
                    service_fn(move |req| respond(req, Arc::clone(&script), Arc::clone(&log)));
                tokio::spawn(async move {
                    // The client may hang up early (timeouts, oversized bodies); that is fine.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            base_url: format!("http://{addr}/v1/"),
            received,
            accept_loop,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }

    fn settings(&self) -> OpenAiSettings {
        OpenAiSettings {
            base_url: self.base_url.clone(),
            base_urls: Vec::new(),
            model: "mock-model".into(),
            api_key_env: None,
            request_timeout: Duration::from_secs(10),
            max_tokens: Some(512),
            temperature: None,
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn respond(
    req: Request<Incoming>,
    script: Arc<Vec<Canned>>,
    log: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<CannedBody>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (authorization, content_type) = (header("authorization"), header("content-type"));
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let canned = {
        let mut log = log.lock().expect("not poisoned");
        log.push(Received {
            method,
            path,
            authorization,
            content_type,
            body,
        });
        script[(log.len() - 1).min(script.len() - 1)].clone()
    };
    if !canned.delay.is_zero() {
        // Simulates a slow model; the client is expected to give up first.
        tokio::time::sleep(canned.delay).await;
    }
    let mut response = Response::builder().status(canned.status);
    for (name, value) in &canned.headers {
        response = response.header(*name, value);
    }
    Ok(response
        .body(CannedBody {
            exact_len: (!canned.chunked).then_some(canned.body.len() as u64),
            data: Some(canned.body),
        })
        .expect("canned responses are valid"))
}

/// A one-frame body whose length is announced (`Content-Length`) or not (chunked).
struct CannedBody {
    data: Option<Bytes>,
    exact_len: Option<u64>,
}

impl Body for CannedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.exact_len.map(SizeHint::with_exact).unwrap_or_default()
    }
}

fn calculator() -> ToolSpec {
    ToolSpec {
        name: "calculator".into(),
        description: "Evaluates an arithmetic expression.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"expr": {"type": "string"}},
            "required": ["expr"],
        }),
    }
}

fn simple_request() -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
        tools: Vec::new().into(),
        max_tokens: None,
        encoded: None,
        meta: RequestMeta {
            agent: "planner".into(),
            task: "wf/plan".into(),
            attempt: 1,
            step: 0,
            replica: 0,
        },
    }
}

/// Sends `request` to a server answering `canned` with `settings` adjusted by `adjust`.
async fn call_with(
    canned: Canned,
    request: ChatRequest,
    adjust: impl FnOnce(&mut OpenAiSettings),
) -> (
    Result<agentos_runtime::llm::ChatResponse, LlmError>,
    MockServer,
) {
    let server = MockServer::start(canned).await;
    let mut settings = server.settings();
    adjust(&mut settings);
    let backend = OpenAiBackend::new("mock", settings).expect("client builds");
    let result = tokio::time::timeout(CALL_DEADLINE, backend.chat(request))
        .await
        .expect("the backend answers within the deadline");
    (result, server)
}

async fn call(
    canned: Canned,
) -> (
    Result<agentos_runtime::llm::ChatResponse, LlmError>,
    MockServer,
) {
    call_with(canned, simple_request(), |_| {}).await
}

#[tokio::test]
async fn reply_with_tool_calls_round_trips() {
    let reply = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "mock-model",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": "{\"expr\": \"6*7\"}"},
                }],
            },
            "finish_reason": "tool_calls",
        }],
        "usage": {"prompt_tokens": 57, "completion_tokens": 12, "total_tokens": 69},
    });
    let mut request = simple_request();
    request.messages = vec![
        ChatMessage::system("You do arithmetic."),
        ChatMessage::user("What is 2+3, then 6*7?"),
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
    ];
    request.tools = vec![calculator()].into();
    request.max_tokens = Some(64);

    let (result, server) = call_with(Canned::json(200, reply), request, |_| {}).await;
    let response = result.expect("a valid reply parses");

    assert_eq!(response.finish_reason, "tool_calls");
    assert_eq!(response.message.role, Role::Assistant);
    assert_eq!(response.message.content, "");
    assert_eq!(
        response.message.tool_calls,
        vec![ToolCall::new(
            "call_abc",
            "calculator",
            json!({"expr": "6*7"})
        )]
    );
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 57,
            completion_tokens: 12,
            cached_tokens: 0,
        }
    );

    let received = server.received();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.content_type.as_deref(), Some("application/json"));
    assert_eq!(sent.authorization, None, "no key configured, no header");
    assert_eq!(
        sent.json(),
        json!({
            "model": "mock-model",
            "messages": [
                {"role": "system", "content": "You do arithmetic."},
                {"role": "user", "content": "What is 2+3, then 6*7?"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": "{\"expr\":\"2+3\"}"},
                }]},
                {"role": "tool", "content": "5", "tool_call_id": "call_1"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "calculator",
                "description": "Evaluates an arithmetic expression.",
                "parameters": {
                    "type": "object",
                    "properties": {"expr": {"type": "string"}},
                    "required": ["expr"],
                },
            }}],
            "max_tokens": 64,
        })
    );
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let canned = Canned::json(
        429,
        json!({"error": {"message": "slow down", "type": "rate"}}),
    )
    .header("retry-after", "2");
    let (result, _server) = call(canned).await;
    let err = result.expect_err("429 is an error");
    assert_eq!(
        err,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "slow down".into(),
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(err.outcome_label(), "rate_limited");
}

#[tokio::test]
async fn server_error_is_retryable() {
    let (result, _server) = call(Canned::text(500, "upstream exploded")).await;
    let err = result.expect_err("500 is an error");
    assert_eq!(
        err,
        LlmError::Server {
            status: 500,
            retry_after: None,
            message: "upstream exploded".into(),
        }
    );
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn bad_request_is_final_and_carries_the_server_message() {
    let body = json!({"error": {
        "message": "The model `gpt-nope` does not exist",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }});
    let (result, _server) = call(Canned::json(400, body)).await;
    let err = result.expect_err("400 is an error");
    assert_eq!(
        err,
        LlmError::Rejected {
            status: 400,
            message: "The model `gpt-nope` does not exist".into(),
        }
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("gpt-nope"), "{err}");
}

#[tokio::test]
async fn malformed_body_is_a_typed_error() {
    let (result, _server) = call(Canned::text(200, "<html>gateway says hi</html>")).await;
    match result {
        Err(LlmError::Malformed(m)) => {
            assert!(m.contains("not a chat completion"), "{m}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn unparseable_tool_arguments_reach_the_caller_as_invalid_arguments() {
    let reply = json!({"choices": [{"message": {"content": null, "tool_calls": [{
        "id": "call_x", "type": "function",
        "function": {"name": "calculator", "arguments": "{\"expr\": 6*7"},
    }]}, "finish_reason": "tool_calls"}]});
    let (result, _server) = call(Canned::json(200, reply)).await;
    let response = result.expect("the reply parses; only the call is invalid");
    let [call] = <[ToolCall; 1]>::try_from(response.message.tool_calls).expect("one call");
    assert_eq!(call.id, "call_x");
    assert_eq!(call.arguments, json!("{\"expr\": 6*7"));
    let message = call.invalid_arguments.expect("invalid arguments");
    assert!(
        message.starts_with("arguments are not valid JSON: ") && message.contains("6*7"),
        "{message}"
    );
}

#[tokio::test]
async fn oversized_body_is_malformed() {
    let body = Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]);
    // Announced by Content-Length (refused up front), then chunked (refused while reading).
    for chunked in [false, true] {
        let mut canned = Canned::text(200, body.clone());
        canned.chunked = chunked;
        let (result, _server) = call(canned).await;
        match result {
            Err(LlmError::Malformed(m)) => assert!(m.contains("larger than"), "{m}"),
            other => panic!("chunked: {chunked}: expected Malformed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn chunked_reply_parses() {
    let mut canned = Canned::json(
        200,
        json!({"choices": [{"message": {"content": "streamed"}}]}),
    );
    canned.chunked = true;
    let (result, _server) = call(canned).await;
    assert_eq!(result.expect("parses").message.content, "streamed");
}

#[tokio::test]
async fn slow_server_times_out() {
    let mut canned = Canned::json(200, json!({"choices": []}));
    canned.delay = Duration::from_secs(5);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (result, server) =
        call_with(canned, simple_request(), |s| s.request_timeout = timeout).await;
    let elapsed = started.elapsed();
    assert_eq!(result, Err(LlmError::Timeout(timeout)));
    assert!(result.as_ref().is_err_and(LlmError::is_retryable));
    assert!(
        elapsed < Duration::from_secs(3),
        "gave up after {elapsed:?}, well before the server's 5 s"
    );
    assert_eq!(
        server.received().len(),
        1,
        "the request did reach the server"
    );
}

#[tokio::test]
async fn missing_api_key_sends_nothing() {
    let var = "AGENTOS_IT_SURELY_UNSET_API_KEY";
    assert!(std::env::var_os(var).is_none(), "{var} must be unset");
    let (result, server) = call_with(
        Canned::json(200, json!({"choices": [{"message": {"content": "hi"}}]})),
        simple_request(),
        |s| s.api_key_env = Some(var.into()),
    )
    .await;
    assert_eq!(result, Err(LlmError::MissingApiKey(var.into())));
    assert!(server.received().is_empty(), "no request may leave");
}

#[tokio::test]
async fn api_key_is_sent_as_bearer_token() {
    // Tests run on parallel threads, so this one does not mutate the process environment; it
    // uses a variable that is already set (Cargo sets `CARGO_PKG_NAME` for test runs).
    let (var, key) = ["CARGO_PKG_NAME", "PATH", "HOME"]
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()
                .filter(|k| !k.trim().is_empty() && k.bytes().all(|b| b.is_ascii_graphic()))
                .map(|k| (v.to_string(), k))
        })
        .expect("some header-safe variable is set");
    let (result, server) = call_with(
        Canned::json(200, json!({"choices": [{"message": {"content": "hi"}}]})),
        simple_request(),
        |s| s.api_key_env = Some(var),
    )
    .await;
    let response = result.expect("a valid reply parses");
    assert_eq!(response.message.content, "hi");
    assert_eq!(response.finish_reason, "stop");
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {key}").as_str())
    );
}

#[tokio::test]
async fn refused_connection_is_a_transport_error() {
    // Bind then drop a listener to get a port that nothing listens on.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("local addr").port()
    };
    let settings = OpenAiSettings {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        base_urls: Vec::new(),
        model: "mock-model".into(),
        api_key_env: None,
        request_timeout: Duration::from_secs(5),
        max_tokens: None,
        temperature: None,
    };
    let backend = OpenAiBackend::new("mock", settings).expect("client builds");
    let result = tokio::time::timeout(CALL_DEADLINE, backend.chat(simple_request()))
        .await
        .expect("the backend answers within the deadline");
    match result {
        Err(e @ LlmError::Transport(_)) => assert!(e.is_retryable()),
        other => panic!("expected Transport, got {other:?}"),
    }
}

/// A chat completion with one `calculator` call whose `arguments` string is `arguments`.
fn calculator_call(arguments: &str, finish_reason: &str) -> Canned {
    Canned::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": arguments},
        }]}, "finish_reason": finish_reason}]}),
    )
}

fn answer(text: &str) -> Canned {
    Canned::json(
        200,
        json!({"choices": [{"message": {"role": "assistant", "content": text},
                            "finish_reason": "stop"}]}),
    )
}

/// Runs one task of a `calculator` agent against a server playing `script`; returns the
/// task's row and the requests the server received.
fn run_calculator_task(
    script: Vec<Canned>,
) -> (agentos_actors::protocol::TaskSummary, Vec<Received>) {
    // The server runs on its own runtime's worker threads; the run has its own actix system.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(MockServer::start_script(script));
    let cfg = parse(&format!(
        r#"(version: 1,
          backends: [(name: "llama", kind: OpenAi((base_url: "{}", model: "tiny",
              timeout_secs: 10, max_tokens: 32)))],
          agents: [(name: "calc", role: "Use the calculator.", backend: "llama",
                    tools: ["calculator"], max_steps: 4)],
          workflows: [(name: "w", tasks: [(id: "a", agent: "calc", input: "6 * 7")])])"#,
        server.base_url
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let done = run(cfg, dir.path());
    (task(&done.snapshot, "w/a").clone(), server.received())
}

/// The tool result the second request carries back to the model.
fn tool_result(received: &[Received]) -> String {
    let messages = received[1].json()["messages"].clone();
    let last = messages
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .expect("messages");
    assert_eq!(last["role"], "tool", "{messages}");
    assert_eq!(last["tool_call_id"], "call_1", "{messages}");
    last["content"].as_str().expect("text content").to_string()
}

/// What llama.cpp sent from a tiny model: raw newlines and tabs inside the JSON string. The
/// call parses, the calculator runs, and the workflow finishes on the first attempt.
#[test]
fn workflow_survives_raw_control_characters_in_tool_arguments() {
    let (t, received) = run_calculator_task(vec![
        calculator_call("{\"expression\": \"6\n*\t7\"}", "tool_calls"),
        answer("6 * 7 = 42"),
    ]);
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 1, "{t:?}");
    assert_eq!(t.output.as_deref(), Some("6 * 7 = 42"));
    assert_eq!(received.len(), 2, "the tool call, then the answer");
    assert_eq!(tool_result(&received), "42", "the calculator was called");
}

/// Arguments cut off at `max_tokens` do not fail the LLM call: the model gets a tool error
/// back as its next step and may answer.
#[test]
fn workflow_survives_tool_arguments_cut_off_at_max_tokens() {
    let (t, received) = run_calculator_task(vec![
        calculator_call("{\"expression\": \"6 *", "length"),
        answer("I could not compute it"),
    ]);
    assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
    assert_eq!(t.attempts, 1, "{t:?}");
    assert_eq!(received.len(), 2, "the cut-off call, then the answer");
    let result = tool_result(&received);
    assert!(result.starts_with("error: "), "{result}");
    // The earlier call goes back as `{}`, valid JSON any server accepts.
    let call = &received[1].json()["messages"][2]["tool_calls"][0];
    assert_eq!(call["function"]["arguments"], "{}", "{call}");
}
