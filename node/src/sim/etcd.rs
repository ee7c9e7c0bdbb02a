//! A simulated etcd: leases, the election, and suspicions, as `driver/src/etcd.rs` uses them.
//!
//! * A node's **lease** is renewed at every tick while the node is up and can reach etcd; it
//!   expires `ttl_ms` after the last renewal. A node with a live lease campaigns (it is appended
//!   to the election's queue); one whose lease expired, or was revoked, leaves the queue and
//!   campaigns again once it renews a lease.
//! * The **election** names the oldest campaigner in the queue, as etcd's election API does. A
//!   node that resigns leaves the queue and campaigns again at the next tick, at its end.
//! * **Suspicions**: a node that suspects the leader records it (under the leader's lease, so
//!   they vanish with it). Once a majority of the acceptors the suspecters list suspects the
//!   current leader, its lease is revoked.
//!
//! Nodes cut from etcd (one, or all of them in a whole-etcd outage: `SimConfig::etcd_outages`)
//! lose their lease and hear no hints until they reconnect; nobody is told to step down because
//! etcd was unreachable (`driver/src/etcd.rs`). Failed deletes of suspicion records are not
//! modelled.

use paxos::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// The simulated etcd.
#[derive(Debug)]
pub(super) struct Etcd {
    /// Lease lifetime (ms).
    pub(super) ttl_ms: u64,
    /// Each node id's registration: the incarnation holding it and when its lease expires.
    leases: BTreeMap<NodeId, (u64, u64)>,
    /// Campaigners, oldest first, each with the revision of its campaign key.
    queue: Vec<(NodeId, u64)>,
    /// The last revision handed out.
    revision: u64,
    /// Suspicions: suspecter -> (suspected leader, acceptors the suspecter runs with).
    suspicions: BTreeMap<NodeId, (NodeId, Vec<NodeId>)>,
    /// Nodes that cannot reach etcd.
    pub(super) cut: BTreeSet<NodeId>,
    /// Lease revocations by suspicion (for the stats).
    pub(super) revocations: u64,
}

impl Etcd {
    pub(super) fn new(ttl_ms: u64) -> Self {
        Etcd {
            ttl_ms,
            leases: BTreeMap::new(),
            queue: Vec::new(),
            revision: 0,
            suspicions: BTreeMap::new(),
            cut: BTreeSet::new(),
            revocations: 0,
        }
    }

    /// The elected leader and the revision of its campaign: a leader that resigned and won
    /// again has a new revision, and observers hear of it again (as etcd's `observe` reports
    /// every new leader key).
    pub(super) fn leader(&self) -> Option<(NodeId, u64)> {
        self.queue.first().copied()
    }

    /// Advance to `now`: renew the leases of the processes in `up` (id -> incarnation, and
    /// whether it may campaign) that can reach etcd (a newer incarnation registers only once the
    /// lease of an older one has expired), expire the others, let every eligible holder of a
    /// live lease campaign, revoke a leader a majority suspects. Returns the leader after.
    pub(super) fn tick(&mut self, now: u64, up: &BTreeMap<NodeId, (u64, bool)>) -> Option<(NodeId, u64)> {
        for (n, (inc, _)) in up {
            if self.cut.contains(n) {
                continue;
            }
            match self.leases.get(n) {
                Some((held, until)) if *held < *inc && *until > now => {}
                _ => {
                    self.leases.insert(*n, (*inc, now + self.ttl_ms));
                }
            }
        }
        let expired: Vec<NodeId> = self.leases.iter().filter(|(_, (_, until))| *until <= now).map(|(n, _)| *n).collect();
        for n in expired {
            self.drop_lease(n);
        }
        // Only the process that holds the registration campaigns, and only while eligible.
        let eligible = |n: &NodeId, inc: u64| up.get(n).is_some_and(|(i, e)| *i == inc && *e);
        let leases = self.leases.clone();
        self.queue.retain(|(n, _)| leases.get(n).is_some_and(|(inc, _)| eligible(n, *inc)));
        let campaigners: Vec<NodeId> =
            leases.iter().filter(|(n, (inc, _))| eligible(n, *inc) && !self.queue.iter().any(|(q, _)| q == *n)).map(|(n, _)| *n).collect();
        for n in campaigners {
            self.revision += 1;
            self.queue.push((n, self.revision));
        }
        if let Some((l, _)) = self.leader() {
            let against: Vec<&(NodeId, Vec<NodeId>)> = self.suspicions.values().filter(|(s, _)| *s == l).collect();
            if let Some((_, acceptors)) = against.first() {
                let quorum = acceptors.len() / 2 + 1;
                if against.len() >= quorum {
                    self.revocations += 1;
                    self.drop_lease(l);
                }
            }
        }
        self.leader()
    }

    /// Who is registered: node id -> the incarnation holding its lease.
    pub(super) fn registered(&self) -> BTreeMap<NodeId, u64> {
        self.leases.iter().map(|(n, (inc, _))| (*n, *inc)).collect()
    }

    /// The lease of `n` ends (expired or revoked): it leaves the election, and the suspicions
    /// attached to its lease go with it.
    fn drop_lease(&mut self, n: NodeId) {
        self.leases.remove(&n);
        self.queue.retain(|(q, _)| *q != n);
        self.suspicions.retain(|_, (s, _)| *s != n);
    }

    /// The leader's lease is lost (its keep-alive failed) and `n`'s campaign comes first among
    /// the rest: `n` leads (if it campaigns). The old leader campaigns again at the next tick.
    pub(super) fn hand_to(&mut self, n: NodeId) {
        let Some(pos) = self.queue.iter().position(|(q, _)| *q == n) else { return };
        if pos == 0 {
            return;
        }
        let entry = self.queue.remove(pos);
        let old = self.queue.remove(0);
        self.queue.insert(0, entry);
        self.leases.remove(&old.0);
    }

    /// `n` resigns: it leaves the queue and campaigns again at the next tick.
    pub(super) fn resign(&mut self, n: NodeId) {
        self.queue.retain(|(q, _)| *q != n);
    }

    /// `n` suspects `leader` (or withdraws its suspicion).
    pub(super) fn suspect(&mut self, n: NodeId, s: Option<(NodeId, Vec<NodeId>)>) {
        match s {
            Some((leader, acceptors)) if self.leases.contains_key(&leader) && !self.cut.contains(&n) => {
                self.suspicions.insert(n, (leader, acceptors));
            }
            _ => {
                self.suspicions.remove(&n);
            }
        }
    }
}
