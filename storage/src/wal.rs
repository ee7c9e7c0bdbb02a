//! The write-ahead log: [`Wal`].
//!
//! A WAL is a directory of fixed-size, preallocated segments `<16 hex digits>.wal`, with ids
//! that increase by one and are never reused (see [`crate::segment`] for the byte format).
//! Only the newest segment is written; the others are *closed*, and were synced in full before
//! the next one was created.
//!
//! **Writing.** [`Wal::append`] encodes one batch as one frame and writes it with one call,
//! unsynced. When it does not fit, the WAL first syncs the current segment, then creates the
//! next one (header written, file preallocated, synced, directory synced) and writes there —
//! beginning with the *head* record ([`Wal::set_head`]) in the same frame as the batch, so every
//! segment created after `set_head` carries the caller's state (its current promise) and old
//! segments can be removed without losing it. [`Wal::sync`] fdatasyncs; a failed sync (or a
//! failed write) poisons the WAL: an fsync error is not retriable, the data may be gone.
//!
//! **Recovery** ([`Wal::open`]):
//! - segment ids must be contiguous, else [`WalError::Corrupt`];
//! - a closed segment must be all valid frames then zeros, else `Corrupt`;
//! - in the last segment, bytes after the last valid frame are a torn tail, never acknowledged:
//!   they are cut (zeroed and synced) and counted in [`Recovered::torn_tail_bytes`] — unless a
//!   later valid frame was written after the damaged spot had been synced (its watermark says
//!   so): then the damaged data was acknowledged, and it is `Corrupt`;
//! - a last segment whose header is incomplete was never used (headers are synced before the
//!   first frame) and is re-initialised, unless it holds a valid frame (then `Corrupt`).
//!
//! The one thing recovery cannot tell apart: bit rot in the newest synced frames with no later
//! frame to vouch for them looks exactly like a torn tail, and is cut (as in etcd).

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::fs::{Fs, FsFile};
use crate::segment::{self, HeaderError, HEADER_LEN};
use crate::WalError;

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Preallocated size of each segment (a larger batch gets a segment of its own size).
    pub segment_bytes: u64,
    /// Zero-fill ahead of the data, this many bytes at a time (0: never; the segment stays a
    /// sparse file). A preallocated segment is a hole (`set_len`): every append into it
    /// allocates blocks, and then each `fdatasync` must also make that allocation durable (ext4
    /// with a journal: a jbd2 commit; without one, as measured here: a synchronous inode write,
    /// `ext4_write_inode`). Writing zeros ahead
    /// of the data allocates the blocks once per this many bytes, so the syncs in between only
    /// flush data (PostgreSQL's `wal_init_zero` for the same reason).
    pub zero_ahead_bytes: u64,
    /// Test only: never call `sync_data` for appended data. Proves the crash tests can fail.
    #[doc(hidden)]
    pub unsafe_skip_sync: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            zero_ahead_bytes: 1 << 20,
            unsafe_skip_sync: false,
        }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Every durable record in append order, segment heads included.
    pub records: Vec<Vec<u8>>,
    /// How many bytes of an unacknowledged torn tail were cut (0 if none).
    pub torn_tail_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Closed {
    id: u64,
    max_key: u64,
}

struct Current<File> {
    id: u64,
    file: File,
    /// Allocated length of the segment file.
    cap: u64,
    /// Where the next frame goes.
    write_off: u64,
    /// Everything below this offset is durable.
    synced_off: u64,
    /// Everything below this offset has been written (data or zeros): allocated, not a hole.
    zeroed_off: u64,
    max_key: u64,
    has_frames: bool,
}

/// A write-ahead log over a file system `F`.
pub struct Wal<F: Fs> {
    fs: F,
    dir: PathBuf,
    opts: WalOptions,
    closed: Vec<Closed>,
    cur: Current<F::File>,
    head: Option<Vec<u8>>,
    poisoned: bool,
}

