//! Write commands: what a client asks the replicated log to do, and their wire encoding.
//!
//! The consensus log carries opaque bytes, so a [`Request`] is encoded with postcard behind a
//! one-byte format tag ([`Request::encode`]); a replica that meets a tag it does not know reports
//! [`CodecError::UnknownFormat`] instead of guessing.
//!
//! # Formats and rolling upgrades
//!
//! The tag is the *format of the operation* ([`WriteOp::format`]): 1 for every operation of the
//! previous release ([`REQUEST_FORMAT`]; their bytes are unchanged), 2 for [`WriteOp::DeleteRange`]
//! ([`MAX_REQUEST_FORMAT`]). A build decodes tags `1..=MAX_REQUEST_FORMAT`, but the store applies a
//! format-`f` request only once the cluster version ([`crate::Store::cluster_version`]) is at least
//! `f`; below that it is treated exactly like bytes that do not decode, which is what a previous
//! release's replica does with it, so mixed-version replicas stay identical (see
//! [`crate::Store::apply_request`]). Decoding never panics: bytes in the log come
//! from a leader we trust to be honest but not to be bug-free, and every replica must reach the same
//! verdict on them.

use serde::{Deserialize, Serialize};

/// The format tag of every operation of the previous release (cluster version 1): `Put`, `Delete`,
/// `PutMany`, `Cas`, `Incr`, `Append`. Their encoding, tag included, is unchanged.
pub const REQUEST_FORMAT: u8 = 1;

/// The highest request format tag this build decodes (3: the lease operations, see
/// [`WriteOp::format`]).
pub const MAX_REQUEST_FORMAT: u8 = 3;

/// A client session id. Each client (or each REST idempotency key, hashed by the driver) owns one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// The exactly-once tag of a write: which session, and which request of that session.
///
/// Sequence numbers start at 1 and grow; a retry reuses the number of the request it retries.
/// Gaps are allowed (a client may abandon a number), going back is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session.
    pub client: ClientId,
    /// The request number within the session, starting at 1.
    pub seq: u64,
}

/// Who proposed a request, and when by that proposer's own *monotonic* clock.
///
/// The store never compares two proposers' clocks: it only credits the log clock with the time
/// one proposer measured between two of its requests that follow each other in the log (capped
/// at [`crate::StoreConfig::max_clock_step_ms`]). A wall clock that is hours off, or that steps,
/// therefore cannot move the log clock; see [`crate::session`]. In a Synod cluster the proposer
/// is the *leader* that formed the log slot (the node layer replaces each request's stamp with the
/// slot's `paxos::Tick` before it applies it), whichever replica took the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Stamp {
    /// The proposer's node id.
    pub node: u64,
    /// The proposer's term: unique per process start of that node *and* per time it leads
    /// (Synod: `paxos::Tick::epoch`, its ballot round and its start number), so a restarted
    /// process, whose monotonic clock starts again, is another proposer, and so is the same
    /// process leading again: a batch of its old term that a later phase 1 adopts must not be
    /// measured against its new term's readings. (Releases up to 0.2.0 stamped the process
    /// alone; the store compares the field for equality only, so logs of both kinds apply
    /// alike on every version.)
    pub process: u64,
    /// Milliseconds on the proposer's monotonic clock (any origin, fixed for the process).
    pub mono_ms: u64,
}

impl Stamp {
    /// A stamp from proposer `(node, process)` at `mono_ms`.
    pub fn new(node: u64, process: u64, mono_ms: u64) -> Self {
        Stamp { node, process, mono_ms }
    }

    /// Whether two stamps come from the same process (and term).
    pub fn same_proposer(&self, other: &Stamp) -> bool {
        self.node == other.node && self.process == other.process
    }

    /// The order of terms, for stamps whose `process` is a term as `paxos::Tick::epoch_of`
    /// writes it (round << 32 | start number): the ballot's round, then its node (a ballot's
    /// tie-break), then the start number. Later leaders have higher ballots, so a stamp whose
    /// key is below the last counted one comes from a deposed leader, adopted late.
    pub fn term_key(&self) -> (u64, u64, u64) {
        (self.process >> 32, self.node, self.process & 0xFFFF_FFFF)
    }
}

/// One write, as proposed to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Exactly-once tag; `None` applies the write without deduplication.
    pub session: Option<SessionRef>,
    /// The proposer and its monotonic time when it proposed this request; the store derives its
    /// *log clock* (which expires sessions) from these. See [`crate::session`].
    pub stamp: Stamp,
    /// The write itself.
    pub op: WriteOp,
}

