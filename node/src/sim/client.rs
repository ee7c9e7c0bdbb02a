//! Simulated clients and their recorded histories.
//!
//! A client issues one request at a time to a replica of its choice. What it does with an answer
//! is what a careful REST client does (docs/driver.md, "retrying safely"):
//!
//! * a refusal that says nothing was done (not the leader, busy, not serving, lost) is retried,
//!   at the leader the refusal names or elsewhere;
//! * a timeout or an unknown outcome is retried under the same session and sequence number (or
//!   the same idempotency key) on another replica, which is safe because the state machine applies
//!   a session's request once; a write without either is never retried once its outcome is
//!   unknown: it stays unknown in the history;
//! * a request that exhausts its attempts ends `Unknown` (or `Fail` if every attempt was refused).
//!
//! The recorded [`checker::Op`] spans from the first attempt to the answer that settled it.

use checker::{Op, OpKind, Outcome};
use kvstore::{CasExpect, ClientId, Output, SessionRef, WriteOp, WriteOutcome};
use paxos::NodeId;

/// Keys written with plain puts and compare-and-sets.
pub(super) const REGISTERS: &[&str] = &["a", "b", "c"];
/// Keys only ever incremented.
pub(super) const COUNTERS: &[&str] = &["n", "m"];

/// How a client tags its writes for exactly-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tagging {
    /// A session with growing sequence numbers.
    Session,
    /// A fresh idempotency key per write (a session of one request, `seq` 1).
    IdempotencyKey,
    /// Nothing: never retried once the outcome is unknown.
    None,
}

/// What a client is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// Reads and writes the registers and counters; its history is checked.
    Checked,
    /// Keyed writes as fast as it can (a fresh `Idempotency-Key` per put, on its own key) through
    /// a round-robin balancer over every replica, ignoring `Retry-After`: it fills the session
    /// table (`SimConfig::sessions`). Not in the checked history.
    Flood,
    /// A new client after the heal: keyed puts through the balancer until one is admitted,
    /// waiting what each `SessionsFull` refusal's `retry_after_ms` says (the liveness verdict of
    /// `SimConfig::sessions`). Not in the checked history.
    Probe,
}

/// What a request asks.
#[derive(Clone, Debug)]
pub(super) enum Ask {
    /// A write.
    Write { session: Option<SessionRef>, op: WriteOp },
    /// A read of one key.
    Read { key: String, linearizable: bool },
}

/// The request in flight.
#[derive(Debug)]
pub(super) struct InFlight {
    /// Its record, pushed to the history once it settles.
    pub(super) op: Op,
    /// What it asks (resent as is on a retry).
    pub(super) ask: Ask,
    /// Attempts made so far.
    pub(super) attempts: u32,
    /// Whether some attempt may have taken effect (timed out or answered "unknown").
    pub(super) maybe_applied: bool,
    /// The attempt's token and replica.
    pub(super) token: u64,
    pub(super) node: NodeId,
}

/// One simulated client.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) id: u64,
    pub(super) role: Role,
    pub(super) tagging: Tagging,
    /// The session id (for [`Tagging::Session`]).
    pub(super) session: ClientId,
    /// The last sequence number used.
    pub(super) seq: u64,
    /// The highest store index this client has seen (its `min_index` for sequential reads).
    pub(super) seen_index: u64,
    /// The last value it read or wrote per register (what its compare-and-sets expect).
    pub(super) last_value: std::collections::BTreeMap<String, Option<String>>,
    /// Values written so far (each is unique: `c<client>-<n>`).
    pub(super) written: u64,
    pub(super) in_flight: Option<InFlight>,
    /// The final reads (one per key) are issued; the client stops after them.
    pub(super) final_keys: Vec<String>,
    pub(super) finishing: bool,
    pub(super) done: bool,
}

impl Client {
    pub(super) fn new(id: u64, tagging: Tagging) -> Self {
        Self::with_role(id, Role::Checked, tagging)
    }

