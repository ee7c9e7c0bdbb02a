//! The acceptor: the only state whose loss breaks safety.
//!
//! It keeps the highest ballot it promised and, per slot, the last value it accepted (Paxos Made
//! Simple, 2.2). Every change is announced to the driver as an [`crate::Persist`] barrier before
//! the reply that depends on it (`Promise`, `Accepted`) is sent. The acceptor never learns what
//! is chosen; that is the learner's job.

use crate::ids::{Ballot, Member, Slot};
use crate::message::{AcceptedEntry, Value};
use std::collections::BTreeMap;

/// The acceptor's durable state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Acceptor {
    /// The highest ballot promised (never decreases within an incarnation).
    pub(crate) promised: Ballot,
    /// Which incarnation `promised` was promised to: an equal ballot from another incarnation of
    /// the same node (which may have forgotten what it proposed under it) is refused. Since
    /// ballots carry the incarnation, an honest sender's ballot already differs from its
    /// predecessor's; this check remains as a second line against a sender that is not the
    /// ballot's owner (the core does not otherwise check that `from` owns the ballot).
    pub(crate) promised_to: Option<Member>,
    /// Per slot, the ballot and value last accepted.
    pub(crate) accepted: BTreeMap<Slot, (Ballot, Value)>,
}

/// What a phase 1a or 2a request does to the acceptor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Vote {
    /// Refused: the acceptor promised this higher (or conflicting) ballot.
    Refuse(Ballot),
    /// Granted; `raised` says whether the promise changed (and must be persisted).
    Grant { raised: bool },
}

impl Acceptor {
    /// May `ballot` from `from` be granted? Raises the promise if so.
    pub(crate) fn promise(&mut self, ballot: Ballot, from: Member) -> Vote {
        if ballot < self.promised {
            return Vote::Refuse(self.promised);
        }
        if ballot == self.promised && self.promised_to.is_some_and(|m| m != from) {
            // Same ballot, other sender: it may not remember what was proposed under it (rule 8).
            return Vote::Refuse(self.promised);
        }
        let raised = ballot > self.promised;
        self.promised = ballot;
        self.promised_to = Some(from);
        Vote::Grant { raised }
    }

    /// The values accepted at or after `first`, in slot order, up to `page_bytes` (payload and 32
    /// bytes a value; at least one value); `true` if more follow above the last one returned.
    pub(crate) fn accepted_from(&self, first: Slot, page_bytes: usize) -> (Vec<AcceptedEntry>, bool) {
        let mut page = Vec::new();
        let mut bytes = 0;
        for (s, (b, v)) in self.accepted.range(first..) {
            // Slot and ballot count too, so a page of no-ops is bounded as well.
            let size = v.payload_bytes() + 32;
            if !page.is_empty() && bytes + size > page_bytes {
                return (page, true);
            }
            bytes += size;
            page.push(AcceptedEntry { slot: *s, ballot: *b, value: v.clone() });
        }
        (page, false)
    }

    /// Record an accepted value (the caller checked the ballot with [`Acceptor::promise`]).
    pub(crate) fn accept(&mut self, slot: Slot, ballot: Ballot, value: Value) {
        self.accepted.insert(slot, (ballot, value));
    }

    /// Forget every slot at or below `upto` (disposed by a checkpoint or a snapshot).
    pub(crate) fn dispose_through(&mut self, upto: Slot) {
        self.accepted = self.accepted.split_off(&upto.next());
    }
}
