//! Focused tests of `Store::apply`: one per command and per error path, each asserting the whole
//! output and the state it leaves behind.

use crate::*;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn req(op: WriteOp) -> Request {
    Request { session: None, stamp: Stamp::new(0, 0, 0), op }
}

fn put(key: &str, value: &str) -> WriteOp {
    WriteOp::Put { key: b(key), value: b(value), guard: None }
}

fn vd(value: &str, version: u64) -> Option<Versioned> {
    Some(Versioned { value: b(value), version })
}

fn ok(index: u64, outcome: WriteOutcome) -> Output {
    Ok(WriteResult { index, outcome })
}

/// A store with a=1 (version 1) and b=x (version 2).
fn seeded() -> Store {
    let mut s = Store::default();
    s.apply_request(1, &req(put("a", "1"))).unwrap();
    s.apply_request(2, &req(put("b", "x"))).unwrap();
    s
}

#[test]
fn put_and_delete_report_previous_versions() {
    let mut s = seeded();
    assert_eq!(s.apply_request(3, &req(put("a", "2"))), ok(3, WriteOutcome::Put { previous_version: Some(1) }));
    assert_eq!(s.get(b"a"), vd("2", 3));
    let del = WriteOp::Delete { key: b("a"), guard: None };
    assert_eq!(s.apply_request(4, &req(del.clone())), ok(4, WriteOutcome::Deleted { previous_version: Some(3) }));
    assert_eq!(s.apply_request(5, &req(del)), ok(5, WriteOutcome::Deleted { previous_version: None }));
    assert_eq!(s.get(b"a"), None);
    assert_eq!((s.len(), s.last_applied(), s.data_bytes()), (1, 5, 2));
}

#[test]
fn failed_guard_reports_the_guard_and_current_value_and_changes_nothing() {
    let mut s = seeded();
    let before = s.clone();
    let op = WriteOp::Put { key: b("a"), value: b("new"), guard: Some(Guard::Version(7)) };
    assert_eq!(
        s.apply_request(3, &req(op)),
        Err(WriteError::GuardFailed { index_in_batch: 0, key: b("a"), guard: Guard::Version(7), current: vd("1", 1) })
    );
    assert_eq!(s.get(b"a"), before.get(b"a"));
    let op = WriteOp::Delete { key: b("zz"), guard: Some(Guard::Exists) };
    assert_eq!(
        s.apply_request(4, &req(op)),
        Err(WriteError::GuardFailed { index_in_batch: 0, key: b("zz"), guard: Guard::Exists, current: None })
    );
    // Version(0) means absent; Value compares bytes.
    let op = WriteOp::Put { key: b("new"), value: b("v"), guard: Some(Guard::Version(0)) };
    assert_eq!(s.apply_request(5, &req(op)), ok(5, WriteOutcome::Put { previous_version: None }));
    let op = WriteOp::Put { key: b("b"), value: b("y"), guard: Some(Guard::Value(b("x"))) };
    assert_eq!(s.apply_request(6, &req(op)), ok(6, WriteOutcome::Put { previous_version: Some(2) }));
}

#[test]
fn batch_is_all_or_nothing_and_names_the_failing_guard() {
    let mut s = seeded();
    let ops = vec![
        BatchOp::Put { key: b("c"), value: b("3"), guard: Some(Guard::Absent) },
        BatchOp::Delete { key: b("a"), guard: Some(Guard::Version(1)) },
        BatchOp::Put { key: b("b"), value: b("y"), guard: Some(Guard::Absent) },
    ];
    assert_eq!(
        s.apply_request(3, &req(WriteOp::PutMany { ops: ops.clone() })),
        Err(WriteError::GuardFailed { index_in_batch: 2, key: b("b"), guard: Guard::Absent, current: vd("x", 2) })
    );
    assert_eq!((s.get(b"c"), s.get(b"a")), (None, vd("1", 1)), "no write of the failed batch applied");

    let mut ops = ops;
    ops[2] = BatchOp::Put { key: b("b"), value: b("y"), guard: Some(Guard::Exists) };
    assert_eq!(s.apply_request(4, &req(WriteOp::PutMany { ops })), ok(4, WriteOutcome::Batch { puts: 2, deletes: 1 }));
    assert_eq!((s.get(b"c"), s.get(b"a"), s.get(b"b")), (vd("3", 4), None, vd("y", 4)));

    let dup = vec![BatchOp::Put { key: b("d"), value: b("1"), guard: None }, BatchOp::Delete { key: b("d"), guard: None }];
    assert_eq!(s.apply_request(5, &req(WriteOp::PutMany { ops: dup })), Err(WriteError::DuplicateKey { key: b("d") }));
    assert_eq!(s.get(b"d"), None);
}

