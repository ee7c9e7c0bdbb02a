//! Watches, told by their outputs (the `Net` of `node_test.rs`): a watch is answered from the
//! history at once or woken by the apply that records the first matching change; the history is
//! bounded and restarts at a snapshot; a cancelled or removed watcher hears nothing more.

use crate::node_test::{put, Net, Seen};
use crate::*;
use kvstore::{BatchOp, ClientId, SessionRef, WriteOp};
use paxos::{NodeId, SnapshotMeta};

fn spec(key: &str, prefix: bool, after: u64) -> WatchSpec {
    WatchSpec { key: key.as_bytes().to_vec(), prefix, after }
}

fn set(index: u64, key: &str, value: &str) -> Change {
    Change { index, key: key.as_bytes().to_vec(), value: Some(value.as_bytes().to_vec()), version: index }
}

fn gone(index: u64, key: &str) -> Change {
    Change { index, key: key.as_bytes().to_vec(), value: None, version: index }
}

fn changes(index: u64, changes: Vec<Change>) -> Result<Changes, WatchError> {
    Ok(Changes { changes, index })
}

/// A one-node cluster that leads, with `writes` applied at indexes 1, 2, ...
fn leader_with(writes: &[WriteOp], tune: impl Fn(&mut NodeSettings)) -> Net {
    let mut net = Net::new(1, tune);
    net.elect(1);
    for (i, op) in writes.iter().enumerate() {
        net.input(1, Input::Write { token: 1000 + i as u64, session: None, op: op.clone(), forward: true });
        net.stabilize();
    }
    net.take(1);
    net
}

#[test]
fn a_watch_is_answered_from_the_history_or_woken_by_the_apply_that_matches() {
    let mut net = leader_with(&[put("a", "1"), put("b/x", "2")], |_| {});

    // Changes already in the history answer at once: "a" changed at 1, after index 0.
    net.input(1, Input::Watch { token: 1, spec: spec("a", false, 0) });
    assert_eq!(net.take(1), vec![Seen::Watch(1, changes(2, vec![set(1, "a", "1")]))]);

    // Nothing under "b/" after 2 yet: the watcher waits, and a write to another key does not
    // wake it (the write's own answer is all that comes out).
    net.input(1, Input::Watch { token: 2, spec: spec("b/", true, 2) });
    net.input(1, Input::Watch { token: 3, spec: spec("a", false, 1) });
    assert_eq!(net.take(1), vec![]);
    assert_eq!(net.node(1).status().watchers, 2);
    net.input(1, Input::Write { token: 10, session: None, op: put("c", "3"), forward: true });
    net.stabilize();
    assert!(matches!(net.take(1).as_slice(), [Seen::Write(10, Ok(_))]));

    // The apply of "b/y" at 4 wakes the prefix watcher, right after the write's own answer.
    net.input(1, Input::Write { token: 11, session: None, op: put("b/y", "4"), forward: true });
    net.stabilize();
    let seen = net.take(1);
    assert!(matches!(seen[0], Seen::Write(11, Ok(_))));
    assert_eq!(seen[1..], [Seen::Watch(2, changes(4, vec![set(4, "b/y", "4")]))]);

    // A deletion is a change too (value `None`); a batch that also deletes a missing key
    // records only what it changed.
    let batch = WriteOp::PutMany {
        ops: vec![BatchOp::Delete { key: b"a".to_vec(), guard: None }, BatchOp::Delete { key: b"zz".to_vec(), guard: None }],
    };
    net.input(1, Input::Write { token: 12, session: None, op: batch, forward: true });
    net.stabilize();
    let seen = net.take(1);
    assert_eq!(seen[1..], [Seen::Watch(3, changes(5, vec![gone(5, "a")]))]);
    assert_eq!(net.node(1).status().watchers, 0);

    // A watch far in the past that is still held returns every change in order.
    net.input(1, Input::Watch { token: 4, spec: spec("", true, 0) });
    let all = vec![set(1, "a", "1"), set(2, "b/x", "2"), set(3, "c", "3"), set(4, "b/y", "4"), gone(5, "a")];
    assert_eq!(net.take(1), vec![Seen::Watch(4, changes(5, all))]);
}

#[test]
fn a_retried_session_write_that_applies_nothing_records_no_change() {
    let mut net = leader_with(&[], |_| {});
    let session = SessionRef { client: ClientId(7), seq: 1 };
    for token in [1, 2] {
        net.input(1, Input::Write { token, session: Some(session), op: put("k", "v"), forward: true });
        net.stabilize();
    }
    net.take(1);
    // The retry took index 2 but answered from the session table: only index 1 changed "k".
    net.input(1, Input::Watch { token: 3, spec: spec("k", false, 0) });
    assert_eq!(net.take(1), vec![Seen::Watch(3, changes(2, vec![set(1, "k", "v")]))]);
}

