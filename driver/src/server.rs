//! `synod node`: wire one replica together and run it until SIGTERM.
//!
//! Start-up order: bind both listeners (so `:0` works and the advertised addresses are real),
//! connect to etcd and pass the bootstrap barrier, start the node loop, the gRPC server, the etcd
//! task (registration, discovery, election), and last the REST server.
//!
//! Shutdown (SIGTERM or Ctrl-C): stop accepting HTTP connections and answer new requests 503,
//! let requests in flight finish (bounded by `--drain-timeout-ms`), resign from the election and
//! revoke the lease (peers see this node leave at once), then stop the node loop and gRPC.

use crate::directory::{Directory, PeerInfo};
use crate::etcd::{self, EtcdSettings, EtcdTask};
use crate::membership::{self, Manager, ManagerSettings, Membership, PendingChange};
use crate::metrics::Metrics;
use crate::inbound::PeerService;
use crate::node::{Input, NodeHandle, NodeLoop, NodeSettings, Wiring};
use crate::rest::problem::Problem;
use crate::rest::{self, Ctx};
use anyhow::Context as _;
use axum::body::Body;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use kvstore::StoreConfig;
use paxos::{Member, NodeId};
use proto::pb::peer_server::PeerServer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

/// HTTP/2 flow-control window of the peer service (per stream and per connection).
pub const PEER_WINDOW: u32 = 256 * 1024;

/// How long a removed replica keeps answering 410 before it exits (at least).
pub const REMOVED_GRACE: Duration = Duration::from_secs(2);

pub use crate::peer::MAX_GRPC_MESSAGE;

/// The one place the default REST address is written: `synod node --http-listen`'s default, and
/// through the constants below the client commands' `--endpoints` and `synod health --url`
/// (issue 28: the healthcheck defaulted to another port than a replica listens on).
macro_rules! default_http_listen {
    () => {
        "127.0.0.1:8081"
    };
}

/// Where `synod node` serves REST unless told otherwise (`--http-listen`).
pub const DEFAULT_HTTP_LISTEN: &str = default_http_listen!();
/// The replica the client commands ask unless told otherwise (`--endpoints`): the default
/// listen address.
pub const DEFAULT_ENDPOINT: &str = concat!("http://", default_http_listen!());
/// What `synod health` checks unless told otherwise (`--url`): the `/readyz` of a replica at the
/// default listen address.
pub const DEFAULT_HEALTH_URL: &str = concat!("http://", default_http_listen!(), "/readyz");

