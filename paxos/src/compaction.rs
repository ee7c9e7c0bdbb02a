//! Snapshots, compaction and checkpoints: how the log stays bounded.
//!
//! * **Snapshots.** Every `snapshot_every` applied slots the core asks the driver for a snapshot
//!   (`Action::TakeSnapshot`). When it is taken (`Event::SnapshotTaken`) the chosen log at or
//!   below it is dropped; a peer asking for such slots is answered `Compacted` and the driver is
//!   told to stream the snapshot (`Action::SendSnapshot`). A replica that installed a snapshot
//!   (`Event::SnapshotInstalled`) continues from the slot after it.
//! * **Checkpoints** (architecture rule 6). Every replica reports how far it learned (on
//!   `Accepted`, `HeartbeatAck`, `Promise`). The leader spreads the minimum over all current
//!   members as `Heartbeat.checkpoint`. Slots at or below the checkpoint are disposed of by every
//!   acceptor and never re-opened: `Prepare` or `Accept` for them is answered `Compacted`. This
//!   is safe because every member that could ever lead has learned them (a future leader's phase
//!   1 starts above its own commit point). **Lag rule:** a member more than
//!   `max_retained_slots` behind the leader's commit is not waited for; it will need a snapshot,
//!   and until it installs one it cannot lead (its `Prepare` is answered `Compacted`).
//! * **Transfers** (one per restart). A peer asking below the compaction point gets
//!   `Action::SendSnapshot` once per transfer: another only after the driver reported the end
//!   (`Event::SnapshotSent`) and `snapshot_resend_ms` passed (after a delivered one, the peer's
//!   fetches sent before its install are still on the way; after a failed one, a peer busy with
//!   another member's stream would otherwise cost a whole-store encoding per fetch), or after
//!   `snapshot_wait_ms` without a report. A restarted transfer keeps the lower of its old hold
//!   and the new commit point. While a peer is being sent a snapshot, and while it then fetches the log
//!   after it, the log above the slot it needs is **held**: not compacted, even when a snapshot
//!   taken meanwhile would allow it, so the installed snapshot is never already below this
//!   replica's compaction point (which would start a second whole-store transfer). A hold ends
//!   when the peer has not fetched for `snapshot_resend_ms`, or when it is more than
//!   [`HOLD_LAG_FACTOR`] x `max_retained_slots` behind the commit point (such a peer would be
//!   sent a snapshot anyway). Holds only keep more of the chosen log; they never touch the
//!   acceptor's checkpoint.
//! * **Staggered snapshots.** Every replica applies the same slots, so with one cadence all
//!   would snapshot at the same slot and encode the whole store at the same moment. Each asks
//!   on a grid shifted by [`snapshot_phase`] of its node id.

use crate::action::Action;
use crate::ids::{NodeId, Slot, Time};
use crate::message::{Message, SnapshotMeta};
use crate::replica::{Replica, Role};
use crate::timer::Timer;

/// Where on a cadence of `period` slots node `node` takes its snapshots: an offset in
/// `0..period`, the fractional part of `node * golden ratio` (a Weyl sequence: ids 1, 2, 3 land
/// at 0.62, 0.24 and 0.85 of the period, and any few consecutive ids stay well apart).
/// Deterministic: the same node always gets the same phase.
pub fn snapshot_phase(node: NodeId, period: u64) -> u64 {
    let frac = node.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32; // in 0..2^32
    ((u128::from(period) * u128::from(frac)) >> 32) as u64
}

/// Whether a grid of `period` slots, shifted by `phase`, has a line in `(last, slot]`.
pub fn crosses_grid(last: Slot, slot: Slot, period: u64, phase: u64) -> bool {
    period > 0 && (slot.0 + phase) / period > (last.0 + phase) / period
}

/// A hold is kept while its peer is at most this many times `max_retained_slots` behind the
/// commit point. The log committed while a whole store streams must outlive the transfer: at
/// 1 M keys a transfer took ~10 s here while writes committed ~15,000 slots/s, so with the
/// bound at `max_retained_slots` (100,000) the hold was dropped mid-transfer, the snapshot
/// arrived already below the sender's compaction point, and the restarted replica received
/// twelve whole-store transfers in a row, serving 116 s after its restart (`scripts/bench
/// --catchup`). The factor bounds the extra log a catching-up peer can pin.
pub const HOLD_LAG_FACTOR: u64 = 4;

