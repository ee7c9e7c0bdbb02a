//! The store: applied state, the apply entry points, and the state hash.
//!
//! [`Store`] owns four things that together are the replicated state: the data (`key ->
//! value, version`), the session table (with its log clock), the last applied index and the
//! cluster version. All four are in the state hash (the cluster version only from version 2 on,
//! so a version-1 store hashes as the previous release did) and in snapshots.
//!
//! # Cluster version
//!
//! The cluster version gates new formats during a rolling upgrade: it starts at 1 (every format
//! of the previous release), the node layer raises it with [`Store::set_cluster_version`] at the
//! same log slot on every replica once every replica runs a build that supports the new version,
//! and it never goes down. A request whose format ([`crate::WriteOp::format`]) is above the
//! cluster version is applied exactly like bytes that do not decode (see
//! [`Store::apply_request`]), since that is what a previous release's replica does with it. The configuration is not state: every replica must be
//! started with the same [`StoreConfig`].

use crate::command::Request;
use crate::hash::{entry_hash, StateHash, StateHasher};
use crate::limits::Limits;
use crate::output::{Output, Versioned, WriteError};
use crate::session::{SessionCheck, SessionTable};
use serde::{Deserialize, Serialize};
use imbl::OrdMap;

/// Settings that change results, so they must be equal on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Size limits on writes and read pages.
    pub limits: Limits,
    /// A session idle for more than this much *log* time expires. Default 24 hours.
    pub session_ttl_ms: u64,
    /// At most this many live sessions. A new session beyond it evicts the least recently
    /// active one if that one has been idle for more than `session_min_ttl_ms`; otherwise it is
    /// refused with [`WriteError::SessionsFull`]. 0 means unbounded. Default 100,000.
    pub max_sessions: usize,
    /// The window every session is kept, full table or not: a session idle for less than this
    /// much log time is never evicted to make room (it expires after `session_ttl_ms` when there
    /// is room). Default 1 minute; equal to `session_ttl_ms`, nothing is ever evicted.
    pub session_min_ttl_ms: u64,
    /// The most log time one request can add to the log clock (see [`crate::session`]).
    /// Default 10 minutes.
    pub max_clock_step_ms: u64,
    /// Lease limits ([`crate::lease`]). Absent from settings recorded by release 0.2 (which
    /// has no leases): read as the defaults.
    #[serde(default)]
    pub leases: crate::lease::LeaseConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            session_ttl_ms: 24 * 60 * 60 * 1000,
            max_sessions: 100_000,
            session_min_ttl_ms: 60 * 1000,
            max_clock_step_ms: 10 * 60 * 1000,
            leases: crate::lease::LeaseConfig::default(),
        }
    }
}

/// Keys of at most this many bytes live inside the map's tree nodes ([`MapKey`]).
pub const INLINE_KEY_BYTES: usize = 24;

/// A key as the map holds it: up to [`INLINE_KEY_BYTES`] bytes inline, in the tree node itself,
/// longer ones on the heap; it orders as its bytes. A lookup compares the sought key with several
/// keys of every node on its path; with keys on the heap each comparison first follows a pointer,
/// a cache miss once the store outgrows the caches, which made point reads at 1 M keys about
/// twice as slow per lookup as inline keys (`cargo bench -p benches --bench kvstore -- get`). It
/// also saves the heap block of every short key.
pub(crate) type MapKey = smallvec::SmallVec<[u8; INLINE_KEY_BYTES]>;

/// Make a map key, inline when it fits (`SmallVec::from_vec` would keep the heap block).
pub(crate) fn map_key(key: Vec<u8>) -> MapKey {
    if key.len() <= INLINE_KEY_BYTES {
        MapKey::from_slice(&key)
    } else {
        MapKey::from_vec(key)
    }
}

/// The replicated key-value state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub(crate) config: StoreConfig,
    /// A persistent (structurally shared) ordered map: cloning the store is O(1) and costs memory
    /// only for the nodes later changed, so a snapshot can be encoded off the node loop from a
    /// clone while the original keeps applying.
    pub(crate) data: OrdMap<MapKey, Versioned>,
    pub(crate) sessions: SessionTable,
    pub(crate) last_applied: u64,
    /// Sum of key and value lengths, kept for metrics and snapshot size estimates.
    pub(crate) data_bytes: u64,
    /// Wrapping sum of [`entry_hash`] over every entry, kept up to date on each write so the
    /// state hash never walks the data.
    pub(crate) data_sum: u64,
    /// The cluster version (see the module docs): 1 to [`crate::MAX_CLUSTER_VERSION`], never lowered.
    pub(crate) cluster_version: u32,
    /// Leases and the keys attached to them (cluster version 3; empty below).
    pub(crate) leases: crate::lease::Leases,
    /// A known-wrong rule for the simulator's negative tests: the log clock does not order
    /// terms (before the second review of the log clock, REPORT §6).
    #[cfg(feature = "bugs")]
    #[doc(hidden)]
    pub no_term_order: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(StoreConfig::default())
    }
}

