//! quickcheck properties: the store against a plain `BTreeMap` model, snapshot round trips,
//! exactly-once retries, and decoders that never panic.
//!
//! The model below is written from the command semantics in the docs, independently of the store's
//! code: a `BTreeMap<key, (value, version)>` and one match per command.

use kvstore::*;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::collections::{BTreeMap, BTreeSet};

const KEYS: &[&str] = &["a", "b", "c", "d", "e", ""];
const VALUES: &[&str] = &["", "0", "1", "-5", "x", "9223372036854775807", "-9223372036854775808", "longer-value"];
const MAX_VALUE: usize = 16;
const MAX_OPS: usize = 3;

fn config() -> StoreConfig {
    let mut c = StoreConfig::default();
    c.limits.max_value_bytes = MAX_VALUE;
    c.limits.max_batch_ops = MAX_OPS;
    c
}

fn pick(g: &mut Gen, from: &[&str]) -> Vec<u8> {
    g.choose(from).unwrap().as_bytes().to_vec()
}

fn key(g: &mut Gen) -> Vec<u8> {
    // Empty keys are rare: they only test the error path.
    if u8::arbitrary(g) % 20 == 0 { Vec::new() } else { pick(g, &KEYS[..5]) }
}

fn guard(g: &mut Gen) -> Option<Guard> {
    let versions = |g: &mut Gen| (0..u8::arbitrary(g) % 3).map(|_| u64::arbitrary(g) % 8).collect();
    match u8::arbitrary(g) % 8 {
        0 => Some(Guard::Version(u64::arbitrary(g) % 8)),
        1 => Some(Guard::Exists),
        2 => Some(Guard::Absent),
        3 => Some(Guard::Value(pick(g, VALUES))),
        4 => Some(Guard::VersionIn(versions(g))),
        5 => Some(Guard::VersionNotIn(versions(g))),
        _ => None,
    }
}

/// A random write, biased towards a small key and value space so commands interact.
#[derive(Debug, Clone)]
struct Op(WriteOp);

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let op = match u8::arbitrary(g) % 8 {
            0 | 1 => WriteOp::Put { key: key(g), value: pick(g, VALUES), guard: guard(g) },
            2 => WriteOp::Delete { key: key(g), guard: guard(g) },
            3 => {
                let n = usize::arbitrary(g) % (MAX_OPS + 2);
                let ops = (0..n)
                    .map(|_| {
                        if bool::arbitrary(g) {
                            BatchOp::Put { key: key(g), value: pick(g, VALUES), guard: guard(g) }
                        } else {
                            BatchOp::Delete { key: key(g), guard: guard(g) }
                        }
                    })
                    .collect();
                WriteOp::PutMany { ops }
            }
            4 => {
                let expected = if bool::arbitrary(g) {
                    CasExpect::Version(u64::arbitrary(g) % 8)
                } else {
                    CasExpect::Value(if bool::arbitrary(g) { Some(pick(g, VALUES)) } else { None })
                };
                let new = if u8::arbitrary(g) % 4 == 0 { None } else { Some(pick(g, VALUES)) };
                WriteOp::Cas { key: key(g), expected, new }
            }
            5 => {
                let delta = *g.choose(&[1, -1, 7, i64::MAX, i64::MIN]).unwrap();
                WriteOp::Incr { key: key(g), delta, initial: *g.choose(&[0, 10, i64::MAX]).unwrap() }
            }
            6 => WriteOp::Append { key: key(g), value: pick(g, VALUES) },
            _ => {
                // Bounds from a space around the keys: empty, inverted and unbounded ranges too.
                const BOUNDS: &[&str] = &["", "a", "b", "bb", "d", "f"];
                let end = if u8::arbitrary(g) % 3 == 0 { None } else { Some(pick(g, BOUNDS)) };
                WriteOp::DeleteRange { start: pick(g, BOUNDS), end }
            }
        };
        Op(op)
    }
}

/// The model: a map and the command semantics, from the docs.
struct Model {
    data: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    /// Operations of a format above this are refused as malformed, changing nothing.
    cluster_version: u32,
}

impl Default for Model {
    fn default() -> Self {
        Model { data: BTreeMap::new(), cluster_version: 1 }
    }
}

impl Model {
    fn current(&self, key: &[u8]) -> Option<Versioned> {
        self.data.get(key).map(|(v, ver)| Versioned { value: v.clone(), version: *ver })
    }

