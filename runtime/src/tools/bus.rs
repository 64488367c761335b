//! Bus tools over a BusPort.
use futures::future::BoxFuture;

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// The `send_message` tool.
#[derive(Debug, Clone, Copy)]
pub struct SendMessage;

impl Tool for SendMessage {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "send_message".into(),
            description: "send_message".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("send_message: not built yet".into())) })
    }
}

/// The `publish` tool.
#[derive(Debug, Clone, Copy)]
pub struct Publish;

impl Tool for Publish {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "publish".into(),
            description: "publish".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("publish: not built yet".into())) })
    }
}

/// The `read_messages` tool.
#[derive(Debug, Clone, Copy)]
pub struct ReadMessages;

impl Tool for ReadMessages {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_messages".into(),
            description: "read_messages".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("read_messages: not built yet".into())) })
    }
}
