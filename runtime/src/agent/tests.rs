//! The step core against fakes: a scripted backend, an in-memory prompt source, a counting
//! router, a tool box with failing and hanging tools, and a recording event sink. Time is
//! paused where a test waits for a timeout.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::json;

use super::*;
use crate::config::Config;
use crate::context::{
    BuiltPrompt, JournalMeta, JournaledStep, Opened, PageMessage, PagerError, ToolDetail,
};
use crate::durable::{Durability, SideEffect};
use crate::llm::{
    ChatMessage, ChatRequest, ChatResponse, LlmBackend, LlmError, Role, ToolCall, ToolSpec, Usage,
};
use crate::model::{InstanceId, TaskKey};
use crate::sched::{Dispatch, LeaseId, Outcome};
use crate::tools::{CommandSettings, FileSettings, ToolContext, ToolError, ToolOutput};

// ---------------------------------------------------------------------------------------------
// Fakes

/// What the scripted backend does on one call.
enum Reply {
    Answer(&'static str),
    Calls(Vec<(&'static str, serde_json::Value)>),
    CutOff,
    Fail(LlmError),
    Hang,
    Panic,
}

#[derive(Debug, Default)]
struct Script {
    replies: Mutex<VecDeque<ReplyBox>>,
    requests: Mutex<Vec<ChatRequest>>,
}

#[derive(Debug)]
struct ReplyBox(String, Option<LlmError>, Vec<(String, serde_json::Value)>);

/// A backend that plays `Reply`s in order, then keeps calling the calculator.
#[derive(Debug, Clone, Default)]
struct FakeBackend(Arc<Script>);

impl FakeBackend {
    fn new(replies: Vec<Reply>) -> Self {
        let s = Script::default();
        for r in replies {
            let b = match r {
                Reply::Answer(t) => ReplyBox(t.into(), None, vec![]),
                Reply::Calls(c) => ReplyBox(
                    String::new(),
                    None,
                    c.into_iter().map(|(n, a)| (n.to_owned(), a)).collect(),
                ),
                Reply::CutOff => ReplyBox("<length>".into(), None, vec![]),
                Reply::Fail(e) => ReplyBox(String::new(), Some(e), vec![]),
                Reply::Hang => ReplyBox("<hang>".into(), None, vec![]),
                Reply::Panic => ReplyBox("<panic>".into(), None, vec![]),
            };
            s.replies.lock().unwrap().push_back(b);
        }
        Self(Arc::new(s))
    }

    fn calls(&self) -> usize {
        self.0.requests.lock().unwrap().len()
    }

    fn last_request(&self) -> ChatRequest {
        self.0.requests.lock().unwrap().last().cloned().unwrap()
    }
}

const USAGE: Usage = Usage {
    prompt_tokens: 10,
    completion_tokens: 5,
    cached_tokens: 0,
};

impl LlmBackend for FakeBackend {
    fn name(&self) -> &str {
        "fake"
    }
    fn kind(&self) -> &'static str {
        "sim"
    }
    fn is_simulated(&self) -> bool {
        true
    }
    fn chat(&self, request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        self.0.requests.lock().unwrap().push(request);
        let next = self.0.replies.lock().unwrap().pop_front();
        let next = next.unwrap_or_else(|| {
            ReplyBox(String::new(), None, vec![("calculator".into(), json!({}))])
        });
        Box::pin(async move {
            let ReplyBox(text, error, calls) = next;
            if let Some(e) = error {
                return Err(e);
            }
            match text.as_str() {
                "<hang>" => std::future::pending().await,
                "<panic>" => panic!("backend bug"),
                _ => {}
            }
            let (content, finish) = match text.as_str() {
                "<length>" => (String::new(), "length"),
                _ if calls.is_empty() => (text, "stop"),
                _ => (text, "tool_calls"),
            };
            Ok(ChatResponse {
                message: ChatMessage {
                    role: Role::Assistant,
                    content,
                    tool_calls: calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| match arguments.as_str() {
                            Some(raw) if raw.starts_with("<invalid>") => {
                                ToolCall::with_invalid_arguments(
                                    format!("call_{i}"),
                                    name,
                                    raw,
                                    "arguments are not valid JSON: EOF while parsing",
                                )
                            }
                            _ => ToolCall::new(format!("call_{i}"), name, arguments),
                        })
                        .collect(),
                    tool_call_id: None,
                },
                usage: USAGE,
                finish_reason: finish.into(),
            })
        })
    }
}

/// An in-memory prompt source: the prompt is the pinned pages plus every appended exchange.
#[derive(Default)]
struct FakePrompts {
    contexts: Mutex<Vec<(String, Vec<ChatMessage>)>>,
    opened: AtomicUsize,
    closed: AtomicUsize,
    shared: Mutex<Vec<SharedOutput>>,
    /// Budget of every prompt; a build whose messages exceed it fails as the pager does.
    budget_tokens: Option<u64>,
    /// What `open` answers as already journaled (a resumed attempt).
    journal: Vec<JournaledStep>,
    /// Every record, as a short line (`reply s0`, `start s0 c1 launch`, `result s0 c1 ok`).
    records: Mutex<Vec<String>>,
    /// While set, every record fails as a store that is down.
    fail_records: bool,
    /// While set, a record answers only after the caller yields once (as a real pager does,
    /// from another thread), not when it is first polled.
    slow_records: bool,
    /// Failed records and shares made with [`Wait::Queued`]: answered as queued, and
    /// reported here, as the real source reports them (a warning).
    reported: AtomicUsize,
}

impl FakePrompts {
    fn with_budget(budget: u64) -> Self {
        Self {
            budget_tokens: Some(budget),
            ..Self::default()
        }
    }

