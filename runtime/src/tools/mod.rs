//! Built-in tools and the sandbox they run in.
//!
//! - [`calculator`]: arithmetic through a real expression parser (never evaluates code).
//! - [`fs`]: `read_file`, `write_file`, `list_dir`, `grep`, confined to the agent's workspace root.
//! - [`command`]: `run_command`, an allowlisted argv run as a child process with a wall timeout,
//!   capped output and a cleared environment, confined by the agent's [`crate::sandbox`].
//! - [`bus`]: `send_message`, `publish`, `read_messages`, through a [`BusPort`] the actor system
//!   provides.
//! - [`spawn`]: `spawn_task`, which adds a task to the caller's workflow through a
//!   [`SpawnPort`] (the scheduler).
//!
//! A tool never panics the runtime: bad arguments, failures and timeouts come back as a
//! [`ToolError`], which the agent hands to the model as an error result.

pub mod bus;
pub mod calculator;
pub mod command;
pub mod fs;
pub mod spawn;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::durable::{CallId, SideEffect};
use crate::llm::ToolSpec;

/// Names of every built-in tool, in the order the docs list them.
pub const BUILTIN_TOOLS: &[&str] = &[
    "calculator",
    "read_file",
    "write_file",
    "list_dir",
    "grep",
    "run_command",
    "send_message",
    "publish",
    "read_messages",
    "spawn_task",
];

/// Settings of `run_command` that apply to every agent granted it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    /// Wall-clock limit; the process group is killed when it passes.
    pub timeout: Duration,
    /// Cap on captured stdout and on captured stderr, each, in bytes.
    pub max_output_bytes: usize,
    /// Environment variables passed through from the runtime's environment; all others are cleared.
    pub env_allow: Vec<String>,
}

impl Default for CommandSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_output_bytes: 64 * 1024,
            env_allow: vec!["PATH".into(), "LANG".into()],
        }
    }
}

/// Settings of the file tools.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSettings {
    /// Largest file `read_file` returns and `write_file` accepts, in bytes.
    pub max_file_bytes: usize,
    /// Most matches `grep` returns.
    pub max_matches: usize,
}

impl Default for FileSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024,
            max_matches: 200,
        }
    }
}

/// Everything a tool call may use, per agent. Cheap to clone.
#[derive(Clone)]
pub struct ToolContext {
    /// Agent name from the config.
    pub agent: String,
    /// Task key (`workflow/task`) of the current task.
    pub task: String,
    /// Canonical workspace root for file tools and the working directory of commands.
    pub workspace: Option<PathBuf>,
    /// Argv prefixes this agent may run; a command is allowed if it starts with one of them.
    pub command_allowlist: Arc<Vec<Vec<String>>>,
    /// `run_command` settings.
    pub command: Arc<CommandSettings>,
    /// File tool settings.
    pub files: Arc<FileSettings>,
    /// The message bus, when the actor system provides one.
    pub bus: Option<Arc<dyn BusPort>>,
    /// The scheduler, for `spawn_task`, when the actor system provides one.
    pub spawner: Option<Arc<dyn SpawnPort>>,
    /// The sandbox `run_command` applies; `None` runs commands unconfined
    /// (`runtime.sandbox: off`).
    pub sandbox: Option<Arc<crate::sandbox::Sandbox>>,
    /// The identity of the call being run (`context/step/call`), set by the step core for
    /// each call; `spawn_task` and `read_messages` pass it on so that a call run again after
    /// a restart is not done twice.
    pub call: Option<CallId>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext")
            .field("agent", &self.agent)
            .field("task", &self.task)
            .field("workspace", &self.workspace)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// A tool's successful result: text for the model plus a typed JSON value for traces and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    /// What the model reads.
    pub content: String,
    /// The typed result (shape documented per tool).
    pub data: serde_json::Value,
}

/// Why a tool call failed. The agent shows the message to the model; the runtime keeps going.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    /// The agent's config does not grant this tool.
    #[error("tool `{0}` is not granted to this agent")]
    NotGranted(String),
    /// No tool by that name exists.
    #[error("unknown tool `{0}`")]
    Unknown(String),
    /// Arguments missing, of the wrong type, or out of range.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// A path was refused by the workspace sandbox.
    #[error("path refused: {0}")]
    PathRefused(String),
    /// A command was refused by the allowlist.
    #[error("command refused: {0}")]
    CommandRefused(String),
    /// The tool ran past its time limit and was stopped.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An I/O or execution failure.
    #[error("{0}")]
    Failed(String),
    /// The sandbox stopped the command: what it denied, then the command's output.
    #[error("{0}")]
    SandboxDenied(String),
}

impl ToolError {
    /// Short, bounded label for metrics (`outcome` label); see
    /// [`ToolOutcome`](crate::events::ToolOutcome).
    pub fn outcome_label(&self) -> &'static str {
        crate::events::ToolOutcome::from(self).label()
    }
}

