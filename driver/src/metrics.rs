//! Metrics through `prometheus-client`, served as OpenMetrics text on `/metrics`.
//!
//! Counters and gauges are atomics bumped by whichever task sees the event (the node loop, peer
//! senders, REST handlers). Request latency is a histogram by route, method and status class,
//! so replicas' figures add up (a summary's quantiles cannot be aggregated). The core's own view
//! (role, ballot, commit and applied slots, its counters) is read from a [`NodeStatus`] at scrape
//! time, as are the process figures (resident memory and open descriptors, from `/proc`).

use ::node::NodeStatus;
use paxos::{Ballot, NodeId, RoleKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::time::Duration;

/// The `Content-Type` of `/metrics` (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotone counter (exposed as `<name>_total`).
#[derive(Debug, Default, Clone)]
pub struct Counter(prometheus_client::metrics::counter::Counter);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
    /// Raise to `v` (for counters kept elsewhere, copied at scrape time; never goes down).
    pub(crate) fn raise_to(&self, v: u64) {
        self.0.inc_by(v.saturating_sub(self.0.get()));
    }
}

/// A value that goes up and down.
#[derive(Debug, Default, Clone)]
pub struct Gauge(prometheus_client::metrics::gauge::Gauge);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: u64) {
        self.0.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        u64::try_from(self.0.get()).unwrap_or(0)
    }
    /// Add one (atomically, for gauges that several tasks move).
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Take one away (atomically).
    pub fn dec(&self) {
        self.0.dec();
    }
}

/// Labels of a client request. Static strings: a request is counted without allocating.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's path pattern (`/v1/kv/*key`), never the raw path.
    pub route: &'static str,
    /// The HTTP method (`other` for one outside RFC 9110's list and `PATCH`).
    pub method: &'static str,
    /// `1xx`, `2xx`, `3xx`, `4xx` or `5xx`.
    pub code: &'static str,
}

