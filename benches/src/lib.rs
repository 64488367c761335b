//! AgentOS benchmarks.
//!
//! # Layout
//!
//! - `benches/`: criterion micro-benchmarks (`cargo bench -p agentos-benches`).
//! - [`scenarios`]: the scenarios of the `agentos-bench` runner and their registry.
//! - [`workload`]: the generated workloads, run on AgentOS and on the direct baselines.
//! - [`child`]: every variant runs in its own child process, so RSS and CPU are its own.
//! - [`measure`]: samples, percentiles, peak RSS and CPU time.
//! - [`report`]: the JSON reports and their markdown tables.
//! - [`simhost`]: a sim-server on a thread of the runner, shared by a scenario's variants.
//! - [`chart`]: the SVG chart.
//! - [`inproc`]: AgentOS booted in the runner's own process with a trace, for the scheduling
//!   scenarios, and what the runtime reported (task summaries, workflows, trace events).
//! - [`goals`]: the report of a scheduling scenario: figures against the baseline, goals met
//!   or missed.
//! - [`kv_routing`]: cache-aware routing across simulated replicas (hit rate against the
//!   upper bound, blocks saved by sharing, makespan per routing policy).
//! - [`runner`]: the runner's command line and output files.

pub mod chart;
pub mod child;
pub mod goals;
pub mod inproc;
pub mod kv_routing;
pub mod measure;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod simhost;
pub mod workload;

use std::sync::Arc;

use agentos_runtime::config::Config;

/// A config with one `sim` agent (with `replicas` instances) and one workflow of `tasks`
/// independent tasks (`wide`) or a chain of `tasks` (`deep`).
pub fn dag_config(tasks: usize, replicas: u32, deep: bool) -> Arc<Config> {
    let mut text = format!(
        "(version: 1, runtime: (max_concurrency: {replicas}), backends: [(name: \"sim\", kind: Sim(()))],
          agents: [(name: \"a\", role: \"r\", backend: \"sim\", replicas: {replicas})],
          workflows: [(name: \"w\", tasks: ["
    );
    for i in 0..tasks {
        if deep && i > 0 {
            text.push_str(&format!(
                "(id: \"t{i}\", agent: \"a\", depends_on: [\"t{}\"]),",
                i - 1
            ));
        } else {
            text.push_str(&format!("(id: \"t{i}\", agent: \"a\"),"));
        }
    }
    text.push_str("])])");
    // The text is generated above and always valid.
    let cfg = Config::parse(&text, "bench.ron", std::path::Path::new("."))
        .expect("generated config is valid");
    Arc::new(cfg)
}
