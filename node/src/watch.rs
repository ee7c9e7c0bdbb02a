//! Watches: a bounded history of applied changes, and the watchers that wait on it.
//!
//! Every command the store applies may change keys. [`History`] records each change (store
//! index, key, new value or deletion, version) for the last `watch_history_changes` changes
//! (and at most `watch_history_bytes` of keys and values), in index order. It is a per-replica
//! cache, **not** replicated state: it is in neither the state hash nor snapshots, so replicas
//! may hold different spans of it. What they agree on is the numbering: a change's index is the
//! store index, equal on every replica, so a client can resume a stream on another replica.
//!
//! The history covers every change with an index above [`History::complete_after`]: 0 on a
//! fresh node, the snapshot's store index after an install (the changes inside a snapshot are
//! not known one by one), and the index of the newest change evicted once it is full. A watch
//! for changes after `after < complete_after` cannot be answered exactly:
//! [`WatchError::Compacted`] names the oldest index that can (`complete_after + 1`).
//!
//! A watch is one-shot: [`crate::Input::Watch`] asks for the changes to `key` (or under it, with
//! `prefix`) after `after`. If the history holds some, [`crate::Output::WatchDone`] answers at
//! once; otherwise the watcher waits and the apply that records the first matching change
//! answers it (no polling: applies wake watchers). A stream re-arms a watch after the last index
//! it delivered. Invariant: a waiting watcher has no matching change in the history above its
//! `after`, so evicting old changes never loses one it needs; a snapshot install that skips
//! past a watcher's `after` answers it `Compacted`.
//!
//! Cost: recording is O(keys written); waking is O(watchers) per applied slot.

use crate::types::{Change, Changes, Removal, Token, WatchError, WatchSpec};
use kvstore::{Store, WriteOp, WriteOutcome};
use std::collections::{BTreeMap, VecDeque};

/// At most this many changes in one [`Changes`] answer; a stream asks again from the last one.
pub const MAX_CHANGES_PER_ANSWER: usize = 1024;


/// The bounded history of changes (see the module docs).
#[derive(Debug)]
pub(crate) struct History {
    changes: VecDeque<Change>,
    bytes: usize,
    complete_after: u64,
    max_changes: usize,
    max_bytes: usize,
}

impl History {
    pub(crate) fn new(max_changes: usize, max_bytes: usize) -> History {
        History { changes: VecDeque::new(), bytes: 0, complete_after: 0, max_changes, max_bytes }
    }

    /// Every change above this index is in the history.
    pub(crate) fn complete_after(&self) -> u64 {
        self.complete_after
    }

    /// Number of changes held.
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    fn push(&mut self, c: Change) {
        self.bytes += c.bytes();
        self.changes.push_back(c);
    }

    /// Evict the oldest changes beyond the bounds. Run after waking watchers (module docs).
    pub(crate) fn trim(&mut self) {
        while self.changes.len() > self.max_changes || (self.bytes > self.max_bytes && !self.changes.is_empty()) {
            let Some(old) = self.changes.pop_front() else { break };
            self.bytes -= old.bytes();
            self.complete_after = self.complete_after.max(old.index);
        }
    }

    /// A snapshot moved the store to `index`: the changes up to it are not known one by one.
    pub(crate) fn reset(&mut self, index: u64) {
        self.changes.clear();
        self.bytes = 0;
        self.complete_after = index;
    }

    /// The matching changes above `spec.after`, oldest first, at most [`MAX_CHANGES_PER_ANSWER`].
    fn collect(&self, spec: &WatchSpec) -> Vec<Change> {
        let start = self.changes.partition_point(|c| c.index <= spec.after);
        self.changes.range(start..).filter(|c| spec.matches(c)).take(MAX_CHANGES_PER_ANSWER).cloned().collect()
    }
}