#[test]
fn every_kind_of_write_records_exactly_what_it_changed() {
    // The history is built from each operation and its output (no lookups for most kinds):
    // failures, no-op deletes and unmatched swaps record nothing; everything else records the
    // value the key now holds, or its deletion.
    let b = |s: &str| s.as_bytes().to_vec();
    let writes = [
        put("a", "1"),                                                                                  // 1
        WriteOp::Delete { key: b("missing"), guard: None },                                             // 2: nothing
        WriteOp::Put { key: b("a"), value: b("x"), guard: Some(kvstore::Guard::Absent) },               // 3: guard fails
        WriteOp::Cas { key: b("a"), expected: kvstore::CasExpect::Value(Some(b("no"))), new: Some(b("y")) }, // 4: fails
        WriteOp::Cas { key: b("a"), expected: kvstore::CasExpect::Version(1), new: Some(b("2")) },      // 5
        WriteOp::Incr { key: b("n"), delta: 5, initial: 10 },                                           // 6: "15"
        WriteOp::Incr { key: b("a"), delta: i64::MAX, initial: 0 },                                     // 7: overflow
        WriteOp::Append { key: b("a"), value: b("3") },                                                 // 8: "23"
        WriteOp::Cas { key: b("a"), expected: kvstore::CasExpect::Version(8), new: None },              // 9: deleted
        WriteOp::Cas { key: b("a"), expected: kvstore::CasExpect::Value(None), new: None },             // 10: absent stays absent
        WriteOp::Delete { key: b("n"), guard: None },                                                   // 11: deleted
        WriteOp::PutMany { ops: vec![BatchOp::Put { key: b("p"), value: b("4"), guard: None }, BatchOp::Delete { key: b("q"), guard: None }] }, // 12
    ];
    let mut net = leader_with(&writes, |_| {});
    net.input(1, Input::Watch { token: 1, spec: spec("", true, 0) });
    let want = vec![set(1, "a", "1"), set(5, "a", "2"), set(6, "n", "15"), set(8, "a", "23"), gone(9, "a"), gone(11, "n"), set(12, "p", "4")];
    assert_eq!(net.take(1), vec![Seen::Watch(1, changes(12, want))]);
}

#[test]
fn a_cancelled_watcher_hears_nothing_and_a_removed_node_refuses_watches() {
    let mut net = leader_with(&[], |_| {});
    net.input(1, Input::Watch { token: 1, spec: spec("k", false, 0) });
    net.input(1, Input::Cancel(1));
    assert_eq!(net.node(1).status().watchers, 0);
    net.input(1, Input::Write { token: 2, session: None, op: put("k", "v"), forward: true });
    net.stabilize();
    assert!(matches!(net.take(1).as_slice(), [Seen::Write(2, Ok(_))]), "no answer to the cancelled watch");

    // A waiting watcher hears of the removal; a later watch is refused with it.
    net.input(1, Input::Watch { token: 3, spec: spec("k", false, 1) });
    let r = Removal { epoch: 2, source: "etcd" };
    net.input(1, Input::Removed(r));
    assert_eq!(net.take(1), vec![Seen::Removed(r), Seen::Watch(3, Err(WatchError::Removed(r))), Seen::Serving(false)]);
    net.input(1, Input::Watch { token: 4, spec: spec("k", false, 0) });
    assert_eq!(net.take(1), vec![Seen::Watch(4, Err(WatchError::Removed(r)))]);
}

#[test]
fn the_history_is_bounded_and_an_index_before_it_is_compacted() {
    // Room for two changes: after three writes, the first is gone.
    let mut net = leader_with(&[put("a", "1"), put("a", "2"), put("a", "3")], |s| s.watch_history_changes = 2);
    assert_eq!(net.node(1).status().history_oldest_index, 2);
    net.input(1, Input::Watch { token: 1, spec: spec("a", false, 0) });
    assert_eq!(net.take(1), vec![Seen::Watch(1, Err(WatchError::Compacted { oldest_index: 2 }))]);
    net.input(1, Input::Watch { token: 2, spec: spec("a", false, 1) });
    assert_eq!(net.take(1), vec![Seen::Watch(2, changes(3, vec![set(2, "a", "2"), set(3, "a", "3")]))]);

    // The byte bound evicts too (each change here is 2 bytes), and the watcher cap refuses.
    let mut net = leader_with(&[put("a", "1"), put("b", "2")], |s| {
        s.watch_history_bytes = 3;
        s.max_watchers = 1;
    });
    assert_eq!(net.node(1).status().history_oldest_index, 2);
    net.input(1, Input::Watch { token: 1, spec: spec("x", false, 2) });
    net.input(1, Input::Watch { token: 2, spec: spec("y", false, 2) });
    assert_eq!(net.take(1), vec![Seen::Watch(2, Err(WatchError::TooMany { limit: 1 }))]);
}

