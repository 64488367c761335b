//! `calculator`: arithmetic through a real expression parser.
use futures::future::BoxFuture;

use super::{Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

/// The `calculator` tool.
#[derive(Debug, Clone, Copy)]
pub struct Calculator;

impl Tool for Calculator {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: "Evaluate an arithmetic expression".into(),
            parameters: serde_json::json!({"type": "object"}),
        }
    }
    fn call(
        &self,
        _ctx: &ToolContext,
        _args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        Box::pin(async { Err(ToolError::Failed("calculator: not built yet".into())) })
    }
}
