//! The configuration hold (`node/src/snapshot.rs`) in a small deterministic harness: a FIFO
//! network, a virtual clock, and snapshot encodings that take as long as a test says (or whose
//! file cannot be written). Written by an adversarial review of the hold; each test failed on the
//! hold as first written.
use kvstore::{Store, WriteOp};
use node::{Input, Node, NodeSettings, Output};
use paxos::{ConfigChange, Configuration, Envelope, Incarnation, Member, NodeId, SnapshotMeta, Time};
use std::collections::{BTreeMap, VecDeque};

#[macro_use]
mod common;
use common::Harness;

fn member(id: u64) -> Member {
    Member { node: NodeId(id), incarnation: Incarnation(1) }
}

fn settings(id: u64, config: &Configuration, core_bugs: paxos::Bugs) -> NodeSettings {
    let mut s = NodeSettings::new(member(id), 1, Some(config.clone()));
    s.heartbeat_ms = 20;
    s.leader_lease_ms = 300;
    s.suspect_leader_after_ms = 100;
    s.durable = true;
    s.core_bugs = core_bugs;
    s
}

struct Net {
    nodes: BTreeMap<u64, Node>,
    now: u64,
    wire: VecDeque<Envelope>,
    /// Encodes in progress: (due, node, meta).
    encodes: Vec<(u64, u64, SnapshotMeta, Store)>,
    encode_ms: u64,
    follower_encode_ms: u64,
    file_ok: bool,
    encodes_started: BTreeMap<u64, u64>,
    suspects: Vec<(u64, u64)>,
    last_send: BTreeMap<u64, u64>,
    max_silence: BTreeMap<u64, u64>,
    acked: Vec<u64>,
    accepted_sent: Vec<(u64, paxos::Slot, bool)>,
    nodes_holding: std::collections::BTreeSet<u64>,
    /// Snapshot files made durable: (node, meta, store).
    files: Vec<(u64, SnapshotMeta, Store)>,
}

impl Net {
    fn collect(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send(env) => {
                    if let paxos::Message::Accepted { slot, .. } = &env.msg { self.accepted_sent.push((id, *slot, self.nodes_holding.contains(&id))); }
                    let last = self.last_send.insert(id, self.now).unwrap_or(self.now);
                    let m = self.max_silence.entry(id).or_default();
                    *m = (*m).max(self.now - last);
                    self.wire.push_back(env)
                }
                Output::EncodeSnapshot { meta, store } => {
                    *self.encodes_started.entry(id).or_default() += 1;
                    let d = if id == 1 { self.encode_ms } else { self.follower_encode_ms }; self.encodes.push((self.now + d, id, meta, *store));
                }
                Output::Suspect(Some(_)) => self.suspects.push((id, self.now)),
                Output::WriteDone { token, result: Ok(d) } if d.output.is_ok() => self.acked.push(token),
                _ => {}
            }
        }
    }
    fn input(&mut self, id: u64, input: Input) {
        self.deliver(id, input);
    }
}

impl Harness for Net {
    harness_fields!();
    /// Encodings whose time has come finish (their file written, or not).
    fn between(&mut self) {
        let now = self.now;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.encodes).into_iter().partition(|e| e.0 <= now);
        self.encodes = rest;
        for (_, id, meta, store) in due {
            let file = self.file_ok;
            if file {
                self.files.push((id, meta.clone(), store));
            }
            self.input(id, Input::SnapshotEncoded { meta, file });
        }
    }
}

fn cluster(encode_ms: u64, file_ok: bool, core_bugs: paxos::Bugs) -> Net {
    cluster_with(encode_ms, file_ok, core_bugs, 0)
}

/// `log_bytes`: each node's `snapshot_log_bytes` (0: the default).
fn cluster_with(encode_ms: u64, file_ok: bool, core_bugs: paxos::Bugs, log_bytes: u64) -> Net {
    let config = Configuration::bootstrap((1..=3).map(member));
    let mut net = Net {
        nodes: BTreeMap::new(),
        now: 0,
        wire: VecDeque::new(),
        encodes: Vec::new(),
        encode_ms,
        follower_encode_ms: encode_ms,
        file_ok,
        encodes_started: BTreeMap::new(),
        suspects: Vec::new(),
        last_send: BTreeMap::new(),
        max_silence: BTreeMap::new(),
        acked: Vec::new(),
        accepted_sent: Vec::new(),
        nodes_holding: Default::default(),
        files: Vec::new(),
    };
    for id in 1..=3 {
        let mut s = settings(id, &config, core_bugs);
        if log_bytes > 0 {
            s.snapshot_log_bytes = log_bytes;
        }
        net.nodes.insert(id, Node::new(s, Time(0)));
        net.collect(id);
    }
    for id in 1..=3 {
        net.input(id, Input::Hint(Some(NodeId(1))));
    }
    net.run(300);
    assert!(net.nodes[&1].replica().is_leader());
    net
}