#[test]
fn cas_on_value_and_on_version() {
    let mut s = seeded();
    let cas = |expected, new: Option<&str>| WriteOp::Cas { key: b("a"), expected, new: new.map(b) };
    assert_eq!(
        s.apply_request(3, &req(cas(CasExpect::Value(Some(b("9"))), Some("2")))),
        Err(WriteError::CasFailed { current: vd("1", 1) })
    );
    assert_eq!(
        s.apply_request(4, &req(cas(CasExpect::Value(Some(b("1"))), Some("2")))),
        ok(4, WriteOutcome::Swapped { previous_version: Some(1) })
    );
    assert_eq!(
        s.apply_request(5, &req(cas(CasExpect::Version(1), Some("3")))),
        Err(WriteError::CasFailed { current: vd("2", 4) })
    );
    // A matching version with `new: None` deletes; then Version(0) / Value(None) match absence.
    assert_eq!(s.apply_request(6, &req(cas(CasExpect::Version(4), None))), ok(6, WriteOutcome::Swapped { previous_version: Some(4) }));
    assert_eq!(s.get(b"a"), None);
    assert_eq!(s.apply_request(7, &req(cas(CasExpect::Value(None), Some("n")))), ok(7, WriteOutcome::Swapped { previous_version: None }));
    assert_eq!(s.get(b"a"), vd("n", 7));
}

#[test]
fn incr_uses_initial_rejects_non_integers_and_overflow() {
    let mut s = seeded();
    let incr = |key: &str, delta, initial| WriteOp::Incr { key: b(key), delta, initial };
    assert_eq!(s.apply_request(3, &req(incr("n", 5, 100))), ok(3, WriteOutcome::Incremented { value: 105 }));
    assert_eq!(s.apply_request(4, &req(incr("n", -6, 0))), ok(4, WriteOutcome::Incremented { value: 99 }));
    assert_eq!(s.get(b"n"), vd("99", 4));
    assert_eq!(s.apply_request(5, &req(incr("b", 1, 0))), Err(WriteError::NotAnInteger { key: b("b") }));
    s.apply_request(6, &req(put("m", &i64::MAX.to_string()))).unwrap();
    assert_eq!(s.apply_request(7, &req(incr("m", 1, 0))), Err(WriteError::Overflow { current: i64::MAX, delta: 1 }));
    assert_eq!(s.apply_request(8, &req(incr("o", i64::MIN, -1))), Err(WriteError::Overflow { current: -1, delta: i64::MIN }));
    assert_eq!((s.get(b"m"), s.get(b"o")), (vd(&i64::MAX.to_string(), 6), None));
}

#[test]
fn append_grows_values_up_to_the_value_limit() {
    let mut cfg = StoreConfig::default();
    cfg.limits.max_value_bytes = 4;
    let mut s = Store::new(cfg);
    let app = |v: &str| WriteOp::Append { key: b("k"), value: b(v) };
    assert_eq!(s.apply_request(1, &req(app("ab"))), ok(1, WriteOutcome::Appended { len: 2 }));
    assert_eq!(s.apply_request(2, &req(app("cd"))), ok(2, WriteOutcome::Appended { len: 4 }));
    assert_eq!(
        s.apply_request(3, &req(app("e"))),
        Err(WriteError::TooLarge { what: LimitKind::ValueBytes, limit: 4, got: 5 })
    );
    assert_eq!(s.get(b"k"), vd("abcd", 2));
}

#[test]
fn limits_are_enforced_at_apply_without_partial_writes() {
    let mut cfg = StoreConfig::default();
    cfg.limits.max_batch_ops = 2;
    let mut s = Store::new(cfg);
    let ops = (0..3).map(|i| BatchOp::Put { key: vec![b'a' + i], value: b("v"), guard: None }).collect();
    assert_eq!(
        s.apply_request(1, &req(WriteOp::PutMany { ops })),
        Err(WriteError::TooLarge { what: LimitKind::BatchOps, limit: 2, got: 3 })
    );
    assert!(s.is_empty());
    assert_eq!(s.last_applied(), 1, "a refused write still consumes its slot");
}