/// A condition on the current state of one key, checked before a write applies.
///
/// Version numbers are log indexes (always at least 1), so `Version(0)` means "the key is absent",
/// the same convention as etcd's `mod_revision == 0`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// The key's version (the log index of its last write) equals this; 0 means absent.
    Version(u64),
    /// The key exists.
    Exists,
    /// The key does not exist.
    Absent,
    /// The key exists and holds exactly this value.
    Value(#[serde(with = "crate::bytes")] Vec<u8>),
    /// The key's version is one of these (HTTP `If-Match` with a list of entity tags); an empty
    /// list never holds. Appended after the older variants so their encoding is unchanged.
    VersionIn(Vec<u64>),
    /// The key is absent, or its version is none of these (HTTP `If-None-Match` with a list).
    VersionNotIn(Vec<u64>),
}

fn join(vs: &[u64]) -> String {
    vs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guard::Version(0) => write!(f, "absent (version 0)"),
            Guard::Version(v) => write!(f, "version = {v}"),
            Guard::Exists => write!(f, "exists"),
            Guard::Absent => write!(f, "absent"),
            Guard::Value(v) => write!(f, "value = {}", crate::bytes::show(v)),
            Guard::VersionIn(vs) => write!(f, "version is one of {{{}}}", join(vs)),
            Guard::VersionNotIn(vs) => write!(f, "absent or version is none of {{{}}}", join(vs)),
        }
    }
}

/// One write inside an atomic [`WriteOp::PutMany`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        /// Optional condition, checked against the state before the batch.
        guard: Option<Guard>,
    },
    /// Remove `key` (removing a missing key is not an error).
    Delete {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// Optional condition, checked against the state before the batch.
        guard: Option<Guard>,
    },
}

impl BatchOp {
    /// The key this operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }

    /// The operation's guard, if any.
    pub fn guard(&self) -> Option<&Guard> {
        match self {
            BatchOp::Put { guard, .. } | BatchOp::Delete { guard, .. } => guard.as_ref(),
        }
    }
}

/// What a [`WriteOp::Cas`] compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasExpect {
    /// The current value equals this (`None`: the key is absent).
    Value(#[serde(with = "crate::bytes::opt")] Option<Vec<u8>>),
    /// The current version equals this (0: the key is absent).
    Version(u64),
}

/// A write command. Every key written gets the applying slot's index as its new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    /// Set one key, optionally guarded.
    Put {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The new value.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        /// Optional condition.
        guard: Option<Guard>,
    },
    /// Remove one key, optionally guarded.
    Delete {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// Optional condition.
        guard: Option<Guard>,
    },
    /// Several puts and deletes, all or nothing. Guards are all checked against the state before
    /// the batch; the first failing guard (in batch order) is reported. A key may appear once.
    PutMany {
        /// The operations, applied in order.
        ops: Vec<BatchOp>,
    },
    /// Compare-and-set: if `expected` holds, set the key to `new` (`None` deletes it).
    Cas {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The condition.
        expected: CasExpect,
        /// The new value; `None` deletes the key.
        #[serde(with = "crate::bytes::opt")]
        new: Option<Vec<u8>>,
    },
    /// Add `delta` to a decimal integer value. A missing key counts as `initial`, so the first
    /// increment stores `initial + delta`.
    Incr {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The amount to add (may be negative).
        delta: i64,
        /// The value a missing key is taken to hold.
        initial: i64,
    },
    /// Append bytes to the value (a missing key counts as empty).
    Append {
        /// The key.
        #[serde(with = "crate::bytes")]
        key: Vec<u8>,
        /// The bytes to append.
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    /// Delete every key in `[start, end)` (`end: None`: no upper bound; an empty `start` with no
    /// `end` deletes everything, like etcd's `DeleteRange` from `"\0"`). An empty or inverted
    /// range deletes nothing and still succeeds. Format 2: needs cluster version 2. Appended last
    /// so the older variants encode as before.
    DeleteRange {
        /// Inclusive lower bound (may be empty).
        #[serde(with = "crate::bytes")]
        start: Vec<u8>,
        /// Exclusive upper bound; `None` means no upper bound.
        #[serde(with = "crate::bytes::opt")]
        end: Option<Vec<u8>>,
    },
    /// Grant a lease of `ttl_ms` of log time; its id is the command's store index (unique,
    /// the same on every replica). Format 3, like every lease operation (see [`crate::lease`]).
    LeaseGrant {
        /// Time to live, in ms of log time, between `min_ttl_ms` and `max_ttl_ms`.
        ttl_ms: u64,
    },
    /// Renew a lease: it now expires `ttl_ms` of log time after this command.
    LeaseKeepAlive {
        /// The lease.
        id: u64,
    },
    /// End a lease now and delete every key attached to it, in this one command.
    LeaseRevoke {
        /// The lease.
        id: u64,
    },
    /// Expire every lease whose deadline has passed on the log clock at this command, deleting
    /// their keys. Proposed by the leader (never by a client); see [`crate::lease`].
    LeaseSweep,
    /// An atomic batch like [`WriteOp::PutMany`] whose puts attach their keys to `lease` (a
    /// single put with `?lease=` is a batch of one, answered [`crate::WriteOutcome::Put`] with
    /// the previous version; any other batch [`crate::WriteOutcome::Batch`]). Refused whole if
    /// the lease does not exist or would hold too many keys.
    Leased {
        /// The lease the put keys attach to.
        lease: u64,
        /// The operations, applied in order.
        ops: Vec<BatchOp>,
    },
}

