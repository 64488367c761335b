//! The sandbox `run_command` runs its children in.
//!
//! The workspace denies `unsafe_code`, so nothing runs between `fork` and `exec` in the
//! runtime. Instead the runtime starts a small launcher, the hidden `agentos sandbox-exec
//! --policy JSON -- ARGV` subcommand of the `agentos` binary ([`launcher`] finds it). That
//! fresh, single-threaded process confines itself ([`confine`]) and then `exec`s the command,
//! which inherits every restriction:
//!
//! | what | how | kernel feature |
//! | --- | --- | --- |
//! | filesystem | Landlock: read, write and execute the workspace and a private temp directory (`TMPDIR`); read and execute the system paths a toolchain needs and the agent's `read_paths`; nothing else | Landlock (ABI 1+; 6+ also scopes signals and abstract Unix sockets) |
//! | network | a new, empty network namespace (only a loopback interface that is down) unless the agent has `network: true` | unprivileged user namespaces |
//! | processes | as a normal user: `RLIMIT_NPROC` inside the new user namespace, where the kernel counts only the command's processes; as root, where the kernel never enforces `RLIMIT_NPROC`: a pids cgroup per command | user namespaces; a writable pids cgroup (v1 or v2) as root |
//! | limits | `setrlimit`: address space, CPU seconds (per process), file size, open files; no core dumps; `no_new_privs` | none |
//!
//! The mode ([`SandboxMode`], `runtime.sandbox`) decides what happens when a feature is
//! missing: `required` refuses to start, `best_effort` runs with what the kernel offers and
//! reports the rest ([`SandboxReport`]: the run summary, a metric, `/healthz`), `off` runs
//! commands unconfined and prints a warning.
//!
//! Modules:
//! - [`launcher`]: where the launcher binary is (`AGENTOS_SANDBOX_LAUNCHER`, a programmatic
//!   override, or the running `agentos` binary).
//! - [`status`]: what this machine offers ([`SandboxStatus`], probed once per process) and
//!   what is missing.
//! - [`policy`]: the system read paths, and [`LaunchPolicy`], what the launcher applies.
//! - [`confine`]: the launcher side: apply a policy to the current process, then `exec`.
//! - [`cgroup`]: per-command pids cgroups (the process limit as root).
//! - [`denial`]: turning a confined command's failure into a message the model can act on.
//! - [`runner`]: [`Sandbox`], one agent's sandbox as `run_command` uses it.

pub mod cgroup;
pub mod confine;
pub mod denial;
pub mod launcher;
pub mod policy;
pub mod runner;
pub mod status;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use denial::{Denial, DenialKind, Ending};
pub use launcher::{launcher, set_launcher, LAUNCHER_ENV, PRETEND_MISSING_ENV};
pub use policy::LaunchPolicy;
pub use runner::{record_run, Launch, Sandbox, SandboxError};
pub use status::{
    check, report, status, Feature, Missing, SandboxRefused, SandboxReport, SandboxStatus,
};

/// `runtime.sandbox`: what to do when the kernel lacks a sandbox feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Every feature must be there; otherwise `run` and `serve` refuse to start (exit code 2)
    /// when an agent is granted `run_command`. The default.
    #[default]
    Required,
    /// Run with what the kernel offers; the summary, `/healthz` and a metric say what is
    /// missing.
    BestEffort,
    /// No sandbox: commands run as plain child processes (allowlist, timeout, output cap and
    /// cleared environment only). Must be written explicitly; the summary warns.
    Off,
}

impl SandboxMode {
    /// The config spelling: `required`, `best_effort` or `off`.
    pub fn label(self) -> &'static str {
        match self {
            SandboxMode::Required => "required",
            SandboxMode::BestEffort => "best_effort",
            SandboxMode::Off => "off",
        }
    }
}

/// Resource limits of one command. The kernel counts CPU seconds, address space and file size
/// per process; processes (and threads) are counted over the whole command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxLimits {
    /// Processes and threads the command may have at once, itself included.
    pub max_processes: u64,
    /// Address space of each process (`RLIMIT_AS`), bytes.
    pub max_memory_bytes: u64,
    /// CPU time of each process (`RLIMIT_CPU`), seconds: `SIGXCPU` then, a second later,
    /// `SIGKILL`.
    pub max_cpu_secs: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`), bytes.
    pub max_file_bytes: u64,
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            max_processes: 64,
            max_memory_bytes: 4 << 30,
            max_cpu_secs: 300,
            max_file_bytes: 1 << 30,
            max_open_files: 1024,
        }
    }
}

/// `agents[].sandbox`: one agent's sandbox settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentSandbox {
    /// Lift the network ban: the command shares the runtime's network.
    pub network: bool,
    /// Extra paths the command may read and execute (absolute, existing), on top of the
    /// system paths of [`policy::SYSTEM_READ_PATHS`] and [`policy::ETC_READ_PATHS`].
    pub read_paths: Vec<PathBuf>,
    /// Resource limits.
    pub limits: SandboxLimits,
}
