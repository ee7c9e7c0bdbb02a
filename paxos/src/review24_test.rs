//! Review 24: adversarial schedules against the paged phase 1 (`Message::Promise { more }`).
//!
//! A hand-driven network of real replicas with a one-entry promise page (`promise_page_bytes =
//! 1`): every message waits in `pending` until the test delivers it (in any order, twice, or
//! never), so a page can be held while the world moves on. A ghost check reads every node's
//! write-ahead log: a slot is chosen at a ballot when a majority of the acceptors of the
//! configuration that governs it persisted an `Accepted` at that ballot; two different chosen
//! values for one slot, or two nodes applying different values at one slot, fail the test.

use crate::action::{Action, Persist};
use crate::config::{ConfigChange, Configuration};
use crate::event::Event;
use crate::ids::{Ballot, NodeId, RequestId, Slot, Time};
use crate::message::{AcceptedEntry, Command, Envelope, Message, SnapshotMeta, Value};
use crate::options::Options;
use crate::recovery::Recovered;
use crate::replica::{Replica, Role};
use crate::testkit::*;
use std::collections::BTreeMap;

fn val(seq: u64) -> Value {
    Value::Batch(vec![Command { id: RequestId { node: NodeId(9), seq }, payload: vec![seq as u8; 8] }], Default::default())
}

fn reconf(change: ConfigChange) -> Value {
    Value::Reconfigure { id: RequestId { node: NodeId(9), seq: 1000 }, change }
}

fn opts(n: u64, nodes: u64) -> Options {
    let mut o = Options::new(m(n), Some(Configuration::bootstrap((1..=nodes).map(m))));
    o.promise_page_bytes = 1;
    o.recovery_window = 1;
    o
}

struct Net {
    rs: BTreeMap<u64, Replica>,
    pending: Vec<Envelope>,
    now: u64,
    wal: BTreeMap<u64, Vec<Persist>>,
    applied: BTreeMap<u64, BTreeMap<Slot, Value>>,
}

impl Net {
    fn new(nodes: u64) -> Net {
        let rs = (1..=nodes).map(|n| (n, Replica::new(opts(n, nodes), Time(0)))).collect();
        Net { rs, pending: Vec::new(), now: 0, wal: BTreeMap::new(), applied: BTreeMap::new() }
    }

    fn r(&mut self, n: u64) -> &mut Replica {
        self.rs.get_mut(&n).unwrap()
    }

    fn collect(&mut self, n: u64) {
        let r = self.rs.get_mut(&n).unwrap();
        while let Some(a) = r.poll_action() {
            match a {
                Action::Send(e) => self.pending.push(e),
                Action::Persist(p) => self.wal.entry(n).or_default().push(p),
                Action::Apply { slot, value } => {
                    let prev = self.applied.entry(n).or_default().insert(slot, value.clone());
                    assert!(prev.is_none() || prev == Some(value), "node {n} applied slot {slot:?} twice");
                }
                _ => {}
            }
        }
    }

    fn hint(&mut self, n: u64) {
        let now = Time(self.now);
        self.r(n).handle(now, Event::LeaderHint { leader: Some(NodeId(n)) });
        self.collect(n);
    }

    /// Remove and return the first pending message `from -> to` that `pred` accepts.
    fn take(&mut self, from: u64, to: u64, pred: impl Fn(&Message) -> bool) -> Envelope {
        let i = self
            .pending
            .iter()
            .position(|e| e.from.node.0 == from && e.to.0 == to && pred(&e.msg))
            .unwrap_or_else(|| panic!("no such message {from} -> {to}; pending: {:#?}", self.pending));
        self.pending.remove(i)
    }

    fn has(&self, from: u64, to: u64, pred: impl Fn(&Message) -> bool) -> bool {
        self.pending.iter().any(|e| e.from.node.0 == from && e.to.0 == to && pred(&e.msg))
    }

    fn deliver(&mut self, e: Envelope) {
        let t = e.to.0;
        let now = Time(self.now);
        if let Some(r) = self.rs.get_mut(&t) {
            r.handle(now, Event::Receive(e));
            self.collect(t);
        }
    }

    fn step(&mut self, from: u64, to: u64, pred: impl Fn(&Message) -> bool) {
        let e = self.take(from, to, pred);
        self.deliver(e);
    }

