//! Model-based property tests: random sequences of append / record a reply / record a tool
//! result (extending the reply's group) / access / build / evict / swap-in / pin / restart
//! against a plain list of everything each context was told, and the journal it recorded.

use proptest::prelude::*;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::tests::{exchange, exchanges_consistent, pager, settings};
use super::*;
use crate::durable::SideEffect;
use crate::llm::{ChatMessage, Role, ToolCall, Usage};
use crate::tokenize::Encoding;

#[derive(Debug, Clone)]
enum Op {
    Append {
        agent: usize,
        words: usize,
    },
    Access {
        agent: usize,
        page: usize,
    },
    Build {
        agent: usize,
        overhead: u64,
    },
    Evict {
        agent: usize,
        page: usize,
    },
    SwapIn {
        agent: usize,
        page: usize,
    },
    Pin {
        agent: usize,
        page: usize,
        pinned: bool,
    },
    Importance {
        agent: usize,
        page: usize,
        value: f64,
    },
    CrossRead {
        agent: usize,
    },
    /// Records an LLM reply calling `calls` tools (a final answer with none).
    Reply {
        agent: usize,
        words: usize,
        calls: usize,
    },
    /// Records the result of the next call of the last reply (extends its group).
    Result {
        agent: usize,
        words: usize,
    },
    /// A fresh pager over the same store; every context is opened again.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..400usize).prop_map(|(agent, words)| Op::Append { agent, words }),
        1 => (0..2usize, 0..64usize).prop_map(|(agent, page)| Op::Access { agent, page }),
        4 => (0..2usize, 0..80u64).prop_map(|(agent, overhead)| Op::Build { agent, overhead }),
        1 => (0..2usize, 0..64usize).prop_map(|(agent, page)| Op::Evict { agent, page }),
        1 => (0..2usize, 0..64usize).prop_map(|(agent, page)| Op::SwapIn { agent, page }),
        1 => (0..2usize, 0..64usize, any::<bool>()).prop_map(|(agent, page, pinned)| Op::Pin { agent, page, pinned }),
        1 => (0..2usize, 0..64usize, 0.0..1.0f64).prop_map(|(agent, page, value)| Op::Importance { agent, page, value }),
        1 => (0..2usize).prop_map(|agent| Op::CrossRead { agent }),
        3 => (0..2usize, 1..200usize, 0..3usize).prop_map(|(agent, words, calls)| Op::Reply { agent, words, calls }),
        4 => (0..2usize, 1..300usize).prop_map(|(agent, words)| Op::Result { agent, words }),
        1 => Just(Op::Restart),
    ]
}

const AGENTS: [&str; 2] = ["a", "b"];
const CONTEXTS: [&str; 2] = ["wf/ta#1", "wf/tb#1"];

/// `sub` appears in `all` in the same order (summaries excluded by the caller).
fn is_subsequence(sub: &[&ChatMessage], all: &[ChatMessage]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|m| it.any(|x| x == *m))
}

/// What one context journaled: each step's reply and its recorded results.
#[derive(Debug, Default)]
struct JournalModel {
    steps: Vec<(ChatMessage, Vec<(String, String)>)>,
    /// Messages up to the last one journaled (or pinned): what a restart keeps.
    kept: usize,
    /// Call ids of the last reply still to answer, while it is the last group.
    open_calls: Vec<String>,
}

fn meta(step: usize) -> JournalMeta {
    JournalMeta {
        step: step as u32,
        instance: "x#0".into(),
        task: "wf/t".into(),
        attempt: 1,
        at_ms: 0,
        duration_ms: 0,
    }
}

