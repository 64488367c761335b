//! The swap device: where pages live outside the resident set.
//!
//! [`StoreSwap`] is the real one, a [`Store`] scoped to one run id; [`MemSwap`] keeps pages
//! in a map for property tests and benchmarks of the pure paging logic.

use std::collections::HashMap;
use std::time::Instant;

use crate::events::{StoreOp, StoreOpFinished};
use crate::store::{PageRow, SharedRow, Store, StoreError};

/// Persistent page storage for one run.
pub trait SwapDevice {
    /// Writes pages (one transaction: all or nothing).
    fn write(&mut self, pages: &[PageRow]) -> Result<(), StoreError>;
    /// Reads pages `ids` of `context`; absent ids are missing from the result.
    fn read(&mut self, context: &str, ids: &[u64]) -> Result<Vec<PageRow>, StoreError>;
    /// Every page of `context`, in page order.
    fn load(&mut self, context: &str) -> Result<Vec<PageRow>, StoreError>;
    /// Writes a shared page.
    fn write_shared(&mut self, row: &SharedRow) -> Result<(), StoreError>;
    /// Reads a shared page.
    fn read_shared(&mut self, key: &str) -> Result<Option<SharedRow>, StoreError>;
}

/// Pages in memory (tests and benchmarks).
#[derive(Debug, Default)]
pub struct MemSwap {
    pages: HashMap<(String, u64), PageRow>,
    shared: HashMap<String, SharedRow>,
    /// Reads served, for tests.
    pub reads: u64,
}

impl MemSwap {
    /// Whether page `id` of `context` is stored.
    pub fn contains(&self, context: &str, id: u64) -> bool {
        self.pages.contains_key(&(context.to_owned(), id))
    }
}

impl SwapDevice for MemSwap {
    fn write(&mut self, pages: &[PageRow]) -> Result<(), StoreError> {
        for p in pages {
            self.pages.insert((p.context.clone(), p.page_id), p.clone());
        }
        Ok(())
    }
    fn read(&mut self, context: &str, ids: &[u64]) -> Result<Vec<PageRow>, StoreError> {
        self.reads += 1;
        Ok(ids
            .iter()
            .filter_map(|id| self.pages.get(&(context.to_owned(), *id)).cloned())
            .collect())
    }
    fn load(&mut self, context: &str) -> Result<Vec<PageRow>, StoreError> {
        let mut out: Vec<PageRow> = self
            .pages
            .values()
            .filter(|p| p.context == context)
            .cloned()
            .collect();
        out.sort_by_key(|p| p.page_id);
        Ok(out)
    }
    fn write_shared(&mut self, row: &SharedRow) -> Result<(), StoreError> {
        self.shared.insert(row.key.clone(), row.clone());
        Ok(())
    }
    fn read_shared(&mut self, key: &str) -> Result<Option<SharedRow>, StoreError> {
        Ok(self.shared.get(key).cloned())
    }
}

/// The store, scoped to one run; records store latencies as metrics.
#[derive(Debug)]
pub struct StoreSwap {
    store: Store,
    run_id: String,
}

impl StoreSwap {
    /// Scopes `store` to `run_id` (and records the run).
    pub fn new(store: Store, run_id: impl Into<String>) -> Result<Self, StoreError> {
        let run_id = run_id.into();
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        store.begin_run(&run_id, started_ms)?;
        Ok(Self { store, run_id })
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The underlying store, to open and commit write batches.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

fn timed<T>(op: StoreOp, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    StoreOpFinished {
        op,
        duration: t0.elapsed(),
    }
    .emit();
    out
}

impl SwapDevice for StoreSwap {
    fn write(&mut self, pages: &[PageRow]) -> Result<(), StoreError> {
        let run = self.run_id.clone();
        timed(StoreOp::Write, || self.store.put_pages(&run, pages))
    }
    fn read(&mut self, context: &str, ids: &[u64]) -> Result<Vec<PageRow>, StoreError> {
        timed(StoreOp::Read, || {
            self.store.get_pages(&self.run_id, context, ids)
        })
    }
    fn load(&mut self, context: &str) -> Result<Vec<PageRow>, StoreError> {
        timed(StoreOp::Read, || {
            self.store.load_context(&self.run_id, context)
        })
    }
    fn write_shared(&mut self, row: &SharedRow) -> Result<(), StoreError> {
        let run = self.run_id.clone();
        timed(StoreOp::Write, || self.store.put_shared(&run, row))
    }
    fn read_shared(&mut self, key: &str) -> Result<Option<SharedRow>, StoreError> {
        timed(StoreOp::Read, || self.store.get_shared(&self.run_id, key))
    }
}
