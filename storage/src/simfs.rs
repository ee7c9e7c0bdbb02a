//! A simulated disk for deterministic tests: [`SimFs`].
//!
//! Model (deliberately harsher than most real disks, never kinder):
//! - every file has *durable* contents plus a list of writes (and length changes) not yet
//!   synced; reads see everything written. [`FsFile::sync_data`] makes the file's pending
//!   changes durable;
//! - the namespace has a *live* view and a *durable* view. A create, remove or rename is
//!   durable only once [`Fs::sync_dir`] of its directory ran; on a crash every name reverts to
//!   its durable view (a file never covered by a `sync_dir` vanishes, a rename reverts);
//! - [`SimFs::crash`] replays each file's pending writes over its durable contents, deciding
//!   per 512-byte sector, seeded: lose it, keep it, or tear it (keep a random prefix). So a
//!   later unsynced write can survive while an earlier one is lost, as after a real power cut;
//! - directories made by [`Fs::create_dir_all`] are durable at once (a simplification);
//! - fault hooks: [`SimFs::corrupt`] flips a bit of a file's durable contents (bit rot) and
//!   [`SimFs::fail_next_sync`] makes the next `sync_data` fail without making anything durable.
//!
//! File handles opened before a crash belong to the dead "process": every call on them fails.
//! Everything is deterministic for a given sequence of calls and seeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fs::{Fs, FsFile};

/// Sector size the crash model decides at.
pub const SECTOR: u64 = 512;

#[derive(Clone, Debug)]
enum Pending {
    Write { off: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Default, Debug)]
struct Inode {
    durable: Vec<u8>,
    live: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct Inner {
    rng: ChaCha8Rng,
    inodes: HashMap<u64, Inode>,
    live_names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_ino: u64,
    generation: u64,
    fail_next_sync: bool,
    syncs: u64,
}

/// A simulated, crashable disk. Cloning gives another handle to the same disk.
#[derive(Clone, Debug)]
pub struct SimFs(Arc<Mutex<Inner>>);

/// A file opened on a [`SimFs`].
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    ino: u64,
    generation: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simfs: no such file {}", path.display()),
    )
}

fn write_into(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off as usize..end].copy_from_slice(data);
}

impl SimFs {
    /// A new, empty disk; `seed` drives nothing until a crash but keeps runs reproducible.
    pub fn new(seed: u64) -> SimFs {
        SimFs(Arc::new(Mutex::new(Inner {
            rng: ChaCha8Rng::seed_from_u64(seed),
            inodes: HashMap::new(),
            live_names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::from([PathBuf::from("/")]),
            next_ino: 1,
            generation: 0,
            fail_next_sync: false,
            syncs: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in a test thread must not hide the disk from the others.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulate a power cut: names revert to their durable view, and each file's unsynced
    /// writes are lost, kept or torn per 512-byte sector, driven by `seed`. Handles opened
    /// before the crash stop working.
    pub fn crash(&self, seed: u64) {
        let mut inner = self.lock();
        inner.rng = ChaCha8Rng::seed_from_u64(seed);
        inner.generation += 1;
        inner.live_names = inner.durable_names.clone();
        let alive: BTreeSet<u64> = inner.durable_names.values().copied().collect();
        inner.inodes.retain(|ino, _| alive.contains(ino));
        let mut inos: Vec<u64> = inner.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let mut node = inner.inodes.remove(&ino).expect("inode");
            let mut out = node.durable.clone();
            for p in node.pending.drain(..) {
                match p {
                    Pending::SetLen(len) => {
                        if inner.rng.gen_bool(0.5) {
                            out.resize(len as usize, 0);
                        }
                    }
                    Pending::Write { off, data } => {
                        let mut pos = off;
                        let end = off + data.len() as u64;
                        while pos < end {
                            let sector_end = ((pos / SECTOR) + 1) * SECTOR;
                            let chunk_end = sector_end.min(end);
                            let chunk = &data[(pos - off) as usize..(chunk_end - off) as usize];
                            match inner.rng.gen_range(0..3u8) {
                                0 => {} // lost
                                1 => write_into(&mut out, pos, chunk),
                                _ => {
                                    let keep = inner.rng.gen_range(0..chunk.len());
                                    write_into(&mut out, pos, &chunk[..keep]);
                                }
                            }
                            pos = chunk_end;
                        }
                    }
                }
            }
            node.durable = out.clone();
            node.live = out;
            inner.inodes.insert(ino, node);
        }
    }

    /// Flip one bit of the byte at `offset` of `path`, in both its durable and live contents.
    pub fn corrupt(&self, path: &Path, offset: u64) {
        let mut inner = self.lock();
        let ino = *inner
            .live_names
            .get(path)
            .expect("simfs corrupt: no such file");
        let node = inner.inodes.get_mut(&ino).expect("inode");
        for buf in [&mut node.durable, &mut node.live] {
            if let Some(b) = buf.get_mut(offset as usize) {
                *b ^= 0x10;
            }
        }
    }

    /// Make the next `sync_data` (on any file) fail; nothing it would have synced is durable.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// How many `sync_data` calls succeeded so far (for tests and metrics).
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// True if `path` exists in the live view.
    pub fn exists(&self, path: &Path) -> bool {
        self.lock().live_names.contains_key(path)
    }
}

impl Inner {
    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if self.dirs.contains(p) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("simfs: no directory for {}", path.display()),
            )),
        }
    }
}

