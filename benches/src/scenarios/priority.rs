//! `priority`: a flood of long low-priority tasks keeps every slot busy; short high-priority
//! tasks arrive in the middle of it (submitted to the running system, as the API does).
//!
//! - `preemptive` (ours): the interactive agent has priority 90, the batch agent 50, and
//!   `runtime.scheduling.preemption` is on (`slice_steps: 1, priority_gap: 10`): a running
//!   batch attempt gives way at its next step boundary and resumes later as the same attempt.
//! - `fifo` (the baseline): the same tasks, equal priorities (50), no preemption.
//! - `priority_only` (extra row): priorities as ours, no preemption.
//!
//! Latency of a high-priority task = its workflow's `submitted_at` (the scheduler's clock) to
//! its terminal `task_state` event in the trace. Arrivals are triggered by the flood's
//! progress (a quarter of it done), so every variant gets them at the same point of its work.

use std::sync::Arc;
use std::time::Duration;

use agentos_actors::protocol::{GetSnapshot, SchedulerPorts, SubmitWorkflow};
use agentos_runtime::config::{Config, WorkflowFormat};
use agentos_runtime::model::TaskState;
use agentos_runtime::sched::WorkflowOrigin;
use serde::Serialize;
use serde_json::json;

use super::{now, Ctx};
use crate::goals::{Figure, Goal, GoalReport};
use crate::inproc;
use crate::measure::Percentiles;

/// Concurrency limit: the slots the flood keeps busy.
pub const SLOTS: usize = 4;

/// Steps of a batch task (calculator calls, then an answer).
pub const BATCH_STEPS: usize = 8;

/// Steps of an interactive task.
pub const INTERACTIVE_STEPS: usize = 2;

/// The workload's size.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// Low-priority batch tasks, all declared at boot.
    pub batch_tasks: usize,
    /// High-priority tasks submitted while the flood runs.
    pub interactive_tasks: usize,
    /// Between two submissions, ms.
    pub spacing_ms: u64,
}

/// The sizes of a full run and of a smoke run.
pub fn sizes(smoke: bool) -> Sizes {
    if smoke {
        Sizes {
            batch_tasks: 24,
            interactive_tasks: 3,
            spacing_ms: 50,
        }
    } else {
        Sizes {
            batch_tasks: 120,
            interactive_tasks: 12,
            spacing_ms: 150,
        }
    }
}

/// One variant: its settings.
#[derive(Debug, Clone, Copy)]
struct Variant {
    name: &'static str,
    interactive_priority: i64,
    preemption: bool,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "preemptive",
        interactive_priority: 90,
        preemption: true,
    },
    Variant {
        name: "fifo",
        interactive_priority: 50,
        preemption: false,
    },
    Variant {
        name: "priority_only",
        interactive_priority: 90,
        preemption: false,
    },
];

/// One variant as measured.
#[derive(Debug, Clone, Serialize)]
pub struct PriorityVariant {
    /// `preemptive`, `fifo` or `priority_only`.
    pub variant: String,
    /// Wall time from boot to the last task's end, seconds.
    pub wall_secs: f64,
    /// Tasks that did not succeed.
    pub failed: usize,
    /// High-priority latency (submission to completion).
    pub interactive: Percentiles,
    /// Batch task latency (boot to completion).
    pub batch: Percentiles,
    /// Attempts that gave way to a better task.
    pub preemptions: u64,
}

fn script(steps: usize) -> String {
    let mut s = String::new();
    for i in 1..steps {
        s.push_str(&format!(
            "Call(tool: \"calculator\", args: r#\"{{\"expression\": \"{i} * 7\"}}\"#),"
        ));
    }
    s.push_str("Answer(\"done: {{last_tool_result}}\")");
    s
}

