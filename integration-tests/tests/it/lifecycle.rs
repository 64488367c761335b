//! The control plane inside a running system, without HTTP: workflows submitted to the
//! scheduler's ports, then cancelled; agents suspended, resumed and killed. The HTTP API and
//! the CLI are thin layers over these messages (their own tests drive a real `serve`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentos_actors::protocol::{
    CancelWorkflow, ControlAgent, GetWorkflow, Refused, SubmitWorkflow,
};
use agentos_actors::system::{boot, BootOptions, RunningSystem};
use agentos_runtime::config::{Config, WorkflowFormat, WorkflowSpec};
use agentos_runtime::model::{AgentState, TaskState};
use agentos_runtime::sched::{AgentAction, WorkflowState, WorkflowView};

use crate::helpers::parse;

/// Three agents on a slow simulator: `slow` (falls back to `backup`) takes four steps of
/// ~150 ms each per attempt; `hang` never gets an answer.
const CONFIG: &str = r##"(
    version: 1,
    runtime: (max_concurrency: 4),
    backends: [(name: "sim", kind: Sim((seed: 1, latency: (base_ms: 150))))],
    agents: [
        (name: "slow", role: "r", backend: "sim", tools: ["calculator"], fallback: "backup",
         retry: (max_attempts: 1), timeout_secs: 30,
         sim: (script: [
            Call(tool: "calculator", args: r#"{"expression": "1+1"}"#),
            Call(tool: "calculator", args: r#"{"expression": "2+2"}"#),
            Call(tool: "calculator", args: r#"{"expression": "3+3"}"#),
            Answer("done"),
         ])),
        (name: "backup", role: "r", backend: "sim"),
        (name: "hang", role: "r", backend: "sim", timeout_secs: 300,
         sim: (faults: [(attempt: 1, kind: Hang)])),
    ],
)"##;

fn workflow(cfg: &Config, name: &str, agent: &str, tasks: usize) -> WorkflowSpec {
    let list: Vec<String> = (0..tasks)
        .map(|i| format!(r#"{{"id": "t{i}", "agent": "{agent}", "input": "part {i}"}}"#))
        .collect();
    let json = format!(r#"{{"name": "{name}", "tasks": [{}]}}"#, list.join(","));
    cfg.parse_workflow(&json, WorkflowFormat::Json, "test")
        .expect("valid workflow")
}

async fn submit(sys: &RunningSystem, spec: WorkflowSpec) -> String {
    // The tree starts right after boot returns: wait for the scheduler to bind its ports.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sys.ports.scheduler.submit.get().is_none() {
        assert!(Instant::now() < deadline, "the scheduler never started");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let msg = SubmitWorkflow {
        spec,
        idempotency_key: None,
        by: "test".into(),
    };
    let ask = sys.ports.scheduler.submit.ask(msg, Duration::from_secs(2));
    ask.await.expect("scheduler answers").expect("accepted").id
}

pub(crate) async fn view(sys: &RunningSystem, id: &str) -> WorkflowView {
    let ask = sys
        .ports
        .scheduler
        .workflow
        .ask(GetWorkflow(id.into()), Duration::from_secs(2));
    ask.await
        .expect("scheduler answers")
        .expect("known workflow")
}

/// Polls `id` until `pred` holds (at most `limit`).
async fn until(
    sys: &RunningSystem,
    id: &str,
    limit: Duration,
    pred: impl Fn(&WorkflowView) -> bool,
) -> WorkflowView {
    let deadline = Instant::now() + limit;
    loop {
        let v = view(sys, id).await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "condition not reached: {v:#?}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn control(sys: &RunningSystem, agent: &str, action: AgentAction) -> Result<(), Refused> {
    let msg = ControlAgent {
        agent: agent.into(),
        action,
        by: "test".into(),
    };
    let ask = sys.ports.scheduler.control.ask(msg, Duration::from_secs(5));
    ask.await.expect("scheduler answers")
}

fn states(sys: &RunningSystem, agent: &str) -> Vec<AgentState> {
    sys.board
        .control_blocks_of(agent)
        .iter()
        .map(|c| c.state)
        .collect()
}

fn with_system<F, Fut>(body: F)
where
    F: FnOnce(RunningSystem, Arc<Config>) -> Fut,
    Fut: std::future::Future<Output = RunningSystem>,
{
    let data = tempfile::tempdir().unwrap();
    let cfg = Arc::new(parse(CONFIG));
    let opts = BootOptions {
        trace: None,
        data_dir: Some(data.path().to_path_buf()),
        prometheus: None,
        event_window: 0,
        resume: Default::default(),
    };
    actix_rt::System::new().block_on(async move {
        let sys = boot(cfg.clone(), opts).expect("boot");
        let sys = body(sys, cfg).await;
        sys.stop().await;
    });
}

fn running(v: &WorkflowView) -> bool {
    v.tasks.iter().any(|t| t.state == TaskState::Running)
}

#[test]
fn cancel_stops_a_blocked_attempt_and_leaves_nothing_running() {
    with_system(|sys, cfg| async move {
        let id = submit(&sys, workflow(&cfg, "stuck", "hang", 3)).await;
        until(&sys, &id, Duration::from_secs(5), running).await;
        let msg = CancelWorkflow {
            id: id.clone(),
            by: "operator".into(),
        };
        let ask = sys.ports.scheduler.cancel.ask(msg, Duration::from_secs(2));
        let v = ask.await.unwrap().expect("cancelled");
        assert_eq!(v.state, WorkflowState::Cancelled);
        for t in &v.tasks {
            assert_eq!(t.state, TaskState::Cancelled, "{t:?}");
            assert!(t
                .reason
                .as_deref()
                .unwrap()
                .contains("cancelled by operator"));
        }
        // The attempt blocked in its LLM call stopped at once: the agent is free again.
        let deadline = Instant::now() + Duration::from_secs(2);
        while sys.board.control_blocks_of("hang")[0]
            .current_task
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "the cancelled attempt did not stop"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        let msg = CancelWorkflow {
            id: id.clone(),
            by: "operator".into(),
        };
        let again = sys.ports.scheduler.cancel.ask(msg, Duration::from_secs(2));
        assert!(matches!(again.await.unwrap(), Err(Refused::Conflict(_))));
        sys
    });
}

#[test]
fn a_suspended_agent_pauses_and_gets_no_dispatch_until_resumed() {
    with_system(|sys, cfg| async move {
        let id = submit(&sys, workflow(&cfg, "work", "slow", 2)).await;
        // max_concurrency 4, one `slow` instance: t0 runs, t1 waits.
        until(&sys, &id, Duration::from_secs(5), running).await;
        control(&sys, "slow", AgentAction::Suspend).await.unwrap();
        assert_eq!(states(&sys, "slow"), [AgentState::Suspended]);
        // The call in flight may finish; then the attempt waits at the step boundary.
        actix_rt::time::sleep(Duration::from_millis(400)).await;
        let steps = sys.board.control_blocks_of("slow")[0].steps;
        actix_rt::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            sys.board.control_blocks_of("slow")[0].steps,
            steps,
            "no LLM call while suspended"
        );
        let v = view(&sys, &id).await;
        assert_eq!(
            v.tasks[1].state,
            TaskState::Ready,
            "no dispatch while suspended"
        );
        assert_eq!(v.tasks[1].attempts, 0);
        control(&sys, "slow", AgentAction::Resume).await.unwrap();
        assert_ne!(states(&sys, "slow"), [AgentState::Suspended]);
        let v = until(&sys, &id, Duration::from_secs(15), |v| {
            v.state.is_terminal()
        })
        .await;
        assert_eq!(v.state, WorkflowState::Succeeded, "{v:#?}");
        assert!(
            v.tasks.iter().all(|t| t.attempts == 1),
            "paused, not failed"
        );
        sys
    });
}

#[test]
fn a_killed_agents_task_completes_on_its_fallback() {
    with_system(|sys, cfg| async move {
        let id = submit(&sys, workflow(&cfg, "job", "slow", 1)).await;
        until(&sys, &id, Duration::from_secs(5), running).await;
        control(&sys, "slow", AgentAction::Kill).await.unwrap();
        assert_eq!(states(&sys, "slow"), [AgentState::Terminated]);
        let v = until(&sys, &id, Duration::from_secs(10), |v| {
            v.state.is_terminal()
        })
        .await;
        let t = &v.tasks[0];
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!(t.finished_by.as_deref(), Some("backup#0"));
        assert!(t.history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("killed by test"));
        assert!(matches!(
            control(&sys, "slow", AgentAction::Kill).await,
            Err(Refused::Conflict(_))
        ));
        assert!(matches!(
            control(&sys, "nobody", AgentAction::Suspend).await,
            Err(Refused::NotFound(_))
        ));
        // Resume restarts the killed agent's instance, which then takes new work.
        control(&sys, "slow", AgentAction::Resume).await.unwrap();
        assert_eq!(states(&sys, "slow"), [AgentState::Ready]);
        let id = submit(&sys, workflow(&cfg, "again", "slow", 1)).await;
        let v = until(&sys, &id, Duration::from_secs(10), |v| {
            v.state.is_terminal()
        })
        .await;
        assert_eq!(v.tasks[0].finished_by.as_deref(), Some("slow#0"));
        sys
    });
}

#[test]
fn a_finished_tasks_row_reaches_the_store_with_no_flush_and_no_later_message() {
    with_system(|sys, cfg| async move {
        let id = submit(&sys, workflow(&cfg, "quiet", "backup", 3)).await;
        until(&sys, &id, Duration::from_secs(10), |v| {
            v.state == WorkflowState::Succeeded
        })
        .await;
        // The reports' rows are written a moment after the last report, with nothing else
        // happening in the system: read them through a connection of our own. Well within
        // the scheduler's once-a-second tick, which would write them too.
        let store = agentos_runtime::store::Store::open(&sys.store_path).expect("store");
        let deadline = Instant::now() + Duration::from_millis(400);
        loop {
            let rows = store.load_state(&sys.run_id).expect("state rows");
            let ours: Vec<_> = rows.tasks.iter().filter(|t| t.workflow == id).collect();
            if ours.len() == 3 && ours.iter().all(|t| t.state == "succeeded") {
                break;
            }
            let states: Vec<_> = ours.iter().map(|t| t.state.as_str()).collect();
            assert!(Instant::now() < deadline, "stored task states: {states:?}");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        sys
    });
}
