//! Schedules from an adversarial review of the core (after issue 10): each showed a bug in the
//! code as it was, and asserts the correct behaviour.

use crate::action::Action;
use crate::event::Event;
use crate::ids::{Ballot, NodeId, Slot, Time};
use crate::message::{AcceptedEntry, Message, SnapshotMeta, Value};
use crate::testkit::*;

fn heartbeat_checkpoints(acts: &[Action]) -> Vec<Slot> {
    sends(acts)
        .into_iter()
        .filter_map(|(_, msg)| match msg {
            Message::Heartbeat { checkpoint, .. } => Some(checkpoint),
            _ => None,
        })
        .collect()
}

/// Finding A (checkpoint, lag rule). A learned report kept across roles is used to *excuse* a
/// member as lagging, although it dates from an earlier leadership of this replica and the member
/// has learned a lot since (under another leader). Node 1 leads first (node 3 reports learned 0),
/// node 2 then leads to slot 40 and node 3 follows it up to 35 (within max_retained_slots = 20).
/// Node 1 is elected again with node 2's promise only: its very first heartbeat judges node 3 by
/// the stale report (0, "lags by 40 > 20"), announces checkpoint 40 and compacts its log through
/// 40, so node 3, 5 slots behind, is answered `Compacted` and must install a snapshot.
#[test]
fn a_stale_report_from_an_earlier_leadership_does_not_excuse_a_member() {
    let mut r = replica(1, 3);
    r.opts.max_retained_slots = 20;
    r.opts.snapshot_every = 10;
    // First leadership of node 1: node 3's promise reports learned 0.
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let b1 = b(1, 1);
    recv(&mut r, 1, 3, Message::Promise { ballot: b1, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    recv(&mut r, 2, 3, Message::Accepted { ballot: b1, slot: Slot(1), learned: Slot(0) });
    assert_eq!(r.commit(), Slot(1));
    // Node 2 takes over and leads up to slot 40; node 1 follows.
    r.handle(Time(3), Event::LeaderHint { leader: Some(NodeId(2)) });
    let b2 = b(2, 2);
    for s in 2..=40 {
        recv(&mut r, 10 + s, 2, Message::Accept { ballot: b2, slot: Slot(s), value: Value::Noop, commit: Slot(s - 1) });
    }
    recv(&mut r, 60, 2, Message::Heartbeat { ballot: b2, commit: Slot(40), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    assert_eq!(r.commit(), Slot(40));
    let config = r.log.current_config().cloned().expect("config");
    r.handle(Time(61), Event::SnapshotTaken(SnapshotMeta { last_slot: Slot(40), config }));
    let _ = actions(&mut r);
    // Node 1 is elected again; node 2 promises (learned 40). Node 3 says nothing yet.
    r.handle(Time(100), Event::LeaderHint { leader: Some(NodeId(1)) });
    let b3 = b(3, 1);
    recv(&mut r, 101, 2, Message::Promise { ballot: b3, first_slot: Slot(41), accepted: vec![], learned: Slot(40), more: false });
    assert!(r.is_leader());
    let announced = heartbeat_checkpoints(&actions(&mut r));
    // Node 3 (really at 35, 5 behind: within the lag rule) answers and asks for 36..=40.
    recv(&mut r, 102, 3, Message::HeartbeatAck { ballot: b3, read_round: 0, learned: Slot(35) });
    let _ = actions(&mut r);
    recv(&mut r, 103, 3, Message::Fetch { from: Slot(36), to: Slot(40) });
    let answer = sends(&actions(&mut r));
    // Node 3 was not heard from in this leadership: it must hold the checkpoint (as a member
    // never heard from does), and its slots must still be in the log.
    assert!(
        announced.iter().all(|cp| *cp <= Slot(35)),
        "announced {announced:?} while node 3 was at 35; its fetch of 36..=40 was answered {answer:?}"
    );
    assert!(
        matches!(answer.first(), Some((_, Message::Chosen { .. }))),
        "node 3, 5 slots behind, was answered {answer:?}"
    );
}

/// Finding B (peer input panics / hangs the core). A `Promise` may report an accepted entry at
/// any slot: only `slot >= first_slot` and `ballot <= promised ballot` are checked. An entry at
/// `u64::MAX` makes `become_leader` compute `last.next()` (overflow: a panic in debug builds, a
/// wrap to slot 0 in release), and an entry at, say, slot 10^12 makes it fill 10^12 holes with
/// no-ops in one loop (a hang and out-of-memory). Any acceptor that once accepted such an
/// `Accept` (also unchecked) poisons every later election the same way.
#[test]
fn a_promise_with_an_absurd_slot_does_not_panic_the_candidate() {
    let mut r = replica(1, 3);
    r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    let ballot = b(1, 1);
    let bad = AcceptedEntry { slot: Slot(u64::MAX), ballot: Ballot::ZERO, value: Value::Noop };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recv(&mut r, 1, 2, Message::Promise { ballot, first_slot: Slot(1), accepted: vec![bad], learned: Slot(0), more: false });
    }));
    assert!(outcome.is_ok(), "a peer's Promise panicked the core");
}
