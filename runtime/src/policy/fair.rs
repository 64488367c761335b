//! Weighted fair share of tokens between flows (agents, workflows), by stride scheduling on
//! virtual time.
//!
//! Each flow has a virtual time: the tokens it was served divided by its weight. The next
//! dispatch goes to the backlogged flow with the least virtual time, so over time every
//! backlogged flow is served tokens in proportion to its weight.
//!
//! Why virtual time rather than deficit round robin: DRR decides with the cost of the next
//! item, which it must know before dispatching it (a packet's length). The cost of an LLM
//! attempt, its tokens, is only known after it ran: the completion's length is up to the
//! model, and tool loops add calls. Virtual time works with a guess: [`FairShare::begin`]
//! charges an estimate (the flow's recent tokens per attempt) at dispatch and
//! [`FairShare::end`] corrects the charge with the real count, so errors in the estimate never
//! accumulate, they only delay the correction by one attempt.
//!
//! A flow that was idle (neither a candidate nor running at the last pick, and not running
//! now) rejoins at the least virtual time of the flows that stayed backlogged (or its own, if
//! later), so idling does not bank credit that it could then spend to starve the others. A
//! flow whose attempt was running counts as busy, so a flow that runs one task at a time keeps
//! its place.

use std::collections::{BTreeMap, BTreeSet};

/// Weight of the newest attempt in a flow's tokens-per-attempt estimate.
const ESTIMATE_ALPHA: f64 = 0.3;

/// One flow's share and clock.
#[derive(Debug, Clone)]
struct Flow {
    weight: f64,
    vtime: f64,
    estimate: f64,
    running: usize,
    served: u64,
}

/// Weighted fair share of tokens between flows.
#[derive(Debug, Clone)]
pub struct FairShare {
    default_estimate: u64,
    flows: BTreeMap<String, Flow>,
    last_active: BTreeSet<String>,
    vclock: f64,
}

impl FairShare {
    /// No flows yet; a flow's first attempts are charged `default_estimate` tokens.
    pub fn new(default_estimate: u64) -> Self {
        Self {
            default_estimate,
            flows: BTreeMap::new(),
            last_active: BTreeSet::new(),
            vclock: 0.0,
        }
    }

    /// Sets `flow`'s weight (unknown flows weigh 1.0). A weight that is not a positive finite
    /// number is ignored.
    pub fn set_weight(&mut self, flow: &str, weight: f64) {
        if weight.is_finite() && weight > 0.0 {
            self.flow_mut(flow).weight = weight;
        }
    }

    /// The candidate with the least virtual time (ties: the first); `None` if there is none.
    /// Candidates that were idle rejoin first (see the module documentation).
    pub fn pick<'a, I: IntoIterator<Item = &'a str>>(&mut self, candidates: I) -> Option<&'a str> {
        self.pick_backlogged(candidates, &[])
    }

    /// [`FairShare::pick`], where `backlogged` also names flows that have work waiting but
    /// cannot be picked now (no free instance): they count as active, so they keep their place
    /// instead of rejoining later at the virtual time of the flows that could run meanwhile.
    pub fn pick_backlogged<'a, I: IntoIterator<Item = &'a str>>(
        &mut self,
        candidates: I,
        backlogged: &[&str],
    ) -> Option<&'a str> {
        let candidates: Vec<&'a str> = candidates.into_iter().collect();
        // Waiting flows rejoin like candidates (no banked credit), then stay active.
        let mut waiting: Vec<&str> = candidates.clone();
        waiting.extend(
            backlogged
                .iter()
                .copied()
                .filter(|b| !candidates.contains(b)),
        );
        self.rejoin_idle(&waiting);
        let mut best: Option<(&'a str, f64)> = None;
        for &c in &candidates {
            let v = self.vtime(c);
            if best.is_none_or(|(_, bv)| v < bv) {
                best = Some((c, v));
            }
        }
        self.remember_active(&waiting);
        let (chosen, v) = best?;
        self.vclock = self.vclock.max(v);
        Some(chosen)
    }

    /// Dispatches an attempt of `flow`: charges its estimate (an EWMA of its tokens per
    /// attempt) and answers it, to be passed back to [`FairShare::end`].
    pub fn begin(&mut self, flow: &str) -> u64 {
        let f = self.flow_mut(flow);
        let charged = f.estimate.round().max(1.0) as u64;
        f.vtime += charged as f64 / f.weight;
        f.running += 1;
        charged
    }

    /// Ends an attempt of `flow` that was charged `charged` and used `actual_tokens`: corrects
    /// the charge and updates the estimate.
    pub fn end(&mut self, flow: &str, charged: u64, actual_tokens: u64) {
        let f = self.flow_mut(flow);
        f.vtime += (actual_tokens as f64 - charged as f64) / f.weight;
        f.running = f.running.saturating_sub(1);
        f.served = f.served.saturating_add(actual_tokens);
        f.estimate += ESTIMATE_ALPHA * (actual_tokens as f64 - f.estimate);
    }

    /// `flow`'s virtual time (0 for an unknown flow).
    pub fn vtime(&self, flow: &str) -> f64 {
        self.flows.get(flow).map_or(0.0, |f| f.vtime)
    }

    /// Every flow with its weight and the tokens it was served, by name.
    pub fn shares(&self) -> Vec<(String, f64, u64)> {
        self.flows
            .iter()
            .map(|(name, f)| (name.clone(), f.weight, f.served))
            .collect()
    }

    /// Forgets `flow` (a finished workflow); it would come back as a new, idle flow.
    pub fn remove(&mut self, flow: &str) {
        self.flows.remove(flow);
        self.last_active.remove(flow);
    }

    /// Raises idle candidates to the least virtual time of the flows that stayed backlogged
    /// (or, if none did, to the virtual time of the last pick).
    fn rejoin_idle(&mut self, candidates: &[&str]) {
        let idle: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|c| !self.is_active(c))
            .collect();
        if idle.is_empty() {
            return;
        }
        let floor = candidates
            .iter()
            .filter(|c| self.is_active(c))
            .map(|c| self.vtime(c))
            .reduce(f64::min)
            .unwrap_or(self.vclock);
        for c in idle {
            let f = self.flow_mut(c);
            f.vtime = f.vtime.max(floor);
        }
    }

    /// Whether `flow` was a candidate or running at the last pick, or is running now.
    fn is_active(&self, flow: &str) -> bool {
        self.last_active.contains(flow) || self.flows.get(flow).is_some_and(|f| f.running > 0)
    }

    /// Records the flows active at this pick: the candidates and the flows running.
    fn remember_active(&mut self, candidates: &[&str]) {
        self.last_active = candidates.iter().map(|&c| c.to_owned()).collect();
        let running = self.flows.iter().filter(|(_, f)| f.running > 0);
        self.last_active
            .extend(running.map(|(name, _)| name.clone()));
    }

    fn flow_mut(&mut self, flow: &str) -> &mut Flow {
        let estimate = self.default_estimate as f64;
        self.flows.entry(flow.to_owned()).or_insert(Flow {
            weight: 1.0,
            vtime: 0.0,
            estimate,
            running: 0,
            served: 0,
        })
    }
}