    fn guard_ok(&self, guard: &Option<Guard>, key: &[u8]) -> bool {
        let cur = self.data.get(key);
        match guard {
            None => true,
            Some(Guard::Version(0)) | Some(Guard::Absent) => cur.is_none(),
            Some(Guard::Version(v)) => cur.is_some_and(|c| c.1 == *v),
            Some(Guard::Exists) => cur.is_some(),
            Some(Guard::Value(want)) => cur.is_some_and(|c| &c.0 == want),
            Some(Guard::VersionIn(vs)) => cur.is_some_and(|c| vs.contains(&c.1)),
            Some(Guard::VersionNotIn(vs)) => !cur.is_some_and(|c| vs.contains(&c.1)),
        }
    }

    fn too_large(what: LimitKind, limit: usize, got: usize) -> WriteError {
        WriteError::TooLarge { what, limit: limit as u64, got: got as u64 }
    }

    fn limits(op: &WriteOp) -> Result<(), WriteError> {
        let check = |i: u32, key: &[u8], value: Option<&Vec<u8>>| {
            if key.is_empty() {
                return Err(WriteError::EmptyKey { index_in_batch: i });
            }
            match value {
                Some(v) if v.len() > MAX_VALUE => Err(Self::too_large(LimitKind::ValueBytes, MAX_VALUE, v.len())),
                _ => Ok(()),
            }
        };
        match op {
            WriteOp::Put { key, value, .. } | WriteOp::Append { key, value } => check(0, key, Some(value)),
            WriteOp::Delete { key, .. } | WriteOp::Incr { key, .. } => check(0, key, None),
            WriteOp::Cas { key, new, .. } => check(0, key, new.as_ref()),
            // Bounds may be empty; the generated ones are far below the key limit.
            WriteOp::DeleteRange { .. } => Ok(()),
            WriteOp::PutMany { ops } => {
                if ops.len() > MAX_OPS {
                    return Err(Self::too_large(LimitKind::BatchOps, MAX_OPS, ops.len()));
                }
                // A key named twice is refused with the limits, before the guards are looked
                // at (so it never takes a slot), at the first repeat in batch order.
                let mut seen = BTreeSet::new();
                for (i, op) in ops.iter().enumerate() {
                    let (key, value) = match op {
                        BatchOp::Put { key, value, .. } => (key, Some(value)),
                        BatchOp::Delete { key, .. } => (key, None),
                    };
                    check(i as u32, key, None)?;
                    if !seen.insert(key.as_slice()) {
                        return Err(WriteError::DuplicateKey { key: key.clone() });
                    }
                    check(i as u32, key, value)?;
                }
                Ok(())
            }
        }
    }

