//! Writes through followers: commands forwarded to the leader inside the peer stream.
//!
//! A follower that takes a client write does not relay the client's request. Its driver calls
//! [`Replica::forward`], which sends the command to the leader in `Forward { cmds }`; the leader
//! queues it as if a client had proposed it there, and batches it into slots with everything
//! else. The follower learns the outcome the way it learns everything: by applying the log. An
//! `Apply` carrying the command's id answers its client from the follower's own state machine
//! (the same output the leader computes: the state machine is deterministic).
//!
//! A forwarded command that is definitely not chosen is reported back: the leader refused it
//! (not leading, backpressure, too large) or lost it (its queue when it stepped down, or its slot
//! went to another value). The leader sends `ForwardLost { ids }` to the replica that minted the
//! ids (`RequestId::node`), which emits `Action::ProposalLost` for the ids it still tracks.
//!
//! ## Settling in-flight forwards: the fence
//!
//! If the leader dies (or a `Forward` or `ForwardLost` is lost), nobody reports the command, and
//! its client would wait for the driver's write timeout. A later leader settles it instead. A
//! `Forward` names the ballot it is meant for, and a leader takes it only under that ballot, so
//! a forwarded command is only ever proposed under the one ballot `to`. A leader's proposals
//! never run more than `MAX_PIPELINE_WINDOW + 1` slots past what it knows chosen (the window, and
//! one reconfiguration past it behind its stop sign), and re-proposals of adopted values stay in
//! slots some earlier proposal reached, so every slot ever accepted under a ballot below `b` lies
//! at or below `M + MAX_PIPELINE_WINDOW + 1`, where `M` is the highest slot any promise of `b`'s
//! phase 1 reported (or its commit point): whatever was chosen under lower ballots was accepted by
//! a quorum, which meets the promising quorum. That bound is `b`'s **fence**; the leader fills
//! the slots up to it (with no-ops when it has nothing to propose) and announces it in its
//! heartbeats. Once the log is chosen up to the fence, a command forwarded to a ballot below `b`
//! that was not applied is not chosen and never will be (every slot it could be in is decided,
//! and later leaders adopt only values accepted in slots), so the forwarder reports it lost and
//! its driver proposes it again, once, under a fresh id: the client gets its normal answer within
//! the failover time plus a few round trips, and nothing is applied twice. A forward made before
//! a snapshot install is never settled this way (its slot may lie inside the snapshot). Entries
//! nobody settles are pruned after [`FORWARD_TRACK_MS`] (the driver's write timeout answers
//! "outcome unknown", 504).

use crate::action::Action;
use crate::error::ProposeError;
use crate::ids::{Ballot, Member, RequestId, Slot, Time};
use crate::message::{Command, Message};
use crate::replica::{Replica, Role};

/// Most forwarded command ids a leader remembers for its duplicate filter (about 40 MB).
pub(crate) const MAX_FORWARDS_SEEN: usize = 1_000_000;

/// How long a follower remembers a forwarded command it never heard of again.
pub(crate) const FORWARD_TRACK_MS: u64 = 10_000;

/// The largest pipeline window any leader uses (`Options::pipeline_window` is capped to it): the
/// fence's reach past what a new leader's phase 1 saw rests on it.
pub const MAX_PIPELINE_WINDOW: u64 = 64;

/// A leader's fence (module docs): past the highest slot its phase 1 saw, the window and one
/// reconfiguration.
pub(crate) fn fence_after(reach: Slot) -> Slot {
    Slot(reach.0.saturating_add(MAX_PIPELINE_WINDOW + 1))
}

