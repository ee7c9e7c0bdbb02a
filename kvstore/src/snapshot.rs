//! Streaming snapshots: encode the store as a sequence of chunks, and rebuild it from chunks.
//!
//! # Format (versions 5 and 6)
//!
//! ```text
//! stream  := MAGIC frame*
//! MAGIC   := b"SYNODKV\0"
//! frame   := len:u32-le  tag:u8  body:postcard      (len counts tag and body)
//! frames  := Header  Entry{header.entries}  Session{header.sessions}  Trailer
//! Header  (tag 1) := format:u16, last_applied, log_clock_ms, last_stamp, entries, sessions
//!                    [, cluster_version:u32]          (format 6 only; 2..=MAX_CLUSTER_VERSION)
//! Entry   (tag 2) := key:bytes, value:bytes, version          (strictly increasing keys)
//! Session (tag 3) := client, seq, last_active_ms, fingerprint, result, index  (increasing clients)
//! Trailer (tag 4) := state_hash
//! ```
//!
//! Version 3 has the same frames as version 2; only the state hash's definition changed (the
//! data's part became an order-independent sum of per-entry hashes), so a version-2 trailer would
//! not verify and the version is bumped to make that an explicit error. Version 4 again has the
//! same frames; the sessions' part of the hash became a sum too (a store with sessions hashes
//! differently from version 3). Version 5 adds the index each session's stored result was
//! evaluated at (what a retry's reply reports).
//!
//! Version 6 is version 5 plus the store's cluster version ([`Store::cluster_version`]) at the end
//! of the header; the state hash then includes it too. The encoder writes format 5, byte for byte
//! what the previous release writes, while the cluster version is 1 (so a previous release's
//! replica can install the snapshot during a rolling upgrade), and format 6 once it is 2 or more.
//! The decoder reads both ([`OLDEST_SNAPSHOT_FORMAT`] to [`FORMAT_VERSION`]); a format-5 snapshot
//! restores cluster version 1.
//!
//! The encoder writes one record at a time into a chunk buffer and hands out chunks of exactly
//! `chunk_bytes` (the last may be shorter), so memory use is one chunk plus one record no matter
//! how large the store is. Frames ignore chunk boundaries; the decoder buffers at most one partial
//! frame and inserts records into the new store as soon as they are complete.
//!
//! The decoder trusts nothing: it checks the magic, the format version, frame sizes, record
//! order, counts, versions against the header, and recomputes the state hash over the records it
//! accepted (the same walk as [`Store::state_hash`]) to compare with the trailer's. Any failure is a [`SnapshotError`], never a panic.

use crate::command::{ClientId, Stamp};
use crate::hash::{StateHash, StateHasher};
use crate::output::{Output, Versioned};
use crate::session::SessionEntry;
use crate::store::{Store, StoreConfig};
use crate::MAX_CLUSTER_VERSION;
use serde::{Deserialize, Serialize};
use std::collections::btree_map;

/// The first eight bytes of every snapshot stream.
pub const MAGIC: &[u8; 8] = b"SYNODKV\0";
/// The newest snapshot format this build writes and reads (written at cluster version 3 or more).
pub const FORMAT_VERSION: u16 = 7;
/// The format written at cluster version 2 (release 0.2's, byte for byte).
pub const FORMAT_V6: u16 = 6;
/// The oldest snapshot format this build reads; also what it writes at cluster version 1 (the
/// previous release's format, byte for byte).
pub const OLDEST_SNAPSHOT_FORMAT: u16 = 5;
/// The largest frame the decoder accepts (a key and value at any sane limit fit easily).
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

const TAG_HEADER: u8 = 1;
const TAG_ENTRY: u8 = 2;
const TAG_SESSION: u8 = 3;
const TAG_TRAILER: u8 = 4;
const TAG_LEASE: u8 = 5;

/// What a snapshot describes; available before any data is streamed (encoder) or as soon as the
/// header is read (decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Snapshot format version: [`OLDEST_SNAPSHOT_FORMAT`] (5) at cluster version 1, else 6.
    pub format: u16,
    /// The last log index included.
    pub last_applied: u64,
    /// The log clock at that index.
    pub log_clock_ms: u64,
    /// The stamp of the last request applied (the log clock's reference for the next one).
    pub last_stamp: Option<Stamp>,
    /// Number of key-value entries.
    pub entries: u64,
    /// Number of client sessions.
    pub sessions: u64,
    /// The store's cluster version (1 for a format-5 snapshot, which does not carry it).
    pub cluster_version: u32,
    /// Number of leases (0 below format 7, which has none).
    pub leases: u64,
}

