//! The node layer's story, told by its outputs. A small in-memory network (`Net`) routes the
//! `Send` outputs between nodes at a virtual time and records everything else as [`Seen`], so each
//! test asserts the exact answers, serving changes and suspicions a node emits, in order.

use crate::*;
use kvstore::{ClientId, Output as StoreOutput, SessionRef, Versioned, WriteOp, WriteOutcome, WriteResult};
use paxos::{Configuration, Envelope, Incarnation, Member, NodeId, Slot, SnapshotMeta, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A non-`Send` output, reduced to what a test compares.
#[derive(Debug, PartialEq)]
pub(crate) enum Seen {
    Write(Token, Result<WriteDone, Refused>),
    Read(Token, Result<ReadDone, Refused>),
    Reconfigured(Token, Result<u64, Refused>),
    Encode(Slot),
    SendSnapshot(NodeId, Slot),
    Resign,
    Suspect(Option<Suspicion>),
    Leader(Option<NodeId>),
    Config(u64),
    Removed(Removal),
    Serving(bool),
    Watch(Token, Result<Changes, WatchError>),
}

fn member(id: u64) -> Member {
    Member { node: NodeId(id), incarnation: Incarnation(1) }
}

pub(crate) fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec(), guard: None }
}

fn get(key: &str) -> ReadFn {
    let key = key.as_bytes().to_vec();
    Box::new(move |s: &kvstore::Store| ReadAnswer::Get(s.get(&key)))
}

fn put_done(index: u64, previous_version: Option<u64>) -> Result<WriteDone, Refused> {
    Ok(WriteDone { output: Ok(WriteResult { index, outcome: WriteOutcome::Put { previous_version } }), index })
}

fn value(v: &str, version: u64) -> ReadAnswer {
    ReadAnswer::Get(Some(Versioned { value: v.as_bytes().to_vec(), version }))
}

/// Nodes `1..=n` founding one configuration, a FIFO network and a virtual clock.
pub(crate) struct Net {
    nodes: BTreeMap<NodeId, Node>,
    now: Time,
    pub(crate) wire: VecDeque<Envelope>,
    /// Nodes cut off: messages to or from them are dropped.
    pub(crate) cut: BTreeSet<NodeId>,
    seen: BTreeMap<NodeId, Vec<Seen>>,
}

impl Net {
    pub(crate) fn new(n: u64, tune: impl Fn(&mut NodeSettings)) -> Net {
        let config = Configuration::bootstrap((1..=n).map(member));
        let mut net = Net { nodes: BTreeMap::new(), now: Time(0), wire: VecDeque::new(), cut: BTreeSet::new(), seen: BTreeMap::new() };
        for id in 1..=n {
            let mut settings = NodeSettings::new(member(id), 1, Some(config.clone()));
            tune(&mut settings);
            net.nodes.insert(NodeId(id), Node::new(settings, Time(0)));
            net.collect(NodeId(id));
        }
        net
    }

    /// A net of nodes built elsewhere (recovered ones, say).
    pub(crate) fn with_nodes(nodes: impl IntoIterator<Item = Node>) -> Net {
        let mut net = Net { nodes: BTreeMap::new(), now: Time(0), wire: VecDeque::new(), cut: BTreeSet::new(), seen: BTreeMap::new() };
        for node in nodes {
            let id = node.settings.me.node;
            net.nodes.insert(id, node);
            net.collect(id);
        }
        net
    }

