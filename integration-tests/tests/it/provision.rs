//! External programs the tests need, found or fetched so that `cargo test --workspace` passes
//! on a fresh machine.
//!
//! [`prometheus`] looks for the binary in this order: the `AGENTOS_PROMETHEUS` variable,
//! `prometheus` on `PATH`, then a copy fetched earlier into `<target>/tools/prometheus/`.
//! When there is none it fetches Debian's `prometheus` package with `apt-get download` (no
//! root needed once the package lists exist; as root it runs `apt-get update` first when they
//! are empty) and unpacks it with `dpkg-deb -x`. The package is unpacked in a private staging
//! folder and renamed into place, so tests running at the same time never see half a copy; if
//! two fetch at once, the first rename wins and the other copy is dropped.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where to look, and how to install by hand, said in every failure.
const HOW_TO_INSTALL: &str = "install it with `apt-get install -y prometheus` (or download it \
     from https://prometheus.io/download/ and set AGENTOS_PROMETHEUS=/path/to/prometheus), \
     or set AGENTOS_SKIP_PROMETHEUS=1 to skip the test";

/// The `prometheus` binary to run, fetched into the build folder when the machine has none.
///
/// Panics with instructions when it is neither installed nor fetchable.
pub fn prometheus() -> PathBuf {
    if let Some(path) = std::env::var_os("AGENTOS_PROMETHEUS") {
        let path = PathBuf::from(path);
        assert!(
            runs(&path),
            "AGENTOS_PROMETHEUS={} does not run `--version`; point it at a prometheus binary",
            path.display()
        );
        return path;
    }
    let on_path = PathBuf::from("prometheus");
    if runs(&on_path) {
        return on_path;
    }
    let home = tools_dir().join("prometheus");
    let binary = home.join("usr/bin/prometheus");
    if runs(&binary) {
        return binary;
    }
    if home.exists() {
        // Only a rename creates it, so it is whole; a binary that no longer runs (a different
        // system underneath) is fetched again.
        eprintln!("{} does not run: fetching it again", binary.display());
        std::fs::remove_dir_all(&home)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", home.display()));
    }
    eprintln!(
        "prometheus is not on PATH and AGENTOS_PROMETHEUS is unset: fetching Debian's \
         `prometheus` package into {}",
        home.display()
    );
    if let Err(why) = fetch_deb("prometheus", &home) {
        panic!(
            "the `prometheus` binary is needed and could not be fetched: {why}; {HOW_TO_INSTALL}"
        );
    }
    assert!(
        runs(&binary),
        "the fetched package has no working {}; {HOW_TO_INSTALL}",
        binary.display()
    );
    eprintln!("using {}", binary.display());
    binary
}

/// `<target>/tools`, next to the folder Cargo gives integration tests for scratch files.
fn tools_dir() -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    scratch.parent().unwrap_or(scratch).join("tools")
}

/// Whether `program --version` runs and succeeds.
fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Downloads Debian package `package` and unpacks it as folder `dest` (which must not exist
/// yet, or already hold a complete copy).
fn fetch_deb(package: &str, dest: &Path) -> Result<(), String> {
    if !runs(Path::new("apt-get")) || !runs(Path::new("dpkg-deb")) {
        return Err("apt-get and dpkg-deb are not available on this machine".into());
    }
    let parent = dest
        .parent()
        .ok_or("the destination has no parent folder")?;
    std::fs::create_dir_all(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{package}-"))
        .tempdir_in(parent)
        .map_err(|e| {
            format!(
                "cannot create a staging folder in {}: {e}",
                parent.display()
            )
        })?;

    if !has_package_lists() {
        if !is_root() {
            return Err("apt's package lists are empty and only root can fill them \
                        (run `sudo apt-get update`)"
                .into());
        }
        eprintln!("apt's package lists are empty: running `apt-get update`");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    eprintln!("running `apt-get download {package}`");
    run(Command::new("apt-get")
        .args(["download", "-qq", package])
        .current_dir(staging.path()))?;
    let deb = std::fs::read_dir(staging.path())
        .map_err(|e| format!("cannot list {}: {e}", staging.path().display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| p.extension() == Some(OsStr::new("deb")))
        .ok_or("apt-get download left no .deb file")?;
    let unpacked = staging.path().join("root");
    eprintln!("unpacking {} with dpkg-deb", deb.display());
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;

    // Renaming a folder onto a non-empty one fails: if another test got there first, its
    // complete copy stays and this one is dropped with the staging folder.
    match std::fs::rename(&unpacked, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(format!(
            "cannot move the unpacked package to {}: {e}",
            dest.display()
        )),
    }
}

/// Whether apt has downloaded any package index (`apt-get update` has run).
fn has_package_lists() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

/// Runs `command`, turning a failure into a message with its stderr.
fn run(command: &mut Command) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if output.status.success() {
        return Ok(output);
    }
    Err(format!(
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}
