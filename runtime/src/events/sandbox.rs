//! Events of the command sandbox: what it enforces on this machine (once, at boot) and each
//! command it stopped.

use serde_json::json;

use super::names as m;
use crate::sandbox::{DenialKind, Feature, SandboxReport};
use crate::trace::Trace;

/// The run's sandbox as this machine allows it. Trace `sandbox`.
#[derive(Debug, Clone, Copy)]
pub struct SandboxConfigured<'a> {
    /// The mode and what it enforces and lacks.
    pub report: &'a SandboxReport,
}

impl SandboxConfigured<'_> {
    /// Sets `agentos_sandbox_enforced` per feature, logs what is missing (a warning when the
    /// sandbox is off or incomplete) and writes the trace line (`mode`, `enforced`, `missing`).
    pub fn emit(&self, trace: &Trace) {
        let r = self.report;
        for feature in Feature::ALL {
            let on = r.enforced.contains(&feature);
            metrics::gauge!(m::SANDBOX_ENFORCED, "feature" => feature.label()).set(if on {
                1.0
            } else {
                0.0
            });
        }
        let missing: Vec<String> = r.missing.iter().map(ToString::to_string).collect();
        if let Some(line) = r.summary_line() {
            tracing::warn!(mode = r.mode.label(), missing = ?missing, "{line}");
        } else {
            tracing::debug!(mode = r.mode.label(), "sandbox fully enforced");
        }
        if trace.enabled() {
            let enforced: Vec<&str> = r.enforced.iter().map(|f| f.label()).collect();
            trace.emit(
                "sandbox",
                json!({"mode": r.mode.label(), "enforced": enforced, "missing": missing}),
            );
        }
    }
}

/// The sandbox stopped a command. No trace line (the `tool_call` line carries the message).
#[derive(Debug, Clone, Copy)]
pub struct SandboxDenied<'a> {
    /// Agent name.
    pub agent: &'a str,
    /// What stopped it.
    pub kind: DenialKind,
}

impl SandboxDenied<'_> {
    /// Counts the denial.
    pub fn emit(&self) {
        metrics::counter!(m::SANDBOX_DENIALS, "agent" => self.agent.to_owned(),
            "kind" => self.kind.label())
        .increment(1);
        tracing::debug!(agent = %self.agent, kind = self.kind.label(), "sandbox denial");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};
    use crate::sandbox::{Missing, SandboxMode};

    fn report() -> SandboxReport {
        SandboxReport {
            mode: SandboxMode::BestEffort,
            enforced: vec![Feature::Filesystem, Feature::Limits],
            missing: vec![Missing {
                feature: Feature::Network,
                reason: "no namespaces".into(),
            }],
        }
    }

    #[test]
    fn enforced_features_are_gauges_and_a_trace_line() {
        let r = report();
        let got = metrics_of(|| SandboxConfigured { report: &r }.emit(&Trace::disabled()));
        for (feature, v) in [
            ("filesystem", 1.0),
            ("network", 0.0),
            ("processes", 0.0),
            ("limits", 1.0),
        ] {
            assert_eq!(
                got.gauge(m::SANDBOX_ENFORCED, &[("feature", feature)]),
                Some(v),
                "{feature}"
            );
        }
        let lines = trace_of(|t| SandboxConfigured { report: &r }.emit(t));
        assert_eq!(lines[0]["event"], "sandbox");
        assert_eq!(lines[0]["mode"], "best_effort");
        assert_eq!(lines[0]["enforced"], json!(["filesystem", "limits"]));
        assert_eq!(lines[0]["missing"], json!(["network: no namespaces"]));
    }

    #[test]
    fn denials_count_by_agent_and_kind() {
        let got = metrics_of(|| {
            SandboxDenied {
                agent: "tester",
                kind: DenialKind::Processes,
            }
            .emit()
        });
        assert_eq!(
            got.counter(
                m::SANDBOX_DENIALS,
                &[("agent", "tester"), ("kind", "processes")]
            ),
            Some(1)
        );
    }
}
