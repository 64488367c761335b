//! The Grafana boards stay honest: every query names only metrics AgentOS exports.
//!
//! Each `grafana/dashboards/*.json` is parsed; every PromQL `expr` of its panels (rows
//! included) and every query of its template variables is scanned for `agentos_*` metric names.
//! A name must be one of the constants of [`agentos_runtime::metrics`], or a histogram constant
//! with the `_bucket`, `_sum` or `_count` suffix the Prometheus exporter adds. Panels must carry
//! a title, a description and a place on the grid, and query the provisioned datasource; the
//! provisioning files must exist.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use agentos_runtime::metrics as m;
use serde_json::Value;

/// Every metric constant of `agentos_runtime::metrics`. `metric_list_is_complete` checks it
/// against the module's source, so a new metric must be added here too.
const ALL_METRICS: &[&str] = &[
    m::SCHED_TASKS,
    m::SCHED_TASK_ATTEMPTS,
    m::SCHED_TASK_RETRIES,
    m::SCHED_TASK_FALLBACKS,
    m::SCHED_TASKS_FINISHED,
    m::SCHED_LEASE_EXPIRED,
    m::SCHED_STALE_REPORTS,
    m::SCHED_TASK_DURATION,
    m::SCHED_WORKFLOWS_ACCEPTED,
    m::SCHED_WORKFLOWS_FINISHED,
    m::SCHED_TASKS_SPAWNED,
    m::SCHED_AGENT_CONTROLS,
    m::SCHED_ATTEMPTS_CANCELLED,
    m::AGENTS,
    m::AGENT_STEP_DURATION,
    m::AGENT_STEPS,
    m::LLM_REQUESTS,
    m::LLM_REQUEST_DURATION,
    m::LLM_PROMPT_TOKENS,
    m::LLM_COMPLETION_TOKENS,
    m::TOOL_CALLS,
    m::TOOL_CALL_DURATION,
    m::SUPERVISOR_RESTARTS,
    m::SUPERVISOR_ESCALATIONS,
    m::BUS_SENT,
    m::BUS_DELIVERED,
    m::BUS_DROPPED,
    m::KV_BLOCKS,
    m::KV_PREFIX_QUERY_TOKENS,
    m::KV_PREFIX_HIT_TOKENS,
    m::KV_COW_COPIES,
    m::KV_EVICTIONS,
    m::KV_ALLOC_FAILURES,
    m::KV_ROUTING_DECISIONS,
    m::KV_REPLICA_INFLIGHT,
    m::KV_CACHE_CONFIG_INFO,
    m::PROCESS_RESIDENT_MEMORY,
    m::PROCESS_CPU_RATIO,
    m::BUILD_INFO,
    m::PAGER_RESIDENT_PAGES,
    m::PAGER_RESIDENT_TOKENS,
    m::PAGER_SWAPPED_PAGES,
    m::PAGER_SWAPPED_TOKENS,
    m::PAGER_FAULTS,
    m::PAGER_SWAP_IN_TOKENS,
    m::PAGER_SWAP_OUT_TOKENS,
    m::PAGER_EVICTIONS,
    m::PAGER_TOKENS_SAVED,
    m::PAGER_PROMPTS,
    m::PAGER_BUDGET_UTILISATION,
    m::PAGER_REQUESTS,
    m::STORE_WRITE_DURATION,
    m::STORE_READ_DURATION,
    m::SANDBOX_ENFORCED,
    m::SANDBOX_DENIALS,
    m::API_REQUESTS,
    m::API_REQUEST_DURATION,
    m::STORE_COMMITS,
    m::STORE_COMMIT_BATCH_ROWS,
    m::STORE_COMMIT_DURATION,
    m::STORE_COMMIT_FAILURES,
    m::JOURNAL_RESUMED_ATTEMPTS,
    m::JOURNAL_REPLAYED_STEPS,
    m::JOURNAL_INTERRUPTED_CALLS,
    m::RUNS_RESUMED,
];

