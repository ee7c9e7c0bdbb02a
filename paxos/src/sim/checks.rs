//! Invariants the simulator checks against ground truth: what the nodes have really applied and
//! which messages were really delivered, never what a replica believes about its peers.
//!
//! * **Checkpoint** (architecture rule 6): a leader announces a checkpoint `cp` only if every
//!   member of its configuration has really applied `cp`, or the lag rule excuses it. The excuse
//!   is judged from the reports that were really delivered to this leader during its current
//!   candidacy and leadership (the last one more than `max_retained_slots` behind its commit
//!   point), or, for a member that delivered none in that time, from how long this leadership
//!   and the membership have lasted (`max_retained_slots` slots committed since). A leader that
//!   trusts a learned map it never filled, or a report from an earlier term, is caught.
//! * **No pending stop sign at or below the commit point**: a leader in that state waits for a
//!   commit point that only it could move (a wedge).
//! * **A leader makes progress or steps down**: a replica that has led continuously for
//!   [`WEDGE_LEASES`] lease periods with work pending (queued or in-flight commands, a stop sign,
//!   reads) must have committed something in that time. A leader that cannot reach a quorum
//!   loses its lease and steps down long before; one that keeps its lease and still commits
//!   nothing is stuck, and etcd, which sees a live leader, would keep it for ever.

use super::cluster::Sim;
use crate::ids::{Member, NodeId, Slot, Time};
use crate::message::Message;
use crate::replica::Role;

/// Lease periods a leader may hold work without committing anything.
pub(super) const WEDGE_LEASES: u64 = 8;

impl Sim {
    /// A message is being delivered to `to` (`campaigning`: it is a candidate or leader as the
    /// message arrives): remember the learned point it reports, if it carries one.
    pub(super) fn note_report(&mut self, to: Member, from: Member, msg: &Message, campaigning: bool) {
        let learned = match msg {
            Message::Promise { learned, .. } | Message::Accepted { learned, .. } | Message::HeartbeatAck { learned, .. } => *learned,
            _ => return,
        };
        let e = self.reports.entry((to, from)).or_insert(learned);
        *e = (*e).max(learned);
        if campaigning {
            let e = self.fresh_reports.entry((to, from)).or_insert(learned);
            *e = (*e).max(learned);
        }
    }

    /// Node `me` stopped campaigning or leading: its term's reports are no longer fresh.
    pub(super) fn end_term(&mut self, me: Member) {
        self.fresh_reports.retain(|(to, _), _| *to != me);
    }

    /// A leader (node `id`) announced checkpoint `cp` on a heartbeat.
    pub(super) fn check_leader_checkpoint(&mut self, id: NodeId, cp: Slot) -> Result<(), String> {
        if cp <= self.valid_checkpoint {
            return Ok(());
        }
        let n = &self.nodes[&id];
        let Role::Leader(l) = &n.replica.role else {
            // A heartbeat sent in the call that deposed it: the replica is no longer leading.
            self.valid_checkpoint = self.valid_checkpoint.max(cp);
            return Ok(());
        };
        let me = Member { node: id, incarnation: n.inc };
        let commit = n.applied;
        let retained = n.replica.opts.max_retained_slots;
        let lags = |learned: Slot| commit.0.saturating_sub(learned.0) > retained;
        let start = self.term_start.get(&me).copied().unwrap_or(commit);
        for m in l.config.members().filter(|m| m.node != id) {
            let Some(node) = self.nodes.get(&m.node).filter(|node| node.inc == m.incarnation) else {
                continue; // that incarnation is gone: it will never read a slot again
            };
            if let Some(r) = self.reports.get(&(me, *m)).copied() {
                // Reports are lower bounds: a member never claims more than it applied.
                if r > node.applied {
                    return Err(format!("{m} reported learned {r} but applied {}", node.applied));
                }
            }
            if node.applied >= cp {
                continue;
            }
            // Only a report of this term can excuse a member as lagging: an older one may be
            // far behind what the member learned since, under another leader.
            let report = self.fresh_reports.get(&(me, *m)).copied();
            let excused = match report {
                Some(r) => lags(r),
                None => lags(start.max(self.ghost.member_since(m, commit))),
            };
            if !excused {
                return Err(format!(
                    "leader {id} disposed through {cp} but {m} has applied only {} (its last report this term: {report:?}; \
                     leader commit {commit}, led since {start}, max_retained_slots {retained})",
                    node.applied
                ));
            }
        }
        self.valid_checkpoint = self.valid_checkpoint.max(cp);
        Ok(())
    }

    /// After every call into node `id`: no wedged stop sign, and a leader with work makes progress.
    pub(super) fn check_leader_state(&mut self, id: NodeId) -> Result<(), String> {
        let Some(n) = self.nodes.get(&id) else { return Ok(()) };
        let commit = n.replica.commit();
        let Role::Leader(l) = &n.replica.role else {
            self.work_since.remove(&id);
            return Ok(());
        };
        if !n.up {
            // Paused: it does nothing, and it is not expected to (its lease runs out meanwhile).
            self.work_since.remove(&id);
            return Ok(());
        }
        if let Some(s) = l.stop.filter(|s| *s <= commit) {
            return Err(format!("leader {id} holds a stop sign at slot {s}, at or below its commit point {commit}"));
        }
        let busy = !l.inflight.is_empty() || !l.queue.cmds.is_empty() || l.stop.is_some() || !l.reads_waiting.is_empty() || !l.rounds.is_empty();
        let lease = n.replica.opts.leader_lease_ms;
        let now = self.now;
        match self.work_since.get(&id).copied() {
            Some((_, c)) if !busy || c != commit => {
                self.work_since.remove(&id);
            }
            Some((since, _)) if now.0.saturating_sub(since.0) > WEDGE_LEASES * lease => {
                return Err(format!(
                    "leader {id} has led with work pending for {} ms without committing anything (commit {commit}, stop {:?}, \
                     {} in flight, {} queued, {} read rounds) and has not stepped down",
                    now.0 - since.0,
                    l.stop,
                    l.inflight.len(),
                    l.queue.cmds.len(),
                    l.rounds.len() + usize::from(!l.reads_waiting.is_empty()),
                ));
            }
            Some(_) => {}
            None if busy => {
                self.work_since.insert(id, (now, commit));
            }
            None => {}
        }
        Ok(())
    }

    /// The watchdog for leaders nobody calls into (checked on every fault and oracle tick).
    pub(super) fn check_all_leaders(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.values().filter(|n| n.up).map(|n| n.id).collect();
        for id in ids {
            self.check_leader_state(id)?;
        }
        Ok(())
    }

    /// A node restarted or paused: its leadership (if any) ended.
    pub(super) fn forget_leadership(&mut self, id: NodeId, _now: Time) {
        self.work_since.remove(&id);
    }
}