    pub(crate) fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub(crate) fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&NodeId(id)).expect("a node of this net")
    }

    pub(crate) fn input(&mut self, id: u64, input: Input) {
        let now = self.now;
        self.nodes.get_mut(&NodeId(id)).expect("a node of this net").handle(now, input);
        self.collect(NodeId(id));
    }

    fn collect(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("a node of this net");
        let seen = self.seen.entry(id).or_default();
        while let Some(out) = node.poll_output() {
            seen.push(match out {
                Output::Send(env) => {
                    self.wire.push_back(env);
                    continue;
                }
                // In-memory mode (durable off) emits none; nothing to write here anyway.
                Output::Persist(_) => continue,
                Output::WriteDone { token, result } => Seen::Write(token, result),
                Output::ReadDone { token, result } => Seen::Read(token, result),
                Output::ReconfigureDone { token, result } => Seen::Reconfigured(token, result.map(|c| c.epoch)),
                Output::EncodeSnapshot { meta, .. } => Seen::Encode(meta.last_slot),
                Output::SendSnapshot { to, from: SnapshotSource::Encoded(meta) | SnapshotSource::Store { meta, .. } } => {
                    Seen::SendSnapshot(to, meta.last_slot)
                }
                Output::Resign => Seen::Resign,
                Output::Suspect(s) => Seen::Suspect(s),
                Output::LeaderChanged { leader, .. } => Seen::Leader(leader),
                Output::ConfigChanged(c) => Seen::Config(c.epoch),
                Output::Removed(r) => Seen::Removed(r),
                Output::ServingChanged(s) => Seen::Serving(s),
                Output::WatchDone { token, result } => Seen::Watch(token, result),
            });
        }
    }

    /// Deliver every message on the wire (and those they cause) at the current time.
    pub(crate) fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let Some(env) = self.wire.pop_front() else { return };
            if self.cut.contains(&env.to) || self.cut.contains(&env.from.node) {
                continue;
            }
            let to = env.to;
            self.input(to.0, Input::Peer(env));
        }
        panic!("the network did not settle");
    }

    /// Let `ms` of virtual time pass: fire every node's timeouts as they fall due, delivering
    /// the messages they cause at once.
    pub(crate) fn advance(&mut self, ms: u64) {
        let until = Time(self.now.0 + ms);
        for _ in 0..100_000 {
            let due = self.nodes.values().filter_map(Node::poll_timeout).min();
            match due {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    let ids: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.poll_timeout().is_some_and(|t| t <= now)).map(|(id, _)| *id).collect();
                    for id in ids {
                        self.nodes.get_mut(&id).expect("listed").handle_timeout(now);
                        self.collect(id);
                    }
                    self.stabilize();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("timeouts kept falling due");
    }

    /// Node `id`'s status now (as the driver asks for it: after bringing the node's clock to now).
    pub(crate) fn status(&mut self, id: u64) -> NodeStatus {
        let now = self.now;
        self.nodes.get_mut(&NodeId(id)).expect("a node of this net").handle_timeout(now);
        self.collect(NodeId(id));
        self.node(id).status()
    }

    /// What node `id` emitted since the last call.
    pub(crate) fn take(&mut self, id: u64) -> Vec<Seen> {
        std::mem::take(self.seen.entry(NodeId(id)).or_default())
    }

    /// Elect `leader`: every node hears the election's hint.
    pub(crate) fn elect(&mut self, leader: u64) {
        let ids: Vec<u64> = self.nodes.keys().map(|n| n.0).collect();
        for id in ids {
            self.input(id, Input::Hint(Some(NodeId(leader))));
        }
        self.stabilize();
    }
}

#[test]
fn a_write_on_a_one_node_cluster_is_proposed_applied_and_answered_with_its_index() {
    // A founding member starts without a leader: it does not serve reads yet.
    let mut net = Net::new(1, |_| {});
    assert_eq!(net.take(1), vec![Seen::Serving(false)]);

    // The election names it: phase 1 against itself, and it leads. Its own commit point is the
    // catch-up target, already reached, so it serves.
    net.elect(1);
    assert_eq!(net.take(1), vec![Seen::Leader(Some(NodeId(1))), Seen::Serving(true)]);

    // A write is proposed, chosen by the quorum of one, applied, and answered with the store
    // index it applied at (the first command: index 1).
    net.input(1, Input::Write { token: 7, session: None, op: put("a", "1"), forward: true });
    net.stabilize();
    assert_eq!(net.take(1), vec![Seen::Write(7, put_done(1, None))]);
    assert_eq!(net.node(1).store().get(b"a"), Some(Versioned { value: b"1".to_vec(), version: 1 }));
    assert_eq!(net.node(1).counters().proposals, 1);
    assert_eq!(net.node(1).counters().applied_commands, 1);
}

