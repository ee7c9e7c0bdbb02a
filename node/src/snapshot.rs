//! Snapshot cadence, transfer requests and installs.
//!
//! The node never sees snapshot bytes. On `Action::TakeSnapshot` it hands the shell an O(1) clone
//! of the store ([`Output::EncodeSnapshot`]); the shell encodes it off the loop, keeps the bytes,
//! and answers [`Input::SnapshotEncoded`](crate::Input::SnapshotEncoded), and only then does the
//! core hear `SnapshotTaken` (and compact its log). On `Action::SendSnapshot { to }` the node
//! names the latest encoded snapshot, or a fresh clone when none matches the store.
//!
//! **The configuration hold** (durable mode). A durable restart knows the configuration of its
//! newest snapshot file only: a configuration change chosen above it is a vote in the WAL at
//! most, and nobody knows it chosen after a power cut. If the older configuration's quorum was
//! replaced by such changes, no candidate could ever gather it (REPORT section 7, Fixed; seeds
//! 11263 and 21381; `node/tests/durable.rs` has it in small). So when a replica applies a change
//! of the acceptors (or, as an acceptor, installs a snapshot with other acceptors), it encodes a
//! snapshot at that slot, and every output queued after the change waits until that snapshot
//! file is durable (the shell answers `SnapshotEncoded { file: true }` only after the file is
//! written and synced); `status()` shows the configuration before the change meanwhile, so the
//! etcd epoch marks and the membership barrier do not run ahead of the files. Whatever this
//! replica does knowing the new acceptors (a leader's phase 1 among them, proposals after its
//! stop sign, `learned` reports past it, replies, votes: the core learns an `Accept`'s commit
//! point before it votes) leaves the process only once a restart would recover them. A crash
//! before then loses only what nobody saw, as with the WAL barrier. Not covered: a follower
//! with a gap below the change votes before it applies it, and promises are not held (REPORT
//! section 7). Changes of the learners and version raises hold nothing.

use crate::node::{ConfigHold, Node};
use crate::types::{Output, SnapshotSource, SNAPSHOT_LOG_TO_STORE};
use kvstore::Store;
use paxos::{Configuration, Event, NodeId, Slot, SnapshotMeta};
use tracing::{debug, error, info, warn};

impl Node {
    /// The core asks every `snapshot_every` slots. Cadence: a snapshot costs O(store), so one is
    /// taken about once the log since the last one holds 1/[`SNAPSHOT_LOG_TO_STORE`] as many
    /// slots as the store has keys (a slot holds one write or more), which keeps the amortised
    /// encoding cost per write constant and the retained log within a fixed fraction of the
    /// store; but never more than `max_retained_slots` (the operator's bound on the log).
    /// Asks declined here are repeated by the core `snapshot_every` slots later.
    ///
    /// Staggered: every replica applies the same slots, so with the same cadence all would
    /// encode the whole store at the same moment. A snapshot is taken when the applied slot
    /// crosses a line of a grid of that cadence shifted by this node's
    /// [`paxos::snapshot_phase`] (and at least half a cadence after the last one, since the
    /// cadence follows the store's size), so replicas take theirs at different slots, also
    /// after one installed another's snapshot.
    pub(crate) fn take_snapshot(&mut self, slot: Slot) {
        if self.halted.is_some() {
            // The store stopped below the slot: a snapshot of it would claim slots it never applied.
            return;
        }
        if slot != self.applied_slot {
            warn!(%slot, applied = %self.applied_slot, "snapshot asked at a slot other than the applied one");
        }
        if self.snapshot_encoding {
            debug!(%slot, "snapshot asked while one is being encoded; skipped");
            return;
        }
        let since = self.applied_slot.0.saturating_sub(self.last_snapshot_slot.0);
        let cadence = (self.store.len() as u64 / SNAPSHOT_LOG_TO_STORE).min(self.settings.max_retained_slots);
        let phase = paxos::snapshot_phase(self.settings.me.node, cadence);
        if cadence > 0 && (since < cadence / 2 || !paxos::crosses_grid(self.last_snapshot_slot, self.applied_slot, cadence, phase)) {
            debug!(%slot, since, cadence, phase, keys = self.store.len(), "snapshot deferred: log short relative to the store");
            return;
        }
        self.encode_snapshot();
    }

