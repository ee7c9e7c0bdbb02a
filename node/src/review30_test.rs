//! Review 30 (cluster version): schedules against the halt.

use crate::node_test::{put, Net};
use crate::*;
use kvstore::MAX_CLUSTER_VERSION;
use paxos::{ConfigChange, Incarnation, Member, NodeId, RequestId};

/// Schedule 6: a replica halts at slot s (a `SetVersion` above its build). Its core goes on
/// applying (it still votes and learns), and the node still takes every `ConfigChanged`, so
/// `Node::config` runs ahead of `applied_slot`. A snapshot it then hands out (the core's
/// `SendSnapshot` as a fetch source or leader, or `snapshot_by_bytes` in durable mode, which
/// has no halted check) claims `last_slot = s - 1` with the configuration of a later slot: a
/// receiver (or this replica's own durable restart with a newer binary) applies slot s on top
/// of it and ends with another configuration than every other replica.
#[test]
fn a_halted_replica_hands_out_a_snapshot_whose_configuration_is_not_its_slots() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.input(1, Input::Write { token: 1, session: None, op: put("k", "1"), forward: true });
    net.stabilize();
    net.advance(200);
    let before = net.node(2).applied_slot();
    let epoch_before = net.node(2).config().epoch;
    // A newer leader's version change (the core asked directly, past this build's check).
    let id = RequestId { node: NodeId(1), seq: 1 << 40 };
    net.node_mut(1).replica.propose_config(paxos::Time(0), id, ConfigChange::SetVersion(MAX_CLUSTER_VERSION + 1)).expect("taken");
    net.input(1, Input::PeerVersions(Default::default()));
    net.stabilize();
    net.advance(500);
    assert!(net.node(2).status().halted.is_some(), "node 2 halted");
    assert_eq!(net.node(2).applied_slot(), before);
    // Then a membership change (node 4 joins as a learner; it is not part of this net).
    net.cut.insert(NodeId(4));
    let id = RequestId { node: NodeId(1), seq: (1 << 40) + 1 };
    let now = paxos::Time(700);
    net.node_mut(1).replica.propose_config(now, id, ConfigChange::AddLearner(Member { node: NodeId(4), incarnation: Incarnation(1) })).expect("taken");
    net.input(1, Input::PeerVersions(Default::default()));
    net.stabilize();
    net.advance(500);
    // What node 2 sends when its core asks it for a snapshot.
    net.node_mut(2).send_snapshot(NodeId(3));
    let meta = std::iter::from_fn(|| net.node_mut(2).poll_output())
        .find_map(|o| match o {
            Output::SendSnapshot { from: SnapshotSource::Encoded(m) | SnapshotSource::Store { meta: m, .. }, .. } => Some(m),
            _ => None,
        })
        .expect("a snapshot is sent");
    assert_eq!(meta.last_slot, before, "the store's slot");
    assert_eq!(
        (meta.config.epoch, meta.config.learners.len()),
        (epoch_before, 0),
        "the snapshot at slot {} carries the configuration of a later slot: {:?}",
        meta.last_slot,
        meta.config
    );
}
