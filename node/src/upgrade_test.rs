//! The cluster version at the node layer (docs/upgrades.md): writes of a newer format wait for
//! it, the version rises only to what every member reads, a joiner too old for it is refused, and
//! a replica that meets a version above its build halts instead of skipping the slot. Each rule
//! that has a bug switch is shown to catch it.

use crate::node_test::{put, Net, Seen};
use crate::*;
use kvstore::{WriteOp, WriteOutcome, WriteResult, MAX_CLUSTER_VERSION};
use paxos::{ConfigChange, Incarnation, Member, NodeId, RequestId};
use std::collections::BTreeMap;

fn delete_range(prefix: &str) -> WriteOp {
    WriteOp::DeleteRange { start: prefix.as_bytes().to_vec(), end: kvstore::read::prefix_end(prefix.as_bytes()) }
}

/// What each node's registration says it reads.
fn versions(v: &[(u64, u32)]) -> Input {
    Input::PeerVersions(v.iter().map(|(n, v)| (NodeId(*n), *v)).collect::<BTreeMap<_, _>>())
}

/// A three-node cluster led by node 1, every node's build reading `MAX_CLUSTER_VERSION`.
fn three(bugs: Bugs) -> Net {
    let mut net = Net::new(3, |s| s.bugs = bugs);
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }
    net
}

fn reconfigure(net: &mut Net, token: Token, change: ConfigChange) -> Result<u64, Refused> {
    net.input(1, Input::Reconfigure { token, change });
    net.stabilize();
    let seen = net.take(1);
    seen.into_iter()
        .find_map(|s| match s {
            Seen::Reconfigured(t, r) if t == token => Some(r),
            _ => None,
        })
        .expect("the change is answered")
}

fn raise_to_2(net: &mut Net) {
    net.input(1, versions(&[(1, 2), (2, 2), (3, 2)]));
    assert_eq!(reconfigure(net, 50, ConfigChange::SetVersion(2)), Ok(1), "epoch 1: the version change");
    for id in 2..=3 {
        net.take(id);
    }
}

#[test]
fn a_write_of_a_newer_format_waits_for_the_cluster_version() {
    let mut net = three(Bugs::default());
    assert_eq!(net.status(1).cluster_version, 1, "a new cluster starts at version 1");
    net.input(1, Input::Write { token: 1, session: None, op: delete_range("a"), forward: true });
    assert_eq!(net.take(1), vec![Seen::Write(1, Err(Refused::ClusterVersion { needs: 2, runs: 1 }))]);
    // Old formats go on as before.
    net.input(1, Input::Write { token: 2, session: None, op: put("a1", "x"), forward: true });
    net.input(1, Input::Write { token: 3, session: None, op: put("a2", "y"), forward: true });
    net.input(1, Input::Write { token: 4, session: None, op: put("b", "z"), forward: true });
    net.stabilize();
    assert_eq!(net.take(1).len(), 3);

    raise_to_2(&mut net);
    for id in 1..=3 {
        let s = net.status(id);
        assert_eq!((s.cluster_version, s.max_cluster_version, s.halted.clone()), (2, MAX_CLUSTER_VERSION, None), "node {id}");
    }
    // Now the range delete is proposed and applied alike everywhere.
    net.input(1, Input::Write { token: 5, session: None, op: delete_range("a"), forward: true });
    net.stabilize();
    let done = Ok(WriteDone { output: Ok(WriteResult { index: 4, outcome: WriteOutcome::RangeDeleted { deleted: 2 } }), index: 4 });
    assert_eq!(net.take(1), vec![Seen::Write(5, done)]);
    net.advance(200);
    let hashes: Vec<u64> = (1..=3).map(|id| net.status(id).state_hash).collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    assert_eq!(net.node(2).store().get(b"a1"), None);
    assert!(net.node(2).store().get(b"b").is_some());
}