/// The header record of format 5 (the previous release's `SnapshotMeta`, field for field).
#[derive(Serialize, Deserialize)]
struct HeaderV5 {
    format: u16,
    last_applied: u64,
    log_clock_ms: u64,
    last_stamp: Option<Stamp>,
    entries: u64,
    sessions: u64,
}

/// The header record of format 6: format 5's, then the cluster version.
#[derive(Serialize, Deserialize)]
struct HeaderV6 {
    format: u16,
    last_applied: u64,
    log_clock_ms: u64,
    last_stamp: Option<Stamp>,
    entries: u64,
    sessions: u64,
    cluster_version: u32,
}

/// The header record of format 7: format 6's, then the number of leases.
#[derive(Serialize, Deserialize)]
struct HeaderV7 {
    format: u16,
    last_applied: u64,
    log_clock_ms: u64,
    last_stamp: Option<Stamp>,
    entries: u64,
    sessions: u64,
    cluster_version: u32,
    leases: u64,
}

/// The snapshot format a store at `cluster_version` is written in.
fn format_for(cluster_version: u32) -> u16 {
    match cluster_version {
        0 | 1 => OLDEST_SNAPSHOT_FORMAT,
        2 => FORMAT_V6,
        _ => FORMAT_VERSION,
    }
}

/// A lease record (format 7): the lease and its keys, in order.
#[derive(Serialize)]
struct LeaseRecordRef<'a> {
    id: u64,
    ttl_ms: u64,
    deadline_ms: u64,
    keys: Vec<crate::bytes::Ref<'a>>,
}

#[derive(Deserialize)]
struct LeaseRecordOwned {
    id: u64,
    ttl_ms: u64,
    deadline_ms: u64,
    keys: Vec<crate::bytes::Owned>,
}

#[derive(Serialize)]
struct EntryRef<'a> {
    #[serde(with = "crate::bytes")]
    key: &'a [u8],
    #[serde(with = "crate::bytes")]
    value: &'a [u8],
    version: u64,
}

#[derive(Deserialize)]
struct EntryOwned {
    #[serde(with = "crate::bytes")]
    key: Vec<u8>,
    #[serde(with = "crate::bytes")]
    value: Vec<u8>,
    version: u64,
}

#[derive(Serialize)]
struct SessionRecordRef<'a> {
    client: ClientId,
    seq: u64,
    last_active_ms: u64,
    fingerprint: u64,
    result: &'a Output,
    index: u64,
}

#[derive(Deserialize)]
struct SessionRecordOwned {
    client: ClientId,
    seq: u64,
    last_active_ms: u64,
    fingerprint: u64,
    result: Output,
    index: u64,
}

/// Why a snapshot stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The stream does not start with [`MAGIC`].
    #[error("not a kvstore snapshot (bad magic)")]
    BadMagic,
    /// The header names a format this build cannot read.
    #[error("snapshot format {got} is not supported (this build reads formats {OLDEST_SNAPSHOT_FORMAT} and {FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The format found.
        got: u16,
    },
    /// A frame claims to be larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The claimed length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A record arrived where another was expected (wrong order or wrong count).
    #[error("expected a {expected} record, got tag {got}")]
    UnexpectedRecord {
        /// What the decoder expected.
        expected: &'static str,
        /// The tag found.
        got: u8,
    },
    /// A record's body did not decode.
    #[error("malformed {what} record: {reason}")]
    Body {
        /// Which record.
        what: &'static str,
        /// postcard's message.
        reason: String,
    },
    /// A record decoded but breaks an invariant (order, version range, empty key).
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    /// The stream ended before the trailer.
    #[error("snapshot ended early (expecting a {expecting} record)")]
    Truncated {
        /// What the decoder was waiting for.
        expecting: &'static str,
    },
    /// Bytes followed the trailer.
    #[error("{extra} bytes after the snapshot trailer")]
    TrailingData {
        /// How many.
        extra: usize,
    },
    /// The rebuilt state does not hash to the trailer's value.
    #[error("state hash mismatch: trailer says {expected}, rebuilt state is {got}")]
    HashMismatch {
        /// The trailer's hash.
        expected: StateHash,
        /// The hash of the rebuilt state.
        got: StateHash,
    },
}

