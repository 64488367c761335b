//! Booting the actor tree from a validated config, and shutting it down.
//!
//! ```text
//! RootSupervisor (one_for_one)
//! ├── MessageBus
//! ├── KvCachePool       (restarts with empty caches, like a restarted engine)
//! ├── ContextPager      (page tables; swap to the SQLite store)
//! ├── ResourceMonitor
//! ├── Scheduler         (its task table lives with its child spec)
//! └── AgentSupervisor (one_for_one)
//!     └── Agent × (replicas of every declared agent), spread over the worker arbiters
//! ```
//!
//! # Layout
//! - [`boot`]: [`boot()`], which must run inside an actix `System`: backends, the run folder,
//!   the store, the workspaces, one [`AgentEnv`](crate::agent::AgentEnv) per agent and the
//!   ports every actor is handed.
//! - [`tree`]: the supervisor tree assembled from each actor module's `child_spec()`.
//! - [`running`]: [`RunningSystem`]: wait, snapshot, KV figures, drain, stop.
//! - [`resume`]: which run a boot starts or continues, and the scheduler core it starts from.
//! - [`workspace`]: the run folder and workspace copies (with the config's exclude lists).

pub mod boot;
pub mod resume;
pub mod running;
pub mod tree;
pub mod workspace;

pub use boot::{boot, build_backends, build_backends_observed, BootOptions};
pub use resume::{ResumeMode, ResumeRefused};
pub use running::{ResumeInfo, RunEnd, RunningSystem};
