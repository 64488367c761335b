//! Shared workflow memory: pages several agents of one workflow may read.
//!
//! # How pages become shared
//! When a task succeeds, its output is published as a shared page of its workflow (key
//! `workflow/task`, owner = the agent that produced it). A downstream task that lists the
//! upstream task in `depends_on` but does **not** quote it with `{{task}}` in its input gets
//! that page attached to its context: it is an ordinary, evictable page of kind `shared`
//! (importance 0.7), shown right after the task input. A quoted upstream output is already part
//! of the pinned task input, so it is not attached twice. The scheduler computes that list for
//! each dispatch from the live DAG (`Dispatch::shared`), so tasks spawned at run time are
//! included: a reducer waiting for a planner's children reads each child's output.
//!
//! Shared pages are read-only: readers get the owner's text, and nothing in the pager's API
//! changes a published page. They are reference-counted by the contexts that show them; when
//! the last reader closes, the in-memory copy is dropped (the store keeps it). Local pages
//! stay strictly private: a context belongs to one agent, and every operation names the
//! agent, which the pager checks against the owner.

use std::collections::HashMap;
use std::sync::Arc;

use crate::llm::ChatMessage;

/// One published shared page.
#[derive(Debug, Clone)]
pub struct SharedPage {
    /// `workflow/task`.
    pub key: String,
    /// The workflow.
    pub workflow: String,
    /// The agent that published it.
    pub owner: String,
    /// The message readers see.
    pub message: Arc<ChatMessage>,
    /// Contexts showing it now.
    pub readers: usize,
}

/// The shared pages in memory.
#[derive(Debug, Default)]
pub struct SharedSpace {
    pages: HashMap<String, SharedPage>,
}

impl SharedSpace {
    /// Publishes (or replaces, on a retried producer) a page.
    pub fn publish(&mut self, key: &str, workflow: &str, owner: &str, message: ChatMessage) {
        let readers = self.pages.get(key).map_or(0, |p| p.readers);
        self.pages.insert(
            key.to_owned(),
            SharedPage {
                key: key.to_owned(),
                workflow: workflow.to_owned(),
                owner: owner.to_owned(),
                message: Arc::new(message),
                readers,
            },
        );
    }

    /// The page, if in memory.
    pub fn get(&self, key: &str) -> Option<&SharedPage> {
        self.pages.get(key)
    }

    /// Adds the page read from the store (after a restart).
    pub fn insert_loaded(&mut self, page: SharedPage) {
        self.pages.entry(page.key.clone()).or_insert(page);
    }

    /// One more reader.
    pub fn attach(&mut self, key: &str) {
        if let Some(p) = self.pages.get_mut(key) {
            p.readers += 1;
        }
    }

    /// One reader fewer; the in-memory copy goes with the last one.
    pub fn detach(&mut self, key: &str) {
        if let Some(p) = self.pages.get_mut(key) {
            p.readers = p.readers.saturating_sub(1);
            if p.readers == 0 {
                self.pages.remove(key);
            }
        }
    }

    /// Readers of `key` (0 when not in memory).
    pub fn readers(&self, key: &str) -> usize {
        self.pages.get(key).map_or(0, |p| p.readers)
    }
}

/// The text a reader sees for a shared page.
pub fn shared_message(key: &str, owner: &str, text: &str) -> ChatMessage {
    ChatMessage::system(format!(
        "Shared workflow memory: output of task {key} (agent {owner}):\n{text}"
    ))
}
