//! Checking a whole history: split per key, search each key, add the sequential-read check.
//!
//! Linearizability is *local* (Herlihy and Wing 1990, Theorem 1): a history is linearizable iff
//! its restriction to every object is. Synod's keys are independent objects (no operation of this
//! model spans keys), so each key is searched alone, which turns one exponential search into many
//! small ones. Which operations go into the search:
//!
//! | outcome | read | cas | other mutations |
//! |---|---|---|---|
//! | `Ok` | observes the value | guard held, wrote | took effect once, inside its interval |
//! | `Fail` | dropped | guard failed: observes "≠ expected" | dropped (no effect) |
//! | `Unknown` | dropped (observes nothing) | may take effect after invoke, or never | same |
//!
//! Sequential reads are not linearizable by design; they go to [`crate::check_sequential`].

use crate::model::KvModel;
use crate::op::{Consistency, Op, OpKind, Outcome};
use crate::sequential::check_sequential;
use crate::wgl::{search, Budget, Operation, SearchOutcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// One op as the search over a [`KvModel`] sees it.
type KvOperation = Operation<OpKind, Outcome>;

/// The answer of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// Every key has a linearization and the sequential reads are consistent.
    Linearizable,
    /// Some key has no linearization, or a sequential read broke its client's order.
    Violation,
    /// The budget ran out on some key before an answer (and no violation was found elsewhere).
    Unknown,
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True only when `result` is [`CheckResult::Linearizable`].
    pub ok: bool,
    /// The three-way answer.
    pub result: CheckResult,
    /// The first key (in key order) that failed or ran out of budget.
    pub failing_key: Option<String>,
    /// Human-readable reason: the longest linearizable prefix and the op that could not follow it,
    /// or the sequential violation. Empty when `ok`.
    pub explanation: String,
    /// Operations that took part in the checks (after dropping failed and unobservable ones).
    pub ops_checked: usize,
    /// Wall time of the check.
    pub elapsed: Duration,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.result {
            CheckResult::Linearizable => "linearizable",
            CheckResult::Violation => "NOT linearizable",
            CheckResult::Unknown => "UNKNOWN (budget exhausted)",
        };
        write!(
            f,
            "{what}: {} ops checked in {:.3?}",
            self.ops_checked, self.elapsed
        )?;
        if let Some(k) = &self.failing_key {
            write!(f, "; key {k:?}")?;
        }
        if !self.explanation.is_empty() {
            write!(f, "\n{}", self.explanation)?;
        }
        Ok(())
    }
}

/// Knobs for [`check_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckOptions {
    /// Search budget, applied to each key separately.
    pub budget: Budget,
}

/// Check a history with the default budget. See [`check_with`].
pub fn check(history: &[Op]) -> Verdict {
    check_with(history, &CheckOptions::default())
}

/// Check a history: per-key linearizability of every linearizable operation, then the
/// sequential-read check. Keys are searched in key order; the first violation stops the check.
pub fn check_with(history: &[Op], options: &CheckOptions) -> Verdict {
    let started = Instant::now();
    let mut per_key: BTreeMap<&str, Vec<(&Op, KvOperation)>> = BTreeMap::new();
    for op in history {
        if let Some(operation) = to_operation(op) {
            per_key
                .entry(op.key.as_str())
                .or_default()
                .push((op, operation));
        }
    }
    let mut ops_checked = 0;
    let mut unknown: Option<(String, String)> = None;
    for (key, entries) in &per_key {
        let (originals, operations): (Vec<&Op>, Vec<_>) =
            entries.iter().map(|(o, p)| (*o, p.clone())).unzip();
        ops_checked += operations.len();
        match search(&KvModel, &operations, &options.budget) {
            SearchOutcome::Linearizable { .. } => {}
            SearchOutcome::NotLinearizable {
                longest_prefix,
                stuck,
                state,
            } => {
                let mut explanation = format!(
                    "key {key:?}: {} of {} operations linearize; after them the value is {state}",
                    longest_prefix.len(),
                    operations.len()
                );
                if let Some(s) = stuck {
                    explanation.push_str(&format!(
                        "\nand this operation must come next but does not fit: {}",
                        originals[s]
                    ));
                }
                if let Some(&last) = longest_prefix.last() {
                    explanation.push_str(&format!("\nlast linearized: {}", originals[last]));
                }
                return Verdict {
                    ok: false,
                    result: CheckResult::Violation,
                    failing_key: Some(key.to_string()),
                    explanation,
                    ops_checked,
                    elapsed: started.elapsed(),
                };
            }
            SearchOutcome::Unknown { steps } => {
                unknown.get_or_insert_with(|| {
                    (
                        key.to_string(),
                        format!("key {key:?}: search budget exhausted after {steps} steps"),
                    )
                });
            }
        }
    }
    let seq = check_sequential(history);
    ops_checked += seq.reads_checked;
    if let Some(v) = seq.violations.first() {
        return Verdict {
            ok: false,
            result: CheckResult::Violation,
            failing_key: Some(v.key().to_string()),
            explanation: seq
                .violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            ops_checked,
            elapsed: started.elapsed(),
        };
    }
    let (result, failing_key, explanation) = match unknown {
        Some((k, e)) => (CheckResult::Unknown, Some(k), e),
        None => (CheckResult::Linearizable, None, String::new()),
    };
    Verdict {
        ok: result == CheckResult::Linearizable,
        result,
        failing_key,
        explanation,
        ops_checked,
        elapsed: started.elapsed(),
    }
}

/// The search's view of one recorded op, or `None` when it constrains nothing (see the table in
/// the module docs) or is a sequential read.
fn to_operation(op: &Op) -> Option<KvOperation> {
    if op.consistency == Consistency::Sequential && !op.kind.is_mutation() {
        return None;
    }
    let is_cas = matches!(op.kind, OpKind::Cas { .. });
    let ret = match (op.outcome, op.complete) {
        (Outcome::Unknown, _) | (Outcome::Ok, None) => None,
        (Outcome::Fail, _) if !is_cas => return None,
        (_, Some(c)) => Some(c),
        // A failed CAS with no completion time: its observation is bounded by nothing.
        (Outcome::Fail, None) => return None,
    };
    if ret.is_none() && !op.kind.is_mutation() {
        return None; // an unanswered read observes nothing
    }
    // An `Ok` without a completion time cannot be placed; treat it as unknown (weaker, sound).
    let output = if ret.is_none() {
        Outcome::Unknown
    } else {
        op.outcome
    };
    Some(Operation {
        input: op.kind.clone(),
        output,
        call: op.invoke,
        ret,
    })
}