#[test]
fn malformed_bytes_consume_the_slot_and_out_of_order_changes_nothing() {
    let mut s = seeded();
    assert!(matches!(s.apply(3, &[1, 0xff, 0xff]), Err(WriteError::Malformed(_))));
    assert_eq!(s.last_applied(), 3);
    let h = s.state_hash();
    assert_eq!(
        s.apply(3, &req(put("z", "1")).encode()),
        Err(WriteError::OutOfOrder { last_applied: 3, got: 3 })
    );
    assert_eq!(s.skip(2), Err(WriteError::OutOfOrder { last_applied: 3, got: 2 }));
    assert_eq!(s.state_hash(), h);
    assert_eq!(s.skip(10), Ok(()));
    assert_eq!(s.apply(11, &req(put("z", "1")).encode()), ok(11, WriteOutcome::Put { previous_version: None }));
}

#[test]
fn session_retry_returns_the_first_result_and_applies_once() {
    let mut s = Store::default();
    let tagged = |seq, op| Request { session: Some(SessionRef { client: ClientId(42), seq }), stamp: Stamp::new(0, 0, 1_000), op };
    let incr = WriteOp::Incr { key: b("n"), delta: 1, initial: 0 };
    let first = s.apply_request(1, &tagged(1, incr.clone()));
    assert_eq!(first, ok(1, WriteOutcome::Incremented { value: 1 }));
    // The retry lands in a later slot (e.g. re-proposed by a new leader): same answer, no apply.
    assert_eq!(s.apply_request(2, &tagged(1, incr.clone())), first);
    assert_eq!(s.get(b"n"), vd("1", 1));
    // Failures are results too: a retry of a failed guard sees the same failure.
    let guarded = WriteOp::Put { key: b("n"), value: b("x"), guard: Some(Guard::Absent) };
    let failed = s.apply_request(3, &tagged(2, guarded.clone()));
    assert!(matches!(failed, Err(WriteError::GuardFailed { .. })));
    s.apply_request(4, &req(WriteOp::Delete { key: b("n"), guard: None })).unwrap();
    assert_eq!(s.apply_request(5, &tagged(2, guarded)), failed, "not re-evaluated though the guard would hold now");
    assert_eq!(s.apply_request(6, &tagged(1, incr)), Err(WriteError::SessionStale { latest_seq: 2 }));
    assert_eq!(s.get(b"n"), None);
}

#[test]
fn sessions_expire_by_log_time_only() {
    let mut s = Store::new(StoreConfig { session_ttl_ms: 1_000, ..StoreConfig::default() });
    let tagged = |client, seq, stamp_ms| Request {
        session: Some(SessionRef { client: ClientId(client), seq }),
        stamp: Stamp::new(1, 1, stamp_ms),
        op: WriteOp::Incr { key: b("n"), delta: 1, initial: 0 },
    };
    s.apply_request(1, &tagged(1, 1, 10_000)).unwrap();
    // Other traffic moves the log clock past the TTL; client 1's next request finds it expired.
    s.apply_request(2, &tagged(2, 1, 11_001)).unwrap();
    assert_eq!(s.log_clock_ms(), 1_001);
    assert_eq!(s.sessions().len(), 1);
    assert_eq!(s.apply_request(3, &tagged(1, 2, 11_001)), Err(WriteError::SessionExpired { client: ClientId(1) }));
    assert_eq!(s.get(b"n"), vd("2", 2));
    // A request from another proposer (its clock far behind) moves nothing.
    s.apply_request(4, &req(put("x", "1"))).unwrap();
    assert_eq!(s.log_clock_ms(), 1_001);
}

