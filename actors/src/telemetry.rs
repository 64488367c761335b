//! Process-wide telemetry: the Prometheus recorder (installed once, with explicit histogram
//! buckets) and `tracing` logs controlled by `RUST_LOG`.

use std::sync::OnceLock;

use agentos_runtime::events::{names as m, BuildInfo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder on first call and returns its handle (later calls return
/// the same handle).
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in m::HISTOGRAM_BUCKETS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .map_err(|e| format!("histogram buckets for {name}: {e}"))?;
            }
            let handle = builder
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            m::describe_all();
            m::register_zeroes();
            BuildInfo {
                version: env!("CARGO_PKG_VERSION"),
            }
            .emit();
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `error`; contained panics,
/// restarts and retries log at `warn`). Safe to call
/// more than once.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
