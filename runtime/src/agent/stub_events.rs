//! Placeholder payloads until the typed events module lands.

use std::time::Duration;

use crate::llm::{LlmError, Usage};
use crate::model::AgentState;
use crate::tools::{ToolError, ToolOutput};

/// x
#[derive(Debug)]
pub struct AgentStateChanged {
    /// x
    pub from: Option<AgentState>,
    /// x
    pub to: Option<AgentState>,
}
/// x
#[derive(Debug)]
pub struct LlmCallFinished<'a> {
    /// x
    pub agent: &'a str,
    /// x
    pub instance: &'a str,
    /// x
    pub task: &'a str,
    /// x
    pub attempt: u32,
    /// x
    pub step: u32,
    /// x
    pub backend: &'a str,
    /// x
    pub simulated: bool,
    /// x
    pub replica: usize,
    /// x
    pub usage: Usage,
    /// x
    pub finish_reason: &'a str,
    /// x
    pub tool_calls: usize,
    /// x
    pub duration: Duration,
}
/// x
#[derive(Debug)]
pub struct LlmCallFailed<'a> {
    /// x
    pub agent: &'a str,
    /// x
    pub instance: &'a str,
    /// x
    pub task: &'a str,
    /// x
    pub attempt: u32,
    /// x
    pub step: u32,
    /// x
    pub backend: &'a str,
    /// x
    pub error: &'a LlmError,
    /// x
    pub duration: Duration,
}
/// x
#[derive(Debug)]
pub struct LlmCallAbandoned<'a> {
    /// x
    pub backend: &'a str,
}
/// x
#[derive(Debug)]
pub struct ToolCalled<'a> {
    /// x
    pub agent: &'a str,
    /// x
    pub instance: &'a str,
    /// x
    pub task: &'a str,
    /// x
    pub attempt: u32,
    /// x
    pub step: u32,
    /// x
    pub tool: &'a str,
    /// x
    pub arguments: &'a serde_json::Value,
    /// x
    pub result: Result<&'a ToolOutput, &'a ToolError>,
    /// x
    pub duration: Duration,
}
/// x
#[derive(Debug)]
pub struct AgentStepFinished<'a> {
    /// x
    pub agent: &'a str,
    /// x
    pub duration: Duration,
}
/// x
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagerOutcome {
    /// x
    Ok,
    /// x
    Budget,
    /// x
    Store,
    /// x
    Unavailable,
    /// x
    Other,
}
/// x
#[derive(Debug)]
pub struct PagerRequestFinished<'a> {
    /// x
    pub agent: &'a str,
    /// x
    pub outcome: PagerOutcome,
}
