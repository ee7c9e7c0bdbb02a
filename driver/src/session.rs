//! The CLI's client session: what makes its retries exactly-once and its reads see its writes.
//!
//! A session is an id, the last sequence number used, and the highest store index the CLI has
//! seen. Each write takes the next sequence number and keeps it across retries (to any
//! replica), so the replicated session table answers a retry with the first result. Each
//! reply's `X-Synod-Index` raises `last_index`; a sequential read sends `min_index=last_index`
//! so it never sees a state older than the CLI's own last write. The state lives in a small JSON
//! file (default `~/.synod/session.json`) and is saved *before* a write is sent, so a crash
//! between send and save cannot reuse a sequence number for a different write.

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

    /// Save to `path` (creating the directory).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)?;
        Ok(())
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