#[test]
fn a_reused_idempotency_key_with_another_request_is_refused() {
    // The driver maps an Idempotency-Key to one session with seq 1. The example: PUT a
    // with key K, then PUT b, and DELETE a, with the same K. Neither may be answered with the
    // first request's result, and neither may apply.
    let mut s = Store::default();
    let k = |op| Request { session: Some(SessionRef { client: ClientId(0xfeed | 1 << 63), seq: 1 }), stamp: Stamp::default(), op };
    let first = s.apply_request(1, &k(put("a", "1")));
    assert_eq!(first, ok(1, WriteOutcome::Put { previous_version: None }));
    let mismatch = Err(WriteError::RequestMismatch { client: ClientId(0xfeed | 1 << 63), seq: 1 });
    assert_eq!(s.apply_request(2, &k(put("b", "1"))), mismatch);
    assert_eq!(s.apply_request(3, &k(WriteOp::Delete { key: b("a"), guard: None })), mismatch);
    assert_eq!(s.get(b"b"), None);
    assert_eq!(s.get(b"a"), vd("1", 1));
    // The true retry still gets the first result.
    assert_eq!(s.apply_request(4, &k(put("a", "1"))), first);
}

#[test]
fn a_full_session_table_refuses_new_sessions_without_applying() {
    let mut s = Store::new(StoreConfig { max_sessions: 2, session_ttl_ms: 1_000, ..StoreConfig::default() });
    let tagged = |client, seq, ms, op| Request { session: Some(SessionRef { client: ClientId(client), seq }), stamp: Stamp::new(1, 1, ms), op };
    s.apply_request(1, &tagged(1, 1, 0, put("a", "1"))).unwrap();
    s.apply_request(2, &tagged(2, 1, 100, put("b", "1"))).unwrap();
    let full = s.apply_request(3, &tagged(3, 1, 200, put("c", "1")));
    assert_eq!(full, Err(WriteError::SessionsFull { max_sessions: 2, retry_after_ms: 801 }));
    assert_eq!(s.get(b"c"), None);
    assert_eq!(s.sessions().len(), 2);
    // The live sessions still deduplicate.
    assert_eq!(s.apply_request(4, &tagged(1, 1, 300, put("a", "1"))), ok(1, WriteOutcome::Put { previous_version: None }));
    // Once one expires (client 2, last active at 100, at log time 1_101), the new session fits.
    assert!(s.apply_request(5, &tagged(3, 1, 1_101, put("c", "1"))).is_ok());
    assert!(s.sessions().get(ClientId(2)).is_none());
    assert_eq!(s.get(b"c"), vd("1", 5));
}

#[test]
fn idempotency_keys_map_to_seq_one_sessions() {
    // The driver hashes an Idempotency-Key into a ClientId and always sends seq 1.
    let mut s = Store::default();
    let r = Request { session: Some(SessionRef { client: ClientId(0xfeed), seq: 1 }), stamp: Stamp::new(0, 0, 5), op: put("k", "v") };
    let first = s.apply(1, &r.encode());
    assert_eq!(s.apply(2, &r.encode()), first);
    assert_eq!(s.get(b"k"), vd("v", 1));
}

#[test]
fn same_commands_give_same_hash_and_differences_show() {
    let a = seeded();
    let b2 = seeded();
    assert_eq!(a.state_hash(), b2.state_hash());
    let mut c = seeded();
    c.apply_request(3, &req(put("a", "1"))).unwrap();
    assert_ne!(a.state_hash(), c.state_hash(), "same value, new version must differ");
}

#[test]
fn incremental_state_hash_equals_a_rebuild_from_the_entries() {
    // The data's part of the hash is a running sum; a store rebuilt from a snapshot (which sums
    // from scratch) and a clone taken mid-way must agree with it after puts, overwrites, deletes.
    let mut s = Store::default();
    let mut i = 0;
    for round in 0..3u8 {
        for k in 0..50u8 {
            i += 1;
            let key = vec![b'k', k];
            let op = if (k + round) % 5 == 0 { WriteOp::Delete { key, guard: None } } else { WriteOp::Put { key, value: vec![round; k as usize], guard: None } };
            let _ = s.apply_request(i, &req(op));
        }
    }
    let clone = s.clone();
    let chunks: Vec<Vec<u8>> = s.snapshot(97).collect();
    let rebuilt = Store::restore(*s.config(), &chunks).expect("restores");
    assert_eq!(rebuilt.state_hash(), s.state_hash());
    assert_eq!(rebuilt, s);
    // Writing to the original leaves the clone (structurally shared) as it was.
    i += 1;
    let _ = s.apply_request(i, &req(put("new", "v")));
    assert_eq!(clone.state_hash(), rebuilt.state_hash());
    assert_ne!(clone.state_hash(), s.state_hash());
    assert!(clone.get(b"new").is_none());
}