    /// Deliver every pending message (and what they cause) except those `hold` keeps.
    fn pump(&mut self, hold: impl Fn(&Envelope) -> bool) {
        let mut kept = Vec::new();
        let mut steps = 0;
        while !self.pending.is_empty() {
            let e = self.pending.remove(0);
            steps += 1;
            assert!(steps < 100_000, "storm");
            if hold(&e) {
                kept.push(e);
            } else {
                self.deliver(e);
            }
        }
        self.pending = kept;
    }

    fn tick(&mut self, ms: u64, hold: impl Fn(&Envelope) -> bool + Copy) {
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
            self.pump(hold);
        }
    }

    /// Fabricate a vote: node `n`'s acceptor takes `Accept(ballot, slot, value)` from the
    /// ballot's owner (as if an old leader's message arrived); its answer is dropped.
    fn vote(&mut self, n: u64, ballot: Ballot, slot: u64, value: Value) {
        let e = Envelope { from: ballot.owner(), to: NodeId(n), msg: Message::Accept { ballot, slot: Slot(slot), value, commit: Slot(0) } };
        self.deliver(e);
        self.pending.retain(|e| e.from.node.0 != n);
    }

    /// Durable restart of node `n` from its write-ahead log (same incarnation, same options);
    /// messages to it in flight are lost.
    fn durable_restart(&mut self, n: u64, nodes: u64) {
        let config = Configuration::bootstrap((1..=nodes).map(m));
        let mut disk = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(0), config });
        for p in self.wal.get(&n).cloned().unwrap_or_default() {
            disk.replay(p);
        }
        let o = Options { restart_epoch: 1, bootstrap: None, ..opts(n, nodes) };
        self.rs.insert(n, Replica::recover(o, Time(self.now), disk));
        self.pending.retain(|e| e.to.0 != n);
        self.collect(n);
    }

    /// The ghost: per slot, the values chosen (a majority of `acceptors` persisted an
    /// `Accepted` of one ballot); panics on two different ones, or on two nodes applying
    /// different values at a slot, or on a node applying a value that is not chosen.
    fn check(&self, acceptors: &[u64]) -> BTreeMap<Slot, Value> {
        let mut votes: BTreeMap<(Slot, Ballot), (Value, Vec<u64>)> = BTreeMap::new();
        for (n, wal) in &self.wal {
            if !acceptors.contains(n) {
                continue;
            }
            for p in wal {
                if let Persist::Accepted(AcceptedEntry { slot, ballot, value }) = p {
                    let e = votes.entry((*slot, *ballot)).or_insert((value.clone(), Vec::new()));
                    assert_eq!(&e.0, value, "two values under one ballot at {slot:?}");
                    if !e.1.contains(n) {
                        e.1.push(*n);
                    }
                }
            }
        }
        let mut chosen: BTreeMap<Slot, Value> = BTreeMap::new();
        for ((slot, _), (v, who)) in votes {
            if who.len() > acceptors.len() / 2 {
                if let Some(old) = chosen.insert(slot, v.clone()) {
                    assert_eq!(old, v, "two different values chosen at {slot:?}");
                }
            }
        }
        for (n, log) in &self.applied {
            for (s, v) in log {
                for (k, other) in &self.applied {
                    if let Some(w) = other.get(s) {
                        assert_eq!(v, w, "nodes {n} and {k} applied different values at {s:?}");
                    }
                }
            }
        }
        chosen
    }
}

fn is_prepare(first: u64) -> impl Fn(&Message) -> bool {
    move |msg| matches!(msg, Message::Prepare { first_slot, .. } if *first_slot == Slot(first))
}

fn is_promise(first: u64) -> impl Fn(&Message) -> bool {
    move |msg| matches!(msg, Message::Promise { first_slot, .. } if *first_slot == Slot(first))
}

fn candidate_ballot(r: &Replica) -> Ballot {
    match &r.role {
        Role::Candidate(c) => c.ballot,
        Role::Leader(l) => l.ballot,
        Role::Follower => panic!("not campaigning"),
    }
}

fn accepts_from(net: &Net, from: u64) -> Vec<(Slot, Value)> {
    net.pending
        .iter()
        .filter(|e| e.from.node.0 == from)
        .filter_map(|e| match &e.msg {
            Message::Accept { slot, value, .. } => Some((*slot, value.clone())),
            _ => None,
        })
        .collect()
}

