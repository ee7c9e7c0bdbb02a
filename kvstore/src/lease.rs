//! Leases: time-limited ownership that the log, not any replica's clock, decides.
//!
//! A lease is granted with a TTL ([`crate::WriteOp::LeaseGrant`]; its id is the grant's store
//! index), kept alive ([`crate::WriteOp::LeaseKeepAlive`]: it then expires `ttl_ms` of *log
//! time* after that command) and revoked ([`crate::WriteOp::LeaseRevoke`]). Keys written by a
//! [`crate::WriteOp::Leased`] batch are attached to its lease; when the lease ends (revoked or
//! expired) every attached key is deleted in that one command. A write that names no lease
//! (a plain put, a compare-and-set, an increment...) detaches the key it writes, like a put
//! without a lease in etcd; a delete detaches it too.
//!
//! # Expiry is decided in the log
//!
//! Deadlines are on the log clock ([`crate::session`]): it advances only by the time one leader
//! measured between two of its own slots, so it never runs faster than real time and no
//! replica's wall clock moves it. Nothing expires by itself: the leader proposes
//! [`crate::WriteOp::LeaseSweep`] (the node layer does, `node/src/node.rs`, when the earliest
//! deadline has passed by its own measure, and while leases exist it keeps the clock moving),
//! and the sweep expires every lease whose deadline is at or below the log clock *at the
//! sweep's slot*. Every replica applies the same sweep at the same index with the same clock,
//! so every replica expires the same leases at the same index.
//!
//! # A new leader gives every lease a full TTL
//!
//! When the proposer of a slot is not the proposer of the slot before (a new leader, or a
//! leader's new process), every lease's deadline is raised to at least the log clock plus its
//! TTL before the command runs. The time between leaders is not on the log clock anyway; this
//! also covers the holder whose keepalive was lost with the old leader: it has a whole TTL to
//! reach the new one. Raising a deadline never ends a lease early, so this costs safety
//! nothing; it can only make an abandoned lease live up to one TTL longer per leader change.
//!
//! # What a holder can rely on
//!
//! A keepalive applied at log time `c` keeps the lease until log time `c + ttl` at least, and
//! log time runs no faster than real time, so a holder whose keepalive was *sent* at its time
//! `t` and acknowledged holds the lease until at least `t + ttl` by its own clock (minus its
//! clock's drift). The usual caveat of every lease applies: a holder paused past that point
//! may act after its lease ended; fence with the key's creation index (docs/coordination.md).

use crate::hash::{attach_hash, lease_hash};
use crate::output::WriteError;
use crate::store::{map_key, MapKey, Store};
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

/// Lease limits: part of [`crate::StoreConfig`], so equal on every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// The most leases the cluster holds at once; a grant beyond is refused
    /// ([`WriteError::TooManyLeases`]). Default 10,000.
    pub max_leases: usize,
    /// The most keys one lease holds ([`WriteError::TooManyLeaseKeys`]). Default 1,000.
    pub max_keys_per_lease: usize,
    /// The shortest TTL a grant may ask for, in ms. Default 1 s.
    pub min_ttl_ms: u64,
    /// The longest TTL a grant may ask for, in ms. Default 24 h.
    pub max_ttl_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { max_leases: 10_000, max_keys_per_lease: 1_000, min_ttl_ms: 1_000, max_ttl_ms: 24 * 60 * 60 * 1000 }
    }
}

/// One live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its time to live, in ms of log time.
    pub ttl_ms: u64,
    /// The log time at which it expires (the next sweep at or after it ends it).
    pub deadline_ms: u64,
    /// The keys attached to it.
    pub keys: OrdSet<Vec<u8>>,
}

