//! Durable restarts of whole nodes (`NodeSettings::durable`, `Node::recover`), outside the
//! simulator: a small FIFO network, a virtual clock, and disks built from the `Output::Persist`
//! records the nodes emitted.

use kvstore::{Store, StoreConfig, WriteOp};
use node::{Input, Node, NodeSettings, Output, SnapshotSource};
use paxos::{Configuration, Envelope, Incarnation, Member, NodeId, Persist, Recovered, Slot, SnapshotMeta, Time};
use std::collections::{BTreeMap, VecDeque};

#[macro_use]
mod common;
use common::Harness;

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
    /// Snapshots each node encoded, by last slot (what `SnapshotSource::Encoded` names).
    encoded: BTreeMap<(u64, Slot), (SnapshotMeta, Store)>,
    /// Snapshot transfers on their way: (from, to, meta, store), delivered with the messages.
    transfers: VecDeque<(u64, u64, SnapshotMeta, Store)>,
    /// Snapshots installed, by receiving node.
    installed: Vec<u64>,
    /// Each time a node said it serves: (node, its applied slot then).
    served_at: Vec<(u64, Slot)>,
    /// Each node's newest snapshot file: what it encoded (answered as written) or installed.
    files: BTreeMap<u64, (SnapshotMeta, Store)>,
    /// Answers to `Reconfigure`, by token: `true` when the change was applied.
    reconfigured: BTreeMap<u64, bool>,
}

impl Net {
    fn collect(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send(env) => self.wire.push_back(env),
                Output::Persist(p) => self.log.entry(id).or_default().push(p),
                Output::WriteDone { token, result: Ok(done) } if done.output.is_ok() => self.acked.push(token),
                Output::ServingChanged(true) => self.served_at.push((id, node.applied_slot())),
                Output::EncodeSnapshot { meta, store } => {
                    self.encoded.insert((id, meta.last_slot), (meta.clone(), (*store).clone()));
                    if self.files.get(&id).is_none_or(|(m, _)| m.last_slot < meta.last_slot) {
                        self.files.insert(id, (meta.clone(), *store));
                    }
                    node.handle(Time(self.now), Input::SnapshotEncoded { meta, file: true });
                }
                Output::ReconfigureDone { token, result } => {
                    self.reconfigured.insert(token, result.is_ok());
                }
                Output::SendSnapshot { to, from } => {
                    let (meta, store) = match from {
                        SnapshotSource::Encoded(meta) => self.encoded[&(id, meta.last_slot)].clone(),
                        SnapshotSource::Store { meta, store } => (meta, *store),
                    };
                    self.transfers.push_back((id, to.0, meta, store));
                }
                _ => {}
            }
        }
    }

    fn input(&mut self, id: u64, input: Input) {
        self.deliver(id, input);
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

impl Harness for Net {
    harness_fields!();
    /// Snapshot transfers arrive with the messages sent before them.
    fn between(&mut self) {
        while let Some((from, to, meta, store)) = self.transfers.pop_front() {
            self.installed.push(to);
            if self.files.get(&to).is_none_or(|(m, _)| m.last_slot < meta.last_slot) {
                self.files.insert(to, (meta.clone(), store.clone()));
            }
            self.input(to, Input::InstallSnapshot { meta, store: Box::new(store) });
            self.input(from, Input::SnapshotSent { to: NodeId(to), delivered: true });
        }
    }
}

fn empty_net() -> Net {
    Net {
        nodes: BTreeMap::new(),
        now: 0,
        wire: VecDeque::new(),
        log: BTreeMap::new(),
        acked: Vec::new(),
        encoded: BTreeMap::new(),
        transfers: VecDeque::new(),
        installed: Vec::new(),
        served_at: Vec::new(),
        files: BTreeMap::new(),
        reconfigured: BTreeMap::new(),
    }
}

/// Founders {1,2,3} (durable), node 1 elected, writes 1..=5 proposed through it 20 ms apart.
fn three_nodes_with_five_writes(core_bugs: paxos::Bugs) -> (Configuration, Net) {
    let config = Configuration::bootstrap((1..=3).map(member));
    let mut net = empty_net();
    for id in 1..=3 {
        let mut s = settings(id, 1, &config);
        s.core_bugs = core_bugs;
        net.nodes.insert(id, Node::new(s, Time(0)));
        net.collect(id);
    }
    net.hint(1);
    net.run(200);
    for token in 1..=5 {
        net.write(1, token);
        net.run(20);
    }
    (config, net)
}

/// A durable restart recovers the commit point of its snapshot file: how far the replica had
/// learned is not on its disk. Here nodes 1 and 2 restart from their disks (snapshot at slot 0,
/// their votes in the log) while node 3 keeps running with the checkpoint they all helped to set
/// (every member had learned slots 1..=5), and its snapshot still at slot 0. Node 3 answers every
/// `Prepare` and `Accept` at or below its checkpoint with `Compacted { 0 }`: the candidate steps
/// down, and since the sender's snapshot is not above its commit point it used to fetch nothing:
/// no leader for ever (simulator seed 12367, found once the configuration hold changed its
/// timing). Now the candidate asks that sender for the chosen slots above its own commit point
/// (`paxos/src/compaction.rs`, `on_compacted`) and leads at its next candidacy.
/// `Bugs::compacted_without_probe` puts the wedge back.
fn restart_below_a_running_replicas_checkpoint(core_bugs: paxos::Bugs) -> Result<Net, String> {
    let (config, mut net) = three_nodes_with_five_writes(core_bugs);
    net.run(500);
    assert_eq!(net.acked, vec![1, 2, 3, 4, 5], "the writes before the restart");
    let st3 = net.nodes[&3].replica().status();
    assert!(st3.checkpoint.0 >= 5 && st3.snapshot == Slot(0), "node 3 must hold a checkpoint of the writes and no snapshot past 0: {st3:?}");

    // Nodes 1 and 2 crash and restart from their disks; node 3 runs on.
    for id in 1..=2 {
        let mut d = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config: config.clone() });
        for p in net.log[&id].clone() {
            d.replay(p);
        }
        net.nodes.remove(&id);
        let mut s = settings(id, 2, &config);
        s.core_bugs = core_bugs;
        let node = Node::recover(s, Time(net.now), Store::new(StoreConfig::default()), d);
        net.nodes.insert(id, node);
        net.collect(id);
    }
    net.wire.retain(|e| e.to.0 == 3 && e.from.node.0 == 3);
    for _ in 0..5 {
        net.hint(1);
        net.run(300);
    }
    net.write(1, 6);
    net.run(1_000);
    let status: Vec<String> = net.nodes.values().map(|n| format!("{:?}", n.replica().status())).collect();
    if !net.nodes[&1].replica().is_leader() || !net.acked.contains(&6) {
        return Err(format!("node 1 leads: {}, acknowledged: {:?}\n{}", net.nodes[&1].replica().is_leader(), net.acked, status.join("\n")));
    }
    Ok(net)
}

