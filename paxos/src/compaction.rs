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

use crate::action::Action;
use crate::ids::{NodeId, Slot, Time};
use crate::message::SnapshotMeta;
use crate::replica::{Replica, Role};

impl Replica {
    /// After applying `slot`: ask for a snapshot every `snapshot_every` slots.
    pub(crate) fn maybe_snapshot(&mut self, slot: Slot) {
        let every = self.opts.snapshot_every;
        if every > 0 && slot.0 >= self.snapshot_asked.0 + every {
            self.snapshot_asked = slot;
            self.actions.push_back(Action::TakeSnapshot { slot });
        }
    }

    /// The driver took a snapshot: drop the chosen log at or below it.
    pub(crate) fn on_snapshot_taken(&mut self, _now: Time, meta: SnapshotMeta) {
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
    pub(crate) fn compact_log(&mut self) {
        let upto = self.snapshot.min(self.checkpoint);
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
        self.snapshot = last;
        self.snapshot_asked = last;
        self.counters.snapshots_installed += 1;
        self.advance(now);
        self.maybe_fetch(now);
    }

    /// A peer says what we asked for is disposed of; its driver streams us a snapshot.
    pub(crate) fn on_compacted(&mut self, now: Time, snapshot_slot: crate::ids::Slot) {
        let _ = snapshot_slot;
        // A leader or candidate told so is behind a checkpoint: it cannot lead from here.
        if !matches!(self.role, Role::Follower) {
            self.step_down(now, false);
        }
    }

    /// The leader's checkpoint arrived: dispose of slots at or below it (that we learned).
    pub(crate) fn on_checkpoint(&mut self, _now: Time, checkpoint: Slot) {
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