/// Why a byte string is not a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No bytes at all.
    #[error("empty request")]
    Empty,
    /// The format tag is not one this build understands.
    #[error("unknown request format {got} (this build reads formats {REQUEST_FORMAT} to {MAX_REQUEST_FORMAT})")]
    UnknownFormat {
        /// The tag found.
        got: u8,
    },
    /// postcard could not decode the body, or the body's operation is not of the tag's format
    /// (a format-1 tag carrying a format-2 operation: a previous release cannot decode it either).
    #[error("malformed request body: {0}")]
    Body(String),
    /// The body decoded but bytes were left over.
    #[error("{extra} trailing bytes after the request")]
    Trailing {
        /// How many bytes were left.
        extra: usize,
    },
}

impl Request {
    /// Encode for the log: the format tag ([`WriteOp::format`]), then the postcard body. Requests
    /// of format 1 encode exactly as in the previous release.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.op.format()];
        // Serializing plain data into a Vec cannot fail: there is no I/O and no map with
        // non-string keys, which are postcard's only failure modes.
        postcard::to_io(self, &mut out).expect("postcard encoding into a Vec is infallible");
        out
    }

    /// Decode bytes produced by [`Request::encode`]. Never panics.
    ///
    /// Tags `1..=`[`MAX_REQUEST_FORMAT`] are read; the operation must be of exactly the tag's
    /// format (what `encode` writes), else [`CodecError::Body`]. Decoding does not consult the
    /// cluster version: the store does, when it applies.
    pub fn decode(bytes: &[u8]) -> Result<Request, CodecError> {
        let (&tag, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        if !(REQUEST_FORMAT..=MAX_REQUEST_FORMAT).contains(&tag) {
            return Err(CodecError::UnknownFormat { got: tag });
        }
        let (req, rest) =
            postcard::take_from_bytes::<Request>(body).map_err(|e| CodecError::Body(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CodecError::Trailing { extra: rest.len() });
        }
        let format = req.op.format();
        if format != tag {
            return Err(CodecError::Body(format!("a format-{format} operation under request format tag {tag}")));
        }
        Ok(req)
    }
}