/// A learner added leaves the acceptors as they were (no quorum can be wedged by it): no hold, so
/// the leader is not silent for a whole-store encoding (500 ms here; followers suspect a leader
/// after 100 ms in this harness). The first hold held every change: the leader went silent and
/// both followers suspected it.
#[test]
fn a_learner_added_does_not_silence_the_leader() {
    let mut net = cluster(500, true, paxos::Bugs::default());
    net.suspects.clear();
    net.max_silence.clear();
    let t0 = net.now;
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::AddLearner(Member { node: NodeId(9), incarnation: Incarnation(1) }) });
    net.run(1500);
    let suspicions: Vec<_> = net.suspects.iter().filter(|(_, t)| *t > t0).collect();
    assert!(net.nodes[&1].config().learners.iter().any(|m| m.node == NodeId(9)), "the learner was not added");
    assert!(net.max_silence[&1] < 150, "leader 1 was silent for {} ms after an AddLearner", net.max_silence[&1]);
    assert!(suspicions.is_empty(), "suspicions: {suspicions:?}");
}

/// A snapshot file that cannot be written while a hold is on: the node keeps the hold and does
/// not ask for another whole-store encoding at once, for ever (the first hold did: 1,000 in a
/// second). (The driver exits on such a failure, as on a failed fsync.)
#[test]
fn a_snapshot_file_that_cannot_be_written_does_not_spin_encodings() {
    let mut net = cluster(1, false, paxos::Bugs::default());
    let before = net.encodes_started.get(&1).copied().unwrap_or(0);
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::Remove(NodeId(3)) });
    net.run(1000);
    let n = net.encodes_started[&1] - before;
    assert!(n >= 1, "no encoding was asked for the change");
    assert!(n < 10, "{n} whole-store encodings in one second");
}

/// The first vote a follower gives in a new configuration waits for its file. Acceptors {1,2,3};
/// `Remove(3)` at slot k (then {1,2}); a write queued behind it lands at k+1; node 2's encodings
/// never finish. The core used to persist and send `Accepted(k+1)` before it learned the commit
/// point carried by that `Accept`, so the vote left before node 2 applied k: the write was chosen
/// by {1,2} and acknowledged while only node 1 had a file with the new configuration (after a
/// power cut node 2 would recover {1,2,3}). Now `on_accept` learns the commit point first, so
/// the vote is behind node 2's hold; and node 2's status shows the old configuration meanwhile
/// (the membership barrier reads it). `Bugs::vote_before_commit` puts the old order back.
fn first_vote_in_a_new_configuration(core_bugs: paxos::Bugs) -> Result<(), String> {
    let mut net = cluster(1, true, core_bugs);
    let epoch_before = net.nodes[&2].status().config.epoch;
    net.follower_encode_ms = 1_000_000;
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::Remove(NodeId(3)) });
    let op = WriteOp::Put { key: b"k".to_vec(), value: b"first".to_vec(), guard: None };
    net.input(1, Input::Write { token: 4, session: None, op, forward: true });
    net.run(300);
    if net.nodes[&1].config().acceptors.len() != 2 {
        return Err(format!("the removal was not applied by the leader: {:?}", net.nodes[&1].config()));
    }
    if net.nodes[&2].config().acceptors.len() == 2 && net.nodes[&2].status().config.epoch != epoch_before {
        return Err(format!("node 2 shows epoch {} before its file has it", net.nodes[&2].status().config.epoch));
    }
    let op = WriteOp::Put { key: b"k".to_vec(), value: b"v".to_vec(), guard: None };
    net.input(1, Input::Write { token: 5, session: None, op, forward: true });
    net.run(300);
    let votes: Vec<_> = net.accepted_sent.iter().filter(|a| a.0 == 2).map(|a| a.1).collect();
    if net.acked.contains(&4) || net.acked.contains(&5) {
        return Err(format!("writes {:?} acknowledged in the new configuration while node 2, its only other acceptor, has no file with it; node 2 voted {votes:?}", net.acked));
    }
    // Node 2's encoding ends: its file carries the removal and its held votes leave. (The leader
    // of {1,2} lost its lease meanwhile, node 2 being silent: the election names it again.)
    net.follower_encode_ms = 1;
    for e in &mut net.encodes {
        e.0 = net.now;
    }
    net.run(100);
    for id in 1..=3 {
        net.input(id, Input::Hint(Some(NodeId(1))));
    }
    net.run(300);
    let op = WriteOp::Put { key: b"k".to_vec(), value: b"after".to_vec(), guard: None };
    net.input(1, Input::Write { token: 6, session: None, op, forward: true });
    net.run(300);
    if !net.acked.contains(&6) {
        let st: Vec<String> = net.nodes.values().map(|n| format!("{:?}", n.replica().status())).collect();
        return Err(format!("after node 2's file: acknowledged {:?}\n{}", net.acked, st.join("\n")));
    }
    if net.nodes[&2].status().config.epoch == epoch_before {
        return Err("node 2 still shows the old configuration after its file".into());
    }
    Ok(())
}

