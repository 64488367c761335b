//! Per-command pids cgroups: the process limit when the runtime runs as root.
//!
//! The kernel never enforces `RLIMIT_NPROC` for uid 0 (its processes are charged to the
//! initial user however namespaced they are), so as root every command gets its own pids
//! cgroup: `<the runtime's own pids cgroup>/agentos-<pid>-<seq>` with `pids.max` set to the
//! agent's `max_processes`. The launcher joins it before anything else. When the command
//! ends, `pids.events` tells whether the limit was hit, every process still in the cgroup is
//! killed (a process that left the process group with `setsid` included), and the cgroup is
//! removed.
//!
//! Both cgroup versions work: v1 wherever a `pids` hierarchy is mounted writable; v2 where
//! the runtime's cgroup lets it create children with the pids controller (the test is one
//! `mkdir`). Directory creation and the small control-file writes are fast in-memory
//! filesystem operations, done inline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The cgroup directory new command cgroups are created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsCgroups {
    /// The runtime's own pids cgroup directory.
    pub base: PathBuf,
}

/// One command's cgroup; [`CommandCgroup::finish`] empties and removes it. Dropped without
/// `finish` (the call was cancelled), it kills its members and is removed by a short-lived
/// background thread.
#[derive(Debug)]
pub struct CommandCgroup {
    dir: PathBuf,
    done: bool,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl PidsCgroups {
    /// Finds the runtime's pids cgroup and checks that a child with a `pids.max` can be made
    /// in it. `Err` says why not.
    pub fn detect() -> Result<PidsCgroups, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let base = find_base(&mountinfo, &own)
            .ok_or_else(|| "no pids cgroup controller is mounted".to_owned())?;
        let groups = PidsCgroups { base };
        let probe = groups.create(1).map_err(|e| {
            format!(
                "cannot create a pids cgroup under {}: {e}",
                groups.base.display()
            )
        })?;
        probe.remove_now();
        Ok(groups)
    }

    /// Creates a cgroup allowing `max_processes` processes.
    pub fn create(&self, max_processes: u64) -> std::io::Result<CommandCgroup> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .base
            .join(format!("agentos-{}-{seq}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let mut group = CommandCgroup { dir, done: false };
        let max = group.dir.join("pids.max");
        if !max.exists() {
            group.remove();
            group.done = true;
            return Err(std::io::Error::other(
                "the pids controller is not enabled for this cgroup's children",
            ));
        }
        if let Err(e) = std::fs::write(&max, max_processes.to_string()) {
            group.remove();
            group.done = true;
            return Err(e);
        }
        Ok(group)
    }
}

/// The pids cgroup directory of this process, from `/proc/self/mountinfo` and
/// `/proc/self/cgroup`: a v1 hierarchy with the `pids` controller first, else the v2 one.
fn find_base(mountinfo: &str, own: &str) -> Option<PathBuf> {
    let own_path = |v1: bool| {
        own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let hit = if v1 {
                controllers.split(',').any(|c| c == "pids")
            } else {
                controllers.is_empty()
            };
            hit.then(|| path.to_owned())
        })
    };
    let mounts = mountinfo.lines().filter_map(|l| {
        // `id parent major:minor root mount-point options [optional...] - fstype source super`
        let (left, right) = l.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        Some((
            *left.get(3)?,
            *left.get(4)?,
            *right.first()?,
            *right.get(2)?,
        ))
    });
    let mut v2 = None;
    for (root, point, fstype, options) in mounts {
        if fstype == "cgroup" && options.split(',').any(|o| o == "pids") {
            return join_under(point, root, &own_path(true)?);
        }
        if fstype == "cgroup2" && v2.is_none() {
            v2 = Some((point.to_owned(), root.to_owned()));
        }
    }
    let (point, root) = v2?;
    join_under(&point, &root, &own_path(false)?)
}

/// `mount_point + (cgroup_path relative to the mount's root)`.
fn join_under(point: &str, root: &str, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path).strip_prefix(root).ok()?;
    Some(Path::new(point).join(rel))
}

/// Moves the calling process into the cgroup `dir` (launcher side).
pub fn join(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

impl CommandCgroup {
    /// The cgroup directory, for the launcher.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// True when a fork failed because `pids.max` was reached.
    pub fn limit_hit(&self) -> bool {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("max ").map(|n| n.trim().parse::<u64>()))
            })
            .and_then(Result::ok)
            .is_some_and(|n| n > 0)
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every process left in the cgroup, waits (up to `patience`) until it is empty,
    /// and removes it. Returns whether the limit was hit. A cgroup that will not empty is
    /// left behind (logged); it holds no running process of ours once its members die.
    pub async fn finish(mut self, patience: Duration) -> bool {
        self.done = true;
        let hit = self.limit_hit();
        let deadline = Instant::now() + patience;
        loop {
            // Removal fails while a member (or a zombie not yet reaped) remains.
            if self.kill_members() && self.try_remove() {
                return hit;
            }
            if Instant::now() >= deadline {
                tracing::warn!(cgroup = %self.dir.display(), "command cgroup did not empty");
                return hit;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Removes the (empty) cgroup; true when it is gone.
    fn try_remove(&self) -> bool {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }
    }

    /// Removes a cgroup that never held a process.
    fn remove(&self) {
        if !self.try_remove() {
            tracing::warn!(cgroup = %self.dir.display(), "cannot remove command cgroup");
        }
    }

    /// Removes a cgroup that never held a process, and forgets it.
    fn remove_now(mut self) {
        self.done = true;
        self.remove();
    }

    /// Sends `SIGKILL` to every member; true when there were none.
    pub fn kill_members(&self) -> bool {
        let pids = self.pids();
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        pids.is_empty()
    }
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.kill_members() && self.try_remove() {
            return;
        }
        let group = CommandCgroup {
            dir: std::mem::take(&mut self.dir),
            done: true,
        };
        // Killed members take a moment to be reaped; finish off the thread, not the caller.
        let spawned = std::thread::Builder::new()
            .name("cgroup-cleanup".into())
            .spawn(move || {
                for _ in 0..400 {
                    if group.kill_members() && group.try_remove() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                tracing::warn!(cgroup = %group.dir.display(), "command cgroup did not empty");
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the cgroup cleanup thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_v1_pids_hierarchy_first() {
        let own = "9:name=systemd:/\n8:pids:/jobs/a\n0::/x\n";
        assert_eq!(
            find_base(MOUNTINFO, own),
            Some(PathBuf::from("/sys/fs/cgroup/pids/jobs/a"))
        );
    }

    #[test]
    fn falls_back_to_v2_and_honours_the_mount_root() {
        let mountinfo = "30 23 0:27 /ns /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_base(mountinfo, "0::/ns/svc\n"),
            Some(PathBuf::from("/sys/fs/cgroup/svc"))
        );
        assert_eq!(find_base("", "0::/\n"), None);
    }
}
