//! etcd: the failure detector, discovery, the election, and the bootstrap barrier.
//!
//! Keys, under the cluster prefix `P` (default `/synod`):
//!
//! | key | value | held by |
//! |---|---|---|
//! | `P/nodes/<id>` | [`PeerInfo`] as JSON (id, incarnation, addresses) | the node's lease |
//! | `P/incarnations/<id>` | the founding incarnation (decimal) | nobody (permanent) |
//! | `P/starts/<id>` | `<start number> <incarnation>` of the latest process start of `<id>` | nobody (permanent) |
//! | `P/election/...` | etcd's election keys; value: the candidate's node id | the node's lease |
//!
//! **Failure detection and discovery.** Each process grants a lease (`--lease-ttl`, seconds),
//! registers `P/nodes/<id>` under it and keeps it alive. A process that dies stops its
//! keep-alives, so after one TTL etcd deletes its keys: its registration disappears from every
//! watcher, and its election key goes too, which lets the next candidate win.
//!
//! **Leadership.** Every node campaigns (etcd's election API) with its lease. The winner is told
//! `Event::LeaderHint { leader: Some(me) }`; an observer tells everyone else who won. A node
//! whose lease etcd says is gone (revoked, expired) is told `LeaderHint { leader: None }` and
//! starts over with a new lease. On `Action::SteppedDown` the node resigns and campaigns again
//! (behind the other candidates).
//!
//! **etcd unreachable (issue 25).** A node that cannot keep its lease alive for a whole TTL
//! because etcd does not answer (not because etcd said the lease is gone) is *not* told to step
//! down: a leader goes on leading for as long as a quorum of acceptors answers it (the core's own
//! leader lease, `leader_lease_ms`, decides), so a coordination outage is not a data outage.
//! Elections, joins and leaves, suspicions and failure-policy removals wait for etcd;
//! `synod_etcd_up` is 0, `/v1/status` says `"etcd": false`, and `/readyz` stays ready on a replica
//! that serves with a known leader (its body says etcd is unreachable). When etcd answers again
//! the node registers a new lease and campaigns at once if it leads; a follower that knows
//! another leader holds its campaign back for [`INCUMBENT_HEAD_START`] unless the election names
//! a winner already, so that the incumbent wins the election again and no leader change follows.
//! If a follower wins anyway, it runs phase 1 with a higher ballot, the incumbent sees the ballot
//! (or the observer's hint) and steps down: one leader change, no duel, no safety question.
//!
//! **Revoking a silent leader's lease.** A dead leader's election key would otherwise last until
//! its lease expires (up to a TTL after its last keep-alive). Each acceptor's node loop reports a
//! [`Suspicion`] when it has heard nothing from the leader it knows for
//! `--suspect-leader-after-ms`; [`suspect`] then checks that etcd's election still names that
//! node, records `P/suspects/<leader's lease>/<my id>` (value: the recorder's own lease, hex)
//! *under the recorder's own lease*, and revokes the leader's lease once a majority of the
//! acceptors has a record that counts. A record counts only while its owner is the registered
//! process that wrote it: `P/nodes/<id>` exists under the very lease the record names (issue 25:
//! records used to live under the leader's lease, so a follower killed while it suspected, or
//! whose delete failed, left a record that, with one other follower's brief gap, later revoked a
//! healthy leader). A record vanishes with its owner's lease; a withdrawal is retried until the
//! delete succeeds. A majority is required so that a leader cut off
//! from a minority only (which still commits) is left alone; a leader that a majority cannot
//! hear cannot commit either, so revoking it costs nothing that was working. A follower that
//! hears the leader again withdraws its record. Revoking is never a safety question (ballots
//! fence the old leader; it steps down when its keep-alive reports the lease gone or it sees a
//! higher ballot), only one of churn.
//!
//! **Why safety does not depend on etcd.** etcd only *hints*. Two nodes may both believe they
//! won (a lease expired on the server while the old winner had not noticed yet; a partition
//! between a node and etcd): each then runs phase 1 with a ballot above every one it has seen,
//! and acceptors promise only the highest ballot, so at most one of them can complete phase 2
//! for any slot, and a chosen value is adopted by every later ballot (Paxos Made Simple 2.2-2.3).
//! A wrong hint costs liveness (a duel of ballots, or nobody leading until the TTL), never a
//! second value in a slot. Linearizable reads are likewise confirmed by a quorum round, not by
//! the etcd election.
//!
//! **Bootstrap.** `--bootstrap 1,2,3` names the founding members. Each founder records its
//! incarnation under `P/incarnations/<id>` with a create-if-absent transaction, then waits
//! (polling with a deadline) until every founder has; all then build the same
//! `Configuration::bootstrap` from those records. A process whose id is already recorded is a
//! *restart*: it must not vote under the old identity (its promises are forgotten), so it starts
//! without a configuration, as a learner (rejoining is the membership work's job).

