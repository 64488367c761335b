//! Events of the actor system around the agents: supervisors, the message bus, the resource
//! monitor, build facts, and the run's start and stop.

use std::path::Path;

use serde_json::json;

use super::labels::{BusDropReason, BusKind};
use super::names as m;
use crate::trace::Trace;

/// A supervisor restarted a child. No trace line.
#[derive(Debug, Clone, Copy)]
pub struct ChildRestarted<'a> {
    /// The child's actor kind, one of [`SUPERVISED_KINDS`](super::labels::SUPERVISED_KINDS).
    pub kind: &'a str,
}

impl ChildRestarted<'_> {
    /// Counts the restart.
    pub fn emit(&self) {
        metrics::counter!(m::SUPERVISOR_RESTARTS, "kind" => self.kind.to_owned()).increment(1);
        tracing::debug!(kind = %self.kind, "child restarted");
    }
}

/// A supervisor's restart intensity was exceeded; it gives up and escalates to its parent. No
/// trace line.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorEscalated<'a> {
    /// The supervisor's name.
    pub supervisor: &'a str,
    /// Why it gave up.
    pub why: &'a str,
}

impl SupervisorEscalated<'_> {
    /// Counts the escalation and logs an error.
    pub fn emit(&self) {
        metrics::counter!(m::SUPERVISOR_ESCALATIONS, "supervisor" => self.supervisor.to_owned())
            .increment(1);
        tracing::error!(supervisor = %self.supervisor, why = %self.why,
            "restart intensity exceeded; escalating");
    }
}

/// The bus accepted a message. No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusMessageSent {
    /// Direct or publish.
    pub kind: BusKind,
}

impl BusMessageSent {
    /// Counts the message.
    pub fn emit(&self) {
        metrics::counter!(m::BUS_SENT, "kind" => self.kind.label()).increment(1);
    }
}

/// The bus placed a message in an inbox (a publish counts once per subscriber). No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusMessageDelivered;

impl BusMessageDelivered {
    /// Counts the delivery.
    pub fn emit(&self) {
        metrics::counter!(m::BUS_DELIVERED).increment(1);
    }
}

/// The bus dropped a message. No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusMessageDropped {
    /// Why.
    pub reason: BusDropReason,
}

impl BusMessageDropped {
    /// Counts the drop by reason.
    pub fn emit(&self) {
        metrics::counter!(m::BUS_DROPPED, "reason" => self.reason.label()).increment(1);
        tracing::debug!(reason = self.reason.label(), "bus message dropped");
    }
}

/// One sample of the process's resources. No trace line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceSampled {
    /// Resident memory, in bytes.
    pub resident_bytes: u64,
    /// CPU use, 1.0 per busy core.
    pub cpu_ratio: f64,
}

impl ResourceSampled {
    /// Sets the gauges.
    pub fn emit(&self) {
        metrics::gauge!(m::PROCESS_RESIDENT_MEMORY).set(self.resident_bytes as f64);
        metrics::gauge!(m::PROCESS_CPU_RATIO).set(self.cpu_ratio);
        tracing::trace!(
            resident_bytes = self.resident_bytes,
            cpu_ratio = self.cpu_ratio,
            "resources"
        );
    }
}

/// Build facts, published once when the recorder is installed. No trace line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo<'a> {
    /// The crate version.
    pub version: &'a str,
}

impl BuildInfo<'_> {
    /// Sets the info gauge to 1.
    pub fn emit(&self) {
        metrics::gauge!(m::BUILD_INFO, "version" => self.version.to_owned()).set(1.0);
    }
}

/// A run started. Trace `run_started`, always its first line.
#[derive(Debug, Clone, Copy)]
pub struct RunStarted<'a> {
    /// The config file, if the config came from one.
    pub config: Option<&'a Path>,
    /// The run's directory.
    pub run_dir: &'a Path,
    /// Names of the backends that are simulators.
    pub simulated_backends: &'a [String],
}

impl RunStarted<'_> {
    /// Logs and writes the trace line.
    pub fn emit(&self, trace: &Trace) {
        tracing::info!(config = ?self.config, run_dir = %self.run_dir.display(),
            simulated_backends = ?self.simulated_backends, "run started");
        trace.emit(
            "run_started",
            json!({"config": self.config.map(|p| p.display().to_string()),
                   "run_dir": self.run_dir.display().to_string(),
                   "simulated_backends": self.simulated_backends}),
        );
    }
}

/// A run stopped (the actor tree is down). Trace `run_stopped`, always its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStopped;

impl RunStopped {
    /// Logs and writes the trace line (no fields).
    pub fn emit(&self, trace: &Trace) {
        tracing::info!("run stopped");
        trace.emit("run_stopped", serde_json::Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::testing::{metrics_of, trace_of};

    #[test]
    fn supervisor_and_bus_counters_carry_their_labels() {
        let got = metrics_of(|| {
            ChildRestarted { kind: "agent" }.emit();
            SupervisorEscalated {
                supervisor: "root",
                why: "too many restarts",
            }
            .emit();
            BusMessageSent {
                kind: BusKind::Publish,
            }
            .emit();
            BusMessageDelivered.emit();
            BusMessageDropped {
                reason: BusDropReason::NoSubscribers,
            }
            .emit();
        });
        assert_eq!(
            got.counter(m::SUPERVISOR_RESTARTS, &[("kind", "agent")]),
            Some(1)
        );
        assert_eq!(
            got.counter(m::SUPERVISOR_ESCALATIONS, &[("supervisor", "root")]),
            Some(1)
        );
        assert_eq!(got.counter(m::BUS_SENT, &[("kind", "publish")]), Some(1));
        assert_eq!(got.counter(m::BUS_DELIVERED, &[]), Some(1));
        assert_eq!(
            got.counter(m::BUS_DROPPED, &[("reason", "no_subscribers")]),
            Some(1)
        );
    }

    #[test]
    fn monitor_and_build_info_set_gauges() {
        let got = metrics_of(|| {
            ResourceSampled {
                resident_bytes: 4096,
                cpu_ratio: 0.5,
            }
            .emit();
            BuildInfo { version: "1.2.3" }.emit();
        });
        assert_eq!(got.gauge(m::PROCESS_RESIDENT_MEMORY, &[]), Some(4096.0));
        assert_eq!(got.gauge(m::PROCESS_CPU_RATIO, &[]), Some(0.5));
        assert_eq!(got.gauge(m::BUILD_INFO, &[("version", "1.2.3")]), Some(1.0));
    }

    #[test]
    fn run_start_and_stop_frame_the_trace() {
        let backends = vec!["local".to_owned()];
        let lines = trace_of(|t| {
            RunStarted {
                config: Some(Path::new("config/demo.ron")),
                run_dir: Path::new("runs/r1"),
                simulated_backends: &backends,
            }
            .emit(t);
            RunStopped.emit(t);
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "run_started");
        assert_eq!(lines[0]["config"], "config/demo.ron");
        assert_eq!(lines[0]["run_dir"], "runs/r1");
        assert_eq!(lines[0]["simulated_backends"], json!(["local"]));
        assert_eq!(lines[1]["event"], "run_stopped");
        assert!(lines[1]["ts"].is_f64());
    }
}
