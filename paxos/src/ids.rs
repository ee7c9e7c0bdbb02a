//! Newtypes for every identifier the core speaks of.
//!
//! No bare integers cross the core's public surface: a `Slot` cannot be passed where a `Time` is
//! expected. Derived `Ord` on a struct compares fields in declaration order; where that order
//! carries meaning (as for [`Ballot`]) the type's docs say so.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A replica's stable name in the cluster (chosen by the operator, e.g. `--id 3`).
///
/// A `NodeId` survives restarts; what changes on a restart is the [`Incarnation`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

/// The lifetime of one process of a replica. A process that restarted with its memory lost takes a
/// fresh incarnation, so that nobody counts its votes as those of the process whose promises it
/// forgot (architecture rule 8). The driver draws it (for example from the wall clock at start-up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub u64);

/// One voting identity: a node in one incarnation. Configurations list acceptors by `Member`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's stable id.
    pub node: NodeId,
    /// The incarnation whose votes count.
    pub incarnation: Incarnation,
}

/// A position in the replicated log. Slot 0 is never used for a command: it stands for "nothing
/// yet" (an empty log has applied and committed up to slot 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(pub u64);

impl Slot {
    /// The slot after this one (saturating: peer input can name any slot, and the core never
    /// panics on it).
    #[must_use]
    pub fn next(self) -> Slot {
        Slot(self.0.saturating_add(1))
    }
    /// The slot before this one (saturating at 0).
    #[must_use]
    pub fn prev(self) -> Slot {
        Slot(self.0.saturating_sub(1))
    }
}

/// A Paxos ballot. The derived `Ord` compares `round`, then `node`, then `incarnation`:
///
/// * two leaders (distinct nodes) never share a ballot, and any leader can pick one above every
///   ballot it has seen by taking a higher round (Paxos Made Simple, 2.2);
/// * distinct incarnations of one node never share a ballot either, so a process that restarted
///   with its memory lost cannot re-use a ballot its previous incarnation proposed under with a
///   different value (architecture rule 8). With the same round and node, a later incarnation's
///   ballot is the higher one, because the driver draws incarnations increasing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The round number; compared first.
    pub round: u64,
    /// The node that owns the ballot; breaks ties between equal rounds.
    pub node: NodeId,
    /// The incarnation of `node` that owns the ballot; breaks ties between equal rounds of one
    /// node (a restarted process never proposes under its predecessor's ballot).
    pub incarnation: Incarnation,
}

impl Ballot {
    /// The ballot below every real one.
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0), incarnation: Incarnation(0) };

    /// The ballot of `round` owned by `owner` (a node in one incarnation).
    #[must_use]
    pub fn new(round: u64, owner: Member) -> Ballot {
        Ballot { round, node: owner.node, incarnation: owner.incarnation }
    }

    /// The voting identity that owns this ballot.
    #[must_use]
    pub fn owner(self) -> Member {
        Member { node: self.node, incarnation: self.incarnation }
    }
}

/// Virtual or real time in milliseconds, as given by the caller. The core never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub u64);

impl Time {
    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// Names one client command for its whole life, across forwarding and leader changes. The
/// driver makes it unique (node id of the first replica that took it, plus a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// The node that minted the id.
    pub node: NodeId,
    /// A counter local to that node (and its incarnation: drivers fold the incarnation in).
    pub seq: u64,
}

/// Names one linearizable read waiting for a leadership confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadId(pub u64);

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}", self.0) }
        }
    )*};
}
display_inner!(NodeId, Incarnation, Slot, Time, ReadId);

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.round, self.node.0, self.incarnation.0)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node.0, self.incarnation.0)
    }
}