#[test]
fn a_restart_below_a_running_replicas_checkpoint_does_not_wedge_the_cluster() {
    let net = restart_below_a_running_replicas_checkpoint(paxos::Bugs::default()).unwrap_or_else(|e| panic!("{e}"));
    // The way out was node 3's log: no snapshot was sent.
    assert!(net.installed.is_empty(), "snapshots installed: {:?}", net.installed);
    assert!(net.nodes[&1].applied_slot().0 >= 6, "node 1 applied {}", net.nodes[&1].applied_slot());
}

/// The switch that puts this wedge back (`Bugs::compacted_without_probe`) is caught.
#[test]
fn a_candidate_that_does_not_probe_on_compacted_is_caught() {
    let bugs = paxos::Bugs { compacted_without_probe: true, ..paxos::Bugs::default() };
    let err = restart_below_a_running_replicas_checkpoint(bugs).err().expect("the wedge was not caught");
    assert!(err.contains("node 1 leads: false"), "{err}");
}

/// The power-cut wedge of issue 24 in small (the configuration hold, `node/src/snapshot.rs`).
/// Founders {1,2,3} with their founding files at slot 0; node 3's disk is lost (removed), node 4
/// joins as a learner (installing a snapshot: its file) and is promoted, then node 2's disk is
/// lost too (removed): acceptors {1,4}. A power cut before any cadence snapshot: node 1 recovers
/// from its newest file and its WAL, node 4 likewise; 2 and 3 are gone. Without the hold node 1's
/// newest file is the founding one ({1,2,3}: one live acceptor of three) and node 4's is its
/// join, where it is a learner: no leader, for ever, though {1,4} is the configuration. With the
/// hold each applied change of the acceptors was in a file before anything followed it.
fn power_cut_after_two_replacements(bugs: node::Bugs) -> Result<Net, String> {
    let config = Configuration::bootstrap((1..=3).map(member));
    let mut net = empty_net();
    for id in 1..=3 {
        let mut s = settings(id, 1, &config);
        s.bugs = bugs;
        net.nodes.insert(id, Node::new(s, Time(0)));
        net.collect(id);
    }
    for id in 1..=3 {
        net.files.insert(id, (SnapshotMeta { last_slot: Slot(0), config: config.clone() }, Store::new(StoreConfig::default())));
    }
    net.hint(1);
    net.run(200);
    let change = |net: &mut Net, token: u64, change: paxos::ConfigChange| {
        net.input(1, Input::Reconfigure { token, change });
        net.run(300);
        assert_eq!(net.reconfigured.get(&token), Some(&true), "change {token} not applied: {:?}", net.reconfigured);
    };
    net.write(1, 1);
    net.run(50);
    // Node 3's disk is lost: it is removed.
    net.nodes.remove(&3);
    change(&mut net, 10, paxos::ConfigChange::Remove(NodeId(3)));
    // Node 4 joins (a learner, caught up by a snapshot) and is promoted.
    let joiner = |start: u64| {
        let mut s = NodeSettings::new(member(4), start, None);
        s.heartbeat_ms = 20;
        s.leader_lease_ms = 300;
        s.durable = true;
        s.bugs = bugs;
        s
    };
    net.nodes.insert(4, Node::new(joiner(1), Time(net.now)));
    net.collect(4);
    change(&mut net, 11, paxos::ConfigChange::AddLearner(member(4)));
    net.hint(1);
    net.run(300);
    change(&mut net, 12, paxos::ConfigChange::Promote(member(4)));
    net.write(1, 2);
    net.run(50);
    // Node 2's disk is lost: it is removed.
    net.nodes.remove(&2);
    change(&mut net, 13, paxos::ConfigChange::Remove(NodeId(2)));
    net.write(1, 3);
    net.run(100);
    let acceptors: Vec<u64> = net.nodes[&1].config().acceptors.iter().map(|m| m.node.0).collect();
    assert_eq!(acceptors, vec![1, 4], "the configuration before the power cut");
    assert_eq!(net.acked, vec![1, 2, 3], "the writes before the power cut");

    // The power cut: nodes 1 and 4 come back from their newest files and their logs.
    let files: Vec<(u64, Slot, u64)> = [1, 4].iter().map(|id| (*id, net.files[id].0.last_slot, net.files[id].0.config.epoch)).collect();
    let mut disks = Vec::new();
    for id in [1, 4] {
        let (meta, store) = net.files[&id].clone();
        let last = meta.last_slot;
        let mut d = Recovered::from_snapshot(meta);
        for p in net.log[&id].clone() {
            if !matches!(&p, Persist::Accepted(e) if e.slot <= last) {
                d.replay(p);
            }
        }
        disks.push((id, store, d));
    }
    net.wire.clear();
    net.transfers.clear();
    net.nodes.clear();
    net.acked.clear();
    for (id, store, disk) in disks {
        let mut s = if id == 4 { joiner(2) } else { settings(id, 2, &config) };
        s.bugs = bugs;
        let node = Node::recover(s, Time(net.now), store, disk);
        net.nodes.insert(id, node);
        net.collect(id);
    }
    for leader in [1, 4, 1, 4] {
        if net.nodes.values().any(|n| n.replica().is_leader()) {
            break;
        }
        net.hint(leader);
        net.run(500);
    }
    let status: Vec<String> = net.nodes.values().map(|n| format!("{:?}", n.replica().status())).collect();
    let Some(leader) = net.nodes.iter().find(|(_, n)| n.replica().is_leader()).map(|(id, _)| *id) else {
        return Err(format!("no leader after the power cut; files (node, slot, epoch) {files:?}\n{}", status.join("\n")));
    };
    net.write(leader, 4);
    net.run(500);
    if net.acked != vec![4] {
        return Err(format!("leader {leader}, acknowledged {:?}\n{}", net.acked, status.join("\n")));
    }
    Ok(net)
}