fn body_err(what: &'static str) -> impl Fn(postcard::Error) -> SnapshotError {
    move |e| SnapshotError::Body { what, reason: e.to_string() }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncStage {
    Header,
    Entries,
    Sessions,
    Leases,
    Trailer,
    Done,
}

/// Streams a store as chunks; an `Iterator<Item = Vec<u8>>`. Made by [`Store::snapshot`].
///
/// It borrows the store, so the store cannot change while a snapshot is being encoded; a driver
/// that must keep applying meanwhile clones the store first, which is O(1) (the data is a
/// persistent map), and encodes the clone on another thread.
pub struct SnapshotEncoder<'a> {
    store: &'a Store,
    chunk_bytes: usize,
    stage: EncStage,
    entries: imbl::ordmap::Iter<'a, crate::store::MapKey, Versioned, imbl::shared_ptr::DefaultSharedPtr>,
    sessions: btree_map::Iter<'a, ClientId, SessionEntry>,
    leases: imbl::ordmap::Iter<'a, u64, crate::lease::Lease, imbl::shared_ptr::DefaultSharedPtr>,
    hasher: StateHasher,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> SnapshotEncoder<'a> {
    fn new(store: &'a Store, chunk_bytes: usize) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        SnapshotEncoder {
            store,
            chunk_bytes,
            stage: EncStage::Header,
            entries: store.data.iter(),
            sessions: store.sessions.iter(),
            leases: store.leases.leases.iter(),
            hasher: StateHasher::new(),
            buf: Vec::with_capacity(chunk_bytes.min(MAX_FRAME_BYTES) + 64),
            pos: 0,
        }
    }

    /// What this snapshot describes.
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            format: format_for(self.store.cluster_version),
            last_applied: self.store.last_applied,
            log_clock_ms: self.store.sessions.clock_ms(),
            last_stamp: self.store.sessions.last_stamp(),
            entries: self.store.data.len() as u64,
            sessions: self.store.sessions.len() as u64,
            cluster_version: self.store.cluster_version,
            leases: if self.store.cluster_version >= 3 { self.store.leases.leases.len() as u64 } else { 0 },
        }
    }

    fn frame<T: Serialize>(&mut self, tag: u8, body: &T) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, tag]);
        // Writing plain data into a Vec cannot fail.
        postcard::to_io(body, &mut self.buf).expect("postcard encoding into a Vec is infallible");
        let len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Append the next record to the buffer; false once the trailer has been written.
    fn emit_one(&mut self) -> bool {
        match self.stage {
            EncStage::Header => {
                let m = self.meta();
                self.buf.extend_from_slice(MAGIC);
                let SnapshotMeta { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version, leases } = m;
                match format {
                    OLDEST_SNAPSHOT_FORMAT => self.frame(TAG_HEADER, &HeaderV5 { format, last_applied, log_clock_ms, last_stamp, entries, sessions }),
                    FORMAT_V6 => self.frame(TAG_HEADER, &HeaderV6 { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version }),
                    _ => self.frame(TAG_HEADER, &HeaderV7 { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version, leases }),
                }
                self.hasher.header(last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version);
                if cluster_version >= 3 {
                    self.hasher.leases(leases, 0);
                }
                self.stage = EncStage::Entries;
            }
            EncStage::Entries => match self.entries.next() {
                Some((k, v)) => {
                    self.hasher.entry(k, &v.value, v.version);
                    self.frame(TAG_ENTRY, &EntryRef { key: k, value: &v.value, version: v.version });
                }
                None => self.stage = EncStage::Sessions,
            },
            EncStage::Sessions => match self.sessions.next() {
                Some((c, e)) => {
                    self.hasher.session(*c, e);
                    let rec = SessionRecordRef {
                        client: *c,
                        seq: e.seq,
                        last_active_ms: e.last_active_ms,
                        fingerprint: e.fingerprint,
                        result: &e.result,
                        index: e.index,
                    };
                    self.frame(TAG_SESSION, &rec);
                }
                None => self.stage = if self.store.cluster_version >= 3 { EncStage::Leases } else { EncStage::Trailer },
            },
            EncStage::Leases => match self.leases.next() {
                Some((id, l)) => {
                    let keys: Vec<Vec<u8>> = l.keys.iter().cloned().collect();
                    self.hasher.lease(*id, l.ttl_ms, l.deadline_ms, &keys);
                    let rec = LeaseRecordRef { id: *id, ttl_ms: l.ttl_ms, deadline_ms: l.deadline_ms, keys: keys.iter().map(|k| crate::bytes::Ref(k)).collect() };
                    self.frame(TAG_LEASE, &rec);
                }
                None => self.stage = EncStage::Trailer,
            },
            EncStage::Trailer => {
                let h = self.hasher.finish();
                self.frame(TAG_TRAILER, &h);
                self.stage = EncStage::Done;
            }
            EncStage::Done => return false,
        }
        true
    }
}