/// What a lease lookup returns ([`Store::lease`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease's id.
    pub id: u64,
    /// Its TTL.
    pub ttl_ms: u64,
    /// Log time left before it may expire, at the store's applied index (log time only moves
    /// with slots, so on an idle replica this is an upper bound of what is left in real time).
    pub remaining_ms: u64,
    /// The attached keys, in order (all of them; a lease holds at most `max_keys_per_lease`).
    pub keys: Vec<Vec<u8>>,
}

/// The lease part of the store's state (with the key attachments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Leases {
    pub(crate) leases: OrdMap<u64, Lease>,
    /// Which lease each attached key belongs to.
    pub(crate) key_lease: OrdMap<MapKey, u64>,
    /// `(deadline, id)` of every lease: the expiry order (not state: derived from `leases`).
    pub(crate) by_deadline: OrdSet<(u64, u64)>,
    /// Wrapping sum of [`lease_hash`] over the leases and [`attach_hash`] over the attachments.
    pub(crate) sum: u64,
}

impl Leases {
    pub(crate) fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Insert a lease with no keys (a grant, or a snapshot's lease before its keys).
    pub(crate) fn insert(&mut self, id: u64, ttl_ms: u64, deadline_ms: u64) {
        self.sum = self.sum.wrapping_add(lease_hash(id, ttl_ms, deadline_ms));
        self.by_deadline.insert((deadline_ms, id));
        self.leases.insert(id, Lease { ttl_ms, deadline_ms, keys: OrdSet::new() });
    }

    fn set_deadline(&mut self, id: u64, deadline_ms: u64) {
        let Some(l) = self.leases.get_mut(&id) else { return };
        if l.deadline_ms == deadline_ms {
            return;
        }
        self.sum = self.sum.wrapping_sub(lease_hash(id, l.ttl_ms, l.deadline_ms)).wrapping_add(lease_hash(id, l.ttl_ms, deadline_ms));
        self.by_deadline.remove(&(l.deadline_ms, id));
        self.by_deadline.insert((deadline_ms, id));
        l.deadline_ms = deadline_ms;
    }

    /// Attach `key` to lease `id` (which must exist), detaching it from any other first.
    pub(crate) fn attach(&mut self, key: &[u8], id: u64) {
        self.detach(key);
        if let Some(l) = self.leases.get_mut(&id) {
            l.keys.insert(key.to_vec());
            self.key_lease.insert(map_key(key.to_vec()), id);
            self.sum = self.sum.wrapping_add(attach_hash(key, id));
        }
    }

    /// Detach `key` from its lease, if it has one.
    pub(crate) fn detach(&mut self, key: &[u8]) {
        if self.key_lease.is_empty() {
            return;
        }
        if let Some(id) = self.key_lease.remove(key) {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.remove(key);
            }
            self.sum = self.sum.wrapping_sub(attach_hash(key, id));
        }
    }

    /// Remove lease `id` and its attachments; returns its keys (to delete).
    fn remove(&mut self, id: u64) -> Option<Vec<Vec<u8>>> {
        let l = self.leases.remove(&id)?;
        self.by_deadline.remove(&(l.deadline_ms, id));
        self.sum = self.sum.wrapping_sub(lease_hash(id, l.ttl_ms, l.deadline_ms));
        let keys: Vec<Vec<u8>> = l.keys.into_iter().collect();
        for k in &keys {
            self.key_lease.remove(k.as_slice());
            self.sum = self.sum.wrapping_sub(attach_hash(k, id));
        }
        Some(keys)
    }
}

