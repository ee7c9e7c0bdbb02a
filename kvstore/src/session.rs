//! The client-session table: exactly-once writes across retries and leader changes.
//!
//! # Rules
//!
//! Each client session keeps one entry: the sequence number of its latest request, that request's
//! [`Output`], a fingerprint of its operation ([`crate::WriteOp::fingerprint`]) and the log time
//! the session was last active. When a request tagged `(client, seq)` is applied:
//!
//! * `seq` equal to the stored one and the same operation: a retry. The stored output is returned
//!   and nothing is applied.
//! * `seq` equal to the stored one but a *different* operation: [`WriteError::RequestMismatch`];
//!   nothing is applied and the stored result stays (a reused `Idempotency-Key`, or two clients
//!   sharing one session; the REST API answers 422).
//! * `seq` below the stored one: [`WriteError::SessionStale`]; nothing is applied.
//! * `seq` above the stored one: the write applies and its output replaces the stored one.
//! * no entry and `seq == 1`: a new session. If the table holds `max_sessions` entries, the least
//!   recently active session makes room, but only if it has been idle for more than
//!   `session_min_ttl_ms` of log time; otherwise [`WriteError::SessionsFull`] and nothing is
//!   applied (REST: 503 with `Retry-After`: when the oldest session passes that window). The
//!   driver maps each REST `Idempotency-Key` to its own session (a hash of the key) with `seq` 1,
//!   so a retried key hits the first rule.
//! * no entry and `seq > 1`: [`WriteError::SessionExpired`]. The session existed (a client only
//!   sends 2 after 1) but has expired or was evicted, so the store cannot tell whether this
//!   request already applied; it refuses rather than risk applying it twice.
//!
//! # How long a retry is recognized
//!
//! A session is recognized for `session_ttl_ms` (default 24 h, as Stripe keeps idempotency keys)
//! after its last request *while the table has room*, and for at least `session_min_ttl_ms`
//! (default 1 minute) whatever happens. The trade-off is between how long a retry is recognized
//! and what a burst can take from others: with eviction never allowed (the rule before), one
//! client sending fresh `Idempotency-Key`s at 20 k/s filled the 100,000 entries in 5 s, and every
//! new key of every client was refused for a day. Now such a flood can only push other sessions
//! out once they have been idle for a minute, and a new session waits at most that minute. A
//! minute covers the retries clients make (a timeout, a reconnect, a leader change: seconds);
//! a client that retries later must not rely on it under pressure. The REST API says it on every
//! reply to a write with a session: `X-Synod-Retry-Window` (seconds). The IETF draft on
//! `Idempotency-Key` leaves the expiry to the server and asks it to publish it; this is ours. A
//! share per client needs client identities (tokens): not done.
//!
//! # Log time, not a local clock
//!
//! Expiry must be decided identically on every replica, so it cannot read any replica's clock.
//! Each request carries a [`Stamp`]: a proposer (node and process: a restarted process is another
//! proposer) and a reading of that proposer's *monotonic* clock. The table's *log clock* starts at
//! 0 and advances only when two requests that follow each other in the log come from the same
//! proposer: by the time that proposer measured between them, capped at `max_clock_step_ms`. A
//! request from another proposer adds nothing, and neither does a reading below the previous one.
//!
//! **Who the proposer is.** In a Synod cluster the node layer applies every request with its log
//! slot's stamp, the `paxos::Tick` of the *leader* that formed the slot, whichever replica the
//! client called (`node/src/node.rs`, `apply`). With each request's own proposer (the follower
//! that took and forwarded it), requests spread over replicas rarely followed one of their own
//! proposer, and the clock ran at about the sum of the squared shares of real time (a third with
//! three replicas; not at all behind a round-robin balancer): sessions lived three times their TTL
//! or for ever, and a full table stayed full. With the leader's ticks the clock follows real time
//! while one leader leads. Why nothing moves it *faster* than real time:
//!
//! * **a batch of forwarded commands**: one slot, one tick; every command in it applies with the
//!   same reading, so the batch adds the leader's interval once (and its first command only);
//! * **a deposed leader**: a stamp names the leader's *term* (`paxos::Tick::epoch`: ballot round
//!   and start number), and from cluster version 3 ([`crate::TERM_ORDER_VERSION`]) a stamp of an
//!   older term than the last one counted ([`SessionTable::is_stale`]) changes nothing. So a
//!   deposed leader's slots adopted after its successor's add nothing, and neither does a run of
//!   them (which could span more than a TTL, measured before its successor's slots); before the
//!   term, a re-elected leader's adopted old-term slot counted its whole time out of office. What
//!   is left: a slot the deposed leader proposed in its last leader lease, adopted *before* its
//!   successor's slots, is followed by time the successor measured from its term start, up to
//!   about that lease before the slot (docs/REPORT.md §7);
//! * **a late adopted proposal** of the current term's own leader: its reading is at most the
//!   time that leader measured, and a reading below the previous one adds nothing and does not
//!   lower the reference;
//! * **a restarted proposer**: another process (the tick's epoch is its start number), so its
//!   first slot adds nothing, whatever its new monotonic clock reads;
//! * **skewed or stepping wall clocks**: no wall clock is read; monotonic clocks only measure
//!   intervals. A replica 25 h ahead moves nothing.
//!
//! Log time can run *slower* than real time: time between leaders, and idle stretches beyond the
//! cap (no slot is proposed while nobody writes), are not counted. Sessions then live longer,
//! which costs memory, never a duplicate.
//!
//! A session expires once the log clock is more than `session_ttl_ms` past its last activity;
//! expiry runs as each request is applied, so all replicas drop the same sessions at the same slot.
//!
//! A known limit of any TTL scheme: a retry that arrives after its session expired and carries
//! `seq == 1` (for example a REST idempotency key retried a day later) looks like a new session and
//! applies again. Clients keep retries within the TTL (of log time, which is never shorter than
//! the TTL of real time, as above).

