//! The client-session table: exactly-once writes across retries and leader changes.
//!
//! # Rules
//!
//! Each client session keeps one entry: the sequence number of its latest request, that request's
//! [`Output`], and the log time the session was last active. When a request tagged
//! `(client, seq)` is applied:
//!
//! * `seq` equal to the stored one: a retry. The stored output is returned and nothing is applied.
//! * `seq` below the stored one: [`WriteError::SessionStale`]; nothing is applied.
//! * `seq` above the stored one: the write applies and its output replaces the stored one.
//! * no entry and `seq == 1`: a new session. The driver maps each REST `Idempotency-Key` to its
//!   own session (a hash of the key) with `seq` 1, so a retried key hits the first rule.
//! * no entry and `seq > 1`: [`WriteError::SessionExpired`]. The session existed (a client only
//!   sends 2 after 1) but has expired or been evicted, so the store cannot tell whether this
//!   request already applied; it refuses rather than risk applying it twice.
//!
//! # Log time, not a local clock
//!
//! Expiry must be decided identically on every replica, so it cannot read any replica's clock. The
//! leader stamps each request with its wall time when proposing ([`crate::Request::stamp_ms`]);
//! the table's *log clock* is the maximum stamp applied so far. Because it is a maximum, a new
//! leader whose clock lags cannot move time backwards (it only pauses expiry until its clock
//! catches up), and a leader whose clock runs ahead only expires sessions early, which costs a
//! client a `SessionExpired`, never a duplicate write. A session expires once the log clock is more
//! than `session_ttl_ms` past its last activity; expiry runs as each stamped request is applied,
//! so all replicas drop the same sessions at the same slot.
//!
//! A table may also be capped at `max_sessions`; creating a session beyond the cap evicts the least
//! recently active one (ties broken by client id), again a deterministic choice.
//!
//! A known limit of any TTL scheme: a retry that arrives after its session expired and carries
//! `seq == 1` (for example a REST idempotency key retried a day later) looks like a new session and
//! applies again. Clients keep retries within the TTL.

use crate::command::{ClientId, SessionRef};
use crate::output::{Output, WriteError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the table remembers about one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The sequence number of the latest applied request.
    pub seq: u64,
    /// The log time (ms) of the session's last request, including retries.
    pub last_active_ms: u64,
    /// The output of request `seq`, returned again on retry.
    pub result: Output,
}

/// What to do with an incoming session-tagged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCheck {
    /// Apply it, then [`SessionTable::record`] its output.
    Apply,
    /// Do not apply; answer with this (a stored output, or a session error).
    Answer(Output),
}

/// Latest result per client session, with log-time expiry. Iterates in client-id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    entries: BTreeMap<ClientId, SessionEntry>,
    /// `(last_active_ms, client)` for every entry: the expiry and eviction order.
    by_activity: BTreeSet<(u64, ClientId)>,
    clock_ms: u64,
}

impl SessionTable {
    /// An empty table with log clock 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log clock: the largest request stamp applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for one session, if live.
    pub fn get(&self, client: ClientId) -> Option<&SessionEntry> {
        self.entries.get(&client)
    }

