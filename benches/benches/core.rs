//! Micro-benchmarks of the runtime core: scheduler dispatch cost per task (wide and deep DAGs
//! of 1k / 10k / 100k tasks) and the ready queue.

use std::time::Instant;

use agentos_benches::dag_config;
use agentos_runtime::llm::Usage;
use agentos_runtime::model::InstanceId;
use agentos_runtime::policy::ready_queue::ReadyQueue;
use agentos_runtime::sched::{Outcome, Report, SchedulerCore};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Runs a whole DAG through the scheduler core: dispatch, report success, repeat.
fn drive(core: &mut SchedulerCore, replicas: u32) {
    let now = Instant::now();
    for r in 0..replicas {
        core.agent_idle(InstanceId {
            agent: "a".into(),
            replica: r,
        });
    }
    loop {
        let (dispatches, _) = core.dispatch(now);
        if dispatches.is_empty() {
            break;
        }
        for d in dispatches {
            let report = Report {
                lease: d.lease,
                outcome: Outcome::Succeeded {
                    output: String::new(),
                },
                usage: Usage::default(),
            };
            let _ = core.report(report, now);
            core.agent_idle(d.instance);
        }
    }
    assert!(core.is_done());
}

fn scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler_dag");
    group.sample_size(10);
    for &n in &[1_000usize, 10_000, 100_000] {
        for deep in [false, true] {
            let cfg = dag_config(n, 8, deep);
            group.throughput(Throughput::Elements(n as u64));
            let name = if deep { "deep" } else { "wide" };
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_batched(
                    || SchedulerCore::new(cfg.clone(), Instant::now()),
                    |mut core| drive(&mut core, 8),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn ready_queue(c: &mut Criterion) {
    c.bench_function("ready_queue_push_pop_10k", |b| {
        b.iter(|| {
            let t0 = Instant::now();
            let mut q = ReadyQueue::new(t0, 1.0);
            for i in 0..10_000 {
                q.push("a", i, (i % 100) as i32, t0);
            }
            while q.pop("a").is_some() {}
        })
    });
}

criterion_group!(benches, scheduler, ready_queue);
criterion_main!(benches);
