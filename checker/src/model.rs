//! Sequential specifications: what a correct single-copy object does, one operation at a time.
//!
//! A [`Model`] is porcupine's model shape (Athalye, porcupine, `model.go`): an initial state and a
//! deterministic `step(state, input, output)` that says whether the operation could have returned
//! `output` from `state`, and if so the next state. The search in [`crate::wgl`] only ever asks
//! the model; it knows nothing about keys or values.
//!
//! [`KvModel`] is one key of the Synod store: a register holding an optional string, with
//! read, write, compare-and-set, increment, append and delete.

use crate::op::{OpKind, Outcome};
use std::fmt::Debug;
use std::hash::Hash;

/// A deterministic sequential specification.
pub trait Model {
    /// The object's state. Hashed into the search's memo cache, so keep it small.
    type State: Clone + Eq + Hash + Debug;
    /// What an operation asked (and, for this crate, what it returned).
    type Input: Debug;
    /// How the operation ended.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Apply one operation: `Some(next)` if `state` could have produced `output` for `input`,
    /// `None` if not. Must be deterministic. An operation whose effect is optional (an unknown
    /// outcome) returns the state *with* its effect: the search gets "never took effect" by
    /// linearizing it after every definite operation, where no one observes it.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One key of the Synod KV store: `None` is "absent".
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<String>;
    type Input = OpKind;
    type Output = Outcome;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        state: &Option<String>,
        input: &OpKind,
        output: &Outcome,
    ) -> Option<Option<String>> {
        let known = *output == Outcome::Ok;
        match (input, output) {
            // A failed CAS evaluated its guard: it observed a different value and wrote nothing.
            (OpKind::Cas { expected, .. }, Outcome::Fail) => {
                (state != expected).then(|| state.clone())
            }
            // Any other definite failure took no effect and observed nothing. (The checker drops
            // these before the search; this arm keeps the model total.)
            (_, Outcome::Fail) => Some(state.clone()),
            (OpKind::Read { result }, _) => (!known || result == state).then(|| state.clone()),
            (OpKind::Write { value }, _) => Some(Some(value.clone())),
            (OpKind::Delete, _) => Some(None),
            (OpKind::Append { value }, _) => {
                let mut s = state.clone().unwrap_or_default();
                s.push_str(value);
                Some(Some(s))
            }
            (OpKind::Cas { expected, new }, _) => {
                if state == expected {
                    Some(Some(new.clone()))
                } else if known {
                    None // acknowledged, so the guard held: not from this state
                } else {
                    Some(state.clone()) // unknown: evaluated here, the guard failed, no effect
                }
            }
            (OpKind::Incr { delta, result }, _) => {
                let current = match state {
                    None => Some(0),
                    Some(s) => s.parse::<i64>().ok(),
                };
                let next = current.and_then(|c| c.checked_add(*delta));
                match next {
                    Some(n) if !known || !matches!(result, Some(r) if *r != n) => {
                        Some(Some(n.to_string()))
                    }
                    Some(_) => None,
                    // Not an integer (or overflow): the store refuses, so an acknowledged
                    // increment cannot come from here, and an unknown one had no effect.
                    None => (!known).then(|| state.clone()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn kv_model_steps() {
        let m = KvModel;
        let ok = Outcome::Ok;
        // Reads must return the current value.
        assert_eq!(
            m.step(&None, &OpKind::Read { result: None }, &ok),
            Some(None)
        );
        assert_eq!(m.step(&None, &OpKind::Read { result: s("1") }, &ok), None);
        // CAS: ok needs the guard to hold, fail needs it not to.
        let cas = OpKind::Cas {
            expected: s("1"),
            new: "2".into(),
        };
        assert_eq!(m.step(&s("1"), &cas, &ok), Some(s("2")));
        assert_eq!(m.step(&s("3"), &cas, &ok), None);
        assert_eq!(m.step(&s("3"), &cas, &Outcome::Fail), Some(s("3")));
        assert_eq!(m.step(&s("1"), &cas, &Outcome::Fail), None);
        assert_eq!(m.step(&s("3"), &cas, &Outcome::Unknown), Some(s("3")));
        // Incr: absent is 0, the returned value must match, non-integers refuse.
        let incr = OpKind::Incr {
            delta: 5,
            result: Some(5),
        };
        assert_eq!(m.step(&None, &incr, &ok), Some(s("5")));
        assert_eq!(m.step(&s("1"), &incr, &ok), None);
        assert_eq!(m.step(&s("x"), &incr, &ok), None);
        assert_eq!(m.step(&s("x"), &incr, &Outcome::Unknown), Some(s("x")));
        // Append and delete.
        assert_eq!(
            m.step(&s("a"), &OpKind::Append { value: "b".into() }, &ok),
            Some(s("ab"))
        );
        assert_eq!(
            m.step(&None, &OpKind::Append { value: "b".into() }, &ok),
            Some(s("b"))
        );
        assert_eq!(m.step(&s("a"), &OpKind::Delete, &ok), Some(None));
    }
}
