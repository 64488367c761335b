use super::*;

fn row(context: &str, id: u64) -> PageRow {
    PageRow {
        context: context.into(),
        page_id: id,
        agent: "a".into(),
        group: id,
        kind: "message".into(),
        pinned: false,
        importance: 0.5,
        tokens: 7,
        shared_key: None,
        message: format!("{{\"n\": {id}}}"),
    }
}

#[test]
fn creates_migrates_and_reopens_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(&dir.path().join("nested"));
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    s.begin_run("r1", 1).unwrap();
    s.put_pages("r1", &[row("c", 0), row("c", 1)]).unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.count_pages("r1").unwrap(), 2);
    assert_eq!(
        s.load_context("r1", "c").unwrap(),
        vec![row("c", 0), row("c", 1)]
    );
}

#[test]
fn runs_sharing_a_store_do_not_collide() {
    let mut s = Store::open_in_memory().unwrap();
    s.put_pages("r1", &[row("c", 0)]).unwrap();
    let mut other = row("c", 0);
    other.message = "other".into();
    s.put_pages("r2", &[other.clone()]).unwrap();
    assert_eq!(s.get_pages("r1", "c", &[0]).unwrap(), vec![row("c", 0)]);
    assert_eq!(s.get_pages("r2", "c", &[0]).unwrap(), vec![other]);
    assert!(s.get_pages("r1", "c", &[9]).unwrap().is_empty());
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[test]
fn an_unopenable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    // A folder cannot be created under a regular file.
    let err = Store::open(&file.join("sub").join("store.db")).unwrap_err();
    assert!(matches!(err, StoreError::Folder { .. }), "{err}");
    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    assert!(Store::open(&junk).is_err());
}

#[test]
fn shared_pages_round_trip() {
    let mut s = Store::open_in_memory().unwrap();
    let r = SharedRow {
        key: "wf/t".into(),
        workflow: "wf".into(),
        owner: "a".into(),
        tokens: 3,
        message: "{}".into(),
    };
    s.put_shared("r", &r).unwrap();
    assert_eq!(s.get_shared("r", "wf/t").unwrap(), Some(r));
    assert_eq!(s.get_shared("other", "wf/t").unwrap(), None);
}
