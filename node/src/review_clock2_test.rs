//! Adversarial review of fbed167 (the log clock orders terms, cluster version 3) at the node layer.
//!
//! Finding: a cluster founded from a backup (`synod node --restore`, `driver::NodeLoop::restored`
//! = `Node::recover` with the backup's store at slot 0, promise `Ballot::ZERO`) keeps the backup's
//! `last_stamp`, a term of the *old* cluster, while its own ballots start again at round 1 and its
//! start numbers at 1 (a new `--prefix` or a new etcd: `etcd::draw_start`). So:
//!
//! * the backup's last stamp has a round above 1 (any leader change in the old cluster), or the
//!   same round from a higher node id: every stamp of the new leader is below it
//!   (`SessionTable::is_stale`), the log clock never moves, no lease or session expires, and the
//!   leader proposes a sweep every `SWEEP_RETRY_MS` for ever (`sweep_due` is `now` whenever the
//!   last stamp is not its own);
//! * the backup's last stamp is (round 1, node n, start 1) and node n leads the new cluster at
//!   round 1 with start 1 (the usual case for a cluster that never changed leader): the *same*
//!   term key, so `same_proposer` holds across two different processes; the new process's
//!   monotonic readings start near 0, below the old process's (its uptime): nothing is credited
//!   and the reference is not lowered, so the clock stalls for the old process's whole uptime.

use crate::node_test::{put, Net, Seen};
use crate::*;
use kvstore::{Store, WriteOp, WriteOutcome};
use paxos::{Configuration, Incarnation, Member, NodeId, Slot, SnapshotMeta, Time};

fn member(id: u64) -> Member {
    Member { node: NodeId(id), incarnation: Incarnation(1) }
}

/// Founders `1..=n` of a new cluster restored from `backup` (as `NodeLoop::restored`, after
/// `Store::forget_clock_reference`; without it both tests below fail).
fn restored(n: u64, backup: &Store) -> Net {
    let config = Configuration::bootstrap((1..=n).map(member));
    Net::with_nodes((1..=n).map(|id| {
        let mut settings = NodeSettings::new(member(id), 1, Some(config.clone()));
        settings.initial_cluster_version = kvstore::MAX_CLUSTER_VERSION;
        let disk = paxos::Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config: config.clone() });
        // As `synod node --restore` does (driver/src/server.rs): the new cluster's clock forgets
        // the old cluster's last stamp.
        let mut store = backup.clone();
        store.forget_clock_reference();
        Node::recover(settings, Time(0), store, disk)
    }))
}

fn grant(net: &mut Net, at: u64, ttl_ms: u64) -> u64 {
    net.input(at, Input::Write { token: 900, session: None, op: WriteOp::LeaseGrant { ttl_ms }, forward: true });
    net.stabilize();
    let out = net.take(at).into_iter().find_map(|s| match s {
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

/// The backup: a 3-node cluster at cluster version 3 whose leaders were `leaders` in turn (each
/// elected after `uptime_ms / leaders.len()` of idle time), holding a lease of `ttl_ms` granted
/// through the last one; its store encoded and decoded as a backup file is.
fn backup(leaders: &[u64], uptime_ms: u64, ttl_ms: u64) -> (Store, u64) {
    let mut net = Net::new(3, |s| s.initial_cluster_version = kvstore::MAX_CLUSTER_VERSION);
    for &l in leaders {
        net.elect(l);
        net.advance(uptime_ms / leaders.len() as u64);
        net.input(l, Input::Write { token: 1, session: None, op: put("k", "v"), forward: true });
        net.stabilize();
        net.advance(200);
    }
    let last = *leaders.last().expect("a leader");
    let lease = grant(&mut net, last, ttl_ms);
    let s = net.node(last).store();
    eprintln!("backup: index {} clock {} last stamp {:?} (term key {:?})", s.last_applied(), s.log_clock_ms(), s.sessions().last_stamp(), s.sessions().last_stamp().map(|x| x.term_key()));
    let chunks: Vec<Vec<u8>> = s.snapshot(4096).collect();
    (Store::restore(*s.config(), &chunks).expect("the backup decodes"), lease)
}

/// Returns (lease still live, log clock, sweeps proposed) after `run_ms` of the new cluster.
fn restored_cluster(backup: &Store, lease: u64, run_ms: u64) -> (bool, u64, u64) {
    let mut m = restored(3, backup);
    m.elect(1);
    m.advance(run_ms);
    let n = m.node(1);
    let st = n.replica().status();
    eprintln!(
        "new cluster after {run_ms} ms: leader role {:?} ballot {:?}, index {}, clock {}, last stamp {:?}, lease live {}, sweeps {}, tick epoch now {:?}",
        st.role,
        st.ballot,
        n.store().last_applied(),
        n.store().log_clock_ms(),
        n.store().sessions().last_stamp(),
        n.store().lease(lease).is_some(),
        n.counters().lease_sweeps,
        n.replica().tick_epoch_now()
    );
    (n.store().lease(lease).is_some(), n.store().log_clock_ms(), n.counters().lease_sweeps)
}

/// The old cluster changed leader (1, then 2, then 3): the backup's last stamp is of round 3 from
/// node 3. The restored cluster's leader (node 1, round 1) is judged stale for ever.
#[test]
fn review_a_restored_cluster_expires_its_leases() {
    let (store, lease) = backup(&[1, 2, 3], 3_000, 1_000);
    let (live, clock, sweeps) = restored_cluster(&store, lease, 20_000);
    assert!(!live, "a 1 s lease outlived 20 s of the restored cluster (log clock {clock}, {sweeps} sweeps proposed)");
}

/// The old cluster never changed leader (node 1, round 1, start 1) and ran for 10 minutes: the
/// restored cluster's leader (node 1, round 1, start 1) has the *same* term key, and its readings
/// (from 0) stay below the old process's until its own uptime passes it.
#[test]
fn review_a_restored_cluster_with_the_same_term_key_expires_its_leases() {
    let (store, lease) = backup(&[1], 600_000, 1_000);
    let (live, clock, sweeps) = restored_cluster(&store, lease, 20_000);
    assert!(!live, "a 1 s lease outlived 20 s of the restored cluster (log clock {clock}, {sweeps} sweeps proposed)");
}