    /// A flood or probe client (keyed writes only).
    pub(super) fn keyed(id: u64, role: Role) -> Self {
        Self::with_role(id, role, Tagging::IdempotencyKey)
    }

    fn with_role(id: u64, role: Role, tagging: Tagging) -> Self {
        Client {
            id,
            role,
            tagging,
            session: ClientId(1_000 + id),
            seq: 0,
            seen_index: 0,
            last_value: Default::default(),
            written: 0,
            in_flight: None,
            final_keys: Vec::new(),
            finishing: false,
            done: false,
        }
    }

    /// Start a new session (the store answered `SessionExpired`).
    pub(super) fn new_session(&mut self) {
        self.session = ClientId(self.session.0 + 1_000_000);
        self.seq = 0;
    }

    /// A fresh unique value.
    pub(super) fn value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    /// The exactly-once tag of a new write. `idem` numbers idempotency keys across the run.
    pub(super) fn tag(&mut self, idem: &mut u64) -> Option<SessionRef> {
        match self.tagging {
            Tagging::Session => {
                self.seq += 1;
                Some(SessionRef { client: self.session, seq: self.seq })
            }
            Tagging::IdempotencyKey => {
                *idem += 1;
                // The driver hashes a key into a client id; distinct keys, distinct ids.
                Some(SessionRef { client: ClientId(1 << 40 | *idem), seq: 1 })
            }
            Tagging::None => None,
        }
    }

    /// Whether a retry after an unknown outcome is safe. With a small session table
    /// (`small_window`: `SimConfig::sessions`), a session's first request (every idempotency key)
    /// is not retried: the store recognizes a retry for `session_min_ttl_ms` of log time only
    /// (less than a second there), and nothing in the simulated world bounds how late an attempt
    /// is proposed (it may wait seconds in a paused replica's inbox or a held stream), so the
    /// original and the retry could apply far enough apart for the session to be evicted or
    /// expire in between: the retry would apply again, as the contract allows (kvstore.md, "the
    /// exact guarantee"). A later request of a session (`seq > 1`) stays retried: a session gone
    /// meanwhile refuses it (`SessionExpired`), never applies it twice.
    pub(super) fn may_retry_unknown(ask: &Ask, small_window: bool) -> bool {
        match ask {
            Ask::Write { session, .. } => session.is_some_and(|s| !(small_window && s.seq == 1)),
            Ask::Read { .. } => true,
        }
    }
}

/// The checker's view of a write: its kind, before the answer is known.
pub(super) fn op_kind(op: &WriteOp) -> (String, OpKind) {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match op {
        WriteOp::Put { key, value, .. } => (s(key), OpKind::Write { value: s(value) }),
        WriteOp::Cas { key, expected: CasExpect::Value(e), new: Some(n) } => {
            (s(key), OpKind::Cas { expected: e.as_deref().map(s), new: s(n) })
        }
        WriteOp::Incr { key, delta, .. } => (s(key), OpKind::Incr { delta: *delta, result: None }),
        other => panic!("the simulated clients do not issue {other:?}"),
    }
}

/// Record a write's answer: outcome, result and the index the reply carries (`WriteDone::index`,
/// which the REST layer sends as `X-Synod-Index` and the body's `index`: what an HTTP client sees
/// and records, so the checker judges exactly that).
pub(super) fn settle_write(op: &mut Op, output: &Output, index: u64, now: u64) {
    op.complete = Some(now);
    match output {
        Ok(r) => {
            op.outcome = Outcome::Ok;
            op.index = Some(index);
            if let (OpKind::Incr { result, .. }, WriteOutcome::Incremented { value }) = (&mut op.kind, &r.outcome) {
                *result = Some(*value);
            }
        }
        // A compare-and-set whose guard was evaluated and failed: definitely not written, and
        // the value differed from the expected one (other refusals never reach here).
        Err(_) => op.outcome = Outcome::Fail,
    }
}
