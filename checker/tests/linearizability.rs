//! Stories for the whole check: the anomalies a broken replicated store produces are rejected,
//! and the freedom a correct one has (concurrency, unknown outcomes, failures) is accepted.

use checker::{check, check_with, Budget, CheckOptions, CheckResult, Op, OpKind, Outcome};
use quickcheck_macros::quickcheck;

fn ok(client: u64, kind: OpKind, invoke: u64, complete: u64) -> Op {
    Op::new(client, "k", kind, invoke, Some(complete), Outcome::Ok)
}
fn write(v: &str) -> OpKind {
    OpKind::Write { value: v.into() }
}
fn read(v: Option<&str>) -> OpKind {
    OpKind::Read {
        result: v.map(str::to_string),
    }
}
fn incr(delta: i64, result: i64) -> OpKind {
    OpKind::Incr {
        delta,
        result: Some(result),
    }
}
fn append(v: &str) -> OpKind {
    OpKind::Append { value: v.into() }
}

#[test]
fn stale_read_is_rejected() {
    // A deposed leader answers from its old state: the write of "2" finished before the read
    // began, yet the read returns "1".
    let h = vec![
        ok(1, write("1"), 0, 10),
        ok(1, write("2"), 20, 30),
        ok(2, read(Some("1")), 40, 50),
    ];
    let v = check(&h);
    assert_eq!(
        (v.ok, v.result, v.failing_key.as_deref()),
        (false, CheckResult::Violation, Some("k"))
    );
    assert!(
        v.explanation.contains("2 of 3 operations linearize"),
        "{}",
        v.explanation
    );
    assert!(v.explanation.contains("read -> \"1\""), "{}", v.explanation);
}

#[test]
fn lost_write_is_rejected() {
    // An acknowledged write vanishes (a new leader lost the slot): later reads never see it.
    let h = vec![
        ok(1, write("a"), 0, 10),
        ok(2, write("b"), 20, 30),
        ok(3, read(Some("a")), 40, 50),
        ok(3, read(Some("a")), 60, 70),
    ];
    assert_eq!(check(&h).result, CheckResult::Violation);
    // An acknowledged append missing from the final value is lost too.
    let h = vec![
        ok(1, append("x"), 0, 10),
        ok(2, append("y"), 5, 15),
        ok(3, read(Some("x")), 20, 30),
    ];
    assert_eq!(check(&h).result, CheckResult::Violation);
}

#[test]
fn write_applied_twice_is_rejected() {
    // A retried increment applied twice (the session table failed): +1 by client 1, +1 by
    // client 2, but the value reached 3.
    let h = vec![
        ok(1, incr(1, 1), 0, 10),
        ok(2, incr(1, 2), 20, 30),
        ok(3, read(Some("3")), 40, 50),
    ];
    assert_eq!(check(&h).result, CheckResult::Violation);
    // The same for an append retried after a leader change: "x" appears twice.
    let h = vec![ok(1, append("x"), 0, 10), ok(2, read(Some("xx")), 20, 30)];
    assert_eq!(check(&h).result, CheckResult::Violation);
    // And a duplicate increment visible in another increment's result.
    let h = vec![ok(1, incr(5, 5), 0, 10), ok(2, incr(1, 11), 20, 30)];
    assert_eq!(check(&h).result, CheckResult::Violation);
}

#[test]
fn correct_concurrent_history_is_accepted() {
    // Three clients overlap: the reads may be ordered either side of the concurrent writes.
    let h = vec![
        ok(1, write("1"), 0, 100),
        ok(2, write("2"), 10, 60),
        ok(3, read(Some("2")), 20, 70),
        ok(3, read(Some("1")), 80, 120),
        ok(
            2,
            OpKind::Cas {
                expected: Some("1".into()),
                new: "3".into(),
            },
            110,
            130,
        ),
        ok(1, incr(2, 5), 140, 150),
        ok(3, append("x"), 160, 170),
        ok(2, read(Some("5x")), 180, 190),
        ok(1, OpKind::Delete, 200, 210),
        ok(3, read(None), 220, 230),
    ];
    let v = check(&h);
    assert!(v.ok, "{v}");
    assert_eq!((v.result, v.ops_checked), (CheckResult::Linearizable, 10));
}

#[test]
fn unknown_outcome_may_take_effect_late_or_never() {
    // A write timed out (no completion). It may take effect long after it was sent...
    let lost = Op::new(1, "k", write("late"), 0, None, Outcome::Unknown);
    let late = vec![
        lost.clone(),
        ok(2, read(None), 100, 110),
        ok(2, read(Some("late")), 200, 210),
    ];
    assert!(check(&late).ok);
    // ...or never.
    let never = vec![
        lost.clone(),
        ok(2, read(None), 100, 110),
        ok(2, read(None), 200, 210),
    ];
    assert!(check(&never).ok);
    // But not before it was sent.
    let early = vec![
        ok(2, read(Some("late")), 0, 5),
        Op::new(1, "k", write("late"), 10, None, Outcome::Unknown),
    ];
    assert_eq!(check(&early).result, CheckResult::Violation);
    // And only once: it cannot be seen, then unseen, then seen again.
    let flicker = vec![
        lost,
        ok(2, read(Some("late")), 100, 110),
        ok(3, write("other"), 120, 130),
        ok(2, read(Some("late")), 200, 210),
    ];
    assert_eq!(check(&flicker).result, CheckResult::Violation);
}

