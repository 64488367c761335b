//! The resident blocks behind each parent chain hash, newest first: what a partial match
//! compares against.
//!
//! One intrusive doubly linked list per parent, in allocation order. The map holds only each
//! list's newest block; each block holds links to its older and newer sibling. Pushing,
//! removing an evicted block and stepping to the next older sibling are O(1), however many
//! continuations hang off one prefix (a shared system prompt has one per agent).

use std::collections::HashMap;

use super::{Block, BlockId};

/// A block's neighbours in its parent's list.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    older: Option<BlockId>,
    newer: Option<BlockId>,
}

/// The sibling lists of one [`BlockManager`](super::BlockManager).
#[derive(Debug, Clone, Default)]
pub(super) struct Siblings {
    /// The newest block behind each parent; a parent with no resident child has no entry.
    newest: HashMap<u64, BlockId>,
    /// Indexed by block id.
    links: Vec<Link>,
}

impl Siblings {
    /// Adds `b` as the newest block behind `parent`. `b` must not be in any list.
    pub(super) fn push(&mut self, parent: u64, b: BlockId) {
        let i = b as usize;
        if self.links.len() <= i {
            self.links.resize(i + 1, Link::default());
        }
        let older = self.newest.insert(parent, b);
        self.links[i] = Link { older, newer: None };
        if let Some(o) = older {
            self.links[o as usize].newer = Some(b);
        }
    }

    /// Takes `b` out of `parent`'s list; a block in no list is left alone.
    pub(super) fn remove(&mut self, parent: u64, b: BlockId) {
        let Some(&Link { older, newer }) = self.links.get(b as usize) else {
            return;
        };
        if newer.is_none() && self.newest.get(&parent) != Some(&b) {
            return;
        }
        self.links[b as usize] = Link::default();
        if let Some(o) = older {
            self.links[o as usize].newer = newer;
        }
        match (newer, older) {
            (Some(n), _) => self.links[n as usize].older = older,
            (None, Some(o)) => {
                self.newest.insert(parent, o);
            }
            (None, None) => {
                self.newest.remove(&parent);
            }
        }
    }

    /// The blocks behind `parent`, newest first.
    pub(super) fn newest_first(&self, parent: u64) -> impl Iterator<Item = BlockId> + '_ {
        std::iter::successors(self.newest.get(&parent).copied(), |&b| {
            self.links[b as usize].older
        })
    }

    /// Checks that every block in `blocks` is in exactly its parent's list and that the links
    /// agree both ways; `Err` names the first break. For tests.
    pub(super) fn check(&self, blocks: &[Block]) -> Result<(), String> {
        let mut seen = vec![false; blocks.len()];
        for (&parent, &head) in &self.newest {
            let mut newer = None;
            let mut cur = Some(head);
            while let Some(b) = cur {
                let (Some(blk), Some(link)) = (blocks.get(b as usize), self.links.get(b as usize))
                else {
                    return Err(format!("sibling {b} is not a block"));
                };
                if blk.parent != parent || link.newer != newer {
                    return Err(format!(
                        "block {b} is linked under the wrong parent or sibling"
                    ));
                }
                if std::mem::replace(&mut seen[b as usize], true) {
                    return Err(format!("block {b} is in the sibling lists twice"));
                }
                newer = cur;
                cur = link.older;
            }
        }
        match seen.iter().position(|&s| !s) {
            Some(b) => Err(format!("block {b} is in no sibling list")),
            None => Ok(()),
        }
    }
}
