//! Durable restart (`recovery.rs`): a replica rebuilt from its persisted records keeps its
//! promise and its votes, and refuses the slots its snapshot covers.

use crate::action::{Action, Persist};
use crate::config::Configuration;
use crate::ids::{Slot, Time};
use crate::message::{AcceptedEntry, Message, SnapshotMeta, Value};
use crate::options::Options;
use crate::recovery::Recovered;
use crate::replica::{test_command, Replica};
use crate::testkit::*;

fn batch(n: u64, seq: u64) -> Value {
    Value::Batch(vec![test_command(n, seq)], Default::default())
}

/// Replay what replica 1 of 3 persisted while it voted, as its driver's log would hold it.
fn persisted(r: &mut Replica) -> Vec<Persist> {
    actions(r)
        .into_iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn restart(records: Vec<Persist>, snapshot_slot: u64, epoch: u64) -> Replica {
    let config = Configuration::bootstrap((1..=3).map(m));
    let mut disk = Recovered::from_snapshot(SnapshotMeta { last_slot: Slot(snapshot_slot), config: config.clone() });
    for p in records {
        disk.replay(p);
    }
    let mut opts = Options::new(m(1), Some(config));
    opts.restart_epoch = epoch;
    Replica::recover(opts, Time(0), disk)
}

#[test]
fn a_durable_restart_keeps_promises_and_votes() {
    // Phase 1: replica 1 promises ballot (2, node 2) and accepts two values under it.
    let mut r = replica(1, 3);
    let (v1, v2) = (batch(9, 1), batch(9, 2));
    recv(&mut r, 0, 2, Message::Prepare { ballot: b(2, 2), first_slot: Slot(1) });
    recv(&mut r, 1, 2, Message::Accept { ballot: b(2, 2), slot: Slot(1), value: v1.clone(), commit: Slot(0) });
    recv(&mut r, 2, 2, Message::Accept { ballot: b(2, 2), slot: Slot(2), value: v2.clone(), commit: Slot(0) });
    let records = persisted(&mut r);
    assert_eq!(records.len(), 3, "{records:?}");

    // Phase 2: the process dies; a new one of the same incarnation replays the log.
    let mut r = restart(records, 0, 1);
    assert!(actions(&mut r).is_empty());

    // A lower ballot is still refused: the promise survived (rule 8).
    recv(&mut r, 3, 3, Message::Prepare { ballot: b(1, 3), first_slot: Slot(1) });
    assert_eq!(actions(&mut r), vec![send(1, 3, Message::Nack { promised: b(2, 2), refused: Some(b(1, 3)) })]);

    // A higher one is granted, and the promise reports both votes (PMS 2.2 phase 1b), so a new
    // leader adopts them.
    recv(&mut r, 4, 3, Message::Prepare { ballot: b(3, 3), first_slot: Slot(1) });
    let accepted = vec![
        AcceptedEntry { slot: Slot(1), ballot: b(2, 2), value: v1 },
        AcceptedEntry { slot: Slot(2), ballot: b(2, 2), value: v2 },
    ];
    assert_eq!(
        actions(&mut r),
        vec![
            Action::Persist(Persist::Promised(b(3, 3))),
            send(1, 3, Message::Promise { ballot: b(3, 3), first_slot: Slot(1), accepted, learned: Slot(0), more: false }),
        ]
    );
}

#[test]
fn a_durable_restart_refuses_slots_its_snapshot_covers() {
    // The votes at or below the snapshot were removed from the disk with the log segments:
    // voting there again could contradict them, so the replica answers "compacted".
    let mut r = replica(1, 3);
    recv(&mut r, 0, 2, Message::Accept { ballot: b(2, 2), slot: Slot(1), value: batch(9, 1), commit: Slot(0) });
    recv(&mut r, 1, 2, Message::Accept { ballot: b(2, 2), slot: Slot(6), value: batch(9, 6), commit: Slot(0) });
    let records = persisted(&mut r);
    let mut r = restart(records, 5, 1);
    recv(&mut r, 2, 3, Message::Prepare { ballot: b(3, 3), first_slot: Slot(4) });
    assert_eq!(actions(&mut r), vec![send(1, 3, Message::Compacted { snapshot_slot: Slot(5) })]);
    // Above it, the vote at slot 6 is reported and the one at slot 1 is not (it is inside the
    // snapshot).
    recv(&mut r, 3, 3, Message::Prepare { ballot: b(3, 3), first_slot: Slot(6) });
    let acts = actions(&mut r);
    let Some((_, Message::Promise { accepted, .. })) = sends(&acts).into_iter().next() else { panic!("{acts:?}") };
    assert_eq!(accepted.iter().map(|e| e.slot).collect::<Vec<_>>(), vec![Slot(6)]);
}

#[test]
fn a_later_vote_for_a_slot_wins_on_replay() {
    let mut r = replica(1, 3);
    recv(&mut r, 0, 2, Message::Accept { ballot: b(2, 2), slot: Slot(1), value: batch(9, 1), commit: Slot(0) });
    recv(&mut r, 1, 3, Message::Accept { ballot: b(3, 3), slot: Slot(1), value: batch(8, 1), commit: Slot(0) });
    let records = persisted(&mut r);
    let mut r = restart(records, 0, 1);
    recv(&mut r, 2, 2, Message::Prepare { ballot: b(4, 2), first_slot: Slot(1) });
    let acts = actions(&mut r);
    let Some((_, Message::Promise { accepted, .. })) = sends(&acts).into_iter().next() else { panic!("{acts:?}") };
    assert_eq!(accepted, vec![AcceptedEntry { slot: Slot(1), ballot: b(3, 3), value: batch(8, 1) }]);
}
