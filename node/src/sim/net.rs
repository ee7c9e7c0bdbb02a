//! The simulated network between replicas: loss, duplication, delay, cut links (partitions,
//! symmetric or one-way) and held links (a stalled stream: nothing arrives for a while, then
//! everything, in the order sent).

use paxos::{Envelope, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// Link faults and their parameters.
#[derive(Debug, Default)]
pub(super) struct Net {
    /// Probability that a message is lost.
    pub(super) loss: f64,
    /// Probability that a message arrives twice.
    pub(super) dup: f64,
    /// Largest delivery delay (ms); the smallest is 1.
    pub(super) max_delay: u64,
    /// Cut directed links (from, to): everything sent is lost.
    pub(super) cut: BTreeSet<(NodeId, NodeId)>,
    /// Held directed links (from, to) with their release time and what waits on them.
    pub(super) held: BTreeMap<(NodeId, NodeId), (u64, Vec<Envelope>)>,
}

impl Net {
    /// Whether the directed link is cut.
    pub(super) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Keep `env` on its held link, if that link is held.
    pub(super) fn hold(&mut self, env: &Envelope) -> bool {
        match self.held.get_mut(&(env.from.node, env.to)) {
            Some((_, msgs)) => {
                msgs.push(env.clone());
                true
            }
            None => false,
        }
    }

    /// Hold the link until `until`; `true` if it was not held already (schedule a release).
    pub(super) fn start_hold(&mut self, from: NodeId, to: NodeId, until: u64) -> bool {
        match self.held.get_mut(&(from, to)) {
            Some((u, _)) => {
                *u = (*u).max(until);
                false
            }
            None => {
                self.held.insert((from, to), (until, Vec::new()));
                true
            }
        }
    }

    /// Release the link if its time has come: the messages in the order sent, or `Err(Some(t))`
    /// to try again at `t` (the hold was extended), or `Err(None)` if it is not held.
    pub(super) fn release(&mut self, from: NodeId, to: NodeId, now: u64) -> Result<Vec<Envelope>, Option<u64>> {
        match self.held.get(&(from, to)) {
            None => Err(None),
            Some((until, _)) if *until > now => Err(Some(*until)),
            Some(_) => Ok(self.held.remove(&(from, to)).map(|(_, m)| m).unwrap_or_default()),
        }
    }
}
