//! Growing the last group after the fact: a reply's tool results join its group one by one
//! as they are recorded (see [`crate::context::journal`]).

use super::{NewPage, PageTable};
use crate::context::swap::SwapDevice;
use crate::context::PagerError;
use crate::llm::ChatMessage;
use crate::store::PageRow;

impl PageTable {
    /// Appends pages to the last group (the tool results of the reply that opened it) and
    /// returns the rows to write through. The group is faulted in first if it was swapped
    /// out. Call [`PageTable::truncate_last_group`] with the old length if writing fails.
    /// With no group yet, the pages form the first one.
    pub fn extend_last_group(
        &mut self,
        swap: &mut dyn SwapDevice,
        new: Vec<NewPage>,
    ) -> Result<Vec<PageRow>, PagerError> {
        let Some(last) = self.groups.len().checked_sub(1) else {
            return Ok(self.push_group(new));
        };
        if !self.groups[last].resident {
            self.fault(swap, last)?;
        }
        let now = self.tick();
        let first = self.reopen_last_group();
        let mut rows = Vec::with_capacity(new.len());
        for n in new {
            rows.push(self.push_page(n, last, now));
        }
        self.finish_group(last, first, true);
        Ok(rows)
    }

    /// Faults the last group in if it is swapped out.
    pub fn fault_last_group(&mut self, swap: &mut dyn SwapDevice) -> Result<(), PagerError> {
        match self.groups.len().checked_sub(1) {
            Some(last) if !self.groups[last].resident => self.fault(swap, last).map(drop),
            _ => Ok(()),
        }
    }

    /// Length of the last group (0 with no group).
    pub fn last_group_len(&self) -> usize {
        self.groups.last().map_or(0, |g| g.len)
    }

    /// The messages of the last group while it is resident (inspection and checks).
    pub fn last_group_messages(&self) -> Option<Vec<&ChatMessage>> {
        let g = self.groups.last().filter(|g| g.resident)?;
        self.pages[g.first..g.first + g.len]
            .iter()
            .map(|p| p.message.as_deref())
            .collect()
    }

    /// Shortens the resident last group to its first `len` pages (undoes
    /// [`PageTable::extend_last_group`]).
    pub fn truncate_last_group(&mut self, len: usize) {
        match self.groups.last() {
            Some(g) if g.resident && len > 0 && len < g.len => {}
            _ => return,
        }
        let g = self.groups.len() - 1;
        let first = self.reopen_last_group();
        self.pages.truncate(first + len);
        self.finish_group(g, first, true);
    }

    /// Takes the resident last group's bookkeeping off (its pages stay) so that
    /// [`PageTable::finish_group`] can count it again; answers its first page.
    fn reopen_last_group(&mut self) -> usize {
        let Some(g) = self.groups.pop() else {
            return self.pages.len();
        };
        self.prefix_tokens.pop();
        self.prefix_pages.pop();
        self.recency.pop(&self.groups.len());
        if g.resident {
            self.resident_tokens -= g.tokens;
            self.resident_pages -= g.len as u64;
        }
        g.first
    }
}
