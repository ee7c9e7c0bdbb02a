//! Size limits on writes.
//!
//! Limits are checked in two places with the same function: by the driver before proposing (so
//! a 413 costs no log slot), and by [`crate::Store::apply`] (so a request that slipped past a
//! differently configured or buggy leader is refused identically on every replica). Either way an
//! oversized write is an error result, never a panic and never a partial write: the check runs
//! before anything is changed.

use crate::command::{BatchOp, Request, WriteOp};
use crate::output::WriteError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which limit a [`WriteError::TooLarge`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// Bytes in one key.
    KeyBytes,
    /// Bytes in one value (including a value grown by append).
    ValueBytes,
    /// Operations in one atomic batch.
    BatchOps,
    /// Key and value bytes in one request, summed.
    RequestBytes,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::KeyBytes => "key size",
            LimitKind::ValueBytes => "value size",
            LimitKind::BatchOps => "operations in batch",
            LimitKind::RequestBytes => "request size",
        })
    }
}

/// Limits on writes and on read pages. All replicas must use the same write limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum bytes in a key. Default 4 KiB.
    pub max_key_bytes: usize,
    /// Maximum bytes in a value. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Maximum operations in one [`WriteOp::PutMany`]. Default 1000.
    pub max_batch_ops: usize,
    /// Maximum key plus value bytes in one request. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Maximum entries in one range page; a larger or zero `limit` is clamped. Default 10,000.
    pub max_page_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_ops: 1000,
            max_request_bytes: 4 * 1024 * 1024,
            max_page_entries: 10_000,
        }
    }
}

fn too_large(what: LimitKind, limit: usize, got: usize) -> WriteError {
    WriteError::TooLarge { what, limit: limit as u64, got: got as u64 }
}

impl Limits {
    /// Check a request against the limits, without looking at the store. Also refuses empty keys.
    /// Returns the first violation found, in operation order.
    pub fn check(&self, req: &Request) -> Result<(), WriteError> {
        self.check_op(&req.op)
    }

    /// [`Limits::check`] for a bare operation.
    pub fn check_op(&self, op: &WriteOp) -> Result<(), WriteError> {
        let mut total = 0usize;
        match op {
            WriteOp::Put { key, value, .. } | WriteOp::Append { key, value } => {
                self.check_key(key, 0)?;
                self.check_value(value.len())?;
                total += key.len() + value.len();
            }
            WriteOp::Delete { key, .. } | WriteOp::Incr { key, .. } => {
                self.check_key(key, 0)?;
                total += key.len();
            }
            WriteOp::Cas { key, new, .. } => {
                self.check_key(key, 0)?;
                let new_len = new.as_ref().map_or(0, Vec::len);
                self.check_value(new_len)?;
                total += key.len() + new_len;
            }
            WriteOp::DeleteRange { start, end } => {
                // Bounds are not keys: an empty start means "from the first key", and an empty
                // end an empty range. Only their size is limited, like a key's.
                for b in std::iter::once(start).chain(end) {
                    if b.len() > self.max_key_bytes {
                        return Err(too_large(LimitKind::KeyBytes, self.max_key_bytes, b.len()));
                    }
                    total += b.len();
                }
            }
            WriteOp::LeaseGrant { .. } | WriteOp::LeaseKeepAlive { .. } | WriteOp::LeaseRevoke { .. } | WriteOp::LeaseSweep => {}
            WriteOp::PutMany { ops } | WriteOp::Leased { ops, .. } => {
                if ops.len() > self.max_batch_ops {
                    return Err(too_large(LimitKind::BatchOps, self.max_batch_ops, ops.len()));
                }
                // A key named twice is refused whatever the state (the store refuses it at apply
                // time too); checking here keeps such a batch from taking a log slot.
                let mut seen = std::collections::BTreeSet::new();
                for (i, op) in ops.iter().enumerate() {
                    self.check_key(op.key(), i as u32)?;
                    if !seen.insert(op.key()) {
                        return Err(WriteError::DuplicateKey { key: op.key().to_vec() });
                    }
                    total += op.key().len();
                    if let BatchOp::Put { value, .. } = op {
                        self.check_value(value.len())?;
                        total += value.len();
                    }
                }
            }
        }
        if total > self.max_request_bytes {
            return Err(too_large(LimitKind::RequestBytes, self.max_request_bytes, total));
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8], index_in_batch: u32) -> Result<(), WriteError> {
        if key.is_empty() {
            return Err(WriteError::EmptyKey { index_in_batch });
        }
        if key.len() > self.max_key_bytes {
            return Err(too_large(LimitKind::KeyBytes, self.max_key_bytes, key.len()));
        }
        Ok(())
    }

