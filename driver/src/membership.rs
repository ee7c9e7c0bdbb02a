//! Membership: joins, leaves, crash recovery and the failure policy, coordinated through etcd and
//! decided in the log.
//!
//! etcd holds the *requests* and the *progress marks*; the replicated log holds the *decisions*.
//! Keys, under the cluster prefix `P`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `P/pending/<id>` | [`PendingChange`] (join with an incarnation, or leave) | the joining/leaving node, or the admin API |
//! | `P/epochs/<id>` | [`EpochMark`]: the configuration epoch this node runs | every member, whenever it changes (the barrier) |
//! | `P/removed/<id>` | [`EpochMark`]: the incarnation removed and the epoch without it | the leader, once the barrier is passed |
//! | `P/evicted/<id>` | the epoch at which the failure policy removed it | the leader's failure policy |
//! | `P/lock/membership` | etcd's lock | the leader while it turns one request into a change |
//!
//! **One change at a time.** Every node runs a [`Manager`]; only the one whose core leads acts.
//! Each tick it reads the pending requests in the order they were posted and takes the first one
//! it can act on. It checks the **barrier** (every live member of the current configuration
//! `e` has reported `P/epochs/<id> >= e`), takes the etcd lock, and proposes the matching
//! configuration command through the node loop (`paxos::Replica::propose_config`); the core
//! itself admits one change in flight and decides at which slot it takes effect (stop-sign: a
//! change chosen at slot `s` governs the slots after `s`). The request stays in etcd until its
//! effect is visible in the applied configuration, so a leader that dies mid-way leaves it to
//! the next one, which re-derives the next step from the configuration it has applied.
//!
//! * **join** `{id, incarnation}`: `AddLearner(member)` (a new incarnation of a known id replaces
//!   the old one in whatever role it had: the crash-recovery path), then, once the learner has
//!   installed a snapshot and caught up (it reports the epoch that added it, and the core checks
//!   how far it has learned), `Promote(member)`; then the request is deleted. The leader acts
//!   only once that incarnation is registered: a restart posts its request before it registers,
//!   while its crashed predecessor's registration may linger for a lease TTL (an older
//!   registration means wait; only a newer one means the request was superseded).
//! * **leave** `{id}`: if `id` is this leader, it withdraws from the election first (hand-off)
//!   and the next leader carries on. Otherwise `Remove(id)`; once every live member of the new
//!   configuration reports its epoch, `P/removed/<id>` is written and the request deleted. A
//!   node leaving on SIGTERM waits for that key before it revokes its lease, so the old member
//!   drops out of discovery only after every member runs the configuration without it.
//! * **failure policy** (`--remove-failed-after-s`): an acceptor whose registration (its lease)
//!   has been gone that long, and who has no pending join, is removed, but never below a
//!   majority of the *configured set* (the acceptors plus those evicted by the policy and not yet
//!   back). Going lower takes an operator's `DELETE /v1/cluster/members/{id}`.
//!
//! Safety never rests on etcd: the core refuses a change while another is in flight, a change
//! whose new acceptor set has no live quorum, and the promotion of a learner that has not caught
//! up; ballots fence two managers that both believe they lead, and the etcd lock only keeps them
//! from doing the same work twice.