#[test]
fn a_sequential_read_with_min_index_waits_for_the_index_and_is_released() {
    let mut net = Net::new(1, |_| {});
    net.elect(1);
    net.input(1, Input::Write { token: 1, session: None, op: put("a", "1"), forward: true });
    net.stabilize();
    net.take(1);

    // The client saw index 2 elsewhere; this replica has applied only 1: the read waits.
    net.input(1, Input::Read { token: 2, consistency: Consistency::Sequential { min_index: 2 }, f: get("a") });
    assert_eq!(net.take(1), vec![]);
    assert_eq!(net.node(1).status().pending_reads, 1);

    // The second write applies index 2: its answer, then the read, which reflects it.
    net.input(1, Input::Write { token: 3, session: None, op: put("a", "2"), forward: true });
    net.stabilize();
    let read = ReadDone { answer: value("2", 2), index: 2, lag_slots: 0, last_contact_ms: Some(0) };
    assert_eq!(net.take(1), vec![Seen::Write(3, put_done(2, Some(1))), Seen::Read(2, Ok(read))]);
    assert_eq!(net.node(1).status().pending_reads, 0);

    // A read whose index is already applied is answered at once.
    net.input(1, Input::Read { token: 4, consistency: Consistency::Sequential { min_index: 1 }, f: get("a") });
    let read = ReadDone { answer: value("2", 2), index: 2, lag_slots: 0, last_contact_ms: Some(0) };
    assert_eq!(net.take(1), vec![Seen::Read(4, Ok(read))]);
}

#[test]
fn a_linearizable_read_on_a_follower_waits_for_the_read_index() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }

    // Follower 2 is cut off while a write is chosen by 1 and 3.
    net.cut.insert(NodeId(2));
    net.input(1, Input::Write { token: 1, session: None, op: put("k", "v"), forward: true });
    net.stabilize();
    assert_eq!(net.take(1), vec![Seen::Write(1, put_done(1, None))]);
    assert_eq!(net.node(2).store().get(b"k"), None);

    // Healed, follower 2 is asked a linearizable read before it learned the write. The leader
    // confirms its ballot with a quorum and returns its commit point (read index); the follower
    // answers only once it applied that index, so the read sees the write (read-index reads,
    // Ongaro's thesis 6.4).
    net.cut.clear();
    net.input(2, Input::Read { token: 9, consistency: Consistency::Linearizable, f: get("k") });
    assert_eq!(net.take(2), vec![], "nothing to answer before the leader confirms");
    net.stabilize();
    net.advance(200);
    let seen = net.take(2);
    let read = ReadDone { answer: value("v", 1), index: 1, lag_slots: 0, last_contact_ms: Some(0) };
    assert_eq!(seen, vec![Seen::Read(9, Ok(read))]);
    assert_eq!(net.node(2).applied_slot(), net.node(1).applied_slot());
}

#[test]
fn a_removed_node_refuses_everything_with_removed() {
    let mut net = Net::new(1, |_| {});
    net.elect(1);
    net.take(1);
    // A read waits for an index that will never come here.
    net.input(1, Input::Read { token: 1, consistency: Consistency::Sequential { min_index: 5 }, f: get("a") });
    assert_eq!(net.take(1), vec![]);

    // The leader's removal mark arrives (the node missed the slot that removed it): the waiting
    // read is refused, serving stops, and every later request is refused with `Removed` (410).
    let r = Removal { epoch: 4, source: "etcd" };
    net.input(1, Input::Removed(r));
    assert_eq!(net.take(1), vec![Seen::Removed(r), Seen::Read(1, Err(Refused::Removed(r))), Seen::Serving(false)]);
    net.input(1, Input::Write { token: 2, session: None, op: put("a", "1"), forward: true });
    net.input(1, Input::Read { token: 3, consistency: Consistency::Linearizable, f: get("a") });
    net.input(1, Input::Read { token: 4, consistency: Consistency::Sequential { min_index: 0 }, f: get("a") });
    assert_eq!(
        net.take(1),
        vec![Seen::Write(2, Err(Refused::Removed(r))), Seen::Read(3, Err(Refused::Removed(r))), Seen::Read(4, Err(Refused::Removed(r)))]
    );
    // A second notice changes nothing.
    net.input(1, Input::Removed(Removal { epoch: 9, source: "log" }));
    assert_eq!(net.take(1), vec![]);
    assert_eq!(net.node(1).serving(), Err(NotServing::Removed(r)));
}

