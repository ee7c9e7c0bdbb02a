//! The verdict: every check's outcome assembled into pass / fail / invalid, with the reasons.
//! Pure: the run gathers the evidence, this module judges it (and is unit-tested).
//!
//! A run **fails** on a linearizability or sequential violation, an inconclusive check, a lost
//! or doubled increment, replicas whose final states differ, or a planned fault that could not
//! be injected or verified. It is **invalid** (also a non-zero exit) when too few operations
//! completed, or some operation type never completed: such a run proves nothing.

use crate::faults::{FaultRecord, FaultStatus};
use crate::workload::OpType;
use checker::{Op, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet};

/// The increments on one counter key against its final value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterCheck {
    /// The key.
    pub key: String,
    /// Acknowledged increments (delta 1 each).
    pub acked: u64,
    /// Increments with an unknown outcome.
    pub unknown: u64,
    /// The value the final linearizable read returned (absent: 0).
    pub final_value: Option<i64>,
    /// Acknowledged increments that returned a value another one also returned.
    pub duplicate_results: Vec<i64>,
}

impl CounterCheck {
    /// The problem, if any: a lost acknowledged increment, one applied twice, or a value no
    /// combination of increments explains.
    pub fn problem(&self) -> Option<String> {
        let Some(v) = self.final_value else {
            return Some(format!("counter {}: the final value is not an integer", self.key));
        };
        if !self.duplicate_results.is_empty() {
            return Some(format!(
                "counter {}: acknowledged increments returned the same value twice ({:?}): one was applied twice or two were merged",
                self.key, self.duplicate_results
            ));
        }
        let (lo, hi) = (self.acked as i64, (self.acked + self.unknown) as i64);
        if v < lo {
            return Some(format!("counter {}: final value {v} < {lo} acknowledged increments: an acknowledged write was lost", self.key));
        }
        if v > hi {
            return Some(format!(
                "counter {}: final value {v} > {lo} acknowledged + {} unknown increments: something was applied twice",
                self.key, self.unknown
            ));
        }
        None
    }
}

/// Count the increments on `key` in `ops` and compare with `final_value` (a read's string).
pub fn counter_check(key: &str, ops: &[Op], final_value: Option<&str>) -> CounterCheck {
    let mut acked = 0;
    let mut unknown = 0;
    let mut results = BTreeSet::new();
    let mut duplicate_results = Vec::new();
    for op in ops.iter().filter(|o| o.key == key) {
        if let OpKind::Incr { result, .. } = &op.kind {
            match op.outcome {
                Outcome::Ok => {
                    acked += 1;
                    if let Some(r) = result {
                        if !results.insert(*r) {
                            duplicate_results.push(*r);
                        }
                    }
                }
                Outcome::Unknown => unknown += 1,
                Outcome::Fail => {}
            }
        }
    }
    let final_value = match final_value {
        None => Some(0),
        Some(s) => s.parse().ok(),
    };
    CounterCheck { key: key.to_string(), acked, unknown, final_value, duplicate_results }
}

/// One replica's final state: the index it reflects and every `(key, value, version)`.
pub type ReplicaState = (u64, Vec<(String, String, u64)>);

/// Compare the replicas' final states; each difference is one line.
pub fn compare_states(states: &BTreeMap<u64, Result<ReplicaState, String>>) -> Vec<String> {
    let mut out = Vec::new();
    let mut reference: Option<(u64, &ReplicaState)> = None;
    for (id, s) in states {
        match s {
            Err(e) => out.push(format!("synod-{id}: no final state ({e})")),
            Ok(st) => match reference {
                None => reference = Some((*id, st)),
                Some((rid, r)) => {
                    if r.1 != st.1 {
                        let a: BTreeSet<_> = r.1.iter().collect();
                        let b: BTreeSet<_> = st.1.iter().collect();
                        let only_a: Vec<_> = a.difference(&b).take(3).collect();
                        let only_b: Vec<_> = b.difference(&a).take(3).collect();
                        out.push(format!(
                            "synod-{id} (index {}) differs from synod-{rid} (index {}): synod-{rid} has {only_a:?}, synod-{id} has {only_b:?}",
                            st.0, r.0
                        ));
                    }
                }
            },
        }
    }
    out
}

