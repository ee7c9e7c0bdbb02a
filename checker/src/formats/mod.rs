//! Readers for recorded histories from other tools, turned into [`crate::Op`]s.
//!
//! - [`jepsen`]: Jepsen's etcd register logs (`INFO  jepsen.util - 3 :invoke :cas [1 2]`), one key.
//! - [`edn`]: Jepsen-style EDN maps, one per line, over many keys (get / put / append).
//!
//! Times are line numbers: only the order of events matters to the checker.

pub mod edn;
pub mod jepsen;

/// A line that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
    /// The offending line.
    pub text: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, reason: impl Into<String>, text: &str) -> Self {
        ParseError {
            line,
            reason: reason.into(),
            text: text.to_string(),
        }
    }
}

/// Pairs invocations with completions per process, the way both formats need.
///
/// A process runs one operation at a time; an invocation left open at the end (or superseded,
/// which Jepsen never does) has an unknown outcome.
pub(crate) struct Pairing {
    open: std::collections::BTreeMap<u64, crate::Op>,
    done: Vec<crate::Op>,
}

impl Pairing {
    pub(crate) fn new() -> Self {
        Pairing {
            open: Default::default(),
            done: Vec::new(),
        }
    }

    /// Start `op` for its client; an op still open for that client becomes unknown.
    pub(crate) fn invoke(&mut self, op: crate::Op) {
        if let Some(prev) = self.open.insert(op.client, op) {
            self.done.push(prev);
        }
    }

    /// Complete the open op of `process` with `outcome` at `time` (both formats share this):
    /// `Ok` and `Fail` end at `time`, and an `Ok` read takes `read_result`; `Unknown` (`:info`)
    /// stays without a completion time, since it may take effect at any later moment.
    /// `None` when `process` has no open op.
    pub(crate) fn complete(
        &mut self,
        process: u64,
        outcome: crate::Outcome,
        time: u64,
        read_result: Option<String>,
    ) -> Option<()> {
        let mut op = self.open.remove(&process)?;
        op.outcome = outcome;
        match outcome {
            crate::Outcome::Ok => {
                op.complete = Some(time);
                if let crate::OpKind::Read { result } = &mut op.kind {
                    *result = read_result;
                }
            }
            crate::Outcome::Fail => op.complete = Some(time),
            crate::Outcome::Unknown => {}
        }
        self.done.push(op);
        Some(())
    }

    /// All ops, in invocation order; open ones are `Unknown` with no completion.
    pub(crate) fn finish(mut self) -> Vec<crate::Op> {
        self.done.extend(self.open.into_values());
        self.done.sort_by_key(|o| o.invoke);
        self.done
    }
}
