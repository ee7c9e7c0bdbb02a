//! Adversarial review of issue 25 (the fence that settles commands forwarded to a dead leader).
//!
//! A small hand-driven network of real replicas: every message goes through `Replica::handle`;
//! links can be cut (messages dropped, kept in `dropped` so a test can deliver one of them by
//! hand later: a lossy link that lets one message through) or held (delivered later, in order).

use crate::action::{Action, Persist};
use crate::recovery::Recovered;
use crate::config::{ConfigChange, Configuration};
use crate::event::Event;
use crate::ids::{NodeId, RequestId, Slot, Time};
use crate::message::{Envelope, Message, SnapshotMeta};
use crate::options::Options;
use crate::replica::Replica;
use crate::testkit::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub(crate) struct Net {
    pub(crate) rs: BTreeMap<u64, Replica>,
    q: VecDeque<Envelope>,
    pub(crate) now: u64,
    cut: BTreeSet<(u64, u64)>,
    hold: BTreeSet<(u64, u64)>,
    held: Vec<Envelope>,
    pub(crate) dropped: Vec<Envelope>,
    pub(crate) lost: BTreeMap<u64, Vec<RequestId>>,
    pub(crate) applied: BTreeMap<u64, Vec<RequestId>>,
    /// Every `Persist` each node emitted, in order (its write-ahead log).
    pub(crate) wal: BTreeMap<u64, Vec<Persist>>,
}

impl Net {
    pub(crate) fn new(rs: Vec<Replica>) -> Net {
        let mut net = Net {
            rs: rs.into_iter().map(|r| (r.me.node.0, r)).collect(),
            q: VecDeque::new(),
            now: 0,
            cut: BTreeSet::new(),
            hold: BTreeSet::new(),
            held: Vec::new(),
            dropped: Vec::new(),
            lost: BTreeMap::new(),
            applied: BTreeMap::new(),
            wal: BTreeMap::new(),
        };
        let ids: Vec<u64> = net.rs.keys().copied().collect();
        for n in ids {
            net.collect(n);
        }
        net
    }

    pub(crate) fn r(&mut self, n: u64) -> &mut Replica {
        self.rs.get_mut(&n).expect("node exists")
    }

    pub(crate) fn collect(&mut self, n: u64) {
        let r = self.rs.get_mut(&n).expect("node exists");
        while let Some(a) = r.poll_action() {
            match a {
                Action::Send(e) => self.q.push_back(e),
                Action::Persist(p) => self.wal.entry(n).or_default().push(p),
                Action::ProposalLost { id } => self.lost.entry(n).or_default().push(id),
                Action::Apply { value, .. } => self.applied.entry(n).or_default().extend(value.request_ids()),
                _ => {}
            }
        }
    }

    pub(crate) fn pump(&mut self) {
        let mut steps = 0u64;
        while let Some(e) = self.q.pop_front() {
            steps += 1;
            assert!(steps < 5_000_000, "message storm");
            let (f, t) = (e.from.node.0, e.to.0);
            if self.cut.contains(&(f, t)) {
                self.dropped.push(e);
                continue;
            }
            if self.hold.contains(&(f, t)) {
                self.held.push(e);
                continue;
            }
            let now = Time(self.now);
            self.r(t).handle(now, Event::Receive(e));
            self.collect(t);
        }
    }

    /// Deliver one message by hand (whatever the links say).
    pub(crate) fn deliver(&mut self, e: Envelope) {
        let t = e.to.0;
        let now = Time(self.now);
        self.r(t).handle(now, Event::Receive(e));
        self.collect(t);
        self.pump();
    }