/// A method's label: one of a fixed set, so that a client cannot grow the metric families.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// A status code's class label.
fn code_label(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Everything the driver counts.
#[derive(Debug)]
pub struct Metrics {
    /// Commands proposed to the core on this node.
    pub proposals: Counter,
    /// Proposals the core reported lost.
    pub proposals_lost: Counter,
    /// Commands applied to the store.
    pub applied_commands: Counter,
    /// The last applied slot.
    pub applied_slot: Gauge,
    /// The store's last applied command index (what `X-Synod-Index` says on a refusal).
    pub store_index: Gauge,
    /// Requests forwarded to the leader (writes handed over in the peer stream, and requests
    /// relayed over gRPC `Forward`).
    pub forwarded: Counter,
    /// Forwarding attempts that failed.
    pub forward_failures: Counter,
    /// Sends to a peer that failed (unknown address, broken stream).
    pub peer_send_failures: Counter,
    /// Sends dropped because the peer's queue was full.
    pub peer_queue_drops: Counter,
    /// Election leases of a silent leader this node revoked (a majority suspected it).
    pub leader_leases_revoked: Counter,
    /// Peer messages that did not decode.
    pub peer_decode_errors: Counter,
    /// Snapshots taken.
    pub snapshots_taken: Counter,
    /// Durable restarts (same incarnation, from the data directory).
    pub durable_restarts: Counter,
    /// Data directories set aside as untrustworthy (corrupt, another node's, removed).
    pub data_dirs_refused: Counter,
    /// Write-ahead-log fsyncs (group commits).
    pub wal_fsyncs: Counter,
    /// Write-ahead-log records made durable.
    pub wal_records: Counter,
    /// Snapshots sent.
    pub snapshots_sent: Counter,
    /// Snapshots installed.
    pub snapshots_installed: Counter,
    /// The epoch of the configuration this node applied last.
    pub config_epoch: Gauge,
    /// Membership changes this node proposed as leader that took effect.
    pub membership_changes: Counter,
    /// Joins this node (as leader) held back because the joiner's build does not read the
    /// cluster version.
    pub joins_refused_version: Counter,
    /// TLS handshakes refused on the gRPC (peer) port: no certificate, one from another CA,
    /// expired, or not a TLS client at all.
    pub peer_tls_refused: Counter,
    /// TLS handshakes that failed on the REST (client) port.
    pub client_tls_refused: Counter,
    /// Peer messages dropped because they claim to come from a node the sender's certificate
    /// does not name.
    pub peer_identity_mismatches: Counter,
    /// Peer calls refused because the sender's certificate names no member of the
    /// configuration and no registered replica (a removed member, an id issued for later,
    /// etcd's certificate).
    pub peer_calls_unknown: Counter,
    /// `/v1/cluster/status` questions to members that got no answer.
    pub member_status_failures: Counter,
    /// REST requests answered 401 (no valid token).
    pub auth_unauthenticated: Counter,
    /// REST requests answered 403 (the token does not allow it).
    pub auth_forbidden: Counter,
    /// Reads this replica would not answer from its own state (catching up, lagging, removed).
    pub reads_not_served: Counter,
    /// Whether this replica answers reads from its own state (1) or not (0).
    pub serving: Gauge,
    /// Whether the etcd lease is alive (1) or not (0).
    pub etcd_up: Gauge,
    /// This node's current etcd lease id (0: none): suspicion records are held under it.
    pub etcd_lease: Gauge,
    /// Server-sent-event watch streams open on this replica (`GET /v1/watch/...`).
    pub watch_streams: Gauge,
    /// Watch streams opened since start.
    pub watch_streams_opened: Counter,
    /// Leader as last reported (0: none); replaced by the core's view when it answers.
    leader: Gauge,
    /// Ballot round as last reported.
    ballot_round: Gauge,
    requests: Family<RequestLabels, prometheus_client::metrics::counter::Counter>,
    latency: Family<RequestLabels, Histogram>,
    scrape: ScrapeTime,
    registry: Mutex<Registry>,
}

/// Values copied from the node loop's status and `/proc` at each scrape.
#[derive(Debug, Default)]
struct ScrapeTime {
    is_leader: Gauge,
    commit_slot: Gauge,
    keys: Gauge,
    sessions: Gauge,
    sessions_max: Gauge,
    log_clock_ms: Gauge,
    pending_writes: Gauge,
    pending_reads: Gauge,
    watchers: Gauge,
    watch_history_changes: Gauge,
    watch_history_oldest_index: Gauge,
    cluster_version: Gauge,
    max_cluster_version: Gauge,
    halted: Gauge,
    leases: Gauge,
    lease_sweeps: Counter,
    leases_expired: Counter,
    core_commands_applied: Counter,
    core_proposals_lost: Counter,
    core_dropped_messages: Counter,
    core_elections_started: Counter,
    core_became_leader: Counter,
    core_stepped_down: Counter,
    core_config_changes: Counter,
    core_snapshots_installed: Counter,
    resident_memory_bytes: Gauge,
    open_fds: Gauge,
}

fn latency_histogram() -> Histogram {
    // 250 µs .. ~8 s in 16 doubling buckets.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            proposals: Counter::default(),
            proposals_lost: Counter::default(),
            applied_commands: Counter::default(),
            applied_slot: Gauge::default(),
            store_index: Gauge::default(),
            forwarded: Counter::default(),
            forward_failures: Counter::default(),
            peer_send_failures: Counter::default(),
            peer_queue_drops: Counter::default(),
            leader_leases_revoked: Counter::default(),
            peer_decode_errors: Counter::default(),
            snapshots_taken: Counter::default(),
            durable_restarts: Counter::default(),
            data_dirs_refused: Counter::default(),
            wal_fsyncs: Counter::default(),
            wal_records: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            config_epoch: Gauge::default(),
            membership_changes: Counter::default(),
            joins_refused_version: Counter::default(),
            peer_tls_refused: Counter::default(),
            client_tls_refused: Counter::default(),
            peer_identity_mismatches: Counter::default(),
            peer_calls_unknown: Counter::default(),
            member_status_failures: Counter::default(),
            auth_unauthenticated: Counter::default(),
            auth_forbidden: Counter::default(),
            reads_not_served: Counter::default(),
            serving: Gauge::default(),
            etcd_up: Gauge::default(),
            etcd_lease: Gauge::default(),
            watch_streams: Gauge::default(),
            watch_streams_opened: Counter::default(),
            leader: Gauge::default(),
            ballot_round: Gauge::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            scrape: ScrapeTime::default(),
            registry: Mutex::new(Registry::default()),
        };
        m.register();
        m
    }
}

