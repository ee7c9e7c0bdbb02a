//! Wire formats across releases: the earlier releases' request and snapshot bytes (fixtures
//! under `tests/fixtures/v1/`, written by the unmodified 0.1.0 build, cluster version 1, and
//! `tests/fixtures/v2/`, written by the unmodified 0.2.0 build, cluster version 2) must still
//! decode to the same values, re-encode byte for byte, and restore to the same state hash; a
//! store at cluster version 2 must still write 0.2.0's snapshot format (6) byte for byte.

use kvstore::*;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Requests covering every `WriteOp`, `BatchOp`, `Guard` and `CasExpect` variant of the previous
/// release (cluster version 1), with and without a session.
fn v1_requests() -> Vec<Request> {
    let k = |s: &str| s.as_bytes().to_vec();
    let sess = |client: u64, seq: u64| Some(SessionRef { client: ClientId(client), seq });
    let st = |ms: u64| Stamp::new(1, 7, ms);
    let ops = vec![
        (sess(1, 1), WriteOp::Put { key: k("a"), value: k("1"), guard: None }),
        (sess(1, 2), WriteOp::Put { key: k("b"), value: k("22"), guard: Some(Guard::Absent) }),
        (None, WriteOp::Put { key: k("c"), value: vec![0, 0xff, 7], guard: Some(Guard::Version(0)) }),
        (sess(2, 1), WriteOp::Put { key: k("a"), value: k("x"), guard: Some(Guard::Version(1)) }),
        (sess(2, 2), WriteOp::Delete { key: k("b"), guard: Some(Guard::Exists) }),
        (sess(3, 1), WriteOp::Delete { key: k("zz"), guard: None }),
        (
            sess(3, 2),
            WriteOp::PutMany {
                ops: vec![
                    BatchOp::Put { key: k("m/1"), value: k("one"), guard: Some(Guard::VersionNotIn(vec![5, 6])) },
                    BatchOp::Put { key: k("m/2"), value: k("two"), guard: None },
                    BatchOp::Delete { key: k("c"), guard: Some(Guard::Value(vec![0, 0xff, 7])) },
                ],
            },
        ),
        (sess(4, 1), WriteOp::PutMany { ops: vec![BatchOp::Delete { key: k("a"), guard: Some(Guard::VersionIn(vec![1, 2])) }] }),
        (sess(4, 2), WriteOp::Cas { key: k("a"), expected: CasExpect::Value(Some(k("x"))), new: Some(k("y")) }),
        (None, WriteOp::Cas { key: k("n"), expected: CasExpect::Value(None), new: Some(k("new")) }),
        (sess(5, 1), WriteOp::Cas { key: k("n"), expected: CasExpect::Version(10), new: None }),
        (sess(5, 2), WriteOp::Cas { key: k("m/1"), expected: CasExpect::Version(3), new: None }),
        (sess(6, 1), WriteOp::Incr { key: k("ctr"), delta: -5, initial: 100 }),
        (sess(6, 2), WriteOp::Incr { key: k("m/2"), delta: 1, initial: 0 }),
        (sess(7, 1), WriteOp::Append { key: k("log"), value: k("hello ") }),
        (sess(7, 2), WriteOp::Append { key: k("log"), value: k("world") }),
        (sess(8, 1), WriteOp::Put { key: k("big"), value: vec![0xab; 300], guard: Some(Guard::Value(vec![])) }),
    ];
    ops.into_iter().enumerate().map(|(i, (session, op))| Request { session, stamp: st(1_000 + 250 * i as u64), op }).collect()
}

/// The store the previous release reached by applying [`v1_requests`] at indexes 1, 2, ...
/// (and skipping one slot in between): entries, and sessions with stored results, both successes
/// and failures.
fn v1_store() -> Store {
    let mut s = Store::default();
    let mut index = 0;
    for (i, r) in v1_requests().iter().enumerate() {
        index += 1;
        if i == 5 {
            s.skip(index).unwrap();
            index += 1;
        }
        let _ = s.apply(index, &r.encode());
    }
    s
}

