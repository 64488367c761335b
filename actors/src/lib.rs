//! AgentOS actors: the actix side of the runtime. Every policy and the step loop itself live
//! in `agentos-runtime`; the actors here own one core each and forward messages to it.
//!
//! # Layout
//! - [`protocol`]: every message that crosses actors, and the [`Port`](protocol::Port)s they
//!   reach each other through. No actor module imports another actor's module.
//! - [`child`]: what every supervised actor implements: its child spec, its exit notice, how
//!   it is stopped.
//! - [`supervisor`]: our own supervisor (restart types, strategies, intensity, backoff,
//!   escalation, the stop barrier), since actix does not restart actors whose handlers panic.
//! - [`scheduler`]: the `Scheduler` actor over the runtime's scheduler core.
//! - [`agent`]: the `Agent` actor (lease, unwind guard, report) around the runtime's step
//!   core, and the step core's ports over the pager, the KV pool and the bus.
//! - [`kvpool`]: the `KvCachePool` actor (KV-cache model and cache-aware routing across
//!   backend replicas).
//! - [`bus`]: the `MessageBus` actor (direct messages, topics; undelivered messages come back).
//! - [`pager`]: the `ContextPager` actor: page tables, prompts within budget, swap to the store.
//! - [`monitor`]: the `ResourceMonitor` actor (process memory and CPU gauges).
//! - [`board`]: what the running system publishes for many readers (control blocks, pager
//!   statistics, end signals), each entry written only by its owner.
//! - [`system`]: booting the actor tree from a config, draining and stopping it.
//! - [`http`]: the HTTP control plane: `/metrics`, `/healthz`, and the `/api/*` JSON API
//!   (workflows, agent control, the event stream, the OpenAPI document).
//! - [`simserver`]: `agentos sim-server`, the simulator as an OpenAI-compatible endpoint.
//! - [`telemetry`]: the Prometheus recorder and logging.
//! - [`summary`]: the run summary table.
//! - [`cli`]: the `agentos` command line (the binary only calls [`cli::main`]).
//! - [`client`]: the client subcommands (`submit`, `ps`, `tasks`, `events`, ...) that speak a
//!   running `serve`'s control-plane API, and the progress bar of `run`.
//! - [`sandbox_exec`]: the hidden `agentos sandbox-exec` launcher that confines a command, then
//!   `exec`s it.

pub mod agent;
pub mod board;
pub mod bus;
pub mod child;
pub mod cli;
pub mod client;
pub mod http;
pub mod kvpool;
pub mod monitor;
pub mod pager;
pub mod protocol;
pub mod quota;
pub mod sandbox_exec;
pub mod scheduler;
pub mod simserver;
pub mod store_worker;
pub mod summary;
pub mod supervisor;
pub mod system;
pub mod telemetry;
