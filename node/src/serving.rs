//! The serving rule and the leader-silence check.
//!
//! **Serving.** A replica answers reads from its own state only while [`Node::serving`] holds: it
//! has a configuration it belongs to (bootstrapped, or installed a snapshot), has heard from a
//! leader in this incarnation and applied up to the commit point it knew at that moment (the
//! *catch-up target*, fixed once), is not more than `max_read_lag_slots` behind the highest commit
//! point it has heard of (nor, if set, longer than `max_read_staleness_ms` without word from the
//! leader), and was not removed from the cluster. Otherwise a sequential read is refused with
//! [`Refused::NotServing`] (the REST layer forwards it to the leader, or answers 503), and a
//! removed replica refuses everything with [`Refused::Removed`] (410).
//!
//! **Suspicion.** An acceptor that does not lead and has heard nothing from the leader it knows
//! for `suspect_leader_after_ms` emits [`Output::Suspect`]`(Some(..))`; it withdraws it
//! (`Suspect(None)`) as soon as that leader speaks again or another one is known. The driver's
//! etcd task turns a majority of suspicions into the revocation of the leader's election lease.

use crate::node::{Node, PendingRead};
use crate::types::{NotServing, Output, Refused, Removal, Suspicion};
use paxos::Time;
use tracing::{debug, info, warn};

impl Node {
    pub(crate) fn lag_slots(&self) -> u64 {
        self.replica.known_commit().0.saturating_sub(self.applied_slot.0)
    }

    /// Milliseconds since this node last heard from the leader, as of the latest input.
    pub(crate) fn last_contact_ms(&self) -> Option<u64> {
        // A leader's contact is its last quorum contact as of now (with one acceptor: now), not
        // as of its previous input.
        let leading = self.leader == Some(self.settings.me.node);
        let contact = if leading { self.replica.quorum_contact(self.now).or(self.leader_contact) } else { self.leader_contact };
        contact.map(|t| self.now.0.saturating_sub(t.0))
    }

    fn is_member(&self) -> bool {
        self.config.members().any(|m| *m == self.settings.me)
    }

    /// Whether reads may be answered from this replica's state now (see the module docs).
    pub fn serving(&self) -> Result<(), NotServing> {
        if let Some(r) = self.removed {
            return Err(NotServing::Removed(r));
        }
        if let Some(why) = &self.halted {
            return Err(NotServing::Halted(why.clone()));
        }
        if !self.caught_up {
            let why = if !self.is_member() {
                "catching up: not yet a member with a configuration (waiting to be added and sent a snapshot)".to_string()
            } else {
                match self.catch_up_target {
                    None => "catching up: no word from a leader yet".to_string(),
                    Some(t) => format!("catching up: applied {} of {}", self.applied_slot.0, t.0),
                }
            };
            return Err(NotServing::CatchingUp(why));
        }
        let lag = self.lag_slots();
        let bound = self.settings.max_read_lag_slots;
        if lag > bound {
            return Err(NotServing::Lagging(format!(
                "lagging: applied {} of {} ({lag} slots behind, bound {bound})",
                self.applied_slot.0,
                self.replica.known_commit().0,
            )));
        }
        let staleness = self.settings.max_read_staleness_ms;
        if staleness > 0 {
            match self.last_contact_ms() {
                Some(ms) if ms <= staleness => {}
                contact => {
                    return Err(NotServing::Lagging(format!(
                        "stale: no word from a leader for {} (bound {staleness} ms)",
                        contact.map_or("ever".to_string(), |ms| format!("{ms} ms")),
                    )))
                }
            }
        }
        Ok(())
    }

    pub(crate) fn refusal(&self, not: NotServing) -> Refused {
        let me = self.settings.me.node;
        let leader = self.replica.known_leader().or(self.leader).filter(|l| *l != me);
        match not {
            NotServing::Removed(r) => Refused::Removed(r),
            NotServing::CatchingUp(reason) => Refused::NotServing { leader, catching_up: true, reason },
            NotServing::Lagging(reason) => Refused::NotServing { leader, catching_up: false, reason },
            // Reads go to the leader, like a lagging replica's.
            NotServing::Halted(why) => Refused::NotServing { leader, catching_up: false, reason: format!("halted: {why}") },
        }
    }