#[test]
fn a_snapshot_install_settles_the_writes_the_core_no_longer_tracks() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }

    // Leader 1 proposes two writes, one with a session and one without. Its accepts reach 2 and
    // 3, but it is cut off before it hears that they were accepted.
    let session = SessionRef { client: ClientId(42), seq: 1 };
    net.input(1, Input::Write { token: 1, session: Some(session), op: put("s", "1"), forward: true });
    net.input(1, Input::Write { token: 2, session: None, op: put("n", "1"), forward: true });
    let accepts: Vec<Envelope> = net.wire.drain(..).collect();
    for env in accepts {
        let to = env.to;
        net.input(to.0, Input::Peer(env));
    }
    net.cut.insert(NodeId(1));
    net.stabilize();
    assert_eq!(net.take(1), vec![], "1 has not learned the outcome");

    // Node 2 is elected; phase 1 adopts both accepted values (Paxos Made Simple 2.3), so both
    // writes are chosen and applied on 2 and 3.
    net.input(2, Input::Hint(Some(NodeId(2))));
    net.input(3, Input::Hint(Some(NodeId(2))));
    net.stabilize();
    assert_eq!(net.node(2).store().last_applied(), 2);

    // Node 1 installs a snapshot of node 2's state. Its core stops tracking both proposals (their
    // slots are inside the snapshot). Duty 5: the session-tagged write is answered from the
    // installed session table (its result, at the index it took effect at); the other can no longer be
    // told apart from a lost one, and is answered "outcome unknown" at once, not at its timeout.
    let meta = SnapshotMeta { last_slot: net.node(2).applied_slot(), config: net.node(2).config().clone() };
    let store = Box::new(net.node(2).store().clone());
    net.input(1, Input::InstallSnapshot { meta, store });
    let session_result: StoreOutput = Ok(WriteResult { index: 1, outcome: WriteOutcome::Put { previous_version: None } });
    // (The install also steps the old leader down: it resigns from the election.)
    assert_eq!(
        net.take(1),
        vec![
            Seen::Config(0),
            Seen::Resign,
            Seen::Leader(None),
            Seen::Write(1, Ok(WriteDone { output: session_result, index: 1 })),
            Seen::Write(2, Err(Refused::OutcomeUnknown)),
        ]
    );
    assert_eq!(net.node(1).status().pending_writes, 0);
    assert_eq!((net.node(1).counters().settled_from_sessions, net.node(1).counters().settled_unknown), (1, 1));
}

#[test]
fn a_catching_up_replica_serves_only_after_reaching_its_target_and_stops_when_lagging() {
    let mut net = Net::new(3, |s| s.max_read_lag_slots = 2);
    // Node 3 is cut off from the start: it never heard from a leader.
    net.cut.insert(NodeId(3));
    net.elect(1);
    for token in 1..=5 {
        net.input(1, Input::Write { token, session: None, op: put("k", &token.to_string()), forward: true });
        net.stabilize();
    }
    // (The election's hint names the leader, but a hint is not word from the leader.)
    assert_eq!(net.take(3), vec![Seen::Serving(false), Seen::Leader(Some(NodeId(1)))]);
    assert_eq!(net.node(3).serving(), Err(NotServing::CatchingUp("catching up: no word from a leader yet".into())));
    net.input(3, Input::Read { token: 10, consistency: Consistency::Sequential { min_index: 0 }, f: get("k") });
    let refused = Refused::NotServing { leader: Some(NodeId(1)), catching_up: true, reason: "catching up: no word from a leader yet".into() };
    assert_eq!(net.take(3), vec![Seen::Read(10, Err(refused))]);

    // Healed: the first word from the leader fixes the catch-up target at the commit point it
    // carries (slot 6: the leader's no-op and five writes); the replica serves once it applied
    // that, and not before. (The leader goes on to fill its fence with no-ops meanwhile,
    // `paxos/src/forward.rs`; the replica learns those as well.)
    net.cut.clear();
    net.advance(60);
    assert_eq!(net.node(3).status().catch_up_target, Some(Slot(6)));
    assert_eq!(net.node(3).applied_slot(), net.node(1).applied_slot());
    assert_eq!(net.take(3), vec![Seen::Serving(true)]);

    // Cut off again while three slots are chosen: on the next word from the leader it is three
    // slots behind the commit point it heard of, over the bound of 2, and stops serving until it
    // fetched them.
    net.cut.insert(NodeId(3));
    for token in 6..=8 {
        net.input(1, Input::Write { token, session: None, op: put("k", &token.to_string()), forward: true });
        net.stabilize();
    }
    net.cut.clear();
    net.advance(60);
    assert_eq!(net.take(3), vec![Seen::Serving(false), Seen::Serving(true)]);
}

