//! Adversarial review of fbed167 (the log clock orders terms from cluster version 3) at the store
//! level. Stamps use `paxos::Tick::epoch_of`'s encoding: process = round << 32 | start number.
//! The node-level restore schedules are in `node/src/review_clock2_test.rs`.
//!
//! Run the mutation checks with `cargo nextest run -p kvstore --features bugs --test review_clock3`.

use kvstore::*;

fn config() -> StoreConfig {
    StoreConfig { max_clock_step_ms: 10_000, ..StoreConfig::default() }
}

fn term(round: u64, start: u64) -> u64 {
    (round << 32) | start
}

struct Log {
    s: Store,
    index: u64,
}

impl Log {
    fn new() -> Log {
        let mut s = Store::new(config());
        s.set_cluster_version(3);
        Log { s, index: 0 }
    }

    fn from(s: Store) -> Log {
        let index = s.last_applied();
        Log { s, index }
    }

    fn apply(&mut self, stamp: Stamp, op: WriteOp) -> WriteOutcome {
        self.index += 1;
        self.s.apply_request(self.index, &Request { session: None, stamp, op }).expect("applies").outcome
    }

    fn grant(&mut self, stamp: Stamp, ttl_ms: u64) -> u64 {
        match self.apply(stamp, WriteOp::LeaseGrant { ttl_ms }) {
            WriteOutcome::LeaseGranted { id, .. } => id,
            o => panic!("{o:?}"),
        }
    }

    fn noop(&mut self, stamp: Stamp) {
        self.apply(stamp, WriteOp::Put { key: b"n".to_vec(), value: b"n".to_vec(), guard: None });
    }

    /// The store a new cluster restored from a backup starts with (`synod node --restore`: the
    /// snapshot round trip, then `Store::forget_clock_reference`; without it the two restore
    /// tests below fail).
    fn restored(&self) -> Log {
        let chunks: Vec<Vec<u8>> = self.s.snapshot(97).collect();
        let mut store = Store::restore(config(), &chunks).expect("round trip");
        store.forget_clock_reference();
        Log::from(store)
    }
}

// ---------------------------------------------------------------------------------------------
// LIVENESS 1: a cluster founded from a backup (`--restore`) starts its ballots at round 1 and its
// start numbers at 1, but the backup's store keeps the old cluster's `last_stamp`.

/// Old cluster: node 3 led last, in round 3. New cluster (restored): node 1 leads in round 1. Every
/// one of its stamps is "older" than the backup's last stamp: the clock never moves.
#[test]
fn review_a_restored_clusters_leader_moves_the_clock() {
    let mut old = Log::new();
    let l3 = |ms: u64| Stamp::new(3, term(3, 1), ms);
    old.noop(l3(5_000));
    let id = old.grant(l3(6_000), 1_000);
    let mut new = old.restored();
    let l1 = |ms: u64| Stamp::new(1, term(1, 1), ms);
    for t in (0..=20_000).step_by(1_000) {
        new.apply(l1(t), WriteOp::LeaseSweep);
    }
    eprintln!("restored: clock {} last stamp {:?}, lease live {}", new.s.log_clock_ms(), new.s.sessions().last_stamp(), new.s.lease(id).is_some());
    assert!(new.s.lease(id).is_none(), "a 1 s lease outlived 20 s of the restored cluster's leader (log clock {})", new.s.log_clock_ms());
}

/// Old cluster: node 1 led since founding (round 1, start 1) for an hour. New cluster: node 1 again
/// leads in round 1 with start 1 (a new prefix draws start numbers from 1): the same term key, so
/// two processes count as one proposer; the new process's readings (from 0) stay below the old
/// one's and nothing is credited for an hour.
#[test]
fn review_a_restored_clusters_leader_with_the_same_term_key_moves_the_clock() {
    let mut old = Log::new();
    let p = |ms: u64| Stamp::new(1, term(1, 1), ms);
    old.noop(p(0));
    let id = old.grant(p(3_600_000), 1_000);
    let mut new = old.restored();
    for t in (0..=20_000).step_by(1_000) {
        new.apply(p(t), WriteOp::LeaseSweep);
    }
    assert!(new.s.lease(id).is_none(), "a 1 s lease outlived 20 s of the restored cluster's leader (log clock {})", new.s.log_clock_ms());
}

// ---------------------------------------------------------------------------------------------
// DETERMINISM / upgrade: logs written at cluster version 3 by builds before 8a06227 (leases, but
// ticks naming the process only: round 0). The term order then sorts leaders by node id.

// On such a log, node 2 led, then node 1 was elected (a legitimate successor): its stamps
// (0, 1, 1) sort below node 2's (0, 2, 1), so the term order ignores node 1's whole term while
// the build that wrote the log counted it, and a replica replaying its WAL with this build
// computes another clock than one whose snapshot already holds it. The review's two tests of
// this stood here; no release ran version 3 before the term order, so such data directories
// are unsupported (docs/REPORT.md §7).


