//! Resource-aware concurrency: a governor that lowers the number of tasks run at once while
//! the host is under CPU or memory pressure, and raises it again once the pressure clears.
//!
//! Each sample is compared with two marks per resource. Above either high mark the limit drops
//! to three quarters (at least by one, not below the minimum); below both low marks it climbs
//! by a tenth of the maximum (at least one) per sample, up to the maximum. In between it
//! holds: the gap between the marks keeps the limit from flapping around one threshold.

use std::time::Instant;

/// Host pressure, as fractions in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// CPU in use.
    pub cpu: f64,
    /// Memory in use.
    pub memory: f64,
}

/// The governor's bounds and marks.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorSpec {
    /// The lowest limit (at least 1).
    pub min: usize,
    /// The highest limit, where it starts (at least `min`).
    pub max: usize,
    /// CPU fraction above which the limit drops.
    pub cpu_high: f64,
    /// Memory fraction above which the limit drops.
    pub memory_high: f64,
    /// CPU fraction below which (with memory below its low mark) the limit climbs.
    pub cpu_low: f64,
    /// Memory fraction below which (with CPU below its low mark) the limit climbs.
    pub memory_low: f64,
}

/// A change of the limit, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GovernorChange {
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// Why, as a phrase ("cpu 93% above 85%").
    pub reason: String,
}

/// Concurrency governed by host pressure.
#[derive(Debug, Clone)]
pub struct PressureGovernor {
    spec: GovernorSpec,
    limit: usize,
    reason: String,
    changed_at: Option<Instant>,
}

impl PressureGovernor {
    /// A governor at its maximum. `min` is raised to 1 and `max` to `min` if lower.
    pub fn new(spec: GovernorSpec) -> Self {
        let min = spec.min.max(1);
        let spec = GovernorSpec {
            min,
            max: spec.max.max(min),
            ..spec
        };
        Self {
            limit: spec.max,
            spec,
            reason: "no pressure".to_owned(),
            changed_at: None,
        }
    }

