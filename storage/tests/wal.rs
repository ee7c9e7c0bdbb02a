//! WAL round trips, rotation, compaction, torn tails and corruption, on real files (StdFs).

use std::path::{Path, PathBuf};

use storage::segment::{encode_header, segment_name, HEADER_LEN};
use storage::{StdFs, Wal, WalError, WalOptions};

fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        ..WalOptions::default()
    }
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(segment_name(id))
}

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// Appends `batches` and returns what recovery must yield: the head is expected before the
/// first batch of every segment that had no frame yet when the batch went in.
fn append_tracking(
    wal: &mut Wal<StdFs>,
    head: Option<&[u8]>,
    batches: &[Vec<(u64, Vec<u8>)>],
) -> Vec<Vec<u8>> {
    let mut expected = Vec::new();
    for b in batches {
        let before = wal.position();
        let refs: Vec<(u64, &[u8])> = b.iter().map(|(k, r)| (*k, r.as_slice())).collect();
        wal.append(&refs).unwrap();
        if let Some(h) = head {
            if wal.position().0 != before.0 || before.1 == HEADER_LEN {
                expected.push(h.to_vec());
            }
        }
        expected.extend(b.iter().map(|(_, r)| r.clone()));
    }
    expected
}

fn batches(n: u64, per: u64, size: usize) -> Vec<Vec<(u64, Vec<u8>)>> {
    (0..n)
        .map(|i| {
            (0..per)
                .map(|j| {
                    let slot = 1 + i * per + j;
                    let mut r = format!("rec-{slot}-").into_bytes();
                    r.resize(size.max(r.len()), b'x');
                    (slot, r)
                })
                .collect()
        })
        .collect()
}

#[test]
fn round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, rec) = Wal::open(StdFs, dir.path(), opts(1 << 20)).unwrap();
    assert!(rec.records.is_empty());
    let expected = append_tracking(&mut wal, None, &batches(20, 3, 10));
    wal.sync().unwrap();
    drop(wal);
    let (wal, rec) = Wal::open(StdFs, dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(rec.records, expected);
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(wal.segments(), 1);
}

#[test]
fn rotation_reemits_head_in_every_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    wal.set_head(b"HEAD:promise=7".to_vec());
    let mut expected = append_tracking(&mut wal, Some(b"HEAD:promise=7"), &batches(30, 2, 40));
    // A batch larger than a segment gets a segment of its own size.
    let big = vec![vec![(1000, vec![b'B'; 3000])]];
    let seg_before = wal.position().0;
    expected.extend(append_tracking(&mut wal, Some(b"HEAD:promise=7"), &big));
    assert_eq!(wal.position().0, seg_before + 1);
    wal.sync().unwrap();
    let segments = wal.segments();
    assert!(segments > 5, "tiny segments must rotate, got {segments}");
    drop(wal);
    let heads = expected.iter().filter(|r| r.starts_with(b"HEAD")).count();
    // set_head came before the first append, so segment 1 starts with the head too.
    assert_eq!(heads, segments, "one head at the start of every segment");
    assert_eq!(expected[0], b"HEAD:promise=7");
    let (wal, rec) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    assert_eq!(rec.records, expected);
    assert_eq!(wal.segments(), segments);
    assert!(
        std::fs::metadata(seg_path(dir.path(), seg_before + 1))
            .unwrap()
            .len()
            > 3000
    );
}

