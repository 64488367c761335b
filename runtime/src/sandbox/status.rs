//! What this machine offers the sandbox, and what is missing.
//!
//! [`status()`] probes once per process: it runs the launcher with `--probe` (a fresh process
//! tries to enter the namespaces and to restrict itself with Landlock) and checks for a
//! writable pids cgroup when the runtime is root. [`report`] turns that into what one mode
//! enforces and lacks, which the run summary, `/healthz` and the
//! `agentos_sandbox_enforced` metric show. [`check`] is the start-up gate of `required`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::cgroup::PidsCgroups;
use super::confine::ProbeReport;
use super::launcher::{launcher, pretend_missing};
use super::SandboxMode;
use crate::config::Config;

/// What the kernel and the launcher offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatus {
    /// The launcher binary, when one was found and answered the probe.
    pub launcher: Option<PathBuf>,
    /// Why there is no launcher.
    pub launcher_error: Option<String>,
    /// Landlock ABI version; 0 when Landlock is missing.
    pub landlock_abi: u32,
    /// Why Landlock is missing.
    pub landlock_error: Option<String>,
    /// New user and network namespaces can be entered.
    pub namespaces: bool,
    /// Why not.
    pub namespaces_error: Option<String>,
    /// The runtime runs as root (uid 0), where `RLIMIT_NPROC` is not enforced.
    pub root: bool,
    /// Where per-command pids cgroups go, when the runtime can create them.
    pub pids_cgroup: Option<PathBuf>,
    /// Why there is none (only asked as root).
    pub pids_cgroup_error: Option<String>,
}

/// One part of the sandbox. Its label is the `feature` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Filesystem confinement (Landlock).
    Filesystem,
    /// No network (a new network namespace).
    Network,
    /// The process limit.
    Processes,
    /// Memory, CPU, file-size and open-file limits (`setrlimit`; needs only the launcher).
    Limits,
}

impl Feature {
    /// Every feature, in the order messages list them.
    pub const ALL: [Feature; 4] = [
        Feature::Filesystem,
        Feature::Network,
        Feature::Processes,
        Feature::Limits,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Feature::Filesystem => "filesystem",
            Feature::Network => "network",
            Feature::Processes => "processes",
            Feature::Limits => "limits",
        }
    }
}

/// A feature this machine cannot give, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// The feature.
    pub feature: Feature,
    /// Why, in words a user can act on.
    pub reason: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.feature.label(), self.reason)
    }
}

impl SandboxStatus {
    /// Whether `feature` can be enforced here.
    pub fn has(&self, feature: Feature) -> bool {
        self.lacks(feature).is_none()
    }

    /// Why `feature` cannot be enforced here, if it cannot.
    pub fn lacks(&self, feature: Feature) -> Option<String> {
        if self.launcher.is_none() {
            return Some(format!(
                "no sandbox launcher: {}",
                self.launcher_error.as_deref().unwrap_or("not found")
            ));
        }
        let namespaces = || {
            format!(
                "user and network namespaces are not available ({})",
                self.namespaces_error.as_deref().unwrap_or("unknown reason")
            )
        };
        match feature {
            Feature::Filesystem if self.landlock_abi == 0 => Some(format!(
                "Landlock is not available ({})",
                self.landlock_error.as_deref().unwrap_or("unknown reason")
            )),
            Feature::Network if !self.namespaces => Some(namespaces()),
            Feature::Processes if self.root && self.pids_cgroup.is_none() => Some(format!(
                "running as root, where the kernel does not enforce RLIMIT_NPROC, and no pids \
                 cgroup can be created ({})",
                self.pids_cgroup_error
                    .as_deref()
                    .unwrap_or("unknown reason")
            )),
            Feature::Processes if !self.root && !self.namespaces => Some(format!(
                "{}; outside one RLIMIT_NPROC would count every process of the user",
                namespaces()
            )),
            _ => None,
        }
    }

    /// Every feature this machine cannot give.
    pub fn missing(&self) -> Vec<Missing> {
        Feature::ALL
            .into_iter()
            .filter_map(|feature| {
                self.lacks(feature)
                    .map(|reason| Missing { feature, reason })
            })
            .collect()
    }
}

