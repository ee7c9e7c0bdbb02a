//! Recording a history from many concurrent clients, and saving it for offline re-checks.
//!
//! [`History`] is `Send + Sync`: share it in an `Arc` across tokio tasks or threads. Each client
//! calls [`History::invoke`] just before sending a request and [`History::complete`] when the
//! answer (or a definite failure, or a timeout) arrives. Times are nanoseconds since the recorder
//! was created, from a monotonic clock; the lock is taken only to push or update one entry.
//!
//! Files are JSON lines, one [`Op`] per line (serde_json), so a failing run can be re-checked
//! with `synod-check history.jsonl`.

use crate::op::{Op, OpKind, Outcome};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Handle to one recorded invocation, returned by [`History::invoke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

/// A thread-safe, append-only history recorder.
#[derive(Debug)]
pub struct History {
    start: Instant,
    /// `None` marks a discarded entry, so `OpId`s stay valid.
    ops: Mutex<Vec<Option<Op>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

/// Errors of loading a saved history.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading history: {0}")]
    Io(#[from] io::Error),
    /// A line is not a JSON [`Op`].
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde_json said.
        source: serde_json::Error,
    },
}

impl History {
    /// An empty recorder; its clock starts now.
    pub fn new() -> Self {
        History {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Op>>> {
        // A panic in another recording task cannot leave an entry half-written (each update is
        // one assignment), so a poisoned lock still holds a consistent history.
        self.ops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record that `client` is sending `kind` on `key` now. Until completed, the op's outcome
    /// is `Unknown`. For reads, pass `Read { result: None }`; the result comes at completion.
    pub fn invoke(&self, client: u64, key: impl Into<String>, kind: OpKind) -> OpId {
        let op = Op::new(client, key, kind, 0, None, Outcome::Unknown);
        let mut ops = self.lock();
        // Take the time under the lock, so invocation ticks are ordered like the entries.
        let mut op = op;
        op.invoke = self.now();
        ops.push(Some(op));
        OpId(ops.len() - 1)
    }

    /// Record that the op ended now with `outcome`. `kind` carries what came back (a read's
    /// result, an increment's value); `index` the applied index the reply reflected, if any.
    pub fn complete(&self, id: OpId, outcome: Outcome, kind: OpKind, index: Option<u64>) {
        let now = self.now();
        if let Some(Some(op)) = self.lock().get_mut(id.0) {
            op.kind = kind;
            op.outcome = outcome;
            op.index = index.or(op.index);
            // An unknown outcome has no completion: it may take effect at any later time.
            op.complete = (outcome != Outcome::Unknown).then_some(now);
        }
    }

    /// Record that the op's outcome is unknown (timeout, 504, connection lost). Same as never
    /// completing it, but says so explicitly.
    pub fn unknown(&self, id: OpId) {
        if let Some(Some(op)) = self.lock().get_mut(id.0) {
            op.outcome = Outcome::Unknown;
            op.complete = None;
        }
    }

    /// Forget the op: the request was rejected before it could take effect or observe anything
    /// (no leader, 503, a malformed request).
    pub fn discard(&self, id: OpId) {
        if let Some(slot) = self.lock().get_mut(id.0) {
            *slot = None;
        }
    }

    /// Mark the op as a sequential read (set before or after completion).
    pub fn mark_sequential(&self, id: OpId) {
        if let Some(Some(op)) = self.lock().get_mut(id.0) {
            op.consistency = crate::op::Consistency::Sequential;
        }
    }

    /// Add a fully formed op (its times must use this recorder's clock, or be synthetic).
    pub fn push(&self, op: Op) -> OpId {
        let mut ops = self.lock();
        ops.push(Some(op));
        OpId(ops.len() - 1)
    }

    /// The recorded ops so far, in invocation order, discarded ones left out.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().iter().flatten().cloned().collect()
    }

    /// Save as JSON lines.
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        save_jsonl(&self.ops(), path)
    }
}

/// Write `ops` to `path` as JSON lines.
pub fn save_jsonl(ops: &[Op], path: impl AsRef<Path>) -> io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Read JSON lines written by [`save_jsonl`] (blank lines are skipped).
pub fn load_jsonl(path: impl AsRef<Path>) -> Result<Vec<Op>, LoadError> {
    let file = io::BufReader::new(std::fs::File::open(path)?);
    let mut ops = Vec::new();
    for (n, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| LoadError::Json {
            line: n + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn concurrent_recording_round_trips_through_jsonl() {
        // Eight threads each write then read their own key; the saved file checks the same.
        let h = Arc::new(History::new());
        let threads: Vec<_> = (0..8u64)
            .map(|c| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    let key = format!("k{c}");
                    let w = h.invoke(
                        c,
                        key.clone(),
                        OpKind::Write {
                            value: c.to_string(),
                        },
                    );
                    h.complete(
                        w,
                        Outcome::Ok,
                        OpKind::Write {
                            value: c.to_string(),
                        },
                        Some(c),
                    );
                    let r = h.invoke(c, key, OpKind::Read { result: None });
                    h.complete(
                        r,
                        Outcome::Ok,
                        OpKind::Read {
                            result: Some(c.to_string()),
                        },
                        None,
                    );
                    let lost = h.invoke(c, "shared", OpKind::Append { value: "x".into() });
                    h.unknown(lost);
                    let rejected = h.invoke(c, "shared", OpKind::Delete);
                    h.discard(rejected);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread panicked");
        }
        let ops = h.ops();
        assert_eq!(ops.len(), 24);
        assert!(crate::check(&ops).ok);

        let dir = std::env::temp_dir().join(format!("synod-checker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("h.jsonl");
        h.save(&path).expect("save");
        let loaded = load_jsonl(&path).expect("load");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(loaded, ops);
    }

    #[test]
    fn bad_line_names_its_number() {
        let dir = std::env::temp_dir().join(format!("synod-checker-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.jsonl");
        std::fs::write(&path, "\n{\"nope\": 1}\n").expect("write");
        let err = load_jsonl(&path).expect_err("must not parse");
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(err, LoadError::Json { line: 2, .. }), "{err}");
    }
}