use crate::directory::{Directory, PeerInfo};
use crate::metrics::Metrics;
use crate::node::{ElectionCmd, Input, NodeHandle};
use anyhow::{bail, Context as _};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, ResignOptions, Txn, TxnOp, WatchOptions,
};
use paxos::{Configuration, Incarnation, Member, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// How long a follower that knows a leader waits before it campaigns on a fresh lease (after an
/// etcd outage), unless the election already has a winner: the incumbent's head start.
pub const INCUMBENT_HEAD_START: Duration = Duration::from_millis(1_500);

/// Why a lease keeper stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseEnd {
    /// etcd said the lease is gone (revoked, expired).
    Gone,
    /// No keep-alive succeeded for a whole TTL: etcd did not answer.
    Unreachable,
}

/// How the etcd side of a node is set up.
#[derive(Clone, Debug)]
pub struct EtcdSettings {
    /// etcd client endpoints (`http://host:port`).
    pub endpoints: Vec<String>,
    /// The cluster's key prefix.
    pub prefix: String,
    /// The lease TTL in seconds: how long a dead node keeps its registration and election key.
    pub lease_ttl: i64,
}

/// Connect to etcd using only the endpoints that answer now (fails if none does).
///
/// etcd-client balances over every endpoint it is given, lazily: an endpoint whose name does not
/// resolve or whose server is down stays in the balancer, and calls routed to it fail
/// (`Unavailable, "dns error"`). So each endpoint is probed first (name resolution and a TCP
/// connect) and only the reachable ones are passed on.
pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    connect_secured(endpoints, &EtcdSecurity::default()).await
}

/// How a replica reaches etcd beyond its endpoints: TLS (`https://` endpoints, etcd's CA, and a
/// client certificate if etcd asks for one) and etcd's own user and password.
#[derive(Clone, Debug, Default)]
pub struct EtcdSecurity {
    /// TLS options (`None`: plain `http://`).
    pub tls: Option<etcd_client::TlsOptions>,
    /// etcd's user and password (`None`: etcd without auth).
    pub user: Option<(String, String)>,
}

/// [`connect`] with TLS and etcd's user as `security` says.
pub async fn connect_secured(endpoints: &[String], security: &EtcdSecurity) -> anyhow::Result<Client> {
    let probes = endpoints.iter().map(|e| async move { (e, probe(e).await) });
    let mut live = Vec::new();
    for (e, r) in futures::future::join_all(probes).await {
        match r {
            Ok(()) => live.push(e.clone()),
            Err(why) => warn!(endpoint = %e, error = %why, "etcd endpoint unreachable; leaving it out"),
        }
    }
    if live.is_empty() {
        bail!("no etcd endpoint is reachable (of {endpoints:?})");
    }
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(tls) = &security.tls {
        opts = opts.with_tls(tls.clone());
    }
    if let Some((user, password)) = &security.user {
        opts = opts.with_user(user.clone(), password.clone());
    }
    let mut client = Client::connect(&live, Some(opts)).await.context("connecting to etcd")?;
    // One round trip, so a client that is handed out has answered at least once.
    client.status().await.context("asking etcd for its status")?;
    Ok(client)
}

