//! Writes through followers (`forward.rs`): exact actions on both sides.

use crate::action::Action;
use crate::event::Event;
use crate::ids::{Ballot, Incarnation, Member, NodeId, Slot, Time};
use crate::message::{Envelope, Message, Value};
use crate::testkit::*;

#[test]
fn a_follower_forwards_and_learns_the_outcome_from_the_log() {
    let mut r = replica(2, 3);
    let leader = Ballot::new(1, m(1));
    recv_from(&mut r, 0, m(1), Message::Heartbeat { ballot: leader, commit: Slot(0), checkpoint: Slot(0), read_round: 0 });
    let _ = actions(&mut r);
    // The follower hands its command to the leader's incarnation; nothing else happens yet.
    r.forward(Time(1), cmd(2, 7)).expect("a follower that knows the leader forwards");
    assert_eq!(
        actions(&mut r),
        vec![Action::Send(Envelope { from: m(2), to: NodeId(1), msg: Message::Forward { to: Incarnation(1), cmds: vec![cmd(2, 7)] } })]
    );
    assert!(r.tracks(cmd(2, 7).id));
    // A loss report from another process (the leader's successor) is not believed.
    let successor = Member { node: NodeId(1), incarnation: Incarnation(2) };
    recv_from(&mut r, 2, successor, Message::ForwardLost { ids: vec![cmd(2, 7).id] });
    assert_eq!(actions(&mut r), vec![]);
    // The leader proposes it; the follower accepts and learns it chosen: applying settles it.
    let v = Value::Batch(vec![cmd(2, 7)], Default::default());
    recv_from(&mut r, 3, m(1), Message::Accept { ballot: leader, slot: Slot(1), value: v.clone(), commit: Slot(0) });
    let _ = actions(&mut r);
    recv_from(&mut r, 4, m(1), Message::Heartbeat { ballot: leader, commit: Slot(1), checkpoint: Slot(0), read_round: 0 });
    assert!(actions(&mut r).contains(&Action::Apply { slot: Slot(1), value: v }));
    assert!(!r.tracks(cmd(2, 7).id));
    // A loss report from the leader names a command still tracked: ProposalLost.
    r.forward(Time(5), cmd(2, 8)).expect("forwards");
    let _ = actions(&mut r);
    recv_from(&mut r, 6, m(1), Message::ForwardLost { ids: vec![cmd(2, 8).id] });
    assert_eq!(actions(&mut r), vec![Action::ProposalLost { id: cmd(2, 8).id }]);
}

#[test]
fn the_leader_takes_each_forward_once_and_reports_what_it_cannot_take() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = Ballot::new(1, m(1));
    recv_from(&mut r, 1, m(2), Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    let _ = actions(&mut r);
    let forward = Message::Forward { to: Incarnation(1), cmds: vec![cmd(2, 7)] };
    recv_from(&mut r, 2, m(2), forward.clone());
    let acts = actions(&mut r);
    assert!(acts.iter().any(|a| matches!(a, Action::Send(Envelope { msg: Message::Accept { value: Value::Batch(c, _), .. }, .. }) if c == &vec![cmd(2, 7)])), "{acts:?}");
    // A duplicate is ignored: proposing it again could choose it twice.
    recv_from(&mut r, 3, m(2), forward);
    assert_eq!(actions(&mut r), vec![]);
    // Meant for another incarnation of us: ignored (neither taken nor refused).
    recv_from(&mut r, 4, m(2), Message::Forward { to: Incarnation(9), cmds: vec![cmd(2, 8)] });
    assert_eq!(actions(&mut r), vec![]);
    // An id minted by someone else than the sender: a loss report could not find its way back.
    recv_from(&mut r, 5, m(2), Message::Forward { to: Incarnation(1), cmds: vec![cmd(3, 9)] });
    assert_eq!(actions(&mut r), vec![]);
    // Stepping down loses the queue (here: a command queued behind a full window): the minter is told.
    r.opts.pipeline_window = 0;
    recv_from(&mut r, 6, m(3), Message::Forward { to: Incarnation(1), cmds: vec![cmd(3, 10)] });
    let _ = actions(&mut r);
    recv_from(&mut r, 7, m(3), Message::Nack { promised: Ballot::new(5, m(3)) });
    let acts = actions(&mut r);
    assert!(acts.contains(&Action::ProposalLost { id: cmd(3, 10).id }), "{acts:?}");
    assert!(acts.contains(&Action::Send(Envelope { from: m(1), to: NodeId(3), msg: Message::ForwardLost { ids: vec![cmd(3, 10).id] } })), "{acts:?}");
}