/// Metrics of quotas, rate limits, fairness and preemption that the board's "Quotas &
/// fairness" row must chart (`QUOTA_THROTTLE_WAIT` is a histogram: its `_sum` is charted). With [`ALL_METRICS`] they are the whole list.
const QUOTA_METRICS: &[&str] = &[
    m::QUOTA_TOKENS,
    m::QUOTA_USD,
    m::QUOTA_REMAINING,
    m::QUOTA_THROTTLED,
    m::QUOTA_THROTTLE_WAIT,
    m::QUOTA_BUDGET_LIMITS,
    m::RATELIMIT_AVOIDED,
    m::RATELIMIT_RECEIVED,
    m::RATELIMIT_LEARNED,
    m::CONCURRENCY_LIMIT,
    m::CONCURRENCY_CURRENT,
    m::SCHED_PREEMPTIONS,
    m::FAIR_SHARE_TOKENS,
];

/// Metrics of durable execution that the board's Durability row queries. Their constants and
/// the events that emit them are added to `runtime/src/events/` alongside this row; until they
/// are there, these names are accepted as they are spelled here. Once `names.rs` declares
/// them, `metric_list_is_complete` requires the declared spelling to be one of these (a typo
/// on either side fails), and they may move into [`ALL_METRICS`] as `m::` constants.
const DURABILITY_METRICS: &[(&str, Kind)] = &[
    ("agentos_store_commits_total", Kind::Counter),
    ("agentos_store_commit_batch_rows", Kind::Histogram),
    ("agentos_store_commit_duration_seconds", Kind::Histogram),
    ("agentos_store_commit_failures_total", Kind::Counter),
    ("agentos_journal_replayed_steps_total", Kind::Counter),
    ("agentos_journal_resumed_attempts_total", Kind::Counter),
    ("agentos_journal_interrupted_calls_total", Kind::Counter),
    ("agentos_runs_resumed_total", Kind::Counter),
];

/// What a [`DURABILITY_METRICS`] entry is (a histogram gets the exporter's series suffixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Histogram,
}

/// Series suffixes the Prometheus exporter adds to a histogram.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// Uid of the provisioned datasource every panel must use.
const DATASOURCE_UID: &str = "prometheus";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `grafana/dashboards/*.json`, parsed, with its file name.
pub(crate) fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("grafana/dashboards");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut out: Vec<(String, Value)> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let v: Value = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{name}: not valid JSON: {e}"));
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Every panel of a dashboard, the panels nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn has_text(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.trim().is_empty())
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

/// `(where, expr)` for every panel target and every template-variable query.
pub(crate) fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((format!("panel {:?}", title(p)), expr.to_owned()));
            }
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = v["name"].as_str().unwrap_or("?");
        let query = match &v["query"] {
            Value::String(s) => Some(s.as_str()),
            q => q["query"].as_str(),
        };
        if let Some(q) = query.or_else(|| v["definition"].as_str()) {
            out.push((format!("variable ${name}"), q.to_owned()));
        }
    }
    out
}

/// Identifiers starting with `agentos_` outside string literals, so a label value such as
/// `kind="agentos_x"` is not taken for a metric.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    end = i + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let ident = &expr[start..end];
            if ident.starts_with("agentos_") {
                names.push(ident.to_owned());
            }
        } else if c.is_ascii_digit() {
            // A number such as `1e3` or `0x1f`: skip its letters so they are not identifiers.
            while chars
                .peek()
                .is_some_and(|&(_, d)| d.is_ascii_alphanumeric() || d == '.')
            {
                chars.next();
            }
        }
    }
    names
}

/// Whether `name` is exported: a metric constant, or a histogram constant plus a series suffix.
fn is_exported(name: &str) -> bool {
    if ALL_METRICS.contains(&name)
        || QUOTA_METRICS.contains(&name)
        || DURABILITY_METRICS.iter().any(|(d, _)| *d == name)
    {
        return true;
    }
    HISTOGRAM_SUFFIXES.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            m::HISTOGRAM_BUCKETS.iter().any(|(h, _)| *h == base)
                || DURABILITY_METRICS.contains(&(base, Kind::Histogram))
        })
    })
}

