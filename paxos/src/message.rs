//! What replicas say to each other, and what the log holds.
//!
//! These are plain Rust enums; the `proto` crate owns the wire format and converts. Every field
//! that comes from a peer is untrusted: the core validates before it acts and drops (and counts)
//! what does not make sense.

use crate::config::{ConfigChange, Configuration};
use crate::ids::{Ballot, Incarnation, Member, NodeId, RequestId, Slot};
use serde::{Deserialize, Serialize};

/// One client command, opaque to the core.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The id under which the driver waits for the outcome.
    pub id: RequestId,
    /// The application's bytes (for Synod, an encoded `kvstore::Request`).
    pub payload: Vec<u8>,
}

/// Who proposed a batch and when, by that leader's own *monotonic* clock: the application's log
/// clock (Synod's session expiry, `kvstore::session`) advances by the time one leader measured
/// between two of its batches that follow each other in the log. A batch carries its leader's
/// tick whoever took the requests in it (a follower forwards commands; only the leader stamps),
/// so the clock follows real time however clients spread their requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tick {
    /// The leader that formed the batch.
    pub leader: NodeId,
    /// The leader's term: its ballot's round and its process (see [`Tick::epoch_of`]), so a
    /// restarted process (whose monotonic clock starts again) is another clock, and so is the
    /// same process leading again under a new ballot. The log clock credits the time between
    /// two batches only when they follow each other in the log *and* carry the same term; a
    /// term's own batches lie in the log in the order it proposed them, while a batch that a
    /// later leader adopted keeps the term it was first proposed in. (Before this, the field
    /// held the process alone: a leader elected again, whose new phase 1 adopted its own
    /// old-term batch after another leader's slots, counted its time out of office.)
    pub epoch: u64,
    /// Milliseconds on that process's monotonic clock (the `now` it proposed at).
    pub mono_ms: u64,
}

impl Tick {
    /// The term a leader of `ballot_round` in the process of `restart_epoch` stamps its batches
    /// with: the round in the high 32 bits, the process in the low 32 (both stay far below 2^32:
    /// a round per election, an epoch per start). Only equality matters to the log clock; the
    /// round comes first so a later rule can also order terms.
    pub fn epoch_of(ballot_round: u64, restart_epoch: u64) -> u64 {
        // Saturating, not wrapping: a round past 2^32 (only a malformed ballot could get there)
        // must not sort below the rounds before it.
        (ballot_round.min(0xFFFF_FFFF) << 32) | (restart_epoch & 0xFFFF_FFFF)
    }
}

/// The value of one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a hole found by a new leader's phase 1; applies nothing.
    Noop,
    /// A batch of client commands, applied in order as one slot, and its leader's [`Tick`].
    Batch(Vec<Command>, Tick),
    /// A membership change; it governs every slot after the one it is chosen in (stop-sign rule).
    Reconfigure {
        /// The id under which the requester waits for the outcome.
        id: RequestId,
        /// The change.
        change: ConfigChange,
    },
}

impl Value {
    /// Payload bytes (the commands' bytes; a little for a membership change): what a `Promise`
    /// page is bounded by.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Value::Noop => 0,
            Value::Batch(cmds, _) => cmds.iter().map(|c| c.payload.len()).sum(),
            Value::Reconfigure { .. } => 64,
        }
    }

    /// The request ids this value carries.
    pub fn request_ids(&self) -> Vec<RequestId> {
        match self {
            Value::Noop => Vec::new(),
            Value::Batch(cmds, _) => cmds.iter().map(|c| c.id).collect(),
            Value::Reconfigure { id, .. } => vec![*id],
        }
    }

    /// Approximate size in bytes, for batching limits.
    pub fn size_hint(&self) -> usize {
        match self {
            Value::Noop => 1,
            Value::Batch(cmds, _) => cmds.iter().map(|c| c.payload.len() + 24).sum(),
            Value::Reconfigure { .. } => 48,
        }
    }
}

/// A value an acceptor has accepted, reported in a promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedEntry {
    /// The slot.
    pub slot: Slot,
    /// The ballot it was accepted in.
    pub ballot: Ballot,
    /// The value.
    pub value: Value,
}

