//! What the core asks its driver to do.
//!
//! **Ordering rule.** The driver runs actions in the order `poll_action` returns them. A
//! [`Action::Persist`] is a barrier: nothing after it runs until the state it names is durable
//! (in the default in-memory mode it completes at once). Sends are best effort: the core
//! tolerates loss, duplication and reordering, so the driver may drop a send to a slow peer.

use crate::config::Configuration;
use crate::ids::{Ballot, NodeId, ReadId, RequestId, Slot};
use crate::message::{AcceptedEntry, Envelope, Value};

/// State that must be durable before the actions after it run. In durable mode the driver
/// writes each as one write-ahead-log record; [`crate::Replica::recover`] rebuilds the acceptor
/// from them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Persist {
    /// The acceptor promised this ballot.
    Promised(crate::ids::Ballot),
    /// The acceptor accepted this value.
    Accepted(AcceptedEntry),
}

/// An effect for the driver to carry out.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make this durable before running any later action (a barrier).
    Persist(Persist),
    /// Send a message (best effort).
    Send(Envelope),
    /// Apply the chosen value of `slot` to the state machine. Slots come in order, without gaps,
    /// each exactly once (after a snapshot install, from the slot after the snapshot).
    Apply { slot: Slot, value: Value },
    /// The command was not chosen and never will be: its slot was chosen with another value.
    /// (A command whose outcome is still open is neither applied nor lost yet.)
    ProposalLost { id: RequestId },
    /// These linearizable reads may be served once the state machine has applied `index`.
    ReadsReady { reads: Vec<ReadId>, index: Slot },
    /// These reads cannot be confirmed here; `leader` is the best guess of who can.
    ReadsFailed { reads: Vec<ReadId>, leader: Option<NodeId> },
    /// Snapshot the state machine as of `slot` (the driver has applied exactly up to it), then
    /// report [`crate::Event::SnapshotTaken`].
    TakeSnapshot { slot: Slot },
    /// Stream a snapshot to `to`: the latest local one if it is at the commit point this action
    /// was issued at, else one of the state machine as it is now (never older: the core keeps
    /// the log above that commit point for `to`). Its driver installs it and reports
    /// [`crate::Event::SnapshotInstalled`]; report the end here with
    /// [`crate::Event::SnapshotSent`] (one transfer per peer at a time: while one runs, another
    /// `SendSnapshot` for the same peer may be dropped, its end reported once).
    SendSnapshot { to: NodeId },
    /// Who leads changed (as far as this replica knows), for forwarding and metrics.
    LeaderChanged { leader: Option<NodeId>, ballot: Ballot },
    /// This replica stopped leading (a higher ballot, or no quorum): the driver should resign
    /// from the election so another replica can win it.
    SteppedDown,
    /// A configuration change was applied at `slot`; it governs the slots after it.
    ConfigChanged { slot: Slot, config: Configuration },
}
