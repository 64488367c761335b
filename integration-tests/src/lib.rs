//! AgentOS end-to-end tests. The crate's library is empty; everything is one test binary,
//! `tests/it/`, run against the real binary, a real Prometheus and real child processes.
//!
//! # Layout
//! - `src/bin/agentos-it.rs`: the `agentos` binary as a target of this crate, so the tests
//!   can start it (cargo builds binaries only for the package under test).
//! - `tests/it/main.rs`: the test binary; one module per area.
//! - `helpers.rs`: boot a system on port 0, wait for conditions, HTTP requests.
//! - `provision.rs`: finds or fetches the `prometheus` binary the scrape test needs.
//! - `system.rs`, `config_errors.rs`, `tools.rs`, `openai.rs`, `pager.rs`, `simserver.rs`,
//!   `prometheus.rs`, `dashboards.rs`: the demo end to end, supervision, config errors, the
//!   tool sandbox, the `openai` backend against a local server, the context pager, the
//!   sim-server, Prometheus scraping, the Grafana boards.
//! - `control.rs`: `agentos serve` as a service: its control-plane API and the CLI client.
