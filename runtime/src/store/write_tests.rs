//! The write path's guarantees: every write is all or nothing, on its own and inside a
//! group-commit batch, whether it runs one statement or several.

use super::tests::{row, task_row};
use super::*;

pub(super) fn journal_row(context: &str) -> JournalRow {
    JournalRow {
        context: context.into(),
        step: 0,
        call: 0,
        kind: journal::kind::REPLY.into(),
        agent: "a".into(),
        instance: "a#0".into(),
        task: "w/t".into(),
        attempt: 1,
        at_ms: 1,
        duration_ms: 0,
        page_id: Some(0),
        detail: "{}".into(),
    }
}

fn audit_row(kind: &str) -> AuditRow {
    AuditRow {
        at_ms: 1,
        kind: kind.into(),
        actor: "test".into(),
        agent: None,
        instance: None,
        task: None,
        attempt: None,
        step: None,
        detail: "{}".into(),
    }
}

/// Refuses pages and journal rows of the context `bad`, and audit rows of kind `refused`.
fn refuse_bad_rows(s: &Store) {
    s.conn
        .execute_batch(
            "CREATE TRIGGER refuse_page BEFORE INSERT ON pages
                 WHEN NEW.context = 'bad' AND NEW.page_id = 1
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER refuse_journal BEFORE INSERT ON journal WHEN NEW.context = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;
             CREATE TRIGGER refuse_audit BEFORE INSERT ON audit WHEN NEW.kind = 'refused'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
}

fn page_ids(s: &Store, context: &str) -> Vec<u64> {
    s.load_context("r", context)
        .unwrap()
        .iter()
        .map(|p| p.page_id)
        .collect()
}

#[test]
fn a_failing_write_in_a_batch_leaves_none_of_its_rows_and_the_others_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = Store::path_in(dir.path());
    let mut s = Store::open(&path).unwrap();
    refuse_bad_rows(&s);
    s.begin_batch().unwrap();
    s.put_pages("r", &[row("early", 0)]).unwrap();
    // Several statements, the last refused: the first page goes too.
    assert!(s.put_pages("r", &[row("bad", 0), row("bad", 1)]).is_err());
    // A single statement, refused.
    assert!(s.put_pages("r", &[row("bad", 1)]).is_err());
    // A record whose journal row is refused takes its page with it.
    assert!(s
        .put_record("r", &[row("record", 0)], &[journal_row("bad")])
        .is_err());
    // Scheduler state whose audit entry is refused takes its task rows with it.
    let state = StateBatch {
        tasks: vec![task_row("t1", "ready"), task_row("t2", "ready")],
        audit: vec![audit_row("refused")],
        ..StateBatch::default()
    };
    assert!(s.write_state("r", &state).is_err());
    assert!(s.append_audit("r", &[audit_row("refused")]).is_err());
    assert!(s.in_transaction(), "the batch goes on after failed writes");
    s.put_record("r", &[row("late", 0)], &[journal_row("late")])
        .unwrap();
    s.commit_batch().unwrap();
    assert!(!s.in_transaction());

    // What another connection reads from the file.
    let other = Store::open(&path).unwrap();
    assert_eq!(page_ids(&other, "early"), [0]);
    assert_eq!(page_ids(&other, "late"), [0]);
    assert_eq!(other.load_journal("r", "late").unwrap().len(), 1);
    assert!(page_ids(&other, "bad").is_empty());
    assert!(page_ids(&other, "record").is_empty());
    assert!(other.load_state("r").unwrap().tasks.is_empty());
    let audit: i64 = other
        .conn
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audit, 0);
}

#[test]
fn a_failing_write_alone_leaves_nothing_and_no_open_transaction() {
    let mut s = Store::open_in_memory().unwrap();
    refuse_bad_rows(&s);
    assert!(s.put_pages("r", &[row("bad", 0), row("bad", 1)]).is_err());
    assert!(!s.in_transaction());
    assert!(s.put_pages("r", &[row("bad", 1)]).is_err());
    assert!(!s.in_transaction());
    assert!(s
        .put_record("r", &[row("record", 0)], &[journal_row("bad")])
        .is_err());
    assert!(!s.in_transaction());
    assert_eq!(s.count_pages("r").unwrap(), 0);
    // And the next writes go through, each committed on its own.
    s.put_pages("r", &[row("good", 0), row("good", 1)]).unwrap();
    s.put_journal("r", &[journal_row("good")]).unwrap();
    assert!(!s.in_transaction());
    assert_eq!(page_ids(&s, "good"), [0, 1]);
}

#[test]
fn a_batch_that_sqlite_rolls_back_is_no_longer_open_and_keeps_nothing() {
    let mut s = Store::open_in_memory().unwrap();
    s.conn
        .execute_batch(
            "CREATE TRIGGER doom BEFORE INSERT ON pages WHEN NEW.context = 'doomed'
                 BEGIN SELECT RAISE(ROLLBACK, 'disk full'); END;",
        )
        .unwrap();
    s.begin_batch().unwrap();
    s.put_pages("r", &[row("early", 0)]).unwrap();
    assert!(s.put_pages("r", &[row("doomed", 0)]).is_err());
    assert!(!s.in_transaction(), "the whole batch was rolled back");
    assert!(page_ids(&s, "early").is_empty());
    assert!(s.commit_batch().is_err());
}
