//! Metrics in Prometheus text format, without a registry crate.
//!
//! Counters and gauges are atomics bumped by whichever task sees the event (the node loop, peer
//! senders, REST handlers); latencies go into HDR histograms (one per request kind) and are
//! rendered as Prometheus summaries (quantiles, sum, count). The core's own view (role, ballot,
//! commit and applied slots, its counters) is read from a [`NodeStatus`] at scrape time.

use ::node::NodeStatus;
use hdrhistogram::Histogram;
use paxos::{Ballot, NodeId, RoleKind};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A monotone counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
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
    /// Snapshots sent.
    pub snapshots_sent: Counter,
    /// Snapshots installed.
    pub snapshots_installed: Counter,
    /// The epoch of the configuration this node applied last.
    pub config_epoch: Gauge,
    /// Membership changes this node proposed as leader that took effect.
    pub membership_changes: Counter,
    /// Reads this replica would not answer from its own state (catching up, lagging, removed).
    pub reads_not_served: Counter,
    /// Whether this replica answers reads from its own state (1) or not (0).
    pub serving: Gauge,
    /// Leader as last reported (0: none).
    leader: Gauge,
    /// Ballot round as last reported.
    ballot_round: Gauge,
    /// Whether the etcd lease is alive (1) or not (0).
    pub etcd_up: Gauge,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram<u64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            proposals: Counter::default(),
            proposals_lost: Counter::default(),
            applied_commands: Counter::default(),
            applied_slot: Gauge::default(),
            forwarded: Counter::default(),
            forward_failures: Counter::default(),
            peer_send_failures: Counter::default(),
            peer_queue_drops: Counter::default(),
            leader_leases_revoked: Counter::default(),
            peer_decode_errors: Counter::default(),
            snapshots_taken: Counter::default(),
            snapshots_sent: Counter::default(),
            snapshots_installed: Counter::default(),
            config_epoch: Gauge::default(),
            membership_changes: Counter::default(),
            reads_not_served: Counter::default(),
            serving: Gauge::default(),
            leader: Gauge::default(),
            ballot_round: Gauge::default(),
            etcd_up: Gauge::default(),
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Record who leads.
    pub fn set_leader(&self, leader: Option<NodeId>, ballot: Ballot) {
        self.leader.set(leader.map_or(0, |n| n.0));
        self.ballot_round.set(ballot.round);
    }

    /// Record one finished client request.
    pub fn observe_request(&self, kind: &str, status: u16, took: Duration) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((kind.to_string(), status)).or_default() += 1;
        let mut lat = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = lat.entry(kind.to_string()).or_insert_with(|| {
            // 1 µs .. 60 s at 3 significant digits; the bounds are constants, so this cannot fail.
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
        });
        let _ = h.record((took.as_micros() as u64).clamp(1, 60_000_000));
    }

    /// Render everything in the Prometheus text format.
    pub fn render(&self, status: Option<&NodeStatus>) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("synod_proposals_total", "Commands proposed by this node.", self.proposals.get());
        counter("synod_proposals_lost_total", "Proposals reported lost by the core.", self.proposals_lost.get());
        counter("synod_applied_commands_total", "Commands applied to the store.", self.applied_commands.get());
        counter("synod_forwarded_requests_total", "Client requests forwarded to the leader.", self.forwarded.get());
        counter("synod_forward_failures_total", "Forwarding attempts that failed.", self.forward_failures.get());
        counter("synod_peer_send_failures_total", "Peer sends that failed.", self.peer_send_failures.get());
        counter("synod_peer_queue_drops_total", "Peer sends dropped on a full queue.", self.peer_queue_drops.get());
        counter("synod_leader_leases_revoked_total", "Election leases of a silent leader revoked here (a majority of acceptors suspected it).", self.leader_leases_revoked.get());
        counter("synod_peer_decode_errors_total", "Peer messages that did not decode.", self.peer_decode_errors.get());
        counter("synod_snapshots_taken_total", "Snapshots taken.", self.snapshots_taken.get());
        counter("synod_snapshots_sent_total", "Snapshots streamed to peers.", self.snapshots_sent.get());
        counter("synod_snapshots_installed_total", "Snapshots installed from peers.", self.snapshots_installed.get());
        counter("synod_membership_changes_total", "Membership changes proposed here that took effect.", self.membership_changes.get());
        counter(
            "synod_reads_not_served_total",
            "Reads not answered from this replica's state (catching up, lagging, removed).",
            self.reads_not_served.get(),
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("synod_etcd_up", "Whether this node's etcd lease is alive.", self.etcd_up.get());
        gauge("synod_config_epoch", "The epoch of the configuration applied last.", self.config_epoch.get());
        gauge("synod_serving", "1 if this replica answers reads from its own state.", self.serving.get());
        if let Some(s) = status {
            gauge("synod_leader", "The leader's node id (0: none known).", s.core.leader.map_or(0, |n| n.0));
            gauge("synod_is_leader", "1 if this node leads.", u64::from(s.core.role == RoleKind::Leader));
            gauge("synod_ballot_round", "The highest ballot round seen.", s.core.ballot.round);
            gauge("synod_commit_slot", "Every slot up to here is chosen.", s.core.commit.0);
            gauge("synod_applied_slot", "Every slot up to here is applied.", s.core.applied.0);
            gauge("synod_store_index", "The store's applied command index.", s.store_index);
            gauge("synod_keys", "Keys in the store.", s.keys as u64);
            gauge("synod_sessions", "Live exactly-once sessions (new ones are refused, 503, at synod_sessions_max).", s.sessions as u64);
            gauge("synod_sessions_max", "The session table's cap (0: none).", s.sessions_max as u64);
            gauge("synod_log_clock_ms", "The store's log clock (log time that expires sessions).", s.log_clock_ms);
            gauge("synod_pending_writes", "Writes waiting for their outcome.", s.pending_writes as u64);
            gauge("synod_pending_reads", "Reads waiting.", s.pending_reads as u64);
            let c = &s.counters;
            let mut counter = |name: &str, help: &str, v: u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
            };
            counter("synod_core_commands_applied_total", "Commands chosen through the core.", c.commands_applied);
            counter("synod_core_proposals_lost_total", "Proposals lost (core view).", c.proposals_lost);
            counter("synod_core_dropped_messages_total", "Peer messages the core dropped.", c.dropped_messages);
            counter("synod_core_elections_started_total", "Phase 1 runs started.", c.elections_started);
            counter("synod_core_became_leader_total", "Times this node became leader.", c.became_leader);
            counter("synod_core_stepped_down_total", "Times this node stepped down.", c.stepped_down);
            counter("synod_core_config_changes_total", "Configuration changes applied (core view).", c.config_changes);
            counter("synod_core_snapshots_installed_total", "Snapshots installed (core view).", c.snapshots_installed);
        } else {
            gauge("synod_leader", "The leader's node id (0: none known).", self.leader.get());
            gauge("synod_ballot_round", "The highest ballot round seen.", self.ballot_round.get());
            gauge("synod_applied_slot", "Every slot up to here is applied.", self.applied_slot.get());
        }
        let _ = writeln!(out, "# HELP synod_requests_total Client requests by kind and status.\n# TYPE synod_requests_total counter");
        for ((kind, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "synod_requests_total{{kind=\"{kind}\",status=\"{status}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP synod_request_seconds Client request latency.\n# TYPE synod_request_seconds summary");
        for (kind, h) in self.latency.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for q in [0.5, 0.9, 0.99, 0.999] {
                let v = h.value_at_quantile(q) as f64 / 1e6;
                let _ = writeln!(out, "synod_request_seconds{{kind=\"{kind}\",quantile=\"{q}\"}} {v}");
            }
            let sum = h.mean() * h.len() as f64 / 1e6;
            let _ = writeln!(out, "synod_request_seconds_sum{{kind=\"{kind}\"}} {sum}");
            let _ = writeln!(out, "synod_request_seconds_count{{kind=\"{kind}\"}} {}", h.len());
        }
        out
    }
}