/// Everything the verdict is judged on.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// The linearizability check passed.
    pub linearizable: bool,
    /// It ran out of budget (neither pass nor violation).
    pub inconclusive: bool,
    /// Its explanation when not linearizable.
    pub lin_explanation: String,
    /// Sequential-read violations, one line each.
    pub seq_violations: Vec<String>,
    /// The counter checks.
    pub counters: Vec<CounterCheck>,
    /// Keys whose final read got no answer.
    pub final_read_errors: Vec<String>,
    /// Replica state differences.
    pub state_mismatches: Vec<String>,
    /// The faults as they happened.
    pub faults: Vec<FaultRecord>,
    /// Definite answers per op type.
    pub completed: BTreeMap<OpType, u64>,
    /// The fewest completed ops for a valid run.
    pub min_ops: u64,
    /// Fail when join/leave is not supported.
    pub require_membership: bool,
}

/// The judgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Everything held.
    pub pass: bool,
    /// The run proves nothing (too little load).
    pub invalid: bool,
    /// Why it did not pass.
    pub problems: Vec<String>,
    /// Things to know that do not fail the run.
    pub notes: Vec<String>,
}

/// Judge the evidence (see the module docs).
pub fn assess(e: &Evidence) -> Verdict {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    if e.inconclusive {
        problems.push(format!("linearizability check inconclusive (budget exhausted): {}", e.lin_explanation));
    } else if !e.linearizable {
        problems.push(format!("NOT LINEARIZABLE: {}", e.lin_explanation));
    }
    problems.extend(e.seq_violations.iter().map(|v| format!("sequential read violation: {v}")));
    problems.extend(e.counters.iter().filter_map(CounterCheck::problem));
    problems.extend(e.final_read_errors.iter().map(|v| format!("final read failed: {v}")));
    problems.extend(e.state_mismatches.iter().map(|v| format!("replica states differ: {v}")));
    for f in &e.faults {
        match f.status {
            FaultStatus::Done => {}
            FaultStatus::Failed => problems.push(format!("fault {} could not be injected or verified: {}", f.kind, f.evidence.join("; "))),
            FaultStatus::NotSupported if e.require_membership => {
                problems.push(format!("fault {} not supported by the cluster: {}", f.kind, f.evidence.join("; ")))
            }
            FaultStatus::NotSupported => notes.push(format!("fault {} NOT SUPPORTED (not injected): {}", f.kind, f.evidence.join("; "))),
        }
    }
    let total: u64 = e.completed.values().sum();
    let mut invalid = false;
    if total < e.min_ops {
        invalid = true;
        problems.push(format!("INVALID RUN: only {total} operations completed (at least {} needed)", e.min_ops));
    }
    for t in [OpType::ReadLin, OpType::ReadSeq, OpType::Write, OpType::Cas, OpType::Incr] {
        if e.completed.get(&t).copied().unwrap_or(0) == 0 {
            invalid = true;
            problems.push(format!("INVALID RUN: no {} operation completed", t.name()));
        }
    }
    Verdict { pass: problems.is_empty(), invalid, problems, notes }
}

