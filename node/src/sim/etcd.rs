//! A simulated etcd: leases, the election, and suspicions, as `driver/src/etcd.rs` uses them.
//!
//! * A node's **lease** is renewed at every tick ([`TICK_MS`]) while the node is up and can
//!   reach etcd; it expires `ttl_ms` after the last renewal. Every registration is a lease of its
//!   own (an id): a process registers a new one when it starts (a durable restart too: same
//!   incarnation, new process) and when its old one expired or was revoked; the lease of a
//!   replaced process lives on, unrenewed, until it expires. A node with a live lease campaigns
//!   (it is appended to the election's queue); one whose lease expired, or was revoked, leaves the
//!   queue and campaigns again once it renews a lease.
//! * The **election** names the oldest campaigner in the queue, as etcd's election API does. A
//!   node that resigns leaves the queue and campaigns again at the next tick, at its end.
//! * **Suspicions**, as the driver's `suspect` task handles them (one task per process): while
//!   its node suspects the leader, the task checks that the election still names it, records
//!   `suspects/<leader's lease>/<my id>` naming its own lease, *under its own lease* (so the
//!   record vanishes with the recorder's lease, not the leader's), and revokes the leader's lease
//!   once the records that count are a majority of the acceptors ([`Suspicion::majority`]). A
//!   record counts only while its recorder's registration is held under the lease the record
//!   names (`live_suspicions`): the record of a process that was replaced (a durable restart, a
//!   new incarnation), or whose lease expired, never counts (that of a process that died counts
//!   until its lease expires or a new process registers, as in the driver). When the node withdraws
//!   its suspicion the task deletes the record; a delete that fails leaves the record in etcd and
//!   is retried at every tick ("withdrawn only once the delete succeeds"); meanwhile the record
//!   still counts, as in the driver, until the delete succeeds or the recorder's lease expires.
//!   Deletes fail while the node is cut from etcd, and (`SimConfig::delete_failures`, one run in
//!   two) a withdrawal's first delete starts a *flap* one time in four: the node's etcd requests
//!   fail for up to [`MAX_FLAP_MS`] while its lease is kept alive. Flaps are drawn from a
//!   generator of their own, seeded from the run's seed. Every revocation is reported to the
//!   world ([`Revocation`]), which checks that a majority of the acceptors could not hear the
//!   leader (`world.rs`, the suspicion verdict).
//! * `SimConfig::stale_suspicions` (a negative test) puts back the rule before issue 25: records
//!   live under the suspected leader's lease (they vanish only with it), count whatever became of
//!   their recorder, and a withdrawal whose delete failed is given up, not retried.
//!
//! Nodes cut from etcd (one, or all of them in a whole-etcd outage: `SimConfig::etcd_outages`)
//! lose their lease and hear no hints until they reconnect; nobody is told to step down because
//! etcd was unreachable (`driver/src/etcd.rs`).

use crate::Suspicion;
use paxos::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// How often etcd ticks (leases renewed, the election held, each suspicion task's recheck: the
/// driver rechecks every quarter of `suspect_leader_after_ms`, 200 ms here).
pub(super) const TICK_MS: u64 = 50;
/// The longest flap (a node's etcd requests failing while its lease is kept).
pub(super) const MAX_FLAP_MS: u64 = 150;

/// A process as etcd's tick sees it: its incarnation, its start number, and whether it may
/// campaign.
#[derive(Clone, Copy, Debug)]
pub(super) struct Proc {
    pub(super) inc: u64,
    pub(super) start: u64,
    pub(super) eligible: bool,
}

/// A revocation of a leader's lease by suspicion, for the world's verdict.
#[derive(Clone, Debug)]
pub(super) struct Revocation {
    /// The leader whose lease was revoked.
    pub(super) leader: NodeId,
    /// The node whose task revoked it.
    pub(super) by: NodeId,
    /// The acceptors of the configuration the revoking node runs.
    pub(super) acceptors: Vec<NodeId>,
    /// The suspects whose records counted.
    pub(super) suspects: Vec<NodeId>,
}

