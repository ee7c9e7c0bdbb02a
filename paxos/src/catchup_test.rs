//! Catch-up with one whole-store transfer per restart: the learner's single fetch source, the
//! sender's one transfer at a time and the log it holds for the peer, and staggered snapshot asks.
//! Each test failed on the code before these rules (random fetch targets, a resend every
//! `snapshot_resend_ms`, compaction to the next snapshot during a transfer, one cadence for all).

use crate::action::Action;
use crate::event::Event;
use crate::ids::{NodeId, Slot, Time};
use crate::message::{Message, SnapshotMeta, Value};
use crate::replica::Replica;
use crate::testkit::*;

/// Replica `r` follows leader 2 (ballot 1.2): accepts slots `from..=to` and hears a heartbeat
/// with commit and checkpoint `to`. Actions are discarded.
fn follow(r: &mut Replica, now: u64, from: u64, to: u64) {
    for s in from..=to {
        recv(r, now, 2, Message::Accept { ballot: b(1, 2), slot: Slot(s), value: Value::Noop, commit: Slot(s - 1) });
    }
    recv(r, now, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(to), checkpoint: Slot(to), read_round: 0, fence: Slot(0) });
    assert_eq!(r.commit(), Slot(to));
    let _ = actions(r);
}

fn snapshot_taken(r: &mut Replica, now: u64, slot: u64) {
    let config = r.log.current_config().cloned().expect("config");
    r.handle(Time(now), Event::SnapshotTaken(SnapshotMeta { last_slot: Slot(slot), config }));
    let _ = actions(r);
}

/// The destinations of the `Fetch` messages among `acts`.
fn fetch_targets(acts: &[Action]) -> Vec<NodeId> {
    sends(acts).into_iter().filter(|(_, m)| matches!(m, Message::Fetch { .. })).map(|(to, _)| to).collect()
}

fn answers(r: &mut Replica) -> Vec<Message> {
    sends(&actions(r)).into_iter().map(|(_, m)| m).collect()
}

/// A member behind the leader's commit point (node 3 of {1, 2, 3}, leader 1) that fetches.
fn lagging_member() -> Replica {
    let mut r = replica(3, 3);
    recv(&mut r, 0, 1, Message::Heartbeat { ballot: b(1, 1), commit: Slot(500), checkpoint: Slot(0), read_round: 0, fence: Slot(0) });
    assert_eq!(fetch_targets(&actions(&mut r)), vec![NodeId(1)]);
    r
}

#[test]
fn a_member_waiting_for_a_snapshot_asks_its_source_only_until_the_wait_bound() {
    let mut r = lagging_member();
    let (retry, wait) = (r.opts.retry_ms, r.opts.snapshot_wait_ms);
    // The leader answers `Compacted`: its driver streams a snapshot. Every retry goes to it
    // (it keeps answering), not to node 2, which would start a second whole-store transfer.
    let mut now = 1;
    recv(&mut r, now, 1, Message::Compacted { snapshot_slot: Slot(400) });
    let mut targets = Vec::new();
    while now + retry < wait {
        now += retry;
        r.handle_timeout(Time(now));
        targets.extend(fetch_targets(&actions(&mut r)));
        recv(&mut r, now, 1, Message::Compacted { snapshot_slot: Slot(400) });
    }
    assert!(targets.len() > 100 && targets.iter().all(|t| *t == NodeId(1)), "fetched from {targets:?}");
    // No snapshot within the bound: the next fetch goes to the other member.
    now += retry;
    r.handle_timeout(Time(now));
    assert_eq!(fetch_targets(&actions(&mut r)), vec![NodeId(2)]);
}

#[test]
fn a_silent_source_is_replaced_after_three_retries_and_the_new_one_kept() {
    let mut r = lagging_member();
    let retry = r.opts.retry_ms;
    let mut targets = Vec::new();
    for i in 1..=12 {
        r.handle_timeout(Time(i * retry));
        targets.extend(fetch_targets(&actions(&mut r)));
    }
    // Nobody answers: leader 1 is asked until three retries passed (at 0, 1 and 2 x retry_ms),
    // then node 2 for three retries (not only once: the leader did not change), then 1 again.
    let (one, two) = (NodeId(1), NodeId(2));
    assert_eq!(targets, vec![one, one, two, two, two, one, one, one, two, two, two, one]);
}

