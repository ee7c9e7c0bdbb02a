//! Review of 8a06227 (term in the tick): a run of one old term, adopted after a later leader's
//! keepalive, cut a lease short when the run spanned a TTL. Fixed by the log clock's term order
//! (`kvstore::SessionTable::is_stale`, cluster version 3); `Bugs::clock_without_term_order` puts
//! the old rule back and the schedule catches it. See `kvstore/tests/review_clock2.rs` for the
//! store-level schedule.
//!
//! Schedule (3 nodes, leader_lease_ms 3000 on every node, pipeline window 8, lease TTL 1000):
//! * g: node 1 leads (term a) and grants the lease; chosen everywhere. Node 1 is cut off at once
//!   and, still leader (its leader lease has not lapsed), proposes five writes at g (slots
//!   s..s+4) and, at g+1000, its sweep (slot s+5): only its own acceptor takes them.
//! * g+1050: node 2 is elected with node 3 (they saw nothing above s-1): its no-op and the
//!   holder's keepalive take slots s and s+1, chosen with node 3; the keepalive is acknowledged.
//! * Node 2 is cut off at once (before its heartbeat fills its fence); node 1 comes back and node
//!   3 is elected with node 1: its phase 1 adopts node 2's slots s, s+1 and node 1's term-a run
//!   s+2..s+5 (writes at g, sweep at g+1000). The run is one term: the clock credits 1000 ms at
//!   the sweep, which expires the lease a few ms after the keepalive was acknowledged.

use crate::node_test::{Net, Seen};
use crate::*;
use kvstore::{WriteOp, WriteOutcome};

fn grant(net: &mut Net, ttl_ms: u64) -> u64 {
    net.input(1, Input::Write { token: 900, session: None, op: WriteOp::LeaseGrant { ttl_ms }, forward: true });
    net.stabilize();
    let out = net.take(1).into_iter().find_map(|s| match s {
        Seen::Write(900, Ok(d)) => Some(d.output),
        _ => None,
    });
    match out {
        Some(Ok(r)) => match r.outcome {
            WriteOutcome::LeaseGranted { id, .. } => id,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// Returns (lease live at the end, ms between the keepalive's acknowledgement and the end).
fn old_term_run_adopted_after_a_keepalive(leader_lease_ms: u64, lose_accepts: bool, bugs: Bugs) -> (bool, u64) {
    let mut net = Net::new(3, |s| {
        s.bugs = bugs;
        s.initial_cluster_version = kvstore::MAX_CLUSTER_VERSION;
        s.leader_lease_ms = leader_lease_ms;
        s.pipeline_window = 8;
    });
    net.elect(1);
    // Node 1's first heartbeat fills its fence with no-ops (once per election): done and chosen.
    net.advance(200);
    for id in 1..=3 {
        net.take(id);
    }
    let lease = grant(&mut net, 1_000);
    let g = net.node(1).now.0;
    if lose_accepts {
        // Default leader lease: node 1's five Accepts to its peers are lost (a dropped peer
        // queue), but its heartbeats still reach them for a while: it last hears its quorum after
        // its writes, and is cut off only then, before it resends them (retry_ms 200).
        for t in 0..5u64 {
            net.input(1, Input::Write { token: 700 + t, session: None, op: crate::node_test::put(&format!("x{t}"), "stale"), forward: true });
            net.wire.retain(|e| !(e.to != paxos::NodeId(1) && matches!(e.msg, paxos::Message::Accept { .. })));
        }
        net.advance(60);
        net.cut.insert(paxos::NodeId(1));
    } else {
        net.cut.insert(paxos::NodeId(1));
        for t in 0..5u64 {
            net.input(1, Input::Write { token: 700 + t, session: None, op: crate::node_test::put(&format!("x{t}"), "stale"), forward: true });
            net.stabilize();
        }
    }
    // Node 1, cut off but still leading, proposes its sweep at g + 1000.
    net.advance(1_050 - net.node(1).now.0 + g);
    let st = net.node(1).replica().status();
    eprintln!("node 1 at {}: role {:?} ballot {:?} sweeps {}", net.node(1).now.0, st.role, st.ballot, net.node(1).counters().lease_sweeps);
    net.elect(2);
    net.input(2, Input::Write { token: 500, session: None, op: WriteOp::LeaseKeepAlive { id: lease }, forward: true });
    net.stabilize();
    let kept = net.take(2).into_iter().find_map(|s| match s {
        Seen::Write(500, r) => Some(r),
        _ => None,
    });
    assert!(matches!(kept, Some(Ok(ref d)) if d.output.is_ok()), "{kept:?}");
    let kept_at = net.node(2).now.0;
    net.cut.clear();
    net.cut.insert(paxos::NodeId(2));
    net.elect(3);
    net.advance(20);
    for id in 1..=3 {
        let st = net.node(id).replica().status();
        eprintln!("node {id}: role {:?} ballot {:?} commit {:?}, index {}, clock {}", st.role, st.ballot, st.commit, net.node(id).store().last_applied(), net.node(id).store().log_clock_ms());
    }
    let now = net.node(3).now.0;
    let s = net.node(3).store();
    eprintln!(
        "grant at {g}; keepalive acked at {kept_at}; at {now}: node 3 index {} clock {}, lease live {}, stale writes {:?}",
        s.last_applied(),
        s.log_clock_ms(),
        s.lease(lease).is_some(),
        (0..5).filter_map(|t| s.get(format!("x{t}").as_bytes()).map(|v| v.version)).collect::<Vec<_>>()
    );
    eprintln!("node 3 last stamp {:?}, lease {:?}, leases expired {}, node1 last stamp {:?}", s.sessions().last_stamp(), s.lease(lease), net.node(3).counters().leases_expired, net.node(1).store().sessions().last_stamp());
    assert!(now < kept_at + 1_000);
    (s.lease(lease).is_some(), now - kept_at)
}

#[test]
fn review_an_old_terms_adopted_run_does_not_cut_a_fresh_keepalive_short() {
    let (live, after) = old_term_run_adopted_after_a_keepalive(3_000, false, Bugs::default());
    assert!(live, "lease expired {after} ms after a keepalive acknowledged with a 1 s TTL");
}

/// The same with every default (leader lease 1000 ms = the smallest lease TTL): node 1's Accepts
/// for its writes are lost while its heartbeats go through for another 60 ms; it leads until
/// about g + 1060 and its sweep of g + 1000 lies inside that.
#[test]
fn review_default_leader_lease_and_lost_accepts_do_not_cut_a_fresh_keepalive_short() {
    let (live, after) = old_term_run_adopted_after_a_keepalive(1_000, true, Bugs::default());
    assert!(live, "lease expired {after} ms after a keepalive acknowledged with a 1 s TTL");
}

/// Both schedules catch the clock without the term order.
#[test]
fn a_clock_without_the_term_order_is_caught() {
    let bugs = Bugs { clock_without_term_order: true, ..Bugs::default() };
    for (lease_ms, lose) in [(3_000, false), (1_000, true)] {
        let (live, after) = old_term_run_adopted_after_a_keepalive(lease_ms, lose, bugs);
        assert!(!live, "with Bugs::clock_without_term_order the lease should end early; it lived {after} ms past the keepalive");
    }
}
