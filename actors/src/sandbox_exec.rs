//! `agentos sandbox-exec` (hidden): the launcher `run_command` starts instead of the command.
//!
//! `--policy JSON -- ARGV...` confines this process as the policy says and `exec`s `ARGV`;
//! `--probe` prints what the kernel offers, as JSON. The work is in
//! `agentos_runtime::sandbox::confine`; this process must stay single-threaded until the
//! `exec` (no runtime, no thread is started on this path).

use std::process::ExitCode;

use agentos_runtime::sandbox::confine::{self, MESSAGE_PREFIX, SETUP_FAILED};
use agentos_runtime::sandbox::LaunchPolicy;

/// Runs the launcher. Returns only on failure (or after `--probe`).
pub fn main(probe: bool, policy: Option<String>, argv: Vec<String>) -> ExitCode {
    if probe {
        return match serde_json::to_string(&confine::probe()) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("cannot encode the probe report: {e}")),
        };
    }
    let Some(policy) = policy else {
        return fail("--policy is required (this subcommand is started by run_command)");
    };
    let policy: LaunchPolicy = match serde_json::from_str(&policy) {
        Ok(p) => p,
        Err(e) => return fail(&format!("invalid --policy: {e}")),
    };
    let code = confine::exec(&policy, &argv);
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn fail(message: &str) -> ExitCode {
    eprintln!("{MESSAGE_PREFIX}{message}");
    ExitCode::from(u8::try_from(SETUP_FAILED).unwrap_or(u8::MAX))
}