impl Store {
    /// An empty store at index 0, cluster version 1.
    pub fn new(config: StoreConfig) -> Self {
        Store {
            config,
            data: OrdMap::new(),
            sessions: SessionTable::new(),
            last_applied: 0,
            data_bytes: 0,
            data_sum: 0,
            cluster_version: 1,
            leases: Default::default(),
            #[cfg(feature = "bugs")]
            no_term_order: false,
        }
    }

    /// Start a new cluster's log clock from this store (a backup restored by the founders of a
    /// new cluster): forget the old cluster's last stamp, whose term and process mean nothing to
    /// the new cluster's leaders (their rounds and start numbers begin again at 1, so the old
    /// stamp could be "newer" than all of theirs, or equal to one of them, and stall the clock).
    /// The new cluster's first slot then only sets the reference and gives every lease a full
    /// TTL. The clock's reading and every deadline are kept.
    pub fn forget_clock_reference(&mut self) {
        self.sessions.forget_reference();
    }

    /// Whether the log clock orders terms (cluster version [`crate::TERM_ORDER_VERSION`] on; see
    /// [`crate::session::SessionTable::advance`]).
    pub fn orders_terms(&self) -> bool {
        #[cfg(feature = "bugs")]
        if self.no_term_order {
            return false;
        }
        self.cluster_version >= crate::TERM_ORDER_VERSION
    }