/// A node id's registration: the process holding it and its lease.
#[derive(Clone, Copy, Debug)]
struct Registration {
    inc: u64,
    start: u64,
    lease: u64,
}

/// A suspicion record (key: the suspected leader's lease and the recorder's id).
#[derive(Clone, Copy, Debug)]
struct Record {
    /// The lease the record names (its recorder's, and the one it was written under).
    owner: u64,
    /// Already counted among the records that did not count (for the stats).
    ignored: bool,
}

/// One process's suspicion task (`driver/src/etcd.rs`, `suspect`).
#[derive(Clone, Debug)]
struct Task {
    start: u64,
    inc: u64,
    /// What the node loop says now.
    want: Option<Suspicion>,
    /// The leader's lease of the record this task holds (withdrawn once the delete succeeds).
    recorded: Option<u64>,
}

/// The simulated etcd.
#[derive(Debug)]
pub(super) struct Etcd {
    /// Lease lifetime (ms).
    pub(super) ttl_ms: u64,
    /// Each node id's registration.
    leases: BTreeMap<NodeId, Registration>,
    /// Every live lease (registrations and the leases of replaced processes) and its expiry.
    alive: BTreeMap<u64, u64>,
    /// The last lease id handed out.
    next_lease: u64,
    /// Campaigners, oldest first, each with the revision of its campaign key.
    queue: Vec<(NodeId, u64)>,
    /// The last revision handed out.
    revision: u64,
    /// Suspicion records: (suspected leader's lease, recorder) -> record.
    records: BTreeMap<(u64, NodeId), Record>,
    /// The suspicion task of each node's current process.
    tasks: BTreeMap<NodeId, Task>,
    /// Nodes that cannot reach etcd.
    pub(super) cut: BTreeSet<NodeId>,
    /// Nodes whose requests fail until then (their leases are kept alive).
    flaps: BTreeMap<NodeId, u64>,
    /// Withdrawals may start a flap (`SimConfig::delete_failures`).
    delete_failures: bool,
    /// Stale records count (`SimConfig::stale_suspicions`).
    stale_records: bool,
    /// The flaps' generator.
    rng: ChaCha8Rng,
    /// Lease revocations by suspicion (for the stats).
    pub(super) revocations: u64,
    /// Revocations the world has not checked yet.
    pub(super) revoked: Vec<Revocation>,
    /// Withdrawals whose first delete failed (retried, or given up with `stale_records`).
    pub(super) deletes_failed: u64,
    /// Records about the leader's lease that did not count when a task counted them (each
    /// record once): their recorder's registration was gone or held under another lease.
    pub(super) records_ignored: u64,
    /// Records about a live lease that vanished with their recorder's lease (expired or revoked):
    /// a recorder that died, or was cut from etcd, while it suspected or after a failed delete.
    pub(super) records_expired: u64,
}

