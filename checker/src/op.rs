//! The recorded client operation: what was asked, what came back, and when.
//!
//! One [`Op`] is one client request from its invocation to its completion (or to the end of
//! the run, when no answer arrived). Times are any monotone tick (nanoseconds since the
//! recorder started, or a line number for logs); only their order matters.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a client asked the store to do, with what the store returned for it.
///
/// Values are strings; `None` means "the key is absent". A [`Outcome::Fail`] means the operation
/// definitely took no effect; for [`OpKind::Cas`] it says more (see there).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "f")]
pub enum OpKind {
    /// Read the key; `result` is the value returned (`None`: absent).
    Read {
        /// The value the read returned.
        result: Option<String>,
    },
    /// Replace the key's value.
    Write {
        /// The value written.
        value: String,
    },
    /// Compare-and-set: if the key's value equals `expected` (`None`: the key is absent), set it
    /// to `new`. `Ok` means the guard held and `new` was written. `Fail` means the guard was
    /// evaluated and did not hold (a 409): nothing was written, and at that moment the value
    /// differed from `expected`. A request rejected before it was evaluated (503) is not a
    /// `Fail` of this kind: drop it with [`crate::History::discard`].
    Cas {
        /// The value the guard compares against.
        expected: Option<String>,
        /// The value written when the guard holds.
        new: String,
    },
    /// Add `delta` to the key's integer value (absent counts as 0); `result` is the value after
    /// the increment, when the reply carried it.
    Incr {
        /// The amount added.
        delta: i64,
        /// The value after the increment, as returned.
        result: Option<i64>,
    },
    /// Append `value` to the key's string value (absent counts as "").
    Append {
        /// The suffix appended.
        value: String,
    },
    /// Remove the key.
    Delete,
}

impl OpKind {
    /// Whether the operation may change the store (everything but a read).
    pub fn is_mutation(&self) -> bool {
        !matches!(self, OpKind::Read { .. })
    }
}

/// How a request ended, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: the operation took effect exactly once, between invocation and completion,
    /// and returned what the [`OpKind`] records.
    Ok,
    /// Definitely not applied (see [`OpKind::Cas`] for what a failed CAS observed).
    Fail,
    /// No definite answer (timeout, 504, connection lost): the operation may take effect at any
    /// moment after its invocation, or never. Its recorded result is ignored.
    Unknown,
}

/// The read level a request asked for (the REST `consistency` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Linearizable (the default, and the level of every write).
    #[default]
    Linearizable,
    /// Served by any replica from its applied state; checked by [`crate::check_sequential`],
    /// not by the linearizability search.
    Sequential,
}

/// One client operation from invocation to completion.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Op {
    /// The client (session) that issued it. A client issues one request at a time.
    pub client: u64,
    /// The key it addressed.
    pub key: String,
    /// What was asked and what came back.
    #[serde(flatten)]
    pub kind: OpKind,
    /// When the request was sent (monotone tick).
    pub invoke: u64,
    /// When the answer arrived; `None` when none did (then the outcome is `Unknown`).
    pub complete: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The read level; writes are always linearizable.
    #[serde(default, skip_serializing_if = "is_default")]
    pub consistency: Consistency,
    /// The replica's applied index the reply reflected (every Synod reply carries one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

fn is_default(c: &Consistency) -> bool {
    *c == Consistency::default()
}

impl Op {
    /// A linearizable operation with no applied index; the common case in tests.
    pub fn new(
        client: u64,
        key: impl Into<String>,
        kind: OpKind,
        invoke: u64,
        complete: Option<u64>,
        outcome: Outcome,
    ) -> Self {
        Op {
            client,
            key: key.into(),
            kind,
            invoke,
            complete,
            outcome,
            consistency: Consistency::Linearizable,
            index: None,
        }
    }

    /// The same operation, marked as a sequential read carrying applied index `index`.
    pub fn sequential(mut self, index: u64) -> Self {
        self.consistency = Consistency::Sequential;
        self.index = Some(index);
        self
    }

    /// The same operation, carrying applied index `index`.
    pub fn with_index(mut self, index: u64) -> Self {
        self.index = Some(index);
        self
    }
}

fn show(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "nil".to_string(),
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Read { result } => write!(f, "read -> {}", show(result)),
            OpKind::Write { value } => write!(f, "write {value:?}"),
            OpKind::Cas { expected, new } => write!(f, "cas {} -> {new:?}", show(expected)),
            OpKind::Incr { delta, result } => match result {
                Some(r) => write!(f, "incr {delta} -> {r}"),
                None => write!(f, "incr {delta}"),
            },
            OpKind::Append { value } => write!(f, "append {value:?}"),
            OpKind::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.complete.map_or("…".to_string(), |c| c.to_string());
        write!(
            f,
            "client {} {} [{}, {}] {:?} on key {:?}",
            self.client, self.kind, self.invoke, end, self.outcome, self.key
        )?;
        if let Some(i) = self.index {
            write!(f, " @index {i}")?;
        }
        Ok(())
    }
}