use crate::command::{ClientId, SessionRef, Stamp};
use crate::hash::session_hash;
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
    /// [`crate::WriteOp::fingerprint`] of request `seq`.
    pub fingerprint: u64,
    /// The output of request `seq`, returned again on retry.
    pub result: Output,
    /// The store index request `seq` was evaluated at (applied, or refused with the `current`
    /// value its result carries): the index a retry's reply reports, since that is the state the
    /// stored result reflects.
    pub index: u64,
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
    /// `(last_active_ms, client)` for every entry: the expiry order.
    by_activity: BTreeSet<(u64, ClientId)>,
    /// Wrapping sum of [`session_hash`] over the entries, kept up to date by every change, so the
    /// state hash never walks the table.
    hash_sum: u64,
    clock_ms: u64,
    /// The stamp of the last request applied, whose proposer may extend the clock next.
    last_stamp: Option<Stamp>,
}

impl SessionTable {
    /// An empty table with log clock 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log clock (ms of log time since the store began).
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Forget the last stamp ([`crate::Store::forget_clock_reference`]).
    pub(crate) fn forget_reference(&mut self) {
        self.last_stamp = None;
    }

    /// The stamp of the last request applied (it decides whether the next one extends the clock).
    pub fn last_stamp(&self) -> Option<Stamp> {
        self.last_stamp
    }