impl Iterator for SnapshotEncoder<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        while self.buf.len() < self.chunk_bytes && self.emit_one() {}
        if self.buf.is_empty() {
            return None;
        }
        let end = self.chunk_bytes.min(self.buf.len());
        if end == self.buf.len() {
            return Some(std::mem::take(&mut self.buf));
        }
        // A large record spans several chunks: hand them out from the buffer without re-encoding.
        let chunk = self.buf[..end].to_vec();
        self.pos = end;
        Some(chunk)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecStage {
    Magic,
    Header,
    Entries { left: u64 },
    Sessions { left: u64 },
    Leases { left: u64 },
    Trailer,
    Done,
}

impl DecStage {
    fn expecting(self) -> &'static str {
        match self {
            DecStage::Magic => "magic",
            DecStage::Header => "header",
            DecStage::Entries { .. } => "entry",
            DecStage::Sessions { .. } => "session",
            DecStage::Leases { .. } => "lease",
            DecStage::Trailer => "trailer",
            DecStage::Done => "end of stream",
        }
    }
}

/// Rebuilds a [`Store`] from snapshot chunks: [`SnapshotDecoder::push`] each chunk in order, then
/// [`SnapshotDecoder::finish`]. After an error every later call returns the same error.
pub struct SnapshotDecoder {
    store: Store,
    stage: DecStage,
    meta: Option<SnapshotMeta>,
    buf: Vec<u8>,
    /// Entries decoded so far, in key order, moved into the map when the last entry arrives
    /// (the order check needs only the previous key; the vector holds the entries, not copies).
    pending: Vec<(Vec<u8>, Versioned)>,
    /// The state walk, fed as records arrive, checked against the trailer.
    hasher: StateHasher,
    last_client: Option<ClientId>,
    last_lease: Option<u64>,
    failed: Option<SnapshotError>,
}

impl Default for SnapshotDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotDecoder {
    /// A decoder producing a store with the default [`StoreConfig`].
    pub fn new() -> Self {
        Self::with_config(StoreConfig::default())
    }

    /// A decoder producing a store with this configuration (use the replica's own).
    pub fn with_config(config: StoreConfig) -> Self {
        SnapshotDecoder {
            store: Store::new(config),
            stage: DecStage::Magic,
            meta: None,
            buf: Vec::new(),
            pending: Vec::new(),
            hasher: StateHasher::new(),
            last_client: None,
            last_lease: None,
            failed: None,
        }
    }

    /// The header, once it has been read.
    pub fn meta(&self) -> Option<SnapshotMeta> {
        self.meta
    }

    /// Feed the next chunk (any size, any boundary).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SnapshotError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(chunk);
        let result = self.parse();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    fn parse(&mut self) -> Result<(), SnapshotError> {
        let mut pos = 0;
        loop {
            let avail = &self.buf[pos..];
            match self.stage {
                DecStage::Magic => {
                    if avail.len() < MAGIC.len() {
                        break;
                    }
                    if &avail[..MAGIC.len()] != MAGIC {
                        return Err(SnapshotError::BadMagic);
                    }
                    pos += MAGIC.len();
                    self.stage = DecStage::Header;
                }
                DecStage::Done => {
                    if !avail.is_empty() {
                        return Err(SnapshotError::TrailingData { extra: avail.len() });
                    }
                    break;
                }
                _ => {
                    if avail.len() < 4 {
                        break;
                    }
                    let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
                    if len > MAX_FRAME_BYTES {
                        return Err(SnapshotError::FrameTooLarge { len, max: MAX_FRAME_BYTES });
                    }
                    if len == 0 {
                        return Err(SnapshotError::Invalid("empty frame".to_string()));
                    }
                    if avail.len() < 4 + len {
                        break;
                    }
                    let (tag, body) = (avail[4], &avail[5..4 + len]);
                    // Copy out of the buffer so `record` can borrow self mutably.
                    let body = body.to_vec();
                    pos += 4 + len;
                    self.record(tag, &body)?;
                }
            }
        }
        self.buf.drain(..pos);
        Ok(())
    }

