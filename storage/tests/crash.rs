//! Crash safety on the simulated disk: whatever was synced survives any crash, and recovery
//! never yields anything but a prefix of what was appended.

use std::path::Path;

use quickcheck::{QuickCheck, TestResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::segment::HEADER_LEN;
use storage::simfs::SimFs;
use storage::{Wal, WalOptions};

const HEAD: &[u8] = b"HEAD";

/// One seeded run: several rounds of (random appends and syncs, crash, reopen). Returns an
/// error describing the first violated property.
fn run_seed(seed: u64, unsafe_skip_sync: bool) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let fs = SimFs::new(seed);
    let dir = Path::new("/data/wal");
    let segment_bytes = [512u64, 1024, 4096][rng.gen_range(0..3)];
    // Sparse segments, and zeros written ahead of the data in steps smaller and larger than a
    // segment (from the seed, so the rest of the run's draws are unchanged).
    let zero_ahead_bytes = [0u64, 100, 1000][(seed % 3) as usize];
    let opts = || WalOptions {
        segment_bytes,
        zero_ahead_bytes,
        unsafe_skip_sync,
    };
    // What recovery must yield if everything appended so far survived.
    let mut log: Vec<Vec<u8>> = Vec::new();
    let mut next = 0u64;
    for round in 0..4 {
        let (mut wal, rec) =
            Wal::open(fs.clone(), dir, opts()).map_err(|e| format!("round {round}: open: {e}"))?;
        if rec.records.as_slice() != &log[..rec.records.len().min(log.len())]
            || rec.records.len() > log.len()
        {
            return Err(format!(
                "round {round}: recovered records are not a prefix of the appended ones"
            ));
        }
        log = rec.records;
        wal.set_head(HEAD.to_vec());
        let mut synced = log.len();
        for _ in 0..rng.gen_range(1..40) {
            let n = rng.gen_range(1..5);
            let batch: Vec<(u64, Vec<u8>)> = (0..n)
                .map(|_| {
                    next += 1;
                    let mut r = format!("r{next}:").into_bytes();
                    let extra = rng.gen_range(0..300);
                    r.extend((0..extra).map(|i| (next as u8).wrapping_add(i as u8) | 1));
                    (next, r)
                })
                .collect();
            let before = wal.position();
            let refs: Vec<(u64, &[u8])> = batch.iter().map(|(k, r)| (*k, r.as_slice())).collect();
            wal.append(&refs).map_err(|e| format!("append: {e}"))?;
            if wal.position().0 != before.0 || before.1 == HEADER_LEN {
                log.push(HEAD.to_vec());
            }
            log.extend(batch.into_iter().map(|(_, r)| r));
            if rng.gen_bool(0.3) {
                wal.sync().map_err(|e| format!("sync: {e}"))?;
                synced = log.len();
            }
        }
        drop(wal);
        fs.crash(rng.gen());
        let (wal, rec) = Wal::open(fs.clone(), dir, opts())
            .map_err(|e| format!("round {round}: reopen: {e}"))?;
        drop(wal);
        if rec.records.len() < synced {
            return Err(format!(
                "round {round}: lost synced records: {} recovered, {synced} were synced",
                rec.records.len()
            ));
        }
        if rec.records.len() > log.len() || rec.records[..] != log[..rec.records.len()] {
            return Err(format!(
                "round {round}: recovered records are not a prefix of the appended ones"
            ));
        }
        log = rec.records;
    }
    Ok(())
}

#[test]
fn synced_records_survive_crashes_for_many_seeds() {
    for seed in 0..300 {
        if let Err(e) = run_seed(seed, false) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn synced_records_survive_crashes_quickcheck() {
    fn prop(seed: u64) -> TestResult {
        match run_seed(seed, false) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(format!("seed {seed}: {e}")),
        }
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(u64) -> TestResult);
}

#[test]
fn skipping_sync_is_caught_within_200_seeds() {
    let failing = (0..200).find(|&seed| run_seed(seed, true).is_err());
    assert!(
        failing.is_some(),
        "a WAL that never fsyncs must violate the crash property"
    );
}

#[test]
fn remove_below_survives_crashes() {
    // Compaction interleaved with crashes: the head is always recovered first, and nothing with
    // a key at or above the compaction point is lost once synced.
    for seed in 0..100 {
        let fs = SimFs::new(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dir = Path::new("/w");
        let opts = || WalOptions {
            segment_bytes: 512,
            ..WalOptions::default()
        };
        let mut slot = 0u64;
        let mut synced_slot = 0u64;
        for _round in 0..3 {
            let (mut wal, rec) = Wal::open(fs.clone(), dir, opts()).unwrap();
            let slots: Vec<u64> = rec
                .records
                .iter()
                .filter(|r| r.as_slice() != HEAD)
                .map(|r| std::str::from_utf8(r).unwrap().parse().unwrap())
                .collect();
            assert!(
                slots.windows(2).all(|w| w[1] == w[0] + 1),
                "seed {seed}: a gap in {slots:?}"
            );
            if let Some(&last) = slots.last() {
                assert!(
                    last >= synced_slot,
                    "seed {seed}: lost synced slot {synced_slot}"
                );
                slot = last;
            } else {
                assert_eq!(synced_slot, 0, "seed {seed}: lost everything");
            }
            wal.set_head(HEAD.to_vec());
            for _ in 0..rng.gen_range(5..40) {
                slot += 1;
                wal.append(&[(slot, format!("{slot}").as_bytes())]).unwrap();
                if rng.gen_bool(0.3) {
                    wal.sync().unwrap();
                    synced_slot = slot;
                }
                // remove_below syncs before removing anything.
                if rng.gen_bool(0.1) && wal.remove_below(slot.saturating_sub(10)).unwrap() > 0 {
                    synced_slot = slot;
                }
            }
            drop(wal);
            fs.crash(rng.gen());
        }
    }
}
