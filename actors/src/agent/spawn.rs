//! `spawn_task` as the tools see it: a [`SpawnPort`] over the scheduler's `spawn` port. The
//! scheduler's refusal (a limit, an unknown agent, a cycle) is the error the model reads.

use std::time::Duration;

use agentos_runtime::sched::SpawnRequest;
use agentos_runtime::tools::{SpawnPort, ToolError};
use futures::future::BoxFuture;

use crate::protocol::{Port, SpawnTask};

/// How long a spawn waits for the scheduler.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The spawn port handed to every agent's tools.
#[derive(Debug, Clone)]
pub struct SpawnLink {
    port: Port<SpawnTask>,
}

impl SpawnLink {
    /// A link over the scheduler's spawn port.
    pub fn new(port: Port<SpawnTask>) -> Self {
        Self { port }
    }
}

impl SpawnPort for SpawnLink {
    fn spawn(
        &self,
        parent: &str,
        request: SpawnRequest,
    ) -> BoxFuture<'static, Result<String, ToolError>> {
        let port = self.port.clone();
        let msg = SpawnTask {
            parent: parent.to_owned(),
            request,
        };
        Box::pin(async move {
            port.ask(msg, SPAWN_TIMEOUT)
                .await
                .map_err(|e| ToolError::Failed(format!("the scheduler did not answer: {e}")))?
                .map_err(|refused| ToolError::Failed(format!("spawn refused: {refused}")))
        })
    }
}