#[test]
fn keys_inline_and_on_the_heap_order_as_bytes_everywhere() {
    // Keys up to INLINE_KEY_BYTES live in the map's nodes, longer ones on the heap; lookups,
    // ranges, cursors, deletes and snapshots must not tell the two apart. Keys around the limit
    // share prefixes so that inline and heap keys interleave in the order.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for len in [1, INLINE_KEY_BYTES - 1, INLINE_KEY_BYTES, INLINE_KEY_BYTES + 1, 3 * INLINE_KEY_BYTES] {
        for last in [0u8, b'a', 0xff] {
            let mut k = vec![b'p'; len];
            k[len - 1] = last;
            keys.push(k);
        }
    }
    let mut s = Store::default();
    for (i, k) in keys.iter().enumerate() {
        let op = WriteOp::Put { key: k.clone(), value: k.clone(), guard: None };
        s.apply_request(i as u64 + 1, &req(op)).unwrap();
    }
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    for k in &sorted {
        assert_eq!(s.get(k).map(|v| v.value), Some(k.clone()), "{k:?}");
    }
    // A range in pages of 4 walks every key once, in byte order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let q = RangeQuery { start: Vec::new(), end: None, prefix: None, limit: 4, cursor, keys_only: true };
        let page = s.range(&q);
        seen.extend(page.entries.iter().map(|e| e.key.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, sorted);
    // Delete one of each kind; a snapshot restores the same store.
    let n = keys.len() as u64;
    for (j, k) in [&sorted[1], &sorted[sorted.len() - 1]].into_iter().enumerate() {
        s.apply_request(n + 1 + j as u64, &req(WriteOp::Delete { key: k.clone(), guard: None })).unwrap();
        assert!(s.get(k).is_none());
    }
    let chunks: Vec<Vec<u8>> = s.snapshot(64).collect();
    let rebuilt = Store::restore(*s.config(), &chunks).expect("restores");
    assert_eq!(rebuilt, s);
    assert_eq!(rebuilt.state_hash(), s.state_hash());
    assert_eq!(rebuilt.len(), sorted.len() - 2);
}

#[test]
fn the_sessions_running_hash_equals_a_walk_after_records_retries_and_expiry() {
    // The state hash reads the session table's running sum; it must equal the sum over a walk of
    // the entries after every kind of change: a new session, a next request, a retry (which
    // refreshes the activity time), a mismatch (no change) and expiry.
    let cfg = StoreConfig { session_ttl_ms: 1_000, max_clock_step_ms: 1_000, ..StoreConfig::default() };
    let mut s = Store::new(cfg);
    let walk = |s: &Store| {
        let mut h = crate::hash::StateHasher::new();
        for (c, e) in s.sessions().iter() {
            h.session(*c, e);
        }
        let mut t = crate::hash::StateHasher::new();
        t.session_sum(s.sessions().hash_sum());
        (h.finish(), t.finish())
    };
    let mut i = 0;
    let mut at = |s: &mut Store, client: u64, seq: u64, ms: u64, key: &str| {
        i += 1;
        let r = Request { session: Some(SessionRef { client: ClientId(client), seq }), stamp: Stamp::new(1, 1, ms), op: put(key, "v") };
        let _ = s.apply_request(i, &r);
    };
    at(&mut s, 1, 1, 0, "a");
    at(&mut s, 2, 1, 10, "b");
    at(&mut s, 1, 2, 20, "c");
    at(&mut s, 2, 1, 30, "b"); // a retry: activity refreshed
    at(&mut s, 2, 1, 40, "x"); // same number, another request: 422, nothing changes
    let (walked, kept) = walk(&s);
    assert_eq!(walked, kept);
    assert_eq!(s.sessions().len(), 2);
    at(&mut s, 3, 1, 1_025, "d"); // client 1 (last active at 20) expires, client 2 (30) does not
    assert_eq!(s.sessions().len(), 2);
    let (walked, kept) = walk(&s);
    assert_eq!(walked, kept);
    // And the store's hash survives a snapshot (the decoder sums the records it reads).
    let chunks: Vec<Vec<u8>> = s.snapshot(50).collect();
    let rebuilt = Store::restore(*s.config(), &chunks).expect("restores");
    assert_eq!(rebuilt.state_hash(), s.state_hash());
    assert_eq!(rebuilt, s);
}
