//! AgentOS runtime core: everything that is not an actor.
//!
//! - [`config`]: the RON schema, two-phase loading and validation.
//! - [`model`]: domain types: task keys and states, the workflow DAG, agent control blocks.
//! - [`policy`]: plain-struct policies: the ready queue, retry backoff, supervision intensity.
//! - [`sched`]: the scheduler core (DAG progress, leases, retries, fallbacks), driven by the
//!   `Scheduler` actor.
//! - [`llm`]: LLM backends behind one trait: `openai` and the `sim` simulator.
//! - [`context`]: the context pager core: page tables, eviction policies, compression, shared
//!   workflow pages, budgets counted with the backend's tokenizer.
//! - [`store`]: the embedded SQLite store (pages today; checkpoints and the audit log later).
//! - [`tools`]: built-in tools and the sandbox they run in.
//! - [`metrics`]: every metric name, its help text and histogram buckets, defined once.
//! - [`kvcache`]: the KV-cache model: block manager (hash chains, refcounts, copy-on-write,
//!   LRU), cache-aware routing policies and the pool core the `KvCachePool` actor owns.
//! - [`tokenize`]: BPE token counting and encoding (per-backend encodings).
//! - [`trace`]: the JSON-lines trace of state transitions, LLM calls and tool calls.
//!
//! No actix here: every piece is unit-testable on its own.

pub mod agent;
pub mod config;
pub mod context;
pub mod kvcache;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod sched;
pub mod store;
pub mod tokenize;
pub mod tools;
pub mod trace;
