//! Micro-benchmarks of the KV block manager: acquire + release of a 2k-token prompt (cold,
//! and with its prefix cached), and one routing decision across 4 replicas (prefix lookups on
//! every replica plus the policy).

use agentos_runtime::kvcache::{BlockManager, KvCacheSettings, PoolCore, RoutingPolicy};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn prompt(seed: u32, shared: usize, private: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..shared as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % 200_000)
        .collect();
    p.extend((0..private as u32).map(|i| (seed * 7919 + i) % 200_000));
    p
}

fn block_manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_block_manager");
    g.throughput(Throughput::Elements(1));
    let p = prompt(1, 1500, 500);
    g.bench_function("acquire_release_2k_cold", |b| {
        b.iter_batched(
            || BlockManager::new(16, 8192, 0),
            |mut m| {
                let a = m.acquire(&p).expect("room");
                m.release(a.seq).expect("live");
                m
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut m = BlockManager::new(16, 8192, 0);
    let warm = m.acquire(&p).expect("room");
    m.release(warm.seq).expect("live");
    g.bench_function("acquire_release_2k_cached", |b| {
        b.iter(|| {
            let a = m.acquire(&p).expect("room");
            m.release(a.seq).expect("live");
        })
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_routing");
    g.throughput(Throughput::Elements(1));
    for policy in [RoutingPolicy::PrefixAware, RoutingPolicy::RoundRobin] {
        let settings = KvCacheSettings {
            routing: policy,
            ..KvCacheSettings::default()
        };
        let mut pool = PoolCore::new([("b".to_string(), settings, 4)]);
        // Warm every replica with a few agents' prompts.
        for i in 0..64u64 {
            pool.acquire(i, "b", &prompt(i as u32, 1500, 500));
            pool.release(i);
        }
        let p = prompt(7, 1500, 520);
        let mut lease = 1_000u64;
        g.bench_function(
            format!("acquire_release_4_replicas_{}", policy.name()),
            |b| {
                b.iter(|| {
                    lease += 1;
                    pool.acquire(lease, "b", &p).expect("known backend");
                    pool.release(lease);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, block_manager, routing);
criterion_main!(benches);
