//! Leases with concrete schedules (the semantics are `kvstore/src/lease.rs`'s module docs), and
//! two properties over random schedules: no lease expires before its last grant or keepalive's
//! log time plus its TTL (and a sweep expires exactly the leases whose deadline it reached), and,
//! with leaders whose clocks follow real time, no lease expires before the real time its last
//! keepalive was proposed plus its TTL.
//!
//! Log time in these schedules: proposer `P` (node 1, process 1) proposes every slot unless a
//! test says otherwise, stamped `1_000 + t`, so the log clock is `t` (its first slot only sets the
//! reference, at `t = 0`).

use kvstore::snapshot::MAGIC;
use kvstore::*;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const P: (u64, u64) = (1, 1);
const Q: (u64, u64) = (2, 1);
/// Node 1 again, restarted: another process, so another proposer.
const P2: (u64, u64) = (1, 2);

/// Stamps as Synod's leaders write them (`paxos::Tick::epoch`: the process word is the term,
/// round << 32 | start number): every change of proposer is a new leader, elected under a
/// higher round. (A stamp of an older term than the last one is a deposed leader's slot adopted
/// late; the clock ignores it, `SessionTable::is_stale`.)
#[derive(Default)]
struct Terms {
    last: Option<(u64, u64)>,
    round: u64,
    /// The term before the last change: (proposer, round).
    previous: Option<((u64, u64), u64)>,
}

impl Terms {
    fn stamp(&mut self, who: (u64, u64), mono_ms: u64) -> Stamp {
        if self.last != Some(who) {
            self.previous = self.last.map(|l| (l, self.round));
            self.round += 1;
            self.last = Some(who);
        }
        Stamp::new(who.0, (self.round << 32) | who.1, mono_ms)
    }

    /// A stamp of the previous term (a deposed leader's slot, adopted late), if there was one.
    fn stale(&self, mono_ms: impl Fn((u64, u64)) -> u64) -> Option<Stamp> {
        self.previous.map(|(who, round)| Stamp::new(who.0, (round << 32) | who.1, mono_ms(who)))
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        max_clock_step_ms: 2_000,
        leases: LeaseConfig { max_leases: 3, max_keys_per_lease: 2, min_ttl_ms: 10, max_ttl_ms: 1000 },
        ..StoreConfig::default()
    }
}

fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn put(key: &str, value: &str) -> BatchOp {
    BatchOp::Put { key: k(key), value: k(value), guard: None }
}

fn del(key: &str) -> BatchOp {
    BatchOp::Delete { key: k(key), guard: None }
}

fn leased(lease: u64, ops: Vec<BatchOp>) -> WriteOp {
    WriteOp::Leased { lease, ops }
}

fn plain_put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put { key: k(key), value: k(value), guard: None }
}

fn ok(index: u64, outcome: WriteOutcome) -> Output {
    Ok(WriteResult { index, outcome })
}

fn outcome(out: Output) -> WriteOutcome {
    out.unwrap_or_else(|e| panic!("refused: {e:?}")).outcome
}

/// A store at cluster version 3 and the next index to apply.
struct H {
    s: Store,
    index: u64,
    terms: Terms,
}

impl H {
    fn new() -> Self {
        Self::at_version(3)
    }

    fn at_version(v: u32) -> Self {
        let mut s = Store::new(config());
        s.set_cluster_version(v);
        H { s, index: 0, terms: Terms::default() }
    }

    fn send(&mut self, who: (u64, u64), mono_ms: u64, session: Option<SessionRef>, op: WriteOp) -> Output {
        self.index += 1;
        let stamp = self.terms.stamp(who, mono_ms);
        self.s.apply_request(self.index, &Request { session, stamp, op })
    }

    /// `op` proposed by `P` at log time `t`.
    fn p(&mut self, t: u64, op: WriteOp) -> Output {
        self.send(P, 1_000 + t, None, op)
    }

    fn grant(&mut self, t: u64, ttl_ms: u64) -> u64 {
        match outcome(self.p(t, WriteOp::LeaseGrant { ttl_ms })) {
            WriteOutcome::LeaseGranted { id, ttl_ms: got } => {
                assert_eq!((id, got), (self.index, ttl_ms), "the id is the grant's index");
                id
            }
            o => panic!("{o:?}"),
        }
    }

    fn sweep_by(&mut self, who: (u64, u64), mono_ms: u64) -> (Vec<u64>, u64) {
        match outcome(self.send(who, mono_ms, None, WriteOp::LeaseSweep)) {
            WriteOutcome::LeasesExpired { ids, deleted } => (ids, deleted),
            o => panic!("{o:?}"),
        }
    }

    fn sweep(&mut self, t: u64) -> (Vec<u64>, u64) {
        self.sweep_by(P, 1_000 + t)
    }

    fn remaining(&self, id: u64) -> u64 {
        self.s.lease(id).unwrap_or_else(|| panic!("lease {id} is gone")).remaining_ms
    }

    fn keys(&self, id: u64) -> Vec<Vec<u8>> {
        self.s.lease(id).unwrap_or_else(|| panic!("lease {id} is gone")).keys
    }

    fn has(&self, key: &str) -> bool {
        self.s.get(key.as_bytes()).is_some()
    }

