//! OpenAI-compatible chat-completions backend.
use futures::future::BoxFuture;

use super::{ChatRequest, ChatResponse, LlmBackend, LlmError};
use crate::config::OpenAiSettings;

/// An OpenAI-compatible backend.
#[derive(Debug)]
pub struct OpenAiBackend {
    name: String,
    #[allow(dead_code)]
    settings: OpenAiSettings,
}

impl OpenAiBackend {
    /// Builds the backend; the API key is read from the environment at call time.
    pub fn new(name: &str, settings: OpenAiSettings) -> Result<Self, LlmError> {
        Ok(Self {
            name: name.into(),
            settings,
        })
    }
}

impl LlmBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "openai"
    }
    fn is_simulated(&self) -> bool {
        false
    }
    fn chat(&self, _request: ChatRequest) -> BoxFuture<'static, Result<ChatResponse, LlmError>> {
        Box::pin(async { Err(LlmError::Transport("not built yet".into())) })
    }
}