/// Schedule 1: A (node 2) sends page 1; its page 2 (sent before the rival came) is held; a
/// rival (node 3, higher ballot) gets A and B to promise and chooses a new value at slot 3,
/// a slot page 2 reports empty. The held page 2 then completes A's promise at C (node 1).
/// C must not count A before the last page, and whatever C does next must not choose a second
/// value at slot 3.
#[test]
fn held_page_then_rival_choice_in_its_range() {
    let mut net = Net::new(3);
    let old = b(1, 8);
    net.vote(2, old, 1, val(1));
    net.vote(2, old, 2, val(2));
    net.r(1).max_seen = old;
    net.hint(1);
    let bc = candidate_ballot(&net.rs[&1]);
    // C's own promise is complete (its acceptor holds nothing); B's Prepare is lost.
    let _ = net.take(1, 3, is_prepare(1));
    net.step(1, 2, is_prepare(1));
    net.step(2, 1, is_promise(1)); // page 1: slot 1, more
    assert!(!net.rs[&1].is_leader(), "A counted after page 1 of 2");
    assert!(matches!(&net.rs[&1].role, Role::Candidate(c) if c.pages.contains_key(&m(2))));
    net.step(1, 2, is_prepare(2));
    assert!(!net.rs[&1].is_leader(), "A counted before its last page arrived");
    let page2 = net.take(2, 1, is_promise(2)); // held: slot 2, nothing above
    // The rival: node 3 campaigns above C; A and B promise; it chooses val(3)... at slot 3.
    net.r(3).max_seen = bc;
    net.hint(3);
    let br = candidate_ballot(&net.rs[&3]);
    assert!(br > bc);
    net.pump(|e| e.to.0 == 1); // nothing reaches C
    assert!(net.rs[&3].is_leader());
    let t = Time(net.now);
    net.r(3).propose(t, cmd(3, 7)).unwrap();
    net.collect(3);
    net.pump(|e| e.to.0 == 1);
    let chosen = net.check(&[1, 2, 3]);
    assert_eq!(chosen.get(&Slot(2)), Some(&val(2)), "{chosen:?}");
    let rival_3 = chosen.get(&Slot(3)).cloned().expect("the rival chose slot 3");
    // Drop what the rival sent C (a Nack or heartbeat would depose C at once), then the held
    // page arrives: C now has a quorum {C, A} and leads with a stale view of slot 3.
    net.pending.retain(|e| e.to.0 != 1);
    net.deliver(page2);
    assert!(net.rs[&1].is_leader(), "C should lead on {{C, A}} (a valid, if old, promise)");
    let t = Time(net.now);
    net.r(1).propose(t, cmd(1, 8)).unwrap();
    net.collect(1);
    net.pump(|_| false);
    net.tick(2_000, |_| false);
    let chosen = net.check(&[1, 2, 3]);
    assert_eq!(chosen.get(&Slot(3)), Some(&rival_3));
    assert_eq!(chosen.get(&Slot(1)), Some(&val(1)));
}

/// Schedule 2: a higher ballot arrives between pages. (a) A rival's `Prepare` reaches C
/// itself: C steps down, and A's late page is dropped. (b) A stale page request reaches an
/// acceptor that promised the rival: it is refused, and the promise does not go down.
#[test]
fn higher_ballot_between_pages() {
    let mut net = Net::new(3);
    let old = b(1, 8);
    for s in 1..=3 {
        net.vote(2, old, s, val(s));
    }
    net.r(1).max_seen = old;
    net.hint(1);
    let bc = candidate_ballot(&net.rs[&1]);
    let _ = net.take(1, 3, is_prepare(1));
    net.step(1, 2, is_prepare(1));
    net.step(2, 1, is_promise(1));
    let stale_req = net.take(1, 2, is_prepare(2)); // the request for page 2, held
    // Rival 3 with a higher ballot prepares A and C.
    net.r(3).max_seen = bc;
    net.hint(3);
    let br = candidate_ballot(&net.rs[&3]);
    net.step(3, 1, is_prepare(1));
    assert!(matches!(net.rs[&1].role, Role::Follower), "C still campaigns after promising {br:?}");
    net.step(3, 2, is_prepare(1));
    assert_eq!(net.rs[&2].promised(), br);
    // (b) the stale page request reaches A: a Nack, no Promise for bc, promise unchanged.
    net.pending.clear();
    net.deliver(stale_req);
    assert_eq!(net.rs[&2].promised(), br);
    assert!(!net.has(2, 1, |m| matches!(m, Message::Promise { .. })), "{:?}", net.pending);
    assert!(net.has(2, 1, |m| matches!(m, Message::Nack { promised, refused } if *promised == br && *refused == Some(bc))));
    // A page 2 for bc that was already on the wire (A answered before the rival) is dropped
    // by C, a follower now.
    let late = Envelope {
        from: m(2),
        to: NodeId(1),
        msg: Message::Promise {
            ballot: bc,
            first_slot: Slot(2),
            accepted: vec![AcceptedEntry { slot: Slot(2), ballot: old, value: val(2) }],
            learned: Slot(0),
            more: true,
        },
    };
    net.pending.clear();
    let dropped = net.rs[&1].counters().dropped_messages;
    net.deliver(late);
    assert!(matches!(net.rs[&1].role, Role::Follower));
    assert_eq!(net.rs[&1].counters().dropped_messages, dropped + 1);
    assert!(net.pending.is_empty(), "C asked for another page as a follower: {:?}", net.pending);
}

