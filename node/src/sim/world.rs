//! The simulated world: replicas (node layer), network, etcd, clients, faults, and the verdicts.

use super::client::{op_kind, settle_write, Ask, Client, InFlight, Role, Tagging, COUNTERS, REGISTERS};
use super::etcd::{Etcd, Proc, MAX_FLAP_MS, TICK_MS};
use super::locker::{Chan, Cmd, LockBook, LockBugs, LockStats, Locker, KEEP_ATTEMPTS, HANDOVER_SLACK_MS, MAIN_ATTEMPTS, MAIN_TIMEOUT_MS};
use super::net::Net;
use crate::membership::{barrier_behind, eligible, next_step, EpochMark, PendingChange, Step};
use crate::{Bugs, Consistency, Input, Node, NodeSettings, NotServing, Output, ReadAnswer, Refused};
use checker::{Budget, CheckOptions, CheckResult, Op, OpKind, Outcome};
use kvstore::{CasExpect, Store, StoreConfig, WriteOp};
use paxos::{Configuration, Envelope, Incarnation, Member, NodeId, Persist, Recovered, Slot, SnapshotMeta, Time};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// What one run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: the whole run follows from it.
    pub seed: u64,
    /// Replicas (all acceptors of the founding configuration).
    pub replicas: usize,
    /// Spare replicas outside the founding configuration: they join, leave and join again.
    pub spares: usize,
    /// Clients.
    pub clients: usize,
    /// Length of the phase with faults (virtual ms).
    pub safety_ms: u64,
    /// Inject faults.
    pub faults: bool,
    /// Bugs to put back in the node layer (negative tests).
    pub bugs: Bugs,
    /// Bugs to put back in the core.
    pub core_bugs: paxos::Bugs,
    /// Durable mode: every replica runs with `NodeSettings::durable` and a simulated disk (see
    /// [`Disk`]); crashes may keep the disk (a durable restart) and power cuts stop every replica
    /// at once. Off: state is in memory and every crash is a kill -9 with amnesia.
    pub durable: bool,
    /// A shell bug (negative test): outputs queued behind an `Output::Persist` run at once, so
    /// a vote or a promise is acknowledged before it is durable; the record stays unsynced until
    /// the sync event, and a crash or a power cut before it loses it.
    pub ack_before_durable: bool,
    /// A small session table (issue 26): every replica runs with this TTL, guaranteed window and
    /// capacity, a flood client fills the table with keyed writes through a round-robin balancer
    /// over every replica, and after the heal a probe client must be admitted within a bounded
    /// multiple of the TTL while the log clock keeps pace with simulated time (see
    /// [`SessionShape`]). `None`: the default table (24 h, 100,000 sessions), never full here.
    pub sessions: Option<SessionShape>,
    /// Whole-etcd outages among the faults (every node cut from etcd at once for 1-6 s; issue 25:
    /// the leader goes on leading on its quorum, nobody is told to step down, and on etcd's return
    /// the election is held again). On in one run in seven.
    pub etcd_outages: bool,
    /// Re-election bounces among the faults: the leader is cut from its peers (not from etcd)
    /// while its clients keep proposing through it, and as soon as etcd names a successor, that
    /// one is cut too and the old leader heals, so the old leader may win again and adopt its
    /// own cut-off slots after the successor's (the schedule of the lease review, REPORT §6).
    /// On in one run in eleven.
    pub bounces: bool,
    /// The etcd removal marks reach the processes they name (as the driver's membership task
    /// reads them). Off: a replica removed while it lagged never learns it (the simulator before
    /// seed 21505 showed the gap).
    pub removal_marks: bool,
    /// The leader raises the cluster version (every replica runs this build, so it reads
    /// `kvstore::MAX_CLUSTER_VERSION`) once no membership request moves: a configuration change
    /// amid the faults, after which snapshots are written in the newer format (issue 30). On in
    /// one run in five.
    pub version_raise: bool,
    /// Lock clients (`locker.rs`): each loops granting a lease, taking the lock key guarded on
    /// its absence, holding it with keepalives, releasing or abandoning it. 2 or 3 per run; none
    /// in a run with the smallest session table ([`SMALLEST_TABLE_WITHOUT_LOCKS`]).
    pub lockers: usize,
    /// Bugs to put into the lock clients (negative tests of the lock verdicts).
    pub lock_bugs: LockBugs,
    /// A withdrawal's delete of a suspicion record may fail (`etcd.rs`): one time in four its
    /// node's etcd requests fail for 50-150 ms (a flap; its lease is kept), and the record stays
    /// until a retry succeeds. (Deletes fail in every run while a node is cut from etcd.) On in
    /// one run in two.
    pub delete_failures: bool,
    /// A driver bug (negative test of the suspicion verdict): stale suspicion records count, as
    /// before issue 25: records live under the suspected leader's lease (not the recorder's),
    /// count whatever became of their recorder (dead, replaced, its lease expired), and a
    /// withdrawal whose delete failed is not retried.
    pub stale_suspicions: bool,
    /// Every replica's pipeline window (`None`: `NodeSettings`' default, the in-memory 3).
    pub pipeline_window: Option<u64>,
}

/// The session table of a [`SimConfig::sessions`] run and what it is held to.
///
/// * **Load**: the checked clients keep their taggings (a session, an idempotency key, none) and
///   pick replicas at random; one more client floods keyed puts (a fresh one-request session
///   each, `seq` 1 under a new client id, as the REST layer maps an `Idempotency-Key`) through a
///   round-robin balancer over every replica, one at a time and as fast as it can, ignoring
///   `Retry-After`. The table is full within a second and stays full. The lock clients (two
///   sessions each) run too, except with the smallest table ([`SMALLEST_TABLE_WITHOUT_LOCKS`]).
/// * **Liveness** (after the heal): [`PROBE_SETTLE_MS`] after it, a probe client sends keyed puts
///   through the balancer, waiting what each `SessionsFull` refusal's `retry_after_ms` says, and
///   must be admitted within [`PROBE_TTLS`] × `ttl_ms`.
/// * **The log clock keeps pace**: from the probe's start on, the leader's log clock is sampled
///   every 100 ms with the proposal time of the last request it applied (its stamp's monotonic
///   reading). Over every stretch under one leader (one process, one ballot) the clock must
///   advance at least half the simulated time between the proposals of the last requests applied
///   at the stretch's first and last samples, if that is at least [`CLOCK_STRETCH_MS`]; a sample
///   counts only if its last request was proposed after the leader was first seen leading (not a
///   predecessor's slot, nor one it adopted). Under one leader the clock should advance exactly
///   that time; time between leaders and idle gaps legitimately do not count, hence stretches
///   and proposal times rather than the time of the samples.
/// * **And never runs ahead** (every run, with or without a shape): no replica's log clock is
///   ever above the simulated time (every process's monotonic clock is the virtual clock here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionShape {
    /// `StoreConfig::session_ttl_ms`.
    pub ttl_ms: u64,
    /// `StoreConfig::session_min_ttl_ms` (the guaranteed window).
    pub min_ttl_ms: u64,
    /// `StoreConfig::max_sessions`.
    pub max_sessions: usize,
}

impl SessionShape {
    /// The shape for `seed`: a TTL of 2-5 s, a window of a quarter of it, 8-20 sessions.
    pub fn for_seed(seed: u64) -> Self {
        let ttl_ms = 2_000 + 1_000 * ((seed / 5) % 4);
        SessionShape { ttl_ms, min_ttl_ms: ttl_ms / 4, max_sessions: [8, 12, 16, 20][((seed / 20) % 4) as usize] }
    }
}

/// After the heal, the probe starts this much later (time for a leader to settle).
pub const PROBE_SETTLE_MS: u64 = 2_000;
/// Runs whose session table holds at most this many sessions have no lock clients.
///
/// The probe's bound ([`PROBE_TTLS`]) was set when the probe raced the flood alone for freed
/// slots (longest wait then 1.4 s in 600 session runs). A lock client holds two sessions (its
/// channels) and, like the probe, waits out each `SessionsFull`'s `retry_after_ms`, so up to six
/// more polite channels aim at the very slot the probe was told to wait for, and the flood
/// (ignoring `Retry-After`) is usually there first; the table admits whichever new session comes
/// first (no queue: nothing fairer is promised). In an 8-session table that made the probe's
/// wait heavy-tailed although the table rotated as it should: seeds 0-2999, 11 (12 with the
/// issue-25 etcd) of the 152 such runs waited more than one TTL, up to 4.6 TTL at seed 964 (106
/// refusals under one leader whose log clock ran exactly on time, no revocation). Without lock
/// clients there, the longest wait of those runs is 0.38 TTL, and 0.63 TTL over all 600 session
/// runs (lock clients keep running with tables of 12-20, where their sessions are still evicted
/// between two attempts). The bound is unchanged, so a stalled log clock (`Bugs::proposer_clock`)
/// still fails every 8-session run by the probe.
pub const SMALLEST_TABLE_WITHOUT_LOCKS: usize = 8;
/// The probe must be admitted within this many TTLs of its start.
pub const PROBE_TTLS: u64 = 3;
/// How far a log-clock credit may start before an earlier index's reading: a deposed leader
/// proposes for at most `leader_lease_ms` (300 ms here) after it last heard a quorum, plus a
/// message delay (REPORT §7).
pub const CLOCK_LEAD_SLACK_MS: u64 = 400;
/// The shortest stretch under one leader over which the log clock's pace is checked.
pub const CLOCK_STRETCH_MS: u64 = 2_000;
/// The session phase lasts at least this long after the probe starts (so a stretch is checked
/// even when the probe is admitted at once).
const SESSION_PHASE_MS: u64 = 4_000;

impl SimConfig {
    /// The default shape for `seed`: 3 or 5 replicas, 3-6 clients, 12 s of faults.
    pub fn new(seed: u64) -> Self {
        let sessions = (seed % 5 == 4).then(|| SessionShape::for_seed(seed));
        SimConfig {
            seed,
            replicas: if seed % 3 == 2 { 5 } else { 3 },
            spares: usize::from(seed % 2 == 1),
            clients: 3 + (seed % 4) as usize,
            safety_ms: 12_000,
            faults: true,
            bugs: Bugs::default(),
            core_bugs: paxos::Bugs::default(),
            durable: seed % 6 != 5,
            ack_before_durable: false,
            sessions,
            etcd_outages: seed % 7 == 3,
            bounces: seed % 11 == 7,
            removal_marks: true,
            version_raise: seed % 5 == 2,
            // None with the smallest session table (see `SMALLEST_TABLE_WITHOUT_LOCKS`).
            lockers: if sessions.is_some_and(|s| s.max_sessions <= SMALLEST_TABLE_WITHOUT_LOCKS) { 0 } else { 2 + (seed / 4 % 2) as usize },
            lock_bugs: LockBugs::default(),
            delete_failures: seed.is_multiple_of(2),
            stale_suspicions: false,
            pipeline_window: None,
        }
    }
}

/// What happened in a run (to show that the faults and the paths under test really ran).
#[derive(Clone, Debug, Default)]
pub struct SimStats {
    pub writes_ok: u64,
    pub writes_failed: u64,
    /// Writes every attempt of which was refused (nothing done; not in the history).
    pub writes_refused: u64,
    pub writes_unknown: u64,
    pub lin_reads: u64,
    pub seq_reads: u64,
    /// Attempts after the first (refusals, timeouts, unknown outcomes).
    pub retries: u64,
    /// Retries of a write whose earlier attempt may have applied (the exactly-once path).
    pub risky_retries: u64,
    /// Answers "outcome unknown" from a replica (not timeouts).
    pub unknown_answers: u64,
    pub timeouts: u64,
    pub pauses: u64,
    pub isolations: u64,
    pub one_way_cuts: u64,
    pub holds: u64,
    pub etcd_cuts: u64,
    /// Whole-etcd outages injected.
    pub etcd_outages: u64,
    /// Re-election bounces ([`SimConfig::bounces`]): old leaders cut off, and of those, the ones
    /// whose successor was cut right after it was named.
    pub bounces: u64,
    pub bounced_successors: u64,
    /// Removal marks delivered to a process that had not learned its removal from the log.
    pub removal_marks_delivered: u64,
    /// Cluster-version raises proposed (`SimConfig::version_raise`).
    pub version_raises: u64,
    pub wrong_hints: u64,
    pub leader_changes: u64,
    pub revocations: u64,
    /// The run's suspicion deletes may fail at random ([`SimConfig::delete_failures`]).
    pub delete_failures: bool,
    /// Revocations by suspicion checked by the suspicion verdict (all of them).
    pub revocations_checked: u64,
    /// Withdrawals of a suspicion whose first delete failed (the node cut from etcd, or a flap):
    /// the record stayed, and the delete was retried.
    pub suspicion_deletes_failed: u64,
    /// Suspicion records about a leader's current lease that did not count (their recorder's
    /// registration gone, or held under another lease: a replaced or re-registered process).
    pub suspicion_records_ignored: u64,
    /// Suspicion records about a live leader lease that vanished with their recorder's lease
    /// (their recorder died or was cut from etcd while it suspected, or after a failed delete).
    pub suspicion_records_expired: u64,
    pub snapshots_installed: u64,
    /// Crashes with amnesia (the process and its state gone).
    pub crashes: u64,
    /// The run was in durable mode.
    pub durable: bool,
    /// Crashes that kept the disk (one replica, or every replica in a power cut), restarted with
    /// `Node::recover` as the same incarnation.
    pub durable_restarts: u64,
    /// Power cuts: every replica crashed at once, keeping its disk.
    pub power_cuts: u64,
    /// Power cuts lined up on a write acknowledgement (the cut happens right after it).
    pub power_cuts_on_ack: u64,
    /// Crashed replicas without a durable snapshot (a joiner before its first snapshot file),
    /// restarted with amnesia instead.
    pub no_snapshot_amnesia: u64,
    /// Group commits (sync events that made records durable).
    pub syncs: u64,
    /// Records not yet synced at a crash and lost with it.
    pub records_lost: u64,
    /// Records not yet synced at a crash that survived it (a prefix of the torn tail).
    pub records_torn_kept: u64,
    /// Accepted values a recovered replica got back from its disk.
    pub votes_recovered: u64,
    /// Snapshot files written (encoded here or installed from a peer).
    pub snapshot_files: u64,
    /// Promotions of restarted incarnations back to acceptor, proposed.
    pub rejoined: u64,
    /// Membership changes applied.
    pub config_changes: u64,
    /// Spares asked to leave.
    pub leaves: u64,
    /// Stale-leader sequences lined up on a membership change.
    pub stale_leaders: u64,
    /// Lost-stop-sign sequences lined up on a membership change.
    pub lost_stop_signs: u64,
    /// The run had a small session table ([`SimConfig::sessions`]).
    pub sessions: bool,
    /// `SessionsFull` refusals (any client).
    pub sessions_full: u64,
    /// Keyed writes of the flood client admitted (new sessions).
    pub flood_admitted: u64,
    /// The session table was full when the probe started (on the replica with the most
    /// sessions).
    pub probe_found_full: bool,
    /// `SessionsFull` refusals the probe waited out before it was admitted.
    pub probe_refusals: u64,
    /// How long after its start the probe was admitted (ms).
    pub probe_wait_ms: u64,
    /// Stretches under one leader over which the log clock's pace was checked.
    pub clock_stretches: u64,
    /// Simulated time those stretches covered (ms), and what the log clock advanced over them.
    pub clock_stretch_ms: u64,
    pub clock_stretch_advance_ms: u64,
    /// The log clock at the end of the run (the highest of the replicas') and the simulated time
    /// then: the clock legitimately runs slower (time between leaders is not counted), never
    /// ahead.
    pub log_clock_ms: u64,
    /// The most a log-clock credit started before the latest reading of the indexes before it
    /// (see `World::check_clock_credits`; 0 unless a deposed leader's slot was adopted late).
    pub max_clock_lead_ms: u64,
    pub elapsed_ms: u64,
    /// The lock clients' statistics.
    pub locks: LockStats,
    /// Operations the checker examined.
    pub ops_checked: usize,
    /// The checker's budget ran out (the run then counts as passed, unproven).
    pub check_unknown: bool,
}

