//! Durable mode (`synod node --data-dir DIR`): what a replica keeps on disk and how it comes back.
//!
//! Layout of `DIR`:
//!
//! | path | what | written |
//! |---|---|---|
//! | `identity.json` | node id, incarnation, cluster prefix | once per incarnation, atomically, before the first vote |
//! | `wal/*.wal` | the write-ahead log: every `paxos::Persist` (promises, accepted values) | group commit ([`storage::GroupCommit`]), fsynced before anything that depends on it runs |
//! | `snap/<slot>.snap` | snapshots of the state machine (checksummed file, [`storage::encode_snapshot_file`]) | temp file, fsync, rename, fsync of the directory |
//! | `refused-<micros>/` | data set aside because it could not be trusted (corrupt, or another node's) | at start |
//!
//! **What makes the data usable.** An identity file, a readable newest snapshot and a WAL that
//! opens (a torn tail, an unacknowledged batch, is cut by the WAL itself). Then the replica
//! restarts with the same incarnation ([`paxos::Replica::recover`]): it keeps its promises and
//! votes, so it is an acceptor again at once. Anything else (a corrupt record or snapshot, a
//! missing snapshot, an identity of another node id, a removed incarnation) refuses the
//! identity: the data is moved aside (never deleted), logged and counted, and the replica comes
//! back by the in-memory path: a new incarnation that joins as a learner and catches up.
//!
//! **Compaction.** The WAL keeps every accepted value above the newest snapshot file; segments
//! whose values all lie at or below it are removed after that file is durable. The core refuses
//! to vote at or below its snapshot after a restart, so votes removed with those segments are
//! never needed again.

use anyhow::Context as _;
use kvstore::{Store, StoreConfig};
use paxos::{NodeId, Persist, SnapshotMeta};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use storage::{Fs, StdFs, Wal, WalOptions};
use tracing::{error, info, warn};

/// File name of the identity record.
pub const IDENTITY: &str = "identity.json";

/// Who wrote a data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The node id.
    pub node: u64,
    /// The incarnation whose promises the WAL holds.
    pub incarnation: u64,
    /// The cluster's etcd prefix (a directory is never used for another cluster).
    pub prefix: String,
}

/// A data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

/// What [`DataDir::open`] found.
pub enum Opened {
    /// No usable data (first start, or data set aside): start as a new incarnation.
    Fresh {
        /// Why the data was not used, if there was some.
        refused: Option<String>,
    },
    /// The previous process's state, to restart with the same identity.
    Recovered(Box<Recovery>),
}

/// A durable restart's material.
pub struct Recovery {
    /// The identity to keep.
    pub identity: Identity,
    /// The newest snapshot's state machine.
    pub store: Store,
    /// The core's state: the snapshot's metadata, the promise and the votes from the WAL.
    pub disk: paxos::Recovered,
    /// The opened WAL (appends continue after its last record).
    pub wal: Wal<StdFs>,
    /// Bytes of a torn, unacknowledged tail the WAL cut at open.
    pub torn_tail_bytes: u64,
}

/// One WAL record's bytes (postcard of the core's `Persist`).
pub fn encode_record(p: &Persist) -> Vec<u8> {
    postcard::to_stdvec(p).expect("a Persist always encodes")
}

/// The key the WAL compacts by: an accepted value's slot; a promise is superseded by the
/// segment head (key 0).
pub fn record_key(p: &Persist) -> u64 {
    match p {
        Persist::Promised(_) => 0,
        Persist::Accepted(e) => e.slot.0,
    }
}

/// Snapshot file payload: the metadata (postcard, length-prefixed), then the store's own
/// self-checking encoding.
pub fn encode_snapshot(meta: &SnapshotMeta, store_bytes: &[u8]) -> Vec<u8> {
    let m = postcard::to_stdvec(meta).expect("metadata encodes");
    let mut payload = Vec::with_capacity(8 + m.len() + store_bytes.len());
    payload.extend_from_slice(&(m.len() as u64).to_le_bytes());
    payload.extend_from_slice(&m);
    payload.extend_from_slice(store_bytes);
    storage::encode_snapshot_file(meta.last_slot.0, &payload)
}

