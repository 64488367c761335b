//! End-to-end tests of AgentOS: one test binary, modules by area, shared helpers.

mod audit;
mod config_errors;
mod control;
mod crash;
mod dashboards;
mod dynamic;
mod helpers;
mod lifecycle;
mod openai;
mod pager;
mod prometheus;
mod provision;
mod quotas;
mod sandbox;
mod simserver;
mod store_errors;
mod system;
mod tools;
