//! Validation of `agents[].sandbox`: read paths that exist, limits within sane bounds.

use super::*;
use crate::sandbox::{AgentSandbox, SandboxLimits};

/// Upper bounds of the limits: far beyond any sane value, and small enough for the kernel.
const MAX_PROCESSES: u64 = 1 << 20;
const MAX_BYTES: u64 = 1 << 50;
const MAX_CPU_SECS: u64 = 31_536_000;
const MAX_OPEN_FILES: u64 = 1 << 20;

impl Validator<'_> {
    pub(super) fn agent_sandbox(&mut self, a: &raw::RawAgent) -> AgentSandbox {
        let at = At::Field(EntityKind::Agent, &a.name, None, "sandbox");
        let s = &a.sandbox;
        let mut read_paths = Vec::new();
        for p in &s.read_paths {
            if p.trim().is_empty() {
                self.err(at, "sandbox.read_paths entries must not be empty");
                continue;
            }
            let path = self.resolve(p);
            match std::fs::canonicalize(&path) {
                Ok(c) => read_paths.push(c),
                Err(e) => self.err(
                    at,
                    format!(
                        "sandbox.read_paths entry {} cannot be opened: {e}",
                        path.display()
                    ),
                ),
            }
        }
        for (field, value, min, max) in [
            ("max_processes", s.max_processes, 1, MAX_PROCESSES),
            // Below a few MiB not even a shell starts.
            ("max_memory_bytes", s.max_memory_bytes, 16 << 20, MAX_BYTES),
            ("max_cpu_secs", s.max_cpu_secs, 1, MAX_CPU_SECS),
            ("max_file_bytes", s.max_file_bytes, 1, MAX_BYTES),
            ("max_open_files", s.max_open_files, 16, MAX_OPEN_FILES),
        ] {
            if !(min..=max).contains(&value) {
                self.err(
                    at,
                    format!("sandbox.{field} must be within {min}..={max}, got {value}"),
                );
            }
        }
        AgentSandbox {
            network: s.network,
            read_paths,
            limits: SandboxLimits {
                max_processes: s.max_processes.clamp(1, MAX_PROCESSES),
                max_memory_bytes: s.max_memory_bytes.clamp(16 << 20, MAX_BYTES),
                max_cpu_secs: s.max_cpu_secs.clamp(1, MAX_CPU_SECS),
                max_file_bytes: s.max_file_bytes.clamp(1, MAX_BYTES),
                max_open_files: s.max_open_files.clamp(16, MAX_OPEN_FILES),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::sandbox::{SandboxLimits, SandboxMode};

    fn config(runtime: &str, sandbox: &str) -> Result<Config, String> {
        let text = format!(
            r#"(version: 1, runtime: ({runtime}), backends: [(name: "b", kind: Sim(()))],
               agents: [(name: "a", role: "r", backend: "b", sandbox: {sandbox})])"#
        );
        Config::parse(&text, "test.ron", Path::new("/")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_required_and_sane_limits() {
        let cfg = config("", "()").unwrap();
        assert_eq!(cfg.runtime.sandbox, SandboxMode::Required);
        let s = &cfg.agents[0].sandbox;
        assert!(!s.network && s.read_paths.is_empty());
        assert_eq!(s.limits, SandboxLimits::default());
    }

    #[test]
    fn modes_and_settings_are_read() {
        for (text, mode) in [
            ("sandbox: best_effort", SandboxMode::BestEffort),
            ("sandbox: off", SandboxMode::Off),
            ("sandbox: required", SandboxMode::Required),
        ] {
            assert_eq!(config(text, "()").unwrap().runtime.sandbox, mode);
        }
        let cfg = config(
            "",
            r#"(network: true, read_paths: ["/usr/share", "etc"], max_processes: 8,
                max_memory_bytes: 536870912, max_cpu_secs: 5, max_file_bytes: 1024,
                max_open_files: 64)"#,
        )
        .unwrap();
        let s = &cfg.agents[0].sandbox;
        assert!(s.network);
        // Relative paths resolve against the config's folder (here `/`).
        assert_eq!(
            s.read_paths,
            vec![
                Path::new("/usr/share").canonicalize().unwrap(),
                Path::new("/etc").canonicalize().unwrap()
            ]
        );
        assert_eq!(
            s.limits,
            SandboxLimits {
                max_processes: 8,
                max_memory_bytes: 536_870_912,
                max_cpu_secs: 5,
                max_file_bytes: 1024,
                max_open_files: 64,
            }
        );
    }

    #[test]
    fn bad_settings_are_all_reported() {
        let e = config(
            "",
            r#"(read_paths: ["/agentos-no-such-dir", ""], max_processes: 0, max_memory_bytes: 1,
                max_cpu_secs: 0, max_open_files: 1)"#,
        )
        .unwrap_err();
        for needle in [
            "sandbox.read_paths entry /agentos-no-such-dir cannot be opened",
            "sandbox.read_paths entries must not be empty",
            "sandbox.max_processes must be within 1..=1048576, got 0",
            "sandbox.max_memory_bytes must be within 16777216..=",
            "sandbox.max_cpu_secs must be within 1..=31536000, got 0",
            "sandbox.max_open_files must be within 16..=1048576, got 1",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        assert!(e.contains("agent \"a\""), "{e}");
        let e = config("sandbox: sometimes", "()").unwrap_err();
        assert!(e.contains("sometimes"), "{e}");
        let e = config("", "(netwrk: true)").unwrap_err();
        assert!(e.contains("netwrk"), "{e}");
    }
}
