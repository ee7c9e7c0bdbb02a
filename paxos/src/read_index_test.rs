//! Follower reads through the read index (`read_index.rs`): exact actions on both sides.

use crate::action::Action;
use crate::event::Event;
use crate::ids::{Incarnation, NodeId, ReadId, Slot, Time};
use crate::message::Message;
use crate::testkit::*;

#[test]
fn a_follower_batches_reads_into_one_request_at_a_time() {
    let mut r = replica(1, 3);
    recv(&mut r, 0, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let _ = actions(&mut r);
    // The first read asks the leader for a read index.
    r.read(Time(1), ReadId(1)).expect("a follower that knows the leader takes reads");
    assert_eq!(actions(&mut r), vec![send(1, 2, Message::ReadIndex { id: 1 })]);
    // Reads arriving meanwhile wait: the answer to request 1 may predate them.
    r.read(Time(2), ReadId(2)).expect("taken");
    r.read(Time(2), ReadId(3)).expect("taken");
    assert_eq!(actions(&mut r), vec![]);
    // An answer from someone else, or for another request, is dropped.
    recv(&mut r, 3, 3, Message::ReadIndexReply { id: 1, incarnation: Incarnation(1), index: Some(Slot(5)) });
    recv(&mut r, 3, 2, Message::ReadIndexReply { id: 9, incarnation: Incarnation(1), index: Some(Slot(5)) });
    assert_eq!(actions(&mut r), vec![]);
    // The leader's answer serves read 1 at its index; the waiting reads go in the next request.
    recv(&mut r, 4, 2, Message::ReadIndexReply { id: 1, incarnation: Incarnation(1), index: Some(Slot(5)) });
    assert_eq!(
        actions(&mut r),
        vec![Action::ReadsReady { reads: vec![ReadId(1)], index: Slot(5) }, send(1, 2, Message::ReadIndex { id: 2 })]
    );
    // No answer within 2 x retry_ms: those reads fail (the driver forwards them instead).
    let deadline = r.poll_timeout().expect("the request is timed");
    assert_eq!(deadline, Time(4 + 2 * r.opts.retry_ms));
    r.handle_timeout(deadline);
    assert_eq!(actions(&mut r), vec![Action::ReadsFailed { reads: vec![ReadId(2), ReadId(3)], leader: Some(NodeId(2)) }]);
}

#[test]
fn the_leader_answers_after_a_quorum_round_started_after_the_request() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(1, 1);
    recv(&mut r, 1, 2, Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    recv(&mut r, 2, 2, Message::Accepted { ballot, slot: Slot(1), learned: Slot(0) });
    let _ = actions(&mut r);
    assert_eq!(r.commit(), Slot(1), "the election barrier is committed");
    // Follower 3 asks: a new read round goes out.
    recv(&mut r, 3, 3, Message::ReadIndex { id: 7 });
    assert_eq!(
        actions(&mut r),
        vec![
            // The fence: phase 1 saw nothing, so the window and one reconfiguration past slot 0.
            send(1, 2, Message::Heartbeat { ballot, commit: Slot(1), checkpoint: Slot(0), read_round: 1, fence: Slot(65) }),
            send(1, 3, Message::Heartbeat { ballot, commit: Slot(1), checkpoint: Slot(0), read_round: 1, fence: Slot(65) }),
        ]
    );
    // An acknowledgement of an earlier round confirms nothing; one of round 1 makes a quorum.
    recv(&mut r, 4, 2, Message::HeartbeatAck { ballot, read_round: 0, learned: Slot(1) });
    assert_eq!(actions(&mut r), vec![]);
    recv(&mut r, 5, 2, Message::HeartbeatAck { ballot, read_round: 1, learned: Slot(1) });
    assert_eq!(actions(&mut r), vec![send(1, 3, Message::ReadIndexReply { id: 7, incarnation: Incarnation(1), index: Some(Slot(1)) })]);
    // A request pending when the leader steps down is refused, not left to time out.
    recv(&mut r, 6, 3, Message::ReadIndex { id: 8 });
    let _ = actions(&mut r);
    recv(&mut r, 7, 2, Message::Nack { promised: b(5, 2), refused: Some(ballot) });
    let acts = actions(&mut r);
    assert!(acts.contains(&send(1, 3, Message::ReadIndexReply { id: 8, incarnation: Incarnation(1), index: None })), "{acts:?}");
    // A replica that does not lead refuses at once.
    recv(&mut r, 8, 3, Message::ReadIndex { id: 9 });
    assert_eq!(actions(&mut r), vec![send(1, 3, Message::ReadIndexReply { id: 9, incarnation: Incarnation(1), index: None })]);
}

#[test]
fn a_follower_that_campaigns_fails_its_pending_reads() {
    let mut r = replica(1, 3);
    recv(&mut r, 0, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    r.read(Time(1), ReadId(1)).expect("taken");
    let _ = actions(&mut r);
    r.handle(Time(2), Event::LeaderHint { leader: Some(NodeId(1)) });
    let acts = actions(&mut r);
    assert_eq!(acts[0], Action::ReadsFailed { reads: vec![ReadId(1)], leader: None });
    // A late answer to the old request is dropped.
    recv(&mut r, 3, 2, Message::ReadIndexReply { id: 1, incarnation: Incarnation(1), index: Some(Slot(0)) });
    assert!(!actions(&mut r).iter().any(|a| matches!(a, Action::ReadsReady { .. })));
}
