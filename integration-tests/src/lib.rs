//! AgentOS end-to-end tests. The crate itself is empty; everything is one test binary,
//! `tests/it/`, run against the real binary, a real Prometheus and real child processes.
//!
//! # Layout
//! - `tests/it/main.rs`: the test binary; one module per area.
//! - `helpers.rs`: boot a system on port 0, wait for conditions, HTTP requests.
//! - `provision.rs`: finds or fetches the `prometheus` binary the scrape test needs.
//! - `system.rs`, `config_errors.rs`, `tools.rs`, `openai.rs`, `pager.rs`, `simserver.rs`,
//!   `prometheus.rs`, `dashboards.rs`: the demo end to end, supervision, config errors, the
//!   tool sandbox, the `openai` backend against a local server, the context pager, the
//!   sim-server, Prometheus scraping, the Grafana boards.
