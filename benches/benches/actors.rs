//! Micro-benchmarks of the actor side: a message round trip between two actors (on one
//! arbiter, across two, and the floor of two parked threads answering each other), agent spawn
//! time (1k / 10k idle agents), and one agent step end to end with a zero-latency `sim`
//! backend (dispatch, step, report: the runtime's own cost per step). Resident memory per idle
//! agent, up to 100k, is the `scale` scenario of `agentos-bench`, each size in its own process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use agentos_actors::system::{boot, BootOptions};
use agentos_runtime::config::Config;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The message bounced between the two actors.
#[derive(Message)]
#[rtype(result = "u64")]
struct Ping(u64);

/// Answers every ping.
struct Ponger;

impl Actor for Ponger {
    type Context = Context<Self>;
}

impl Handler<Ping> for Ponger {
    type Result = u64;
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) -> u64 {
        msg.0 + 1
    }
}

/// Asks the pinger to send `0` pings to the ponger, one at a time, awaiting each reply.
#[derive(Message)]
#[rtype(result = "u64")]
struct Volley(u64);

struct Pinger {
    ponger: Addr<Ponger>,
}

impl Actor for Pinger {
    type Context = Context<Self>;
}

impl Handler<Volley> for Pinger {
    type Result = ResponseFuture<u64>;
    fn handle(&mut self, msg: Volley, _: &mut Context<Self>) -> Self::Result {
        let ponger = self.ponger.clone();
        Box::pin(async move {
            let mut x = 0;
            for _ in 0..msg.0 {
                x = ponger.send(Ping(x)).await.unwrap_or(x);
            }
            x
        })
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("actor_round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("send_and_reply", |b| {
        b.iter_custom(|iters| {
            actix_rt::System::new().block_on(async move {
                let ponger = Ponger.start();
                let pinger = Pinger { ponger }.start();
                let t0 = Instant::now();
                let _ = pinger.send(Volley(iters)).await;
                t0.elapsed()
            })
        })
    });
    // The hand-off every cross-actor request of a step pays: the ponger on an arbiter of its
    // own, idle (parked) between pings as agents and the store thread are between requests.
    group.bench_function("send_and_reply_across_arbiters", |b| {
        b.iter_custom(|iters| {
            actix_rt::System::new().block_on(async move {
                let arbiter = Arbiter::new();
                let ponger = Ponger::start_in_arbiter(&arbiter.handle(), |_| Ponger);
                let pinger = Pinger { ponger }.start();
                let t0 = Instant::now();
                let _ = pinger.send(Volley(iters)).await;
                let elapsed = t0.elapsed();
                arbiter.stop();
                elapsed
            })
        })
    });
    // The floor under it: two plain threads answering each other over channels, each parked
    // until the other's message wakes it.
    group.bench_function("thread_ping_pong_parked", |b| {
        b.iter_custom(|iters| {
            let (ping, pings) = std::sync::mpsc::channel::<u64>();
            let (pong, pongs) = std::sync::mpsc::channel::<u64>();
            let echo = std::thread::spawn(move || {
                for v in pings {
                    if pong.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            let t0 = Instant::now();
            for i in 0..iters {
                let _ = ping.send(i);
                let _ = pongs.recv();
            }
            let elapsed = t0.elapsed();
            drop(ping);
            let _ = echo.join();
            elapsed
        })
    });
    group.finish();
}

/// `agents` idle replicas of one `sim` agent, no tasks.
fn idle_config(agents: usize, tasks: usize) -> Config {
    step_config(agents, tasks, "durability: sync")
}

/// `agents` replicas of one `sim` agent with `tasks` one-step tasks, `runtime` in the
/// runtime section (`durability: sync`).
fn step_config(agents: usize, tasks: usize, runtime: &str) -> Config {
    let mut text = format!(
        "(version: 1, runtime: (max_concurrency: {agents}, {runtime}),
          backends: [(name: \"sim\", kind: Sim((latency: (base_ms: 0, per_prompt_token_us: 0, per_output_token_ms: 0))))],
          agents: [(name: \"a\", role: \"r\", backend: \"sim\", replicas: {agents})],
          workflows: ["
    );
    if tasks > 0 {
        text.push_str("(name: \"w\", tasks: [");
        for i in 0..tasks {
            text.push_str(&format!("(id: \"t{i}\", agent: \"a\", input: \"x\"),"));
        }
        text.push_str("])");
    }
    text.push_str("])");
    Config::parse(&text, "bench.ron", std::path::Path::new(".")).expect("generated config is valid")
}

/// Boots `cfg` on a fresh data folder, waits for `until`, stops; returns the time from boot
/// to `until`.
fn timed_run<F, Fut>(cfg: Config, until: F) -> Duration
where
    F: FnOnce(agentos_actors::system::RunningSystem) -> Fut,
    Fut: std::future::Future<Output = agentos_actors::system::RunningSystem>,
{
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_path_buf();
    actix_rt::System::new().block_on(async move {
        let t0 = Instant::now();
        let sys = boot(
            Arc::new(cfg),
            BootOptions {
                trace: None,
                data_dir: Some(data_dir),
                prometheus: None,
                event_window: 0,
                resume: Default::default(),
            },
        )
        .expect("boot");
        let sys = until(sys).await;
        let elapsed = t0.elapsed();
        sys.stop().await;
        elapsed
    })
}

/// Boots `cfg`, waits until `agents` agents have started, returns the time that took.
fn spawn_once(cfg: Config, agents: usize) -> Duration {
    timed_run(cfg, |sys| async move {
        while sys.board.agents.len() < agents {
            tokio::task::yield_now().await;
        }
        sys
    })
}

fn agent_spawn(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_spawn");
    group.sample_size(10);
    for &n in &[1_000usize, 10_000] {
        let cfg = idle_config(n, 0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| (0..iters).map(|_| spawn_once(cfg.clone(), n)).sum())
        });
    }
    group.finish();
}

/// One agent, `iters` one-step tasks one after the other (dispatch, open, build, route, call,
/// record, share, report, close: everything the runtime adds to a step), the pager and the
/// KV-cache pool on, per durability mode. Boot is inside the timing and amortised over the
/// iterations.
fn step_end_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_step_end_to_end");
    group.throughput(Throughput::Elements(1));
    for durability in ["sync", "async"] {
        let runtime = format!("durability: {durability}");
        group.bench_function(BenchmarkId::new("zero_latency_sim", durability), |b| {
            b.iter_custom(|iters| step_run(iters, &runtime))
        });
    }
    // The same with the agent on the scheduler's arbiter (`worker_threads: 0`): what the
    // hand-offs between the two cost.
    for durability in ["sync", "async"] {
        let id = format!("{durability}_agents_on_system_arbiter");
        let runtime = format!("durability: {durability}, worker_threads: 0");
        group.bench_function(BenchmarkId::new("zero_latency_sim", id), |b| {
            b.iter_custom(|iters| step_run(iters, &runtime))
        });
    }
    group.finish();
}

/// One agent, `iters` one-step tasks, `runtime` in the runtime section.
fn step_run(iters: u64, runtime: &str) -> Duration {
    timed_run(step_config(1, iters as usize, runtime), |sys| async move {
        sys.wait(std::future::pending()).await;
        sys
    })
}

criterion_group!(benches, round_trip, agent_spawn, step_end_to_end);
criterion_main!(benches);
