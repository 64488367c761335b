//! The launcher side: `agentos sandbox-exec` confines its own process, then `exec`s the
//! command, which inherits every restriction.
//!
//! Order matters:
//! 1. join the pids cgroup (while still plainly root, before any namespace);
//! 2. enter a new user namespace, and a new network namespace unless the network is allowed,
//!    mapping the caller's own uid and gid; the process keeps its identity but holds no
//!    capability outside the namespace;
//! 3. set the resource limits; `RLIMIT_NPROC` only inside the new user namespace, where the
//!    kernel counts the command's processes alone (set before it, the limit would also count
//!    every other process of the user);
//! 4. restrict the filesystem with Landlock (which also sets `no_new_privs`);
//! 5. `exec`.
//!
//! The process must still be single-threaded for step 2: the launcher starts no thread.
//! Failures print one line starting with [`MESSAGE_PREFIX`] on stderr and exit with
//! [`SETUP_FAILED`] (nothing could be applied as asked) or [`EXEC_FAILED`] (the program could
//! not be started), which the runtime turns into a tool error.

use std::os::unix::process::CommandExt;
use std::path::Path;

use landlock::{
    path_beneath_rules, Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use nix::sched::{unshare, CloneFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde::{Deserialize, Serialize};

use super::policy::{LaunchPolicy, DEVICES_READ, DEVICES_READ_WRITE};

/// Exit code of the launcher when the sandbox could not be set up.
pub const SETUP_FAILED: i32 = 125;
/// Exit code of the launcher when the program could not be executed.
pub const EXEC_FAILED: i32 = 127;
/// Start of every line the launcher itself writes to stderr.
pub const MESSAGE_PREFIX: &str = "agentos-sandbox: ";

/// The newest Landlock ABI whose rights this sandbox asks for. Older kernels get what they
/// support (the crate's best-effort compatibility); newer ABIs add nothing asked for here.
const ABI_USED: ABI = ABI::V6;

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Joining the pids cgroup failed.
    #[error("cannot join the pids cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// `unshare` or the id maps failed.
    #[error("cannot enter a new user/network namespace: {0}")]
    Namespace(String),
    /// A `setrlimit` failed.
    #[error("cannot set {what}: {source}")]
    Limit {
        /// The limit.
        what: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// Landlock failed or is not enforced.
    #[error("cannot restrict the filesystem with Landlock: {0}")]
    Landlock(String),
}

/// Applies `policy` to the current process. Call it from a single-threaded process, then
/// `exec`.
pub fn apply(policy: &LaunchPolicy) -> Result<(), ConfineError> {
    if let Some(cgroup) = &policy.cgroup {
        super::cgroup::join(cgroup).map_err(|source| ConfineError::Cgroup {
            path: cgroup.display().to_string(),
            source,
        })?;
    }
    if policy.namespaces {
        enter_namespaces(policy.network).map_err(ConfineError::Namespace)?;
    }
    set_limits(policy)?;
    if policy.landlock {
        restrict_filesystem(policy).map_err(ConfineError::Landlock)?;
    }
    Ok(())
}

/// Enters a new user namespace (and network namespace unless `network`), mapping the current
/// uid and gid onto themselves.
pub fn enter_namespaces(network: bool) -> Result<(), String> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let mut flags = CloneFlags::CLONE_NEWUSER;
    if !network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| format!("writing {file}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

fn set_limits(policy: &LaunchPolicy) -> Result<(), ConfineError> {
    let l = &policy.limits;
    let cpu_hard = l.max_cpu_secs.saturating_add(1);
    let mut limits = vec![
        (
            Resource::RLIMIT_AS,
            "the address-space limit",
            l.max_memory_bytes,
            l.max_memory_bytes,
        ),
        (
            Resource::RLIMIT_CPU,
            "the CPU limit",
            l.max_cpu_secs,
            cpu_hard,
        ),
        (
            Resource::RLIMIT_FSIZE,
            "the file-size limit",
            l.max_file_bytes,
            l.max_file_bytes,
        ),
        (
            Resource::RLIMIT_NOFILE,
            "the open-file limit",
            l.max_open_files,
            l.max_open_files,
        ),
        (Resource::RLIMIT_CORE, "the core-dump limit", 0, 0),
    ];
    if policy.namespaces {
        limits.push((
            Resource::RLIMIT_NPROC,
            "the process limit",
            l.max_processes,
            l.max_processes,
        ));
    }
    for (resource, what, soft, hard) in limits {
        // Never above the current hard limit: only root may raise it, and lower is the point.
        let (_, current_hard) =
            getrlimit(resource).map_err(|source| ConfineError::Limit { what, source })?;
        let hard = hard.min(current_hard);
        let soft = soft.min(hard);
        setrlimit(resource, soft, hard).map_err(|source| ConfineError::Limit { what, source })?;
    }
    Ok(())
}

fn restrict_filesystem(policy: &LaunchPolicy) -> Result<(), String> {
    let all = AccessFs::from_all(ABI_USED);
    let read = AccessFs::from_read(ABI_USED);
    let fail = |e: landlock::RulesetError| e.to_string();
    let own = |path: &Path| {
        PathFd::new(path)
            .map(|fd| PathBeneath::new(fd, all))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut ruleset = Ruleset::default()
        .handle_access(all)
        .map_err(fail)?
        .scope(Scope::from_all(ABI_USED))
        .map_err(fail)?;
    if !policy.network && !policy.namespaces {
        // No network namespace to shut the network out: at least refuse TCP (Landlock ABI 4+).
        ruleset = ruleset
            .handle_access(AccessNet::from_all(ABI_USED))
            .map_err(fail)?;
    }
    let status = ruleset
        .create()
        .map_err(fail)?
        .add_rule(own(&policy.workspace)?)
        .map_err(fail)?
        .add_rule(own(&policy.tmp_dir)?)
        .map_err(fail)?
        .add_rules(path_beneath_rules(&policy.read_paths, read))
        .map_err(fail)?
        .add_rules(path_beneath_rules(DEVICES_READ_WRITE, all))
        .map_err(fail)?
        .add_rules(path_beneath_rules(DEVICES_READ, read))
        .map_err(fail)?
        .restrict_self()
        .map_err(fail)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("this kernel does not enforce Landlock".into());
    }
    Ok(())
}

/// Applies `policy`, then replaces this process with `argv`. Returns only on failure, with
/// the exit code to use (the message is printed already).
pub fn exec(policy: &LaunchPolicy, argv: &[String]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("{MESSAGE_PREFIX}no command given");
        return SETUP_FAILED;
    };
    if let Err(e) = apply(policy) {
        eprintln!("{MESSAGE_PREFIX}{e}");
        return SETUP_FAILED;
    }
    // `exec` searches PATH like execvp: a candidate the sandbox may not execute (EACCES) is
    // skipped for the next one.
    let e = std::process::Command::new(program).args(args).exec();
    eprintln!("{MESSAGE_PREFIX}cannot start `{program}`: {e}");
    EXEC_FAILED
}

/// What the launcher finds when run with `--probe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Landlock ABI version the kernel enforces; 0 when none.
    pub landlock_abi: u32,
    /// Why Landlock is missing, when it is.
    pub landlock_error: Option<String>,
    /// A new user and network namespace could be entered.
    pub namespaces: bool,
    /// Why not, when not.
    pub namespaces_error: Option<String>,
}

/// Probes the kernel from inside this (throw-away, single-threaded) process: enters the
/// namespaces, then restricts itself with an empty Landlock ruleset.
pub fn probe() -> ProbeReport {
    let mut report = ProbeReport::default();
    match enter_namespaces(false) {
        Ok(()) => report.namespaces = true,
        Err(e) => report.namespaces_error = Some(e),
    }
    let restricted = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match restricted {
        Ok(status) if status.ruleset != RulesetStatus::NotEnforced => {
            report.landlock_abi = match status.landlock {
                landlock::LandlockStatus::Available {
                    effective_abi,
                    kernel_abi,
                } => kernel_abi
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(effective_abi as u32),
                _ => 1,
            };
        }
        Ok(status) => {
            report.landlock_error = Some(match status.landlock {
                landlock::LandlockStatus::NotEnabled => {
                    "Landlock is built into the kernel but not enabled (add `landlock` to the \
                     `lsm=` boot parameter)"
                        .into()
                }
                _ => "the kernel has no Landlock support (Linux 5.13 or later is needed)".into(),
            });
        }
        Err(e) => report.landlock_error = Some(e.to_string()),
    }
    report
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::sandbox::policy::system_read_paths;
    use crate::sandbox::SandboxLimits;

    /// Landlock confines the calling thread (and what it starts), so a test can restrict a
    /// thread of its own and look at what it may still open.
    #[test]
    fn landlock_confines_a_thread_to_the_policy() {
        let ws = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let policy = LaunchPolicy {
            workspace: ws.path().canonicalize().unwrap(),
            tmp_dir: tmp.path().canonicalize().unwrap(),
            read_paths: system_read_paths(),
            network: true,
            limits: SandboxLimits::default(),
            landlock: true,
            namespaces: false,
            cgroup: None,
        };
        let outside: PathBuf = outside.path().to_owned();
        let probe_abi = std::thread::spawn(probe).join().unwrap().landlock_abi;
        let got = std::thread::spawn(move || {
            let restricted = restrict_filesystem(&policy);
            let opens = [
                std::fs::write(policy.workspace.join("f"), "x").is_ok(),
                std::fs::write(policy.tmp_dir.join("f"), "x").is_ok(),
                std::fs::read("/usr/bin/env").is_ok() || !Path::new("/usr/bin/env").exists(),
                std::fs::read("/etc/passwd").is_ok(),
                std::fs::read(outside.join("secret")).is_ok(),
                std::fs::write(outside.join("new"), "x").is_ok(),
                std::fs::write("/dev/null", "x").is_ok(),
            ];
            (restricted, opens)
        })
        .join()
        .unwrap();
        if probe_abi == 0 {
            // No Landlock here: the launcher must refuse rather than run unconfined.
            assert!(got.0.is_err(), "{got:?}");
            return;
        }
        assert_eq!(got.0, Ok(()));
        assert_eq!(got.1, [true, true, true, false, false, false, true]);
    }
}
