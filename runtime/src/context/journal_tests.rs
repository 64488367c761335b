//! The journal over the pages: records, a restart (a fresh pager over the same swap), and
//! what `open` of the stored context gives back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::tests::{exchanges_consistent, pager, settings};
use super::*;
use crate::durable::SideEffect;
use crate::llm::{ChatMessage, Role, ToolCall, Usage};
use crate::tokenize::Encoding;

const CTX: &str = "w/t#1";

fn meta(step: u32) -> JournalMeta {
    JournalMeta {
        step,
        instance: "a#0".into(),
        task: "w/t".into(),
        attempt: 1,
        at_ms: 1_000 + step as i64,
        duration_ms: 7,
    }
}

fn usage(n: u64) -> Usage {
    Usage {
        prompt_tokens: n,
        completion_tokens: 1,
        cached_tokens: 0,
    }
}

fn calls(step: u32, tools: &[&str]) -> ChatMessage {
    ChatMessage {
        role: Role::Assistant,
        content: format!("thinking at {step}"),
        tool_calls: tools
            .iter()
            .enumerate()
            .map(|(i, t)| ToolCall::new(format!("s{step}c{i}"), *t, serde_json::json!({})))
            .collect(),
        tool_call_id: None,
    }
}

fn detail(tool: &str, class: SideEffect) -> ToolDetail {
    ToolDetail {
        tool: tool.into(),
        class,
        outcome: Some("ok".into()),
    }
}

/// A fresh pager (empty memory) over the swap of `p`: what a restart sees.
fn restart(p: Pager<MemSwap>) -> Pager<MemSwap> {
    let mut s = HashMap::new();
    s.insert("a".to_owned(), settings(100_000, PolicyKind::Lru));
    s.insert("b".to_owned(), settings(100_000, PolicyKind::Lru));
    Pager::new(p.into_swap(), s, Arc::new(Mutex::new(BTreeMap::new())))
}

/// Step 0 calls two tools (both answered), step 1 calls an at-most-once tool that started but
/// was never answered.
fn two_steps(p: &mut Pager<MemSwap>) {
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert!(opened.journal.is_empty(), "a fresh context has no journal");
    p.record_reply(
        "a",
        CTX,
        &meta(0),
        calls(0, &["calculator", "grep"]),
        usage(10),
        "tool_calls",
    )
    .unwrap();
    for (i, tool) in ["calculator", "grep"].into_iter().enumerate() {
        let msg = ChatMessage::tool(format!("s0c{i}"), format!("result {i}"));
        p.record_tool_result(
            "a",
            CTX,
            &meta(0),
            i as u32,
            msg,
            &detail(tool, SideEffect::Pure),
        )
        .unwrap();
    }
    p.record_reply(
        "a",
        CTX,
        &meta(1),
        calls(1, &["run_command"]),
        usage(20),
        "tool_calls",
    )
    .unwrap();
    p.record_tool_start("a", CTX, &meta(1), 0, "run_command", SideEffect::AtMostOnce)
        .unwrap();
}

#[test]
fn a_reopened_context_returns_its_journal_and_the_same_prompt() {
    let mut p = pager(100_000, PolicyKind::Lru);
    two_steps(&mut p);
    let before = p.build("a", CTX, 0, &[]).unwrap().messages;
    let pages = p.loaded(CTX).unwrap().pages().len();
    assert_eq!(pages, 2 + 3 + 1, "pinned, reply and two results, reply");
    assert!(exchanges_consistent(&before));

    let mut p = restart(p);
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(opened.journal.len(), 2);
    let s0 = &opened.journal[0];
    assert_eq!((s0.step, s0.usage), (0, usage(10)));
    assert_eq!(s0.reply, calls(0, &["calculator", "grep"]));
    assert_eq!(
        s0.results,
        vec![
            ("s0c0".to_owned(), "result 0".to_owned()),
            ("s0c1".to_owned(), "result 1".to_owned())
        ]
    );
    assert!(s0.started.is_empty() && !s0.is_final() && s0.has_result(1));
    let s1 = &opened.journal[1];
    assert_eq!((s1.step, s1.usage.prompt_tokens), (1, 20));
    assert!(s1.results.is_empty());
    assert_eq!(s1.started, vec![0], "started, never answered");
    assert_eq!(opened.pinned_tokens, p.loaded(CTX).unwrap().pinned_tokens());
    assert_eq!(
        p.loaded(CTX).unwrap().pages().len(),
        pages,
        "no pinned page was pushed again"
    );
    assert_eq!(p.build("a", CTX, 0, &[]).unwrap().messages, before);

    // The resumed attempt goes on: its result joins the restored reply's group.
    let msg = ChatMessage::tool("s1c0", "interrupted");
    p.record_tool_result(
        "a",
        CTX,
        &meta(1),
        0,
        msg,
        &detail("run_command", SideEffect::AtMostOnce),
    )
    .unwrap();
    let t = p.loaded(CTX).unwrap();
    assert_eq!(t.pages()[6].group, t.pages()[5].group);
    let mut p = restart(p);
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(opened.journal[1].results.len(), 1);
    assert!(opened.journal[1].started.is_empty());
}