    /// Apply `op` with the last slot's own stamp (so neither the log clock nor the reference
    /// moves) and check it is refused with `want` and changes nothing but the index: the store
    /// equals, hash included, a copy that skipped the slot.
    fn refused(&mut self, op: WriteOp, want: WriteError) {
        let stamp = self.s.sessions().last_stamp().expect("a slot before");
        let mut skipped = self.s.clone();
        self.index += 1;
        skipped.skip(self.index).unwrap();
        let out = self.s.apply_request(self.index, &Request { session: None, stamp, op: op.clone() });
        assert_eq!(out, Err(want), "{op:?}");
        assert!(self.s == skipped, "{op:?} changed the store");
        assert_eq!(self.s.state_hash(), skipped.state_hash());
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry, keepalive, a new proposer.

#[test]
fn a_lease_expires_only_at_a_sweep_whose_clock_reached_its_deadline() {
    let mut h = H::new();
    assert_eq!(h.sweep(0), (vec![], 0), "nothing to expire; sets the clock's reference");
    let id = h.grant(0, 100);
    assert_eq!(outcome(h.p(0, leased(id, vec![put("a", "1"), put("b", "2")]))), WriteOutcome::Batch { puts: 2, deletes: 0 });
    assert_eq!((h.remaining(id), h.keys(id)), (100, vec![k("a"), k("b")]));
    assert_eq!(h.s.next_lease_deadline(), Some(100));

    assert_eq!(h.sweep(99), (vec![], 0), "a sweep one ms before the deadline expires nothing");
    assert_eq!(h.remaining(id), 1);
    // Past the deadline, nothing expires by itself: only a sweep ends a lease.
    h.p(150, plain_put("x", "1")).unwrap();
    assert_eq!(h.s.log_clock_ms(), 150);
    assert_eq!(h.remaining(id), 0);
    assert!(h.has("a") && h.has("b"));
    assert_eq!(h.s.leases_due(150), vec![(id, vec![k("a"), k("b")])]);
    assert_eq!(h.s.leases_due(99), vec![]);

    // The sweep ends it and deletes its keys in that one command.
    assert_eq!(h.sweep(150), (vec![id], 2));
    assert!(h.s.lease(id).is_none());
    assert!(!h.has("a") && !h.has("b") && h.has("x"));
    assert_eq!((h.s.lease_of(b"a"), h.s.lease_count(), h.s.next_lease_deadline()), (None, 0, None));
    assert_eq!(h.p(150, WriteOp::LeaseKeepAlive { id }), Err(WriteError::LeaseNotFound { id }));

    // Exactly at the deadline is enough.
    let id = h.grant(150, 100);
    assert_eq!(h.sweep(249), (vec![], 0));
    assert_eq!(h.sweep(250), (vec![id], 0));
}

#[test]
fn keepalive_moves_the_deadline_to_its_clock_plus_the_ttl() {
    let mut h = H::new();
    let id = h.grant(0, 100);
    let at = h.index + 1;
    assert_eq!(h.p(60, WriteOp::LeaseKeepAlive { id }), ok(at, WriteOutcome::LeaseKept { id, ttl_ms: 100 }));
    assert_eq!((h.remaining(id), h.s.next_lease_deadline()), (100, Some(160)));
    assert_eq!(h.sweep(100), (vec![], 0), "the old deadline has passed, the lease lives");
    assert_eq!(h.sweep(159), (vec![], 0));
    // Another keepalive, then it is left to expire.
    h.p(159, WriteOp::LeaseKeepAlive { id }).unwrap();
    assert_eq!(h.remaining(id), 100);
    assert_eq!(h.sweep(258), (vec![], 0));
    assert_eq!(h.sweep(259), (vec![id], 0));
    assert_eq!(h.p(260, WriteOp::LeaseKeepAlive { id }), Err(WriteError::LeaseNotFound { id }));
}

#[test]
fn a_new_proposer_gives_every_lease_a_full_ttl_and_never_less() {
    let mut h = H::new();
    let a = h.grant(0, 100); // deadline 100
    let b = h.grant(80, 50); // deadline 130
    let c = h.grant(80, 1000); // deadline 1080
    assert_eq!(h.sweep(90), (vec![], 0));
    // Q takes over at log time 90: its first slot adds no time (whatever its clock reads), and
    // every lease now lives at least until 90 + its TTL.
    assert_eq!(h.sweep_by(Q, 5_000_000), (vec![], 0));
    assert_eq!(h.s.log_clock_ms(), 90);
    assert_eq!((h.remaining(a), h.remaining(b), h.remaining(c)), (100, 50, 1000));
    // Q's own time counts from its first slot.
    assert_eq!(h.sweep_by(Q, 5_000_049), (vec![], 0));
    assert_eq!(h.sweep_by(Q, 5_000_050), (vec![b], 0));
    assert_eq!(h.sweep_by(Q, 5_000_099), (vec![], 0));
    assert_eq!(h.sweep_by(Q, 5_000_100), (vec![a], 0));
    assert_eq!(h.s.log_clock_ms(), 190);
    // Back to P (its clock ran on meanwhile): a change of proposer again, no time credited; c
    // is raised to 190 + 1000 (its deadline was 1080).
    assert_eq!(h.sweep(10_000), (vec![], 0));
    assert_eq!(h.s.log_clock_ms(), 190);
    assert_eq!(h.remaining(c), 1000);
    // A restarted P is another proposer too.
    h.send(P2, 3, None, WriteOp::LeaseSweep).unwrap();
    assert_eq!((h.s.log_clock_ms(), h.remaining(c)), (190, 1000));
}

#[test]
fn what_extends_leases_and_what_does_not() {
    let mut h = H::new();
    h.p(0, plain_put("x", "0")).unwrap();
    let id = h.grant(0, 100);
    h.p(0, plain_put("y", "1")).unwrap();
    let sess = Some(SessionRef { client: ClientId(7), seq: 1 });
    let first = h.send(P, 1_000, sess, plain_put("z", "1"));
    h.p(60, WriteOp::LeaseSweep).unwrap();
    assert_eq!(h.remaining(id), 40);

    // Undecodable bytes carry no stamp: nothing moves.
    h.index += 1;
    assert!(matches!(h.s.apply(h.index, &[9, 9, 9]), Err(WriteError::Malformed(_))));
    assert_eq!(h.remaining(id), 40);
    // The same proposer with a reading below its last (a late proposal): no time, no extension.
    h.p(30, WriteOp::LeaseSweep).unwrap();
    assert_eq!((h.s.log_clock_ms(), h.remaining(id)), (60, 40));

    // A refused request from a new proposer extends: the extension belongs to the slot's
    // proposer, not to what the request is.
    assert_eq!(h.send(Q, 77, None, WriteOp::LeaseKeepAlive { id: 999 }), Err(WriteError::LeaseNotFound { id: 999 }));
    assert_eq!((h.s.log_clock_ms(), h.remaining(id)), (60, 100));
    h.send(Q, 77 + 30, None, WriteOp::LeaseSweep).unwrap();
    assert_eq!(h.remaining(id), 70);
    // So does a retry answered from the session table.
    assert_eq!(h.send(P, 50_000, sess, plain_put("z", "1")), first);
    assert_eq!((h.s.log_clock_ms(), h.remaining(id)), (90, 100));
    // A request refused by the limits too.
    h.send(P, 50_040, None, WriteOp::LeaseSweep).unwrap();
    assert_eq!((h.s.log_clock_ms(), h.remaining(id)), (130, 60));
    h.send(Q, 1, None, WriteOp::PutMany { ops: vec![put("a", "1"), put("a", "2")] }).unwrap_err();
    assert_eq!((h.s.log_clock_ms(), h.remaining(id)), (130, 100));
}

// ---------------------------------------------------------------------------------------------
// Properties over random schedules.

#[derive(Debug, Clone)]
struct Ev {
    kind: u8,
    pick: u8,
    advance: u16,
    switch: u8,
}

impl Arbitrary for Ev {
    fn arbitrary(g: &mut Gen) -> Self {
        Ev { kind: u8::arbitrary(g), pick: u8::arbitrary(g), advance: u16::arbitrary(g), switch: u8::arbitrary(g) }
    }
}

impl Ev {
    fn advance_ms(&self) -> u64 {
        // Mostly below the TTLs, sometimes around or past them, rarely past the clock step cap.
        match self.advance % 16 {
            0 => u64::from(self.advance) % 1_200,
            1 => 2_000 + u64::from(self.advance),
            _ => u64::from(self.advance) % 40,
        }
    }

    fn op(&self, live: &[u64], index: u64) -> WriteOp {
        let id = if live.is_empty() { index.saturating_sub(1) } else { live[usize::from(self.pick) % live.len()] };
        match self.kind % 12 {
            0 | 1 => WriteOp::LeaseGrant { ttl_ms: [10, 30, 100, 400, 1000][usize::from(self.pick) % 5] },
            2..=4 => WriteOp::LeaseKeepAlive { id },
            5..=8 => WriteOp::LeaseSweep,
            9 => WriteOp::LeaseRevoke { id },
            10 => leased(id, vec![put(["a", "b", "c"][usize::from(self.pick) % 3], "v")]),
            _ => plain_put(["a", "b", "c"][usize::from(self.pick) % 3], "w"),
        }
    }
}

/// How many schedules a property runs: `QUICKCHECK_TESTS`, else `default`.
fn cases(default: u64) -> u64 {
    std::env::var("QUICKCHECK_TESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn qc(tests: u64) -> QuickCheck {
    QuickCheck::new().tests(tests).rng(Gen::new(200))
}

/// What the test knows of a live lease.
struct Known {
    ttl: u64,
    /// Log time of its last applied grant or keepalive.
    renewed: u64,
    /// Its deadline minus its TTL: the later of `renewed` and the last change of proposer.
    anchor: u64,
}

/// "No lease expired while its keepalives were acknowledged within the TTL": for every lease a
/// sweep at log time `c` expires, its last applied grant or keepalive at log time `k` has
/// `k + ttl <= c`. And the converse: the sweep expires every lease whose deadline (`k + ttl`,
/// raised to `clock + ttl` at each change of proposer since) is at or below `c`.
#[test]
fn no_lease_expires_within_a_ttl_of_its_last_keepalive() {
    fn prop(evs: Vec<Ev>) -> bool {
        let mut s = Store::new(config());
        s.set_cluster_version(3);
        let proposers = [P, Q, P2];
        let mut terms = Terms::default();
        let mut mono = [1_000u64, 70_000_000, 5];
        let mut cur = 0usize;
        let mut last: Option<usize> = None;
        let mut known: BTreeMap<u64, Known> = BTreeMap::new();
        for (i, ev) in evs.iter().enumerate() {
            let index = i as u64 + 1;
            let mut reading_back = false;
            match ev.switch % 16 {
                0 | 1 => cur = usize::from(ev.switch / 16) % proposers.len(),
                2 => reading_back = true,
                _ => {}
            }
            let mono_ms = if reading_back {
                mono[cur].saturating_sub(u64::from(ev.advance) % 500)
            } else {
                mono[cur] += ev.advance_ms();
                mono[cur]
            };
            let live: Vec<u64> = known.keys().copied().collect();
            let op = ev.op(&live, index);
            let before = s.log_clock_ms();
            let stamp = terms.stamp(proposers[cur], mono_ms);
            let out = s.apply_request(index, &Request { session: None, stamp, op: op.clone() });
            let c = s.log_clock_ms();
            assert!(c >= before, "the log clock went back");
            if last != Some(cur) {
                assert_eq!(c, before, "a change of proposer adds no time");
                for l in known.values_mut() {
                    l.anchor = l.anchor.max(c);
                }
            }
            last = Some(cur);
            match out.map(|r| r.outcome) {
                Ok(WriteOutcome::LeaseGranted { id, ttl_ms }) => {
                    known.insert(id, Known { ttl: ttl_ms, renewed: c, anchor: c });
                }
                Ok(WriteOutcome::LeaseKept { id, .. }) => {
                    let l = known.get_mut(&id).expect("kept a lease the test does not know");
                    (l.renewed, l.anchor) = (c, c);
                }
                Ok(WriteOutcome::LeaseRevoked { id, .. }) => {
                    known.remove(&id).expect("revoked a lease the test does not know");
                }
                Ok(WriteOutcome::LeasesExpired { ids, .. }) => {
                    for id in &ids {
                        let l = known.get(id).expect("expired a lease the test does not know");
                        assert!(l.renewed + l.ttl <= c, "lease {id} expired at log time {c}, renewed at {} with ttl {}: {evs:?}", l.renewed, l.ttl);
                    }
                    let due: Vec<u64> = known.iter().filter(|(_, l)| l.anchor + l.ttl <= c).map(|(id, _)| *id).collect();
                    let mut got = ids.clone();
                    got.sort_unstable();
                    assert_eq!(got, due, "a sweep at {c} expires exactly the leases whose deadline it reached");
                    for id in ids {
                        known.remove(&id);
                        EXPIRED_LOG.fetch_add(1, Relaxed);
                    }
                }
                _ => {}
            }
            for (id, l) in &known {
                assert_eq!(s.lease(*id).map(|i| i.remaining_ms), Some((l.anchor + l.ttl).saturating_sub(c)), "lease {id}");
            }
            assert_eq!(s.lease_count(), known.len());
        }
        true
    }
    let n = cases(5_000);
    qc(n).quickcheck(prop as fn(Vec<Ev>) -> bool);
    assert!(n < 100 || EXPIRED_LOG.load(Relaxed) as u64 > n, "the schedules expire leases");
}

/// Leases the two properties saw expire (each property is one test, so each counter too).
static EXPIRED_LOG: AtomicUsize = AtomicUsize::new(0);
static EXPIRED_REAL: AtomicUsize = AtomicUsize::new(0);
/// How long after its successor's term began a deposed leader may still propose (its leader
/// lease, `paxos::Options::leader_lease_ms`, with an acknowledgement's delay).
const DEPOSED_MS: u64 = 300;
/// Slots of a previous term the real-time property applied.
static STALE_REAL: AtomicUsize = AtomicUsize::new(0);

/// With leaders that follow each other (terms do not overlap) and clocks that measure real time
/// (each process from its own origin, continuous for the process; a restarted process starts
/// another), log time never runs faster than real time, so a holder whose grant or keepalive was
/// proposed at real time `t` holds the lease until real time `t + ttl` at least. A leader's own
/// proposals may be applied late (stamped up to 300 ms before they apply, never before its term),
/// and a deposed leader's slots may be adopted late, after its successor's (stamped with its old
/// term at any time up to 3 s before they apply): the log clock ignores those.
#[test]
fn a_lease_outlives_its_last_keepalive_by_a_ttl_of_real_time() {
    fn prop(evs: Vec<Ev>, origins: Vec<u32>) -> bool {
        let mut s = Store::new(config());
        s.set_cluster_version(3);
        let mut origin_of: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut terms = Terms::default();
        let mut process = [0u64, 1, 1, 1]; // the current process of nodes 1 to 3
        let mut node = 1u64;
        let (mut now, mut term_start) = (0u64, 0u64);
        let mut renewed: BTreeMap<u64, (u64, u64, bool)> = BTreeMap::new(); // id -> (real time, ttl, by a deposed leader)
        for (i, ev) in evs.iter().enumerate() {
            let index = i as u64 + 1;
            now += ev.advance_ms();
            let mut late = 0;
            match ev.switch % 16 {
                // Another node takes over, or the leader restarts.
                0 => {
                    let n = u64::from(ev.switch / 16) % 3 + 1;
                    if n != node {
                        (node, term_start) = (n, now);
                    }
                }
                1 => {
                    process[node as usize] += 1;
                    term_start = now;
                }
                2 => late = u64::from(ev.advance) % 300,
                _ => {}
            }
            let who = (node, process[node as usize]);
            let n = origin_of.len();
            let origin = *origin_of.entry(who).or_insert_with(|| u64::from(origins.get(n).copied().unwrap_or(n as u32 * 7_919)));
            // When the slot was proposed.
            let t = now.saturating_sub(late).max(term_start);
            let live: Vec<u64> = renewed.keys().copied().collect();
            let op = ev.op(&live, index);
            let mut stamp = terms.stamp(who, origin + t);
            let mut t = t;
            let mut stale = false;
            if ev.switch % 16 == 3 {
                // A slot of the previous term, adopted late. Its deposed leader proposed it up to
                // its leader lease after the current term began (`DEPOSED_MS`), and a run of
                // them can span more than a TTL.
                let back = u64::from(ev.advance) * 7 % 3_000;
                let at = now.saturating_sub(back).min(term_start + DEPOSED_MS);
                if let Some(st) = terms.stale(|w| origin_of.get(&w).copied().unwrap_or(0) + at) {
                    (stamp, t, stale) = (st, at, true);
                    STALE_REAL.fetch_add(1, Relaxed);
                }
            }
            let out = s.apply_request(index, &Request { session: None, stamp, op });
            assert!(s.log_clock_ms() <= now, "log time {} ran ahead of real time {now}", s.log_clock_ms());
            match out.map(|r| r.outcome) {
                Ok(WriteOutcome::LeaseGranted { id, ttl_ms }) | Ok(WriteOutcome::LeaseKept { id, ttl_ms }) => {
                    renewed.insert(id, (t, ttl_ms, stale));
                }
                Ok(WriteOutcome::LeaseRevoked { id, .. }) => {
                    renewed.remove(&id);
                }
                Ok(WriteOutcome::LeasesExpired { ids, .. }) => {
                    for id in ids {
                        let (renewed_at, ttl, by_deposed) = renewed.remove(&id).unwrap();
                        // A renewal a deposed leader proposed may have been measured against its
                        // successor's readings from the successor's term start: up to
                        // `DEPOSED_MS` early (REPORT §7).
                        let slack = if by_deposed { DEPOSED_MS } else { 0 };
                        assert!(now + slack >= renewed_at + ttl, "lease {id} expired at real time {now}, renewed at {renewed_at} with ttl {ttl} (by a deposed leader: {by_deposed})");
                        EXPIRED_REAL.fetch_add(1, Relaxed);
                    }
                }
                _ => {}
            }
        }
        true
    }
    let n = cases(5_000);
    qc(n).quickcheck(prop as fn(Vec<Ev>, Vec<u32>) -> bool);
    assert!(n < 100 || EXPIRED_REAL.load(Relaxed) as u64 > n, "the schedules expire leases");
    assert!(n < 100 || STALE_REAL.load(Relaxed) as u64 > n, "the schedules adopt old terms' slots late");
}

#[test]
fn a_sweep_reports_expired_leases_in_id_order() {
    // `WriteOutcome::LeasesExpired`: "these leases expired (in id order)". Lease 1 has the
    // lower id and the later deadline.
    let mut h = H::new();
    let a = h.grant(0, 500); // deadline 500
    let b = h.grant(0, 10); // deadline 10
    assert!(a < b);
    assert_eq!(h.sweep(600), (vec![a, b], 0));
}

// ---------------------------------------------------------------------------------------------
// Keys: revoke, detach, attach, refusals.

#[test]
fn revoke_deletes_every_key_in_one_command() {
    let mut h = H::new();
    let id = h.grant(0, 1000);
    let other = h.grant(0, 1000);
    h.p(0, leased(id, vec![put("a", "1"), put("b", "2")])).unwrap();
    h.p(0, leased(other, vec![put("c", "3")])).unwrap();
    h.p(0, plain_put("d", "4")).unwrap();
    let at = h.index + 1;
    assert_eq!(h.p(1, WriteOp::LeaseRevoke { id }), ok(at, WriteOutcome::LeaseRevoked { id, deleted: 2 }));
    assert!(!h.has("a") && !h.has("b") && h.has("c") && h.has("d"));
    assert_eq!((h.s.lease(id), h.s.lease_of(b"a"), h.s.lease_ids(0, 10)), (None, None, vec![other]));
    assert_eq!(h.p(2, WriteOp::LeaseRevoke { id }), Err(WriteError::LeaseNotFound { id }));
    assert_eq!(h.p(2, WriteOp::LeaseKeepAlive { id }), Err(WriteError::LeaseNotFound { id }));
    // A key written again without the lease survives the revoke.
    h.p(3, plain_put("c", "plain")).unwrap();
    let at = h.index + 1;
    assert_eq!(h.p(4, WriteOp::LeaseRevoke { id: other }), ok(at, WriteOutcome::LeaseRevoked { id: other, deleted: 0 }));
    assert_eq!(h.s.get(b"c").unwrap().value, k("plain"));
}

#[test]
fn a_leased_batch_naming_a_missing_lease_changes_nothing() {
    let mut h = H::new();
    let id = h.grant(0, 100);
    h.p(0, leased(id, vec![put("a", "1")])).unwrap();
    h.p(0, plain_put("b", "1")).unwrap();
    h.refused(leased(999, vec![put("b", "2"), del("a")]), WriteError::LeaseNotFound { id: 999 });
    h.refused(leased(0, vec![put("c", "2")]), WriteError::LeaseNotFound { id: 0 });
    // The id of a slot that was not a grant.
    h.refused(leased(id + 1, vec![put("c", "2")]), WriteError::LeaseNotFound { id: id + 1 });
    // A lease that expired.
    assert_eq!(h.sweep(100), (vec![id], 1));
    h.refused(leased(id, vec![put("b", "2")]), WriteError::LeaseNotFound { id });
    h.refused(leased(id, vec![]), WriteError::LeaseNotFound { id });
    assert_eq!(h.s.get(b"b").unwrap().value, k("1"));
}

#[test]
fn a_write_without_a_lease_detaches_the_key() {
    let mut h = H::new();
    let id = h.grant(0, 1000);
    let attach = |h: &mut H, keys: &[&str]| {
        let ops = keys.iter().map(|key| put(key, "7")).collect();
        h.p(0, leased(id, ops)).unwrap();
        for key in keys {
            assert_eq!(h.s.lease_of(key.as_bytes()), Some(id));
        }
    };
    let detaching: Vec<(WriteOp, &str)> = vec![
        (plain_put("a", "x"), "a"),
        (WriteOp::Delete { key: k("a"), guard: None }, "a"),
        (WriteOp::PutMany { ops: vec![put("a", "x")] }, "a"),
        (WriteOp::PutMany { ops: vec![del("a")] }, "a"),
        (WriteOp::Cas { key: k("a"), expected: CasExpect::Value(Some(k("7"))), new: Some(k("8")) }, "a"),
        (WriteOp::Cas { key: k("a"), expected: CasExpect::Value(Some(k("7"))), new: None }, "a"),
        (WriteOp::Incr { key: k("a"), delta: 1, initial: 0 }, "a"),
        (WriteOp::Append { key: k("a"), value: k("z") }, "a"),
        (WriteOp::DeleteRange { start: k("a"), end: Some(k("b")) }, "a"),
        // A Leased batch's delete detaches too.
        (leased(id, vec![del("a")]), "a"),
    ];
    for (op, key) in detaching {
        attach(&mut h, &["a"]);
        h.p(0, op.clone()).unwrap_or_else(|e| panic!("{op:?}: {e:?}"));
        assert_eq!(h.s.lease_of(key.as_bytes()), None, "{op:?} left the key attached");
        assert!(!h.keys(id).contains(&k(key)), "{op:?}");
    }
    // A write that fails detaches nothing.
    attach(&mut h, &["a"]);
    h.p(0, WriteOp::Put { key: k("a"), value: k("x"), guard: Some(Guard::Absent) }).unwrap_err();
    h.p(0, WriteOp::Cas { key: k("a"), expected: CasExpect::Version(1), new: Some(k("x")) }).unwrap_err();
    h.p(0, WriteOp::Append { key: k("a"), value: vec![0; 2 << 20] }).unwrap_err();
    assert_eq!(h.s.lease_of(b"a"), Some(id));
    // A detached key survives the lease.
    attach(&mut h, &["a", "b"]);
    h.p(0, plain_put("b", "mine")).unwrap();
    let at = h.index + 1;
    assert_eq!(h.p(0, WriteOp::LeaseRevoke { id }), ok(at, WriteOutcome::LeaseRevoked { id, deleted: 1 }));
    assert!(!h.has("a") && h.has("b"));

    // A Leased put moves a key from one lease to another; a single put answers like a put.
    let one = h.grant(0, 1000);
    let two = h.grant(0, 1000);
    let at = h.index + 1;
    assert_eq!(h.p(0, leased(one, vec![put("k", "1")])), ok(at, WriteOutcome::Put { previous_version: None }));
    assert_eq!(h.p(0, leased(two, vec![put("k", "2")])), ok(at + 1, WriteOutcome::Put { previous_version: Some(at) }));
    assert_eq!((h.keys(one), h.keys(two), h.s.lease_of(b"k")), (vec![], vec![k("k")], Some(two)));
    assert_eq!(h.p(0, WriteOp::LeaseRevoke { id: one }), ok(at + 2, WriteOutcome::LeaseRevoked { id: one, deleted: 0 }));
    assert!(h.has("k"));
}

#[test]
fn refused_grants_and_batches_change_nothing() {
    let mut h = H::new();
    h.p(0, plain_put("x", "1")).unwrap();
    for ttl_ms in [0, 9, 1001, u64::MAX] {
        h.refused(WriteOp::LeaseGrant { ttl_ms }, WriteError::LeaseTtl { ttl_ms, min_ms: 10, max_ms: 1000 });
    }
    // The bounds themselves are allowed.
    let a = h.grant(0, 10);
    let b = h.grant(0, 1000);
    let c = h.grant(0, 500);
    h.refused(WriteOp::LeaseGrant { ttl_ms: 100 }, WriteError::TooManyLeases { limit: 3 });
    // The TTL is checked first.
    h.refused(WriteOp::LeaseGrant { ttl_ms: 1 }, WriteError::LeaseTtl { ttl_ms: 1, min_ms: 10, max_ms: 1000 });

    // Two keys per lease.
    h.p(0, leased(b, vec![put("a", "1"), put("b", "1")])).unwrap();
    h.refused(leased(b, vec![put("c", "1")]), WriteError::TooManyLeaseKeys { id: b, limit: 2 });
    h.refused(leased(c, vec![put("c", "1"), put("d", "1"), put("e", "1")]), WriteError::TooManyLeaseKeys { id: c, limit: 2 });
    // Writing the lease's own keys again needs no room.
    h.p(0, leased(b, vec![put("a", "2"), put("b", "2")])).unwrap();
    assert_eq!(h.keys(b), vec![k("a"), k("b")]);
    // A guard that fails in a Leased batch changes nothing either.
    let cur = h.s.get(b"a");
    h.refused(
        leased(c, vec![put("c", "1"), BatchOp::Put { key: k("a"), value: k("3"), guard: Some(Guard::Absent) }]),
        WriteError::GuardFailed { index_in_batch: 1, key: k("a"), guard: Guard::Absent, current: cur },
    );

    // A revoke makes room for a grant, an expiry too.
    h.p(0, WriteOp::LeaseRevoke { id: c }).unwrap();
    let d = h.grant(0, 100);
    h.refused(WriteOp::LeaseGrant { ttl_ms: 100 }, WriteError::TooManyLeases { limit: 3 });
    assert_eq!(h.sweep(10), (vec![a], 0));
    h.grant(10, 100);
    assert_eq!(h.s.lease_ids(0, 10), vec![b, d, h.index]);
}

#[test]
fn a_batch_that_frees_room_in_its_own_lease_is_not_refused() {
    // `WriteOp::Leased`: "Refused whole if the lease ... would hold too many keys". After this
    // batch the lease holds {b, c}: two keys, its limit.
    let mut h = H::new();
    let id = h.grant(0, 1000);
    h.p(0, leased(id, vec![put("a", "1"), put("b", "1")])).unwrap();
    let at = h.index + 1;
    assert_eq!(h.p(0, leased(id, vec![del("a"), put("c", "1")])), ok(at, WriteOutcome::Batch { puts: 1, deletes: 1 }));
    assert_eq!(h.keys(id), vec![k("b"), k("c")]);
}

// ---------------------------------------------------------------------------------------------
// Cluster version, sessions.

#[test]
fn lease_operations_below_cluster_version_3_are_malformed_and_change_nothing() {
    for v in [1, 2] {
        let mut h = H::at_version(v);
        h.p(0, plain_put("a", "1")).unwrap();
        h.p(10, plain_put("b", "1")).unwrap();
        let ops = [
            WriteOp::LeaseGrant { ttl_ms: 100 },
            WriteOp::LeaseKeepAlive { id: 1 },
            WriteOp::LeaseRevoke { id: 1 },
            WriteOp::LeaseSweep,
            leased(1, vec![put("a", "2")]),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            // Another proposer, a session: still only the index moves (no clock, no reference,
            // no session record).
            let mut skipped = h.s.clone();
            h.index += 1;
            skipped.skip(h.index).unwrap();
            let session = Some(SessionRef { client: ClientId(5), seq: 1 + i as u64 });
            let out = h.s.apply_request(h.index, &Request { session, stamp: Stamp::new(9, 9, 123_456), op: op.clone() });
            let want = format!("request format 3 needs cluster version 3; the cluster runs version {v}");
            assert_eq!(out, Err(WriteError::Malformed(want)), "{op:?}");
            assert!(h.s == skipped, "{op:?} at version {v} changed the store");
            assert_eq!(h.s.state_hash(), skipped.state_hash());
            // Through the bytes, the same.
            let mut skipped = h.s.clone();
            h.index += 1;
            skipped.skip(h.index).unwrap();
            let bytes = Request { session, stamp: Stamp::new(9, 9, 123_456), op: op.clone() }.encode();
            assert_eq!(bytes[0], 3);
            assert!(matches!(h.s.apply(h.index, &bytes), Err(WriteError::Malformed(_))));
            assert!(h.s == skipped);
        }
        assert_eq!((h.s.lease_count(), h.s.log_clock_ms(), h.s.sessions().len()), (0, 10, 0));
        // Once the version is 3, they apply.
        h.s.set_cluster_version(3);
        let id = h.grant(20, 100);
        assert_eq!(h.s.lease_ids(0, 10), vec![id]);
    }
}

#[test]
fn a_retried_lease_request_returns_the_stored_output() {
    let mut h = H::new();
    let sr = |seq| Some(SessionRef { client: ClientId(3), seq });
    let grant = WriteOp::LeaseGrant { ttl_ms: 100 };
    let first = h.send(P, 1_000, sr(1), grant.clone());
    let id = h.index;
    assert_eq!(first, ok(id, WriteOutcome::LeaseGranted { id, ttl_ms: 100 }));
    // The retry: the same answer (the same id), no second lease.
    assert_eq!(h.send(P, 1_010, sr(1), grant.clone()), first);
    assert_eq!(h.s.lease_ids(0, 10), vec![id]);
    // The same number for another operation is refused, the stored result stays.
    assert_eq!(h.send(P, 1_010, sr(1), WriteOp::LeaseGrant { ttl_ms: 200 }), Err(WriteError::RequestMismatch { client: ClientId(3), seq: 1 }));
    assert_eq!(h.send(P, 1_010, sr(1), grant), first);

    // A keepalive's retry is answered, and applies nothing: the deadline stays where the first
    // one put it.
    let keep = WriteOp::LeaseKeepAlive { id };
    let kept = h.send(P, 1_050, sr(2), keep.clone());
    assert_eq!(kept, ok(h.index, WriteOutcome::LeaseKept { id, ttl_ms: 100 }));
    assert_eq!(h.send(P, 1_080, sr(2), keep), kept);
    assert_eq!(h.remaining(id), 70, "the retry did not renew the lease");

    // A Leased batch, then a revoke, retried after the lease is gone: still the stored answers.
    let batch = leased(id, vec![put("a", "1")]);
    let wrote = h.send(P, 1_080, sr(3), batch.clone());
    assert_eq!(wrote, ok(h.index, WriteOutcome::Put { previous_version: None }));
    let revoke = WriteOp::LeaseRevoke { id };
    let revoked = h.send(P, 1_081, sr(4), revoke.clone());
    assert_eq!(revoked, ok(h.index, WriteOutcome::LeaseRevoked { id, deleted: 1 }));
    let hash_before = (h.s.lease_count(), h.s.len());
    assert_eq!(h.send(P, 1_082, sr(4), revoke), revoked);
    assert_eq!((h.s.lease_count(), h.s.len()), hash_before);
    assert_eq!(h.send(P, 1_082, sr(3), batch), Err(WriteError::SessionStale { latest_seq: 4 }));
    assert!(!h.has("a"));

    // A sweep's retry reports the leases that first sweep expired.
    let id2 = h.grant(90, 10);
    let swept = h.send(P, 1_100, sr(5), WriteOp::LeaseSweep);
    assert_eq!(swept, ok(h.index, WriteOutcome::LeasesExpired { ids: vec![id2], deleted: 0 }));
    let id3 = h.grant(100, 10);
    assert_eq!(h.send(P, 1_200, sr(5), WriteOp::LeaseSweep), swept);
    assert_eq!(h.s.lease_ids(0, 10), vec![id3], "the retried sweep expired nothing");
}

// ---------------------------------------------------------------------------------------------
// Snapshots (format 7) and the state hash.

/// A store with two leases holding keys, an unleased key, sessions, and a lease with no keys.
fn store_with_leases() -> H {
    let mut h = H::new();
    let a = h.grant(0, 100);
    let b = h.grant(5, 1000);
    let c = h.grant(6, 30);
    h.send(P, 1_010, Some(SessionRef { client: ClientId(1), seq: 1 }), leased(a, vec![put("a1", "x"), put("a2", "y")])).unwrap();
    h.p(20, leased(b, vec![put("b1", "z")])).unwrap();
    h.p(20, plain_put("free", "v")).unwrap();
    h.p(25, WriteOp::LeaseKeepAlive { id: c }).unwrap();
    assert_eq!(h.s.lease_ids(0, 10), vec![a, b, c]);
    h
}

#[test]
fn format_7_snapshots_round_trip_leases() {
    let mut h = store_with_leases();
    let meta = h.s.snapshot(64).meta();
    assert_eq!((meta.format, meta.cluster_version, meta.leases), (7, 3, 3));
    let whole: Vec<u8> = h.s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    for chunk in [1, 3, 17, 64, 4096] {
        let chunks: Vec<Vec<u8>> = h.s.snapshot(chunk).collect();
        assert_eq!(chunks.concat(), whole);
        let r = Store::restore(config(), &chunks).unwrap();
        assert!(r == h.s);
        assert_eq!(r.state_hash(), h.s.state_hash());
    }
    // The restored replica goes on exactly like the original: same expiries, same keepalives,
    // the same extension at a change of proposer.
    let mut r = H { s: Store::restore(config(), [&whole]).unwrap(), index: h.index, terms: Terms { last: h.terms.last, round: h.terms.round, previous: h.terms.previous } };
    let ids = h.s.lease_ids(0, 10);
    for (t, op) in [
        (60, WriteOp::LeaseSweep),
        (99, WriteOp::LeaseKeepAlive { id: ids[1] }),
        (100, WriteOp::LeaseSweep),
        (150, leased(ids[1], vec![put("b2", "w")])),
    ] {
        assert_eq!(r.p(t, op.clone()), h.p(t, op));
        assert!(r.s == h.s);
    }
    assert_eq!(r.sweep_by(Q, 5), h.sweep_by(Q, 5));
    assert_eq!(r.s.state_hash(), h.s.state_hash());
    assert_eq!(h.s.lease(ids[1]).unwrap().keys, vec![k("b1"), k("b2")]);
}

#[test]
fn snapshot_formats_follow_the_cluster_version() {
    for (v, format) in [(1, 5), (2, 6), (3, 7)] {
        let mut h = H::at_version(v);
        h.p(0, plain_put("a", "1")).unwrap();
        let meta = h.s.snapshot(64).meta();
        assert_eq!((meta.format, meta.cluster_version, meta.leases), (format, v, 0));
        let chunks: Vec<Vec<u8>> = h.s.snapshot(64).collect();
        let r = Store::restore(config(), &chunks).unwrap();
        assert!(r == h.s);
        assert_eq!(r.state_hash(), h.s.state_hash());
    }
}

#[test]
fn the_state_hash_covers_deadlines_and_attachments() {
    // Two stores that differ only in a deadline.
    let mut x = H::new();
    let mut y = H::new();
    for h in [&mut x, &mut y] {
        h.grant(0, 100);
    }
    x.p(50, WriteOp::LeaseKeepAlive { id: 1 }).unwrap();
    y.p(50, WriteOp::LeaseSweep).unwrap();
    assert_eq!((x.s.len(), x.s.log_clock_ms(), x.s.lease_count()), (y.s.len(), y.s.log_clock_ms(), y.s.lease_count()));
    assert_ne!(x.remaining(1), y.remaining(1));
    assert_ne!(x.s.state_hash(), y.s.state_hash());
    // Two stores that differ only in whether a key is attached.
    let mut x = H::new();
    let mut y = H::new();
    for h in [&mut x, &mut y] {
        h.grant(0, 100);
    }
    x.p(1, leased(1, vec![put("a", "v")])).unwrap();
    y.p(1, plain_put("a", "v")).unwrap();
    assert_eq!(x.s.get(b"a"), y.s.get(b"a"));
    assert_ne!(x.s.lease_of(b"a"), y.s.lease_of(b"a"));
    assert_ne!(x.s.state_hash(), y.s.state_hash());
    // And the same lease state reached by different histories hashes the same.
    let mut x = H::new();
    let mut y = H::new();
    x.grant(0, 100);
    x.p(0, leased(1, vec![put("a", "v")])).unwrap();
    x.p(0, plain_put("a", "v")).unwrap();
    y.grant(0, 100);
    y.p(0, plain_put("b", "v")).unwrap();
    y.p(0, plain_put("a", "v")).unwrap();
    y.p(0, WriteOp::Delete { key: k("b"), guard: None }).unwrap();
    x.s.skip(4).unwrap();
    assert!(x.s == y.s);
    assert_eq!(x.s.state_hash(), y.s.state_hash());
}

#[test]
fn lease_ids_pages_and_never_panics() {
    let h = store_with_leases();
    let ids = h.s.lease_ids(0, usize::MAX);
    assert_eq!(ids.len(), 3);
    assert_eq!(h.s.lease_ids(ids[0], 1), vec![ids[1]]);
    assert_eq!(h.s.lease_ids(ids[0] - 1, 2), ids[..2].to_vec());
    assert_eq!(h.s.lease_ids(ids[2], 10), Vec::<u64>::new());
    assert_eq!(h.s.lease_ids(u64::MAX, 10), Vec::<u64>::new());
    assert_eq!(h.s.lease(0), None);
    assert_eq!(h.s.lease(u64::MAX), None);
}

// --- Corrupt lease records.

/// A lease record as format 7 writes it (to build corrupt ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    id: u64,
    ttl_ms: u64,
    deadline_ms: u64,
    keys: Vec<Key>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Key(#[serde(with = "kvstore::bytes")] Vec<u8>);

/// Format 7's header record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: u16,
    last_applied: u64,
    log_clock_ms: u64,
    last_stamp: Option<Stamp>,
    entries: u64,
    sessions: u64,
    cluster_version: u32,
    leases: u64,
}

const TAG_HEADER: u8 = 1;
const TAG_LEASE: u8 = 5;

fn frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&bytes[..8], MAGIC);
    let mut out = Vec::new();
    let mut at = 8;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((bytes[at + 4], bytes[at + 5..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    out
}

fn assemble(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (tag, body) in frames {
        out.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
        out.push(*tag);
        out.extend_from_slice(body);
    }
    out
}

fn restore(bytes: &[u8]) -> Result<Store, SnapshotError> {
    Store::restore(config(), [bytes])
}

fn is_invalid(r: Result<Store, SnapshotError>) -> bool {
    matches!(r, Err(SnapshotError::Invalid(_)))
}

#[test]
fn corrupt_lease_records_are_invalid_not_a_panic() {
    let h = store_with_leases();
    let good: Vec<u8> = h.s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    let fr = frames(&good);
    assert_eq!(assemble(&fr), good);
    let lease_at: Vec<usize> = fr.iter().enumerate().filter(|(_, (t, _))| *t == TAG_LEASE).map(|(i, _)| i).collect();
    assert_eq!(lease_at.len(), 3);
    let rec = |i: usize| -> LeaseRecord { postcard::from_bytes(&fr[lease_at[i]].1).unwrap() };
    // The records decode as the test reads them, and encode back to the same bytes.
    for i in 0..3 {
        assert_eq!(postcard::to_stdvec(&rec(i)).unwrap(), fr[lease_at[i]].1);
    }
    assert_eq!(rec(0).keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>(), vec![k("a1"), k("a2")]);
    let with = |i: usize, r: LeaseRecord| {
        let mut f = fr.clone();
        f[lease_at[i]].1 = postcard::to_stdvec(&r).unwrap();
        assemble(&f)
    };
    let keyed = |i: usize, keys: &[&str]| LeaseRecord { keys: keys.iter().map(|s| Key(k(s))).collect(), ..rec(i) };

    // A key that is not in the data.
    assert!(is_invalid(restore(&with(0, keyed(0, &["a1", "zz"])))));
    assert!(is_invalid(restore(&with(2, keyed(2, &["nope"])))));
    // A key held by two leases.
    assert!(is_invalid(restore(&with(1, keyed(1, &["a2"])))));
    // Keys out of order, or repeated, inside a lease.
    assert!(is_invalid(restore(&with(0, keyed(0, &["a2", "a1"])))));
    assert!(is_invalid(restore(&with(0, keyed(0, &["a1", "a1"])))));
    // Leases out of order, or repeated.
    let mut swapped = fr.clone();
    swapped.swap(lease_at[0], lease_at[1]);
    assert!(is_invalid(restore(&assemble(&swapped))));
    let mut repeated = fr.clone();
    repeated[lease_at[1]] = repeated[lease_at[0]].clone();
    assert!(is_invalid(restore(&assemble(&repeated))));
    // Ids outside 1..=last_applied, a zero TTL.
    assert!(is_invalid(restore(&with(0, LeaseRecord { id: 0, ..rec(0) }))));
    assert!(is_invalid(restore(&with(2, LeaseRecord { id: h.s.last_applied() + 1, ..rec(2) }))));
    assert!(is_invalid(restore(&with(1, LeaseRecord { ttl_ms: 0, ..rec(1) }))));
    // A well-formed record with another deadline: the state hash catches it.
    assert!(matches!(restore(&with(1, LeaseRecord { deadline_ms: rec(1).deadline_ms + 1, ..rec(1) })), Err(SnapshotError::HashMismatch { .. })));

    // The header's lease count must match the records.
    let header: Header = postcard::from_bytes(&fr[0].1).unwrap();
    assert_eq!(fr[0].0, TAG_HEADER);
    assert_eq!(postcard::to_stdvec(&header).unwrap(), fr[0].1);
    let counted = |n: u64| {
        let mut f = fr.clone();
        f[0].1 = postcard::to_stdvec(&Header { leases: n, ..header.clone() }).unwrap();
        restore(&assemble(&f))
    };
    assert_eq!(counted(4).unwrap_err(), SnapshotError::UnexpectedRecord { expected: "lease", got: 4 });
    assert_eq!(counted(2).unwrap_err(), SnapshotError::UnexpectedRecord { expected: "trailer", got: TAG_LEASE });
    // Format 7 belongs to cluster versions 3 and up.
    let mut f = fr.clone();
    f[0].1 = postcard::to_stdvec(&Header { cluster_version: 2, ..header.clone() }).unwrap();
    assert!(is_invalid(restore(&assemble(&f))));
    // A lease record in a format-6 snapshot is out of place.
    let mut v2 = H::at_version(2);
    v2.p(0, plain_put("a", "1")).unwrap();
    let mut f = frames(&v2.s.snapshot(usize::MAX).collect::<Vec<_>>().concat());
    f.insert(f.len() - 1, (TAG_LEASE, postcard::to_stdvec(&LeaseRecord { id: 1, ttl_ms: 10, deadline_ms: 10, keys: vec![Key(k("a"))] }).unwrap()));
    assert_eq!(restore(&assemble(&f)).unwrap_err(), SnapshotError::UnexpectedRecord { expected: "trailer", got: TAG_LEASE });
}

#[test]
fn any_corruption_of_a_format_7_snapshot_is_an_error_never_a_panic() {
    let h = store_with_leases();
    let good: Vec<u8> = h.s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    for cut in 0..good.len() {
        assert!(restore(&good[..cut]).is_err(), "truncated at {cut}");
    }
    for at in 0..good.len() {
        for x in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= x;
            // Chunked too, so a corrupt length meets a partial frame.
            let chunked: Vec<&[u8]> = bad.chunks(7).collect();
            for r in [restore(&bad), Store::restore(config(), chunked)].into_iter().flatten() {
                // Only an encoding of the very same state may be accepted.
                assert!(r == h.s, "corruption at byte {at} (^{x:#x}) accepted as another state");
            }
        }
    }
}