/// A snapshot transfer to one peer, and the log held for it (see the module comment).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    /// No new `SendSnapshot` for this peer before this time.
    pub(crate) resend_at: Time,
    /// The log above this slot is not compacted while the peer keeps fetching.
    pub(crate) hold: Option<Slot>,
    /// When the peer last fetched from us (or the transfer was started or ended).
    pub(crate) heard: Time,
}

impl Replica {
    /// After applying `slot`: ask for a snapshot every `snapshot_every` slots, on this node's
    /// phase of that grid.
    pub(crate) fn maybe_snapshot(&mut self, slot: Slot) {
        let every = self.opts.snapshot_every;
        if crosses_grid(self.snapshot_asked, slot, every, snapshot_phase(self.me.node, every)) {
            self.snapshot_asked = slot;
            self.actions.push_back(Action::TakeSnapshot { slot });
        }
    }

    /// A peer asked below the compaction point: start a transfer unless one is under way (or
    /// was just delivered), and hold the log above the commit point for it.
    pub(crate) fn start_transfer(&mut self, now: Time, to: NodeId) {
        if self.transfers.get(&to).is_some_and(|t| now < t.resend_at) {
            return;
        }
        // The driver sends a snapshot at or above the commit point as of now (`Action`). A
        // restarted transfer never raises a hold the peer may still need: it may yet install an
        // older snapshot from another member and then fetch the log after it from us (review).
        // An old hold already past the hold's bound is ignored by `held()`: keeping it would
        // leave the restarted transfer with no effective hold at all (second review).
        let commit = self.log.commit;
        let bound = self.opts.max_retained_slots.saturating_mul(HOLD_LAG_FACTOR);
        let old = self.transfers.get(&to).and_then(|t| t.hold).filter(|h| commit.0.saturating_sub(h.0) <= bound);
        let hold = Some(old.map_or(commit, |h| h.min(commit)));
        self.transfers.insert(to, Transfer { resend_at: now.plus(self.opts.snapshot_wait_ms), hold, heard: now });
        self.counters.snapshots_sent += 1;
        self.actions.push_back(Action::SendSnapshot { to });
    }

    /// A peer that was sent a snapshot fetches again: it is alive, and from a fetch above the
    /// compaction point on it needs the log above `from - 1` (the hold only rises).
    pub(crate) fn note_transfer_fetch(&mut self, now: Time, peer: NodeId, from: Slot) {
        let compacted = self.log.compacted;
        if let Some(t) = self.transfers.get_mut(&peer) {
            t.heard = now;
            if from > compacted {
                let need = Slot(from.0 - 1);
                t.hold = Some(t.hold.map_or(need, |h| h.max(need)));
            }
        }
    }

    /// The driver reports how a transfer ended (delivered or not, the next one waits the same).
    pub(crate) fn on_snapshot_sent(&mut self, now: Time, to: NodeId, _delivered: bool) {
        if let Some(t) = self.transfers.get_mut(&to) {
            t.heard = now;
            // Delivered: the peer's fetches from before its install are still arriving; they
            // must not start a second transfer. Failed: not again before `snapshot_resend_ms`
            // either, since a transfer that failed at once (the peer is receiving another
            // member's stream) would otherwise cost a whole-store encoding on every fetch (review).
            t.resend_at = now.plus(self.opts.snapshot_resend_ms);
        }
    }

    /// Release the holds of peers that stopped fetching from us (caught up, gone, or asking
    /// another member) for `snapshot_resend_ms`, and forget their transfers once no longer
    /// under way.
    pub(crate) fn prune_transfers(&mut self, now: Time) {
        let quiet = self.opts.snapshot_resend_ms;
        let mut released = false;
        for t in self.transfers.values_mut() {
            if t.hold.is_some() && now >= t.heard.plus(quiet) {
                t.hold = None;
                released = true;
            }
        }
        self.transfers.retain(|_, t| t.hold.is_some() || now < t.resend_at);
        if released {
            self.compact_log();
        }
    }

    /// The lowest slot a hold keeps the log above, among holds within the hold's lag bound.
    fn held(&self) -> Option<Slot> {
        let commit = self.log.commit;
        let bound = self.opts.max_retained_slots.saturating_mul(HOLD_LAG_FACTOR);
        self.transfers.values().filter_map(|t| t.hold).filter(|h| commit.0.saturating_sub(h.0) <= bound).min()
    }

