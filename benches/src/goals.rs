//! The report shape of the scheduling scenarios (`quotas`, `priority`, `fairness`, `las`):
//! each runs AgentOS with a feature on and the same work with it off (the baseline) in the
//! same invocation, and reports every figure with the ratio ours ÷ baseline, and each goal
//! with what was measured and whether this run met it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Machine;

/// One figure, for the variant with the feature and for the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What it is, with its unit (`high-priority p95 latency, ms`).
    pub name: String,
    /// With the feature.
    pub ours: f64,
    /// The baseline's.
    pub baseline: f64,
    /// `ours / baseline`; 0 when the baseline is 0 (shown as n/a).
    pub ratio: f64,
}

impl Figure {
    /// The figure and its ratio.
    pub fn new(name: impl Into<String>, ours: f64, baseline: f64) -> Self {
        Self {
            name: name.into(),
            ours,
            baseline,
            ratio: if baseline != 0.0 {
                ours / baseline
            } else {
                0.0
            },
        }
    }
}

/// A goal of the scenario and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    /// The goal (`high-priority p95 ≤ 1/5 of FIFO's`).
    pub goal: String,
    /// What this run measured against it.
    pub measured: String,
    /// Whether it was met.
    pub met: bool,
}

impl Goal {
    /// `goal met` or `goal missed`.
    pub fn verdict(&self) -> &'static str {
        if self.met {
            "goal met"
        } else {
            "goal missed"
        }
    }
}

/// The JSON report of a scheduling scenario (`results/<scenario>.json`); `V` is the
/// scenario's per-variant figures.
#[derive(Debug, Clone, Serialize)]
pub struct GoalReport<V> {
    /// Scenario name.
    pub scenario: &'static str,
    /// Setup, baseline and what is measured.
    pub description: String,
    /// Workload parameters.
    pub params: serde_json::Value,
    /// Where it ran.
    pub machine: Machine,
    /// Unix seconds when it finished.
    pub generated_at: u64,
    /// Whether this was a tiny smoke run (the goals are not expected to hold then).
    pub smoke: bool,
    /// Name of the variant with the feature.
    pub ours: String,
    /// Name of the baseline variant.
    pub baseline: String,
    /// Every variant as measured (ours first, the baseline second, extra rows after).
    pub variants: Vec<V>,
    /// Ours against the baseline.
    pub figures: Vec<Figure>,
    /// The goals, each with its verdict.
    pub goals: Vec<Goal>,
}

/// The markdown section: description, the scenario's own `table` of variants, the figures
/// with their ratios, and the goals with their verdicts.
pub fn render<V>(r: &GoalReport<V>, table: &str) -> String {
    let mut out = format!("## `{}`\n\n{}\n\n", r.scenario, r.description);
    if r.smoke {
        out.push_str("**Smoke run: tiny sizes, the numbers mean nothing.**\n\n");
    }
    let _ = writeln!(
        out,
        "Parameters: `{}`. One run per variant, in the same invocation.\n",
        r.params
    );
    out.push_str(table);
    let _ = writeln!(
        out,
        "\n| figure | {} | {} | ours ÷ baseline |\n|---|---:|---:|---:|",
        r.ours, r.baseline
    );
    for f in &r.figures {
        let ratio = if f.ratio != 0.0 || f.ours == 0.0 && f.baseline != 0.0 {
            format!("{:.3}", f.ratio)
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} |",
            f.name,
            number(f.ours),
            number(f.baseline)
        );
    }
    out.push_str("\n| goal | measured | verdict |\n|---|---|---|\n");
    for g in &r.goals {
        let _ = writeln!(out, "| {} | {} | **{}** |", g.goal, g.measured, g.verdict());
    }
    out.push('\n');
    out
}

/// A figure with a precision that suits its size.
pub fn number(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_verdicts_show_in_the_section() {
        let r = GoalReport::<()> {
            scenario: "x",
            description: "d".into(),
            params: serde_json::json!({}),
            machine: Machine::default(),
            generated_at: 0,
            smoke: false,
            ours: "on".into(),
            baseline: "off".into(),
            variants: Vec::new(),
            figures: vec![Figure::new("a", 1.0, 4.0), Figure::new("b", 3.0, 0.0)],
            goals: vec![Goal {
                goal: "a ≤ 1/5".into(),
                measured: "0.25".into(),
                met: false,
            }],
        };
        assert_eq!(r.figures[0].ratio, 0.25);
        let md = render(&r, "");
        assert!(md.contains("| a | 1 | 4 | 0.250 |"), "{md}");
        assert!(md.contains("| b | 3 | 0 | n/a |"), "{md}");
        assert!(md.contains("**goal missed**"), "{md}");
    }
}