    /// A source whose context was journaled before: `journal` comes back from `open`, and
    /// its pages are in the prompt.
    fn resumed(journal: Vec<JournaledStep>) -> Self {
        Self {
            journal,
            ..Self::default()
        }
    }

    fn exchanges(&self) -> Vec<ChatMessage> {
        self.contexts.lock().unwrap()[0].1[2..].to_vec()
    }

    fn records(&self) -> Vec<String> {
        self.records.lock().unwrap().clone()
    }

    fn push(&self, context: &str, m: ChatMessage) {
        let mut contexts = self.contexts.lock().unwrap();
        let c = contexts.iter_mut().find(|(id, _)| id == context).unwrap();
        c.1.push(m);
    }

    fn record(&self, line: String, wait: Wait) -> BoxFuture<'static, Result<(), PromptError>> {
        self.records.lock().unwrap().push(line);
        let (fail, slow) = (self.fail_records, self.slow_records);
        if wait == Wait::Queued {
            if fail {
                self.reported.fetch_add(1, Ordering::SeqCst);
            }
            return Box::pin(async { Ok(()) });
        }
        Box::pin(async move {
            if slow {
                tokio::task::yield_now().await;
            }
            if fail {
                Err(PromptError::Unavailable("store down".into()))
            } else {
                Ok(())
            }
        })
    }
}