/// A tool. Implementations are stateless; everything per-agent comes in the [`ToolContext`].
pub trait Tool: Send + Sync {
    /// Name, description and argument schema.
    fn spec(&self) -> ToolSpec;
    /// What a call does outside itself, which decides what a resumed attempt does with a
    /// call that started but whose result was not recorded. A tool that does not say is
    /// treated as at-most-once.
    fn class(&self) -> SideEffect {
        SideEffect::AtMostOnce
    }
    /// Runs one call. The future is `'static`; dropping it cancels the call (child processes
    /// are killed on drop).
    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>>;
}

/// A message as it sits in an agent's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sending agent.
    pub from: String,
    /// `Some(topic)` for a publish, `None` for a direct message.
    pub topic: Option<String>,
    /// Message body.
    pub body: String,
    /// Sequence number assigned by the bus (per bus, increasing).
    pub seq: u64,
}

/// The message bus as tools see it. The actor system implements it over the `MessageBus` actor.
pub trait BusPort: Send + Sync {
    /// Sends `body` to agent `to`'s inbox.
    fn send(&self, from: &str, to: &str, body: String)
        -> BoxFuture<'static, Result<(), ToolError>>;
    /// Publishes `body` on `topic` to every subscriber; returns how many inboxes received it.
    fn publish(
        &self,
        from: &str,
        topic: &str,
        body: String,
    ) -> BoxFuture<'static, Result<usize, ToolError>>;
    /// Takes up to `max` messages from `agent`'s inbox, oldest first. `call` is the identity
    /// of the `read_messages` call (`context/s{step}/c{call}`): a call read again after a
    /// restart gets the same messages instead of new ones.
    fn read(
        &self,
        agent: &str,
        max: usize,
        call: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Envelope>, ToolError>>;
}

/// The scheduler as `spawn_task` sees it. The actor system implements it over the
/// `Scheduler` actor.
pub trait SpawnPort: Send + Sync {
    /// Adds a task to the workflow of the running task `parent` (`workflow/task`); answers the
    /// new task's key (`workflow/id`), or the refusal the model reads.
    fn spawn(
        &self,
        parent: &str,
        req: crate::sched::SpawnRequest,
    ) -> BoxFuture<'static, Result<String, ToolError>>;
}

/// The built-in tools by name.
#[derive(Clone)]
pub struct ToolRegistry {
    tools: BTreeMap<&'static str, Arc<dyn Tool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// Every built-in tool.
    pub fn builtin() -> Self {
        let mut tools: BTreeMap<&'static str, Arc<dyn Tool>> = BTreeMap::new();
        tools.insert("calculator", Arc::new(calculator::Calculator));
        tools.insert("read_file", Arc::new(fs::ReadFile));
        tools.insert("write_file", Arc::new(fs::WriteFile));
        tools.insert("list_dir", Arc::new(fs::ListDir));
        tools.insert("grep", Arc::new(fs::Grep));
        tools.insert("run_command", Arc::new(command::RunCommand));
        tools.insert("send_message", Arc::new(bus::SendMessage));
        tools.insert("publish", Arc::new(bus::Publish));
        tools.insert("read_messages", Arc::new(bus::ReadMessages));
        tools.insert("spawn_task", Arc::new(spawn::SpawnTask));
        Self { tools }
    }

    /// The tool called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// The side-effect class of the tool called `name`, if it exists.
    pub fn class(&self, name: &str) -> Option<SideEffect> {
        self.get(name).map(|t| t.class())
    }

    /// Specs of the named tools, in the given order; unknown names are skipped.
    pub fn specs(&self, names: &[String]) -> Vec<ToolSpec> {
        names
            .iter()
            .filter_map(|n| self.get(n).map(|t| t.spec()))
            .collect()
    }
}

/// Reads a required string argument.
pub fn arg_str<'a>(args: &'a serde_json::Value, key: &str) -> Result<&'a str, ToolError> {
    args.get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| ToolError::InvalidArguments(format!("`{key}` (string) is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_tool_has_the_side_effect_class_the_docs_give() {
        let r = ToolRegistry::builtin();
        let class = |n| r.class(n).expect("a built-in tool");
        for n in ["calculator", "read_file", "list_dir", "grep"] {
            assert_eq!(class(n), SideEffect::Pure, "{n}");
        }
        for n in ["write_file", "spawn_task", "read_messages"] {
            assert_eq!(class(n), SideEffect::Idempotent, "{n}");
        }
        for n in ["run_command", "send_message", "publish"] {
            assert_eq!(class(n), SideEffect::AtMostOnce, "{n}");
        }
        assert_eq!(r.class("nope"), None);
        assert_eq!(BUILTIN_TOOLS.len(), 10, "a new tool needs its class here");
    }
}

/// Helpers shared by the tools' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A context with default settings, no allowlist and no bus.
    pub(crate) fn context(workspace: Option<PathBuf>) -> ToolContext {
        ToolContext {
            agent: "tester".into(),
            task: "wf/task".into(),
            workspace,
            command_allowlist: Arc::new(Vec::new()),
            command: Arc::new(CommandSettings::default()),
            files: Arc::new(FileSettings::default()),
            bus: None,
            spawner: None,
            sandbox: None,
            call: None,
        }
    }
}
