//! AgentOS benchmarks: criterion micro-benchmarks live in `benches/`; this library holds the
//! workload builders they share and the scenario workloads:
//!
//! - [`kv_routing`]: cache-aware routing across simulated replicas (hit rate against the
//!   upper bound, blocks saved by sharing, makespan per routing policy).

pub mod kv_routing;

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