/// [`connect`], retried with backoff until `deadline` (a node that starts while one etcd member
/// is down, or before etcd is up at all, waits instead of exiting).
pub async fn connect_retrying(endpoints: &[String], security: &EtcdSecurity, deadline: Instant) -> anyhow::Result<Client> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect_secured(endpoints, security).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() + backoff < deadline => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "etcd not reachable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Resolve `endpoint` (`http://host:port`, `https://..` or `host:port`) and open a TCP
/// connection to one of its addresses.
async fn probe(endpoint: &str) -> Result<(), String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let target = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:2379")
    };
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(target.as_str())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".to_string()),
    }
}

/// Retry an etcd call with backoff until `deadline`.
pub async fn retrying<T, F, Fut>(what: &str, deadline: Instant, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + backoff < deadline => {
                warn!(error = format!("{e:#}"), retry_in = ?backoff, "{what} failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.context(what.to_string())),
        }
    }
}

/// What a process start drew from etcd: its incarnation and its start number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The incarnation: above every earlier incarnation of this node id, and the wall clock in
    /// microseconds when the clock allows (so it stays readable), whatever the clock did.
    pub incarnation: Incarnation,
    /// 1 for the first start of this node id, then 2, 3, ...: the prefix of its request ids.
    pub number: u64,
}

/// Draw this process start's incarnation and start number from `P/starts/<id>` with a
/// compare-and-swap, so both are strictly above those of every earlier start of `node`, even if
/// the wall clock stepped back across the restart. Retried (a conflict or an error) until
/// `deadline`; an attempt whose reply was lost only skips a number.
///
/// `keep`: a durable restart keeps its incarnation (its promises are on disk) and draws only a
/// new start number.
pub async fn draw_start(client: &Client, prefix: &str, node: NodeId, keep: Option<Incarnation>, deadline: Instant) -> anyhow::Result<Start> {
    let key = format!("{prefix}/starts/{}", node.0);
    retrying("drawing an incarnation", deadline, || {
        let mut c = client.clone();
        let key = key.clone();
        async move {
            let resp = c.get(key.clone(), None).await?;
            let (prev, rev) = match resp.kvs().first() {
                Some(kv) => (parse_start(kv.value_str()?).context("a malformed start record")?, kv.mod_revision()),
                None => (Start { incarnation: Incarnation(0), number: 0 }, 0),
            };
            let next = Start {
                incarnation: keep.unwrap_or(Incarnation(crate::wall_micros().max(prev.incarnation.0 + 1))),
                number: prev.number + 1,
            };
            if let Some(k) = keep {
                // A kept incarnation must be the latest this id drew: an older one was
                // replaced (its data is stale, e.g. a backup copied back over a newer start).
                anyhow::ensure!(k.0 >= prev.incarnation.0, "node {} already started as incarnation {} after this data directory's {}", node.0, prev.incarnation.0, k.0);
            }
            let cmp = if rev == 0 {
                Compare::version(key.clone(), CompareOp::Equal, 0)
            } else {
                Compare::mod_revision(key.clone(), CompareOp::Equal, rev)
            };
            let value = format!("{} {}", next.number, next.incarnation.0);
            let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key.clone(), value, None)]);
            if c.txn(txn).await?.succeeded() {
                Ok(next)
            } else {
                bail!("another start of node {} drew at the same time", node.0)
            }
        }
    })
    .await
}

/// The latest start drawn for `node` ([`draw_start`]), if any.
pub async fn latest_start(client: &Client, prefix: &str, node: NodeId, deadline: Instant) -> anyhow::Result<Option<Start>> {
    let key = format!("{prefix}/starts/{}", node.0);
    retrying("reading the latest start", deadline, || {
        let mut c = client.clone();
        let key = key.clone();
        async move {
            let resp = c.get(key, None).await?;
            match resp.kvs().first() {
                Some(kv) => Ok(Some(parse_start(kv.value_str()?).context("a malformed start record")?)),
                None => Ok(None),
            }
        }
    })
    .await
}

