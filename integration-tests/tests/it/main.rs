//! End-to-end tests of AgentOS: one test binary, modules by area, shared helpers.

mod config_errors;
mod helpers;
mod openai;
mod system;
mod tools;
