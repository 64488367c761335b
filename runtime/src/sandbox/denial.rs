//! What stopped a confined command, in words the model can act on.
//!
//! The kernel tells the command, not the runtime, why a call failed. So the runtime reads
//! what the command leaves behind: the signal that ended it (`SIGXCPU`, `SIGXFSZ`), the pids
//! cgroup's `pids.events`, and the usual error texts in its output (`Permission denied`,
//! `Network is unreachable`, `Resource temporarily unavailable` from a fork, `MemoryError`,
//! `File too large`), matched only for what this policy actually confines. A path named next
//! to `Permission denied` is checked against the policy: inside the workspace it is not the
//! sandbox's doing; under a read path it was a write; missing, it was a creation (a write);
//! otherwise it is outside everything the agent may read.

use std::path::{Component, Path, PathBuf};

use super::policy::LaunchPolicy;

/// What kind of limit stopped the command. Its label is the `kind` label of
/// `agentos_sandbox_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialKind {
    /// A file access outside the policy.
    Filesystem,
    /// A network access by an agent without network.
    Network,
    /// The process limit.
    Processes,
    /// The address-space limit.
    Memory,
    /// The CPU-time limit.
    Cpu,
    /// The file-size limit.
    FileSize,
}

impl DenialKind {
    /// Every kind.
    pub const ALL: [DenialKind; 6] = [
        DenialKind::Filesystem,
        DenialKind::Network,
        DenialKind::Processes,
        DenialKind::Memory,
        DenialKind::Cpu,
        DenialKind::FileSize,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DenialKind::Filesystem => "filesystem",
            DenialKind::Network => "network",
            DenialKind::Processes => "processes",
            DenialKind::Memory => "memory",
            DenialKind::Cpu => "cpu",
            DenialKind::FileSize => "file_size",
        }
    }
}

/// One thing the sandbox stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Which limit.
    pub kind: DenialKind,
    /// What the model reads, e.g. `network is disabled for this agent`.
    pub message: String,
}

/// How the command ended, as far as attribution needs it.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Its stdout and stderr, lossily decoded.
    pub output: [&'a str; 2],
    /// The pids cgroup saw a fork refused at `pids.max`.
    pub pids_limit_hit: bool,
}

const SIGXCPU: i32 = 24;
const SIGXFSZ: i32 = 25;

/// The denials `ending` shows under `policy`, at most one per kind (filesystem: one per path,
/// up to three).
pub fn attribute(policy: &LaunchPolicy, ending: &Ending<'_>) -> Vec<Denial> {
    let text = |needles: &[&str]| {
        ending
            .output
            .iter()
            .any(|o| needles.iter().any(|n| o.contains(n)))
    };
    let mut out = Vec::new();
    let l = &policy.limits;
    if ending.signal == Some(SIGXCPU) {
        out.push(Denial {
            kind: DenialKind::Cpu,
            message: format!(
                "CPU time limit reached: the process used its {} CPU seconds (max_cpu_secs) \
                 and was stopped",
                l.max_cpu_secs
            ),
        });
    }
    if ending.signal == Some(SIGXFSZ)
        || text(&["File too large", "[Errno 27]", "os error 27", "EFBIG"])
    {
        out.push(Denial {
            kind: DenialKind::FileSize,
            message: format!(
                "file size limit reached: no file may grow past {} bytes (max_file_bytes)",
                l.max_file_bytes
            ),
        });
    }
    let procs_confined = policy.namespaces || policy.cgroup.is_some();
    let fork_failed = text(&["Resource temporarily unavailable", "EAGAIN"])
        && text(&["fork", "Errno 11", "thread", "spawn", "os error 11"]);
    if ending.pids_limit_hit || (procs_confined && fork_failed) {
        out.push(Denial {
            kind: DenialKind::Processes,
            message: format!(
                "process limit reached: the command may run at most {} processes and threads \
                 at once (max_processes)",
                l.max_processes
            ),
        });
    }
    if text(&[
        "MemoryError",
        "Cannot allocate memory",
        "out of memory",
        "memory allocation of",
        "std::bad_alloc",
        "[Errno 12]",
        "os error 12",
    ]) {
        out.push(Denial {
            kind: DenialKind::Memory,
            message: format!(
                "memory limit reached: each process may map at most {} bytes (max_memory_bytes)",
                l.max_memory_bytes
            ),
        });
    }
    if !policy.network
        && (policy.namespaces || policy.landlock)
        && text(&[
            "Network is unreachable",
            "[Errno 101]",
            "os error 101",
            "ENETUNREACH",
            "Cannot assign requested address",
            "[Errno 99]",
            "Temporary failure in name resolution",
            "Could not resolve host",
        ])
    {
        out.push(Denial {
            kind: DenialKind::Network,
            message: "network is disabled for this agent (sandbox.network: false)".into(),
        });
    }
    if policy.landlock {
        let files = filesystem(policy, &ending.output);
        // Without a network namespace, Landlock refuses TCP with EACCES: a denial that names
        // no path, from a command that was connecting, is the network's.
        let tcp_only = !policy.network && !policy.namespaces;
        let unnamed = files.len() == 1 && files[0].message == UNNAMED_DENIAL;
        if tcp_only && unnamed && text(&["connect", "socket", "bind"]) {
            out.push(Denial {
                kind: DenialKind::Network,
                message: "network is disabled for this agent (sandbox.network: false)".into(),
            });
        } else {
            out.extend(files);
        }
    }
    out
}