/// Check and decode a snapshot file: its metadata and its store.
pub fn decode_snapshot(bytes: &[u8], config: StoreConfig) -> anyhow::Result<(SnapshotMeta, Store)> {
    let (slot, payload) = storage::decode_snapshot_file(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(payload.len() >= 8, "snapshot payload too short ({} bytes)", payload.len());
    let n = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")) as usize;
    anyhow::ensure!(payload.len() >= 8 + n, "snapshot metadata runs past the payload");
    let meta: SnapshotMeta = postcard::from_bytes(&payload[8..8 + n]).context("snapshot metadata")?;
    anyhow::ensure!(meta.last_slot.0 == slot, "snapshot header says slot {slot}, metadata {}", meta.last_slot);
    let store = Store::restore(config, [&payload[8 + n..]]).map_err(|e| anyhow::anyhow!("snapshot store: {e}"))?;
    Ok((meta, store))
}

/// The checksum that names a snapshot file (`X-Synod-Checksum`, `synod snapshot inspect`, the
/// founders' restore records): CRC32C, in hex, of the file up to its 4-byte trailer, i.e. the
/// value the trailer holds. Not of the whole file: a CRC over data followed by its own CRC is
/// the same constant (the CRC's residue) for every file, so it would name nothing.
pub fn file_checksum(file: &[u8]) -> String {
    storage::checksum_hex(&file[..file.len().saturating_sub(4)])
}

/// A backup file (`GET /v1/snapshot`, `synod snapshot save`), checked and decoded.
pub struct Backup {
    /// The slot and configuration of the cluster it was taken from.
    pub meta: SnapshotMeta,
    /// Its state machine.
    pub store: Store,
    /// Its [`file_checksum`].
    pub checksum: String,
    /// The file's size.
    pub bytes: usize,
}

/// Read and fully decode a backup file; a truncated, damaged or foreign file is refused with
/// the decode error.
pub fn read_backup(path: &Path, config: StoreConfig) -> anyhow::Result<Backup> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (meta, store) = decode_snapshot(&bytes, config).with_context(|| format!("{} is not a usable snapshot file", path.display()))?;
    Ok(Backup { meta, store, checksum: file_checksum(&bytes), bytes: bytes.len() })
}

fn snap_name(slot: u64) -> String {
    format!("{slot:020}.snap")
}

impl DataDir {
    /// The directory (created if missing).
    pub fn new(root: &Path) -> anyhow::Result<DataDir> {
        std::fs::create_dir_all(root).with_context(|| format!("creating the data directory {}", root.display()))?;
        Ok(DataDir { root: root.to_path_buf() })
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The snapshot directory.
    pub fn snap_dir(&self) -> PathBuf {
        self.root.join("snap")
    }

    /// Snapshot files, newest first.
    pub fn snapshots(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = StdFs
            .list(&self.snap_dir())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| Some((n.strip_suffix(".snap")?.parse::<u64>().ok()?, self.snap_dir().join(&n))))
            .collect();
        v.sort_by_key(|b| std::cmp::Reverse(b.0));
        v
    }

    /// Read what the directory holds for node `node` of the cluster under `prefix`.
    pub fn open(&self, node: NodeId, prefix: &str, store: StoreConfig) -> anyhow::Result<Opened> {
        let Some(raw) = storage::read_optional(&StdFs, &self.root.join(IDENTITY))? else {
            return Ok(Opened::Fresh { refused: None });
        };
        match self.recover(&raw, node, prefix, store) {
            Ok(r) => Ok(Opened::Recovered(Box::new(r))),
            Err(e) => {
                let why = format!("{e:#}");
                self.set_aside(&why)?;
                Ok(Opened::Fresh { refused: Some(why) })
            }
        }
    }