#[test]
fn after_installing_a_snapshot_a_member_fetches_the_log_from_its_source() {
    let mut r = lagging_member();
    recv(&mut r, 1, 1, Message::Compacted { snapshot_slot: Slot(400) });
    let config = r.log.current_config().cloned().expect("config");
    r.handle(Time(2), Event::SnapshotInstalled(SnapshotMeta { last_slot: Slot(450), config }));
    let retry = r.opts.retry_ms;
    let mut targets = fetch_targets(&actions(&mut r));
    // The source keeps answering with values: every fetch goes to it.
    for i in 0..20u64 {
        let s = 451 + i;
        recv(&mut r, 3 + i * retry, 1, Message::Chosen { entries: vec![(Slot(s), Value::Noop)], commit: Slot(500) });
        r.handle_timeout(Time(3 + (i + 1) * retry));
        targets.extend(fetch_targets(&actions(&mut r)));
    }
    assert_eq!(r.commit(), Slot(470));
    assert!(targets.len() >= 20 && targets.iter().all(|t| *t == NodeId(1)), "fetched from {targets:?}");
}

#[test]
fn a_transfer_is_started_once_and_a_late_fetch_after_its_delivery_starts_none() {
    let mut r = replica(1, 3);
    let (retry, resend) = (r.opts.retry_ms, r.opts.snapshot_resend_ms);
    let fetch0 = Message::Fetch { from: Slot(0), to: Slot(0) };
    recv(&mut r, 0, 4, fetch0.clone());
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(4) }));
    // A transfer of a large store takes longer than `snapshot_resend_ms`: the learner's retries
    // during it start nothing.
    let mut t = 0;
    while t < 5 * resend {
        t += retry;
        recv(&mut r, t, 4, fetch0.clone());
        assert!(!actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(4) }), "a second transfer at {t}");
    }
    // Delivered. A fetch the learner sent before its install arrives after: no new transfer.
    r.handle(Time(t), Event::SnapshotSent { to: NodeId(4), delivered: true });
    recv(&mut r, t + retry, 4, fetch0.clone());
    assert!(!actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(4) }));
    // One that still asks from slot 0 after the window needs another snapshot.
    recv(&mut r, t + resend, 4, fetch0);
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(4) }));
}

#[test]
fn the_log_above_a_snapshot_being_sent_is_kept_until_the_peer_fetched_it() {
    let mut r = replica(1, 3);
    r.opts.snapshot_every = 0;
    let (retry, resend) = (r.opts.retry_ms, r.opts.snapshot_resend_ms);
    follow(&mut r, 0, 1, 20);
    snapshot_taken(&mut r, 1, 10);
    assert_eq!(r.log.compacted, Slot(10));
    // Node 3 (restarted, empty) asks from slot 0: a transfer of the state at 20 starts.
    recv(&mut r, 100, 3, Message::Fetch { from: Slot(0), to: Slot(20) });
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(3) }));
    // While it streams, the log moves on and this replica takes its next snapshot, at 40; node 3
    // keeps asking from 0 meanwhile.
    follow(&mut r, 150, 21, 40);
    recv(&mut r, 200, 3, Message::Fetch { from: Slot(0), to: Slot(40) });
    snapshot_taken(&mut r, 210, 40);
    r.handle(Time(250), Event::SnapshotSent { to: NodeId(3), delivered: true });
    // Node 3 installed the snapshot at 20 and asks for what follows: the values, not a second
    // whole-store transfer.
    recv(&mut r, 300, 3, Message::Fetch { from: Slot(21), to: Slot(40) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, .. }] => assert_eq!(entries.len(), 20),
        other => panic!("node 3 at 20 was answered {other:?}"),
    }
    assert_eq!(r.log.compacted, Slot(20), "compacted only up to the hold");
    // Caught up, it stops fetching; after `snapshot_resend_ms` of quiet the hold ends and the
    // log is compacted to the snapshot on the next occasion (a checkpoint here).
    recv(&mut r, 300 + retry, 3, Message::Fetch { from: Slot(41), to: Slot(41) });
    let _ = actions(&mut r);
    recv(&mut r, 300 + retry + resend, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(40), checkpoint: Slot(40), read_round: 0, fence: Slot(0) });
    assert_eq!(r.log.compacted, Slot(40));
}