#[test]
fn remove_below_drops_only_closed_fully_compacted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    wal.set_head(b"HEAD".to_vec());
    let all = batches(40, 2, 30); // slots 1..=80
    let expected = append_tracking(&mut wal, Some(b"HEAD"), &all);
    wal.sync().unwrap();
    let before = wal.segments();
    assert_eq!(
        wal.remove_below(1).unwrap(),
        0,
        "no segment has all keys below 1"
    );
    let removed = wal.remove_below(41).unwrap();
    assert!(removed > 0 && removed < before);
    assert_eq!(wal.segments(), before - removed);
    drop(wal);

    let (mut wal, rec) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    // What is left is a suffix of what was written, starting with a head, keeping every slot >= 41.
    assert_eq!(rec.records[0], b"HEAD");
    assert!(expected.ends_with(&rec.records));
    for slot in 41..=80 {
        assert!(
            rec.records
                .iter()
                .any(|r| r.starts_with(format!("rec-{slot}-").as_bytes())),
            "slot {slot}"
        );
    }
    // The removed slots are gone (some below 41 may remain in a segment shared with 41+).
    assert!(!rec.records.iter().any(|r| r.starts_with(b"rec-1-")));
    // After a restart the keys are known again: everything closed can go, never the current one.
    let n = wal.segments();
    wal.set_head(b"HEAD".to_vec());
    assert_eq!(wal.remove_below(u64::MAX).unwrap(), n - 1);
    assert_eq!(wal.segments(), 1);
    drop(wal);
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    assert_eq!(
        rec.records.first().map(Vec::as_slice),
        Some(&b"HEAD"[..]),
        "the head's state survives"
    );
}

#[test]
fn remove_below_keeps_ids_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(256)).unwrap();
    wal.append(&[(100, &[1u8; 100][..])]).unwrap();
    for i in 0..10 {
        wal.append(&[(i, &[2u8; 100][..])]).unwrap();
    }
    assert!(wal.segments() > 3);
    // Segment 1 holds key 100: nothing after it may go either, or ids would have a gap.
    assert_eq!(wal.remove_below(50).unwrap(), 0);
    drop(wal);
    Wal::open(StdFs, dir.path(), opts(256)).unwrap();
}

#[test]
fn preallocated_zeros_are_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(8192)).unwrap();
    assert_eq!(
        std::fs::metadata(seg_path(dir.path(), 1)).unwrap().len(),
        8192
    );
    drop(wal);
    let (w, rec) = Wal::open(StdFs, dir.path(), opts(8192)).unwrap();
    assert_eq!((rec.records.len(), rec.torn_tail_bytes), (0, 0));
    wal = w;
    wal.append(&[(1, b"one")]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(8192)).unwrap();
    assert_eq!(rec.records, vec![b"one".to_vec()]);
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(
        std::fs::metadata(seg_path(dir.path(), 1)).unwrap().len(),
        8192
    );
}

/// Blocks the file system allocated to segment `id` (`st_blocks`, in 512-byte units).
fn allocated(dir: &Path, id: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(seg_path(dir, id)).unwrap().blocks() * 512
}

/// A WAL in `dir` with segments of `seg` bytes and zeros written `ahead` bytes at a time.
fn zeroing_wal(dir: &Path, seg: u64, ahead: u64) -> Wal<StdFs> {
    let opts = WalOptions {
        segment_bytes: seg,
        zero_ahead_bytes: ahead,
        ..WalOptions::default()
    };
    Wal::open(StdFs, dir, opts).unwrap().0
}