/// Flags of `synod node` (each also read from a `SYNOD_*` environment variable).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// This replica's id (stable across restarts; unique in the cluster).
    #[arg(long, env = "SYNOD_ID")]
    pub id: u64,
    /// Where the REST API listens.
    #[arg(long, env = "SYNOD_HTTP_LISTEN", default_value = DEFAULT_HTTP_LISTEN)]
    pub http_listen: SocketAddr,
    /// The REST address redirects (`Location`) and `leader_http` give clients (default: the bound
    /// listen address). Behind NAT or Docker port mapping, give the address clients use
    /// (compose: `127.0.0.1:808i`). Also `--advertise-http`.
    #[arg(long, alias = "advertise-http", env = "SYNOD_HTTP_ADVERTISE")]
    pub http_advertise: Option<String>,
    /// Where the gRPC peer service listens.
    #[arg(long, env = "SYNOD_GRPC_LISTEN", default_value = "127.0.0.1:9081")]
    pub grpc_listen: SocketAddr,
    /// The gRPC address peers connect to (default: the bound listen address).
    #[arg(long, env = "SYNOD_GRPC_ADVERTISE")]
    pub grpc_advertise: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(long, env = "SYNOD_ETCD", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd: Vec<String>,
    /// The cluster's key prefix in etcd.
    #[arg(long, env = "SYNOD_PREFIX", default_value = "/synod")]
    pub prefix: String,
    /// Founding member ids of a new cluster, comma separated (see docs/driver.md).
    #[arg(long, env = "SYNOD_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<u64>,
    /// How long the founders wait for each other, in seconds.
    #[arg(long, env = "SYNOD_BOOTSTRAP_TIMEOUT", default_value_t = 120)]
    pub bootstrap_timeout: u64,
    /// etcd lease TTL in seconds: a dead node is noticed (and loses the election) after this.
    #[arg(long, env = "SYNOD_LEASE_TTL", default_value_t = 5)]
    pub lease_ttl: i64,
    /// Leader heartbeat period in milliseconds.
    #[arg(long, env = "SYNOD_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// A leader that hears from no quorum for this long steps down (milliseconds).
    #[arg(long, env = "SYNOD_LEADER_LEASE_MS", default_value_t = 1000)]
    pub leader_lease_ms: u64,
    /// How long a leader holds a partial batch before proposing it (milliseconds; 0: at once).
    #[arg(long, env = "SYNOD_BATCH_DELAY_MS", default_value_t = 0)]
    pub batch_delay_ms: u64,
    /// Tokio worker threads (0: one per core). `synod dev` runs each replica with 1: its
    /// replicas share one machine, and N replicas with a thread per core each only trade the
    /// cores back and forth (docs/performance.md).
    #[arg(long, env = "SYNOD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Slots the leader keeps in phase 2 at once (at least 1); writes arriving while it is full
    /// share the next slot. Default 3, or 1 with --data-dir (a slot there costs an fsync on
    /// every replica, so larger batches pay more).
    #[arg(long, env = "SYNOD_PIPELINE_WINDOW", value_parser = clap::value_parser!(u64).range(1..))]
    pub pipeline_window: Option<u64>,
    /// Snapshot every this many applied slots.
    #[arg(long, env = "SYNOD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// An exactly-once session (an `Idempotency-Key`, a CLI session) idle for this long, in log
    /// time, expires. Must be equal on every replica (checked through etcd at start).
    #[arg(long, env = "SYNOD_SESSION_TTL_MS", default_value_t = 24 * 60 * 60 * 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_ms: u64,
    /// The retry window every session keeps even when the table is full: a session idle for
    /// less is never evicted to make room for a new one (at most `--session-ttl-ms`; equal
    /// values: nothing is ever evicted). Equal on every replica.
    #[arg(long, env = "SYNOD_SESSION_MIN_TTL_MS", default_value_t = 60 * 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_min_ttl_ms: u64,
    /// The most live sessions (0: unbounded). Equal on every replica.
    #[arg(long, env = "SYNOD_MAX_SESSIONS", default_value_t = 100_000)]
    pub max_sessions: usize,
    /// The most client leases (`POST /v1/leases`; not the etcd `--lease-ttl`) the cluster holds
    /// at once; a grant beyond is refused (503 `too-many-leases`). Equal on every replica.
    #[arg(long, env = "SYNOD_MAX_LEASES", default_value_t = kvstore::LeaseConfig::default().max_leases)]
    pub max_leases: usize,
    /// The most keys one client lease holds (409 `too-many-lease-keys` beyond). Equal on every
    /// replica.
    #[arg(long, env = "SYNOD_MAX_KEYS_PER_LEASE", default_value_t = kvstore::LeaseConfig::default().max_keys_per_lease)]
    pub max_keys_per_lease: usize,
    /// The shortest TTL a client lease may be granted, in milliseconds of log time (400
    /// `lease-ttl` below). Equal on every replica.
    #[arg(long, env = "SYNOD_MIN_LEASE_TTL_MS", default_value_t = kvstore::LeaseConfig::default().min_ttl_ms, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_lease_ttl_ms: u64,
    /// The longest TTL a client lease may be granted, in milliseconds of log time (400
    /// `lease-ttl` above). Equal on every replica.
    #[arg(long, env = "SYNOD_MAX_LEASE_TTL_MS", default_value_t = kvstore::LeaseConfig::default().max_ttl_ms, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_lease_ttl_ms: u64,
    /// Past this many slots above the checkpoint, the leader stops waiting for the slowest
    /// member, which then catches up from a snapshot.
    #[arg(long, env = "SYNOD_MAX_RETAINED_SLOTS", default_value_t = 100_000)]
    pub max_retained_slots: u64,
    /// Durable mode: take a snapshot (a snapshot file, after which the write-ahead log below it
    /// is removed) once the values applied since the last one reach this many bytes, whatever
    /// `--snapshot-every` and the store's size say. Bounds the log a replica replays at start
    /// and reports in phase 1 after a restart of the whole cluster (docs/durability.md). 0: no
    /// bound.
    #[arg(long, env = "SYNOD_SNAPSHOT_LOG_BYTES", default_value_t = ::node::DEFAULT_SNAPSHOT_LOG_BYTES)]
    pub snapshot_log_bytes: u64,
    /// How long a write waits for its outcome before 504 (milliseconds).
    #[arg(long, env = "SYNOD_WRITE_TIMEOUT_MS", default_value_t = 5_000)]
    pub write_timeout_ms: u64,
    /// How long a read waits for a quorum or `min_index` before 503 (milliseconds).
    #[arg(long, env = "SYNOD_READ_TIMEOUT_MS", default_value_t = 3_000)]
    pub read_timeout_ms: u64,
    /// How long SIGTERM waits for requests in flight (milliseconds).
    #[arg(long, env = "SYNOD_DRAIN_TIMEOUT_MS", default_value_t = 5_000)]
    pub drain_timeout_ms: u64,
    /// Join a running cluster: post a join request; the leader adds this process as a learner,
    /// streams it a snapshot, and promotes it to acceptor once it has caught up.
    #[arg(long, env = "SYNOD_JOIN")]
    pub join: bool,
    /// On SIGTERM, leave the cluster (post a leave request and wait until every remaining
    /// member runs the configuration without this node) before stopping.
    #[arg(long, env = "SYNOD_LEAVE_ON_SHUTDOWN")]
    pub leave_on_shutdown: bool,
    /// Durable mode: keep the write-ahead log, snapshots and identity here, fsync before
    /// acknowledging, and restart with the same identity (docs/driver.md, "Durable mode").
    /// Without it, state is in memory and a restart rejoins as a new incarnation.
    #[arg(long, env = "SYNOD_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Start a NEW cluster from a backup (`synod snapshot save FILE`): every founder (`--bootstrap`
    /// must name this id) restores the same file, under a new `--prefix` or a new etcd. The file
    /// is checked before anything else is touched; a durable restart (the data directory is
    /// already initialised) ignores it (docs/driver.md, "Backup and restore").
    #[arg(long, env = "SYNOD_RESTORE")]
    pub restore: Option<std::path::PathBuf>,
    /// How long `--leave-on-shutdown` waits for the leave to complete (seconds).
    #[arg(long, env = "SYNOD_LEAVE_TIMEOUT", default_value_t = 30)]
    pub leave_timeout: u64,
    /// A replica more than this many slots behind the highest commit point it has heard of
    /// answers no sequential read from its own state: it forwards the read to the leader (503 if
    /// none is reachable) until it has caught up. Reads it does serve carry `X-Synod-Lag`.
    #[arg(long, env = "SYNOD_MAX_READ_LAG_SLOTS", default_value_t = 1000)]
    pub max_read_lag_slots: u64,
    /// Changes each replica keeps for watches (long-polls and `/v1/watch` streams); a watch
    /// from an older index is 410 `compacted`. Not replicated: each replica keeps its own.
    #[arg(long, env = "SYNOD_WATCH_HISTORY", default_value_t = 10_000)]
    pub watch_history: usize,
    /// Bytes of keys and values the watch history keeps at most.
    #[arg(long, env = "SYNOD_WATCH_HISTORY_BYTES", default_value_t = 64 << 20)]
    pub watch_history_bytes: usize,
    /// Watchers (long-polls and streams waiting) one replica holds at most; more get 503 `busy`.
    #[arg(long, env = "SYNOD_MAX_WATCHERS", default_value_t = 10_000)]
    pub max_watchers: usize,
    /// A follower that has not heard from the leader for longer than this (milliseconds) answers
    /// no sequential read from its own state (forwarded or 503 as above). 0: no limit (a
    /// partitioned follower keeps serving its state; `X-Synod-Last-Contact` says how old).
    #[arg(long, env = "SYNOD_MAX_READ_STALENESS_MS", default_value_t = 0)]
    pub max_read_staleness_ms: u64,
    /// An acceptor that hears nothing from the leader for this long (milliseconds) suspects it;
    /// once a majority of the acceptors suspects the leader etcd's election still names, its
    /// election lease is revoked, so the next candidate wins without waiting out the lease TTL.
    /// Keep it several heartbeats (`--heartbeat-ms`) above the heartbeat period. 0: off.
    #[arg(long, env = "SYNOD_SUSPECT_LEADER_AFTER_MS", default_value_t = 400)]
    pub suspect_leader_after_ms: u64,
    /// Failure policy: remove an acceptor whose etcd lease has been gone this many seconds (never
    /// below a majority of the configured set). 0: never remove automatically.
    #[arg(long, env = "SYNOD_REMOVE_FAILED_AFTER_S", default_value_t = 0)]
    pub remove_failed_after_s: u64,
    /// TLS and authentication (docs/security.md).
    #[command(flatten)]
    pub security: SecurityArgs,
}

