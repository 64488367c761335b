//! What one run of one variant measures, and how it is measured inside the process that ran it.
//!
//! Every variant runs in its own child process (see [`crate::child`]), so peak RSS and CPU time
//! are that variant's alone: the child reads its own `getrusage(RUSAGE_SELF)` at the end and
//! prints one [`Sample`] as JSON on stdout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of observations.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Percentiles {
    /// Percentiles of `secs` (nearest-rank); all zero when empty.
    pub fn of_secs(mut secs: Vec<f64>) -> Self {
        if secs.is_empty() {
            return Self::default();
        }
        secs.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * secs.len() as f64).ceil() as usize).clamp(1, secs.len()) - 1;
            secs[i] * 1e3
        };
        Self {
            count: secs.len() as u64,
            mean_ms: secs.iter().sum::<f64>() / secs.len() as f64 * 1e3,
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
        }
    }
}

/// One run of one variant, as reported by the child process that ran it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time of the workload (for AgentOS: from boot to the last task's end).
    pub wall_secs: f64,
    /// Agent steps (LLM calls, each with its tool calls) completed.
    pub steps: u64,
    /// Tasks (requests) completed successfully.
    pub tasks: u64,
    /// Tasks that did not succeed.
    pub failed: u64,
    /// Latency of one step: LLM call plus its tool calls.
    pub step_latency: Percentiles,
    /// Latency of one task, from the start of its work to its final answer.
    pub task_latency: Percentiles,
    /// Peak resident set size of the process (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// User + system CPU time of the process.
    pub cpu_secs: f64,
    /// Bytes of the store file and its write-ahead log when the run ended (AgentOS only).
    #[serde(default)]
    pub store_bytes: u64,
}

/// Peak RSS (bytes) and CPU time (seconds) of this process so far.
///
/// Peak RSS is `VmHWM` of `/proc/self/status`, which belongs to this program's own address
/// space. (`ru_maxrss` is not used: Linux carries it over from the parent across fork and
/// exec, so a child would report its parent's size.) CPU time is `getrusage(RUSAGE_SELF)`.
pub fn self_usage() -> (u64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    let cpu = getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 * 1e-6;
        tv(u.user_time()) + tv(u.system_time())
    });
    (peak_rss(), cpu)
}

/// `VmHWM` of `/proc/self/status` in bytes, or 0 where unavailable.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| {
                    v.split_whitespace()
                        .next()
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Current resident set size in bytes (from `/proc/self/statm`), or 0 where unavailable.
pub fn current_rss() -> u64 {
    let page = 4096u64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * page)
}

/// A `metrics` recorder that keeps every observation of one histogram (by name) so that exact
/// percentiles can be computed; every other metric is dropped. Cheaper than the Prometheus
/// exporter, so AgentOS's numbers here exclude the exporter's cost.
#[derive(Debug, Clone)]
pub struct Capture {
    name: &'static str,
    values: Arc<Mutex<Vec<f64>>>,
}

impl Capture {
    /// Installs the recorder globally; returns a handle to read the values. Fails when another
    /// recorder is installed already.
    pub fn install(histogram: &'static str) -> anyhow::Result<Self> {
        let capture = Self {
            name: histogram,
            values: Arc::new(Mutex::new(Vec::new())),
        };
        metrics::set_global_recorder(capture.clone())
            .map_err(|e| anyhow::anyhow!("cannot install the capture recorder: {e}"))?;
        Ok(capture)
    }

    /// Takes every value recorded so far.
    pub fn take(&self) -> Vec<f64> {
        std::mem::take(&mut *self.values.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct CaptureHistogram(Arc<Mutex<Vec<f64>>>);

impl metrics::HistogramFn for CaptureHistogram {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(value);
    }
}

impl metrics::Recorder for Capture {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == self.name {
            metrics::Histogram::from_arc(Arc::new(CaptureHistogram(self.values.clone())))
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// Median of `values` (mean of the middle two for an even count); 0 when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Seconds as a [`Duration`], saturating at zero.
pub fn secs(d: f64) -> Duration {
    Duration::try_from_secs_f64(d.max(0.0)).unwrap_or(Duration::ZERO)
}
