use std::collections::HashMap;

use actix::prelude::*;
use agentos_runtime::context::{ContextSettings, PolicyKind, SharedStats};
use agentos_runtime::llm::ChatMessage;
use agentos_runtime::tokenize::Encoding;
use agentos_runtime::trace::Trace;

use super::*;
use crate::protocol::*;
use agentos_runtime::agent::PromptError;

fn config(dir: &std::path::Path) -> WorkerConfig {
    let mut settings = HashMap::new();
    settings.insert(
        "a".to_owned(),
        ContextSettings {
            budget_tokens: 300,
            policy: PolicyKind::Lru,
            encoding: Encoding::O200kBase,
        },
    );
    WorkerConfig {
        store_path: dir.join("store.db"),
        run_id: "r1".into(),
        settings,
        stats: SharedStats::default(),
        linger: None,
        steps_wait: true,
    }
}

fn start(cfg: &WorkerConfig) -> Addr<ContextPager> {
    start_linked(cfg, &WorkerLink::default())
}

/// A pager that publishes its worker in `link`, as its child spec does.
fn start_linked(cfg: &WorkerConfig, link: &WorkerLink) -> Addr<ContextPager> {
    let mut pager = ContextPager::new(cfg.clone(), Trace::disabled(), ExitNotice::detached());
    pager.link = link.clone();
    pager.start_worker().unwrap();
    pager.start()
}

#[actix_rt::test]
async fn a_restarted_pager_serves_the_context_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let pager = start(&cfg);
    pager
        .send(OpenContext {
            agent: "a".into(),
            context: "w/t#1".into(),
            task: "w/t".into(),
            system: "sys".into(),
            input: "the task".into(),
            shared: Vec::new(),
            build: None,
        })
        .await
        .unwrap()
        .unwrap();
    for i in 0..6 {
        let msgs = vec![ChatMessage::assistant(format!("note {i} ").repeat(40))];
        pager
            .send(AppendPages {
                agent: "a".into(),
                context: "w/t#1".into(),
                messages: msgs,
            })
            .await
            .unwrap()
            .unwrap();
    }
    let build = || BuildPrompt {
        agent: "a".into(),
        context: "w/t#1".into(),
        overhead_tokens: 0,
        want: Vec::new(),
    };
    let before = pager.send(build()).await.unwrap().unwrap();
    pager.send(StopPager).await.unwrap();
    // A new incarnation, as its supervisor would start it: nothing in memory.
    let again = start(&cfg);
    let after = again.send(build()).await.unwrap().unwrap();
    assert!(after.tokens <= 300);
    assert_eq!(after.messages[..2], before.messages[..2]);
    assert_eq!(after.messages.last(), before.messages.last());
    // Another agent still cannot read it.
    let err = again
        .send(BuildPrompt {
            agent: "b".into(),
            ..build()
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            PromptError::Pager(agentos_runtime::context::PagerError::NotOwner { .. })
        ),
        "{err}"
    );
}

#[actix_rt::test]
async fn a_full_worker_queue_makes_callers_wait_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let worker = worker::Worker::start(config(dir.path())).unwrap();
    // One job holds the worker thread until released, so the queue behind it fills up.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let w = worker.clone();
    let blocker = actix_rt::spawn(async move {
        w.call(move |_| {
            let _ = held.recv();
            Ok(0usize)
        })
        .await
    });
    let callers: Vec<_> = (0..worker::QUEUE_CAPACITY + 200)
        .map(|i| {
            let w = worker.clone();
            actix_rt::spawn(async move { w.call(move |_| Ok(i + 1)).await })
        })
        .collect();
    // Let every caller run until it has queued its job or is waiting for room.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    assert_eq!(blocker.await.unwrap().unwrap(), 0);
    for (i, c) in callers.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), i + 1, "caller {i} failed");
    }
}