/// Write the fixtures. Run only on the previous release's code (they are its bytes); refuses to
/// overwrite existing files.
#[test]
#[ignore]
fn write_v1_fixtures() {
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let reqs: String = v1_requests().iter().map(|r| hex(&r.encode()) + "\n").collect();
    let s = v1_store();
    let snap: Vec<u8> = s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    let results: String = {
        let mut t = Store::default();
        let mut out = String::new();
        let mut index = 0;
        for (i, r) in v1_requests().iter().enumerate() {
            index += 1;
            if i == 5 {
                t.skip(index).unwrap();
                index += 1;
            }
            out += &format!("{:?}\n", t.apply(index, &r.encode()));
        }
        out
    };
    for (name, bytes) in [
        ("requests.hex", reqs.into_bytes()),
        ("snapshot.bin", snap),
        ("state_hash.txt", format!("{}\n", s.state_hash().0).into_bytes()),
        ("results.txt", results.into_bytes()),
    ] {
        let path = dir.join(name);
        assert!(!path.exists(), "{} exists; fixtures are the previous release's bytes, do not overwrite", path.display());
        std::fs::write(path, bytes).unwrap();
    }
}

/// The previous release's state hash of [`v1_store`] (also in `state_hash.txt`), computed by the
/// unmodified build: a version-1 store must keep hashing exactly so.
const V1_STORE_HASH: u64 = 7_269_865_230_500_672_220;
/// The previous release's hash of [`v1_store`] after it applied undecodable bytes (a format-2
/// tag) at index 19: the state a version-1 replica must reach on a gated request.
const V1_STORE_AFTER_MALFORMED_HASH: u64 = 4_200_171_808_046_821_209;
/// The previous release's hash of an empty store.
const EMPTY_STORE_HASH: u64 = 3_363_549_780_392_307_518;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn v1_snapshot() -> Vec<u8> {
    read("snapshot.bin")
}

fn v2_store() -> Store {
    let mut s = v1_store();
    s.set_cluster_version(2);
    let req = Request {
        session: Some(SessionRef { client: ClientId(9), seq: 1 }),
        stamp: Stamp::new(1, 7, 9_000),
        op: WriteOp::DeleteRange { start: b"m/".to_vec(), end: Some(b"m0".to_vec()) },
    };
    let index = s.last_applied() + 1;
    assert_eq!(s.apply(index, &req.encode()), Ok(WriteResult { index, outcome: WriteOutcome::RangeDeleted { deleted: 2 } }));
    s
}

