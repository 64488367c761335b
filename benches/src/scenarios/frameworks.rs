//! `frameworks`: the workload of the AutoAgents benchmark of Rust and Python agent frameworks
//! (N requests, each a tool-using prompt answered in two LLM turns: a tool call, then the
//! answer), against one sim-server, for AgentOS (the `openai` backend) and for LangGraph
//! (`langgraph` + `langchain-openai` in a venv the runner creates, running
//! `benches/python/langgraph_bench.py`). Every request is submitted at once in both.
//!
//! If the venv cannot be made, LangGraph is reported as skipped with the reason; no number is
//! ever made up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentos_actors::simserver::SimServerConfig;
use serde_json::json;

use super::llm_bound::SERVER;
use super::Ctx;
use crate::child::{run_sample, Runner};
use crate::report::{ScenarioReport, VariantResult};
use crate::simhost::SimHost;
use crate::workload::Workload;

/// Python packages the runner installs into the venv.
pub const PACKAGES: &[&str] = &["langgraph", "langchain-openai"];

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<ScenarioReport> {
    let sizes: &[usize] = if ctx.smoke { &[5] } else { &[100, 250] };
    let server = SimHost::start(SimServerConfig::parse(SERVER).map_err(anyhow::Error::msg)?)?;
    let url = server.base_url();
    let python = python(ctx);
    let versions = python.as_ref().ok().map(|p| versions(p));
    let script = ctx.bench_dir.join("python").join("langgraph_bench.py");
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
        results.push(match &python {
            Ok(py) => ctx.repeat("langgraph", n, |_| {
                let mut cmd = Command::new(py);
                cmd.arg(&script)
                    .args(["--base-url", &url, "--requests", &n.to_string()]);
                run_sample(cmd, Duration::from_secs(600))
            }),
            Err(why) => VariantResult::skipped("langgraph", n, why.clone()),
        });
    }
    let description = format!(
        "N requests submitted at once, each a tool-using prompt answered in two LLM turns (a \
             calculator call, then the answer), against `agentos sim-server` ({SERVER}). \
             `agentos`: the `openai` backend, one agent replica per request. `langgraph`: \
             `create_react_agent` with `ChatOpenAI`, all requests through `asyncio.gather` \
             (`benches/python/langgraph_bench.py`). Task latency is per request, from the start \
             of its work to its answer; step latency is not measured inside LangGraph. LangGraph's \
             CPU time counts the workload only (its imports, about a second, are left out); \
             its peak RSS is the whole Python process."
    );
    Ok(ctx.report(
        "frameworks",
        description,
        json!({"requests": sizes, "server": SERVER, "python_packages": versions}),
        results,
    ))
}

/// The venv's python with the packages importable, creating the venv when allowed (`react`
/// runs LangGraph from the same venv).
pub fn python(ctx: &Ctx) -> Result<PathBuf, String> {
    let venv = ctx.bench_dir.join(".venv");
    let py = venv.join("bin").join("python");
    if importable(&py) {
        return Ok(py);
    }
    if !ctx.allow_venv_setup {
        return Err(format!(
            "no venv with {} at {} (smoke runs do not create it; a full run does)",
            PACKAGES.join(" + "),
            venv.display()
        ));
    }
    eprintln!(
        "  creating {} and installing {}",
        venv.display(),
        PACKAGES.join(", ")
    );
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Err(format!("cannot run python3: {e}")),
    }
    let pip = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES)
        .output();
    match pip {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            return Err(format!("pip install {} failed: {tail}", PACKAGES.join(" ")));
        }
        Err(e) => return Err(format!("cannot run pip: {e}")),
    }
    if importable(&py) {
        Ok(py)
    } else {
        Err("installed, but langgraph / langchain_openai do not import".into())
    }
}

fn importable(py: &Path) -> bool {
    py.exists()
        && Command::new(py)
            .args(["-c", "import langgraph, langchain_openai"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// The installed versions of [`PACKAGES`] and of Python, as JSON (null when unknown).
pub fn versions(py: &Path) -> serde_json::Value {
    let code = "import importlib.metadata as m, json, sys; \
                print(json.dumps({p: m.version(p) for p in sys.argv[1:]} | {'python': sys.version.split()[0]}))";
    Command::new(py)
        .args(["-c", code])
        .args(PACKAGES)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(serde_json::Value::Null)
}
