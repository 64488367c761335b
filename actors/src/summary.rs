//! The run summary printed by `agentos run`: one row per task, then totals.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use agentos_runtime::context::AgentStats;
use agentos_runtime::kvcache::BackendStats;
use agentos_runtime::model::TaskState;
use serde::Serialize;

use crate::protocol::RunSnapshot;

/// Renders the summary table. `simulated` lists backends that are simulators; the summary
/// says so plainly.
pub fn render(snapshot: &RunSnapshot, simulated: &[String], restarts: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "AgentOS run summary");
    if !simulated.is_empty() {
        let _ = writeln!(
            out,
            "NOTE: backend(s) {} are the built-in SIMULATOR (`sim`): replies, latencies and token counts are simulated; no real LLM was called.",
            simulated.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
        );
    }
    let w = snapshot
        .tasks
        .iter()
        .map(|t| t.task.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<w$}  {:<9}  {:>8}  {:<18}  {:>15}  {:>9}  REASON",
        "TASK", "STATE", "ATTEMPTS", "FINISHED BY", "TOKENS IN/OUT", "DURATION"
    );
    for t in &snapshot.tasks {
        let reason = match t.state {
            TaskState::Succeeded if t.attempts > 1 => {
                let failed: Vec<&str> = t
                    .history
                    .iter()
                    .filter_map(|a| a.error.as_deref())
                    .collect();
                format!("recovered after: {}", failed.join(" | "))
            }
            TaskState::Succeeded => String::new(),
            _ => t.reason.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:<9}  {:>8}  {:<18}  {:>15}  {:>8.2}s  {}",
            t.task,
            t.state.label(),
            t.attempts,
            t.finished_by.as_deref().unwrap_or("-"),
            format!("{}/{}", t.prompt_tokens, t.completion_tokens),
            t.duration_secs,
            reason
        );
    }
    let _ = writeln!(out, "Outputs:");
    for t in &snapshot.tasks {
        if let Some(output) = &t.output {
            let flat: String = output.split_whitespace().collect::<Vec<_>>().join(" ");
            let short: String = flat.chars().take(160).collect();
            let ellipsis = if flat.chars().count() > 160 {
                "..."
            } else {
                ""
            };
            let _ = writeln!(out, "  {:<w$}  {short}{ellipsis}", t.task);
        }
    }
    let count = |s: TaskState| snapshot.tasks.iter().filter(|t| t.state == s).count();
    let retries: u32 = snapshot
        .tasks
        .iter()
        .map(|t| t.attempts.saturating_sub(1))
        .sum();
    let fallbacks = snapshot
        .tasks
        .iter()
        .filter(|t| t.history.windows(2).any(|w| w[0].agent != w[1].agent))
        .count();
    let _ = writeln!(
        out,
        "{} tasks: {} succeeded, {} failed, {} skipped, {} cancelled; {} extra attempts, {} task(s) moved to a fallback agent, {} agent restart(s)",
        snapshot.tasks.len(),
        count(TaskState::Succeeded),
        count(TaskState::Failed),
        count(TaskState::Skipped),
        count(TaskState::Cancelled),
        retries,
        fallbacks,
        restarts
    );
    out
}

/// The sandbox line: a warning when `runtime.sandbox` is `off`, what is missing under
/// `best_effort`; nothing when every feature is enforced.
pub fn render_sandbox(report: &agentos_runtime::sandbox::SandboxReport) -> String {
    report
        .summary_line()
        .map(|line| format!("{line}\n"))
        .unwrap_or_default()
}