fn check(policy: PolicyKind, budget: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut p = pager(budget, policy);
    let mut model: Vec<Vec<ChatMessage>> = Vec::new();
    let mut journals: Vec<JournalModel> = Vec::new();
    for (i, agent) in AGENTS.iter().enumerate() {
        let system = format!("system of {agent}");
        let task = format!("task of {agent}");
        p.open(agent, CONTEXTS[i], &system, &task, &[]).unwrap();
        model.push(vec![ChatMessage::system(system), ChatMessage::user(task)]);
        journals.push(JournalModel {
            kept: 2,
            ..JournalModel::default()
        });
    }
    let mut step = 0;
    for op in ops {
        match op {
            Op::Reply {
                agent,
                words,
                calls,
            } => {
                let j = &mut journals[agent];
                let n = j.steps.len();
                let reply = ChatMessage {
                    role: Role::Assistant,
                    content: format!("secret-of-{} {}", AGENTS[agent], "reply ".repeat(words)),
                    tool_calls: (0..calls)
                        .map(|c| ToolCall::new(format!("r{n}c{c}"), "grep", serde_json::json!({})))
                        .collect(),
                    tool_call_id: None,
                };
                p.record_reply(
                    AGENTS[agent],
                    CONTEXTS[agent],
                    &meta(n),
                    reply.clone(),
                    Usage::default(),
                    "stop",
                )
                .unwrap();
                j.open_calls = reply
                    .tool_calls
                    .iter()
                    .rev()
                    .map(|c| c.id.clone())
                    .collect();
                j.steps.push((reply.clone(), Vec::new()));
                model[agent].push(reply);
                j.kept = model[agent].len();
            }
            Op::Result { agent, words } => {
                let j = &mut journals[agent];
                let n = j.steps.len().saturating_sub(1);
                let id = j
                    .open_calls
                    .last()
                    .cloned()
                    .unwrap_or_else(|| "none".into());
                let content = format!("secret-of-{} {}", AGENTS[agent], "found ".repeat(words));
                let msg = ChatMessage::tool(id.clone(), content.clone());
                let detail = ToolDetail {
                    tool: "grep".into(),
                    class: SideEffect::Pure,
                    outcome: None,
                };
                let call = j.steps.last().map_or(0, |s| s.1.len() as u32);
                let done = p.record_tool_result(
                    AGENTS[agent],
                    CONTEXTS[agent],
                    &meta(n),
                    call,
                    msg.clone(),
                    &detail,
                );
                if j.open_calls.pop().is_some() {
                    prop_assert!(done.is_ok(), "result refused: {:?}", done.err());
                    if let Some(s) = j.steps.last_mut() {
                        s.1.push((id, content));
                    }
                    model[agent].push(msg);
                    j.kept = model[agent].len();
                } else {
                    prop_assert!(
                        matches!(done, Err(PagerError::NotAReply { .. })),
                        "{:?}",
                        done
                    );
                }
            }
            Op::Restart => {
                let mut s = HashMap::new();
                s.insert("a".to_owned(), settings(budget, policy));
                s.insert("b".to_owned(), settings(budget, policy));
                p = Pager::new(p.into_swap(), s, Arc::new(Mutex::new(BTreeMap::new())));
                for (i, agent) in AGENTS.iter().enumerate() {
                    let opened = p
                        .open(agent, CONTEXTS[i], "ignored", "ignored", &[])
                        .unwrap();
                    let j = &mut journals[i];
                    model[i].truncate(j.kept);
                    prop_assert_eq!(opened.journal.len(), j.steps.len());
                    for (got, (reply, results)) in opened.journal.iter().zip(&j.steps) {
                        prop_assert_eq!(&got.reply, reply);
                        prop_assert_eq!(&got.results, results);
                    }
                    // The last group is the last reply's again: its unanswered calls are open.
                    j.open_calls = j.steps.last().map_or_else(Vec::new, |(reply, results)| {
                        reply.tool_calls[results.len()..]
                            .iter()
                            .rev()
                            .map(|c| c.id.clone())
                            .collect()
                    });
                    let t = p.loaded(CONTEXTS[i]).unwrap();
                    prop_assert_eq!(
                        t.pages().len(),
                        model[i].len(),
                        "restored table of {}",
                        agent
                    );
                    prop_assert_eq!(opened.pinned_tokens, t.pinned_tokens());
                }
            }
            Op::Append { agent, words } => {
                step += 1;
                let mut ex = exchange(step, words);
                // Content unique per agent so isolation is visible.
                ex[1].content = format!("secret-of-{} {}", AGENTS[agent], ex[1].content);
                p.append(AGENTS[agent], CONTEXTS[agent], ex.clone())
                    .unwrap();
                model[agent].extend(ex);
                journals[agent].open_calls.clear();
            }
            Op::Access { agent, page } => {
                let _ = p.access(AGENTS[agent], CONTEXTS[agent], &[page as u64]);
            }
            Op::Evict { agent, page } => {
                let _ = p.evict(AGENTS[agent], CONTEXTS[agent], page as u64);
            }
            Op::SwapIn { agent, page } => {
                let _ = p.swap_in(AGENTS[agent], CONTEXTS[agent], page as u64);
            }
            Op::Pin {
                agent,
                page,
                pinned,
            } => {
                // Never unpin the system prompt or the task.
                if page >= 2 {
                    let _ = p.set_pinned(AGENTS[agent], CONTEXTS[agent], page as u64, pinned);
                }
            }
            Op::Importance { agent, page, value } => {
                let _ = p.set_importance(AGENTS[agent], CONTEXTS[agent], page as u64, value);
            }
            Op::CrossRead { agent } => {
                let other = 1 - agent;
                let err = p.build(AGENTS[agent], CONTEXTS[other], 0, &[]).unwrap_err();
                prop_assert!(matches!(err, PagerError::NotOwner { .. }), "{err}");
            }
            Op::Build { agent, overhead } => {
                let b = match p.build(AGENTS[agent], CONTEXTS[agent], overhead, &[]) {
                    Ok(b) => b,
                    // Only a budget that cannot hold the pinned pages may refuse.
                    Err(PagerError::BudgetTooSmall { .. }) => continue,
                    Err(e) => return Err(TestCaseError::fail(format!("build failed: {e}"))),
                };
                prop_assert!(b.tokens <= budget, "{} > {budget}", b.tokens);
                prop_assert_eq!(
                    Encoding::O200kBase.count_prompt(&b.messages) as u64 + overhead,
                    b.tokens
                );
                prop_assert_eq!(&b.messages[0], &model[agent][0]);
                prop_assert_eq!(&b.messages[1], &model[agent][1]);
                let table = p.loaded(CONTEXTS[agent]).unwrap();
                for page in table.pages().iter().filter(|pg| pg.pinned) {
                    let m = &model[agent][page.id as usize];
                    prop_assert!(b.messages.contains(m), "pinned page {} missing", page.id);
                }
                let real: Vec<&ChatMessage> = b
                    .messages
                    .iter()
                    .filter(|m| !m.content.starts_with("[context pager]"))
                    .collect();
                prop_assert!(
                    is_subsequence(&real, &model[agent]),
                    "order or content changed"
                );
                prop_assert!(exchanges_consistent(&b.messages));
                let other = AGENTS[1 - agent];
                prop_assert!(
                    !b.messages
                        .iter()
                        .any(|m| m.content.contains(&format!("secret-of-{other}"))),
                    "isolation broken"
                );
            }
        }
        for (i, ctx) in CONTEXTS.iter().enumerate() {
            let t = p.loaded(ctx).unwrap();
            prop_assert!(t.nothing_lost(p.swap()), "a page of {} was lost", AGENTS[i]);
            prop_assert_eq!(t.pages().len(), model[i].len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lru_importance_model(budget in 300u64..3000, ops in prop::collection::vec(op(), 1..60)) {
        check(PolicyKind::LruImportance, budget, ops)?;
    }

    #[test]
    fn lru_model(budget in 300u64..3000, ops in prop::collection::vec(op(), 1..60)) {
        check(PolicyKind::Lru, budget, ops)?;
    }
}