#[test]
fn a_final_answer_is_journaled_as_its_own_group() {
    let mut p = pager(100_000, PolicyKind::Lru);
    p.open("a", CTX, "sys", "task", &[]).unwrap();
    let answer = ChatMessage {
        role: Role::Assistant,
        content: "42".into(),
        tool_calls: vec![],
        tool_call_id: None,
    };
    p.record_reply("a", CTX, &meta(0), answer.clone(), usage(3), "stop")
        .unwrap();
    let mut p = restart(p);
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(opened.journal.len(), 1);
    assert!(opened.journal[0].is_final());
    assert_eq!(opened.journal[0].reply, answer);
}

#[test]
fn a_page_without_its_journal_row_is_left_out_on_reopen() {
    let mut p = pager(100_000, PolicyKind::Lru);
    two_steps(&mut p);
    let journaled = p.loaded(CTX).unwrap().pages().len();
    // A reply page whose journal row never reached the store.
    let orphan = crate::store::PageRow {
        context: CTX.into(),
        page_id: journaled as u64,
        agent: "a".into(),
        group: 99,
        kind: "message".into(),
        pinned: false,
        importance: 0.4,
        tokens: 3,
        shared_key: None,
        message: serde_json::to_string(&calls(2, &["grep"])).unwrap(),
    };
    p.swap_mut().write(&[orphan]).unwrap();
    let mut p = restart(p);
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(opened.journal.len(), 2);
    assert_eq!(p.loaded(CTX).unwrap().pages().len(), journaled);
    assert!(exchanges_consistent(
        &p.build("a", CTX, 0, &[]).unwrap().messages
    ));
}

#[test]
fn a_failed_record_leaves_the_table_as_it_was() {
    let mut p = pager(100_000, PolicyKind::Lru);
    two_steps(&mut p);
    let before = p.build("a", CTX, 0, &[]).unwrap().messages;
    p.swap_mut().fail_writes = true;
    assert!(p
        .record_reply(
            "a",
            CTX,
            &meta(2),
            calls(2, &["grep"]),
            usage(1),
            "tool_calls"
        )
        .is_err());
    let msg = ChatMessage::tool("s1c0", "late");
    assert!(p
        .record_tool_result(
            "a",
            CTX,
            &meta(1),
            0,
            msg,
            &detail("run_command", SideEffect::AtMostOnce)
        )
        .is_err());
    p.swap_mut().fail_writes = false;
    assert_eq!(p.build("a", CTX, 0, &[]).unwrap().messages, before);
    let (rp, rt) = p.loaded(CTX).unwrap().resident();
    let mut q = restart(p);
    q.open("a", CTX, "sys", "task", &[]).unwrap();
    q.build("a", CTX, 0, &[]).unwrap();
    assert_eq!(q.loaded(CTX).unwrap().resident(), (rp, rt));
}

#[test]
fn a_result_that_answers_no_call_of_the_last_reply_is_refused() {
    let mut p = pager(100_000, PolicyKind::Lru);
    p.open("a", CTX, "sys", "task", &[]).unwrap();
    let msg = ChatMessage::tool("s0c0", "too early");
    let err = p
        .record_tool_result(
            "a",
            CTX,
            &meta(0),
            0,
            msg,
            &detail("grep", SideEffect::Pure),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            PagerError::NotAReply {
                step: 0,
                call: 0,
                ..
            }
        ),
        "{err}"
    );
    p.record_reply(
        "a",
        CTX,
        &meta(0),
        calls(0, &["grep"]),
        usage(1),
        "tool_calls",
    )
    .unwrap();
    let wrong = ChatMessage::tool("other", "wrong id");
    assert!(p
        .record_tool_result(
            "a",
            CTX,
            &meta(0),
            0,
            wrong,
            &detail("grep", SideEffect::Pure)
        )
        .is_err());
    assert_eq!(p.loaded(CTX).unwrap().pages().len(), 3);
}

#[test]
fn a_result_for_a_swapped_out_reply_faults_it_in_first() {
    let mut p = pager(100_000, PolicyKind::Lru);
    p.open("a", CTX, "sys", "task", &[]).unwrap();
    let page = p
        .record_reply(
            "a",
            CTX,
            &meta(0),
            calls(0, &["grep"]),
            usage(1),
            "tool_calls",
        )
        .unwrap();
    assert!(p.evict("a", CTX, page).unwrap());
    let msg = ChatMessage::tool("s0c0", "found");
    p.record_tool_result(
        "a",
        CTX,
        &meta(0),
        0,
        msg,
        &detail("grep", SideEffect::Pure),
    )
    .unwrap();
    let t = p.loaded(CTX).unwrap();
    assert_eq!(t.resident().0, 4, "pinned pages, the reply and its result");
    assert_eq!(t.swapped(), (0, 0));
    let b = p.build("a", CTX, 0, &[]).unwrap();
    assert_eq!(b.messages.len(), 4);
    assert!(exchanges_consistent(&b.messages));
}