/// Jain's fairness index of `xs`: 1 when all are equal, down to `1/n` when one has it all.
/// An empty or all-zero slice is perfectly fair (1).
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if xs.is_empty() || squares <= 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::backoff::SplitMix64;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn a_flow_waiting_for_a_free_instance_keeps_its_place() {
        // Without the hint, `b` (work waiting, no free instance) rejoins at `a`'s virtual
        // time, charged estimates included, and loses the tie.
        let mut plain = FairShare::new(1000);
        assert_eq!(plain.pick(["a"]), Some("a"));
        plain.begin("a");
        assert_eq!(plain.pick(["a", "b"]), Some("a"));
        // With it, `b` keeps its own (zero) virtual time and goes next.
        let mut hinted = FairShare::new(1000);
        assert_eq!(hinted.pick_backlogged(["a"], &["a", "b"]), Some("a"));
        hinted.begin("a");
        assert_eq!(hinted.pick_backlogged(["a", "b"], &["a", "b"]), Some("b"));
        // A flow long idle still cannot bank credit: it rejoins at the active flows' level.
        let mut f = FairShare::new(100);
        for _ in 0..5 {
            f.pick(["a"]);
            let c = f.begin("a");
            f.end("a", c, 100);
        }
        f.pick_backlogged(["a"], &["a", "late"]);
        assert!(
            f.vtime("late") >= f.vtime("a") - 1e-9,
            "{} vs {}",
            f.vtime("late"),
            f.vtime("a")
        );
    }

    #[test]
    fn jain_index_bounds() {
        assert_eq!(jain(&[]), 1.0);
        assert_eq!(jain(&[0.0, 0.0]), 1.0);
        assert!((jain(&[5.0, 5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn picks_the_least_virtual_time_first_on_ties() {
        let mut fs = FairShare::new(100);
        assert_eq!(fs.pick([]), None);
        assert_eq!(fs.pick(["a", "b"]), Some("a"));
        let c = fs.begin("a");
        assert_eq!(c, 100);
        assert_eq!(fs.pick(["a", "b"]), Some("b"));
        fs.end("a", c, 10);
        assert!((fs.vtime("a") - 10.0).abs() < 1e-9);
        assert_eq!(fs.vtime("zzz"), 0.0);
    }

    #[test]
    fn the_estimate_follows_the_flow_and_charges_are_corrected() {
        let mut fs = FairShare::new(1000);
        for _ in 0..30 {
            let c = fs.begin("a");
            fs.end("a", c, 200);
        }
        let c = fs.begin("a");
        assert!((200..210).contains(&c), "{c}");
        fs.end("a", c, 200);
        assert!((fs.vtime("a") - 31.0 * 200.0).abs() < 1e-6);
        assert_eq!(fs.shares(), vec![("a".to_owned(), 1.0, 31 * 200)]);
    }

    #[test]
    fn weights_divide_the_charge_and_bad_weights_are_ignored() {
        let mut fs = FairShare::new(100);
        fs.set_weight("a", 4.0);
        fs.set_weight("a", 0.0);
        fs.set_weight("a", f64::NAN);
        let c = fs.begin("a");
        fs.end("a", c, 400);
        assert!((fs.vtime("a") - 100.0).abs() < 1e-9);
        assert_eq!(fs.shares()[0].1, 4.0);
    }

    #[test]
    fn an_idle_flow_cannot_bank_credit() {
        let mut fs = FairShare::new(100);
        // a and b share for a while, then b goes idle and a runs alone.
        for i in 0..40 {
            let flows: &[&str] = if i < 10 { &["a", "b"] } else { &["a"] };
            let f = fs.pick(flows.iter().copied()).unwrap_or("none");
            let c = fs.begin(f);
            fs.end(f, c, 100);
        }
        assert!(fs.vtime("a") > fs.vtime("b") + 2000.0);
        // b comes back at a's virtual time: they alternate instead of b running 30 times.
        let mut picks = Vec::new();
        for _ in 0..6 {
            let f = fs.pick(["a", "b"]).unwrap_or("none");
            let c = fs.begin(f);
            fs.end(f, c, 100);
            picks.push(f);
        }
        assert_eq!(picks.iter().filter(|&&f| f == "b").count(), 3, "{picks:?}");
    }

    #[test]
    fn a_running_flow_keeps_its_place() {
        let mut fs = FairShare::new(100);
        assert_eq!(fs.pick(["a", "b"]), Some("a"));
        let c = fs.begin("a");
        // a's only task is running: it is not a candidate, but it is not idle either.
        assert_eq!(fs.pick(["b"]), Some("b"));
        let cb = fs.begin("b");
        fs.end("b", cb, 5000);
        fs.end("a", c, 100);
        assert_eq!(fs.pick(["a", "b"]), Some("a"));
        assert!((fs.vtime("a") - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_new_flow_joins_at_the_present() {
        let mut fs = FairShare::new(100);
        for _ in 0..10 {
            let f = fs.pick(["a", "b"]).unwrap_or("none");
            let c = fs.begin(f);
            fs.end(f, c, 100);
        }
        fs.pick(["a", "b", "c"]);
        assert!((fs.vtime("c") - 500.0).abs() < 1e-9, "{}", fs.vtime("c"));
        fs.remove("c");
        assert_eq!(fs.shares().len(), 2);
    }

    /// Serves always-backlogged flows for `picks` dispatches with up to `parallel` attempts in
    /// flight; attempt sizes vary ±50% around each flow's size. Answers tokens served per flow.
    fn serve(sizes: &[u64], weights: &[f64], parallel: usize, picks: usize, seed: u64) -> Vec<f64> {
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("f{i}")).collect();
        let mut fs = FairShare::new(500);
        for (n, &w) in names.iter().zip(weights) {
            fs.set_weight(n, w);
        }
        let mut rng = SplitMix64::new(seed);
        let mut running: VecDeque<(usize, u64)> = VecDeque::new();
        for _ in 0..picks {
            let Some(f) = fs.pick(names.iter().map(String::as_str)) else {
                break;
            };
            let i = names.iter().position(|n| n == f).unwrap_or(0);
            running.push_back((i, fs.begin(f)));
            if running.len() >= parallel {
                if let Some((i, charged)) = running.pop_front() {
                    let actual = (sizes[i] as f64 * (0.5 + rng.next_unit())) as u64;
                    fs.end(&names[i], charged, actual);
                }
            }
        }
        let shares = fs.shares();
        names
            .iter()
            .map(|n| {
                shares
                    .iter()
                    .find(|s| &s.0 == n)
                    .map_or(0.0, |s| s.2 as f64)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Equal weights, very different attempt sizes: tokens served even out.
        #[test]
        fn equal_weights_converge_to_equal_tokens(
            sizes in prop::collection::vec(100..5000u64, 2..5),
            parallel in 1..4usize,
            seed in any::<u64>(),
        ) {
            let weights = vec![1.0; sizes.len()];
            let served = serve(&sizes, &weights, parallel, 6000, seed);
            let j = jain(&served);
            prop_assert!(j >= 0.95, "jain {} of {:?}", j, served);
        }

        /// Weights 2:1: tokens served converge to 2:1 within 10%.
        #[test]
        fn weights_two_to_one_converge(
            a in 100..5000u64,
            b in 100..5000u64,
            parallel in 1..4usize,
            seed in any::<u64>(),
        ) {
            let served = serve(&[a, b], &[2.0, 1.0], parallel, 6000, seed);
            let ratio = served[0] / served[1].max(1.0);
            prop_assert!((ratio - 2.0).abs() <= 0.2, "ratio {} of {:?}", ratio, served);
        }
    }
}
