//! Linearizable reads served by followers: the read index (Raft thesis, 6.4).
//!
//! A follower that is asked for a linearizable read does not forward the read. It asks the
//! leader for a read index (`ReadIndex { id }`), on behalf of every read that arrived before it
//! sent the request. The leader treats the request as one of its own reads: it joins the next
//! read round, which starts after the request arrived and must be confirmed by a quorum of the
//! leader's configuration (and the leader's election barrier must be committed, and no stop
//! sign pending: rule 4). It then answers `ReadIndexReply { id, index: Some(i) }` with the commit
//! point of the round's start. The follower hands `ReadsReady { index: i }` to its driver, which
//! serves the reads from its own state once it has applied `i`.
//!
//! Why that is linearizable: a write acknowledged before the read arrived at the follower was
//! chosen before the request reached the leader, so it is at or below the commit point of any
//! round the leader starts afterwards, provided the leader still leads then, which the quorum
//! round confirms. The follower's state after applying `i` contains it.
//!
//! One request is outstanding at a time; reads that arrive meanwhile wait for the next request
//! (they arrived after the outstanding one was sent, so its answer does not cover them). A
//! request unanswered within `2 * retry_ms` fails its reads (`ReadsFailed`), and the driver
//! falls back to forwarding; so does a follower that knows no leader, or that starts a
//! candidacy.

use crate::action::Action;
use crate::ids::{Incarnation, Member, NodeId, ReadId, Slot, Time};
use crate::message::Message;
use crate::replica::{Replica, Role};
use crate::timer::Timer;

/// A follower's read-index requests.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadIndexClient {
    /// The last request number used (unique within the incarnation).
    next_id: u64,
    /// The request in flight: its number, whom it went to, and the reads it covers.
    outstanding: Option<(u64, NodeId, Vec<ReadId>)>,
    /// Reads that arrived after the request in flight was sent.
    waiting: Vec<ReadId>,
}

impl ReadIndexClient {
    /// Start request numbers at `base` (a durable restart keeps the incarnation: numbers must
    /// not repeat those of the previous process, whose answers may still be in flight).
    pub(crate) fn start_at(&mut self, base: u64) {
        self.next_id = self.next_id.max(base);
    }
}

impl Replica {
    /// A linearizable read on a follower that knows a leader: ask that leader for a read index.
    /// `false` if this replica cannot (it leads or campaigns, or knows no leader).
    pub(crate) fn follower_read(&mut self, now: Time, read: ReadId) -> bool {
        if !matches!(self.role, Role::Follower) || self.known_leader.is_none_or(|l| l == self.me.node) {
            return false;
        }
        self.read_index.waiting.push(read);
        if self.read_index.outstanding.is_none() {
            self.send_read_index(now);
        }
        true
    }

    fn send_read_index(&mut self, now: Time) {
        let Some(leader) = self.known_leader.filter(|l| *l != self.me.node) else {
            let reads = std::mem::take(&mut self.read_index.waiting);
            self.fail_reads(reads, None);
            return;
        };
        if self.read_index.waiting.is_empty() {
            return;
        }
        self.read_index.next_id += 1;
        let id = self.read_index.next_id;
        let reads = std::mem::take(&mut self.read_index.waiting);
        self.read_index.outstanding = Some((id, leader, reads));
        self.send(leader, Message::ReadIndex { id });
        self.timers.set(Timer::ReadIndex, now.plus(2 * self.opts.retry_ms));
    }

    /// The leader answered (or refused) a read-index request.
    pub(crate) fn on_read_index_reply(&mut self, now: Time, from: Member, id: u64, incarnation: Incarnation, index: Option<Slot>) {
        // Request numbers restart with each incarnation: an answer meant for our predecessor
        // (its request of the same number arrived earlier, so its round may predate ours) is
        // not ours (found by the simulator: a restarted follower served a stale read).
        let matches = incarnation == self.me.incarnation
            && self.read_index.outstanding.as_ref().is_some_and(|(i, to, _)| *i == id && *to == from.node);
        if !matches {
            self.counters.dropped_messages += 1;
            return;
        }
        let (_, _, reads) = self.read_index.outstanding.take().expect("checked above");
        self.timers.cancel(Timer::ReadIndex);
        match index {
            Some(index) => self.actions.push_back(Action::ReadsReady { reads, index }),
            None => self.fail_reads(reads, self.known_leader.filter(|l| *l != from.node)),
        }
        self.send_read_index(now);
    }

    /// No answer in time: fail the reads in flight, and ask again for those that wait.
    pub(crate) fn on_read_index_timeout(&mut self, now: Time) {
        if let Some((_, _, reads)) = self.read_index.outstanding.take() {
            self.fail_reads(reads, self.known_leader);
        }
        self.send_read_index(now);
    }

    /// Fail every read this replica asked (or was about to ask) a leader about: it campaigns.
    pub(crate) fn fail_follower_reads(&mut self) {
        let mut reads = self.read_index.outstanding.take().map(|(_, _, r)| r).unwrap_or_default();
        reads.append(&mut self.read_index.waiting);
        self.timers.cancel(Timer::ReadIndex);
        self.fail_reads(reads, None);
    }

    fn fail_reads(&mut self, reads: Vec<ReadId>, leader: Option<NodeId>) {
        if !reads.is_empty() {
            self.actions.push_back(Action::ReadsFailed { reads, leader });
        }
    }

    /// A follower asks us (the leader, we hope) for a read index.
    pub(crate) fn on_read_index(&mut self, now: Time, from: Member, id: u64) {
        let Role::Leader(l) = &mut self.role else {
            self.send(from.node, Message::ReadIndexReply { id, incarnation: from.incarnation, index: None });
            return;
        };
        #[cfg(feature = "sim")]
        if self.opts.bugs.read_index_without_round {
            let index = self.log.commit;
            self.send(from.node, Message::ReadIndexReply { id, incarnation: from.incarnation, index: Some(index) });
            return;
        }
        // One request per follower: a newer one means the follower gave up on the older (an
        // honest follower has one in flight), which is refused, so one peer cannot make the
        // leader hold any number of requests while reads are blocked (found by review).
        let mut superseded = Vec::new();
        l.remote_waiting.retain(|(m, old)| if *m == from { superseded.push(*old); false } else { true });
        for round in l.rounds.values_mut() {
            round.remote.retain(|(m, old)| if *m == from { superseded.push(*old); false } else { true });
        }
        l.remote_waiting.push((from, id));
        for old in superseded {
            self.send(from.node, Message::ReadIndexReply { id: old, incarnation: from.incarnation, index: None });
        }
        let Role::Leader(l) = &mut self.role else { return };
        if l.rounds.is_empty() {
            self.start_read_round(now);
        }
    }
}