#[test]
fn a_hold_ends_once_the_peer_lags_beyond_its_bound() {
    use crate::compaction::HOLD_LAG_FACTOR;
    let mut r = replica(1, 3);
    r.opts.snapshot_every = 0;
    r.opts.max_retained_slots = 4;
    follow(&mut r, 0, 1, 20);
    snapshot_taken(&mut r, 1, 10);
    recv(&mut r, 100, 3, Message::Fetch { from: Slot(0), to: Slot(20) });
    let _ = actions(&mut r);
    // 20 slots past the hold at 20: more than HOLD_LAG_FACTOR x 4 = 16, so the snapshot at 40
    // compacts.
    const _: () = assert!(HOLD_LAG_FACTOR * 4 < 20);
    follow(&mut r, 150, 21, 40);
    recv(&mut r, 200, 3, Message::Fetch { from: Slot(0), to: Slot(40) });
    snapshot_taken(&mut r, 210, 40);
    assert_eq!(r.log.compacted, Slot(40));
}

/// `scripts/bench --catchup` at 1 M keys: the log committed during a transfer (~150,000 slots in
/// ~10 s) was more than `max_retained_slots` (100,000), the hold was dropped at that bound, and
/// every snapshot arrived already below the sender's compaction point: twelve transfers in a
/// row. A peer that lags more than `max_retained_slots` but less than the hold's bound still
/// finds the log after its snapshot.
#[test]
fn a_hold_outlives_a_transfer_during_which_more_than_max_retained_slots_were_committed() {
    let mut r = replica(1, 3);
    r.opts.snapshot_every = 0;
    r.opts.max_retained_slots = 15;
    follow(&mut r, 0, 1, 20);
    snapshot_taken(&mut r, 1, 10);
    // Node 3 (fresh) asks from 0: a transfer of the state at 20 starts, the log above 20 held.
    recv(&mut r, 100, 3, Message::Fetch { from: Slot(0), to: Slot(20) });
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(3) }));
    // 25 slots are committed while it streams (more than max_retained_slots), and a snapshot
    // taken meanwhile does not compact past the hold.
    follow(&mut r, 150, 21, 45);
    recv(&mut r, 200, 3, Message::Fetch { from: Slot(0), to: Slot(45) });
    let _ = actions(&mut r);
    snapshot_taken(&mut r, 210, 45);
    assert_eq!(r.log.compacted, Slot(20));
    // Installed at 20, node 3 fetches the rest of the log from us.
    r.handle(Time(220), Event::SnapshotSent { to: NodeId(3), delivered: true });
    recv(&mut r, 230, 3, Message::Fetch { from: Slot(21), to: Slot(45) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, .. }] => assert_eq!(entries.len(), 25),
        other => panic!("node 3 at 20 was answered {other:?} (log compacted to {})", r.log.compacted.0),
    }
}

#[test]
fn replicas_ask_for_snapshots_at_different_slots() {
    let mut asked = Vec::new();
    for me in 1..=3 {
        let mut r = replica(me, 3);
        r.opts.snapshot_every = 100;
        let mut slots = Vec::new();
        let leader = if me == 3 { 1 } else { 3 };
        for s in 1..=400 {
            let accept = Message::Accept { ballot: b(1, leader), slot: Slot(s), value: Value::Noop, commit: Slot(s - 1) };
            recv(&mut r, s, leader, accept);
            slots.extend(actions(&mut r).into_iter().filter_map(|a| match a {
                Action::TakeSnapshot { slot } => Some(slot.0),
                _ => None,
            }));
        }
        // One ask per 100 slots, on this node's phase.
        assert!(slots.windows(2).all(|w| w[1] - w[0] == 100), "node {me} asked at {slots:?}");
        asked.push(slots[0]);
    }
    // Node ids 1, 2, 3: phases 0.62, 0.24 and 0.85 of the cadence.
    assert_eq!(asked, vec![39, 77, 15]);
}

#[test]
fn the_phase_is_a_fraction_of_the_period() {
    for node in 0..50 {
        for period in [0, 1, 7, 100, 100_000, u64::MAX] {
            let p = crate::snapshot_phase(NodeId(node), period);
            assert!(p < period.max(1), "node {node} period {period}: phase {p}");
        }
    }
    assert!(crate::crosses_grid(Slot(99), Slot(100), 100, 0));
    assert!(!crate::crosses_grid(Slot(100), Slot(199), 100, 0));
    assert!(crate::crosses_grid(Slot(0), Slot(39), 100, 62) && !crate::crosses_grid(Slot(0), Slot(37), 100, 62));
    assert!(!crate::crosses_grid(Slot(0), Slot(1000), 0, 0));
}

