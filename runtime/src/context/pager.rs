//! [`Pager`]: every agent's open contexts over one swap device, shared workflow pages,
//! isolation between agents, statistics and metrics.
//!
//! A context id names one task attempt (`workflow/task#attempt_total`); every operation
//! names the agent too, and a context is only ever served to the agent that opened it. A
//! context that is not in memory (the pager restarted) is rebuilt from the store on first use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::journal::Opened;
use super::shared::{shared_message, SharedPage, SharedSpace};
use super::swap::SwapDevice;
use super::table::{encode_page, Moves, NewPage, PageTable};
use super::{BuiltPrompt, ContextSettings, PageId, PageKind, PagerError};
use crate::events::{PagerResidency, PagesSwapped, PromptCounted, PromptSeries, ResidencyGauges};
use crate::llm::{ChatMessage, Role};
use crate::store::SharedRow;
use crate::tokenize::{Encoding, REPLY_PRIMING_TOKENS};

mod records;

/// Paging statistics of one agent over the run (all its contexts).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentStats {
    /// Prompts built.
    pub prompts: u64,
    /// Pages faulted in from the store.
    pub page_faults: u64,
    /// Tokens faulted in.
    pub swap_in_tokens: u64,
    /// Pages evicted from the resident set.
    pub evicted_pages: u64,
    /// Tokens evicted.
    pub swap_out_tokens: u64,
    /// Prompt tokens that summaries stood in for, minus the summaries' own tokens.
    pub tokens_saved: u64,
    /// Largest prompt built, in tokens.
    pub max_prompt_tokens: u64,
    /// The agent's budget.
    pub budget_tokens: u64,
    /// Resident pages of open contexts now.
    pub resident_pages: u64,
    /// Resident tokens of open contexts now.
    pub resident_tokens: u64,
    /// Swapped pages of open contexts now.
    pub swapped_pages: u64,
    /// Swapped tokens of open contexts now.
    pub swapped_tokens: u64,
}

/// Statistics by agent, shared with whoever reports them; they outlive a pager restart.
pub type SharedStats = Arc<Mutex<BTreeMap<String, AgentStats>>>;

/// Every open context of every agent.
#[derive(Debug)]
pub struct Pager<S: SwapDevice> {
    swap: S,
    settings: HashMap<String, ContextSettings>,
    tables: HashMap<String, PageTable>,
    shared: SharedSpace,
    stats: SharedStats,
    /// Resident and swapped figures last counted per open context, and their sums per agent,
    /// so the gauges update in O(1) however many contexts an agent's replicas hold open.
    counted: HashMap<String, Figures>,
    totals: HashMap<String, (Figures, ResidencyGauges)>,
    /// The prompt series of each configured agent, resolved once.
    prompt_series: HashMap<String, PromptSeries>,
    /// Each agent's system prompt and its token ids: every context of an agent opens with
    /// the same system page, so it is encoded once, not on every open.
    system_ids: HashMap<String, (String, Arc<[u32]>)>,
}

/// Resident pages, resident tokens, swapped pages, swapped tokens.
type Figures = [u64; 4];

