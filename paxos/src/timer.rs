//! The replica's named timers, kept in one table.
//!
//! Each timer is a deadline; [`crate::Replica::poll_timeout`] reports the earliest, and
//! [`crate::Replica::handle_timeout`] fires every timer whose deadline has come.

use crate::ids::Time;
use std::collections::BTreeMap;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Leader: send heartbeats (commit point, checkpoint, read round).
    Heartbeat,
    /// Candidate: resend `Prepare`; leader: resend `Accept` for slots not yet chosen.
    Retry,
    /// Leader or candidate: step down if no quorum was heard for `leader_lease_ms`.
    Lease,
    /// Leader: propose a partial batch once `batch_delay_ms` has passed.
    Batch,
    /// Anyone behind the known commit point: fetch missing slots again.
    Fetch,
    /// Follower: a read-index request went unanswered (`read_index.rs`).
    ReadIndex,
}

/// The table of armed timers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    deadlines: BTreeMap<Timer, Time>,
}

impl Timers {
    /// Arm (or re-arm) `timer` for `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Time) {
        self.deadlines.insert(timer, at);
    }

    /// Arm `timer` for `at` unless it is already armed earlier.
    pub(crate) fn set_if_later(&mut self, timer: Timer, at: Time) {
        let e = self.deadlines.entry(timer).or_insert(at);
        if *e > at {
            *e = at;
        }
    }

    /// Disarm `timer`.
    pub(crate) fn cancel(&mut self, timer: Timer) {
        self.deadlines.remove(&timer);
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.deadlines.contains_key(&timer)
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Time> {
        self.deadlines.values().min().copied()
    }

    /// Disarm and return every timer due at `now`, in `Timer` order.
    pub(crate) fn take_due(&mut self, now: Time) -> Vec<Timer> {
        let due: Vec<Timer> = self.deadlines.iter().filter(|(_, t)| **t <= now).map(|(k, _)| *k).collect();
        for t in &due {
            self.deadlines.remove(t);
        }
        due
    }
}