    fn recover(&self, raw: &[u8], node: NodeId, prefix: &str, config: StoreConfig) -> anyhow::Result<Recovery> {
        let identity: Identity = serde_json::from_slice(raw).context("identity file")?;
        anyhow::ensure!(identity.node == node.0, "the data directory belongs to node {}, not {}", identity.node, node.0);
        anyhow::ensure!(identity.prefix == prefix, "the data directory belongs to the cluster under {:?}, not {prefix:?}", identity.prefix);
        let Some((slot, path)) = self.snapshots().into_iter().next() else {
            anyhow::bail!("no snapshot file (the replica never had a state to restart from)");
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (meta, store) = decode_snapshot(&bytes, config).with_context(|| format!("snapshot {}", path.display()))?;
        anyhow::ensure!(meta.last_slot.0 == slot, "snapshot file name says slot {slot}, contents {}", meta.last_slot);
        let (wal, found) = Wal::open(StdFs, &self.wal_dir(), WalOptions::default()).context("write-ahead log")?;
        let mut disk = paxos::Recovered::from_snapshot(meta);
        for (i, r) in found.records.iter().enumerate() {
            let p: Persist = postcard::from_bytes(r).with_context(|| format!("write-ahead log record {i} does not decode"))?;
            disk.replay(p);
        }
        Ok(Recovery { identity, store, disk, wal, torn_tail_bytes: found.torn_tail_bytes })
    }

    /// Move everything in the directory into `refused-<micros>/` (kept for a post-mortem).
    fn set_aside(&self, why: &str) -> anyhow::Result<()> {
        let to = self.root.join(format!("refused-{}", crate::wall_micros()));
        error!(dir = %self.root.display(), moved_to = %to.display(), why, "the data directory cannot be trusted: set aside; starting as a new incarnation");
        std::fs::create_dir_all(&to)?;
        for name in [IDENTITY, "wal", "snap"] {
            let p = self.root.join(name);
            if p.exists() {
                std::fs::rename(&p, to.join(name)).with_context(|| format!("moving {} aside", p.display()))?;
            }
        }
        StdFs.sync_dir(&self.root)?;
        Ok(())
    }

    /// Set aside a recovered identity that may not be used after all (for example, the cluster
    /// removed that incarnation while it was down).
    pub fn refuse(&self, why: &str) -> anyhow::Result<()> {
        self.set_aside(why)
    }

    /// Start a new incarnation here: an empty WAL, the initial snapshot for a founder (the empty
    /// store at slot 0 with the bootstrap configuration), then the identity file, last (the
    /// data is usable only once a snapshot exists).
    pub fn start_fresh(&self, identity: &Identity, founding: Option<SnapshotMeta>, store: &Store) -> anyhow::Result<Wal<StdFs>> {
        for name in [IDENTITY, "wal", "snap"] {
            let p = self.root.join(name);
            if p.exists() {
                warn!(path = %p.display(), "removing the data of an earlier incarnation");
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        StdFs.sync_dir(&self.root)?;
        let (wal, _) = Wal::open(StdFs, &self.wal_dir(), WalOptions::default()).context("creating the write-ahead log")?;
        if let Some(meta) = founding {
            let bytes: Vec<u8> = store.snapshot(crate::snapshot::CHUNK_BYTES).flatten().collect();
            self.write_snapshot(&meta, &bytes)?;
        }
        let json = serde_json::to_vec_pretty(identity)?;
        storage::write_atomic(&StdFs, &self.root, IDENTITY, &json).context("writing the identity file")?;
        info!(dir = %self.root.display(), incarnation = identity.incarnation, "data directory initialised");
        Ok(wal)
    }

    /// Write a snapshot file atomically, then remove all but the newest two.
    pub fn write_snapshot(&self, meta: &SnapshotMeta, store_bytes: &[u8]) -> anyhow::Result<()> {
        let file = encode_snapshot(meta, store_bytes);
        storage::write_atomic(&StdFs, &self.snap_dir(), &snap_name(meta.last_slot.0), &file)
            .with_context(|| format!("writing snapshot {}", meta.last_slot))?;
        for (_, old) in self.snapshots().into_iter().skip(2) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

/// The node loop's side of the write-ahead log: collects the `Persist` outputs of one turn,
/// hands them to the group-commit thread as one batch, and says which outputs must wait.
///
/// **The barrier rule.** Outputs are numbered by the last persist batch before them: an output
/// that follows a persist not yet durable is held, in order, and runs once the writer reports
/// that batch durable (`Input::Durable`). Outputs before a persist run at once: so a leader's
/// `Accept`s to its peers leave while its own vote is being written (they come before its own
/// `Persist` in the core's order), but its own vote counts only after it is durable, because
/// the core's `Accepted` to itself, and everything that depends on a commit, comes after.
pub struct Writer {
    group: std::sync::Arc<storage::GroupCommit>,
    dir: DataDir,
    written: u64,
    durable: u64,
    batch: Vec<(u64, Vec<u8>)>,
    promised: paxos::Ballot,
}

impl Writer {
    /// Start the writer thread on `wal`; `on_durable` hears `Ok(seq)` after each fsync, or
    /// `Err` once if the disk failed. `promised` is the promise the WAL already holds.
    pub fn start(dir: DataDir, mut wal: Wal<StdFs>, promised: paxos::Ballot, on_durable: impl Fn(Result<u64, String>) + Send + 'static) -> Writer {
        wal.set_head(encode_record(&Persist::Promised(promised)));
        let group = std::sync::Arc::new(storage::GroupCommit::spawn(wal, on_durable));
        Writer { group, dir, written: 0, durable: 0, batch: Vec::new(), promised }
    }

    /// A persist output: joins this turn's batch.
    pub fn persist(&mut self, p: &Persist) {
        if let Persist::Promised(b) = p {
            if *b > self.promised {
                self.promised = *b;
                // Segment heads re-emit the current promise, so removing old segments never
                // drops it.
                self.group.set_head(encode_record(p));
            }
        }
        self.batch.push((record_key(p), encode_record(p)));
    }

    /// The batch an output now must wait for, or `None` if it may run at once.
    pub fn barrier(&self) -> Option<u64> {
        if !self.batch.is_empty() {
            Some(self.written + 1)
        } else if self.durable < self.written {
            Some(self.written)
        } else {
            None
        }
    }

    /// End of a node-loop turn: hand the turn's persists to the writer thread as one batch.
    pub fn end_turn(&mut self) {
        if !self.batch.is_empty() {
            self.written += 1;
            self.group.submit(self.written, std::mem::take(&mut self.batch));
        }
    }

    /// The writer made batches up to `seq` durable.
    pub fn made_durable(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
    }

    /// Whether outputs held for batch `seq` may run.
    pub fn is_durable(&self, seq: u64) -> bool {
        seq <= self.durable
    }

    /// A snapshot file at `slot` is durable: the log segments at or below it may go.
    pub fn snapshot_written(&self, slot: paxos::Slot) {
        self.group.remove_below(slot.0 + 1);
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// (fsyncs, records made durable) so far.
    pub fn stats(&self) -> (u64, u64) {
        self.group.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::{Request, WriteOp};
    use paxos::{Configuration, Incarnation, Member, Slot};

    fn meta(slot: u64) -> SnapshotMeta {
        SnapshotMeta { last_slot: Slot(slot), config: Configuration::bootstrap([Member { node: NodeId(1), incarnation: Incarnation(7) }]) }
    }

    #[test]
    fn a_snapshot_file_round_trips_and_damage_is_refused() {
        let mut store = Store::new(StoreConfig::default());
        let put = WriteOp::Put { key: b"k".to_vec(), value: b"v".to_vec(), guard: None };
        let _ = store.apply_request(1, &Request { session: None, stamp: kvstore::Stamp::new(1, 1, 0), op: put });
        let bytes: Vec<u8> = store.snapshot(1024).flatten().collect();
        let file = encode_snapshot(&meta(9), &bytes);
        let (m, s) = decode_snapshot(&file, StoreConfig::default()).unwrap();
        assert_eq!(m, meta(9));
        assert_eq!(s.state_hash(), store.state_hash());
        // Truncated, or one bit flipped: refused with a reason.
        assert!(decode_snapshot(&file[..file.len() - 3], StoreConfig::default()).is_err());
        let mut bad = file.clone();
        bad[file.len() / 2] ^= 1;
        assert!(decode_snapshot(&bad, StoreConfig::default()).is_err());
    }

    /// The checksum that names a file tells files apart; a CRC over a whole file (its own CRC
    /// trailer included) would not: it is the same residue for every file.
    #[test]
    fn the_file_checksum_tells_files_apart() {
        let a = encode_snapshot(&meta(1), &Store::new(StoreConfig::default()).snapshot(1024).flatten().collect::<Vec<u8>>());
        let b = encode_snapshot(&meta(2), &Store::new(StoreConfig::default()).snapshot(1024).flatten().collect::<Vec<u8>>());
        assert_ne!(file_checksum(&a), file_checksum(&b));
        assert_eq!(storage::checksum_hex(&a), storage::checksum_hex(&b), "the whole-file CRC is a constant");
        assert_eq!(file_checksum(&a), format!("{:08x}", u32::from_le_bytes(a[a.len() - 4..].try_into().unwrap())));
    }

    #[test]
    fn a_directory_without_a_snapshot_or_of_another_node_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path()).unwrap();
        assert!(matches!(dir.open(NodeId(1), "/p", StoreConfig::default()).unwrap(), Opened::Fresh { refused: None }));
        // A joiner's identity without a snapshot yet: not usable.
        let id = Identity { node: 1, incarnation: 7, prefix: "/p".into() };
        let wal = dir.start_fresh(&id, None, &Store::new(StoreConfig::default())).unwrap();
        drop(wal);
        match dir.open(NodeId(1), "/p", StoreConfig::default()).unwrap() {
            Opened::Fresh { refused: Some(why) } => assert!(why.contains("no snapshot"), "{why}"),
            _ => panic!("a directory without a snapshot was used"),
        }
        assert!(std::fs::read_dir(tmp.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("refused-")));
        // A founder's directory is usable, but not by another node id.
        let wal = dir.start_fresh(&id, Some(meta(0)), &Store::new(StoreConfig::default())).unwrap();
        drop(wal);
        assert!(matches!(dir.open(NodeId(2), "/p", StoreConfig::default()).unwrap(), Opened::Fresh { refused: Some(_) }));
    }

    #[test]
    fn votes_written_through_the_wal_come_back() {
        use paxos::{AcceptedEntry, Ballot, Value};
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path()).unwrap();
        let id = Identity { node: 1, incarnation: 7, prefix: "/p".into() };
        let mut wal = dir.start_fresh(&id, Some(meta(0)), &Store::new(StoreConfig::default())).unwrap();
        let b = Ballot::new(3, Member { node: NodeId(2), incarnation: Incarnation(1) });
        let recs = [Persist::Promised(b), Persist::Accepted(AcceptedEntry { slot: Slot(1), ballot: b, value: Value::Noop })];
        let enc: Vec<(u64, Vec<u8>)> = recs.iter().map(|p| (record_key(p), encode_record(p))).collect();
        wal.append(&enc.iter().map(|(k, v)| (*k, v.as_slice())).collect::<Vec<_>>()).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let Opened::Recovered(r) = dir.open(NodeId(1), "/p", StoreConfig::default()).unwrap() else { panic!("not recovered") };
        assert_eq!(r.identity, id);
        assert_eq!(r.disk.promised, b);
        assert_eq!(r.disk.accepted.len(), 1);
    }
}
