//! Unit tests of the file tools: confinement, symlinks, the check-then-use race, limits.
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

/// Swaps the workspace directory `sub` for a symlink to `outside` (keeping the real one as
/// `sub.real`), or back.
fn swap_sub(root: &Path, outside: &Path, to_symlink: bool) {
    if to_symlink {
        fs::rename(root.join("sub"), root.join("sub.real")).unwrap();
        symlink(outside, root.join("sub")).unwrap();
    } else {
        fs::remove_file(root.join("sub")).unwrap();
        fs::rename(root.join("sub.real"), root.join("sub")).unwrap();
    }
}

#[test]
fn a_directory_swapped_for_a_symlink_after_the_check_is_refused() {
    let f = fixture();
    let root = f.root.path().canonicalize().unwrap();
    fs::write(f.outside.path().join("inner.txt"), "secret hello\n").unwrap();
    // The check passes on the real directory...
    let read_path = resolve(&root, "sub/inner.txt", PathAccess::Existing).unwrap();
    let write_path = resolve(&root, "sub/new.txt", PathAccess::Create).unwrap();
    // ...then the directory becomes a symlink out of the workspace before the use.
    swap_sub(&root, f.outside.path(), true);
    let beneath = handle::Beneath::open(&root).unwrap();
    let e = beneath.read(&read_path, "sub/inner.txt").unwrap_err();
    assert_eq!(
        e,
        ToolError::PathRefused(
            "`sub/inner.txt` changed while it was being opened: `sub` is now a symlink".into()
        )
    );
    let e = beneath.write(&write_path, "sub/new.txt").unwrap_err();
    assert!(
        matches!(&e, ToolError::PathRefused(m) if m.contains("changed")),
        "{e:?}"
    );
    assert!(beneath.dir(&root.join("sub"), "sub").is_err());
    assert!(!f.outside.path().join("new.txt").exists());
    // Swapped back, the same resolved paths work.
    swap_sub(&root, f.outside.path(), false);
    let mut text = String::new();
    beneath
        .read(&read_path, "sub/inner.txt")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "inner hello\n");
}

#[test]
fn a_file_swapped_for_a_symlink_after_the_check_is_neither_read_nor_written() {
    let f = fixture();
    let root = f.root.path().canonicalize().unwrap();
    let path = resolve(&root, "hello.txt", PathAccess::Existing).unwrap();
    fs::remove_file(root.join("hello.txt")).unwrap();
    symlink(f.outside.path().join("secret.txt"), root.join("hello.txt")).unwrap();
    let beneath = handle::Beneath::open(&root).unwrap();
    for e in [
        beneath.read(&path, "hello.txt").unwrap_err(),
        beneath.write(&path, "hello.txt").unwrap_err(),
    ] {
        assert!(
            matches!(&e, ToolError::PathRefused(m) if m.contains("now a symlink")),
            "{e:?}"
        );
    }
    assert_eq!(
        fs::read_to_string(f.outside.path().join("secret.txt")).unwrap(),
        "secret hello\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_a_symlink_swap_never_reaches_outside() {
    let f = fixture();
    let root = f.root.path().canonicalize().unwrap();
    fs::write(f.outside.path().join("inner.txt"), "secret hello\n").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // `sub` and `sub.link` (a symlink out) trade places atomically, so `sub` always exists.
    symlink(f.outside.path(), root.join("sub.link")).unwrap();
    let exchange = {
        let root = root.clone();
        move || {
            use rustix::fs::{renameat_with, RenameFlags, CWD};
            renameat_with(
                CWD,
                root.join("sub"),
                CWD,
                root.join("sub.link"),
                RenameFlags::EXCHANGE,
            )
            .unwrap();
        }
    };
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut flips = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                exchange();
                flips += 1;
            }
            if flips % 2 == 1 {
                exchange();
            }
            flips
        })
    };
    let (mut read_ok, mut refused) = (0, 0);
    for _ in 0..300 {
        match ReadFile
            .call(&f.ctx, json!({"path": "sub/inner.txt"}))
            .await
        {
            Ok(out) => {
                assert_eq!(
                    out.data["content"], "inner hello\n",
                    "read outside the workspace"
                );
                read_ok += 1;
            }
            Err(_) => refused += 1,
        }
        let _ = WriteFile
            .call(&f.ctx, json!({"path": "sub/new.txt", "content": "x"}))
            .await;
        assert!(
            !f.outside.path().join("new.txt").exists(),
            "wrote outside the workspace"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = swapper.join().unwrap();
    assert!(
        flips > 0 && read_ok + refused == 300,
        "{flips} {read_ok} {refused}"
    );
    assert_eq!(
        fs::read_to_string(f.outside.path().join("inner.txt")).unwrap(),
        "secret hello\n"
    );
}

#[tokio::test]
async fn a_fifo_in_the_workspace_is_not_read_and_does_not_hang() {
    let f = fixture();
    let status = std::process::Command::new("mkfifo")
        .arg(f.root.path().join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let e = ReadFile
        .call(&f.ctx, json!({"path": "pipe"}))
        .await
        .unwrap_err();
    assert_eq!(e, ToolError::Failed("`pipe` is not a regular file".into()));
    let e = WriteFile
        .call(&f.ctx, json!({"path": "pipe", "content": "x"}))
        .await
        .unwrap_err();
    assert!(matches!(e, ToolError::Failed(_)), "{e:?}");
    let out = Grep.call(&f.ctx, json!({"pattern": "x"})).await.unwrap();
    assert_eq!(out.data["matches"], json!([]));
}
