//! Reconfiguration: the stop-sign rule ("Stoppable Paxos"; Lamport, Malkhi, Zhou, 2008).
//!
//! A `Reconfigure` chosen at slot `s` governs every slot `> s`. The leader that proposes it at
//! `s` proposes nothing after `s` until `s` is chosen; then it runs phase 1 again, with the same
//! ballot, for the slots `> s`, counting promises only from the new configuration's acceptors
//! (`leader.rs`, `pass_stop_sign`). A new leader that adopts a `Reconfigure` at `s` in its phase 1
//! treats it the same way. So the acceptor set of configuration `e+1` votes on slots `> s` only.
//!
//! `propose_config` admits one change at a time, refuses a change whose new acceptor set has no
//! quorum among the acceptors heard within the lease, and promotes only a learner that has
//! learned up to the leader's commit point minus `max(64, 2 * pipeline_window)` slots.

use crate::config::{ConfigChange, ConfigError};
use crate::error::ProposeError;
use crate::ids::{Member, RequestId, Slot, Time};
use crate::message::Value;
use crate::replica::{Replica, Role};

/// How far behind the leader's commit point a learner may be and still be promoted.
pub(crate) const PROMOTE_SLACK: u64 = 64;

impl Replica {
    pub(crate) fn propose_config_change(&mut self, now: Time, id: RequestId, change: ConfigChange) -> Result<(), ProposeError> {
        let lease = self.opts.leader_lease_ms;
        let slack = self.promote_slack();
        let commit = self.log.commit;
        let me = self.me;
        let Role::Leader(l) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader: self.known_leader.filter(|n| *n != me.node) });
        };
        if l.stop.is_some() {
            return Err(ConfigError::ChangeInFlight.into());
        }
        let next = l.config.apply(&change)?;
        let live = next
            .acceptors
            .iter()
            .filter(|m| **m == me || l.last_heard.get(m).is_some_and(|t| t.plus(lease) > now))
            .count();
        if live < next.quorum() {
            return Err(ConfigError::NoReachableQuorum.into());
        }
        if let ConfigChange::Promote(m) = change {
            caught_up(m, self.learned.get(&m).copied().unwrap_or_default(), commit, slack)?;
        }
        let slot = l.next_slot;
        l.next_slot = slot.next();
        l.stop = Some(slot);
        self.pending.entry(slot).or_default().push(id);
        let value = Value::Reconfigure { id, change };
        // Proposed once every slot before it is chosen (the slot is ours meanwhile: the stop
        // sign holds everything after it): decided knowing every earlier change, so no later
        // leader can adopt an older, unchosen stop sign below it (review of issue 30).
        let wait = commit.next() < slot;
        #[cfg(feature = "sim")]
        let wait = wait && !self.opts.bugs.change_over_inflight;
        if wait {
            l.change = Some((slot, value));
        } else {
            self.propose_slot(now, slot, value);
        }
        Ok(())
    }
}

impl Replica {
    /// How far behind the commit point a learner may have learned and still be promoted:
    /// `max(64, 2 * pipeline_window)` slots.
    pub(crate) fn promote_slack(&self) -> u64 {
        PROMOTE_SLACK.max(2 * self.opts.pipeline_window)
    }

    /// Would `propose_config(Promote(member))` pass the catch-up rule now (the member has learned
    /// at least `commit - promote_slack`)? Only a leader hears learned points; elsewhere every
    /// member counts as having learned nothing. The other checks of `propose_config` (leadership,
    /// a change in flight, a reachable quorum) are not made here.
    pub fn promotable(&self, member: Member) -> Result<(), ConfigError> {
        let learned = match &self.role {
            Role::Leader(_) => self.learned_by(&member),
            _ => Slot(0),
        };
        caught_up(member, learned, self.log.commit, self.promote_slack())
    }
}

/// The catch-up rule for promoting `member`, which has learned up to `learned`.
pub(crate) fn caught_up(member: Member, learned: Slot, commit: Slot, slack: u64) -> Result<(), ConfigError> {
    let needed = Slot(commit.0.saturating_sub(slack));
    if learned < needed {
        return Err(ConfigError::NotCaughtUp { member, learned, needed });
    }
    Ok(())
}