/// What a snapshot is, as far as the core knows: never its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last slot whose effect the snapshot includes.
    pub last_slot: Slot,
    /// The configuration that governs the slot after `last_slot`.
    pub config: Configuration,
}

/// A message between replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: promise `ballot` for every slot from `first_slot` on.
    Prepare { ballot: Ballot, first_slot: Slot },
    /// Phase 1b: the promise, with the values accepted at or after `first_slot`: all of them, or
    /// with `more`, a page of them (at most `Options::promise_page_bytes`, at least one), the
    /// rest above the last one reported: the candidate asks again from the slot after it.
    Promise { ballot: Ballot, first_slot: Slot, accepted: Vec<AcceptedEntry>, learned: Slot, more: bool },
    /// Phase 2a: accept `value` in `slot`; `commit` piggybacks the leader's commit point.
    Accept { ballot: Ballot, slot: Slot, value: Value, commit: Slot },
    /// Phase 2b: accepted; `learned` piggybacks how far the sender has learned (for checkpoints).
    Accepted { ballot: Ballot, slot: Slot, learned: Slot },
    /// A refusal: the sender has promised `promised`, which is above the ballot it was asked for
    /// (or equal to it and promised to another incarnation). `refused`: the ballot of the message
    /// refused; `None` from a peer of the previous release, which did not say. The receiver
    /// ignores a refusal of a ballot other than the one it campaigns or leads with now: a
    /// straggler of its own old ballot is refused with its new one (`replica.rs` `on_nack`).
    Nack { promised: Ballot, refused: Option<Ballot> },
    /// The leader's heartbeat: commit point, checkpoint, and the read round it confirms.
    /// `fence`: once the log is chosen up to it, no command handed to a leader of a lower ballot
    /// and not in the log by then can ever be chosen (`forward.rs`, "settling in-flight
    /// forwards").
    Heartbeat { ballot: Ballot, commit: Slot, checkpoint: Slot, read_round: u64, fence: Slot },
    /// A follower's answer to a heartbeat, confirming the ballot for `read_round`.
    HeartbeatAck { ballot: Ballot, read_round: u64, learned: Slot },
    /// Ask for the chosen values of slots `from..=to`.
    Fetch { from: Slot, to: Slot },
    /// Chosen values, in answer to a fetch (or pushed by a leader to a lagging replica).
    Chosen { entries: Vec<(Slot, Value)>, commit: Slot },
    /// The asked-for slots are disposed: the asker must install a snapshot at or after
    /// `snapshot_slot` (the sender's driver streams it).
    Compacted { snapshot_slot: Slot },
    /// A follower asks the leader for a read index on behalf of a batch of linearizable reads
    /// that arrived before it sent this (`id` is the follower's own request number).
    ReadIndex { id: u64 },
    /// The leader's answer to `ReadIndex { id }`: `Some(index)` once it has confirmed with a
    /// quorum round started after the request arrived that it still leads (the follower serves
    /// the reads after applying `index`); `None` if it cannot (not leading, stepped down).
    /// `incarnation` is the requester's (echoed): request numbers restart with each incarnation.
    ReadIndexReply { id: u64, incarnation: Incarnation, index: Option<Slot> },
    /// A follower hands client commands it minted to the leader, which proposes them as its own
    /// (the follower learns the outcome by applying the log).
    /// `to` is the ballot of the leader it is meant for: the commands may be proposed under that
    /// ballot only (a restarted process must not take what was sent to its predecessor, which may
    /// have proposed it already; a leader that has since stepped down or campaigned again
    /// refuses it), which is what lets a later leader's fence settle them.
    Forward { to: Ballot, cmds: Vec<Command> },
    /// These forwarded commands are not chosen and never will be (refused, or lost by the
    /// leader); sent to the replica that minted them.
    ForwardLost { ids: Vec<RequestId> },
}

/// A message with its addressing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node in its current incarnation.
    pub from: Member,
    /// The receiving node.
    pub to: NodeId,
    /// The message.
    pub msg: Message,
}
