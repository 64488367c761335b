//! One context's page table and the prompt builder.
//!
//! Pages are kept in conversation order and grouped into exchanges (see the
//! [module docs](super)). A group is either resident (its messages in memory) or swapped
//! (only in the store, represented in the prompt by a summary of the run of swapped groups it
//! belongs to). Pinned groups are always resident and never in the recency order.
//!
//! [`PageTable::build`] makes a prompt within the budget:
//! 1. fault in the groups of pages the caller asks for (`want`) and protect them, along with
//!    the newest group (the model must see the result of its latest call);
//! 2. while `priming + tool definitions + resident pages + summaries > budget`, evict the
//!    policy's victim among unprotected groups, then protected ones oldest first; when nothing
//!    is left to evict, shorten summaries to their compact form; if it still does not fit the
//!    build fails with [`PagerError::BudgetTooSmall`];
//! 3. with budget to spare, fault swapped groups back in, best keep score first, while they
//!    fit (never one evicted by this same build);
//! 4. emit the messages in conversation order, each run of swapped groups as one summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lru::LruCache;

use super::compress::group_line;
use super::swap::SwapDevice;
use super::{ContextSettings, PageId, PageKind, PageMove, PagerError};
use crate::llm::ChatMessage;
use crate::store::PageRow;
use crate::tokenize::{Encoding, MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS};

mod build;
mod extend;
mod runs;

/// Extra room kept when faulting a group back in, for the summary header a split run gains.
const FAULT_MARGIN_TOKENS: u64 = 64;

/// What the table knows about one page.
#[derive(Debug, Clone)]
pub struct Page {
    /// Id within the context.
    pub id: PageId,
    /// Kind.
    pub kind: PageKind,
    /// Index of its exchange group.
    pub group: usize,
    /// Tokens, counted once with the agent's encoding.
    pub tokens: u64,
    /// 0..1.
    pub importance: f64,
    /// Always resident when pinned.
    pub pinned: bool,
    /// Times accessed (included in a prompt, touched, faulted in).
    pub accesses: u64,
    /// Logical time of the last touch, append or fault.
    pub last_access: u64,
    /// The message while resident.
    message: Option<Arc<ChatMessage>>,
    /// Its token ids in the KV-cache layout while resident, kept from counting it (computed
    /// again on first use after a fault).
    ids: Option<Arc<[u32]>>,
    /// For a shared page, the shared key it shows.
    shared_key: Option<String>,
}

impl Page {
    /// Whether the page is in memory.
    pub fn resident(&self) -> bool {
        self.message.is_some()
    }
}

#[derive(Debug, Clone)]
struct Group {
    first: usize,
    len: usize,
    tokens: u64,
    resident: bool,
    pinned: usize,
    /// Its line in a run's summary; made when it leaves memory (a resident group is never
    /// summarised, and most groups never leave), empty until then.
    line: String,
}

/// A message to record as a page, with its token ids when the caller encoded it already
/// (the step core does, on the agent's own thread, so the pager does not).
#[derive(Debug, Clone, PartialEq)]
pub struct PageMessage {
    /// The message.
    pub message: ChatMessage,
    /// Its ids in the KV-cache layout ([`encode_page`]), with the encoding named, or `None`.
    pub ids: Option<(Encoding, Arc<[u32]>)>,
}

impl PageMessage {
    /// `message` encoded with `encoding` now.
    pub fn encoded(message: ChatMessage, encoding: Encoding) -> Self {
        let (ids, _) = encode_page(encoding, &message);
        Self {
            message,
            ids: Some((encoding, ids)),
        }
    }

    /// The ids, if they were made with `encoding` for a message of `role` (the pager sets the
    /// role of what it records, and a different role has a different marker).
    pub(crate) fn ids_for(&self, encoding: Encoding, role: crate::llm::Role) -> Option<Arc<[u32]>> {
        match &self.ids {
            Some((e, ids)) if *e == encoding && self.message.role == role => Some(ids.clone()),
            _ => None,
        }
    }
}

