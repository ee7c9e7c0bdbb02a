//! A linearizability checker for Synod client histories.
//!
//! Clients record every operation they issue ([`History`]): invocation time, what came back, and
//! whether it ended `Ok`, `Fail` (definitely not applied) or `Unknown` (may take effect at any
//! moment after invocation, or never). [`check`] then answers whether a single copy of the store,
//! applying operations one at a time, could have produced exactly those answers while respecting
//! real time: every operation takes effect at one instant inside its interval.
//!
//! # How
//!
//! 1. **Split per key** ([`check`], module `check`). Linearizability is local (Herlihy and Wing
//!    1990), so each key is an independent object and is searched alone.
//! 2. **Search** ([`wgl`]). Wing and Gong's (1993) backtracking search for a linearization, with
//!    Lowe's (2017) memoisation of every explored (linearized-set bitset, model state) pair, in
//!    the linked-list form of porcupine (Athalye). A step/time [`Budget`] turns a pathological
//!    history into [`CheckResult::Unknown`] instead of a hang.
//! 3. **Model** ([`Model`], [`KvModel`]). A porcupine-style deterministic sequential
//!    specification `step(state, input, output) -> Option<state>`; `KvModel` is one key with read,
//!    write, cas, incr, append and delete.
//! 4. **Sequential reads** ([`check_sequential`]). `consistency=sequential` reads may be stale by
//!    design; they are checked instead for per-client monotone applied indexes and
//!    read-your-writes (the precise rules are in module `sequential`).
//!
//! Unknown outcomes follow porcupine and Knossos: the operation's completion is "infinity", so it
//! may be linearized anywhere after its invocation; if it is still unplaced once every definite
//! operation is, it never took effect.
//!
//! # Use
//!
//! ```
//! use checker::{check, Op, OpKind, Outcome};
//! let h = vec![
//!     Op::new(1, "k", OpKind::Write { value: "1".into() }, 0, Some(10), Outcome::Ok),
//!     Op::new(2, "k", OpKind::Read { result: None }, 20, Some(30), Outcome::Ok), // stale!
//! ];
//! let verdict = check(&h);
//! assert!(!verdict.ok);
//! assert_eq!(verdict.failing_key.as_deref(), Some("k"));
//! ```
//!
//! Histories from other tools load through [`formats`]; [`load_file`] picks the format by content.
//! The `synod-check` binary checks a file from the command line.

mod check;
pub mod formats;
mod history;
mod model;
mod op;
mod sequential;
pub mod wgl;

pub use check::{check, check_with, CheckOptions, CheckResult, Verdict};
pub use history::{load_jsonl, save_jsonl, History, LoadError, OpId};
pub use model::{KvModel, Model};
pub use op::{Consistency, Op, OpKind, Outcome};
pub use sequential::{check_sequential, SeqReport, SeqViolation};
pub use wgl::Budget;

use std::path::Path;

/// The file formats [`load_file`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON lines of [`Op`], as written by [`History::save`].
    JsonLines,
    /// A Jepsen etcd register log ([`formats::jepsen`]).
    JepsenLog,
    /// EDN event maps over many keys ([`formats::edn`]).
    Edn,
}

/// Errors of [`load_file`].
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON-lines history did not parse.
    #[error(transparent)]
    Json(#[from] LoadError),
    /// A Jepsen or EDN history did not parse.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        source: formats::ParseError,
    },
}

/// Guess a file's format from its first non-blank line.
pub fn detect_format(text: &str) -> Format {
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if first.starts_with("{:") {
        Format::Edn
    } else if first.starts_with('{') {
        Format::JsonLines
    } else {
        Format::JepsenLog
    }
}

/// Load a history in any supported format (detected with [`detect_format`]).
pub fn load_file(path: impl AsRef<Path>) -> Result<(Format, Vec<Op>), FileError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: shown.clone(),
        source,
    })?;
    let format = detect_format(&text);
    let parse_err = |source| FileError::Parse {
        path: shown.clone(),
        source,
    };
    let ops = match format {
        Format::JsonLines => load_jsonl(path)?,
        Format::JepsenLog => formats::jepsen::parse(&text).map_err(parse_err)?,
        Format::Edn => formats::edn::parse(&text).map_err(parse_err)?,
    };
    Ok((format, ops))
}
