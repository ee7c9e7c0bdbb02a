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

    /// Take the open op of `process`, to be completed by the caller.
    pub(crate) fn take(&mut self, process: u64) -> Option<crate::Op> {
        self.open.remove(&process)
    }

    pub(crate) fn push(&mut self, op: crate::Op) {
        self.done.push(op);
    }

    /// All ops, in invocation order; open ones are `Unknown` with no completion.
    pub(crate) fn finish(mut self) -> Vec<crate::Op> {
        self.done.extend(self.open.into_values());
        self.done.sort_by_key(|o| o.invoke);
        self.done
    }
}
