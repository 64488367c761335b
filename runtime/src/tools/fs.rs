//! File tools confined to the workspace root: `read_file`, `write_file`, `list_dir`, `grep`.
//!
//! Every path goes through [`resolve`]: it must be relative, may not contain `..`, and after
//! canonicalisation (which resolves symlinks) must still lie inside the canonical workspace root.
//! A symlink inside the root that points outside is therefore refused, for reading, writing and
//! listing alike. `grep` never follows symlinks while walking.
//!
//! The check and the use are two steps, so a process racing the agent inside the workspace could
//! still swap a directory for a symlink in between; the sandbox guards against the model's
//! arguments, not against hostile local processes.
//!
//! All file I/O runs on tokio's blocking pool, so the calling thread (an actor's arbiter) is
//! never blocked.
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;
use serde_json::json;

use super::{arg_str, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolSpec;

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
    let meta = fs::metadata(&path).map_err(|e| io_error(rel, &e))?;
    if meta.is_dir() {
        return Err(ToolError::Failed(format!(
            "`{rel}` is a directory; use list_dir"
        )));
    }
    if !meta.is_file() {
        return Err(ToolError::Failed(format!("`{rel}` is not a regular file")));
    }
    if meta.len() > max as u64 {
        return Err(too_big(rel, meta.len(), max));
    }
    let file = fs::File::open(&path).map_err(|e| io_error(rel, &e))?;
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
    let created = match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(ToolError::Failed(format!("`{rel}` is a directory")));
        }
        Ok(_) => false,
        Err(_) => true,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| io_error(rel, &e))?;
    }
    fs::write(&path, content).map_err(|e| io_error(rel, &e))?;
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
    if !path.is_dir() {
        return Err(ToolError::Failed(format!("`{rel}` is not a directory")));
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(&path).map_err(|e| io_error(rel, &e))? {
        let entry = entry.map_err(|e| io_error(rel, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let (kind, size) = match entry.file_type() {
            Ok(t) if t.is_file() => ("file", entry.metadata().ok().map(|m| m.len())),
            Ok(t) if t.is_dir() => ("dir", None),
            Ok(t) if t.is_symlink() => ("symlink", None),
            _ => ("other", None),
        };
        entries.push((name, kind, size));
    }
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

/// The `grep` tool.
///
/// Arguments: `{"pattern": regex, "path"?: string (default `.`), "max_matches"?: integer}`.
/// Searches a file or, recursively, a directory (symlinks not followed; binary, non-UTF-8 and
/// oversized files skipped). Returns at most `min(max_matches, settings.max_matches)` matches.
/// Result data: `{"pattern", "matches": [{"path", "line", "text"}], "truncated"}` with `path`
/// relative to the workspace root and `/`-separated, `line` 1-based.
#[derive(Debug, Clone, Copy)]
pub struct Grep;

impl Tool for Grep {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "grep".into(),
            description: "Search workspace files for lines matching a regular expression.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "pattern": {
                        "type": "string",
                        "description": "Regular expression (Rust regex syntax), matched per line."
                    },
                    "path": {
                        "type": "string",
                        "description": "File or directory relative to the workspace root.",
                        "default": "."
                    },
                    "max_matches": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Stop after this many matches."
                    }
                },
                "required": ["pattern"],
                "additionalProperties": false
            }),
        }
    }

    fn call(
        &self,
        ctx: &ToolContext,
        args: serde_json::Value,
    ) -> BoxFuture<'static, Result<ToolOutput, ToolError>> {
        let files = ctx.files.clone();
        let parsed = grep_args(&args, files.max_matches);
        spawn_file_work(ctx, parsed, move |root, (pattern, rel, limit)| {
            grep(&root, &pattern, &rel, limit, files.max_file_bytes)
        })
    }
}

fn grep_args(
    args: &serde_json::Value,
    max_matches: usize,
) -> Result<(String, String, usize), ToolError> {
    let pattern = arg_str(args, "pattern")?.to_owned();
    let rel = arg_opt_str(args, "path", ".")?;
    let limit = match args.get("max_matches") {
        None | Some(serde_json::Value::Null) => max_matches,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX).min(max_matches),
            _ => {
                return Err(ToolError::InvalidArguments(
                    "`max_matches` must be a positive integer".into(),
                ))
            }
        },
    };
    Ok((pattern, rel, limit))
}

