//! AgentOS runtime core: everything that is not an actor.
//!
//! # Layout
//!
//! - [`config`]: the RON schema, two-phase loading and validation.
//! - [`model`]: domain types: task keys and states, the workflow DAG, agent control blocks.
//! - [`policy`]: plain-struct policies: the ready queue, retry backoff, supervision intensity.
//! - [`agent`]: the step core: one attempt's loop (prompt, route, call, tools, journal) as a
//!   plain async function over small traits, which the `Agent` actor drives.
//! - [`sched`]: the scheduler core (DAG progress, leases, retries, fallbacks), driven by the
//!   `Scheduler` actor.
//! - [`llm`]: LLM backends behind one trait: `openai` and the `sim` simulator.
//! - [`context`]: the context pager core: page tables, eviction policies, compression, shared
//!   workflow pages, budgets counted with the backend's tokenizer.
//! - [`durable`]: durability modes, side-effect classes and call identities (resume rules).
//! - [`store`]: the embedded SQLite store: pages (the step journal), the scheduler's state,
//!   bus inboxes and the audit log.
//! - [`tools`]: built-in tools and the sandbox they run in.
//! - [`sandbox`]: the command sandbox: Landlock, namespaces, resource limits, pids cgroups,
//!   applied by the `agentos sandbox-exec` launcher before it `exec`s a command.
//! - [`events`]: typed telemetry events; each `emit()` updates the metrics, writes the trace
//!   line and logs. Every metric name, help text and histogram bucket is defined once in
//!   [`events::names`], re-exported as [`metrics`] for existing callers.
//! - [`kvcache`]: the KV-cache model: block manager (hash chains, refcounts, copy-on-write,
//!   LRU), cache-aware routing policies and the pool core the `KvCachePool` actor owns.
//! - [`tokenize`]: BPE token counting and encoding (per-backend encodings).
//! - [`trace`]: the JSON-lines trace writer that events write to (kinds and fields in
//!   `docs/trace-events.md`).
//!
//! No actix here: every piece is unit-testable on its own.

pub mod agent;
pub mod config;
pub mod context;
pub mod durable;
// The only module allowed to call the `metrics` macros (see `clippy.toml`).
#[allow(clippy::disallowed_macros)]
pub mod events;
pub mod kvcache;
pub mod llm;
pub mod model;
pub mod policy;
pub mod sandbox;
pub mod sched;
pub mod store;
pub mod tokenize;
pub mod tools;
pub mod trace;

pub use events::names as metrics;