impl Store {
    /// Lease `id`, if it is live at the applied index.
    pub fn lease(&self, id: u64) -> Option<LeaseInfo> {
        let l = self.leases.leases.get(&id)?;
        Some(LeaseInfo {
            id,
            ttl_ms: l.ttl_ms,
            remaining_ms: l.deadline_ms.saturating_sub(self.log_clock_ms()),
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// The live leases' ids, in order, starting after `after` (at most `limit`).
    pub fn lease_ids(&self, after: u64, limit: usize) -> Vec<u64> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.leases.leases.range((Excluded(after), Unbounded)).take(limit).map(|(id, _)| *id).collect()
    }

    /// How many leases are live.
    pub fn lease_count(&self) -> usize {
        self.leases.leases.len()
    }

    /// The lease `key` is attached to, if any.
    pub fn lease_of(&self, key: &[u8]) -> Option<u64> {
        self.leases.key_lease.get(key).copied()
    }

    /// The earliest lease deadline on the log clock (what the leader's sweep waits for).
    pub fn next_lease_deadline(&self) -> Option<u64> {
        self.leases.by_deadline.get_min().map(|(d, _)| *d)
    }

    /// The leases a [`crate::WriteOp::LeaseSweep`] at log time `clock_ms` would expire, in
    /// order, with their keys (the node layer records the deletions for watchers from this).
    pub fn leases_due(&self, clock_ms: u64) -> Vec<(u64, Vec<Vec<u8>>)> {
        self.leases
            .by_deadline
            .iter()
            .take_while(|(d, _)| *d <= clock_ms)
            .filter_map(|(_, id)| Some((*id, self.leases.leases.get(id)?.keys.iter().cloned().collect())))
            .collect()
    }

    /// A new proposer took over (see the module docs): every lease lives at least one more TTL.
    pub(crate) fn extend_leases(&mut self) {
        let clock = self.log_clock_ms();
        let ids: Vec<(u64, u64)> = self.leases.leases.iter().map(|(id, l)| (*id, clock.saturating_add(l.ttl_ms))).collect();
        for (id, at_least) in ids {
            if self.leases.leases.get(&id).is_some_and(|l| l.deadline_ms < at_least) {
                self.leases.set_deadline(id, at_least);
            }
        }
    }

    pub(crate) fn lease_grant(&mut self, index: u64, ttl_ms: u64) -> Result<(), WriteError> {
        let c = self.config.leases;
        if ttl_ms < c.min_ttl_ms || ttl_ms > c.max_ttl_ms {
            return Err(WriteError::LeaseTtl { ttl_ms, min_ms: c.min_ttl_ms, max_ms: c.max_ttl_ms });
        }
        if self.leases.leases.len() >= c.max_leases {
            return Err(WriteError::TooManyLeases { limit: c.max_leases as u64 });
        }
        let deadline = self.log_clock_ms().saturating_add(ttl_ms);
        self.leases.insert(index, ttl_ms, deadline);
        Ok(())
    }

    pub(crate) fn lease_keep_alive(&mut self, id: u64) -> Result<u64, WriteError> {
        let ttl = self.leases.leases.get(&id).ok_or(WriteError::LeaseNotFound { id })?.ttl_ms;
        self.leases.set_deadline(id, self.log_clock_ms().saturating_add(ttl));
        Ok(ttl)
    }

    /// End lease `id` and delete its keys; how many keys were deleted.
    pub(crate) fn lease_end(&mut self, id: u64) -> Result<u64, WriteError> {
        let keys = self.leases.remove(id).ok_or(WriteError::LeaseNotFound { id })?;
        for k in &keys {
            self.delete_raw(k);
        }
        Ok(keys.len() as u64)
    }

    /// Whether the keys a batch puts fit in lease `id` (which must exist).
    pub(crate) fn lease_room(&self, id: u64, put_keys: &[&[u8]], delete_keys: &[&[u8]]) -> Result<(), WriteError> {
        let l = self.leases.leases.get(&id).ok_or(WriteError::LeaseNotFound { id })?;
        let new = put_keys.iter().filter(|k| !l.keys.contains(**k)).count();
        let freed = delete_keys.iter().filter(|k| l.keys.contains(**k)).count();
        let limit = self.config.leases.max_keys_per_lease;
        if l.keys.len() - freed + new > limit {
            return Err(WriteError::TooManyLeaseKeys { id, limit: limit as u64 });
        }
        Ok(())
    }
}
