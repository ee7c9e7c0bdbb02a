//! The CLI's client session: what makes its retries exactly-once and its reads see its writes.
//!
//! A session is an id, the last sequence number used, and the highest store index the CLI has
//! seen. Each write takes the next sequence number and keeps it across retries (to any
//! replica), so the replicated session table answers a retry with the first result. Each
//! reply's `X-Synod-Index` raises `last_index`; a sequential read sends `min_index=last_index`
//! so it never sees a state older than the CLI's own last write. The state lives in a small JSON
//! file (default `~/.synod/session.json`) and is saved *before* a write is sent, so a crash
//! between send and save cannot reuse a sequence number for a different write.
//!
//! Several CLI processes may share one file. Each holds an exclusive advisory lock on a sibling
//! file (`session.json.lock`, [`SessionLock`]) from before it loads the session until it exits,
//! so their load / next sequence number / save / send / save sequences never interleave: two
//! processes can never send different writes under one sequence number (which the store would
//! refuse with 422 anyway) or a lower number after a higher one (409 session-stale). Parallel
//! writers sharing a file are therefore serialised; give each its own `--session-file` to run
//! them in parallel. The temporary file of a save is unique per process.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The persisted session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The session id (`X-Synod-Session`).
    pub session: u64,
    /// The last sequence number used (`X-Synod-Seq` of the last write).
    pub seq: u64,
    /// The highest `X-Synod-Index` seen.
    pub last_index: u64,
}

impl Session {
    /// A new session with a fresh id. Ids come from the clock and the process id; the top bit is
    /// clear, keeping them apart from the ids derived from `Idempotency-Key`.
    pub fn fresh() -> Self {
        let seed = crate::wall_micros() ^ (u64::from(std::process::id()) << 40);
        let id = crate::codec::fnv1a64(&seed.to_le_bytes()) & !(1 << 63);
        Session { session: id.max(1), seq: 0, last_index: 0 }
    }

    /// The default file: `$HOME/.synod/session.json`.
    pub fn default_path() -> PathBuf {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        home.join(".synod").join("session.json")
    }

    /// Load from `path`, or start a fresh session if there is none (or it is unreadable).
    pub fn load(path: &Path) -> Self {
        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(Session::fresh)
    }

    /// Save to `path` (creating the directory): write a temporary file unique to this process,
    /// then rename it over `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }

    /// Take the next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Note an index seen in a reply.
    pub fn saw_index(&mut self, index: u64) {
        self.last_index = self.last_index.max(index);
    }
}

/// An exclusive advisory lock (`flock`) on `<session file>.lock`, held until dropped (or the
/// process exits, when the OS releases it). Taking it waits for the holder.
#[derive(Debug)]
pub struct SessionLock {
    _file: std::fs::File,
}

impl SessionLock {
    /// Lock the session file at `path` (creating its directory and the lock file).
    pub fn acquire(path: &Path) -> anyhow::Result<SessionLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(PathBuf::from(name))?;
        file.lock()?;
        Ok(SessionLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_saves_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s").join("session.json");
        let held = SessionLock::acquire(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = path.clone();
        let waiter = std::thread::spawn(move || {
            let _l = SessionLock::acquire(&p2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "a second holder must wait");
        let s = Session { session: 5, seq: 2, last_index: 9 };
        s.save(&path).unwrap();
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("released");
        waiter.join().unwrap();
        assert_eq!(Session::load(&path), s);
        let names: Vec<String> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }
}