    /// After every turn: note removal by the log, fix the catch-up target, emit a change of the
    /// serving state.
    pub(crate) fn update_serving(&mut self, now: Time) {
        if self.removed.is_none() {
            if self.is_member() {
                self.was_member = true;
            } else if self.was_member {
                // It applied a configuration without this incarnation (removed, or replaced by a
                // newer incarnation of the same id).
                self.mark_removed(Removal { epoch: self.config.epoch, source: "log" });
            }
        }
        if self.removed.is_none() {
            if self.leader == Some(self.settings.me.node) {
                // A leader's last contact is the last time a quorum of acceptors answered it, so
                // a leader cut off from its quorum ages like a follower and the staleness bound
                // applies to it too (it would otherwise serve until its lease runs out).
                if let Some(t) = self.replica.quorum_contact(now) {
                    self.leader_contact = Some(t);
                }
            }
            if !self.caught_up {
                if self.catch_up_target.is_none() && self.is_member() && self.leader_contact.is_some() {
                    // A leader's own commit point can trail what was chosen before it: right
                    // after every replica restarted it is the snapshot's slot, with the adopted
                    // slots still to be chosen again. Its election barrier covers them (it used
                    // to report `serving` at once, with the store of its snapshot file). A
                    // durably restarted replica also waits for the slots it had voted in: a
                    // new leader's first commit points can trail those the same way.
                    let mut target = self.replica.known_commit().max(self.recovered_floor);
                    if let Some(b) = self.replica.election_barrier() {
                        target = target.max(b);
                    }
                    #[cfg(feature = "sim")]
                    if self.bug(|b| b.serve_from_snapshot) {
                        target = self.replica.known_commit();
                    }
                    info!(target = %target, applied = %self.applied_slot, "catch-up target fixed: no reads from this replica before it applies it");
                    self.catch_up_target = Some(target);
                }
                if self.catch_up_target.is_some_and(|t| self.applied_slot >= t) {
                    info!(applied = %self.applied_slot, "caught up: serving reads");
                    self.caught_up = true;
                }
            }
        }
        let serving = self.serving().is_ok();
        if self.serving_said != Some(serving) {
            self.serving_said = Some(serving);
            self.outputs.push_back(Output::ServingChanged(serving));
        }
    }

    pub(crate) fn mark_removed(&mut self, r: Removal) {
        if self.removed.is_some() {
            return;
        }
        warn!(epoch = r.epoch, source = r.source, "this replica was removed from the cluster: it serves no client request any more");
        self.removed = Some(r);
        self.outputs.push_back(Output::Removed(r));
        // Reads waiting here would never be served.
        let waiting: Vec<PendingRead> = std::mem::take(&mut self.confirming)
            .into_values()
            .chain(std::mem::take(&mut self.wait_slot).into_values().flatten())
            .chain(std::mem::take(&mut self.wait_index).into_values().flatten())
            .collect();
        for read in waiting {
            self.outputs.push_back(Output::ReadDone { token: read.token, result: Err(Refused::Removed(r)) });
        }
        let done = self.watches.removed(r);
        self.watches_done(done);
    }

    /// Whether this node may suspect `leader` at all (an acceptor that does not lead it).
    fn may_suspect(&self, leader: paxos::NodeId) -> bool {
        leader != self.settings.me.node
            && !self.replica.is_leader()
            && self.removed.is_none()
            && self.config.is_acceptor(&self.settings.me)
    }

    fn suspect_after(&self) -> Option<u64> {
        (self.settings.suspect_leader_after_ms > 0).then_some(self.settings.suspect_leader_after_ms)
    }

    /// When the current silence turns into a suspicion (`None`: not counting, or already raised).
    pub(crate) fn suspicion_deadline(&self) -> Option<Time> {
        let after = self.suspect_after()?;
        if self.suspicion.is_some() {
            return None;
        }
        match self.heard {
            Some((leader, since)) if self.may_suspect(leader) => Some(Time(since.0.saturating_add(after))),
            _ => None,
        }
    }

    /// When a serving replica's last contact (a leader's: with a quorum) grows older than the staleness bound.
    pub(crate) fn staleness_deadline(&self) -> Option<Time> {
        let bound = self.settings.max_read_staleness_ms;
        if bound == 0 || self.serving_said != Some(true) {
            return None;
        }
        self.leader_contact.map(|t| Time(t.0.saturating_add(bound).saturating_add(1)))
    }

    /// Suspect the known leader when it has been silent for `suspect_leader_after_ms`; withdraw
    /// the suspicion when it speaks again or another leader is known.
    pub(crate) fn check_leader_silence(&mut self, now: Time) {
        let Some(after) = self.suspect_after() else { return };
        let known = self.replica.known_leader();
        if known != self.heard.map(|(l, _)| l) {
            // A new leader (or none): its silence counts from now.
            self.heard = known.map(|l| (l, now));
        }
        let want = match self.heard {
            Some((leader, since)) if self.may_suspect(leader) && now.0.saturating_sub(since.0) >= after => {
                Some(Suspicion { leader, acceptors: self.config.acceptors.iter().map(|m| m.node).collect() })
            }
            _ => None,
        };
        if want != self.suspicion {
            match &want {
                Some(s) => info!(leader = %s.leader, silent_ms = after, "no word from the leader: suspecting it"),
                None => debug!("leader suspicion withdrawn"),
            }
            self.suspicion = want.clone();
            self.outputs.push_back(Output::Suspect(want));
        }
    }
}
