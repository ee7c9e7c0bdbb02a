//! Who is where: the addresses of the replicas, as discovered through etcd.
//!
//! The etcd task writes it (from the registration keys it watches); the node loop reads it to
//! open one outbound stream per peer, and the REST layer reads it to forward a request to the
//! leader or redirect a client there. It is a plain shared map behind a lock held for
//! microseconds; changes are also announced to the node loop so it can (re)connect.

use paxos::{Incarnation, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// What a replica publishes about itself under `<prefix>/nodes/<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The replica's id.
    pub id: u64,
    /// The incarnation of the process that registered.
    pub incarnation: u64,
    /// Where its gRPC peer service listens (`host:port`).
    pub grpc: String,
    /// Where its REST API listens (`host:port`).
    pub http: String,
    /// The highest cluster version its build reads (`kvstore::MAX_CLUSTER_VERSION`): the
    /// previous release registered without it, which reads as 1 (docs/upgrades.md).
    #[serde(default = "version_one")]
    pub max_cluster_version: u32,
}

fn version_one() -> u32 {
    1
}

impl PeerInfo {
    /// The node id as the core's newtype.
    pub fn node(&self) -> NodeId {
        NodeId(self.id)
    }
    /// The incarnation as the core's newtype.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation(self.incarnation)
    }
}

/// The live replicas by id, and how to reach them (plain gRPC, or mutual TLS with the
/// cluster's certificates). Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Directory {
    inner: Arc<RwLock<BTreeMap<NodeId, PeerInfo>>>,
    tls: Option<Arc<crate::tls::PeerTls>>,
    /// The node ids of the configuration this replica runs (acceptors and learners), as the
    /// node loop last applied it.
    members: Arc<RwLock<std::collections::BTreeSet<NodeId>>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty directory whose peers are reached over mutual TLS (`Some`).
    pub fn with_tls(tls: Option<crate::tls::PeerTls>) -> Self {
        Directory { inner: Arc::default(), tls: tls.map(Arc::new), members: Arc::default() }
    }

    /// Record the configuration's members (the node loop, on every configuration it applies).
    pub fn set_members(&self, members: impl IntoIterator<Item = NodeId>) {
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members.into_iter().collect();
    }

    /// Whether `node` may speak to this replica: a member of the configuration it runs, or a
    /// registered replica (a joiner, a learner not yet applied here). Membership does not hang
    /// on a live etcd key: a member whose registration vanished (an etcd outage longer than its
    /// lease, a deleted key) keeps its vote.
    pub fn knows(&self, node: NodeId) -> bool {
        self.members.read().unwrap_or_else(|e| e.into_inner()).contains(&node) || self.inner.read().unwrap_or_else(|e| e.into_inner()).contains_key(&node)
    }

    /// Whether peers are reached over mutual TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A gRPC endpoint towards `peer` at `addr` (its certificate must name `peer` under TLS).
    pub fn endpoint(&self, peer: NodeId, addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        crate::tls::peer_endpoint(addr, peer, self.tls.as_deref())
    }

    /// Replace the whole map (after a fresh read of etcd); returns whether anything changed.
    pub fn replace(&self, peers: BTreeMap<NodeId, PeerInfo>) -> bool {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if *g == peers {
            return false;
        }
        *g = peers;
        true
    }

    /// Insert or update one replica; returns whether anything changed.
    pub fn upsert(&self, info: PeerInfo) -> bool {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let changed = g.get(&info.node()) != Some(&info);
        g.insert(info.node(), info);
        changed
    }

    /// Forget one replica (its lease expired); returns whether it was known.
    pub fn remove(&self, node: NodeId) -> bool {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).remove(&node).is_some()
    }

    /// One replica's entry.
    pub fn get(&self, node: NodeId) -> Option<PeerInfo> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).get(&node).cloned()
    }

    /// Every known replica.
    pub fn all(&self) -> BTreeMap<NodeId, PeerInfo> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
