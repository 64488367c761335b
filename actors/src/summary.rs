//! The run summary printed by `agentos run`: one row per task, then totals.

use std::fmt::Write as _;

use agentos_runtime::model::TaskState;

use crate::scheduler::RunSnapshot;

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
