//! [`Sandbox`]: one agent's sandbox, as `run_command` applies it to each command.
//!
//! Built once per agent at boot from its `sandbox` settings, the mode and the machine's
//! [`SandboxStatus`]: it fixes the [`LaunchPolicy`] (what is switched on follows from what the
//! machine offers; `required` never gets here with something missing). Per command it makes
//! the launcher's argv (with a fresh pids cgroup as root) and afterwards reads the command's
//! end for [`Denial`]s.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::cgroup::{CommandCgroup, PidsCgroups};
use super::confine::{EXEC_FAILED, MESSAGE_PREFIX, SETUP_FAILED};
use super::denial::{attribute, Denial, Ending};
use super::policy::{system_read_paths, LaunchPolicy};
use super::status::{Feature, Missing, SandboxStatus};
use super::{AgentSandbox, SandboxMode};
use crate::events::sandbox::SandboxDenied;

/// One agent's sandbox. Cheap to share (`Arc`) between its replicas.
#[derive(Debug)]
pub struct Sandbox {
    agent: String,
    mode: SandboxMode,
    launcher: Option<PathBuf>,
    policy: LaunchPolicy,
    configured_read_paths: Vec<PathBuf>,
    cgroups: Option<PidsCgroups>,
    missing: Vec<Missing>,
}