impl Metrics {
    /// Put every metric in the registry (they share their values with the fields).
    fn register(&self) {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.scrape;
        let counters: [(&str, &str, &Counter); 37] = [
            ("synod_proposals", "Commands proposed by this node.", &self.proposals),
            ("synod_proposals_lost", "Proposals reported lost by the core.", &self.proposals_lost),
            ("synod_applied_commands", "Commands applied to the store.", &self.applied_commands),
            ("synod_forwarded_requests", "Client requests forwarded to the leader.", &self.forwarded),
            ("synod_forward_failures", "Forwarding attempts that failed.", &self.forward_failures),
            ("synod_peer_send_failures", "Peer sends that failed.", &self.peer_send_failures),
            ("synod_peer_queue_drops", "Peer sends dropped on a full queue.", &self.peer_queue_drops),
            (
                "synod_leader_leases_revoked",
                "Election leases of a silent leader revoked here (a majority of acceptors suspected it).",
                &self.leader_leases_revoked,
            ),
            ("synod_peer_decode_errors", "Peer messages that did not decode.", &self.peer_decode_errors),
            ("synod_snapshots_taken", "Snapshots taken.", &self.snapshots_taken),
            ("synod_durable_restarts", "Restarts with the same identity from the data directory.", &self.durable_restarts),
            ("synod_data_dirs_refused", "Data directories set aside as untrustworthy (the replica came back as a new incarnation).", &self.data_dirs_refused),
            ("synod_wal_fsyncs", "Write-ahead-log fsyncs (one per group commit).", &self.wal_fsyncs),
            ("synod_wal_records", "Write-ahead-log records made durable.", &self.wal_records),
            ("synod_snapshots_sent", "Snapshots streamed to peers.", &self.snapshots_sent),
            ("synod_snapshots_installed", "Snapshots installed from peers.", &self.snapshots_installed),
            ("synod_membership_changes", "Membership changes proposed here that took effect.", &self.membership_changes),
            ("synod_joins_refused_version", "Joins held back (as leader) because the joiner's build does not read the cluster version.", &self.joins_refused_version),
            ("synod_peer_tls_refused", "TLS handshakes refused on the gRPC (peer) port.", &self.peer_tls_refused),
            ("synod_client_tls_refused", "TLS handshakes that failed on the REST port.", &self.client_tls_refused),
            ("synod_peer_identity_mismatches", "Peer messages dropped: the sender's certificate does not name the node they claim to come from.", &self.peer_identity_mismatches),
            ("synod_peer_calls_unknown", "Peer calls refused: the certificate names no member and no registered replica.", &self.peer_calls_unknown),
            ("synod_member_status_failures", "Members that did not answer a /v1/cluster/status question.", &self.member_status_failures),
            ("synod_auth_unauthenticated", "REST requests answered 401 (no valid bearer token).", &self.auth_unauthenticated),
            ("synod_auth_forbidden", "REST requests answered 403 (the token does not allow them).", &self.auth_forbidden),
            ("synod_watch_streams_opened", "Watch streams (server-sent events) opened.", &self.watch_streams_opened),
            ("synod_reads_not_served", "Reads not answered from this replica's state (catching up, lagging, removed).", &self.reads_not_served),
            ("synod_lease_sweeps", "Lease sweeps this node proposed as leader (they expire due leases and move the log clock).", &s.lease_sweeps),
            ("synod_leases_expired", "Leases expired by the sweeps this replica applied.", &s.leases_expired),
            ("synod_core_commands_applied", "Commands chosen through the core.", &s.core_commands_applied),
            ("synod_core_proposals_lost", "Proposals lost (core view).", &s.core_proposals_lost),
            ("synod_core_dropped_messages", "Peer messages the core dropped.", &s.core_dropped_messages),
            ("synod_core_elections_started", "Phase 1 runs started.", &s.core_elections_started),
            ("synod_core_became_leader", "Times this node became leader.", &s.core_became_leader),
            ("synod_core_stepped_down", "Times this node stepped down.", &s.core_stepped_down),
            ("synod_core_config_changes", "Configuration changes applied (core view).", &s.core_config_changes),
            ("synod_core_snapshots_installed", "Snapshots installed (core view).", &s.core_snapshots_installed),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.0.clone());
        }
        let gauges: [(&str, &str, &Gauge); 26] = [
            ("synod_cluster_version", "The cluster version at the applied slot (the newest formats any replica writes).", &s.cluster_version),
            ("synod_max_cluster_version", "The highest cluster version this build reads.", &s.max_cluster_version),
            ("synod_halted", "1 if this replica stopped applying the log (it met a cluster version its build does not read).", &s.halted),
            ("synod_etcd_up", "Whether this node's etcd lease is alive.", &self.etcd_up),
            ("synod_etcd_lease", "This node's etcd lease id (0: none); its registration and suspicion records live under it.", &self.etcd_lease),
            ("synod_config_epoch", "The epoch of the configuration applied last.", &self.config_epoch),
            ("synod_serving", "1 if this replica answers reads from its own state.", &self.serving),
            ("synod_leader", "The leader's node id (0: none known).", &self.leader),
            ("synod_is_leader", "1 if this node leads.", &s.is_leader),
            ("synod_ballot_round", "The highest ballot round seen.", &self.ballot_round),
            ("synod_commit_slot", "Every slot up to here is chosen.", &s.commit_slot),
            ("synod_applied_slot", "Every slot up to here is applied.", &self.applied_slot),
            ("synod_store_index", "The store's applied command index.", &self.store_index),
            ("synod_keys", "Keys in the store.", &s.keys),
            ("synod_leases", "Live leases in the store.", &s.leases),
            ("synod_sessions", "Live exactly-once sessions (at synod_sessions_max a new one evicts the least recently active past the guaranteed window, or is refused 503).", &s.sessions),
            ("synod_sessions_max", "The session table's cap (0: none).", &s.sessions_max),
            ("synod_log_clock_ms", "The store's log clock (log time that expires sessions).", &s.log_clock_ms),
            ("synod_pending_writes", "Writes waiting for their outcome.", &s.pending_writes),
            ("synod_pending_reads", "Reads waiting.", &s.pending_reads),
            ("synod_watch_streams", "Watch streams (server-sent events) open on this replica.", &self.watch_streams),
            ("synod_watchers", "Watches waiting in the node loop (long-polls and streams between changes).", &s.watchers),
            ("synod_watch_history_changes", "Changes held in the watch history.", &s.watch_history_changes),
            (
                "synod_watch_history_oldest_index",
                "The oldest index a watch can start from (older ones are 410 compacted).",
                &s.watch_history_oldest_index,
            ),
            ("process_resident_memory_bytes", "Resident memory of this process, from /proc/self/statm.", &s.resident_memory_bytes),
            ("process_open_fds", "Open file descriptors of this process, from /proc/self/fd.", &s.open_fds),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.0.clone());
        }
        r.register("synod_requests", "Client requests by route, method and status class.", self.requests.clone());
        r.register("synod_request_seconds", "Client request latency by route, method and status class.", self.latency.clone());
        r.register("synod_build", "The running build.", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
    }

    /// The leader as last reported (0: none known).
    pub fn leader(&self) -> u64 {
        self.leader.get()
    }

    /// Record who leads.
    pub fn set_leader(&self, leader: Option<NodeId>, ballot: Ballot) {
        self.leader.set(leader.map_or(0, |n| n.0));
        self.ballot_round.set(ballot.round);
    }

    /// Record one finished client request on `route` (its path pattern).
    pub fn observe_request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let labels = RequestLabels { route, method: method_label(method), code: code_label(status) };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Render everything as OpenMetrics text, with the core's view from `status` if it answered.
    pub fn render(&self, status: Option<&NodeStatus>) -> String {
        let s = &self.scrape;
        if let Some(st) = status {
            self.leader.set(st.core.leader.map_or(0, |n| n.0));
            s.is_leader.set(u64::from(st.core.role == RoleKind::Leader));
            self.ballot_round.set(st.core.ballot.round);
            s.commit_slot.set(st.core.commit.0);
            self.applied_slot.set(st.core.applied.0);
            self.store_index.set(st.store_index);
            s.keys.set(st.keys as u64);
            s.sessions.set(st.sessions as u64);
            s.sessions_max.set(st.sessions_max as u64);
            s.log_clock_ms.set(st.log_clock_ms);
            s.pending_writes.set(st.pending_writes as u64);
            s.pending_reads.set(st.pending_reads as u64);
            s.watchers.set(st.watchers as u64);
            s.watch_history_changes.set(st.history_changes as u64);
            s.watch_history_oldest_index.set(st.history_oldest_index);
            s.cluster_version.set(u64::from(st.cluster_version));
            s.max_cluster_version.set(u64::from(st.max_cluster_version));
            s.halted.set(u64::from(st.halted.is_some()));
            s.leases.set(st.leases as u64);
            s.lease_sweeps.raise_to(st.lease_sweeps);
            s.leases_expired.raise_to(st.leases_expired);
            let c = &st.counters;
            s.core_commands_applied.raise_to(c.commands_applied);
            s.core_proposals_lost.raise_to(c.proposals_lost);
            s.core_dropped_messages.raise_to(c.dropped_messages);
            s.core_elections_started.raise_to(c.elections_started);
            s.core_became_leader.raise_to(c.became_leader);
            s.core_stepped_down.raise_to(c.stepped_down);
            s.core_config_changes.raise_to(c.config_changes);
            s.core_snapshots_installed.raise_to(c.snapshots_installed);
        }
        if let Some(rss) = resident_memory_bytes() {
            s.resident_memory_bytes.set(rss);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            s.open_fds.set(fds.count() as u64);
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Resident set size from `/proc/self/statm` (pages, second field) times the page size.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux on the platforms we build for uses 4 KiB pages.
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_histograms_and_names_the_docs_use() {
        let m = Metrics::default();
        m.forwarded.inc();
        m.observe_request("/v1/kv/*key", "GET", 200, Duration::from_millis(3));
        m.observe_request("/v1/kv/*key", "GET", 404, Duration::from_millis(1));
        // A method outside the fixed set is counted as `other`, so clients cannot add series.
        m.observe_request("/v1/kv/*key", "BREW", 405, Duration::from_millis(1));
        let text = m.render(None);
        for line in [
            "synod_requests_total{route=\"/v1/kv/*key\",method=\"other\",code=\"4xx\"} 1",
            "synod_forwarded_requests_total 1",
            "synod_requests_total{route=\"/v1/kv/*key\",method=\"GET\",code=\"2xx\"} 1",
            "synod_request_seconds_count{route=\"/v1/kv/*key\",method=\"GET\",code=\"4xx\"} 1",
            "# TYPE synod_request_seconds histogram",
            concat!("synod_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1"),
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
        assert!(text.contains("synod_request_seconds_bucket{le=\"0.004\",route=\"/v1/kv/*key\",method=\"GET\",code=\"2xx\"} 1"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("process_resident_memory_bytes ") && !l.ends_with(" 0")), "{text}");
        assert!(text.lines().any(|l| l.starts_with("process_open_fds ")), "{text}");
    }
}
