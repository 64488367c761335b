//! Eviction policies: which resident group leaves the window first.
//!
//! A policy sees the *candidates* (resident, unpinned groups not protected in this build)
//! and returns the victim. Recency comes from an [`lru::LruCache`] kept by the page table
//! (promoted on append, explicit access and fault-in); `rank` 0 is the least recently used.
//!
//! # Scores
//! - `lru`: the least recently used candidate.
//! - `lru_importance`: the lowest *keep score*
//!   `0.5 × recency + 0.2 × frequency + 0.3 × importance`, where `recency = rank / (n - 1)`
//!   (0 for the least recent of `n` candidates, 1 for the most recent), `frequency =
//!   ln(1 + accesses) / ln(1 + most accesses among the candidates)` and `importance` is the
//!   group's highest page importance (0..1). A tool result the agent keeps coming back to, or
//!   one marked important, outlives fresher chatter.
//!
//! Ties are broken deterministically: the older group (lower position in the conversation)
//! is evicted first. The same keep score, with recency taken from the logical access clock,
//! orders swapped groups when free budget lets some fault back in (best first).

/// Which policy an agent uses (config `context.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// Recency mixed with access frequency and importance. The default.
    #[default]
    LruImportance,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 2] = [PolicyKind::Lru, PolicyKind::LruImportance];

    /// Config name and metric label.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::LruImportance => "lru_importance",
        }
    }

    /// Parses a config name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The policy object.
    pub fn policy(self) -> &'static dyn EvictionPolicy {
        match self {
            PolicyKind::Lru => &Lru,
            PolicyKind::LruImportance => &LruImportance,
        }
    }
}

/// What a policy knows about one candidate group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Position of the group in the conversation (tie-breaker: lower goes first).
    pub group: usize,
    /// Recency, 0..1: 0 the least recent, 1 the most recent.
    pub recency: f64,
    /// Times the group's pages were accessed (included in a prompt, touched, faulted in).
    pub accesses: u64,
    /// Highest importance among the group's pages.
    pub importance: f64,
    /// Tokens of the group.
    pub tokens: u64,
}

/// A pluggable eviction policy.
pub trait EvictionPolicy: Send + Sync {
    /// Config name, also the `policy` metric label.
    fn name(&self) -> &'static str;

    /// How much the group is worth keeping; the lowest is evicted first.
    fn keep_score(&self, c: &Candidate, max_accesses: u64) -> f64;

    /// The candidate to evict, or `None` when there is none.
    fn victim(&self, candidates: &[Candidate]) -> Option<usize> {
        let max_accesses = candidates.iter().map(|c| c.accesses).max().unwrap_or(0);
        candidates
            .iter()
            .map(|c| (self.keep_score(c, max_accesses), c.group))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, g)| g)
    }
}

/// Least recently used.
#[derive(Debug, Clone, Copy)]
pub struct Lru;

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        PolicyKind::Lru.name()
    }
    fn keep_score(&self, c: &Candidate, _: u64) -> f64 {
        c.recency
    }
}

/// Recency, frequency and importance (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct LruImportance;

impl EvictionPolicy for LruImportance {
    fn name(&self) -> &'static str {
        PolicyKind::LruImportance.name()
    }
    fn keep_score(&self, c: &Candidate, max_accesses: u64) -> f64 {
        let frequency = if max_accesses == 0 {
            0.0
        } else {
            (c.accesses as f64).ln_1p() / (max_accesses as f64).ln_1p()
        };
        0.5 * c.recency + 0.2 * frequency + 0.3 * c.importance.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(group: usize, recency: f64, accesses: u64, importance: f64) -> Candidate {
        Candidate {
            group,
            recency,
            accesses,
            importance,
            tokens: 10,
        }
    }

    #[test]
    fn lru_takes_the_least_recent() {
        let c = [
            cand(3, 1.0, 0, 0.0),
            cand(5, 0.0, 9, 1.0),
            cand(4, 0.5, 0, 0.0),
        ];
        assert_eq!(Lru.victim(&c), Some(5));
    }

    #[test]
    fn importance_protects_an_older_group() {
        let c = [cand(2, 0.0, 1, 1.0), cand(3, 0.5, 1, 0.0)];
        assert_eq!(LruImportance.victim(&c), Some(3));
        assert_eq!(Lru.victim(&c), Some(2));
    }

    #[test]
    fn ties_evict_the_older_group() {
        let c = [cand(7, 0.5, 1, 0.5), cand(2, 0.5, 1, 0.5)];
        assert_eq!(LruImportance.victim(&c), Some(2));
        assert_eq!(Lru.victim(&[]), None);
    }

    #[test]
    fn names_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(PolicyKind::from_name(p.name()), Some(p));
            assert_eq!(p.policy().name(), p.name());
        }
    }
}
