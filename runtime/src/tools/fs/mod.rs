//! File tools confined to the workspace root: `read_file`, `write_file`, `list_dir`, `grep`.
//!
//! Every path goes through [`resolve`]: it must be relative, may not contain `..`, and after
//! canonicalisation (which resolves symlinks) must still lie inside the canonical workspace root.
//! A symlink inside the root that points outside is therefore refused, for reading, writing and
//! listing alike; one that points inside is followed. `grep` never follows symlinks while
//! walking.
//!
//! The checked path is then opened through directory handles ([`handle`]): from a handle on the
//! root, one component at a time, each with `O_NOFOLLOW`. A directory swapped for a symlink
//! between the check and the use makes the call fail ("changed while it was being opened")
//! instead of reaching outside the workspace, so a process racing the agent inside the
//! workspace cannot turn the tool against files outside it.
//!
//! All file I/O runs on tokio's blocking pool, so the calling thread (an actor's arbiter) is
//! never blocked.
mod grep;
mod handle;

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::json;

use self::handle::{entries, Beneath, Kind};
use super::{arg_str, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

pub use self::grep::Grep;

/// Most entries `list_dir` returns; the rest are cut and `truncated` is set.
pub const MAX_LIST_ENTRIES: usize = 1000;
/// Most files one `grep` call reads; past it the search stops and `truncated` is set.
pub const MAX_GREP_FILES: usize = 10_000;
/// Matched lines longer than this many characters are cut.
pub const MAX_MATCH_TEXT_CHARS: usize = 500;
/// Compiled-size limit of a `grep` pattern, in bytes.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// How much of a path must already exist for [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    /// The whole path must exist (reading, listing, searching).
    Existing,
    /// Only an ancestor must exist; the rest will be created (writing).
    Create,
}

/// Resolves `rel` inside the workspace `root`, or refuses it.
///
/// Refused with [`ToolError::PathRefused`]: an empty path, an absolute path, any `..`
/// component, a path whose canonical form (symlinks resolved) is outside the canonical root, and
/// for [`PathAccess::Create`] a path through a broken symlink. With [`PathAccess::Existing`] the
/// whole path is canonicalised; with [`PathAccess::Create`] its deepest existing ancestor is, and
/// the missing components are appended to the result. Nothing is created here.
pub fn resolve(root: &Path, rel: &str, access: PathAccess) -> Result<PathBuf, ToolError> {
    if rel.is_empty() {
        return Err(ToolError::PathRefused("empty path".into()));
    }
    if rel.contains('\0') {
        return Err(ToolError::PathRefused(format!(
            "`{}` contains a NUL byte",
            rel.escape_debug()
        )));
    }
    let mut parts = Vec::new();
    for component in Path::new(rel).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ToolError::PathRefused(format!(
                    "`{rel}` contains `..`; paths must stay inside the workspace"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ToolError::PathRefused(format!(
                    "`{rel}` is absolute; use a path relative to the workspace root"
                )))
            }
        }
    }
    let root = root.canonicalize().map_err(|e| {
        ToolError::Failed(format!(
            "workspace root `{}` is not accessible: {e}",
            root.display()
        ))
    })?;
    let join = |n: usize| parts[..n].iter().fold(root.clone(), |p, c| p.join(c));
    match access {
        PathAccess::Existing => {
            let canonical = join(parts.len())
                .canonicalize()
                .map_err(|e| io_error(rel, &e))?;
            check_inside(&root, canonical, rel)
        }
        PathAccess::Create => {
            // Deepest ancestor that exists; `symlink_metadata` counts a dangling symlink as
            // existing, so it is caught below instead of being written through.
            let mut existing = parts.len();
            while existing > 0 {
                match fs::symlink_metadata(join(existing)) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => existing -= 1,
                    Err(e) => return Err(io_error(rel, &e)),
                }
            }
            let canonical = join(existing).canonicalize().map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ToolError::PathRefused(format!("`{rel}` goes through a broken symlink"))
                } else {
                    io_error(rel, &e)
                }
            })?;
            let base = check_inside(&root, canonical, rel)?;
            Ok(parts[existing..].iter().fold(base, |p, c| p.join(c)))
        }
    }
}

