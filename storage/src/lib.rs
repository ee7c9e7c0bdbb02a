//! Durable storage for a Synod replica: a write-ahead log for the acceptor's state
//! ([`Wal`], with [`GroupCommit`] on a writer thread), snapshot and identity files written
//! atomically ([`write_atomic`], [`encode_snapshot_file`]), all over an injectable file system
//! ([`Fs`]: [`StdFs`] for real disks, [`simfs::SimFs`] for the deterministic simulator).
//!
//! # WAL format
//! A directory of segments `0000000000000001.wal`, `…2.wal`, … (16 hex digits; ids grow by one
//! and are never reused), each preallocated to [`WalOptions::segment_bytes`] with zeros:
//!
//! ```text
//! header  32 B: "SYNODWAL" | version u32 | 0 | segment id u64 | crc32c(header) | 0
//! frame*     : body_len u32 | count u32 | watermark u64 | crc32c u32 | 0 u32 | body | pad to 8
//! body       : count × (key u64 | len u32 | bytes)
//! zeros      : a zero body_len is the end of the data
//! ```
//! One frame per [`Wal::append`] (one batch, one CRC, one write call). Frames are 8-byte
//! aligned, so a sector-granular tear never splits a length field. The CRC covers the segment
//! id and the frame's offset as well as its bytes, so stale bytes (another segment's, or old
//! ones at another position) never validate. The `watermark` is how far the segment had been
//! synced when the frame was written. Each record keeps its key so [`Wal::remove_below`] can
//! decide which closed segments to drop, after a restart too. A segment created after
//! [`Wal::set_head`] starts with the head record (the caller's current promise), written in the
//! same frame as the first batch.
//!
//! # Recovery rules ([`Wal::open`])
//! - A missing id in the middle of the sequence is [`WalError::Corrupt`].
//! - Closed segments were synced in full before their successor was created: any bad frame in
//!   one (or non-zero bytes after its last frame) is `Corrupt`.
//! - In the last segment, bytes after the last valid frame are a torn tail that was never
//!   acknowledged: cut (zeroed, synced) and counted in [`Recovered::torn_tail_bytes`]. But if a
//!   later valid frame's watermark shows the damaged spot had been synced before that frame was
//!   written, the damage hit acknowledged data: `Corrupt` (never cut what may have been
//!   acknowledged). Unsynced frames may reach the disk in any order, so a valid frame after a
//!   lost one is not by itself proof of corruption; the watermark is.
//! - A last segment with an incomplete header was never used (headers are synced before use):
//!   re-initialised.
//!
//! Errors from `sync_data` (or writes) poison the WAL ([`WalError::Poisoned`]): after a failed
//! fsync the kernel may have dropped the dirty pages, so retrying could report success for data
//! that is gone.

pub mod fs;
pub mod group;
pub mod segment;
pub mod simfs;
pub mod snapfile;
pub mod wal;

use std::io;
use std::path::Path;

pub use fs::{Fs, FsFile, StdFile, StdFs};
pub use group::GroupCommit;
pub use snapfile::{checksum_hex, decode_snapshot_file, encode_snapshot_file, SnapshotFileError};
pub use wal::{Recovered, Wal, WalOptions};

/// Errors of the WAL.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    /// The file system failed.
    #[error("WAL I/O error: {0}")]
    Io(#[from] io::Error),
    /// Durable data is damaged (not a torn tail): refuse to guess.
    #[error("WAL corrupt in segment {segment} at offset {offset}: {why}")]
    Corrupt {
        /// Segment id.
        segment: u64,
        /// Byte offset in that segment.
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// An earlier write or sync failed; the WAL refuses all further work.
    #[error("WAL poisoned by an earlier I/O error")]
    Poisoned,
}

/// Write `bytes` to `dir/name` atomically: a temp file in `dir`, write, `sync_data`, rename
/// over `name`, `sync_dir`. After a crash, `name` holds the old contents or the new ones.
pub fn write_atomic<F: Fs>(fs: &F, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs.create_dir_all(dir)?;
    // A temporary name of its own per call: two writers of one file (a snapshot taken and the
    // same slot installed) must never rename a file the other is still writing.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{n}.tmp"));
    let mut f = fs.create(&tmp)?;
    f.write_at(0, bytes)?;
    f.sync_data()?;
    drop(f);
    fs.rename(&tmp, &dir.join(name))?;
    fs.sync_dir(dir)
}

/// Read `path` whole, or `None` if it does not exist (e.g. an identity file on first boot).
pub fn read_optional<F: Fs>(fs: &F, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.read_all(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simfs::SimFs;

    #[test]
    fn write_atomic_is_all_or_nothing_across_crashes() {
        for seed in 0..50 {
            let fs = SimFs::new(seed);
            let dir = Path::new("/data");
            write_atomic(&fs, dir, "identity", b"old-identity").unwrap();
            // Crash at every step of a second write: the file is old or new, never mixed.
            let tmp = dir.join(".identity.tmp");
            let mut f = fs.create(&tmp).unwrap();
            f.write_at(0, b"NEW-IDENTITY-LONGER").unwrap();
            if seed % 2 == 0 {
                f.sync_data().unwrap();
                fs.rename(&tmp, &dir.join("identity")).unwrap();
            }
            fs.crash(seed);
            let got = read_optional(&fs, &dir.join("identity")).unwrap().unwrap();
            assert_eq!(got, b"old-identity");
            write_atomic(&fs, dir, "identity", b"new").unwrap();
            fs.crash(seed + 1000);
            assert_eq!(fs.read_all(&dir.join("identity")).unwrap(), b"new");
        }
        assert_eq!(
            read_optional(&StdFs, Path::new("/nonexistent/x")).unwrap(),
            None
        );
    }
}