impl WriteOp {
    /// A 64-bit fingerprint of the operation (its kind, keys, values, guards, expectations), the
    /// same on every replica and build. The session table stores it with each result, so a retry
    /// that reuses a sequence number (or an `Idempotency-Key`) for a *different* operation is
    /// refused with [`crate::WriteError::RequestMismatch`] instead of being answered with another
    /// request's result. Not cryptographic: it catches mistakes, not a client attacking itself.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::hash::StateHasher::new();
        // Encoding plain data into a Vec cannot fail.
        let bytes = postcard::to_stdvec(self).expect("postcard encoding into a Vec is infallible");
        h.raw_bytes(&bytes);
        h.finish().0
    }

    /// The request format this operation needs: 1 for every operation of release 0.1, 2 for
    /// [`WriteOp::DeleteRange`] (0.2), 3 for the lease operations. [`Request::encode`] writes it
    /// as the tag, and the store applies the operation only at a cluster version at least this.
    pub fn format(&self) -> u8 {
        match self {
            WriteOp::Put { .. }
            | WriteOp::Delete { .. }
            | WriteOp::PutMany { .. }
            | WriteOp::Cas { .. }
            | WriteOp::Incr { .. }
            | WriteOp::Append { .. } => REQUEST_FORMAT,
            WriteOp::DeleteRange { .. } => 2,
            WriteOp::LeaseGrant { .. }
            | WriteOp::LeaseKeepAlive { .. }
            | WriteOp::LeaseRevoke { .. }
            | WriteOp::LeaseSweep
            | WriteOp::Leased { .. } => 3,
        }
    }

    /// Every key this operation writes, in order. Empty for [`WriteOp::DeleteRange`] and the
    /// lease operations that delete keys, which have no fixed key set (the keys they delete
    /// depend on the state: [`crate::Store::keys_in`], [`crate::Store::lease`]).
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            WriteOp::DeleteRange { .. }
            | WriteOp::LeaseGrant { .. }
            | WriteOp::LeaseKeepAlive { .. }
            | WriteOp::LeaseRevoke { .. }
            | WriteOp::LeaseSweep => Vec::new(),
            WriteOp::Leased { ops, .. } => ops.iter().map(BatchOp::key).collect(),
            WriteOp::Put { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::Cas { key, .. }
            | WriteOp::Incr { key, .. }
            | WriteOp::Append { key, .. } => vec![key.as_slice()],
            WriteOp::PutMany { ops } => ops.iter().map(BatchOp::key).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request {
            session: Some(SessionRef { client: ClientId(7), seq: 3 }),
            stamp: Stamp::new(2, 1_700_000_000_000_000, 12_345),
            op: WriteOp::PutMany {
                ops: vec![
                    BatchOp::Put { key: b"a".to_vec(), value: b"1".to_vec(), guard: Some(Guard::Absent) },
                    BatchOp::Delete { key: b"b".to_vec(), guard: Some(Guard::Value(b"x".to_vec())) },
                ],
            },
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let req = sample();
        let bytes = req.encode();
        assert_eq!(bytes[0], REQUEST_FORMAT);
        assert_eq!(Request::decode(&bytes), Ok(req));
    }

    #[test]
    fn decode_rejects_bad_input_without_panicking() {
        assert_eq!(Request::decode(&[]), Err(CodecError::Empty));
        assert_eq!(Request::decode(&[9, 0]), Err(CodecError::UnknownFormat { got: 9 }));
        assert_eq!(Request::decode(&[4, 0]), Err(CodecError::UnknownFormat { got: 4 }));
        assert_eq!(Request::decode(&[0, 0]), Err(CodecError::UnknownFormat { got: 0 }));
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(Request::decode(&bytes), Err(CodecError::Trailing { extra: 1 }));
        let truncated = &sample().encode()[..10];
        assert!(matches!(Request::decode(truncated), Err(CodecError::Body(_))));
    }

    #[test]
    fn fingerprints_tell_operations_apart() {
        let put = |k: &str, v: &str| WriteOp::Put { key: k.into(), value: v.into(), guard: None };
        assert_eq!(put("a", "1").fingerprint(), put("a", "1").fingerprint());
        assert_ne!(put("a", "1").fingerprint(), put("b", "1").fingerprint());
        assert_ne!(put("a", "1").fingerprint(), put("a", "2").fingerprint());
        let del = WriteOp::Delete { key: b"a".to_vec(), guard: None };
        assert_ne!(put("a", "").fingerprint(), del.fingerprint());
        let guarded = WriteOp::Put { key: b"a".to_vec(), value: b"1".to_vec(), guard: Some(Guard::Version(3)) };
        assert_ne!(put("a", "1").fingerprint(), guarded.fingerprint());
    }

    #[test]
    fn bytes_fields_use_the_compact_encoding() {
        // A 3-byte key costs 1 length byte + 3 bytes, exactly as a postcard seq of u8 would.
        let req = Request {
            session: None,
            stamp: Stamp::default(),
            op: WriteOp::Append { key: b"key".to_vec(), value: vec![] },
        };
        assert_eq!(req.encode(), vec![REQUEST_FORMAT, 0, 0, 0, 0, 5, 3, b'k', b'e', b'y', 0]);
    }

    fn delete_range(start: &[u8], end: Option<&[u8]>) -> Request {
        Request {
            session: Some(SessionRef { client: ClientId(1), seq: 2 }),
            stamp: Stamp::new(1, 2, 3),
            op: WriteOp::DeleteRange { start: start.to_vec(), end: end.map(<[u8]>::to_vec) },
        }
    }

    #[test]
    fn delete_range_is_format_2_and_round_trips() {
        assert_eq!(sample().op.format(), REQUEST_FORMAT);
        for req in [delete_range(b"a", Some(b"b")), delete_range(b"", None)] {
            assert_eq!(req.op.format(), 2);
            let bytes = req.encode();
            assert_eq!(bytes[0], 2);
            assert_eq!(Request::decode(&bytes), Ok(req.clone()));
            assert!(req.op.keys().is_empty());
        }
        // Pinned: variant index 6 after the older six; start and end as compact bytes.
        assert_eq!(
            delete_range(b"a", Some(b"b")).encode(),
            vec![2, 1, 1, 2, 1, 2, 3, 6, 1, b'a', 1, 1, b'b']
        );
        assert_ne!(delete_range(b"a", Some(b"b")).op.fingerprint(), delete_range(b"a", None).op.fingerprint());
    }

    #[test]
    fn tags_must_match_the_operation_format() {
        // A format-1 tag carrying DeleteRange: what a previous release would also fail to decode.
        let mut bytes = delete_range(b"a", None).encode();
        bytes[0] = REQUEST_FORMAT;
        assert!(matches!(Request::decode(&bytes), Err(CodecError::Body(_))));
        // A format-2 tag carrying an old operation is not what encode writes.
        let mut bytes = sample().encode();
        bytes[0] = 2;
        assert!(matches!(Request::decode(&bytes), Err(CodecError::Body(_))));
    }
}
