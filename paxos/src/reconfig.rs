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
use crate::ids::{RequestId, Slot, Time};
use crate::message::Value;
use crate::replica::{Replica, Role};

/// How far behind the leader's commit point a learner may be and still be promoted.
pub(crate) const PROMOTE_SLACK: u64 = 64;

impl Replica {
    pub(crate) fn propose_config_change(&mut self, now: Time, id: RequestId, change: ConfigChange) -> Result<(), ProposeError> {
        let lease = self.opts.leader_lease_ms;
        let slack = PROMOTE_SLACK.max(2 * self.opts.pipeline_window);
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
            let learned = l.learned.get(&m.node).copied().unwrap_or(Slot(0));
            let needed = Slot(commit.0.saturating_sub(slack));
            if learned < needed {
                return Err(ConfigError::NotCaughtUp { member: m, learned, needed }.into());
            }
        }
        let slot = l.next_slot;
        l.next_slot = slot.next();
        l.stop = Some(slot);
        self.pending.entry(slot).or_default().push(id);
        self.propose_slot(now, slot, Value::Reconfigure { id, change });
        Ok(())
    }
}