impl NodeArgs {
    /// `--pipeline-window`, or its default for the mode: [`::node::DEFAULT_DURABLE_PIPELINE_WINDOW`]
    /// with `--data-dir`, else [`::node::DEFAULT_PIPELINE_WINDOW`].
    pub fn effective_pipeline_window(&self) -> u64 {
        self.pipeline_window.unwrap_or(if self.data_dir.is_some() {
            ::node::DEFAULT_DURABLE_PIPELINE_WINDOW
        } else {
            ::node::DEFAULT_PIPELINE_WINDOW
        })
    }
}

/// TLS between replicas, TLS and tokens for clients, TLS and a user for etcd (docs/security.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SecurityArgs {
    /// The cluster CA (PEM): peers must present a certificate it signed. With --tls-cert and
    /// --tls-key, the gRPC port speaks mutual TLS only.
    #[arg(long, env = "SYNOD_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This replica's peer certificate (PEM); it must name `node-<id>.synod` (`synod certs`).
    #[arg(long, env = "SYNOD_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SYNOD_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve the REST API over HTTPS with this certificate (PEM); needs --http-tls-key.
    #[arg(long, env = "SYNOD_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, env = "SYNOD_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<std::path::PathBuf>,
    /// Require a bearer token from clients: the token file (JSON; reloaded on SIGHUP).
    #[arg(long, env = "SYNOD_TOKENS")]
    pub tokens: Option<std::path::PathBuf>,
    /// The CA that signed etcd's certificate (PEM): connect to etcd over TLS.
    #[arg(long, env = "SYNOD_ETCD_CA")]
    pub etcd_ca: Option<std::path::PathBuf>,
    /// A client certificate for etcd (PEM; etcd's --client-cert-auth); needs --etcd-key.
    #[arg(long, env = "SYNOD_ETCD_CERT", requires_all = ["etcd_key", "etcd_ca"])]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, env = "SYNOD_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
    /// Allow --tokens without mutual TLS between replicas. Without peer TLS anyone who reaches
    /// the gRPC port can relay a request with any permissions, so the tokens protect little;
    /// refused unless this is given (a test bed, a private network).
    #[arg(long, env = "SYNOD_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// etcd's user (when etcd has auth enabled); the password is --etcd-password.
    #[arg(long, env = "SYNOD_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// The etcd user's password (prefer the environment variable to the command line).
    #[arg(long, env = "SYNOD_ETCD_PASSWORD", hide_env_values = true, requires = "etcd_user")]
    pub etcd_password: Option<String>,
}

impl SecurityArgs {
    /// How to reach etcd.
    pub fn etcd(&self) -> anyhow::Result<etcd::EtcdSecurity> {
        let tls = match &self.etcd_ca {
            None => None,
            Some(ca) => {
                let read = |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
                let mut t = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
                if let (Some(c), Some(k)) = (&self.etcd_cert, &self.etcd_key) {
                    t = t.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
                }
                Some(t)
            }
        };
        let user = self.etcd_user.clone().zip(self.etcd_password.clone());
        Ok(etcd::EtcdSecurity { tls, user })
    }
}

fn metrics_refused_note(why: &str) {
    warn!(why, "the data directory was not used");
}

