//! The step journal side of [`Pager`]: reopening a stored context with its journal, and the
//! records of replies, tool starts and tool results (see [`crate::context::journal`]).

use super::Pager;
use crate::context::journal::{replay, JournalMeta, Opened, ReplyDetail, ToolDetail};
use crate::context::swap::SwapDevice;
use crate::context::table::{NewPage, PageMessage, PageTable};
use crate::context::{ContextSettings, PageId, PageKind, PagerError};
use crate::durable::SideEffect;
use crate::llm::{ChatMessage, Role, Usage};
use crate::store::journal::kind;
use crate::store::PageRow;

impl<S: SwapDevice> Pager<S> {
    /// [`Pager::open`] of a context the store holds: rebuild the table, replay the journal.
    pub(super) fn reopen(
        &mut self,
        agent: &str,
        context: &str,
        settings: ContextSettings,
        mut stored: Vec<PageRow>,
    ) -> Result<Opened, PagerError> {
        if let Some(owner) = stored.first().map(|r| r.agent.clone()) {
            if owner != agent {
                return Err(PagerError::NotOwner {
                    agent: agent.to_owned(),
                    context: context.to_owned(),
                    owner,
                });
            }
        }
        let rows = self.swap.load_journal(context)?;
        let replayed = replay(&rows, &stored);
        // Conversation pages past the journal were written without their journal row; the
        // resumed attempt records those steps again (over the same page ids).
        let unjournaled = |r: &PageRow| {
            !r.pinned
                && r.shared_key.is_none()
                && replayed.last_page.is_none_or(|last| r.page_id > last)
        };
        let dropped = stored.iter().filter(|r| unjournaled(r)).count();
        stored.retain(|r| !unjournaled(r));
        let t = PageTable::restore(agent, context, settings, stored);
        let keys: Vec<String> = t.shared_keys().map(str::to_owned).collect();
        for key in &keys {
            self.load_shared(key)?;
            self.shared.attach(key);
        }
        tracing::info!(
            agent,
            context,
            pages = t.pages().len(),
            steps = replayed.steps.len(),
            dropped,
            "context reopened from the store with its journal"
        );
        let pinned_tokens = t.pinned_tokens();
        self.tables.insert(context.to_owned(), t);
        self.refresh_gauges(agent, context);
        Ok(Opened {
            pinned_tokens,
            journal: replayed.steps,
            first_prompt: None,
        })
    }

    /// Records an LLM reply: its assistant message becomes a new page group and a `reply`
    /// journal row points at it. A final answer (no tool calls) is recorded the same way.
    /// Answers the page id. Nothing is kept if a write fails.
    pub fn record_reply(
        &mut self,
        agent: &str,
        context: &str,
        meta: &JournalMeta,
        reply: impl Into<PageMessage>,
        usage: Usage,
        finish_reason: &str,
    ) -> Result<PageId, PagerError> {
        let reply = reply.into();
        let table = self.table_mut(agent, context)?;
        let ids = reply.ids_for(table.settings().encoding, Role::Assistant);
        let reply = ChatMessage {
            role: Role::Assistant,
            ..reply.message
        };
        let rows = table.push_group(vec![NewPage {
            message: reply,
            ids,
            kind: PageKind::Message,
            pinned: false,
            shared_key: None,
        }]);
        let page = rows.first().map_or(0, |r| r.page_id);
        let detail = serde_json::to_string(&ReplyDetail {
            usage,
            finish_reason: finish_reason.to_owned(),
        })
        .unwrap_or_default();
        let journal = meta.row(agent, context, 0, kind::REPLY, Some(page), detail);
        // Pages and row together (one savepoint in the store). A page left without its row
        // (a device that cannot do both at once) is dropped when the context is reopened.
        let written = self
            .swap
            .write_record(&rows, std::slice::from_ref(&journal));
        if let Err(e) = written {
            if let Some(t) = self.tables.get_mut(context) {
                t.pop_group();
            }
            self.refresh_gauges(agent, context);
            return Err(e.into());
        }
        self.refresh_gauges(agent, context);
        Ok(page)
    }

    /// Records that at-most-once call `call` of step `meta.step` is about to run: a
    /// `tool_start` journal row, no page.
    pub fn record_tool_start(
        &mut self,
        agent: &str,
        context: &str,
        meta: &JournalMeta,
        call: u32,
        tool: &str,
        class: SideEffect,
    ) -> Result<(), PagerError> {
        self.table_mut(agent, context)?;
        let detail = serde_json::to_string(&ToolDetail {
            tool: tool.to_owned(),
            class,
            outcome: None,
        })
        .unwrap_or_default();
        let row = meta.row(agent, context, call, kind::TOOL_START, None, detail);
        self.swap.write_journal(&[row])?;
        Ok(())
    }

    /// Records the result of call `call` of step `meta.step`: the tool message joins the
    /// group of the step's reply (the last group) and a `tool_result` journal row points at
    /// it. Refused when the last group is not a reply calling that tool call id. Answers the
    /// page id. Nothing is kept if a write fails.
    pub fn record_tool_result(
        &mut self,
        agent: &str,
        context: &str,
        meta: &JournalMeta,
        call: u32,
        message: impl Into<PageMessage>,
        detail: &ToolDetail,
    ) -> Result<PageId, PagerError> {
        let message = message.into();
        let (table, swap) = self.table_and_swap(agent, context)?;
        let ids = message.ids_for(table.settings().encoding, Role::Tool);
        let message = message.message;
        let len = table.last_group_len();
        let rows = {
            // Fault the reply's group in first, so that the check sees its message.
            table.fault_last_group(swap)?;
            let answers = table
                .last_group_messages()
                .and_then(|m| m.first().copied())
                .is_some_and(|reply| {
                    reply.role == Role::Assistant
                        && message
                            .tool_call_id
                            .as_ref()
                            .is_some_and(|id| reply.tool_calls.iter().any(|c| c.id == *id))
                });
            if !answers {
                let moves = table.take_moves();
                self.fold(agent, moves, None);
                return Err(PagerError::NotAReply {
                    context: context.to_owned(),
                    step: meta.step,
                    call,
                });
            }
            table.extend_last_group(
                swap,
                vec![NewPage {
                    message: ChatMessage {
                        role: Role::Tool,
                        ..message
                    },
                    ids,
                    kind: PageKind::ToolResult,
                    pinned: false,
                    shared_key: None,
                }],
            )?
        };
        let moves = table.take_moves();
        self.fold(agent, moves, None);
        let page = rows.first().map_or(0, |r| r.page_id);
        let detail = serde_json::to_string(detail).unwrap_or_default();
        let journal = meta.row(agent, context, call, kind::TOOL_RESULT, Some(page), detail);
        let written = self
            .swap
            .write_record(&rows, std::slice::from_ref(&journal));
        if let Err(e) = written {
            if let Some(t) = self.tables.get_mut(context) {
                t.truncate_last_group(len);
            }
            self.refresh_gauges(agent, context);
            return Err(e.into());
        }
        self.refresh_gauges(agent, context);
        Ok(page)
    }
}
