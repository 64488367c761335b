//! Micro-benchmarks of the context pager core:
//! - `append_build/N`: append one exchange (assistant tool call + tool result) and build the
//!   prompt, on a context that already holds N pages (1k, 10k, 100k), within a 4096-token
//!   budget, with the in-memory swap device (the paging logic and token counting alone);
//! - `fault_from_store`: evict an exchange and fault it back in from a SQLite store file;
//! - `eviction_decision/N`: one victim choice among N resident candidates, per policy.

use std::hint::black_box;

use agentos_runtime::context::policy::{Candidate, EvictionPolicy, Lru, LruImportance};
use agentos_runtime::context::table::{NewPage, PageTable};
use agentos_runtime::context::{
    ContextSettings, MemSwap, PageKind, PolicyKind, StoreSwap, SwapDevice,
};
use agentos_runtime::llm::{ChatMessage, Role, ToolCall};
use agentos_runtime::store::Store;
use agentos_runtime::tokenize::Encoding;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn settings() -> ContextSettings {
    ContextSettings {
        budget_tokens: 4096,
        policy: PolicyKind::LruImportance,
        encoding: Encoding::O200kBase,
    }
}

fn exchange(step: usize) -> Vec<NewPage> {
    let call = ChatMessage {
        role: Role::Assistant,
        content: String::new(),
        tool_calls: vec![ToolCall::new(
            format!("call_{step}"),
            "read_file",
            serde_json::json!({"path": format!("src/file_{step}.rs")}),
        )],
        tool_call_id: None,
    };
    let result = ChatMessage::tool(
        format!("call_{step}"),
        format!("fn item_{step}() -> u32 {{ {step} }} // some source text of the file\n").repeat(6),
    );
    vec![
        NewPage {
            message: call,
            ids: None,
            kind: PageKind::Message,
            pinned: false,
            shared_key: None,
        },
        NewPage {
            message: result,
            ids: None,
            kind: PageKind::ToolResult,
            pinned: false,
            shared_key: None,
        },
    ]
}

fn table_with<S: SwapDevice>(swap: &mut S, pages: usize) -> PageTable {
    let mut t = PageTable::new("bench", "w/t#1", settings());
    let pinned = |m, k| NewPage {
        message: m,
        ids: None,
        kind: k,
        pinned: true,
        shared_key: None,
    };
    let rows = t.push_group(vec![pinned(
        ChatMessage::system("You are a careful engineer."),
        PageKind::System,
    )]);
    swap.write(&rows).unwrap();
    let rows = t.push_group(vec![pinned(
        ChatMessage::user("Read the code base and summarise it."),
        PageKind::Task,
    )]);
    swap.write(&rows).unwrap();
    for step in 0..pages.saturating_sub(2) / 2 {
        let rows = t.push_group(exchange(step));
        swap.write(&rows).unwrap();
        t.build(swap, 0, &[]).unwrap();
    }
    t
}

fn append_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_build");
    for pages in [1_000usize, 10_000, 100_000] {
        let mut swap = MemSwap::default();
        let mut t = table_with(&mut swap, pages);
        let ex = exchange(pages);
        group.bench_with_input(BenchmarkId::from_parameter(pages), &pages, |b, _| {
            b.iter(|| {
                let rows = t.push_group(ex.clone());
                swap.write(&rows).unwrap();
                let built = t.build(&mut swap, 0, &[]).unwrap();
                black_box(built.tokens);
                // Keep the table at N pages.
                t.pop_group();
            })
        });
    }
    group.finish();
}

fn fault_from_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.db")).unwrap();
    let mut swap = StoreSwap::new(store, "bench-run").unwrap();
    let mut t = table_with(&mut swap, 1_000);
    // A page of the middle of the conversation: evict its exchange, fault it back in.
    let page = 501;
    c.bench_function("fault_from_store", |b| {
        b.iter(|| {
            t.evict_page(page).unwrap();
            black_box(t.swap_in_page(&mut swap, page).unwrap());
        })
    });
}

fn eviction_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("eviction_decision");
    for n in [16usize, 256, 4096] {
        let cands: Vec<Candidate> = (0..n)
            .map(|i| Candidate {
                group: i,
                recency: i as f64 / n as f64,
                accesses: (i * 7 % 13) as u64,
                importance: (i % 5) as f64 / 4.0,
                tokens: 100,
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("lru", n), &cands, |b, c| {
            b.iter(|| black_box(Lru.victim(c)))
        });
        group.bench_with_input(BenchmarkId::new("lru_importance", n), &cands, |b, c| {
            b.iter(|| black_box(LruImportance.victim(c)))
        });
    }
    group.finish();
}

criterion_group!(benches, append_build, fault_from_store, eviction_decision);
criterion_main!(benches);