fn check_inside(root: &Path, canonical: PathBuf, rel: &str) -> Result<PathBuf, ToolError> {
    if canonical.starts_with(root) {
        Ok(canonical)
    } else {
        Err(ToolError::PathRefused(format!(
            "`{rel}` resolves outside the workspace"
        )))
    }
}

fn io_error(rel: &str, e: &std::io::Error) -> ToolError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ToolError::Failed(format!("`{rel}` does not exist"))
    } else {
        ToolError::Failed(format!("`{rel}`: {e}"))
    }
}

fn workspace(ctx: &ToolContext) -> Result<PathBuf, ToolError> {
    ctx.workspace
        .clone()
        .ok_or_else(|| ToolError::PathRefused("agent has no workspace".into()))
}

/// Reads an optional string argument.
fn arg_opt_str(args: &serde_json::Value, key: &str, default: &str) -> Result<String, ToolError> {
    match args.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default.to_owned()),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ToolError::InvalidArguments(format!(
            "`{key}` must be a string"
        ))),
    }
}

/// Runs blocking file work on tokio's blocking pool; a panic there becomes an error.
async fn blocking<T, F>(f: F) -> Result<T, ToolError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ToolError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ToolError::Failed(format!("file tool stopped unexpectedly: {e}")))?
}

/// Runs `f(root, args)` on the blocking pool once the workspace and arguments are known.
fn spawn_file_work<A, F>(
    ctx: &ToolContext,
    args: Result<A, ToolError>,
    f: F,
) -> BoxFuture<'static, Result<ToolOutput, ToolError>>
where
    A: Send + 'static,
    F: FnOnce(PathBuf, A) -> Result<ToolOutput, ToolError> + Send + 'static,
{
    let prepared = workspace(ctx).and_then(|root| Ok((root, args?)));
    Box::pin(async move {
        let (root, args) = prepared?;
        blocking(move || f(root, args)).await
    })
}

fn path_property(description: &str) -> serde_json::Value {
    json!({"type": "string", "description": description})
}

/// The `read_file` tool.
///
/// Arguments: `{"path": string}`. Result data: `{"path", "bytes", "content"}`.
#[derive(Debug, Clone, Copy)]
pub struct ReadFile;

impl Tool for ReadFile {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Pure
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: "Read a UTF-8 text file from the workspace.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": path_property("File path relative to the workspace root.")
                },
                "required": ["path"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let max = ctx.files.max_file_bytes;
        let rel = arg_str(&args, "path").map(str::to_owned);
        spawn_file_work(ctx, rel, move |root, rel| read_file(&root, &rel, max))
    }
}

fn too_big(rel: &str, size: u64, max: usize) -> ToolError {
    ToolError::Failed(format!(
        "`{rel}` is {size} bytes, over the {max}-byte limit of read_file"
    ))
}

