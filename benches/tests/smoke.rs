//! Runs every scenario of `agentos-bench` at smoke size (a few seconds) and checks that the
//! reports a user reads are complete and sane. LangGraph runs only if `benches/.venv` exists;
//! otherwise it must be reported as skipped with a reason, never with numbers.

use std::path::Path;
use std::process::Command;

use agentos_benches::report::{ScenarioReport, AGENTOS};

fn report(dir: &Path, name: &str) -> ScenarioReport {
    let path = dir.join("results").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn results_json(dir: &Path, name: &str) -> serde_json::Value {
    let path = dir.join("results").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_scenario_runs_at_smoke_size_and_reports_sane_numbers() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_agentos-bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .arg("all")
        .status()
        .expect("run agentos-bench");
    assert!(
        status.success(),
        "agentos-bench --smoke all failed: {status}"
    );

    for name in ["overhead", "llm_bound", "frameworks"] {
        let r = report(out.path(), name);
        assert_eq!(r.scenario, name);
        assert!(r.smoke);
        assert!(
            r.machine.cores >= 1 && !r.machine.cpu_model.is_empty() && !r.machine.os.is_empty()
        );
        assert!(
            r.results.iter().any(|v| v.variant == AGENTOS),
            "{name}: no AgentOS row"
        );
        for v in &r.results {
            if let Some(why) = &v.skipped {
                assert_eq!(
                    v.variant, "langgraph",
                    "{name}/{}: skipped: {why}",
                    v.variant
                );
                assert!(!why.is_empty() && v.samples.is_empty() && v.tasks_per_sec == 0.0);
                continue;
            }
            let what = format!("{name}/{}/{}", v.variant, v.agents);
            assert_eq!(v.failed, 0, "{what}: failed tasks");
            assert_eq!(v.reps, 1, "{what}");
            let s = &v.samples[0];
            let expected_tasks = if v.variant == "sequential" {
                2
            } else {
                v.agents as u64
            };
            assert_eq!(s.tasks, expected_tasks, "{what}: tasks");
            assert!(
                s.steps >= 2 * s.tasks,
                "{what}: {} steps for {} tasks",
                s.steps,
                s.tasks
            );
            assert!(
                v.wall_secs > 0.0 && v.wall_secs < 60.0,
                "{what}: wall {}",
                v.wall_secs
            );
            assert!(
                v.tasks_per_sec > 0.0 && v.steps_per_sec >= v.tasks_per_sec,
                "{what}"
            );
            assert!(
                v.peak_rss_mib > 1.0 && v.peak_rss_mib < 4096.0,
                "{what}: rss {}",
                v.peak_rss_mib
            );
            assert!(v.cpu_secs > 0.0, "{what}: cpu");
            assert!(
                v.task_avg_ms > 0.0 && v.task_p95_ms >= v.task_avg_ms * 0.5,
                "{what}"
            );
            if v.variant != "langgraph" {
                assert!(
                    v.step_p50_ms > 0.0 && v.step_p50_ms <= v.step_p99_ms,
                    "{what}: step latency"
                );
            }
        }
        assert!(
            r.ratios
                .iter()
                .all(|x| x.throughput > 0.0 && x.peak_rss > 0.0),
            "{name}: ratios {:?}",
            r.ratios
        );
        // Every baseline that ran has a ratio; LangGraph may be skipped (no venv in smoke runs).
        let baselines_run = r
            .results
            .iter()
            .filter(|v| v.variant != AGENTOS && v.skipped.is_none())
            .count();
        assert!(
            baselines_run == 0 || !r.ratios.is_empty(),
            "{name}: {baselines_run} baselines ran but no ratios"
        );
        if name != "frameworks" {
            assert!(baselines_run > 0, "{name}: no baseline ran");
        }
    }
    // The KV-routing scenario reports every policy of both workloads, each run complete.
    let kv: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results/kv_routing.json")).unwrap(),
    )
    .unwrap();
    let workloads = kv["sizes"][0]["workloads"].as_array().unwrap();
    assert_eq!(workloads.len(), 2, "{kv}");
    for w in workloads {
        let policies = w["policies"].as_array().unwrap();
        assert_eq!(policies.len(), 3, "{w}");
        for p in policies {
            assert_eq!(p["failed_tasks"], 0, "{p}");
            assert!(p["makespan_secs"].as_f64().unwrap() > 0.0, "{p}");
            assert!(
                p["hit_rate"].as_f64().unwrap()
                    <= p["upper_bound_hit_rate"].as_f64().unwrap() + 1e-9,
                "{p}"
            );
        }
    }

    // The durability scenario measures every mode, each against `exit` from the same run, and
    // the store it leaves on disk.
    let durability: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results/durability.json")).unwrap(),
    )
    .unwrap();
    let modes = durability["modes"].as_array().unwrap();
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["sync", "async", "exit"], "{durability}");
    for m in modes {
        assert!(m["skipped"].is_null(), "{m}");
        assert_eq!(m["result"]["failed"], 0, "{m}");
        for field in [
            "step_p50_us",
            "wall_per_step_us",
            "store_bytes_per_1000_steps",
        ] {
            assert!(m[field].as_f64().unwrap() > 0.0, "{field}: {m}");
        }
        assert!(m["step_p50_vs_exit"].as_f64().unwrap() > 0.0, "{m}");
    }
    assert_eq!(modes[2]["step_p50_vs_exit"], 1.0, "{durability}");
    assert_eq!(modes[2]["wall_per_step_vs_exit"], 1.0, "{durability}");

    // The sandbox start-up scenario times every variant it could run; with the agentos binary
    // built next to the runner (as the workspace build does), all three.
    let startup: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results/sandbox_startup.json")).unwrap(),
    )
    .unwrap();
    let variants = startup["variants"].as_array().unwrap();
    let expected = if startup["skipped"].is_null() { 3 } else { 1 };
    assert_eq!(variants.len(), expected, "{startup}");
    for v in variants {
        assert_eq!(v["samples_ms"].as_array().unwrap().len(), 20, "{v}");
        assert!(v["median_ms"].as_f64().unwrap() > 0.0, "{v}");
    }

    // The scheduling scenarios measure ours and the baseline in the same run, with every
    // figure's ratio and every goal's verdict (at smoke size the goals need not hold).
    for (name, variants) in [("quotas", 3), ("priority", 3), ("fairness", 2), ("las", 2)] {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.path().join(format!("results/{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r["scenario"], name, "{r}");
        assert_eq!(r["smoke"], true, "{r}");
        let runs = r["variants"].as_array().unwrap();
        assert_eq!(runs.len(), variants, "{name}: {r}");
        assert_eq!(runs[0]["variant"], r["ours"], "{name}");
        assert_eq!(runs[1]["variant"], r["baseline"], "{name}");
        for v in runs {
            assert!(v["wall_secs"].as_f64().unwrap() > 0.0, "{name}: {v}");
            let failed = v.get("tasks_failed").or_else(|| v.get("failed")).unwrap();
            assert_eq!(failed, 0, "{name}: {v}");
        }
        let figures = r["figures"].as_array().unwrap();
        assert!(!figures.is_empty(), "{name}");
        for f in figures {
            let (ours, base) = (f["ours"].as_f64().unwrap(), f["baseline"].as_f64().unwrap());
            if base != 0.0 {
                assert!(
                    (f["ratio"].as_f64().unwrap() - ours / base).abs() < 1e-9,
                    "{f}"
                );
            }
        }
        assert!(!r["goals"].as_array().unwrap().is_empty(), "{name}");
    }
    let quotas: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results/quotas.json")).unwrap(),
    )
    .unwrap();
    let (limited, free) = (&quotas["variants"][0], &quotas["variants"][1]);
    assert!(
        limited["accepted_tokens"].as_u64().unwrap() > 0
            && limited["limited_requests"].as_u64().unwrap()
                <= free["limited_requests"].as_u64().unwrap(),
        "{quotas}"
    );

    // `react` runs both AgentOS variants and LangGraph at every size, each AgentOS request a
    // calculator call and an answer; the comparisons and goals exist exactly where LangGraph ran.
    let react = results_json(out.path(), "react");
    assert_eq!(react["scenario"], "react", "{react}");
    let rows = react["results"].as_array().unwrap();
    let mut langgraph_ran = Vec::new();
    for n in [1, 10] {
        for variant in ["agentos", "agentos_async", "langgraph"] {
            let v = rows
                .iter()
                .find(|v| v["variant"] == variant && v["agents"] == n)
                .unwrap_or_else(|| panic!("react: no {variant} × {n}: {react}"));
            if !v["skipped"].is_null() {
                assert_eq!(variant, "langgraph", "react: {v}");
                assert!(v["samples"].as_array().unwrap().is_empty(), "{v}");
                continue;
            }
            if variant == "langgraph" {
                langgraph_ran.push(n);
            }
            let s = &v["samples"][0];
            assert_eq!(v["failed"], 0, "react: {v}");
            assert_eq!(s["tasks"], n, "react: {v}");
            assert_eq!(s["steps"], 2 * n, "react: {v}");
            assert!(v["tasks_per_sec"].as_f64().unwrap() > 0.0, "react: {v}");
            assert!(v["task_p95_ms"].as_f64().unwrap() > 0.0, "react: {v}");
            assert!(v["peak_rss_mib"].as_f64().unwrap() > 1.0, "react: {v}");
        }
    }
    let comparisons = react["comparisons"].as_array().unwrap();
    assert_eq!(comparisons.len(), 2 * langgraph_ran.len(), "{react}");
    for c in comparisons {
        assert!(c["throughput"].as_f64().unwrap() > 0.0, "{c}");
        assert!(c["task_p95"].as_f64().unwrap() > 0.0, "{c}");
    }
    assert_eq!(
        react["goals"].as_array().unwrap().len(),
        4 * langgraph_ran.len(),
        "{react}"
    );
    assert_eq!(react["goals_skipped"].is_null(), langgraph_ran.len() == 2);

    // `scale` measures memory per idle agent and one step for every agent, with no failure.
    let scale = results_json(out.path(), "scale");
    let idle = &scale["idle"][0];
    assert!(idle["skipped"].is_null(), "{idle}");
    assert_eq!(idle["samples"][0]["agents"], 1000, "{idle}");
    assert!(idle["bytes_per_agent"].as_f64().unwrap() > 0.0, "{idle}");
    assert!(idle["spawn_secs"].as_f64().unwrap() > 0.0, "{idle}");
    let steps = &scale["steps"][0];
    assert!(steps["result"]["skipped"].is_null(), "{steps}");
    assert_eq!(steps["result"]["failed"], 0, "{steps}");
    assert_eq!(steps["samples"][0]["tasks"], 1000, "{steps}");
    assert_eq!(steps["samples"][0]["steps"], 1000, "{steps}");
    let goals = scale["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 2, "{scale}");
    assert_eq!(goals[1]["met"], true, "{scale}");

    // The server's latency model shows: an LLM-bound step takes at least its 50 ms base.
    let llm = report(out.path(), "llm_bound");
    assert!(
        llm.results.iter().all(|v| v.step_p50_ms >= 50.0),
        "{:?}",
        llm.results
    );

    let md = std::fs::read_to_string(out.path().join("RESULTS.md")).unwrap();
    for needle in [
        "## `overhead`",
        "## `durability`",
        "## `llm_bound`",
        "## `frameworks`",
        "## `sandbox_startup`",
        "## `quotas`",
        "## `priority`",
        "## `fairness`",
        "## `las`",
        "## `react`",
        "## `scale`",
        "Smoke run",
        "tokio_direct",
    ] {
        assert!(md.contains(needle), "RESULTS.md lacks {needle:?}");
    }
    let svg = std::fs::read_to_string(out.path().join("results").join("scaling.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("overhead / agentos"));
}

#[test]
fn unknown_scenarios_are_refused() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_agentos-bench"))
        .args(["--smoke", "--out"])
        .arg(out.path())
        .arg("nonsense")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown scenario \"nonsense\"") && err.contains("overhead"),
        "{err}"
    );
}
