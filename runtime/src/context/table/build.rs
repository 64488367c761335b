//! The prompt builder of a [`PageTable`] (steps in the [module docs](super)).

use std::collections::HashSet;

use super::{encode_page, PageTable, FAULT_MARGIN_TOKENS};
use crate::context::policy::Candidate;
use crate::context::swap::SwapDevice;
use crate::context::{BuiltPrompt, PageId, PageMove, PagerError};
use crate::llm::ChatMessage;
use crate::tokenize::REPLY_PRIMING_TOKENS;

impl PageTable {
    /// Resident, unpinned, unprotected groups with their recency rank from the LRU order.
    fn candidates(&self, protected: &HashSet<usize>) -> Vec<Candidate> {
        let order: Vec<usize> = self
            .recency
            .iter()
            .rev()
            .map(|(g, _)| *g)
            .filter(|g| !protected.contains(g))
            .collect();
        let n = order.len();
        order
            .into_iter()
            .enumerate()
            .map(|(rank, g)| Candidate {
                group: g,
                recency: if n > 1 {
                    rank as f64 / (n - 1) as f64
                } else {
                    0.0
                },
                accesses: self.accesses(g),
                importance: self.importance(g),
                tokens: self.groups[g].tokens,
            })
            .collect()
    }

    /// Builds a prompt within the budget (see the [module docs](self)). `overhead_tokens`
    /// counts what the request adds beside the messages (tool definitions).
    pub fn build(
        &mut self,
        swap: &mut dyn SwapDevice,
        overhead_tokens: u64,
        want: &[PageId],
    ) -> Result<BuiltPrompt, PagerError> {
        let policy = self.settings.policy.policy();
        let budget = self.settings.budget_tokens;
        let fixed = REPLY_PRIMING_TOKENS as u64 + overhead_tokens;
        let mut evicted = Vec::new();
        let mut faulted = Vec::new();
        let mut protected: Vec<usize> = Vec::new();
        for id in want {
            let g = self.group_of(*id)?;
            if !self.groups[g].resident {
                faulted.push(self.fault(swap, g)?);
            }
            if self.groups[g].pinned == 0 && !protected.contains(&g) {
                protected.push(g);
            }
        }
        if let Some(g) = self.groups.len().checked_sub(1) {
            if self.groups[g].pinned == 0 && self.groups[g].resident && !protected.contains(&g) {
                protected.push(g);
            }
        }
        let mut evicted_now: HashSet<usize> = HashSet::new();
        let mut compact = false;
        let mut total;
        loop {
            total = fixed + self.resident_tokens + self.summary_tokens(compact);
            if total <= budget {
                break;
            }
            let shield: HashSet<usize> = protected.iter().copied().collect();
            let victim = policy.victim(&self.candidates(&shield)).or_else(|| {
                let mut p = protected.clone();
                p.sort_unstable();
                p.into_iter().find(|g| self.groups[*g].resident)
            });
            match victim {
                Some(g) => {
                    evicted.push(self.evict(g));
                    evicted_now.insert(g);
                    protected.retain(|x| *x != g);
                }
                None if !compact => compact = true,
                None => {
                    return Err(PagerError::BudgetTooSmall {
                        agent: self.agent.clone(),
                        needed: total,
                        budget,
                    })
                }
            }
        }
        if !compact {
            total = self.fill(swap, fixed, total, &evicted_now, &mut faulted)?;
        }
        self.assemble(fixed, total, compact, evicted, faulted)
    }

    /// Faults swapped groups back in while they fit, best keep score first.
    fn fill(
        &mut self,
        swap: &mut dyn SwapDevice,
        fixed: u64,
        mut total: u64,
        evicted_now: &HashSet<usize>,
        faulted: &mut Vec<PageMove>,
    ) -> Result<u64, PagerError> {
        let budget = self.settings.budget_tokens;
        let room = budget - total;
        if room <= FAULT_MARGIN_TOKENS {
            return Ok(total);
        }
        let clock = self.clock.max(1) as f64;
        let mut cands: Vec<Candidate> = (0..self.groups.len())
            .filter(|g| {
                let grp = &self.groups[*g];
                !grp.resident
                    && !evicted_now.contains(g)
                    && grp.tokens + FAULT_MARGIN_TOKENS <= room
            })
            .map(|g| Candidate {
                group: g,
                recency: self.last_access(g) as f64 / clock,
                accesses: self.accesses(g),
                importance: self.importance(g),
                tokens: self.groups[g].tokens,
            })
            .collect();
        if cands.is_empty() {
            return Ok(total);
        }
        let policy = self.settings.policy.policy();
        let max_accesses = cands.iter().map(|c| c.accesses).max().unwrap_or(0);
        cands.sort_by(|a, b| {
            policy
                .keep_score(b, max_accesses)
                .total_cmp(&policy.keep_score(a, max_accesses))
                .then(b.group.cmp(&a.group))
        });
        for c in cands {
            if total + c.tokens + FAULT_MARGIN_TOKENS > budget {
                continue;
            }
            let m = self.fault(swap, c.group)?;
            let after = fixed + self.resident_tokens + self.summary_tokens(false);
            if after > budget {
                // The split summary cost more than the margin: put it back.
                self.evict(c.group);
                continue;
            }
            faulted.push(m);
            total = after;
        }
        Ok(total)
    }

    fn assemble(
        &mut self,
        fixed: u64,
        total: u64,
        compact: bool,
        evicted: Vec<PageMove>,
        faulted: Vec<PageMove>,
    ) -> Result<BuiltPrompt, PagerError> {
        let mut messages = Vec::new();
        let mut ids = Vec::new();
        let encoding = self.settings.encoding;
        let mut tokens = fixed;
        let mut tokens_saved = 0;
        let mut summaries = 0;
        let mut g = 0;
        while g < self.groups.len() {
            if self.groups[g].resident {
                let grp = &self.groups[g];
                for p in &mut self.pages[grp.first..grp.first + grp.len] {
                    if let Some(m) = &p.message {
                        messages.push(ChatMessage::clone(m));
                        ids.push(
                            p.ids
                                .get_or_insert_with(|| encode_page(encoding, m).0)
                                .clone(),
                        );
                        tokens += p.tokens;
                        p.accesses += 1;
                    }
                }
                g += 1;
            } else {
                let end = self.runs.get(&g).map_or(g, |(e, _)| *e);
                let msg = self.run_message(g, end, compact);
                let (msg_ids, count) = encode_page(encoding, &msg);
                ids.push(msg_ids);
                let stood_for = self.prefix_tokens[end + 1] - self.prefix_tokens[g];
                tokens_saved += stood_for.saturating_sub(count);
                tokens += count;
                summaries += 1;
                messages.push(msg);
                g = end + 1;
            }
        }
        debug_assert_eq!(tokens, total, "incremental and assembled counts agree");
        let budget = self.settings.budget_tokens;
        if tokens > budget {
            return Err(PagerError::BudgetTooSmall {
                agent: self.agent.clone(),
                needed: tokens,
                budget,
            });
        }
        Ok(BuiltPrompt {
            messages,
            ids,
            tokens,
            budget,
            evicted,
            faulted,
            tokens_saved,
            summaries,
            policy: self.settings.policy.name(),
        })
    }
}