/// Probed statuses by launcher (one entry in practice; a second only when a program sets its
/// launcher after a first probe). A `std` mutex: held for the probe only, never across an
/// await; a poisoned lock (a panicking probe) is recovered, its data is still valid.
static STATUS: Mutex<Vec<(Option<PathBuf>, &'static SandboxStatus)>> = Mutex::new(Vec::new());

/// This machine's sandbox status, probed on the first call (a few milliseconds: one launcher
/// process) and cached for the life of the process, per launcher.
pub fn status() -> &'static SandboxStatus {
    let launcher = launcher();
    let mut cache = STATUS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, s)) = cache.iter().find(|(l, _)| *l == launcher) {
        return s;
    }
    let probed: &'static SandboxStatus = Box::leak(Box::new(probe(launcher.as_deref())));
    cache.push((launcher, probed));
    probed
}

/// Probes the machine with `launcher` (see the module docs). Features named in
/// [`PRETEND_MISSING_ENV`](super::PRETEND_MISSING_ENV) are reported missing.
pub fn probe(launcher: Option<&Path>) -> SandboxStatus {
    let root = nix::unistd::geteuid().is_root();
    let mut status = SandboxStatus {
        launcher: None,
        launcher_error: None,
        landlock_abi: 0,
        landlock_error: None,
        namespaces: false,
        namespaces_error: None,
        root,
        pids_cgroup: None,
        pids_cgroup_error: None,
    };
    match launcher.map(run_probe) {
        None => {
            status.launcher_error = Some(format!(
                "this program is not `agentos`; set {} to the path of the agentos binary",
                super::LAUNCHER_ENV
            ));
        }
        Some(Err(e)) => status.launcher_error = Some(e),
        Some(Ok(report)) => {
            status.launcher = launcher.map(Path::to_path_buf);
            status.landlock_abi = report.landlock_abi;
            status.landlock_error = report.landlock_error;
            status.namespaces = report.namespaces;
            status.namespaces_error = report.namespaces_error;
        }
    }
    if root {
        match PidsCgroups::detect() {
            Ok(groups) => status.pids_cgroup = Some(groups.base),
            Err(e) => status.pids_cgroup_error = Some(e),
        }
    }
    pretend(&mut status);
    status
}

fn pretend(status: &mut SandboxStatus) {
    let said = |what: &str| format!("pretended missing ({}={what})", super::PRETEND_MISSING_ENV);
    if pretend_missing("launcher") {
        status.launcher = None;
        status.launcher_error = Some(said("launcher"));
    }
    if pretend_missing("landlock") {
        status.landlock_abi = 0;
        status.landlock_error = Some(said("landlock"));
    }
    if pretend_missing("namespaces") {
        status.namespaces = false;
        status.namespaces_error = Some(said("namespaces"));
    }
    if pretend_missing("cgroup") {
        status.pids_cgroup = None;
        status.pids_cgroup_error = Some(said("cgroup"));
    }
}

fn run_probe(launcher: &Path) -> Result<ProbeReport, String> {
    let out = std::process::Command::new(launcher)
        .args(["sandbox-exec", "--probe"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", launcher.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} sandbox-exec --probe failed ({}): {}",
            launcher.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{} sandbox-exec --probe answered something else: {e}",
            launcher.display()
        )
    })
}

/// What one mode enforces on this machine, and what it lacks. `/healthz` and the run summary
/// show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// `runtime.sandbox`.
    pub mode: SandboxMode,
    /// Features commands run under.
    pub enforced: Vec<Feature>,
    /// Features missing on this machine (empty when `off`: nothing is asked for).
    pub missing: Vec<Missing>,
}