fn parse_start(v: &str) -> Option<Start> {
    let (n, i) = v.split_once(' ')?;
    Some(Start { number: n.parse().ok()?, incarnation: Incarnation(i.parse().ok()?) })
}

/// The cluster version a new cluster starts at: the lowest that its founders read, each as the
/// record written with its founding incarnation says (none: the previous release, 1).
async fn founding_version(client: &mut Client, prefix: &str, founders: &BTreeMap<u64, Member>) -> anyhow::Result<u32> {
    let dir = format!("{prefix}/founder-versions/");
    let resp = client.get(dir.clone(), Some(GetOptions::new().with_prefix())).await.context("reading the founders' versions")?;
    let mut reads: BTreeMap<u64, u32> = BTreeMap::new();
    for kv in resp.kvs() {
        let id = kv.key_str()?.trim_start_matches(&dir).parse::<u64>().ok();
        let parsed = kv.value_str()?.split_once(':').and_then(|(inc, v)| Some((inc.parse::<u64>().ok()?, v.parse::<u32>().ok()?)));
        if let (Some(id), Some((inc, v))) = (id, parsed) {
            if founders.get(&id).is_some_and(|m| m.incarnation.0 == inc) {
                reads.insert(id, v);
            }
        }
    }
    Ok(founders.keys().map(|id| reads.get(id).copied().unwrap_or(1)).min().unwrap_or(1).min(kvstore::MAX_CLUSTER_VERSION))
}

