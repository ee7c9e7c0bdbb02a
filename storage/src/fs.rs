//! The file-system seam: [`Fs`] and [`FsFile`], with [`StdFs`] for real files.
//!
//! Everything the storage crate does to a disk goes through these two traits, so the
//! deterministic simulator can run the very same code on [`crate::simfs::SimFs`], a disk that
//! loses (or tears) whatever was not made durable. File I/O is positional (`write_at` /
//! `read_at`): no seek position is shared, so there is no hidden state to get wrong.
//!
//! Durability contract (what the WAL relies on, and what `SimFs` models):
//! - data written with [`FsFile::write_at`] is durable only after [`FsFile::sync_data`];
//! - a created, removed or renamed name is durable only after [`Fs::sync_dir`] of its directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file system: std (real) or simulated. Positional I/O, no seeks.
pub trait Fs: Send + 'static {
    /// An open file of this file system.
    type File: FsFile + 'static;
    /// Create `dir` and its missing parents (like `mkdir -p`).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Create a file for reading and writing, truncating it if it exists.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// The names (not paths) of the regular files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Remove a file (durable only after [`Fs::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Rename a file atomically, replacing `to` (durable only after [`Fs::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Read a whole file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// An open file: positional reads and writes, explicit durability.
#[allow(clippy::len_without_is_empty)]
pub trait FsFile: Send {
    /// Write the whole of `buf` at `off` (extending the file if needed). Not durable until
    /// [`FsFile::sync_data`].
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()>;
    /// Read up to `buf.len()` bytes at `off`; returns how many were read (0 at end of file).
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Set the length: extending fills with zeros (used to preallocate segments).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Make everything written so far durable (`fdatasync`). An error is not retriable: the
    /// caller must assume the written data may be lost (see the WAL's poisoning).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system (`std::fs`), for production.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// A real file opened by [`StdFs`].
#[derive(Debug)]
pub struct StdFile(File);

impl Fs for StdFs {
    type File = StdFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path) -> io::Result<StdFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(StdFile)
    }

    fn create(&self, path: &Path) -> io::Result<StdFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map(StdFile)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

impl FsFile for StdFile {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        // `write_all_at` loops over short writes and retries EINTR.
        self.0.write_all_at(buf, off)
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}
