//! Synod's node layer: every decision around the core replica and the state machine, pure.
//!
//! The consensus core (`paxos`) decides what is chosen; the state machine (`kvstore`) what a
//! command does. Between them and the world sits a layer of decisions that used to live in the
//! driver's tokio loop: matching client requests to outcomes, when a read may be answered, when
//! to snapshot, when to suspect a silent leader, what a removed replica does. [`Node`] holds them,
//! in the style of the core (quinn-proto's sans-IO shape): [`Node::handle`]`(now, Input)` and
//! [`Node::handle_timeout`]`(now)` in, [`Node::poll_output`] out, [`Node::poll_timeout`] for the
//! next deadline. No clock, no I/O, no OS randomness, ordered maps only (`node/clippy.toml`), so
//! the deterministic simulator can run the node exactly as the driver does.
//!
//! # The shell's duties
//!
//! A shell (the tokio loop in `driver/src/node.rs`, or a simulator) owns one [`Node`] and:
//!
//! 1. feeds it peer messages, election hints, client requests (each with a [`Token`] of its
//!    choosing), snapshot completions and removal marks as [`Input`]s, with the current time;
//! 2. calls [`Node::handle_timeout`] once the time from [`Node::poll_timeout`] has come;
//! 3. after every call, drains [`Node::poll_output`] and runs the outputs in order: sends are
//!    best effort (a message to itself comes back as [`Input::Peer`] after the current input),
//!    answers go to the client waiting on the token, snapshots are encoded and streamed off the
//!    loop, and election and metrics outputs go to their tasks;
//! 4. sends [`Input::Cancel`] when a client stops waiting, so the node forgets it;
//! 5. keeps the bytes of the snapshots it encoded: [`SnapshotSource::Encoded`] names the latest.
//!
//! Each client request gets exactly one answer (or none after `Cancel`); a write proposed when
//! the node stops gets none, which the client must read as "outcome unknown".
//!
//! The membership decisions the driver's etcd tasks act on are pure functions in [`membership`].

pub mod membership;
mod node;
mod serving;
mod snapshot;
mod types;
pub mod watch;

#[cfg(feature = "sim")]
pub mod sim;

pub use node::Node;
pub use types::*;


#[cfg(test)]
mod node_test;
#[cfg(test)]
mod upgrade_test;
#[cfg(test)]
mod watch_test;
#[cfg(test)]
mod review30_test;
#[cfg(test)]
mod lease_test;
#[cfg(test)]
mod review_clock_test;
#[cfg(test)]
mod review_clock2_test;
