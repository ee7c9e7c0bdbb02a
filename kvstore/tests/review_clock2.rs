//! Review (after 8a06227, term in the tick): one term's *run* of adopted old slots could still cut
//! a lease short by nearly its whole TTL. Fixed by the log clock's term order (cluster version 3,
//! `SessionTable::is_stale`): the run's stamps are of an older term than the keepalive's, so the
//! clock ignores them. (`node/src/review_clock_test.rs` shows the old rule caught.)
//!
//! The log clock credits the time between consecutive slots of one term. A lease whose last
//! keepalive K is in the log *before* a run of an older term gets a full TTL at the run's first
//! slot (proposer change), measured from the clock there; the run then credits its own span. If
//! the run was proposed over more than a TTL, and its first slot was proposed *before* K's
//! keepalive was sent, a sweep inside the run ends the lease soon after K was acknowledged.
//!
//! Schedule (3 nodes; A = node 1 term a, U = node 2 term u, C = whoever adopts):
//! * real 0: A grants the lease (TTL 1000), chosen. A is then cut off from its peers but stays
//!   leader (its leader lease, or stale acks, or lost Accepts while heartbeats pass) and proposes
//!   slot s (a write, real 0) and slot s+1 (its sweep, real 1000); only A accepts them.
//! * real 1050: U is elected with node 3 (their max accepted slot is s-1), and puts its no-op and
//!   the holder's keepalive K (sent at 1040) at slots below A's run; chosen with node 3, acked.
//! * U crashes before it fills its fence; C's phase 1 (node 1 + node 3) adopts U's K, then A's
//!   run above it. Applied at real ~1060: the run's sweep sees the clock +1000 since the run's
//!   first slot: the lease ends ~20 ms after a keepalive acknowledged with a 1000 ms TTL.
//!
//! The stamps use the term encoding of `paxos::Tick::epoch_of`. The node-level version of this
//! schedule is `node/src/review_clock_test.rs`.

use kvstore::*;

fn config() -> StoreConfig {
    StoreConfig { max_clock_step_ms: 10_000, ..StoreConfig::default() }
}

fn term(round: u64, process: u64) -> u64 {
    (round << 32) | process
}

#[test]
fn review_an_adopted_old_term_run_longer_than_the_ttl_must_not_cut_a_fresh_keepalive_short() {
    let mut s = Store::new(config());
    s.set_cluster_version(3);
    // A: node 1, term (round 1, process 1); its monotonic clock reads real time.
    let a = |real: u64| Stamp::new(1, term(1, 1), real);
    // U: node 2, term (round 2, process 1); offset 50_000.
    let u = |real: u64| Stamp::new(2, term(2, 1), 50_000 + real);
    let mut index = 0;
    let mut apply = |s: &mut Store, stamp: Stamp, op: WriteOp| {
        index += 1;
        s.apply_request(index, &Request { session: None, stamp, op })
    };
    // Real 0: A grants the lease.
    let id = match apply(&mut s, a(0), WriteOp::LeaseGrant { ttl_ms: 1_000 }).unwrap().outcome {
        WriteOutcome::LeaseGranted { id, .. } => id,
        o => panic!("{o:?}"),
    };
    // Real 1050: U's keepalive (sent by the holder at 1040), chosen right after the grant.
    let kept = apply(&mut s, u(1_050), WriteOp::LeaseKeepAlive { id }).unwrap();
    assert!(matches!(kept.outcome, WriteOutcome::LeaseKept { .. }));
    // Real ~1060: C adopts A's run: a write A proposed at real 0, and A's sweep of real 1000.
    apply(&mut s, a(0), WriteOp::Put { key: b"x".to_vec(), value: b"stale".to_vec(), guard: None }).unwrap();
    let out = apply(&mut s, a(1_000), WriteOp::LeaseSweep).unwrap();
    eprintln!("A's adopted sweep: {:?}, log clock {}", out.outcome, s.log_clock_ms());
    assert!(
        s.lease(id).is_some(),
        "lease {id} expired at real ~1060 although its keepalive was sent at 1040 with a 1000 ms TTL (held until 2040)"
    );
}

/// The same schedule with the run shorter than the TTL (A proposed its sweep 900 ms after the
/// run's first slot): the lease lives. The harm needs the run itself to span a TTL.
#[test]
fn an_adopted_run_shorter_than_the_ttl_does_not_cut_it() {
    let mut s = Store::new(config());
    s.set_cluster_version(3);
    let a = |real: u64| Stamp::new(1, term(1, 1), real);
    let u = |real: u64| Stamp::new(2, term(2, 1), 50_000 + real);
    let mut index = 0;
    let mut apply = |s: &mut Store, stamp: Stamp, op: WriteOp| {
        index += 1;
        s.apply_request(index, &Request { session: None, stamp, op })
    };
    let id = match apply(&mut s, a(0), WriteOp::LeaseGrant { ttl_ms: 1_000 }).unwrap().outcome {
        WriteOutcome::LeaseGranted { id, .. } => id,
        o => panic!("{o:?}"),
    };
    apply(&mut s, u(1_050), WriteOp::LeaseKeepAlive { id }).unwrap();
    apply(&mut s, a(100), WriteOp::Put { key: b"x".to_vec(), value: b"stale".to_vec(), guard: None }).unwrap();
    apply(&mut s, a(1_000), WriteOp::LeaseSweep).unwrap();
    assert!(s.lease(id).is_some());
}
