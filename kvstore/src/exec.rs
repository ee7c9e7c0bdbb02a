//! Executing one write operation against the data, after session and limit checks passed.
//!
//! Every operation first decides, without changing anything, whether it can apply; only then does
//! it write. That is what makes failures (a guard, a CAS, an overflow, an append past the value
//! limit) leave the store untouched, and what makes a batch all-or-nothing.

use crate::command::{BatchOp, CasExpect, Guard, WriteOp};
use crate::output::{Output, Versioned, WriteError, WriteOutcome, WriteResult};
use crate::store::Store;
use std::collections::BTreeSet;

/// Whether `guard` holds for a key whose current state is `current`.
pub(crate) fn guard_holds(guard: &Guard, current: Option<&Versioned>) -> bool {
    match guard {
        Guard::Version(v) => current.map_or(0, |c| c.version) == *v,
        Guard::Exists => current.is_some(),
        Guard::Absent => current.is_none(),
        Guard::Value(want) => current.is_some_and(|c| &c.value == want),
        Guard::VersionIn(vs) => current.is_some_and(|c| vs.contains(&c.version)),
        Guard::VersionNotIn(vs) => !current.is_some_and(|c| vs.contains(&c.version)),
    }
}

/// Parse a stored value as a decimal `i64` (what [`WriteOp::Incr`] reads and writes).
pub(crate) fn parse_int(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Store {
    pub(crate) fn execute(&mut self, index: u64, op: &WriteOp) -> Output {
        let done = |outcome| Ok(WriteResult { index, outcome });
        match op {
            WriteOp::Put { key, value, guard } => {
                self.check_guard(0, key, guard.as_ref())?;
                let previous_version = self.put_raw(key.clone(), value.clone(), index);
                done(WriteOutcome::Put { previous_version })
            }
            WriteOp::Delete { key, guard } => {
                self.check_guard(0, key, guard.as_ref())?;
                let previous_version = self.delete_raw(key);
                done(WriteOutcome::Deleted { previous_version })
            }
            WriteOp::PutMany { ops } => self.put_many(index, ops),
            WriteOp::Cas { key, expected, new } => {
                let current = self.data.get(key.as_slice());
                let matches = match expected {
                    CasExpect::Value(want) => current.map(|c| &c.value) == want.as_ref(),
                    CasExpect::Version(v) => current.map_or(0, |c| c.version) == *v,
                };
                if !matches {
                    return Err(WriteError::CasFailed { current: current.cloned() });
                }
                let previous_version = match new {
                    Some(v) => self.put_raw(key.clone(), v.clone(), index),
                    None => self.delete_raw(key),
                };
                done(WriteOutcome::Swapped { previous_version })
            }
            WriteOp::Incr { key, delta, initial } => {
                let current = match self.data.get(key.as_slice()) {
                    None => *initial,
                    Some(c) => parse_int(&c.value).ok_or_else(|| WriteError::NotAnInteger { key: key.clone() })?,
                };
                let value = current
                    .checked_add(*delta)
                    .ok_or(WriteError::Overflow { current, delta: *delta })?;
                self.put_raw(key.clone(), value.to_string().into_bytes(), index);
                done(WriteOutcome::Incremented { value })
            }
            WriteOp::Append { key, value } => {
                let old_len = self.data.get(key.as_slice()).map_or(0, |c| c.value.len());
                self.config.limits.check_value(old_len + value.len())?;
                let mut new = self.data.get(key.as_slice()).map(|c| c.value.clone()).unwrap_or_default();
                new.extend_from_slice(value);
                let len = new.len() as u64;
                self.put_raw(key.clone(), new, index);
                done(WriteOutcome::Appended { len })
            }
            WriteOp::DeleteRange { start, end } => {
                // Cannot fail: the range is collected first, then every key in it removed.
                let keys = self.keys_in(start, end.as_deref());
                for key in &keys {
                    self.delete_raw(key);
                }
                done(WriteOutcome::RangeDeleted { deleted: keys.len() as u64 })
            }
            WriteOp::LeaseGrant { ttl_ms } => {
                self.lease_grant(index, *ttl_ms)?;
                done(WriteOutcome::LeaseGranted { id: index, ttl_ms: *ttl_ms })
            }
            WriteOp::LeaseKeepAlive { id } => {
                let ttl_ms = self.lease_keep_alive(*id)?;
                done(WriteOutcome::LeaseKept { id: *id, ttl_ms })
            }
            WriteOp::LeaseRevoke { id } => {
                let deleted = self.lease_end(*id)?;
                done(WriteOutcome::LeaseRevoked { id: *id, deleted })
            }
            WriteOp::LeaseSweep => {
                // Cannot fail: the due leases are collected first, then each one ended.
                let mut due: Vec<u64> = self.leases_due(self.log_clock_ms()).into_iter().map(|(id, _)| id).collect();
                due.sort_unstable();
                let mut deleted = 0;
                for id in &due {
                    deleted += self.lease_end(*id).unwrap_or(0);
                }
                done(WriteOutcome::LeasesExpired { ids: due, deleted })
            }
            WriteOp::Leased { lease, ops } => {
                let puts: Vec<&[u8]> = ops.iter().filter(|o| matches!(o, BatchOp::Put { .. })).map(BatchOp::key).collect();
                let dels: Vec<&[u8]> = ops.iter().filter(|o| matches!(o, BatchOp::Delete { .. })).map(BatchOp::key).collect();
                self.lease_room(*lease, &puts, &dels)?;
                // A batch of one put (`PUT /v1/kv/{key}?lease=`) answers like a put, with the
                // previous version; any other batch like a batch.
                let single = match ops.as_slice() {
                    [BatchOp::Put { key, .. }] => Some(self.data.get(key.as_slice()).map(|v| v.version)),
                    _ => None,
                };
                let out = self.put_many(index, ops)?;
                for key in puts {
                    self.leases.attach(key, *lease);
                }
                match single {
                    Some(previous_version) => done(WriteOutcome::Put { previous_version }),
                    None => Ok(out),
                }
            }
        }
    }

    fn check_guard(&self, index_in_batch: u32, key: &[u8], guard: Option<&Guard>) -> Result<(), WriteError> {
        let Some(guard) = guard else { return Ok(()) };
        let current = self.data.get(key);
        if guard_holds(guard, current) {
            return Ok(());
        }
        Err(WriteError::GuardFailed {
            index_in_batch,
            key: key.to_vec(),
            guard: guard.clone(),
            current: current.cloned(),
        })
    }

    fn put_many(&mut self, index: u64, ops: &[BatchOp]) -> Output {
        // Phase 1: validate everything against the state before the batch.
        let mut seen = BTreeSet::new();
        for op in ops {
            if !seen.insert(op.key()) {
                return Err(WriteError::DuplicateKey { key: op.key().to_vec() });
            }
        }
        for (i, op) in ops.iter().enumerate() {
            self.check_guard(i as u32, op.key(), op.guard())?;
        }
        // Phase 2: nothing below can fail, so the batch applies in full.
        let (mut puts, mut deletes) = (0u32, 0u32);
        for op in ops {
            match op {
                BatchOp::Put { key, value, .. } => {
                    self.put_raw(key.clone(), value.clone(), index);
                    puts += 1;
                }
                BatchOp::Delete { key, .. } => {
                    self.delete_raw(key);
                    deletes += 1;
                }
            }
        }
        Ok(WriteResult { index, outcome: WriteOutcome::Batch { puts, deletes } })
    }
}