/// Run the bootstrap barrier (see the module docs): the founding configuration and the cluster
/// version the new cluster starts at. `None`: not a founder, or a restart.
pub async fn bootstrap(
    client: &mut Client,
    prefix: &str,
    me: Member,
    founders: &[u64],
    timeout: Duration,
) -> anyhow::Result<Option<(Configuration, u32)>> {
    if !founders.contains(&me.node.0) {
        return Ok(None);
    }
    let deadline = Instant::now() + timeout;
    let key = format!("{prefix}/incarnations/{}", me.node.0);
    let mine = me.incarnation.0.to_string();
    // What this founder's build reads, written in the same transaction as its founding
    // incarnation (so a record exists exactly when the founder does, and names it): a new
    // cluster starts at the lowest version its founders read (the previous release writes
    // none: 1), with no version change in its log (docs/upgrades.md).
    let version_key = format!("{prefix}/founder-versions/{}", me.node.0);
    let version_value = format!("{mine}:{}", kvstore::MAX_CLUSTER_VERSION);
    // Retried until the deadline: an attempt whose reply was lost may have written the record,
    // so a record holding *this* incarnation counts as ours (incarnations are never reused).
    let founded = retrying("recording the founding incarnation", deadline, || {
        let mut c = client.clone();
        let (key, mine, version_key, version_value) = (key.clone(), mine.clone(), version_key.clone(), version_value.clone());
        async move {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), mine.clone(), None), TxnOp::put(version_key.clone(), version_value.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            let resp = c.txn(txn).await?;
            if resp.succeeded() {
                return Ok(true);
            }
            let existing = resp.op_responses().into_iter().find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            Ok(existing.as_deref() == Some(mine.as_bytes()))
        }
    })
    .await?;
    if !founded {
        warn!(node = %me.node, "this id already has a founding incarnation: a restart; starting as a learner");
        return Ok(None);
    }
    let dir = format!("{prefix}/incarnations/");
    loop {
        let resp = match client.get(dir.clone(), Some(GetOptions::new().with_prefix())).await {
            Ok(r) => r,
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "reading the founders failed; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            Err(e) => return Err(e).context("reading the founders"),
        };
        let mut members = BTreeMap::new();
        for kv in resp.kvs() {
            let id = kv.key_str()?.trim_start_matches(&dir).parse::<u64>().ok();
            let inc = kv.value_str()?.parse::<u64>().ok();
            if let (Some(id), Some(inc)) = (id, inc) {
                if founders.contains(&id) {
                    members.insert(id, Member { node: NodeId(id), incarnation: Incarnation(inc) });
                }
            }
        }
        if members.len() == founders.len() {
            let version = founding_version(client, prefix, &members).await?;
            info!(founders = ?founders, cluster_version = version, "every founder registered; bootstrapping");
            return Ok(Some((Configuration::bootstrap(members.into_values()), version)));
        }
        if Instant::now() > deadline {
            bail!("bootstrap: only {} of {} founders registered within {timeout:?}", members.len(), founders.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use ::node::Suspicion;

/// Act on this node's suspicions until the channel closes: while one is raised, make sure the
/// election still names the suspected node, record the suspicion under that node's election
/// lease, and revoke the lease once a majority of acceptors suspects it; when it is withdrawn,
/// delete the record. Checked again every `recheck` while it stands (the last of a majority to
/// record sees all the others; the rechecks cover lost replies).
pub async fn suspect(client: Client, prefix: String, me: NodeId, mut suspicion: watch::Receiver<Option<Suspicion>>, metrics: Arc<Metrics>, recheck: Duration) {
    let election = format!("{prefix}/election");
    // The record this node holds now: (leader's lease, key).
    let mut recorded: Option<(i64, String)> = None;
    loop {
        let current = suspicion.borrow_and_update().clone();
        match current {
            None => {
                if let Some((_, key)) = recorded.clone() {
                    // Withdrawn only once the delete succeeded (retried every `recheck`).
                    if client.kv_client().delete(key, None).await.is_ok() {
                        recorded = None;
                        debug!("leader heard again: suspicion withdrawn");
                    }
                }
            }
            Some(s) => {
                if let Err(e) = suspect_once(&client, &prefix, &election, me, &s, &mut recorded, &metrics).await {
                    debug!(error = %e, "acting on a leader suspicion failed; will retry");
                }
            }
        }
        tokio::select! {
            r = suspicion.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(recheck) => {}
        }
    }
}

async fn suspect_once(
    client: &Client,
    prefix: &str,
    election: &str,
    me: NodeId,
    s: &Suspicion,
    recorded: &mut Option<(i64, String)>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let resp = client.election_client().leader(election).await?;
    let Some(kv) = resp.kv() else { return Ok(()) };
    let named = kv.value_str()?.parse::<u64>().ok().map(NodeId);
    let lease = kv.lease();
    if named != Some(s.leader) || lease == 0 {
        // The election has moved on (its observer will tell the node loop): nothing to revoke.
        return Ok(());
    }
    let own = metrics.etcd_lease.get() as i64;
    if own == 0 {
        // No lease of our own (etcd unreachable, registering again): nothing to hold a record.
        return Ok(());
    }
    let dir = format!("{prefix}/suspects/{lease:x}/");
    if recorded.as_ref().is_none_or(|(l, _)| *l != lease) {
        if let Some((_, old)) = recorded.as_ref() {
            // A record about an earlier lease of the leader: gone before we write the new one.
            client.kv_client().delete(old.clone(), None).await?;
            *recorded = None;
        }
        let key = format!("{dir}{}", me.0);
        client.kv_client().put(key.clone(), format!("{own:x}"), Some(PutOptions::new().with_lease(own))).await?;
        info!(leader = %s.leader, lease, "no word from the leader: suspicion recorded");
        *recorded = Some((lease, key));
    }
    let suspects = s.suspects(live_suspicions(client, prefix, lease).await?);
    if s.majority(&suspects) {
        client.lease_client().revoke(lease).await?;
        metrics.leader_leases_revoked.inc();
        warn!(leader = %s.leader, lease, suspects = ?suspects, "a majority of acceptors hears nothing from the leader: revoked its etcd lease");
        *recorded = None;
    }
    Ok(())
}

/// The nodes whose suspicion of the leader holding `leader_lease` counts: each has a record under
/// `P/suspects/<leader_lease>/` whose value names a lease that its registration `P/nodes/<id>` is
/// held under now (the recording process is alive and is the one registered). A record of a
/// process that died, was replaced by a new incarnation, or wrote it under an earlier lease does
/// not count.
pub async fn live_suspicions(client: &Client, prefix: &str, leader_lease: i64) -> anyhow::Result<Vec<NodeId>> {
    let dir = format!("{prefix}/suspects/{leader_lease:x}/");
    let records = client.kv_client().get(dir.clone(), Some(GetOptions::new().with_prefix())).await?;
    let nodes_dir = format!("{prefix}/nodes/");
    let nodes = client.kv_client().get(nodes_dir.clone(), Some(GetOptions::new().with_prefix().with_keys_only())).await?;
    let registered: BTreeMap<u64, i64> =
        nodes.kvs().iter().filter_map(|kv| Some((kv.key_str().ok()?.strip_prefix(&nodes_dir)?.parse::<u64>().ok()?, kv.lease()))).collect();
    Ok(records
        .kvs()
        .iter()
        .filter_map(|kv| {
            let id = kv.key_str().ok()?.strip_prefix(&dir)?.parse::<u64>().ok()?;
            let owner = i64::from_str_radix(kv.value_str().ok()?, 16).ok()?;
            (owner != 0 && kv.lease() == owner && registered.get(&id) == Some(&owner)).then_some(NodeId(id))
        })
        .collect())
}

/// The long-running etcd task of one node.
pub struct EtcdTask {
    /// The client.
    pub client: Client,
    /// Settings.
    pub settings: EtcdSettings,
    /// What this node publishes.
    pub info: PeerInfo,
    /// The node loop.
    pub inputs: NodeHandle,
    /// Peer addresses, kept up to date from the watch.
    pub directory: Directory,
    /// `etcd_up` lives here.
    pub metrics: Arc<Metrics>,
}

impl EtcdTask {
    fn election_name(&self) -> String {
        format!("{}/election", self.settings.prefix)
    }

    async fn hint(&self, leader: Option<NodeId>) {
        let _ = self.inputs.send(Input::Hint(leader)).await;
    }

    /// Start discovery and the observer, then hold a lease and campaign until `shutdown` turns
    /// true; then resign and revoke the lease (so peers see this node leave at once, not after
    /// a TTL).
    ///
    /// The node campaigns only while `eligible` is true (it is an acceptor of the configuration
    /// it runs and is not leaving): a learner that won the election could not lead, and would
    /// keep the acceptors from electing one until its lease ran out. When `eligible` turns false
    /// the node withdraws its candidacy, or resigns if it won.
    pub async fn run(
        self,
        mut cmds: mpsc::UnboundedReceiver<ElectionCmd>,
        mut eligible: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let discovery = tokio::spawn(discover(self.client.clone(), self.settings.prefix.clone(), self.directory.clone(), self.inputs.clone()));
        let observer = tokio::spawn(observe(self.client.clone(), self.election_name(), self.info.node(), self.inputs.clone()));
        let me = self.info.node();
        let ttl = Duration::from_secs(self.settings.lease_ttl as u64);
        // After an outage: whether to give a known incumbent a head start in the next campaign.
        let mut after_outage = false;
        'lease: loop {
            if *shutdown.borrow() {
                break;
            }
            let lease = match self.register().await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "etcd registration failed; retrying");
                    self.metrics.etcd_up.set(0);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => continue 'lease,
                        _ = shutdown.changed() => break 'lease,
                    }
                }
            };
            self.metrics.etcd_up.set(1);
            self.metrics.etcd_lease.set(lease as u64);
            if after_outage {
                info!("etcd answers again: registered a new lease");
                self.incumbent_head_start(me, &mut shutdown).await;
                after_outage = false;
            }
            let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<LeaseEnd>();
            let keeper = tokio::spawn(keep_alive(self.client.clone(), lease, ttl, lost_tx));
            let mut leader_key = None;
            let outcome = 'campaign: loop {
                let mut ec = self.client.election_client();
                if leader_key.is_none() && !*eligible.borrow_and_update() {
                    tokio::select! {
                        Ok(()) = eligible.changed() => {}
                        end = &mut lost => break 'campaign if end == Ok(LeaseEnd::Unreachable) { "etcd unreachable" } else { "lease lost" },
                        _ = shutdown.changed() => break 'campaign "shutdown",
                        Some(_) = cmds.recv() => {} // not leading: nothing to resign
                    }
                } else if leader_key.is_none() {
                    tokio::select! {
                        r = ec.campaign(self.election_name(), me.0.to_string(), lease) => match r {
                            Ok(mut resp) => {
                                leader_key = resp.take_leader();
                                if *eligible.borrow() {
                                    info!("won the etcd election");
                                    self.hint(Some(me)).await;
                                } else if let Some(k) = leader_key.take() {
                                    let _ = ec.resign(Some(ResignOptions::new().with_leader(k))).await;
                                }
                            }
                            Err(e) => {
                                debug!(error = %e, "campaign failed; retrying");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        },
                        Ok(()) = eligible.changed() => {
                            if !*eligible.borrow() {
                                // Dropping the campaign call makes etcd give the candidacy up;
                                // delete the key too, in case the server had not noticed yet
                                // (the election key is `<name>/<lease in hex>`).
                                let key = format!("{}/{lease:x}", self.election_name());
                                let _ = self.client.kv_client().delete(key, None).await;
                                info!("not an acceptor (or leaving): withdrew from the election");
                            }
                        }
                        end = &mut lost => break 'campaign if end == Ok(LeaseEnd::Unreachable) { "etcd unreachable" } else { "lease lost" },
                        _ = shutdown.changed() => break 'campaign "shutdown",
                        Some(_) = cmds.recv() => {} // not leading: nothing to resign
                    }
                } else {
                    tokio::select! {
                        Ok(()) = eligible.changed() => {
                            if !*eligible.borrow() {
                                if let Some(k) = leader_key.take() {
                                    let _ = ec.resign(Some(ResignOptions::new().with_leader(k))).await;
                                    info!("no longer eligible: resigned from the etcd election");
                                }
                            }
                        }
                        Some(ElectionCmd::Resign) = cmds.recv() => {
                            if let Some(k) = leader_key.take() {
                                let _ = ec.resign(Some(ResignOptions::new().with_leader(k))).await;
                                info!("resigned from the etcd election");
                            }
                            // Let the queued candidates win before we queue up again.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        end = &mut lost => break 'campaign if end == Ok(LeaseEnd::Unreachable) { "etcd unreachable" } else { "lease lost" },
                        _ = shutdown.changed() => break 'campaign "shutdown",
                    }
                }
            };
            keeper.abort();
            self.metrics.etcd_lease.set(0);
            if outcome == "shutdown" {
                if let Some(k) = leader_key.take() {
                    let _ = self.client.election_client().resign(Some(ResignOptions::new().with_leader(k))).await;
                }
                let _ = self.client.lease_client().revoke(lease).await;
                info!("resigned and revoked the etcd lease");
                break;
            }
            self.metrics.etcd_up.set(0);
            if outcome == "etcd unreachable" {
                // Not a verdict on anybody: keep leading (or following) on the core's own terms.
                warn!(leading = leader_key.is_some(), "etcd unreachable for a whole lease TTL; leadership stays with the core (ballots keep safety); registering again");
                after_outage = true;
            } else {
                warn!("etcd lease lost; no longer leading; registering again");
                self.hint(None).await;
            }
        }
        self.metrics.etcd_up.set(0);
        discovery.abort();
        observer.abort();
    }

    /// After an outage, a follower that knows a leader other than itself lets it campaign first
    /// (module docs), unless the election names a winner already.
    async fn incumbent_head_start(&self, me: NodeId, shutdown: &mut watch::Receiver<bool>) {
        let leader = self.metrics.leader();
        if leader == 0 || leader == me.0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + INCUMBENT_HEAD_START;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = self.client.election_client().leader(self.election_name()).await {
                if r.kv().is_some() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn register(&self) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        let lease = c.lease_grant(self.settings.lease_ttl, None).await?.id();
        let key = format!("{}/nodes/{}", self.settings.prefix, self.info.id);
        c.put(key, serde_json::to_vec(&self.info)?, Some(PutOptions::new().with_lease(lease))).await?;
        info!(lease, ttl = self.settings.lease_ttl, "registered in etcd");
        Ok(lease)
    }
}