    fn record(&mut self, tag: u8, body: &[u8]) -> Result<(), SnapshotError> {
        let expected_tag = match self.stage {
            DecStage::Header => TAG_HEADER,
            DecStage::Entries { .. } => TAG_ENTRY,
            DecStage::Sessions { .. } => TAG_SESSION,
            DecStage::Leases { .. } => TAG_LEASE,
            DecStage::Trailer => TAG_TRAILER,
            DecStage::Magic | DecStage::Done => 0,
        };
        if tag != expected_tag {
            return Err(SnapshotError::UnexpectedRecord { expected: self.stage.expecting(), got: tag });
        }
        match self.stage {
            DecStage::Header => {
                let m = decode_header(body)?;
                self.store.last_applied = m.last_applied;
                self.store.cluster_version = m.cluster_version;
                self.store.sessions.set_clock(m.log_clock_ms, m.last_stamp);
                self.hasher.header(m.last_applied, m.log_clock_ms, m.last_stamp, m.entries, m.sessions, m.cluster_version);
                if m.cluster_version >= 3 {
                    self.hasher.leases(m.leases, 0);
                }
                // Reserve for the announced count, but never trust a header with a huge claim.
                self.pending.reserve(m.entries.min(1 << 16) as usize);
                self.meta = Some(m);
                self.stage = DecStage::Entries { left: m.entries };
            }
            DecStage::Entries { left } => {
                let e: EntryOwned = exact(body).map_err(body_err("entry"))?;
                if e.key.is_empty() {
                    return Err(SnapshotError::Invalid("empty key".to_string()));
                }
                if self.pending.last().is_some_and(|(k, _)| *k >= e.key) {
                    return Err(SnapshotError::Invalid("keys out of order".to_string()));
                }
                if e.version == 0 || e.version > self.store.last_applied {
                    return Err(SnapshotError::Invalid(format!(
                        "version {} outside 1..={}",
                        e.version, self.store.last_applied
                    )));
                }
                self.hasher.entry(&e.key, &e.value, e.version);
                self.store.data_bytes += (e.key.len() + e.value.len()) as u64;
                self.pending.push((e.key, Versioned { value: e.value, version: e.version }));
                self.stage = DecStage::Entries { left: left - 1 };
            }
            DecStage::Sessions { left } => {
                let s: SessionRecordOwned = exact(body).map_err(body_err("session"))?;
                if self.last_client.is_some_and(|c| c >= s.client) {
                    return Err(SnapshotError::Invalid("sessions out of order".to_string()));
                }
                if s.seq == 0 || s.last_active_ms > self.store.sessions.clock_ms() {
                    return Err(SnapshotError::Invalid("session seq 0 or active after the log clock".to_string()));
                }
                if s.index == 0 || s.index > self.store.last_applied {
                    return Err(SnapshotError::Invalid(format!("session index {} outside 1..={}", s.index, self.store.last_applied)));
                }
                self.last_client = Some(s.client);
                let entry = SessionEntry { seq: s.seq, last_active_ms: s.last_active_ms, fingerprint: s.fingerprint, result: s.result, index: s.index };
                self.hasher.session(s.client, &entry);
                self.store.sessions.insert(s.client, entry);
                self.stage = DecStage::Sessions { left: left - 1 };
            }
            DecStage::Leases { left } => {
                let r: LeaseRecordOwned = exact(body).map_err(body_err("lease"))?;
                if self.last_lease.is_some_and(|id| id >= r.id) {
                    return Err(SnapshotError::Invalid("leases out of order".to_string()));
                }
                if r.id == 0 || r.id > self.store.last_applied || r.ttl_ms == 0 {
                    return Err(SnapshotError::Invalid(format!("lease {} (ttl {} ms) outside 1..={}", r.id, r.ttl_ms, self.store.last_applied)));
                }
                let keys: Vec<Vec<u8>> = r.keys.into_iter().map(|k| k.0).collect();
                if keys.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(SnapshotError::Invalid(format!("lease {}: keys out of order", r.id)));
                }
                self.last_lease = Some(r.id);
                self.hasher.lease(r.id, r.ttl_ms, r.deadline_ms, &keys);
                self.store.leases.insert(r.id, r.ttl_ms, r.deadline_ms);
                for k in &keys {
                    if self.store.data.get(k.as_slice()).is_none() || self.store.leases.key_lease.contains_key(k.as_slice()) {
                        return Err(SnapshotError::Invalid(format!("lease {}: key {} is absent or held by another lease", r.id, crate::bytes::show(k))));
                    }
                    self.store.leases.attach(k, r.id);
                }
                self.stage = DecStage::Leases { left: left - 1 };
            }
            DecStage::Trailer => {
                let expected: StateHash = exact(body).map_err(body_err("trailer"))?;
                let got = self.hasher.finish();
                if got != expected {
                    return Err(SnapshotError::HashMismatch { expected, got });
                }
                self.stage = DecStage::Done;
            }
            DecStage::Magic | DecStage::Done => unreachable!("handled by parse"),
        }
        self.normalise();
        Ok(())
    }

    /// Counts decide what comes next: after the last entry, sessions; after the last session,
    /// the trailer. Applied after every record, so zero counts need no special case.
    fn normalise(&mut self) {
        if let DecStage::Entries { left: 0 } = self.stage {
            self.store.data = std::mem::take(&mut self.pending).into_iter().map(|(k, v)| (crate::store::map_key(k), v)).collect();
            self.store.data_sum = self.hasher.entries_sum();
            self.stage = DecStage::Sessions { left: self.meta.map_or(0, |m| m.sessions) };
        }
        if let DecStage::Sessions { left: 0 } = self.stage {
            self.stage = match self.meta {
                Some(m) if m.cluster_version >= 3 => DecStage::Leases { left: m.leases },
                _ => DecStage::Trailer,
            };
        }
        if let DecStage::Leases { left: 0 } = self.stage {
            self.stage = DecStage::Trailer;
        }
    }

    /// The rebuilt store, if the stream was complete and valid.
    pub fn finish(self) -> Result<Store, SnapshotError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.stage != DecStage::Done {
            return Err(SnapshotError::Truncated { expecting: self.stage.expecting() });
        }
        Ok(self.store)
    }
}