#[actix_rt::test]
async fn a_panic_in_a_batch_fails_the_uncommitted_requests_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let worker = worker::Worker::start(cfg.clone()).unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started, running) = std::sync::mpsc::channel::<()>();
    let w = worker.clone();
    let blocker = actix_rt::spawn(async move {
        w.call(move |_| {
            let _ = started.send(());
            let _ = held.recv();
            Ok(())
        })
        .await
    });
    // The blocker runs alone in its batch before the others are queued.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running.try_recv().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let open = |context: &'static str| {
        let w = worker.clone();
        actix_rt::spawn(async move {
            w.call(move |p| p.open("a", context, "sys", "task", &[]))
                .await
        })
    };
    // Queued behind the blocker, these three run as one batch.
    let before = open("w/before#1");
    let w = worker.clone();
    let panics = actix_rt::spawn(async move {
        w.call(|_| -> Result<(), agentos_runtime::context::PagerError> { panic!("injected") })
            .await
    });
    let after = open("w/after#1");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    let before = before.await.unwrap();
    assert!(
        matches!(&before, Err(PromptError::Unavailable(m)) if m.contains("restarted before")),
        "{before:?}"
    );
    assert!(panics.await.unwrap().is_err());
    after.await.unwrap().unwrap();
    // What the store holds matches what the callers were told.
    let store = agentos_runtime::store::Store::open(&cfg.store_path).unwrap();
    assert!(store
        .get_pages("r1", "w/before#1", &[0, 1])
        .unwrap()
        .is_empty());
    assert_eq!(
        store.get_pages("r1", "w/after#1", &[0, 1]).unwrap().len(),
        2
    );
}

/// A step core's records through [`PagerPrompts`], not waited for (`async` durability):
/// they reach the pager in the order they were made, and a restarted pager hands the journal
/// back to the reopened context.
#[actix_rt::test]
async fn records_made_without_waiting_arrive_in_order_and_come_back_as_the_journal() {
    use agentos_runtime::agent::{OpenRequest, PromptSource, Wait};
    use agentos_runtime::context::{JournalMeta, ToolDetail};
    use agentos_runtime::durable::SideEffect;
    use agentos_runtime::llm::{Role, ToolCall, Usage};

    use crate::agent::prompts::PagerPrompts;

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ports = PagerPorts::default();
    let link = WorkerLink::default();
    let pager = start_linked(&cfg, &link);
    ports.bind(&pager);
    let prompts = PagerPrompts::new(ports.clone(), link, Trace::disabled());
    let open = || OpenRequest {
        agent: "a".into(),
        context: "w/t#1".into(),
        task: "w/t".into(),
        system: "sys".into(),
        input: "the task".into(),
        shared: Vec::new(),
        build: Some(0),
    };
    let fresh = prompts.open(open()).await.unwrap();
    assert!(fresh.journal.is_empty());
    let first = fresh
        .first_prompt
        .expect("a fresh context builds its first prompt");
    assert_eq!(
        first.messages.len(),
        2,
        "the system prompt and the task input"
    );
    let meta = |step| JournalMeta {
        step,
        instance: "a#0".into(),
        task: "w/t".into(),
        attempt: 1,
        at_ms: 0,
        duration_ms: 1,
    };
    let reply = ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![
            ToolCall::new("c0", "grep", serde_json::json!({})),
            ToolCall::new("c1", "run_command", serde_json::json!({})),
        ],
        tool_call_id: None,
    };
    let usage = Usage {
        prompt_tokens: 9,
        completion_tokens: 2,
        cached_tokens: 0,
    };
    let detail = |tool: &str, class| ToolDetail {
        tool: tool.into(),
        class,
        outcome: Some("ok".into()),
    };
    // Made one after another without awaiting any: each is queued when it is made.
    let records = vec![
        prompts.record_reply(
            "a",
            "w/t#1",
            meta(0),
            reply.clone().into(),
            usage,
            "tool_calls",
            // Queued with no answer, it still reaches the core before what follows.
            Wait::Queued,
        ),
        prompts.record_tool_result(
            "a",
            "w/t#1",
            meta(0),
            0,
            ChatMessage::tool("c0", "found it").into(),
            detail("grep", SideEffect::Pure),
            Wait::Answer,
        ),
        prompts.record_tool_start(
            "a",
            "w/t#1",
            meta(0),
            1,
            "run_command",
            SideEffect::AtMostOnce,
        ),
    ];
    let handles: Vec<_> = records.into_iter().map(actix_rt::spawn).collect();
    for h in handles.into_iter().rev() {
        h.await.unwrap().unwrap();
    }
    pager.send(StopPager).await.unwrap();

    let again = start(&cfg);
    ports.bind(&again);
    let opened = prompts.open(open()).await.unwrap();
    assert_eq!(opened.journal.len(), 1);
    assert_eq!(
        opened.first_prompt, None,
        "a resumed attempt builds after its journal is replayed"
    );
    let step = &opened.journal[0];
    assert_eq!(step.reply, reply);
    assert_eq!(step.usage, usage);
    assert_eq!(step.results, vec![("c0".to_owned(), "found it".to_owned())]);
    assert_eq!(step.started, vec![1]);
    let built = again
        .send(BuildPrompt {
            agent: "a".into(),
            context: "w/t#1".into(),
            overhead_tokens: 0,
            want: Vec::new(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        built.messages.len(),
        4,
        "pinned pages once, the reply, its result"
    );
}