struct Search {
    regex: regex::Regex,
    root: PathBuf,
    limit: usize,
    max_file_bytes: usize,
    matches: Vec<serde_json::Value>,
    lines: Vec<String>,
    files_read: usize,
    truncated: bool,
}

impl Search {
    /// Searches one file; returns false once the search must stop.
    fn file(&mut self, path: &Path, size: u64) -> bool {
        if self.files_read >= MAX_GREP_FILES {
            self.truncated = true;
            return false;
        }
        if size > self.max_file_bytes as u64 {
            return true;
        }
        self.files_read += 1;
        let Ok(bytes) = fs::read(path) else {
            return true;
        };
        if bytes.contains(&0) {
            return true;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return true;
        };
        let shown = relative(&self.root, path);
        for (index, line) in text.lines().enumerate() {
            if !self.regex.is_match(line) {
                continue;
            }
            if self.matches.len() >= self.limit {
                self.truncated = true;
                return false;
            }
            let text: String = line.chars().take(MAX_MATCH_TEXT_CHARS).collect();
            self.lines.push(format!("{shown}:{}: {text}", index + 1));
            self.matches
                .push(json!({"path": shown, "line": index + 1, "text": text}));
        }
        true
    }

    fn walk(&mut self, start: PathBuf) {
        let mut dirs = vec![start];
        while let Some(dir) = dirs.pop() {
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            let mut entries: Vec<_> = read.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for entry in entries {
                match entry.file_type() {
                    Ok(t) if t.is_dir() => subdirs.push(entry.path()),
                    Ok(t) if t.is_file() => {
                        let size = entry.metadata().map_or(u64::MAX, |m| m.len());
                        if !self.file(&entry.path(), size) {
                            return;
                        }
                    }
                    // Symlinks and special files are never followed or read.
                    _ => {}
                }
            }
            dirs.extend(subdirs.into_iter().rev());
        }
    }
}