impl<F: Fs> std::fmt::Debug for Wal<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("segment", &self.cur.id)
            .field("write_off", &self.cur.write_off)
            .field("closed", &self.closed.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn corrupt(segment: u64, offset: u64, why: impl Into<String>) -> WalError {
    WalError::Corrupt {
        segment,
        offset,
        why: why.into(),
    }
}

/// Create segment `id` of `cap` bytes: header, preallocation, sync, directory sync.
fn create_segment<F: Fs>(fs: &F, dir: &Path, id: u64, cap: u64) -> Result<F::File, WalError> {
    let path = dir.join(segment::segment_name(id));
    let mut file = fs.create(&path)?;
    file.write_at(0, &segment::encode_header(id))?;
    file.set_len(cap.max(HEADER_LEN))?;
    file.sync_data()?;
    fs.sync_dir(dir)?;
    debug!(segment = id, cap, "created WAL segment");
    Ok(file)
}

impl<F: Fs> Wal<F> {
    /// Open (or create, if the directory has no segment) the WAL in `dir`, recovering its records.
    ///
    /// After opening, call [`Wal::set_head`] with the caller's current state before appending.
    pub fn open(fs: F, dir: &Path, opts: WalOptions) -> Result<(Wal<F>, Recovered), WalError> {
        fs.create_dir_all(dir)?;
        let mut ids: Vec<u64> = fs
            .list(dir)?
            .iter()
            .filter_map(|n| segment::parse_segment_name(n))
            .collect();
        ids.sort_unstable();
        let mut recovered = Recovered::default();
        if ids.is_empty() {
            let file = create_segment(&fs, dir, 1, opts.segment_bytes)?;
            let cur = Current {
                id: 1,
                file,
                cap: opts.segment_bytes.max(HEADER_LEN),
                write_off: HEADER_LEN,
                synced_off: HEADER_LEN,
                zeroed_off: HEADER_LEN,
                max_key: 0,
                has_frames: false,
            };
            let wal = Wal {
                fs,
                dir: dir.to_path_buf(),
                opts,
                closed: Vec::new(),
                cur,
                head: None,
                poisoned: false,
            };
            return Ok((wal, recovered));
        }
        for w in ids.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(corrupt(
                    w[0] + 1,
                    0,
                    format!("segment missing between {} and {}", w[0], w[1]),
                ));
            }
        }
        let mut closed = Vec::new();
        let last_id = *ids.last().expect("non-empty");
        let mut cur = None;
        for &id in &ids {
            let last = id == last_id;
            let path = dir.join(segment::segment_name(id));
            let bytes = fs.read_all(&path)?;
            match segment::check_header(&bytes, id) {
                Ok(()) => {}
                Err(HeaderError::Invalid(why)) if last => {
                    // Headers are synced before the first frame: an incomplete header means the
                    // segment was never used — unless it holds a valid frame after all.
                    if let Some((off, _)) = segment::find_valid_after(&bytes, id, HEADER_LEN) {
                        return Err(corrupt(
                            id,
                            0,
                            format!("{why}, but a valid batch is at offset {off}"),
                        ));
                    }
                    warn!(segment = id, %why, "re-initialising a WAL segment whose creation did not finish");
                    recovered.torn_tail_bytes += bytes.iter().filter(|b| **b != 0).count() as u64;
                    let file = create_segment(&fs, dir, id, opts.segment_bytes)?;
                    cur = Some(Current {
                        id,
                        file,
                        cap: opts.segment_bytes.max(HEADER_LEN),
                        write_off: HEADER_LEN,
                        synced_off: HEADER_LEN,
                        zeroed_off: HEADER_LEN,
                        max_key: 0,
                        has_frames: false,
                    });
                    continue;
                }
                Err(HeaderError::Invalid(why) | HeaderError::Mismatch(why)) => {
                    return Err(corrupt(id, 0, why))
                }
            }
            let scan = segment::scan(&bytes, id, HEADER_LEN, last)
                .map_err(|e| corrupt(id, e.offset, e.why))?;
            let max_key = scan.records.iter().map(|(k, _)| *k).max().unwrap_or(0);
            recovered
                .records
                .extend(scan.records.into_iter().map(|(_, r)| r));
            if !last {
                closed.push(Closed { id, max_key });
                continue;
            }
            let mut file = fs.open(&path)?;
            if scan.dirty_end > scan.end {
                let cut = scan.dirty_end - scan.end;
                warn!(
                    segment = id,
                    offset = scan.end,
                    bytes = cut,
                    "cutting a torn WAL tail"
                );
                file.write_at(scan.end, &vec![0u8; cut as usize])?;
                recovered.torn_tail_bytes += cut;
            }
            // What was read may be only in the page cache (the process was killed, the machine
            // was not): the replica is about to act on these records (keep its promise, report
            // its votes), so they must be on disk before it does, or a power cut after the
            // restart would take back what it then said. (Unless the options skip syncs.)
            if !opts.unsafe_skip_sync {
                file.sync_data()?;
            }
            cur = Some(Current {
                id,
                file,
                cap: bytes.len() as u64,
                write_off: scan.end,
                synced_off: scan.end,
                zeroed_off: scan.end,
                max_key,
                has_frames: scan.frames > 0,
            });
        }
        let cur = cur.expect("the last segment was opened");
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            opts,
            closed,
            cur,
            head: None,
            poisoned: false,
        };
        debug!(?wal, records = recovered.records.len(), "opened WAL");
        Ok((wal, recovered))
    }

    /// Set the record written at the head of every new segment (key 0). The caller keeps it
    /// equal to its current durable state (its promise), so removing old segments never drops it.
    pub fn set_head(&mut self, record: Vec<u8>) {
        self.head = Some(record);
    }

    /// How many segments the WAL has (closed ones plus the current one).
    pub fn segments(&self) -> usize {
        self.closed.len() + 1
    }

    /// The id of the segment being written.
    pub fn current_segment(&self) -> u64 {
        self.cur.id
    }

    /// Where the next frame goes: (segment id, byte offset). An offset equal to
    /// [`segment::HEADER_LEN`] means the current segment holds no frame yet.
    pub fn position(&self) -> (u64, u64) {
        (self.cur.id, self.cur.write_off)
    }

    /// The directory of the WAL.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Run `f`; poison the WAL if it fails.
    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, WalError>,
    ) -> Result<T, WalError> {
        self.check()?;
        let r = f(self);
        if let Err(e) = &r {
            warn!(error = %e, "WAL poisoned");
            self.poisoned = true;
        }
        r
    }

    /// Append one batch of records, each with a key the caller compacts by (e.g. a slot; 0 for
    /// records the head supersedes). One frame, one write call, not synced. Rotates to a new
    /// segment first when the batch does not fit. A write error poisons the WAL.
    pub fn append(&mut self, records: &[(u64, &[u8])]) -> Result<(), WalError> {
        self.check()?;
        if records.is_empty() {
            return Ok(());
        }
        self.guard(|w| w.append_inner(records))
    }

    fn append_inner(&mut self, records: &[(u64, &[u8])]) -> Result<(), WalError> {
        let lens: Vec<usize> = records.iter().map(|(_, d)| d.len()).collect();
        let head_len = self.head.as_ref().map(Vec::len);
        let size = |with_head: bool| {
            segment::frame_len(lens.iter().chain(head_len.iter().filter(|_| with_head)))
        };
        if self.cur.write_off + size(!self.cur.has_frames) > self.cur.cap {
            self.rotate(HEADER_LEN + size(true))?;
        }
        let mut batch: Vec<(u64, &[u8])> = Vec::with_capacity(records.len() + 1);
        if !self.cur.has_frames {
            if let Some(h) = &self.head {
                batch.push((0, h.as_slice()));
            }
        }
        batch.extend_from_slice(records);
        let cur = &mut self.cur;
        let frame = segment::encode_frame(cur.id, cur.write_off, cur.synced_off, &batch);
        cur.file.write_at(cur.write_off, &frame)?;
        cur.write_off += frame.len() as u64;
        cur.has_frames = true;
        cur.max_key = batch.iter().map(|(k, _)| *k).fold(cur.max_key, u64::max);
        let ahead = self.opts.zero_ahead_bytes;
        if ahead > 0 && cur.write_off > cur.zeroed_off {
            // This frame reached past the zeroed part: its sync commits an allocation anyway,
            // so allocate the next `ahead` bytes with it (zeros are the segment's "no data").
            let to = cur.write_off.saturating_add(ahead).min(cur.cap);
            if to > cur.write_off {
                cur.file.write_at(cur.write_off, &vec![0u8; (to - cur.write_off) as usize])?;
            }
            cur.zeroed_off = to.max(cur.write_off);
        }
        Ok(())
    }

    /// Sync the current segment, close it and start the next one, at least `need` bytes long.
    fn rotate(&mut self, need: u64) -> Result<(), WalError> {
        self.sync_inner()?;
        let id = self.cur.id + 1;
        let cap = self.opts.segment_bytes.max(need);
        let file = create_segment(&self.fs, &self.dir, id, cap)?;
        let old = std::mem::replace(
            &mut self.cur,
            Current {
                id,
                file,
                cap,
                write_off: HEADER_LEN,
                synced_off: HEADER_LEN,
                zeroed_off: HEADER_LEN,
                max_key: 0,
                has_frames: false,
            },
        );
        self.closed.push(Closed {
            id: old.id,
            max_key: old.max_key,
        });
        Ok(())
    }

    fn sync_inner(&mut self) -> Result<(), WalError> {
        if self.cur.synced_off == self.cur.write_off {
            return Ok(());
        }
        if !self.opts.unsafe_skip_sync {
            self.cur.file.sync_data()?;
        }
        self.cur.synced_off = self.cur.write_off;
        Ok(())
    }

    /// Make everything appended so far durable (fdatasync). A no-op only if nothing was
    /// written since the last sync (earlier segments were synced when they were closed).
    /// An error poisons the WAL: every later call returns [`WalError::Poisoned`].
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.guard(|w| w.sync_inner())
    }

    /// Remove the oldest closed segments whose records all have a key below `below` (never the
    /// current one, and only a prefix, so ids stay contiguous), syncing the directory after
    /// each. Before removing anything it makes the current segment durable, with the head in
    /// it, so the head's state survives (when nothing qualifies it does no I/O at all).
    /// Returns how many segments were removed.
    pub fn remove_below(&mut self, below: u64) -> Result<usize, WalError> {
        self.guard(|w| {
            let removable = w.closed.iter().take_while(|c| c.max_key < below).count();
            if removable == 0 {
                return Ok(0);
            }
            if !w.cur.has_frames {
                if let Some(h) = w.head.clone() {
                    // An empty segment (e.g. created just before a crash) has no head yet.
                    let frame = segment::encode_frame(
                        w.cur.id,
                        w.cur.write_off,
                        w.cur.synced_off,
                        &[(0, &h)],
                    );
                    w.cur.file.write_at(w.cur.write_off, &frame)?;
                    w.cur.write_off += frame.len() as u64;
                    w.cur.has_frames = true;
                }
            }
            w.sync_inner()?;
            for _ in 0..removable {
                let c = w.closed[0];
                w.fs.remove(&w.dir.join(segment::segment_name(c.id)))?;
                w.fs.sync_dir(&w.dir)?;
                w.closed.remove(0);
                debug!(segment = c.id, max_key = c.max_key, "removed WAL segment");
            }
            Ok(removable)
        })
    }
}