// ---- found by the adversarial review of these rules (each failed before its fix) ----

/// A transfer its driver reports failed at once (the learner's inbound gate answered BUSY: it
/// is receiving another member's snapshot) is restarted on every fetch, i.e. every `retry_ms`,
/// and each restart is a whole-store clone + encode on the sender when its latest snapshot is
/// not at the applied slot. Main limited restarts to one per `snapshot_resend_ms`.
#[test]
fn review_a_transfer_that_fails_at_once_is_not_restarted_on_every_fetch() {
    let mut r = replica(1, 3);
    let (retry, resend) = (r.opts.retry_ms, r.opts.snapshot_resend_ms);
    let fetch0 = Message::Fetch { from: Slot(0), to: Slot(0) };
    let mut started = 0;
    let mut t = 0;
    while t < resend {
        recv(&mut r, t, 4, fetch0.clone());
        if actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(4) }) {
            started += 1;
            // The learner refuses it at once (busy with another stream).
            r.handle(Time(t + 1), Event::SnapshotSent { to: NodeId(4), delivered: false });
        }
        t += retry;
    }
    assert!(started <= 1, "{started} whole-store transfers started within snapshot_resend_ms ({resend} ms)");
}

/// Sender side of the two-source schedule: node 2 became the learner's source after node 1's
/// transfer passed `snapshot_wait_ms`; node 1's stream still holds the learner's inbound gate,
/// so node 2's transfers are refused (BUSY) and restarted, each restart moving the hold up to
/// node 2's commit at that moment. Node 2 takes a snapshot and compacts past the slot of node
/// 1's snapshot; when that one is installed (slot 20) and node 3 asks node 2 for 21.., it is
/// answered `Compacted`: a second whole-store transfer, though node 2 held a log for it.
#[test]
fn review_a_restarted_transfer_does_not_raise_the_hold_of_a_peer_still_waiting() {
    // `r` plays the second source (node 1 here; leader 2 feeds it); node 3 is the learner.
    let mut r = replica(1, 3);
    r.opts.snapshot_every = 0;
    let retry = r.opts.retry_ms;
    follow(&mut r, 0, 1, 20);
    snapshot_taken(&mut r, 1, 10);
    // Node 3 (fresh) asks from 0: a transfer of the state at 20, refused at once (BUSY).
    recv(&mut r, 100, 3, Message::Fetch { from: Slot(0), to: Slot(20) });
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(3) }));
    r.handle(Time(101), Event::SnapshotSent { to: NodeId(3), delivered: false });
    // The log moves on; node 3 keeps asking from 0 (still receiving node 1's stream); the
    // restarted transfer is refused again.
    follow(&mut r, 150, 21, 40);
    recv(&mut r, 100 + retry, 3, Message::Fetch { from: Slot(0), to: Slot(40) });
    let _ = actions(&mut r);
    r.handle(Time(101 + retry), Event::SnapshotSent { to: NodeId(3), delivered: false });
    snapshot_taken(&mut r, 100 + 2 * retry, 40);
    // Node 1's snapshot (at 20, node 1's commit when its transfer started) is installed.
    recv(&mut r, 100 + 3 * retry, 3, Message::Fetch { from: Slot(21), to: Slot(40) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, .. }] => assert_eq!(entries.len(), 20),
        other => panic!("node 3 at 20 was answered {other:?} (log compacted to {})", r.log.compacted.0),
    }
}