#[test]
fn previous_release_requests_decode_and_reencode_byte_for_byte() {
    let text = String::from_utf8(read("requests.hex")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let want = v1_requests();
    assert_eq!(lines.len(), want.len());
    for (line, want) in lines.iter().zip(&want) {
        let bytes = unhex(line);
        assert_eq!(bytes[0], REQUEST_FORMAT);
        let got = Request::decode(&bytes).unwrap();
        assert_eq!(&got, want);
        assert_eq!(got.op.format(), 1);
        assert_eq!(got.encode(), bytes, "re-encoding changed the bytes of {want:?}");
    }
}

#[test]
fn previous_release_results_are_reproduced() {
    let text = String::from_utf8(read("results.txt")).unwrap();
    let mut s = Store::default();
    let mut index = 0;
    let mut got = String::new();
    for (i, r) in v1_requests().iter().enumerate() {
        index += 1;
        if i == 5 {
            s.skip(index).unwrap();
            index += 1;
        }
        got += &format!("{:?}\n", s.apply(index, &r.encode()));
    }
    assert_eq!(got, text);
    assert_eq!(s, v1_store());
}

#[test]
fn version_1_store_hashes_as_the_previous_release() {
    assert_eq!(Store::default().state_hash().0, EMPTY_STORE_HASH);
    let s = v1_store();
    assert_eq!(s.cluster_version(), 1);
    assert_eq!(s.state_hash().0, V1_STORE_HASH);
    let file: u64 = String::from_utf8(read("state_hash.txt")).unwrap().trim().parse().unwrap();
    assert_eq!(file, V1_STORE_HASH);
}

#[test]
fn previous_release_snapshot_restores_and_reencodes_identically() {
    let bytes = v1_snapshot();
    for chunk in [1, 13, bytes.len()] {
        let r = Store::restore(StoreConfig::default(), bytes.chunks(chunk)).unwrap();
        assert_eq!(r.cluster_version(), 1);
        assert_eq!(r.state_hash().0, V1_STORE_HASH);
        assert_eq!(r, v1_store());
        assert_eq!(r.snapshot(usize::MAX).collect::<Vec<_>>().concat(), bytes, "re-encoding changed the bytes");
        assert_eq!(r.snapshot(7).meta().format, 5);
    }
    let mut d = SnapshotDecoder::new();
    d.push(&bytes).unwrap();
    let meta = d.meta().unwrap();
    assert_eq!((meta.format, meta.cluster_version, meta.last_applied), (OLDEST_SNAPSHOT_FORMAT, 1, 18));
    // The snapshot this build writes for the same store is the fixture, byte for byte.
    assert_eq!(v1_store().snapshot(64).collect::<Vec<_>>().concat(), bytes);
}

#[test]
fn delete_range_round_trips_as_format_2() {
    for op in [
        WriteOp::DeleteRange { start: b"a".to_vec(), end: Some(b"c".to_vec()) },
        WriteOp::DeleteRange { start: vec![], end: None },
        WriteOp::DeleteRange { start: vec![0xff, 0], end: Some(vec![]) },
    ] {
        let req = Request { session: Some(SessionRef { client: ClientId(3), seq: 4 }), stamp: Stamp::new(1, 2, 3), op };
        let bytes = req.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(req.op.format(), 2);
        assert_eq!(Request::decode(&bytes), Ok(req));
    }
}

#[test]
fn tag_1_carrying_delete_range_is_a_body_error_and_unknown_tags_stay_unknown() {
    let req = Request { session: None, stamp: Stamp::default(), op: WriteOp::DeleteRange { start: b"a".to_vec(), end: None } };
    let mut bytes = req.encode();
    bytes[0] = 1;
    assert!(matches!(Request::decode(&bytes), Err(CodecError::Body(_))));
    // A newer tag this build knows (3, leases, from cluster version 3) does not carry it either.
    for tag in 3..=MAX_REQUEST_FORMAT {
        bytes[0] = tag;
        assert!(matches!(Request::decode(&bytes), Err(CodecError::Body(_))), "tag {tag}");
    }
    for tag in [MAX_REQUEST_FORMAT + 1, MAX_REQUEST_FORMAT + 5, 255] {
        bytes[0] = tag;
        assert_eq!(Request::decode(&bytes), Err(CodecError::UnknownFormat { got: tag }));
    }
}

#[test]
fn delete_range_is_gated_by_the_cluster_version() {
    let op = WriteOp::DeleteRange { start: b"m/".to_vec(), end: None };
    // With a session, so that a wrongly applied request would also show in the session table.
    let req = Request { session: Some(SessionRef { client: ClientId(9), seq: 1 }), stamp: Stamp::new(1, 7, 99_000), op };
    let index = v1_store().last_applied() + 1;

    // Version 1, through the bytes and through the decoded request: only the index moves, and
    // the state is exactly the previous release's after bytes it cannot decode.
    for via_bytes in [true, false] {
        let mut s = v1_store();
        let before = s.clone();
        let out = if via_bytes { s.apply(index, &req.encode()) } else { s.apply_request(index, &req) };
        let Err(WriteError::Malformed(msg)) = out else { panic!("expected Malformed, got {out:?}") };
        assert_eq!(msg, "request format 2 needs cluster version 2; the cluster runs version 1");
        assert_eq!(s.last_applied(), index);
        assert_eq!(s.state_hash().0, V1_STORE_AFTER_MALFORMED_HASH);
        assert_eq!(s.len(), before.len());
        assert_eq!(s.log_clock_ms(), before.log_clock_ms());
        assert_eq!(s.sessions(), before.sessions());
        let mut undecodable = before.clone();
        let _ = undecodable.apply(index, &[2, 0xff]);
        assert_eq!(s, undecodable);
        // Out of order stays out of order, gated or not.
        assert_eq!(s.apply_request(index, &req), Err(WriteError::OutOfOrder { last_applied: index, got: index }));
    }

    // Version 2: the range is deleted, and the result is recorded like any other.
    let mut s = v1_store();
    s.set_cluster_version(2);
    assert_eq!(s.keys_in(b"m/", None), vec![b"m/1".to_vec(), b"m/2".to_vec(), b"n".to_vec()]);
    let out = s.apply(index, &req.encode());
    assert_eq!(out, Ok(WriteResult { index, outcome: WriteOutcome::RangeDeleted { deleted: 3 } }));
    assert_eq!(s.keys_in(b"", None), vec![b"a".to_vec(), b"ctr".to_vec(), b"log".to_vec()]);
    assert_eq!(s.sessions().get(ClientId(9)).map(|e| e.result.clone()), Some(out.clone()));
    // A retry is answered from the session table.
    assert_eq!(s.apply_request(index + 1, &req), out);
    // Everything, then nothing left.
    let all = WriteOp::DeleteRange { start: vec![], end: None };
    let r = Request { session: None, stamp: Stamp::new(1, 7, 99_001), op: all };
    assert_eq!(s.apply_request(index + 2, &r), Ok(WriteResult { index: index + 2, outcome: WriteOutcome::RangeDeleted { deleted: 3 } }));
    assert!(s.is_empty());
    assert_eq!(s.data_bytes(), 0);
    assert_eq!(s.apply_request(index + 3, &r), Ok(WriteResult { index: index + 3, outcome: WriteOutcome::RangeDeleted { deleted: 0 } }));
}

#[test]
fn keys_in_is_half_open_and_tolerates_inverted_ranges() {
    let s = v1_store();
    assert_eq!(s.keys_in(b"b", Some(b"log")), vec![b"ctr".to_vec()]);
    assert_eq!(s.keys_in(b"ctr", Some(b"m/2")), vec![b"ctr".to_vec(), b"log".to_vec(), b"m/1".to_vec()]);
    assert_eq!(s.keys_in(b"log", Some(b"log")), Vec::<Vec<u8>>::new());
    assert_eq!(s.keys_in(b"z", Some(b"a")), Vec::<Vec<u8>>::new());
    assert_eq!(s.keys_in(b"", Some(b"")), Vec::<Vec<u8>>::new());
    assert_eq!(s.keys_in(b"", None).len(), s.len());
}

#[test]
fn cluster_version_never_goes_down_and_enters_the_hash_from_2() {
    let mut s = v1_store();
    assert_eq!(s.cluster_version(), 1);
    s.set_cluster_version(0);
    assert_eq!(s.cluster_version(), 1);
    s.set_cluster_version(1);
    assert_eq!(s.state_hash().0, V1_STORE_HASH);
    s.set_cluster_version(2);
    assert_eq!(s.cluster_version(), 2);
    assert_ne!(s.state_hash().0, V1_STORE_HASH);
    let h2 = s.state_hash();
    s.set_cluster_version(1);
    assert_eq!(s.cluster_version(), 2);
    assert_eq!(s.state_hash(), h2);
    const { assert!(MAX_CLUSTER_VERSION >= 2) };
}

#[test]
fn format_6_snapshot_round_trips_the_cluster_version() {
    let s = v2_store();
    let enc = s.snapshot(17);
    let meta = enc.meta();
    // Format 6 at cluster version 2, even in a build whose newest format is later (7 from
    // cluster version 3): 0.2.0 peers read it.
    assert_eq!((meta.format, meta.cluster_version), (6, 2));
    const { assert!(FORMAT_VERSION >= 6) };
    let chunks: Vec<Vec<u8>> = enc.collect();
    let r = Store::restore(StoreConfig::default(), &chunks).unwrap();
    assert_eq!(r.cluster_version(), 2);
    assert_eq!(r.state_hash(), s.state_hash());
    assert_eq!(r, s);
    assert_eq!(r.snapshot(usize::MAX).collect::<Vec<_>>().concat(), chunks.concat());
    let mut d = SnapshotDecoder::new();
    d.push(&chunks.concat()).unwrap();
    assert_eq!(d.meta(), Some(meta));
    // Just upgraded, nothing else changed: format 6 already, and a different hash from version 1.
    let mut up = v1_store();
    up.set_cluster_version(2);
    let bytes = up.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    assert_ne!(bytes, v1_snapshot());
    let r = Store::restore(StoreConfig::default(), [&bytes]).unwrap();
    assert_eq!((r.cluster_version(), r.state_hash()), (2, up.state_hash()));
}

/// The header's format varint sits after the magic, the 4-byte length and the tag.
const FORMAT_AT: usize = 8 + 4 + 1;

#[test]
fn other_snapshot_formats_are_unsupported() {
    // Below the oldest and above the newest format this build reads (7 is read from cluster
    // version 3 on).
    let above = u8::try_from(FORMAT_VERSION + 1).unwrap();
    for (base, got) in [(v1_snapshot(), above), (v1_snapshot(), 4), (v2_store().snapshot(usize::MAX).collect::<Vec<_>>().concat(), above)] {
        let mut bad = base.clone();
        bad[FORMAT_AT] = got;
        let e = Store::restore(StoreConfig::default(), [&bad]).unwrap_err();
        assert_eq!(e, SnapshotError::UnsupportedFormat { got: u16::from(got) });
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("snapshot format {got} is not supported (this build reads formats 5 ")), "{msg}");
        assert!(msg.contains(&FORMAT_VERSION.to_string()), "{msg}");
    }
}

