//! Wire formats across releases: the previous release's request and snapshot bytes (fixtures
//! under `tests/fixtures/v1/`, written by the unmodified previous build) must still decode to the
//! same values, re-encode byte for byte, and restore to the same state hash.

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