#[test]
fn a_silent_leader_is_suspected_once_and_the_suspicion_withdrawn_when_it_speaks() {
    let mut net = Net::new(3, |s| s.suspect_leader_after_ms = 400);
    net.elect(1);
    net.advance(100);
    for id in 1..=3 {
        net.take(id);
    }

    // The leader is cut off. Its last heartbeat reached the followers `contact` ms ago; the
    // suspicion comes exactly when the silence reaches 400 ms.
    net.cut.insert(NodeId(1));
    let contact = net.status(2).last_contact_ms.expect("heard from the leader");
    net.advance(400 - contact - 1);
    assert_eq!(net.take(2), vec![]);
    net.advance(1);
    let acceptors = vec![NodeId(1), NodeId(2), NodeId(3)];
    assert_eq!(net.take(2), vec![Seen::Suspect(Some(Suspicion { leader: NodeId(1), acceptors: acceptors.clone() }))]);
    assert_eq!(net.take(3), vec![Seen::Suspect(Some(Suspicion { leader: NodeId(1), acceptors }))]);

    // Emitted once: more silence says nothing new. The leader never suspects itself.
    net.advance(300);
    assert_eq!(net.take(2), vec![]);
    assert_eq!(net.take(1), vec![]);

    // Its next heartbeat withdraws the suspicion.
    net.cut.clear();
    net.advance(50);
    assert_eq!(net.take(2), vec![Seen::Suspect(None)]);
    assert_eq!(net.take(3), vec![Seen::Suspect(None)]);
}

#[test]
fn a_cancelled_request_gets_no_answer_though_a_proposed_write_may_still_apply() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }
    // The write is proposed (its accepts are on the wire) when the client gives up.
    net.input(1, Input::Write { token: 1, session: None, op: put("a", "1"), forward: true });
    net.input(1, Input::Cancel(1));
    net.stabilize();
    // Nobody hears of it, but it was chosen and applied: "outcome unknown" was the truth.
    assert_eq!(net.take(1), vec![]);
    assert_eq!(net.node(1).store().get(b"a"), Some(Versioned { value: b"1".to_vec(), version: 1 }));

    // A waiting read is forgotten too.
    net.input(1, Input::Read { token: 2, consistency: Consistency::Sequential { min_index: 9 }, f: get("a") });
    assert_eq!(net.node(1).status().pending_reads, 1);
    net.input(1, Input::Cancel(2));
    assert_eq!(net.node(1).status().pending_reads, 0);
    assert_eq!(net.take(1), vec![]);
}

#[test]
fn a_follower_that_serves_forwards_a_write_inside_the_peer_stream_and_answers_from_its_log() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }
    // Follower 2 serves: the command goes to the leader (paxos/src/forward.rs) and the answer
    // comes from 2's own apply of the chosen slot.
    // (The follower learns the commit point on the leader's next heartbeat.)
    net.input(2, Input::Write { token: 5, session: None, op: put("f", "1"), forward: true });
    net.stabilize();
    net.advance(60);
    assert_eq!(net.take(2), vec![Seen::Write(5, put_done(1, None))]);
    assert_eq!((net.node(2).counters().proposals, net.node(2).counters().forwarded), (1, 1));
    // The client asked to be redirected instead: "not the leader", with the leader to go to.
    net.input(2, Input::Write { token: 6, session: None, op: put("f", "2"), forward: false });
    assert_eq!(net.take(2), vec![Seen::Write(6, Err(Refused::NotLeader { leader: Some(NodeId(1)) }))]);
}

#[test]
fn a_follower_stops_serving_the_moment_its_last_contact_is_older_than_the_staleness_bound() {
    let mut net = Net::new(3, |s| s.max_read_staleness_ms = 200);
    net.elect(1);
    net.advance(100);
    assert_eq!(net.take(2), vec![Seen::Serving(false), Seen::Leader(Some(NodeId(1))), Seen::Serving(true)]);
    net.take(1);
    // The leader goes silent; the follower's serving state changes exactly when the silence
    // exceeds 200 ms (a deadline of its own in `poll_timeout`, no input needed).
    net.cut.insert(NodeId(1));
    let contact = net.status(2).last_contact_ms.expect("heard from the leader");
    net.advance(200 - contact);
    assert_eq!(net.take(2), vec![]);
    net.advance(1);
    assert_eq!(net.take(2), vec![Seen::Serving(false)]);
    // The leader, cut off from its quorum too, has gone stale as well: its last contact is the
    // last time a quorum of acceptors answered it (the review finding below).
    assert!(net.take(1).contains(&Seen::Serving(false)));
    assert!(matches!(net.status(1).serving, Err(NotServing::Lagging(_))), "{:?}", net.status(1).serving);
}