    /// The wrapping sum of every entry's [`session_hash`] (the sessions' part of the state hash).
    pub(crate) fn hash_sum(&self) -> u64 {
        self.hash_sum
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

    /// Whether `stamp` comes from an older term than the last stamp counted ([`Stamp::term_key`]):
    /// a deposed leader's slot that a later leader adopted. Its readings were taken while a newer
    /// term may already have been measuring the same real time, and a run of them could span
    /// more than a TTL measured before a keepalive that lies before them in the log (the review
    /// of the log clock, REPORT §6), so the clock ignores them.
    pub fn is_stale(&self, stamp: &Stamp) -> bool {
        self.last_stamp.is_some_and(|prev| stamp.term_key() < prev.term_key())
    }

    /// The log clock a request stamped `stamp` would find once applied ([`SessionTable::advance`]
    /// without changing anything).
    pub fn clock_after(&self, stamp: Stamp, max_step_ms: u64, order_terms: bool) -> u64 {
        if order_terms && self.is_stale(&stamp) {
            return self.clock_ms;
        }
        match self.last_stamp {
            Some(prev) if prev.same_proposer(&stamp) && stamp.mono_ms > prev.mono_ms => {
                self.clock_ms.saturating_add((stamp.mono_ms - prev.mono_ms).min(max_step_ms))
            }
            _ => self.clock_ms,
        }
    }

    /// Advance the log clock for a request stamped `stamp` (see the module docs: only the time
    /// its proposer measured since the previous request, if that was its own, capped at
    /// `max_step_ms`), then drop every session idle for more than `ttl_ms` of log time.
    /// Returns how many expired.
    ///
    /// With `order_terms` (cluster version [`crate::TERM_ORDER_VERSION`] on), a stamp of an
    /// older term than the last one counted ([`SessionTable::is_stale`]) changes nothing: it is
    /// neither measured nor the new reference.
    pub fn advance(&mut self, stamp: Stamp, ttl_ms: u64, max_step_ms: u64, order_terms: bool) -> usize {
        match self.last_stamp {
            _ if order_terms && self.is_stale(&stamp) => {}
            Some(prev) if prev.same_proposer(&stamp) => {
                if stamp.mono_ms > prev.mono_ms {
                    self.clock_ms = self.clock_ms.saturating_add((stamp.mono_ms - prev.mono_ms).min(max_step_ms));
                    self.last_stamp = Some(stamp);
                }
                // A reading below the previous one (an old proposal adopted late) adds nothing
                // and does not lower the reference, so no interval is counted twice.
            }
            _ => self.last_stamp = Some(stamp),
        }
        let mut expired = 0;
        while let Some(&(last, client)) = self.by_activity.first() {
            if self.clock_ms.saturating_sub(last) <= ttl_ms {
                break;
            }
            self.by_activity.pop_first();
            if let Some(e) = self.entries.remove(&client) {
                self.hash_sum = self.hash_sum.wrapping_sub(session_hash(client, &e));
            }
            expired += 1;
        }
        expired
    }

    /// Decide what to do with a request from `session` whose operation has `fingerprint` (call
    /// after [`SessionTable::advance`]). A retry refreshes the session's activity time. A new
    /// session finds room in a table that holds `max_sessions` entries (0: unbounded) only by
    /// evicting the least recently active session, and only if that one has been idle for more
    /// than `min_ttl_ms` of log time (the window every session is guaranteed; see the module
    /// docs); otherwise it is refused, and the refusal says in how much log time the oldest
    /// session passes that window.
    pub fn check(&mut self, session: SessionRef, fingerprint: u64, max_sessions: usize, ttl_ms: u64, min_ttl_ms: u64) -> SessionCheck {
        if session.seq == 0 {
            return SessionCheck::Answer(Err(WriteError::Malformed(
                "sequence numbers start at 1".to_string(),
            )));
        }
        let clock = self.clock_ms;
        let guaranteed = min_ttl_ms.min(ttl_ms);
        if session.seq == 1 && max_sessions > 0 && self.entries.len() >= max_sessions && !self.entries.contains_key(&session.client) {
            let oldest = self.by_activity.first().copied();
            match oldest {
                Some((t, client)) if clock.saturating_sub(t) > guaranteed => self.remove(client),
                _ => {
                    let oldest = oldest.map_or(clock, |(t, _)| t);
                    let retry_after_ms = (oldest.saturating_add(guaranteed).saturating_add(1)).saturating_sub(clock).max(1);
                    return SessionCheck::Answer(Err(WriteError::SessionsFull { max_sessions: max_sessions as u64, retry_after_ms }));
                }
            }
        }
        match self.entries.get_mut(&session.client) {
            None if session.seq == 1 => SessionCheck::Apply,
            None => SessionCheck::Answer(Err(WriteError::SessionExpired { client: session.client })),
            Some(e) if session.seq < e.seq => {
                SessionCheck::Answer(Err(WriteError::SessionStale { latest_seq: e.seq }))
            }
            Some(e) if session.seq == e.seq => {
                if e.fingerprint != fingerprint {
                    return SessionCheck::Answer(Err(WriteError::RequestMismatch { client: session.client, seq: e.seq }));
                }
                self.by_activity.remove(&(e.last_active_ms, session.client));
                self.hash_sum = self.hash_sum.wrapping_sub(session_hash(session.client, e));
                e.last_active_ms = clock;
                self.hash_sum = self.hash_sum.wrapping_add(session_hash(session.client, e));
                self.by_activity.insert((clock, session.client));
                SessionCheck::Answer(e.result.clone())
            }
            Some(_) => SessionCheck::Apply,
        }
    }

    /// Store the output of a newly applied request. Never evicts: [`SessionTable::check`]
    /// refused the request if a new session had no room.
    pub fn record(&mut self, session: SessionRef, fingerprint: u64, result: Output, index: u64) {
        let entry = SessionEntry { seq: session.seq, last_active_ms: self.clock_ms, fingerprint, result, index };
        self.insert(session.client, entry);
    }

    /// Remove `client`'s entry (see [`crate::Store::forget_session`]: negative tests only).
    pub(crate) fn remove(&mut self, client: ClientId) {
        if let Some(e) = self.entries.remove(&client) {
            self.by_activity.remove(&(e.last_active_ms, client));
            self.hash_sum = self.hash_sum.wrapping_sub(session_hash(client, &e));
        }
    }

    /// Insert or replace an entry as is (used by snapshot restore and `record`).
    pub(crate) fn insert(&mut self, client: ClientId, entry: SessionEntry) {
        if let Some(old) = self.entries.get(&client) {
            self.by_activity.remove(&(old.last_active_ms, client));
            self.hash_sum = self.hash_sum.wrapping_sub(session_hash(client, old));
        }
        self.hash_sum = self.hash_sum.wrapping_add(session_hash(client, &entry));
        self.by_activity.insert((entry.last_active_ms, client));
        self.entries.insert(client, entry);
    }

    /// Set the log clock and its last stamp (snapshot restore only).
    pub(crate) fn set_clock(&mut self, clock_ms: u64, last_stamp: Option<Stamp>) {
        self.clock_ms = clock_ms;
        self.last_stamp = last_stamp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{WriteOutcome, WriteResult};

    const HOUR: u64 = 60 * 60 * 1000;
    const STEP: u64 = 10 * 60 * 1000;

    fn s(client: u64, seq: u64) -> SessionRef {
        SessionRef { client: ClientId(client), seq }
    }

    fn ok(index: u64) -> Output {
        Ok(WriteResult { index, outcome: WriteOutcome::Put { previous_version: None } })
    }

    /// Proposer 1 (incarnation 1) at `ms` on its monotonic clock.
    fn a(ms: u64) -> Stamp {
        Stamp::new(1, 1, ms)
    }

    #[test]
    fn retry_returns_stored_result_and_older_is_stale() {
        let mut t = SessionTable::new();
        t.advance(a(100), 1000, STEP, false);
        assert_eq!(t.check(s(1, 1), 7, 0, 1000, 1000), SessionCheck::Apply);
        t.record(s(1, 1), 7, ok(5), 5);
        assert_eq!(t.check(s(1, 1), 7, 0, 1000, 1000), SessionCheck::Answer(ok(5)));
        assert_eq!(t.check(s(1, 3), 8, 0, 1000, 1000), SessionCheck::Apply);
        t.record(s(1, 3), 8, ok(6), 6);
        assert_eq!(t.check(s(1, 2), 9, 0, 1000, 1000), SessionCheck::Answer(Err(WriteError::SessionStale { latest_seq: 3 })));
    }

    #[test]
    fn same_seq_with_another_operation_is_refused_and_keeps_the_result() {
        let mut t = SessionTable::new();
        t.record(s(1, 1), 7, ok(5), 5);
        assert_eq!(
            t.check(s(1, 1), 8, 0, 1000, 1000),
            SessionCheck::Answer(Err(WriteError::RequestMismatch { client: ClientId(1), seq: 1 }))
        );
        assert_eq!(t.check(s(1, 1), 7, 0, 1000, 1000), SessionCheck::Answer(ok(5)));
    }

    #[test]
    fn unknown_session_must_start_at_one() {
        let mut t = SessionTable::new();
        assert_eq!(
            t.check(s(9, 2), 0, 0, 1000, 1000),
            SessionCheck::Answer(Err(WriteError::SessionExpired { client: ClientId(9) }))
        );
        assert!(matches!(t.check(s(9, 0), 0, 0, 1000, 1000), SessionCheck::Answer(Err(WriteError::Malformed(_)))));
    }

    #[test]
    fn expiry_follows_the_log_clock() {
        let mut t = SessionTable::new();
        t.advance(a(1_000), 500, STEP, false);
        assert_eq!(t.clock_ms(), 0, "the first stamp only sets the reference");
        t.record(s(1, 1), 0, ok(1), 1);
        t.advance(a(1_200), 500, STEP, false);
        assert_eq!(t.clock_ms(), 200);
        t.record(s(2, 1), 0, ok(2), 2);
        // An older reading of the same proposer (an adopted proposal) adds nothing.
        t.advance(a(10), 500, STEP, false);
        assert_eq!(t.clock_ms(), 200);
        // Exactly ttl idle is still live; one more millisecond expires client 1 only.
        assert_eq!(t.advance(a(1_500), 500, STEP, false), 0);
        assert_eq!(t.advance(a(1_501), 500, STEP, false), 1);
        assert!(t.get(ClientId(1)).is_none());
        assert_eq!(t.get(ClientId(2)).map(|e| e.seq), Some(1));
        assert_eq!(
            t.check(s(1, 2), 0, 0, 500, 500),
            SessionCheck::Answer(Err(WriteError::SessionExpired { client: ClientId(1) }))
        );
    }

    #[test]
    fn a_retry_keeps_its_session_alive() {
        let mut t = SessionTable::new();
        t.advance(a(0), 100, STEP, false);
        t.record(s(1, 1), 0, ok(1), 1);
        t.advance(a(90), 100, STEP, false);
        assert_eq!(t.check(s(1, 1), 0, 0, 100, 100), SessionCheck::Answer(ok(1)));
        assert_eq!(t.advance(a(150), 100, STEP, false), 0, "the retry at 90 refreshed activity");
        assert_eq!(t.advance(a(191), 100, STEP, false), 1);
    }

    #[test]
    fn a_full_table_refuses_new_sessions_and_evicts_nothing() {
        let mut t = SessionTable::new();
        t.advance(a(0), 1_000, STEP, false);
        for c in 1..=3u64 {
            t.advance(a(c * 10), 1_000, STEP, false);
            assert_eq!(t.check(s(c, 1), 0, 2, 1_000, 1_000) == SessionCheck::Apply, c <= 2);
            if c <= 2 {
                t.record(s(c, 1), 0, ok(c), c);
            }
        }
        // Client 1 was last active at 10; the clock is at 30: it expires at 1_011.
        assert_eq!(
            t.check(s(3, 1), 0, 2, 1_000, 1_000),
            SessionCheck::Answer(Err(WriteError::SessionsFull { max_sessions: 2, retry_after_ms: 981 }))
        );
        let live: Vec<u64> = t.iter().map(|(c, _)| c.0).collect();
        assert_eq!(live, vec![1, 2], "nothing was evicted");
        // Existing sessions go on: a retry, and a next request.
        assert_eq!(t.check(s(1, 1), 0, 2, 1_000, 1_000), SessionCheck::Answer(ok(1)));
        assert_eq!(t.check(s(2, 2), 0, 2, 1_000, 1_000), SessionCheck::Apply);
        // Once the oldest expires, there is room.
        t.advance(a(1_025), 1_000, STEP, false);
        assert_eq!(t.len(), 1, "client 2 (last active at 20) expired; client 1 was refreshed at 30");
        assert_eq!(t.check(s(3, 1), 0, 2, 1_000, 1_000), SessionCheck::Apply);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_active_session_once_past_the_guaranteed_window() {
        let (ttl, min) = (10_000, 100);
        let mut t = SessionTable::new();
        t.advance(a(0), ttl, STEP, false);
        t.record(s(1, 1), 0, ok(1), 1);
        t.advance(a(50), ttl, STEP, false);
        t.record(s(2, 1), 0, ok(2), 2);
        // At 80 both are inside the window: refused, retry when client 1 (active at 0) passes it.
        t.advance(a(80), ttl, STEP, false);
        assert_eq!(
            t.check(s(3, 1), 0, 2, ttl, min),
            SessionCheck::Answer(Err(WriteError::SessionsFull { max_sessions: 2, retry_after_ms: 21 }))
        );
        // At 101 client 1 has been idle for 101 ms > 100: it makes room; client 2 stays.
        t.advance(a(101), ttl, STEP, false);
        assert_eq!(t.check(s(3, 1), 0, 2, ttl, min), SessionCheck::Apply);
        t.record(s(3, 1), 0, ok(3), 3);
        let live: Vec<u64> = t.iter().map(|(c, _)| c.0).collect();
        assert_eq!(live, vec![2, 3]);
        // Client 1's next request finds no session: refused, never applied twice.
        assert_eq!(
            t.check(s(1, 2), 0, 2, ttl, min),
            SessionCheck::Answer(Err(WriteError::SessionExpired { client: ClientId(1) }))
        );
        // A retry refreshes activity, so the refreshed session is not the one evicted.
        t.advance(a(160), ttl, STEP, false);
        assert_eq!(t.check(s(2, 1), 0, 2, ttl, min), SessionCheck::Answer(ok(2)));
        t.advance(a(205), ttl, STEP, false);
        assert_eq!(t.check(s(4, 1), 0, 2, ttl, min), SessionCheck::Apply, "client 3 (active at 101) is past the window");
        t.record(s(4, 1), 0, ok(4), 4);
        let live: Vec<u64> = t.iter().map(|(c, _)| c.0).collect();
        assert_eq!(live, vec![2, 4]);
    }

    #[test]
    fn a_leader_25_hours_ahead_or_behind_does_not_move_the_clock() {
        let ttl = 24 * HOUR;
        let mut t = SessionTable::new();
        t.advance(a(1_000), ttl, STEP, false);
        t.record(s(1, 1), 0, ok(1), 1);
        t.advance(a(61_000), ttl, STEP, false);
        assert_eq!(t.clock_ms(), 60_000);
        // Leader B: its clock (monotonic or wall, whatever it reads) is 25 h ahead of A's.
        let b = |ms: u64| Stamp::new(2, 7, 25 * HOUR + ms);
        assert_eq!(t.advance(b(61_000), ttl, STEP, false), 0);
        assert_eq!(t.clock_ms(), 60_000, "a new proposer adds nothing");
        // B then runs for a minute: only that minute counts.
        t.advance(b(121_000), ttl, STEP, false);
        assert_eq!(t.clock_ms(), 120_000);
        assert!(t.get(ClientId(1)).is_some());
        // Leader C: 25 h behind (readings near zero). Nothing goes back, nothing jumps.
        let c = |ms: u64| Stamp::new(3, 9, ms);
        t.advance(c(5), ttl, STEP, false);
        t.advance(c(60_005), ttl, STEP, false);
        assert_eq!(t.clock_ms(), 180_000);
        // A proposer whose own clock jumps by 25 h between two requests: one capped step.
        t.advance(c(60_005 + 25 * HOUR), ttl, STEP, false);
        assert_eq!(t.clock_ms(), 180_000 + STEP);
        assert!(t.get(ClientId(1)).is_some(), "the session is still inside its window");
        // Back to A (a new incarnation would be a new proposer too): no credit for the gap.
        t.advance(a(10 * HOUR), ttl, STEP, false);
        assert_eq!(t.clock_ms(), 180_000 + STEP);
    }
}