    /// The driver took a snapshot: drop the chosen log at or below it.
    pub(crate) fn on_snapshot_taken(&mut self, now: Time, meta: SnapshotMeta) {
        self.prune_transfers(now);
        if meta.last_slot <= self.snapshot || meta.last_slot > self.log.commit {
            self.counters.dropped_messages += 1;
            return;
        }
        self.snapshot = meta.last_slot;
        self.counters.snapshots_taken += 1;
        self.compact_log();
    }

    /// Drop log entries covered by both the snapshot and the checkpoint: below the snapshot a
    /// fetch can be answered with the snapshot, but a member that has not learned a slot yet
    /// (and is within the lag rule) should catch up from the log, not from a snapshot.
    /// A transfer's hold keeps the log above the slot its peer needs (module comment).
    pub(crate) fn compact_log(&mut self) {
        let mut upto = self.snapshot.min(self.checkpoint);
        if let Some(h) = self.held() {
            upto = upto.min(h);
        }
        if upto > self.log.compacted {
            self.log.entries = self.log.entries.split_off(&upto.next());
            self.log.compacted = upto;
        }
    }

    /// The driver installed a snapshot from a peer: continue from the slot after it.
    pub(crate) fn on_snapshot_installed(&mut self, now: Time, meta: SnapshotMeta) {
        if meta.last_slot <= self.log.commit && !self.log.configs.is_empty() {
            self.counters.dropped_messages += 1;
            return;
        }
        if !matches!(self.role, Role::Follower) {
            self.step_down(now, true);
        }
        let last = meta.last_slot;
        self.log.commit = last;
        self.log.known_commit = self.log.known_commit.max(last);
        self.log.compacted = last;
        self.log.entries = self.log.entries.split_off(&last.next());
        // Configurations before the snapshot no longer matter; the snapshot's governs after it.
        self.log.configs.retain(|k, _| *k > last);
        self.log.configs.insert(last, meta.config);
        // Our proposals in the skipped slots: their outcome is inside the snapshot, unknown to
        // us; stop tracking them (the node layer settles them from the installed session table,
        // or as "outcome unknown": duty 5).
        self.pending = self.pending.split_off(&last.next());
        // Likewise a command we forwarded may have been applied inside it: no fence may call it
        // lost (`forward.rs`).
        self.forwards_uncertain_until = Some(now);
        self.snapshot = last;
        self.snapshot_asked = last;
        self.counters.snapshots_installed += 1;
        if let Some(s) = self.fetch_source.as_mut() {
            s.heard = now;
            s.waiting = None;
        }
        self.advance(now);
        self.maybe_fetch(now);
    }

    /// A peer says what we asked for is disposed of; its driver streams us a snapshot.
    pub(crate) fn on_compacted(&mut self, now: Time, from: NodeId, snapshot_slot: crate::ids::Slot) {
        // A leader or candidate told so is behind a checkpoint: it cannot lead from here.
        let leading = !matches!(self.role, Role::Follower);
        if leading {
            self.step_down(now, false);
        }
        // Our `Prepare` or `Accept` (for a slot above our commit point) was refused as at or below
        // the sender's checkpoint, yet the sender's snapshot is not above our commit point: the
        // sender knows chosen slots above it and keeps them in its log (it compacts only up to
        // its snapshot). That happens after a durable restart: the restarted replica recovers
        // the commit point of its snapshot file, below the checkpoint it had helped to set (how
        // far it learned is not on its disk). Ask the sender for them; without this, every
        // candidate steps down here for ever and none learns what it misses (seed 12367).
        // A stale answer to a fetch sent as a follower costs one fetch that finds nothing.
        #[cfg(feature = "sim")]
        let leading = leading && !self.opts.bugs.compacted_without_probe;
        if leading && snapshot_slot <= self.log.commit {
            self.fetch_source = Some(crate::learner::FetchSource { node: from, leader: self.known_leader, heard: now, waiting: None });
            let first = self.log.commit.next();
            self.send(from, Message::Fetch { from: first, to: Slot(first.0 + crate::learner::FETCH_BATCH) });
            return;
        }
        // A snapshot is coming from our fetch source: wait for it there (`learner.rs`).
        if let Some(s) = self.fetch_source.as_mut().filter(|s| s.node == from) {
            s.heard = now;
            s.waiting.get_or_insert(now);
            return;
        }
        // The sender holds a snapshot above everything we know chosen: slots up to it are chosen
        // (a snapshot covers only applied slots). Fetch from the sender, which answers with that
        // snapshot. Without this, after every replica restarted from its disk, the one whose
        // snapshot is newest answers `Compacted` to every `Prepare` at or below it, each
        // candidate steps down, and no one ever sends the snapshot: no leader, for ever (no
        // leader means no heartbeat to show anyone that it is behind). `Bugs::wedge_on_compacted`
        // puts the wedge back (`node/tests/durable.rs`).
        #[cfg(feature = "sim")]
        let snapshot_slot = if self.opts.bugs.wedge_on_compacted { Slot(0) } else { snapshot_slot };
        if snapshot_slot > self.log.commit {
            self.log.known_commit = self.log.known_commit.max(snapshot_slot);
            self.fetch_source = Some(crate::learner::FetchSource { node: from, leader: self.known_leader, heard: now, waiting: Some(now) });
            self.timers.cancel(Timer::Fetch);
            self.send_fetch(now);
        }
    }