/// Zeros are written ahead of the data, so the blocks later appends land in are already
/// allocated: an fdatasync after them flushes data only, not an allocation (with a sparse
/// segment, every append allocates and every sync must commit that too). With the step off the
/// segment stays a hole beyond its data; either way the zeros read back as no data.
#[test]
fn zeros_are_written_ahead_of_the_data() {
    let seg = 4 << 20;
    let ahead = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut wal = zeroing_wal(dir.path(), seg, ahead);
    wal.append(&[(1, b"one")]).unwrap();
    wal.sync().unwrap();
    let first = allocated(dir.path(), 1);
    assert!(first >= ahead, "{first} bytes allocated after the first append: no zeros ahead");
    assert!(first < seg, "{first} bytes allocated: the whole segment, not a step");
    // Appends inside the zeroed part allocate nothing more.
    for i in 2..50u64 {
        wal.append(&[(i, &[7u8; 1000])]).unwrap();
        wal.sync().unwrap();
    }
    assert_eq!(allocated(dir.path(), 1), first, "appends within the zeroed step allocated blocks");
    // Crossing the step zeroes the next one.
    while wal.position().1 < ahead + HEADER_LEN {
        wal.append(&[(99, &[8u8; 4000])]).unwrap();
    }
    wal.sync().unwrap();
    assert!(allocated(dir.path(), 1) >= 2 * ahead);
    // The next segment zeroes ahead from its own start.
    while wal.position().0 == 1 {
        wal.append(&[(100, &[9u8; 60_000])]).unwrap();
    }
    wal.sync().unwrap();
    let second = allocated(dir.path(), 2);
    assert!(second >= ahead && second < seg, "{second} bytes allocated in the next segment");
    drop(wal);
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(seg)).unwrap();
    assert_eq!(rec.torn_tail_bytes, 0);
    assert_eq!(rec.records[0], b"one".to_vec());

    // Without the step: a hole beyond the data.
    let dir = tempfile::tempdir().unwrap();
    let mut wal = zeroing_wal(dir.path(), seg, 0);
    wal.append(&[(1, b"one")]).unwrap();
    wal.sync().unwrap();
    let sparse = allocated(dir.path(), 1);
    assert!(sparse < ahead / 4, "{sparse} bytes allocated without zeros ahead");
}

