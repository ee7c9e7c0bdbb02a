//! The liveness phase: the network heals, and the election behaves as etcd's does, without
//! rescuing anybody.
//!
//! The oracle names a random campaigner (an up replica that is an acceptor in its own view of
//! the configuration): perhaps the most lagging one, perhaps one in the middle of a fetch or of a
//! snapshot transfer. It keeps that leader, as etcd keeps a leader whose lease is alive, until the
//! replica resigns (it emitted `SteppedDown`, which the driver turns into a resignation); then it
//! names another random campaigner. Reconfigurations keep running meanwhile (rejoins finish).
//!
//! Progress is checked per naming: within [`PROBE_LEASES`] lease periods of being named, the
//! leader must have a probe command of its own chosen, or have stepped down. A leader that keeps
//! its lease yet chooses nothing fails the run (the wedge of issue 10, bug 1). At the end every
//! earlier proposal must be resolved and every member of the configuration must converge.

use super::cluster::{Node, Sim, CLIENT};
use crate::ids::{NodeId, RequestId, Slot, Time};
use crate::message::Command;
use crate::status::RoleKind;
use rand::Rng;
use std::collections::BTreeSet;

/// Lease periods a named leader has to get a probe chosen (or to step down).
pub(super) const PROBE_LEASES: u64 = 10;

/// The simulated driver's write timeout for a forwarded command (the real driver's default).
const FORWARD_TIMEOUT_MS: u64 = 5_000;

/// How often the liveness oracle looks at the election.
const ORACLE_TICK_MS: u64 = 50;

impl Sim {
    pub(super) fn liveness_phase(&mut self) -> Result<(), String> {
        self.liveness = true;
        self.nemesis = super::nemesis::Nemesis::Idle;
        self.net.blocked.clear();
        self.net.loss = 0.0;
        self.net.dup = 0.0;
        self.net.max_delay = self.net.max_delay.min(10);
        // Stalled streams deliver what they held, now, in order: stale messages into a healed world.
        for (from, to) in self.net.held_links() {
            if let Some(h) = self.net.held.get_mut(&(from, to)) {
                h.until = self.now;
            }
            self.release(from, to)?;
        }
        let now = self.now;
        let down: Vec<NodeId> = self.nodes.values().filter(|n| !n.up).map(|n| n.id).collect();
        for id in down {
            self.forget_leadership(id, now);
        }
        for n in self.nodes.values_mut() {
            n.up = true;
        }
        let start = self.now;
        let deadline = start.plus(self.cfg.liveness_ms);
        let mut next_oracle = start;
        let mut next_client = start;
        let mut next_reconfig = start.plus(100);
        let mut quiet_since: Option<Time> = None;
        let earlier: BTreeSet<RequestId> = self.nodes.values().flat_map(|n| n.outstanding.iter().copied()).collect();
        loop {
            let t = self.next_time().min(next_oracle).min(next_client).min(next_reconfig);
            if t > deadline {
                return Err(self.liveness_report());
            }
            self.now = t;
            if t == next_oracle {
                self.oracle_liveness()?;
                self.check_all_leaders()?;
                next_oracle = t.plus(ORACLE_TICK_MS);
            } else if t == next_reconfig {
                if self.cfg.reconfig {
                    self.finish_rejoins()?;
                }
                next_reconfig = t.plus(300);
            } else if t == next_client {
                // Keep some traffic until every earlier proposal is resolved: a deposed leader's
                // slot is only decided once the log reaches it.
                let earlier_open = self.unresolved().iter().any(|id| earlier.contains(id));
                if !earlier_open && self.rejoining.is_empty() {
                    quiet_since.get_or_insert(t);
                    next_client = Time(u64::MAX);
                } else {
                    self.client_step()?;
                    next_client = t.plus(5);
                }
            } else {
                self.step()?;
            }
            if quiet_since.is_some() && self.probe.is_none() && self.converged() {
                self.stats.virtual_ms = self.now.0;
                return Ok(());
            }
        }
    }

