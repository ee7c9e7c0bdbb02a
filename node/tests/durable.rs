//! Durable restarts of whole nodes (`NodeSettings::durable`, `Node::recover`), outside the
//! simulator: a small FIFO network, a virtual clock, and disks built from the `Output::Persist`
//! records the nodes emitted.

use kvstore::{Store, StoreConfig, WriteOp};
use node::{Input, Node, NodeSettings, Output};
use paxos::{Configuration, Envelope, Incarnation, Member, NodeId, Persist, Recovered, Slot, SnapshotMeta, Time};
use std::collections::{BTreeMap, VecDeque};

fn member(id: u64) -> Member {
    Member { node: NodeId(id), incarnation: Incarnation(1) }
}

fn settings(id: u64, start: u64, config: &Configuration) -> NodeSettings {
    let mut s = NodeSettings::new(member(id), start, Some(config.clone()));
    s.heartbeat_ms = 20;
    s.leader_lease_ms = 300;
    s.durable = true;
    s
}

struct Net {
    nodes: BTreeMap<u64, Node>,
    now: u64,
    wire: VecDeque<Envelope>,
    /// Every record each node persisted, in order (every one counts as synced here).
    log: BTreeMap<u64, Vec<Persist>>,
    /// Write tokens answered with success.
    acked: Vec<u64>,
}

impl Net {
    fn collect(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send(env) => self.wire.push_back(env),
                Output::Persist(p) => self.log.entry(id).or_default().push(p),
                Output::WriteDone { token, result: Ok(done) } if done.output.is_ok() => self.acked.push(token),
                Output::EncodeSnapshot { meta, .. } => {
                    node.handle(Time(self.now), Input::SnapshotEncoded { meta });
                }
                _ => {}
            }
        }
    }

    fn input(&mut self, id: u64, input: Input) {
        self.nodes.get_mut(&id).unwrap().handle(Time(self.now), input);
        self.collect(id);
    }

    /// Run `ms` milliseconds: messages arrive at once (FIFO), timers fire when due.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            while let Some(env) = self.wire.pop_front() {
                let to = env.to.0;
                if self.nodes.contains_key(&to) {
                    self.input(to, Input::Peer(env));
                }
            }
            self.now += 1;
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).unwrap();
                if node.poll_timeout().is_some_and(|t| t.0 <= self.now) {
                    node.handle_timeout(Time(self.now));
                    self.collect(id);
                }
            }
        }
    }

    fn hint(&mut self, leader: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.input(id, Input::Hint(Some(NodeId(leader))));
        }
    }

    fn write(&mut self, via: u64, token: u64) {
        let op = WriteOp::Put { key: b"k".to_vec(), value: format!("v{token}").into_bytes(), guard: None };
        self.input(via, Input::Write { token, session: None, op, forward: true });
    }
}

/// Known core bug, found by the simulator's power cuts (docs/node.md, "Disks"): after every
/// replica restarted from its disk, the one whose snapshot file is newest answers `Compacted` to
/// every Prepare and Accept at or below its snapshot, and a candidate or leader that hears
/// `Compacted` steps down (`paxos/src/compaction.rs`, `on_compacted`) without anyone sending it
/// that snapshot. The other two hold a quorum and the votes of every chosen slot, so the one
/// the election names should lead; it never does while the election does not name the replica
/// that is ahead (here: it never names node 3; in the simulator that replica was a learner, a
/// newer incarnation, or a leaving spare, none eligible).
///
/// Simulator seeds that showed it (before this test existed): 340, 560, 999 of the default sweep.
#[test]
#[ignore = "known core bug: a candidate steps down on Compacted from a replica whose snapshot is ahead, and never gets it"]
fn after_a_power_cut_a_replica_whose_snapshot_is_ahead_does_not_wedge_the_cluster() {
    let config = Configuration::bootstrap((1..=3).map(member));
    let mut net = Net { nodes: BTreeMap::new(), now: 0, wire: VecDeque::new(), log: BTreeMap::new(), acked: Vec::new() };
    for id in 1..=3 {
        net.nodes.insert(id, Node::new(settings(id, 1, &config), Time(0)));
        net.collect(id);
    }
    net.hint(1);
    net.run(200);
    for token in 1..=5 {
        net.write(1, token);
        net.run(20);
    }
    net.run(200);
    assert_eq!(net.acked, vec![1, 2, 3, 4, 5], "the writes before the power cut");
    let applied = net.nodes[&3].applied_slot();
    assert!(applied.0 >= 5, "node 3 applied {applied}");

    // The power cut. Nodes 1 and 2 kept only the initial snapshot (slot 0) and their logs;
    // node 3 had just written a snapshot file at its applied slot (and dropped its log below).
    let snapshot3 = (SnapshotMeta { last_slot: applied, config: net.nodes[&3].config().clone() }, net.nodes[&3].store().clone());
    let mut disks = BTreeMap::new();
    for id in 1..=2 {
        let mut d = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config: config.clone() });
        for p in net.log[&id].clone() {
            d.replay(p);
        }
        disks.insert(id, (Store::new(StoreConfig::default()), d));
    }
    let mut d3 = Recovered::from_snapshot(snapshot3.0.clone());
    for p in net.log[&3].clone() {
        if !matches!(&p, Persist::Accepted(e) if e.slot <= applied) {
            d3.replay(p);
        }
    }
    disks.insert(3, (snapshot3.1, d3));
    net.wire.clear();
    net.nodes.clear();
    net.acked.clear();
    for (id, (store, disk)) in disks {
        let node = Node::recover(settings(id, 2, &config), Time(net.now), store, disk);
        net.nodes.insert(id, node);
        net.collect(id);
    }

    // The election names node 1 (node 3 is not campaigning), and names it again after each
    // resignation: nodes 1 and 2 are a quorum and hold every chosen value above slot 0.
    for _ in 0..5 {
        net.hint(1);
        net.run(300);
    }
    net.write(1, 6);
    net.run(1_000);
    let status: Vec<String> = net.nodes.values().map(|n| format!("{:?}", n.replica().status())).collect();
    assert!(net.nodes[&1].replica().is_leader(), "node 1 does not lead 2.5 s after it was named:\n{}", status.join("\n"));
    assert_eq!(net.acked, vec![6], "a write after the power cut:\n{}", status.join("\n"));
}