/// Run one replica until SIGTERM / Ctrl-C.
pub async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.session_min_ttl_ms <= args.session_ttl_ms,
        "--session-min-ttl-ms ({}) must not exceed --session-ttl-ms ({})",
        args.session_min_ttl_ms,
        args.session_ttl_ms
    );
    anyhow::ensure!(
        args.min_lease_ttl_ms <= args.max_lease_ttl_ms,
        "--min-lease-ttl-ms ({}) must not exceed --max-lease-ttl-ms ({})",
        args.min_lease_ttl_ms,
        args.max_lease_ttl_ms
    );
    let store = StoreConfig {
        session_ttl_ms: args.session_ttl_ms,
        session_min_ttl_ms: args.session_min_ttl_ms,
        max_sessions: args.max_sessions,
        leases: kvstore::LeaseConfig {
            max_leases: args.max_leases,
            max_keys_per_lease: args.max_keys_per_lease,
            min_ttl_ms: args.min_lease_ttl_ms,
            max_ttl_ms: args.max_lease_ttl_ms,
        },
        ..StoreConfig::default()
    };
    // A backup to restore is checked first: a bad file stops the process before it binds a
    // port, talks to etcd or touches its data directory.
    let mut restore = check_restore_file(&args, store)?;
    // SIGHUP reloads the token file; from the first moment, so a reload sent to every replica
    // while one is still starting does not end that one (the default action of SIGHUP).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("listening for SIGHUP")?;
    let security = Security::load(&args)?;
    let http_listener = TcpListener::bind(args.http_listen).await.with_context(|| format!("binding {}", args.http_listen))?;
    let grpc_listener = TcpListener::bind(args.grpc_listen).await.with_context(|| format!("binding {}", args.grpc_listen))?;
    let http_addr = args.http_advertise.clone().unwrap_or(http_listener.local_addr()?.to_string());
    let grpc_addr = args.grpc_advertise.clone().unwrap_or(grpc_listener.local_addr()?.to_string());

    // etcd may be partly (or not yet) reachable: connecting, the bootstrap barrier and the join
    // request all retry with backoff within the bootstrap timeout, using the endpoints that answer.
    let bootstrap_timeout = Duration::from_secs(args.bootstrap_timeout);
    let etcd_deadline = std::time::Instant::now() + bootstrap_timeout;
    let mut client = etcd::connect_retrying(&args.etcd, &security.etcd, etcd_deadline).await?;
    check_store_config(&client, &args.prefix, &store, etcd_deadline).await?;
    // A fresh incarnation per process start, never reused, and above every earlier one of this
    // id whatever the wall clock did (a compare-and-swap in etcd); the start number prefixes
    // this process's request ids.
    // Durable mode: what the data directory holds decides between a durable restart (same
    // incarnation, no join) and a new incarnation.
    let data = match &args.data_dir {
        None => {
            warn!("no --data-dir: state is in memory only; a restart of this process rejoins as a new incarnation, and losing a majority at once loses data");
            None
        }
        Some(d) => {
            let dir = crate::durable::DataDir::new(d)?;
            let mut opened = dir.open(NodeId(args.id), &args.prefix, store)?;
            if let crate::durable::Opened::Recovered(r) = &opened {
                let kept = r.identity.incarnation;
                // The cluster may have removed this incarnation while it was down (an etcd error
                // is retried until the bootstrap deadline, never taken for "not removed").
                let membership = Membership::new(client.clone(), args.prefix.clone());
                let removed = etcd::retrying("reading the removal marks", etcd_deadline, || membership.removed(args.id)).await?;
                // Or this id started again from another data directory since (a newer
                // incarnation drew a start): this one's data is stale.
                let latest = etcd::latest_start(&client, &args.prefix, NodeId(args.id), etcd_deadline).await?;
                let why = if removed.is_some_and(|m| m.incarnation == kept) {
                    Some(format!("incarnation {kept} was removed from the cluster while it was down"))
                } else {
                    latest
                        .filter(|s| s.incarnation.0 > kept)
                        .map(|s| format!("node {} already started as incarnation {} after this data directory's {kept}", args.id, s.incarnation.0))
                };
                if let Some(why) = why {
                    drop(opened);
                    dir.refuse(&why)?;
                    opened = crate::durable::Opened::Fresh { refused: Some(why) };
                }
            }
            if let crate::durable::Opened::Fresh { refused: Some(why) } = &opened {
                metrics_refused_note(why);
            }
            Some((dir, opened))
        }
    };
    let keep = match &data {
        Some((_, crate::durable::Opened::Recovered(r))) => Some(paxos::Incarnation(r.identity.incarnation)),
        _ => None,
    };
    let start = etcd::draw_start(&client, &args.prefix, NodeId(args.id), keep, etcd_deadline).await?;
    anyhow::ensure!(
        start.number < crate::node::MAX_START_NUMBER,
        "node {} has been started {} times; request ids have room for {} starts per id (use a new id)",
        args.id,
        start.number,
        crate::node::MAX_START_NUMBER - 1
    );
    let me = Member { node: NodeId(args.id), incarnation: start.incarnation };
    info!(node = %me.node, incarnation = %me.incarnation, start = start.number, http = %http_addr, grpc = %grpc_addr, "starting");
    let durable_restart = keep.is_some();
    // The cluster version a founder's store starts at (1 unless this process founds the cluster).
    let mut founding_version = 1;
    let bootstrap = if durable_restart {
        info!(incarnation = %me.incarnation, "durable restart: same incarnation, promises and votes from the data directory");
        if restore.take().is_some() {
            warn!("--restore ignored: the data directory is initialised (a durable restart)");
        }
        None
    } else {
        // A restoring founder records its file's checksum before its founding incarnation, so
        // every founder that passes the barrier sees every other founder's record.
        if let Some(b) = &restore {
            record_restore(&client, &args.prefix, me, &b.checksum, etcd_deadline).await?;
        }
        let founded = match etcd::bootstrap(&mut client, &args.prefix, me, &args.bootstrap, bootstrap_timeout).await? {
            Some((config, version)) => {
                founding_version = version;
                if let Some(b) = restore.as_mut() {
                    b.store.set_cluster_version(version);
                }
                Some(config)
            }
            None => None,
        };
        match &founded {
            Some(config) => check_founders_restore(&client, &args.prefix, config, restore.as_ref().map(|b| b.checksum.as_str()), etcd_deadline).await?,
            None if restore.take().is_some() => {
                warn!("--restore ignored: this id already founded the cluster (a restart); it rejoins and catches up from the others");
            }
            None => {}
        }
        founded
    };
    let membership = Membership::new(client.clone(), args.prefix.clone());
    // A build too old for the cluster refuses to start rather than join (or rejoin) a cluster
    // whose log it cannot apply (docs/upgrades.md).
    let published = etcd::retrying("reading the cluster version", etcd_deadline.max(std::time::Instant::now() + Duration::from_secs(5)), || membership.cluster_version()).await?;
    if let Some(v) = published.filter(|v| *v > kvstore::MAX_CLUSTER_VERSION) {
        anyhow::bail!(
            "the cluster runs cluster version {v}; this build (synod {}) reads cluster versions up to {}: start this replica with the cluster's release (docs/upgrades.md)",
            env!("CARGO_PKG_VERSION"),
            kvstore::MAX_CLUSTER_VERSION
        );
    }
    // A joining process, and a founder whose id was already founded (a restart after a crash:
    // its promises are forgotten, so it comes back as a new incarnation and must be re-added as
    // a learner, caught up, and promoted), ask the leader to take them in. A durable restart
    // is still a member: it asks nothing.
    let restart = bootstrap.is_none() && args.bootstrap.contains(&args.id) && !durable_restart;
    if (args.join && !durable_restart) || restart {
        let join = PendingChange::Join { id: me.node.0, incarnation: me.incarnation.0 };
        let deadline = std::time::Instant::now() + bootstrap_timeout;
        etcd::retrying("posting the join request", deadline, || membership.request(&join)).await?;
    }

    // Built from `new` and then set field by field: the node crate's simulator adds fields of
    // its own (bug switches) when its `sim` feature is on.
    let mut settings = NodeSettings::new(me, start.number, bootstrap);
    settings.heartbeat_ms = args.heartbeat_ms;
    settings.initial_cluster_version = founding_version;
    settings.leader_lease_ms = args.leader_lease_ms;
    settings.batch_delay_ms = args.batch_delay_ms;
    settings.pipeline_window = args.effective_pipeline_window();
    info!(pipeline_window = settings.pipeline_window, "leader pipeline window (slots in phase 2 at once)");
    settings.snapshot_every = args.snapshot_every;
    settings.max_retained_slots = args.max_retained_slots;
    settings.snapshot_log_bytes = args.snapshot_log_bytes;
    settings.store = store;
    settings.max_read_lag_slots = args.max_read_lag_slots;
    settings.watch_history_changes = args.watch_history;
    settings.watch_history_bytes = args.watch_history_bytes;
    settings.max_watchers = args.max_watchers;
    settings.max_read_staleness_ms = args.max_read_staleness_ms;
    settings.suspect_leader_after_ms = args.suspect_leader_after_ms;
    settings.snapshot_chunk_bytes = crate::snapshot::CHUNK_BYTES;
    let directory = Directory::with_tls(security.peer.clone());
    // Who may speak to this replica before its node loop applies a configuration: the founders,
    // or the configuration its data directory holds (then the loop keeps it current).
    if let Some(c) = &settings.bootstrap {
        directory.set_members(c.acceptors.iter().chain(c.learners.iter()).map(|m| m.node));
    }
    if let Some((_, crate::durable::Opened::Recovered(r))) = &data {
        let c = &r.disk.snapshot.config;
        directory.set_members(c.acceptors.iter().chain(c.learners.iter()).map(|m| m.node));
    }
    let metrics = Arc::new(Metrics::default());
    let (inputs, inbox) = NodeHandle::channels();
    let (election_tx, election_rx) = mpsc::unbounded_channel();
    let (removal_tx, mut removal_rx) = watch::channel(None);
    let (suspicion_tx, suspicion_rx) = watch::channel(None);
    let wiring = Wiring { directory: directory.clone(), metrics: metrics.clone(), election: election_tx.clone(), removal: removal_tx, suspicion: suspicion_tx };
    let mut eligible_at_start = settings.bootstrap.as_ref().is_some_and(|c| c.is_acceptor(&me));
    let node = match data {
        None => match restore {
            Some(b) => NodeLoop::restored(settings.clone(), inputs.clone(), wiring, b.store),
            None => NodeLoop::new(settings.clone(), inputs.clone(), wiring),
        },
        Some((dir, crate::durable::Opened::Recovered(r))) => {
            let r = *r;
            if r.torn_tail_bytes > 0 {
                warn!(bytes = r.torn_tail_bytes, "the write-ahead log had a torn tail (a batch never acknowledged): cut");
            }
            eligible_at_start = r.disk.snapshot.config.is_acceptor(&me);
            metrics.durable_restarts.inc();
            let setup = crate::node::DiskSetup { dir, wal: r.wal, recovered: Some((r.store, r.disk)) };
            NodeLoop::durable(settings.clone(), inputs.clone(), wiring, setup)
        }
        Some((dir, crate::durable::Opened::Fresh { refused })) => {
            if refused.is_some() {
                metrics.data_dirs_refused.inc();
            }
            let identity = crate::durable::Identity { node: me.node.0, incarnation: me.incarnation.0, prefix: args.prefix.clone() };
            let founding = settings.bootstrap.clone().map(|config| paxos::SnapshotMeta { last_slot: paxos::Slot(0), config });
            match (restore, founding) {
                // A restored founder's initial snapshot file holds the backup's store, at slot 0
                // with the new configuration; it starts from it as a durable restart would.
                (Some(b), Some(meta)) => {
                    let wal = dir.start_fresh(&identity, Some(meta.clone()), &b.store)?;
                    let setup = crate::node::DiskSetup { dir, wal, recovered: Some((b.store, paxos::Recovered::from_snapshot(meta))) };
                    NodeLoop::durable(settings.clone(), inputs.clone(), wiring, setup)
                }
                (_, founding) => {
                    let mut fresh = kvstore::Store::new(store);
                    fresh.set_cluster_version(founding_version);
                    let wal = dir.start_fresh(&identity, founding, &fresh)?;
                    let setup = crate::node::DiskSetup { dir, wal, recovered: None };
                    NodeLoop::durable(settings.clone(), inputs.clone(), wiring, setup)
                }
            }
        }
    };
    let recheck = Duration::from_millis((args.suspect_leader_after_ms / 4).clamp(20, 100));
    let suspect_task = tokio::spawn(etcd::suspect(client.clone(), args.prefix.clone(), me.node, suspicion_rx, metrics.clone(), recheck));
    let node_task = tokio::spawn(node.run(inbox));

    let mut ctx = Ctx::new(me.node, inputs.clone(), directory.clone(), metrics.clone(), store.limits);
    ctx.write_timeout = Duration::from_millis(args.write_timeout_ms);
    ctx.read_timeout = Duration::from_millis(args.read_timeout_ms);
    ctx.session_window = Duration::from_millis(args.session_min_ttl_ms);
    ctx.membership = Some(membership.clone());
    ctx.auth = security.auth.clone();
    if security.http.is_some() {
        ctx.rest_scheme = "https";
    }
    let ctx = Arc::new(ctx);
    tokio::spawn(reload_tokens_on_hup(security.auth.clone(), hup));

    let (grpc_stop_tx, grpc_stop_rx) = oneshot::channel::<()>();
    let service = PeerService::new(me.node, inputs.clone(), metrics.clone(), ctx.clone());
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Bounded HTTP/2 windows: a stalled peer stops taking data after a bounded backlog,
        // so its sender notices the stall (and drops what is stale) instead of piling
        // megabytes into transport buffers.
        .initial_stream_window_size(PEER_WINDOW)
        .initial_connection_window_size(PEER_WINDOW)
        .add_service(PeerServer::new(service).max_decoding_message_size(MAX_GRPC_MESSAGE));
    let grpc_stop = async {
        let _ = grpc_stop_rx.await;
    };
    let grpc = match &security.peer {
        None => tokio::spawn(grpc_server.serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), grpc_stop)),
        Some(tls) => {
            // Handshakes happen in `tls::accept_tls`, which logs and counts each refusal.
            let refused = metrics.clone();
            let accepted = crate::tls::accept_tls(grpc_listener, tls.server(), "grpc", move || refused.peer_tls_refused.inc());
            let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(accepted), |(s, _)| Ok::<_, std::io::Error>(s));
            tokio::spawn(grpc_server.serve_with_incoming_shutdown(incoming, grpc_stop))
        }
    };

    let (etcd_stop_tx, etcd_stop_rx) = watch::channel(false);
    let task = EtcdTask {
        client,
        settings: EtcdSettings { endpoints: args.etcd.clone(), prefix: args.prefix.clone(), lease_ttl: args.lease_ttl },
        info: PeerInfo {
            id: me.node.0,
            incarnation: me.incarnation.0,
            grpc: grpc_addr,
            http: http_addr,
            max_cluster_version: kvstore::MAX_CLUSTER_VERSION,
        },
        inputs: inputs.clone(),
        directory: directory.clone(),
        metrics: metrics.clone(),
    };
    let (eligible_tx, eligible_rx) = watch::channel(eligible_at_start);
    let etcd_task = tokio::spawn(task.run(election_rx, eligible_rx, etcd_stop_rx));
    let manager = Manager {
        too_old: Default::default(),
        membership: membership.clone(),
        settings: ManagerSettings {
            me,
            remove_failed_after: (args.remove_failed_after_s > 0).then(|| Duration::from_secs(args.remove_failed_after_s)),
            tick: Duration::from_millis(200),
        },
        inputs: inputs.clone(),
        directory,
        metrics,
        election: election_tx,
        eligible: eligible_tx,
    };
    let manager_task = tokio::spawn(manager.run());

    let leave = args.leave_on_shutdown;
    let leave_timeout = Duration::from_secs(args.leave_timeout);
    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => {
                if leave {
                    // Keep serving while leaving: if this node leads, it hands leadership off
                    // first, and the remaining members need it no more once they run the
                    // configuration without it.
                    info!("leaving the cluster before shutting down");
                    match membership.request(&PendingChange::Leave { id: me.node.0 }).await {
                        Ok(()) if membership::wait_removed(&membership, me, leave_timeout).await => info!("left the cluster"),
                        Ok(()) => warn!(timeout = ?leave_timeout, "the leave did not complete in time; stopping anyway"),
                        Err(e) => warn!(error = %e, "could not post the leave request; stopping anyway"),
                    }
                }
            }
            removal = async {
                let _ = removal_rx.wait_for(Option::is_some).await;
                *removal_rx.borrow()
            } => {
                // Removed (by an operator, the failure policy, or a leave): client requests are
                // already refused (410). Stay in the peer protocol until every live member runs
                // the configuration without this node (the leader's removal mark), then drain and
                // exit 0. To come back, start it again with --join: a new incarnation joins.
                let epoch = removal.map_or(0, |r| r.epoch);
                info!(epoch, "removed from the cluster: draining, then exiting");
                // At least a short grace, so clients that still call it get the explicit 410
                // rather than a refused connection.
                let drained = async {
                    let (done, ()) = tokio::join!(membership::wait_removed(&membership, me, leave_timeout), tokio::time::sleep(REMOVED_GRACE));
                    if !done {
                        warn!(timeout = ?leave_timeout, "no removal mark in time; exiting anyway");
                    }
                };
                tokio::select! {
                    () = drained => {}
                    _ = shutdown_signal() => {}
                }
                info!(epoch, "left the cluster after its removal");
            }
        }
    };
    let incoming = http_incoming(http_listener, security.http.clone(), ctx.metrics.clone());
    serve_http(incoming, ctx.clone(), Duration::from_millis(args.drain_timeout_ms), stop).await;
    manager_task.abort();

    info!("HTTP drained; leaving the election");
    let _ = etcd_stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(3), etcd_task).await.is_err() {
        warn!("etcd shutdown timed out");
    }
    let _ = inputs.send(Input::Shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), node_task).await;
    suspect_task.abort();
    let _ = grpc_stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc).await;
    info!("stopped");
    Ok(())
}

