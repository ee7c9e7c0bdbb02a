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
//! ids (`RequestId::node`), which emits `Action::ProposalLost` for the ids it still tracks. If a
//! `Forward` or `ForwardLost` is itself lost, or the leader crashes with the command queued, the
//! follower never hears: its driver's write timeout answers "outcome unknown" (504), which is
//! the truth. Forgotten entries are pruned after [`FORWARD_TRACK_MS`].

use crate::action::Action;
use crate::error::ProposeError;
use crate::ids::{Incarnation, Member, RequestId, Time};
use crate::message::{Command, Message};
use crate::replica::{Replica, Role};

/// Most forwarded command ids a leader remembers for its duplicate filter (about 40 MB).
pub(crate) const MAX_FORWARDS_SEEN: usize = 1_000_000;

/// How long a follower remembers a forwarded command it never heard of again.
pub(crate) const FORWARD_TRACK_MS: u64 = 10_000;

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
        // The leader's incarnation, from its ballot: a forward is meant for one process.
        if self.max_seen.node != leader {
            return Err(ProposeError::NotLeader { leader: Some(leader) });
        }
        let target = self.max_seen.owner();
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
        self.send(leader, Message::Forward { to: target.incarnation, cmds: vec![command] });
        Ok(())
    }

    /// The leader side: queue forwarded commands as our own proposals; refuse what we cannot.
    ///
    /// A duplicate (the network may deliver a `Forward` twice) is ignored, whatever our role
    /// now: proposing it again could choose it twice, and refusing it could report lost a
    /// command whose first copy is still in flight. Ids are remembered for `FORWARD_TRACK_MS`.
    pub(crate) fn on_forward(&mut self, now: Time, from: Member, to: Incarnation, cmds: Vec<Command>) {
        if to != self.me.incarnation {
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
            if self.enqueue(now, cmd).is_err() {
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
            if self.forwarded.get(&id).is_some_and(|(_, to)| *to == from) {
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
}
