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
