//! Live progress on stderr: tasks done of total, running, retries, failures. Shown by `run`
//! and `submit --wait` when stderr is a terminal; silent otherwise, so logs and pipes get
//! no control characters.

use std::cell::Cell;
use std::convert::Infallible;
use std::io::IsTerminal as _;
use std::time::Duration;

use agentos_runtime::model::TaskState;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::protocol::RunSnapshot;
use crate::system::RunningSystem;

/// How often the figures are refreshed.
pub const POLL: Duration = Duration::from_millis(200);

/// What the bar shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Tasks known.
    pub total: u64,
    /// Tasks in a terminal state.
    pub done: u64,
    /// Tasks running now.
    pub running: u64,
    /// Attempts beyond each task's first.
    pub retries: u64,
    /// Tasks failed.
    pub failed: u64,
    /// Tasks skipped because an upstream task failed.
    pub skipped: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
}

impl Figures {
    /// The figures of a running system's snapshot.
    pub fn of_snapshot(s: &RunSnapshot) -> Self {
        let mut f = Figures::default();
        for t in &s.tasks {
            f.add(
                t.state.label(),
                t.state.is_terminal(),
                u64::from(t.attempts),
            );
        }
        f
    }

    /// The figures of workflow views from the API (`tasks` when present, else `counts`).
    pub fn of_views<'a>(views: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut f = Figures::default();
        for v in views {
            let tasks = v.get("tasks").and_then(Value::as_array);
            if let Some(tasks) = tasks.filter(|t| !t.is_empty()) {
                for t in tasks {
                    let state = t.get("state").and_then(Value::as_str).unwrap_or("");
                    let attempts = t.get("attempts").and_then(Value::as_u64).unwrap_or(0);
                    f.add(state, is_terminal(state), attempts);
                }
            } else if let Some(counts) = v.get("counts").and_then(Value::as_object) {
                for (state, n) in counts {
                    for _ in 0..n.as_u64().unwrap_or(0) {
                        f.add(state, is_terminal(state), 0);
                    }
                }
            }
        }
        f
    }

    fn add(&mut self, state: &str, terminal: bool, attempts: u64) {
        self.total += 1;
        self.done += u64::from(terminal);
        self.retries += attempts.saturating_sub(1);
        match state {
            "running" => self.running += 1,
            "failed" => self.failed += 1,
            "skipped" => self.skipped += 1,
            "cancelled" => self.cancelled += 1,
            _ => {}
        }
    }

    /// The text beside the bar: `2 running, 1 retries, 0 failed` (skipped and cancelled
    /// only when there are some).
    pub fn message(&self) -> String {
        let mut parts = vec![
            format!("{} running", self.running),
            format!("{} retries", self.retries),
            format!("{} failed", self.failed),
        ];
        if self.skipped > 0 {
            parts.push(format!("{} skipped", self.skipped));
        }
        if self.cancelled > 0 {
            parts.push(format!("{} cancelled", self.cancelled));
        }
        parts.join(", ")
    }
}

fn is_terminal(state: &str) -> bool {
    TaskState::ALL
        .iter()
        .any(|s| s.label() == state && s.is_terminal())
}

/// A progress bar on stderr, or nothing when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Whether the bar has figures yet: it stays invisible until the first [`Progress::show`].
    drawn: Cell<bool>,
}

impl Progress {
    /// A bar on stderr if stderr is a terminal.
    pub fn on_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} tasks done, {msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Self {
            bar: Some(bar),
            drawn: Cell::new(false),
        }
    }

    /// No bar.
    pub fn hidden() -> Self {
        Self {
            bar: None,
            drawn: Cell::new(false),
        }
    }

    /// Whether a bar is shown.
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows `f`.
    pub fn show(&self, f: &Figures) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_length(f.total);
        bar.set_position(f.done);
        bar.set_message(f.message());
        if !self.drawn.replace(true) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    /// Removes the bar, so that what is printed next starts on a clean line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Refreshes `progress` from `sys`'s snapshot every [`POLL`]; never returns (run it beside
/// `sys.wait(..)` and drop it when the wait ends). Does nothing when no bar is shown.
pub async fn follow_run(sys: &RunningSystem, progress: &Progress) -> Infallible {
    if !progress.is_shown() {
        return std::future::pending().await;
    }
    loop {
        if let Ok(s) = sys.snapshot().await {
            progress.show(&Figures::of_snapshot(&s));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_count_done_running_retries_and_failures() {
        let views = [
            json!({"tasks": [
                {"state": "succeeded", "attempts": 3},
                {"state": "running", "attempts": 1},
                {"state": "failed", "attempts": 2},
                {"state": "skipped", "attempts": 0},
                {"state": "pending", "attempts": 0},
            ]}),
            json!({"tasks": [], "counts": {"cancelled": 2, "ready": 1}}),
        ];
        let f = Figures::of_views(&views);
        assert_eq!(
            f,
            Figures {
                total: 8,
                done: 5,
                running: 1,
                retries: 3,
                failed: 1,
                skipped: 1,
                cancelled: 2,
            }
        );
        assert_eq!(
            f.message(),
            "1 running, 3 retries, 1 failed, 1 skipped, 2 cancelled"
        );
    }

    #[test]
    fn a_hidden_bar_ignores_updates() {
        let p = Progress::hidden();
        assert!(!p.is_shown());
        p.show(&Figures::default());
        p.finish();
    }
}
