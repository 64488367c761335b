//! What a confined command may touch, and the policy the launcher receives.
//!
//! Landlock can only grant, never subtract, so "`/etc` minus its secrets" is a list of the
//! `/etc` entries a toolchain reads: the dynamic linker's cache, time zone, TLS certificates,
//! name-service and locale files, Python's own configuration. `/etc/passwd`, `/etc/shadow`,
//! `/etc/ssh`, `/etc/ssl/private` and everything else in `/etc` stay unreadable; an agent that
//! needs more lists it in `sandbox.read_paths`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SandboxLimits;

/// Top-level system paths the command may read and execute (those that exist).
pub const SYSTEM_READ_PATHS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Entries of `/etc` the command may read (those that exist), plus every `/etc/python3*`.
pub const ETC_READ_PATHS: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ld.so.preload",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/crypto-policies",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/etc/locale.alias",
    "/etc/locale.conf",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/terminfo",
];

/// Device files the command may read and write.
pub const DEVICES_READ_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// Device files the command may read.
pub const DEVICES_READ: &[&str] = &["/dev/random", "/dev/urandom"];

/// The system paths that exist on this machine: [`SYSTEM_READ_PATHS`], [`ETC_READ_PATHS`] and
/// `/etc/python3*`, in that order.
pub fn system_read_paths() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = SYSTEM_READ_PATHS
        .iter()
        .chain(ETC_READ_PATHS)
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if let Ok(entries) = std::fs::read_dir("/etc") {
        let mut python: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        python.sort();
        out.extend(python);
    }
    out
}

/// What the launcher applies to itself before it `exec`s the command. The runtime decides
/// every switch from the mode and the machine's [`SandboxStatus`](super::SandboxStatus); the
/// launcher applies exactly what it is told and fails (exit code
/// [`confine::SETUP_FAILED`](super::confine::SETUP_FAILED)) when it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPolicy {
    /// Read, write and execute (the command's working directory).
    pub workspace: PathBuf,
    /// Read, write and execute; `TMPDIR` points here.
    pub tmp_dir: PathBuf,
    /// Read and execute only.
    pub read_paths: Vec<PathBuf>,
    /// The agent may use the network.
    pub network: bool,
    /// Resource limits.
    pub limits: SandboxLimits,
    /// Confine the filesystem with Landlock.
    pub landlock: bool,
    /// Enter a new user namespace (and, unless `network`, a new network namespace); the
    /// process limit is then counted inside it.
    pub namespaces: bool,
    /// Join this pids cgroup first (the process limit as root).
    pub cgroup: Option<PathBuf>,
}

impl LaunchPolicy {
    /// True when `path` (absolute, normalised) lies under the workspace or the temp directory.
    pub fn writable(&self, path: &Path) -> bool {
        path.starts_with(&self.workspace) || path.starts_with(&self.tmp_dir)
    }

    /// True when `path` lies under a read path (or is a readable device).
    pub fn readable(&self, path: &Path) -> bool {
        self.writable(path)
            || self.read_paths.iter().any(|r| path.starts_with(r))
            || DEVICES_READ_WRITE
                .iter()
                .chain(DEVICES_READ)
                .any(|d| path == Path::new(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_paths_never_include_secrets() {
        let paths = system_read_paths();
        assert!(paths.iter().any(|p| p == Path::new("/usr")));
        for secret in [
            "/etc",
            "/etc/passwd",
            "/etc/shadow",
            "/etc/ssh",
            "/etc/ssl",
            "/root",
            "/home",
            "/tmp",
        ] {
            assert!(
                !paths.iter().any(|p| p == Path::new(secret)),
                "{secret} must not be readable"
            );
        }
        for p in &paths {
            assert!(p.exists(), "{} listed but missing", p.display());
        }
    }

    #[test]
    fn readable_and_writable_follow_the_policy() {
        let policy = LaunchPolicy {
            workspace: "/w/ws".into(),
            tmp_dir: "/w/tmp".into(),
            read_paths: vec!["/usr".into(), "/etc/ld.so.cache".into()],
            network: false,
            limits: SandboxLimits::default(),
            landlock: true,
            namespaces: true,
            cgroup: None,
        };
        assert!(policy.writable(Path::new("/w/ws/a/b")));
        assert!(policy.writable(Path::new("/w/tmp/x")));
        assert!(!policy.writable(Path::new("/w/wsx")));
        assert!(policy.readable(Path::new("/usr/lib/x")));
        assert!(policy.readable(Path::new("/etc/ld.so.cache")));
        assert!(policy.readable(Path::new("/dev/null")));
        assert!(!policy.readable(Path::new("/etc/passwd")));
        assert!(!policy.readable(Path::new("/usrx")));
    }
}