// ---------------------------------------------------------------------------------------------
// SAFETY: a deposed leader's keepalive adopted *between* its successor's slots (REPORT §7 speaks
// of one adopted before them). It is stale, so the clock does not take it as the reference; the
// deadline is the clock at the successor's previous slot + TTL, and the successor's next slot
// credits its time since that slot, which began before the keepalive was sent.
//
// Paxos schedule (3 nodes): A = node 1 (round 1) grants at real 0 and is cut off at 50, still
// leading under its leader lease; it proposes a write at slot s (60) and the keepalive K at slot
// s+1 (900, sent by the holder at 900). B = node 2 (round 2) is elected with node 3 at 100 (max
// slot s-1) and proposes slot s (100), s+1 (1140: its Accept to node 3 is lost) and its sweep at
// s+2 (1150, accepted by node 3); B dies. C = node 3 (round 3) with node 1 adopts s = B's (round
// 2 beats 1), s+1 = K (only node 1 has it), s+2 = B's sweep. Log: grant(A,0) B(100) K(A,900)
// sweep(B,1150).

fn deposed_keepalive_between_successor_slots() -> (bool, u64) {
    let mut log = Log::new();
    let a = |real: u64| Stamp::new(1, term(1, 1), real);
    let b = |real: u64| Stamp::new(2, term(2, 1), 70_000 + real);
    let id = log.grant(a(0), 1_000);
    log.noop(b(100));
    assert!(matches!(log.apply(a(900), WriteOp::LeaseKeepAlive { id }), WriteOutcome::LeaseKept { .. }));
    let out = log.apply(b(1_150), WriteOp::LeaseSweep);
    eprintln!("B's sweep at real 1150: {out:?}, clock {}", log.s.log_clock_ms());
    (log.s.lease(id).is_some(), log.s.log_clock_ms())
}

#[test]
#[ignore = "known bug (REPORT §7, bounded by the deposed leader's leader lease): a deposed leader's keepalive adopted between its successor's slots is measured from the successor's earlier slot"]
fn review_a_deposed_keepalive_adopted_between_successor_slots_holds_a_ttl() {
    let (live, clock) = deposed_keepalive_between_successor_slots();
    assert!(live, "the lease expired at real 1150 although its keepalive was sent at 900 with a 1000 ms TTL (log clock {clock})");
}

/// The shortfall is bounded: the keepalive was proposed 800 ms after B's term began (inside A's
/// leader lease), and the lease ended 750 ms before 900 + 1000.
#[test]
fn a_deposed_keepalive_between_successor_slots_is_short_by_at_most_the_overlap() {
    let (live, clock) = deposed_keepalive_between_successor_slots();
    assert!(!live);
    // Expired at real 1150; it should have lived until 1900: 750 ms short <= 900 - 100.
    assert!(clock <= 1_050);
}

// ---------------------------------------------------------------------------------------------
// Do the review tests fail without the rule? `kvstore/tests/review_clock2.rs`'s schedule with
// `Store::no_term_order` (the rule off): the lease must then expire.

#[cfg(feature = "bugs")]
#[test]
fn review_clock2s_schedule_catches_the_clock_without_the_term_order() {
    for no_order in [false, true] {
        let mut log = Log::new();
        log.s.no_term_order = no_order;
        let a = |real: u64| Stamp::new(1, term(1, 1), real);
        let u = |real: u64| Stamp::new(2, term(2, 1), 50_000 + real);
        let id = log.grant(a(0), 1_000);
        log.apply(u(1_050), WriteOp::LeaseKeepAlive { id });
        log.noop(a(0));
        log.apply(a(1_000), WriteOp::LeaseSweep);
        assert_eq!(log.s.lease(id).is_some(), !no_order, "no_term_order {no_order}");
    }
}

// ---------------------------------------------------------------------------------------------
// Checked sound: a raise from cluster version 2 to 3 mid-log, after stamps of the previous
// release (process = start number only, round 0) and after an adopted old-term stamp counted at
// version 2: the first leader of the new build counts at once (its round is at least 1).
#[test]
fn a_raise_to_version_3_after_process_only_stamps_keeps_the_clock_moving() {
    let mut s = Store::new(config());
    s.set_cluster_version(2);
    let mut log = Log::from(s);
    // 0.2.0 leader node 3 (start 7), then a new-build leader node 2 in round 4, then an adopted
    // slot of node 3's old 0.2.0 term (counted at version 2: it becomes the reference).
    log.noop(Stamp::new(3, 7, 1_000));
    log.noop(Stamp::new(3, 7, 2_000));
    log.noop(Stamp::new(2, term(4, 2), 50));
    log.noop(Stamp::new(3, 7, 2_500));
    log.s.set_cluster_version(3);
    let l = |ms: u64| Stamp::new(1, term(5, 3), ms);
    let id = log.grant(l(0), 1_000);
    for t in (0..=3_000).step_by(500) {
        log.apply(l(t), WriteOp::LeaseSweep);
    }
    assert!(log.s.lease(id).is_none(), "clock {}", log.s.log_clock_ms());
}
