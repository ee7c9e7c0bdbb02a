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
    recv_from(&mut r, 0, m(1), Message::Heartbeat { ballot: leader, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let _ = actions(&mut r);
    // The follower hands its command to the leader's incarnation; nothing else happens yet.
    r.forward(Time(1), cmd(2, 7)).expect("a follower that knows the leader forwards");
    assert_eq!(
        actions(&mut r),
        vec![Action::Send(Envelope { from: m(2), to: NodeId(1), msg: Message::Forward { to: leader, cmds: vec![cmd(2, 7)] } })]
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
    recv_from(&mut r, 4, m(1), Message::Heartbeat { ballot: leader, commit: Slot(1), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
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
    let forward = Message::Forward { to: ballot, cmds: vec![cmd(2, 7)] };
    recv_from(&mut r, 2, m(2), forward.clone());
    let acts = actions(&mut r);
    assert!(acts.iter().any(|a| matches!(a, Action::Send(Envelope { msg: Message::Accept { value: Value::Batch(c, _), .. }, .. }) if c == &vec![cmd(2, 7)])), "{acts:?}");
    // A duplicate is ignored: proposing it again could choose it twice.
    recv_from(&mut r, 3, m(2), forward);
    assert_eq!(actions(&mut r), vec![]);
    // Meant for another incarnation of us: ignored (neither taken nor refused).
    recv_from(&mut r, 4, m(2), Message::Forward { to: Ballot::new(1, Member { node: NodeId(1), incarnation: Incarnation(9) }), cmds: vec![cmd(2, 8)] });
    assert_eq!(actions(&mut r), vec![]);
    // An id minted by someone else than the sender: a loss report could not find its way back.
    recv_from(&mut r, 5, m(2), Message::Forward { to: ballot, cmds: vec![cmd(3, 9)] });
    assert_eq!(actions(&mut r), vec![]);
    // Stepping down loses the queue (here: a command queued behind a full window): the minter is told.
    r.opts.pipeline_window = 0;
    recv_from(&mut r, 6, m(3), Message::Forward { to: ballot, cmds: vec![cmd(3, 10)] });
    let _ = actions(&mut r);
    recv_from(&mut r, 7, m(3), Message::Nack { promised: Ballot::new(5, m(3)), refused: Some(ballot) });
    let acts = actions(&mut r);
    assert!(acts.contains(&Action::ProposalLost { id: cmd(3, 10).id }), "{acts:?}");
    assert!(acts.contains(&Action::Send(Envelope { from: m(1), to: NodeId(3), msg: Message::ForwardLost { ids: vec![cmd(3, 10).id] } })), "{acts:?}");
}

/// Issue 25: a command forwarded to a leader that died is settled by the next leader's fence. The
/// follower reports it lost only once the log is chosen up to the fence without it (never
/// before), and never a command meant for the new leader itself.
#[test]
fn a_later_leaders_fence_settles_a_command_forwarded_to_a_dead_one() {
    let mut r = replica(2, 3);
    let old = Ballot::new(1, m(1));
    recv_from(&mut r, 0, m(1), Message::Heartbeat { ballot: old, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let _ = actions(&mut r);
    r.forward(Time(1), cmd(2, 7)).expect("forwards to the old leader");
    let _ = actions(&mut r);
    // Node 3 leads now (node 1 died with the command queued); its phase 1 saw slot 2 at most.
    let new = Ballot::new(2, m(3));
    let fence = crate::forward::fence_after(Slot(2));
    assert_eq!(fence, Slot(2 + crate::forward::MAX_PIPELINE_WINDOW + 1));
    recv_from(&mut r, 2, m(3), Message::Heartbeat { ballot: new, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence });
    let _ = actions(&mut r);
    r.forward(Time(3), cmd(2, 8)).expect("forwards to the new leader");
    assert!(
        actions(&mut r).iter().any(|a| matches!(a, Action::Send(Envelope { msg: Message::Forward { to, .. }, .. }) if *to == new)),
        "a forward names the ballot it is meant for"
    );
    // The new leader fills its slots with no-ops; chosen up to one short of the fence: nothing
    // is settled yet (the old leader's window may still reach the last slot).
    for s in 1..fence.0 {
        recv_from(&mut r, 4, m(3), Message::Accept { ballot: new, slot: Slot(s), value: Value::Noop, commit: Slot(0) });
    }
    let _ = actions(&mut r);
    recv_from(&mut r, 5, m(3), Message::Heartbeat { ballot: new, commit: Slot(fence.0 - 1), checkpoint: Slot(0), read_round: 0, fence });
    let acts = actions(&mut r);
    assert!(!acts.iter().any(|a| matches!(a, Action::ProposalLost { .. })), "{acts:?}");
    assert!(r.tracks(cmd(2, 7).id));
    // The fence's slot chosen: the command meant for the dead leader is lost (its driver proposes
    // it again); the one meant for the new leader is still its to settle.
    recv_from(&mut r, 6, m(3), Message::Accept { ballot: new, slot: fence, value: Value::Noop, commit: fence });
    let acts = actions(&mut r);
    let lost: Vec<_> = acts.iter().filter(|a| matches!(a, Action::ProposalLost { .. })).collect();
    assert_eq!(lost, vec![&Action::ProposalLost { id: cmd(2, 7).id }]);
    assert!(!r.tracks(cmd(2, 7).id) && r.tracks(cmd(2, 8).id));
    assert_eq!(r.counters.forwards_fenced, 1);
}

/// A forward made before a snapshot install may have been applied inside the snapshot: no fence
/// reports it lost (the node settles it from the installed session table, or as unknown).
#[test]
fn a_fence_never_settles_a_forward_older_than_a_snapshot_install() {
    let mut r = replica(2, 3);
    let old = Ballot::new(1, m(1));
    recv_from(&mut r, 0, m(1), Message::Heartbeat { ballot: old, commit: Slot(0), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    r.forward(Time(1), cmd(2, 7)).expect("forwards");
    let _ = actions(&mut r);
    let config = r.log.current_config().cloned().expect("bootstrapped");
    r.handle(Time(2), Event::SnapshotInstalled(crate::message::SnapshotMeta { last_slot: Slot(100), config }));
    let _ = actions(&mut r);
    let new = Ballot::new(2, m(3));
    recv_from(&mut r, 3, m(3), Message::Heartbeat { ballot: new, commit: Slot(100), checkpoint: Slot(0), read_round: 0, fence: Slot(90) });
    let acts = actions(&mut r);
    assert!(!acts.iter().any(|a| matches!(a, Action::ProposalLost { .. })), "{acts:?}");
    assert_eq!(r.counters.forwards_fenced, 0);
}

/// A leader takes a forward only under the ballot it names: one meant for a ballot it has left
/// (it stepped down and campaigns again) is refused, so that a command forwarded once is only
/// ever proposed under one ballot (the fence rests on it).
#[test]
fn a_leader_refuses_a_forward_meant_for_another_of_its_ballots() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let first = Ballot::new(1, m(1));
    recv_from(&mut r, 1, m(2), Message::Promise { ballot: first, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    assert!(r.is_leader());
    let _ = actions(&mut r);
    recv_from(&mut r, 2, m(3), Message::Nack { promised: Ballot::new(3, m(3)), refused: Some(first) });
    r.handle(Time(3), Event::LeaderHint { leader: Some(NodeId(1)) });
    let _ = actions(&mut r);
    recv_from(&mut r, 4, m(2), Message::Forward { to: first, cmds: vec![cmd(2, 9)] });
    assert_eq!(actions(&mut r), vec![send(1, 2, Message::ForwardLost { ids: vec![cmd(2, 9).id] })]);
}

/// A new leader starts filling up to its fence at its first periodic heartbeat, with no-ops while
/// nothing is queued, within its window.
#[test]
fn a_new_leader_fills_up_to_its_fence_when_idle() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = Ballot::new(1, m(1));
    recv_from(&mut r, 1, m(2), Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    let accepts = |acts: &[Action]| sends(acts).into_iter().filter(|(to, m)| *to == NodeId(2) && matches!(m, Message::Accept { .. })).count();
    assert_eq!(accepts(&actions(&mut r)), 1, "the election's own no-op only");
    r.handle_timeout(Time(1 + r.opts.heartbeat_ms));
    assert_eq!(accepts(&actions(&mut r)) as u64, r.opts.pipeline_window - 1, "the window's worth of no-ops");
}
