//! Handler tests: each feeds one input and asserts the exact action vector, in order.
//!
//! The order matters: a `Persist` must come before the `Send` of the `Promise` or `Accepted`
//! that depends on it (the driver runs actions in order, a persist is a barrier).

use crate::action::{Action, Persist};
use crate::config::Configuration;
use crate::event::Event;
use crate::ids::{Ballot, Incarnation, Member, NodeId, ReadId, Slot, Time};
use crate::message::{AcceptedEntry, Envelope, Message, Value};
use crate::options::Options;
use crate::replica::{test_command, Replica};
use crate::ProposeError;
use crate::testkit::*;

fn batch(n: u64, seq: u64) -> Value {
    Value::Batch(vec![test_command(n, seq)], Default::default())
}

/// Elect replica 1 of 3 with an empty log: hint, then one peer promise. Returns the ballot.
fn elect(r: &mut Replica) -> Ballot {
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(1, 1);
    recv(r, 1, 2, Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    ballot
}

#[test]
fn prepare_is_persisted_before_the_promise() {
    let mut r = replica(1, 3);
    // PMS 2.2 phase 1b: promise and report accepted values; the promise is durable first.
    recv(&mut r, 0, 2, Message::Prepare { ballot: b(1, 2), first_slot: Slot(1) });
    assert_eq!(
        actions(&mut r),
        vec![
            Action::Persist(Persist::Promised(b(1, 2))),
            send(1, 2, Message::Promise { ballot: b(1, 2), first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false }),
        ]
    );
    // A lower ballot afterwards is refused with the promise that beats it.
    recv(&mut r, 1, 3, Message::Prepare { ballot: b(0, 3), first_slot: Slot(1) });
    assert_eq!(actions(&mut r), vec![send(1, 3, Message::Nack { promised: b(1, 2), refused: Some(b(0, 3)) })]);
}

#[test]
fn accept_is_persisted_before_accepted() {
    let mut r = replica(1, 3);
    let v = batch(9, 1);
    recv(&mut r, 0, 2, Message::Accept { ballot: b(1, 2), slot: Slot(1), value: v.clone(), commit: Slot(0) });
    assert_eq!(
        actions(&mut r),
        vec![
            Action::Persist(Persist::Promised(b(1, 2))),
            // The leader and the commit point the `Accept` carries are learned before the vote
            // (what they apply comes first: the node's configuration hold holds the vote).
            Action::LeaderChanged { leader: Some(NodeId(2)), ballot: b(1, 2) },
            Action::Persist(Persist::Accepted(AcceptedEntry { slot: Slot(1), ballot: b(1, 2), value: v.clone() })),
            send(1, 2, Message::Accepted { ballot: b(1, 2), slot: Slot(1), learned: Slot(0) }),
        ]
    );
    // The commit point on a heartbeat of the same ballot makes the accepted value chosen.
    recv(&mut r, 5, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(1), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    assert_eq!(
        actions(&mut r),
        vec![
            send(1, 2, Message::HeartbeatAck { ballot: b(1, 2), read_round: 0, learned: Slot(0) }),
            Action::Apply { slot: Slot(1), value: v },
        ]
    );
}

#[test]
fn a_follower_that_misses_a_slot_fetches_it() {
    let mut r = replica(1, 3);
    // Slot 1 was accepted under another ballot: the commit point alone does not say its value.
    recv(&mut r, 0, 3, Message::Accept { ballot: b(1, 3), slot: Slot(1), value: batch(9, 1), commit: Slot(0) });
    let _ = actions(&mut r);
    recv(&mut r, 5, 2, Message::Heartbeat { ballot: b(2, 2), commit: Slot(1), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let acts = actions(&mut r);
    assert_eq!(acts[0], Action::LeaderChanged { leader: Some(NodeId(2)), ballot: b(2, 2) });
    assert_eq!(acts[1], send(1, 2, Message::HeartbeatAck { ballot: b(2, 2), read_round: 0, learned: Slot(0) }));
    assert!(matches!(&acts[2], Action::Send(Envelope { msg: Message::Fetch { from: Slot(1), to: Slot(1) }, .. })), "{acts:?}");
    assert_eq!(acts.len(), 3);
    // The answer is applied.
    recv(&mut r, 9, 2, Message::Chosen { entries: vec![(Slot(1), Value::Noop)], commit: Slot(1) });
    assert_eq!(actions(&mut r), vec![Action::Apply { slot: Slot(1), value: Value::Noop }]);
}

#[test]
fn election_adopts_the_highest_ballot_value_and_fills_holes() {
    let mut r = replica(1, 3);
    // Earlier, replica 1 accepted X in slot 1 under ballot 1.3.
    let (x, y, z) = (batch(9, 1), batch(9, 2), batch(9, 3));
    recv(&mut r, 0, 3, Message::Accept { ballot: b(1, 3), slot: Slot(1), value: x, commit: Slot(0) });
    let _ = actions(&mut r);
    // Told to lead: a ballot above everything seen (1.3), phase 1 from slot 1 to every acceptor.
    r.handle(Time(1), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(2, 1);
    assert_eq!(
        actions(&mut r),
        vec![
            send(1, 2, Message::Prepare { ballot, first_slot: Slot(1) }),
            send(1, 3, Message::Prepare { ballot, first_slot: Slot(1) }),
            Action::Persist(Persist::Promised(ballot)),
        ]
    );
    // Replica 2 accepted Y in slot 1 under ballot 1.5 (above our 1.3) and Z in slot 3.
    // PMS 2.2: adopt the value of the highest ballot per slot (Y), fill the hole in slot 2.
    let accepted = vec![
        AcceptedEntry { slot: Slot(1), ballot: b(1, 5), value: y.clone() },
        AcceptedEntry { slot: Slot(3), ballot: b(1, 2), value: z.clone() },
    ];
    recv(&mut r, 2, 2, Message::Promise { ballot, first_slot: Slot(1), accepted, learned: Slot(0), more: false });
    let mut expected = vec![Action::LeaderChanged { leader: Some(NodeId(1)), ballot }];
    for (slot, v) in [(1, &y), (2, &Value::Noop), (3, &z)] {
        for to in [2, 3] {
            expected.push(send(1, to, Message::Accept { ballot, slot: Slot(slot), value: v.clone(), commit: Slot(0) }));
        }
    }
    for to in [2, 3] {
        // The fence: 65 slots past the highest one phase 1 saw (3).
        expected.push(send(1, to, Message::Heartbeat { ballot, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(68) }));
    }
    for (slot, v) in [(1, &y), (2, &Value::Noop), (3, &z)] {
        expected.push(Action::Persist(Persist::Accepted(AcceptedEntry { slot: Slot(slot), ballot, value: v.clone() })));
    }
    assert_eq!(actions(&mut r), expected);
    // One more vote per slot makes a quorum: applied in order.
    recv(&mut r, 3, 3, Message::Accepted { ballot, slot: Slot(2), learned: Slot(0) });
    assert_eq!(actions(&mut r), vec![]);
    recv(&mut r, 3, 3, Message::Accepted { ballot, slot: Slot(1), learned: Slot(0) });
    assert_eq!(
        actions(&mut r),
        vec![Action::Apply { slot: Slot(1), value: y }, Action::Apply { slot: Slot(2), value: Value::Noop }]
    );
}

#[test]
fn read_index_waits_for_a_round_started_after_the_read() {
    let mut r = replica(1, 3);
    let ballot = elect(&mut r);
    let _ = actions(&mut r);
    // Reads wait until a slot of our own ballot (the election no-op) is chosen (rule 4).
    r.read(Time(2), ReadId(7)).expect("leader takes reads");
    assert_eq!(
        actions(&mut r),
        vec![
            send(1, 2, Message::Heartbeat { ballot, commit: Slot(0), checkpoint: Slot(0), read_round: 1, fence: Slot(65) }),
            send(1, 3, Message::Heartbeat { ballot, commit: Slot(0), checkpoint: Slot(0), read_round: 1, fence: Slot(65) }),
        ]
    );
    recv(&mut r, 3, 3, Message::HeartbeatAck { ballot, read_round: 1, learned: Slot(0) });
    assert_eq!(actions(&mut r), vec![], "the no-op is not chosen yet");
    recv(&mut r, 4, 2, Message::Accepted { ballot, slot: Slot(1), learned: Slot(0) });
    assert_eq!(
        actions(&mut r),
        vec![Action::Apply { slot: Slot(1), value: Value::Noop }, Action::ReadsReady { reads: vec![ReadId(7)], index: Slot(1) }]
    );
    // A second read needs a new round: an ack for the old round does not confirm it.
    r.read(Time(5), ReadId(8)).expect("leader");
    let _ = actions(&mut r);
    recv(&mut r, 6, 3, Message::HeartbeatAck { ballot, read_round: 1, learned: Slot(1) });
    assert_eq!(actions(&mut r), vec![]);
    recv(&mut r, 6, 3, Message::HeartbeatAck { ballot, read_round: 2, learned: Slot(1) });
    assert_eq!(actions(&mut r), vec![Action::ReadsReady { reads: vec![ReadId(8)], index: Slot(1) }]);
}

#[test]
fn a_nack_with_a_higher_ballot_deposes_the_leader() {
    let mut r = replica(1, 3);
    r.opts.pipeline_window = 1;
    let ballot = elect(&mut r);
    let _ = actions(&mut r);
    // The window is full (the election no-op): both commands wait in the queue.
    r.propose(Time(2), test_command(9, 1)).expect("leader");
    r.propose(Time(2), test_command(9, 2)).expect("leader");
    assert_eq!(actions(&mut r), vec![]);
    recv(&mut r, 3, 2, Message::Nack { promised: b(5, 3), refused: Some(ballot) });
    assert_eq!(
        actions(&mut r),
        vec![
            Action::ProposalLost { id: test_command(9, 1).id },
            Action::ProposalLost { id: test_command(9, 2).id },
            Action::SteppedDown,
            Action::LeaderChanged { leader: None, ballot: b(5, 3) },
        ]
    );
    assert_eq!(r.propose(Time(4), test_command(9, 3)), Err(ProposeError::NotLeader { leader: None }));
    // The next candidacy goes above the ballot that deposed us.
    r.handle(Time(5), Event::LeaderHint { leader: Some(NodeId(1)) });
    assert_eq!(actions(&mut r)[0], send(1, 2, Message::Prepare { ballot: b(6, 1), first_slot: Slot(1) }));
}

#[test]
fn a_candidate_without_quorum_keeps_its_ballot() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let _ = actions(&mut r);
    // Retries resend the same ballot; after the lease it steps down, and a new hint re-uses it.
    let lease = r.opts.leader_lease_ms;
    let mut now = Time(0);
    while let Some(t) = r.poll_timeout() {
        now = t;
        r.handle_timeout(now);
        for a in actions(&mut r) {
            if let Action::Send(Envelope { msg: Message::Prepare { ballot, .. }, .. }) = a {
                assert_eq!(ballot, b(1, 1));
            }
        }
    }
    assert!(now.0 >= lease && !r.is_leader());
    r.handle(now, Event::LeaderHint { leader: Some(NodeId(1)) });
    assert_eq!(actions(&mut r)[0], send(1, 2, Message::Prepare { ballot: b(1, 1), first_slot: Slot(1) }));
}

#[test]
fn leader_steps_down_without_a_quorum_for_a_lease() {
    let mut r = replica(1, 3);
    elect(&mut r);
    let _ = actions(&mut r);
    let mut stepped = false;
    let mut now = Time(1);
    while now.0 < 5 * r.opts.leader_lease_ms && !stepped {
        now = r.poll_timeout().expect("leader has timers");
        r.handle_timeout(now);
        stepped = actions(&mut r).contains(&Action::SteppedDown);
    }
    assert!(stepped && now.0 <= 2 + r.opts.leader_lease_ms + r.opts.heartbeat_ms, "stepped down at {now:?}");
}

#[test]
fn peer_input_is_validated_not_trusted() {
    let mut r = replica(1, 3);
    // Misaddressed, and claiming to come from ourselves: dropped and counted.
    r.handle(Time(0), Event::Receive(Envelope { from: m(2), to: NodeId(9), msg: Message::Nack { promised: b(1, 2), refused: None } }));
    r.handle(Time(0), Event::Receive(Envelope { from: m(1), to: NodeId(1), msg: Message::Nack { promised: b(1, 2), refused: None } }));
    // Slot 0 is never a real slot; a backwards fetch range is nonsense.
    recv(&mut r, 0, 2, Message::Accept { ballot: b(1, 2), slot: Slot(0), value: Value::Noop, commit: Slot(0) });
    recv(&mut r, 0, 2, Message::Fetch { from: Slot(5), to: Slot(2) });
    // A promise for a ballot we never ran.
    recv(&mut r, 0, 2, Message::Promise { ballot: b(7, 1), first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    assert_eq!(actions(&mut r), vec![]);
    assert_eq!(r.counters().dropped_messages, 5);
}

#[test]
fn follower_refuses_proposals_and_reads_naming_the_leader() {
    let mut r = replica(1, 3);
    recv(&mut r, 0, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    assert_eq!(r.propose(Time(1), test_command(9, 1)), Err(ProposeError::NotLeader { leader: Some(NodeId(2)) }));
    // A follower that knows no leader cannot have a read confirmed either.
    let mut lone = replica(1, 3);
    assert_eq!(lone.read(Time(1), ReadId(1)), Err(ProposeError::NotLeader { leader: None }));
}

#[test]
fn a_leader_that_removes_itself_commits_the_removal_then_steps_down() {
    let mut r = replica(1, 3);
    let ballot = elect(&mut r);
    recv(&mut r, 2, 2, Message::Accepted { ballot, slot: Slot(1), learned: Slot(0) });
    recv(&mut r, 2, 2, Message::HeartbeatAck { ballot, read_round: 0, learned: Slot(0) });
    let _ = actions(&mut r);
    let id = test_command(9, 1).id;
    r.propose_config(Time(3), id, crate::ConfigChange::Remove(NodeId(1))).expect("leader, quorum heard");
    // One change at a time (the stop sign is pending).
    assert_eq!(
        r.propose_config(Time(3), id, crate::ConfigChange::Remove(NodeId(2))),
        Err(ProposeError::Config(crate::ConfigError::ChangeInFlight))
    );
    let _ = actions(&mut r);
    // Stop sign: nothing is proposed after slot 2 while it is open.
    r.propose(Time(4), test_command(9, 2)).expect("queued");
    assert_eq!(actions(&mut r), vec![]);
    recv(&mut r, 5, 3, Message::Accepted { ballot, slot: Slot(2), learned: Slot(1) });
    let acts = actions(&mut r);
    let next = Configuration { epoch: 1, acceptors: [m(2), m(3)].into_iter().collect(), learners: Default::default() };
    let value = Value::Reconfigure { id, change: crate::ConfigChange::Remove(NodeId(1)) };
    assert_eq!(
        acts,
        vec![
            Action::Apply { slot: Slot(2), value },
            Action::ConfigChanged { slot: Slot(2), config: next },
            Action::ProposalLost { id: test_command(9, 2).id },
            Action::SteppedDown,
            Action::LeaderChanged { leader: None, ballot },
        ]
    );
}

#[test]
fn incarnations_of_one_node_never_share_a_ballot() {
    // Node 1 before and after a restart with its memory lost (architecture rule 8).
    let old = Member { node: NodeId(1), incarnation: Incarnation(0) };
    let new = Member { node: NodeId(1), incarnation: Incarnation(1) };
    let first_ballot = |me: Member| {
        let config = Configuration::bootstrap([me, m(2), m(3)]);
        let mut r = Replica::new(Options::new(me, Some(config)), Time(0));
        r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
        match actions(&mut r).first() {
            Some(Action::Send(Envelope { msg: Message::Prepare { ballot, .. }, .. })) => *ballot,
            other => panic!("expected a Prepare, got {other:?}"),
        }
    };
    // Both incarnations start from nothing seen and pick round 1, yet their ballots differ, and
    // the later incarnation's is the higher one (ballots order as round, node, incarnation).
    let (b_old, b_new) = (first_ballot(old), first_ballot(new));
    assert_eq!(b_old, Ballot::new(1, old));
    assert_eq!(b_new, Ballot::new(1, new));
    assert!(b_old < b_new);

    // An acceptor that promised the new incarnation's ballot refuses the old incarnation's
    // `Accept` under the same (round, node): the old one may carry a value the new one never saw
    // (PMS P1a: accept only if no higher promise was made).
    let mut r = replica(2, 3);
    let deliver = |r: &mut Replica, now: u64, from: Member, msg: Message| {
        r.handle(Time(now), Event::Receive(Envelope { from, to: NodeId(2), msg }));
    };
    deliver(&mut r, 0, new, Message::Prepare { ballot: b_new, first_slot: Slot(1) });
    assert_eq!(
        actions(&mut r),
        vec![
            Action::Persist(Persist::Promised(b_new)),
            Action::Send(Envelope {
                from: m(2),
                to: NodeId(1),
                msg: Message::Promise { ballot: b_new, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false },
            }),
        ]
    );
    deliver(&mut r, 1, old, Message::Accept { ballot: b_old, slot: Slot(1), value: batch(9, 1), commit: Slot(0) });
    assert_eq!(
        actions(&mut r),
        vec![Action::Send(Envelope { from: m(2), to: NodeId(1), msg: Message::Nack { promised: b_new, refused: Some(b_old) } })]
    );
}

#[test]
fn snapshot_transfers_are_rate_limited_per_peer() {
    // Replica 1 has nothing below slot 1 but its (empty) initial snapshot at slot 0.
    let mut r = replica(1, 3);
    let (resend, retry) = (r.opts.snapshot_resend_ms, r.opts.retry_ms);
    assert_eq!(resend, 10 * retry);
    let fetch0 = Message::Fetch { from: Slot(0), to: Slot(0) };
    let compacted = Message::Compacted { snapshot_slot: Slot(0) };
    // A learner without a configuration (node 4) fetches from slot 0: compacted, send a snapshot.
    recv(&mut r, 0, 4, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted.clone()), Action::SendSnapshot { to: NodeId(4) }]);
    // It re-fetches every retry_ms while the transfer is under way: answered, no new transfer.
    recv(&mut r, retry, 4, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted.clone())]);
    // The limit is per peer: another learner gets its own transfer at once.
    recv(&mut r, retry, 5, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 5, compacted.clone()), Action::SendSnapshot { to: NodeId(5) }]);
    // The driver reports the transfer to 4 failed: a fetch starts another once
    // `snapshot_resend_ms` passed since the report, not before (a peer busy with another
    // member's stream would otherwise cost a whole-store encoding per fetch).
    r.handle(Time(2 * retry), Event::SnapshotSent { to: NodeId(4), delivered: false });
    recv(&mut r, 3 * retry, 4, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted.clone())]);
    let again = 2 * retry + resend;
    recv(&mut r, again, 4, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted.clone()), Action::SendSnapshot { to: NodeId(4) }]);
    // A transfer never reported ended is started again only after `snapshot_wait_ms`.
    let wait = r.opts.snapshot_wait_ms;
    recv(&mut r, again + wait - 1, 4, fetch0.clone());
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted.clone())]);
    recv(&mut r, again + wait, 4, fetch0);
    assert_eq!(actions(&mut r), vec![send(1, 4, compacted), Action::SendSnapshot { to: NodeId(4) }]);
}

#[test]
fn promotable_is_the_catch_up_rule_of_propose_config() {
    let r = replica(1, 3);
    let learner = Member { node: NodeId(4), incarnation: Incarnation(1) };
    // Nothing committed yet: anybody has learned enough.
    assert_eq!(r.promotable(learner), Ok(()));
    // The rule on a leader's status: learned >= commit - max(64, 2 * pipeline_window).
    let mut st = r.status();
    assert_eq!(st.promote_slack, 64.max(2 * r.opts.pipeline_window));
    st.commit = Slot(200);
    let needed = Slot(200 - st.promote_slack);
    st.learned.insert(NodeId(4), Slot(needed.0 - 1));
    assert_eq!(
        st.promotable(learner),
        Err(crate::ConfigError::NotCaughtUp { member: learner, learned: Slot(needed.0 - 1), needed })
    );
    st.learned.insert(NodeId(4), needed);
    assert_eq!(st.promotable(learner), Ok(()));
}