// ---- Found by an adversarial review (failing before their fixes) ----

/// Review finding (fixed: a leader's last contact is its last quorum contact): the staleness bound does not apply to a leader that was cut off. It keeps
/// `last_contact_ms = Some(0)` and serves sequential reads until its core's lease runs out
/// (`leader_lease_ms`, 1000 ms by default), while a new leader has acknowledged newer writes.
/// With `max_read_staleness_ms = 100`, a read 500 ms after the cut returns the old value with
/// `X-Synod-Last-Contact: 0`.
#[test]
fn review_an_isolated_old_leader_serves_sequential_reads_past_the_staleness_bound() {
    let mut net = Net::new(3, |s| s.max_read_staleness_ms = 100);
    net.elect(1);
    net.advance(100);
    net.input(1, Input::Write { token: 1, session: None, op: put("k", "old"), forward: true });
    net.stabilize();
    net.advance(60);
    for id in 1..=3 {
        net.take(id);
    }
    // t0: leader 1 is cut off. Nodes 2 and 3 elect 2, which acknowledges a newer write.
    net.cut.insert(NodeId(1));
    net.input(2, Input::Hint(Some(NodeId(2))));
    net.input(3, Input::Hint(Some(NodeId(2))));
    net.stabilize();
    net.input(2, Input::Write { token: 2, session: None, op: put("k", "new"), forward: true });
    net.stabilize();
    assert!(net.take(2).iter().any(|s| matches!(s, Seen::Write(2, Ok(_)))), "2 acknowledged the new write");
    // t0 + 500 ms: five times the staleness bound. Node 1 has heard from no one.
    net.advance(500);
    net.take(1);
    net.input(1, Input::Read { token: 3, consistency: Consistency::Sequential { min_index: 0 }, f: get("k") });
    let seen = net.take(1);
    assert!(
        matches!(seen.as_slice(), [Seen::Read(3, Err(Refused::NotServing { .. }))]),
        "a replica that heard from nobody for 500 ms (bound 100 ms) served: {seen:?}"
    );
}

/// Review finding (fixed: duty 5 answers from the installed session table whether or not the
/// core still tracks the id): duty 5 skipped writes this follower forwarded. The core keeps tracking a
/// forwarded id until its slot is applied here or `FORWARD_TRACK_MS` (10 s) passes; a snapshot
/// install that covers the slot never applies it, so `settle_untracked_writes` leaves the write
/// pending, and once the core forgets it nothing runs duty 5 again: the client is answered only
/// by the shell's timeout ("outcome unknown"), though the installed session table holds its result.
#[test]
fn review_a_forwarded_write_covered_by_an_installed_snapshot_is_never_settled() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    net.advance(100);
    for id in 1..=3 {
        net.take(id);
    }
    // Follower 3 forwards a session-tagged write; the Forward reaches 1, then 3 is cut off.
    let session = SessionRef { client: ClientId(7), seq: 1 };
    net.input(3, Input::Write { token: 1, session: Some(session), op: put("f", "1"), forward: true });
    assert_eq!(net.node(3).counters().forwarded, 1);
    let forward: Vec<Envelope> = net.wire.drain(..).collect();
    net.cut.insert(NodeId(3));
    for env in forward {
        let to = env.to;
        net.input(to.0, Input::Peer(env));
    }
    net.stabilize();
    net.advance(100);
    assert_eq!(net.node(1).store().last_applied(), 1, "chosen and applied by 1 and 2");
    // 3 installs a snapshot of 1's state: the write's slot is inside it.
    let meta = SnapshotMeta { last_slot: net.node(1).applied_slot(), config: net.node(1).config().clone() };
    let store = Box::new(net.node(1).store().clone());
    net.input(3, Input::InstallSnapshot { meta, store });
    net.advance(11_000);
    let seen = net.take(3);
    assert!(
        seen.iter().any(|s| matches!(s, Seen::Write(1, _))),
        "the write is still pending ({} pending) after the install and 11 s: {seen:?}",
        net.node(3).status().pending_writes
    );
}