/// Keep `lease` alive; fire `lost` once it cannot have survived (no successful keep-alive for a
/// whole TTL, or etcd says it expired).
async fn keep_alive(client: Client, lease: i64, ttl: Duration, lost: tokio::sync::oneshot::Sender<LeaseEnd>) {
    let mut end = LeaseEnd::Unreachable;
    let mut last_ok = Instant::now();
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut lc = client.lease_client();
    'outer: while last_ok.elapsed() < ttl {
        let (mut keeper, mut stream) = match lc.keep_alive(lease).await {
            Ok(p) => p,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            if keeper.keep_alive().await.is_err() {
                continue 'outer;
            }
            match tokio::time::timeout(period, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Ok(Some(_))) => {
                    // ttl 0: the lease is gone
                    end = LeaseEnd::Gone;
                    break 'outer;
                }
                _ => {
                    if last_ok.elapsed() >= ttl {
                        break 'outer;
                    }
                    continue 'outer;
                }
            }
            tokio::time::sleep(period).await;
        }
    }
    let _ = lost.send(end);
}

/// Keep the directory equal to `P/nodes/`: a full read, then a watch from the next revision.
async fn discover(mut client: Client, prefix: String, directory: Directory, inputs: NodeHandle) {
    let dir = format!("{prefix}/nodes/");
    loop {
        let resp = match client.get(dir.clone(), Some(GetOptions::new().with_prefix())).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let mut peers = BTreeMap::new();
        for kv in resp.kvs() {
            if let Ok(info) = serde_json::from_slice::<PeerInfo>(kv.value()) {
                peers.insert(info.node(), info);
            }
        }
        if directory.replace(peers) {
            let _ = inputs.send(Input::PeersChanged).await;
        }
        let rev = resp.header().map_or(0, |h| h.revision());
        let opts = WatchOptions::new().with_prefix().with_start_revision(rev + 1);
        let Ok((_watcher, mut stream)) = client.watch(dir.clone(), Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        while let Ok(Some(resp)) = stream.message().await {
            if resp.canceled() {
                break;
            }
            let mut changed = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => {
                        if let Ok(info) = serde_json::from_slice::<PeerInfo>(kv.value()) {
                            info!(peer = info.id, grpc = %info.grpc, "peer registered");
                            changed |= directory.upsert(info);
                        }
                    }
                    EventType::Delete => {
                        let id = kv.key_str().ok().and_then(|k| k.trim_start_matches(&dir).parse::<u64>().ok());
                        if let Some(id) = id {
                            info!(peer = id, "peer's lease expired or was revoked");
                            changed |= directory.remove(NodeId(id));
                        }
                    }
                }
            }
            if changed {
                let _ = inputs.send(Input::PeersChanged).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Tell the node who won the election whenever it changes (other nodes only: the winner hears
/// it from its own campaign).
async fn observe(client: Client, name: String, me: NodeId, inputs: NodeHandle) {
    loop {
        let mut ec = client.election_client();
        if let Ok(mut stream) = ec.observe(name.clone()).await {
            while let Ok(Some(resp)) = stream.message().await {
                let leader = resp.kv().and_then(|kv| kv.value_str().ok()).and_then(|v| v.parse::<u64>().ok()).map(NodeId);
                if let Some(l) = leader {
                    if l != me {
                        debug!(leader = %l, "observed election leader");
                        let _ = inputs.send(Input::Hint(Some(l))).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
