//! `grep`: a regex over workspace files, walked through directory handles.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use futures::future::BoxFuture;
use serde_json::json;

use super::handle::{entries, open_dir_at, open_file_at, Beneath, Kind};
use super::{
    arg_opt_str, io_error, resolve, spawn_file_work, PathAccess, MAX_GREP_FILES,
    MAX_MATCH_TEXT_CHARS, MAX_REGEX_BYTES,
};
use crate::llm::ToolSpec;
use crate::tools::{arg_str, Tool, ToolContext, ToolError, ToolOutput};

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
    fn class(&self) -> crate::durable::SideEffect {
        crate::durable::SideEffect::Pure
    }

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
    limit: usize,
    max_file_bytes: usize,
    matches: Vec<serde_json::Value>,
    lines: Vec<String>,
    files_read: usize,
    truncated: bool,
}

impl Search {
    /// Searches one open file, shown as `shown`; returns false once the search must stop.
    fn file(&mut self, file: File, shown: &str) -> bool {
        if self.files_read >= MAX_GREP_FILES {
            self.truncated = true;
            return false;
        }
        let size = file.metadata().map_or(u64::MAX, |m| m.len());
        if size > self.max_file_bytes as u64 {
            return true;
        }
        self.files_read += 1;
        let mut bytes = Vec::new();
        if file
            .take(self.max_file_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .is_err()
            || bytes.len() > self.max_file_bytes
            || bytes.contains(&0)
        {
            return true;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            return true;
        };
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

    /// Walks the open directory `start` (shown as `shown`) depth first in name order, through
    /// handles: entries are opened relative to their directory, never followed.
    fn walk(&mut self, start: OwnedFd, shown: String) {
        let mut dirs = vec![(start, shown)];
        while let Some((dir, shown)) = dirs.pop() {
            let Ok(mut listed) = entries(&dir, &shown) else {
                continue;
            };
            // By name first (`Entry` orders by name).
            listed.sort();
            let mut subdirs = Vec::new();
            for entry in listed {
                let child = join(&shown, &entry.name.to_string_lossy());
                match entry.kind {
                    Kind::Dir => {
                        if let Some(fd) = open_dir_at(&dir, &entry.name) {
                            subdirs.push((fd, child));
                        }
                    }
                    Kind::File => {
                        if let Some(file) = open_file_at(&dir, &entry.name) {
                            if !self.file(file, &child) {
                                return;
                            }
                        }
                    }
                    // Symlinks and special files are never followed or read.
                    Kind::Symlink | Kind::Other => {}
                }
            }
            dirs.extend(subdirs.into_iter().rev());
        }
    }
}

/// `name` below the shown directory `dir` (`.` for the root), `/`-separated.
fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
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
    let beneath = Beneath::open(root)?;
    let shown = relative(beneath.root_path(), &start);
    let meta = fs::symlink_metadata(&start).map_err(|e| io_error(rel, &e))?;
    let mut search = Search {
        regex,
        limit,
        max_file_bytes,
        matches: Vec::new(),
        lines: Vec::new(),
        files_read: 0,
        truncated: false,
    };
    if meta.is_file() {
        let file = beneath.read(&start, rel)?;
        search.file(file, &shown);
    } else if meta.is_dir() {
        search.walk(beneath.dir(&start, rel)?, shown);
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