#[test]
fn the_version_rises_only_to_what_this_build_and_every_member_read() {
    let mut net = three(Bugs::default());
    // Node 3 has not said (the previous release registers without it): it reads 1.
    net.input(1, versions(&[(2, 2)]));
    let refused = reconfigure(&mut net, 1, ConfigChange::SetVersion(2));
    assert!(matches!(&refused, Err(Refused::Config(why)) if why.contains("member 3")), "{refused:?}");
    let beyond = MAX_CLUSTER_VERSION + 1;
    net.input(1, versions(&[(2, beyond), (3, beyond)]));
    let refused = reconfigure(&mut net, 2, ConfigChange::SetVersion(beyond));
    assert!(matches!(&refused, Err(Refused::Config(why)) if why.contains(&format!("up to {MAX_CLUSTER_VERSION}"))), "{refused:?}");
    assert_eq!(reconfigure(&mut net, 3, ConfigChange::SetVersion(2)), Ok(1));
    let refused = reconfigure(&mut net, 4, ConfigChange::SetVersion(2));
    assert!(matches!(&refused, Err(Refused::Config(why)) if why.contains("already")), "{refused:?}");
    assert_eq!(net.status(3).cluster_version, 2);
}

/// Raise the version to 2, then ask to add node 4, whose registration says it reads only 1.
fn add_an_old_learner(bugs: Bugs) -> Result<u64, Refused> {
    let mut net = three(bugs);
    raise_to_2(&mut net);
    net.input(1, versions(&[(1, 2), (2, 2), (3, 2), (4, 1)]));
    // Node 4 is not part of this net: what is sent to it is dropped.
    net.cut.insert(NodeId(4));
    reconfigure(&mut net, 7, ConfigChange::AddLearner(Member { node: NodeId(4), incarnation: Incarnation(1) }))
}

#[test]
fn a_joiner_that_does_not_read_the_cluster_version_is_refused() {
    let refused = add_an_old_learner(Bugs::default());
    assert!(matches!(&refused, Err(Refused::Config(why)) if why.contains("node 4 reads cluster versions up to 1")), "{refused:?}");
}

#[test]
fn admitting_old_members_is_caught() {
    assert_eq!(add_an_old_learner(Bugs { admit_old_members: true, ..Bugs::default() }), Ok(2), "the switch admits it");
}

/// A version above this build's reaches the log (a newer leader proposed it: here the core is
/// asked directly, past the node's own check). Returns node 2's status after one more write.
fn meet_a_newer_version(bugs: Bugs) -> NodeStatus {
    let mut net = three(bugs);
    net.input(1, Input::Write { token: 1, session: None, op: put("k", "1"), forward: true });
    net.stabilize();
    net.advance(200);
    let before = net.node(2).applied_slot();
    assert_eq!(before, net.node(1).applied_slot());
    let id = RequestId { node: NodeId(1), seq: 1 << 40 };
    let now = paxos::Time(0);
    net.node_mut(1).replica.propose_config(now, id, ConfigChange::SetVersion(MAX_CLUSTER_VERSION + 1)).expect("the core takes it");
    net.input(1, versions(&[]));
    net.stabilize();
    net.advance(500);
    let s = net.status(2);
    if bugs == Bugs::default() {
        assert_eq!(s.applied_slot, before, "a halted replica applies nothing from the version's slot on");
        net.input(2, Input::Write { token: 9, session: None, op: put("k", "2"), forward: true });
        let seen = net.take(2);
        assert!(seen.iter().any(|x| matches!(x, Seen::Write(9, Err(Refused::Halted(_))))), "{seen:?}");
    }
    s
}

#[test]
fn a_replica_that_meets_a_version_above_its_build_halts() {
    let s = meet_a_newer_version(Bugs::default());
    let why = s.halted.expect("halted");
    assert!(why.contains(&format!("raises the cluster version to {}", MAX_CLUSTER_VERSION + 1)), "{why}");
    assert!(matches!(s.serving, Err(NotServing::Halted(_))), "{:?}", s.serving);
    assert_eq!(s.cluster_version, 1, "the version it does not read is not taken");
}

#[test]
fn skipping_an_unknown_version_is_caught() {
    let s = meet_a_newer_version(Bugs { skip_unknown_version: true, ..Bugs::default() });
    assert_eq!(s.halted, None, "the switch skips instead of halting");
}
