//! Where the launcher is: the `agentos` binary, run as `agentos sandbox-exec`.
//!
//! In order:
//! 1. a path given to [`set_launcher`] (tests and programs that embed the runtime);
//! 2. the environment variable [`LAUNCHER_ENV`] (`AGENTOS_SANDBOX_LAUNCHER`), the path of an
//!    `agentos` binary;
//! 3. the running executable, when it is called `agentos` (the normal case: `agentos run`).
//!
//! Without one, no command can be confined: `required` refuses to start and `best_effort`
//! runs commands unconfined, saying so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming the launcher binary (an `agentos` build).
pub const LAUNCHER_ENV: &str = "AGENTOS_SANDBOX_LAUNCHER";

/// Test-only switch: a comma-separated list of features to treat as missing even when the
/// kernel has them (`landlock`, `namespaces`, `cgroup`, `launcher`), so that a test can see
/// what `required` and `best_effort` do on a kernel without them.
pub const PRETEND_MISSING_ENV: &str = "AGENTOS_SANDBOX_PRETEND_MISSING";

static OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// Sets the launcher for this process, before the first [`super::status()`] call. Returns
/// false when one was set already (the first one stays).
pub fn set_launcher(path: impl Into<PathBuf>) -> bool {
    OVERRIDE.set(path.into()).is_ok()
}

/// The launcher binary, if one is known (see the module docs for the order).
pub fn launcher() -> Option<PathBuf> {
    if let Some(p) = OVERRIDE.get() {
        return Some(p.clone());
    }
    if let Some(p) = std::env::var_os(LAUNCHER_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    is_agentos(&exe).then_some(exe)
}

fn is_agentos(exe: &Path) -> bool {
    exe.file_name().is_some_and(|n| n == "agentos")
}

/// True when `feature` is named in [`PRETEND_MISSING_ENV`].
pub(crate) fn pretend_missing(feature: &str) -> bool {
    std::env::var(PRETEND_MISSING_ENV)
        .map(|v| v.split(',').any(|f| f.trim() == feature))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_binary_called_agentos_is_its_own_launcher() {
        assert!(is_agentos(Path::new("/usr/local/bin/agentos")));
        assert!(!is_agentos(Path::new(
            "/target/debug/deps/agentos_runtime-1234"
        )));
        assert!(!is_agentos(Path::new("/")));
    }
}