impl Replica {
    /// Hand a client command to the leader this follower knows (see the module docs). The id
    /// must have been minted by this replica (`RequestId::node` is this node), so that a loss
    /// report can find its way back. `NotLeader { leader: None }` if no leader is known;
    /// `NotLeader { leader: Some(me) }` is never returned: a leader or candidate proposes instead.
    pub fn forward(&mut self, now: Time, command: Command) -> Result<(), ProposeError> {
        if !matches!(self.role, Role::Follower) {
            return self.propose(now, command);
        }
        let Some(leader) = self.known_leader.filter(|l| *l != self.me.node) else {
            return Err(ProposeError::NotLeader { leader: None });
        };
        // The leader's ballot: a forward is meant for one process, under one ballot.
        if self.max_seen.node != leader {
            return Err(ProposeError::NotLeader { leader: Some(leader) });
        }
        let target = self.max_seen;
        let limit = self.opts.batch_max_bytes;
        if command.payload.len() > limit {
            return Err(ProposeError::TooLarge { size: command.payload.len(), limit });
        }
        self.expire_forwards(now);
        if self.forwarded.len() >= self.opts.max_queued_commands {
            return Err(ProposeError::Backpressure);
        }
        self.forwarded.insert(command.id, (now, target));
        self.forward_times.push_back((now, command.id));
        self.counters.commands_forwarded += 1;
        self.send(leader, Message::Forward { to: target, cmds: vec![command] });
        Ok(())
    }

    /// The leader side: queue forwarded commands as our own proposals; refuse what we cannot.
    ///
    /// A duplicate (the network may deliver a `Forward` twice) is ignored, whatever our role
    /// now: proposing it again could choose it twice, and refusing it could report lost a
    /// command whose first copy is still in flight. Ids are remembered for `FORWARD_TRACK_MS`.
    /// A command meant for another ballot of ours (we stepped down or campaign again since) is
    /// refused: it may be proposed under `to` only (the fence rests on it).
    pub(crate) fn on_forward(&mut self, now: Time, from: Member, to: Ballot, cmds: Vec<Command>) {
        // Meant for a process before a durable restart of ours (same incarnation; review of issue
        // 25, finding 2: our duplicate filter died with it): it may have proposed the command, so
        // neither take nor refuse it, as for a predecessor incarnation.
        let earlier_process = self.first_ballot.is_none_or(|first| to < first);
        if to.owner() != self.me || earlier_process {
            // Sent to our predecessor, which may have proposed it: neither take nor refuse it.
            self.counters.dropped_messages += 1;
            return;
        }
        let mut refused = Vec::new();
        self.expire_forwards(now);
        // Bounded work and memory from peer input (found by review): an honest follower sends
        // one command per message, and the filter holds `FORWARD_TRACK_MS` worth of forwarded
        // commands, at most `MAX_FORWARDS_SEEN` (100 k/s for 10 s; a first cap of 8 queues'
        // worth, 80 k, was reached by a real load and turned forwarded writes into 504s).
        if cmds.len() > self.opts.batch_max_commands || self.forwards_seen.len() >= MAX_FORWARDS_SEEN {
            // Neither taken nor refused: the forwarder's driver times out ("outcome unknown").
            self.counters.dropped_messages += 1;
            return;
        }
        for cmd in cmds {
            if cmd.id.node != from.node {
                // A loss report would go to the wrong replica: not a command we can take.
                self.counters.dropped_messages += 1;
                continue;
            }
            let seen = !self.forwards_seen.insert(cmd.id);
            if !seen {
                self.forward_times.push_back((now, cmd.id));
            }
            #[cfg(feature = "sim")]
            let seen = seen && !self.opts.bugs.forward_twice;
            if seen {
                self.counters.dropped_messages += 1;
                continue;
            }
            let id = cmd.id;
            let mine = match &self.role {
                Role::Leader(l) => Some(l.ballot),
                Role::Candidate(c) => Some(c.ballot),
                Role::Follower => None,
            };
            #[cfg(feature = "sim")]
            let mine = if self.opts.bugs.forward_any_ballot { Some(to) } else { mine };
            if mine != Some(to) || self.enqueue(now, cmd).is_err() {
                refused.push(id);
            }
        }
        if !refused.is_empty() {
            self.send(from.node, Message::ForwardLost { ids: refused });
        }
    }

