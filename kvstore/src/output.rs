//! What applying a write returns.
//!
//! An [`Output`] is a deterministic function of the state and the command, so it can be stored in
//! the replicated session table and returned again, unchanged, to a client that retries. That is
//! why both successes and failures are serde values, and why failures carry what the client needs
//! next (the current value after a failed guard or CAS, the limit that was exceeded).

use crate::command::{ClientId, Guard};
use crate::limits::LimitKind;
use serde::{Deserialize, Serialize};

/// The result of applying one log slot.
pub type Output = Result<WriteResult, WriteError>;

/// A value together with its version (the log index of the write that produced it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The stored bytes.
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    /// The log index of the key's last write.
    pub version: u64,
}

/// A write that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The log index the write applied at; also the new version of every key it wrote.
    pub index: u64,
    /// What happened.
    pub outcome: WriteOutcome,
}

/// The per-command part of a [`WriteResult`].
///
/// Previous *versions* are reported, not previous values: results live in the session table, and
/// keeping a mebibyte of old value per client would make that table the biggest thing in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// A put applied; `previous_version` is `None` if the key was new.
    Put {
        /// The version the key had before, if it existed.
        previous_version: Option<u64>,
    },
    /// A delete applied; `previous_version` is `None` if the key did not exist (nothing changed).
    Deleted {
        /// The version the key had before, if it existed.
        previous_version: Option<u64>,
    },
    /// An atomic batch applied in full.
    Batch {
        /// Number of puts.
        puts: u32,
        /// Number of deletes (including deletes of missing keys).
        deletes: u32,
    },
    /// A compare-and-set matched and wrote (or deleted, if the new value was `None`).
    Swapped {
        /// The version the key had before, if it existed.
        previous_version: Option<u64>,
    },
    /// An increment applied; `value` is the new integer.
    Incremented {
        /// The value after the increment.
        value: i64,
    },
    /// An append applied; `len` is the new length of the value in bytes.
    Appended {
        /// The value's length after the append.
        len: u64,
    },
    /// A [`crate::WriteOp::DeleteRange`] applied: `deleted` keys were removed (0 for an empty
    /// range). Appended last so the older variants encode as before.
    RangeDeleted {
        /// How many keys were deleted.
        deleted: u64,
    },
    /// A [`crate::WriteOp::LeaseGrant`] applied: lease `id` lives `ttl_ms` of log time unless
    /// kept alive. The variants below are format 3, appended so the older ones encode as before.
    LeaseGranted {
        /// The new lease's id (the grant's store index).
        id: u64,
        /// Its time to live.
        ttl_ms: u64,
    },
    /// A [`crate::WriteOp::LeaseKeepAlive`] applied: the lease now expires `ttl_ms` of log time
    /// after `index`.
    LeaseKept {
        /// The lease.
        id: u64,
        /// Its time to live, counted again from this command.
        ttl_ms: u64,
    },
    /// A [`crate::WriteOp::LeaseRevoke`] applied: the lease is gone with its `deleted` keys.
    LeaseRevoked {
        /// The lease.
        id: u64,
        /// How many keys were deleted with it.
        deleted: u64,
    },
    /// A [`crate::WriteOp::LeaseSweep`] applied: these leases expired (in id order) and
    /// `deleted` keys went with them (none, often: a sweep also just moves the log clock).
    LeasesExpired {
        /// The expired leases.
        ids: Vec<u64>,
        /// How many keys were deleted.
        deleted: u64,
    },
}

