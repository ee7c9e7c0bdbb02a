//! Sans-IO MultiPaxos: events in, actions out.
//!
//! This crate is the consensus core of Synod. It does no I/O, reads no clock and draws no OS
//! randomness: every input takes the current time as a parameter, every effect comes out as an
//! [`Action`], and the only random number generator is seeded from [`Options::seed`]. The same
//! inputs therefore give the same outputs, which is what lets the simulator replay a seed.
//!
//! # The driver's duties
//!
//! A driver (the tokio node loop in `driver/`, or the simulator) owns one [`Replica`] and:
//!
//! 1. feeds it every peer message with [`Replica::handle`]`(now, Event::Receive(..))`, every
//!    leadership hint from the election with `Event::LeaderHint`, and snapshot completions;
//! 2. calls [`Replica::handle_timeout`] once the time given by [`Replica::poll_timeout`] has come;
//! 3. after every call, drains [`Replica::poll_action`] until it returns `None` and runs the
//!    actions **in order**: a [`Action::Persist`] is a barrier, sends are best effort,
//!    [`Action::Apply`] goes to the state machine in slot order;
//! 4. hands client commands to [`Replica::propose`] on the leader (a `NotLeader` error names
//!    where to forward), and linearizable reads to [`Replica::read`];
//! 5. matches outcomes to clients by [`RequestId`], never by slot: a command is chosen when an
//!    `Apply` carries its id, and lost when `ProposalLost` names it; after
//!    `Event::SnapshotInstalled`, a command [`Replica::tracks`] no longer knows was settled inside
//!    the snapshot (its session table says whether it was applied);
//! 6. takes snapshots when asked (`Action::TakeSnapshot`, then `Event::SnapshotTaken`) and streams
//!    its latest one to a peer on `Action::SendSnapshot` (the initial snapshot is the empty state
//!    at slot 0 with the bootstrap configuration).
//!
//! # The protocol, in phases
//!
//! * **Phase 1** (`leader.rs`): a replica told to lead picks a ballot above all it has seen and
//!   sends `Prepare` for every slot from its first unchosen slot on; acceptors report their
//!   accepted values in pages (`Options::promise_page_bytes`). From a quorum of complete
//!   promises it adopts, per slot, the value of the highest ballot, and fills holes with no-ops
//!   (re-proposed a window at a time: `Options::recovery_window`).
//! * **Phase 2**: it proposes slots pipelined up to a window, each slot carrying a batch of
//!   commands. A slot is chosen when a quorum of the configuration governing it accepted it.
//! * **Learning** (`learner.rs`): the commit point travels on accepts and heartbeats; every
//!   replica applies chosen slots in order and fetches what it misses.
//! * **Reads**: a leader confirms its ballot with a quorum round started after the read arrived,
//!   then answers with the commit point of that moment (read-index).
//!
//! * **Compaction** (`compaction.rs`): snapshots every `snapshot_every` slots, checkpoints that
//!   dispose of slots every member learned, and the lag rule for members too far behind.
//! * **Reconfiguration** (`reconfig.rs`): the stop-sign rule; a change chosen at `s` governs `> s`.
//!
//! Quorums come from the [`Configuration`] attached to slots, never from a cluster size. The
//! simulator (feature `sim`, module `sim`) runs many replicas over a faulty virtual network and checks
//! the safety invariants at every step; `docs/paxos.md` describes it.

mod acceptor;
mod action;
mod compaction;
mod config;
mod error;
mod forward;
mod event;
mod ids;
mod message;
mod options;
mod leader;
mod learner;
mod read_index;
mod recovery;
mod reconfig;
mod timer;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod replica_test;
#[cfg(test)]
mod quickcheck_test;
#[cfg(test)]
mod regression_test;
#[cfg(test)]
mod read_index_test;
#[cfg(test)]
mod review_test;
#[cfg(test)]
mod forward_test;
#[cfg(test)]
mod review2_test;
#[cfg(test)]
mod catchup_test;
#[cfg(test)]
mod recovery_test;
#[cfg(test)]
mod review25_test;
#[cfg(test)]
mod restart_test;
#[cfg(test)]
mod review24_test;
#[cfg(test)]
mod review31_test;

pub use action::{Action, Persist};
pub use compaction::{crosses_grid, snapshot_phase};
pub use config::{ConfigChange, ConfigError, Configuration};
pub use error::ProposeError;
pub use event::Event;
pub use ids::{Ballot, Incarnation, Member, NodeId, ReadId, RequestId, Slot, Time};
pub use message::{AcceptedEntry, Command, Envelope, Message, SnapshotMeta, Tick, Value};
pub use options::Options;
pub use recovery::Recovered;
#[cfg(feature = "sim")]
pub use options::Bugs;
mod replica;
mod status;

pub use replica::Replica;
pub use status::{Counters, RoleKind, Status};