#[test]
fn another_agent_cannot_reopen_a_stored_context() {
    let mut p = pager(100_000, PolicyKind::Lru);
    two_steps(&mut p);
    let mut p = restart(p);
    let err = p.open("b", CTX, "sys", "task", &[]).unwrap_err();
    assert!(matches!(err, PagerError::NotOwner { .. }), "{err}");
}

#[test]
fn the_journal_survives_in_the_real_store_and_its_rows_are_counted_for_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let settings_of = || {
        let mut s = HashMap::new();
        s.insert("a".to_owned(), settings(100_000, PolicyKind::Lru));
        s
    };
    let swap = StoreSwap::new(crate::store::Store::open(&path).unwrap(), "r1").unwrap();
    let mut p = Pager::new(swap, settings_of(), Arc::new(Mutex::new(BTreeMap::new())));
    p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(p.swap_mut().take_rows_written(), 2, "the pinned pages");
    p.record_reply(
        "a",
        CTX,
        &meta(0),
        calls(0, &["send_message"]),
        usage(5),
        "tool_calls",
    )
    .unwrap();
    p.record_tool_start(
        "a",
        CTX,
        &meta(0),
        0,
        "send_message",
        SideEffect::AtMostOnce,
    )
    .unwrap();
    assert_eq!(
        p.swap_mut().take_rows_written(),
        3,
        "a page and its row, then a start marker"
    );
    drop(p);

    let swap = StoreSwap::new(crate::store::Store::open(&path).unwrap(), "r1").unwrap();
    let mut p = Pager::new(swap, settings_of(), Arc::new(Mutex::new(BTreeMap::new())));
    let opened = p.open("a", CTX, "sys", "task", &[]).unwrap();
    assert_eq!(opened.journal.len(), 1);
    assert_eq!(opened.journal[0].started, vec![0]);
    assert_eq!(opened.journal[0].usage, usage(5));
    assert_eq!(opened.journal[0].finish_reason, "tool_calls");
    assert_eq!(
        p.swap_mut().take_rows_written(),
        0,
        "a reopen writes nothing"
    );
}

#[test]
fn a_reopened_context_shows_its_shared_pages_again() {
    let mut p = pager(100_000, PolicyKind::Lru);
    p.share("w", "w/up", "b", "upstream output").unwrap();
    p.open("a", CTX, "sys", "task", &["w/up".into()]).unwrap();
    let before = p.build("a", CTX, 0, &[]).unwrap().messages;
    let mut p = restart(p);
    p.open("a", CTX, "sys", "task", &["w/up".into()]).unwrap();
    assert_eq!(
        p.shared().readers("w/up"),
        1,
        "the reopened context reads it"
    );
    assert_eq!(p.build("a", CTX, 0, &[]).unwrap().messages, before);
    p.close("a", CTX).unwrap();
    assert_eq!(p.shared().readers("w/up"), 0);
}

#[test]
fn ids_encoded_by_the_caller_are_kept_only_when_they_match_the_page() {
    let mut p = pager(100_000, PolicyKind::Lru);
    p.open("a", CTX, "sys", "task", &[]).unwrap();
    let reply = calls(0, &["calculator"]);
    // Another encoding's ids, and a tool message's ids for what becomes a tool page with
    // another role: neither is trusted, the pager encodes the page itself.
    let wrong = PageMessage::encoded(reply.clone(), Encoding::Cl100kBase);
    p.record_reply("a", CTX, &meta(0), wrong, usage(3), "tool_calls")
        .unwrap();
    let mut as_user = ChatMessage::user("2");
    as_user.tool_call_id = Some("s0c0".into());
    let mislabeled = PageMessage::encoded(as_user, Encoding::O200kBase);
    p.record_tool_result(
        "a",
        CTX,
        &meta(0),
        0,
        mislabeled,
        &detail("calculator", SideEffect::Pure),
    )
    .unwrap();
    let right = PageMessage::encoded(ChatMessage::assistant("done: 2"), Encoding::O200kBase);
    p.record_reply("a", CTX, &meta(1), right, usage(3), "stop")
        .unwrap();
    let b = p.build("a", CTX, 0, &[]).unwrap();
    assert_eq!(
        Encoding::O200kBase.count_prompt(&b.messages) as u64,
        b.tokens,
        "the counts are the page encoding's"
    );
    for (m, ids) in b.messages.iter().zip(&b.ids) {
        let fresh = Encoding::O200kBase.encode_prompt(std::slice::from_ref(m));
        assert_eq!(ids.to_vec(), fresh, "{m:?}");
    }
}
