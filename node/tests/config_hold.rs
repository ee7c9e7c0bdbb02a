//! The configuration hold (`node/src/snapshot.rs`) in a small deterministic harness: a FIFO
//! network, a virtual clock, and snapshot encodings that take as long as a test says (or whose
//! file cannot be written). Written by an adversarial review of the hold; each test failed on the
//! hold as first written.
use kvstore::{Store, WriteOp};
use node::{Input, Node, NodeSettings, Output};
use paxos::{ConfigChange, Configuration, Envelope, Incarnation, Member, NodeId, SnapshotMeta, Time};
use std::collections::{BTreeMap, VecDeque};

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
        self.nodes.get_mut(&id).unwrap().handle(Time(self.now), input);
        self.collect(id);
    }
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            while let Some(env) = self.wire.pop_front() {
                let to = env.to.0;
                if self.nodes.contains_key(&to) {
                    self.input(to, Input::Peer(env));
                }
            }
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.encodes).into_iter().partition(|e| e.0 <= now);
            self.encodes = rest;
            for (_, id, meta, _) in due {
                let file = self.file_ok;
                self.input(id, Input::SnapshotEncoded { meta, file });
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
}

fn cluster(encode_ms: u64, file_ok: bool, core_bugs: paxos::Bugs) -> Net {
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
    };
    for id in 1..=3 {
        net.nodes.insert(id, Node::new(settings(id, &config, core_bugs), Time(0)));
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