#[test]
fn a_power_cut_after_two_replacements_elects_a_leader() {
    let net = power_cut_after_two_replacements(node::Bugs::default()).unwrap_or_else(|e| panic!("{e}"));
    let acceptors: Vec<u64> = net.nodes[&1].config().acceptors.iter().map(|m| m.node.0).collect();
    assert_eq!(acceptors, vec![1, 4]);
}

/// `Bugs::no_config_hold` puts the wedge back.
#[test]
fn a_power_cut_without_the_configuration_hold_is_caught() {
    let bugs = node::Bugs { no_config_hold: true, ..node::Bugs::default() };
    let err = power_cut_after_two_replacements(bugs).err().expect("the wedge was not caught");
    assert!(err.contains("no leader after the power cut"), "{err}");
    eprintln!("{err}");
}

/// After every replica restarted from its disk (a power cut), the one whose snapshot file is
/// newest answers `Compacted` to every Prepare and Accept at or below its snapshot, and a
/// candidate that hears `Compacted` steps down. Found by the simulator's power cuts (docs/node.md,
/// "Disks"; seeds 340, 560, 999 of the default sweep): nobody sent the candidate that snapshot,
/// no leader ever emerged (no leader, no heartbeat to show anyone it is behind). The fix
/// (`paxos/src/compaction.rs`, `on_compacted`): the candidate fetches from the peer that is
/// ahead, installs its snapshot, and its next candidacy starts above it.
///
/// Returns the statuses of the three replicas when node 1 does not lead, or the write after the
/// power cut is not acknowledged.
fn power_cut_with_one_snapshot_ahead(core_bugs: paxos::Bugs) -> Result<Net, String> {
    let (config, mut net) = three_nodes_with_five_writes(core_bugs);
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
        let mut s = settings(id, 2, &config);
        s.core_bugs = core_bugs;
        let node = Node::recover(s, Time(net.now), store, disk);
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
    if !net.nodes[&1].replica().is_leader() || net.acked != vec![6] {
        return Err(format!("node 1 leads: {}, acknowledged: {:?}\n{}", net.nodes[&1].replica().is_leader(), net.acked, status.join("\n")));
    }
    Ok(net)
}

