//! Opening workspace paths through directory handles, never by path.
//!
//! [`resolve`](super::resolve) checks a path and returns its canonical form: inside the root,
//! no `..`, no symlink. [`Beneath`] then opens that form from a handle on the workspace root,
//! one component at a time, every one with `O_NOFOLLOW` (`openat`). A symlink or a swapped
//! directory that appears between the check and the use makes the open fail instead of
//! escaping; the tool reports that the path changed while it was being opened. So the
//! check-then-use race is closed: whatever races the tool inside the workspace, nothing outside
//! it is read or written.
//!
//! Files are opened with `O_NONBLOCK` as well, so a FIFO planted in the workspace cannot hang
//! the tool; only regular files are read or written.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{mkdirat, openat, statat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::tools::ToolError;

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);
const WRITE_FLAGS: OFlags = OFlags::WRONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// The workspace root as an open directory handle.
#[derive(Debug)]
pub(super) struct Beneath {
    root: OwnedFd,
    root_path: PathBuf,
}

/// One directory entry, not followed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    /// The name.
    pub name: OsString,
    /// Its kind (a symlink is a symlink).
    pub kind: Kind,
    /// Its size, for regular files.
    pub size: Option<u64>,
}

/// The kinds of entry the tools tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

impl Beneath {
    /// Opens the canonical workspace `root`.
    pub fn open(root: &Path) -> Result<Beneath, ToolError> {
        let root_path = root.canonicalize().map_err(|e| {
            ToolError::Failed(format!(
                "workspace root `{}` is not accessible: {e}",
                root.display()
            ))
        })?;
        let root = openat(rustix::fs::CWD, &root_path, DIR_FLAGS, Mode::empty()).map_err(|e| {
            ToolError::Failed(format!(
                "workspace root `{}` cannot be opened: {e}",
                root_path.display()
            ))
        })?;
        Ok(Beneath { root, root_path })
    }

    /// The canonical root path.
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The components of `path` (a resolved path under the root) below the root.
    fn components<'p>(&self, path: &'p Path, rel: &str) -> Result<Vec<&'p OsStr>, ToolError> {
        let below = path.strip_prefix(&self.root_path).map_err(|_| {
            ToolError::PathRefused(format!("`{rel}` resolves outside the workspace"))
        })?;
        below
            .components()
            .map(|c| match c {
                Component::Normal(part) => Ok(part),
                _ => Err(ToolError::PathRefused(format!(
                    "`{rel}` is not a plain path below the workspace"
                ))),
            })
            .collect()
    }

    /// Walks `parts` from the root, each a directory opened with `O_NOFOLLOW`; with `create`,
    /// missing ones are made.
    fn walk(&self, parts: &[&OsStr], rel: &str, create: bool) -> Result<OwnedFd, ToolError> {
        let mut dir =
            openat(&self.root, ".", DIR_FLAGS, Mode::empty()).map_err(|e| errno(rel, e))?;
        for part in parts {
            let next = match openat(&dir, *part, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match mkdirat(&dir, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(errno(rel, e)),
                    }
                    openat(&dir, *part, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            dir = next.map_err(|e| explain(dir.as_fd(), part, rel, e, Kind::Dir))?;
        }
        Ok(dir)
    }

    /// Opens the existing directory `path` (resolved).
    pub fn dir(&self, path: &Path, rel: &str) -> Result<OwnedFd, ToolError> {
        let parts = self.components(path, rel)?;
        self.walk(&parts, rel, false)
    }

    /// Opens the existing regular file `path` (resolved) for reading.
    pub fn read(&self, path: &Path, rel: &str) -> Result<File, ToolError> {
        let parts = self.components(path, rel)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(ToolError::Failed(format!(
                "`{rel}` is a directory; use list_dir"
            )));
        };
        let dir = self.walk(parents, rel, false)?;
        let fd = openat(&dir, *name, READ_FLAGS, Mode::empty())
            .map_err(|e| explain(dir.as_fd(), name, rel, e, Kind::File))?;
        regular(fd, rel).map_err(|e| match e {
            ToolError::Failed(m) if m.ends_with("is a directory") => {
                ToolError::Failed(format!("{m}; use list_dir"))
            }
            other => other,
        })
    }

    /// Opens `path` (resolved, for creation) for writing, creating missing parent directories
    /// and the file; truncates an existing file. Returns the file and whether it was created.
    pub fn write(&self, path: &Path, rel: &str) -> Result<(File, bool), ToolError> {
        let parts = self.components(path, rel)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(ToolError::Failed(format!("`{rel}` is a directory")));
        };
        let dir = self.walk(parents, rel, true)?;
        let create = WRITE_FLAGS | OFlags::CREATE | OFlags::EXCL;
        let mode = Mode::from_raw_mode(0o644);
        match openat(&dir, *name, create, mode) {
            Ok(fd) => Ok((regular(fd, rel)?, true)),
            Err(Errno::EXIST) => {
                let fd = openat(&dir, *name, WRITE_FLAGS, Mode::empty())
                    .map_err(|e| explain(dir.as_fd(), name, rel, e, Kind::File))?;
                let file = regular(fd, rel)?;
                file.set_len(0).map_err(|e| io(rel, &e))?;
                Ok((file, false))
            }
            Err(e) => Err(explain(dir.as_fd(), name, rel, e, Kind::File)),
        }
    }
}