    pub(crate) fn tick(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            let ids: Vec<u64> = self.rs.keys().copied().collect();
            for n in ids {
                let now = Time(self.now);
                let r = self.r(n);
                if r.poll_timeout().is_some_and(|t| t <= now) {
                    r.handle_timeout(now);
                }
                self.collect(n);
            }
            self.pump();
        }
    }

    pub(crate) fn hint(&mut self, n: u64, leader: u64) {
        let now = Time(self.now);
        self.r(n).handle(now, Event::LeaderHint { leader: Some(NodeId(leader)) });
        self.collect(n);
        self.pump();
    }

    pub(crate) fn cut_both(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub(crate) fn heal_both(&mut self, a: u64, b: u64) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    pub(crate) fn isolate(&mut self, n: u64) {
        let ids: Vec<u64> = self.rs.keys().copied().filter(|k| *k != n).collect();
        for k in ids {
            self.cut_both(n, k);
        }
    }

    pub(crate) fn start_hold(&mut self, from: u64, to: u64) {
        self.hold.insert((from, to));
    }

    pub(crate) fn release_hold(&mut self, from: u64, to: u64) {
        self.hold.remove(&(from, to));
        let (go, keep): (Vec<Envelope>, Vec<Envelope>) =
            std::mem::take(&mut self.held).into_iter().partition(|e| e.from.node.0 == from && e.to.0 == to);
        self.held = keep;
        for e in go {
            self.q.push_back(e);
        }
        self.pump();
    }

    /// The first message of the given kind dropped on the link `from -> to`.
    #[allow(dead_code)]
    pub(crate) fn first_dropped(&self, from: u64, to: u64, pred: impl Fn(&Message) -> bool) -> Envelope {
        self.dropped
            .iter()
            .find(|e| e.from.node.0 == from && e.to.0 == to && pred(&e.msg))
            .cloned()
            .expect("such a message was dropped")
    }

    /// The last message of the given kind dropped on the link `from -> to`.
    pub(crate) fn last_dropped(&self, from: u64, to: u64, pred: impl Fn(&Message) -> bool) -> Envelope {
        self.dropped
            .iter()
            .rev()
            .find(|e| e.from.node.0 == from && e.to.0 == to && pred(&e.msg))
            .cloned()
            .expect("such a message was dropped")
    }

    /// Crash node `n` keeping its disk (snapshot at slot 0 with `config`, and its WAL), and
    /// restart it as the same incarnation (`Replica::recover`).
    pub(crate) fn durable_restart(&mut self, n: u64, config: Configuration) {
        let mut disk = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config });
        for p in self.wal.get(&n).cloned().unwrap_or_default() {
            disk.replay(p);
        }
        let me = self.r(n).me;
        let opts = Options { restart_epoch: 1, ..Options::new(me, None) };
        let r = Replica::recover(opts, Time(self.now), disk);
        self.rs.insert(n, r);
        self.q.retain(|e| e.to.0 != n);
        self.collect(n);
    }

    pub(crate) fn config_change(&mut self, leader: u64, seq: u64, change: ConfigChange) {
        let now = Time(self.now);
        self.r(leader)
            .propose_config(now, RequestId { node: NodeId(leader), seq }, change)
            .unwrap_or_else(|e| panic!("{change:?} refused: {e:?}"));
        self.collect(leader);
        self.pump();
        self.tick(20);
        let r = self.r(leader);
        assert!(r.is_leader(), "node {leader} still leads after {change:?}");
    }
}

/// Finding 1 (safety): a fence computed from a phase 1 in a configuration two changes behind
/// the current one settles a command that is then chosen.
///
/// C0 = {1,2,3}. Node 1 is cut off from the start (its log stays at slot 0, configuration C0).
/// Node 2 leads and runs three changes: add learner 4, promote 4, remove 3: C3 = {1,2,4}, whose
/// quorum {2,4} is disjoint from the C0 quorum {1,3}. Node 4 then leads C3 (ballot (2,4)) and
/// many slots are chosen by {2,4}. Follower 2 forwards C to node 4, which proposes it in slot X
/// (its Accept to 2 is delayed). Node 1, named leader, runs phase 1 in C0 with the removed
/// (still running) node 3: quorum {1,3}. Its highest reported slot M1 is node 3's last slot
/// (the removal's neighbourhood), so its fence M1 + 65 lies far below the slots C3 chose. It
/// heartbeats node 2 (C0 member); ballot (3,1) > (2,4), so node 2 takes the fence: its commit is
/// past it, and C (forwarded to (2,4) < (3,1)) is reported lost. The delayed Accept then reaches
/// node 2, which has not promised (3,1) (heartbeats raise no promise): C is chosen by {2,4} and
/// applied at node 2, whose driver has already proposed C again under a fresh id.
#[test]
fn a_fence_from_a_stale_configurations_phase_1_settles_a_command_that_is_then_chosen() {
    let c0 = Configuration::bootstrap([m(1), m(2), m(3)]);
    let mut rs: Vec<Replica> = (1..=3).map(|n| Replica::new(Options::new(m(n), Some(c0.clone())), Time(0))).collect();
    let mut r4 = Replica::new(Options::new(m(4), None), Time(0));
    // A joining node gets the log from a snapshot (here: the empty one at slot 0, with C0).
    r4.handle(Time(0), Event::SnapshotInstalled(SnapshotMeta { last_slot: Slot(0), config: c0.clone() }));
    rs.push(r4);
    let mut net = Net::new(rs);
    net.isolate(1);

    // Node 2 leads C0 and grows, then shrinks, the configuration.
    net.hint(2, 2);
    net.tick(5);
    assert!(net.r(2).is_leader());
    net.config_change(2, 1001, ConfigChange::AddLearner(m(4)));
    net.config_change(2, 1002, ConfigChange::Promote(m(4)));
    net.config_change(2, 1003, ConfigChange::Remove(NodeId(3)));
    let c3: BTreeSet<_> = [m(1), m(2), m(4)].into_iter().collect();
    assert_eq!(net.r(2).log.current_config().expect("config").acceptors, c3);
    net.tick(10);

    // Node 4 leads C3 and many slots are chosen by {2,4}.
    net.hint(2, 4);
    net.hint(4, 4);
    net.tick(5);
    assert!(net.r(4).is_leader(), "node 4 leads C3");
    for i in 0..200 {
        let now = Time(net.now);
        net.r(4).propose(now, cmd(4, i)).expect("leader takes commands");
        net.collect(4);
        net.pump();
    }
    net.tick(10);
    let m1 = net.r(3).last_accepted().expect("node 3 voted");
    let fence1 = crate::forward::fence_after(m1);
    assert!(net.r(2).commit() >= fence1, "node 2 has learned past node 1's coming fence: {:?} < {fence1:?}", net.r(2).commit());

    // Follower 2 forwards C to node 4; node 4 proposes it, its Accept to 2 is delayed.
    let c = cmd(2, 777);
    net.start_hold(4, 2);
    let now = Time(net.now);
    net.r(2).forward(now, c.clone()).expect("forwards to node 4");
    net.collect(2);
    net.pump();
    assert!(net.r(4).tracks(c.id), "node 4 proposed C");

    // Node 1 hears one heartbeat of node 4 (a lossy link), so its next ballot is above (2,4).
    let hb = net.last_dropped(4, 1, |msg| matches!(msg, Message::Heartbeat { .. }));
    net.deliver(hb);
    // Node 1, named leader, reaches the removed node 3 only: phase 1 in C0 with quorum {1,3}.
    net.heal_both(1, 3);
    net.hint(1, 1);
    // Its heartbeats reach node 2 (its Prepare and Accepts to 2 were lost). (It went on passing
    // the stop signs it adopted with {1,3} until the one that needs a C2 quorum.) The first one
    // carries the fence of its C0 phase 1, below node 2's commit point.
    let hbs: Vec<Envelope> = net
        .dropped
        .iter()
        .filter(|e| e.from.node.0 == 1 && e.to.0 == 2 && matches!(e.msg, Message::Heartbeat { .. }))
        .cloned()
        .collect();
    assert!(!hbs.is_empty());
    if let Message::Heartbeat { fence, .. } = hbs[0].msg {
        // With the code under review: the C0 phase 1's fence, far below node 2's commit point.
        assert!(fence == fence1 || fence == Slot(0), "{fence:?}");
    }
    for hb in hbs {
        net.deliver(hb);
    }
    let reported_lost = net.lost.get(&2).is_some_and(|l| l.contains(&c.id));

    // The delayed Accept reaches node 2: C is chosen by {2,4} and applied at node 2.
    net.release_hold(4, 2);
    net.tick(30);
    let applied = net.applied.get(&2).is_some_and(|a| a.contains(&c.id));
    assert!(
        !(reported_lost && applied),
        "C was reported lost at node 2 (by the fence {fence1:?} of a C0 phase 1) and then applied there"
    );
}