/// The keys an atomic batch may write, and whether each held a value before it ran, or the keys
/// a range delete will delete: the only commands whose output does not tell which keys they
/// deleted (a batch delete of a missing key changes nothing; a range delete reports a count),
/// so only they are looked up before they run ([`Watches::record`]).
///
/// The lease commands that delete keys are looked up too: a revoke's keys are its lease's, a
/// sweep's those of the leases due at the log clock the sweep will find (a superset when a new
/// proposer's sweep extends them instead; [`Watches::record`] keeps only the keys gone after).
pub(crate) fn keys_before(store: &Store, req: &kvstore::Request) -> Option<Vec<(Vec<u8>, bool)>> {
    match &req.op {
        WriteOp::PutMany { ops } | WriteOp::Leased { ops, .. } => {
            Some(ops.iter().map(|o| (o.key().to_vec(), store.get(o.key()).is_some())).collect())
        }
        WriteOp::DeleteRange { start, end } => Some(store.keys_in(start, end.as_deref()).into_iter().map(|k| (k, true)).collect()),
        WriteOp::LeaseRevoke { id } => Some(store.lease(*id).map(|l| l.keys).unwrap_or_default().into_iter().map(|k| (k, true)).collect()),
        WriteOp::LeaseSweep => {
            let clock = store.sessions().clock_after(req.stamp, store.config().max_clock_step_ms, store.orders_terms());
            Some(store.leases_due(clock).into_iter().flat_map(|(_, keys)| keys).map(|k| (k, true)).collect())
        }
        _ => None,
    }
}

/// The waiting watchers and the history (owned by [`crate::Node`]).
#[derive(Debug)]
pub(crate) struct Watches {
    pub(crate) history: History,
    waiting: BTreeMap<Token, WatchSpec>,
    max_watchers: usize,
    /// The changes up to this index were offered to the waiting watchers already: by the
    /// invariant, a waiting watcher matches none of them, so waking looks only at newer ones.
    offered_upto: u64,
}

impl Watches {
    pub(crate) fn new(max_changes: usize, max_bytes: usize, max_watchers: usize) -> Watches {
        Watches { history: History::new(max_changes, max_bytes), waiting: BTreeMap::new(), max_watchers, offered_upto: 0 }
    }

    /// Watchers waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A new watch: answered now (changes held, or compacted), or `None` and it waits.
    pub(crate) fn watch(&mut self, token: Token, spec: WatchSpec, index: u64) -> Option<Result<Changes, WatchError>> {
        if spec.after < self.history.complete_after {
            return Some(Err(WatchError::Compacted { oldest_index: self.history.complete_after + 1 }));
        }
        let changes = self.history.collect(&spec);
        if !changes.is_empty() {
            return Some(Ok(Changes { changes, index }));
        }
        if self.waiting.len() >= self.max_watchers {
            return Some(Err(WatchError::TooMany { limit: self.max_watchers }));
        }
        self.waiting.insert(token, spec);
        None
    }

    /// Answer [`crate::Input::WatchProgress`] at `index` (the applied index): the matching
    /// changes above `spec.after`, if the history holds any, else none, which tells that no
    /// matching change lies in `(spec.after, index]` (the history holds every change above
    /// `complete_after`, and the store has applied nothing above `index`).
    pub(crate) fn progress(&self, spec: &WatchSpec, index: u64) -> Result<Changes, WatchError> {
        if spec.after < self.history.complete_after {
            return Err(WatchError::Compacted { oldest_index: self.history.complete_after + 1 });
        }
        Ok(Changes { changes: self.history.collect(spec), index })
    }

    /// Forget a watcher (its client went away). Whether it was waiting.
    pub(crate) fn cancel(&mut self, token: Token) -> bool {
        self.waiting.remove(&token).is_some()
    }

