//! Durable execution: what survives a crash, and how a resumed run continues.
//!
//! - [`Durability`]: when the step journal and the scheduler's state reach the store
//!   (`runtime.durability`).
//! - [`SideEffect`]: the side-effect class of a tool, which decides what a resumed attempt does
//!   with a call that was started but whose result was not journaled.
//! - [`CallId`]: the identity of one tool call, `(context, step, call)`, that makes
//!   `spawn_task` and `read_messages` idempotent across a restart.
//!
//! The guarantee table and what each mode loses in a crash are in `docs/durability.md`.

use serde::{Deserialize, Serialize};

/// When records reach the store (`runtime.durability`), named as LangGraph names its modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A step's records (the LLM reply, each tool result) are committed before the next
    /// step starts; a crash loses at most the step in flight. The default.
    #[default]
    Sync,
    /// Records are committed in the background, in group commits; a crash may lose the last
    /// steps of an attempt, which the resumed attempt then runs again. At-most-once calls
    /// still commit their start marker before they run.
    Async,
    /// The scheduler's state is written only when the run ends (or shuts down cleanly); a
    /// crashed run cannot be resumed and is started again.
    Exit,
}

impl Durability {
    /// The config spelling.
    pub fn label(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
            Durability::Exit => "exit",
        }
    }

    /// Parses the config spelling.
    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "sync" => Some(Durability::Sync),
            "async" => Some(Durability::Async),
            "exit" => Some(Durability::Exit),
            _ => None,
        }
    }

    /// Whether the step core waits for each record's commit before it goes on.
    pub fn waits(self) -> bool {
        self == Durability::Sync
    }
}

/// A tool's side-effect class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideEffect {
    /// No effect outside the call (calculator, read_file, list_dir, grep): re-run freely.
    Pure,
    /// Running it again gives the same result (write_file with the same path and content;
    /// spawn_task and read_messages, keyed by the call's identity): re-run after a crash.
    Idempotent,
    /// Must not run twice (run_command, send_message, publish): a start marker is committed
    /// before it runs, and a call started but not recorded is never re-run. The model is
    /// told its outcome is unknown instead.
    AtMostOnce,
}

impl SideEffect {
    /// Every class, in config order.
    pub const ALL: [SideEffect; 3] = [
        SideEffect::Pure,
        SideEffect::Idempotent,
        SideEffect::AtMostOnce,
    ];

    /// The config and metric spelling.
    pub fn label(self) -> &'static str {
        match self {
            SideEffect::Pure => "pure",
            SideEffect::Idempotent => "idempotent",
            SideEffect::AtMostOnce => "at_most_once",
        }
    }

    /// Parses the config spelling.
    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.label() == s)
    }
}

/// The identity of one tool call: the attempt's context (`workflow/task#attempt`), the step
/// and the call's position in the reply. Stable across a restart: a resumed attempt that runs
/// a call again presents the same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallId {
    /// The attempt's context id.
    pub context: String,
    /// The step (0-based).
    pub step: u32,
    /// The call's index within the step's reply.
    pub call: u32,
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s{}/c{}", self.context, self.step, self.call)
    }
}

/// The tool result a resumed attempt gives the model for an at-most-once call that was
/// started before a restart and whose result was never recorded.
pub fn interrupted_result(tool: &str) -> String {
    format!(
        "error: this {tool} call was interrupted by a restart of the runtime before its result \
         was recorded; it may or may not have taken effect, and it was not run again. Check its \
         effect before you repeat it."
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn config(runtime: &str, agent: &str) -> Result<Config, String> {
        let text = format!(
            "(version: 1, runtime: ({runtime}), backends: [(name: \"b\", kind: Sim(()))],\n\
             agents: [(name: \"a\", role: \"r\", backend: \"b\", {agent})])"
        );
        Config::parse(&text, "test.ron", Path::new("/")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_mode_and_the_overrides_are_read_and_sync_is_the_default() {
        assert_eq!(config("", "").unwrap().runtime.durability, Durability::Sync);
        let cfg = config(
            "durability: async",
            r#"tools: ["write_file"], workspace: (root: "/tmp"),
               side_effects: {"write_file": at_most_once}"#,
        )
        .unwrap();
        assert_eq!(cfg.runtime.durability, Durability::Async);
        assert_eq!(
            cfg.agents[0].side_effects.get("write_file"),
            Some(&SideEffect::AtMostOnce)
        );
    }

    #[test]
    fn an_unknown_mode_and_an_override_of_an_ungranted_tool_name_their_line() {
        let err = config("durability: fast", "").unwrap_err();
        assert!(
            err.contains("test.ron:1:") && err.contains("`fast`"),
            "{err}"
        );
        let err = config("", r#"side_effects: {"run_command": idempotent}"#).unwrap_err();
        assert!(
            err.contains("test.ron:2:")
                && err.contains("agent \"a\"")
                && err.contains("not granted"),
            "{err}"
        );
    }

    #[test]
    fn labels_round_trip() {
        for m in [Durability::Sync, Durability::Async, Durability::Exit] {
            assert_eq!(Durability::from_label(m.label()), Some(m));
        }
        for c in SideEffect::ALL {
            assert_eq!(SideEffect::from_label(c.label()), Some(c));
        }
        let id = CallId {
            context: "w/t#2".into(),
            step: 3,
            call: 1,
        };
        assert_eq!(id.to_string(), "w/t#2/s3/c1");
    }
}