    /// Our leader says these forwarded commands are not chosen and never will be.
    pub(crate) fn on_forward_lost(&mut self, from: Member, ids: Vec<RequestId>) {
        for id in ids {
            // Only the process we forwarded to can know the command is lost.
            if self.forwarded.get(&id).is_some_and(|(_, to)| to.owner() == from) {
                self.forwarded.remove(&id);
                self.counters.proposals_lost += 1;
                self.actions.push_back(Action::ProposalLost { id });
            } else {
                self.counters.dropped_messages += 1;
            }
        }
    }

    /// A command of ours (or one forwarded to us) is definitely not chosen: tell our driver,
    /// and the replica that minted it if that is another member (a forwarder).
    pub(crate) fn report_lost(&mut self, id: RequestId) {
        self.counters.proposals_lost += 1;
        self.actions.push_back(Action::ProposalLost { id });
        let member = self.log.current_config().is_some_and(|c| c.contains_node(id.node));
        if id.node != self.me.node && member {
            self.send(id.node, Message::ForwardLost { ids: vec![id] });
        }
    }

    /// An applied value settles the forwarded commands it carries.
    pub(crate) fn settle_forwarded(&mut self, ids: &[RequestId]) {
        if !self.forwarded.is_empty() {
            for id in ids {
                self.forwarded.remove(id);
            }
        }
    }

    /// Forget forwarded commands (ours, and those we received) older than `FORWARD_TRACK_MS`.
    /// Ids enter `forward_times` in time order, so this is amortised O(1) per command.
    fn expire_forwards(&mut self, now: Time) {
        while let Some((t, id)) = self.forward_times.front().copied() {
            if t.plus(FORWARD_TRACK_MS) > now {
                break;
            }
            self.forward_times.pop_front();
            if self.forwarded.get(&id).is_some_and(|(sent, _)| *sent == t) {
                self.forwarded.remove(&id);
            }
            self.forwards_seen.remove(&id);
        }
    }

    /// Whether `id` was forwarded by us and is not settled yet.
    pub(crate) fn forwarding(&self, id: RequestId) -> bool {
        self.forwarded.contains_key(&id)
    }

    /// A leader of `ballot` (us, or one whose heartbeat we took) announced its fence.
    pub(crate) fn note_fence(&mut self, ballot: Ballot, fence: Slot) {
        if fence == Slot(0) {
            // No fence announced (yet) under this ballot.
            return;
        }
        match &mut self.fence {
            Some((b, f)) if *b == ballot => *f = (*f).max(fence),
            Some((b, _)) if *b > ballot => return,
            _ => self.fence = Some((ballot, fence)),
        }
        self.settle_by_fence();
    }

    /// Once the log is chosen up to the newest fence, report lost every command we forwarded to
    /// a lower ballot that was not applied (module docs). One pass per fence: every forward made
    /// after we heard of the fence's ballot is meant for it or a higher one.
    pub(crate) fn settle_by_fence(&mut self) {
        let Some((ballot, fence)) = self.fence else { return };
        if self.log.commit < fence || self.fence_settled >= ballot {
            return;
        }
        self.fence_settled = ballot;
        #[cfg(feature = "sim")]
        if self.opts.bugs.fence_ignores_install {
            self.forwards_uncertain_until = None;
        }
        let uncertain = self.forwards_uncertain_until;
        let lost: Vec<RequestId> = self
            .forwarded
            .iter()
            .filter(|(_, (sent, to))| *to < ballot && uncertain.is_none_or(|u| *sent > u))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.forwarded.remove(&id);
            self.counters.proposals_lost += 1;
            self.counters.forwards_fenced += 1;
            self.actions.push_back(Action::ProposalLost { id });
        }
    }
}
