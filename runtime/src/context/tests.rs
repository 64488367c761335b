use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::*;
use crate::llm::{ChatMessage, Role, ToolCall};
use crate::tokenize::Encoding;

pub(super) fn settings(budget: u64, policy: PolicyKind) -> ContextSettings {
    ContextSettings {
        budget_tokens: budget,
        policy,
        encoding: Encoding::O200kBase,
    }
}

pub(super) fn pager(budget: u64, policy: PolicyKind) -> Pager<MemSwap> {
    let mut s = HashMap::new();
    s.insert("a".to_owned(), settings(budget, policy));
    s.insert("b".to_owned(), settings(budget, policy));
    Pager::new(MemSwap::default(), s, Arc::new(Mutex::new(BTreeMap::new())))
}

pub(super) fn exchange(step: usize, words: usize) -> Vec<ChatMessage> {
    let call = ToolCall::new(
        format!("call_{step}"),
        "read_file",
        serde_json::json!({"path": format!("f{step}.txt")}),
    );
    vec![
        ChatMessage {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: vec![call],
            tool_call_id: None,
        },
        ChatMessage::tool(
            format!("call_{step}"),
            format!("result{step} ").repeat(words),
        ),
    ]
}

/// Every `tool` message follows the assistant message that called it.
pub(super) fn exchanges_consistent(messages: &[ChatMessage]) -> bool {
    let mut open: Vec<String> = Vec::new();
    for m in messages {
        match m.role {
            Role::Assistant => open = m.tool_calls.iter().map(|c| c.id.clone()).collect(),
            Role::Tool => {
                if !m.tool_call_id.as_ref().is_some_and(|id| open.contains(id)) {
                    return false;
                }
            }
            _ => open.clear(),
        }
    }
    true
}

#[test]
fn a_long_conversation_stays_within_budget_and_keeps_pinned_pages_first() {
    let mut p = pager(600, PolicyKind::LruImportance);
    p.open("a", "w/t#1", "You are careful.", "Fix the bug.", &[])
        .unwrap();
    let mut saw_eviction = false;
    for step in 0..12 {
        p.append("a", "w/t#1", exchange(step, 60)).unwrap();
        let b = p.build("a", "w/t#1", 20, &[]).unwrap();
        assert!(b.tokens <= 600, "step {step}: {} tokens", b.tokens);
        assert_eq!(
            Encoding::O200kBase.count_prompt(&b.messages) as u64 + 20,
            b.tokens,
            "the reported count is exact"
        );
        // The cached ids are each message's own encoding, summaries and faulted pages too.
        let fresh: Vec<Vec<u32>> = b
            .messages
            .iter()
            .map(|m| Encoding::O200kBase.encode_prompt(std::slice::from_ref(m)))
            .collect();
        let cached: Vec<Vec<u32>> = b.ids.iter().map(|i| i.to_vec()).collect();
        assert_eq!(cached, fresh, "step {step}");
        assert_eq!(b.messages[0].content, "You are careful.");
        assert_eq!(b.messages[1].content, "Fix the bug.");
        // The newest exchange is always there in full.
        let last = b.messages.last().unwrap();
        assert_eq!(
            last.tool_call_id.as_deref(),
            Some(format!("call_{step}").as_str())
        );
        assert!(exchanges_consistent(&b.messages));
        saw_eviction |= !b.evicted.is_empty();
        if step > 4 {
            assert!(b.summaries > 0 && b.tokens_saved > 0);
        }
    }
    assert!(saw_eviction);
    let stats = p.stats().lock().unwrap().get("a").cloned().unwrap();
    assert!(
        stats.evicted_pages > 0 && stats.tokens_saved > 0,
        "{stats:?}"
    );
    assert!(p.loaded("w/t#1").unwrap().nothing_lost(p.swap()));
}

#[test]
fn small_swapped_groups_fault_back_when_room_appears() {
    let mut p = pager(700, PolicyKind::Lru);
    p.open("a", "c", "sys", "task", &[]).unwrap();
    p.append("a", "c", exchange(0, 20)).unwrap();
    p.append("a", "c", exchange(1, 300)).unwrap();
    let b = p.build("a", "c", 0, &[]).unwrap();
    assert!(b.evicted.is_empty());
    // A huge result pushes both older exchanges out ...
    p.append("a", "c", exchange(2, 500)).unwrap();
    let b = p.build("a", "c", 0, &[]).unwrap();
    assert!(!b.evicted.is_empty());
    // ... then a small one evicts the huge one, and the small old exchange fits again.
    p.append("a", "c", exchange(3, 5)).unwrap();
    let b = p.build("a", "c", 0, &[]).unwrap();
    assert!(b.tokens <= 700);
    let stats = p.stats().lock().unwrap().get("a").cloned().unwrap();
    assert!(stats.page_faults > 0, "{stats:?}");
    assert!(p.swap().reads > 0, "faults read the store");
}