impl SandboxReport {
    /// The one-line summary: `None` when everything asked for is enforced; a warning for
    /// `off`; the missing features for `best_effort` (and for `required`, which then refuses
    /// to start anyway).
    pub fn summary_line(&self) -> Option<String> {
        match self.mode {
            SandboxMode::Off => Some(
                "WARNING: the sandbox is off (runtime.sandbox: off): commands run with the \
                 runtime's own access to files, network and processes."
                    .into(),
            ),
            _ if self.missing.is_empty() => None,
            mode => Some(format!(
                "sandbox ({}): not enforced on this machine: {}",
                mode.label(),
                self.missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }
}

/// What `mode` enforces given `status`.
pub fn report(mode: SandboxMode, status: &SandboxStatus) -> SandboxReport {
    if mode == SandboxMode::Off {
        return SandboxReport {
            mode,
            enforced: Vec::new(),
            missing: Vec::new(),
        };
    }
    SandboxReport {
        mode,
        enforced: Feature::ALL
            .into_iter()
            .filter(|f| status.has(*f))
            .collect(),
        missing: status.missing(),
    }
}

/// `required` on a machine that lacks a feature, while some agent may run commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "runtime.sandbox is `required`, but this machine cannot confine commands:\n{}\n\
     Agents {agents} are granted run_command. Run on a Linux kernel with Landlock and \
     unprivileged user namespaces (and, as root, a writable pids cgroup), or set \
     `runtime.sandbox: best_effort` (run with what the kernel offers) or `runtime.sandbox: off` \
     (no sandbox) in the config.",
    missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n")
)]
pub struct SandboxRefused {
    /// What is missing.
    pub missing: Vec<Missing>,
    /// The agents granted `run_command`, quoted and comma-separated.
    pub agents: String,
}

/// The start-up gate: under `required`, refuses a config in which an agent may run commands
/// when this machine lacks a feature. Configs without `run_command` need no sandbox.
pub fn check(cfg: &Config, status: &SandboxStatus) -> Result<SandboxReport, SandboxRefused> {
    let report = report(cfg.runtime.sandbox, status);
    let commanders: Vec<String> = cfg
        .agents
        .iter()
        .filter(|a| a.tools.iter().any(|t| t == "run_command"))
        .map(|a| format!("\"{}\"", a.name))
        .collect();
    if cfg.runtime.sandbox == SandboxMode::Required
        && !report.missing.is_empty()
        && !commanders.is_empty()
    {
        return Err(SandboxRefused {
            missing: report.missing,
            agents: commanders.join(", "),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn full() -> SandboxStatus {
        SandboxStatus {
            launcher: Some("/bin/agentos".into()),
            launcher_error: None,
            landlock_abi: 6,
            landlock_error: None,
            namespaces: true,
            namespaces_error: None,
            root: false,
            pids_cgroup: None,
            pids_cgroup_error: None,
        }
    }

    #[test]
    fn a_full_machine_misses_nothing() {
        let r = report(SandboxMode::Required, &full());
        assert!(r.missing.is_empty());
        assert_eq!(r.enforced, Feature::ALL.to_vec());
        assert_eq!(r.summary_line(), None);
    }

    #[test]
    fn root_needs_a_pids_cgroup() {
        let mut s = full();
        s.root = true;
        s.pids_cgroup_error = Some("read-only".into());
        let missing = s.missing();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].feature, Feature::Processes);
        assert!(missing[0].reason.contains("RLIMIT_NPROC"), "{}", missing[0]);
        s.pids_cgroup = Some("/sys/fs/cgroup/pids".into());
        assert!(s.missing().is_empty());
    }

    #[test]
    fn without_namespaces_network_and_processes_are_missing() {
        let mut s = full();
        s.namespaces = false;
        s.namespaces_error = Some("unshare: EPERM".into());
        let features: Vec<Feature> = s.missing().iter().map(|m| m.feature).collect();
        assert_eq!(features, vec![Feature::Network, Feature::Processes]);
        let line = report(SandboxMode::BestEffort, &s).summary_line().unwrap();
        assert!(
            line.starts_with("sandbox (best_effort): not enforced on this machine: network: "),
            "{line}"
        );
    }

    #[test]
    fn without_a_launcher_everything_is_missing() {
        let mut s = full();
        s.launcher = None;
        assert_eq!(s.missing().len(), 4);
    }

    #[test]
    fn off_enforces_nothing_and_warns() {
        let r = report(SandboxMode::Off, &full());
        assert!(r.enforced.is_empty() && r.missing.is_empty());
        assert!(r
            .summary_line()
            .unwrap()
            .starts_with("WARNING: the sandbox is off"));
    }
}