#[test]
fn metric_list_is_complete() {
    let source = read(&repo().join("runtime/src/events/names.rs"));
    // Every `pub const NAME: &str = "value";`, wherever rustfmt breaks its line.
    let declared: BTreeSet<&str> = source
        .split("pub const ")
        .skip(1)
        .filter_map(|decl| decl.split_once(';'))
        .filter_map(|(decl, _)| decl.split_once(':'))
        .filter(|(_, rest)| rest.trim_start().starts_with("&str"))
        .filter_map(|(_, rest)| rest.split_once('"'))
        .filter_map(|(_, value)| value.split_once('"'))
        .map(|(value, _)| value)
        .collect();
    // The durability names count as listed once declared (see DURABILITY_METRICS).
    let listed: BTreeSet<&str> = ALL_METRICS
        .iter()
        .chain(QUOTA_METRICS)
        .copied()
        .chain(
            DURABILITY_METRICS
                .iter()
                .map(|(d, _)| *d)
                .filter(|d| declared.contains(d)),
        )
        .collect();
    assert_eq!(
        declared, listed,
        "ALL_METRICS (or QUOTA_METRICS, DURABILITY_METRICS) in dashboards.rs must list every \
         metric constant \
         of runtime/src/events/names.rs"
    );
    for (h, _) in m::HISTOGRAM_BUCKETS {
        assert!(
            listed.contains(h),
            "histogram {h} is not one of the metric constants"
        );
    }
}

#[test]
fn extracts_metric_names_outside_strings() {
    let expr = r#"histogram_quantile(0.95, sum by (le) (rate(agentos_llm_request_duration_seconds_bucket{kind="agentos_not_a_metric"}[5m]))) / 1e3 + agentos_build_info"#;
    assert_eq!(
        metric_names(expr),
        [
            "agentos_llm_request_duration_seconds_bucket",
            "agentos_build_info"
        ]
    );
    assert!(is_exported("agentos_llm_request_duration_seconds_bucket"));
    assert!(is_exported("agentos_tool_call_duration_seconds_count"));
    assert!(is_exported(m::SCHED_TASKS));
    assert!(is_exported("agentos_store_commit_duration_seconds_bucket"));
    assert!(is_exported("agentos_runs_resumed_total"));
    assert!(!is_exported("agentos_runs_resumed_total_count"));
    // Suffixes belong to histograms only.
    assert!(!is_exported("agentos_scheduler_tasks_count"));
    assert!(!is_exported("agentos_no_such_metric_total"));
}