    /// etcd's election, without rescue: keep the named leader until it resigns, then name a
    /// random campaigner. Propose a probe through the named leader, and check that one is chosen
    /// within `PROBE_LEASES` lease periods of the naming (or that the leader stepped down).
    pub(super) fn oracle_liveness(&mut self) -> Result<(), String> {
        let campaigns = |n: &Node| n.up && n.replica.status().role != RoleKind::Learner;
        let keep = self.named.is_some_and(|(l, _)| !self.resigned.contains(&l) && campaigns(&self.nodes[&l]));
        if !keep {
            let campaigners: Vec<NodeId> = self.nodes.values().filter(|n| campaigns(n)).map(|n| n.id).collect();
            if campaigners.is_empty() {
                return Err("liveness: no replica campaigns (no acceptor is alive)".into());
            }
            let pick = campaigners[self.rng.gen_range(0..campaigners.len())];
            self.named = Some((pick, self.now));
            self.stable_leader = Some(pick);
            self.resigned.clear();
            self.probe = None;
            self.probed = false;
            self.hint_all(Some(pick))?;
            self.stats.liveness_namings += 1;
        }
        let Some((leader, named_at)) = self.named else { return Ok(()) };
        if self.resigned.contains(&leader) {
            return Ok(());
        }
        // The probe in flight, if any, is settled once chosen or lost.
        if let Some((id, _)) = self.probe {
            if self.ghost.chosen_ids.contains_key(&id) {
                self.probe = None;
                self.probed = true;
            } else if self.ghost.lost.contains(&id) {
                self.probe = None;
            }
        }
        if self.probe.is_none() && !self.probed && self.nodes[&leader].replica.is_leader() {
            self.next_req += 1;
            let cmd = Command { id: RequestId { node: CLIENT, seq: self.next_req }, payload: vec![0xAB] };
            self.ghost.proposed.insert(cmd.id, cmd.payload.clone());
            let now = self.now;
            let n = self.nodes.get_mut(&leader).expect("named leader exists");
            if n.replica.propose(now, cmd.clone()).is_ok() {
                n.outstanding.insert(cmd.id);
                self.probe = Some((cmd.id, now));
            }
            self.drain(leader)?;
        }
        let lease = self.nodes[&leader].replica.opts.leader_lease_ms;
        if !self.probed && self.now.0 - named_at.0 > PROBE_LEASES * lease {
            let s = self.nodes[&leader].replica.status();
            return Err(format!(
                "liveness: {leader} was named leader at {} ms and in {} ms neither got a probe chosen nor stepped down \
                 (role {:?}, commit {}, ballot {})",
                named_at.0,
                self.now.0 - named_at.0,
                s.role,
                s.commit,
                s.ballot
            ));
        }
        Ok(())
    }

    fn finish_rejoins(&mut self) -> Result<(), String> {
        let pending = self.reconfig_pending.is_some();
        if !self.rejoining.is_empty() || !pending {
            self.reconfig_step()?;
        }
        Ok(())
    }

    /// Proposals still waiting for an outcome at a member of the configuration. A node removed
    /// from the configuration hears no more of the log: its driver times its waiters out as
    /// "outcome unknown", which is what a client of a removed replica gets.
    ///
    /// A forwarded command nothing was heard of for [`FORWARD_TIMEOUT_MS`] is answered "outcome
    /// unknown" by its driver (its `Forward`, or the leader's loss report, was lost on the way):
    /// it no longer counts.
    pub(super) fn unresolved(&self) -> Vec<RequestId> {
        let config = self.ghost.latest_config();
        let now = self.now;
        self.nodes
            .values()
            .filter(|n| config.members().any(|m| m.node == n.id && m.incarnation == n.inc))
            .flat_map(|n| {
                n.outstanding
                    .iter()
                    .copied()
                    .filter(|id| n.forwarded_at.get(id).is_none_or(|t| t.plus(FORWARD_TIMEOUT_MS) > now))
            })
            .filter(|id| !self.ghost.chosen_ids.contains_key(id))
            .collect()
    }

    fn converged(&self) -> bool {
        let config = self.ghost.latest_config();
        let max = self.nodes.values().map(|n| n.applied).max().unwrap_or(Slot(0));
        config.members().all(|m| self.nodes.get(&m.node).is_some_and(|n| n.inc == m.incarnation && n.applied == max))
            && self.unresolved().is_empty()
    }

    fn liveness_report(&self) -> String {
        let states: Vec<String> = self
            .nodes
            .values()
            .map(|n| {
                let s = n.replica.status();
                format!("{}@{} {:?} applied={} ballot={}", n.id, n.inc.0, s.role, n.applied, s.ballot)
            })
            .collect();
        format!(
            "liveness: no convergence within {} ms; named={:?}; unresolved={:?}; config={:?}; nodes: {}",
            self.cfg.liveness_ms,
            self.named,
            self.unresolved().iter().take(5).collect::<Vec<_>>(),
            self.ghost.latest_config(),
            states.join(", ")
        )
    }
}