/// Schedule 3: a stop sign (remove node 3, chosen at slot 1 by {2, 3}) in A's page 1 and a
/// value above it (slot 2, chosen by {1, 2}, the new configuration, after the stop sign was
/// passed) in A's page 2. C's first phase 1 runs in {1, 2, 3} with quorum {1, 3} (3 reports
/// only the stop sign); A's page 2 is held and arrives only after C passed the stop sign.
/// Nothing may be proposed above slot 1 before it is chosen, and slot 2 must be decided in
/// {1, 2}, where it keeps val(2).
#[test]
fn stop_sign_on_page_one_value_above_on_page_two() {
    let mut net = Net::new(3);
    let old = b(1, 8);
    net.vote(2, old, 1, reconf(ConfigChange::Remove(NodeId(3))));
    net.vote(3, old, 1, reconf(ConfigChange::Remove(NodeId(3))));
    net.vote(1, old, 2, val(2));
    net.vote(2, old, 2, val(2));
    assert_eq!(net.check(&[1, 2, 3]).get(&Slot(1)), Some(&reconf(ConfigChange::Remove(NodeId(3)))));
    net.hint(1);
    // C's own promise (slot 2) came through the loopback; 3 answers in one page.
    net.step(1, 3, is_prepare(1));
    // Hold A's first page: C gets its quorum from {1, 3}.
    let a_req = net.take(1, 2, is_prepare(1));
    net.step(3, 1, is_promise(1));
    assert!(net.rs[&1].is_leader());
    let acc = accepts_from(&net, 1);
    assert!(acc.iter().all(|(s, _)| *s <= Slot(1)), "proposed past the stop sign: {acc:?}");
    assert!(acc.iter().any(|(s, v)| *s == Slot(1) && matches!(v, Value::Reconfigure { .. })), "{acc:?}");
    // A's pages, page 2 held (A answers page 1 now, C is past phase 1 and drops it).
    net.deliver(a_req);
    let p1 = net.take(2, 1, is_promise(1));
    net.deliver(p1);
    // Slot 1 chosen by {1, 3} under C's ballot (A's accept held too).
    net.pump(|e| e.to.0 == 2 || e.from.node.0 == 2);
    assert_eq!(net.rs[&1].commit(), Slot(1));
    assert!(matches!(net.rs[&1].role, Role::Candidate(_)), "C passed the stop sign: phase 1 in {{1, 2}}");
    let acc = accepts_from(&net, 1);
    assert!(acc.iter().all(|(s, _)| *s <= Slot(1)), "{acc:?}");
    // The new phase 1 asks A from slot 2; A's answer completes it.
    net.pending.retain(|e| !(e.to.0 == 2 && matches!(e.msg, Message::Accept { .. })));
    net.pump(|_| false);
    net.tick(500, |_| false);
    let chosen = net.check(&[1, 2]);
    assert_eq!(chosen.get(&Slot(2)), Some(&val(2)), "{chosen:?}");
    let applied = &net.applied[&1];
    assert_eq!(applied.get(&Slot(2)), Some(&val(2)));
}

