//! File tools confined to the workspace root.
use futures::future::BoxFuture;

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// The `read_file` tool.
#[derive(Debug, Clone, Copy)]
pub struct ReadFile;

impl Tool for ReadFile {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: "read_file".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("read_file: not built yet".into())) })
    }
}

/// The `write_file` tool.
#[derive(Debug, Clone, Copy)]
pub struct WriteFile;

impl Tool for WriteFile {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write_file".into(),
            description: "write_file".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("write_file: not built yet".into())) })
    }
}

/// The `list_dir` tool.
#[derive(Debug, Clone, Copy)]
pub struct ListDir;

impl Tool for ListDir {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_dir".into(),
            description: "list_dir".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("list_dir: not built yet".into())) })
    }
}

/// The `grep` tool.
#[derive(Debug, Clone, Copy)]
pub struct Grep;

impl Tool for Grep {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "grep".into(),
            description: "grep".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("grep: not built yet".into())) })
    }
}