/// Found by a second review (fixed: a leader's contact is computed when asked): with one acceptor, a leader's quorum contact is "now" only as of the
/// node's *last input*: `update_serving` stores `quorum_contact(now)` in `leader_contact`, and a
/// read is judged (`serving()`, at the new `self.now`) *before* `after()` refreshes it. A one-node
/// cluster (or one acceptor plus learners, as while a cluster grows by joins) has nobody to lose
/// contact with, yet a sequential read that reaches the loop before its overdue timer (the
/// driver's `select!` is unbiased; any loop stall longer than bound - heartbeat) is refused as
/// "stale: no word from a leader for 150 ms", and every read it serves carries a non-zero
/// `X-Synod-Last-Contact` (the time since its last input).
#[test]
fn review2_a_one_node_leader_refuses_a_sequential_read_as_stale() {
    let mut net = Net::new(1, |s| s.max_read_staleness_ms = 100);
    net.elect(1);
    net.advance(10);
    net.take(1);
    // The loop was held up for 150 ms; the client's read is handled before the timers.
    let t = Time(net.now.0 + 150);
    net.nodes.get_mut(&NodeId(1)).expect("node 1").handle(
        t,
        Input::Read { token: 1, consistency: Consistency::Sequential { min_index: 0 }, f: get("k") },
    );
    net.collect(NodeId(1));
    let seen = net.take(1);
    assert!(
        matches!(seen.as_slice(), [Seen::Read(1, Ok(ReadDone { last_contact_ms: Some(0), .. }))]),
        "a one-node leader, which has nobody to hear from, answered: {seen:?}"
    );
}


/// Found by the second review of 2026-11-30 (894ee0a): a retried write that took effect now reports the index it took effect at,
/// but a retried *refusal* (a failed guard stored in the session table) still reports the
/// duplicate's index, while the `current` it carries is the key as of the original evaluation.
/// `X-Synod-Index` on the 409/412 then names an index at which the key did not hold `current`
/// ("every reply says which store index it reflects"); `WriteDone::index` is documented as "the
/// store's applied index right after the command was evaluated".
#[test]
fn review2_a_retried_guard_failure_reports_the_index_its_current_value_reflects() {
    use kvstore::{Guard, WriteError};
    let mut net = Net::new(1, |_| {});
    net.elect(1);
    net.input(1, Input::Write { token: 1, session: None, op: put("k", "0"), forward: true });
    net.stabilize();
    // Session 5, request 1: a guarded put whose guard fails at index 2 (k is "0" at version 1).
    let session = SessionRef { client: ClientId(5), seq: 1 };
    let guarded = WriteOp::Put { key: b"k".to_vec(), value: b"x".to_vec(), guard: Some(Guard::Version(99)) };
    net.input(1, Input::Write { token: 2, session: Some(session), op: guarded.clone(), forward: true });
    net.stabilize();
    // Another client writes k at index 3; then the first client retries its request 1 (its reply
    // was lost), which is answered from the session table at index 4.
    net.input(1, Input::Write { token: 3, session: None, op: put("k", "9"), forward: true });
    net.stabilize();
    net.take(1);
    net.input(1, Input::Write { token: 4, session: Some(session), op: guarded, forward: true });
    net.stabilize();
    let seen = net.take(1);
    let [Seen::Write(4, Ok(WriteDone { output: Err(WriteError::GuardFailed { current, .. }), index }))] = seen.as_slice() else {
        panic!("{seen:?}");
    };
    assert_eq!(current.as_ref().map(|v| v.version), Some(1), "the stored refusal: k as of index 2");
    // At the reply's index k is "9" at version 3, not the `current` the reply shows.
    assert_eq!(*index, 2, "the refusal reports index {index}, where k was {:?}", net.node(1).store().get(b"k"));
}

/// Offer 20 writes to the leader of a 3-node net before any `Accepted` comes back; the slots
/// they took and how many were answered.
fn twenty_writes_at_once(window: u64) -> (u64, usize) {
    let mut net = Net::new(3, |s| s.pipeline_window = window);
    net.elect(1);
    let before = net.status(1).core.commit.0;
    for i in 0..20u64 {
        net.input(1, Input::Write { token: 100 + i, session: None, op: put(&format!("k{i}"), "v"), forward: true });
    }
    net.stabilize();
    let answered = net.take(1).into_iter().filter(|s| matches!(s, Seen::Write(_, Ok(_)))).count();
    assert_eq!(net.node(1).store().last_applied(), 20);
    (net.status(1).core.commit.0 - before, answered)
}