/// Schedule 4: duplicated and reordered pages, and pages whose `first_slot` is not the one
/// asked for: dropped, never counted, never an extra page request.
#[test]
fn duplicated_reordered_and_misaddressed_pages() {
    let mut net = Net::new(5);
    let old = b(1, 8);
    for s in 1..=3 {
        net.vote(2, old, s, val(s));
    }
    net.vote(3, b(1, 9), 2, val(20)); // a higher ballot at slot 2 on B
    net.r(1).max_seen = b(1, 9);
    net.hint(1);
    for n in [4, 5] {
        let _ = net.take(1, n, is_prepare(1));
    }
    net.now = 300; // retry: Prepare(1) again to everyone silent
    let now = Time(net.now);
    net.r(1).handle_timeout(now);
    net.collect(1);
    for n in [4, 5] {
        while net.has(1, n, |_| true) {
            let _ = net.take(1, n, |_| true);
        }
    }
    // A answers both Prepares (page 1 twice).
    net.step(1, 2, is_prepare(1));
    net.step(1, 2, is_prepare(1));
    let p1a = net.take(2, 1, is_promise(1));
    let p1b = net.take(2, 1, is_promise(1));
    assert_eq!(p1a.msg, p1b.msg);
    net.deliver(p1a);
    net.deliver(p1b.clone()); // duplicate page 1: dropped, no second page-2 request
    assert_eq!(net.pending.iter().filter(|e| e.to.0 == 2).count(), 1, "{:?}", net.pending);
    // A page 3 before page 2 (forged with the right ballot): dropped.
    let ballot = candidate_ballot(&net.rs[&1]);
    let forged = |first: u64, slot: u64, more: bool| Envelope {
        from: m(2),
        to: NodeId(1),
        msg: Message::Promise {
            ballot,
            first_slot: Slot(first),
            accepted: vec![AcceptedEntry { slot: Slot(slot), ballot: old, value: val(slot) }],
            learned: Slot(0),
            more,
        },
    };
    net.deliver(forged(3, 3, false));
    assert!(matches!(&net.rs[&1].role, Role::Candidate(c) if !c.promises.contains_key(&m(2))));
    // Real page 2, twice; then page 3.
    net.step(1, 2, is_prepare(2));
    let p2 = net.take(2, 1, is_promise(2));
    net.deliver(p2.clone());
    net.deliver(p2);
    net.deliver(p1b);
    assert_eq!(net.pending.iter().filter(|e| e.to.0 == 2).count(), 1, "{:?}", net.pending);
    net.step(1, 2, is_prepare(3));
    net.step(2, 1, is_promise(3));
    // {1, 2} of 5: no quorum yet. B answers (slot 2 at b(1,3)).
    assert!(!net.rs[&1].is_leader());
    net.step(1, 3, is_prepare(1));
    net.step(3, 1, is_promise(1));
    assert!(net.rs[&1].is_leader());
    let acc = accepts_from(&net, 1);
    let at = |s: u64| acc.iter().find(|(x, _)| *x == Slot(s)).map(|(_, v)| v.clone());
    // Recovery window 1: slot 1 first.
    assert_eq!(at(1), Some(val(1)));
    net.pump(|_| false);
    net.tick(1_000, |_| false);
    let applied = &net.applied[&1];
    assert_eq!(applied.get(&Slot(2)), Some(&val(20)), "highest ballot per slot");
    assert_eq!(applied.get(&Slot(3)), Some(&val(3)));
    net.check(&[1, 2, 3, 4, 5]);
}

/// Schedule 5: A restarts from its disk between pages (the page request in flight is lost);
/// the candidate resends it after `retry_ms` from the page it owes, and A answers under the
/// promise it kept.
#[test]
fn durable_restart_between_pages() {
    let mut net = Net::new(3);
    let old = b(1, 8);
    for s in 1..=3 {
        net.vote(2, old, s, val(s));
    }
    net.r(1).max_seen = old;
    net.hint(1);
    let _ = net.take(1, 3, is_prepare(1));
    net.step(1, 2, is_prepare(1));
    net.step(2, 1, is_promise(1));
    net.step(1, 2, is_prepare(2));
    net.step(2, 1, is_promise(2));
    net.durable_restart(2, 3);
    let bc = candidate_ballot(&net.rs[&1]);
    assert_eq!(net.rs[&2].promised(), bc);
    net.pending.retain(|e| e.to.0 != 2 || !matches!(e.msg, Message::Prepare { .. }));
    net.tick(400, |e| e.to.0 == 3 || e.from.node.0 == 3);
    assert!(net.rs[&1].is_leader(), "{:?}", net.rs[&1].role);
    net.tick(1_000, |_| false);
    let applied = &net.applied[&1];
    for s in 1..=3 {
        assert_eq!(applied.get(&Slot(s)), Some(&val(s)));
    }
    net.check(&[1, 2, 3]);
}