/// How to start one command.
#[derive(Debug)]
pub struct Launch {
    /// The program to spawn: the launcher, or the command itself when there is none.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables to set on top of the allowed environment (`TMPDIR`).
    pub env: Vec<(&'static str, OsString)>,
    /// The command's pids cgroup, when the process limit uses one.
    pub cgroup: Option<CommandCgroup>,
}

/// Why an agent's sandbox cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `required`, and the machine lacks something.
    #[error("agent \"{agent}\": runtime.sandbox is `required` but {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Missing {
        /// The agent.
        agent: String,
        /// What is missing.
        missing: Vec<Missing>,
    },
    /// The private temp directory could not be created.
    #[error("agent \"{agent}\": cannot create the sandbox temp directory {path}: {source}")]
    TempDir {
        /// The agent.
        agent: String,
        /// The directory.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Sandbox {
    /// The sandbox of `agent`, working in `workspace` with `tmp_dir` (created here) as its
    /// private temp directory. `Ok(None)` when the mode is `off`.
    pub fn new(
        agent: &str,
        mode: SandboxMode,
        spec: &AgentSandbox,
        workspace: &Path,
        tmp_dir: &Path,
        status: &SandboxStatus,
    ) -> Result<Option<Sandbox>, SandboxError> {
        if mode == SandboxMode::Off {
            return Ok(None);
        }
        let missing = status.missing();
        if mode == SandboxMode::Required && !missing.is_empty() {
            return Err(SandboxError::Missing {
                agent: agent.to_owned(),
                missing,
            });
        }
        std::fs::create_dir_all(tmp_dir).map_err(|source| SandboxError::TempDir {
            agent: agent.to_owned(),
            path: tmp_dir.display().to_string(),
            source,
        })?;
        let tmp_dir = tmp_dir
            .canonicalize()
            .unwrap_or_else(|_| tmp_dir.to_owned());
        let mut read_paths = system_read_paths();
        read_paths.extend(spec.read_paths.iter().cloned());
        let cgroups = if status.root && status.has(Feature::Processes) {
            status.pids_cgroup.clone().map(|base| PidsCgroups { base })
        } else {
            None
        };
        Ok(Some(Sandbox {
            agent: agent.to_owned(),
            mode,
            launcher: status.launcher.clone(),
            policy: LaunchPolicy {
                workspace: workspace.to_owned(),
                tmp_dir,
                read_paths,
                network: spec.network,
                limits: spec.limits,
                landlock: status.has(Feature::Filesystem),
                namespaces: status.namespaces && status.launcher.is_some(),
                cgroup: None,
            },
            configured_read_paths: spec.read_paths.clone(),
            cgroups,
            missing,
        }))
    }

    /// The policy commands of this agent run under (without a command's cgroup).
    pub fn policy(&self) -> &LaunchPolicy {
        &self.policy
    }

    /// The policy as the trace and the run folder name it.
    pub fn describe(&self) -> serde_json::Value {
        let l = &self.policy.limits;
        json!({
            "agent": self.agent,
            "mode": self.mode.label(),
            "workspace": self.policy.workspace,
            "tmp_dir": self.policy.tmp_dir,
            "network": self.policy.network,
            "read_paths": self.configured_read_paths,
            "max_processes": l.max_processes,
            "max_memory_bytes": l.max_memory_bytes,
            "max_cpu_secs": l.max_cpu_secs,
            "max_file_bytes": l.max_file_bytes,
            "max_open_files": l.max_open_files,
            "missing": self.missing.iter().map(|m| m.feature.label()).collect::<Vec<_>>(),
        })
    }

    /// One line for the model: what this command ran under.
    pub fn summary_line(&self) -> String {
        let l = &self.policy.limits;
        let mut line = format!(
            "sandbox: files: workspace and $TMPDIR (read/write), system paths{} (read); \
             network {}; max_processes {}, max_memory_bytes {}, max_cpu_secs {}, \
             max_file_bytes {}",
            if self.configured_read_paths.is_empty() {
                String::new()
            } else {
                format!(
                    " and {}",
                    self.configured_read_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if self.policy.network { "on" } else { "off" },
            l.max_processes,
            l.max_memory_bytes,
            l.max_cpu_secs,
            l.max_file_bytes,
        );
        if !self.missing.is_empty() {
            line.push_str(&format!(
                " (not enforced here: {})",
                self.missing
                    .iter()
                    .map(|m| m.feature.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        line
    }

    /// How to start `argv`: through the launcher, with a fresh cgroup where one is used.
    pub fn launch(&self, argv: &[String]) -> Result<Launch, String> {
        let env = vec![("TMPDIR", self.policy.tmp_dir.clone().into_os_string())];
        let Some(launcher) = &self.launcher else {
            let (program, rest) = argv.split_first().ok_or("empty argv")?;
            return Ok(Launch {
                program: program.into(),
                args: rest.iter().map(OsString::from).collect(),
                env,
                cgroup: None,
            });
        };
        let cgroup = match &self.cgroups {
            Some(groups) => Some(
                groups
                    .create(self.policy.limits.max_processes)
                    .map_err(|e| format!("cannot create the command's pids cgroup: {e}"))?,
            ),
            None => None,
        };
        let mut policy = self.policy.clone();
        policy.cgroup = cgroup.as_ref().map(|c| c.path().to_owned());
        let policy =
            serde_json::to_string(&policy).map_err(|e| format!("cannot encode policy: {e}"))?;
        let mut args: Vec<OsString> = vec![
            "sandbox-exec".into(),
            "--policy".into(),
            policy.into(),
            "--".into(),
        ];
        args.extend(argv.iter().map(OsString::from));
        Ok(Launch {
            program: launcher.clone().into_os_string(),
            args,
            env,
            cgroup,
        })
    }

    /// The launcher's own failure, if the command never started: `(setup_failed, message)`,
    /// where the message is the launcher's line without its prefix.
    pub fn launcher_failure(&self, code: Option<i32>, stderr: &str) -> Option<(bool, String)> {
        self.launcher.as_ref()?;
        let code = code?;
        if code != SETUP_FAILED && code != EXEC_FAILED {
            return None;
        }
        let line = stderr.lines().last()?.strip_prefix(MESSAGE_PREFIX)?;
        Some((code == SETUP_FAILED, line.to_owned()))
    }

    /// What stopped the command, counted as `agentos_sandbox_denials_total`.
    pub fn denials(&self, ending: &Ending<'_>) -> Vec<Denial> {
        let denials = attribute(&self.policy, ending);
        for d in &denials {
            SandboxDenied {
                agent: &self.agent,
                kind: d.kind,
            }
            .emit();
        }
        denials
    }
}

/// Writes `<run_dir>/sandbox.json`: the mode, the machine's status, what is missing, and
/// every agent's policy.
pub fn record_run(
    run_dir: &Path,
    mode: SandboxMode,
    status: &SandboxStatus,
    sandboxes: &[&Sandbox],
) -> std::io::Result<PathBuf> {
    let path = run_dir.join("sandbox.json");
    let agents: serde_json::Map<String, serde_json::Value> = sandboxes
        .iter()
        .map(|s| (s.agent.clone(), s.describe()))
        .collect();
    let missing = if mode == SandboxMode::Off {
        Vec::new()
    } else {
        status.missing()
    };
    let doc = json!({
        "mode": mode.label(),
        "status": status,
        "missing": missing,
        "agents": agents,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(launcher: Option<&str>) -> SandboxStatus {
        SandboxStatus {
            launcher: launcher.map(PathBuf::from),
            launcher_error: launcher.is_none().then(|| "not found".to_owned()),
            landlock_abi: 6,
            landlock_error: None,
            namespaces: true,
            namespaces_error: None,
            root: false,
            pids_cgroup: None,
            pids_cgroup_error: None,
        }
    }

    /// The workspace lives as long as the test keeps the returned directory.
    fn build(
        mode: SandboxMode,
        status: &SandboxStatus,
    ) -> (tempfile::TempDir, Result<Option<Sandbox>, SandboxError>) {
        let ws = tempfile::tempdir().unwrap();
        let tmp = ws.path().join("tmp/agent");
        let spec = AgentSandbox {
            read_paths: vec!["/opt/tools".into()],
            ..AgentSandbox::default()
        };
        let built = Sandbox::new("agent", mode, &spec, ws.path(), &tmp, status);
        (ws, built)
    }

    #[test]
    fn off_builds_nothing_and_required_refuses_what_is_missing() {
        assert!(build(SandboxMode::Off, &status(None)).1.unwrap().is_none());
        let e = build(SandboxMode::Required, &status(None)).1.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("agent \"agent\": runtime.sandbox is `required` but filesystem: "),
            "{e}"
        );
        let (_ws, lax) = build(SandboxMode::BestEffort, &status(None));
        let lax = lax.unwrap().unwrap();
        assert!(lax
            .summary_line()
            .ends_with("(not enforced here: filesystem, network, processes, limits)"));
    }

    #[test]
    fn a_command_goes_through_the_launcher_with_its_policy() {
        let (_ws, s) = build(SandboxMode::Required, &status(Some("/bin/agentos")));
        let s = s.unwrap().unwrap();
        assert!(s.policy().tmp_dir.is_dir(), "the temp directory is created");
        let launch = s
            .launch(&["python3".into(), "-m".into(), "unittest".into()])
            .unwrap();
        assert_eq!(launch.program, "/bin/agentos");
        let args: Vec<String> = launch
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0..2], ["sandbox-exec", "--policy"]);
        assert_eq!(args[3..], ["--", "python3", "-m", "unittest"]);
        let policy: LaunchPolicy = serde_json::from_str(&args[2]).unwrap();
        assert_eq!(&policy, s.policy());
        assert!(policy.landlock && policy.namespaces && !policy.network);
        assert!(policy
            .read_paths
            .iter()
            .any(|p| p == Path::new("/opt/tools")));
        assert_eq!(launch.env[0].0, "TMPDIR");
        assert_eq!(launch.env[0].1, policy.tmp_dir.as_os_str());
        assert_eq!(s.describe()["read_paths"], json!(["/opt/tools"]));
    }

    #[test]
    fn the_launchers_own_failures_are_told_apart_from_the_commands() {
        let (_ws, s) = build(SandboxMode::Required, &status(Some("/bin/agentos")));
        let s = s.unwrap().unwrap();
        let stderr = "agentos-sandbox: cannot start `nope`: No such file or directory (os error 2)";
        assert_eq!(
            s.launcher_failure(Some(EXEC_FAILED), stderr),
            Some((
                false,
                "cannot start `nope`: No such file or directory (os error 2)".into()
            ))
        );
        assert_eq!(
            s.launcher_failure(Some(SETUP_FAILED), "agentos-sandbox: cannot set x"),
            Some((true, "cannot set x".into()))
        );
        // A command that exits 127 by itself is the command's business.
        assert_eq!(
            s.launcher_failure(Some(EXEC_FAILED), "sh: 1: nope: not found"),
            None
        );
        assert_eq!(s.launcher_failure(Some(1), stderr), None);
    }
}
