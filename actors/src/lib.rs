//! AgentOS actors: the actix side of the runtime.
//!
//! - [`supervisor`]: our own supervisor (restart types, strategies, intensity, backoff,
//!   escalation), since actix does not restart actors whose handlers panic.
//! - [`scheduler`]: the `Scheduler` actor over the runtime's scheduler core.
//! - [`agent`]: the `Agent` actor and its step loop.
//! - [`kvpool`]: the `KvCachePool` actor (KV-cache model and cache-aware routing across
//!   backend replicas) and the client agents lease replicas through.
//! - [`bus`]: the `MessageBus` actor (direct messages, topics) and the port the bus tools use.
//! - [`pager`]: the `ContextPager` actor: page tables, prompts within budget, swap to the store.
//! - [`monitor`]: the `ResourceMonitor` actor (process memory and CPU gauges).
//! - [`registry`]: where actors find each other's current addresses.
//! - [`system`]: booting the actor tree from a config, draining and stopping it.
//! - [`http`]: `/metrics`, `/healthz`, `/api/tasks`, `/api/agents`.
//! - [`simserver`]: `agentos sim-server`, the simulator as an OpenAI-compatible endpoint.
//! - [`telemetry`]: the Prometheus recorder and logging.
//! - [`summary`]: the run summary table.
//! - [`cli`]: the `agentos` command line (the binary only calls [`cli::main`]).

pub mod agent;
pub mod bus;
pub mod cli;
pub mod http;
pub mod kvpool;
pub mod monitor;
pub mod pager;
pub mod registry;
pub mod scheduler;
pub mod simserver;
pub mod summary;
pub mod supervisor;
pub mod system;
pub mod telemetry;
