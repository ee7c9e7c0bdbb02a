//! Review: a re-elected leader (same process) whose own old-term proposal is adopted after
//! another leader's slots. If its stamps named only its process, the log clock would credit time
//! that the other leader's slots were already credited for, and a lease would expire before its
//! last keepalive's real time plus its TTL. Synod's stamps name the leader's term (the ballot
//! round with the process, `paxos::Tick::epoch`), so the old-term slot is another proposer.

use kvstore::*;

fn config() -> StoreConfig {
    StoreConfig {
        max_clock_step_ms: 2_000,
        leases: LeaseConfig { max_leases: 3, max_keys_per_lease: 2, min_ttl_ms: 10, max_ttl_ms: 1000 },
        ..StoreConfig::default()
    }
}

/// The schedule; `a_old_term` and `a_new_term` are the `process` field node 1's stamps carry in
/// its first and its second term. Returns whether the lease lived, and the log clock at the end.
fn schedule(a_old_term: u64, b_term: u64, a_new_term: u64) -> (bool, u64) {
    let mut s = Store::new(config());
    s.set_cluster_version(3);
    // A = node 3 (its monotonic clock reads real time); B = node 2 (offset 50_000). (A's node id
    // is the higher one, so the term order's node tie-break does not hide process-only stamps.)
    let a_old = |real: u64| Stamp::new(3, a_old_term, real);
    let a_new = |real: u64| Stamp::new(3, a_new_term, real);
    let b = |real: u64| Stamp::new(2, b_term, 50_000 + real);
    let mut index = 0;
    let mut apply = |s: &mut Store, stamp: Stamp, op: WriteOp| {
        index += 1;
        s.apply_request(index, &Request { session: None, stamp, op })
    };
    // Real 0: A leads and grants the lease.
    let id = match apply(&mut s, a_old(0), WriteOp::LeaseGrant { ttl_ms: 1_000 }).unwrap().outcome {
        WriteOutcome::LeaseGranted { id, .. } => id,
        o => panic!("{o:?}"),
    };
    // Real 100: A, isolated, proposes a sweep for slot 4; only its own acceptor accepts it.
    // Real 200: B is elected by B and C; it fills slots 2 and 3.
    apply(&mut s, b(200), WriteOp::LeaseSweep).unwrap();
    // Real 890: the holder sends a keepalive; B puts it in slot 3 at real 900 and it is acked.
    let kept = apply(&mut s, b(900), WriteOp::LeaseKeepAlive { id }).unwrap();
    assert!(matches!(kept.outcome, WriteOutcome::LeaseKept { .. }));
    // B is cut off before slot 4 is chosen. A (same process) reconnects with C, is elected with
    // A and C, and its phase 1 finds its own old value (tick 100) for slot 4: adopted as is.
    apply(&mut s, a_old(100), WriteOp::LeaseSweep).unwrap();
    // Real 1_100: A's first new slot, a sweep.
    let out = apply(&mut s, a_new(1_100), WriteOp::LeaseSweep).unwrap();
    eprintln!("sweep at real 1100: {:?}, log clock {}", out.outcome, s.log_clock_ms());
    (s.lease(id).is_some(), s.log_clock_ms())
}

#[test]
fn a_reelected_leaders_adopted_old_slot_does_not_cut_a_lease_short() {
    // Terms as `paxos::Tick::epoch_of` spells them: round 1 and round 3 of process 1.
    let (live, clock) = schedule(1 << 32 | 1, 2 << 32 | 1, 3 << 32 | 1);
    assert!(clock <= 1_100, "log clock {clock} ran ahead of real time 1100");
    assert!(live, "the lease expired at real time 1100 although its keepalive was sent at 890 with a 1000 ms TTL (held until 1890)");
}

/// Stamps that name only the process (before terms) at cluster version 3: the term order sorts
/// them by node id, not by election, so the successor B (node 2) counts as older than A (node 3)
/// and its slots are ignored, and A's adopted old slot is measured against A's new readings:
/// the lease is cut short as before the fix. Terms in the ticks are what the order needs.
#[test]
fn stamps_that_name_only_the_process_cut_it_short() {
    let (live, clock) = schedule(1, 1, 1);
    eprintln!("process-only stamps: lease live {live}, log clock {clock} at real time 1100");
    assert!(!live && clock > 1_000, "process-only stamps: lease live {live}, log clock {clock}");
}