use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::node::{ElectionCmd, Input, NodeHandle, NodeStatus, Refused};
use ::node::membership::{self as policy, After, FailurePolicy, Registered, Step, Verdict};
use anyhow::Context as _;
use etcd_client::{Client, GetOptions, LockOptions, SortOrder, SortTarget};
use paxos::{ConfigChange, Configuration, Member, RoleKind, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

pub use ::node::membership::{EpochMark, PendingChange};

/// Reads and writes the membership keys; shared by the manager, the REST API and start-up.
#[derive(Clone)]
pub struct Membership {
    client: Client,
    prefix: String,
}

impl Membership {
    /// A handle on the keys under `prefix`.
    pub fn new(client: Client, prefix: String) -> Self {
        Membership { client, prefix }
    }

    fn key(&self, dir: &str, id: u64) -> String {
        format!("{}/{dir}/{id}", self.prefix)
    }

    /// Post a request (replacing any earlier request for the same node).
    pub async fn request(&self, change: &PendingChange) -> anyhow::Result<()> {
        let key = self.key("pending", change.id());
        self.client.clone().put(key, serde_json::to_vec(change)?, None).await.context("posting a membership request")?;
        info!(?change, "membership request posted");
        Ok(())
    }

    /// The pending requests, oldest first (by the revision that created them).
    pub async fn pending(&self) -> anyhow::Result<Vec<PendingChange>> {
        let dir = format!("{}/pending/", self.prefix);
        let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let resp = self.client.clone().get(dir, Some(opts)).await?;
        Ok(resp.kvs().iter().filter_map(|kv| serde_json::from_slice(kv.value()).ok()).collect())
    }

    async fn delete_pending(&self, expected: &PendingChange) -> anyhow::Result<()> {
        // Only if it is still the same request: a node may have posted a new one meanwhile.
        let key = self.key("pending", expected.id());
        let value = serde_json::to_vec(expected)?;
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::value(key.clone(), etcd_client::CompareOp::Equal, value)])
            .and_then([etcd_client::TxnOp::delete(key, None)]);
        self.client.clone().txn(txn).await?;
        Ok(())
    }

    async fn marks(&self, dir: &str) -> anyhow::Result<BTreeMap<u64, EpochMark>> {
        let d = format!("{}/{dir}/", self.prefix);
        let resp = self.client.clone().get(d.clone(), Some(GetOptions::new().with_prefix())).await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let id = kv.key_str().ok().and_then(|k| k.trim_start_matches(&d).parse::<u64>().ok());
            if let (Some(id), Ok(m)) = (id, serde_json::from_slice::<EpochMark>(kv.value())) {
                out.insert(id, m);
            }
        }
        Ok(out)
    }

    /// What every node reported as the epoch it runs.
    pub async fn epochs(&self) -> anyhow::Result<BTreeMap<u64, EpochMark>> {
        self.marks("epochs").await
    }

    /// Nodes removed by a completed leave (and at which epoch).
    pub async fn removed(&self, id: u64) -> anyhow::Result<Option<EpochMark>> {
        let resp = self.client.clone().get(self.key("removed", id), None).await?;
        Ok(resp.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Nodes the failure policy removed and that have not come back.
    pub async fn evicted(&self) -> anyhow::Result<BTreeMap<u64, EpochMark>> {
        self.marks("evicted").await
    }

    /// Forget that the failure policy removed `id` (it came back, or an operator removed it).
    pub async fn forget_evicted(&self, id: u64) -> anyhow::Result<()> {
        self.client.clone().delete(self.key("evicted", id), None).await?;
        Ok(())
    }

    /// The cluster version as the leaders last published it (`P/cluster-version`; `None`: never
    /// published, a cluster of the previous release or a new one).
    pub async fn cluster_version(&self) -> anyhow::Result<Option<u32>> {
        let resp = self.client.clone().get(format!("{}/cluster-version", self.prefix), None).await?;
        Ok(resp.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Publish the cluster version the log raised to (never lowers what is published: a
    /// deposed leader that applied less cannot undo a newer one's word).
    async fn publish_cluster_version(&self, v: u32) -> anyhow::Result<()> {
        let key = format!("{}/cluster-version", self.prefix);
        let resp = self.client.clone().get(key.clone(), None).await?;
        let (known, rev) = match resp.kvs().first() {
            Some(kv) => (serde_json::from_slice::<u32>(kv.value()).unwrap_or(0), kv.mod_revision()),
            None => (0, 0),
        };
        if known >= v {
            return Ok(());
        }
        let txn = etcd_client::Txn::new()
            .when([etcd_client::Compare::mod_revision(key.clone(), etcd_client::CompareOp::Equal, rev)])
            .and_then([etcd_client::TxnOp::put(key, serde_json::to_vec(&v)?, None)]);
        self.client.clone().txn(txn).await?;
        info!(cluster_version = v, "cluster version published");
        Ok(())
    }

    async fn put_mark(&self, dir: &str, id: u64, mark: EpochMark) -> anyhow::Result<()> {
        self.client.clone().put(self.key(dir, id), serde_json::to_vec(&mark)?, None).await?;
        Ok(())
    }
}

/// How the manager is set up.
#[derive(Clone, Debug)]
pub struct ManagerSettings {
    /// This replica.
    pub me: Member,
    /// Remove an acceptor whose lease has been gone this long (`None`: never automatically).
    pub remove_failed_after: Option<Duration>,
    /// How often the manager looks at the state of things.
    pub tick: Duration,
}

/// The per-node membership task (see the module docs). It reads etcd and the node's status,
/// asks [`::node::membership`] what to do, and does it.
pub struct Manager {
    /// The etcd keys.
    pub membership: Membership,
    /// Settings.
    pub settings: ManagerSettings,
    /// The node loop.
    pub inputs: NodeHandle,
    /// Who is registered (alive) in etcd.
    pub directory: Directory,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Tells the etcd task to resign.
    pub election: mpsc::UnboundedSender<ElectionCmd>,
    /// Whether this node may campaign: an acceptor that is not leaving.
    pub eligible: watch::Sender<bool>,
    /// Joins refused for the cluster version, already logged (`(id, incarnation)`).
    pub too_old: std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>>,
}

impl Manager {
    /// Run until the node loop goes away.
    pub async fn run(self) {
        let mut reported: Option<EpochMark> = None;
        let mut published: u32 = 1;
        let me = self.settings.me;
        let start = Instant::now();
        let mut failures = self.settings.remove_failed_after.map(|d| FailurePolicy::new(me, d.as_millis() as u64));
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(st) = self.status().await else {
                if self.inputs.is_closed() {
                    return;
                }
                continue;
            };
            // The barrier mark: the epoch this node runs, once it is a member at all.
            let mark = EpochMark { incarnation: me.incarnation.0, epoch: st.config.epoch };
            if st.config.members().any(|m| *m == me) && reported != Some(mark) {
                match self.membership.put_mark("epochs", me.node.0, mark).await {
                    Ok(()) => reported = Some(mark),
                    Err(e) => debug!(error = %e, "could not report the epoch"),
                }
            }
            let pending = match self.membership.pending().await {
                Ok(p) => p,
                Err(e) => {
                    debug!(error = %e, "could not read pending membership requests");
                    continue;
                }
            };
            // The leader's mark names the incarnation it removed: a later process with this id
            // (started again with --join) is not the one removed.
            let mark = self.membership.removed(me.node.0).await.ok().flatten().filter(|m| m.incarnation == me.incarnation.0);
            if let Some(m) = mark {
                // It may have missed the slot that removed it (the leader stops talking to
                // non-members): the mark tells it instead. The node ignores a second notice.
                let _ = self.inputs.send(Input::Removed(crate::node::Removal { epoch: m.epoch, source: "etcd" })).await;
            }
            // A halted replica (a cluster version its build does not read) does not lead: its
            // manager would judge joins and versions from a state it stopped applying.
            let eligible = policy::eligible(me, &st.config, &pending, mark.is_some()) && st.halted.is_none();
            self.eligible.send_if_modified(|e| std::mem::replace(e, eligible) != eligible);
            if st.core.role != RoleKind::Leader {
                if let Some(f) = failures.as_mut() {
                    f.clear();
                }
                continue;
            }
            if st.cluster_version > published {
                match self.membership.publish_cluster_version(st.cluster_version).await {
                    Ok(()) => published = st.cluster_version,
                    Err(e) => debug!(error = %e, "could not publish the cluster version"),
                }
            }
            let now = Time(start.elapsed().as_millis() as u64);
            if let Err(e) = self.lead(&st, &pending, failures.as_mut(), now).await {
                debug!(error = %e, "membership step failed; retrying");
            }
        }
    }

    async fn status(&self) -> Option<NodeStatus> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Status(tx)).await.ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx).await.ok()?.ok()
    }

    /// Who is registered now (node id to incarnation).
    fn registered(&self) -> Registered {
        self.directory.all().into_iter().map(|(n, i)| (n, i.incarnation)).collect()
    }

    /// The barrier: every live member of `config` runs it (has reported its epoch).
    async fn barrier_passed(&self, config: &Configuration) -> anyhow::Result<bool> {
        let epochs = self.membership.epochs().await?;
        let behind = policy::barrier_behind(config, &self.registered(), &epochs);
        if !behind.is_empty() {
            debug!(epoch = config.epoch, ?behind, "barrier: waiting for members to run the configuration");
        }
        Ok(behind.is_empty())
    }

    /// The highest cluster version `node`'s registered build reads (1: the previous release,
    /// which registers without it; or not registered).
    fn reads(&self, node: paxos::NodeId) -> u32 {
        if node == self.settings.me.node {
            return kvstore::MAX_CLUSTER_VERSION;
        }
        self.directory.get(node).map_or(1, |i| i.max_cluster_version)
    }

    /// The pending requests that may move under the cluster version: a join of a process whose
    /// build does not read the version the cluster runs waits (logged once per process), and
    /// never blocks the requests behind it.
    fn movable(&self, pending: &[PendingChange], runs: u32) -> Vec<PendingChange> {
        let mut warned = self.too_old.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .iter()
            .filter(|p| {
                let ok = policy::join_allowed(p, runs, |n| self.reads(n));
                if let (false, PendingChange::Join { id, incarnation }) = (ok, p) {
                    if warned.insert((*id, *incarnation)) {
                        warn!(
                            node = id,
                            reads = self.reads(paxos::NodeId(*id)),
                            cluster_version = runs,
                            "join refused: the joining replica's build does not read the cluster version; upgrade its binary"
                        );
                        self.metrics.joins_refused_version.inc();
                    }
                }
                ok
            })
            .cloned()
            .collect()
    }

    /// One leader step: the first pending request that can move, else the failure policy, else
    /// raising the cluster version.
    async fn lead(&self, st: &NodeStatus, pending: &[PendingChange], failures: Option<&mut FailurePolicy>, now: Time) -> anyhow::Result<()> {
        let config = &st.config;
        let registered = self.registered();
        let pending = &self.movable(pending, st.cluster_version)[..];
        let mut step = policy::next_step(self.settings.me, config, pending, &registered, |m| st.core.promotable(m).is_ok());
        if step.is_none() {
            if let Some(f) = failures {
                let evicted = self.membership.evicted().await?;
                match f.decide(now, config, &registered, pending, &evicted) {
                    Some(Verdict::Remove(m)) => {
                        warn!(node = %m.node, after = ?self.settings.remove_failed_after, "acceptor failed (no etcd lease); removing it");
                        step = Some(Step::Propose(ConfigChange::Remove(m.node), After::Evicted(m.node.0, m.incarnation.0)));
                    }
                    Some(Verdict::Kept { member, left, configured }) => {
                        warn!(node = %member.node, left, configured, "failed acceptor kept: removing it would go below a majority of the configured set (an operator may remove it)");
                    }
                    None => {}
                }
            }
        }
        if step.is_none() && st.halted.is_none() {
            if let Some(v) = policy::version_to_raise(config, st.cluster_version, kvstore::MAX_CLUSTER_VERSION, &registered, |n| self.reads(n)) {
                info!(from = st.cluster_version, to = v, "every member reads a newer cluster version: raising it");
                step = Some(Step::Propose(ConfigChange::SetVersion(v), After::Nothing));
            }
        }
        let Some(step) = step else { return Ok(()) };
        match step {
            Step::HandOff => {
                info!("this leader is leaving: handing leadership off");
                self.eligible.send_if_modified(|e| std::mem::replace(e, false));
                let _ = self.election.send(ElectionCmd::Resign);
            }
            Step::Complete(p, mark) => {
                if let Some(mark) = mark {
                    if !self.barrier_passed(config).await? {
                        return Ok(());
                    }
                    self.membership.put_mark("removed", p.id(), mark).await?;
                    info!(node = p.id(), epoch = mark.epoch, "leave complete: every member runs the configuration without it");
                }
                if let PendingChange::Join { id, .. } = p {
                    self.membership.forget_evicted(id).await?;
                    info!(node = id, epoch = config.epoch, "join complete: the node is an acceptor");
                }
                self.membership.delete_pending(&p).await?;
            }
            Step::Propose(change, after) => {
                if !self.barrier_passed(config).await? {
                    return Ok(());
                }
                let next = self.propose_locked(change).await?;
                self.metrics.membership_changes.inc();
                info!(?change, epoch = next.epoch, "membership change took effect");
                if let After::Evicted(id, incarnation) = after {
                    self.membership.put_mark("evicted", id, EpochMark { incarnation, epoch: next.epoch }).await?;
                }
            }
        }
        Ok(())
    }

    /// Take the etcd lock, propose `change`, wait for it to take effect, release the lock.
    async fn propose_locked(&self, change: ConfigChange) -> anyhow::Result<Configuration> {
        let mut client = self.membership.client.clone();
        let lease = client.lease_grant(30, None).await?.id();
        let name = format!("{}/lock/membership", self.membership.prefix);
        let locked = tokio::time::timeout(Duration::from_secs(3), client.lock(name, Some(LockOptions::new().with_lease(lease)))).await;
        let key = match locked {
            Ok(Ok(r)) => r.key().to_vec(),
            Ok(Err(e)) => {
                let _ = client.lease_revoke(lease).await;
                return Err(e.into());
            }
            Err(_) => {
                let _ = client.lease_revoke(lease).await;
                anyhow::bail!("the membership lock is held elsewhere");
            }
        };
        let result = self.propose(change).await;
        let _ = client.unlock(key).await;
        let _ = client.lease_revoke(lease).await;
        result
    }

    async fn propose(&self, change: ConfigChange) -> anyhow::Result<Configuration> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Reconfigure { change, reply: tx }).await.map_err(|_| anyhow::anyhow!("node loop gone"))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(config))) => Ok(config),
            Ok(Ok(Err(Refused::Config(why)))) => anyhow::bail!("{change:?} refused: {why}"),
            Ok(Ok(Err(e))) => anyhow::bail!("{change:?} not taken: {e}"),
            Ok(Err(_)) => anyhow::bail!("node loop dropped the change"),
            Err(_) => anyhow::bail!("{change:?}: outcome unknown after 10 s"),
        }
    }
}

/// Wait until `P/removed/<me>` names this incarnation (the leave is complete), or `timeout`.
pub async fn wait_removed(membership: &Membership, me: Member, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if membership.removed(me.node.0).await.ok().flatten().is_some_and(|m| m.incarnation == me.incarnation.0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
