//! The step journal, as the pager keeps it: the pages *are* the journal's content.
//!
//! An LLM reply is recorded as a new page group (its assistant message) plus a `reply`
//! journal row pointing at the page; each tool result is appended to that group plus a
//! `tool_result` row pointing at its page; an at-most-once call gets a `tool_start` row (no
//! page) before it runs. When a context that is in the store but not in memory is opened
//! again (a resumed attempt), [`replay`] reads the rows and their pages back into
//! [`JournaledStep`]s, and tells how much of the stored conversation they cover so that pages
//! written without their journal row (a write that failed half way) are left out.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::durable::SideEffect;
use crate::llm::{ChatMessage, Role, Usage};
use crate::store::journal::kind;
use crate::store::{JournalRow, PageRow};

/// What [`Pager::open`](super::Pager::open) answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Opened {
    /// Tokens of the pinned pages (system prompt and task input).
    pub pinned_tokens: u64,
    /// The steps journaled before (a resumed attempt), in step order from step 0; empty for a
    /// context opened fresh.
    pub journal: Vec<JournaledStep>,
    /// The first prompt, built in the same request, when the opener asked for it (see
    /// [`OpenRequest::build`](crate::agent::OpenRequest::build)) and the context opened
    /// fresh; `None` otherwise, and when that build failed (the opener builds again and
    /// reports the error as a build's).
    pub first_prompt: Option<super::BuiltPrompt>,
}

/// One journaled step of a resumed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledStep {
    /// The step (0-based; the steps of a journal are contiguous).
    pub step: u32,
    /// The assistant message of the step's LLM reply.
    pub reply: ChatMessage,
    /// The reply's token usage.
    pub usage: Usage,
    /// The server's finish reason of the reply (`stop`, `tool_calls`, `length`, ...).
    pub finish_reason: String,
    /// The recorded tool results: `(tool_call id, content)`, in call order.
    pub results: Vec<(String, String)>,
    /// Indexes of calls that have a start marker but no recorded result (an at-most-once
    /// call that may have run).
    pub started: Vec<u32>,
}

impl JournaledStep {
    /// Whether the reply is a final answer (no tool calls).
    pub fn is_final(&self) -> bool {
        self.reply.tool_calls.is_empty()
    }

    /// Whether call `index` has a recorded result.
    pub fn has_result(&self, index: usize) -> bool {
        self.reply
            .tool_calls
            .get(index)
            .is_some_and(|c| self.results.iter().any(|(id, _)| *id == c.id))
    }
}

/// Who made a record and when: the identity columns of its journal row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalMeta {
    /// The step within the attempt.
    pub step: u32,
    /// The instance (`agent#replica`).
    pub instance: String,
    /// The task (`workflow/task`).
    pub task: String,
    /// The attempt over every agent.
    pub attempt: u32,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// How long the LLM call or tool call took.
    pub duration_ms: u64,
}

impl JournalMeta {
    pub(super) fn row(
        &self,
        agent: &str,
        context: &str,
        call: u32,
        kind: &str,
        page_id: Option<u64>,
        detail: String,
    ) -> JournalRow {
        JournalRow {
            context: context.to_owned(),
            step: self.step,
            call,
            kind: kind.to_owned(),
            agent: agent.to_owned(),
            instance: self.instance.clone(),
            task: self.task.clone(),
            attempt: self.attempt,
            at_ms: self.at_ms,
            duration_ms: self.duration_ms,
            page_id,
            detail,
        }
    }
}

/// The `detail` of a `reply` row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyDetail {
    /// Token usage of the call.
    #[serde(default)]
    pub usage: Usage,
    /// The server's finish reason.
    #[serde(default)]
    pub finish_reason: String,
}

/// The `detail` of a `tool_start` or `tool_result` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDetail {
    /// The tool called.
    pub tool: String,
    /// Its side-effect class.
    pub class: SideEffect,
    /// `ok`, an error outcome label, or `interrupted` (`tool_result` rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// What a stored journal replays to.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// The journaled steps.
    pub steps: Vec<JournaledStep>,
    /// The highest page the steps reference, if any: later conversation pages were written
    /// without their journal row and are not part of the attempt.
    pub last_page: Option<u64>,
}

fn message_of(pages: &HashMap<u64, &PageRow>, id: Option<u64>) -> Option<ChatMessage> {
    let row = pages.get(&id?)?;
    serde_json::from_str(&row.message).ok()
}

/// Rebuilds the journaled steps from `rows` (one context, in step, call, kind order) and the
/// context's stored `pages`. The journal stops at the first step whose reply is missing or
/// unreadable; a result whose page is missing or does not answer its call counts as not
/// recorded.
pub(super) fn replay(rows: &[JournalRow], pages: &[PageRow]) -> Replayed {
    let by_id: HashMap<u64, &PageRow> = pages.iter().map(|p| (p.page_id, p)).collect();
    let mut by_step: BTreeMap<u32, Vec<&JournalRow>> = BTreeMap::new();
    for r in rows {
        by_step.entry(r.step).or_default().push(r);
    }
    let mut out = Replayed::default();
    for (expected, (step, rows)) in (0u32..).zip(by_step) {
        if step != expected {
            break;
        }
        let Some(reply_row) = rows.iter().find(|r| r.kind == kind::REPLY) else {
            break;
        };
        let Some(reply) =
            message_of(&by_id, reply_row.page_id).filter(|m| m.role == Role::Assistant)
        else {
            break;
        };
        let reply_group = reply_row
            .page_id
            .and_then(|id| by_id.get(&id))
            .map(|p| p.group);
        let detail: ReplyDetail = serde_json::from_str(&reply_row.detail).unwrap_or_default();
        let mut last_page = reply_row.page_id;
        let mut results = Vec::new();
        let mut answered = vec![false; reply.tool_calls.len()];
        for r in rows.iter().filter(|r| r.kind == kind::TOOL_RESULT) {
            let Some(call) = reply.tool_calls.get(r.call as usize) else {
                continue;
            };
            let in_group = r
                .page_id
                .and_then(|id| by_id.get(&id))
                .is_some_and(|p| Some(p.group) == reply_group);
            let Some(msg) = message_of(&by_id, r.page_id).filter(|m| {
                in_group && m.role == Role::Tool && m.tool_call_id.as_deref() == Some(&call.id)
            }) else {
                continue;
            };
            answered[r.call as usize] = true;
            last_page = last_page.max(r.page_id);
            results.push((call.id.clone(), msg.content));
        }
        let started = rows
            .iter()
            .filter(|r| r.kind == kind::TOOL_START)
            .map(|r| r.call)
            .filter(|c| answered.get(*c as usize) == Some(&false))
            .collect();
        out.last_page = out.last_page.max(last_page);
        out.steps.push(JournaledStep {
            step,
            reply,
            usage: detail.usage,
            finish_reason: detail.finish_reason,
            results,
            started,
        });
    }
    out
}