    /// The cluster version: the newest request and snapshot formats this store accepts and
    /// writes. 1 (the previous release's formats) until [`Store::set_cluster_version`] raises it.
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version
    }

    /// Raise the cluster version to `v`; a `v` at or below the current version changes nothing
    /// (it never goes down). This is replicated state: every replica must call it at the same
    /// point of the log (the node layer does, from a log slot), and only with a version every
    /// replica's build supports (at most [`crate::MAX_CLUSTER_VERSION`] for this build; the store does not
    /// refuse more, as refusing on one replica only would diverge).
    pub fn set_cluster_version(&mut self, v: u32) {
        self.cluster_version = self.cluster_version.max(v);
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Replace the configuration (for a store rebuilt from a snapshot). Changing it on a live
    /// replica but not on the others breaks determinism.
    pub fn set_config(&mut self, config: StoreConfig) {
        self.config = config;
    }

    /// The index of the last slot applied or skipped; 0 before any.
    pub fn last_applied(&self) -> u64 {
        self.last_applied
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Sum of the lengths of all keys and values.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The session table (read only).
    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    /// The log clock in ms (log time since the store began; see [`crate::session`]).
    pub fn log_clock_ms(&self) -> u64 {
        self.sessions.clock_ms()
    }

    /// Drop a session's entry from the table. **Only for negative tests**: the node simulator's
    /// `forget_sessions` bug uses it to show that a forgetful session table is caught; nothing
    /// else may call it (a forgotten entry lets a retried write apply twice).
    #[doc(hidden)]
    pub fn forget_session(&mut self, client: crate::ClientId) {
        self.sessions.remove(client);
    }

    /// Advance past a slot that holds no kv command (a no-op or a configuration change).
    pub fn skip(&mut self, index: u64) -> Result<(), WriteError> {
        self.advance_index(index)
    }

    /// Same as [`Store::skip`].
    pub fn apply_noop(&mut self, index: u64) -> Result<(), WriteError> {
        self.skip(index)
    }

    fn advance_index(&mut self, index: u64) -> Result<(), WriteError> {
        if index <= self.last_applied {
            return Err(WriteError::OutOfOrder { last_applied: self.last_applied, got: index });
        }
        self.last_applied = index;
        Ok(())
    }

    /// Apply the bytes of log slot `index`. Bytes that do not decode still consume the slot and
    /// yield [`WriteError::Malformed`] (identically on every replica). Never panics.
    pub fn apply(&mut self, index: u64, req_bytes: &[u8]) -> Output {
        match Request::decode(req_bytes) {
            Ok(req) => self.apply_request(index, &req),
            Err(e) => {
                self.advance_index(index)?;
                Err(WriteError::Malformed(e.to_string()))
            }
        }
    }

    /// Apply a decoded request at log slot `index` (must be above [`Store::last_applied`]).
    ///
    /// Order of work, the same on every replica: advance the index and the log clock, expire
    /// sessions, consult the session table (with the operation's fingerprint), check limits,
    /// execute, record the output.
    ///
    /// A request whose format ([`crate::WriteOp::format`]) is above [`Store::cluster_version`] is
    /// treated exactly as undecodable bytes are by [`Store::apply`] (and by the previous release,
    /// which cannot decode it): only the index advances (no log clock, no expiry, no session
    /// record) and the answer is [`WriteError::Malformed`].
    pub fn apply_request(&mut self, index: u64, req: &Request) -> Output {
        let format = req.op.format();
        if u32::from(format) > self.cluster_version {
            self.advance_index(index)?;
            return Err(WriteError::Malformed(format!(
                "request format {format} needs cluster version {format}; the cluster runs version {}",
                self.cluster_version
            )));
        }
        self.advance_index(index)?;
        let cfg = self.config;
        let before = self.sessions.last_stamp();
        let order_terms = self.orders_terms();
        let stale = order_terms && self.sessions.is_stale(&req.stamp);
        self.sessions.advance(req.stamp, cfg.session_ttl_ms, cfg.max_clock_step_ms, order_terms);
        // A new proposer (leader) took over: every lease gets a full TTL from here
        // (`crate::lease`). Before the session check, so a retried request extends too: the
        // extension depends on the slot's proposer, not on what the request is. A stale stamp
        // (an older term's slot adopted late) changes nothing.
        if !self.leases.is_empty() && !stale && !before.is_some_and(|b| b.same_proposer(&req.stamp)) {
            self.extend_leases();
        }
        let fingerprint = req.session.map(|_| req.op.fingerprint()).unwrap_or(0);
        if let Some(session) = req.session {
            if let SessionCheck::Answer(out) = self.sessions.check(session, fingerprint, cfg.max_sessions, cfg.session_ttl_ms, cfg.session_min_ttl_ms) {
                return out;
            }
        }
        let out = match self.config.limits.check(req) {
            Ok(()) => self.execute(index, &req.op),
            Err(e) => Err(e),
        };
        if let Some(session) = req.session {
            self.sessions.record(session, fingerprint, out.clone(), index);
        }
        out
    }

    /// A hash of the whole replicated state (data, versions, sessions, log clock, last applied,
    /// and the cluster version from version 2 on: at version 1 the hash is the previous release's).
    /// Equal states give equal hashes on every platform; use it to compare replicas.
    ///
    /// Cost: O(1): the data's and the sessions' parts are sums of per-entry hashes maintained on
    /// every change (see [`crate::hash`]).
    pub fn state_hash(&self) -> StateHash {
        let mut h = StateHasher::new();
        h.header(
            self.last_applied,
            self.sessions.clock_ms(),
            self.sessions.last_stamp(),
            self.data.len() as u64,
            self.sessions.len() as u64,
            self.cluster_version,
        );
        h.data_sum(self.data_sum);
        h.session_sum(self.sessions.hash_sum());
        if self.cluster_version >= 3 {
            h.leases(self.leases.leases.len() as u64, self.leases.sum);
        }
        h.finish()
    }

    /// Insert a value, keeping `data_bytes` right, and detach the key from any lease (a write
    /// that names a lease attaches it again after). Returns the previous version.
    pub(crate) fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>, version: u64) -> Option<u64> {
        self.leases.detach(&key);
        let add = (key.len() + value.len()) as u64;
        match self.data.get_mut(key.as_slice()) {
            Some(old) => {
                self.data_bytes = self.data_bytes - old.value.len() as u64 + value.len() as u64;
                self.data_sum = self.data_sum.wrapping_sub(entry_hash(&key, &old.value, old.version)).wrapping_add(entry_hash(&key, &value, version));
                let prev = old.version;
                *old = Versioned { value, version };
                Some(prev)
            }
            None => {
                self.data_bytes += add;
                self.data_sum = self.data_sum.wrapping_add(entry_hash(&key, &value, version));
                self.data.insert(map_key(key), Versioned { value, version });
                None
            }
        }
    }

    /// Remove a key, keeping `data_bytes` right. Returns the previous version.
    pub(crate) fn delete_raw(&mut self, key: &[u8]) -> Option<u64> {
        self.leases.detach(key);
        let old = self.data.remove(key)?;
        self.data_bytes -= (key.len() + old.value.len()) as u64;
        self.data_sum = self.data_sum.wrapping_sub(entry_hash(key, &old.value, old.version));
        Some(old.version)
    }
}
