//! Stories for the sequential-read check: each rule accepted when kept and rejected when broken.

use super::*;

fn write(client: u64, v: &str, t: (u64, u64), index: u64) -> Op {
    Op::new(
        client,
        "k",
        OpKind::Write { value: v.into() },
        t.0,
        Some(t.1),
        Outcome::Ok,
    )
    .with_index(index)
}
fn seq_read(client: u64, v: Option<&str>, t: (u64, u64), index: u64) -> Op {
    Op::new(
        client,
        "k",
        OpKind::Read {
            result: v.map(str::to_string),
        },
        t.0,
        Some(t.1),
        Outcome::Ok,
    )
    .sequential(index)
}

#[test]
fn stale_but_monotone_reads_are_fine() {
    // Client 1 wrote "a" at slot 5; client 2 wrote "b" at slot 9. Client 1 then reads from a
    // lagging replica at index 7: it sees its own write, not yet "b". Sequential allows that.
    let h = vec![
        write(1, "a", (0, 10), 5),
        write(2, "b", (11, 20), 9),
        seq_read(1, Some("a"), (21, 30), 7),
        seq_read(1, Some("b"), (31, 40), 9),
    ];
    let report = check_sequential(&h);
    assert_eq!(
        report,
        SeqReport {
            reads_checked: 2,
            violations: vec![]
        }
    );
}

#[test]
fn index_going_back_is_rejected() {
    // The client saw index 9, then a replica answered from index 7: time went backwards.
    let h = vec![
        write(2, "b", (0, 5), 9),
        seq_read(1, Some("b"), (10, 20), 9),
        seq_read(1, None, (21, 30), 7),
    ];
    let report = check_sequential(&h);
    assert_eq!(
        report.violations,
        vec![SeqViolation::IndexWentBack {
            read: h[2].clone(),
            earlier: h[1].clone()
        }]
    );
}

#[test]
fn read_older_than_own_write_is_rejected() {
    // The client's write was applied at slot 5; a read at index 4 cannot reflect it.
    let h = vec![write(1, "a", (0, 10), 5), seq_read(1, None, (11, 20), 4)];
    let report = check_sequential(&h);
    assert_eq!(
        report.violations,
        vec![SeqViolation::IndexWentBack {
            read: h[1].clone(),
            earlier: h[0].clone()
        }]
    );
}

#[test]
fn wrong_value_at_a_later_index_is_rejected_unless_someone_wrote() {
    // Index 6 >= 5, but the read returns nil though no other write to k sits in slots 6..=6.
    let h = vec![write(1, "a", (0, 10), 5), seq_read(1, None, (11, 20), 6)];
    let report = check_sequential(&h);
    assert_eq!(
        report.violations,
        vec![SeqViolation::MissedOwnWrite {
            read: h[1].clone(),
            write: h[0].clone(),
            expected: Some("a".into())
        }]
    );
    // A delete by client 2 applied at slot 6 explains the nil.
    let mut h2 = h.clone();
    h2.push(Op::new(2, "k", OpKind::Delete, 0, Some(15), Outcome::Ok).with_index(6));
    assert!(check_sequential(&h2).ok());
    // So does a write of unknown outcome and unknown slot, invoked before the read returned.
    let mut h3 = h.clone();
    h3.push(Op::new(2, "k", OpKind::Delete, 12, None, Outcome::Unknown));
    assert!(check_sequential(&h3).ok());
    // A definitely failed one does not.
    let mut h4 = h;
    h4.push(Op::new(2, "k", OpKind::Delete, 12, Some(13), Outcome::Fail));
    assert!(!check_sequential(&h4).ok());
}

#[test]
fn sequential_read_without_index_is_rejected() {
    let mut read = seq_read(1, None, (0, 1), 0);
    read.index = None;
    let report = check_sequential(std::slice::from_ref(&read));
    assert_eq!(report.violations, vec![SeqViolation::MissingIndex { read }]);
}

#[test]
fn linearizable_reads_are_not_checked_here_but_bound_later_ones() {
    // A linearizable read at index 8 (not itself checked), then a sequential read at 7: back.
    let lin = Op::new(
        1,
        "k",
        OpKind::Read { result: None },
        0,
        Some(5),
        Outcome::Ok,
    )
    .with_index(8);
    let h = vec![lin.clone(), seq_read(1, None, (6, 9), 7)];
    let report = check_sequential(&h);
    assert_eq!(report.reads_checked, 1);
    assert_eq!(
        report.violations,
        vec![SeqViolation::IndexWentBack {
            read: h[1].clone(),
            earlier: lin
        }]
    );
}
