//! What a replica reports about itself, for `/v1/status` and `/metrics`.

use crate::config::{ConfigError, Configuration};
use crate::ids::{Ballot, Member, NodeId, Slot};
use std::collections::BTreeMap;

/// A replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running phase 1.
    Candidate,
    /// Running phase 2.
    Leader,
    /// Not a voting member of the current configuration (joining, recovering, or removed).
    Learner,
}

/// A snapshot of a replica's state.
#[derive(Clone, Debug)]
pub struct Status {
    /// This replica.
    pub me: Member,
    /// Its role.
    pub role: RoleKind,
    /// The leader as far as it knows.
    pub leader: Option<NodeId>,
    /// The highest ballot it has promised or led with.
    pub ballot: Ballot,
    /// Every slot up to here is known chosen.
    pub commit: Slot,
    /// The highest commit point this replica has heard of (from a leader's `Accept` or
    /// `Heartbeat`, or a peer's `Chosen`); `known_commit - commit` is how far it is behind.
    pub known_commit: Slot,
    /// Every slot up to here has been handed to the state machine (`Action::Apply` emitted). The
    /// core emits `Apply` as soon as a slot is learned in order, so this always equals `commit`;
    /// what the state machine has actually executed is the driver's to track.
    pub applied: Slot,
    /// Slots below or at this are disposed of.
    pub checkpoint: Slot,
    /// The last snapshot's slot.
    pub snapshot: Slot,
    /// The configuration in force after `applied`.
    pub config: Configuration,
    /// Per member, how far it has learned (known on the leader only).
    pub learned: BTreeMap<NodeId, Slot>,
    /// How far behind `commit` a learner may have learned and still be promoted (the core's
    /// catch-up rule; see [`Status::promotable`]).
    pub promote_slack: u64,
}

impl Status {
    /// The catch-up rule of `propose_config(Promote(member))` applied to this status (same as
    /// `Replica::promotable` at the time the status was taken); meaningful on a leader only.
    pub fn promotable(&self, member: Member) -> Result<(), ConfigError> {
        let learned = self.learned.get(&member.node).copied().unwrap_or(Slot(0));
        crate::reconfig::caught_up(member, learned, self.commit, self.promote_slack)
    }
}

/// Counters of things that happened, for metrics and for tests that must show a fault happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Peer messages dropped as malformed, stale or misaddressed.
    pub dropped_messages: u64,
    /// Accepted values this replica got back from its disk at a durable restart.
    pub recovered_accepted: u64,
    /// Commands chosen (applied) through this replica's log.
    pub commands_applied: u64,
    /// Proposals reported lost.
    pub proposals_lost: u64,
    /// Times this replica started phase 1.
    pub elections_started: u64,
    /// Times it became leader.
    pub became_leader: u64,
    /// Times it stepped down.
    pub stepped_down: u64,
    /// Snapshots taken locally.
    pub snapshots_taken: u64,
    /// Snapshots installed from a peer.
    pub snapshots_installed: u64,
    /// Transfers started (`Action::SendSnapshot` issued).
    pub snapshots_sent: u64,
    /// Configuration changes applied.
    pub config_changes: u64,
    /// Slots disposed of by checkpoints.
    pub slots_disposed: u64,
    /// Client commands this replica forwarded to a leader (`Replica::forward`).
    pub commands_forwarded: u64,
    /// Forwarded commands a later leader's fence showed lost (`forward.rs`): their clients get an
    /// answer after a failover instead of a timeout.
    pub forwards_fenced: u64,
}