#[test]
fn writes_that_arrive_while_the_pipeline_window_is_full_share_a_slot() {
    // The first `DEFAULT_PIPELINE_WINDOW` writes take a slot each at once; the rest wait in the
    // queue and leave together in the next slot the window frees: 20 commands in at most
    // window + 1 slots.
    let (slots, answered) = twenty_writes_at_once(DEFAULT_PIPELINE_WINDOW);
    assert_eq!(answered, 20);
    assert!(slots <= DEFAULT_PIPELINE_WINDOW + 1, "20 writes took {slots} slots");
    // A window of 32 leaves no write waiting: one slot each.
    assert_eq!(twenty_writes_at_once(32), (20, 20));
}

/// The log clock that expires sessions follows real time however clients spread their writes
/// (issue 26): writes taken round-robin by all three replicas, one every 100 ms for 30 s of
/// virtual time. Each slot carries its leader's tick, so the clock counts what the leader
/// measured between its slots; with each request's own proposer stamp (`Bugs::proposer_clock`,
/// the rule before), no two consecutive requests in the log shared a proposer and the clock
/// stayed at 0.
fn log_clock_after_round_robin_writes(bugs: Bugs) -> u64 {
    let mut net = Net::new(3, |s| s.bugs = bugs);
    net.elect(1);
    for i in 0..300u64 {
        let via = 1 + i % 3;
        net.input(via, Input::Write { token: 10_000 + i, session: None, op: put("k", "v"), forward: true });
        net.advance(100);
    }
    net.stabilize();
    let clocks: Vec<u64> = (1..=3).map(|id| net.node(id).store().sessions().clock_ms()).collect();
    assert!(clocks.iter().all(|c| *c == clocks[0]), "every replica has the same log clock: {clocks:?}");
    assert_eq!(net.node(3).store().last_applied(), 300, "every write applied");
    clocks[0]
}

#[test]
fn the_log_clock_follows_real_time_when_every_replica_takes_writes() {
    let clock = log_clock_after_round_robin_writes(Bugs::default());
    // 300 writes 100 ms apart: 29.9 s between the first and the last proposal.
    assert!((29_000..=30_000).contains(&clock), "log clock {clock} ms after 29.9 s of writes");
}

#[test]
fn the_proposer_clock_is_caught() {
    let clock = log_clock_after_round_robin_writes(Bugs { proposer_clock: true, ..Bugs::default() });
    assert!(clock < 1_000, "with per-request proposer stamps the clock hardly moves: {clock}");
}

/// Issue 25: a follower's last contact with the leader is refreshed only by word that shows the
/// leader still leads here. A heartbeat from a leader this replica has since refused (it promised
/// a higher ballot) is nacked and does not count; `Bugs::contact_on_any_message` puts the old rule
/// back and the same schedule shows it.
#[test]
fn a_nacked_heartbeat_of_a_deposed_leader_is_no_contact() {
    for old_rule in [false, true] {
        let m = |n: u64| Member { node: NodeId(n), incarnation: Incarnation(1) };
        let config = Configuration::bootstrap((1..=3).map(m));
        let mut settings = NodeSettings::new(m(2), 1, Some(config));
        settings.bugs.contact_on_any_message = old_rule;
        let mut node = Node::new(settings, Time(0));
        let env = |from: u64, msg: paxos::Message| Input::Peer(Envelope { from: m(from), to: NodeId(2), msg });
        let hb = |ballot: paxos::Ballot| paxos::Message::Heartbeat { ballot, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) };
        let old = paxos::Ballot::new(1, m(1));
        node.handle(Time(10), env(1, hb(old)));
        assert_eq!(node.status().last_contact_ms, Some(0), "a taken heartbeat is contact");
        // Node 3 campaigns with a higher ballot: node 2 promises it, node 1 is deposed here.
        node.handle(Time(20), env(3, paxos::Message::Prepare { ballot: paxos::Ballot::new(2, m(3)), first_slot: Slot(1) }));
        // The deposed leader's heartbeat is refused; it is not word that node 1 leads.
        node.handle(Time(500), env(1, hb(old)));
        let sent: Vec<_> = std::iter::from_fn(|| node.poll_output()).collect();
        assert!(sent.iter().any(|o| matches!(o, Output::Send(e) if matches!(e.msg, paxos::Message::Nack { .. }))), "nacked: {sent:?}");
        let contact = node.status().last_contact_ms;
        if old_rule {
            assert_eq!(contact, Some(0), "the old rule counts the nacked heartbeat");
        } else {
            assert_eq!(contact, Some(490), "no contact since the last heartbeat taken");
        }
    }
}