impl<S: SwapDevice> Pager<S> {
    /// A pager over `swap` for the agents in `settings`.
    pub fn new(swap: S, settings: HashMap<String, ContextSettings>, stats: SharedStats) -> Self {
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            for (agent, set) in &settings {
                s.entry(agent.clone()).or_default().budget_tokens = set.budget_tokens;
            }
        }
        let prompt_series = settings
            .iter()
            .map(|(agent, set)| {
                let series = PromptSeries::of(agent, set.budget_tokens > 0);
                (agent.clone(), series)
            })
            .collect();
        Self {
            swap,
            settings,
            tables: HashMap::new(),
            shared: SharedSpace::default(),
            stats,
            counted: HashMap::new(),
            totals: HashMap::new(),
            prompt_series,
            system_ids: HashMap::new(),
        }
    }

    /// The swap device.
    pub fn swap(&self) -> &S {
        &self.swap
    }

    /// The swap device, mutably (the worker opens and commits write batches on it).
    pub fn swap_mut(&mut self) -> &mut S {
        &mut self.swap
    }

    /// Gives the swap device back (the pager's memory is dropped, as on a restart).
    pub fn into_swap(self) -> S {
        self.swap
    }

    /// The statistics handle.
    pub fn stats(&self) -> SharedStats {
        self.stats.clone()
    }

    /// The shared pages in memory.
    pub fn shared(&self) -> &SharedSpace {
        &self.shared
    }

    /// The ids of `agent`'s system page for `system` ([`encode_page`](super::table::encode_page)),
    /// encoded on the agent's first open and again only if its prompt changes.
    fn system_ids(&mut self, agent: &str, system: &str, encoding: Encoding) -> Arc<[u32]> {
        match self.system_ids.get(agent) {
            Some((text, ids)) if text == system => ids.clone(),
            _ => {
                let (ids, _) = encode_page(encoding, &ChatMessage::system(system));
                self.system_ids
                    .insert(agent.to_owned(), (system.to_owned(), ids.clone()));
                ids
            }
        }
    }

    fn settings_of(&self, agent: &str) -> Result<ContextSettings, PagerError> {
        self.settings
            .get(agent)
            .copied()
            .ok_or_else(|| PagerError::UnknownAgent(agent.to_owned()))
    }

    /// Opens a context: the pinned system prompt and task input, then the shared pages named
    /// by `shared_keys` that have been published (others are skipped). Refuses a context whose
    /// pinned pages alone exceed the budget.
    ///
    /// A context the store already holds (a resumed attempt, after a restart) is not opened
    /// again: its table is rebuilt from the store and its journal comes back in
    /// [`Opened::journal`]; conversation pages written after the last journaled record (a
    /// record whose journal row never reached the store) are left out of the table.
    pub fn open(
        &mut self,
        agent: &str,
        context: &str,
        system: &str,
        task: &str,
        shared_keys: &[String],
    ) -> Result<Opened, PagerError> {
        let settings = self.settings_of(agent)?;
        if self.tables.contains_key(context) {
            return Err(PagerError::AlreadyOpen {
                agent: agent.to_owned(),
                context: context.to_owned(),
            });
        }
        let stored = self.swap.load(context)?;
        if !stored.is_empty() {
            return self.reopen(agent, context, settings, stored);
        }
        let system_ids = self.system_ids(agent, system, settings.encoding);
        let mut t = PageTable::new(agent, context, settings);
        let pinned = |message, ids, kind| NewPage {
            message,
            ids,
            kind,
            pinned: true,
            shared_key: None,
        };
        let mut rows = t.push_group(vec![pinned(
            ChatMessage::system(system),
            Some(system_ids),
            PageKind::System,
        )]);
        rows.extend(t.push_group(vec![pinned(ChatMessage::user(task), None, PageKind::Task)]));
        let needed = REPLY_PRIMING_TOKENS as u64 + t.pinned_tokens();
        if needed > settings.budget_tokens {
            return Err(PagerError::BudgetTooSmall {
                agent: agent.to_owned(),
                needed,
                budget: settings.budget_tokens,
            });
        }
        let mut attached = Vec::new();
        for key in shared_keys {
            self.load_shared(key)?;
            if let Some(p) = self.shared.get(key) {
                rows.extend(t.push_group(vec![NewPage {
                    message: ChatMessage::clone(&p.message),
                    ids: None,
                    kind: PageKind::Shared,
                    pinned: false,
                    shared_key: Some(key.clone()),
                }]));
                attached.push(key.clone());
            }
        }
        self.swap.write(&rows)?;
        for key in &attached {
            self.shared.attach(key);
        }
        let pinned_tokens = t.pinned_tokens();
        self.tables.insert(context.to_owned(), t);
        self.refresh_gauges(agent, context);
        Ok(Opened {
            pinned_tokens,
            journal: Vec::new(),
            first_prompt: None,
        })
    }

    /// Brings a shared page into memory from the store if it is published there.
    fn load_shared(&mut self, key: &str) -> Result<(), PagerError> {
        if self.shared.get(key).is_none() {
            if let Some(row) = self.swap.read_shared(key)? {
                if let Ok(msg) = serde_json::from_str::<ChatMessage>(&row.message) {
                    self.shared.insert_loaded(SharedPage {
                        key: row.key,
                        workflow: row.workflow,
                        owner: row.owner,
                        message: Arc::new(msg),
                        readers: 0,
                    });
                }
            }
        }
        Ok(())
    }

    /// The table of `context`, checked against `agent`, rebuilt from the store if needed.
    pub fn table_mut(&mut self, agent: &str, context: &str) -> Result<&mut PageTable, PagerError> {
        if !self.tables.contains_key(context) {
            let settings = self.settings_of(agent)?;
            let rows = self.swap.load(context)?;
            let Some(first) = rows.first() else {
                return Err(PagerError::NoSuchContext {
                    agent: agent.to_owned(),
                    context: context.to_owned(),
                });
            };
            let owner = first.agent.clone();
            if owner != agent {
                return Err(PagerError::NotOwner {
                    agent: agent.to_owned(),
                    context: context.to_owned(),
                    owner,
                });
            }
            let t = PageTable::restore(agent, context, settings, rows);
            tracing::info!(
                agent,
                context,
                pages = t.pages().len(),
                "context page table rebuilt from the store"
            );
            self.tables.insert(context.to_owned(), t);
        }
        let t = self
            .tables
            .get_mut(context)
            .ok_or_else(|| PagerError::NoSuchContext {
                agent: agent.to_owned(),
                context: context.to_owned(),
            })?;
        if t.agent() != agent {
            return Err(PagerError::NotOwner {
                agent: agent.to_owned(),
                context: context.to_owned(),
                owner: t.agent().to_owned(),
            });
        }
        Ok(t)
    }

    /// The table of `context` for `agent` (tests, inspection).
    pub fn table(&mut self, agent: &str, context: &str) -> Result<&PageTable, PagerError> {
        self.table_mut(agent, context).map(|t| &*t)
    }

    /// Appends one exchange (an assistant message and the tool results answering it, or a
    /// single message) as one group, written through to the store.
    pub fn append(
        &mut self,
        agent: &str,
        context: &str,
        messages: Vec<ChatMessage>,
    ) -> Result<Vec<PageId>, PagerError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let (rows, ids) = {
            let t = self.table_mut(agent, context)?;
            let new = messages
                .into_iter()
                .map(|message| NewPage {
                    kind: if message.role == Role::Tool {
                        PageKind::ToolResult
                    } else {
                        PageKind::Message
                    },
                    message,
                    ids: None,
                    pinned: false,
                    shared_key: None,
                })
                .collect();
            let rows = t.push_group(new);
            let ids: Vec<PageId> = rows.iter().map(|r| r.page_id).collect();
            (rows, ids)
        };
        if let Err(e) = self.swap.write(&rows) {
            if let Some(t) = self.tables.get_mut(context) {
                t.pop_group();
            }
            return Err(e.into());
        }
        self.refresh_gauges(agent, context);
        Ok(ids)
    }

    /// Builds the prompt of `context` within the agent's budget.
    pub fn build(
        &mut self,
        agent: &str,
        context: &str,
        overhead_tokens: u64,
        want: &[PageId],
    ) -> Result<BuiltPrompt, PagerError> {
        let (table, swap) = self.table_and_swap(agent, context)?;
        let result = table.build(swap, overhead_tokens, want);
        let moves = table.take_moves();
        self.fold(agent, moves, result.as_ref().ok());
        self.refresh_gauges(agent, context);
        result
    }

    /// The table of `context` (loaded from the store if needed, checked against `agent`)
    /// together with the swap device, borrowed side by side.
    fn table_and_swap(
        &mut self,
        agent: &str,
        context: &str,
    ) -> Result<(&mut PageTable, &mut S), PagerError> {
        self.table_mut(agent, context)?;
        let table = self
            .tables
            .get_mut(context)
            .ok_or_else(|| PagerError::NoSuchContext {
                agent: agent.to_owned(),
                context: context.to_owned(),
            })?;
        Ok((table, &mut self.swap))
    }

    /// Runs `op` on the table with the swap device, folding its moves into the statistics.
    fn with_table<T>(
        &mut self,
        agent: &str,
        context: &str,
        op: impl FnOnce(&mut PageTable, &mut S) -> Result<T, PagerError>,
    ) -> Result<T, PagerError> {
        let (table, swap) = self.table_and_swap(agent, context)?;
        let out = op(table, swap);
        let moves = table.take_moves();
        self.fold(agent, moves, None);
        self.refresh_gauges(agent, context);
        out
    }

    /// Marks pages as used (most recent, one more access).
    pub fn access(
        &mut self,
        agent: &str,
        context: &str,
        pages: &[PageId],
    ) -> Result<(), PagerError> {
        self.with_table(agent, context, |t, _| t.access(pages))
    }

    /// Pins or unpins a page.
    pub fn set_pinned(
        &mut self,
        agent: &str,
        context: &str,
        page: PageId,
        pinned: bool,
    ) -> Result<(), PagerError> {
        self.with_table(agent, context, |t, s| t.set_pinned(s, page, pinned))
    }

    /// Sets a page's importance.
    pub fn set_importance(
        &mut self,
        agent: &str,
        context: &str,
        page: PageId,
        importance: f64,
    ) -> Result<(), PagerError> {
        self.with_table(agent, context, |t, _| t.set_importance(page, importance))
    }

    /// Evicts the group of a page now (pinned pages are refused). Returns whether it moved.
    pub fn evict(&mut self, agent: &str, context: &str, page: PageId) -> Result<bool, PagerError> {
        self.with_table(agent, context, |t, _| t.evict_page(page))
    }

    /// Faults the group of a page in now. Returns whether it moved.
    pub fn swap_in(
        &mut self,
        agent: &str,
        context: &str,
        page: PageId,
    ) -> Result<bool, PagerError> {
        self.with_table(agent, context, |t, s| t.swap_in_page(s, page))
    }

    /// Publishes a shared workflow page (see [`super::shared`]).
    pub fn share(
        &mut self,
        workflow: &str,
        key: &str,
        owner: &str,
        text: &str,
    ) -> Result<(), PagerError> {
        let message = shared_message(key, owner, text);
        let encoding = self.settings_of(owner)?.encoding;
        self.swap.write_shared(&SharedRow {
            key: key.to_owned(),
            workflow: workflow.to_owned(),
            owner: owner.to_owned(),
            tokens: encoding.count_message(&message) as u64,
            message: serde_json::to_string(&message).unwrap_or_default(),
        })?;
        self.shared.publish(key, workflow, owner, message);
        Ok(())
    }

    /// Closes a context: its pages stay in the store; its shared pages lose a reader.
    pub fn close(&mut self, agent: &str, context: &str) -> Result<(), PagerError> {
        match self.tables.get(context) {
            Some(t) if t.agent() != agent => {
                return Err(PagerError::NotOwner {
                    agent: agent.to_owned(),
                    context: context.to_owned(),
                    owner: t.agent().to_owned(),
                })
            }
            Some(_) => {}
            None => return Ok(()),
        }
        if let Some(t) = self.tables.remove(context) {
            let keys: Vec<String> = t.shared_keys().map(str::to_owned).collect();
            for k in keys {
                self.shared.detach(&k);
            }
        }
        self.refresh_gauges(agent, context);
        Ok(())
    }

    /// The table of `context` if it is in memory (no owner check; inspection only).
    pub fn loaded(&self, context: &str) -> Option<&PageTable> {
        self.tables.get(context)
    }

    /// Open contexts.
    pub fn open_contexts(&self) -> usize {
        self.tables.len()
    }

    fn fold(&self, agent: &str, moves: Moves, built: Option<&BuiltPrompt>) {
        let policy = self
            .settings
            .get(agent)
            .map_or("unknown", |s| s.policy.name());
        let mut all = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let s = match all.get_mut(agent) {
            Some(s) => s,
            None => all.entry(agent.to_owned()).or_default(),
        };
        s.page_faults += moves.faults;
        s.swap_in_tokens += moves.swap_in_tokens;
        s.evicted_pages += moves.evicted_pages;
        s.swap_out_tokens += moves.swap_out_tokens;
        PagesSwapped {
            agent,
            policy,
            moves,
        }
        .emit();
        if let Some(b) = built {
            s.prompts += 1;
            s.tokens_saved += b.tokens_saved;
            s.max_prompt_tokens = s.max_prompt_tokens.max(b.tokens);
            let counted = PromptCounted { agent, prompt: b };
            match self.prompt_series.get(agent) {
                Some(series) => counted.emit_with(series),
                None => counted.emit(),
            }
        }
    }

    /// Recounts `context` (gone if closed) into `agent`'s totals and publishes them.
    fn refresh_gauges(&mut self, agent: &str, context: &str) {
        let now: Figures = self.tables.get(context).map_or([0; 4], |t| {
            let (p, k) = t.resident();
            let (q, l) = t.swapped();
            [p, k, q, l]
        });
        let before = if self.tables.contains_key(context) {
            match self.counted.get_mut(context) {
                Some(c) => Some(std::mem::replace(c, now)),
                None => self.counted.insert(context.to_owned(), now),
            }
        } else {
            self.counted.remove(context)
        }
        .unwrap_or([0; 4]);
        if !self.totals.contains_key(agent) {
            let gauges = ResidencyGauges::of(agent);
            self.totals.insert(agent.to_owned(), ([0; 4], gauges));
        }
        let Some((total, gauges)) = self.totals.get_mut(agent) else {
            return;
        };
        let changed = now != before;
        for i in 0..4 {
            total[i] = (total[i] + now[i]).saturating_sub(before[i]);
        }
        let [rp, rt, sp, st] = *total;
        if !changed {
            return;
        }
        {
            let mut all = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            let s = match all.get_mut(agent) {
                Some(s) => s,
                None => all.entry(agent.to_owned()).or_default(),
            };
            s.resident_pages = rp;
            s.resident_tokens = rt;
            s.swapped_pages = sp;
            s.swapped_tokens = st;
        }
        gauges.set(&PagerResidency {
            agent,
            resident_pages: rp,
            resident_tokens: rt,
            swapped_pages: sp,
            swapped_tokens: st,
        });
    }
}
