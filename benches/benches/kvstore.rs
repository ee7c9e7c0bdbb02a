//! kvstore benchmarks: commands applied per second, and snapshot encode/decode throughput.
//!
//! Run: `cargo bench -p benches --bench kvstore -- --warm-up-time 1 --measurement-time 2`.
//! Apply benches measure `Store::apply` on pre-encoded log bytes (decode + limits + sessions +
//! execute), the work a replica does per chosen command. Snapshot benches stream a store of
//! `ENTRIES` 100-byte values in 64 KiB chunks; throughput is in snapshot bytes. Get benches
//! read random keys of a 10 k and a 1 M key store (`-- kvstore_get`).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kvstore::{BatchOp, ClientId, Request, SessionRef, SnapshotDecoder, Stamp, Store, StoreConfig, WriteOp};

const COMMANDS: u64 = 10_000;
const ENTRIES: u64 = 50_000;
const CHUNK: usize = 64 * 1024;

fn key(i: u64) -> Vec<u8> {
    format!("user/{i:010}").into_bytes()
}

fn encoded(ops: impl Iterator<Item = (Option<SessionRef>, WriteOp)>) -> Vec<Vec<u8>> {
    ops.enumerate()
        .map(|(i, (session, op))| Request { session, stamp: Stamp::new(0, 0, i as u64), op }.encode())
        .collect()
}

fn bench_apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("kvstore_apply");
    g.throughput(Throughput::Elements(COMMANDS));

    let puts = encoded((0..COMMANDS).map(|i| (None, WriteOp::Put { key: key(i), value: vec![7; 100], guard: None })));
    g.bench_function("put_100B_no_session", |b| {
        b.iter_batched(
            || Store::new(StoreConfig::default()),
            |mut s| {
                for (i, bytes) in puts.iter().enumerate() {
                    black_box(s.apply(i as u64 + 1, bytes)).ok();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });

    // 1,000 clients, each with its own increasing sequence: the session table is exercised.
    let sessions = encoded((0..COMMANDS).map(|i| {
        let session = Some(SessionRef { client: ClientId(i % 1000), seq: i / 1000 + 1 });
        (session, WriteOp::Put { key: key(i), value: vec![7; 100], guard: None })
    }));
    g.bench_function("put_100B_with_session", |b| {
        b.iter_batched(
            || Store::new(StoreConfig::default()),
            |mut s| {
                for (i, bytes) in sessions.iter().enumerate() {
                    black_box(s.apply(i as u64 + 1, bytes)).ok();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });

    let incrs = encoded((0..COMMANDS).map(|i| (None, WriteOp::Incr { key: key(i % 16), delta: 1, initial: 0 })));
    g.bench_function("incr_hot_keys", |b| {
        b.iter_batched(
            || Store::new(StoreConfig::default()),
            |mut s| {
                for (i, bytes) in incrs.iter().enumerate() {
                    black_box(s.apply(i as u64 + 1, bytes)).ok();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // Atomic batches of 100 guarded puts: throughput counted in keys written.
    let mut g = c.benchmark_group("kvstore_apply_batch");
    g.throughput(Throughput::Elements(COMMANDS));
    let batches = encoded((0..COMMANDS / 100).map(|b| {
        let ops = (0..100)
            .map(|j| BatchOp::Put { key: key(b * 100 + j), value: vec![7; 100], guard: Some(kvstore::Guard::Absent) })
            .collect();
        (None, WriteOp::PutMany { ops })
    }));
    g.bench_function("put_many_100x100B_guarded", |b| {
        b.iter_batched(
            || Store::new(StoreConfig::default()),
            |mut s| {
                for (i, bytes) in batches.iter().enumerate() {
                    black_box(s.apply(i as u64 + 1, bytes)).ok();
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn big_store() -> Store {
    let mut s = Store::new(StoreConfig::default());
    for i in 0..ENTRIES {
        let session = Some(SessionRef { client: ClientId(i % 1000), seq: i / 1000 + 1 });
        let r = Request { session, stamp: Stamp::new(0, 0, i), op: WriteOp::Put { key: key(i), value: vec![(i % 251) as u8; 100], guard: None } };
        s.apply_request(i + 1, &r).expect("bench setup writes succeed");
    }
    s
}

fn bench_snapshot(c: &mut Criterion) {
    let store = big_store();
    let chunks: Vec<Vec<u8>> = store.snapshot(CHUNK).collect();
    let total: usize = chunks.iter().map(Vec::len).sum();
    eprintln!("snapshot of {ENTRIES} entries: {total} bytes in {} chunks", chunks.len());

    let mut g = c.benchmark_group("kvstore_snapshot");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("encode_64KiB_chunks", |b| {
        b.iter(|| {
            let mut n = 0;
            for chunk in store.snapshot(CHUNK) {
                n += black_box(chunk).len();
            }
            n
        })
    });
    g.bench_function("decode_64KiB_chunks", |b| {
        // The rebuilt store's drop (50,000 frees) is not part of decoding.
        b.iter_with_large_drop(|| {
            let mut d = SnapshotDecoder::new();
            for chunk in &chunks {
                d.push(chunk).expect("valid snapshot");
            }
            d.finish().expect("valid snapshot")
        })
    });
    g.bench_function("state_hash", |b| b.iter(|| black_box(store.state_hash())));
    g.finish();
}

/// Point reads (`Store::get`) of uniformly random keys in a store of 10 k and of 1 M keys (the
/// load generator's key shape, `k<i>`, 128-byte values): the per-lookup cost that grows with the
/// store. Throughput in reads.
fn bench_get(c: &mut Criterion) {
    const READS: u64 = 100_000;
    let mut g = c.benchmark_group("kvstore_get");
    g.throughput(Throughput::Elements(READS));
    for n in [10_000u64, 1_000_000] {
        let mut s = Store::new(StoreConfig::default());
        for i in 0..n {
            let op = WriteOp::Put { key: format!("k{i}").into_bytes(), value: vec![7; 128], guard: None };
            s.apply_request(i + 1, &Request { session: None, stamp: Stamp::new(0, 0, i), op }).ok();
        }
        // A fixed pseudo-random sequence (an LCG), the same for every run.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let keys: Vec<Vec<u8>> = (0..READS)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("k{}", (x >> 33) % n).into_bytes()
            })
            .collect();
        g.bench_function(format!("{n}_keys"), |b| {
            b.iter(|| {
                let mut found = 0u64;
                for k in &keys {
                    found += s.get_ref(k).map_or(0, |v| v.version);
                }
                black_box(found)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_apply, bench_snapshot, bench_get);
criterion_main!(benches);