impl Verdict {
    /// The one summary line the run ends with.
    pub fn summary(&self, seed: u64, ops: u64, faults_done: usize, faults_planned: usize) -> String {
        let word = if self.pass {
            "PASS"
        } else if self.invalid {
            "INVALID"
        } else {
            "FAIL"
        };
        format!(
            "synod-chaos {word}: seed {seed}, {ops} ops completed, {faults_done}/{faults_planned} faults injected and verified, {} problem(s), {} note(s)",
            self.problems.len(),
            self.notes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::FaultKind;

    fn incr(client: u64, t: u64, outcome: Outcome, result: Option<i64>) -> Op {
        let complete = (outcome != Outcome::Unknown).then_some(t + 1);
        Op::new(client, "c0", OpKind::Incr { delta: 1, result }, t, complete, outcome)
    }

    fn good() -> Evidence {
        Evidence {
            linearizable: true,
            completed: OpType::ALL.iter().map(|t| (*t, 100)).collect(),
            min_ops: 300,
            faults: vec![FaultRecord {
                at_secs: 1.0,
                kind: FaultKind::KillLeader,
                targets: vec!["synod-1".into()],
                status: FaultStatus::Done,
                evidence: vec!["synod-1 stopped".into()],
            }],
            ..Evidence::default()
        }
    }

    #[test]
    fn counters_catch_lost_and_doubled_increments() {
        let ops = vec![incr(1, 0, Outcome::Ok, Some(1)), incr(2, 2, Outcome::Ok, Some(2)), incr(3, 4, Outcome::Unknown, None)];
        // Two acknowledged, one unknown: 2 or 3 are both fine.
        assert_eq!(counter_check("c0", &ops, Some("2")).problem(), None);
        assert_eq!(counter_check("c0", &ops, Some("3")).problem(), None);
        let lost = counter_check("c0", &ops, Some("1")).problem().expect("lost");
        assert!(lost.contains("lost"), "{lost}");
        let doubled = counter_check("c0", &ops, Some("4")).problem().expect("doubled");
        assert!(doubled.contains("applied twice"), "{doubled}");
        // Two acknowledgements with the same result: applied once, acknowledged twice.
        let same = vec![incr(1, 0, Outcome::Ok, Some(1)), incr(2, 0, Outcome::Ok, Some(1))];
        let c = counter_check("c0", &same, Some("2"));
        assert_eq!(c.duplicate_results, vec![1]);
        assert!(c.problem().is_some());
        // Absent counts as zero; other keys are ignored.
        assert_eq!(counter_check("c9", &ops, None), CounterCheck { key: "c9".into(), acked: 0, unknown: 0, final_value: Some(0), duplicate_results: vec![] });
    }

    #[test]
    fn states_must_match_across_replicas() {
        let s = |i: u64, v: &str| Ok((i, vec![("r0".to_string(), v.to_string(), 3)]));
        let same: BTreeMap<u64, Result<ReplicaState, String>> = [(1, s(10, "a")), (2, s(10, "a"))].into();
        assert!(compare_states(&same).is_empty());
        let differ: BTreeMap<u64, Result<ReplicaState, String>> = [(1, s(10, "a")), (2, s(10, "b")), (3, Err("lagging".into()))].into();
        let m = compare_states(&differ);
        assert_eq!(m.len(), 2);
        assert!(m[0].starts_with("synod-2 (index 10) differs from synod-1"), "{m:?}");
        assert!(m[1].contains("synod-3: no final state (lagging)"), "{m:?}");
    }

    #[test]
    fn a_clean_run_passes_with_one_line() {
        let v = assess(&good());
        assert!(v.pass && !v.invalid, "{v:?}");
        assert_eq!(v.summary(7, 600, 1, 1), "synod-chaos PASS: seed 7, 600 ops completed, 1/1 faults injected and verified, 0 problem(s), 0 note(s)");
    }

    #[test]
    fn violations_and_failed_faults_fail_the_run() {
        let mut e = good();
        e.linearizable = false;
        e.lin_explanation = "key \"r1\": stale read".into();
        e.seq_violations = vec!["client 3 index went back".into()];
        e.faults[0].status = FaultStatus::Failed;
        let v = assess(&e);
        assert!(!v.pass && !v.invalid);
        assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
        assert!(v.problems[0].starts_with("NOT LINEARIZABLE"));
        assert!(v.summary(1, 600, 0, 1).starts_with("synod-chaos FAIL"));
        // Inconclusive is never a pass.
        let mut e = good();
        e.inconclusive = true;
        assert!(!assess(&e).pass);
    }

    #[test]
    fn too_little_load_is_invalid() {
        let mut e = good();
        e.completed.insert(OpType::Cas, 0);
        e.completed.insert(OpType::Write, 1);
        e.min_ops = 500;
        let v = assess(&e);
        assert!(v.invalid && !v.pass);
        assert!(v.problems.iter().any(|p| p.contains("no cas operation")), "{:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.contains("only 401 operations")), "{:?}", v.problems);
        assert!(v.summary(1, 401, 1, 1).starts_with("synod-chaos INVALID"));
    }

    #[test]
    fn unsupported_membership_is_a_note_unless_required() {
        let mut e = good();
        e.faults.push(FaultRecord {
            at_secs: 9.0,
            kind: FaultKind::JoinLeave,
            targets: vec![],
            status: FaultStatus::NotSupported,
            evidence: vec!["NOT SUPPORTED: 404".into()],
        });
        let v = assess(&e);
        assert!(v.pass);
        assert_eq!(v.notes.len(), 1);
        e.require_membership = true;
        assert!(!assess(&e).pass);
    }
}