/// Liveness: a `Nack` did not say which ballot it refuses. A message C sent under its old
/// ballot that arrives at A after A promised C's new ballot is refused with
/// `Nack { promised: <C's new ballot> }`, and C took that as a higher ballot (`promised >=
/// mine`, `replica.rs` `on_nack`) and abandoned its own phase 1 half way. A long paged phase 1
/// leaves room for such stragglers (an old leader's retransmitted `Accept`s). Fixed:
/// `Nack::refused` names the refused ballot, and a refusal of another ballot than ours is stale.
///
/// The schedule: `bugs` goes to C (node 1); returns the net at the point the refusal of the
/// straggler was delivered to C, with C's old and new ballots.
fn straggler_schedule(bugs: crate::options::Bugs) -> (Net, Ballot, Ballot) {
    let mut net = Net::new(3);
    net.r(1).opts.bugs = bugs;
    // C leads under its first ballot; an Accept of slot 1 to A is delayed.
    net.hint(1);
    net.pump(|_| false);
    assert!(net.rs[&1].is_leader());
    let t = Time(net.now);
    net.r(1).propose(t, cmd(1, 1)).unwrap();
    net.collect(1);
    let straggler = net.take(1, 2, |m| matches!(m, Message::Accept { .. }));
    let Message::Accept { ballot: old, .. } = straggler.msg else { unreachable!() };
    net.pump(|_| false);
    // C steps down and campaigns again (the election named it after a hiccup).
    let t = Time(net.now);
    net.r(1).handle(t, Event::LeaderHint { leader: Some(NodeId(3)) });
    net.collect(1);
    net.pending.clear();
    assert_eq!(net.rs[&1].commit(), Slot(2));
    for s in 3..=5 {
        net.vote(2, b(9, 3), s, val(s)); // a long log on A (3 pages)
    }
    net.r(1).max_seen = b(9, 3);
    net.hint(1);
    let bc = candidate_ballot(&net.rs[&1]);
    let _ = net.take(1, 3, is_prepare(3));
    net.step(1, 2, is_prepare(3));
    net.step(2, 1, is_promise(3));
    assert_eq!(net.rs[&2].promised(), bc);
    // The straggler arrives at A now: A refuses it with Nack { promised: bc, refused: old }.
    net.deliver(straggler);
    let nack = net.take(2, 1, |m| matches!(m, Message::Nack { .. }));
    assert!(matches!(nack.msg, Message::Nack { promised, refused } if promised == bc && refused == Some(old)), "{nack:?}");
    net.deliver(nack);
    (net, old, bc)
}

#[test]
fn a_straggler_from_our_own_old_ballot_abandons_our_phase_1() {
    let (mut net, _, bc) = straggler_schedule(Default::default());
    assert!(
        matches!(net.rs[&1].role, Role::Candidate(_)),
        "C abandoned its phase 1 on a refusal of its own old ballot ({bc:?} promised to it)"
    );
    // ... and finishes it: the rest of A's pages, then C leads with A's votes adopted.
    net.pump(|_| false);
    assert!(net.rs[&1].is_leader(), "{:?}", net.rs[&1].role);
    net.tick(1_000, |_| false);
    for s in 3..=5 {
        assert_eq!(net.applied[&1].get(&Slot(s)), Some(&val(s)));
    }
    net.check(&[1, 2, 3]);
}

/// `Bugs::nack_any_ballot` (the rule before `Nack::refused`): the same schedule deposes C.
#[test]
fn nack_any_ballot_is_caught_by_the_straggler_schedule() {
    let bugs = crate::options::Bugs { nack_any_ballot: true, ..Default::default() };
    let (net, _, _) = straggler_schedule(bugs);
    assert!(matches!(net.rs[&1].role, Role::Follower), "the bug switch did not depose C: {:?}", net.rs[&1].role);
}