impl PromptSource for FakePrompts {
    fn open(&self, r: OpenRequest) -> BoxFuture<'static, Result<Opened, PromptError>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let mut pages = vec![ChatMessage::system(r.system), ChatMessage::user(r.input)];
        for s in &self.journal {
            pages.push(s.reply.clone());
            for (id, content) in &s.results {
                pages.push(ChatMessage::tool(id.clone(), content.clone()));
            }
        }
        self.contexts.lock().unwrap().push((r.context, pages));
        let journal = self.journal.clone();
        Box::pin(async move {
            Ok(Opened {
                pinned_tokens: 2,
                journal,
                first_prompt: None,
            })
        })
    }

    fn record_reply(
        &self,
        _agent: &str,
        context: &str,
        meta: JournalMeta,
        reply: PageMessage,
        _usage: Usage,
        _finish_reason: &str,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        if !self.fail_records {
            self.push(context, reply.message);
        }
        self.record(format!("reply s{}", meta.step), wait)
    }

    fn record_tool_start(
        &self,
        _agent: &str,
        _context: &str,
        meta: JournalMeta,
        call: u32,
        tool: &str,
        class: SideEffect,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        assert_eq!(
            class,
            SideEffect::AtMostOnce,
            "only at-most-once calls get a marker"
        );
        self.record(format!("start s{} c{call} {tool}", meta.step), Wait::Answer)
    }

    fn record_tool_result(
        &self,
        _agent: &str,
        context: &str,
        meta: JournalMeta,
        call: u32,
        message: PageMessage,
        detail: ToolDetail,
        wait: Wait,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        if !self.fail_records {
            self.push(context, message.message);
        }
        let outcome = detail.outcome.unwrap_or_default();
        self.record(format!("result s{} c{call} {outcome}", meta.step), wait)
    }

    fn append(
        &self,
        _agent: &str,
        context: &str,
        messages: Vec<ChatMessage>,
    ) -> BoxFuture<'static, Result<(), PromptError>> {
        let mut contexts = self.contexts.lock().unwrap();
        let c = contexts.iter_mut().find(|(id, _)| id == context).unwrap();
        c.1.extend(messages);
        Box::pin(async { Ok(()) })
    }

    fn build(
        &self,
        agent: &str,
        context: &str,
        overhead_tokens: u64,
    ) -> BoxFuture<'static, Result<BuiltPrompt, PromptError>> {
        let contexts = self.contexts.lock().unwrap();
        let messages = contexts
            .iter()
            .find(|(id, _)| id == context)
            .map(|c| c.1.clone())
            .unwrap_or_default();
        let tokens = overhead_tokens + messages.len() as u64 * 10;
        let result = match self.budget_tokens {
            Some(budget) if tokens > budget => {
                Err(PromptError::Pager(PagerError::BudgetTooSmall {
                    agent: agent.to_owned(),
                    needed: tokens,
                    budget,
                }))
            }
            budget => Ok(BuiltPrompt {
                messages,
                ids: Vec::new(),
                tokens,
                budget: budget.unwrap_or(u64::MAX),
                evicted: vec![],
                faulted: vec![],
                tokens_saved: 0,
                summaries: 0,
                policy: "lru",
            }),
        };
        Box::pin(async move { result })
    }

    fn share(&self, output: SharedOutput) -> BoxFuture<'static, Result<(), PromptError>> {
        self.shared.lock().unwrap().push(output);
        Box::pin(async { Ok(()) })
    }

    fn close(&self, _agent: &str, _context: &str) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts routes taken and released.
#[derive(Default)]
struct FakeRouter {
    taken: Arc<AtomicUsize>,
    released: Arc<AtomicUsize>,
}

struct FakeLease(Arc<AtomicUsize>);

impl RouteLease for FakeLease {
    fn replica(&self) -> usize {
        1
    }
}

impl Drop for FakeLease {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Router for FakeRouter {
    fn route(&self, _: &ChatRequest) -> BoxFuture<'static, Box<dyn RouteLease>> {
        self.taken.fetch_add(1, Ordering::SeqCst);
        let lease: Box<dyn RouteLease> = Box::new(FakeLease(self.released.clone()));
        Box::pin(async move { lease })
    }
}

/// `calculator` answers "4", `broken` fails, `sleepy` never returns, `launch` (at most once)
/// answers "launched". Every call that runs is logged with its call identity.
#[derive(Default)]
struct FakeTools {
    ran: Mutex<Vec<(String, Option<String>)>>,
}

impl FakeTools {
    fn ran(&self) -> Vec<(String, Option<String>)> {
        self.ran.lock().unwrap().clone()
    }
}