const UNNAMED_DENIAL: &str = "permission denied by the sandbox: the command touched a path \
                              outside the workspace and the agent's read paths";

fn filesystem(policy: &LaunchPolicy, output: &[&str; 2]) -> Vec<Denial> {
    let mut outside: Vec<PathBuf> = Vec::new();
    let (mut denied_lines, mut inside) = (false, false);
    for line in output.iter().flat_map(|o| o.lines()) {
        if !(line.contains("Permission denied")
            || line.contains("[Errno 13]")
            || line.contains("os error 13"))
        {
            continue;
        }
        denied_lines = true;
        for path in paths_in(line) {
            if policy.writable(&path) {
                inside = true;
            } else if !outside.contains(&path) {
                outside.push(path);
            }
        }
    }
    if outside.is_empty() {
        // Denied, but no path named: the sandbox's doing unless a workspace path was named
        // (an ordinary permission problem inside the workspace).
        return if denied_lines && !inside {
            vec![Denial {
                kind: DenialKind::Filesystem,
                message: UNNAMED_DENIAL.into(),
            }]
        } else {
            Vec::new()
        };
    }
    outside
        .iter()
        .take(3)
        .map(|path| {
            let shown = path.display();
            let existing = path.symlink_metadata().is_ok();
            let message = if !existing || policy.readable(path) {
                format!(
                    "permission denied by the sandbox: write outside the workspace (`{shown}`); \
                     only the workspace and $TMPDIR are writable"
                )
            } else {
                format!(
                    "permission denied by the sandbox: `{shown}` is outside the workspace and \
                     the agent's read paths (sandbox.read_paths)"
                )
            };
            Denial {
                kind: DenialKind::Filesystem,
                message,
            }
        })
        .collect()
}

