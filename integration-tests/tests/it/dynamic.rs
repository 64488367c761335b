//! Tasks spawned at run time: `config/dynamic.ron`'s planner fans out with `spawn_task`, and
//! its reducer waits for every spawned task and reads their outputs.

use std::sync::Arc;
use std::time::Duration;

use agentos_actors::system::{boot, BootOptions, RunEnd};
use agentos_runtime::model::TaskState;

use crate::helpers::{parse, repo, run, task};

#[test]
fn the_planner_spawns_four_workers_and_the_reducer_waits_for_them() {
    let text = std::fs::read_to_string(repo().join("config/dynamic.ron")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let done = run(parse(&text), data.path());
    let s = &done.snapshot;
    assert_eq!(s.tasks.len(), 6, "2 declared + 4 spawned");
    let spawned: Vec<_> = s
        .tasks
        .iter()
        .filter(|t| t.spawned_by.as_deref() == Some("split"))
        .collect();
    assert_eq!(spawned.len(), 4);
    for (i, t) in spawned.iter().enumerate() {
        assert_eq!(t.task, format!("jobs/split.{}", i + 1));
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!(t.agent, "worker");
    }
    let merge = task(s, "jobs/merge");
    assert_eq!(merge.state, TaskState::Succeeded);
    assert_eq!(
        merge.depends_on,
        ["split", "split.1", "split.2", "split.3", "split.4"],
        "the reducer waits for the planner and every task it spawned"
    );
    let split = task(s, "jobs/split");
    assert!(split
        .output
        .as_deref()
        .unwrap()
        .contains("spawned task `split.4`"));
}

#[test]
fn the_reducer_reads_every_spawned_output_as_a_shared_page() {
    let text = std::fs::read_to_string(repo().join("config/dynamic.ron")).unwrap();
    let data = tempfile::tempdir().unwrap();
    let trace = data.path().join("trace.jsonl");
    let cfg = Arc::new(parse(&text));
    let opts = BootOptions {
        trace: Some(trace.clone()),
        data_dir: Some(data.path().to_path_buf()),
        prometheus: None,
        event_window: 0,
        resume: Default::default(),
    };
    actix_rt::System::new().block_on(async move {
        let sys = boot(cfg, opts).expect("boot");
        let end = sys
            .wait(actix_rt::time::sleep(Duration::from_secs(60)))
            .await;
        assert_eq!(end, RunEnd::Completed);
        sys.stop().await;
    });
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spawned = lines
        .iter()
        .filter(|l| l["event"] == "task_spawned")
        .count();
    assert_eq!(spawned, 4, "one task_spawned line per spawn");
    let merge = lines
        .iter()
        .find(|l| l["event"] == "prompt_built" && l["context"] == "jobs/merge#1")
        .expect("the reducer built a prompt");
    // System prompt, task input, and one shared page per worker.
    assert_eq!(merge["messages"], 6, "{merge}");
}
