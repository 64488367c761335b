//! The swap device: where pages live outside the resident set.
//!
//! [`StoreSwap`] is the real one, a [`Store`] scoped to one run id; [`MemSwap`] keeps pages
//! in a map for property tests and benchmarks of the pure paging logic.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::events::{StoreOp, StoreOpFinished, StoreOpSeries};
use crate::store::{JournalRow, PageRow, SharedRow, Store, StoreError};

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
    /// Writes step journal rows (one transaction: all or nothing). A row written again (same
    /// context, step, call and kind) is replaced.
    fn write_journal(&mut self, rows: &[JournalRow]) -> Result<(), StoreError>;
    /// Every journal row of `context`, in step, call and kind order.
    fn load_journal(&mut self, context: &str) -> Result<Vec<JournalRow>, StoreError>;
    /// Writes a journaled record: its pages, then its journal rows, all or nothing where the
    /// device can (the store does it in one savepoint).
    fn write_record(
        &mut self,
        pages: &[PageRow],
        journal: &[JournalRow],
    ) -> Result<(), StoreError> {
        self.write(pages)?;
        self.write_journal(journal)
    }
}

/// Key of a journal row within a run: context, step, call, kind.
type JournalKey = (String, u32, u32, String);

/// Pages in memory (tests and benchmarks).
#[derive(Debug, Default)]
pub struct MemSwap {
    pages: HashMap<(String, u64), PageRow>,
    shared: HashMap<String, SharedRow>,
    journal: BTreeMap<JournalKey, JournalRow>,
    /// Reads served, for tests.
    pub reads: u64,
    /// While set, every write fails (tests of failed records).
    pub fail_writes: bool,
}

impl MemSwap {
    /// Whether page `id` of `context` is stored.
    pub fn contains(&self, context: &str, id: u64) -> bool {
        self.pages.contains_key(&(context.to_owned(), id))
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Corrupt {
                what: "memory swap".into(),
                detail: "writes are failing (test)".into(),
            });
        }
        Ok(())
    }
}

impl SwapDevice for MemSwap {
    fn write(&mut self, pages: &[PageRow]) -> Result<(), StoreError> {
        self.check_writable()?;
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
    fn write_journal(&mut self, rows: &[JournalRow]) -> Result<(), StoreError> {
        self.check_writable()?;
        for r in rows {
            let key = (r.context.clone(), r.step, r.call, r.kind.clone());
            self.journal.insert(key, r.clone());
        }
        Ok(())
    }
    fn load_journal(&mut self, context: &str) -> Result<Vec<JournalRow>, StoreError> {
        Ok(self
            .journal
            .values()
            .filter(|r| r.context == context)
            .cloned()
            .collect())
    }
}

/// The store, scoped to one run; records store latencies as metrics.
#[derive(Debug)]
pub struct StoreSwap {
    store: Store,
    run_id: String,
    /// Rows written since the last [`StoreSwap::take_rows_written`].
    rows_written: usize,
    /// The store-operation histograms, resolved once.
    series: StoreOpSeries,
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
        Ok(Self {
            store,
            run_id,
            rows_written: 0,
            series: StoreOpSeries::of(),
        })
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

    /// Rows (pages, shared pages, journal rows) written since the last call, reset: what the
    /// next commit makes durable.
    pub fn take_rows_written(&mut self) -> usize {
        std::mem::take(&mut self.rows_written)
    }
}

fn timed<T>(series: &StoreOpSeries, op: StoreOp, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let out = f();
    StoreOpFinished {
        op,
        duration: t0.elapsed(),
    }
    .emit_with(series);
    out
}

impl SwapDevice for StoreSwap {
    fn write(&mut self, pages: &[PageRow]) -> Result<(), StoreError> {
        timed(&self.series, StoreOp::Write, || {
            self.store.put_pages(&self.run_id, pages)
        })?;
        self.rows_written += pages.len();
        Ok(())
    }
    fn read(&mut self, context: &str, ids: &[u64]) -> Result<Vec<PageRow>, StoreError> {
        timed(&self.series, StoreOp::Read, || {
            self.store.get_pages(&self.run_id, context, ids)
        })
    }
    fn load(&mut self, context: &str) -> Result<Vec<PageRow>, StoreError> {
        timed(&self.series, StoreOp::Read, || {
            self.store.load_context(&self.run_id, context)
        })
    }
    fn write_shared(&mut self, row: &SharedRow) -> Result<(), StoreError> {
        timed(&self.series, StoreOp::Write, || {
            self.store.put_shared(&self.run_id, row)
        })?;
        self.rows_written += 1;
        Ok(())
    }
    fn read_shared(&mut self, key: &str) -> Result<Option<SharedRow>, StoreError> {
        timed(&self.series, StoreOp::Read, || {
            self.store.get_shared(&self.run_id, key)
        })
    }
    fn write_journal(&mut self, rows: &[JournalRow]) -> Result<(), StoreError> {
        timed(&self.series, StoreOp::Write, || {
            self.store.put_journal(&self.run_id, rows)
        })?;
        self.rows_written += rows.len();
        Ok(())
    }
    fn load_journal(&mut self, context: &str) -> Result<Vec<JournalRow>, StoreError> {
        timed(&self.series, StoreOp::Read, || {
            self.store.load_journal(&self.run_id, context)
        })
    }
    fn write_record(
        &mut self,
        pages: &[PageRow],
        journal: &[JournalRow],
    ) -> Result<(), StoreError> {
        timed(&self.series, StoreOp::Write, || {
            self.store.put_record(&self.run_id, pages, journal)
        })?;
        self.rows_written += pages.len() + journal.len();
        Ok(())
    }
}