#[test]
fn wanted_pages_fault_in_and_stay() {
    let mut p = pager(700, PolicyKind::LruImportance);
    p.open("a", "c", "sys", "task", &[]).unwrap();
    let first = p.append("a", "c", exchange(0, 100)).unwrap();
    for s in 1..5 {
        p.append("a", "c", exchange(s, 100)).unwrap();
        p.build("a", "c", 0, &[]).unwrap();
    }
    assert!(!p.table("a", "c").unwrap().pages()[first[1] as usize].resident());
    let b = p.build("a", "c", 0, &[first[1]]).unwrap();
    assert!(b
        .messages
        .iter()
        .any(|m| m.tool_call_id.as_deref() == Some("call_0")));
    assert!(!b.faulted.is_empty());
}

#[test]
fn pinned_pages_over_budget_are_refused() {
    let mut p = pager(300, PolicyKind::Lru);
    let err = p
        .open("a", "c", "sys", &"word ".repeat(400), &[])
        .unwrap_err();
    assert!(matches!(err, PagerError::BudgetTooSmall { .. }), "{err}");
    assert!(err.to_string().contains("agent \"a\""), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn agents_cannot_read_each_others_contexts() {
    let mut p = pager(1000, PolicyKind::Lru);
    p.open("a", "c", "sys", "secret task", &[]).unwrap();
    let err = p.build("b", "c", 0, &[]).unwrap_err();
    assert!(matches!(err, PagerError::NotOwner { .. }), "{err}");
    assert!(matches!(
        p.append("b", "c", exchange(0, 1)),
        Err(PagerError::NotOwner { .. })
    ));
    assert!(matches!(
        p.close("b", "c"),
        Err(PagerError::NotOwner { .. })
    ));
}

#[test]
fn a_restarted_pager_rebuilds_the_table_from_the_store() {
    let mut p = pager(400, PolicyKind::Lru);
    p.open("a", "c", "sys", "task", &[]).unwrap();
    for s in 0..4 {
        p.append("a", "c", exchange(s, 50)).unwrap();
    }
    let before = p.build("a", "c", 0, &[]).unwrap();
    // A new pager over the same swap (the store survives; memory does not).
    let swap = p.into_swap();
    let mut s = HashMap::new();
    s.insert("a".to_owned(), settings(400, PolicyKind::Lru));
    let mut again = Pager::new(swap, s, Arc::new(Mutex::new(BTreeMap::new())));
    let after = again.build("a", "c", 0, &[]).unwrap();
    assert!(after.tokens <= 400);
    assert_eq!(after.messages[..2], before.messages[..2]);
    assert_eq!(after.messages.last(), before.messages.last());
    assert_eq!(again.table("a", "c").unwrap().pages().len(), 10);
}

#[test]
fn shared_pages_are_counted_readers_and_read_only() {
    let mut p = pager(2000, PolicyKind::LruImportance);
    p.share("w", "w/up", "a", "upstream findings").unwrap();
    p.open(
        "b",
        "w/down#1",
        "sys",
        "task",
        &["w/up".into(), "w/missing".into()],
    )
    .unwrap();
    p.open("a", "w/other#1", "sys", "task", &["w/up".into()])
        .unwrap();
    assert_eq!(p.shared().readers("w/up"), 2);
    let b = p.build("b", "w/down#1", 0, &[]).unwrap();
    assert!(b.messages[2].content.contains("upstream findings"));
    assert_eq!(b.messages.len(), 3, "the unpublished key is skipped");
    p.close("b", "w/down#1").unwrap();
    p.close("a", "w/other#1").unwrap();
    assert_eq!(p.shared().readers("w/up"), 0);
    // Still in the store for later readers.
    p.open("b", "w/late#1", "sys", "task", &["w/up".into()])
        .unwrap();
    let b = p.build("b", "w/late#1", 0, &[]).unwrap();
    assert!(b.messages[2].content.contains("upstream findings"));
}

#[test]
fn a_single_result_larger_than_the_budget_is_summarised() {
    let mut p = pager(400, PolicyKind::Lru);
    p.open("a", "c", "sys", "task", &[]).unwrap();
    p.append("a", "c", exchange(0, 2000)).unwrap();
    let b = p.build("a", "c", 0, &[]).unwrap();
    assert!(b.tokens <= 400);
    assert_eq!(b.summaries, 1);
    assert!(b.messages[2].content.contains("paged out"));
    assert!(exchanges_consistent(&b.messages));
}

#[test]
fn pinning_keeps_a_page_resident_and_refuses_too_much() {
    let mut p = pager(600, PolicyKind::Lru);
    p.open("a", "c", "sys", "task", &[]).unwrap();
    let ids = p.append("a", "c", exchange(0, 50)).unwrap();
    p.set_pinned("a", "c", ids[1], true).unwrap();
    for s in 1..6 {
        p.append("a", "c", exchange(s, 100)).unwrap();
        let b = p.build("a", "c", 0, &[]).unwrap();
        assert!(b
            .messages
            .iter()
            .any(|m| m.tool_call_id.as_deref() == Some("call_0")));
    }
    let big = p.append("a", "c", exchange(9, 900)).unwrap();
    assert!(matches!(
        p.set_pinned("a", "c", big[1], true),
        Err(PagerError::BudgetTooSmall { .. })
    ));
}

#[test]
fn resident_and_swapped_totals_sum_the_agents_open_contexts() {
    let stats: SharedStats = Arc::new(Mutex::new(BTreeMap::new()));
    let mut s = HashMap::new();
    s.insert("a".to_owned(), settings(400, PolicyKind::Lru));
    s.insert("b".to_owned(), settings(400, PolicyKind::Lru));
    let mut p = Pager::new(MemSwap::default(), s, stats.clone());
    let figures = |agent: &str| {
        let all = stats.lock().unwrap();
        let s = &all[agent];
        (
            s.resident_pages,
            s.resident_tokens,
            s.swapped_pages,
            s.swapped_tokens,
        )
    };
    let table = |p: &mut Pager<MemSwap>, agent: &str, context: &str| {
        let t = p.table(agent, context).unwrap();
        let ((rp, rt), (sp, st)) = (t.resident(), t.swapped());
        (rp, rt, sp, st)
    };
    p.open("a", "w/1#1", "sys", "task one", &[]).unwrap();
    p.open("a", "w/2#1", "sys", "task two", &[]).unwrap();
    p.open("b", "w/3#1", "sys", "task three", &[]).unwrap();
    for step in 0..6 {
        p.append("a", "w/1#1", exchange(step, 40)).unwrap();
        p.build("a", "w/1#1", 0, &[]).unwrap();
    }
    p.append("a", "w/2#1", exchange(0, 10)).unwrap();
    let (one, two) = (table(&mut p, "a", "w/1#1"), table(&mut p, "a", "w/2#1"));
    assert!(
        one.2 > 0,
        "the long context must have swapped pages: {one:?}"
    );
    assert_eq!(
        figures("a"),
        (one.0 + two.0, one.1 + two.1, one.2 + two.2, one.3 + two.3)
    );
    assert_eq!(figures("b"), table(&mut p, "b", "w/3#1"));
    // Closing a context takes its pages out of its agent's totals only.
    p.close("a", "w/1#1").unwrap();
    assert_eq!(figures("a"), table(&mut p, "a", "w/2#1"));
    assert_eq!(figures("b"), table(&mut p, "b", "w/3#1"));
}

#[test]
fn an_agents_system_page_is_encoded_once_and_again_when_its_prompt_changes() {
    let mut p = pager(4096, PolicyKind::LruImportance);
    let first = |p: &mut Pager<MemSwap>, context: &str, system: &str| {
        p.open("a", context, system, "Do it.", &[]).unwrap();
        let b = p.build("a", context, 0, &[]).unwrap();
        let fresh = Encoding::O200kBase.encode_prompt(std::slice::from_ref(&b.messages[0]));
        assert_eq!(b.messages[0].content, system);
        assert_eq!(b.ids[0].to_vec(), fresh, "{context}: the system page's ids");
        assert_eq!(
            Encoding::O200kBase.count_prompt(&b.messages) as u64,
            b.tokens,
            "{context}: the count"
        );
        b.ids[0].clone()
    };
    let one = first(&mut p, "w/t#1", "You review code.");
    let two = first(&mut p, "w/t2#1", "You review code.");
    assert!(Arc::ptr_eq(&one, &two), "the second open reuses the ids");
    let other = first(&mut p, "w/t3#1", "You write tests.");
    assert_ne!(other.to_vec(), one.to_vec());
    // Another agent's cache is its own; the same prompt and encoding give the same ids.
    p.open("b", "w/t4#1", "You review code.", "Do it.", &[])
        .unwrap();
    let b = p.build("b", "w/t4#1", 0, &[]).unwrap();
    assert_eq!(b.ids[0].to_vec(), one.to_vec());
}