impl ToolBox for FakeTools {
    fn class(&self, name: &str) -> Option<SideEffect> {
        match name {
            "calculator" | "broken" | "sleepy" => Some(SideEffect::Pure),
            "write_file" => Some(SideEffect::Idempotent),
            "launch" => Some(SideEffect::AtMostOnce),
            _ => None,
        }
    }

    fn spec(&self, name: &str) -> Option<ToolSpec> {
        ["calculator", "broken", "sleepy", "write_file", "launch"]
            .contains(&name)
            .then(|| ToolSpec {
                name: name.to_owned(),
                description: "test tool".into(),
                parameters: json!({"type": "object"}),
            })
    }

    fn call(
        &self,
        name: &str,
        ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> Option<BoxFuture<'static, Result<ToolOutput, ToolError>>> {
        if self.class(name).is_some() {
            let id = ctx.call.as_ref().map(ToString::to_string);
            self.ran.lock().unwrap().push((name.to_owned(), id));
        }
        let fut: BoxFuture<'static, _> = match name {
            "calculator" => Box::pin(async {
                Ok(ToolOutput {
                    content: "4".into(),
                    data: json!(4),
                })
            }),
            "broken" => Box::pin(async { Err(ToolError::Failed("disk on fire".into())) }),
            "sleepy" => Box::pin(std::future::pending()),
            "write_file" => Box::pin(async { panic!("never granted, never called") }),
            "launch" => Box::pin(async {
                Ok(ToolOutput {
                    content: "launched".into(),
                    data: json!(true),
                })
            }),
            _ => return None,
        };
        Some(fut)
    }
}

/// Records each event as a short line.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, prefix: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: StepEvent<'_>) {
        let line = match event {
            StepEvent::State(s) => format!("state {s:?}"),
            StepEvent::LlmFinished(e) => format!(
                "llm ok step={} replica={} tokens={}",
                e.step, e.replica, e.usage.prompt_tokens
            ),
            StepEvent::LlmFailed(e) => format!("llm failed {}", e.error.outcome_label()),
            StepEvent::LlmAbandoned(e) => format!("llm abandoned {}", e.backend),
            StepEvent::ToolCalled(e) => format!(
                "tool {} {}",
                e.tool,
                match e.result {
                    Ok(_) => "ok".to_owned(),
                    Err(err) => err.outcome_label().to_owned(),
                }
            ),
            StepEvent::StepFinished(_) => "step".into(),
            StepEvent::PagerRequest(e) => format!("pager {:?}", e.outcome),
            StepEvent::Resumed(e) => format!("resumed {}", e.steps_replayed),
            StepEvent::CallInterrupted(e) => format!("interrupted {} {}", e.tool, e.call),
        };
        self.0.lock().unwrap().push(line);
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Rig {
    setup: AgentSetup,
    ports: StepPorts,
    backend: FakeBackend,
    prompts: Arc<FakePrompts>,
    tools: Arc<FakeTools>,
    router: Arc<FakeRouter>,
    events: Arc<Recorder>,
}