/// `--restore FILE`: `None` without it, or on a durable restart (warned); an error if this id is
/// not a founder or the file does not decode fully.
fn check_restore_file(args: &NodeArgs, store: StoreConfig) -> anyhow::Result<Option<crate::durable::Backup>> {
    let Some(path) = &args.restore else { return Ok(None) };
    anyhow::ensure!(
        args.bootstrap.contains(&args.id),
        "--restore {}: only a founder of a new cluster restores a backup, and --bootstrap does not name this id ({}); start every founder of the new cluster with --bootstrap and the same --restore",
        path.display(),
        args.id
    );
    if args.data_dir.as_ref().is_some_and(|d| d.join(crate::durable::IDENTITY).exists()) {
        warn!(file = %path.display(), "--restore ignored: the data directory is already initialised (a durable restart keeps its own state)");
        return Ok(None);
    }
    let mut b = crate::durable::read_backup(path, store).with_context(|| format!("--restore {}: refused, nothing was started", path.display()))?;
    // The new cluster's leaders stamp new terms and processes: the old cluster's last stamp must
    // not be compared with them (every founder restores the same file and does the same).
    b.store.forget_clock_reference();
    info!(
        file = %path.display(),
        index = b.store.last_applied(),
        slot = %b.meta.last_slot,
        keys = b.store.len(),
        crc32c = %b.checksum,
        "restoring a backup: this founder's state machine starts from the file"
    );
    Ok(Some(b))
}

