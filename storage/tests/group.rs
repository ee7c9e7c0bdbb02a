//! Group commit: batching, monotonic durability reports, and poisoning on a failed sync.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use storage::simfs::{SimFile, SimFs};
use storage::{Fs, FsFile, GroupCommit, Wal, WalOptions};

/// SimFs whose fsync takes a millisecond, like a real disk, so submissions pile up behind it.
#[derive(Clone)]
struct SlowFs(SimFs);
struct SlowFile(SimFile);

impl Fs for SlowFs {
    type File = SlowFile;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.create_dir_all(dir)
    }
    fn open(&self, path: &Path) -> io::Result<SlowFile> {
        self.0.open(path).map(SlowFile)
    }
    fn create(&self, path: &Path) -> io::Result<SlowFile> {
        self.0.create(path).map(SlowFile)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.sync_dir(dir)
    }
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0.read_all(path)
    }
}

impl FsFile for SlowFile {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_at(off, buf)
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(off, buf)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        self.0.sync_data()
    }
}

const DIR: &str = "/wal";

#[test]
fn many_submits_few_syncs_monotonic_reports() {
    let fs = SimFs::new(1);
    let (wal, _) = Wal::open(
        SlowFs(fs.clone()),
        Path::new(DIR),
        WalOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let gc = GroupCommit::spawn(wal, move |r| tx.send(r).unwrap());
    gc.set_head(b"HEAD".to_vec());
    const N: u64 = 2000;
    let mut last = 0;
    let mut reports = 0u64;
    let mut wait_until = |target: u64| {
        while last < target {
            let r = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("a report")
                .expect("no error");
            assert!(r > last, "durable reports must increase: {r} after {last}");
            last = r;
            reports += 1;
        }
        assert_eq!(
            last, target,
            "reports end exactly at the last seq submitted"
        );
    };
    // Two phases, each from another thread: the second cannot fit in the first's segment, so
    // the first's segments are closed and the compaction below has something to remove.
    for phase in [1..=N / 2, N / 2 + 1..=N] {
        let end = *phase.end();
        std::thread::scope(|s| {
            s.spawn(|| {
                for seq in phase {
                    gc.submit(seq, vec![(seq, format!("v{seq}").into_bytes())]);
                }
            });
        });
        wait_until(end);
    }
    gc.remove_below(N / 2 + 1);
    let (syncs, records) = gc.stats();
    assert_eq!(records, N);
    assert!(
        syncs < N / 2,
        "group commit must batch: {syncs} syncs for {N} submits"
    );
    assert!(reports <= syncs);
    drop(gc); // joins the thread, after it did the compaction
    assert!(rx.try_recv().is_err(), "nothing after the last seq");
    // Everything is durable: it survives a crash, in submission order.
    fs.crash(9);
    let (_, rec) = Wal::open(
        fs,
        Path::new(DIR),
        WalOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let values: Vec<&[u8]> = rec
        .records
        .iter()
        .map(Vec::as_slice)
        .filter(|r| *r != b"HEAD")
        .collect();
    assert_eq!(values.last().copied(), Some(format!("v{N}").as_bytes()));
    let nums: Vec<u64> = values
        .iter()
        .map(|v| std::str::from_utf8(&v[1..]).unwrap().parse().unwrap())
        .collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gap"
    );
    assert!(nums[0] > 1, "old segments were removed");
    assert!(
        nums[0] <= N / 2 + 1,
        "nothing at or above the compaction key was removed"
    );
}

#[test]
fn failed_sync_reports_err_once_and_nothing_after() {
    let fs = SimFs::new(2);
    let (wal, _) = Wal::open(
        fs.clone(),
        Path::new(DIR),
        WalOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let gc = GroupCommit::spawn(wal, move |r| tx.send(r).unwrap());
    gc.submit(1, vec![(1, b"one".to_vec())]);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(1));
    fs.fail_next_sync();
    gc.submit(2, vec![(2, b"two".to_vec())]);
    let err = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(err.is_err(), "expected Err, got {err:?}");
    for seq in 3..10 {
        gc.submit(seq, vec![(seq, b"later".to_vec())]);
    }
    std::thread::sleep(Duration::from_millis(50));
    drop(gc);
    let rest: Vec<_> = rx.try_iter().collect();
    assert!(
        rest.is_empty(),
        "nothing may be reported after the failure: {rest:?}"
    );
    // The failed batch was never durable; the first one was.
    fs.crash(5);
    let (_, rec) = Wal::open(
        fs,
        Path::new(DIR),
        WalOptions {
            segment_bytes: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rec.records.first().map(Vec::as_slice), Some(&b"one"[..]));
    assert!(!rec.records.iter().any(|r| r == b"later"));
}