    /// Durable mode: a snapshot as soon as the log applied since the last one holds
    /// `snapshot_log_bytes` of payload (less this node's phase, up to half of it), whatever the
    /// cadence by slots (`NodeSettings`). Called once the core's queued actions ran after slots
    /// were applied (`Node::drain`), so the snapshot is at the slot just applied, as the core
    /// expects, with the configuration that governs the slot after it.
    pub(crate) fn snapshot_by_bytes(&mut self) {
        let bound = self.settings.snapshot_log_bytes;
        // Staggered like the cadence by slots: each node at its own point of (bound/2, bound],
        // so that the replicas do not all encode the store at the same slot.
        let bound = bound - paxos::snapshot_phase(self.settings.me.node, bound / 2);
        if !self.settings.durable || bound == 0 || self.log_bytes_since_snapshot < bound || self.snapshot_encoding {
            return;
        }
        info!(slot = %self.applied_slot, bytes = self.log_bytes_since_snapshot, bound, "snapshot: the log since the last one reached its bound in bytes");
        self.encode_snapshot();
    }

    fn encode_snapshot(&mut self) {
        if self.halted.is_some() {
            return;
        }
        // The node's configuration, not the core's: the core may already have applied (and
        // queued) slots past this one, and a snapshot must carry the configuration governing the
        // slot right after its last one.
        let meta = SnapshotMeta { last_slot: self.applied_slot, config: self.config.clone() };
        self.snapshot_encoding = true;
        self.last_snapshot_slot = self.applied_slot;
        self.log_bytes_since_snapshot = 0;
        self.outputs.push_back(Output::EncodeSnapshot { meta, store: Box::new(self.store.clone()) });
    }

    pub(crate) fn snapshot_encoded(&mut self, meta: SnapshotMeta, file: bool) {
        self.snapshot_encoding = false;
        if file {
            self.release_config_hold(meta.last_slot, meta.config.epoch);
        } else if self.config_hold.is_some() {
            // The driver exits when a snapshot file cannot be written (as on a failed fsync);
            // a shell that goes on keeps the hold until a later encoding's file is durable.
            error!(slot = %meta.last_slot, "the snapshot file was not written: the configuration hold stays");
        }
        self.counters.snapshots_taken += 1;
        debug!(slot = %meta.last_slot, "snapshot taken");
        if self.latest_encoded.as_ref().is_none_or(|l| l.last_slot < meta.last_slot) {
            self.latest_encoded = Some(meta.clone());
        }
        // The core ignores a snapshot at or below one it already has (after an install).
        self.replica.handle(self.now, Event::SnapshotTaken(meta));
        if file && self.config_hold.is_some() {
            // The snapshot that ended was older than the change held for (or, defensively,
            // carried an older configuration): encode one now.
            self.encode_snapshot();
            if self.halted.is_some() {
                // A halted replica encodes nothing more: it must not keep its outputs for ever.
                self.release_config_hold(Slot(u64::MAX), u64::MAX);
            }
        }
    }

    /// Durable mode: the configuration applied at `slot` must be in a durable snapshot file before
    /// any later output runs. Starts (or extends) the hold, and encodes a snapshot at the applied
    /// slot unless one is being encoded (then the next starts when it ends). `before`: the
    /// configuration before the change, shown by `status()` until the hold ends.
    pub(crate) fn hold_for_config(&mut self, slot: Slot, before: Configuration) {
        if !self.settings.durable || self.halted.is_some() {
            return;
        }
        if self.bug(|b| b.no_config_hold) {
            return;
        }
        let epoch = self.config.epoch;
        match &mut self.config_hold {
            Some(h) => {
                h.slot = h.slot.max(slot);
                h.epoch = h.epoch.max(epoch);
            }
            None => self.config_hold = Some(ConfigHold { slot, epoch, start: self.outputs.len(), shown: before }),
        }
        if !self.snapshot_encoding {
            self.encode_snapshot();
        }
    }

