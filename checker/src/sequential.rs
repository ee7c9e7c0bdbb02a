//! The sequential-read check: per-client order for reads served from any replica's applied state.
//!
//! A `consistency=sequential` read is not linearizable: a lagging replica may answer with an old
//! state. Synod promises *sequential consistency per client* instead, and every reply carries the
//! applied index `i` it reflects (the state after log slot `i`). The check, precisely: for every
//! client `c` and every acknowledged sequential read `R` of `c` on key `k` with index `i_R`,
//!
//! 1. **Index carried.** `R` carries an applied index.
//! 2. **Monotone indexes.** For every acknowledged operation `P` of `c` that completed before `R`
//!    was invoked and carries an index `i_P` (reads of either level, and writes, whose index is
//!    the slot they were applied at): `i_R ≥ i_P`. So `c` never sees a state older than one it
//!    already saw or than its own acknowledged write.
//! 3. **Read your writes (value).** Let `P` be `c`'s latest acknowledged mutation of `k` that
//!    completed before `R` was invoked, with index `w` and a known resulting value `v` (write,
//!    delete, successful CAS, increment with result; appends are skipped). If no *other* mutation
//!    `Q` of `k` (any client, outcome not `Fail`) could lie between them—that is, none has
//!    `w < i_Q ≤ i_R`, and none without an index was invoked before `R` completed—then `R`
//!    returns `v`.
//!
//! Rule 3 needs the indexes of other clients' writes to be sound; a mutation without one is
//! assumed to possibly intervene, so missing indexes only weaken the check, never make it wrong.

use crate::op::{Consistency, Op, OpKind, Outcome};
use std::collections::BTreeMap;
use std::fmt;

/// One broken promise of a sequential read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeqViolation {
    /// An acknowledged sequential read carried no applied index (rule 1).
    MissingIndex {
        /// The read.
        read: Op,
    },
    /// The read reflects an older state than an earlier operation of the same client (rule 2).
    IndexWentBack {
        /// The read.
        read: Op,
        /// The client's earlier operation with the higher index.
        earlier: Op,
    },
    /// The read does not show the client's own latest write, with nothing in between (rule 3).
    MissedOwnWrite {
        /// The read.
        read: Op,
        /// The client's write it should reflect.
        write: Op,
        /// The value that write left.
        expected: Option<String>,
    },
}

impl SeqViolation {
    /// The read at fault.
    pub fn read(&self) -> &Op {
        match self {
            SeqViolation::MissingIndex { read }
            | SeqViolation::IndexWentBack { read, .. }
            | SeqViolation::MissedOwnWrite { read, .. } => read,
        }
    }

    /// The key of the read at fault.
    pub fn key(&self) -> &str {
        &self.read().key
    }
}

impl fmt::Display for SeqViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeqViolation::MissingIndex { read } => {
                write!(f, "sequential read carries no applied index: {read}")
            }
            SeqViolation::IndexWentBack { read, earlier } => write!(
                f,
                "sequential read went back in time: {read}\n  after the same client saw: {earlier}"
            ),
            SeqViolation::MissedOwnWrite { read, write, expected } => write!(
                f,
                "sequential read missed the client's own write (expected {expected:?}): {read}\n  write: {write}"
            ),
        }
    }
}

/// The result of [`check_sequential`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeqReport {
    /// Acknowledged sequential reads examined.
    pub reads_checked: usize,
    /// Every violation found, in client then time order.
    pub violations: Vec<SeqViolation>,
}

impl SeqReport {
    /// No violation.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The value an acknowledged mutation left behind, when the op tells.
fn produced(op: &Op) -> Option<Option<String>> {
    if op.outcome != Outcome::Ok {
        return None;
    }
    match &op.kind {
        OpKind::Write { value } => Some(Some(value.clone())),
        OpKind::Delete => Some(None),
        OpKind::Cas { new, .. } => Some(Some(new.clone())),
        OpKind::Incr {
            result: Some(r), ..
        } => Some(Some(r.to_string())),
        OpKind::Incr { result: None, .. } | OpKind::Append { .. } | OpKind::Read { .. } => None,
    }
}

/// Check rules 1–3 of the module docs over every sequential read in `history`.
pub fn check_sequential(history: &[Op]) -> SeqReport {
    let mut by_client: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
    // Mutations that may have changed each key: not definitely failed.
    let mut mutations: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_client.entry(op.client).or_default().push(op);
        if op.kind.is_mutation() && op.outcome != Outcome::Fail {
            mutations.entry(op.key.as_str()).or_default().push(op);
        }
    }
    let mut report = SeqReport::default();
    for ops in by_client.values_mut() {
        ops.sort_by_key(|o| (o.invoke, o.complete));
        for (n, read) in ops.iter().enumerate() {
            let is_seq_read = read.consistency == Consistency::Sequential
                && matches!(read.kind, OpKind::Read { .. })
                && read.outcome == Outcome::Ok;
            if !is_seq_read {
                continue;
            }
            report.reads_checked += 1;
            let Some(i_r) = read.index else {
                report.violations.push(SeqViolation::MissingIndex {
                    read: (*read).clone(),
                });
                continue;
            };
            let earlier: Vec<&Op> = ops[..n]
                .iter()
                .copied()
                .filter(|p| {
                    p.outcome == Outcome::Ok && p.complete.is_some_and(|c| c <= read.invoke)
                })
                .collect();
            // Rule 2: the highest index the client saw before.
            if let Some(p) = earlier
                .iter()
                .filter(|p| p.index.is_some())
                .max_by_key(|p| p.index)
            {
                if p.index > Some(i_r) {
                    report.violations.push(SeqViolation::IndexWentBack {
                        read: (*read).clone(),
                        earlier: (*p).clone(),
                    });
                    continue;
                }
            }
            // Rule 3: the client's own latest mutation of this key.
            let own = earlier
                .iter()
                .rev()
                .find(|p| p.key == read.key && p.kind.is_mutation());
            let Some(&write) = own else { continue };
            let (Some(w), Some(expected)) = (write.index, produced(write)) else {
                continue;
            };
            let read_end = read.complete.unwrap_or(u64::MAX);
            let intervenes = mutations
                .get(read.key.as_str())
                .into_iter()
                .flatten()
                .any(|q| {
                    !std::ptr::eq(*q, write)
                        && match q.index {
                            Some(i_q) => w < i_q && i_q <= i_r,
                            None => q.invoke < read_end,
                        }
                });
            let OpKind::Read { result } = &read.kind else {
                continue;
            };
            if !intervenes && *result != expected {
                report.violations.push(SeqViolation::MissedOwnWrite {
                    read: (*read).clone(),
                    write: write.clone(),
                    expected,
                });
            }
        }
    }
    report
}

#[cfg(test)]
#[path = "sequential_test.rs"]
mod tests;
