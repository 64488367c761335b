//! Aligned tables for people, and the tables of workflows, tasks and agent instances as the
//! API returns them.
//!
//! The tables read the API's JSON loosely: a field that is missing or `null` shows as `-`,
//! so a client keeps working against a server that adds or drops a field.

use std::fmt::Write as _;

use serde_json::Value;

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table: a header row, then rows, every column as wide as its widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

/// Longest cell, in characters; longer ones are cut with `...` (the JSON output has it all).
const MAX_CELL: usize = 100;

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra ones dropped. Whitespace runs (newlines
    /// included) become one space.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut row: Vec<String> = cells.into_iter().map(|c| clean(&c)).collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, with a trailing newline. Columns are two spaces
    /// apart; the last column is not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let (w, align) = (widths[i], self.columns[i].1);
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w.saturating_sub(cell.chars().count());
                match align {
                    Align::Right => {
                        line.push_str(&" ".repeat(pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

fn clean(cell: &str) -> String {
    let flat = cell.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_CELL {
        return flat;
    }
    let mut cut: String = flat.chars().take(MAX_CELL - 3).collect();
    cut.push_str("...");
    cut
}

/// `v[key]` as text: strings as they are, numbers and booleans printed, `-` for a missing
/// or `null` field, other JSON compact.
pub fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `v[key]` as a count (0 when missing).
pub fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `v[key]` as seconds, `1.25s` (`-` when missing).
pub fn secs(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|s| format!("{s:.2}s"))
        .unwrap_or_else(|| "-".into())
}

/// A state-count map such as `{"succeeded": 2, "running": 1}` as `2 succeeded, 1 running`,
/// in lifecycle order.
pub fn counts_summary(counts: &Value) -> String {
    const ORDER: [&str; 7] = [
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
        "running",
        "ready",
        "pending",
    ];
    let Some(map) = counts.as_object() else {
        return "-".into();
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    let parts: Vec<String> = keys
        .into_iter()
        .filter_map(|k| {
            let n = map[k].as_u64()?;
            (n > 0).then(|| format!("{n} {k}"))
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Tasks (the API's task summaries), one row each.
pub fn tasks(tasks: &[Value]) -> String {
    let mut t = Table::new(&[
        ("TASK", Align::Left),
        ("STATE", Align::Left),
        ("ATTEMPTS", Align::Right),
        ("AGENT", Align::Left),
        ("FINISHED BY", Align::Left),
        ("TOKENS IN/OUT", Align::Right),
        ("DURATION", Align::Right),
        ("REASON", Align::Left),
    ]);
    for task in tasks {
        t.row(vec![
            text(task, "task"),
            text(task, "state"),
            count(task, "attempts").to_string(),
            text(task, "agent"),
            text(task, "finished_by"),
            format!(
                "{}/{}",
                count(task, "prompt_tokens"),
                count(task, "completion_tokens")
            ),
            secs(task, "duration_secs"),
            reason(task),
        ]);
    }
    t.render()
}

/// A task's reason: why it ended, or what its failed attempts said when it recovered.
fn reason(task: &Value) -> String {
    if let Some(r) = task.get("reason").and_then(Value::as_str) {
        return r.to_owned();
    }
    let errors: Vec<&str> = task
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("error").and_then(Value::as_str))
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!("recovered after: {}", errors.join(" | "))
    }
}

/// Workflow views (as listed), one row each.
pub fn workflows(views: &[Value]) -> String {
    let mut t = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("ORIGIN", Align::Left),
        ("STATE", Align::Left),
        ("TASKS", Align::Right),
        ("SUBMITTED BY", Align::Left),
        ("PROGRESS", Align::Left),
    ]);
    for v in views {
        let counts = v.get("counts").cloned().unwrap_or(Value::Null);
        let total: u64 = counts
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        t.row(vec![
            text(v, "id"),
            text(v, "name"),
            text(v, "origin"),
            text(v, "state"),
            total.to_string(),
            text(v, "submitted_by"),
            counts_summary(&counts),
        ]);
    }
    t.render()
}

/// Agent instances (control blocks), one row each.
pub fn agents(blocks: &[Value]) -> String {
    agents_with(blocks, &[], |_| Vec::new()).render()
}

/// The agent table with `extra` columns after the control block's, filled per block by
/// `cells` (`agentos ps` adds quota columns this way).
pub fn agents_with(
    blocks: &[Value],
    extra: &[(&'static str, Align)],
    cells: impl Fn(&Value) -> Vec<String>,
) -> Table {
    let mut columns = vec![
        ("INSTANCE", Align::Left),
        ("PID", Align::Right),
        ("STATE", Align::Left),
        ("TASK", Align::Left),
        ("STEPS", Align::Right),
        ("LLM CALLS", Align::Right),
        ("TOOL CALLS", Align::Right),
        ("TOKENS IN/OUT", Align::Right),
        ("TASKS DONE", Align::Right),
        ("BUSY", Align::Right),
    ];
    columns.extend_from_slice(extra);
    let mut t = Table::new(&columns);
    for b in blocks {
        let mut row = vec![
            instance(b),
            text(b, "pid"),
            text(b, "state"),
            text(b, "current_task"),
            count(b, "steps").to_string(),
            count(b, "llm_calls").to_string(),
            count(b, "tool_calls").to_string(),
            format!("{}/{}", count(b, "tokens_in"), count(b, "tokens_out")),
            count(b, "tasks_done").to_string(),
            secs(b, "busy"),
        ];
        row.extend(cells(b));
        t.row(row);
    }
    t
}

/// `agent#replica` of a control block.
pub fn instance(block: &Value) -> String {
    let id = block.get("id").cloned().unwrap_or(Value::Null);
    match (id.get("agent").and_then(Value::as_str), id.get("replica")) {
        (Some(a), Some(r)) if !r.is_null() => format!("{a}#{r}"),
        (Some(a), _) => a.to_owned(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a".into(), "1".into(), "first\nline".into()]);
        t.row(vec!["longer".into(), "100".into()]);
        assert_eq!(
            t.render(),
            "NAME      N  NOTE\n\
             a         1  first line\n\
             longer  100\n"
        );
    }

    #[test]
    fn long_cells_are_cut() {
        let mut t = Table::new(&[("X", Align::Left)]);
        t.row(vec!["y".repeat(300)]);
        let line = t.render().lines().nth(1).unwrap().to_owned();
        assert_eq!(line.chars().count(), MAX_CELL);
        assert!(line.ends_with("..."));
    }

    #[test]
    fn task_rows_read_the_api_json_loosely() {
        let out = tasks(&[
            json!({"task": "w/a", "state": "succeeded", "attempts": 2, "agent": "coder",
                   "finished_by": "coder#0", "prompt_tokens": 10, "completion_tokens": 3,
                   "duration_secs": 1.5, "reason": null,
                   "history": [{"agent": "coder", "error": "forced error"}, {"agent": "coder", "error": null}]}),
            json!({"task": "w/b", "state": "skipped", "reason": "upstream task w/a failed"}),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TASK  STATE"), "{out}");
        assert!(
            lines[1].contains("coder#0") && lines[1].contains("10/3") && lines[1].contains("1.50s"),
            "{out}"
        );
        assert!(lines[1].ends_with("recovered after: forced error"), "{out}");
        assert!(
            lines[2].contains("skipped") && lines[2].contains(" -  "),
            "{out}"
        );
        assert!(lines[2].ends_with("upstream task w/a failed"), "{out}");
    }

    #[test]
    fn workflow_rows_sum_and_order_the_counts() {
        let out = workflows(&[
            json!({"id": "review-2", "name": "review", "origin": "submitted",
            "state": "running", "submitted_by": "api 127.0.0.1:5000",
            "counts": {"running": 1, "pending": 2, "succeeded": 3}}),
        ]);
        let row = out.lines().nth(1).unwrap();
        assert!(
            row.starts_with("review-2  review  submitted  running"),
            "{out}"
        );
        assert!(row.contains("  6  "), "{out}");
        assert!(row.ends_with("3 succeeded, 1 running, 2 pending"), "{out}");
    }

    #[test]
    fn agent_rows_name_the_instance() {
        let out = agents(&[json!({"pid": 7, "id": {"agent": "coder", "replica": 1},
            "state": "suspended", "current_task": null, "steps": 4, "llm_calls": 4,
            "tool_calls": 1, "tokens_in": 100, "tokens_out": 20, "tasks_done": 2, "busy": 0.25})]);
        let row = out.lines().nth(1).unwrap();
        assert!(row.starts_with("coder#1     7  suspended  -"), "{out}");
        assert!(row.contains("100/20") && row.ends_with("0.25s"), "{out}");
    }
}
