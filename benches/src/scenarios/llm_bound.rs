//! `llm_bound`: N agents against a sim-server with a realistic latency model and a limited
//! number of batch slots. The orchestration should vanish behind the LLM's latency.
//! Baselines: plain tokio tasks calling the server directly, and one sequential agent.

use agentos_actors::simserver::SimServerConfig;
use serde_json::json;

use super::Ctx;
use crate::child::Runner;
use crate::report::ScenarioReport;
use crate::simhost::SimHost;
use crate::workload::Workload;

/// The sim-server settings of `llm_bound` and `frameworks` (RON, as `--config` takes it).
pub const SERVER: &str = "(seed: 1, latency: (base_ms: 50, per_prompt_token_us: 20, \
     per_output_token_ms: 1.0), max_concurrent: 64)";

/// Tasks the sequential baseline runs (its throughput does not depend on N).
const SEQUENTIAL_TASKS: usize = 20;

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let sizes: &[usize] = if ctx.smoke {
        &[5, 20]
    } else {
        &[10, 100, 250, 1_000]
    };
    let server = SimHost::start(SimServerConfig::parse(SERVER).map_err(anyhow::Error::msg)?)?;
    let url = server.base_url();
    let mut results = Vec::new();
    for &n in sizes {
        let w = Workload {
            agents: n,
            tasks: n,
            server: Some(url.clone()),
            steps: 2,
            durability: Default::default(),
        };
        results.push(ctx.measure("agentos", Runner::Agentos, &w));
        results.push(ctx.measure("tokio_direct", Runner::TokioDirect, &w));
    }
    let seq = if ctx.smoke { 2 } else { SEQUENTIAL_TASKS };
    let w = Workload {
        agents: 1,
        tasks: seq,
        server: Some(url),
        steps: 2,
        durability: Default::default(),
    };
    results.push(ctx.measure("sequential", Runner::Sequential, &w));
    let description = format!(
        "N agents, one task each (a calculator call, then an answer: two LLM turns), against \
             `agentos sim-server` through the `openai` backend. Server: {SERVER}. Baselines: \
             `tokio_direct` (plain tokio tasks calling the server and tool directly) and \
             `sequential` (one agent running {seq} tasks one after another; shown in the row \
             for 1 agent, compared with every N)."
    );
    Ok(ctx.report(
        "llm_bound",
        description,
        json!({"agents": sizes, "server": SERVER, "sequential_tasks": seq}),
        results,
    ))
}