/// The etcd key of the cluster's store settings (`StoreConfig` as JSON).
fn store_config_key(prefix: &str) -> String {
    format!("{prefix}/store-config")
}

/// Settings that change results (session TTLs, the session cap, the write limits, the lease
/// limits) must be equal
/// on every replica, or their states diverge: the first replica to start records its own in etcd
/// (created once), and every replica compares, and refuses to start on a difference.
async fn check_store_config(client: &etcd_client::Client, prefix: &str, mine: &StoreConfig, deadline: std::time::Instant) -> anyhow::Result<()> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = store_config_key(prefix);
    let value = serde_json::to_string(mine)?;
    let resp = etcd::retrying("recording the store settings", deadline, || {
        let mut c = client.clone();
        let (key, value) = (key.clone(), value.clone());
        async move {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value, None)])
                .or_else([TxnOp::get(key, None)]);
            anyhow::Ok(c.txn(txn).await?)
        }
    })
    .await?;
    if resp.succeeded() {
        return Ok(());
    }
    let recorded = resp.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    let recorded: StoreConfig = match recorded.as_deref().map(serde_json::from_slice) {
        Some(Ok(c)) => c,
        other => anyhow::bail!("{key} in etcd does not hold store settings ({other:?}); delete it to record this replica's"),
    };
    anyhow::ensure!(
        &recorded == mine,
        "this replica's store settings differ from the cluster's (every replica must run with the same \
         --session-ttl-ms, --session-min-ttl-ms, --max-sessions, --max-leases, --max-keys-per-lease, \
         --min-lease-ttl-ms and --max-lease-ttl-ms, or their states diverge): cluster {recorded:?}, \
         this replica {mine:?}. To change them, stop every replica, delete {key} in etcd, and start them all with the new values"
    );
    Ok(())
}

