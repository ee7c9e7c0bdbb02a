//! The membership decisions, without etcd: which pending request to act on, which
//! [`ConfigChange`] to propose for it, when the barrier is passed, what the failure policy
//! removes, and whether this node may campaign.
//!
//! The driver's membership task (`driver/src/membership.rs`) reads the etcd keys (pending
//! requests, epoch marks, evicted marks, registrations), asks these functions what to do, and
//! does it (takes the lock, proposes through the node, writes marks). `docs/membership.md` tells
//! the whole protocol; the rules are:
//!
//! * requests are looked at oldest first, and the first one that can move is acted on;
//! * **join** `{id, incarnation}`: `AddLearner`, then (once the core's catch-up rule holds)
//!   `Promote`, then the request is complete; a join whose incarnation is not registered yet
//!   waits (a restart posts its request before it registers, and its crashed predecessor's
//!   registration lingers for a lease TTL); one superseded by a newer registration is dropped;
//! * **leave** `{id}`: a leader leaving hands off first; otherwise `Remove(id)`, and once the
//!   configuration no longer holds `id`, the request completes with a removal mark;
//! * the **failure policy** removes an acceptor whose registration has been gone for
//!   `remove_failed_after_ms`, never below a majority of the configured set.

use paxos::{ConfigChange, Configuration, Incarnation, Member, NodeId, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A membership request, as posted under `P/pending/<id>` (one per node id: a later request for
/// the same id replaces an earlier one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PendingChange {
    /// Make this incarnation a learner, then an acceptor once caught up.
    Join {
        /// The node id.
        id: u64,
        /// The incarnation of the process that asked.
        incarnation: u64,
    },
    /// Remove the node (any incarnation).
    Leave {
        /// The node id.
        id: u64,
    },
}

impl PendingChange {
    /// The node the request is about.
    pub fn id(&self) -> u64 {
        match self {
            PendingChange::Join { id, .. } | PendingChange::Leave { id } => *id,
        }
    }
}

/// "This incarnation is at (or was removed at) this epoch."
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochMark {
    /// The incarnation.
    pub incarnation: u64,
    /// The configuration epoch.
    pub epoch: u64,
}

/// Who is registered in etcd now: node id to the incarnation of its live registration.
pub type Registered = BTreeMap<NodeId, u64>;

/// What one look at the pending requests decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Propose this change (once the barrier is passed); then do `after`.
    Propose(ConfigChange, After),
    /// The request is complete: delete it (after writing this removal mark, for a leave, once the
    /// barrier is passed).
    Complete(PendingChange, Option<EpochMark>),
    /// This leader is the one leaving: withdraw from the election.
    HandOff,
}

/// Bookkeeping after a change took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Nothing,
    /// The failure policy removed this node (id, the incarnation removed): record it as evicted
    /// with the epoch of the configuration the change produced.
    Evicted(u64, u64),
}

/// Whether exactly this incarnation is registered.
pub fn live(registered: &Registered, m: &Member) -> bool {
    registered.get(&m.node) == Some(&m.incarnation.0)
}

/// The leader's choice among the pending requests (oldest first): the first one that can move.
/// `promotable` is the core's catch-up rule for a learner (`paxos::Status::promotable`).
pub fn next_step(
    me: Member,
    config: &Configuration,
    pending: &[PendingChange],
    registered: &Registered,
    promotable: impl Fn(Member) -> bool,
) -> Option<Step> {
    pending.iter().find_map(|p| match *p {
        PendingChange::Leave { id } if id == me.node.0 => Some(Step::HandOff),
        PendingChange::Leave { id } => match config.member(NodeId(id)) {
            Some(_) => Some(Step::Propose(ConfigChange::Remove(NodeId(id)), After::Nothing)),
            // Removed: once every remaining member runs the configuration without it, tell the
            // leaving node (it may now drop out of discovery). Its incarnation is whatever is
            // registered (a leaving node is still alive; a dead one cannot read the mark anyway).
            None => {
                let incarnation = registered.get(&NodeId(id)).copied().unwrap_or(0);
                Some(Step::Complete(p.clone(), Some(EpochMark { incarnation, epoch: config.epoch })))
            }
        },
        PendingChange::Join { id, incarnation } => {
            let m = Member { node: NodeId(id), incarnation: Incarnation(incarnation) };
            match registered.get(&m.node).copied() {
                // Superseded by a newer process (it posts its own request): drop it.
                Some(reg) if reg > incarnation => Some(Step::Complete(p.clone(), None)),
                // Still the registration of an older process: wait for the new one; dropping the
                // request here would leave the restart out for good.
                Some(reg) if reg < incarnation => None,
                // Not registered (yet, or any more): nothing to do now.
                None => None,
                Some(_) if config.is_acceptor(&m) => Some(Step::Complete(p.clone(), None)),
                Some(_) if config.learners.contains(&m) => promotable(m).then_some(Step::Propose(ConfigChange::Promote(m), After::Nothing)),
                Some(_) => Some(Step::Propose(ConfigChange::AddLearner(m), After::Nothing)),
            }
        }
    })
}