impl From<ChatMessage> for PageMessage {
    fn from(message: ChatMessage) -> Self {
        Self { message, ids: None }
    }
}

/// One new page for [`PageTable::push_group`].
#[derive(Debug, Clone)]
pub struct NewPage {
    /// The message.
    pub message: ChatMessage,
    /// Its ids ([`encode_page`] with the table's encoding), when already known.
    pub ids: Option<Arc<[u32]>>,
    /// Its kind.
    pub kind: PageKind,
    /// Pinned from the start.
    pub pinned: bool,
    /// For a shared page, its key.
    pub shared_key: Option<String>,
}

/// Counters of one build or operation, folded into the agent's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moves {
    /// Pages evicted.
    pub evicted_pages: u64,
    /// Tokens evicted.
    pub swap_out_tokens: u64,
    /// Pages faulted in.
    pub faults: u64,
    /// Tokens faulted in.
    pub swap_in_tokens: u64,
}

/// The page table of one context (one task attempt of one agent).
#[derive(Debug)]
pub struct PageTable {
    agent: String,
    context: String,
    settings: ContextSettings,
    pages: Vec<Page>,
    groups: Vec<Group>,
    recency: LruCache<usize, ()>,
    clock: u64,
    resident_tokens: u64,
    resident_pages: u64,
    /// Runs of consecutive swapped groups: first group -> (last group, summary tokens).
    runs: BTreeMap<usize, (usize, u64)>,
    /// Sum of the (non-compact) summary tokens of every run.
    summary_total: u64,
    /// Prefix sums over groups (entry `g` covers groups `..g`), for O(1) run sizes.
    prefix_tokens: Vec<u64>,
    prefix_pages: Vec<u64>,
    /// Moves since the last [`PageTable::take_moves`].
    moves: Moves,
}

impl PageTable {
    /// An empty table.
    pub fn new(agent: &str, context: &str, settings: ContextSettings) -> Self {
        Self {
            agent: agent.to_owned(),
            context: context.to_owned(),
            settings,
            pages: Vec::new(),
            groups: Vec::new(),
            recency: LruCache::unbounded(),
            clock: 0,
            resident_tokens: 0,
            resident_pages: 0,
            runs: BTreeMap::new(),
            summary_total: 0,
            prefix_tokens: vec![0],
            prefix_pages: vec![0],
            moves: Moves::default(),
        }
    }

    /// The owning agent.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The context id.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The settings.
    pub fn settings(&self) -> ContextSettings {
        self.settings
    }

    /// Every page, in conversation order.
    pub fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// Resident pages and their tokens.
    pub fn resident(&self) -> (u64, u64) {
        (self.resident_pages, self.resident_tokens)
    }

    /// Swapped pages and their tokens.
    pub fn swapped(&self) -> (u64, u64) {
        let pages = self.pages.len() as u64 - self.resident_pages;
        let total = self.prefix_tokens.last().copied().unwrap_or(0);
        (pages, total - self.resident_tokens)
    }

    /// Tokens of the pinned pages.
    pub fn pinned_tokens(&self) -> u64 {
        self.pages
            .iter()
            .filter(|p| p.pinned)
            .map(|p| p.tokens)
            .sum()
    }

