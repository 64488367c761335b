//! The deterministic LLM simulator.
use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{ChatRequest, ChatResponse, LlmBackend, LlmError};
use crate::config::{SimBehaviour, SimSettings};

/// The simulator backend.
#[derive(Debug)]
pub struct SimBackend {
    name: String,
    #[allow(dead_code)]
    settings: SimSettings,
    #[allow(dead_code)]
    behaviours: Arc<HashMap<String, SimBehaviour>>,
}

impl SimBackend {
    /// Builds a simulator with per-agent behaviours (by agent name).
    pub fn new(
        name: &str,
        settings: SimSettings,
        behaviours: HashMap<String, SimBehaviour>,
    ) -> Self {
        Self {
            name: name.into(),
            settings,
            behaviours: Arc::new(behaviours),
        }
    }
}

impl LlmBackend for SimBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "sim"
    }
    fn is_simulated(&self) -> bool {
        true
    }
    fn chat(&self, _request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        Box::pin(async { Err(LlmError::Transport("not built yet".into())) })
    }
}