impl Fs for SimFs {
    type File = SimFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        for a in dir.ancestors() {
            inner.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let inner = self.lock();
        let ino = *inner.live_names.get(path).ok_or_else(|| not_found(path))?;
        Ok(SimFile {
            fs: self.clone(),
            ino,
            generation: inner.generation,
        })
    }

    fn create(&self, path: &Path) -> io::Result<SimFile> {
        let mut inner = self.lock();
        inner.parent_exists(path)?;
        let generation = inner.generation;
        if let Some(&ino) = inner.live_names.get(path) {
            let node = inner.inodes.get_mut(&ino).expect("inode");
            node.live.clear();
            node.pending.push(Pending::SetLen(0));
            return Ok(SimFile {
                fs: self.clone(),
                ino,
                generation,
            });
        }
        let ino = inner.next_ino;
        inner.next_ino += 1;
        inner.inodes.insert(ino, Inode::default());
        inner.live_names.insert(path.to_path_buf(), ino);
        Ok(SimFile {
            fs: self.clone(),
            ino,
            generation,
        })
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(inner
            .live_names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner
            .live_names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.parent_exists(to)?;
        let ino = inner
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        inner.live_names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        inner.durable_names.retain(|p, _| p.parent() != Some(dir));
        let live: Vec<(PathBuf, u64)> = inner
            .live_names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        inner.durable_names.extend(live);
        Ok(())
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = self.lock();
        let ino = inner.live_names.get(path).ok_or_else(|| not_found(path))?;
        Ok(inner.inodes[ino].live.clone())
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> io::Result<T>) -> io::Result<T> {
        let mut inner = self.fs.lock();
        if inner.generation != self.generation || !inner.inodes.contains_key(&self.ino) {
            return Err(io::Error::other(
                "simfs: stale handle (the disk crashed since it was opened)",
            ));
        }
        f(&mut inner, self.ino)
    }
}

impl FsFile for SimFile {
    fn write_at(&mut self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.with(|inner, ino| {
            let node = inner.inodes.get_mut(&ino).expect("inode");
            write_into(&mut node.live, off, buf);
            node.pending.push(Pending::Write {
                off,
                data: buf.to_vec(),
            });
            Ok(())
        })
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|inner, ino| {
            let live = &inner.inodes[&ino].live;
            let start = (off as usize).min(live.len());
            let n = (live.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&live[start..start + n]);
            Ok(n)
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|inner, ino| Ok(inner.inodes[&ino].live.len() as u64))
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|inner, ino| {
            let node = inner.inodes.get_mut(&ino).expect("inode");
            node.live.resize(len as usize, 0);
            node.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with(|inner, ino| {
            if std::mem::take(&mut inner.fail_next_sync) {
                return Err(io::Error::other("simfs: injected sync_data failure"));
            }
            inner.syncs += 1;
            let node = inner.inodes.get_mut(&ino).expect("inode");
            node.durable = node.live.clone();
            node.pending.clear();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_file_vanishes_and_synced_survives() {
        let fs = SimFs::new(1);
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let mut a = fs.create(&d.join("a")).unwrap();
        a.write_at(0, b"hello").unwrap();
        a.sync_data().unwrap();
        fs.crash(7);
        assert!(
            !fs.exists(&d.join("a")),
            "a name not covered by sync_dir must vanish"
        );

        let mut b = fs.create(&d.join("b")).unwrap();
        b.write_at(0, b"durable").unwrap();
        b.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        b.write_at(100, &[9u8; 2000]).unwrap();
        fs.crash(8);
        let got = fs.read_all(&d.join("b")).unwrap();
        assert_eq!(&got[..7], b"durable");
        assert!(b.write_at(0, b"x").is_err(), "handles die with the crash");
    }

    #[test]
    fn crash_outcomes_vary_by_seed() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..50 {
            let fs = SimFs::new(0);
            let d = Path::new("/d");
            fs.create_dir_all(d).unwrap();
            let mut f = fs.create(&d.join("f")).unwrap();
            f.sync_data().unwrap();
            fs.sync_dir(d).unwrap();
            f.write_at(0, &[1u8; 1024]).unwrap();
            fs.crash(seed);
            outcomes.insert(fs.read_all(&d.join("f")).unwrap());
        }
        assert!(
            outcomes.len() > 3,
            "lost, kept and torn sectors must all occur"
        );
    }

    #[test]
    fn rename_reverts_without_sync_dir() {
        let fs = SimFs::new(1);
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let mut f = fs.create(&d.join("tmp")).unwrap();
        f.write_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(d).unwrap();
        fs.rename(&d.join("tmp"), &d.join("final")).unwrap();
        fs.crash(1);
        assert!(fs.exists(&d.join("tmp")) && !fs.exists(&d.join("final")));
    }
}
