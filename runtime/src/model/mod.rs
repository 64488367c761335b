//! Domain types: task keys and states, agent identity and control blocks, the workflow DAG
//! helpers and input templates.

pub mod agent;
pub mod dag;
pub mod task;
pub mod template;

pub use agent::{AgentState, ControlBlock, InstanceId};
pub use task::{TaskKey, TaskState};
