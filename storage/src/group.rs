//! Group commit: [`GroupCommit`], a writer thread that owns a [`Wal`].
//!
//! Callers [`GroupCommit::submit`] records tagged with a sequence number and go on. The thread
//! takes everything queued, appends it as ONE batch, syncs ONCE, then reports the highest
//! sequence number made durable through the `on_durable` callback. Whatever is submitted while a
//! sync is in flight waits for the next round, so one fsync covers many submissions under load.
//!
//! On an I/O error the thread reports `Err` once and stops: nothing submitted afterwards (or
//! not yet durable) is ever reported durable. The caller is expected to exit the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tracing::error;

use crate::fs::Fs;
use crate::wal::Wal;

type Records = Vec<(u64, Vec<u8>)>;

#[derive(Default)]
struct Queue {
    submitted: Vec<(u64, Records)>,
    head: Option<Vec<u8>>,
    remove_below: Option<u64>,
    shutdown: bool,
    stopped: bool,
}

impl Queue {
    fn idle(&self) -> bool {
        self.submitted.is_empty() && self.head.is_none() && self.remove_below.is_none()
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    syncs: AtomicU64,
    records: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A writer thread owning a [`Wal`]: batches submissions, one append and one sync per round.
/// Dropping it finishes the queued work, then joins the thread.
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (syncs, records) = self.stats();
        f.debug_struct("GroupCommit")
            .field("syncs", &syncs)
            .field("records", &records)
            .finish()
    }
}

impl GroupCommit {
    /// Start the writer thread. `on_durable` runs on it, with `Ok(seq)` (the highest sequence
    /// number made durable, never decreasing) after each sync, or `Err` once on an I/O error.
    pub fn spawn<F: Fs>(
        wal: Wal<F>,
        on_durable: impl Fn(Result<u64, String>) + Send + 'static,
    ) -> GroupCommit {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            syncs: AtomicU64::new(0),
            records: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || run(wal, &s, on_durable))
            .expect("spawn the WAL writer thread");
        GroupCommit {
            shared,
            thread: Some(thread),
        }
    }

    /// Queue `records` (key, bytes) under sequence number `seq`. Never blocks on I/O.
    pub fn submit(&self, seq: u64, records: Vec<(u64, Vec<u8>)>) {
        let mut q = self.shared.lock();
        if q.stopped {
            return;
        }
        q.submitted.push((seq, records));
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Set the WAL's head record (see [`Wal::set_head`]) before the next batch is appended.
    pub fn set_head(&self, record: Vec<u8>) {
        self.shared.lock().head = Some(record);
        self.shared.wake.notify_one();
    }

    /// Remove old segments (see [`Wal::remove_below`]); done by the thread after its next sync.
    pub fn remove_below(&self, key: u64) {
        let mut q = self.shared.lock();
        q.remove_below = Some(q.remove_below.map_or(key, |k| k.max(key)));
        drop(q);
        self.shared.wake.notify_one();
    }

    /// (syncs done, records made durable) so far, for metrics.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.shared.syncs.load(Ordering::Relaxed),
            self.shared.records.load(Ordering::Relaxed),
        )
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run<F: Fs>(mut wal: Wal<F>, shared: &Shared, on_durable: impl Fn(Result<u64, String>)) {
    let mut durable = 0u64;
    loop {
        let (submitted, head, remove) = {
            let mut q = shared.lock();
            while q.idle() && !q.shutdown {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.idle() && q.shutdown {
                return;
            }
            (
                std::mem::take(&mut q.submitted),
                q.head.take(),
                q.remove_below.take(),
            )
        };
        if let Some(h) = head {
            wal.set_head(h);
        }
        let batch: Vec<(u64, &[u8])> = submitted
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|(k, r)| (*k, r.as_slice())))
            .collect();
        let fail = |e: crate::WalError| {
            error!(error = %e, "WAL writer failed; nothing further will be made durable");
            shared.lock().stopped = true;
            on_durable(Err(e.to_string()));
        };
        if let Err(e) = wal.append(&batch).and_then(|()| wal.sync()) {
            return fail(e);
        }
        if !batch.is_empty() {
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            shared
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        if let Some(max) = submitted.iter().map(|(s, _)| *s).max() {
            if max > durable {
                durable = max;
                on_durable(Ok(durable));
            }
        }
        if let Some(k) = remove {
            if let Err(e) = wal.remove_below(k) {
                return fail(e);
            }
        }
    }
}