    fn apply(&mut self, index: u64, op: &WriteOp) -> Output {
        let format = if matches!(op, WriteOp::DeleteRange { .. }) { 2 } else { 1 };
        if format > self.cluster_version {
            return Err(WriteError::Malformed(format!(
                "request format {format} needs cluster version {format}; the cluster runs version {}",
                self.cluster_version
            )));
        }
        Self::limits(op)?;
        let done = |outcome| Ok(WriteResult { index, outcome });
        let guard_failed = |m: &Model, i: usize, key: &Vec<u8>, g: &Option<Guard>| WriteError::GuardFailed {
            index_in_batch: i as u32,
            key: key.clone(),
            guard: g.clone().unwrap(),
            current: m.current(key),
        };
        match op {
            WriteOp::Put { key, value, guard } => {
                if !self.guard_ok(guard, key) {
                    return Err(guard_failed(self, 0, key, guard));
                }
                let prev = self.data.insert(key.clone(), (value.clone(), index)).map(|p| p.1);
                done(WriteOutcome::Put { previous_version: prev })
            }
            WriteOp::Delete { key, guard } => {
                if !self.guard_ok(guard, key) {
                    return Err(guard_failed(self, 0, key, guard));
                }
                done(WriteOutcome::Deleted { previous_version: self.data.remove(key).map(|p| p.1) })
            }
            WriteOp::PutMany { ops } => {
                let keys: BTreeSet<&[u8]> = ops.iter().map(|o| o.key()).collect();
                if keys.len() != ops.len() {
                    let mut seen = BTreeSet::new();
                    let dup = ops.iter().map(|o| o.key()).find(|k| !seen.insert(*k)).unwrap();
                    return Err(WriteError::DuplicateKey { key: dup.to_vec() });
                }
                for (i, o) in ops.iter().enumerate() {
                    let (BatchOp::Put { key, guard, .. } | BatchOp::Delete { key, guard }) = o;
                    if !self.guard_ok(guard, key) {
                        return Err(guard_failed(self, i, key, guard));
                    }
                }
                let (mut puts, mut deletes) = (0, 0);
                for o in ops {
                    match o {
                        BatchOp::Put { key, value, .. } => {
                            self.data.insert(key.clone(), (value.clone(), index));
                            puts += 1;
                        }
                        BatchOp::Delete { key, .. } => {
                            self.data.remove(key);
                            deletes += 1;
                        }
                    }
                }
                done(WriteOutcome::Batch { puts, deletes })
            }
            WriteOp::Cas { key, expected, new } => {
                let cur = self.data.get(key).cloned();
                let ok = match expected {
                    CasExpect::Value(v) => cur.as_ref().map(|c| &c.0) == v.as_ref(),
                    CasExpect::Version(v) => cur.as_ref().map_or(0, |c| c.1) == *v,
                };
                if !ok {
                    return Err(WriteError::CasFailed { current: self.current(key) });
                }
                match new {
                    Some(v) => self.data.insert(key.clone(), (v.clone(), index)),
                    None => self.data.remove(key),
                };
                done(WriteOutcome::Swapped { previous_version: cur.map(|c| c.1) })
            }
            WriteOp::Incr { key, delta, initial } => {
                let current = match self.data.get(key) {
                    None => *initial,
                    Some((v, _)) => match String::from_utf8(v.clone()).ok().and_then(|s| s.parse::<i64>().ok()) {
                        Some(n) => n,
                        None => return Err(WriteError::NotAnInteger { key: key.clone() }),
                    },
                };
                let Some(value) = current.checked_add(*delta) else {
                    return Err(WriteError::Overflow { current, delta: *delta });
                };
                self.data.insert(key.clone(), (value.to_string().into_bytes(), index));
                done(WriteOutcome::Incremented { value })
            }
            WriteOp::Append { key, value } => {
                let mut v = self.data.get(key).map(|c| c.0.clone()).unwrap_or_default();
                v.extend_from_slice(value);
                if v.len() > MAX_VALUE {
                    return Err(Self::too_large(LimitKind::ValueBytes, MAX_VALUE, v.len()));
                }
                let len = v.len() as u64;
                self.data.insert(key.clone(), (v, index));
                done(WriteOutcome::Appended { len })
            }
            WriteOp::DeleteRange { start, end } => {
                let doomed: Vec<Vec<u8>> = self
                    .data
                    .keys()
                    .filter(|k| k.as_slice() >= start.as_slice() && end.as_ref().is_none_or(|e| k.as_slice() < e.as_slice()))
                    .cloned()
                    .collect();
                for k in &doomed {
                    self.data.remove(k);
                }
                done(WriteOutcome::RangeDeleted { deleted: doomed.len() as u64 })
            }
        }
    }
}

/// Every (key, value, version) of the store, via the public range API.
fn dump(s: &Store) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
    let page = s.range(&RangeQuery::default());
    assert_eq!(page.next_cursor, None, "test stores fit one page");
    page.entries.into_iter().map(|e| (e.key, (e.value.unwrap(), e.version))).collect()
}

fn req(op: &WriteOp, session: Option<SessionRef>) -> Request {
    Request { session, stamp: Stamp::new(0, 0, 0), op: op.clone() }
}

fn qc() -> QuickCheck {
    QuickCheck::new().tests(500).rng(Gen::new(60))
}

/// Results and state equal the model's, command by command, with occasional no-op slots.
#[test]
fn store_matches_btreemap_model() {
    fn prop(ops: Vec<Op>, gaps: Vec<bool>, v2: bool) -> bool {
        let (mut store, mut model) = (Store::new(config()), Model::default());
        if v2 {
            store.set_cluster_version(2);
            model.cluster_version = 2;
        }
        let mut index = 0;
        for (i, Op(op)) in ops.iter().enumerate() {
            if gaps.get(i).copied().unwrap_or(false) {
                index += 1;
                store.skip(index).unwrap();
            }
            index += 1;
            let got = store.apply(index, &req(op, None).encode());
            let want = model.apply(index, op);
            assert_eq!(got, want, "command {i}: {op:?}");
        }
        assert_eq!(dump(&store), model.data);
        assert_eq!(store.len(), model.data.len());
        assert_eq!(store.last_applied(), index);
        let bytes: usize = model.data.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
        store.data_bytes() == bytes as u64
    }
    qc().quickcheck(prop as fn(Vec<Op>, Vec<bool>, bool) -> bool);
}

