//! The `ResourceMonitor` actor: samples the process's resident memory and CPU use with
//! `sysinfo` every [`SAMPLE_EVERY`] and exports them as gauges. It also runs the Prometheus
//! handle's upkeep so histogram buffers stay small between scrapes.
//!
//! With `runtime.scheduling.adaptive_concurrency`, each sample also goes to the scheduler as a
//! [`PressureSample`]: this process's CPU use as a fraction of every core, and the machine's
//! memory in use as a fraction of its total. The scheduler's governor lowers the concurrency
//! under pressure and raises it back. For drills and tests, `AGENTOS_PRESSURE_FILE` names a
//! file holding `cpu=0.95 memory=0.40`: while it exists and parses, its figures replace the
//! sampled ones (and are marked injected).

use std::time::Duration;

use actix::prelude::*;
use agentos_runtime::events::ResourceSampled;
use metrics_exporter_prometheus::PrometheusHandle;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use agentos_runtime::policy::supervision::RestartType;

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};
use crate::protocol::{Port, PressureSample};

/// Sampling period.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Stops the monitor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopMonitor;

/// The monitor actor.
pub struct ResourceMonitor {
    sys: Option<System>,
    pid: Option<Pid>,
    prometheus: Option<PrometheusHandle>,
    notice: ExitNotice,
    pressure: Option<Port<PressureSample>>,
}

impl ResourceMonitor {
    /// A monitor of this process.
    pub fn new(prometheus: Option<PrometheusHandle>, notice: ExitNotice) -> Self {
        Self {
            sys: System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
            prometheus,
            notice,
            pressure: None,
        }
    }

    /// Also sends every sample's pressure to `port` (the scheduler's governor).
    pub fn with_pressure(mut self, port: Option<Port<PressureSample>>) -> Self {
        self.pressure = port;
        self
    }

    fn send_pressure(&mut self, cpu_ratio: f64) {
        let Some(port) = &self.pressure else {
            return;
        };
        let sample = match injected_pressure() {
            Some((cpu, memory)) => PressureSample {
                cpu,
                memory,
                injected: true,
            },
            None => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let memory = self.sys.as_mut().map_or(0.0, |sys| {
                    sys.refresh_memory();
                    let total = sys.total_memory();
                    if total == 0 {
                        0.0
                    } else {
                        sys.used_memory() as f64 / total as f64
                    }
                });
                PressureSample {
                    cpu: (cpu_ratio / cores as f64).clamp(0.0, 1.0),
                    memory: memory.clamp(0.0, 1.0),
                    injected: false,
                }
            }
        };
        // Dropped when the scheduler is busy: the next sample comes soon.
        let _ = port.try_tell(sample);
    }

    fn sample(&mut self) {
        if let Some(h) = &self.prometheus {
            h.run_upkeep();
        }
        let (Some(pid), Some(sys)) = (self.pid, self.sys.as_mut()) else {
            return;
        };
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let mut cpu_ratio = None;
        if let Some(p) = sys.process(pid) {
            let ratio = f64::from(p.cpu_usage()) / 100.0;
            cpu_ratio = Some(ratio);
            ResourceSampled {
                resident_bytes: p.memory(),
                cpu_ratio: ratio,
            }
            .emit();
        }
        self.send_pressure(cpu_ratio.unwrap_or(0.0));
    }
}

/// Figures from `AGENTOS_PRESSURE_FILE` (`cpu=F memory=F`, fractions), if it names a file that
/// exists and parses.
fn injected_pressure() -> Option<(f64, f64)> {
    let path = std::env::var_os("AGENTOS_PRESSURE_FILE")?;
    let text = std::fs::read_to_string(path).ok()?;
    parse_pressure(&text)
}

fn parse_pressure(text: &str) -> Option<(f64, f64)> {
    let (mut cpu, mut memory) = (None, None);
    for word in text.split_whitespace() {
        let (key, value) = word.split_once('=')?;
        let v: f64 = value.parse().ok().filter(|v: &f64| v.is_finite())?;
        match key {
            "cpu" => cpu = Some(v.clamp(0.0, 1.0)),
            "memory" => memory = Some(v.clamp(0.0, 1.0)),
            _ => return None,
        }
    }
    Some((cpu.unwrap_or(0.0), memory.unwrap_or(0.0)))
}

impl Actor for ResourceMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.sample();
        ctx.run_interval(SAMPLE_EVERY, |act, _| act.sample());
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.notice.exited();
    }
}

impl Handler<StopMonitor> for ResourceMonitor {
    type Result = ();

    fn handle(&mut self, _: StopMonitor, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// The monitor's child spec: permanent. With `pressure`, every sample also goes there.
pub fn child_spec(
    prometheus: Option<PrometheusHandle>,
    pressure: Option<Port<PressureSample>>,
) -> ChildSpec {
    ChildSpec::new(
        "monitor",
        "monitor",
        RestartType::Permanent,
        move |notice| {
            ChildHandle::stop_or_hard_stop(
                ResourceMonitor::new(prometheus.clone(), notice)
                    .with_pressure(pressure.clone())
                    .start(),
                || StopMonitor,
            )
        },
    )
}

impl Handler<HardStop> for ResourceMonitor {
    type Result = ();

    fn handle(&mut self, _: HardStop, ctx: &mut Self::Context) {
        // Sent only when the stop message was not obeyed within the shutdown timeout.
        ctx.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_pressure;

    #[test]
    fn pressure_files_parse_or_are_ignored() {
        assert_eq!(parse_pressure("cpu=0.95 memory=0.4"), Some((0.95, 0.4)));
        assert_eq!(parse_pressure("memory=2"), Some((0.0, 1.0)));
        assert_eq!(parse_pressure("cpu=lots"), None);
        assert_eq!(parse_pressure("disk=0.5"), None);
        assert_eq!(parse_pressure("cpu=NaN"), None);
    }
}