/// The AgentOS config of a variant.
fn config_text(s: &Sizes, v: Variant) -> String {
    let preemption = if v.preemption {
        ", preemption: (slice_steps: 1, priority_gap: 10)"
    } else {
        ""
    };
    let mut tasks = String::new();
    for i in 0..s.batch_tasks {
        tasks.push_str(&format!(
            "(id: \"b{i}\", agent: \"batch\", input: \"{}\"),",
            crate::workload::input(i)
        ));
    }
    format!(
        "(version: 1,
          runtime: (max_concurrency: {SLOTS}, scheduling: (policy: priority{preemption})),
          backends: [(name: \"sim\", kind: Sim((seed: 1,
                      latency: (base_ms: 20, per_prompt_token_us: 20, per_output_token_ms: 0.5))))],
          agents: [
            (name: \"batch\", role: \"You compute in batch.\", backend: \"sim\",
             tools: [\"calculator\"], priority: 50, replicas: {br}, max_steps: {bs},
             sim: (script: [{batch}])),
            (name: \"interactive\", role: \"You answer a user.\", backend: \"sim\",
             tools: [\"calculator\"], priority: {ip}, replicas: {SLOTS}, max_steps: {is},
             sim: (script: [{interactive}])),
          ],
          workflows: [(name: \"flood\", tasks: [{tasks}])])",
        // More batch instances than slots, so a batch attempt that just ended leaves an idle
        // batch instance when the scheduler hands out the freed slot (else that slot goes to
        // the interactive agent, FIFO or not).
        br = 2 * SLOTS,
        bs = BATCH_STEPS + 2,
        is = INTERACTIVE_STEPS + 2,
        ip = v.interactive_priority,
        batch = script(BATCH_STEPS),
        interactive = script(INTERACTIVE_STEPS),
    )
}

/// Waits until a quarter of the flood succeeded, then submits the high-priority tasks.
async fn submit_interactive(
    ports: SchedulerPorts,
    cfg: Arc<Config>,
    s: Sizes,
) -> anyhow::Result<()> {
    let ask = Duration::from_secs(5);
    let trigger = s.batch_tasks / 4;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        // The scheduler binds its ports once it has started, just after boot returns.
        let done = match ports.snapshot.ask(GetSnapshot, ask).await {
            Ok(snap) => snap.count(TaskState::Succeeded),
            Err(_) => 0,
        };
        if done >= trigger {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the flood did not reach {trigger} tasks done"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..s.interactive_tasks {
        let text = format!(
            "(name: \"urgent-{i}\", tasks: [(id: \"q\", agent: \"interactive\", input: \"{}\")])",
            crate::workload::input(i)
        );
        let spec = cfg
            .parse_workflow(&text, WorkflowFormat::Ron, "priority scenario")
            .map_err(|e| anyhow::anyhow!("generated workflow is invalid: {e}"))?;
        let msg = SubmitWorkflow {
            spec,
            idempotency_key: None,
            by: "bench".into(),
        };
        ports
            .submit
            .ask(msg, ask)
            .await?
            .map_err(|e| anyhow::anyhow!("submit refused: {e:?}"))?;
        tokio::time::sleep(Duration::from_millis(s.spacing_ms)).await;
    }
    Ok(())
}

/// Runs the scenario: every variant, one after the other.
pub fn run(ctx: &Ctx) -> anyhow::Result<GoalReport<PriorityVariant>> {
    let s = sizes(ctx.smoke);
    let mut variants = Vec::new();
    for v in VARIANTS {
        eprintln!("  {:>14} × {:<6}", v.name, s.batch_tasks);
        let cfg = inproc::config(&config_text(&s, v), "priority.ron")?;
        let run = inproc::run(cfg, Duration::from_secs(300), move |ports, cfg| {
            submit_interactive(ports, cfg, s)
        })?;
        let mut interactive = Vec::new();
        for w in run
            .workflows
            .iter()
            .filter(|w| w.origin == WorkflowOrigin::Submitted)
        {
            let end = run
                .ended_at(&format!("{}/q", w.id))
                .ok_or_else(|| anyhow::anyhow!("no end of {} in the trace", w.id))?;
            interactive.push(end - w.submitted_at);
        }
        anyhow::ensure!(
            interactive.len() == s.interactive_tasks,
            "{}: {} high-priority tasks ran, {} were submitted",
            v.name,
            interactive.len(),
            s.interactive_tasks
        );
        let batch = run
            .ends
            .iter()
            .filter(|e| e.task.starts_with("flood/"))
            .map(|e| e.at - run.booted_at)
            .collect();
        variants.push(PriorityVariant {
            variant: v.name.into(),
            wall_secs: run.wall_secs,
            failed: run.failed(),
            interactive: Percentiles::of_secs(interactive),
            batch: Percentiles::of_secs(batch),
            preemptions: run.preemptions,
        });
    }
    let (ours, base) = (&variants[0], &variants[1]);
    let figures = vec![
        Figure::new(
            "high-priority latency p50, ms",
            ours.interactive.p50_ms,
            base.interactive.p50_ms,
        ),
        Figure::new(
            "high-priority latency p95, ms",
            ours.interactive.p95_ms,
            base.interactive.p95_ms,
        ),
        Figure::new(
            "high-priority latency mean, ms",
            ours.interactive.mean_ms,
            base.interactive.mean_ms,
        ),
        Figure::new(
            "batch completion mean (from boot), ms",
            ours.batch.mean_ms,
            base.batch.mean_ms,
        ),
        Figure::new("makespan, s", ours.wall_secs, base.wall_secs),
        Figure::new(
            "preemptions",
            ours.preemptions as f64,
            base.preemptions as f64,
        ),
        Figure::new("failed tasks", ours.failed as f64, base.failed as f64),
    ];
    let ratio = ours.interactive.p95_ms / base.interactive.p95_ms.max(1e-9);
    let goals = vec![
        Goal {
            goal: "high-priority p95 latency ≤ 1/5 of FIFO's".into(),
            measured: format!(
                "{:.0} ms vs {:.0} ms (× {ratio:.3})",
                ours.interactive.p95_ms, base.interactive.p95_ms
            ),
            met: ratio <= 0.2,
        },
        Goal {
            goal: "every task succeeds".into(),
            measured: format!("{} failed", ours.failed),
            met: ours.failed == 0,
        },
    ];
    let description = format!(
        "A flood of {} low-priority batch tasks ({BATCH_STEPS} steps each: calculator calls, \
         then an answer) on the in-process `sim` backend (20 ms base latency per call) with \
         `max_concurrency: {SLOTS}`; once a quarter of the flood is done, {} high-priority \
         tasks ({INTERACTIVE_STEPS} steps each, a separate agent) are submitted to the running \
         system, one every {} ms. `preemptive`: interactive priority 90 against 50, \
         `preemption: (slice_steps: 1, priority_gap: 10)`. Baseline `fifo`: the same tasks \
         with equal priorities and no preemption. `priority_only` (for reference): the \
         priorities without preemption. High-priority latency = submission (the workflow's \
         `submitted_at`) to the task's terminal `task_state` in the trace.",
        s.batch_tasks, s.interactive_tasks, s.spacing_ms
    );
    Ok(GoalReport {
        scenario: "priority",
        description,
        params: json!({"batch_tasks": s.batch_tasks, "interactive_tasks": s.interactive_tasks,
                       "spacing_ms": s.spacing_ms, "max_concurrency": SLOTS,
                       "batch_steps": BATCH_STEPS, "interactive_steps": INTERACTIVE_STEPS}),
        machine: ctx.machine.clone(),
        generated_at: now(),
        smoke: ctx.smoke,
        ours: "preemptive".into(),
        baseline: "fifo".into(),
        variants,
        figures,
        goals,
    })
}

/// The markdown section.
pub fn render(r: &GoalReport<PriorityVariant>) -> String {
    let mut table = String::from(
        "| variant | makespan s | high-priority p50 ms | p95 ms | p99 ms | batch mean ms | preemptions | failed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for v in &r.variants {
        table.push_str(&format!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {} | {} |\n",
            v.variant,
            v.wall_secs,
            v.interactive.p50_ms,
            v.interactive.p95_ms,
            v.interactive.p99_ms,
            v.batch.mean_ms,
            v.preemptions,
            v.failed
        ));
    }
    crate::goals::render(r, &table)
}