/// A violated verdict.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub at: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} at {} ms: {}", self.seed, self.at, self.what)
    }
}

enum Ev {
    /// A peer message reaches `env.to`.
    Deliver(Envelope),
    /// A client request (or cancellation) reaches a replica.
    Request { node: NodeId, input: Input },
    /// A reply reaches a client.
    Reply { client: u64, token: u64, reply: Reply },
    /// A client issues its next request.
    ClientTurn(u64),
    /// A client's attempt times out.
    ClientTimeout { client: u64, token: u64 },
    /// An election hint reaches a replica.
    Hint { node: NodeId, leader: Option<NodeId> },
    /// A snapshot finished encoding (and, in durable mode, its file is written).
    Encoded { node: NodeId, start: u64, meta: SnapshotMeta },
    /// The file of a snapshot installed from a peer is written (durable mode).
    InstallWritten { node: NodeId, start: u64, meta: SnapshotMeta, store: Box<Store> },
    /// A group commit: every record written but not yet synced becomes durable, and the outputs
    /// held behind them run.
    Sync { node: NodeId, start: u64 },
    /// Every replica crashes at once, keeping its disk.
    PowerCut,
    /// A replica restarted with amnesia crashes again (keeping its disk, if it has a snapshot
    /// file by then).
    CrashAgain(NodeId),
    /// A snapshot transfer arrives.
    Install { node: NodeId, meta: SnapshotMeta, store: Box<Store> },
    /// The sender's shell hears how its transfer ended.
    Sent { node: NodeId, start: u64, to: NodeId, delivered: bool },
    /// A held link's release is due.
    Release { from: NodeId, to: NodeId },
    /// A paused replica resumes.
    Resume(NodeId),
    /// A crashed replica starts again: from its disk as the same incarnation if it crashed
    /// keeping it (and has a snapshot file), else empty, with a new incarnation.
    Restart(NodeId),
    /// Links are cut.
    Cut(Vec<(NodeId, NodeId)>),
    /// Cut links heal.
    Heal(Vec<(NodeId, NodeId)>),
    /// A node reaches etcd again.
    EtcdHeal(NodeId),
    /// etcd's lease and election tick.
    EtcdTick,
    /// The leader's lease is lost and the election names this node next.
    HandTo(NodeId),
    /// Time for another fault.
    Fault,
    /// A lock client's channel wakes (stale unless `gen` is its current generation).
    LockWake { locker: usize, chan: Chan, gen: u64 },
    /// A lock client's attempt times out.
    LockTimeout { locker: usize, chan: Chan, token: u64 },
    /// A reply reaches a lock client.
    LockReply { locker: usize, chan: Chan, token: u64, result: Result<crate::WriteDone, Refused> },
}

enum Reply {
    Write(Result<crate::WriteDone, Refused>),
    Read(Result<crate::ReadDone, Refused>),
}

struct SimNode {
    node: Node,
    inc: Incarnation,
    /// The process start number (drawn in etcd by the driver; one more per restart).
    start: u64,
    up: bool,
    /// Crashed (killed): its process is gone; it restarts from its disk (`recovering`) or with a
    /// new incarnation.
    dead: bool,
    /// Crashed keeping its disk: it restarts with `Node::recover` (if it has a snapshot file).
    recovering: bool,
    /// What reached it while paused, in order.
    inbox: Vec<Input>,
    /// Encoded snapshots by last slot (the "bytes" the shell keeps).
    encoded: BTreeMap<paxos::Slot, (SnapshotMeta, Store)>,
    /// Its disk (durable mode).
    disk: Disk,
    /// Outputs queued behind a `Persist` not yet synced (they run at the sync, in order).
    held: Vec<Output>,
    /// A `Persist` is written and not synced: later outputs are held.
    barrier: bool,
    /// A sync event is scheduled.
    sync_due: bool,
}

impl SimNode {
    fn new(node: Node, inc: Incarnation, start: u64, disk: Disk) -> Self {
        SimNode {
            node,
            inc,
            start,
            up: true,
            dead: false,
            recovering: false,
            inbox: Vec::new(),
            encoded: BTreeMap::new(),
            disk,
            held: Vec::new(),
            barrier: false,
            sync_due: false,
        }
    }
}

/// A replica's simulated disk, as the durable driver keeps it: the write-ahead log (records
/// written, and those of them an fsync made durable) and the latest snapshot file.
#[derive(Default)]
struct Disk {
    /// Durable records, in log order.
    synced: Vec<Persist>,
    /// Records written and not yet synced: a crash keeps a prefix of them at most (a torn tail
    /// is cut at a record boundary, as the real log's checksums cut a torn batch).
    unsynced: Vec<Persist>,
    /// The latest snapshot file (none for a replica that joined and has not written one yet:
    /// it cannot recover, and restarts with amnesia).
    snapshot: Option<(SnapshotMeta, Store)>,
}

impl Disk {
    /// A founding member's disk: the initial snapshot (slot 0, the bootstrap configuration, an
    /// empty store), nothing logged.
    fn founding(config: Configuration, cfg: &SimConfig) -> Disk {
        let meta = SnapshotMeta { last_slot: Slot(0), config };
        // What the driver writes: an empty store at the founding cluster version.
        let mut store = Store::new(store_config(cfg));
        store.set_cluster_version(initial_cluster_version(cfg));
        Disk { snapshot: Some((meta, store)), ..Disk::default() }
    }

    /// A new snapshot file at `meta.last_slot` (ignored if not newer than the current one), then
    /// the log records it covers are dropped: votes at or below its slot, and every promise but
    /// the highest. `true` if it was newer.
    fn write_snapshot(&mut self, meta: SnapshotMeta, store: Store) -> bool {
        if self.snapshot.as_ref().is_some_and(|(m, _)| m.last_slot >= meta.last_slot) {
            return false;
        }
        let last = meta.last_slot;
        self.snapshot = Some((meta, store));
        let promised = self.synced.iter().filter_map(|p| if let Persist::Promised(b) = p { Some(*b) } else { None }).max();
        self.synced.retain(|p| matches!(p, Persist::Accepted(e) if e.slot > last));
        if let Some(b) = promised {
            self.synced.insert(0, Persist::Promised(b));
        }
        true
    }

    /// A crash: a random prefix of the unsynced records survives, the rest is lost. Returns
    /// (kept, lost).
    fn crash(&mut self, rng: &mut ChaCha8Rng) -> (u64, u64) {
        let n = self.unsynced.len();
        let keep = if n == 0 { 0 } else { rng.gen_range(0..=n) };
        let rest: Vec<Persist> = self.unsynced.drain(..).collect();
        self.synced.extend(rest.into_iter().take(keep));
        (keep as u64, (n - keep) as u64)
    }

    /// What a restart reads back: the snapshot and the replayed log.
    fn recovered(&self) -> Option<(Store, Recovered)> {
        let (meta, store) = self.snapshot.as_ref()?;
        let mut r = Recovered::from_snapshot(meta.clone());
        for p in &self.synced {
            r.replay(p.clone());
        }
        Some((store.clone(), r))
    }
}

/// The settings every replica of a run shares.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch_delay: u64,
    snapshot_every: u64,
    max_retained: u64,
    max_read_lag: u64,
    max_read_staleness: u64,
}

/// The store settings every replica of a run shares. Lease TTLs down to 500 ms are allowed (the
/// lock clients ask for 600 ms at the shortest).
fn store_config(cfg: &SimConfig) -> StoreConfig {
    let mut c = StoreConfig::default();
    if let Some(t) = cfg.sessions {
        c.session_ttl_ms = t.ttl_ms;
        c.session_min_ttl_ms = t.min_ttl_ms;
        c.max_sessions = t.max_sessions;
    }
    c.leases.min_ttl_ms = 500;
    c
}

/// The cluster version the founders start at: the newest (leases need version 3), but for a
/// [`SimConfig::version_raise`] run, which starts at 1 and raises it amid the faults (the lock
/// clients' requests are refused until then).
fn initial_cluster_version(cfg: &SimConfig) -> u32 {
    if cfg.version_raise {
        1
    } else {
        kvstore::MAX_CLUSTER_VERSION
    }
}

fn node_settings(cfg: &SimConfig, shape: &Shape, me: Member, start: u64, bootstrap: Option<Configuration>) -> NodeSettings {
    let mut s = NodeSettings::new(me, start, bootstrap);
    s.heartbeat_ms = 20;
    s.leader_lease_ms = 300;
    s.batch_delay_ms = shape.batch_delay;
    s.snapshot_every = shape.snapshot_every;
    s.max_retained_slots = shape.max_retained;
    s.store = store_config(cfg);
    s.initial_cluster_version = initial_cluster_version(cfg);
    s.max_read_lag_slots = shape.max_read_lag;
    s.max_read_staleness_ms = shape.max_read_staleness;
    s.suspect_leader_after_ms = SUSPECT_AFTER_MS;
    s.snapshot_chunk_bytes = 64 * 1024;
    s.seed = cfg.seed.wrapping_mul(31).wrapping_add(me.node.0 * 7 + me.incarnation.0);
    s.bugs = cfg.bugs;
    s.core_bugs = cfg.core_bugs;
    s.durable = cfg.durable;
    if let Some(w) = cfg.pipeline_window {
        s.pipeline_window = w;
    }
    s
}

/// Directed links between replicas.
type Links = Vec<(NodeId, NodeId)>;

struct World {
    cfg: SimConfig,
    shape: Shape,
    /// Membership requests posted in etcd (`P/pending/`), oldest first.
    pending: Vec<PendingChange>,
    /// The membership change proposed and not yet answered: (token, leader, since).
    reconfig: Option<(u64, NodeId, u64)>,
    /// The spare replicas (outside the founding configuration).
    spares: Vec<NodeId>,
    /// Drop the next `Accept` of a membership change on this link (leader, follower).
    drop_reconfig_accept: Option<(NodeId, NodeId)>,
    rng: ChaCha8Rng,
    now: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    net: Net,
    etcd: Etcd,
    /// What each node was last told by the election, and when that hint arrives (hints arrive in order).
    hinted: BTreeMap<NodeId, (Option<NodeId>, u64)>,
    elected: Option<NodeId>,
    /// The election's leader with the revision of its campaign (a re-election is news).
    elected_rev: Option<(NodeId, u64)>,
    clients: Vec<Client>,
    /// Live tokens: token -> (client, node).
    tokens: BTreeMap<u64, (u64, NodeId)>,
    next_token: u64,
    next_idem: u64,
    history: Vec<Op>,
    stats: SimStats,
    healed: bool,
    /// Print every client step (`NODE_SIM_TRACE=1`).
    trace: bool,
    /// Print the consensus messages too (`NODE_SIM_TRACE_MSGS=1`), and the disk a replica
    /// recovers from.
    trace_msgs: bool,
    /// The longest group-commit latency of this run (ms): a sync comes 0 to this after the
    /// first record it covers.
    max_sync_ms: u64,
    /// A power cut is armed: it happens right after the next write acknowledgement.
    cut_on_ack: bool,
    /// After a power cut lined up on an acknowledgement: the client that got it and the key,
    /// which it reads next (linearizably: it must see its write or a later one).
    probe: Option<(u64, String)>,
    /// The round-robin balancer of the flood and probe clients: the next replica (an index into
    /// `nodes`).
    balancer: usize,
    /// The session phase of a [`SimConfig::sessions`] run.
    session_phase: Option<SessionPhase>,
    /// The lock clients (`locker.rs`).
    lockers: Vec<Locker>,
    /// Live tokens of the lock clients: token -> (lock client, channel).
    lock_tokens: BTreeMap<u64, (usize, Chan)>,
    /// The lock verdicts' records.
    lock_book: LockBook,
    /// What each replica's store held of leases when last looked at.
    lease_watch: BTreeMap<NodeId, LeaseWatch>,
    /// The lock liveness probe after the heal.
    lock_phase: Option<LockPhase>,
    /// The reading of every request's slot, by log index, whichever replica applied it first
    /// (see [`World::check_clock_credits`]).
    clock_readings: BTreeMap<u64, u64>,
    /// The etcd removal marks (`P/removed/<id>`): the incarnation removed and the epoch without it.
    removed_marks: BTreeMap<NodeId, EpochMark>,
    /// A bounce under way ([`SimConfig::bounces`]): the old leader, the links cut from it, and
    /// its successor once etcd named one.
    bounce: Option<(NodeId, Links, Option<NodeId>)>,
    /// The suspicion verdict's records: for (acceptor, leader), when the acceptor last took word
    /// from that leader (a heartbeat or an accept its core took as the leader's, as the node's
    /// contact rule counts it), and when a silence of at least [`SUSPECT_AFTER_MS`] last ended.
    words: BTreeMap<(NodeId, NodeId), Word>,
    /// When each node last came back (resumed, restarted, recovered).
    back_at: BTreeMap<NodeId, u64>,
}

/// See `World::words`.
#[derive(Clone, Copy)]
struct Word {
    last: u64,
    silence_ended: u64,
}

/// The etcd lease TTL of the simulation (ms).
const ETCD_TTL_MS: u64 = 600;
/// Every replica's `suspect_leader_after_ms`.
const SUSPECT_AFTER_MS: u64 = 200;
/// The suspicion verdict's slack: how long after an acceptor last could not hear the leader its
/// suspicion record may still count in a correct system. A withdrawal is delayed behind a group
/// commit (at most 30 ms); a record whose delete failed counts until a retry succeeds (a flap
/// ends within [`MAX_FLAP_MS`]; retries come every [`TICK_MS`]) or, while its node is cut from
/// etcd, until its lease expires (a TTL after the last renewal); a restarted process registers
/// its new lease at the next tick, and its predecessor's record stops counting then.
const RECORD_SLACK_MS: u64 = 30 + MAX_FLAP_MS + 2 * TICK_MS + ETCD_TTL_MS;