/// A `Chosen` answer is bounded by slots (`FETCH_BATCH`) and by bytes (`FETCH_BYTES`, at least one
/// slot): small slots come thousands per round trip (a replica that installed a snapshot catches
/// up on the log chosen meanwhile in a few round trips, not hundreds), and full slots never make
/// a message above the transport's limit.
#[test]
fn a_fetch_answer_is_bounded_by_slots_and_by_bytes() {
    use crate::learner::{FETCH_BATCH, FETCH_BYTES};
    // Small slots: as many as FETCH_BATCH allows (the old bound was 128).
    let mut r = replica(1, 3);
    follow(&mut r, 0, 1, 5_000);
    recv(&mut r, 10, 3, Message::Fetch { from: Slot(1), to: Slot(5_000) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, commit }] => {
            assert_eq!(*commit, Slot(5_000));
            assert_eq!(entries.len() as u64, FETCH_BATCH + 1, "slots 1..=1+FETCH_BATCH");
            assert!(entries.windows(2).all(|w| w[1].0 == w[0].0.next()), "consecutive slots");
        }
        other => panic!("{other:?}"),
    }
    // Full slots (1 MiB each): about FETCH_BYTES of them, at least one.
    let mut r = replica(1, 3);
    let big = |s: u64| {
        let mut c = cmd(2, s);
        c.payload = vec![7; 1 << 20];
        Value::Batch(vec![c], Default::default())
    };
    for s in 1..=10 {
        recv(&mut r, 0, 2, Message::Accept { ballot: b(1, 2), slot: Slot(s), value: big(s), commit: Slot(s - 1) });
    }
    recv(&mut r, 0, 2, Message::Heartbeat { ballot: b(1, 2), commit: Slot(10), checkpoint: Slot(10), read_round: 0, fence: Slot(0) });
    let _ = actions(&mut r);
    recv(&mut r, 10, 3, Message::Fetch { from: Slot(1), to: Slot(10) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, .. }] => {
            let bytes: usize = entries.iter().map(|(_, v)| v.size_hint()).sum();
            assert!(!entries.is_empty() && bytes <= FETCH_BYTES, "{} slots, {bytes} bytes", entries.len());
            assert_eq!(entries.len(), FETCH_BYTES / ((1 << 20) + 24), "as many full slots as fit");
        }
        other => panic!("{other:?}"),
    }
}


/// Found by the second review: a restarted transfer keeps the lower of its old hold and the commit point; when the
/// old hold has meanwhile fallen more than HOLD_LAG_FACTOR x max_retained_slots behind, `held()`
/// ignores it, so the restarted transfer has no effective hold at all, and the peer that installs
/// its snapshot finds the log already compacted past it: another whole-store transfer, for ever
/// under a write load (the peer keeps fetching, so the stale hold is never pruned).
#[test]
fn review2_a_restarted_transfer_after_its_hold_went_stale_still_holds_the_log() {
    use crate::compaction::HOLD_LAG_FACTOR;
    let mut r = replica(1, 3);
    r.opts.snapshot_every = 0;
    r.opts.max_retained_slots = 4; // hold bound: 16 slots
    const _: () = assert!(HOLD_LAG_FACTOR * 4 < 20);
    let (retry, resend) = (r.opts.retry_ms, r.opts.snapshot_resend_ms);
    follow(&mut r, 0, 1, 20);
    snapshot_taken(&mut r, 1, 10);
    // Node 3 (fresh) asks from 0: a transfer of the state at 20, hold 20. It fails (the stream
    // stalled, or the peer was busy).
    recv(&mut r, 100, 3, Message::Fetch { from: Slot(0), to: Slot(20) });
    assert!(actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(3) }));
    r.handle(Time(100 + retry), Event::SnapshotSent { to: NodeId(3), delivered: false });
    // Meanwhile 20 slots were committed (beyond the hold's bound); node 3 keeps asking from 0.
    follow(&mut r, 150, 21, 40);
    let mut t = 100 + 2 * retry;
    let mut restarted = false;
    while t <= 100 + retry + resend + retry {
        recv(&mut r, t, 3, Message::Fetch { from: Slot(0), to: Slot(40) });
        restarted |= actions(&mut r).contains(&Action::SendSnapshot { to: NodeId(3) });
        t += retry;
    }
    assert!(restarted, "the transfer was restarted");
    // The restarted transfer sends the state at 40 (the commit point when it started). While it
    // streams, 5 more slots (well inside the bound) are committed and a snapshot at 45 is taken.
    follow(&mut r, t, 41, 45);
    recv(&mut r, t + 1, 3, Message::Fetch { from: Slot(0), to: Slot(45) });
    let _ = actions(&mut r);
    snapshot_taken(&mut r, t + 2, 45);
    r.handle(Time(t + 3), Event::SnapshotSent { to: NodeId(3), delivered: true });
    // Node 3 installed the state at 40 and asks for 41..45.
    recv(&mut r, t + 4, 3, Message::Fetch { from: Slot(41), to: Slot(45) });
    match answers(&mut r).as_slice() {
        [Message::Chosen { entries, .. }] => assert_eq!(entries.len(), 5),
        other => panic!("node 3 at 40 was answered {other:?} (log compacted to {}): another whole-store transfer", r.log.compacted.0),
    }
}