fn read_file(root: &Path, rel: &str, max: usize) -> Result<ToolOutput, ToolError> {
    let path = resolve(root, rel, PathAccess::Existing)?;
    let file = Beneath::open(root)?.read(&path, rel)?;
    let len = file.metadata().map_err(|e| io_error(rel, &e))?.len();
    if len > max as u64 {
        return Err(too_big(rel, len, max));
    }
    let mut bytes = Vec::new();
    // One byte over the cap tells a file that grew since the size check.
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(rel, &e))?;
    if bytes.len() > max {
        return Err(too_big(rel, bytes.len() as u64, max));
    }
    let size = bytes.len();
    let text = String::from_utf8(bytes).map_err(|e| {
        ToolError::Failed(format!(
            "`{rel}` is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let content = if text.is_empty() {
        format!("(`{rel}` is empty)")
    } else {
        text.clone()
    };
    Ok(ToolOutput {
        content,
        data: json!({"path": rel, "bytes": size, "content": text}),
    })
}

/// The `write_file` tool.
///
/// Arguments: `{"path": string, "content": string}`. Creates missing parent directories and
/// replaces an existing file. Result data: `{"path", "bytes", "created"}`.
#[derive(Debug, Clone, Copy)]
pub struct WriteFile;

impl Tool for WriteFile {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Idempotent
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write_file".into(),
            description: "Write a text file in the workspace, creating parent directories and \
                          replacing any existing file."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": path_property("File path relative to the workspace root."),
                    "content": {"type": "string", "description": "The full new file content."}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let parsed = write_args(&args, ctx.files.max_file_bytes);
        spawn_file_work(ctx, parsed, |root, (rel, content)| {
            write_file(&root, &rel, &content)
        })
    }
}

fn write_args(args: &serde_json::Value, max: usize) -> Result<(String, String), ToolError> {
    let rel = arg_str(args, "path")?.to_owned();
    let content = arg_str(args, "content")?;
    if content.len() > max {
        return Err(ToolError::InvalidArguments(format!(
            "content is {} bytes, over the {max}-byte limit of write_file",
            content.len()
        )));
    }
    Ok((rel, content.to_owned()))
}

fn write_file(root: &Path, rel: &str, content: &str) -> Result<ToolOutput, ToolError> {
    let path = resolve(root, rel, PathAccess::Create)?;
    let (mut file, created) = Beneath::open(root)?.write(&path, rel)?;
    file.write_all(content.as_bytes())
        .map_err(|e| io_error(rel, &e))?;
    let verb = if created { "created" } else { "replaced" };
    Ok(ToolOutput {
        content: format!("{verb} `{rel}` ({} bytes)", content.len()),
        data: json!({"path": rel, "bytes": content.len(), "created": created}),
    })
}

/// The `list_dir` tool.
///
/// Arguments: `{"path"?: string}` (default `.`). Result data: `{"path", "entries": [{"name",
/// "kind": "file"|"dir"|"symlink"|"other", "size": bytes or null}], "truncated"}`, sorted by
/// name; `size` is set for files only. Symlinks are listed, not followed.
#[derive(Debug, Clone, Copy)]
pub struct ListDir;

impl Tool for ListDir {
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Pure
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_dir".into(),
            description: "List a directory of the workspace, sorted by name.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "description": "Directory relative to the workspace root.",
                        "default": "."
                    }
                },
                "required": [],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let rel = arg_opt_str(&args, "path", ".");
        spawn_file_work(ctx, rel, |root, rel| list_dir(&root, &rel))
    }
}

fn list_dir(root: &Path, rel: &str) -> Result<ToolOutput, ToolError> {
    let path = resolve(root, rel, PathAccess::Existing)?;
    let beneath = Beneath::open(root)?;
    let dir = beneath.dir(&path, rel).map_err(|e| match e {
        ToolError::Failed(m) if m.contains("not a directory") || m.contains("Not a directory") => {
            ToolError::Failed(format!("`{rel}` is not a directory"))
        }
        other => other,
    })?;
    let mut entries: Vec<(String, &str, Option<u64>)> = entries(&dir, rel)?
        .into_iter()
        .map(|e| {
            let kind = match e.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
                Kind::Symlink => "symlink",
                Kind::Other => "other",
            };
            (e.name.to_string_lossy().into_owned(), kind, e.size)
        })
        .collect();
    entries.sort();
    let truncated = entries.len() > MAX_LIST_ENTRIES;
    entries.truncate(MAX_LIST_ENTRIES);

    let mut content = format!("{rel}: {} entries", entries.len());
    if entries.is_empty() {
        content = format!("{rel}: empty directory");
    }
    for (name, kind, size) in &entries {
        content.push('\n');
        content.push_str(&match (*kind, size) {
            ("file", Some(size)) => format!("{name}  ({size} bytes)"),
            ("dir", _) => format!("{name}/"),
            ("symlink", _) => format!("{name}@  (symlink)"),
            (kind, _) => format!("{name}  ({kind})"),
        });
    }
    if truncated {
        content.push_str(&format!("\n(listing cut at {MAX_LIST_ENTRIES} entries)"));
    }
    let entries: Vec<_> = entries
        .into_iter()
        .map(|(name, kind, size)| json!({"name": name, "kind": kind, "size": size}))
        .collect();
    Ok(ToolOutput {
        content,
        data: json!({"path": rel, "entries": entries, "truncated": truncated}),
    })
}

#[cfg(test)]
mod tests;
