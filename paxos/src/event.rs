//! What the driver tells the core.

use crate::ids::NodeId;
use crate::message::{Envelope, SnapshotMeta};

/// An input to [`crate::Replica::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message from a peer.
    Receive(Envelope),
    /// The election (etcd in the driver, an oracle in the simulator) says who should lead.
    /// `Some(me)` means "you may lead": the replica picks a ballot above every one it has seen
    /// and runs phase 1. Safety never depends on this hint being right or unique.
    LeaderHint { leader: Option<NodeId> },
    /// The driver finished a snapshot asked for by `Action::TakeSnapshot`.
    SnapshotTaken(SnapshotMeta),
    /// The driver installed a snapshot received from a peer; the state machine now reflects
    /// exactly `meta.last_slot`.
    SnapshotInstalled(SnapshotMeta),
    /// A transfer started on `Action::SendSnapshot { to }` ended: `delivered` when the peer
    /// acknowledged a complete snapshot, `false` when it broke off or was refused (the next
    /// `Fetch` from `to` below the compaction point starts another).
    SnapshotSent { to: NodeId, delivered: bool },
}