#[test]
fn stale_bytes_under_another_segment_id_do_not_validate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(4096)).unwrap();
    let expected = append_tracking(&mut wal, None, &batches(5, 2, 20));
    wal.sync().unwrap();
    drop(wal);
    // Segment 2 = a valid header for id 2 followed by segment 1's frames, byte for byte.
    let one = std::fs::read(seg_path(dir.path(), 1)).unwrap();
    let mut two = encode_header(2).to_vec();
    two.extend_from_slice(&one[HEADER_LEN as usize..]);
    std::fs::write(seg_path(dir.path(), 2), &two).unwrap();
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(4096)).unwrap();
    assert_eq!(
        rec.records, expected,
        "the copied frames must not be read as segment 2's"
    );
    assert!(
        rec.torn_tail_bytes > 0,
        "they are garbage at the tail, and cut"
    );
    let cleaned = std::fs::read(seg_path(dir.path(), 2)).unwrap();
    assert!(cleaned[HEADER_LEN as usize..].iter().all(|b| *b == 0));

    // A whole copy (header included) under a new id is refused outright.
    std::fs::write(seg_path(dir.path(), 3), &one).unwrap();
    match Wal::open(StdFs, dir.path(), opts(4096)) {
        Err(WalError::Corrupt {
            segment: 3,
            offset: 0,
            why,
        }) => assert!(why.contains("header"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Writes 5 synced batches and returns (expected records, offset where batch 5 starts).
fn five_batches(dir: &Path) -> (Vec<Vec<u8>>, u64) {
    let (mut wal, _) = Wal::open(StdFs, dir, opts(1 << 16)).unwrap();
    let all = batches(5, 2, 50);
    let mut expected = append_tracking(&mut wal, None, &all[..4]);
    wal.sync().unwrap();
    let last_start = wal.position().1;
    expected.extend(append_tracking(&mut wal, None, &all[4..]));
    wal.sync().unwrap();
    (expected, last_start)
}

fn check_torn_tail_recovery(dir: &Path, kept: &[Vec<u8>]) {
    let (mut wal, rec) = Wal::open(StdFs, dir, opts(1 << 16)).unwrap();
    assert_eq!(rec.records, kept, "earlier records intact");
    assert!(rec.torn_tail_bytes > 0);
    wal.append(&[(99, b"after-reopen")]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(StdFs, dir, opts(1 << 16)).unwrap();
    let mut want = kept.to_vec();
    want.push(b"after-reopen".to_vec());
    assert_eq!(rec.records, want);
    assert_eq!(
        rec.torn_tail_bytes, 0,
        "the cut is durable; nothing to cut twice"
    );
}

#[test]
fn torn_tail_truncated_file_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, last_start) = five_batches(dir.path());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_path(dir.path(), 1))
        .unwrap();
    f.set_len(last_start + 40).unwrap(); // half of batch 5, and the preallocation, gone
    drop(f);
    check_torn_tail_recovery(dir.path(), &expected[..8]);
}

#[test]
fn torn_tail_garbled_last_batch_is_cut() {
    for at in [0u64, 5, 30, 100] {
        let dir = tempfile::tempdir().unwrap();
        let (expected, last_start) = five_batches(dir.path());
        flip(&seg_path(dir.path(), 1), last_start + at);
        let (_, rec) = Wal::open(StdFs, dir.path(), opts(1 << 16)).unwrap();
        assert!(
            rec.torn_tail_bytes >= 100,
            "batch 5 counted as cut, got {}",
            rec.torn_tail_bytes
        );
        drop(rec);
        // Re-run the full check on a fresh copy of the same damage.
        let dir = tempfile::tempdir().unwrap();
        let (_, last_start) = five_batches(dir.path());
        flip(&seg_path(dir.path(), 1), last_start + at);
        check_torn_tail_recovery(dir.path(), &expected[..8]);
    }
}

#[test]
fn damage_before_a_later_synced_batch_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(1 << 16)).unwrap();
    let all = batches(6, 2, 50);
    let mut starts = Vec::new();
    for b in &all {
        starts.push(wal.position().1);
        let refs: Vec<(u64, &[u8])> = b.iter().map(|(k, r)| (*k, r.as_slice())).collect();
        wal.append(&refs).unwrap();
        wal.sync().unwrap();
    }
    drop(wal);
    flip(&seg_path(dir.path(), 1), starts[1] + 40);
    match Wal::open(StdFs, dir.path(), opts(1 << 16)) {
        Err(WalError::Corrupt {
            segment: 1, offset, ..
        }) => assert_eq!(offset, starts[1]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Zeroing the length field makes it look like the end of data: still caught.
    let p = seg_path(dir.path(), 1);
    flip(&p, starts[1] + 40);
    let mut b = std::fs::read(&p).unwrap();
    b[starts[2] as usize..starts[2] as usize + 4].fill(0);
    std::fs::write(&p, b).unwrap();
    match Wal::open(StdFs, dir.path(), opts(1 << 16)) {
        Err(WalError::Corrupt {
            segment: 1, offset, ..
        }) => assert_eq!(offset, starts[2]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn damage_within_the_unsynced_window_is_a_torn_tail() {
    // Batches 2 and 3 were never synced: a crash may keep 3 and lose 2. That is a torn tail.
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(1 << 16)).unwrap();
    let all = batches(3, 1, 50);
    let expected = append_tracking(&mut wal, None, &all[..1]);
    wal.sync().unwrap();
    let start2 = wal.position().1;
    append_tracking(&mut wal, None, &all[1..]);
    drop(wal);
    flip(&seg_path(dir.path(), 1), start2 + 30);
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(1 << 16)).unwrap();
    assert_eq!(rec.records, expected);
    assert!(rec.torn_tail_bytes > 100);
}

#[test]
fn damage_in_an_older_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    append_tracking(&mut wal, None, &batches(20, 2, 40));
    wal.sync().unwrap();
    assert!(wal.segments() >= 3);
    drop(wal);
    // The last frame of segment 1 has nothing after it in its segment: still not a torn tail.
    let p = seg_path(dir.path(), 1);
    let bytes = std::fs::read(&p).unwrap();
    let last_nonzero = bytes.iter().rposition(|b| *b != 0).unwrap() as u64;
    flip(&p, last_nonzero);
    match Wal::open(StdFs, dir.path(), opts(512)) {
        Err(WalError::Corrupt { segment: 1, .. }) => {}
        other => panic!("expected Corrupt in segment 1, got {other:?}"),
    }
    flip(&p, last_nonzero);
    Wal::open(StdFs, dir.path(), opts(512)).expect("undamaged again");
    // A bad header in a closed segment is corruption too.
    flip(&seg_path(dir.path(), 2), 3);
    assert!(matches!(
        Wal::open(StdFs, dir.path(), opts(512)),
        Err(WalError::Corrupt {
            segment: 2,
            offset: 0,
            ..
        })
    ));
}

#[test]
fn missing_segment_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(512)).unwrap();
    append_tracking(&mut wal, None, &batches(20, 2, 40));
    wal.sync().unwrap();
    assert!(wal.segments() >= 3);
    drop(wal);
    std::fs::remove_file(seg_path(dir.path(), 2)).unwrap();
    match Wal::open(StdFs, dir.path(), opts(512)) {
        Err(e @ WalError::Corrupt { segment: 2, .. }) => assert!(e.to_string().contains("missing")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn unfinished_last_segment_creation_is_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(StdFs, dir.path(), opts(4096)).unwrap();
    let expected = append_tracking(&mut wal, None, &batches(3, 2, 20));
    wal.sync().unwrap();
    drop(wal);
    std::fs::write(seg_path(dir.path(), 2), b"SYNODW").unwrap(); // a header cut short
    let (mut wal, rec) = Wal::open(StdFs, dir.path(), opts(4096)).unwrap();
    assert_eq!(rec.records, expected);
    assert_eq!(wal.position(), (2, HEADER_LEN));
    wal.append(&[(7, b"seven")]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = Wal::open(StdFs, dir.path(), opts(4096)).unwrap();
    assert_eq!(rec.records.last().unwrap(), b"seven");
}

#[test]
fn poisoned_after_failed_sync() {
    use storage::simfs::SimFs;
    let fs = SimFs::new(3);
    let (mut wal, _) = Wal::open(fs.clone(), Path::new("/wal"), opts(4096)).unwrap();
    wal.append(&[(1, b"a")]).unwrap();
    fs.fail_next_sync();
    assert!(matches!(wal.sync(), Err(WalError::Io(_))));
    assert!(
        matches!(wal.sync(), Err(WalError::Poisoned)),
        "an fsync error is not retriable"
    );
    assert!(matches!(wal.append(&[(2, b"b")]), Err(WalError::Poisoned)));
    assert!(matches!(wal.remove_below(10), Err(WalError::Poisoned)));
}

/// A kill -9 leaves appended records in the page cache: the restarted process reads them and
/// acts on them (its promise, its votes), so `open` makes them durable first; a power cut after
/// the restart must not take them back. (Open used to count the tail it read as synced.)
#[test]
fn records_read_back_after_a_kill_are_durable_before_the_restart_acts() {
    use storage::simfs::SimFs;
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        let (mut wal, _) = Wal::open(fs.clone(), Path::new("/wal"), opts(4096)).unwrap();
        wal.append(&[(1, b"synced")]).unwrap();
        wal.sync().unwrap();
        wal.append(&[(2, b"in the page cache")]).unwrap();
        drop(wal); // kill -9: the write is not synced, the machine keeps it
        let (wal, rec) = Wal::open(fs.clone(), Path::new("/wal"), opts(4096)).unwrap();
        assert_eq!(rec.records.last().unwrap(), b"in the page cache", "seed {seed}: the restart reads it");
        drop(wal);
        fs.crash(seed); // then a power cut
        let (_, rec) = Wal::open(fs.clone(), Path::new("/wal"), opts(4096)).unwrap();
        assert_eq!(rec.records.last().unwrap(), b"in the page cache", "seed {seed}: what the restart read and acted on was lost by a power cut");
    }
}