/// A write that did not apply. Nothing in the store changed (apart from the session table, which
/// records the error so that a retry sees it again, and `last_applied`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// A guard did not hold. `index_in_batch` is 0 for single-key writes.
    #[error("guard {guard} failed on key {} (operation {index_in_batch} of the batch)", crate::bytes::show(key))]
    GuardFailed {
        /// Position of the failing operation in the batch.
        index_in_batch: u32,
        /// The guarded key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The guard that failed.
        guard: Guard,
        /// The key's current value and version, `None` if absent.
        current: Option<Versioned>,
    },
    /// A compare-and-set did not match.
    #[error("compare-and-set did not match; current version is {}", current.as_ref().map_or(0, |c| c.version))]
    CasFailed {
        /// The key's current value and version, `None` if absent.
        current: Option<Versioned>,
    },
    /// An increment met a value that is not a decimal `i64`.
    #[error("value of key {} is not a decimal integer", crate::bytes::show(key))]
    NotAnInteger {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// An increment would leave the `i64` range.
    #[error("incrementing {current} by {delta} overflows i64")]
    Overflow {
        /// The integer before the increment (the initial value for a missing key).
        current: i64,
        /// The requested delta.
        delta: i64,
    },
    /// A limit was exceeded; see [`crate::Limits`].
    #[error("{what} is {got}, limit is {limit}")]
    TooLarge {
        /// Which limit.
        what: LimitKind,
        /// The limit.
        limit: u64,
        /// The size found.
        got: u64,
    },
    /// An empty key was used; keys are at least one byte.
    #[error("empty key (operation {index_in_batch} of the batch)")]
    EmptyKey {
        /// Position of the offending operation in the batch.
        index_in_batch: u32,
    },
    /// The same key appears twice in one batch.
    #[error("key {} appears more than once in the batch", crate::bytes::show(key))]
    DuplicateKey {
        /// The repeated key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
    },
    /// The session already applied a newer request; this one is older than the stored result.
    #[error("sequence number is older than the session's latest, {latest_seq}")]
    SessionStale {
        /// The sequence number of the session's stored result.
        latest_seq: u64,
    },
    /// The session is unknown and the request is not its first (sequence number above 1): the
    /// session expired (or, past its guaranteed window, was evicted for a new one), so the store can no longer tell whether this request was
    /// already applied. The client must start a new session; nothing was applied.
    #[error("session {client:?} has expired or is unknown; start a new session")]
    SessionExpired {
        /// The session.
        client: ClientId,
    },
    /// The session's sequence number `seq` (or an `Idempotency-Key`) was used before for a
    /// different operation. Nothing was applied; the first request's result stays stored. A
    /// client must use a fresh number (or key) for each distinct request.
    #[error("sequence number {seq} of session {client:?} was used for a different request")]
    RequestMismatch {
        /// The session.
        client: ClientId,
        /// The sequence number both requests used.
        seq: u64,
    },
    /// A new session was refused because the table already holds `max_sessions` live sessions
    /// (none is ever evicted before it expires). Nothing was applied; retry after about
    /// `retry_after_ms` of log time, when the oldest session expires, or reuse a session.
    #[error("the session table is full ({max_sessions} live sessions); retry in {retry_after_ms} ms")]
    SessionsFull {
        /// The configured cap.
        max_sessions: u64,
        /// Log time until the oldest session expires.
        retry_after_ms: u64,
    },
    /// The slot's bytes are not a request (or use sequence number 0).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The driver applied an index that does not advance `last_applied`; nothing changed.
    /// This is a driver bug, never a client error, and it is never stored.
    #[error("index {got} does not follow last applied index {last_applied}")]
    OutOfOrder {
        /// The store's last applied index.
        last_applied: u64,
        /// The index given.
        got: u64,
    },
    // Format 3 (leases): appended after every older variant so those encode as before.
    /// The lease does not exist: never granted, revoked, or expired. Nothing was applied.
    #[error("lease {id} does not exist (it expired, was revoked, or was never granted)")]
    LeaseNotFound {
        /// The lease.
        id: u64,
    },
    /// A grant's TTL is outside the cluster's bounds.
    #[error("lease TTL {ttl_ms} ms is outside {min_ms}..={max_ms} ms")]
    LeaseTtl {
        /// The TTL asked for.
        ttl_ms: u64,
        /// The smallest TTL allowed.
        min_ms: u64,
        /// The largest TTL allowed.
        max_ms: u64,
    },
    /// The cluster holds `limit` leases already; a grant waits until one ends.
    #[error("the cluster holds {limit} leases, its limit; revoke one or retry later")]
    TooManyLeases {
        /// The configured limit.
        limit: u64,
    },
    /// The write would attach more than `limit` keys to lease `id`. Nothing was applied.
    #[error("lease {id} would hold more than {limit} keys")]
    TooManyLeaseKeys {
        /// The lease.
        id: u64,
        /// The configured limit.
        limit: u64,
    },
}