/// Snapshot then restore gives an equal store and hash, at any chunk size; and the restored store
/// goes on to behave identically.
#[test]
fn snapshot_restore_is_identity() {
    fn prop(ops: Vec<Op>, chunk: u16, more: Vec<Op>, upgrade_at: Option<u8>) -> bool {
        let mut s = Store::new(config());
        for (i, Op(op)) in ops.iter().enumerate() {
            if upgrade_at.is_some_and(|u| usize::from(u) % (ops.len() + 1) == i) {
                s.set_cluster_version(2);
            }
            let session = Some(SessionRef { client: ClientId(i as u64 % 4), seq: i as u64 / 4 + 1 });
            let _ = s.apply_request(i as u64 + 1, &Request { session, stamp: Stamp::new(0, 0, i as u64 * 100), op: op.clone() });
        }
        let chunks: Vec<Vec<u8>> = s.snapshot(chunk as usize + 1).collect();
        let mut r = Store::restore(config(), &chunks).unwrap();
        assert_eq!(r.cluster_version(), s.cluster_version());
        assert_eq!(r.state_hash(), s.state_hash());
        assert_eq!(r, s);
        let base = s.last_applied();
        for (i, Op(op)) in more.iter().enumerate() {
            let q = req(op, Some(SessionRef { client: ClientId(i as u64 % 5), seq: 1_000 + i as u64 }));
            assert_eq!(r.apply_request(base + 1 + i as u64, &q), s.apply_request(base + 1 + i as u64, &q));
        }
        r.state_hash() == s.state_hash()
    }
    qc().quickcheck(prop as fn(Vec<Op>, u16, Vec<Op>, Option<u8>) -> bool);
}

/// Retried commands apply once: a retry returns the first result and leaves the data unchanged;
/// an older sequence number is stale.
#[test]
fn retries_apply_once() {
    fn prop(ops: Vec<Op>, retries: Vec<u8>) -> bool {
        // At cluster version 2, so every generated operation is of a format the store applies
        // (a gated one is answered before the session table is consulted, never recorded).
        let mut s = Store::new(config());
        s.set_cluster_version(2);
        let mut model = Model { cluster_version: 2, ..Model::default() };
        let mut index = 0;
        let mut first: BTreeMap<u64, (u64, WriteOp, Output)> = BTreeMap::new(); // client -> latest (seq, op, output)
        for (i, Op(op)) in ops.iter().enumerate() {
            let client = i as u64 % 3;
            let seq = first.get(&client).map_or(1, |f| f.0 + 1);
            index += 1;
            let out = s.apply_request(index, &req(op, Some(SessionRef { client: ClientId(client), seq })));
            assert_eq!(out, model.apply(index, op));
            first.insert(client, (seq, op.clone(), out));
            // Retry some client's latest request, maybe several times, in later slots.
            let r = retries.get(i).copied().unwrap_or(0);
            for _ in 0..r % 3 {
                let c = u64::from(r) % 3;
                let Some((seq, retried, out)) = first.get(&c).cloned() else { continue };
                let before = dump(&s);
                index += 1;
                assert_eq!(s.apply_request(index, &req(&retried, Some(SessionRef { client: ClientId(c), seq }))), out);
                assert_eq!(dump(&s), before);
                if seq > 1 {
                    index += 1;
                    let stale = s.apply_request(index, &req(&retried, Some(SessionRef { client: ClientId(c), seq: seq - 1 })));
                    assert_eq!(stale, Err(WriteError::SessionStale { latest_seq: seq }));
                }
            }
        }
        dump(&s) == model.data
    }
    qc().quickcheck(prop as fn(Vec<Op>, Vec<u8>) -> bool);
}

/// Two replicas fed the same bytes agree on every output and on the hash.
#[test]
fn replicas_agree() {
    fn prop(ops: Vec<Op>) -> bool {
        let (mut a, mut b) = (Store::new(config()), Store::new(config()));
        for (i, Op(op)) in ops.iter().enumerate() {
            let bytes = Request { session: Some(SessionRef { client: ClientId(i as u64 % 2), seq: i as u64 + 1 }), stamp: Stamp::new(0, 0, i as u64), op: op.clone() }.encode();
            assert_eq!(a.apply(i as u64 + 1, &bytes), b.apply(i as u64 + 1, &bytes));
        }
        a.state_hash() == b.state_hash()
    }
    qc().quickcheck(prop as fn(Vec<Op>) -> bool);
}

/// Encoding round-trips, and arbitrary bytes never panic either decoder.
#[test]
fn codecs_round_trip_and_never_panic() {
    fn prop(op: Op, junk: Vec<u8>, cut: usize) -> bool {
        let r = Request { session: Some(SessionRef { client: ClientId(1), seq: 2 }), stamp: Stamp::new(0, 0, 3), op: op.0 };
        let bytes = r.encode();
        assert_eq!(Request::decode(&bytes), Ok(r));
        let _ = Request::decode(&junk);
        let _ = Request::decode(&bytes[..cut % bytes.len()]);
        let mut d = SnapshotDecoder::new();
        let mut framed = kvstore::snapshot::MAGIC.to_vec();
        framed.extend_from_slice(&junk);
        let _ = d.push(&framed);
        d.finish().is_err()
    }
    qc().quickcheck(prop as fn(Op, Vec<u8>, usize) -> bool);
}