impl Etcd {
    pub(super) fn new(ttl_ms: u64, seed: u64, delete_failures: bool, stale_records: bool) -> Self {
        Etcd {
            ttl_ms,
            leases: BTreeMap::new(),
            alive: BTreeMap::new(),
            next_lease: 0,
            queue: Vec::new(),
            revision: 0,
            records: BTreeMap::new(),
            tasks: BTreeMap::new(),
            cut: BTreeSet::new(),
            flaps: BTreeMap::new(),
            delete_failures,
            stale_records,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5e7c_d0e1_e7e5_f1a9),
            revocations: 0,
            revoked: Vec::new(),
            deletes_failed: 0,
            records_ignored: 0,
            records_expired: 0,
        }
    }

    /// The elected leader and the revision of its campaign: a leader that resigned and won
    /// again has a new revision, and observers hear of it again (as etcd's `observe` reports
    /// every new leader key).
    pub(super) fn leader(&self) -> Option<(NodeId, u64)> {
        self.queue.first().copied()
    }

    /// Advance to `now`: renew the leases of the processes in `up` that can reach etcd (a newer
    /// incarnation registers only once the lease of an older one has expired; a new process of
    /// the same incarnation registers a new lease at once), expire the others, let every
    /// eligible holder of a live lease campaign, and run every live process's suspicion task
    /// (retried deletes, rechecks, revocations). Returns the leader after.
    pub(super) fn tick(&mut self, now: u64, up: &BTreeMap<NodeId, Proc>) -> Option<(NodeId, u64)> {
        for (n, p) in up {
            if self.cut.contains(n) {
                continue;
            }
            let until = now + self.ttl_ms;
            match self.leases.get(n).copied() {
                Some(r) if r.inc < p.inc && self.alive.get(&r.lease).is_some_and(|u| *u > now) => {}
                Some(r) if r.inc == p.inc && r.start == p.start && self.alive.get(&r.lease).is_some_and(|u| *u > now) => {
                    self.alive.insert(r.lease, until);
                }
                _ => {
                    // A new lease (the replaced one, if any, lives on until it expires).
                    self.next_lease += 1;
                    let lease = self.next_lease;
                    self.alive.insert(lease, until);
                    self.leases.insert(*n, Registration { inc: p.inc, start: p.start, lease });
                }
            }
        }
        let expired: Vec<u64> = self.alive.iter().filter(|(_, until)| **until <= now).map(|(l, _)| *l).collect();
        for lease in expired {
            match self.leases.iter().find(|(_, r)| r.lease == lease).map(|(n, _)| *n) {
                Some(n) => self.drop_lease(n),
                None => self.lease_gone(lease),
            }
        }
        // Only the process that holds the registration campaigns, and only while eligible.
        let eligible = |n: &NodeId, inc: u64| up.get(n).is_some_and(|p| p.inc == inc && p.eligible);
        let leases = self.leases.clone();
        self.queue.retain(|(n, _)| leases.get(n).is_some_and(|r| eligible(n, r.inc)));
        let campaigners: Vec<NodeId> =
            leases.iter().filter(|(n, r)| eligible(n, r.inc) && !self.queue.iter().any(|(q, _)| q == *n)).map(|(n, _)| *n).collect();
        for n in campaigners {
            self.revision += 1;
            self.queue.push((n, self.revision));
        }
        self.flaps.retain(|_, until| *until > now);
        for (n, p) in up {
            self.task_of(*n, *p);
            self.run_task(*n, now);
        }
        self.leader()
    }

    /// Move `n`'s campaign to just behind the elected one (the simulator's bounce fault: the
    /// other campaigns are as if newer).
    pub(super) fn next_in_line(&mut self, n: NodeId) {
        if let Some(i) = self.queue.iter().position(|(q, _)| *q == n) {
            let entry = self.queue.remove(i);
            self.queue.insert(1.min(self.queue.len()), entry);
        }
    }

    /// Who is registered: node id -> the incarnation holding its lease.
    pub(super) fn registered(&self) -> BTreeMap<NodeId, u64> {
        self.leases.iter().map(|(n, r)| (*n, r.inc)).collect()
    }

    /// The registration of `n` ends (expired or revoked): it leaves the election, and its lease
    /// is gone.
    fn drop_lease(&mut self, n: NodeId) {
        if let Some(r) = self.leases.remove(&n) {
            self.lease_gone(r.lease);
        }
        self.queue.retain(|(q, _)| *q != n);
    }

    /// `lease` expired or was revoked: the records held under it go (under the recorder's lease;
    /// with `stale_records`, under the suspected leader's).
    fn lease_gone(&mut self, lease: u64) {
        self.alive.remove(&lease);
        let stale = self.stale_records;
        let alive = &self.alive;
        let mut expired = 0;
        self.records.retain(|(about, _), r| {
            let keep = if stale { *about != lease } else { r.owner != lease };
            // (Counted only while the suspected lease lives: then the record still mattered.)
            expired += u64::from(!keep && !stale && alive.contains_key(about));
            keep
        });
        self.records_expired += expired;
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
        if let Some(r) = self.leases.remove(&old.0) {
            self.lease_gone(r.lease);
        }
    }

    /// `n` resigns: it leaves the queue and campaigns again at the next tick.
    pub(super) fn resign(&mut self, n: NodeId) {
        self.queue.retain(|(q, _)| *q != n);
    }

    /// The task of `n`'s process `p` (a new one for a new process: the old task died with its
    /// process, and the record it held stays in etcd).
    fn task_of(&mut self, n: NodeId, p: Proc) -> &mut Task {
        let task = self.tasks.entry(n).or_insert(Task { start: p.start, inc: p.inc, want: None, recorded: None });
        if task.start != p.start || task.inc != p.inc {
            *task = Task { start: p.start, inc: p.inc, want: None, recorded: None };
        }
        task
    }

    /// Whether `n`'s etcd requests succeed now.
    fn reachable(&self, n: NodeId, now: u64) -> bool {
        !self.cut.contains(&n) && self.flaps.get(&n).is_none_or(|until| *until <= now)
    }

    /// `n`'s process `p` suspects a leader (or withdraws its suspicion): its task acts at once.
    pub(super) fn suspect(&mut self, n: NodeId, p: Proc, s: Option<Suspicion>, now: u64) {
        let task = self.task_of(n, p);
        let withdrawn = s.is_none() && task.want.is_some() && task.recorded.is_some();
        task.want = s;
        if withdrawn && self.delete_failures && self.rng.gen_bool(0.25) {
            let d = self.rng.gen_range(TICK_MS..=MAX_FLAP_MS);
            let until = self.flaps.get(&n).map_or(0, |u| *u).max(now + d);
            self.flaps.insert(n, until);
        }
        if withdrawn && !self.reachable(n, now) {
            self.deletes_failed += 1;
        }
        self.run_task(n, now);
    }

    /// One turn of `n`'s task: delete a withdrawn record, or record the suspicion and revoke the
    /// leader's lease if the records that count are a majority.
    fn run_task(&mut self, n: NodeId, now: u64) {
        let Some(task) = self.tasks.get(&n).cloned() else { return };
        let Some(s) = task.want else {
            if let Some(about) = task.recorded {
                if self.reachable(n, now) {
                    self.records.remove(&(about, n));
                    self.tasks.get_mut(&n).unwrap().recorded = None;
                } else if self.stale_records {
                    // The rule before issue 25: a failed delete is not retried.
                    self.tasks.get_mut(&n).unwrap().recorded = None;
                }
            }
            return;
        };
        if !self.reachable(n, now) {
            return;
        }
        // The election must still name the suspected node, under a lease.
        let Some((l, _)) = self.leader() else { return };
        let Some(lease) = self.leases.get(&l).map(|r| r.lease).filter(|_| l == s.leader) else { return };
        // A record needs a lease of this process's own.
        let Some(own) = self.leases.get(&n).filter(|r| r.inc == task.inc && r.start == task.start).map(|r| r.lease) else { return };
        if task.recorded != Some(lease) {
            if let Some(old) = task.recorded {
                self.records.remove(&(old, n));
            }
            self.records.insert((lease, n), Record { owner: own, ignored: false });
            self.tasks.get_mut(&n).unwrap().recorded = Some(lease);
        }
        // The records that count (`live_suspicions`): the recorder's registration is held under
        // the lease the record names.
        let mut live = Vec::new();
        for ((_, r), rec) in self.records.range_mut((lease, NodeId(0))..=(lease, NodeId(u64::MAX))) {
            if self.stale_records || self.leases.get(r).is_some_and(|reg| reg.lease == rec.owner) {
                live.push(*r);
            } else if !rec.ignored {
                rec.ignored = true;
                self.records_ignored += 1;
            }
        }
        let suspects = s.suspects(live);
        if s.majority(&suspects) {
            self.revocations += 1;
            self.revoked.push(Revocation { leader: l, by: n, acceptors: s.acceptors.clone(), suspects });
            self.drop_lease(l);
            self.tasks.get_mut(&n).unwrap().recorded = None;
        }
    }
}