/// An agent granted `tools` (names of the fake tool box, so set after validation).
fn spec(tools: &str, max_steps: u32) -> Arc<crate::config::AgentSpec> {
    let text = format!(
        r#"(version: 1,
            backends: [(name: "sim", kind: Sim(()))],
            agents: [(name: "a", role: "You help.", backend: "sim", max_steps: {max_steps})],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a", input: "2+2?")])])"#
    );
    let cfg = Config::parse(&text, "test.ron", Path::new(".")).expect("valid config");
    let mut spec = cfg.agents[0].clone();
    spec.tools = tools
        .split(',')
        .map(|t| t.trim().trim_matches('"').to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    Arc::new(spec)
}

fn rig(replies: Vec<Reply>, tools: &str, max_steps: u32, prompts: FakePrompts) -> Rig {
    let spec = spec(tools, max_steps);
    let instance = InstanceId {
        agent: "a".into(),
        replica: 0,
    };
    let tool_ctx = ToolContext {
        agent: "a".into(),
        task: String::new(),
        workspace: None,
        command_allowlist: Arc::new(Vec::new()),
        command: Arc::new(CommandSettings::default()),
        files: Arc::new(FileSettings::default()),
        bus: None,
        spawner: None,
        sandbox: None,
        call: None,
    };
    let setup = AgentSetup::new(
        spec,
        instance,
        tool_ctx,
        Default::default(),
        Duration::from_secs(5),
        Durability::Sync,
    );
    let backend = FakeBackend::new(replies);
    let prompts = Arc::new(prompts);
    let router = Arc::new(FakeRouter::default());
    let tools = Arc::new(FakeTools::default());
    let events = Arc::new(Recorder::default());
    let ports = StepPorts {
        prompts: prompts.clone(),
        router: Some(router.clone()),
        backend: Arc::new(backend.clone()),
        tools: tools.clone(),
        events: events.clone(),
        gate: None,
    };
    Rig {
        setup,
        ports,
        backend,
        prompts,
        tools,
        router,
        events,
    }
}

fn dispatch(timeout: Duration) -> Dispatch {
    Dispatch {
        lease: LeaseId(1),
        key: TaskKey {
            workflow: "w".into(),
            task: "t".into(),
        },
        instance: InstanceId {
            agent: "a".into(),
            replica: 0,
        },
        attempt: 1,
        attempt_total: 1,
        input: "2+2?".into(),
        timeout,
        shared: Vec::new(),
    }
}

impl Rig {
    async fn run(&self) -> AttemptResult {
        run_attempt(
            &self.setup,
            &self.ports,
            &dispatch(Duration::from_secs(60)),
            &AttemptControl::none(),
        )
        .await
    }

    /// Every lease taken was released and every context opened was closed.
    fn assert_released(&self) {
        let taken = self.router.taken.load(Ordering::SeqCst);
        assert_eq!(
            taken,
            self.router.released.load(Ordering::SeqCst),
            "KV leases taken vs released"
        );
        assert_eq!(
            self.prompts.opened.load(Ordering::SeqCst),
            self.prompts.closed.load(Ordering::SeqCst),
            "contexts opened vs closed"
        );
        assert_eq!(self.prompts.opened.load(Ordering::SeqCst), 1);
    }
}

fn failure(r: &AttemptResult) -> (&str, bool, Option<Duration>) {
    match &r.outcome {
        Outcome::Failed {
            reason,
            retryable,
            retry_after,
        } => (reason.as_str(), *retryable, *retry_after),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn output(r: &AttemptResult) -> &str {
    match &r.outcome {
        Outcome::Succeeded { output } => output,
        other => panic!("expected success, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_tool_step_then_an_answer_succeeds_and_shares_the_output() {
    let r = rig(
        vec![
            Reply::Calls(vec![("calculator", json!({"expression": "2+2"}))]),
            Reply::Answer("4"),
        ],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "4");
    assert_eq!(
        result.usage.prompt_tokens, 20,
        "two calls of 10 prompt tokens"
    );
    assert_eq!(result.usage.completion_tokens, 10);
    let exchanges = r.prompts.exchanges();
    assert_eq!(
        exchanges.len(),
        3,
        "assistant message + tool result, then the final answer"
    );
    assert_eq!(
        r.prompts.records(),
        ["reply s0", "result s0 c0 ok", "reply s1"]
    );
    assert_eq!(
        r.tools.ran(),
        [("calculator".to_owned(), Some("w/t#1/s0/c0".to_owned()))],
        "the call ran once, with its identity"
    );
    assert_eq!(exchanges[1].content, "4");
    assert_eq!(exchanges[1].tool_call_id.as_deref(), Some("call_0"));
    assert_eq!(r.prompts.shared.lock().unwrap()[0].text, "4");
    // The second prompt carries the exchange and the granted tool's definition only.
    let last = r.backend.last_request();
    assert_eq!(last.messages.len(), 4);
    assert_eq!(last.meta.replica, 1, "routed to the router's replica");
    assert_eq!(last.tools.len(), 1);
    assert_eq!(r.events.count("llm ok"), 2);
    assert_eq!(r.events.count("tool calculator ok"), 1);
    assert_eq!(r.events.count("step"), 2);
    r.assert_released();
}

#[tokio::test]
async fn a_tool_not_granted_is_an_error_result_and_the_attempt_goes_on() {
    let r = rig(
        vec![
            Reply::Calls(vec![("write_file", json!({"path": "x"}))]),
            Reply::Answer("done"),
        ],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "done");
    let tool_result = &r.prompts.exchanges()[1];
    assert_eq!(tool_result.role, Role::Tool);
    assert!(
        tool_result.content.contains("not granted"),
        "{}",
        tool_result.content
    );
    assert_eq!(r.events.count("tool write_file not_granted"), 1);
    r.assert_released();
}

#[tokio::test]
async fn an_unknown_tool_is_an_error_result() {
    let r = rig(
        vec![
            Reply::Calls(vec![("teleport", json!({}))]),
            Reply::Answer("ok"),
        ],
        r#""calculator", "teleport""#,
        5,
        FakePrompts::default(),
    );
    // `teleport` is granted by name but the tool box has no such tool.
    let result = r.run().await;
    assert_eq!(output(&result), "ok");
    assert!(r.prompts.exchanges()[1].content.contains("unknown tool"));
    assert_eq!(r.events.count("tool teleport unknown"), 1);
}

#[tokio::test]
async fn arguments_that_are_not_json_go_back_to_the_model_as_a_tool_error() {
    let r = rig(
        vec![
            Reply::Calls(vec![(
                "calculator",
                json!("<invalid>{\"expression\": \"2+"),
            )]),
            Reply::Answer("fixed"),
        ],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "fixed", "a step, not a failed attempt");
    let content = &r.prompts.exchanges()[1].content;
    assert_eq!(
        content,
        "error: invalid arguments: arguments are not valid JSON: EOF while parsing"
    );
    assert_eq!(r.events.count("tool calculator invalid_arguments"), 1);
    assert_eq!(r.backend.calls(), 2);
}

#[tokio::test]
async fn a_failing_tool_is_an_error_result_the_model_reads() {
    let r = rig(
        vec![
            Reply::Calls(vec![("broken", json!({}))]),
            Reply::Answer("recovered"),
        ],
        r#""broken""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "recovered");
    assert_eq!(r.prompts.exchanges()[1].content, "error: disk on fire");
    assert_eq!(r.events.count("tool broken failed"), 1);
    r.assert_released();
}

#[tokio::test(start_paused = true)]
async fn a_hanging_tool_times_out_as_an_error_result() {
    let r = rig(
        vec![
            Reply::Calls(vec![("sleepy", json!({}))]),
            Reply::Answer("moved on"),
        ],
        r#""sleepy""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    assert_eq!(output(&result), "moved on");
    let content = &r.prompts.exchanges()[1].content;
    assert!(content.contains("timed out after 5s"), "{content}");
    assert_eq!(r.events.count("tool sleepy timeout"), 1);
    r.assert_released();
}

#[tokio::test]
async fn max_steps_reached_is_a_final_failure() {
    // The backend keeps calling the calculator.
    let r = rig(vec![], r#""calculator""#, 3, FakePrompts::default());
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert_eq!(reason, "no final answer within max_steps (3)");
    assert!(!retryable);
    assert_eq!(r.backend.calls(), 3);
    assert_eq!(result.usage.prompt_tokens, 30, "tokens of every step count");
    assert_eq!(r.router.taken.load(Ordering::SeqCst), 3);
    r.assert_released();
}

#[tokio::test]
async fn each_llm_error_kind_maps_to_retryable_or_final() {
    let cases = [
        (LlmError::Timeout(Duration::from_secs(1)), true, None),
        (
            LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".into(),
            },
            true,
            Some(Duration::from_secs(7)),
        ),
        (
            LlmError::Server {
                status: 503,
                retry_after: None,
                message: "busy".into(),
            },
            true,
            None,
        ),
        (
            LlmError::Rejected {
                status: 400,
                message: "bad request".into(),
            },
            false,
            None,
        ),
        (LlmError::Malformed("not json".into()), true, None),
        (LlmError::Transport("refused".into()), true, None),
        (LlmError::MissingApiKey("KEY".into()), false, None),
        (LlmError::Injected("boom".into()), true, None),
    ];
    for (error, want_retryable, want_after) in cases {
        let label = error.outcome_label();
        let shown = error.to_string();
        let r = rig(
            vec![
                Reply::Calls(vec![("calculator", json!({}))]),
                Reply::Fail(error),
            ],
            r#""calculator""#,
            5,
            FakePrompts::default(),
        );
        let result = r.run().await;
        let (reason, retryable, after) = failure(&result);
        assert_eq!(retryable, want_retryable, "{label}");
        assert_eq!(after, want_after, "{label}");
        assert_eq!(
            reason,
            format!("LLM call to backend fake failed at step 1: {shown}")
        );
        assert_eq!(r.events.count(&format!("llm failed {label}")), 1);
        assert_eq!(
            result.usage.prompt_tokens, 10,
            "{label}: the first step's tokens still count"
        );
        r.assert_released();
    }
}

#[tokio::test]
async fn a_prompt_over_budget_fails_the_attempt_for_good() {
    // Pinned pages cost 20 tokens here; the exchange after step 0 pushes the prompt past 30.
    let r = rig(
        vec![Reply::Calls(vec![("calculator", json!({}))])],
        r#""calculator""#,
        5,
        FakePrompts::with_budget(30),
    );
    let mut r = r;
    // No tool definitions in the count, so only messages decide.
    r.setup.spec = spec("", 5);
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert!(
        reason.starts_with("context pager: cannot build the prompt:"),
        "{reason}"
    );
    assert!(reason.contains("context budget is 30"), "{reason}");
    assert!(!retryable, "a budget does not grow on retry");
    assert_eq!(r.events.count("pager Budget"), 1);
    assert_eq!(r.backend.calls(), 1);
    r.assert_released();
}

#[tokio::test]
async fn a_reply_cut_off_at_max_tokens_says_so() {
    let r = rig(
        vec![Reply::CutOff],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let result = r.run().await;
    let (reason, retryable, _) = failure(&result);
    assert!(reason.contains("cut off at max_tokens"), "{reason}");
    assert!(reason.contains("finish_reason: length"), "{reason}");
    assert!(retryable);
    assert_eq!(
        result.usage.completion_tokens, 5,
        "the cut-off reply was paid for"
    );
    r.assert_released();
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_keeps_the_tokens_spent_and_releases_everything() {
    let r = rig(
        vec![Reply::Calls(vec![("calculator", json!({}))]), Reply::Hang],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let result = run_attempt(
        &r.setup,
        &r.ports,
        &dispatch(Duration::from_secs(30)),
        &AttemptControl::none(),
    )
    .await;
    let (reason, retryable, _) = failure(&result);
    assert_eq!(reason, "attempt timed out after 30s");
    assert!(retryable);
    assert_eq!(result.usage.prompt_tokens, 10, "the first step's tokens");
    assert_eq!(r.events.count("llm abandoned fake"), 1);
    r.assert_released();
}

#[tokio::test]
async fn a_panicking_backend_still_releases_the_lease_and_closes_the_context() {
    let r = rig(
        vec![Reply::Calls(vec![("calculator", json!({}))]), Reply::Panic],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let d = dispatch(Duration::from_secs(60));
    let caught =
        std::panic::AssertUnwindSafe(run_attempt(&r.setup, &r.ports, &d, &AttemptControl::none()))
            .catch_unwind()
            .await;
    assert!(
        caught.is_err(),
        "the panic reaches the caller's unwind guard"
    );
    assert_eq!(r.events.count("llm abandoned"), 1);
    r.assert_released();
}

#[tokio::test]
async fn a_dropped_attempt_releases_the_lease_and_closes_the_context() {
    let r = rig(
        vec![Reply::Hang],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let d = dispatch(Duration::from_secs(60));
    {
        let control = AttemptControl::none();
        let mut attempt = Box::pin(run_attempt(&r.setup, &r.ports, &d, &control));
        // Poll until the call is in flight, then drop the attempt (a cancelled task).
        for _ in 0..10 {
            assert!(futures::poll!(attempt.as_mut()).is_pending());
        }
        assert_eq!(r.backend.calls(), 1);
    }
    assert_eq!(r.events.count("llm abandoned"), 1);
    r.assert_released();
}

#[tokio::test]
async fn states_alternate_waiting_and_running_around_each_call() {
    let r = rig(
        vec![Reply::Answer("hi")],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    r.run().await;
    let states: Vec<String> = r
        .events
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("state"))
        .collect();
    assert_eq!(states, ["state Waiting", "state Running"]);
}

#[tokio::test(start_paused = true)]
async fn a_suspended_attempt_pauses_at_the_step_boundary_and_the_pause_does_not_time_it_out() {
    let r = rig(
        vec![
            Reply::Calls(vec![("calculator", json!({}))]),
            Reply::Answer("4"),
        ],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let (suspend, suspended) = tokio::sync::watch::channel(true);
    let (_cancel, cancelled) = tokio::sync::watch::channel(None);
    let control = AttemptControl::new(suspended, cancelled);
    let d = dispatch(Duration::from_secs(30));
    let mut attempt = Box::pin(run_attempt(&r.setup, &r.ports, &d, &control));
    // Suspended before the first step: no LLM call, however long it waits (past the timeout).
    for _ in 0..3 {
        tokio::select! {
            _ = &mut attempt => panic!("a suspended attempt must not end"),
            _ = tokio::time::sleep(Duration::from_secs(20)) => {}
        }
    }
    assert_eq!(r.backend.calls(), 0, "no call while suspended");
    assert!(r.events.count("state Suspended") >= 1);
    suspend.send_replace(false);
    let result = attempt.await;
    assert_eq!(
        result.outcome,
        Outcome::Succeeded { output: "4".into() },
        "60 s suspended did not count against the 30 s timeout"
    );
    assert_eq!(r.backend.calls(), 2);
    r.assert_released();
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_an_attempt_blocked_in_a_call_at_once() {
    let r = rig(
        vec![Reply::Hang],
        r#""calculator""#,
        5,
        FakePrompts::default(),
    );
    let (_suspend, suspended) = tokio::sync::watch::channel(false);
    let (cancel, cancelled) = tokio::sync::watch::channel(None);
    let control = AttemptControl::new(suspended, cancelled);
    let d = dispatch(Duration::from_secs(300));
    let mut attempt = Box::pin(run_attempt(&r.setup, &r.ports, &d, &control));
    tokio::select! {
        _ = &mut attempt => panic!("the call hangs"),
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    assert_eq!(r.backend.calls(), 1);
    cancel.send_replace(Some("workflow w cancelled by test".into()));
    let started = tokio::time::Instant::now();
    let result = attempt.await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "at once, not at the timeout"
    );
    let (reason, retryable, _) = failure(&result);
    assert_eq!(reason, "cancelled: workflow w cancelled by test");
    assert!(!retryable);
    assert_eq!(r.events.count("llm abandoned"), 1);
    r.assert_released();
}

mod quota;
mod resume;