/// Finding 2 (safety; the refusal rule `on_forward` relies on, not the fence itself): a durable
/// restart keeps the incarnation, so ballots of the old process still name the new one, but the
/// duplicate filter (`forwards_seen`) is in memory. Node 1 leads (1,1), takes C forwarded by
/// node 2 and proposes it in slot X (only its own vote lands), then crashes and restarts from its
/// disk. A duplicate of the `Forward` (the network may duplicate) reaches the restarted process:
/// it is a follower, so it refuses C as "meant for another ballot of ours" and sends `ForwardLost`,
/// which node 2 believes (same member). Node 1's disk still holds its vote for C in X; its next
/// phase 1 adopts it and C is chosen: applied at node 2 after its driver proposed it again.
#[test]
fn a_duplicate_forward_refused_after_a_durable_restart_is_chosen_anyway() {
    let c0 = Configuration::bootstrap([m(1), m(2), m(3)]);
    let rs: Vec<Replica> = (1..=3).map(|n| Replica::new(Options::new(m(n), Some(c0.clone())), Time(0))).collect();
    let mut net = Net::new(rs);
    net.hint(1, 1);
    net.tick(5);
    assert!(net.r(1).is_leader());
    // Node 1's accepts stop reaching the others; node 2 forwards C to it.
    net.cut.insert((1, 2));
    net.cut.insert((1, 3));
    let c = cmd(2, 777);
    let now = Time(net.now);
    net.r(2).forward(now, c.clone()).expect("forwards to node 1");
    net.collect(2);
    let dup = net.q.back().cloned().expect("the Forward");
    assert!(matches!(dup.msg, Message::Forward { .. }));
    net.pump();
    assert!(net.r(1).tracks(c.id), "node 1 proposed C");
    assert!(net.wal[&1].iter().any(|p| matches!(p, Persist::Accepted(e) if e.value.request_ids().contains(&c.id))));
    // Node 1 crashes and restarts from its disk, same incarnation; the duplicate arrives.
    net.durable_restart(1, c0.clone());
    net.heal_both(1, 2);
    net.heal_both(1, 3);
    net.deliver(dup);
    let reported_lost = net.lost.get(&2).is_some_and(|l| l.contains(&c.id));
    // Node 2 is named leader: node 1's promise carries its vote for C, which is adopted.
    net.tick(1);
    net.hint(2, 2);
    net.tick(50);
    let applied = net.applied.get(&2).is_some_and(|a| a.contains(&c.id));
    assert!(!(reported_lost && applied), "C was reported lost at node 2 (lost: {reported_lost}) and then applied there");
}