/// The context pager's part of the summary: one row per agent that built prompts.
pub fn render_pager(stats: &BTreeMap<String, AgentStats>) -> String {
    let rows: Vec<(&String, &AgentStats)> = stats.iter().filter(|(_, s)| s.prompts > 0).collect();
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    let w = rows.iter().map(|(a, _)| a.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "Context pager (per agent):");
    let _ = writeln!(
        out,
        "  {:<w$}  {:>7}  {:>11}  {:>7}  {:>14}  {:>15}  {:>12}  {:>17}",
        "AGENT",
        "PROMPTS",
        "PAGE FAULTS",
        "EVICTED",
        "SWAP IN TOKENS",
        "SWAP OUT TOKENS",
        "TOKENS SAVED",
        "MAX PROMPT/BUDGET"
    );
    for (agent, s) in rows {
        let _ = writeln!(
            out,
            "  {:<w$}  {:>7}  {:>11}  {:>7}  {:>14}  {:>15}  {:>12}  {:>17}",
            agent,
            s.prompts,
            s.page_faults,
            s.evicted_pages,
            s.swap_in_tokens,
            s.swap_out_tokens,
            s.tokens_saved,
            format!("{}/{}", s.max_prompt_tokens, s.budget_tokens)
        );
    }
    out
}

/// The KV-cache pool's part of the summary: one row per replica of every backend that served
/// calls, with prefix-cache hits in tokens (hit rate = hit tokens / queried tokens).
pub fn render_kv(stats: &BTreeMap<String, BackendStats>) -> String {
    let mut out = String::new();
    let rows: Vec<(&String, &BackendStats)> = stats
        .iter()
        .filter(|(_, s)| s.total.query_tokens > 0)
        .collect();
    if rows.is_empty() {
        return out;
    }
    let w = rows.iter().map(|(b, _)| b.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(out, "KV-cache pool (per replica, as the pool models it):");
    let _ = writeln!(
        out,
        "  {:<w$}  {:>7}  {:>5}  {:>13}  {:>11}  {:>8}  {:>9}  {:>10}",
        "BACKEND",
        "REPLICA",
        "CALLS",
        "QUERY TOKENS",
        "HIT TOKENS",
        "HIT RATE",
        "EVICTIONS",
        "COW COPIES"
    );
    for (backend, s) in rows {
        for (i, r) in s.replicas.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:<w$}  {:>7}  {:>5}  {:>13}  {:>11}  {:>7.1}%  {:>9}  {:>10}",
                backend,
                i,
                r.acquires,
                r.query_tokens,
                r.hit_tokens,
                100.0 * r.hit_rate(),
                r.evictions,
                r.cow_copies
            );
        }
        if s.replicas.len() > 1 {
            let t = &s.total;
            let _ = writeln!(
                out,
                "  {:<w$}  {:>7}  {:>5}  {:>13}  {:>11}  {:>7.1}%  {:>9}  {:>10}",
                backend,
                "all",
                t.acquires,
                t.query_tokens,
                t.hit_tokens,
                100.0 * t.hit_rate(),
                t.evictions,
                t.cow_copies
            );
        }
    }
    out
}

/// The quota gate's part of the summary: what was spent, the concurrency limit, and each
/// scope's remaining limits (at most [`MAX_QUOTA_ROWS`] rows; `GET /api/quotas` has all).
pub fn render_quotas(
    scopes: &[agentos_runtime::policy::quota::ScopeStatus],
    spent: (f64, u64),
    sched: &crate::board::SchedView,
) -> String {
    let mut out = String::new();
    let _ = write!(out, "Quotas: spent ${:.4} and {} tokens", spent.0, spent.1);
    // The scheduler's view is published once a second: a shorter run has none yet.
    if sched.max > 0 {
        let _ = write!(
            out,
            "; scheduling {}, concurrency limit {} of {} ({})",
            sched.policy, sched.limit, sched.max, sched.reason
        );
    }
    out.push('\n');
    if scopes.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<24} {:>18} {:>14} {:>26}",
        "SCOPE", "TOKENS LEFT", "REQUESTS LEFT", "BUDGET SPENT"
    );
    let of = |a: Option<u64>, c: Option<u64>| match (a, c) {
        (Some(a), Some(c)) => format!("{a}/{c}"),
        _ => "-".into(),
    };
    for s in scopes.iter().take(MAX_QUOTA_ROWS) {
        let budget = s.budget.as_ref().map_or_else(
            || "-".to_owned(),
            |b| match (b.limit_usd, b.limit_tokens) {
                (Some(l), _) => format!("${:.4}/${l:.2} {}", b.spent_usd, b.window.label()),
                (None, Some(l)) => format!("{}/{l} tok {}", b.spent_tokens, b.window.label()),
                (None, None) => "-".to_owned(),
            },
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>18} {:>14} {:>26}",
            s.scope.key(),
            of(s.tokens_available, s.tokens_capacity),
            of(s.requests_available, s.requests_capacity),
            budget
        );
    }
    if scopes.len() > MAX_QUOTA_ROWS {
        let _ = writeln!(out, "  ... {} more scopes", scopes.len() - MAX_QUOTA_ROWS);
    }
    out
}

