//! The `ResourceMonitor` actor: samples the process's resident memory and CPU use with
//! `sysinfo` every [`SAMPLE_EVERY`] and exports them as gauges. It also runs the Prometheus
//! handle's upkeep so histogram buffers stay small between scrapes.

use std::time::Duration;

use actix::prelude::*;
use agentos_runtime::events::ResourceSampled;
use metrics_exporter_prometheus::PrometheusHandle;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use agentos_runtime::policy::supervision::RestartType;

use crate::child::{ChildHandle, ChildSpec, ExitNotice, HardStop};

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
}

impl ResourceMonitor {
    /// A monitor of this process.
    pub fn new(prometheus: Option<PrometheusHandle>, notice: ExitNotice) -> Self {
        Self {
            sys: System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
            prometheus,
            notice,
        }
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
        if let Some(p) = sys.process(pid) {
            ResourceSampled {
                resident_bytes: p.memory(),
                cpu_ratio: f64::from(p.cpu_usage()) / 100.0,
            }
            .emit();
        }
    }
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

/// The monitor's child spec: permanent.
pub fn child_spec(prometheus: Option<PrometheusHandle>) -> ChildSpec {
    ChildSpec::new(
        "monitor",
        "monitor",
        RestartType::Permanent,
        move |notice| {
            ChildHandle::stop_or_hard_stop(
                ResourceMonitor::new(prometheus.clone(), notice).start(),
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