#[test]
fn format_6_headers_are_checked() {
    let s = v2_store();
    let good = s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    // A format-5 stream relabelled 6 lacks the cluster version; a format-6 stream relabelled 5
    // has a byte too many.
    let mut short = v1_snapshot();
    short[FORMAT_AT] = 6;
    assert!(matches!(Store::restore(StoreConfig::default(), [&short]), Err(SnapshotError::Body { what: "header", .. })));
    let mut long = good.clone();
    long[FORMAT_AT] = 5;
    assert!(matches!(Store::restore(StoreConfig::default(), [&long]), Err(SnapshotError::Body { what: "header", .. })));
    // The cluster version is the header's last byte (a one-byte varint): 1 (never written in
    // format 6) and 3 (written in format 7 only) are refused.
    let header_len = u32::from_le_bytes(good[8..12].try_into().unwrap()) as usize;
    let cv_at = 8 + 4 + header_len - 1;
    assert_eq!(good[cv_at], 2);
    for v in [0u8, 1, 3] {
        let mut bad = good.clone();
        bad[cv_at] = v;
        assert!(matches!(Store::restore(StoreConfig::default(), [&bad]), Err(SnapshotError::Invalid(_))), "cluster version {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Release 0.2.0 (cluster version 2): request format 2 (the range delete) and snapshot format 6.
// Fixtures under `tests/fixtures/v2/`, written by the unmodified 0.2.0 build (commit da2b704,
// tag v0.2.0, docs/releases/PREVIOUS). A replica of this build at cluster version 2 shares a
// cluster with 0.2.0 replicas: it must read their bytes and write bytes they read.
// ---------------------------------------------------------------------------------------------

fn v2_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2")
}

fn read_v2(name: &str) -> Vec<u8> {
    std::fs::read(v2_fixture_dir().join(name)).unwrap_or_else(|e| panic!("fixture v2/{name}: {e}"))
}

/// Requests of release 0.2.0 applied at cluster version 2: format-1 writes and format-2 range
/// deletes (with and without a session, bounded and unbounded, one that deletes nothing), plus a
/// CAS that fails (a stored failure in a session).
fn v2_requests() -> Vec<Request> {
    let k = |s: &str| s.as_bytes().to_vec();
    let sess = |client: u64, seq: u64| Some(SessionRef { client: ClientId(client), seq });
    let st = |ms: u64| Stamp::new(2, 11, ms);
    let ops = vec![
        (sess(1, 1), WriteOp::Put { key: k("a"), value: k("1"), guard: None }),
        (sess(1, 2), WriteOp::Put { key: k("b/1"), value: k("one"), guard: Some(Guard::Absent) }),
        (None, WriteOp::Put { key: k("b/2"), value: vec![0, 0xff, 2], guard: None }),
        (
            sess(2, 1),
            WriteOp::PutMany {
                ops: vec![
                    BatchOp::Put { key: k("b/3"), value: k("three"), guard: None },
                    BatchOp::Put { key: k("x/1"), value: k("x1"), guard: None },
                    BatchOp::Put { key: k("x/2"), value: k("x2"), guard: Some(Guard::Absent) },
                ],
            },
        ),
        (sess(2, 2), WriteOp::Incr { key: k("ctr"), delta: 7, initial: 0 }),
        (sess(3, 1), WriteOp::DeleteRange { start: k("b/"), end: Some(k("b0")) }),
        (None, WriteOp::DeleteRange { start: k("x/"), end: None }),
        (sess(3, 2), WriteOp::DeleteRange { start: k("zz"), end: Some(k("zz0")) }),
        (sess(4, 1), WriteOp::Cas { key: k("a"), expected: CasExpect::Value(Some(k("2"))), new: Some(k("3")) }),
        (sess(4, 2), WriteOp::Append { key: k("log"), value: k("after the range deletes") }),
    ];
    ops.into_iter().enumerate().map(|(i, (session, op))| Request { session, stamp: st(5_000 + 300 * i as u64), op }).collect()
}

/// The outputs of applying [`v2_requests`] to a fresh store at cluster version 2, at indexes
/// 1, 2, ... with one skipped slot (a configuration change) after the fourth.
fn v2_apply(s: &mut Store) -> Vec<Output> {
    let mut index = 0;
    let mut out = Vec::new();
    for (i, r) in v2_requests().iter().enumerate() {
        index += 1;
        if i == 4 {
            s.skip(index).unwrap();
            index += 1;
        }
        out.push(s.apply(index, &r.encode()));
    }
    out
}

/// The store release 0.2.0 reached with [`v2_apply`]: founded at cluster version 2 (a cluster of
/// 0.2.0 founders starts there), a few keys left, sessions with stored range-delete results and
/// a stored CAS failure.
fn v2_release_store() -> Store {
    let mut s = Store::default();
    s.set_cluster_version(2);
    v2_apply(&mut s);
    s
}

/// Write the 0.2.0 fixtures. Run only on release 0.2.0's code (they are its bytes:
/// `git worktree add ../wt da2b704`, copy this file there, `cargo test -p kvstore --test formats
/// -- --ignored write_v2_fixtures`); refuses to overwrite existing files.
#[test]
#[ignore]
fn write_v2_fixtures() {
    let dir = v2_fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let reqs: String = v2_requests().iter().map(|r| hex(&r.encode()) + "\n").collect();
    let mut s = Store::default();
    s.set_cluster_version(2);
    let results: String = v2_apply(&mut s).iter().map(|o| format!("{o:?}\n")).collect();
    assert_eq!(s.snapshot(usize::MAX).meta().format, 6);
    let snap: Vec<u8> = s.snapshot(usize::MAX).collect::<Vec<_>>().concat();
    for (name, bytes) in [
        ("requests.hex", reqs.into_bytes()),
        ("snapshot.bin", snap),
        ("state_hash.txt", format!("{}\n", s.state_hash().0).into_bytes()),
        ("results.txt", results.into_bytes()),
    ] {
        let path = dir.join(name);
        assert!(!path.exists(), "{} exists; fixtures are release 0.2.0's bytes, do not overwrite", path.display());
        std::fs::write(path, bytes).unwrap();
    }
}

/// Release 0.2.0's state hash of [`v2_release_store`] (also in `v2/state_hash.txt`): a
/// version-2 store must keep hashing exactly so, or a mixed cluster's replicas disagree.
const V2_STORE_HASH: u64 = 10_683_050_113_110_357_389;

#[test]
fn release_0_2_0_requests_decode_and_reencode_byte_for_byte() {
    let text = String::from_utf8(read_v2("requests.hex")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let want = v2_requests();
    assert_eq!(lines.len(), want.len());
    let mut format_2 = 0;
    for (line, want) in lines.iter().zip(&want) {
        let bytes = unhex(line);
        let got = Request::decode(&bytes).unwrap();
        assert_eq!(&got, want);
        // The tag byte is the request's format: 2 for the range delete, 1 for the rest.
        assert_eq!(bytes[0], got.op.format(), "{want:?}");
        if matches!(got.op, WriteOp::DeleteRange { .. }) {
            assert_eq!(bytes[0], 2);
            format_2 += 1;
        } else {
            assert_eq!(bytes[0], 1);
        }
        assert_eq!(got.encode(), bytes, "re-encoding changed the bytes of {want:?}");
    }
    assert_eq!(format_2, 3);
    // The range delete with a session, pinned in full (the bytes 0.2.0 proposes for
    // `DELETE /v1/kv?prefix=b/` from client 3).
    assert_eq!(
        Request::decode(&unhex(lines[5])),
        Ok(Request {
            session: Some(SessionRef { client: ClientId(3), seq: 1 }),
            stamp: Stamp::new(2, 11, 6_500),
            op: WriteOp::DeleteRange { start: b"b/".to_vec(), end: Some(b"b0".to_vec()) },
        })
    );
}

#[test]
fn release_0_2_0_results_and_state_hash_are_reproduced() {
    let text = String::from_utf8(read_v2("results.txt")).unwrap();
    let mut s = Store::default();
    s.set_cluster_version(2);
    let got: String = v2_apply(&mut s).iter().map(|o| format!("{o:?}\n")).collect();
    assert_eq!(got, text);
    assert_eq!(s.cluster_version(), 2);
    assert_eq!(s.state_hash().0, V2_STORE_HASH);
    let file: u64 = String::from_utf8(read_v2("state_hash.txt")).unwrap().trim().parse().unwrap();
    assert_eq!(file, V2_STORE_HASH);
}

/// The reads a restored 0.2.0 snapshot must answer.
fn assert_v2_reads(r: &Store) {
    let v = |value: &[u8], version: u64| Some(Versioned { value: value.to_vec(), version });
    assert_eq!(r.keys_in(b"", None), vec![b"a".to_vec(), b"ctr".to_vec(), b"log".to_vec()]);
    assert_eq!(r.get(b"a"), v(b"1", 1));
    assert_eq!(r.get(b"ctr"), v(b"7", 6));
    assert_eq!(r.get(b"log"), v(b"after the range deletes", 11));
    for gone in ["b/1", "b/2", "b/3", "x/1", "x/2"] {
        assert_eq!(r.get(gone.as_bytes()), None, "{gone}");
    }
    assert_eq!(r.last_applied(), 11);
    assert_eq!(r.sessions().len(), 4);
    let session = |c: u64| r.sessions().get(ClientId(c)).map(|e| (e.seq, e.result.clone()));
    assert_eq!(session(3), Some((2, Ok(WriteResult { index: 9, outcome: WriteOutcome::RangeDeleted { deleted: 0 } }))));
    assert!(matches!(session(4), Some((2, Ok(_)))));
}

#[test]
fn release_0_2_0_snapshot_restores_with_its_state_hash_and_reads() {
    let bytes = read_v2("snapshot.bin");
    for chunk in [1, 13, 64, bytes.len()] {
        let r = Store::restore(StoreConfig::default(), bytes.chunks(chunk)).unwrap();
        assert_eq!(r.cluster_version(), 2);
        assert_eq!(r.state_hash().0, V2_STORE_HASH);
        assert_eq!(r, v2_release_store());
        assert_v2_reads(&r);
        // A restored version-2 store writes format 6 again, the same bytes.
        assert_eq!(r.snapshot(7).meta().format, 6);
        assert_eq!(r.snapshot(usize::MAX).collect::<Vec<_>>().concat(), bytes, "re-encoding changed the bytes");
    }
    let mut d = SnapshotDecoder::new();
    d.push(&bytes).unwrap();
    let meta = d.meta().unwrap();
    assert_eq!((meta.format, meta.cluster_version, meta.last_applied, meta.entries, meta.sessions), (6, 2, 11, 3, 4));
}

#[test]
fn version_2_store_still_writes_format_6_byte_for_byte() {
    // What a replica of this build at cluster version 2 sends to a 0.2.0 peer (or leaves in its
    // data directory for a downgrade): the 0.2.0 bytes exactly, whatever the chunk size.
    let bytes = read_v2("snapshot.bin");
    let s = v2_release_store();
    assert_eq!(s.state_hash().0, V2_STORE_HASH);
    for chunk in [1, 64, usize::MAX] {
        let enc = s.snapshot(chunk);
        assert_eq!((enc.meta().format, enc.meta().cluster_version), (6, 2));
        assert_eq!(enc.collect::<Vec<_>>().concat(), bytes, "chunks of {chunk} bytes");
    }
}