    /// Takes one pressure sample; answers the change it caused, if any.
    pub fn observe(&mut self, p: Pressure, now: Instant) -> Option<GovernorChange> {
        let (to, reason) = match self.high_marks_passed(p) {
            Some(why) => (self.lowered(), why),
            None if self.below_low_marks(p) => (
                self.raised(),
                format!(
                    "pressure cleared (cpu {}, memory {})",
                    percent(p.cpu),
                    percent(p.memory)
                ),
            ),
            None => return None,
        };
        let from = self.limit;
        if to == from {
            return None;
        }
        self.limit = to;
        self.reason = reason.clone();
        self.changed_at = Some(now);
        Some(GovernorChange { from, to, reason })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Why the limit is what it is ("no pressure" until the first change).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the limit last changed.
    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// The bounds and marks in use (after [`PressureGovernor::new`]'s corrections).
    pub fn spec(&self) -> &GovernorSpec {
        &self.spec
    }

    /// "cpu 93% above 85%" for each high mark passed; `None` if none is.
    fn high_marks_passed(&self, p: Pressure) -> Option<String> {
        let marks = [
            ("cpu", p.cpu, self.spec.cpu_high),
            ("memory", p.memory, self.spec.memory_high),
        ];
        let passed: Vec<String> = marks
            .iter()
            .filter(|(_, value, high)| value > high)
            .map(|(name, value, high)| {
                format!("{name} {} above {}", percent(*value), percent(*high))
            })
            .collect();
        (!passed.is_empty()).then(|| passed.join(", "))
    }

    fn below_low_marks(&self, p: Pressure) -> bool {
        p.cpu < self.spec.cpu_low && p.memory < self.spec.memory_low
    }

    /// Three quarters of the limit, at least one less, not below `min`.
    fn lowered(&self) -> usize {
        let quarter_off = self.limit * 3 / 4;
        quarter_off
            .min(self.limit.saturating_sub(1))
            .max(self.spec.min)
    }

    /// A tenth of the maximum more (at least one), not above `max`.
    fn raised(&self) -> usize {
        let step = (self.spec.max / 10).max(1);
        self.limit.saturating_add(step).min(self.spec.max)
    }
}

/// `0.934` as "93%".
fn percent(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(min: usize, max: usize) -> GovernorSpec {
        GovernorSpec {
            min,
            max,
            cpu_high: 0.85,
            memory_high: 0.9,
            cpu_low: 0.6,
            memory_low: 0.7,
        }
    }

    fn p(cpu: f64, memory: f64) -> Pressure {
        Pressure { cpu, memory }
    }

    #[test]
    fn starts_at_the_maximum_without_pressure() {
        let g = PressureGovernor::new(spec(2, 16));
        assert_eq!(
            (g.limit(), g.reason(), g.changed_at()),
            (16, "no pressure", None)
        );
        let odd = PressureGovernor::new(spec(0, 0));
        assert_eq!((odd.spec().min, odd.spec().max, odd.limit()), (1, 1, 1));
    }

    #[test]
    fn high_pressure_lowers_by_a_quarter() {
        let t0 = Instant::now();
        let mut g = PressureGovernor::new(spec(2, 16));
        let change = g.observe(p(0.934, 0.5), t0);
        assert_eq!(
            change,
            Some(GovernorChange {
                from: 16,
                to: 12,
                reason: "cpu 93% above 85%".into()
            })
        );
        assert_eq!(g.reason(), "cpu 93% above 85%");
        assert_eq!(g.changed_at(), Some(t0));
        let both = g.observe(p(0.9, 0.95), t0);
        assert_eq!(
            both.map(|c| (c.to, c.reason)),
            Some((9, "cpu 90% above 85%, memory 95% above 90%".into()))
        );
        // Small limits still drop by one, down to the minimum.
        for _ in 0..10 {
            g.observe(p(0.99, 0.99), t0);
        }
        assert_eq!(g.limit(), 2);
        assert_eq!(g.observe(p(0.99, 0.99), t0), None);
    }

    #[test]
    fn cleared_pressure_raises_by_a_tenth_of_the_maximum() {
        let t0 = Instant::now();
        let mut g = PressureGovernor::new(spec(1, 30));
        for _ in 0..20 {
            g.observe(p(1.0, 0.0), t0);
        }
        assert_eq!(g.limit(), 1);
        let change = g.observe(p(0.2, 0.4), t0);
        assert_eq!(
            change,
            Some(GovernorChange {
                from: 1,
                to: 4,
                reason: "pressure cleared (cpu 20%, memory 40%)".into()
            })
        );
    }

    #[test]
    fn between_the_marks_the_limit_holds() {
        let t0 = Instant::now();
        let mut g = PressureGovernor::new(spec(1, 8));
        g.observe(p(0.9, 0.1), t0);
        assert_eq!(g.limit(), 6);
        assert_eq!(g.observe(p(0.7, 0.1), t0), None);
        assert_eq!(g.observe(p(0.1, 0.8), t0), None);
        assert_eq!(g.observe(p(f64::NAN, 0.1), t0), None);
        assert_eq!(g.limit(), 6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The limit stays in `[min, max]`; sustained low pressure brings it to `max`, sustained
        /// high pressure to `min`.
        #[test]
        fn bounded_and_driven_by_sustained_pressure(
            min in 1..10usize,
            extra in 0..100usize,
            samples in prop::collection::vec((0.0..=1.0f64, 0.0..=1.0f64), 0..200),
        ) {
            let t0 = Instant::now();
            let max = min + extra;
            let mut g = PressureGovernor::new(spec(min, max));
            for (cpu, memory) in samples {
                g.observe(p(cpu, memory), t0);
                prop_assert!((min..=max).contains(&g.limit()), "{}", g.limit());
            }
            for _ in 0..=max {
                g.observe(p(0.1, 0.1), t0);
            }
            prop_assert_eq!(g.limit(), max);
            for _ in 0..=max {
                g.observe(p(0.95, 0.1), t0);
            }
            prop_assert_eq!(g.limit(), min);
        }
    }
}