    /// Check the size of a value (also used for the result of an append).
    pub fn check_value(&self, len: usize) -> Result<(), WriteError> {
        if len > self.max_value_bytes {
            return Err(too_large(LimitKind::ValueBytes, self.max_value_bytes, len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: Vec<u8>, value: Vec<u8>) -> BatchOp {
        BatchOp::Put { key, value, guard: None }
    }

    fn small() -> Limits {
        Limits { max_key_bytes: 4, max_value_bytes: 8, max_batch_ops: 3, max_request_bytes: 20, max_page_entries: 5 }
    }

    #[test]
    fn each_limit_reports_what_limit_and_got() {
        let l = small();
        let op = WriteOp::Put { key: b"abcde".to_vec(), value: vec![], guard: None };
        assert_eq!(
            l.check_op(&op),
            Err(WriteError::TooLarge { what: LimitKind::KeyBytes, limit: 4, got: 5 })
        );
        let op = WriteOp::Append { key: b"k".to_vec(), value: vec![0; 9] };
        assert_eq!(
            l.check_op(&op),
            Err(WriteError::TooLarge { what: LimitKind::ValueBytes, limit: 8, got: 9 })
        );
        let op = WriteOp::PutMany { ops: (0..4).map(|i| put(vec![b'a' + i], vec![])).collect() };
        assert_eq!(
            l.check_op(&op),
            Err(WriteError::TooLarge { what: LimitKind::BatchOps, limit: 3, got: 4 })
        );
        // 3 x (1 + 8) = 27 bytes > 20, though each op is within the per-key/value limits.
        let op = WriteOp::PutMany { ops: (0..3).map(|i| put(vec![b'a' + i], vec![0; 8])).collect() };
        assert_eq!(
            l.check_op(&op),
            Err(WriteError::TooLarge { what: LimitKind::RequestBytes, limit: 20, got: 27 })
        );
    }

    #[test]
    fn empty_keys_are_refused_with_their_position() {
        let op = WriteOp::PutMany { ops: vec![put(b"a".to_vec(), vec![]), put(vec![], vec![])] };
        assert_eq!(small().check_op(&op), Err(WriteError::EmptyKey { index_in_batch: 1 }));
        let op = WriteOp::Incr { key: vec![], delta: 1, initial: 0 };
        assert_eq!(small().check_op(&op), Err(WriteError::EmptyKey { index_in_batch: 0 }));
    }

    #[test]
    fn a_batch_naming_a_key_twice_is_refused_before_ordering_and_shown_readably() {
        let op = WriteOp::PutMany { ops: vec![put(b"a".to_vec(), vec![]), put(b"b".to_vec(), vec![]), put(b"a".to_vec(), vec![])] };
        let e = small().check_op(&op).unwrap_err();
        assert_eq!(e, WriteError::DuplicateKey { key: b"a".to_vec() });
        assert_eq!(e.to_string(), "key \"a\" appears more than once in the batch");
        let op = WriteOp::PutMany { ops: vec![put(vec![0xff], vec![]), put(vec![0xff], vec![])] };
        assert_eq!(small().check_op(&op).unwrap_err().to_string(), "key base64:/w== appears more than once in the batch");
    }

    #[test]
    fn requests_at_the_limits_pass() {
        let l = small();
        let op = WriteOp::Put { key: b"abcd".to_vec(), value: vec![0; 8], guard: None };
        assert_eq!(l.check_op(&op), Ok(()));
        let op = WriteOp::Cas { key: b"k".to_vec(), expected: crate::CasExpect::Version(0), new: None };
        assert_eq!(l.check_op(&op), Ok(()));
        let op = WriteOp::DeleteRange { start: vec![], end: None };
        assert_eq!(l.check_op(&op), Ok(()));
        let op = WriteOp::DeleteRange { start: b"abcd".to_vec(), end: Some(vec![]) };
        assert_eq!(l.check_op(&op), Ok(()));
    }

    #[test]
    fn delete_range_bounds_are_limited_like_keys() {
        let op = WriteOp::DeleteRange { start: b"abcde".to_vec(), end: None };
        assert_eq!(small().check_op(&op), Err(WriteError::TooLarge { what: LimitKind::KeyBytes, limit: 4, got: 5 }));
        let op = WriteOp::DeleteRange { start: vec![], end: Some(b"abcde".to_vec()) };
        assert_eq!(small().check_op(&op), Err(WriteError::TooLarge { what: LimitKind::KeyBytes, limit: 4, got: 5 }));
    }
}