    /// The leader's checkpoint arrived: dispose of slots at or below it (that we learned).
    pub(crate) fn on_checkpoint(&mut self, now: Time, checkpoint: Slot) {
        self.prune_transfers(now);
        let cp = checkpoint.min(self.log.commit);
        if cp > self.checkpoint {
            self.dispose_through(cp);
        }
    }

    /// Dispose of every slot at or below `cp` (every member learned it, or lags beyond the rule).
    pub(crate) fn dispose_through(&mut self, cp: Slot) {
        let before = self.acceptor.accepted.len() as u64;
        self.acceptor.dispose_through(cp);
        self.counters.slots_disposed += before - self.acceptor.accepted.len() as u64;
        self.checkpoint = cp;
        self.compact_log();
    }

    /// Leader: the checkpoint is the lowest learned point over all current members (architecture
    /// rule 6), from the members' own reports. Two exceptions make up the lag rule:
    ///
    /// * a member whose latest report is more than `max_retained_slots` behind the commit point is
    ///   not waited for (it will need a snapshot);
    /// * a member this replica has never heard a report from (in its current incarnation) holds
    ///   the checkpoint where it is, until `max_retained_slots` slots were committed, during
    ///   this leadership and while it was a member, without a word from it; then it counts as
    ///   lagging too.
    ///
    /// An unknown member never counts as "learned nothing, so lagging" at once: a new leader
    /// that did so would dispose of slots right after its election that members still need
    /// (issue 10, bug 3).
    pub(crate) fn leader_update_checkpoint(&mut self) {
        let Role::Leader(l) = &self.role else { return };
        let commit = self.log.commit;
        let retained = self.opts.max_retained_slots;
        let lags = |learned: Slot| commit.0.saturating_sub(learned.0) > retained;
        let mut cp = commit;
        for m in l.config.members().filter(|m| m.node != self.me.node) {
            // A report from before this leadership may be far older than the member's state:
            // it bounds the checkpoint, but never excuses the member as lagging.
            let fresh = l.reported.contains(m);
            match self.learned.get(m).copied() {
                Some(learned) if !fresh => {
                    if !lags(l.since.max(self.log.member_since(m))) {
                        cp = cp.min(self.checkpoint.max(learned));
                    }
                }
                Some(learned) if lags(learned) => {}
                Some(learned) => cp = cp.min(learned),
                #[cfg(feature = "sim")]
                None if self.opts.bugs.early_checkpoint => {
                    // The bug under test: an unknown member "learned nothing" and so lags.
                    if !lags(Slot(0)) {
                        cp = Slot(0);
                    }
                }
                None if lags(l.since.max(self.log.member_since(m))) => {}
                None => cp = cp.min(self.checkpoint),
            }
        }
        if cp > self.checkpoint {
            self.dispose_through(cp);
        }
    }

    /// How far `member` reported it has learned (nothing heard: slot 0).
    pub(crate) fn learned_by(&self, member: &crate::ids::Member) -> Slot {
        self.learned.get(member).copied().unwrap_or(Slot(0))
    }

    /// For status pages: how far each member of the current configuration reported it learned
    /// (leader only; members never heard from are left out).
    pub(crate) fn learned_map(&self) -> std::collections::BTreeMap<NodeId, Slot> {
        let Role::Leader(l) = &self.role else { return Default::default() };
        l.config.members().filter_map(|m| self.learned.get(m).map(|s| (m.node, *s))).collect()
    }
}
