//! Commands chosen per second through an in-memory cluster: the `paxos` simulator with no faults
//! (every message delivered after 1-2 virtual ms, 16 client commands offered per virtual ms,
//! pipelining window 8), 3 and 5 replicas, batched (up to 64 commands
//! a slot) and unbatched (one command a slot). Throughput is in commands chosen per wall-clock
//! second of running the whole cluster (all replicas' CPU work in one thread).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paxos::sim::{self, SimConfig};

const VIRTUAL_MS: u64 = 1_000;

fn cluster(c: &mut Criterion) {
    let mut g = c.benchmark_group("paxos_cluster");
    g.sample_size(10);
    for replicas in [3usize, 5] {
        for (name, batch) in [("unbatched", 1usize), ("batched", 64)] {
            let cfg = SimConfig::quiet(7, replicas, VIRTUAL_MS, batch);
            // The run is deterministic: count its chosen commands once for the throughput.
            let stats = sim::run(cfg.clone()).expect("a fault-free run passes every invariant");
            g.throughput(Throughput::Elements(stats.commands_chosen));
            g.bench_with_input(BenchmarkId::new(name, replicas), &cfg, |b, cfg| {
                b.iter(|| sim::run(cfg.clone()).expect("fault-free run"));
            });
        }
    }
    g.finish();
}

criterion_group!(benches, cluster);
criterion_main!(benches);
