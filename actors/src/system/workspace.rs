//! This run's folder and the workspace copies agents work in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use agentos_runtime::config::Config;
use anyhow::Context as _;

/// Creates `<data_dir>/runs/<millis>-<pid>-<seq>` and returns its canonical path.
pub fn new_run_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = data_dir
        .join("runs")
        .join(format!("{stamp}-{}-{seq}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create run folder {}", dir.display()))?;
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// Copies every workspace marked `copy: true` into `run_dir/workspaces/`, once per root,
/// leaving out the names its `exclude` list gives; a copy that is already there (a resumed
/// run) is used as it is. Returns original root -> path to use.
pub fn prepare_workspaces(
    cfg: &Config,
    run_dir: &Path,
) -> anyhow::Result<HashMap<PathBuf, PathBuf>> {
    let mut out = HashMap::new();
    for a in &cfg.agents {
        let Some(w) = &a.workspace else { continue };
        if !w.copy || out.contains_key(&w.root) {
            continue;
        }
        let name = w
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let dest = run_dir
            .join("workspaces")
            .join(format!("{}-{name}", out.len()));
        if dest.is_dir() {
            // A resumed run: the copy holds what the run already did to it.
            let dest = std::fs::canonicalize(&dest)?;
            out.insert(w.root.clone(), dest);
            continue;
        }
        copy_tree(&w.root, &dest, &w.exclude).with_context(|| {
            format!(
                "agent \"{}\": cannot copy workspace {} to {}",
                a.name,
                w.root.display(),
                dest.display()
            )
        })?;
        let dest = std::fs::canonicalize(&dest)?;
        out.insert(w.root.clone(), dest);
    }
    Ok(out)
}

/// Recursive copy of regular files and folders, skipping entries named in `exclude`; symlinks
/// are neither followed nor copied.
fn copy_tree(from: &Path, to: &Path, exclude: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if exclude.iter().any(|x| name == x.as_str()) {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, exclude)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_names_are_left_out_at_any_depth() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("pkg/__pycache__")).unwrap();
        std::fs::write(src.path().join("pkg/mod.py"), "x = 1").unwrap();
        std::fs::write(src.path().join("pkg/__pycache__/mod.pyc"), "junk").unwrap();
        std::fs::write(src.path().join("keep.txt"), "k").unwrap();
        std::fs::write(src.path().join("secret.env"), "s").unwrap();
        let to = dst.path().join("copy");
        copy_tree(
            src.path(),
            &to,
            &["__pycache__".to_owned(), "secret.env".to_owned()],
        )
        .unwrap();
        assert!(to.join("pkg/mod.py").is_file());
        assert!(to.join("keep.txt").is_file());
        assert!(!to.join("pkg/__pycache__").exists());
        assert!(!to.join("secret.env").exists());
    }
}