#[test]
fn after_a_power_cut_a_replica_whose_snapshot_is_ahead_does_not_wedge_the_cluster() {
    let net = power_cut_with_one_snapshot_ahead(paxos::Bugs::default()).unwrap_or_else(|e| panic!("{e}"));
    // The way out was the snapshot of node 3, fetched by the candidate it refused.
    assert!(net.installed.contains(&1), "node 1 leads without installing node 3's snapshot: {:?}", net.installed);
    assert!(net.nodes[&1].applied_slot() > Slot(5), "node 1 applied {}", net.nodes[&1].applied_slot());
}

/// The switch that puts the wedge back (`Bugs::wedge_on_compacted`) is caught by the same schedule.
#[test]
fn the_wedge_on_compacted_is_caught() {
    let bugs = paxos::Bugs { wedge_on_compacted: true, ..paxos::Bugs::default() };
    let err = power_cut_with_one_snapshot_ahead(bugs).err().expect("the wedge was not caught");
    assert!(err.contains("node 1 leads: false"), "{err}");
}

/// After a power cut of every replica, a restarted replica says `serving` only once it has
/// applied every slot it had voted in before (a leader: its election barrier). It used to fix its
/// catch-up target at the first commit point it heard, which right after the restart is the
/// snapshot's slot: every replica said `serving` with the store of its snapshot file (slot 0,
/// empty) while the log above it was still to be chosen again (docs/REPORT.md,
/// "Restart-to-serving"). Returns the (node, applied slot) of each `serving` said too early.
fn serving_after_a_power_cut(bugs: node::Bugs) -> Vec<(u64, Slot)> {
    let config = Configuration::bootstrap((1..=3).map(member));
    let mut net = empty_net();
    for id in 1..=3 {
        net.nodes.insert(id, Node::new(settings(id, 1, &config), Time(0)));
        net.collect(id);
    }
    net.hint(1);
    net.run(200);
    for token in 1..=20 {
        net.write(1, token);
        net.run(5);
    }
    net.run(200);
    assert_eq!(net.acked.len(), 20, "the writes before the power cut");
    let before = net.nodes[&1].applied_slot();
    assert!(before.0 >= 20, "applied {before}");
    // Every node restarts from the founding snapshot (slot 0) and its log.
    let logs = std::mem::take(&mut net.log);
    net.wire.clear();
    net.nodes.clear();
    net.served_at.clear();
    for id in 1..=3 {
        let mut d = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config: config.clone() });
        for p in logs[&id].clone() {
            d.replay(p);
        }
        let mut s = settings(id, 2, &config);
        s.bugs = bugs;
        net.nodes.insert(id, Node::recover(s, Time(net.now), Store::new(StoreConfig::default()), d));
        net.collect(id);
    }
    // The election names node 2 first (its old lease: it is not campaigning), then node 1.
    net.hint(2);
    net.run(50);
    net.hint(1);
    net.run(1_000);
    assert!(net.nodes[&1].replica().is_leader());
    for id in 1..=3 {
        assert!(net.nodes[&id].serving().is_ok(), "node {id} does not serve: {:?}", net.nodes[&id].serving());
        assert!(net.nodes[&id].applied_slot() >= before, "node {id}");
    }
    net.served_at.into_iter().filter(|(_, applied)| *applied < before).collect()
}

#[test]
fn a_replica_restarted_with_every_other_says_serving_only_once_it_applied_its_old_log() {
    let early = serving_after_a_power_cut(node::Bugs::default());
    assert!(early.is_empty(), "serving before applying the log it had voted in: {early:?}");
}

/// `Bugs::serve_from_snapshot` (the old catch-up target) is caught by the same schedule.
#[test]
fn serving_from_the_snapshot_after_a_power_cut_is_caught() {
    let early = serving_after_a_power_cut(node::Bugs { serve_from_snapshot: true, ..node::Bugs::default() });
    assert!(!early.is_empty(), "the old rule was not caught");
}
