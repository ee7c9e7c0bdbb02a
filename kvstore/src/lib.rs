//! The application that Synod replicates: a deterministic key-value store.
//!
//! The consensus core (`paxos`) decides *which* bytes occupy each log slot; this crate decides what
//! those bytes *mean*. It is pure: no I/O, no clock, no randomness, and only ordered maps, so every
//! replica that applies the same slots in the same order reaches the same state, byte for byte, and
//! returns the same result for every command. [`Store::state_hash`] lets replicas check that.
//!
//! # How the pieces fit
//!
//! 1. A client write becomes a [`Request`]: an optional client session ([`SessionRef`]), the
//!    proposer's [`Stamp`] (its id and monotonic time, from which the log clock is derived) and a
//!    [`WriteOp`]. The driver calls
//!    [`Limits::check`] before proposing (to answer 413 early) and proposes [`Request::encode`].
//! 2. Once a slot is chosen, every replica calls [`Store::apply`] with the slot index and the bytes.
//!    Slots that carry no kv command (no-ops, configuration changes) go through [`Store::skip`], so
//!    [`Store::last_applied`] always equals the last slot handed over.
//! 3. [`Store::apply`] returns an [`Output`] (`Result<WriteResult, WriteError>`). Both successes and
//!    deterministic failures (a failed guard, a CAS mismatch) are *results*: they are recorded in
//!    the session table, so a retry after a leader change gets the same answer and applies nothing.
//! 4. Reads ([`Store::get`], [`Store::get_many`], [`Store::range`]) run on the applied state and say
//!    which applied index they reflect; consistency (linearizable or sequential) is the driver's job.
//! 5. [`Store::snapshot`] streams the state as postcard-framed chunks; [`SnapshotDecoder`] rebuilds
//!    a store from chunks as they arrive, verifying order, counts and the state hash.
//!
//! # Driver duties
//!
//! 1. Apply every slot in order, exactly once, through `apply` or `skip`; an index that does not
//!    advance is refused with [`WriteError::OutOfOrder`] and changes nothing.
//! 2. Stamp each proposed request with the proposer's node id, incarnation (unique per process
//!    start) and *monotonic* clock in milliseconds. The store turns these into a log clock that no
//!    wall clock can push (see [`session`]); it never reads a clock itself.
//! 3. Configure every replica with the same [`StoreConfig`]; the TTL, session cap and clock step
//!    change results.

/// The highest cluster version this build runs (see [`Store::cluster_version`]). Version 1 is
/// every format of the previous release (request format 1 with its operations, snapshot format
/// 5); version 2 adds request format 2 ([`WriteOp::DeleteRange`]) and snapshot format 6
/// (release 0.2); version 3 adds leases ([`lease`]): request format 3 and snapshot format 7,
/// and the log clock's term order ([`TERM_ORDER_VERSION`]).
pub const MAX_CLUSTER_VERSION: u32 = 3;

/// From this cluster version on, the log clock ignores a stamp of an older term than the last one
/// it counted ([`session::SessionTable::advance`]); every replica of a cluster at this version
/// stamps terms (`paxos::Tick::epoch`).
pub const TERM_ORDER_VERSION: u32 = 3;

pub mod bytes;
pub mod command;
pub mod hash;
pub mod lease;
pub mod limits;
pub mod output;
pub mod read;
pub mod session;
pub mod snapshot;
pub mod store;

mod exec;

pub use bytes::show as show_bytes;
pub use command::{MAX_REQUEST_FORMAT, REQUEST_FORMAT};
pub use command::{BatchOp, CasExpect, ClientId, CodecError, Guard, Request, SessionRef, Stamp, WriteOp};
pub use hash::StateHash;
pub use lease::{LeaseConfig, LeaseInfo};
pub use limits::{LimitKind, Limits};
pub use output::{Output, Versioned, WriteError, WriteOutcome, WriteResult};
pub use read::{GetMany, RangeEntry, RangePage, RangeQuery};
pub use session::{SessionEntry, SessionTable};
pub use snapshot::{SnapshotDecoder, SnapshotEncoder, SnapshotError, SnapshotMeta, FORMAT_VERSION, OLDEST_SNAPSHOT_FORMAT};
pub use store::{Store, StoreConfig, INLINE_KEY_BYTES};

#[cfg(test)]
mod store_tests;
