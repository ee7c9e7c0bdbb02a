//! Review: a re-elected leader (same process) whose own old-term proposal is adopted after
//! another leader's slots makes the log clock credit time that the other leader's slots were
//! already credited for, so a lease expires before its last keepalive's real time plus its TTL.

use kvstore::*;

fn config() -> StoreConfig {
    StoreConfig {
        max_clock_step_ms: 2_000,
        leases: LeaseConfig { max_leases: 3, max_keys_per_lease: 2, min_ttl_ms: 10, max_ttl_ms: 1000 },
        ..StoreConfig::default()
    }
}

#[test]
#[ignore = "review (known bug): a re-elected leader's adopted old-term slot runs the log clock ahead of real time and cuts a lease short; fix: the ballot in the tick (a format change behind the cluster version)"]
fn review_a_reelected_leaders_adopted_old_slot_must_not_cut_a_lease_short() {
    let mut s = Store::new(config());
    s.set_cluster_version(3);
    // A = node 1 process 1 (its monotonic clock reads real time); B = node 2 (offset 50_000).
    let a = |real: u64| Stamp::new(1, 1, real);
    let b = |real: u64| Stamp::new(2, 1, 50_000 + real);
    let mut index = 0;
    let mut apply = |s: &mut Store, stamp: Stamp, op: WriteOp| {
        index += 1;
        s.apply_request(index, &Request { session: None, stamp, op })
    };
    // Real 0: A leads and grants the lease.
    let id = match apply(&mut s, a(0), WriteOp::LeaseGrant { ttl_ms: 1_000 }).unwrap().outcome {
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
    apply(&mut s, a(100), WriteOp::LeaseSweep).unwrap();
    // Real 1_100: A's first new slot, a sweep.
    let out = apply(&mut s, a(1_100), WriteOp::LeaseSweep).unwrap();
    eprintln!("sweep at real 1100: {:?}, log clock {}", out.outcome, s.log_clock_ms());
    assert!(s.log_clock_ms() <= 1_100, "log clock {} ran ahead of real time 1100", s.log_clock_ms());
    assert!(
        s.lease(id).is_some(),
        "lease {id} expired at real time 1100 although its keepalive was sent at 890 with a 1000 ms TTL (held until 1890)"
    );
}