    /// All entries, in client-id order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, ClientId, SessionEntry> {
        self.entries.iter()
    }

    /// Move the log clock to `max(clock, stamp_ms)` and drop every session idle for more than
    /// `ttl_ms` of log time. Returns how many expired.
    pub fn advance(&mut self, stamp_ms: u64, ttl_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(stamp_ms);
        let mut expired = 0;
        while let Some(&(last, client)) = self.by_activity.first() {
            if self.clock_ms.saturating_sub(last) <= ttl_ms {
                break;
            }
            self.by_activity.pop_first();
            self.entries.remove(&client);
            expired += 1;
        }
        expired
    }

    /// Decide what to do with a request from `session` (call after [`SessionTable::advance`]).
    /// A retry refreshes the session's activity time.
    pub fn check(&mut self, session: SessionRef) -> SessionCheck {
        if session.seq == 0 {
            return SessionCheck::Answer(Err(WriteError::Malformed(
                "sequence numbers start at 1".to_string(),
            )));
        }
        let clock = self.clock_ms;
        match self.entries.get_mut(&session.client) {
            None if session.seq == 1 => SessionCheck::Apply,
            None => SessionCheck::Answer(Err(WriteError::SessionExpired { client: session.client })),
            Some(e) if session.seq < e.seq => {
                SessionCheck::Answer(Err(WriteError::SessionStale { latest_seq: e.seq }))
            }
            Some(e) if session.seq == e.seq => {
                self.by_activity.remove(&(e.last_active_ms, session.client));
                e.last_active_ms = clock;
                self.by_activity.insert((clock, session.client));
                SessionCheck::Answer(e.result.clone())
            }
            Some(_) => SessionCheck::Apply,
        }
    }

    /// Store the output of a newly applied request, evicting the least recently active sessions
    /// if the table would exceed `max_sessions` (0 means unbounded).
    pub fn record(&mut self, session: SessionRef, result: Output, max_sessions: usize) {
        let entry = SessionEntry { seq: session.seq, last_active_ms: self.clock_ms, result };
        self.insert(session.client, entry);
        while max_sessions > 0 && self.entries.len() > max_sessions {
            let Some((_, victim)) = self.by_activity.pop_first() else { break };
            self.entries.remove(&victim);
        }
    }

    /// Insert or replace an entry as is (used by snapshot restore and `record`).
    pub(crate) fn insert(&mut self, client: ClientId, entry: SessionEntry) {
        if let Some(old) = self.entries.get(&client) {
            self.by_activity.remove(&(old.last_active_ms, client));
        }
        self.by_activity.insert((entry.last_active_ms, client));
        self.entries.insert(client, entry);
    }

    /// Set the log clock (snapshot restore only).
    pub(crate) fn set_clock(&mut self, clock_ms: u64) {
        self.clock_ms = clock_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{WriteOutcome, WriteResult};

    fn s(client: u64, seq: u64) -> SessionRef {
        SessionRef { client: ClientId(client), seq }
    }

    fn ok(index: u64) -> Output {
        Ok(WriteResult { index, outcome: WriteOutcome::Put { previous_version: None } })
    }

    #[test]
    fn retry_returns_stored_result_and_older_is_stale() {
        let mut t = SessionTable::new();
        t.advance(100, 1000);
        assert_eq!(t.check(s(1, 1)), SessionCheck::Apply);
        t.record(s(1, 1), ok(5), 0);
        assert_eq!(t.check(s(1, 1)), SessionCheck::Answer(ok(5)));
        assert_eq!(t.check(s(1, 3)), SessionCheck::Apply);
        t.record(s(1, 3), ok(6), 0);
        assert_eq!(t.check(s(1, 2)), SessionCheck::Answer(Err(WriteError::SessionStale { latest_seq: 3 })));
    }

    #[test]
    fn unknown_session_must_start_at_one() {
        let mut t = SessionTable::new();
        assert_eq!(
            t.check(s(9, 2)),
            SessionCheck::Answer(Err(WriteError::SessionExpired { client: ClientId(9) }))
        );
        assert!(matches!(t.check(s(9, 0)), SessionCheck::Answer(Err(WriteError::Malformed(_)))));
    }

    #[test]
    fn expiry_follows_the_log_clock_and_never_goes_back() {
        let mut t = SessionTable::new();
        t.advance(1_000, 500);
        t.record(s(1, 1), ok(1), 0);
        t.advance(1_200, 500);
        t.record(s(2, 1), ok(2), 0);
        // A lagging leader's stamp does not move the clock back.
        t.advance(10, 500);
        assert_eq!(t.clock_ms(), 1_200);
        // Exactly ttl idle is still live; one more millisecond expires client 1 only.
        assert_eq!(t.advance(1_500, 500), 0);
        assert_eq!(t.advance(1_501, 500), 1);
        assert!(t.get(ClientId(1)).is_none());
        assert_eq!(t.get(ClientId(2)).map(|e| e.seq), Some(1));
        assert_eq!(
            t.check(s(1, 2)),
            SessionCheck::Answer(Err(WriteError::SessionExpired { client: ClientId(1) }))
        );
    }

    #[test]
    fn a_retry_keeps_its_session_alive() {
        let mut t = SessionTable::new();
        t.advance(0, 100);
        t.record(s(1, 1), ok(1), 0);
        t.advance(90, 100);
        assert_eq!(t.check(s(1, 1)), SessionCheck::Answer(ok(1)));
        assert_eq!(t.advance(150, 100), 0, "the retry at 90 refreshed activity");
        assert_eq!(t.advance(191, 100), 1);
    }

    #[test]
    fn cap_evicts_least_recently_active() {
        let mut t = SessionTable::new();
        for c in 1..=3 {
            t.advance(c * 10, 1_000);
            t.record(s(c, 1), ok(c), 2);
        }
        let live: Vec<u64> = t.iter().map(|(c, _)| c.0).collect();
        assert_eq!(live, vec![2, 3]);
    }
}