#[test]
fn a_followers_first_vote_in_a_new_configuration_waits_for_its_file() {
    first_vote_in_a_new_configuration(paxos::Bugs::default()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_vote_before_the_commit_point_is_caught() {
    let bugs = paxos::Bugs { vote_before_commit: true, ..paxos::Bugs::default() };
    let err = first_vote_in_a_new_configuration(bugs).expect_err("the early vote was not caught");
    assert!(err.contains("acknowledged in the new configuration"), "{err}");
}

/// kill -9 of node 2 right after its newest file: it restarts from it (a byte bound of 1, as the
/// cluster's) and hears that node 1 leads.
fn restart_2_from_its_newest_file(net: &mut Net) {
    let (meta, store) = net.files.iter().filter(|(i, _, _)| *i == 2).map(|(_, m, s)| (m.clone(), s.clone())).max_by_key(|(m, _)| m.last_slot).expect("a file of node 2");
    net.nodes.remove(&2);
    net.wire.retain(|e| e.to != NodeId(2));
    let config3 = Configuration::bootstrap((1..=3).map(member));
    let mut s = settings(2, &config3, paxos::Bugs::default());
    s.snapshot_log_bytes = 1;
    net.nodes.insert(2, Node::recover(s, Time(net.now), store, paxos::Recovered::from_snapshot(meta)));
    net.collect(2);
    net.input(2, Input::Hint(Some(NodeId(1))));
    net.run(500);
}

/// From the hold's second review. The byte cadence (`snapshot_by_bytes`) ran inside the `Apply`
/// arm of `Node::drain`, after `applied_slot` became the change's slot k but before the core's
/// `ConfigChanged` for k was handled: when the change's own payload bytes reached the bound, the
/// node encoded a snapshot at slot k with the configuration before the change, `hold_for_config`
/// saw an encoding in flight and started none, and that file (slot k, old acceptors) released the
/// hold. A bound of 1 byte makes every applied slot ask for a snapshot.
#[test]
fn the_hold_is_released_only_by_a_file_that_carries_the_change() {
    let mut net = cluster_with(1, true, paxos::Bugs::default(), 1);
    net.files.clear();
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::Remove(NodeId(3)) });
    net.run(300);
    let new = net.nodes[&1].config().clone();
    assert_eq!(new.acceptors.len(), 2, "the removal was not applied");
    for id in 1..=2u64 {
        let shown = net.nodes[&id].status().config;
        let files: Vec<_> = net.files.iter().filter(|(i, _, _)| *i == id).map(|(_, m, _)| (m.last_slot, m.config.epoch, m.config.acceptors.len())).collect();
        let newest = net.files.iter().filter(|(i, _, _)| *i == id).map(|(_, m, _)| m).max_by_key(|m| m.last_slot).expect("a file");
        assert_eq!(shown.acceptors, new.acceptors, "node {id} still holds; files {files:?}");
        assert_eq!(newest.config.acceptors, new.acceptors, "node {id} released its hold, but its newest file (slot {}) carries epoch {}; files {files:?}", newest.last_slot, newest.config.epoch);
        // Every file carries the configuration in force after its slot.
        for (_, m, _) in net.files.iter().filter(|(i, _, _)| *i == id) {
            let expected = if m.config.epoch == new.epoch { new.acceptors.len() } else { 3 };
            assert_eq!(m.config.acceptors.len(), expected, "node {id}: file at {} with epoch {}", m.last_slot, m.config.epoch);
        }
    }
}

/// The consequence of such a file: node 2 restarts from it and recovered the configuration before
/// the removal at the removal's own slot, so it never applied the removal again and, after the
/// next change, ran a configuration no other replica runs.
#[test]
fn a_restart_from_the_newest_file_runs_the_configuration_everyone_runs() {
    let mut net = cluster_with(1, true, paxos::Bugs::default(), 1);
    net.files.clear();
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::Remove(NodeId(3)) });
    net.run(300);
    restart_2_from_its_newest_file(&mut net);
    net.input(1, Input::Reconfigure { token: 78, change: ConfigChange::AddLearner(Member { node: NodeId(4), incarnation: Incarnation(1) }) });
    net.run(500);
    assert_eq!(net.nodes[&1].applied_slot(), net.nodes[&2].applied_slot(), "node 2 did not catch up");
    assert_eq!(net.nodes[&1].config(), net.nodes[&2].config(), "after the same log, node 1 and node 2 run different configurations");
}

/// The same without a hold (a change of the learners holds nothing): with the byte cadence taken
/// inside the `Apply` arm, the file at the change's slot carried the configuration before it, and
/// a restart from it ran without the learner for ever.
#[test]
fn a_file_at_a_learner_change_carries_it() {
    let mut net = cluster_with(1, true, paxos::Bugs::default(), 1);
    net.files.clear();
    let learner = Member { node: NodeId(4), incarnation: Incarnation(1) };
    net.input(1, Input::Reconfigure { token: 77, change: ConfigChange::AddLearner(learner) });
    net.run(300);
    assert!(net.nodes[&2].config().learners.contains(&learner), "the learner was not added");
    restart_2_from_its_newest_file(&mut net);
    assert_eq!(net.nodes[&1].applied_slot(), net.nodes[&2].applied_slot(), "node 2 did not catch up");
    assert_eq!(net.nodes[&1].config(), net.nodes[&2].config(), "node 2 restarted from its newest file runs another configuration");
}