/// The leases a replica's store held when last looked at, and what tells that they may have
/// changed (cheaply: a grant or an end changes the count; an expiry bumps `leases_expired`, an
/// install `snapshots_installed`; a revoke with a grant in one step may go unseen, and a revoke
/// is exempt from the verdict anyway).
struct LeaseWatch {
    start: u64,
    expired: u64,
    installed: u64,
    ids: Vec<u64>,
}

/// The lock liveness probe after the heal: once the cluster settled (and a small session table's
/// phase is over, and the cluster runs version 3), the next holder of the lock abandons it and
/// another client must take it within its TTL plus [`HANDOVER_SLACK_MS`].
struct LockPhase {
    /// When it arms (the earliest).
    arm_at: u64,
    /// When it armed.
    armed: Option<u64>,
    /// The victim: lock client, when it abandoned, its TTL.
    victim: Option<(usize, u64, u64)>,
    done: bool,
}

/// After the heal, the lock probe arms this much later.
pub const LOCK_SETTLE_MS: u64 = 2_000;
/// Once armed, some client must hold the lock within this (a holder releases within 2.5 s,
/// an abandoned lease expires within a TTL or two).
pub const LOCK_IDLE_MS: u64 = 10_000;
/// How long the probe waits for the cluster version 3 (a version-raise run) before it gives up
/// (no verdict).
const LOCK_VERSION_WAIT_MS: u64 = 15_000;
const LOCK_KEY_BYTES: &[u8] = super::locker::LOCK_KEY.as_bytes();

/// A leader: the replica, its process (start number) and its ballot.
type LeaderTerm = (NodeId, u64, paxos::Ballot);

/// The leader's log clock, and when the last request it applied was proposed (the stamp's
/// monotonic reading: every simulated process's monotonic clock reads the virtual clock).
#[derive(Clone, Copy)]
struct ClockSample {
    proposed: u64,
    clock: u64,
}

/// The state of the session verdicts after the heal ([`SessionShape`]).
struct SessionPhase {
    shape: SessionShape,
    /// When the probe starts.
    probe_at: u64,
    /// The probe's client id, once started.
    probe: Option<u64>,
    /// When the probe was admitted.
    admitted: Option<u64>,
    /// The current stretch under one leader: (leader, its process start, its ballot), when it
    /// was first seen leading, and the first sample of the stretch that counts.
    stretch: Option<(LeaderTerm, u64, Option<ClockSample>)>,
    /// The last sample of the current stretch that counts.
    last: Option<ClockSample>,
    done: bool,
}

/// How long a client waits for one attempt.
const ATTEMPT_TIMEOUT_MS: u64 = 1_500;
/// Attempts per request before the client gives up.
const MAX_ATTEMPTS: u32 = 12;
/// After the network heals, every client must finish within this.
const SETTLE_MS: u64 = 30_000;

/// Run one seed.
pub fn run(cfg: SimConfig) -> Result<SimStats, Failure> {
    let mut w = World::new(cfg);
    let r = w.run_all();
    w.stats.revocations = w.etcd.revocations;
    w.stats.suspicion_deletes_failed = w.etcd.deletes_failed;
    w.stats.suspicion_records_ignored = w.etcd.records_ignored;
    w.stats.suspicion_records_expired = w.etcd.records_expired;
    r.map_err(|what| {
        // The signature of the wedge `node/tests/durable.rs` shows, should it come back.
        let what = match w.compacted_wedge() {
            Some(sig) if what.starts_with("liveness") || what.starts_with("replicas did not converge") => format!("{what} ({sig})"),
            _ => what,
        };
        Failure { seed: w.cfg.seed, at: w.now, what }
    })?;
    Ok(w.stats)
}

