//! Regression tests for the three protocol bugs found by reading the core (issue 10). Each builds
//! the schedule by hand, message by message, and runs it twice: with the fix (the default) and
//! with the switch in `Bugs` that puts the bug back, so the test shows both that the schedule
//! reaches the bug and that the fix closes it.

use crate::action::Action;
use crate::config::{ConfigChange, ConfigError, Configuration};
use crate::event::Event;
use crate::ids::{NodeId, ReadId, RequestId, Slot, Time};
use crate::message::{Envelope, Message, Value};
use crate::options::{Bugs, Options};
use crate::replica::{test_command, Replica};
use crate::ProposeError;
use crate::testkit::*;

fn replica(me: u64, nodes: u64, bugs: Bugs) -> Replica {
    let config = Configuration::bootstrap((1..=nodes).map(m));
    let mut o = Options::new(m(me), Some(config));
    o.bugs = bugs;
    Replica::new(o, Time(0))
}

const RECONFIG_ID: RequestId = RequestId { node: NodeId(99), seq: 1 };

/// Bug 1. Node 1 follows leader 2 and misses the `Accept` of slot 2, a reconfiguration. The
/// commit point tells it slot 2 is chosen; it fetches. The election then names it leader, and
/// its phase 1 starts at slot 2. The fetch answer arrives during phase 1 and applies slot 2.
/// When the promises complete, the reconfiguration is among the known-chosen values and at or
/// below the commit point: the new leader must pass that stop sign at once (phase 1 again in the
/// new configuration), not wait for a commit point that only it could move.
fn wedge_schedule(bugs: Bugs) -> Replica {
    let mut r = replica(1, 3, bugs);
    let old = b(1, 2);
    let reconfig = Value::Reconfigure { id: RECONFIG_ID, change: ConfigChange::AddLearner(m(4)) };
    recv(&mut r, 0, 2, Message::Accept { ballot: old, slot: Slot(1), value: Value::Noop, commit: Slot(0) });
    // The Accept of slot 2 is lost. The heartbeat says slot 2 is chosen: slot 1 is applied (we
    // accepted it under the same ballot) and slot 2 is fetched from the leader.
    recv(&mut r, 10, 2, Message::Heartbeat { ballot: old, commit: Slot(2), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let acts = actions(&mut r);
    assert!(sends(&acts).iter().any(|(_, msg)| *msg == Message::Fetch { from: Slot(2), to: Slot(2) }), "{acts:?}");
    assert_eq!(r.commit(), Slot(1));
    // Named leader: phase 1 from slot 2 (the first slot not known chosen).
    r.handle(Time(20), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(2, 1);
    let acts = actions(&mut r);
    assert!(sends(&acts).contains(&(NodeId(3), Message::Prepare { ballot, first_slot: Slot(2) })), "{acts:?}");
    // The fetch answer arrives during phase 1: slot 2 is applied, the configuration changes.
    recv(&mut r, 21, 2, Message::Chosen { entries: vec![(Slot(2), reconfig.clone())], commit: Slot(2) });
    let acts = actions(&mut r);
    assert_eq!(acts[0], Action::Apply { slot: Slot(2), value: reconfig });
    assert!(matches!(acts[1], Action::ConfigChanged { slot: Slot(2), .. }), "{acts:?}");
    // Node 3 promises (it accepted nothing from slot 2 on): a quorum with our own promise.
    recv(&mut r, 22, 3, Message::Promise { ballot, first_slot: Slot(2), accepted: vec![], learned: Slot(1), more: false });
    r
}

#[test]
fn bug1_a_new_leader_passes_a_stop_sign_already_chosen() {
    let mut r = wedge_schedule(Bugs::default());
    let ballot = b(2, 1);
    // Phase 1 again, same ballot, in the configuration after slot 2, from slot 3.
    assert_eq!(
        actions(&mut r),
        vec![
            Action::LeaderChanged { leader: Some(NodeId(1)), ballot },
            send(1, 2, Message::Prepare { ballot, first_slot: Slot(3) }),
            send(1, 3, Message::Prepare { ballot, first_slot: Slot(3) }),
        ]
    );
    recv(&mut r, 23, 3, Message::Promise { ballot, first_slot: Slot(3), accepted: vec![], learned: Slot(2), more: false });
    let acts = actions(&mut r);
    // Leading in the new configuration: the election no-op goes out at slot 3 (to 2, 3 and 4's
    // acceptor set {1, 2, 3}), and client commands are proposed after it.
    assert!(sends(&acts).contains(&(NodeId(3), Message::Accept { ballot, slot: Slot(3), value: Value::Noop, commit: Slot(2) })));
    r.propose(Time(24), test_command(9, 1)).expect("leader");
    let acts = actions(&mut r);
    let v = Value::Batch(vec![test_command(9, 1)], crate::Tick { leader: NodeId(1), epoch: crate::Tick::epoch_of(ballot.round, 0), mono_ms: 24 });
    assert!(sends(&acts).contains(&(NodeId(2), Message::Accept { ballot, slot: Slot(4), value: v, commit: Slot(2) })), "{acts:?}");
}

#[test]
fn bug1_switch_wedges_the_leader() {
    let mut r = wedge_schedule(Bugs { wedge_stop_sign: true, ..Bugs::default() });
    let _ = actions(&mut r);
    assert!(r.is_leader());
    // It leads, yet proposes nothing and refuses every membership change, for good.
    r.propose(Time(24), test_command(9, 1)).expect("queued");
    assert!(sends(&actions(&mut r)).iter().all(|(_, msg)| !matches!(msg, Message::Accept { .. })));
    let change = r.propose_config(Time(25), RequestId { node: NodeId(99), seq: 2 }, ConfigChange::Remove(NodeId(4)));
    assert_eq!(change, Err(ProposeError::Config(ConfigError::ChangeInFlight)));
}

/// Bug 2. Leader 1 starts read round 1; node 2's acknowledgement of it is stalled on its
/// stream. A reconfiguration is chosen and leader 1 passes the stop sign under the same ballot.
/// Then 1 is cut off (3 and 2 elect 3 and commit a write 1 never hears of). A new read arrives
/// at 1, which still thinks it leads, and starts a new round. The stalled acknowledgement is
/// delivered now: it confirmed round 1 of the earlier term, before the read arrived, so it must
/// not confirm the new round.
fn stale_ack_schedule(bugs: Bugs) -> Vec<Action> {
    let mut r = replica(1, 3, bugs);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(1, 1);
    recv(&mut r, 1, 3, Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    recv(&mut r, 2, 3, Message::Accepted { ballot, slot: Slot(1), learned: Slot(0) });
    let _ = actions(&mut r);
    assert_eq!(r.commit(), Slot(1));
    // Read round 1; node 3 does not answer, node 2's answer is held on the 2->1 stream.
    r.read(Time(3), ReadId(1)).expect("leader");
    let acts = actions(&mut r);
    assert!(sends(&acts).iter().any(|(_, msg)| matches!(msg, Message::Heartbeat { read_round: 1, .. })), "{acts:?}");
    let stalled = Message::HeartbeatAck { ballot, read_round: 1, learned: Slot(1) };
    // A reconfiguration at slot 2 is chosen ({1, 3}); the stop sign is passed, same ballot.
    r.propose_config(Time(4), RECONFIG_ID, ConfigChange::AddLearner(m(4))).expect("leader");
    recv(&mut r, 5, 3, Message::Accepted { ballot, slot: Slot(2), learned: Slot(1) });
    let acts = actions(&mut r);
    assert!(acts.contains(&Action::ReadsFailed { reads: vec![ReadId(1)], leader: Some(NodeId(1)) }), "{acts:?}");
    recv(&mut r, 6, 3, Message::Promise { ballot, first_slot: Slot(3), accepted: vec![], learned: Slot(2), more: false });
    recv(&mut r, 7, 3, Message::Accepted { ballot, slot: Slot(3), learned: Slot(2) });
    let _ = actions(&mut r);
    assert!(r.is_leader());
    assert_eq!(r.commit(), Slot(3));
    // Cut off from here: nothing from 3 arrives. A read arrives and starts a new round.
    r.read(Time(100), ReadId(2)).expect("still believes it leads");
    let _ = actions(&mut r);
    // The stalled acknowledgement is delivered.
    recv(&mut r, 101, 2, stalled);
    actions(&mut r)
}

#[test]
fn bug2_an_ack_from_an_earlier_term_of_the_same_ballot_confirms_no_read() {
    assert_eq!(stale_ack_schedule(Bugs::default()), vec![]);
}

#[test]
fn bug2_switch_serves_a_stale_read() {
    let acts = stale_ack_schedule(Bugs { reset_read_round: true, ..Bugs::default() });
    assert_eq!(acts, vec![Action::ReadsReady { reads: vec![ReadId(2)], index: Slot(3) }]);
}

/// Bug 3. Node 1 follows leader 2 up to slot 30 (`max_retained_slots` is 20). Node 3 has learned
/// only up to 25: within the lag rule, so its slots must be kept. Node 1 is elected: node 3's
/// promise says it learned 25; node 2 (the old leader) says nothing. The first heartbeats must
/// not announce a checkpoint above what every member reported (25), and a member not heard from
/// (node 2) holds the checkpoint where it was.
fn checkpoint_schedule(bugs: Bugs) -> Vec<Slot> {
    let mut r = replica(1, 3, bugs);
    r.opts.max_retained_slots = 20;
    let old = b(1, 2);
    for s in 1..=30 {
        recv(&mut r, s, 2, Message::Accept { ballot: old, slot: Slot(s), value: Value::Noop, commit: Slot(s - 1) });
    }
    recv(&mut r, 31, 2, Message::Heartbeat { ballot: old, commit: Slot(30), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    let _ = actions(&mut r);
    assert_eq!(r.commit(), Slot(30));
    r.handle(Time(40), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(2, 1);
    recv(&mut r, 41, 3, Message::Promise { ballot, first_slot: Slot(31), accepted: vec![], learned: Slot(25), more: false });
    let mut announced = Vec::new();
    let mut note = |acts: Vec<Action>| {
        for a in acts {
            if let Action::Send(Envelope { msg: Message::Heartbeat { checkpoint, .. }, .. }) = a {
                announced.push(checkpoint);
            }
        }
    };
    note(actions(&mut r));
    // Node 3 accepts the election no-op; its report says learned 25 still.
    recv(&mut r, 42, 3, Message::Accepted { ballot, slot: Slot(31), learned: Slot(25) });
    note(actions(&mut r));
    r.handle_timeout(Time(42 + r.opts.heartbeat_ms));
    note(actions(&mut r));
    // Node 2 is heard from at last: it learned 30. Now every member reported: checkpoint 25.
    recv(&mut r, 100, 2, Message::HeartbeatAck { ballot, read_round: 0, learned: Slot(30) });
    r.handle_timeout(Time(100 + r.opts.heartbeat_ms));
    note(actions(&mut r));
    assert!(announced.len() >= 3, "{announced:?}");
    announced
}

#[test]
fn bug3_a_new_leader_disposes_only_what_every_member_reported() {
    let announced = checkpoint_schedule(Bugs::default());
    // Two heartbeats (to 2 and 3) per round: three rounds at 0 (node 2 unknown), then 25.
    assert_eq!(announced, [0, 0, 0, 0, 25, 25].map(Slot), "{announced:?}");
}

#[test]
fn bug3_switch_disposes_slots_a_member_has_not_learned() {
    let announced = checkpoint_schedule(Bugs { early_checkpoint: true, ..Bugs::default() });
    assert!(announced[0] > Slot(25), "{announced:?}");
}

/// The lag rule still bounds the log: a member never heard from in this leadership stops
/// holding the checkpoint once `max_retained_slots` slots were committed without a word from it.
#[test]
fn a_member_never_heard_from_is_not_waited_for_past_the_lag_rule() {
    let mut r = replica(1, 3, Bugs::default());
    r.opts.max_retained_slots = 20;
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(1, 1);
    recv(&mut r, 1, 2, Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    let _ = actions(&mut r);
    // Node 2 acknowledges 30 slots; node 3 is silent throughout.
    for s in 1..=30u64 {
        if s > 1 {
            r.propose(Time(s), test_command(9, s)).expect("leader");
        }
        recv(&mut r, s, 2, Message::Accepted { ballot, slot: Slot(s), learned: Slot(s - 1) });
    }
    let _ = actions(&mut r);
    assert_eq!(r.commit(), Slot(30));
    r.handle_timeout(Time(100));
    let checkpoints: Vec<Slot> = actions(&mut r)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send(Envelope { msg: Message::Heartbeat { checkpoint, .. }, .. }) => Some(checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(checkpoints, vec![Slot(29), Slot(29)]);
}
