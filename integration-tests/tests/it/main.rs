//! End-to-end tests of AgentOS: one test binary, modules by area, shared helpers.

mod config_errors;
mod dashboards;
mod helpers;
mod openai;
mod pager;
mod prometheus;
mod provision;
mod sandbox;
mod simserver;
mod system;
mod tools;
