use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use agentos_runtime::context::{ContextSettings, PolicyKind, SharedStats};
use agentos_runtime::llm::ChatMessage;
use agentos_runtime::tokenize::Encoding;
use agentos_runtime::trace::Trace;

use super::*;

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
    }
}

fn start(cfg: &WorkerConfig) -> Addr<ContextPager> {
    ContextPager::new(
        cfg.clone(),
        Arc::new(HashMap::new()),
        Trace::disabled(),
        ExitNotice::detached(),
    )
    .start()
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
            PagerFailure::Pager(agentos_runtime::context::PagerError::NotOwner { .. })
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
