//! Scripted fault sequences: primitive faults (a stalled stream, a membership change, a cut-off
//! leader, an election that names someone else) in the order that hurts most, instead of at
//! random times. Random faults rarely line several of them up within one lease period.
//!
//! **Stale leader** (the shape of issue 10, bug 2):
//!
//! 1. the streams into the leader from `quorum - 1` followers stall (their acknowledgements and
//!    promises wait), clients keep reading through the leader, and a membership change that
//!    touches learners only is proposed at once (the other followers let it through);
//! 2. once the leader has passed the change (it leads again in the new configuration, same
//!    ballot, and has committed its election barrier there), it is cut off from everyone, and the election names another replica everywhere
//!    but at the old leader, which still believes it leads until its lease runs out;
//! 3. clients that still believe in the old leader send it reads; the stalled stream is
//!    released the moment the old leader starts a new read round (the worst moment for it);
//! 4. one to three seconds later the old leader's links heal.
//!
//! A correct core serves none of those reads: the acknowledgements on the stalled stream
//! confirmed rounds of the earlier term. The read check (`cluster.rs`, `ReadBound`) flags a
//! read served after a quorum had promised a higher ballot.

use super::cluster::Sim;
use crate::config::ConfigChange;
use crate::ids::{Member, NodeId, Time};
use rand::seq::SliceRandom;
use rand::Rng;

/// Where the stale-leader sequence stands.
#[derive(Clone, Debug, Default)]
pub(super) enum Nemesis {
    #[default]
    Idle,
    /// Step 1: `held -> leader` streams are held; waiting for the leader to pass a change.
    Stalled { leader: NodeId, held: Vec<NodeId>, epoch: u64, since: Time },
    /// Steps 2-3: the leader is cut off; the held streams go at its next read round.
    Isolated { leader: NodeId, held: Vec<NodeId>, round: u64, released: bool, until: Time },
}

/// Most time step 1 waits for the membership change before giving up.
const STALL_WAIT_MS: u64 = 3_000;

impl Sim {
    /// Start the stale-leader sequence (a fault like the others; needs reconfiguration).
    pub(super) fn start_stale_leader(&mut self) -> Result<(), String> {
        if !matches!(self.nemesis, Nemesis::Idle) || !self.cfg.reconfig {
            return Ok(());
        }
        let Some(leader) = self.nodes.values().find(|n| n.up && n.replica.is_leader()).map(|n| n.id) else {
            return Ok(());
        };
        let config = self.nodes[&leader].replica.status().config;
        let mut followers: Vec<NodeId> = config.acceptors.iter().map(|m| m.node).filter(|n| *n != leader).collect();
        let q = config.quorum();
        // Held followers could confirm a stale read with the leader; the others must be able
        // to choose the change and promise in the new configuration without them.
        if q < 2 || followers.len() < 2 * (q - 1) || self.reconfig_pending.is_some() {
            return Ok(());
        }
        followers.shuffle(&mut self.rng);
        let held: Vec<NodeId> = followers[..q - 1].to_vec();
        for f in &held {
            self.hold_link(*f, leader, 60_000);
        }
        self.nemesis = Nemesis::Stalled { leader, held, epoch: config.epoch, since: self.now };
        self.stats.stale_leader_runs += 1;
        // A change that keeps the acceptor set: add a node that is not a member, or remove a
        // learner.
        let missing = self.nodes.values().find(|n| !config.contains_node(n.id)).map(|n| Member { node: n.id, incarnation: n.inc });
        let change = match (missing, config.learners.iter().next()) {
            (Some(m), _) => ConfigChange::AddLearner(m),
            (None, Some(l)) => ConfigChange::Remove(l.node),
            (None, None) => return Ok(()),
        };
        self.propose_change(leader, change)?;
        self.drain(leader)
    }

    /// Advance the sequence; called often (every client step and fault tick).
    pub(super) fn nemesis_step(&mut self) -> Result<(), String> {
        match self.nemesis.clone() {
            Nemesis::Idle => Ok(()),
            Nemesis::Stalled { leader, held, epoch, since } => {
                let n = &self.nodes[&leader];
                // Passed, and serving reads again: its election barrier in the new configuration
                // is committed.
                let serving = match &n.replica.role {
                    crate::replica::Role::Leader(l) => l.stop.is_none() && l.barrier <= n.replica.commit(),
                    _ => false,
                };
                let passed = n.up && serving && n.replica.status().config.epoch > epoch;
                if passed {
                    self.isolate(leader, held)
                } else if self.now.0 > since.0 + STALL_WAIT_MS || !n.up {
                    self.end_stale_leader(leader, &held)
                } else {
                    Ok(())
                }
            }
            Nemesis::Isolated { leader, held, round, released, until } => {
                if !released && self.nodes[&leader].replica.read_round != round {
                    // The old leader started a read round: now deliver what the streams held.
                    self.release_into(leader, &held)?;
                    self.nemesis = Nemesis::Isolated { leader, held: held.clone(), round, released: true, until };
                }
                if self.now >= until {
                    self.end_stale_leader(leader, &held)?;
                }
                Ok(())
            }
        }
    }

    /// Whether a read should go to the leader under attack (clients that believe in it).
    pub(super) fn stale_leader_target(&mut self) -> Option<NodeId> {
        let leader = match &self.nemesis {
            Nemesis::Stalled { leader, .. } | Nemesis::Isolated { leader, .. } => *leader,
            Nemesis::Idle => return None,
        };
        (self.rng.gen_bool(0.5) && self.nodes[&leader].up).then_some(leader)
    }

    fn release_into(&mut self, leader: NodeId, held: &[NodeId]) -> Result<(), String> {
        for f in held {
            if let Some(h) = self.net.held.get_mut(&(*f, leader)) {
                h.until = self.now;
            }
            self.release(*f, leader)?;
        }
        Ok(())
    }

    fn isolate(&mut self, leader: NodeId, held: Vec<NodeId>) -> Result<(), String> {
        let others: Vec<NodeId> = self.nodes.keys().copied().filter(|n| *n != leader).collect();
        for o in &others {
            self.net.blocked.insert((leader, *o));
            self.net.blocked.insert((*o, leader));
        }
        let config = self.nodes[&leader].replica.status().config;
        let candidates: Vec<NodeId> = config.acceptors.iter().map(|m| m.node).filter(|n| *n != leader && self.nodes[n].up).collect();
        if let Some(&next) = candidates.get(self.rng.gen_range(0..candidates.len().max(1))) {
            for id in others {
                self.hint(id, Some(next))?;
            }
        }
        let round = self.nodes[&leader].replica.read_round;
        let until = self.now.plus(self.rng.gen_range(1_000..=3_000));
        self.nemesis = Nemesis::Isolated { leader, held, round, released: false, until };
        self.stats.stale_leader_isolations += 1;
        Ok(())
    }

    fn end_stale_leader(&mut self, leader: NodeId, held: &[NodeId]) -> Result<(), String> {
        self.net.blocked.retain(|(a, b)| *a != leader && *b != leader);
        self.release_into(leader, held)?;
        self.nemesis = Nemesis::Idle;
        Ok(())
    }
}
