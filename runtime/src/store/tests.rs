use super::*;

pub(super) fn row(context: &str, id: u64) -> PageRow {
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

/// A store written by the previous release (schema 1: runs and pages only) opens, migrates to
/// the current version, keeps its pages, and its runs count as finished (not resumable).
#[test]
fn a_version_1_store_migrates_and_keeps_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO runs (run_id, started_ms) VALUES ('old', 5)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO pages (run_id, context, page_id, agent, grp, kind, pinned, importance,
             tokens, shared_key, message) VALUES ('old', 'w/t#1', 0, 'a', 0, 'system', 1, 1.0, 3,
             NULL, '{\"role\":\"system\",\"content\":\"hi\"}')",
            [],
        )
        .unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    assert_eq!(s.count_pages("old").unwrap(), 1);
    let run = s.run("old").unwrap().expect("the old run is kept");
    assert_eq!(run.status, RunStatus::Finished);
    assert!(!run.status.resumable());
    assert_eq!(
        s.journaled_contexts("old").unwrap(),
        [("w/t#1".to_owned(), "a".to_owned())]
    );
    // The new tables work on the migrated file.
    let batch = StateBatch {
        controls: vec![ControlRow {
            agent: "a".into(),
            status: "suspended".into(),
            why: None,
        }],
        ..StateBatch::default()
    };
    s.write_state("old", &batch).unwrap();
    assert_eq!(s.load_state("old").unwrap().controls, batch.controls);
}

pub(super) fn task_row(task: &str, state: &str) -> TaskRow {
    TaskRow {
        workflow: "w".into(),
        task: task.into(),
        seq: 0,
        spawned_by: None,
        spawn_call: None,
        depth: 0,
        agent: "a".into(),
        input: "in".into(),
        depends_on: vec!["x".into()],
        priority_boost: -3,
        state: state.into(),
        current_agent: "a".into(),
        chain: vec!["a".into()],
        attempts_on_agent: 1,
        attempts_total: 2,
        history: "[]".into(),
        output: None,
        reason: None,
        last_error: Some("boom".into()),
        finished_by: None,
        prompt_tokens: 10,
        completion_tokens: 5,
        cached_tokens: 1,
        retry_at_ms: Some(123),
        updated_ms: 9,
    }
}

#[test]
fn scheduler_state_round_trips_and_rows_are_replaced_whole() {
    let mut s = Store::open_in_memory().unwrap();
    let mut batch = StateBatch {
        tasks: vec![task_row("t", "ready")],
        ..StateBatch::default()
    };
    s.write_state("r", &batch).unwrap();
    batch.tasks[0].state = "succeeded".into();
    batch.tasks[0].output = Some("done".into());
    s.write_state("r", &batch).unwrap();
    let back = s.load_state("r").unwrap();
    assert_eq!(back.tasks, batch.tasks);
    assert!(s.load_state("other").unwrap().tasks.is_empty());
}

#[test]
fn a_read_is_keyed_by_its_call_and_unread_messages_stay() {
    let mut s = Store::open_in_memory().unwrap();
    let m = |seq: u64| InboxRow {
        seq,
        to: "b".into(),
        from: "a".into(),
        topic: None,
        body: format!("m{seq}"),
    };
    s.put_inbox("r", &[m(1), m(2), m(3)]).unwrap();
    s.mark_read("r", &[1, 2], "w/t#1/s0/c0").unwrap();
    assert_eq!(s.read_by("r", "w/t#1/s0/c0").unwrap(), [m(1), m(2)]);
    assert_eq!(s.unread("r").unwrap(), [m(3)]);
    assert_eq!(s.last_bus_seq("r").unwrap(), 3);
    assert_eq!(s.last_bus_seq("none").unwrap(), 0);
}