    /// A snapshot file at `slot` carrying `epoch` is durable: release the hold if it covers the
    /// held change.
    fn release_config_hold(&mut self, slot: Slot, epoch: u64) {
        if self.config_hold.as_ref().is_some_and(|h| slot >= h.slot && epoch >= h.epoch) {
            self.config_hold = None;
            debug!(%slot, held = self.held.len(), "configuration in a durable snapshot file; held outputs released");
            let held = std::mem::take(&mut self.held);
            self.outputs.extend(held);
        }
    }

    /// At the start of a turn: outputs of this turn begin at the end of the (polled) queue.
    pub(crate) fn open_turn(&mut self) {
        if let Some(h) = &mut self.config_hold {
            h.start = self.outputs.len();
        }
    }

    /// At the end of a turn: move the outputs queued behind the hold to `held`, except the
    /// snapshot encodings (one of them releases the hold; each carries its own store clone, so it
    /// may run before the outputs it passes).
    pub(crate) fn fence_outputs(&mut self) {
        let Some(start) = self.config_hold.as_ref().map(|h| h.start) else { return };
        let tail = self.outputs.split_off(start.min(self.outputs.len()));
        for out in tail {
            if matches!(out, Output::EncodeSnapshot { .. }) {
                self.outputs.push_back(out);
            } else {
                self.held.push_back(out);
            }
        }
        if let Some(h) = &mut self.config_hold {
            h.start = self.outputs.len();
        }
    }

    /// The latest snapshot encoded here, unless there is none yet or it is older than the store
    /// (after a snapshot was installed here, or before the first `TakeSnapshot`): then a clone of
    /// the store as it is now. Any snapshot at or above the core's compaction point serves, and a
    /// fresher one leaves less of the log to fetch afterwards.
    pub(crate) fn send_snapshot(&mut self, to: NodeId) {
        let from = match &self.latest_encoded {
            Some(m) if m.last_slot == self.applied_slot => SnapshotSource::Encoded(m.clone()),
            _ => {
                let meta = SnapshotMeta { last_slot: self.applied_slot, config: self.config.clone() };
                SnapshotSource::Store { meta, store: Box::new(self.store.clone()) }
            }
        };
        self.outputs.push_back(Output::SendSnapshot { to, from });
    }

    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta, store: Store) {
        if meta.last_slot <= self.applied_slot {
            debug!(slot = %meta.last_slot, applied = %self.applied_slot, "stale snapshot ignored");
            return;
        }
        info!(slot = %meta.last_slot, keys = store.len(), "installing snapshot");
        let mut store = store;
        store.set_config(*self.store.config());
        self.store = store;
        self.applied_slot = meta.last_slot;
        self.last_snapshot_slot = meta.last_slot;
        self.log_bytes_since_snapshot = 0;
        let before = std::mem::replace(&mut self.config, meta.config.clone());
        self.counters.snapshots_installed += 1;
        if before.acceptors != meta.config.acceptors && meta.config.acceptors.contains(&self.settings.me) {
            // An acceptor installs a configuration with other acceptors (it lagged across a
            // change). The shell writes the installed snapshot's file too, but nothing says
            // when: encode one at its slot and hold what follows until that one is durable. (A
            // learner that joins votes nothing: its hold comes with its promotion.)
            self.hold_for_config(meta.last_slot, before);
        }
        self.outputs.push_back(Output::ConfigChanged(meta.config.clone()));
        self.replica.handle(self.now, Event::SnapshotInstalled(meta));
        // Duty 5 runs once the core's queued actions ran (`Node::after`): an `Apply` of a slot
        // past the snapshot may still answer a write the core no longer lists as pending.
        self.settle_after_install = true;
        self.release_reads();
        let done = self.watches.installed(self.store.last_applied());
        self.watches_done(done);
    }
}