#[test]
fn failed_operations_take_no_effect() {
    // A definitely failed write (503 before proposing) must never be seen.
    let h = vec![
        Op::new(1, "k", write("ghost"), 0, Some(10), Outcome::Fail),
        ok(2, read(Some("ghost")), 20, 30),
    ];
    assert_eq!(check(&h).result, CheckResult::Violation);
    // A failed CAS saw a different value: here the value was "1" all along, so it cannot fail.
    let h = vec![
        ok(1, write("1"), 0, 10),
        Op::new(
            2,
            "k",
            OpKind::Cas {
                expected: Some("1".into()),
                new: "2".into(),
            },
            20,
            Some(30),
            Outcome::Fail,
        ),
    ];
    assert_eq!(check(&h).result, CheckResult::Violation);
    // With a concurrent write of "3", the CAS may have failed against it.
    let mut h2 = h.clone();
    h2.push(ok(3, write("3"), 15, 25));
    assert!(check(&h2).ok);
}

#[test]
fn keys_are_checked_separately_and_the_bad_one_is_named() {
    let mut h = vec![ok(1, write("1"), 0, 10)];
    h.push(Op::new(
        2,
        "other",
        read(Some("x")),
        0,
        Some(10),
        Outcome::Ok,
    ));
    let v = check(&h);
    assert_eq!(v.failing_key.as_deref(), Some("other"));
    // The read on "other" does not see the write on "k".
    h[1].kind = read(None);
    assert!(check(&h).ok);
}

#[test]
fn sequential_violation_fails_the_whole_check() {
    // A stale sequential read is fine; one older than the client's own write is not.
    let w = ok(1, write("1"), 0, 10).with_index(5);
    let stale_ok = vec![w.clone(), ok(2, read(None), 20, 30).sequential(3)];
    assert!(check(&stale_ok).ok);
    let own = vec![w, ok(1, read(None), 20, 30).sequential(4)];
    let v = check(&own);
    assert_eq!(
        (v.result, v.failing_key.as_deref()),
        (CheckResult::Violation, Some("k"))
    );
    assert!(
        v.explanation.contains("went back in time"),
        "{}",
        v.explanation
    );
}

#[test]
fn pathological_history_hits_the_budget() {
    // Many concurrent unknown increments and a read no combination of them explains: the search
    // must explore subsets, and a tiny budget stops it with Unknown rather than hanging.
    let mut h: Vec<Op> = (0..20)
        .map(|c| {
            Op::new(
                c,
                "k",
                OpKind::Incr {
                    delta: 1 << c,
                    result: None,
                },
                0,
                None,
                Outcome::Unknown,
            )
        })
        .collect();
    h.push(ok(99, read(Some("-1")), 10, 20));
    let small = CheckOptions {
        budget: Budget {
            max_steps: 10_000,
            timeout: None,
        },
    };
    let v = check_with(&h, &small);
    assert_eq!((v.ok, v.result), (false, CheckResult::Unknown));
}

/// A random history of a correct store: each op takes effect at a random instant inside a
/// random interval, applied to a plain map in that order. It must always be accepted.
#[quickcheck]
fn histories_of_a_correct_store_are_accepted(seed: Vec<(u8, u8, u8, u8)>) -> bool {
    let mut value: Option<String> = None;
    let mut h = Vec::new();
    for (n, &(client, what, before, after)) in seed.iter().take(40).enumerate() {
        let point = (n as u64 + 1) * 100; // linearization points in order
        let (invoke, complete) = (
            point - u64::from(before % 100),
            point + u64::from(after % 100),
        );
        let kind = match what % 5 {
            0 => read(value.as_deref()),
            1 => {
                value = Some(n.to_string());
                write(&n.to_string())
            }
            2 => {
                let next = value.as_deref().unwrap_or("").to_string() + "a";
                value = Some(next);
                append("a")
            }
            3 => {
                value = None;
                OpKind::Delete
            }
            _ => {
                // An unknown write that did take effect here.
                value = Some(format!("u{n}"));
                h.push(Op::new(
                    u64::from(client % 4),
                    "k",
                    write(&format!("u{n}")),
                    invoke,
                    None,
                    Outcome::Unknown,
                ));
                continue;
            }
        };
        h.push(Op::new(
            u64::from(client % 4),
            "k",
            kind,
            invoke,
            Some(complete),
            Outcome::Ok,
        ));
    }
    check(&h).ok
}