#[test]
fn runs_are_found_by_config_and_status() {
    let s = Store::open_in_memory().unwrap();
    let run = |id: &str, at: i64| RunRow {
        run_id: id.into(),
        started_ms: at,
        config_path: "/c.ron".into(),
        config_hash: "h".into(),
        durability: "sync".into(),
        status: RunStatus::Running,
        finished_ms: None,
        resumes: 0,
        run_dir: format!("/d/{id}"),
        checkpointed: true,
    };
    s.record_run(&run("a", 1)).unwrap();
    s.record_run(&run("b", 2)).unwrap();
    assert_eq!(s.latest_unfinished("/c.ron").unwrap().unwrap().run_id, "b");
    s.set_run_status("b", RunStatus::Finished, 3).unwrap();
    assert_eq!(s.latest_unfinished("/c.ron").unwrap().unwrap().run_id, "a");
    assert_eq!(s.count_resume("a").unwrap(), 1);
    assert!(s.latest_unfinished("/other.ron").unwrap().is_none());
}

#[test]
fn journal_rows_come_back_in_step_order() {
    let mut s = Store::open_in_memory().unwrap();
    let j = |step: u32, call: u32, kind: &str| JournalRow {
        context: "w/t#1".into(),
        step,
        call,
        kind: kind.into(),
        agent: "a".into(),
        instance: "a#0".into(),
        task: "w/t".into(),
        attempt: 1,
        at_ms: 1,
        duration_ms: 2,
        page_id: Some(3),
        detail: "{}".into(),
    };
    let rows = [
        j(1, 0, journal::kind::REPLY),
        j(0, 1, journal::kind::TOOL_RESULT),
        j(0, 0, journal::kind::REPLY),
    ];
    s.put_journal("r", &rows).unwrap();
    let back = s.load_journal("r", "w/t#1").unwrap();
    assert_eq!(back, [rows[2].clone(), rows[1].clone(), rows[0].clone()]);
}

#[test]
fn a_record_is_its_pages_and_its_journal_rows_or_neither() {
    let mut s = Store::open_in_memory().unwrap();
    let j = super::write_tests::journal_row("c");
    s.put_record("r", &[row("c", 0)], std::slice::from_ref(&j))
        .unwrap();
    assert_eq!(s.count_pages("r").unwrap(), 1);
    assert_eq!(s.load_journal("r", "c").unwrap().len(), 1);
    // A journal write that fails (a trigger refuses it) takes the record's pages with it.
    s.conn
        .execute_batch("CREATE TRIGGER no_journal BEFORE INSERT ON journal BEGIN SELECT RAISE(ABORT, 'refused'); END;")
        .unwrap();
    assert!(s.put_record("r2", &[row("c", 0)], &[j]).is_err());
    assert_eq!(
        s.count_pages("r2").unwrap(),
        0,
        "the page went with its row"
    );
}

/// A store written by the previous release (schema 1): `agentos run config/demo.ron` of the
/// release before durable execution. It opens, migrates, keeps every page, and reads back
/// through the new tables and the audit view.
#[test]
fn a_store_written_by_the_previous_release_migrates() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1.db");
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    std::fs::copy(&fixture, &path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1, "the fixture is a version-1 store");
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), schema::CURRENT_VERSION);
    let runs = s.runs().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "an old run is not resumable"
    );
    assert_eq!(s.count_pages(&run.run_id).unwrap(), 36);
    let contexts = s.journaled_contexts(&run.run_id).unwrap();
    assert_eq!(contexts.len(), 9);
    let plan = s.load_context(&run.run_id, "repair/plan#1").unwrap();
    assert_eq!(plan.len(), 6);
    assert_eq!(plan[0].kind, "system");
    // No journal rows or audit entries were written by that release; the view is empty, not
    // an error.
    let q = AuditQuery {
        run: Some(run.run_id.clone()),
        ..AuditQuery::default()
    };
    assert!(s.audit(&q).unwrap().is_empty());
    assert!(s.load_state(&run.run_id).unwrap().tasks.is_empty());
}