/// The barrier: the live members of `config` that have not yet reported running it (empty:
/// passed). A member that is not registered does not hold the barrier up.
pub fn barrier_behind(config: &Configuration, registered: &Registered, epochs: &BTreeMap<u64, EpochMark>) -> Vec<NodeId> {
    config
        .members()
        .filter(|m| live(registered, m))
        .filter(|m| !epochs.get(&m.node.0).is_some_and(|e| e.incarnation == m.incarnation.0 && e.epoch >= config.epoch))
        .map(|m| m.node)
        .collect()
}

/// Whether this node may campaign: an acceptor of the configuration it runs that is neither
/// leaving nor removed.
pub fn eligible(me: Member, config: &Configuration, pending: &[PendingChange], removed: bool) -> bool {
    let leaving = pending.iter().any(|p| matches!(p, PendingChange::Leave { id } if *id == me.node.0));
    config.is_acceptor(&me) && !leaving && !removed
}

/// What the failure policy decided about one acceptor it would remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Remove it.
    Remove(Member),
    /// It failed, but removing it would go below a majority of the configured set.
    Kept {
        /// The failed acceptor.
        member: Member,
        /// Acceptors left after the removal.
        left: usize,
        /// The configured set's size.
        configured: usize,
    },
}

/// The failure policy's memory: since when each acceptor's registration has been gone. Forget it
/// (a fresh one) whenever this node stops leading.
#[derive(Clone, Debug)]
pub struct FailurePolicy {
    me: Member,
    after_ms: u64,
    absent_since: BTreeMap<NodeId, Time>,
}

impl FailurePolicy {
    /// The policy of node `me` (never a candidate itself), removing acceptors gone `after_ms`.
    pub fn new(me: Member, after_ms: u64) -> Self {
        FailurePolicy { me, after_ms, absent_since: BTreeMap::new() }
    }

    /// Look at the acceptors at `now`: the first one (in id order) whose registration has been
    /// gone for `after_ms` (since this policy first saw it gone) and who has no pending request is a candidate; `evicted` (ids the
    /// policy removed earlier and that have not come back) counts into the configured set, of
    /// which a majority must stay.
    pub fn decide(
        &mut self,
        now: Time,
        config: &Configuration,
        registered: &Registered,
        pending: &[PendingChange],
        evicted: &BTreeMap<u64, EpochMark>,
    ) -> Option<Verdict> {
        self.absent_since.retain(|n, _| config.contains_node(*n));
        let mut candidate = None;
        for m in &config.acceptors {
            if *m == self.me || live(registered, m) {
                self.absent_since.remove(&m.node);
                continue;
            }
            let since = *self.absent_since.entry(m.node).or_insert(now);
            let requested = pending.iter().any(|p| p.id() == m.node.0);
            if candidate.is_none() && !requested && now.0.saturating_sub(since.0) >= self.after_ms {
                candidate = Some(*m);
            }
        }
        let m = candidate?;
        let configured = config.acceptors.len() + evicted.keys().filter(|id| !config.contains_node(NodeId(**id))).count();
        let left = config.acceptors.len() - 1;
        if left < configured / 2 + 1 {
            return Some(Verdict::Kept { member: m, left, configured });
        }
        Some(Verdict::Remove(m))
    }

    /// Forget every absence (this node does not lead).
    pub fn clear(&mut self) {
        self.absent_since.clear();
    }
}

#[cfg(test)]
#[path = "membership_test.rs"]
mod tests;

/// The cluster version the leader raises to now, if any: the highest version that every member
/// of `config` reads (`reads`, from their registrations) and this build reads, once it is above
/// the version the cluster runs. A member that is not registered (down, or restarting) holds the
/// version where it is: what a process reads is known only while it runs, and the one that
/// comes back may be an older build (a rolling downgrade).
pub fn version_to_raise(config: &Configuration, runs: u32, max: u32, registered: &Registered, reads: impl Fn(NodeId) -> u32) -> Option<u32> {
    if config.members().any(|m| !live(registered, m)) {
        return None;
    }
    let v = config.members().map(|m| reads(m.node)).min()?.min(max);
    (v > runs).then_some(v)
}

/// Whether a join can move under the cluster version: the joining process reads `runs`.
pub fn join_allowed(p: &PendingChange, runs: u32, reads: impl Fn(NodeId) -> u32) -> bool {
    match *p {
        PendingChange::Join { id, .. } => reads(NodeId(id)) >= runs,
        PendingChange::Leave { .. } => true,
    }
}