    /// Record what command `index` changed, from the operation and its output (`before` from
    /// [`keys_before`], `store` after it ran). A command changed nothing if it failed or if its
    /// output is an earlier one (a retried session request answered from the session table:
    /// its result names the index it first ran at). Only an append and a batch look anything
    /// up; a put, delete, compare-and-set or increment costs no lookup.
    pub(crate) fn record(&mut self, index: u64, op: &WriteOp, output: &kvstore::Output, before: Option<Vec<(Vec<u8>, bool)>>, store: &Store) {
        let Ok(result) = output else { return };
        if result.index != index {
            return;
        }
        let put = |key: &[u8], value: Vec<u8>| Change { index, key: key.to_vec(), value: Some(value), version: index };
        let deleted = |key: &[u8]| Change { index, key: key.to_vec(), value: None, version: index };
        match (op, &result.outcome) {
            (WriteOp::Put { key, value, .. }, _) => self.history.push(put(key, value.clone())),
            (WriteOp::Delete { key, .. }, WriteOutcome::Deleted { previous_version: Some(_) }) => self.history.push(deleted(key)),
            (WriteOp::Delete { .. }, _) => {}
            (WriteOp::Cas { key, new: Some(v), .. }, _) => self.history.push(put(key, v.clone())),
            (WriteOp::Cas { key, new: None, .. }, WriteOutcome::Swapped { previous_version: Some(_) }) => self.history.push(deleted(key)),
            (WriteOp::Cas { .. }, _) => {}
            (WriteOp::Incr { key, .. }, WriteOutcome::Incremented { value }) => self.history.push(put(key, value.to_string().into_bytes())),
            (WriteOp::Incr { .. }, _) => {}
            (WriteOp::Append { key, .. }, _) => {
                if let Some(v) = store.get(key) {
                    self.history.push(put(key, v.value));
                }
            }
            (WriteOp::DeleteRange { .. }, WriteOutcome::RangeDeleted { .. })
            | (WriteOp::LeaseRevoke { .. }, WriteOutcome::LeaseRevoked { .. })
            | (WriteOp::LeaseSweep, WriteOutcome::LeasesExpired { .. }) => {
                for (key, _) in before.unwrap_or_default() {
                    if store.get(&key).is_none() {
                        self.history.push(deleted(&key));
                    }
                }
            }
            (WriteOp::DeleteRange { .. } | WriteOp::LeaseRevoke { .. } | WriteOp::LeaseSweep, _) => {}
            (WriteOp::LeaseGrant { .. } | WriteOp::LeaseKeepAlive { .. }, _) => {}
            (WriteOp::PutMany { .. } | WriteOp::Leased { .. }, _) => {
                for (key, existed) in before.unwrap_or_default() {
                    match store.get(&key) {
                        Some(v) if v.version == index => self.history.push(Change { index, key, value: Some(v.value), version: index }),
                        None if existed => self.history.push(Change { index, key, value: None, version: index }),
                        _ => {}
                    }
                }
            }
        }
    }

    /// After a slot's changes were recorded: answer every watcher that has some, then trim.
    ///
    /// Only the changes recorded since the last wake are matched against each watcher
    /// (O(watchers x new changes) per slot, not the whole history per watcher).
    pub(crate) fn wake(&mut self, index: u64) -> Vec<(Token, Result<Changes, WatchError>)> {
        let mut done = Vec::new();
        let history = &self.history;
        let fresh = history.changes.range(history.changes.partition_point(|c| c.index <= self.offered_upto)..);
        if fresh.len() > 0 {
            self.waiting.retain(|token, spec| {
                if !fresh.clone().any(|c| spec.matches(c)) {
                    return true;
                }
                done.push((*token, Ok(Changes { changes: history.collect(spec), index })));
                false
            });
        }
        self.offered_upto = self.offered_upto.max(index);
        self.history.trim();
        done
    }

    /// A snapshot moved the store to `index`: the history restarts there, and every waiting
    /// watcher (whose `after` is below it: a waiter's `after` never passes the applied index)
    /// is answered `Compacted`.
    pub(crate) fn installed(&mut self, index: u64) -> Vec<(Token, Result<Changes, WatchError>)> {
        self.history.reset(index);
        self.offered_upto = index;
        let oldest_index = index + 1;
        let waiting = std::mem::take(&mut self.waiting);
        let (behind, ahead): (BTreeMap<_, _>, BTreeMap<_, _>) = waiting.into_iter().partition(|(_, s)| s.after < index);
        self.waiting = ahead;
        behind.into_keys().map(|t| (t, Err(WatchError::Compacted { oldest_index }))).collect()
    }

    /// This replica was removed: every waiting watcher hears it.
    pub(crate) fn removed(&mut self, r: Removal) -> Vec<(Token, Result<Changes, WatchError>)> {
        std::mem::take(&mut self.waiting).into_keys().map(|t| (t, Err(WatchError::Removed(r)))).collect()
    }
}