/// A `Nack` from a peer of the previous release (`refused: None`) deposes as before: a promise
/// at or above our ballot, whatever it refused. One of another ballot than ours is ignored.
#[test]
fn a_nack_without_refused_still_deposes_and_one_of_another_ballot_does_not() {
    let mut net = Net::new(3);
    net.hint(1);
    net.pump(|_| false);
    assert!(net.rs[&1].is_leader());
    let mine = candidate_ballot(&net.rs[&1]);
    let higher = b(mine.round + 1, 2);
    let from = m(2);
    // Refusing another (older) ballot than ours, even with a higher promise: stale, ignored.
    let older = b(mine.round.saturating_sub(1), 1);
    let dropped = net.rs[&1].counters.dropped_messages;
    net.deliver(Envelope { from, to: NodeId(1), msg: Message::Nack { promised: higher, refused: Some(older) } });
    assert!(net.rs[&1].is_leader());
    assert_eq!(net.rs[&1].counters.dropped_messages, dropped + 1);
    // A promise below ours deposes no one, said or not.
    net.deliver(Envelope { from, to: NodeId(1), msg: Message::Nack { promised: older, refused: None } });
    assert!(net.rs[&1].is_leader());
    // The previous release's refusal: no `refused`, a promise at our ballot or above: deposed.
    net.deliver(Envelope { from, to: NodeId(1), msg: Message::Nack { promised: higher, refused: None } });
    assert!(matches!(net.rs[&1].role, Role::Follower), "{:?}", net.rs[&1].role);
    // And the current release's refusal of our own ballot deposes too.
    net.hint(1);
    net.pump(|_| false);
    assert!(net.rs[&1].is_leader());
    let mine = candidate_ballot(&net.rs[&1]);
    net.deliver(Envelope { from, to: NodeId(1), msg: Message::Nack { promised: b(mine.round + 1, 3), refused: Some(mine) } });
    assert!(matches!(net.rs[&1].role, Role::Follower), "{:?}", net.rs[&1].role);
}

/// Review 30, schedule 1: a leader (2) proposed `AddLearner` at slot 2 while its write at slot 1
/// was still unchosen (its `Accept` to node 3 lost); an older leader's `SetVersion` stop sign at
/// slot 1, accepted by node 1 alone, could then be adopted by a later leader below the change
/// chosen at slot 2: two changes back to back, the second decided without knowing the first (a
/// 0.1.0 learner let into a version-2 cluster). Now a change is proposed only once every slot
/// before it is chosen. With `Bugs::change_over_inflight` (the old rule) the change goes out at
/// once, and the state the review built by hand (an older stop sign below a chosen change) can
/// arise. Returns whether node 2 sent the change while slot 1 was unchosen.
fn change_over_inflight_schedule(bugs: crate::Bugs) -> bool {
    let mut net = Net::new(3);
    for n in 1..=3 {
        net.r(n).opts.bugs = bugs;
    }
    net.hint(2);
    net.pump(|_| false);
    assert!(net.r(2).is_leader(), "node 2 leads");
    net.tick(100, |_| false);
    let commit = net.r(2).status().commit;
    // A write whose Accepts to nodes 1 and 3 are held: its slot stays unchosen.
    let now = Time(net.now);
    net.r(2).propose(now, Command { id: RequestId { node: NodeId(2), seq: 1 }, payload: vec![1; 8] }).expect("taken");
    net.collect(2);
    let held = |e: &Envelope| matches!(e.msg, Message::Accept { .. }) && e.from.node.0 == 2 && e.to.0 != 2;
    net.pump(held);
    assert_eq!(net.r(2).status().commit, commit, "the write is not chosen");
    let add = ConfigChange::AddLearner(m(4));
    let now = Time(net.now);
    net.r(2).propose_config(now, RequestId { node: NodeId(2), seq: 2 }, add).expect("the change is taken");
    net.collect(2);
    let is_change = |e: &Envelope| matches!(e.msg, Message::Accept { value: Value::Reconfigure { .. }, .. });
    let early = net.pending.iter().any(is_change);
    // Release the write: once it is chosen, the change goes out, and is chosen after it.
    net.pump(|e| e.to.0 == 4);
    net.tick(300, |e| e.to.0 == 4);
    let applied = net.applied.get(&2).cloned().unwrap_or_default();
    assert!(applied.values().any(|v| matches!(v, Value::Reconfigure { .. })), "the change is applied in the end: {applied:?}");
    early
}

#[test]
fn a_change_waits_until_every_slot_before_it_is_chosen() {
    assert!(!change_over_inflight_schedule(crate::Bugs::default()), "the change was sent with the slot before it unchosen");
}

#[test]
fn proposing_a_change_over_unchosen_slots_is_caught() {
    assert!(change_over_inflight_schedule(crate::Bugs { change_over_inflight: true, ..crate::Bugs::default() }), "the old rule sends it at once");
}