/// Absolute paths named in `line`: quoted ('…', "…", `…`) or bare, up to whitespace or `:`.
fn paths_in(line: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != '/' || (i > 0 && !starts_path(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let quote = if i > 0 && matches!(bytes[i - 1], '\'' | '"' | '`') {
            Some(bytes[i - 1])
        } else {
            None
        };
        let end = (i..bytes.len())
            .find(|&j| match quote {
                Some(q) => bytes[j] == q,
                None => bytes[j].is_whitespace() || matches!(bytes[j], ':' | ',' | ')' | ';'),
            })
            .unwrap_or(bytes.len());
        let raw: String = bytes[i..end].iter().collect();
        if let Some(p) = normalise(Path::new(&raw)) {
            if p != Path::new("/") {
                out.push(p);
            }
        }
        i = end.max(i + 1);
    }
    out
}

fn starts_path(before: char) -> bool {
    before.is_whitespace() || matches!(before, '\'' | '"' | '`' | '(' | '=' | '[')
}

/// `path` with `.` and `..` folded, without touching the filesystem.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxLimits;

    fn policy(ws: &Path) -> LaunchPolicy {
        LaunchPolicy {
            workspace: ws.to_path_buf(),
            tmp_dir: ws.join(".tmp"),
            read_paths: vec!["/usr".into(), "/etc/ld.so.cache".into()],
            network: false,
            limits: SandboxLimits::default(),
            landlock: true,
            namespaces: true,
            cgroup: None,
        }
    }

    fn attribute_err(p: &LaunchPolicy, stderr: &str) -> Vec<Denial> {
        attribute(
            p,
            &Ending {
                signal: None,
                output: ["", stderr],
                pids_limit_hit: false,
            },
        )
    }

    #[test]
    fn paths_are_found_quoted_and_bare() {
        assert_eq!(
            paths_in("PermissionError: [Errno 13] Permission denied: '/etc/passwd'"),
            vec![PathBuf::from("/etc/passwd")]
        );
        assert_eq!(
            paths_in("mkdir: cannot create directory '/tmp/x/../y': Permission denied"),
            vec![PathBuf::from("/tmp/y")]
        );
        assert_eq!(
            paths_in("cat: /root/.profile: Permission denied"),
            vec![PathBuf::from("/root/.profile")]
        );
        assert_eq!(paths_in("a/b c"), Vec::<PathBuf>::new());
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        let ws = tempfile::tempdir().unwrap();
        let p = policy(ws.path());
        let got = attribute_err(
            &p,
            "PermissionError: [Errno 13] Permission denied: '/etc/passwd'",
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, DenialKind::Filesystem);
        assert!(
            got[0]
                .message
                .contains("`/etc/passwd` is outside the workspace"),
            "{got:?}"
        );
        let got = attribute_err(
            &p,
            "PermissionError: [Errno 13] Permission denied: '/tmp/agentos-no-such-dir'",
        );
        assert!(
            got[0]
                .message
                .starts_with("permission denied by the sandbox: write outside the workspace"),
            "{got:?}"
        );
        let got = attribute_err(&p, "OSError: [Errno 13] Permission denied: '/usr/lib/x'");
        assert!(got[0].message.contains("write outside"), "{got:?}");
        // Inside the workspace it is an ordinary permission problem.
        let inside = format!("Permission denied: '{}/locked'", ws.path().display());
        assert!(attribute_err(&p, &inside).is_empty());
        let mut off = p.clone();
        off.landlock = false;
        assert!(attribute_err(&off, "Permission denied: '/etc/passwd'").is_empty());
    }

    #[test]
    fn network_processes_memory_and_files() {
        let ws = tempfile::tempdir().unwrap();
        let p = policy(ws.path());
        let kinds = |stderr: &str| -> Vec<DenialKind> {
            attribute_err(&p, stderr).iter().map(|d| d.kind).collect()
        };
        assert_eq!(
            kinds("OSError: [Errno 101] Network is unreachable"),
            vec![DenialKind::Network]
        );
        assert_eq!(
            kinds("  os.fork()\nBlockingIOError: [Errno 11] Resource temporarily unavailable"),
            vec![DenialKind::Processes]
        );
        assert_eq!(kinds("MemoryError"), vec![DenialKind::Memory]);
        assert_eq!(
            kinds("OSError: [Errno 27] File too large"),
            vec![DenialKind::FileSize]
        );
        assert!(kinds("all good").is_empty());
        let mut open = p.clone();
        open.network = true;
        assert!(attribute_err(&open, "Network is unreachable").is_empty());
        // Landlock alone (no network namespace) refuses TCP with a plain EACCES.
        let mut tcp_only = p.clone();
        tcp_only.namespaces = false;
        let got = attribute_err(
            &tcp_only,
            "    sock.connect(sa)\nPermissionError: [Errno 13] Permission denied",
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, DenialKind::Network);
    }

    #[test]
    fn signals_and_the_cgroup_count() {
        let ws = tempfile::tempdir().unwrap();
        let p = policy(ws.path());
        let got = attribute(
            &p,
            &Ending {
                signal: Some(SIGXCPU),
                output: ["", ""],
                pids_limit_hit: true,
            },
        );
        let kinds: Vec<DenialKind> = got.iter().map(|d| d.kind).collect();
        assert_eq!(kinds, vec![DenialKind::Cpu, DenialKind::Processes]);
        assert!(got[0].message.starts_with("CPU time limit reached"));
        assert!(got[1].message.starts_with("process limit reached"));
    }
}