#[test]
fn dashboards_query_only_exported_metrics() {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (file, d) in dashboards() {
        let qs = queries(&d);
        assert!(!qs.is_empty(), "{file}: no queries");
        for (place, expr) in qs {
            if expr.trim().is_empty() {
                problems.push(format!("{file}: {place}: empty query"));
                continue;
            }
            let names = metric_names(&expr);
            if names.is_empty() {
                problems.push(format!("{file}: {place}: no agentos_ metric in {expr:?}"));
            }
            for name in names {
                if is_exported(&name) {
                    used.insert(name);
                } else {
                    problems.push(format!(
                        "{file}: {place}: {name} is not a metric of agentos_runtime::metrics"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard queries name unknown metrics:\n  {}",
        problems.join("\n  ")
    );
    assert!(!used.is_empty());
}

#[test]
fn dashboard_panels_are_complete() {
    let mut problems = Vec::new();
    let mut uids = HashSet::new();
    for (file, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or_default();
        if uid.is_empty() || !uids.insert(uid.to_owned()) {
            problems.push(format!(
                "{file}: missing or duplicate dashboard uid {uid:?}"
            ));
        }
        if !has_text(&d["title"]) {
            problems.push(format!("{file}: dashboard has no title"));
        }
        let mut ids = HashSet::new();
        let all = panels(&d);
        assert!(!all.is_empty(), "{file}: no panels");
        for p in all {
            let t = p["title"].as_str().unwrap_or_default();
            let kind = p["type"].as_str().unwrap_or_default();
            if t.trim().is_empty() {
                problems.push(format!(
                    "{file}: a {kind:?} panel (id {}) has no title",
                    p["id"]
                ));
            }
            match p["id"].as_u64() {
                Some(id) if ids.insert(id) => {}
                _ => problems.push(format!(
                    "{file}: panel {t:?}: missing or duplicate id {}",
                    p["id"]
                )),
            }
            let g = &p["gridPos"];
            let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
            match (x, g["y"].as_u64(), w, h) {
                (Some(x), Some(_), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24 => {}
                _ => problems.push(format!(
                    "{file}: panel {t:?}: gridPos missing or off the 24-column grid: {g}"
                )),
            }
            if kind == "row" {
                continue;
            }
            if !has_text(&p["description"]) {
                problems.push(format!("{file}: panel {t:?} has no description"));
            }
            let targets = p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{file}: panel {t:?} has no queries"));
            }
            let uses_provisioned =
                |ds: &Value| ds.is_null() || ds["uid"].as_str() == Some(DATASOURCE_UID);
            if !uses_provisioned(&p["datasource"])
                || targets.iter().any(|t| !uses_provisioned(&t["datasource"]))
            {
                problems.push(format!(
                    "{file}: panel {t:?} does not use datasource uid {DATASOURCE_UID:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "incomplete dashboard panels:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn provisioning_files_exist() {
    let root = repo().join("grafana/provisioning");
    let datasources = read(&root.join("datasources/prometheus.yaml"));
    for needle in [
        "apiVersion: 1",
        "type: prometheus",
        &format!("uid: {DATASOURCE_UID}"),
        "url: ",
    ] {
        assert!(
            datasources.contains(needle),
            "datasources/prometheus.yaml lacks {needle:?}"
        );
    }
    let providers = read(&root.join("dashboards/agentos.yaml"));
    for needle in ["apiVersion: 1", "providers:", "type: file", "path: "] {
        assert!(
            providers.contains(needle),
            "dashboards/agentos.yaml lacks {needle:?}"
        );
    }
}

#[test]
fn the_durability_row_charts_every_durability_metric() {
    let (_, board) = dashboards()
        .into_iter()
        .find(|(file, _)| file == "agentos-overview.json")
        .expect("the overview board");
    let row = board["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["type"] == "row" && p["title"] == "Durability")
        .expect("a Durability row");
    let row_y = row["gridPos"]["y"].as_u64().unwrap_or_default();
    let exprs: Vec<String> = queries(&board).into_iter().map(|(_, expr)| expr).collect();
    for (name, kind) in DURABILITY_METRICS {
        let series = match kind {
            Kind::Counter => name.to_string(),
            Kind::Histogram => format!("{name}_bucket"),
        };
        assert!(
            exprs.iter().any(|e| metric_names(e).contains(&series)),
            "no board query charts {series}"
        );
    }
    // The row's panels sit below it.
    for p in panels(&board) {
        let is_durability = p["targets"].as_array().into_iter().flatten().any(|t| {
            let names = metric_names(t["expr"].as_str().unwrap_or_default());
            DURABILITY_METRICS
                .iter()
                .any(|(d, _)| names.iter().any(|n| n.starts_with(d)))
        });
        if is_durability {
            assert!(
                p["gridPos"]["y"].as_u64().unwrap_or_default() > row_y,
                "panel {:?} is above the Durability row",
                title(p)
            );
        }
    }
}

#[test]
fn the_quotas_row_charts_every_quota_metric() {
    let (_, board) = dashboards()
        .into_iter()
        .find(|(file, _)| file == "agentos-overview.json")
        .expect("the overview board");
    let top = board["panels"].as_array().cloned().unwrap_or_default();
    let row = top
        .iter()
        .find(|p| p["type"] == "row" && p["title"] == "Quotas & fairness")
        .expect("a Quotas & fairness row");
    let row_y = row["gridPos"]["y"].as_u64().unwrap_or_default();
    // The row's panels: below it, above the next row (if any).
    let next_row_y = top
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["gridPos"]["y"].as_u64())
        .filter(|&y| y > row_y)
        .min()
        .unwrap_or(u64::MAX);
    let mut charted = BTreeSet::new();
    for p in panels(&board) {
        let y = p["gridPos"]["y"].as_u64().unwrap_or_default();
        if p["type"] == "row" || y <= row_y || y >= next_row_y {
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            charted.extend(metric_names(t["expr"].as_str().unwrap_or_default()));
        }
    }
    for name in QUOTA_METRICS {
        // A histogram is charted by its series (`_sum`, `_count`, `_bucket`).
        let series = HISTOGRAM_SUFFIXES
            .iter()
            .any(|s| charted.contains(format!("{name}{s}").as_str()));
        assert!(
            charted.contains(*name) || series,
            "no panel of the Quotas & fairness row charts {name}"
        );
    }
}