#[test]
fn a_snapshot_install_restarts_the_history_and_compacts_the_watchers_it_skipped() {
    let mut net = Net::new(3, |_| {});
    net.elect(1);
    for id in 1..=3 {
        net.take(id);
    }
    // Node 3 misses two writes; a watcher there waits for "k" after 0, another after 5.
    net.cut.insert(NodeId(3));
    for token in 1..=2 {
        net.input(1, Input::Write { token, session: None, op: put("k", "v"), forward: true });
        net.stabilize();
    }
    net.input(3, Input::Watch { token: 7, spec: spec("k", false, 0) });
    net.input(3, Input::Watch { token: 8, spec: spec("k", false, 5) });
    net.take(3);

    // It installs node 1's snapshot (store index 2): the changes 1 and 2 are inside it, not in
    // the history, so the first watcher is answered `Compacted` from 3; the second still waits.
    let meta = SnapshotMeta { last_slot: net.node(1).applied_slot(), config: net.node(1).config().clone() };
    let store = Box::new(net.node(1).store().clone());
    net.input(3, Input::InstallSnapshot { meta, store });
    let seen: Vec<Seen> = net.take(3).into_iter().filter(|s| matches!(s, Seen::Watch(..))).collect();
    assert_eq!(seen, vec![Seen::Watch(7, Err(WatchError::Compacted { oldest_index: 3 }))]);
    let st = net.status(3);
    assert_eq!((st.watchers, st.history_changes, st.history_oldest_index), (1, 0, 3));
}

/// A node that starts from a store (a durable restart, a restore) holds none of the changes
/// inside it: a watch from below the store's index is `Compacted`, not left waiting for a next
/// change as if there had been none (a client resuming a stream after a restart would otherwise
/// miss every change up to the restart without a word).
#[test]
fn a_node_started_from_a_store_compacts_watches_from_below_it() {
    let net = leader_with(&[put("a", "1"), put("a", "2")], |_| {});
    let store = net.node(1).store().clone();
    let config = net.node(1).config().clone();
    let me = *config.members().next().expect("one member");
    let disk = paxos::Recovered::from_snapshot(SnapshotMeta { last_slot: net.node(1).applied_slot(), config: config.clone() });
    let mut node = Node::recover(NodeSettings::new(me, 2, Some(config)), paxos::Time(0), store, disk);
    node.handle(paxos::Time(1), Input::Watch { token: 1, spec: spec("a", false, 0) });
    let answers: Vec<_> = std::iter::from_fn(|| node.poll_output())
        .filter_map(|o| match o {
            Output::WatchDone { token, result } => Some((token, result)),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![(1, Err(WatchError::Compacted { oldest_index: 3 }))]);
    assert_eq!(node.status().history_oldest_index, 3);
}

#[test]
fn a_progress_probe_answers_at_once_with_the_applied_index_or_the_changes_it_would_skip() {
    // "a" changed at 1, "b" at 2 and 3.
    let mut net = leader_with(&[put("a", "1"), put("b", "2"), put("b", "3")], |s| s.max_watchers = 1);
    // A stream on "a" that delivered index 1: nothing for it in (1, 3], so it may announce 3.
    net.input(1, Input::WatchProgress { token: 1, spec: spec("a", false, 1) });
    assert_eq!(net.take(1), vec![Seen::Watch(1, changes(3, vec![]))]);
    // A stream on "b" that delivered only index 2 may not: the probe names the change at 3.
    net.input(1, Input::WatchProgress { token: 2, spec: spec("b", false, 2) });
    assert_eq!(net.take(1), vec![Seen::Watch(2, changes(3, vec![set(3, "b", "3")]))]);
    // A probe never waits and takes no watcher slot: with the one slot taken, probes still answer.
    net.input(1, Input::Watch { token: 3, spec: spec("a", false, 1) });
    net.input(1, Input::WatchProgress { token: 4, spec: spec("a", false, 1) });
    assert_eq!(net.take(1), vec![Seen::Watch(4, changes(3, vec![]))]);
    assert_eq!(net.node(1).status().watchers, 1);
    // After a write to "a", the probe from 1 names it, and the waiting watcher got it.
    net.input(1, Input::Write { token: 10, session: None, op: put("a", "4"), forward: true });
    net.stabilize();
    let seen = net.take(1);
    assert_eq!(seen[1..], [Seen::Watch(3, changes(4, vec![set(4, "a", "4")]))]);
    net.input(1, Input::WatchProgress { token: 5, spec: spec("a", false, 1) });
    assert_eq!(net.take(1), vec![Seen::Watch(5, changes(4, vec![set(4, "a", "4")]))]);
    net.input(1, Input::WatchProgress { token: 6, spec: spec("a", false, 4) });
    assert_eq!(net.take(1), vec![Seen::Watch(6, changes(4, vec![]))]);

    // Compacted and removed as a watch is.
    let mut net = leader_with(&[put("a", "1"), put("a", "2"), put("a", "3")], |s| s.watch_history_changes = 2);
    net.input(1, Input::WatchProgress { token: 1, spec: spec("z", false, 0) });
    assert_eq!(net.take(1), vec![Seen::Watch(1, Err(WatchError::Compacted { oldest_index: 2 }))]);
    let r = Removal { epoch: 2, source: "etcd" };
    net.input(1, Input::Removed(r));
    net.take(1);
    net.input(1, Input::WatchProgress { token: 2, spec: spec("z", false, 3) });
    assert_eq!(net.take(1), vec![Seen::Watch(2, Err(WatchError::Removed(r)))]);
}