/// The etcd key of founder `id`'s restore record: `<incarnation> <crc32c hex>`.
fn restore_key(prefix: &str, id: u64) -> String {
    format!("{prefix}/restore/{id}")
}

/// Record this founder's backup checksum next to its founding incarnation (created once: a
/// later start of the same id does not change what the first one recorded).
async fn record_restore(client: &etcd_client::Client, prefix: &str, me: Member, checksum: &str, deadline: std::time::Instant) -> anyhow::Result<()> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = restore_key(prefix, me.node.0);
    let value = format!("{} {checksum}", me.incarnation.0);
    etcd::retrying("recording the restored snapshot's checksum", deadline, || {
        let mut c = client.clone();
        let (key, value) = (key.clone(), value.clone());
        async move {
            let txn = Txn::new().when([Compare::version(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(key, value, None)]);
            c.txn(txn).await?;
            anyhow::Ok(())
        }
    })
    .await
}

/// After the bootstrap barrier: every founder restored the same file (the same checksum, `mine`),
/// or none did. A founder's record counts only if it names the founding incarnation.
async fn check_founders_restore(client: &etcd_client::Client, prefix: &str, config: &paxos::Configuration, mine: Option<&str>, deadline: std::time::Instant) -> anyhow::Result<()> {
    let dir = format!("{prefix}/restore/");
    let resp = etcd::retrying("reading the founders' restore records", deadline, || {
        let mut c = client.clone();
        let dir = dir.clone();
        async move { anyhow::Ok(c.get(dir, Some(etcd_client::GetOptions::new().with_prefix())).await?) }
    })
    .await?;
    let mut found: std::collections::BTreeMap<u64, Option<String>> = config.acceptors.iter().map(|m| (m.node.0, None)).collect();
    for kv in resp.kvs() {
        let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else { continue };
        let Ok(id) = key.trim_start_matches(&dir).parse::<u64>() else { continue };
        let Some((inc, crc)) = value.split_once(' ') else { continue };
        if config.acceptors.iter().any(|m| m.node.0 == id && inc.parse::<u64>().ok() == Some(m.incarnation.0)) {
            found.insert(id, Some(crc.to_string()));
        }
    }
    if found.values().all(|c| c.as_deref() == mine) {
        if let Some(crc) = mine {
            info!(crc32c = crc, founders = ?found, "every founder restores the same snapshot file");
        }
        return Ok(());
    }
    let seen = found
        .iter()
        .map(|(id, c)| format!("node {id}: {}", c.as_ref().map_or("no --restore".to_string(), |c| format!("crc32c={c}"))))
        .collect::<Vec<_>>()
        .join(", ");
    anyhow::bail!(
        "bootstrap refused: the founders of a restored cluster must all restore the same snapshot file ({seen}); nothing was applied. Start every founder again with the same --restore FILE under a new --prefix (or a new etcd)"
    )
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// What a replica's flags say about TLS and authentication, loaded and checked before it binds
/// anything; the absence of each protection is said at start.
struct Security {
    peer: Option<crate::tls::PeerTls>,
    http: Option<Arc<rustls::ServerConfig>>,
    auth: Option<Arc<rest::auth::Auth>>,
    etcd: etcd::EtcdSecurity,
}

impl Security {
    fn load(args: &NodeArgs) -> anyhow::Result<Security> {
        let s = &args.security;
        let peer = match (&s.tls_ca, &s.tls_cert, &s.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                let files = crate::tls::TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() };
                let t = crate::tls::PeerTls::load(&files, NodeId(args.id))?;
                info!(name = %crate::tls::peer_name(NodeId(args.id)), "peer gRPC: mutual TLS under {}", ca.display());
                Some(t)
            }
            _ => {
                warn!("peer gRPC is PLAINTEXT and unauthenticated (no --tls-ca/--tls-cert/--tls-key): anyone who can reach {} can speak Paxos to this replica", args.grpc_listen);
                None
            }
        };
        let http = match (&s.http_tls_cert, &s.http_tls_key) {
            (Some(c), Some(k)) => Some(crate::tls::rest_server(c, k)?),
            _ => {
                warn!("the REST API is plain HTTP (no --http-tls-cert/--http-tls-key): requests and tokens travel unencrypted");
                None
            }
        };
        let auth = match &s.tokens {
            Some(path) => {
                let a = rest::auth::Auth::load(path)?;
                info!(tokens = a.count(), file = %path.display(), "clients need a bearer token (SIGHUP reloads the file)");
                if peer.is_none() {
                    anyhow::ensure!(
                        s.insecure_peers,
                        "--tokens without peer TLS: the gRPC port would accept relayed requests from anyone, with any permissions; set --tls-ca/--tls-cert/--tls-key (or --insecure-peers to accept that)"
                    );
                    warn!("client tokens without peer TLS (--insecure-peers): the gRPC port accepts relayed requests from anyone, with any permissions");
                }
                Some(Arc::new(a))
            }
            None => {
                warn!("no --tokens: every client that reaches the REST port may read, write and administer");
                None
            }
        };
        if args.etcd.iter().any(|e| !e.starts_with("https://")) {
            if s.etcd_user.is_some() {
                warn!("the etcd password goes to a plaintext endpoint ({:?}): use https:// with --etcd-ca", args.etcd);
            } else {
                warn!("etcd is reached in plaintext ({:?}): whoever can reach it can rewrite membership; use https:// with --etcd-ca", args.etcd);
            }
        }
        Ok(Security { peer, http, auth, etcd: s.etcd()? })
    }
}

/// Reload the token file on every SIGHUP; a file that does not parse keeps the tokens as they were.
async fn reload_tokens_on_hup(auth: Option<Arc<rest::auth::Auth>>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        let Some(auth) = &auth else {
            info!("SIGHUP: no token file (--tokens) to reload");
            continue;
        };
        match auth.reload() {
            Ok(n) => info!(tokens = n, "token file reloaded"),
            Err(e) => warn!(error = format!("{e:#}"), "token file NOT reloaded (the previous tokens stay)"),
        }
    }
}

