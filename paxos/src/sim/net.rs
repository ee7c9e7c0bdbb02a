//! The simulated network: loss, duplication, reordering by random delay, blocked links
//! (partitions, symmetric or one-way) and **held links**.
//!
//! A held link is what a stalled gRPC stream does: nothing sent on it arrives for a while (0.5 to
//! 5 s), then everything arrives at once, in the order it was sent. Messages held across a
//! leader change or a stop sign arrive in a world that moved on: a stale acknowledgement, an old
//! promise, an `Accept` of a deposed leader. Short random delays alone never produce that.

use crate::ids::{NodeId, Time};
use crate::message::Envelope;
use std::collections::{BTreeMap, BTreeSet};

/// Messages waiting on a held link until `until`.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) until: Time,
    pub(super) msgs: Vec<Envelope>,
}

/// Link faults and their parameters.
#[derive(Debug, Default)]
pub(super) struct Net {
    pub(super) loss: f64,
    pub(super) dup: f64,
    pub(super) max_delay: u64,
    /// Blocked directed links (from, to): everything sent is lost.
    pub(super) blocked: BTreeSet<(NodeId, NodeId)>,
    /// Held directed links (from, to): everything sent waits, in order, until the release.
    pub(super) held: BTreeMap<(NodeId, NodeId), Held>,
}

impl Net {
    /// Whether the directed link is blocked.
    pub(super) fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Hold `env` if its link is held (it is then delivered on release); `false` otherwise.
    pub(super) fn hold(&mut self, env: &Envelope) -> bool {
        match self.held.get_mut(&(env.from.node, env.to)) {
            Some(h) => {
                h.msgs.push(env.clone());
                true
            }
            None => false,
        }
    }

    /// Start holding the link until `until` (extending a hold already in place). `true` if the
    /// link was not held before (the caller schedules the release).
    pub(super) fn start_hold(&mut self, from: NodeId, to: NodeId, until: Time) -> bool {
        match self.held.get_mut(&(from, to)) {
            Some(h) => {
                h.until = h.until.max(until);
                false
            }
            None => {
                self.held.insert((from, to), Held { until, msgs: Vec::new() });
                true
            }
        }
    }

    /// The link's release is due at `now`: its messages in the order sent, or `None` if the hold
    /// was extended (the returned time is when to try again).
    pub(super) fn release(&mut self, from: NodeId, to: NodeId, now: Time) -> Result<Vec<Envelope>, Option<Time>> {
        match self.held.get(&(from, to)) {
            None => Err(None),
            Some(h) if h.until > now => Err(Some(h.until)),
            Some(_) => Ok(self.held.remove(&(from, to)).map(|h| h.msgs).unwrap_or_default()),
        }
    }

    /// Every held link, for releasing them all at once when the network heals.
    pub(super) fn held_links(&self) -> Vec<(NodeId, NodeId)> {
        self.held.keys().copied().collect()
    }
}