/// `path` relative to `root`, `/`-separated.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn grep(
    root: &Path,
    pattern: &str,
    rel: &str,
    limit: usize,
    max_file_bytes: usize,
) -> Result<ToolOutput, ToolError> {
    let regex = regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| ToolError::InvalidArguments(format!("invalid regex `{pattern}`: {e}")))?;
    let start = resolve(root, rel, PathAccess::Existing)?;
    let canonical_root = root
        .canonicalize()
        .map_err(|e| ToolError::Failed(format!("workspace root is not accessible: {e}")))?;
    let meta = fs::metadata(&start).map_err(|e| io_error(rel, &e))?;
    let mut search = Search {
        regex,
        root: canonical_root,
        limit,
        max_file_bytes,
        matches: Vec::new(),
        lines: Vec::new(),
        files_read: 0,
        truncated: false,
    };
    if meta.is_file() {
        search.file(&start, meta.len());
    } else if meta.is_dir() {
        search.walk(start);
    } else {
        return Err(ToolError::Failed(format!(
            "`{rel}` is neither a file nor a directory"
        )));
    }
    let mut content = if search.lines.is_empty() {
        format!("no matches for `{pattern}` in `{rel}`")
    } else {
        search.lines.join("\n")
    };
    if search.truncated {
        content.push_str(&format!(
            "\n(stopped after {} matches; narrow the pattern or the path)",
            search.matches.len()
        ));
    }
    Ok(ToolOutput {
        content,
        data: json!({
            "pattern": pattern,
            "matches": search.matches,
            "truncated": search.truncated,
        }),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::sync::Arc;

    use super::*;
    use crate::tools::test_support::context;
    use crate::tools::FileSettings;

    struct Fixture {
        root: tempfile::TempDir,
        outside: tempfile::TempDir,
        ctx: ToolContext,
    }

    /// A workspace with `hello.txt`, `sub/inner.txt`, and symlinks `link` (to a directory
    /// outside), `flink` (to a file outside) and `dangle` (to a missing file outside).
    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(root.path().join("hello.txt"), "hello\nworld\n").unwrap();
        fs::create_dir(root.path().join("sub")).unwrap();
        fs::write(root.path().join("sub/inner.txt"), "inner hello\n").unwrap();
        fs::write(outside.path().join("secret.txt"), "secret hello\n").unwrap();
        symlink(outside.path(), root.path().join("link")).unwrap();
        symlink(outside.path().join("secret.txt"), root.path().join("flink")).unwrap();
        symlink(outside.path().join("new.txt"), root.path().join("dangle")).unwrap();
        let ctx = context(Some(root.path().canonicalize().unwrap()));
        Fixture { root, outside, ctx }
    }

    const ESCAPES: &[&str] = &[
        "../x",
        "/etc/passwd",
        "a/../../x",
        "sub/../../x",
        "link/secret.txt",
        "flink",
        "link",
    ];

    fn refused(r: Result<ToolOutput, ToolError>, what: &str) -> String {
        match r {
            Err(ToolError::PathRefused(m)) => m,
            other => panic!("{what}: expected PathRefused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn read_file_works() {
        let f = fixture();
        let out = ReadFile
            .call(&f.ctx, json!({"path": "sub/inner.txt"}))
            .await
            .unwrap();
        assert_eq!(out.content, "inner hello\n");
        assert_eq!(out.data["bytes"], 12);
        let out = ReadFile
            .call(&f.ctx, json!({"path": "./hello.txt"}))
            .await
            .unwrap();
        assert_eq!(out.data["content"], "hello\nworld\n");
    }

    #[tokio::test]
    async fn read_file_errors() {
        let f = fixture();
        let e = ReadFile
            .call(&f.ctx, json!({"path": "missing.txt"}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::Failed("`missing.txt` does not exist".into()));
        let e = ReadFile
            .call(&f.ctx, json!({"path": "sub"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::Failed(m) if m.contains("is a directory")));
        fs::write(f.root.path().join("bin.dat"), [0xff, 0xfe, 0x00]).unwrap();
        let e = ReadFile
            .call(&f.ctx, json!({"path": "bin.dat"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::Failed(m) if m.contains("not UTF-8")));
        let e = ReadFile.call(&f.ctx, json!({})).await.unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments("`path` (string) is required".into())
        );
        let e = ReadFile
            .call(&f.ctx, json!({"path": ""}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::PathRefused("empty path".into()));
    }

    #[tokio::test]
    async fn oversize_read_refused() {
        let mut f = fixture();
        f.ctx.files = Arc::new(FileSettings {
            max_file_bytes: 8,
            max_matches: 10,
        });
        let e = ReadFile
            .call(&f.ctx, json!({"path": "hello.txt"}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::Failed("`hello.txt` is 12 bytes, over the 8-byte limit of read_file".into())
        );
        let e = WriteFile
            .call(&f.ctx, json!({"path": "big.txt", "content": "0123456789"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.contains("8-byte limit")));
        assert!(!f.root.path().join("big.txt").exists());
    }

    #[tokio::test]
    async fn no_workspace_refused() {
        let ctx = context(None);
        for (tool, args) in [
            (&ReadFile as &dyn Tool, json!({"path": "a"})),
            (&WriteFile, json!({"path": "a", "content": ""})),
            (&ListDir, json!({})),
            (&Grep, json!({"pattern": "a"})),
        ] {
            let e = tool.call(&ctx, args).await.unwrap_err();
            assert_eq!(e, ToolError::PathRefused("agent has no workspace".into()));
        }
    }

    #[tokio::test]
    async fn escapes_refused_for_read_write_and_list() {
        let f = fixture();
        for path in ESCAPES {
            let r = ReadFile.call(&f.ctx, json!({"path": path})).await;
            let msg = refused(r, &format!("read {path}"));
            assert!(msg.contains(path), "{msg}");
            let r = WriteFile
                .call(&f.ctx, json!({"path": path, "content": "x"}))
                .await;
            refused(r, &format!("write {path}"));
            let r = ListDir.call(&f.ctx, json!({"path": path})).await;
            refused(r, &format!("list {path}"));
            let r = Grep
                .call(&f.ctx, json!({"pattern": "hello", "path": path}))
                .await;
            refused(r, &format!("grep {path}"));
        }
        // Writing through a symlinked directory or a dangling symlink is refused too.
        for path in ["link/new.txt", "link/deeper/new.txt", "dangle"] {
            let r = WriteFile
                .call(&f.ctx, json!({"path": path, "content": "x"}))
                .await;
            refused(r, &format!("write {path}"));
        }
        assert_eq!(
            fs::read_to_string(f.outside.path().join("secret.txt")).unwrap(),
            "secret hello\n"
        );
        assert!(!f.outside.path().join("new.txt").exists());
        assert!(!f.outside.path().join("deeper").exists());
    }

    #[tokio::test]
    async fn symlink_inside_root_is_allowed() {
        let f = fixture();
        symlink("hello.txt", f.root.path().join("alias")).unwrap();
        let out = ReadFile
            .call(&f.ctx, json!({"path": "alias"}))
            .await
            .unwrap();
        assert_eq!(out.data["content"], "hello\nworld\n");
    }

    #[tokio::test]
    async fn write_file_creates_and_replaces() {
        let f = fixture();
        let out = WriteFile
            .call(&f.ctx, json!({"path": "new/deep/a.txt", "content": "one"}))
            .await
            .unwrap();
        assert_eq!(
            out.data,
            json!({"path": "new/deep/a.txt", "bytes": 3, "created": true})
        );
        assert_eq!(
            fs::read_to_string(f.root.path().join("new/deep/a.txt")).unwrap(),
            "one"
        );
        let out = WriteFile
            .call(&f.ctx, json!({"path": "new/deep/a.txt", "content": "two!"}))
            .await
            .unwrap();
        assert_eq!(out.content, "replaced `new/deep/a.txt` (4 bytes)");
        let e = WriteFile
            .call(&f.ctx, json!({"path": "sub", "content": "x"}))
            .await
            .unwrap_err();
        assert_eq!(e, ToolError::Failed("`sub` is a directory".into()));
        let e = WriteFile
            .call(&f.ctx, json!({"path": "a.txt"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.contains("content")));
    }

    #[tokio::test]
    async fn list_dir_sorted_with_kinds() {
        let f = fixture();
        let out = ListDir.call(&f.ctx, json!({})).await.unwrap();
        assert_eq!(
            out.data["entries"],
            json!([
                {"name": "dangle", "kind": "symlink", "size": null},
                {"name": "flink", "kind": "symlink", "size": null},
                {"name": "hello.txt", "kind": "file", "size": 12},
                {"name": "link", "kind": "symlink", "size": null},
                {"name": "sub", "kind": "dir", "size": null},
            ])
        );
        assert_eq!(out.data["truncated"], false);
        assert!(out.content.contains("hello.txt  (12 bytes)"));
        assert!(out.content.contains("sub/"));
        let out = ListDir.call(&f.ctx, json!({"path": "sub"})).await.unwrap();
        assert_eq!(out.data["entries"][0]["name"], "inner.txt");
        let e = ListDir
            .call(&f.ctx, json!({"path": "hello.txt"}))
            .await
            .unwrap_err();
        assert_eq!(
            e,
            ToolError::Failed("`hello.txt` is not a directory".into())
        );
        let e = ListDir.call(&f.ctx, json!({"path": 3})).await.unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(_)));
    }

    #[tokio::test]
    async fn grep_walks_without_following_symlinks() {
        let f = fixture();
        fs::write(f.root.path().join("bin.dat"), b"hello\0binary").unwrap();
        let out = Grep
            .call(&f.ctx, json!({"pattern": "hel+o"}))
            .await
            .unwrap();
        assert_eq!(
            out.data["matches"],
            json!([
                {"path": "hello.txt", "line": 1, "text": "hello"},
                {"path": "sub/inner.txt", "line": 1, "text": "inner hello"},
            ])
        );
        assert_eq!(out.data["truncated"], false);
        assert_eq!(
            out.content,
            "hello.txt:1: hello\nsub/inner.txt:1: inner hello"
        );

        let out = Grep
            .call(&f.ctx, json!({"pattern": "(?i)WORLD", "path": "hello.txt"}))
            .await
            .unwrap();
        assert_eq!(
            out.data["matches"],
            json!([{"path": "hello.txt", "line": 2, "text": "world"}])
        );

        let out = Grep
            .call(&f.ctx, json!({"pattern": "nothing-here"}))
            .await
            .unwrap();
        assert_eq!(out.data["matches"], json!([]));
        assert!(out.content.starts_with("no matches"));
    }

    #[tokio::test]
    async fn grep_limits() {
        let mut f = fixture();
        let long = "x".repeat(2000);
        fs::write(
            f.root.path().join("many.txt"),
            format!("{long}\n").repeat(10),
        )
        .unwrap();
        let out = Grep
            .call(
                &f.ctx,
                json!({"pattern": "x", "path": "many.txt", "max_matches": 3}),
            )
            .await
            .unwrap();
        assert_eq!(out.data["matches"].as_array().unwrap().len(), 3);
        assert_eq!(out.data["truncated"], true);
        assert_eq!(
            out.data["matches"][0]["text"].as_str().unwrap().len(),
            MAX_MATCH_TEXT_CHARS
        );
        f.ctx.files = Arc::new(FileSettings {
            max_file_bytes: 1 << 20,
            max_matches: 2,
        });
        let out = Grep
            .call(&f.ctx, json!({"pattern": "x", "max_matches": 50}))
            .await
            .unwrap();
        assert_eq!(out.data["matches"].as_array().unwrap().len(), 2);
        assert_eq!(out.data["truncated"], true);
        // Files over the size cap are skipped.
        f.ctx.files = Arc::new(FileSettings {
            max_file_bytes: 100,
            max_matches: 50,
        });
        let out = Grep.call(&f.ctx, json!({"pattern": "x"})).await.unwrap();
        assert_eq!(out.data["matches"], json!([]));
    }

    #[tokio::test]
    async fn grep_bad_arguments() {
        let f = fixture();
        let e = Grep
            .call(&f.ctx, json!({"pattern": "(unclosed"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.starts_with("invalid regex")));
        let e = Grep
            .call(&f.ctx, json!({"pattern": "a{1000}{1000}"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(_)));
        for bad in [json!(0), json!(-1), json!("5"), json!(1.5)] {
            let e = Grep
                .call(&f.ctx, json!({"pattern": "a", "max_matches": bad}))
                .await
                .unwrap_err();
            assert_eq!(
                e,
                ToolError::InvalidArguments("`max_matches` must be a positive integer".into())
            );
        }
        let e = Grep.call(&f.ctx, json!({})).await.unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(m) if m.contains("pattern")));
    }

    #[test]
    fn resolve_rules() {
        let f = fixture();
        let root = f.root.path().canonicalize().unwrap();
        assert_eq!(resolve(&root, ".", PathAccess::Existing).unwrap(), root);
        assert_eq!(
            resolve(&root, "sub/x/y.txt", PathAccess::Create).unwrap(),
            root.join("sub/x/y.txt")
        );
        assert!(matches!(
            resolve(&root, "a\0b", PathAccess::Create),
            Err(ToolError::PathRefused(_))
        ));
        assert_eq!(
            resolve(&root, "../x", PathAccess::Create),
            Err(ToolError::PathRefused(
                "`../x` contains `..`; paths must stay inside the workspace".into()
            ))
        );
        assert_eq!(
            resolve(&root, "/etc/passwd", PathAccess::Existing),
            Err(ToolError::PathRefused(
                "`/etc/passwd` is absolute; use a path relative to the workspace root".into()
            ))
        );
        assert_eq!(
            resolve(&root, "flink", PathAccess::Existing),
            Err(ToolError::PathRefused(
                "`flink` resolves outside the workspace".into()
            ))
        );
    }

    #[test]
    fn specs_list_required_arguments() {
        assert_eq!(ReadFile.spec().parameters["required"], json!(["path"]));
        assert_eq!(
            WriteFile.spec().parameters["required"],
            json!(["path", "content"])
        );
        assert_eq!(ListDir.spec().parameters["required"], json!([]));
        assert_eq!(Grep.spec().parameters["required"], json!(["pattern"]));
    }
}