impl World {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let members: Vec<Member> = (1..=cfg.replicas as u64).map(|n| Member { node: NodeId(n), incarnation: Incarnation(1) }).collect();
        let bootstrap = Configuration::bootstrap(members.iter().copied());
        let snapshot_every = rng.gen_range(5..=60);
        let max_retained = rng.gen_range(20..=200);
        let batch_delay = rng.gen_range(0..=2);
        let max_read_lag = *[5u64, 50, 1_000].choose(&mut rng).unwrap();
        let max_read_staleness = *[0u64, 0, 150, 400].choose(&mut rng).unwrap();
        let mut nodes = BTreeMap::new();
        for m in &members {
            let shape = Shape { batch_delay, snapshot_every, max_retained, max_read_lag, max_read_staleness };
            let node = Node::new(node_settings(&cfg, &shape, *m, 1, Some(bootstrap.clone())), Time(0));
            nodes.insert(m.node, SimNode::new(node, m.incarnation, 1, Disk::founding(bootstrap.clone(), &cfg)));
        }
        let shape = Shape { batch_delay, snapshot_every, max_retained, max_read_lag, max_read_staleness };
        let spares: Vec<NodeId> = (cfg.replicas as u64 + 1..=(cfg.replicas + cfg.spares) as u64).map(NodeId).collect();
        let mut pending = Vec::new();
        for n in cfg.replicas + 1..=cfg.replicas + cfg.spares {
            let m = Member { node: NodeId(n as u64), incarnation: Incarnation(1) };
            let node = Node::new(node_settings(&cfg, &shape, m, 1, None), Time(0));
            nodes.insert(m.node, SimNode::new(node, m.incarnation, 1, Disk::default()));
            pending.push(PendingChange::Join { id: m.node.0, incarnation: 1 });
        }
        let net = if cfg.faults {
            Net { loss: rng.gen_range(0.0..0.08), dup: rng.gen_range(0.0..0.04), max_delay: rng.gen_range(2..30), ..Net::default() }
        } else {
            Net { max_delay: 2, ..Net::default() }
        };
        let max_sync_ms = *[2u64, 10, 30].choose(&mut rng).unwrap();
        let taggings = [Tagging::Session, Tagging::IdempotencyKey, Tagging::None];
        let mut clients: Vec<Client> = (0..cfg.clients as u64).map(|c| Client::new(c, taggings[c as usize % 3])).collect();
        if cfg.sessions.is_some() {
            clients.push(Client::keyed(cfg.clients as u64, Role::Flood));
        }
        let durable = cfg.durable;
        let delete_failures = cfg.delete_failures;
        let cfg_sessions = cfg.sessions.is_some();
        let lockers: Vec<Locker> = (0..cfg.lockers as u64).map(|i| Locker::new(i, cfg.lock_bugs)).collect();
        let mut lock_book = LockBook::default();
        lock_book.stats.clients = cfg.lockers as u64;
        let etcd = Etcd::new(ETCD_TTL_MS, cfg.seed, cfg.delete_failures, cfg.stale_suspicions);
        World {
            cfg,
            shape,
            pending,
            reconfig: None,
            spares,
            drop_reconfig_accept: None,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            nodes,
            net,
            etcd,
            hinted: BTreeMap::new(),
            elected: None,
            elected_rev: None,
            clients,
            tokens: BTreeMap::new(),
            next_token: 0,
            next_idem: 0,
            history: Vec::new(),
            stats: SimStats { durable, sessions: cfg_sessions, delete_failures, ..SimStats::default() },
            healed: false,
            trace: std::env::var("NODE_SIM_TRACE").is_ok_and(|v| v == "1"),
            trace_msgs: std::env::var("NODE_SIM_TRACE_MSGS").is_ok_and(|v| v == "1"),
            max_sync_ms,
            cut_on_ack: false,
            probe: None,
            balancer: 0,
            session_phase: None,
            lockers,
            lock_tokens: BTreeMap::new(),
            lock_book,
            lease_watch: BTreeMap::new(),
            lock_phase: None,
            clock_readings: BTreeMap::new(),
            bounce: None,
            removed_marks: BTreeMap::new(),
            words: BTreeMap::new(),
            back_at: BTreeMap::new(),
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn run_all(&mut self) -> Result<(), String> {
        self.schedule(0, Ev::EtcdTick);
        for c in 0..self.clients.len() as u64 {
            let at = self.rng.gen_range(100..400);
            self.schedule(at, Ev::ClientTurn(c));
        }
        for l in 0..self.lockers.len() {
            let at = self.rng.gen_range(100..400);
            let cmds = self.lockers[l].start(at);
            self.lock_cmds(l, cmds)?;
        }
        if self.cfg.faults {
            let at = self.rng.gen_range(500..1_500);
            self.schedule(at, Ev::Fault);
        }
        let safety_end = self.cfg.safety_ms;
        self.run_until(safety_end)?;
        self.heal_all();
        // Every client finishes what it is doing, then reads every key once.
        for c in self.clients.iter_mut().filter(|c| c.role == Role::Checked) {
            c.finishing = true;
            c.final_keys = REGISTERS.iter().chain(COUNTERS).map(|k| k.to_string()).collect();
        }
        self.session_phase = self.cfg.sessions.map(|shape| SessionPhase {
            shape,
            probe_at: self.now + PROBE_SETTLE_MS,
            probe: None,
            admitted: None,
            stretch: None,
            last: None,
            done: false,
        });
        self.lock_book.healed_at = Some(self.now);
        self.lock_phase = (!self.lockers.is_empty()).then(|| LockPhase { arm_at: self.now + LOCK_SETTLE_MS, armed: None, victim: None, done: false });
        let deadline = self.now + SETTLE_MS;
        loop {
            self.session_step()?;
            self.lock_step()?;
            let checked_done = self.clients.iter().all(|c| c.done || c.role != Role::Checked);
            if checked_done && self.session_phase.as_ref().is_none_or(|p| p.done) && self.lock_phase.as_ref().is_none_or(|p| p.done) {
                break;
            }
            if self.now >= deadline && !checked_done {
                let stuck: Vec<String> = self
                    .clients
                    .iter()
                    .filter(|c| !c.done && c.role == Role::Checked)
                    .map(|c| format!("client {} ({:?})", c.id, c.in_flight.as_ref().map(|f| (&f.op.kind, f.attempts, f.node))))
                    .collect();
                return Err(format!("liveness: {SETTLE_MS} ms after the network healed, clients still wait: {}", stuck.join(", ")));
            }
            let step_end = self.now + 100;
            self.run_until(step_end)?;
        }
        // The lock clients stop (their leases expire meanwhile).
        let now = self.now;
        for l in &mut self.lockers {
            l.stop(now, &mut self.lock_book);
        }
        self.converge()?;
        self.stats.elapsed_ms = self.now;
        self.stats.log_clock_ms = self.nodes.values().filter(|n| !n.dead).map(|n| n.node.store().log_clock_ms()).max().unwrap_or(0);
        self.verdict()
    }

    /// One step (every 100 ms after the heal) of the session verdicts ([`SessionShape`]): start
    /// the probe when due, check its deadline, sample the leader's log clock, end the phase.
    fn session_step(&mut self) -> Result<(), String> {
        let Some(p) = self.session_phase.as_ref() else { return Ok(()) };
        if p.done {
            return Ok(());
        }
        let (shape, probe_at) = (p.shape, p.probe_at);
        if self.now >= probe_at && p.probe.is_none() {
            let id = self.clients.len() as u64;
            self.clients.push(Client::keyed(id, Role::Probe));
            let most = self.nodes.values().filter(|n| n.up).map(|n| n.node.store().sessions().len()).max().unwrap_or(0);
            self.stats.probe_found_full = most >= shape.max_sessions;
            self.session_phase.as_mut().unwrap().probe = Some(id);
            self.schedule(self.now, Ev::ClientTurn(id));
        }
        let p = self.session_phase.as_ref().unwrap();
        let bound = PROBE_TTLS * shape.ttl_ms;
        if p.admitted.is_none() && self.now > probe_at + bound {
            let clocks: Vec<String> =
                self.nodes.iter().filter(|(_, n)| n.up).map(|(id, n)| format!("{id}: {}", n.node.store().log_clock_ms())).collect();
            return Err(format!(
                "liveness: sessions: a new session was not admitted within {PROBE_TTLS} x TTL ({bound} ms) of the probe's start ({} refusals; \
                 {} of {} sessions live; log clocks {})",
                self.stats.probe_refusals,
                self.nodes.values().find(|n| n.up).map_or(0, |n| n.node.store().sessions().len()),
                shape.max_sessions,
                clocks.join(", ")
            ));
        }
        if self.now >= probe_at {
            self.sample_clock()?;
        }
        let p = self.session_phase.as_mut().unwrap();
        if p.admitted.is_some() && self.now >= probe_at + SESSION_PHASE_MS {
            p.done = true;
            self.close_stretch()?;
            // The flood stops; what it has in flight may still apply.
            for c in self.clients.iter_mut().filter(|c| c.role != Role::Checked) {
                c.done = true;
            }
        }
        Ok(())
    }

    /// The leader now: the one replica that is up and whose core leads, with its process and
    /// ballot.
    fn leader_now(&self) -> Option<LeaderTerm> {
        let mut leaders = self.nodes.iter().filter(|(_, n)| n.up && n.node.replica().is_leader());
        let (id, n) = leaders.next()?;
        if leaders.next().is_some() {
            return None;
        }
        Some((*id, n.start, n.node.replica().status().ballot))
    }

    /// Sample the leader's log clock; a change of leader closes the stretch (checking it) and
    /// starts another.
    fn sample_clock(&mut self) -> Result<(), String> {
        let leader = self.leader_now();
        let current = self.session_phase.as_ref().unwrap().stretch.map(|(l, _, _)| l);
        if leader != current {
            self.close_stretch()?;
            self.session_phase.as_mut().unwrap().stretch = leader.map(|l| (l, self.now, None));
        }
        let Some((l, since, first)) = self.session_phase.as_ref().unwrap().stretch else { return Ok(()) };
        let store = self.nodes[&l.0].node.store();
        let Some(stamp) = store.sessions().last_stamp() else { return Ok(()) };
        if stamp.mono_ms < since {
            return Ok(());
        }
        let sample = ClockSample { proposed: stamp.mono_ms, clock: store.log_clock_ms() };
        let p = self.session_phase.as_mut().unwrap();
        if first.is_none() {
            p.stretch = Some((l, since, Some(sample)));
        }
        p.last = Some(sample);
        Ok(())
    }

    /// Check the stretch under way (if long enough): the leader's log clock advanced at least
    /// half the simulated time.
    fn close_stretch(&mut self) -> Result<(), String> {
        let p = self.session_phase.as_mut().unwrap();
        let (stretch, last) = (p.stretch.take(), p.last.take());
        let (Some(((leader, _, ballot), _, Some(first))), Some(last)) = (stretch, last) else { return Ok(()) };
        let (t0, c0, t1, c1) = (first.proposed, first.clock, last.proposed, last.clock);
        let elapsed = t1.saturating_sub(t0);
        if elapsed < CLOCK_STRETCH_MS {
            return Ok(());
        }
        let advance = c1.saturating_sub(c0);
        self.stats.clock_stretches += 1;
        self.stats.clock_stretch_ms += elapsed;
        self.stats.clock_stretch_advance_ms += advance;
        if advance * 2 < elapsed {
            return Err(format!(
                "log clock: under one leader ({leader}, round {}), the log clock advanced {advance} ms between requests \
                 proposed {elapsed} ms apart (at {t0} and {t1} ms), less than half",
                ballot.round
            ));
        }
        Ok(())
    }

    /// Process events and timeouts up to `until`.
    fn run_until(&mut self, until: u64) -> Result<(), String> {
        let mut spins = 0u32;
        loop {
            let next_ev = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = self.nodes.values().filter(|n| n.up).filter_map(|n| n.node.poll_timeout()).map(|t| t.0).min();
            let next = match (next_ev, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => {
                        self.now = until;
                        return Ok(());
                    }
                },
            };
            if next > until {
                self.now = until;
                return Ok(());
            }
            if next <= self.now {
                spins += 1;
                if spins > 100_000 {
                    return Err("the simulation spins: a timer or an event keeps firing at the same instant".into());
                }
            } else {
                spins = 0;
            }
            self.now = self.now.max(next);
            if next_timer == Some(next) && next_ev.is_none_or(|e| e > next) {
                let due: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.up && n.node.poll_timeout().is_some_and(|t| t.0 <= self.now))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    let now = Time(self.now);
                    self.nodes.get_mut(&id).unwrap().node.handle_timeout(now);
                    self.outputs(id)?;
                }
                continue;
            }
            let Reverse((_, seq)) = self.queue.pop().unwrap();
            let ev = self.events.remove(&seq).unwrap();
            self.dispatch(ev)?;
        }
    }

    fn dispatch(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Deliver(env) => {
                let to = env.to;
                self.feed(to, Input::Peer(env))
            }
            Ev::Request { node, input } => self.feed(node, input),
            Ev::Reply { client, token, reply } => self.client_reply(client, token, reply),
            Ev::ClientTurn(c) => self.client_turn(c),
            Ev::ClientTimeout { client, token } => self.client_timeout(client, token),
            Ev::Hint { node, leader } => {
                if self.trace {
                    eprintln!("{:>6} {node} hears the election name {leader:?}", self.now);
                }
                self.feed(node, Input::Hint(leader))
            }
            Ev::Encoded { node, start, meta } => {
                let n = self.nodes.get_mut(&node).unwrap();
                if n.start != start || n.dead {
                    return Ok(()); // the process that asked crashed meanwhile
                }
                // The durable driver writes the snapshot file before it answers, and only then
                // drops the log below it.
                // (A file at this slot or above is already there when it writes nothing.)
                let mut file = false;
                if self.cfg.durable {
                    if let Some((m, store)) = n.encoded.get(&meta.last_slot) {
                        file = true;
                        if n.disk.write_snapshot(m.clone(), store.clone()) {
                            self.stats.snapshot_files += 1;
                        }
                    }
                }
                self.feed(node, Input::SnapshotEncoded { meta, file })
            }
            Ev::InstallWritten { node, start, meta, store } => {
                let n = self.nodes.get_mut(&node).unwrap();
                if n.start == start && !n.dead && n.disk.write_snapshot(meta, *store) {
                    self.stats.snapshot_files += 1;
                }
                Ok(())
            }
            Ev::Sync { node, start } => self.sync(node, start),
            Ev::PowerCut => self.power_cut(),
            Ev::CrashAgain(id) => {
                if self.healed || self.nodes[&id].dead {
                    return Ok(());
                }
                if self.nodes[&id].disk.snapshot.is_some() {
                    let at = self.now + self.rng.gen_range(50..2_000);
                    self.crash_durable(id, at);
                } else if self.may_lose(&BTreeSet::from([id])) {
                    self.stats.no_snapshot_amnesia += 1;
                    let at = self.now + self.rng.gen_range(200..2_000);
                    self.crash_amnesia(id, at);
                }
                Ok(())
            }
            Ev::Install { node, meta, store } => {
                self.stats.snapshots_installed += 1;
                if self.trace {
                    eprintln!("{:>6} {node} gets a snapshot at {} (epoch {})", self.now, meta.last_slot, meta.config.epoch);
                }
                self.feed(node, Input::InstallSnapshot { meta, store })
            }
            Ev::Sent { node, start, to, delivered } => {
                if self.nodes[&node].start != start || self.nodes[&node].dead {
                    return Ok(());
                }
                self.feed(node, Input::SnapshotSent { to, delivered })
            }
            Ev::Release { from, to } => match self.net.release(from, to, self.now) {
                Ok(msgs) => {
                    for env in msgs {
                        // Delivered at once and in order: the stalled stream drains.
                        self.deliver_now(env)?;
                    }
                    Ok(())
                }
                Err(Some(t)) => {
                    self.schedule(t, Ev::Release { from, to });
                    Ok(())
                }
                Err(None) => Ok(()),
            },
            Ev::Resume(id) => self.resume(id),
            Ev::Restart(id) => self.restart(id),
            Ev::Cut(links) => {
                if !self.healed {
                    self.net.cut.extend(links);
                }
                Ok(())
            }
            Ev::Heal(links) => {
                for l in links {
                    self.net.cut.remove(&l);
                }
                Ok(())
            }
            Ev::EtcdHeal(id) => {
                self.etcd.cut.remove(&id);
                // It hears the election's current leader when it reconnects (the observer's hint).
                // No leader named (everyone's lease expired in an outage) is no hint: the driver
                // tells a node to step down only when etcd says its own lease is gone, never
                // because etcd was unreachable (`driver/src/etcd.rs`).
                if let Some(leader) = self.elected {
                    self.hint(id, Some(leader), 0);
                }
                Ok(())
            }
            Ev::HandTo(n) => {
                if !self.healed {
                    self.etcd.hand_to(n);
                }
                Ok(())
            }
            Ev::EtcdTick => {
                // Every live process keeps its registration; acceptors that are neither removed
                // nor leaving campaign (`membership::eligible`).
                let up: BTreeMap<NodeId, Proc> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.up)
                    .map(|(id, n)| {
                        let me = Member { node: *id, incarnation: n.inc };
                        let removed = matches!(n.node.serving(), Err(NotServing::Removed(_)));
                        (*id, Proc { inc: n.inc.0, start: n.start, eligible: eligible(me, &n.node.status().config, &self.pending, removed) })
                    })
                    .collect();
                let head = self.etcd.tick(self.now, &up);
                self.check_revocations()?;
                self.membership_step()?;
                let leader = head.map(|(l, _)| l);
                if head != self.elected_rev {
                    self.elected_rev = head;
                    if self.trace {
                        eprintln!("{:>6} etcd elects {leader:?}", self.now);
                    }
                    self.elected = leader;
                    self.stats.leader_changes += 1;
                    self.bounce_successor(leader);
                    let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                    for id in ids {
                        if !self.etcd.cut.contains(&id) {
                            let d = self.rng.gen_range(0..150);
                            self.hint(id, leader, d);
                        }
                    }
                }
                let at = self.now + TICK_MS;
                self.schedule(at, Ev::EtcdTick);
                Ok(())
            }
            Ev::LockWake { locker, chan, gen } => {
                if !self.lockers[locker].current(chan, gen) {
                    return Ok(());
                }
                let cmds = self.lockers[locker].on_wake(chan, self.now, &mut self.rng, &mut self.lock_book);
                self.lock_cmds(locker, cmds)
            }
            Ev::LockTimeout { locker, chan, token } => self.lock_timeout(locker, chan, token),
            Ev::LockReply { locker, chan, token, result } => self.lock_reply(locker, chan, token, result),
            Ev::Fault => {
                if !self.healed {
                    self.fault()?;
                    let at = self.now + self.rng.gen_range(200..1_200);
                    self.schedule(at, Ev::Fault);
                }
                Ok(())
            }
        }
    }

    /// Tell `id` the election's view after `delay` ms, never before an earlier hint.
    fn hint(&mut self, id: NodeId, leader: Option<NodeId>, delay: u64) {
        let prev = self.hinted.get(&id).map_or(0, |(_, t)| *t);
        let at = (self.now + delay).max(prev);
        self.hinted.insert(id, (leader, at));
        self.schedule(at, Ev::Hint { node: id, leader });
    }

    /// Hand `input` to a replica (queued while it is paused), then run what it outputs.
    fn feed(&mut self, id: NodeId, input: Input) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).unwrap();
        if n.dead {
            return Ok(());
        }
        if !n.up {
            n.inbox.push(input);
            return Ok(());
        }
        // A snapshot installed from a peer is written as a file after the install (durable
        // mode), a little later; a crash before that keeps the older one.
        let install = match &input {
            Input::InstallSnapshot { meta, store } if self.cfg.durable => {
                Some((meta.clone(), store.clone(), n.node.counters().snapshots_installed))
            }
            _ => None,
        };
        let from = match &input {
            Input::Peer(env) => Some(env.from.node),
            _ => None,
        };
        n.node.handle(Time(self.now), input);
        if let Some(from) = from {
            let r = n.node.replica();
            if r.leader_word() == Some((from, Time(self.now))) && r.known_leader() == Some(from) {
                let now = self.now;
                let w = self.words.entry((id, from)).or_insert(Word { last: 0, silence_ended: now });
                if now.saturating_sub(w.last) >= SUSPECT_AFTER_MS {
                    w.silence_ended = now;
                }
                w.last = now;
            }
        }
        if let Some((meta, store, before)) = install {
            if self.nodes[&id].node.counters().snapshots_installed > before {
                let start = self.nodes[&id].start;
                let at = self.now + self.rng.gen_range(1..20);
                self.schedule(at, Ev::InstallWritten { node: id, start, meta, store });
            }
        }
        self.outputs(id)
    }

    fn resume(&mut self, id: NodeId) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).unwrap();
        if n.up || n.dead {
            return Ok(());
        }
        n.up = true;
        self.back_at.insert(id, self.now);
        // Outputs whose records were synced while it was stopped run first, in order.
        if !n.barrier {
            let held = std::mem::take(&mut n.held);
            for out in held {
                self.run_output(id, out)?;
            }
        }
        let n = self.nodes.get_mut(&id).unwrap();
        let now = Time(self.now);
        n.node.handle_timeout(now);
        let inbox = std::mem::take(&mut n.inbox);
        self.outputs(id)?;
        for input in inbox {
            self.feed(id, input)?;
        }
        Ok(())
    }

    /// Run everything `id` wants done. In durable mode an `Output::Persist` is written to the
    /// log (unsynced) and everything after it is held until the sync event (the group commit)
    /// makes it durable; with `ack_before_durable` nothing is held.
    /// The log clock counts nothing from before a slot after that slot: whatever it adds at a
    /// log index, it adds for time after every reading of the indexes before. A slot's credit
    /// is the time between the previous reading of its leader's term and its own (capped,
    /// `kvstore::session`), so it covers `[reading - credit, reading]`, and the start of that must
    /// not lie before any earlier index's reading (every process reads the simulated time, so a
    /// reading is a moment). That is what a lease rests on: a keepalive proposed at reading `p`
    /// and swept at log time `c + ttl` was kept alive `ttl` of real time after `p`. A re-elected
    /// leader whose old-term slot was adopted after its successor's slots broke it
    /// (`paxos::Bugs::tick_without_term`). A deposed leader's last proposals, taken by a
    /// minority and adopted later, can lead by up to about its `leader_lease_ms` (REPORT §7):
    /// [`CLOCK_LEAD_SLACK_MS`] allows that much; the largest lead is in the stats.
    fn check_clock_credits(&mut self, id: NodeId) -> Result<(), String> {
        let credits = std::mem::take(&mut self.nodes.get_mut(&id).unwrap().node.clock_credits);
        for (index, reading, credit) in credits {
            if self.clock_readings.insert(index, reading).is_some() || credit == 0 {
                continue;
            }
            let from = reading.saturating_sub(credit);
            let Some((k, latest)) = self.clock_readings.range(..index).max_by_key(|(_, r)| **r).map(|(k, r)| (*k, *r)) else { continue };
            let lead = latest.saturating_sub(from);
            self.stats.max_clock_lead_ms = self.stats.max_clock_lead_ms.max(lead);
            if lead > CLOCK_LEAD_SLACK_MS {
                return Err(format!(
                    "log clock: index {index} (applied by {id}) credited {credit} ms up to its reading {reading}, from {from}, but index {k} before it was proposed at {latest}: {lead} ms counted after a slot that came before them"
                ));
            }
        }
        Ok(())
    }

    fn outputs(&mut self, id: NodeId) -> Result<(), String> {
        // The log clock never runs ahead of the simulated time: every process measures intervals
        // on the virtual clock, and the log clock only adds intervals one process measured
        // between two of its slots that follow each other in the log (`kvstore::session`). Every
        // change of a replica's state (an input, a timeout, a restart) ends here.
        let clock = self.nodes[&id].node.store().log_clock_ms();
        if clock > self.now {
            return Err(format!("log clock: {id}'s log clock is at {clock} ms after {} ms of simulated time", self.now));
        }
        self.check_clock_credits(id)?;
        self.bounce_cut(id);
        self.watch_leases(id)?;
        while let Some(out) = self.nodes.get_mut(&id).unwrap().node.poll_output() {
            let n = self.nodes.get_mut(&id).unwrap();
            if let Output::Persist(p) = out {
                n.disk.unsynced.push(p);
                if !self.cfg.ack_before_durable {
                    n.barrier = true;
                }
                if !n.sync_due {
                    n.sync_due = true;
                    let start = n.start;
                    let at = self.now + self.rng.gen_range(0..=self.max_sync_ms);
                    self.schedule(at, Ev::Sync { node: id, start });
                }
                continue;
            }
            if n.barrier || !n.held.is_empty() {
                n.held.push(out);
                continue;
            }
            self.run_output(id, out)?;
        }
        Ok(())
    }

    /// The group commit of `id`: every record written so far becomes durable, then the outputs
    /// held behind them run in order (at resume, if the process is stopped).
    fn sync(&mut self, id: NodeId, start: u64) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).unwrap();
        if n.start != start || n.dead {
            return Ok(()); // the process crashed before its fsync returned
        }
        n.sync_due = false;
        let records: Vec<Persist> = n.disk.unsynced.drain(..).collect();
        n.disk.synced.extend(records);
        n.barrier = false;
        self.stats.syncs += 1;
        if !n.up {
            return Ok(());
        }
        let held = std::mem::take(&mut n.held);
        for out in held {
            self.run_output(id, out)?;
        }
        Ok(())
    }

    /// Run one output of `id`.
    fn run_output(&mut self, id: NodeId, out: Output) -> Result<(), String> {
        {
            match out {
                Output::Send(env) => self.send(env)?,
                Output::WriteDone { token, result } => {
                    if self.cut_on_ack && matches!(&result, Ok(d) if d.output.is_ok()) && self.tokens.contains_key(&token) {
                        // The power cut lined up on an acknowledgement: right after it leaves.
                        // The client reads the key next.
                        self.cut_on_ack = false;
                        self.stats.power_cuts_on_ack += 1;
                        self.schedule(self.now, Ev::PowerCut);
                        let (client, _) = self.tokens[&token];
                        self.probe = self.clients[client as usize].in_flight.as_ref().map(|f| (client, f.op.key.clone()));
                    }
                    self.reply(token, Reply::Write(result))
                }
                Output::ReadDone { token, result } => self.reply(token, Reply::Read(result)),
                Output::EncodeSnapshot { meta, store } => {
                    if self.trace {
                        eprintln!("{:>6} {id} encodes a snapshot at {} (epoch {})", self.now, meta.last_slot, meta.config.epoch);
                    }
                    let start = self.nodes[&id].start;
                    self.nodes.get_mut(&id).unwrap().encoded.insert(meta.last_slot, (meta.clone(), *store));
                    let at = self.now + self.rng.gen_range(1..50);
                    self.schedule(at, Ev::Encoded { node: id, start, meta });
                }
                Output::SendSnapshot { to, from } => {
                    let (meta, store) = match from {
                        crate::SnapshotSource::Encoded(meta) => match self.nodes[&id].encoded.get(&meta.last_slot) {
                            Some((m, s)) => (m.clone(), s.clone()),
                            None => return Err(format!("{id} asked to send snapshot {meta:?} it never encoded")),
                        },
                        crate::SnapshotSource::Store { meta, store } => (meta, *store),
                    };
                    let at = self.now + self.rng.gen_range(5..200);
                    let delivered = !self.net.is_cut(id, to);
                    if delivered {
                        self.schedule(at, Ev::Install { node: to, meta, store: Box::new(store) });
                    }
                    let start = self.nodes[&id].start;
                    self.schedule(at + 1, Ev::Sent { node: id, start, to, delivered });
                }
                Output::Resign => {
                    if self.trace {
                        eprintln!("{:>6} {id} resigns", self.now);
                    }
                    self.etcd.resign(id)
                }
                Output::ConfigChanged(c) if self.trace => {
                    eprintln!("{:>6} {id}: applied configuration epoch {} acceptors {:?} learners {:?} (applied slot {})", self.now, c.epoch,
                        c.acceptors.iter().map(|m| (m.node.0, m.incarnation.0)).collect::<Vec<_>>(),
                        c.learners.iter().map(|m| (m.node.0, m.incarnation.0)).collect::<Vec<_>>(), self.nodes[&id].node.applied_slot());
                }
                Output::LeaderChanged { leader, ballot } if self.trace => {
                    eprintln!("{:>6} {id}: core says leader {leader:?} at {ballot:?}", self.now);
                }
                Output::ReconfigureDone { token, result } => {
                    if self.trace {
                        eprintln!("{:>6} {id}: reconfigure {token} -> {result:?}", self.now);
                    }
                    if self.reconfig.is_some_and(|(t, _, _)| t == token) {
                        self.reconfig = None;
                        if result.is_ok() {
                            self.stats.config_changes += 1;
                        }
                    }
                }
                Output::Suspect(s) => {
                    let n = &self.nodes[&id];
                    let p = Proc { inc: n.inc.0, start: n.start, eligible: false };
                    self.etcd.suspect(id, p, s, self.now);
                    self.check_revocations()?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn send(&mut self, env: Envelope) -> Result<(), String> {
        let (from, to) = (env.from.node, env.to);
        if self.trace_msgs {
            use paxos::Message as M;
            let m = match &env.msg {
                M::Prepare { ballot, first_slot } => Some(format!("Prepare r{} from {}", ballot.round, first_slot.0)),
                M::Promise { ballot, first_slot, accepted, learned, more } => Some(format!("Promise r{} from {} learned {} more {more} acc {:?}", ballot.round, first_slot.0, learned.0, accepted.iter().map(|e| (e.slot.0, e.ballot.round)).collect::<Vec<_>>())),
                M::Accept { ballot, slot, commit, value } => Some(format!("Accept r{} slot {} commit {} {}", ballot.round, slot.0, commit.0, match value { paxos::Value::Reconfigure { .. } => "RECONF", paxos::Value::Batch(..) => "batch", _ => "other" })),
                M::Accepted { ballot, slot, learned } => Some(format!("Accepted r{} slot {} learned {}", ballot.round, slot.0, learned.0)),
                M::Nack { promised, .. } => Some(format!("Nack r{}", promised.round)),
                M::Compacted { snapshot_slot } => Some(format!("Compacted {}", snapshot_slot.0)),
                M::Fetch { from, to } => Some(format!("Fetch {}..{}", from.0, to.0)),
                M::Chosen { entries, commit } => Some(format!("Chosen {:?} commit {}", entries.iter().map(|e| e.0 .0).collect::<Vec<_>>(), commit.0)),
                _ => None,
            };
            if let Some(m) = m {
                eprintln!("{:>6} MSG {from}->{to}: {m}", self.now);
            }
        }
        if to == from {
            self.schedule(self.now, Ev::Deliver(env));
            return Ok(());
        }
        if !self.nodes.contains_key(&to) || self.net.is_cut(from, to) {
            return Ok(());
        }
        if self.net.hold(&env) {
            return Ok(());
        }
        if let Some((l, f)) = self.drop_reconfig_accept {
            if (from, to) == (l, f) && matches!(env.msg, paxos::Message::Accept { value: paxos::Value::Reconfigure { .. }, .. }) {
                self.drop_reconfig_accept = None;
                return Ok(());
            }
        }
        if self.rng.gen_bool(self.net.loss) {
            return Ok(());
        }
        let copies = if self.rng.gen_bool(self.net.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.rng.gen_range(1..=self.net.max_delay);
            self.schedule(self.now + d, Ev::Deliver(env.clone()));
        }
        Ok(())
    }

    fn deliver_now(&mut self, env: Envelope) -> Result<(), String> {
        if self.net.is_cut(env.from.node, env.to) {
            return Ok(());
        }
        let to = env.to;
        self.feed(to, Input::Peer(env))
    }

    fn reply(&mut self, token: u64, reply: Reply) {
        if let Some((locker, chan)) = self.lock_tokens.get(&token).copied() {
            if let Reply::Write(result) = reply {
                let at = self.now + self.rng.gen_range(1..4);
                self.schedule(at, Ev::LockReply { locker, chan, token, result });
            }
            return;
        }
        if let Some((client, _)) = self.tokens.get(&token).copied() {
            let at = self.now + self.rng.gen_range(1..4);
            self.schedule(at, Ev::Reply { client, token, reply });
        }
    }

    // ---- clients ----

    fn pick_node(&mut self, avoid: Option<NodeId>) -> NodeId {
        let ids: Vec<NodeId> = self.nodes.keys().copied().filter(|n| Some(*n) != avoid).collect();
        *ids.choose(&mut self.rng).unwrap()
    }

    /// The next replica of the round-robin balancer: every replica in turn but those whose
    /// process is gone (a connection refused: the balancer moves on; a paused one takes the
    /// connection and says nothing).
    fn balance(&mut self) -> NodeId {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..ids.len() {
            self.balancer = (self.balancer + 1) % ids.len();
            if !self.nodes[&ids[self.balancer]].dead {
                break;
            }
        }
        ids[self.balancer]
    }

    fn client_turn(&mut self, c: u64) -> Result<(), String> {
        let ci = c as usize;
        if self.clients[ci].in_flight.is_some() || self.clients[ci].done {
            return Ok(());
        }
        let role = self.clients[ci].role;
        let ask = if role != Role::Checked {
            // A keyed put on the client's own key (not a checked register).
            let session = self.clients[ci].tag(&mut self.next_idem);
            let value = self.clients[ci].value();
            Ask::Write { session, op: WriteOp::Put { key: format!("f{c}").into_bytes(), value: value.into_bytes(), guard: None } }
        } else if self.clients[ci].finishing {
            match self.clients[ci].final_keys.pop() {
                Some(key) => Ask::Read { key, linearizable: true },
                None => {
                    self.clients[ci].done = true;
                    return Ok(());
                }
            }
        } else {
            self.new_ask(ci)
        };
        let op = match &ask {
            Ask::Write { op, .. } => {
                let (key, kind) = op_kind(op);
                Op::new(c, key, kind, self.now, None, Outcome::Unknown)
            }
            Ask::Read { key, .. } => Op::new(c, key.clone(), OpKind::Read { result: None }, self.now, None, Outcome::Unknown),
        };
        let node = if role == Role::Checked { self.pick_node(None) } else { self.balance() };
        self.clients[ci].in_flight = Some(InFlight { op, ask, attempts: 0, maybe_applied: false, token: 0, node });
        self.attempt(c, node, 0)
    }

    fn new_ask(&mut self, ci: usize) -> Ask {
        if let Some((c, key)) = self.probe.take() {
            if c as usize == ci {
                return Ask::Read { key, linearizable: true };
            }
            self.probe = Some((c, key));
        }
        let roll = self.rng.gen_range(0..100);
        let reg = REGISTERS[self.rng.gen_range(0..REGISTERS.len())].to_string();
        if roll < 25 {
            return Ask::Read { key: reg, linearizable: true };
        }
        if roll < 40 {
            let key = if self.rng.gen_bool(0.7) { reg } else { COUNTERS[self.rng.gen_range(0..COUNTERS.len())].to_string() };
            return Ask::Read { key, linearizable: false };
        }
        let session = self.clients[ci].tag(&mut self.next_idem);
        let op = if roll < 65 {
            let value = self.clients[ci].value();
            WriteOp::Put { key: reg.into_bytes(), value: value.into_bytes(), guard: None }
        } else if roll < 80 {
            let expected = self.clients[ci].last_value.get(&reg).cloned().flatten();
            let new = self.clients[ci].value();
            WriteOp::Cas {
                key: reg.into_bytes(),
                expected: CasExpect::Value(expected.map(String::into_bytes)),
                new: Some(new.into_bytes()),
            }
        } else {
            let key = COUNTERS[self.rng.gen_range(0..COUNTERS.len())];
            WriteOp::Incr { key: key.as_bytes().to_vec(), delta: self.rng.gen_range(1..=5), initial: 0 }
        };
        Ask::Write { session, op }
    }

    /// Send the client's request to `node` after `delay` ms.
    fn attempt(&mut self, c: u64, node: NodeId, delay: u64) -> Result<(), String> {
        self.next_token += 1;
        let token = self.next_token;
        let ci = c as usize;
        let f = self.clients[ci].in_flight.as_mut().unwrap();
        f.attempts += 1;
        f.token = token;
        f.node = node;
        if f.attempts > 1 {
            self.stats.retries += 1;
            if f.maybe_applied && matches!(f.ask, Ask::Write { .. }) {
                self.stats.risky_retries += 1;
            }
        }
        let seen = self.clients[ci].seen_index;
        let input = match &self.clients[ci].in_flight.as_ref().unwrap().ask {
            Ask::Write { session, op } => Input::Write { token, session: *session, op: op.clone(), forward: true },
            Ask::Read { key, linearizable } => {
                let k = key.clone().into_bytes();
                let consistency = if *linearizable { Consistency::Linearizable } else { Consistency::Sequential { min_index: seen } };
                Input::Read { token, consistency, f: Box::new(move |s: &Store| ReadAnswer::Get(s.get(&k))) }
            }
        };
        self.tokens.insert(token, (c, node));
        if self.trace {
            eprintln!("{:>6} client {c} token {token} -> {node}: {input:?}", self.now);
        }
        let at = self.now + delay + self.rng.gen_range(1..4);
        self.schedule(at, Ev::Request { node, input });
        self.schedule(at + ATTEMPT_TIMEOUT_MS, Ev::ClientTimeout { client: c, token });
        Ok(())
    }

    fn client_timeout(&mut self, c: u64, token: u64) -> Result<(), String> {
        let ci = c as usize;
        let Some(f) = self.clients[ci].in_flight.as_mut() else {
            return Ok(());
        };
        if f.token != token {
            return Ok(());
        }
        self.stats.timeouts += 1;
        if self.trace {
            eprintln!("{:>6} client {c} token {token} timed out", self.now);
        }
        let node = f.node;
        f.maybe_applied = true;
        self.tokens.remove(&token);
        self.schedule(self.now + 1, Ev::Request { node, input: Input::Cancel(token) });
        self.retry_or_give_up(c, Some(node), None)
    }

    /// After an attempt ended without a definite answer: retry if allowed, else settle.
    fn retry_or_give_up(&mut self, c: u64, avoid: Option<NodeId>, to: Option<NodeId>) -> Result<(), String> {
        let ci = c as usize;
        let role = self.clients[ci].role;
        let f = self.clients[ci].in_flight.as_ref().unwrap();
        // The flood and the probe never retry a write that may have applied: they move on to a
        // new key (they are not in the checked history).
        let retry_ok = !f.maybe_applied || (role == Role::Checked && Client::may_retry_unknown(&f.ask, self.cfg.sessions.is_some()));
        if retry_ok && f.attempts < MAX_ATTEMPTS {
            let node = match to {
                Some(l) => l,
                None if role != Role::Checked => self.balance(),
                None => self.pick_node(avoid),
            };
            let delay = if to.is_some() { 0 } else { self.rng.gen_range(10..100) };
            return self.attempt(c, node, delay);
        }
        let f = self.clients[ci].in_flight.take().unwrap();
        if role != Role::Checked {
            self.next_turn(c);
            return Ok(());
        }
        let mut op = f.op;
        match f.ask {
            Ask::Write { .. } if f.maybe_applied => {
                op.outcome = Outcome::Unknown;
                op.complete = None;
                self.stats.writes_unknown += 1;
                self.history.push(op);
            }
            // Every attempt was refused before it was ordered: the write had no effect and
            // observed nothing (a compare-and-set recorded as `Fail` would claim its guard was
            // evaluated and failed), so it leaves no record.
            Ask::Write { .. } => self.stats.writes_refused += 1,
            // A read that got no answer observed nothing.
            Ask::Read { .. } => {}
        }
        self.next_turn(c);
        Ok(())
    }

    /// The state machine's answer to a flood or probe write: admitted (a new session), or
    /// refused (`SessionsFull`: the flood moves on at once with a new key, the probe waits what
    /// the refusal says).
    fn keyed_reply(&mut self, c: u64, output: &kvstore::Output) -> Result<(), String> {
        let ci = c as usize;
        self.clients[ci].in_flight = None;
        if self.clients[ci].done {
            return Ok(());
        }
        let role = self.clients[ci].role;
        match output {
            Ok(_) if role == Role::Probe => {
                let p = self.session_phase.as_mut().unwrap();
                p.admitted = Some(self.now);
                self.stats.probe_wait_ms = self.now - p.probe_at;
                self.clients[ci].done = true;
                if self.trace {
                    eprintln!("{:>6} probe admitted after {} refusals", self.now, self.stats.probe_refusals);
                }
                return Ok(());
            }
            Ok(_) => self.stats.flood_admitted += 1,
            Err(kvstore::WriteError::SessionsFull { retry_after_ms, .. }) => {
                self.stats.sessions_full += 1;
                if role == Role::Probe {
                    self.stats.probe_refusals += 1;
                    let at = self.now + retry_after_ms + self.rng.gen_range(0..10);
                    self.schedule(at, Ev::ClientTurn(c));
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("client {c}: a keyed put refused {e:?}")),
        }
        self.next_turn(c);
        Ok(())
    }

    fn next_turn(&mut self, c: u64) {
        // The flood sends as fast as it can.
        let think = if self.clients[c as usize].role == Role::Flood { 5 } else { 40 };
        let at = self.now + self.rng.gen_range(0..think);
        self.schedule(at, Ev::ClientTurn(c));
    }

    fn client_reply(&mut self, c: u64, token: u64, reply: Reply) -> Result<(), String> {
        let ci = c as usize;
        if self.trace {
            let what = match &reply {
                Reply::Write(r) => format!("{r:?}"),
                Reply::Read(r) => format!("{r:?}"),
            };
            eprintln!("{:>6} client {c} token {token} <- {what}", self.now);
        }
        if self.tokens.remove(&token).is_none() {
            return Ok(()); // timed out already
        }
        let Some(f) = self.clients[ci].in_flight.as_mut() else {
            return Ok(());
        };
        if f.token != token {
            return Ok(());
        }
        let node = f.node;
        if self.clients[ci].role != Role::Checked {
            if let Reply::Write(Ok(done)) = reply {
                return self.keyed_reply(c, &done.output);
            }
        }
        let refused = match reply {
            Reply::Write(Ok(done)) if matches!(done.output, Err(ref e) if !matches!(e, kvstore::WriteError::CasFailed { .. })) => {
                // The state machine refused the request (for example `SessionExpired`: the
                // session never had a request applied, so the store cannot tell; the client
                // starts a new session). This attempt applied nothing and observed nothing: the
                // request leaves no record unless an earlier attempt may have applied.
                if self.trace {
                    eprintln!("{:>6} client {c}: refused by the state machine: {:?}", self.now, done.output);
                }
                if matches!(done.output, Err(kvstore::WriteError::SessionExpired { .. })) {
                    self.clients[ci].new_session();
                }
                if matches!(done.output, Err(kvstore::WriteError::SessionsFull { .. })) {
                    self.stats.sessions_full += 1;
                }
                let f = self.clients[ci].in_flight.as_mut().unwrap();
                f.attempts = MAX_ATTEMPTS;
                return self.retry_or_give_up(c, Some(node), None);
            }
            Reply::Write(Ok(done)) => {
                let mut f = self.clients[ci].in_flight.take().unwrap();
                settle_write(&mut f.op, &done.output, done.index, self.now);
                let client = &mut self.clients[ci];
                client.seen_index = client.seen_index.max(f.op.index.unwrap_or(0));
                let key = f.op.key.clone();
                match (&f.op.kind, &done.output) {
                    (OpKind::Write { value }, Ok(_)) | (OpKind::Cas { new: value, .. }, Ok(_)) => {
                        client.last_value.insert(key, Some(value.clone()));
                    }
                    (_, Err(kvstore::WriteError::CasFailed { current })) => {
                        client.last_value.insert(key, current.as_ref().map(|v| String::from_utf8_lossy(&v.value).into_owned()));
                    }
                    _ => {}
                }
                match f.op.outcome {
                    Outcome::Ok => self.stats.writes_ok += 1,
                    _ => self.stats.writes_failed += 1,
                }
                self.history.push(f.op);
                self.next_turn(c);
                return Ok(());
            }
            Reply::Read(Ok(done)) => {
                let mut f = self.clients[ci].in_flight.take().unwrap();
                let result = match done.answer {
                    ReadAnswer::Get(v) => v.map(|v| String::from_utf8_lossy(&v.value).into_owned()),
                    other => return Err(format!("a single-key read answered {other:?}")),
                };
                let linearizable = matches!(f.ask, Ask::Read { linearizable: true, .. });
                let client = &mut self.clients[ci];
                client.seen_index = client.seen_index.max(done.index);
                if REGISTERS.contains(&f.op.key.as_str()) {
                    client.last_value.insert(f.op.key.clone(), result.clone());
                }
                f.op.kind = OpKind::Read { result };
                f.op.complete = Some(self.now);
                f.op.outcome = Outcome::Ok;
                let op = if linearizable {
                    self.stats.lin_reads += 1;
                    f.op.with_index(done.index)
                } else {
                    self.stats.seq_reads += 1;
                    f.op.sequential(done.index)
                };
                self.history.push(op);
                self.next_turn(c);
                return Ok(());
            }
            Reply::Write(Err(r)) | Reply::Read(Err(r)) => r,
        };
        match refused {
            Refused::NotLeader { leader } | Refused::NotServing { leader, .. } => {
                let to = leader.filter(|l| *l != node && self.nodes.contains_key(l));
                self.retry_or_give_up(c, Some(node), to)
            }
            Refused::OutcomeUnknown => {
                self.stats.unknown_answers += 1;
                self.clients[ci].in_flight.as_mut().unwrap().maybe_applied = true;
                self.retry_or_give_up(c, Some(node), None)
            }
            Refused::TooLarge { .. } | Refused::Config(_) => Err(format!("client {c}: unexpected refusal {refused:?}")),
            // Busy, lost, shutting down, removed: nothing was done; try elsewhere.
            _ => self.retry_or_give_up(c, Some(node), None),
        }
    }

    // ---- lock clients ----

    /// Carry out what a lock client asks.
    fn lock_cmds(&mut self, l: usize, cmds: Vec<Cmd>) -> Result<(), String> {
        for cmd in cmds {
            match cmd {
                Cmd::Send { chan, delay } => {
                    let node = self.pick_node(None);
                    self.lock_attempt(l, chan, node, delay);
                }
                Cmd::Wake { chan, at, gen } => self.schedule(at.max(self.now), Ev::LockWake { locker: l, chan, gen }),
            }
        }
        Ok(())
    }

    /// Send the lock client's request on `chan` to `node` after `delay` ms.
    fn lock_attempt(&mut self, l: usize, chan: Chan, node: NodeId, delay: u64) {
        self.next_token += 1;
        let token = self.next_token;
        let now = self.now;
        let timeout = match chan {
            Chan::Main => MAIN_TIMEOUT_MS,
            Chan::Keep => (self.lockers[l].ttl() / 3).max(150),
        };
        let Some(r) = self.lockers[l].inflight[chan as usize].as_mut() else { return };
        r.attempts += 1;
        if r.attempts == 1 {
            r.sent = now + delay;
        } else {
            self.stats.retries += 1;
        }
        r.token = token;
        r.node = node;
        let input = Input::Write { token, session: r.session, op: r.op.clone(), forward: true };
        if self.trace {
            eprintln!("{:>6} locker {l} {chan:?} token {token} -> {node}: {input:?}", self.now);
        }
        self.lock_tokens.insert(token, (l, chan));
        let at = now + delay + self.rng.gen_range(1..4);
        self.schedule(at, Ev::Request { node, input });
        self.schedule(at + timeout, Ev::LockTimeout { locker: l, chan, token });
    }

    fn lock_timeout(&mut self, l: usize, chan: Chan, token: u64) -> Result<(), String> {
        let Some(r) = self.lockers[l].inflight[chan as usize].as_ref() else { return Ok(()) };
        if r.token != token {
            return Ok(());
        }
        let node = r.node;
        self.lock_tokens.remove(&token);
        self.schedule(self.now + 1, Ev::Request { node, input: Input::Cancel(token) });
        self.lock_retry(l, chan, Some(node), None, true)
    }

    /// Retry the lock client's request (every lock request is harmless applied twice, see
    /// `locker.rs`), or give it up after its attempts.
    fn lock_retry(&mut self, l: usize, chan: Chan, avoid: Option<NodeId>, to: Option<NodeId>, count: bool) -> Result<(), String> {
        let Some(r) = self.lockers[l].inflight[chan as usize].as_mut() else { return Ok(()) };
        if !count {
            r.attempts -= 1;
        }
        let max = match chan {
            Chan::Main => MAIN_ATTEMPTS,
            Chan::Keep => KEEP_ATTEMPTS,
        };
        if r.attempts < max && !self.lockers[l].done {
            let node = match to {
                Some(n) => n,
                None => self.pick_node(avoid),
            };
            let delay = if to.is_some() { 0 } else { self.rng.gen_range(10..60) };
            self.lock_attempt(l, chan, node, delay);
            return Ok(());
        }
        self.lock_answer(l, chan, None)
    }

    /// The definite answer (or none: given up) to a lock client's request.
    fn lock_answer(&mut self, l: usize, chan: Chan, output: Option<&kvstore::Output>) -> Result<(), String> {
        let before = self.lock_book.stats.acquisitions;
        let cmds = self.lockers[l].on_answer(chan, output, self.now, &mut self.rng, &mut self.lock_book)?;
        self.lock_cmds(l, cmds)?;
        if self.lock_book.stats.acquisitions > before {
            self.lock_acquired(l)?;
        }
        Ok(())
    }

    /// Lock client `l` just took the lock: nobody else may believe it holds it, and the
    /// liveness probe may pick it as its victim (or see the handover it waits for).
    fn lock_acquired(&mut self, l: usize) -> Result<(), String> {
        let now = self.now;
        for (o, other) in self.lockers.iter().enumerate() {
            if o != l {
                if let Some(until) = other.holding(now) {
                    return Err(format!(
                        "locks: mutual exclusion: lock client {l} took the lock at {now} ms while client {o} believes it holds it until {until} ms"
                    ));
                }
            }
        }
        let Some(p) = self.lock_phase.as_mut() else { return Ok(()) };
        if let Some((victim, abandoned, ttl)) = p.victim {
            if !p.done && victim != l {
                p.done = true;
                let s = &mut self.lock_book.stats;
                s.probe_done = true;
                s.probe_handover_ms = now - abandoned;
                s.probe_ttl_ms = ttl;
            }
        } else if p.armed.is_some() {
            self.lock_victim(l)?;
        }
        Ok(())
    }

    /// Make holder `l` the liveness probe's victim: it abandons the lock now and stops.
    fn lock_victim(&mut self, l: usize) -> Result<(), String> {
        let now = self.now;
        let ttl = self.lockers[l].ttl();
        let p = self.lock_phase.as_mut().unwrap();
        self.lock_book.stats.probe_victim_wait_ms = now - p.armed.unwrap_or(now);
        p.victim = Some((l, now, ttl));
        if self.trace {
            eprintln!("{now:>6} lock probe: client {l} (TTL {ttl} ms) abandons the lock");
        }
        self.lockers[l].make_victim();
        let cmds = self.lockers[l].on_wake(Chan::Main, now, &mut self.rng, &mut self.lock_book);
        self.lock_cmds(l, cmds)
    }

    fn lock_reply(&mut self, l: usize, chan: Chan, token: u64, result: Result<crate::WriteDone, Refused>) -> Result<(), String> {
        if self.trace {
            eprintln!("{:>6} locker {l} {chan:?} token {token} <- {result:?}", self.now);
        }
        if self.lock_tokens.remove(&token).is_none() {
            return Ok(()); // timed out already
        }
        let Some(r) = self.lockers[l].inflight[chan as usize].as_ref() else { return Ok(()) };
        if r.token != token {
            return Ok(());
        }
        let node = r.node;
        match result {
            Ok(done) => match &done.output {
                Err(kvstore::WriteError::SessionExpired { .. }) => {
                    // The session was evicted or expired: a new one, and the same request again.
                    self.lockers[l].new_session(chan);
                    self.lock_retry(l, chan, Some(node), None, true)
                }
                Err(kvstore::WriteError::SessionsFull { retry_after_ms, .. }) => {
                    self.stats.sessions_full += 1;
                    let delay = retry_after_ms + self.rng.gen_range(0..10);
                    if self.lockers[l].done {
                        return Ok(());
                    }
                    self.lock_attempt(l, chan, node, delay);
                    Ok(())
                }
                Err(kvstore::WriteError::RequestMismatch { .. }) => {
                    Err(format!("lock client {l}: {chan:?} request refused: {:?}", done.output))
                }
                out => self.lock_answer(l, chan, Some(&out.clone())),
            },
            Err(Refused::NotLeader { leader } | Refused::NotServing { leader, .. }) => {
                let to = leader.filter(|x| *x != node && self.nodes.contains_key(x));
                self.lock_retry(l, chan, Some(node), to, true)
            }
            Err(Refused::OutcomeUnknown) => {
                self.stats.unknown_answers += 1;
                self.lock_retry(l, chan, Some(node), None, true)
            }
            Err(r @ (Refused::TooLarge { .. } | Refused::Config(_))) => Err(format!("lock client {l}: unexpected refusal {r:?}")),
            Err(_) => self.lock_retry(l, chan, Some(node), None, true),
        }
    }

    /// One step (every 100 ms after the heal) of the lock liveness probe.
    fn lock_step(&mut self) -> Result<(), String> {
        let now = self.now;
        let Some(p) = self.lock_phase.as_mut() else { return Ok(()) };
        if p.done {
            return Ok(());
        }
        if p.armed.is_none() {
            if now < p.arm_at || self.session_phase.as_ref().is_some_and(|s| !s.done) {
                return Ok(());
            }
            let version = self.nodes.values().filter(|n| n.up && n.node.replica().is_leader()).map(|n| n.node.store().cluster_version()).max();
            if version.is_none_or(|v| v < 3) {
                if now > p.arm_at + LOCK_VERSION_WAIT_MS {
                    p.done = true; // no verdict: the cluster never ran version 3
                }
                return Ok(());
            }
            p.armed = Some(now);
            if let Some(l) = (0..self.lockers.len()).find(|l| self.lockers[*l].holding(now).is_some()) {
                return self.lock_victim(l);
            }
            return Ok(());
        }
        let armed = p.armed.unwrap();
        match p.victim {
            None if now > armed + LOCK_IDLE_MS => Err(format!(
                "liveness: locks: nobody took the lock within {LOCK_IDLE_MS} ms of {armed} ms (after the heal, the cluster settled)"
            )),
            Some((v, at, ttl)) if now > at + ttl + HANDOVER_SLACK_MS => {
                let holders: Vec<String> = self.nodes.iter().filter(|(_, n)| n.up).map(|(id, n)| {
                    let s = n.node.store();
                    format!("{id}: key {:?} lease {:?} leases {:?} clock {}", s.get(LOCK_KEY_BYTES).map(|v| v.version), s.lease_of(LOCK_KEY_BYTES), s.lease_ids(0, 10), s.log_clock_ms())
                }).collect();
                Err(format!(
                    "liveness: locks: client {v} abandoned the lock at {at} ms (TTL {ttl} ms) and nobody took it within TTL + {HANDOVER_SLACK_MS} ms ({})",
                    holders.join("; ")
                ))
            }
            _ => Ok(()),
        }
    }

    /// Look for leases that disappeared from `id`'s store since the last look (the early-expiry
    /// verdict, `locker.rs`).
    fn watch_leases(&mut self, id: NodeId) -> Result<(), String> {
        let n = &self.nodes[&id];
        let (store, counters) = (n.node.store(), n.node.counters());
        let (start, expired, installed) = (n.start, counters.leases_expired, counters.snapshots_installed);
        if let Some(w) = self.lease_watch.get(&id) {
            if w.start == start && w.expired == expired && w.installed == installed && w.ids.len() == store.lease_count() {
                return Ok(());
            }
        }
        let ids = store.lease_ids(0, usize::MAX);
        let old = self.lease_watch.insert(id, LeaseWatch { start, expired, installed, ids: ids.clone() });
        // A new process starts from its own store (empty, or its disk's): nothing disappeared.
        let Some(old) = old.filter(|w| w.start == start) else { return Ok(()) };
        for gone in old.ids.iter().filter(|l| ids.binary_search(l).is_err()) {
            self.lock_book.gone(*gone, self.now, id)?;
        }
        Ok(())
    }

    // ---- faults ----

    fn up_count(&self) -> usize {
        self.nodes.values().filter(|n| n.up).count()
    }

    /// Both directions of every link between `id` and its peers.
    fn isolation_links(&self, id: NodeId) -> Vec<(NodeId, NodeId)> {
        self.nodes.keys().filter(|o| **o != id).flat_map(|o| [(id, *o), (*o, id)]).collect()
    }

    /// A bounce's second step: etcd named `leader`; if that is a successor, the old leader's
    /// campaign moves up to next in line (as if the others' campaigns were newer), so that it is
    /// named again once the successor goes.
    fn bounce_successor(&mut self, leader: Option<NodeId>) {
        let Some(successor) = leader else { return };
        let Some((old, links, None)) = self.bounce.take() else { return };
        if successor == old {
            self.bounce = Some((old, links, None));
            return;
        }
        self.etcd.next_in_line(old);
        self.bounce = Some((old, links, Some(successor)));
    }

    /// A bounce's last step: as soon as the successor's core leads, it is cut off (within about
    /// one heartbeat, before it fills its fence with no-ops) and the old leader heals.
    fn bounce_cut(&mut self, id: NodeId) {
        let Some((old, _, Some(successor))) = &self.bounce else { return };
        if id != *successor || !self.nodes[&id].node.replica().is_leader() {
            return;
        }
        let old = *old;
        let Some((_, old_links, _)) = self.bounce.take() else { return };
        self.stats.bounced_successors += 1;
        if self.trace {
            eprintln!("{:>6} bounce: successor {id} of {old} leads; cutting it, healing {old}", self.now);
        }
        let at = self.now + self.rng.gen_range(10..60);
        let links = self.isolation_links(id);
        self.schedule(at, Ev::Heal(old_links));
        self.schedule(at, Ev::Cut(links.clone()));
        let until = at + self.rng.gen_range(1_000..4_000);
        self.schedule(until, Ev::Heal(links));
    }

    fn fault(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let victim = *ids.choose(&mut self.rng).unwrap();
        let minority = (ids.len() - 1) / 2;
        // Faults aim at the elected leader half of the time: that is where they hurt.
        let victim = match self.elected {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => victim,
        };
        if self.cfg.bounces && self.bounce.is_none() && self.rng.gen_bool(0.2) {
            if let Some(l) = self.elected.filter(|l| self.nodes[l].up) {
                let links = self.isolation_links(l);
                for link in &links {
                    self.net.cut.insert(*link);
                }
                self.stats.bounces += 1;
                // If no successor is named in time, the old leader heals anyway.
                let until = self.now + 8_000;
                self.schedule(until, Ev::Heal(links.clone()));
                if self.trace {
                    eprintln!("{:>6} bounce: leader {l} cut from its peers", self.now);
                }
                self.bounce = Some((l, links, None));
                return Ok(());
            }
        }
        if self.cfg.etcd_outages && self.rng.gen_bool(0.1) {
            // etcd itself down: every node cut from it at once.
            let until = self.now + self.rng.gen_range(1_000..6_000);
            self.stats.etcd_outages += 1;
            for id in ids {
                self.cut_etcd(id, until);
            }
            return Ok(());
        }
        match self.rng.gen_range(0..104) {
            0..=7 if self.cfg.durable && self.rng.gen_bool(0.6) && !self.nodes[&victim].dead => {
                // A crash that keeps the disk: it comes back as the same incarnation, from its
                // snapshot file and its log (a joiner without a snapshot file cannot: amnesia).
                if self.nodes[&victim].disk.snapshot.is_some() {
                    let at = self.now + self.rng.gen_range(50..3_000);
                    self.crash_durable(victim, at);
                } else if self.may_lose(&BTreeSet::from([victim])) {
                    self.stats.no_snapshot_amnesia += 1;
                    let at = self.now + self.rng.gen_range(200..4_000);
                    self.crash_amnesia(victim, at);
                }
            }
            0..=7 => {
                // kill -9: the state is gone; it comes back as a new incarnation and rejoins.
                if self.may_lose(&BTreeSet::from([victim])) {
                    let at = self.now + self.rng.gen_range(200..4_000);
                    self.crash_amnesia(victim, at);
                }
            }
            100.. => {
                // A power cut: every replica stops at once, keeping its disk; half the time
                // lined up on the next write acknowledgement.
                if self.cfg.durable {
                    if self.rng.gen_bool(0.5) {
                        self.cut_on_ack = true;
                    } else {
                        self.power_cut()?;
                    }
                }
            }
            8..=19 => {
                // Pause (SIGSTOP), long enough for the lease to expire and a new leader to rise.
                if self.nodes[&victim].up && ids.len() - self.up_count() < minority {
                    self.nodes.get_mut(&victim).unwrap().up = false;
                    self.stats.pauses += 1;
                    let at = self.now + self.rng.gen_range(300..6_000);
                    self.schedule(at, Ev::Resume(victim));
                }
            }
            20..=39 => {
                // Cut from every peer (and half the time from etcd too).
                let mut links = Vec::new();
                for o in &ids {
                    if *o != victim {
                        links.push((victim, *o));
                        links.push((*o, victim));
                    }
                }
                for l in &links {
                    self.net.cut.insert(*l);
                }
                self.stats.isolations += 1;
                let until = self.now + self.rng.gen_range(500..8_000);
                self.schedule(until, Ev::Heal(links));
                if self.rng.gen_bool(0.5) {
                    self.cut_etcd(victim, until);
                }
            }
            40..=54 => {
                let other = self.pick_node(Some(victim));
                let link = if self.rng.gen_bool(0.5) { (victim, other) } else { (other, victim) };
                self.net.cut.insert(link);
                self.stats.one_way_cuts += 1;
                let at = self.now + self.rng.gen_range(500..5_000);
                self.schedule(at, Ev::Heal(vec![link]));
            }
            55..=74 => {
                // Stall the streams from some followers into the victim (often the leader): their
                // acknowledgements arrive late, all at once, in another term.
                let k = self.rng.gen_range(1..=ids.len() / 2);
                let mut others: Vec<NodeId> = ids.iter().copied().filter(|o| *o != victim).collect();
                others.shuffle(&mut self.rng);
                let until = self.now + self.rng.gen_range(500..5_000);
                for o in others.into_iter().take(k) {
                    if self.net.start_hold(o, victim, until) {
                        self.schedule(until, Ev::Release { from: o, to: victim });
                    }
                }
                self.stats.holds += 1;
            }
            75..=87 => {
                let until = self.now + self.rng.gen_range(500..4_000);
                self.cut_etcd(victim, until);
            }
            88..=93 => self.cycle_spare(),
            _ => {
                // The election tells one node a wrong leader for a while.
                let wrong = self.pick_node(Some(victim));
                let elected = self.elected;
                self.hint(victim, Some(wrong), 0);
                let d = self.rng.gen_range(200..3_000);
                self.hint(victim, elected, d);
                self.stats.wrong_hints += 1;
            }
        }
        Ok(())
    }

    /// A crash must leave a live quorum in every configuration some live replica still runs,
    /// once every paused node resumes (or the cluster would stop for good, visibly: that is
    /// `paxos::sim::majority_loss`'s subject, not this simulator's). So: no membership change
    /// pending, and without the victim a quorum of the acceptors of each configuration the live
    /// replicas have applied (a change one replica applied may be unknown to the others, who
    /// still need a quorum of the configuration before it to learn of it).
    ///
    /// A replica down with its disk kept (a durable restart under way) counts as alive, like a
    /// paused one, and the configuration of its snapshot file, which it restarts with, counts
    /// among those in use.
    ///
    /// Joiners are the exception to "no membership change pending": victims that are acceptors
    /// of no configuration in use, and whose own join requests are all that is pending, may go.
    fn may_lose(&self, victims: &BTreeSet<NodeId>) -> bool {
        if self.reconfig.is_some() || victims.iter().any(|v| self.nodes[v].dead) {
            return false;
        }
        let kept = |n: &SimNode| !n.dead || n.recovering;
        if !self.pending.is_empty() {
            let only_joiners = self.pending.iter().all(|p| matches!(p, PendingChange::Join { id, .. } if victims.contains(&NodeId(*id))));
            let is_victim = |m: &Member| victims.contains(&m.node) && self.nodes[&m.node].inc == m.incarnation;
            let acceptor = self.nodes.values().filter(|n| kept(n)).any(|n| n.node.config().acceptors.iter().any(is_victim));
            if !only_joiners || acceptor {
                return false;
            }
        }
        let alive =
            |m: &Member| !victims.contains(&m.node) && self.nodes.get(&m.node).is_some_and(|n| kept(n) && n.inc == m.incarnation);
        let snapshot_configs = self
            .nodes
            .values()
            .filter(|n| n.recovering)
            .filter_map(|n| n.disk.snapshot.as_ref().map(|(m, _)| &m.config));
        let mut configs = self.nodes.values().filter(|n| kept(n)).map(|n| n.node.config()).chain(snapshot_configs);
        configs.all(|c| !c.acceptors.is_empty() && c.acceptors.iter().filter(|m| alive(m)).count() >= c.quorum())
            && self.nodes.values().any(|n| kept(n) && !n.node.config().acceptors.is_empty())
    }

    /// Stop `id`'s process now (its pending requests die with it: their clients time out).
    fn stop(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.up = false;
        n.dead = true;
        n.inbox.clear();
        n.encoded.clear();
        n.held.clear();
        n.barrier = false;
        n.sync_due = false;
    }

    /// kill -9 with amnesia: the process and its disk are gone; at `restart_at` it starts empty
    /// as a new incarnation and rejoins.
    fn crash_amnesia(&mut self, id: NodeId, restart_at: u64) {
        self.stop(id);
        let n = self.nodes.get_mut(&id).unwrap();
        n.recovering = false;
        n.disk = Disk::default();
        self.stats.crashes += 1;
        if self.trace {
            eprintln!("{:>6} {id} crashes (amnesia)", self.now);
        }
        self.schedule(restart_at, Ev::Restart(id));
    }

    /// A crash that keeps the disk: what was not synced is lost but for a random prefix (a torn
    /// tail), the held outputs never run, and at `restart_at` it recovers as the same
    /// incarnation.
    fn crash_durable(&mut self, id: NodeId, restart_at: u64) {
        self.stop(id);
        let n = self.nodes.get_mut(&id).unwrap();
        n.recovering = true;
        let (kept, lost) = n.disk.crash(&mut self.rng);
        self.stats.records_torn_kept += kept;
        self.stats.records_lost += lost;
        if self.trace {
            eprintln!("{:>6} {id} crashes keeping its disk ({kept} unsynced records kept, {lost} lost)", self.now);
        }
        self.schedule(restart_at, Ev::Restart(id));
    }

    /// Every replica crashes at once, keeping its disk (one without a snapshot file restarts
    /// with amnesia, if that leaves every configuration a quorum; else there is no cut).
    fn power_cut(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let live: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| !n.dead).map(|(id, _)| *id).collect();
        let amnesiac: BTreeSet<NodeId> = live.iter().copied().filter(|id| self.nodes[id].disk.snapshot.is_none()).collect();
        if !amnesiac.is_empty() && !self.may_lose(&amnesiac) {
            return Ok(());
        }
        self.stats.power_cuts += 1;
        if self.trace {
            eprintln!("{:>6} power cut (max sync {} ms, on ack {})", self.now, self.max_sync_ms, self.stats.power_cuts_on_ack);
        }
        let back = self.now + self.rng.gen_range(100..2_500);
        for id in live {
            let at = back + self.rng.gen_range(0..500);
            if amnesiac.contains(&id) {
                self.stats.no_snapshot_amnesia += 1;
                self.crash_amnesia(id, at);
            } else {
                self.crash_durable(id, at);
            }
        }
        Ok(())
    }

    /// A durable restart: the same incarnation with the next start number, from the snapshot
    /// file and the records of the log (`Node::recover`).
    fn recover(&mut self, id: NodeId) -> Result<(), String> {
        let n = &self.nodes[&id];
        let Some((store, disk)) = n.disk.recovered() else {
            return Err(format!("{id} restarts from a disk without a snapshot file"));
        };
        let (me, start) = (Member { node: id, incarnation: n.inc }, n.start + 1);
        let last = disk.snapshot.last_slot;
        self.stats.votes_recovered += disk.accepted.iter().filter(|e| e.slot > last).count() as u64;
        let mut settings = node_settings(&self.cfg, &self.shape, me, start, None);
        settings.seed = settings.seed.wrapping_add(start << 24);
        let node = Node::recover(settings, Time(self.now), store, disk);
        let n = self.nodes.get_mut(&id).unwrap();
        n.node = node;
        n.start = start;
        n.up = true;
        n.dead = false;
        n.recovering = false;
        self.back_at.insert(id, self.now);
        self.stats.durable_restarts += 1;
        if self.trace {
            eprintln!("{:>6} {id} recovers from its disk (snapshot at {last}, start {start})", self.now);
        }
        if self.trace_msgs {
            let n = &self.nodes[&id];
            let (_, d) = n.disk.recovered().unwrap();
            eprintln!("  promised {:?} accepted {:?}", d.promised, d.accepted.iter().map(|e| (e.slot.0, e.ballot.round)).collect::<Vec<_>>());
        }
        let leader = self.elected;
        self.hint(id, leader, 0);
        self.outputs(id)
    }

    fn restart(&mut self, id: NodeId) -> Result<(), String> {
        if !self.nodes[&id].dead {
            return Ok(());
        }
        if self.nodes[&id].recovering {
            return self.recover(id);
        }
        let (inc, start) = {
            let n = &self.nodes[&id];
            (Incarnation(n.inc.0 + 1), n.start + 1)
        };
        let me = Member { node: id, incarnation: inc };
        let node = Node::new(node_settings(&self.cfg, &self.shape, me, start, None), Time(self.now));
        self.nodes.insert(id, SimNode::new(node, inc, start, Disk::default()));
        self.back_at.insert(id, self.now);
        // The driver posts its join request before it registers.
        self.pending.retain(|p| p.id() != id.0);
        self.pending.push(PendingChange::Join { id: id.0, incarnation: inc.0 });
        let leader = self.elected;
        self.hint(id, leader, 0);
        if self.cfg.durable && !self.healed && self.rng.gen_bool(0.3) {
            // It may crash again before its first snapshot file (then it cannot recover).
            let at = self.now + self.rng.gen_range(20..400);
            self.schedule(at, Ev::CrashAgain(id));
        }
        self.outputs(id)
    }

    /// The membership manager of the replica whose core leads (`driver/src/membership.rs`, with
    /// the decisions of `crate::membership`): one step per tick.
    /// The removal marks reach the processes they name, as the driver's membership task reads
    /// its own (`driver/src/membership.rs`): a replica removed while it lagged misses the slot
    /// that removed it (the leader stops talking to non-members) and, without the mark, went on
    /// taking client requests it could never answer (seed 21505). A process cut from etcd reads
    /// nothing; a second notice is ignored by the node.
    fn deliver_removal_marks(&mut self) -> Result<(), String> {
        if !self.cfg.removal_marks {
            return Ok(());
        }
        let due: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter(|(id, n)| n.up && !n.dead && !self.etcd.cut.contains(id) && !matches!(n.node.serving(), Err(NotServing::Removed(_))))
            .filter_map(|(id, n)| self.removed_marks.get(id).filter(|m| m.incarnation == n.inc.0).map(|m| (*id, m.epoch)))
            .collect();
        for (id, epoch) in due {
            self.stats.removal_marks_delivered += 1;
            self.feed(id, Input::Removed(crate::Removal { epoch, source: "etcd" }))?;
        }
        Ok(())
    }

    fn membership_step(&mut self) -> Result<(), String> {
        if let Some((_, leader, since)) = self.reconfig {
            let gone = !self.nodes[&leader].up || !self.nodes[&leader].node.replica().is_leader();
            if gone || self.now > since + 3_000 {
                self.reconfig = None;
            } else {
                return Ok(());
            }
        }
        self.deliver_removal_marks()?;
        let Some(leader) = self.nodes.iter().find(|(_, n)| n.up && n.node.replica().is_leader()).map(|(id, _)| *id) else {
            return Ok(());
        };
        let registered: BTreeMap<NodeId, u64> = self.etcd.registered();
        let epochs: BTreeMap<u64, EpochMark> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.up)
            // What the driver's membership task reads: the status, which shows the configuration
            // before a change while the configuration hold is on.
            .map(|(id, n)| (id.0, EpochMark { incarnation: n.inc.0, epoch: n.node.status().config.epoch }))
            .collect();
        let n = &self.nodes[&leader];
        let me = Member { node: leader, incarnation: n.inc };
        let config = n.node.status().config;
        let step = next_step(me, &config, &self.pending, &registered, |m| n.node.replica().promotable(m).is_ok());
        if self.trace && !self.pending.is_empty() {
            let behind = barrier_behind(&config, &registered, &epochs);
            eprintln!("{:>6} membership at {leader}: config {config:?} registered {registered:?} behind {behind:?} -> {step:?}", self.now);
        }
        match step {
            Some(Step::Propose(change, _)) => {
                if !barrier_behind(&config, &registered, &epochs).is_empty() {
                    return Ok(());
                }
                if let paxos::ConfigChange::Promote(_) = change {
                    self.stats.rejoined += 1;
                }
                // What the registrations say each process reads (the driver feeds this on every
                // change of the directory): every process here runs this build.
                let max = kvstore::MAX_CLUSTER_VERSION;
                self.feed(leader, Input::PeerVersions(registered.keys().map(|id| (*id, max)).collect()))?;
                self.next_token += 1;
                let token = self.next_token;
                self.reconfig = Some((token, leader, self.now));
                self.feed(leader, Input::Reconfigure { token, change })?;
                if self.cfg.faults && !self.healed {
                    match self.rng.gen_range(0..10) {
                        0..=3 => self.stale_leader(leader),
                        4..=6 => self.lost_stop_sign(leader),
                        _ => {}
                    }
                }
                Ok(())
            }
            Some(Step::Complete(p, mark)) => {
                if let Some(mark) = mark {
                    // As the driver: once every member runs the configuration without it, the
                    // leader writes `P/removed/<id>` naming the incarnation it removed.
                    if !barrier_behind(&config, &registered, &epochs).is_empty() {
                        return Ok(());
                    }
                    self.removed_marks.insert(NodeId(p.id()), mark);
                }
                self.pending.retain(|q| *q != p);
                Ok(())
            }
            Some(Step::HandOff) => {
                // The leader is the one leaving: it withdraws from the election (it is no longer
                // eligible, so it does not campaign again) and the next leader carries on.
                self.etcd.resign(leader);
                Ok(())
            }
            None if self.cfg.version_raise => {
                let runs = n.node.store().cluster_version();
                let max = kvstore::MAX_CLUSTER_VERSION;
                let Some(v) = crate::membership::version_to_raise(&config, runs, max, &registered, |_| max) else { return Ok(()) };
                if !barrier_behind(&config, &registered, &epochs).is_empty() {
                    return Ok(());
                }
                self.feed(leader, Input::PeerVersions(registered.keys().map(|id| (*id, max)).collect()))?;
                self.stats.version_raises += 1;
                self.next_token += 1;
                let token = self.next_token;
                self.reconfig = Some((token, leader, self.now));
                self.feed(leader, Input::Reconfigure { token, change: paxos::ConfigChange::SetVersion(v) })
            }
            None => Ok(()),
        }
    }

    /// Move a spare along its cycle: a member is asked to leave; one that left (removed: it
    /// exits) is started again as a new incarnation and asks to join.
    fn cycle_spare(&mut self) {
        let Some(&spare) = self.spares.choose(&mut self.rng) else { return };
        if !self.pending.is_empty() || self.nodes[&spare].dead {
            return;
        }
        let n = &self.nodes[&spare];
        let me = Member { node: spare, incarnation: n.inc };
        let removed = matches!(n.node.serving(), Err(NotServing::Removed(_)));
        if removed {
            // A removed replica drains and exits; the operator starts it again with --join.
            let n = self.nodes.get_mut(&spare).unwrap();
            n.up = false;
            n.dead = true;
            let at = self.now + self.rng.gen_range(100..1_000);
            self.schedule(at, Ev::Restart(spare));
        } else if n.node.config().members().any(|m| *m == me) {
            self.pending.push(PendingChange::Leave { id: spare.0 });
            self.stats.leaves += 1;
        }
    }

    /// The stale-leader sequence, lined up on a membership change just proposed at `leader`:
    /// the streams into it from some followers stall (their acknowledgements arrive late, in
    /// another term), and a moment later it is cut off while the others hear of a new leader.
    fn stale_leader(&mut self, leader: NodeId) {
        let others: Vec<NodeId> = self.nodes.iter().filter(|(id, n)| **id != leader && !n.dead).map(|(id, _)| *id).collect();
        let config = self.nodes[&leader].node.config().clone();
        let k = config.quorum().saturating_sub(1).max(1);
        let mut held = others.clone();
        held.shuffle(&mut self.rng);
        let until = self.now + self.rng.gen_range(300..3_000);
        for o in held.into_iter().take(k) {
            if self.net.start_hold(o, leader, until) {
                self.schedule(until, Ev::Release { from: o, to: leader });
            }
        }
        let cut_at = self.now + self.rng.gen_range(2..60);
        let heal_at = cut_at + self.rng.gen_range(500..3_000);
        let links: Vec<(NodeId, NodeId)> = others.iter().flat_map(|o| [(leader, *o), (*o, leader)]).collect();
        self.schedule(cut_at, Ev::Cut(links.clone()));
        self.schedule(heal_at, Ev::Heal(links));
        let acceptors: Vec<NodeId> = config.acceptors.iter().map(|m| m.node).filter(|n| *n != leader && others.contains(n)).collect();
        if let Some(&next) = acceptors.choose(&mut self.rng) {
            // The election names another acceptor while the old leader still believes it leads.
            self.schedule(cut_at, Ev::HandTo(next));
        }
        self.stats.stale_leaders += 1;
    }

    /// The other sequence lined up on a membership change: the `Accept` carrying the change to
    /// one follower is lost (it learns the slot is chosen from the commit point and fetches it),
    /// and the election soon names that follower, whose fetch answer may arrive while it runs
    /// phase 1 (the schedule of issue 10, bug 1).
    fn lost_stop_sign(&mut self, leader: NodeId) {
        let config = self.nodes[&leader].node.config().clone();
        let followers: Vec<NodeId> =
            config.acceptors.iter().map(|m| m.node).filter(|n| *n != leader && self.nodes.get(n).is_some_and(|x| x.up)).collect();
        let Some(&f) = followers.choose(&mut self.rng) else { return };
        self.drop_reconfig_accept = Some((leader, f));
        // Soon the leader's lease is lost and the election names `f`, for good: it keeps `f`
        // until `f` resigns (no rescue).
        let d = self.rng.gen_range(5..80);
        self.schedule(self.now + d, Ev::HandTo(f));
        self.stats.lost_stop_signs += 1;
    }

    fn cut_etcd(&mut self, id: NodeId, until: u64) {
        if self.etcd.cut.insert(id) {
            self.stats.etcd_cuts += 1;
            self.schedule(until, Ev::EtcdHeal(id));
        }
    }

    fn heal_all(&mut self) {
        self.healed = true;
        self.net.cut.clear();
        let held: Vec<(NodeId, NodeId)> = self.net.held.keys().copied().collect();
        for (from, to) in held {
            if let Some((until, _)) = self.net.held.get_mut(&(from, to)) {
                *until = self.now;
            }
            self.schedule(self.now, Ev::Release { from, to });
        }
        let paused: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| !n.up && !n.dead).map(|(id, _)| *id).collect();
        for id in paused {
            self.schedule(self.now, Ev::Resume(id));
        }
        let cut: Vec<NodeId> = self.etcd.cut.iter().copied().collect();
        for id in cut {
            self.schedule(self.now, Ev::EtcdHeal(id));
        }
        self.net.loss = 0.0;
        self.net.dup = 0.0;
    }

    // ---- verdicts ----

    /// The suspicion verdict, for each revocation of a leader's lease by suspicion since the last
    /// look: a majority of the acceptors (of the configuration the revoking node runs, as the
    /// driver counts them) could not hear the leader, within [`RECORD_SLACK_MS`]. An acceptor
    /// could not hear leader `l` at `t` if it is not running (paused, crashed, or not restarted
    /// yet), or has taken no word from `l` for at least [`SUSPECT_AFTER_MS`] (never, or its last
    /// was that long ago); the slack also admits one that was in either state at some moment
    /// within the last [`RECORD_SLACK_MS`] (came back, or heard `l` again after such a silence),
    /// since its record may still count for that long. The leader hears itself while it runs.
    /// A record that counts once its recorder was replaced, died long ago, or heard the leader
    /// again long ago (`SimConfig::stale_suspicions`) breaks it.
    fn check_revocations(&mut self) -> Result<(), String> {
        for r in std::mem::take(&mut self.etcd.revoked) {
            self.stats.revocations_checked += 1;
            let deaf: Vec<NodeId> = r.acceptors.iter().copied().filter(|a| self.could_not_hear(*a, r.leader)).collect();
            let quorum = r.acceptors.len() / 2 + 1;
            if deaf.len() < quorum {
                let heard: Vec<String> = r
                    .acceptors
                    .iter()
                    .filter(|a| !deaf.contains(a))
                    .map(|a| match self.words.get(&(*a, r.leader)) {
                        Some(w) => format!("{a} (word {} ms ago, last silence ended {} ms ago)", self.now - w.last, self.now - w.silence_ended),
                        None => format!("{a}"),
                    })
                    .collect();
                return Err(format!(
                    "suspicion: {} revoked {}'s etcd lease on the records of {:?} (acceptors {:?}), but only {:?} could not hear it \
                     (within {RECORD_SLACK_MS} ms); these could: {}",
                    r.by,
                    r.leader,
                    r.suspects,
                    r.acceptors,
                    deaf,
                    heard.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whether acceptor `a` could not hear leader `l` now, within [`RECORD_SLACK_MS`] (see
    /// [`World::check_revocations`]).
    fn could_not_hear(&self, a: NodeId, l: NodeId) -> bool {
        let (now, slack) = (self.now, RECORD_SLACK_MS);
        let Some(n) = self.nodes.get(&a) else { return true };
        if !n.up || self.back_at.get(&a).is_some_and(|t| t + slack >= now) {
            return true;
        }
        if a == l {
            return false;
        }
        match self.words.get(&(a, l)) {
            None => true,
            Some(w) => now - w.last >= SUSPECT_AFTER_MS || w.silence_ended + slack >= now,
        }
    }

    /// The signature of the core wedge fixed in `on_compacted` (`node/tests/durable.rs`): after a durable restart,
    /// some live replica's snapshot is above the commit point every other live replica knows,
    /// and no replica leads.
    fn compacted_wedge(&self) -> Option<String> {
        if self.stats.durable_restarts == 0 || self.nodes.values().any(|n| n.up && n.node.replica().is_leader()) {
            return None;
        }
        let up: Vec<(NodeId, paxos::Status)> =
            self.nodes.iter().filter(|(_, n)| n.up).map(|(id, n)| (*id, n.node.replica().status())).collect();
        let (ahead, st) = up.iter().max_by_key(|(_, s)| s.snapshot)?;
        let others = up.iter().filter(|(id, _)| id != ahead).map(|(_, s)| s.known_commit).max()?;
        (st.snapshot > others)
            .then(|| format!("{ahead}'s snapshot at {} is above every other replica's commit point ({others}); none leads", st.snapshot))
    }

    /// Every replica reaches the same state: same applied index, same hash.
    fn converge(&mut self) -> Result<(), String> {
        let deadline = self.now + 20_000;
        loop {
            // The members of the newest configuration (a removed spare stops applying).
            let newest = self.nodes.values().filter(|n| !n.dead).map(|n| n.node.config().clone()).max_by_key(|c| c.epoch);
            let members: BTreeSet<Member> = newest.iter().flat_map(|c| c.members().copied()).collect();
            let states: BTreeSet<(u64, u64)> = self
                .nodes
                .iter()
                .filter(|(id, n)| members.contains(&Member { node: **id, incarnation: n.inc }))
                .map(|(_, n)| (n.node.store().last_applied(), n.node.store().state_hash().0))
                .collect();
            let indexes: BTreeSet<u64> = states.iter().map(|(i, _)| *i).collect();
            if indexes.len() == 1 && self.pending.is_empty() {
                if states.len() > 1 {
                    return Err(format!("replicas applied the same index with different states: {states:?}"));
                }
                return Ok(());
            }
            if self.now >= deadline {
                let per: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|(id, n)| {
                        let st = n.node.replica().status();
                        if self.trace {
                            eprintln!("{id}: {st:?}");
                        }
                        format!("{id}: {}", n.node.store().last_applied())
                    })
                    .collect();
                return Err(format!(
                    "replicas did not converge 20 s after the clients finished: {}; membership requests left: {:?}",
                    per.join(", "),
                    self.pending
                ));
            }
            let step = self.now + 100;
            self.run_until(step)?;
        }
    }

    fn verdict(&mut self) -> Result<(), String> {
        self.lock_book.count_expiries();
        self.stats.locks = self.lock_book.stats.clone();
        self.lock_book.mutual_exclusion()?;
        let opts = CheckOptions { budget: Budget { max_steps: 5_000_000, timeout: None } };
        let v = checker::check_with(&self.history, &opts);
        self.stats.ops_checked = v.ops_checked;
        match v.result {
            CheckResult::Linearizable => Ok(()),
            CheckResult::Unknown => {
                self.stats.check_unknown = true;
                Ok(())
            }
            CheckResult::Violation => Err(format!("client histories: {v}")),
        }
    }
}