/// Decode a header record of any format this build reads (the format comes first in all).
fn decode_header(body: &[u8]) -> Result<SnapshotMeta, SnapshotError> {
    let (format, _) = postcard::take_from_bytes::<u16>(body).map_err(body_err("header"))?;
    match format {
        OLDEST_SNAPSHOT_FORMAT => {
            let h: HeaderV5 = exact(body).map_err(body_err("header"))?;
            let HeaderV5 { format, last_applied, log_clock_ms, last_stamp, entries, sessions } = h;
            Ok(SnapshotMeta { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version: 1, leases: 0 })
        }
        FORMAT_V6 => {
            let h: HeaderV6 = exact(body).map_err(body_err("header"))?;
            let HeaderV6 { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version } = h;
            // Format 6 is written only at cluster version 2 (from 3 on, format 7); a version the
            // format does not belong to could not be applied the way the writer's replicas do.
            if cluster_version != 2 {
                return Err(SnapshotError::Invalid(format!("format 6 with cluster version {cluster_version} (format 6 is version 2's)")));
            }
            Ok(SnapshotMeta { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version, leases: 0 })
        }
        FORMAT_VERSION => {
            let h: HeaderV7 = exact(body).map_err(body_err("header"))?;
            let HeaderV7 { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version, leases } = h;
            if !(3..=MAX_CLUSTER_VERSION).contains(&cluster_version) {
                return Err(SnapshotError::Invalid(format!(
                    "format 7 with cluster version {cluster_version} (this build runs 3 to {MAX_CLUSTER_VERSION} in format 7)"
                )));
            }
            Ok(SnapshotMeta { format, last_applied, log_clock_ms, last_stamp, entries, sessions, cluster_version, leases })
        }
        got => Err(SnapshotError::UnsupportedFormat { got }),
    }
}

/// Decode a postcard body that must use every byte.
fn exact<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, postcard::Error> {
    let (v, rest) = postcard::take_from_bytes(body)?;
    if rest.is_empty() {
        Ok(v)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

impl Store {
    /// Stream this store as snapshot chunks of `chunk_bytes` (the last chunk may be shorter).
    pub fn snapshot(&self, chunk_bytes: usize) -> SnapshotEncoder<'_> {
        SnapshotEncoder::new(self, chunk_bytes)
    }

    /// Same as [`Store::snapshot`].
    pub fn snapshot_writer(&self, chunk_bytes: usize) -> SnapshotEncoder<'_> {
        self.snapshot(chunk_bytes)
    }

    /// Rebuild a store from a complete sequence of chunks.
    pub fn restore<I, C>(config: StoreConfig, chunks: I) -> Result<Store, SnapshotError>
    where
        I: IntoIterator<Item = C>,
        C: AsRef<[u8]>,
    {
        let mut d = SnapshotDecoder::with_config(config);
        for c in chunks {
            d.push(c.as_ref())?;
        }
        d.finish()
    }
}
