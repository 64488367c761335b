//! Events of durable execution (interim: replaced by the full set with metrics).

use std::time::Duration;

/// Which store writer committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreWriter {
    /// The context pager's worker.
    Pager,
    /// The scheduler's state writer.
    Scheduler,
    /// The bus's inbox writer.
    Bus,
}

/// A batch was committed.
#[derive(Debug, Clone, Copy)]
pub struct StoreCommitted {
    /// Who.
    pub writer: StoreWriter,
    /// Rows.
    pub rows: usize,
    /// How long.
    pub duration: Duration,
}

impl StoreCommitted {
    /// Logs it.
    pub fn emit(&self) {
        tracing::trace!(writer = ?self.writer, rows = self.rows, "store batch committed");
    }
}

/// A batch failed to commit.
#[derive(Debug, Clone, Copy)]
pub struct StoreCommitFailed {
    /// Who.
    pub writer: StoreWriter,
}

impl StoreCommitFailed {
    /// Logs it.
    pub fn emit(&self) {
        tracing::error!(writer = ?self.writer, "store batch failed");
    }
}