/// Most scopes the run summary lists.
pub const MAX_QUOTA_ROWS: usize = 20;

/// The `--json` summary: the task snapshot's fields plus `pager` (statistics by agent) and
/// `kv` (KV-cache pool statistics by backend).
#[derive(Debug, Serialize)]
pub struct JsonSummary<'a> {
    /// Every task.
    #[serde(flatten)]
    pub snapshot: &'a RunSnapshot,
    /// Context pager statistics by agent.
    pub pager: &'a BTreeMap<String, AgentStats>,
    /// KV-cache pool statistics by backend.
    pub kv: &'a BTreeMap<String, BackendStats>,
}

#[cfg(test)]
mod quota_tests {
    use super::*;
    use agentos_runtime::policy::quota::{BudgetStatus, BudgetWindow, Scope, ScopeStatus};

    fn scope(key: Scope, budget: Option<BudgetStatus>) -> ScopeStatus {
        ScopeStatus {
            scope: key,
            tokens_available: Some(335),
            tokens_capacity: Some(1500),
            requests_available: None,
            requests_capacity: None,
            budget,
            in_flight: 0,
            concurrency_limit: None,
        }
    }

    #[test]
    fn the_quota_summary_names_each_scope_and_caps_the_rows() {
        let budget = BudgetStatus {
            window: BudgetWindow::Day,
            window_start_ms: 0,
            resets_at_ms: None,
            spent_usd: 0.0187,
            spent_tokens: 9674,
            limit_usd: Some(5.0),
            limit_tokens: None,
            remaining_usd: Some(4.98),
            remaining_tokens: None,
            soft_reached: false,
            exhausted: false,
        };
        let mut scopes = vec![scope(Scope::Global, Some(budget))];
        for i in 0..30 {
            scopes.push(scope(Scope::Agent(format!("a{i:02}")), None));
        }
        let sched = crate::board::SchedView {
            policy: "fair_share".into(),
            limit: 4,
            max: 6,
            reason: "cpu 95% above 90%".into(),
            running: 4,
            shares: Vec::new(),
        };
        let out = render_quotas(&scopes, (0.0187, 9674), &sched);
        assert!(
            out.starts_with("Quotas: spent $0.0187 and 9674 tokens; scheduling fair_share, concurrency limit 4 of 6 (cpu 95% above 90%)"),
            "{out}"
        );
        assert!(out.contains("$0.0187/$5.00 day"), "{out}");
        assert!(out.contains("335/1500"), "{out}");
        assert!(out.contains("... 11 more scopes"), "{out}");
        assert_eq!(out.lines().count(), 1 + 1 + MAX_QUOTA_ROWS + 1);
        // Before the scheduler published its view, only the spending.
        let early = render_quotas(&[], (0.0, 0), &crate::board::SchedView::default());
        assert_eq!(early, "Quotas: spent $0.0000 and 0 tokens\n");
    }
}
