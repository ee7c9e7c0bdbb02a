//! Configurations: who votes and who only learns.
//!
//! A configuration is a value in the log, never a constant: quorums are computed from the
//! configuration that governs a slot. Synod uses the stop-sign rule with a window of one
//! ("Stoppable Paxos", Lamport, Malkhi, Zhou 2008; "Reconfiguring a State Machine", 2010): a
//! reconfiguration chosen at slot `s` governs every slot after `s`, and a leader proposes nothing
//! beyond `s` until `s` is chosen, then runs phase 1 in the new configuration for slots `> s`.

use crate::ids::{Member, NodeId, Slot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The member set in force from a slot on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Counts configuration changes; 0 is the bootstrap configuration.
    pub epoch: u64,
    /// The voting members. A quorum is any strict majority of them.
    pub acceptors: BTreeSet<Member>,
    /// Members that receive the log and apply it but do not vote (joining or recovering).
    pub learners: BTreeSet<Member>,
}

impl Configuration {
    /// The bootstrap configuration: these acceptors, no learners.
    pub fn bootstrap(acceptors: impl IntoIterator<Item = Member>) -> Self {
        Configuration { epoch: 0, acceptors: acceptors.into_iter().collect(), learners: BTreeSet::new() }
    }

    /// The number of acceptors that make a quorum: a strict majority.
    pub fn quorum(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    /// Whether `votes` (acceptors that answered) reach a quorum; voters outside the acceptor set
    /// are not counted.
    pub fn is_quorum<'a>(&self, votes: impl IntoIterator<Item = &'a Member>) -> bool {
        let counted = votes.into_iter().filter(|m| self.acceptors.contains(m)).collect::<BTreeSet<_>>();
        !self.acceptors.is_empty() && counted.len() >= self.quorum()
    }

    /// Whether this exact incarnation votes.
    pub fn is_acceptor(&self, m: &Member) -> bool {
        self.acceptors.contains(m)
    }

    /// Whether the node (in any incarnation) is a member, voting or not.
    pub fn contains_node(&self, node: NodeId) -> bool {
        self.members().any(|m| m.node == node)
    }

    /// The member entry (acceptor or learner) for a node, if any.
    pub fn member(&self, node: NodeId) -> Option<Member> {
        self.members().find(|m| m.node == node).copied()
    }

    /// Every member, acceptors first.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.acceptors.iter().chain(self.learners.iter())
    }

    /// The configuration after `change`, or why it is refused. The result has `epoch + 1`.
    pub fn apply(&self, change: &ConfigChange) -> Result<Configuration, ConfigError> {
        let mut next = self.clone();
        next.epoch += 1;
        match *change {
            ConfigChange::AddLearner(m) => {
                if let Some(old) = self.member(m.node) {
                    if old == m {
                        return Err(ConfigError::AlreadyMember(m));
                    }
                    // A new incarnation replaces the old one: the old one's votes stop counting.
                    next.acceptors.remove(&old);
                    next.learners.remove(&old);
                }
                next.learners.insert(m);
            }
            ConfigChange::Promote(m) => {
                if !self.learners.contains(&m) {
                    return Err(ConfigError::NotALearner(m));
                }
                next.learners.remove(&m);
                next.acceptors.insert(m);
            }
            ConfigChange::Remove(node) => {
                let Some(old) = self.member(node) else { return Err(ConfigError::NotAMember(node)) };
                next.acceptors.remove(&old);
                next.learners.remove(&old);
            }
            // The members stay; the application reads the new version from the log (the core
            // only orders it with the membership changes: one change at a time, stop-sign).
            ConfigChange::SetVersion(_) => {}
        }
        if next.acceptors.is_empty() {
            return Err(ConfigError::NoAcceptorsLeft);
        }
        Ok(next)
    }
}

/// One membership change: the core accepts one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConfigChange {
    /// Add a non-voting member (a new node, or a new incarnation of a known node, which replaces
    /// the old incarnation in whatever role it had).
    AddLearner(Member),
    /// Make a caught-up learner an acceptor.
    Promote(Member),
    /// Remove a node, voting or not.
    Remove(NodeId),
    /// Raise the *cluster version*: the formats every replica may now write (the application's
    /// commands and snapshots; `kvstore::MAX_CLUSTER_VERSION`, docs/upgrades.md). It changes no
    /// member; it is a configuration change so that the core orders it with joins and leaves (one
    /// change in flight at a time), which lets the node check "every member reads this version"
    /// and "this joiner reads the cluster's version" against an exact member set. Appended last:
    /// the earlier variants' encodings are unchanged.
    SetVersion(u32),
}

/// Why a configuration change is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ConfigError {
    /// The member is already in the configuration in that incarnation.
    #[error("{0} is already a member")]
    AlreadyMember(Member),
    /// Only a learner can be promoted.
    #[error("{0} is not a learner")]
    NotALearner(Member),
    /// The node is not in the configuration.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// The change would leave no acceptor at all.
    #[error("the change would leave no acceptor")]
    NoAcceptorsLeft,
    /// The change would leave fewer live acceptors than a quorum of the new configuration.
    #[error("the change would leave no reachable quorum")]
    NoReachableQuorum,
    /// Another change is still in flight.
    #[error("another configuration change is in flight")]
    ChangeInFlight,
    /// The learner has not caught up yet.
    #[error("{member} has learned up to slot {learned}, needs {needed}")]
    NotCaughtUp {
        /// The learner.
        member: Member,
        /// How far it has learned.
        learned: Slot,
        /// How far it must have learned.
        needed: Slot,
    },
}
