//! The KV-cache pool actor with the router agents use: leases route to cached replicas, are
//! released on drop, and calls never wait on a missing or restarted pool.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_actors::agent::router::{KvRouter, ACQUIRE_TIMEOUT};
use agentos_actors::child::ExitNotice;
use agentos_actors::kvpool::{KvCachePool, StopKvPool};
use agentos_actors::protocol::{GetKvStats, KvPorts};
use agentos_runtime::config::Config;
use agentos_runtime::llm::ChatMessage;
use futures::FutureExt;

async fn stats(ports: &KvPorts) -> agentos_runtime::kvcache::pool::BackendStats {
    ports
        .stats
        .ask(
            GetKvStats {
                backend: "sim".into(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap()
        .unwrap()
}

fn config(replicas: u32) -> Arc<Config> {
    let text = format!(
        r#"(version: 1,
            backends: [(name: "sim", kind: Sim((replicas: {replicas})), cache: (block_size: 4))],
            agents: [(name: "a", role: "r", backend: "sim")],
            workflows: [(name: "w", tasks: [(id: "t", agent: "a")])])"#
    );
    Arc::new(Config::parse(&text, "test.ron", Path::new(".")).unwrap())
}

fn prompt(task: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(
            "You are one of many agents sharing this long system prompt. ".repeat(4),
        ),
        ChatMessage::user(task),
    ]
}

#[actix_rt::test]
async fn leases_route_to_the_cached_replica_and_release_on_drop() {
    let cfg = config(4);
    let ports = KvPorts::default();
    ports.bind(&KvCachePool::new(cfg.clone(), ExitNotice::detached()).start());
    let client = KvRouter::new(ports.clone(), &cfg.backends[0]);

    let first = client.acquire(&prompt("task one"), &[]).await;
    assert!(first.routed_by_pool);
    assert_eq!(first.cached_tokens, 0);
    let replica = first.replica;
    drop(first);

    let second = client.acquire(&prompt("task two"), &[]).await;
    assert_eq!(
        second.replica, replica,
        "the shared system prompt is cached there"
    );
    assert!(second.cached_tokens > 0 && second.cached_tokens < second.prompt_tokens);
    drop(second);

    let stats = stats(&ports).await;
    assert_eq!(stats.loads, vec![0; 4], "both leases were released");
    assert_eq!(stats.total.active_blocks, 0);
    assert!(stats.total.cached_blocks > 0);
    assert!(stats.total.hit_tokens > 0);
}

#[actix_rt::test]
async fn without_a_pool_calls_still_route_and_never_wait() {
    let cfg = config(3);
    let client = KvRouter::new(KvPorts::default(), &cfg.backends[0]);
    let started = Instant::now();
    let replicas: Vec<usize> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            let l = client.acquire(&prompt("t"), &[]).await;
            assert!(!l.routed_by_pool);
            out.push(l.replica);
        }
        out
    };
    assert_eq!(replicas, [0, 1, 2], "round robin over the replicas");
    assert!(started.elapsed() < ACQUIRE_WAIT_BOUND);

    // A stopped pool: the address is dead, the call proceeds at once.
    let ports = KvPorts::default();
    let addr = KvCachePool::new(cfg.clone(), ExitNotice::detached()).start();
    ports.bind(&addr);
    addr.send(StopKvPool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while addr.connected() && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let client = KvRouter::new(ports, &cfg.backends[0]);
    let started = Instant::now();
    let lease = client.acquire(&prompt("t"), &[]).await;
    assert!(!lease.routed_by_pool);
    assert!(started.elapsed() < ACQUIRE_WAIT_BOUND);
}

/// Generous bound for "did not wait on the pool" (well below the router's own timeout).
const ACQUIRE_WAIT_BOUND: Duration = ACQUIRE_TIMEOUT.saturating_sub(Duration::from_millis(100));

#[actix_rt::test]
async fn a_restarted_pool_starts_empty_and_ignores_old_leases() {
    let cfg = config(2);
    let ports = KvPorts::default();
    ports.bind(&KvCachePool::new(cfg.clone(), ExitNotice::detached()).start());
    let client = KvRouter::new(ports.clone(), &cfg.backends[0]);
    let held = client.acquire(&prompt("x"), &[]).await;
    // "Restart": a fresh pool takes the ports, as its child spec's start function does.
    ports.bind(&KvCachePool::new(cfg.clone(), ExitNotice::detached()).start());
    drop(held); // released to the new pool, which does not know it
    let again = client.acquire(&prompt("x"), &[]).await;
    assert_eq!(again.cached_tokens, 0, "caches are empty after a restart");
    drop(again);
    let stats = stats(&ports).await;
    assert_eq!(stats.loads, vec![0, 0]);
}

#[actix_rt::test]
async fn a_single_replica_is_told_of_its_leases_and_counts_them_as_asked_ones() {
    let cfg = config(1);
    let ports = KvPorts::default();
    let addr = KvCachePool::new(cfg.clone(), ExitNotice::detached()).start();
    ports.bind(&addr);
    let client = KvRouter::new(ports.clone(), &cfg.backends[0]);

    // Answered at once, without a round trip to the pool: nothing to choose.
    let first = client.acquire(&prompt("task one"), &[]).now_or_never();
    let first = first.expect("a lease of a single replica does not wait for the pool");
    assert_eq!(first.replica, 0);
    assert!(first.routed_by_pool, "the pool is told and counts it");
    let held = stats(&ports).await;
    assert_eq!(held.loads, vec![1], "the told lease holds its load");
    assert_eq!(held.total.acquires, 1);
    drop(first);

    let second = client.acquire(&prompt("task two"), &[]).await;
    drop(second);
    let stats = stats(&ports).await;
    assert_eq!(stats.loads, vec![0], "both leases were released");
    assert_eq!(stats.total.acquires, 2);
    assert!(
        stats.total.hit_tokens > 0,
        "the second prompt hit the shared system prompt"
    );

    // Without a pool it still routes, counted as routed without it.
    addr.send(StopKvPool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while addr.connected() && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let lease = client.acquire(&prompt("t"), &[]).await;
    assert_eq!(lease.replica, 0);
    assert!(!lease.routed_by_pool);
}