    /// Moves since the last call, reset.
    pub fn take_moves(&mut self) -> Moves {
        std::mem::take(&mut self.moves)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Appends one exchange group and returns the rows to write through to the store. Call
    /// [`PageTable::pop_group`] if writing them fails.
    pub fn push_group(&mut self, new: Vec<NewPage>) -> Vec<PageRow> {
        let now = self.tick();
        let g = self.groups.len();
        let first = self.pages.len();
        let mut rows = Vec::with_capacity(new.len());
        for n in new {
            rows.push(self.push_page(n, g, now));
        }
        self.finish_group(g, first, true);
        rows
    }

    fn finish_group(&mut self, g: usize, first: usize, resident: bool) {
        let len = self.pages.len() - first;
        let members = &self.pages[first..];
        let tokens: u64 = members.iter().map(|p| p.tokens).sum();
        let pinned = members.iter().filter(|p| p.pinned).count();
        let line = if resident {
            String::new()
        } else {
            self.line_of(first, len, tokens)
        };
        self.groups.push(Group {
            first,
            len,
            tokens,
            resident,
            pinned,
            line,
        });
        let (pt, pp) = (
            self.prefix_tokens.last().copied().unwrap_or(0),
            self.prefix_pages.last().copied().unwrap_or(0),
        );
        self.prefix_tokens.push(pt + tokens);
        self.prefix_pages.push(pp + len as u64);
        if resident {
            self.resident_tokens += tokens;
            self.resident_pages += len as u64;
            if pinned == 0 {
                self.recency.put(g, ());
            }
        }
    }

    fn push_page(&mut self, n: NewPage, g: usize, now: u64) -> PageRow {
        let (ids, tokens) = match n.ids {
            Some(ids) => {
                let tokens = (ids.len().saturating_sub(1) + MESSAGE_OVERHEAD_TOKENS) as u64;
                (ids, tokens)
            }
            None => encode_page(self.settings.encoding, &n.message),
        };
        let id = self.pages.len() as PageId;
        let importance = n.kind.default_importance();
        let row = PageRow {
            context: self.context.clone(),
            page_id: id,
            agent: self.agent.clone(),
            group: g as u64,
            kind: n.kind.label().to_owned(),
            pinned: n.pinned,
            importance,
            tokens,
            shared_key: n.shared_key.clone(),
            message: serde_json::to_string(&n.message).unwrap_or_default(),
        };
        self.pages.push(Page {
            id,
            kind: n.kind,
            group: g,
            tokens,
            importance,
            pinned: n.pinned,
            accesses: 0,
            last_access: now,
            message: Some(Arc::new(n.message)),
            ids: Some(ids),
            shared_key: n.shared_key,
        });
        row
    }

    /// Undoes the last [`PageTable::push_group`].
    pub fn pop_group(&mut self) {
        let Some(last) = self.groups.len().checked_sub(1) else {
            return;
        };
        if !self.groups[last].resident {
            self.unrun(last);
        }
        if let Some(g) = self.groups.pop() {
            self.prefix_tokens.pop();
            self.prefix_pages.pop();
            self.pages.truncate(g.first);
            self.recency.pop(&self.groups.len());
            if g.resident {
                self.resident_tokens -= g.tokens;
                self.resident_pages -= g.len as u64;
            }
        }
    }

    /// Rebuilds a table from its stored rows (after a pager restart). Pinned groups come back
    /// resident; the rest stay swapped until a build faults them in.
    pub fn restore(
        agent: &str,
        context: &str,
        settings: ContextSettings,
        rows: Vec<PageRow>,
    ) -> Self {
        let mut t = Self::new(agent, context, settings);
        let mut current: Option<u64> = None;
        let mut first = 0;
        let mut resident = false;
        for r in rows {
            if current != Some(r.group) {
                if current.is_some() {
                    t.finish_restored(first, resident);
                }
                current = Some(r.group);
                first = t.pages.len();
                resident = false;
            }
            resident |= r.pinned;
            let message: ChatMessage = serde_json::from_str(&r.message)
                .unwrap_or_else(|_| ChatMessage::user(r.message.clone()));
            t.pages.push(Page {
                id: r.page_id,
                kind: PageKind::from_label(&r.kind).unwrap_or(PageKind::Message),
                group: t.groups.len(),
                tokens: r.tokens,
                importance: r.importance,
                pinned: r.pinned,
                accesses: 0,
                last_access: 0,
                message: Some(Arc::new(message)),
                ids: None,
                shared_key: r.shared_key,
            });
        }
        if current.is_some() {
            // The newest exchange was resident (it is protected); keep it so.
            t.finish_restored(first, true);
        }
        t
    }

    fn finish_restored(&mut self, first: usize, resident: bool) {
        let g = self.groups.len();
        self.finish_group(g, first, resident);
        if !resident {
            for p in &mut self.pages[first..] {
                p.message = None;
                p.ids = None;
            }
            self.enrun(g);
        }
    }

    /// The group of page `id`.
    pub fn group_of(&self, id: PageId) -> Result<usize, PagerError> {
        self.pages
            .get(id as usize)
            .filter(|p| p.id == id)
            .map(|p| p.group)
            .ok_or_else(|| PagerError::NoSuchPage {
                context: self.context.clone(),
                page: id,
            })
    }

    /// Marks pages as used: they become the most recent and count one more access.
    pub fn access(&mut self, ids: &[PageId]) -> Result<(), PagerError> {
        let now = self.tick();
        for id in ids {
            let g = self.group_of(*id)?;
            self.recency.promote(&g);
            let p = &mut self.pages[*id as usize];
            p.accesses += 1;
            p.last_access = now;
        }
        Ok(())
    }

    /// Sets a page's importance (clamped to 0..1).
    pub fn set_importance(&mut self, id: PageId, importance: f64) -> Result<(), PagerError> {
        self.group_of(id)?;
        self.pages[id as usize].importance = if importance.is_finite() {
            importance.clamp(0.0, 1.0)
        } else {
            0.5
        };
        Ok(())
    }

    /// Pins or unpins a page (its whole group stays resident while any page is pinned). A
    /// swapped group is faulted in first. Pinning more than the budget holds is refused.
    pub fn set_pinned(
        &mut self,
        swap: &mut dyn SwapDevice,
        id: PageId,
        pinned: bool,
    ) -> Result<(), PagerError> {
        let g = self.group_of(id)?;
        if self.pages[id as usize].pinned == pinned {
            return Ok(());
        }
        if pinned {
            let needed = REPLY_PRIMING_TOKENS as u64 + self.pinned_tokens() + self.groups[g].tokens;
            if self.groups[g].pinned == 0 && needed > self.settings.budget_tokens {
                return Err(PagerError::BudgetTooSmall {
                    agent: self.agent.clone(),
                    needed,
                    budget: self.settings.budget_tokens,
                });
            }
            if !self.groups[g].resident {
                self.fault(swap, g)?;
            }
            self.groups[g].pinned += 1;
            self.recency.pop(&g);
        } else {
            self.groups[g].pinned -= 1;
            if self.groups[g].pinned == 0 {
                self.recency.put(g, ());
            }
        }
        self.pages[id as usize].pinned = pinned;
        Ok(())
    }

    /// Evicts the group of page `id` (no-op when swapped; refused for pinned pages).
    pub fn evict_page(&mut self, id: PageId) -> Result<bool, PagerError> {
        let g = self.group_of(id)?;
        if self.groups[g].pinned > 0 || !self.groups[g].resident {
            return Ok(false);
        }
        self.evict(g);
        Ok(true)
    }

    /// Faults the group of page `id` in (no-op when resident).
    pub fn swap_in_page(
        &mut self,
        swap: &mut dyn SwapDevice,
        id: PageId,
    ) -> Result<bool, PagerError> {
        let g = self.group_of(id)?;
        if self.groups[g].resident {
            return Ok(false);
        }
        self.fault(swap, g)?;
        Ok(true)
    }

    /// The summary line of the group of `len` pages from `first`, from its resident messages.
    fn line_of(&self, first: usize, len: usize, tokens: u64) -> String {
        let members = &self.pages[first..first + len];
        let kind = members.first().map_or(PageKind::Message, |p| p.kind);
        let msgs: Vec<&ChatMessage> = members
            .iter()
            .filter_map(|p| p.message.as_deref())
            .collect();
        group_line(first as PageId, kind, tokens, &msgs)
    }

    fn evict(&mut self, g: usize) -> PageMove {
        if self.groups[g].line.is_empty() {
            let grp = &self.groups[g];
            let line = self.line_of(grp.first, grp.len, grp.tokens);
            self.groups[g].line = line;
        }
        let grp = &mut self.groups[g];
        grp.resident = false;
        let (first, len, tokens) = (grp.first, grp.len, grp.tokens);
        self.recency.pop(&g);
        for p in &mut self.pages[first..first + len] {
            p.message = None;
            p.ids = None;
        }
        self.resident_tokens -= tokens;
        self.resident_pages -= len as u64;
        self.enrun(g);
        self.moves.evicted_pages += len as u64;
        self.moves.swap_out_tokens += tokens;
        self.group_move(g)
    }

    fn fault(&mut self, swap: &mut dyn SwapDevice, g: usize) -> Result<PageMove, PagerError> {
        let (first, len, tokens) = {
            let grp = &self.groups[g];
            (grp.first, grp.len, grp.tokens)
        };
        let ids: Vec<u64> = (first..first + len).map(|i| i as u64).collect();
        let rows = swap.read(&self.context, &ids)?;
        let mut by_id: HashMap<u64, PageRow> = rows.into_iter().map(|r| (r.page_id, r)).collect();
        let mut loaded = Vec::with_capacity(len);
        for id in &ids {
            let row = by_id.remove(id).ok_or_else(|| PagerError::Lost {
                context: self.context.clone(),
                page: *id,
            })?;
            let msg: ChatMessage = serde_json::from_str(&row.message).map_err(|e| {
                PagerError::Store(crate::store::StoreError::Corrupt {
                    what: format!("page {} of {}", id, self.context),
                    detail: e.to_string(),
                })
            })?;
            loaded.push(Arc::new(msg));
        }
        let now = self.tick();
        for (p, m) in self.pages[first..first + len].iter_mut().zip(loaded) {
            p.message = Some(m);
            p.accesses += 1;
            p.last_access = now;
        }
        self.groups[g].resident = true;
        self.unrun(g);
        if self.groups[g].pinned == 0 {
            self.recency.put(g, ());
        }
        self.resident_tokens += tokens;
        self.resident_pages += len as u64;
        self.moves.faults += len as u64;
        self.moves.swap_in_tokens += tokens;
        Ok(self.group_move(g))
    }

    fn group_move(&self, g: usize) -> PageMove {
        let grp = &self.groups[g];
        PageMove {
            pages: (grp.first..grp.first + grp.len).map(|i| i as u64).collect(),
            kind: self.pages[grp.first].kind,
            tokens: grp.tokens,
        }
    }

    fn importance(&self, g: usize) -> f64 {
        let grp = &self.groups[g];
        self.pages[grp.first..grp.first + grp.len]
            .iter()
            .map(|p| p.importance)
            .fold(0.0, f64::max)
    }

    fn accesses(&self, g: usize) -> u64 {
        let grp = &self.groups[g];
        self.pages[grp.first..grp.first + grp.len]
            .iter()
            .map(|p| p.accesses)
            .sum()
    }

    fn last_access(&self, g: usize) -> u64 {
        let grp = &self.groups[g];
        self.pages[grp.first..grp.first + grp.len]
            .iter()
            .map(|p| p.last_access)
            .max()
            .unwrap_or(0)
    }

    /// Whether every page is resident or readable from `swap` (for tests).
    pub fn nothing_lost(&self, swap: &super::MemSwap) -> bool {
        self.pages
            .iter()
            .all(|p| p.resident() || swap.contains(&self.context, p.id))
    }

    /// Shared keys shown by this table's pages.
    pub fn shared_keys(&self) -> impl Iterator<Item = &str> {
        self.pages.iter().filter_map(|p| p.shared_key.as_deref())
    }
}

/// A message's token ids in the KV-cache layout (its role marker, content and tool calls, as
/// [`Encoding::encode_prompt`] lays out one message) and its token count, from one encoding:
/// the marker stands for the [`MESSAGE_OVERHEAD_TOKENS`] a chat message costs, so the count
/// equals [`Encoding::count_message`].
pub(crate) fn encode_page(encoding: Encoding, message: &ChatMessage) -> (Arc<[u32]>, u64) {
    let ids: Arc<[u32]> = encoding.encode_prompt(std::slice::from_ref(message)).into();
    let tokens = (ids.len() - 1 + MESSAGE_OVERHEAD_TOKENS) as u64;
    (ids, tokens)
}
