//! run_command: allowlisted child processes.
use futures::future::BoxFuture;

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// The `run_command` tool.
#[derive(Debug, Clone, Copy)]
pub struct RunCommand;

impl Tool for RunCommand {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "run_command".into(),
            description: "run_command".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("run_command: not built yet".into())) })
    }
}
