//! Runs of consecutive swapped groups and their summaries, kept incrementally: evicting or
//! faulting a group merges or splits at most three runs, and prefix sums give a run's size in
//! O(1), so a build on a context of 100k pages does not rescan it per eviction.

use super::PageTable;
use crate::context::compress::{run_summary, MAX_LINES};
use crate::llm::ChatMessage;

impl PageTable {
    /// The summary message of the run `first..=last` of swapped groups.
    pub(super) fn run_message(&self, first: usize, last: usize, compact: bool) -> ChatMessage {
        let groups = last + 1 - first;
        let pages = self.prefix_pages[last + 1] - self.prefix_pages[first];
        let tokens = self.prefix_tokens[last + 1] - self.prefix_tokens[first];
        let lines = self.groups[first..=last]
            .iter()
            .take(MAX_LINES)
            .map(|g| g.line.as_str());
        run_summary(lines, groups, pages as usize, tokens, compact)
    }

    fn add_run(&mut self, first: usize, last: usize) {
        let msg = self.run_message(first, last, false);
        let tokens = self.settings.encoding.count_message(&msg) as u64;
        self.runs.insert(first, (last, tokens));
        self.summary_total += tokens;
    }

    fn remove_run(&mut self, first: usize) -> Option<usize> {
        let (last, tokens) = self.runs.remove(&first)?;
        self.summary_total -= tokens;
        Some(last)
    }

    /// Group `g` just became swapped: merge it with the runs beside it.
    pub(super) fn enrun(&mut self, g: usize) {
        let mut first = g;
        let mut last = g;
        let left = self.runs.range(..g).next_back().map(|(s, (e, _))| (*s, *e));
        if let Some((s, e)) = left {
            if e + 1 == g {
                self.remove_run(s);
                first = s;
            }
        }
        if let Some(e) = self.remove_run(g + 1) {
            last = e;
        }
        self.add_run(first, last);
    }

    /// Group `g` is no longer swapped: split the run that held it.
    pub(super) fn unrun(&mut self, g: usize) {
        let Some((s, e)) = self
            .runs
            .range(..=g)
            .next_back()
            .map(|(s, (e, _))| (*s, *e))
        else {
            return;
        };
        if e < g {
            return;
        }
        self.remove_run(s);
        if s < g {
            self.add_run(s, g - 1);
        }
        if g < e {
            self.add_run(g + 1, e);
        }
    }

    pub(super) fn summary_tokens(&self, compact: bool) -> u64 {
        if !compact {
            return self.summary_total;
        }
        self.runs
            .iter()
            .map(|(s, (e, _))| {
                self.settings
                    .encoding
                    .count_message(&self.run_message(*s, *e, true)) as u64
            })
            .sum()
    }
}