/// The entries of the open directory `dir` (without `.` and `..`), unsorted; symlinks are
/// listed as such, never followed.
pub(super) fn entries(dir: &OwnedFd, rel: &str) -> Result<Vec<Entry>, ToolError> {
    let mut out = Vec::new();
    let listing = Dir::read_from(dir).map_err(|e| errno(rel, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| errno(rel, e))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let stat = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let kind = match stat.map(|s| FileType::from_raw_mode(s.st_mode)) {
            Some(t) => kind_of(t),
            None => kind_of(entry.file_type()),
        };
        let size = match (kind, stat) {
            (Kind::File, Some(s)) => u64::try_from(s.st_size).ok(),
            _ => None,
        };
        out.push(Entry {
            name: name.to_owned(),
            kind,
            size,
        });
    }
    Ok(out)
}

/// Opens the entry `name` of `dir`, not following it: a directory handle, or a regular file.
pub(super) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> Option<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty()).ok()
}

/// Opens the regular file `name` of `dir` for reading, not following it.
pub(super) fn open_file_at(dir: &OwnedFd, name: &OsStr) -> Option<File> {
    let fd = openat(dir, name, READ_FLAGS, Mode::empty()).ok()?;
    regular(fd, "").ok()
}

fn kind_of(t: FileType) -> Kind {
    match t {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

/// `fd` as a [`File`] if it is a regular file.
fn regular(fd: OwnedFd, rel: &str) -> Result<File, ToolError> {
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| io(rel, &e))?;
    if meta.is_dir() {
        return Err(ToolError::Failed(format!("`{rel}` is a directory")));
    }
    if !meta.is_file() {
        return Err(ToolError::Failed(format!("`{rel}` is not a regular file")));
    }
    Ok(file)
}

/// Turns a failed `openat(dir, name)` into the error the model reads. `ELOOP` (a symlink met
/// `O_NOFOLLOW`) and `ENOTDIR` on what the check saw as a directory mean the tree changed
/// between the check and the open.
fn explain(dir: BorrowedFd<'_>, name: &OsStr, rel: &str, e: Errno, wanted: Kind) -> ToolError {
    let now = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|s| kind_of(FileType::from_raw_mode(s.st_mode)));
    match (e, now) {
        (Errno::LOOP, _) | (Errno::NOTDIR, Some(Kind::Symlink)) => ToolError::PathRefused(format!(
            "`{rel}` changed while it was being opened: `{}` is now a symlink",
            name.to_string_lossy()
        )),
        (Errno::ISDIR, _) => ToolError::Failed(format!("`{rel}` is a directory")),
        (Errno::NOTDIR, _) if wanted == Kind::Dir => ToolError::Failed(format!(
            "`{rel}`: `{}` is not a directory",
            name.to_string_lossy()
        )),
        _ => errno(rel, e),
    }
}

fn errno(rel: &str, e: Errno) -> ToolError {
    io(rel, &std::io::Error::from(e))
}

fn io(rel: &str, e: &std::io::Error) -> ToolError {
    super::io_error(rel, e)
}