/// The REST port's connections: plain TCP, or TLS with each handshake done off the accepting
/// task (refusals logged and counted). Accepting stops when the receiver is dropped.
fn http_incoming(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, metrics: Arc<Metrics>) -> mpsc::Receiver<Box<dyn crate::tls::Io>> {
    let (tx, rx) = mpsc::channel::<Box<dyn crate::tls::Io>>(64);
    match tls {
        None => {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        a = listener.accept() => if let Ok((s, _)) = a {
                            let _ = s.set_nodelay(true);
                            if tx.send(Box::new(s)).await.is_err() {
                                return;
                            }
                        },
                        () = tx.closed() => return,
                    }
                }
            });
        }
        Some(config) => {
            let mut accepted = crate::tls::accept_tls(listener, config, "http", move || metrics.client_tls_refused.inc());
            tokio::spawn(async move {
                while let Some((s, _)) = accepted.recv().await {
                    if tx.send(Box::new(s)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    rx
}

async fn serve_http(mut incoming: mpsc::Receiver<Box<dyn crate::tls::Io>>, ctx: Arc<Ctx>, drain: Duration, stop: impl std::future::Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = stop;
    tokio::pin!(signal);
    // A safety net above the handlers' own deadlines (a write answers 504 after the write
    // timeout, a relayed one a second later), so a stuck request still gets an answer.
    let deadline = ctx.write_timeout + ctx.read_timeout + Duration::from_secs(5);
    let request_ids = Arc::new(std::sync::atomic::AtomicU64::new(1));
    loop {
        tokio::select! {
            accepted = incoming.recv() => {
                let Some(stream) = accepted else { break };
                let ctx = ctx.clone();
                let edge = ctx.clone();
                let svc = tower::ServiceBuilder::new()
                    // Every request gets an `X-Request-Id` (the client's, or a counter), echoed
                    // on the reply and recorded on the access-log span.
                    .layer(SetRequestIdLayer::x_request_id(CountingIds(request_ids.clone())))
                    .layer(PropagateRequestIdLayer::x_request_id())
                    // The access log: one span per request, a `DEBUG` event per reply on target
                    // `tower_http::trace` (`RUST_LOG=tower_http=debug` turns it on).
                    .layer(TraceLayer::new_for_http())
                    // Answers made here rather than by the dispatcher (a timeout, a body too
                    // large) get a problem body and `X-Synod-Index` too.
                    .map_response(move |r| rest::stamp_index(&edge, rest::routes::problem_for_bare_error(r)))
                    .service_fn(move |req| handle_http(ctx.clone(), req, deadline));
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                let fut = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = fut.await;
                });
            }
            _ = &mut signal => break,
        }
    }
    info!("shutdown requested: draining HTTP");
    ctx.draining.store(true, Ordering::Relaxed);
    drop(incoming);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => warn!("requests still in flight after the drain timeout"),
    }
}

/// Request ids from a per-process counter (unique per replica and start; a client's own
/// `X-Request-Id` is kept).
#[derive(Clone)]
struct CountingIds(Arc<std::sync::atomic::AtomicU64>);

impl MakeRequestId for CountingIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Some(RequestId::new(hyper::header::HeaderValue::from(n)))
    }
}

async fn handle_http(ctx: Arc<Ctx>, req: Request<Incoming>, deadline: Duration) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    // The console's files hold no data: served without a token (the page asks for one).
    if rest::ui::is_ui(parts.uri.path()) {
        return Ok(rest::ui::serve(&parts.method, parts.uri.path()));
    }
    let grant = match rest::authenticate(&ctx, &parts) {
        Ok(g) => g,
        Err(refused) => return Ok(refused),
    };
    // A change stream is not buffered, relayed or bounded by the deadline (`rest::watch`).
    if rest::watch::is_stream(&parts.method, parts.uri.path()) {
        let resp = rest::watch::stream(ctx.clone(), parts, grant).await;
        if resp.status() == hyper::StatusCode::FORBIDDEN {
            ctx.metrics.auth_forbidden.inc();
        }
        return Ok(resp);
    }
    // An election's leader stream likewise (`rest::locks`).
    if rest::locks::is_observe(&parts.method, parts.uri.path()) {
        return Ok(rest::locks::observe(ctx.clone(), parts, grant).await);
    }
    // A long-poll may take its `wait` on top of the deadline, a lock request its own.
    let deadline = deadline + rest::watch::extra_time(parts.uri.query()) + rest::locks::extra_time(&parts.method, parts.uri.path());
    // The whole body is buffered (it may have to be relayed to the leader); the cap is the
    // largest request the store accepts plus room for JSON framing.
    let cap = ctx.limits.max_request_bytes + 64 * 1024;
    let work = async move {
        match Limited::new(body, cap).collect().await {
            Ok(b) => rest::dispatch(ctx, Request::from_parts(parts, b.to_bytes()), 0, grant).await.map(Body::from),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Problem::body_too_large(cap).into_response(),
            Err(e) => Problem::bad_request(format!("could not read the body: {e}")).into_response(),
        }
    };
    // 504 `timeout` when the deadline passes (what tower-http's timeout layer answered here).
    Ok(tokio::time::timeout(deadline, work).await.unwrap_or_else(|_| Problem::timeout().into_response()))
}

#[cfg(test)]
mod args_tests {
    use super::NodeArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn window(args: &[&str]) -> u64 {
        Cli::try_parse_from([&["synod", "--id", "1"], args].concat()).expect("flags parse").node.effective_pipeline_window()
    }

    /// A durable replica batches into one slot at a time by default (a slot costs an fsync on
    /// every replica); in memory it pipelines 3; a given window wins either way.
    #[test]
    fn the_pipeline_window_default_depends_on_durability() {
        assert_eq!(window(&[]), ::node::DEFAULT_PIPELINE_WINDOW);
        assert_eq!(window(&["--data-dir", "/tmp/x"]), 1);
        assert_eq!(window(&["--data-dir", "/tmp/x", "--pipeline-window", "4"]), 4);
        assert_eq!(window(&["--pipeline-window", "2"]), 2);
    }
}
