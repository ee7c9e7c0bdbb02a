//! The node layer's vocabulary: its settings, what goes in ([`Input`]), what comes out
//! ([`Output`]), and the answers and refusals a client request can get.

use kvstore::{GetMany, Output as StoreOutput, RangePage, SessionRef, Store, StoreConfig, Versioned, WriteOp};
use std::collections::BTreeMap;
use paxos::{Ballot, ConfigChange, Configuration, Counters, Member, NodeId, Slot, SnapshotMeta, Status};

/// The default pipeline window of a replica: 3 slots in phase 2 at once. Under load the writes
/// that arrive while the window is full share the next slot, so a slot carries ~9 commands at
/// 64 clients instead of ~1.5 with a window of 32, and the per-slot work (an `Accept` and two
/// `Accepted` per follower round trip, a wake-up of every replica) is paid that much less often:
/// puts through the leader +15-20% on 2 cores (docs/performance.md). A window of 2 measured the
/// same; 1 would leave the leader idle for a round trip between slots.
pub const DEFAULT_PIPELINE_WINDOW: u64 = 3;

/// The default pipeline window of a durable replica (`--data-dir`): 1 slot. There a slot costs
/// a group commit (a write and an fdatasync, ~80 µs of CPU in a VM) on every replica, so the
/// batching a smaller window buys pays more than the round trip of idle leader it costs: with
/// 1 instead of 3, durable puts through the leader +15% at 64 clients and +10% at 256, and the
/// p50 at 8 clients fell (1.19 vs 1.38 ms); at 1 client no change (docs/REPORT.md, section 5).
/// The core still pipelines (`--pipeline-window N`); this is only the default.
pub const DEFAULT_DURABLE_PIPELINE_WINDOW: u64 = 1;

/// How the node is set up. Equal on every run with the same flags: nothing here reads a clock.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This replica (node id and incarnation).
    pub me: Member,
    /// This process start's number for its node id (1, 2, ...; drawn in etcd by the driver): the
    /// prefix of every request id it mints (see [`REQUEST_COUNTER_BITS`]).
    pub start_number: u64,
    /// The founding configuration, for a founding member of a fresh cluster.
    pub bootstrap: Option<Configuration>,
    /// Leader heartbeat period (milliseconds).
    pub heartbeat_ms: u64,
    /// How long a leader goes without a quorum before stepping down (milliseconds).
    pub leader_lease_ms: u64,
    /// How long a leader holds a partial batch (0: propose at once).
    pub batch_delay_ms: u64,
    /// Slots a leader keeps in phase 2 at once; commands arriving while the window is full wait
    /// and go out together in the next slot (`paxos::Options::pipeline_window`). Default
    /// [`DEFAULT_PIPELINE_WINDOW`].
    pub pipeline_window: u64,
    /// Snapshot every this many applied slots.
    pub snapshot_every: u64,
    /// Slots retained above the checkpoint before a slow member is left to a snapshot.
    pub max_retained_slots: u64,
    /// Durable mode: take a snapshot (and so write a snapshot file, which lets the WAL below it
    /// go) once the values applied since the last one hold this many payload bytes, whatever
    /// the cadence by slots says. This bounds the log above the newest snapshot file, which is
    /// what every acceptor must report in phase 1 after a restart of the whole cluster, and
    /// what each replays at start. 0: no bound (the cadence by slots only).
    pub snapshot_log_bytes: u64,
    /// The state machine's settings (equal on every replica).
    pub store: StoreConfig,
    /// The cluster version a founder's empty store starts at: the lowest its founders read,
    /// agreed through etcd at bootstrap (`driver::etcd::bootstrap`), so a new cluster of one
    /// build needs no version change in its log. Equal on every founder; 1 otherwise.
    pub initial_cluster_version: u32,
    /// A replica more than this many slots behind the highest commit point it has heard of
    /// answers no sequential read from its own state.
    pub max_read_lag_slots: u64,
    /// A follower that has not heard from the leader for longer than this (milliseconds)
    /// answers no sequential read from its own state (0: no limit).
    pub max_read_staleness_ms: u64,
    /// An acceptor that has heard nothing from the leader it knows for this long (milliseconds)
    /// emits an [`Output::Suspect`] (0: never).
    pub suspect_leader_after_ms: u64,
    /// Encoder chunk size the shell uses for snapshots (bytes). The node only carries it.
    pub snapshot_chunk_bytes: usize,
    /// The core's RNG seed (the simulator gives each replica its own; see `paxos::Options::seed`).
    pub seed: u64,
    /// The watch history keeps at most this many changes (`watch.rs`).
    pub watch_history_changes: usize,
    /// Durable mode: every core `Persist` becomes [`Output::Persist`], a barrier the shell must
    /// pass (write and fsync) before it runs any output after it. Off: state is in memory and
    /// a persist completes at once.
    pub durable: bool,
    /// The watch history keeps at most this many bytes of keys and values.
    pub watch_history_bytes: usize,
    /// At most this many watchers wait at once; more are refused [`crate::WatchError::TooMany`].
    pub max_watchers: usize,
    /// Bugs to put back in this layer (the simulator's negative tests only).
    #[cfg(feature = "sim")]
    pub bugs: Bugs,
    /// Bugs to put back in the core (the simulator's negative tests only).
    #[cfg(feature = "sim")]
    pub core_bugs: paxos::Bugs,
}

/// Deliberate bugs of the node layer, for the simulator's negative tests only: each is a mistake
/// the client-history check must catch. (The struct exists in every build so the code that
/// consults it compiles alike; only the `sim` feature adds it to [`NodeSettings`], so a
/// production node never has one switched on.)
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A follower answers a linearizable read from its own applied state at once, without a read
    /// index from the leader.
    pub local_linearizable_read: bool,
    /// The session table forgets every entry right after recording it (on every replica alike),
    /// so a retried write is applied again.
    pub forget_sessions: bool,
    /// Every third plain put (by request id) is acknowledged but not written (on every replica
    /// alike).
    pub drop_acked_writes: bool,
    /// A retried write answered from the session table reports the index of the duplicate's slot
    /// (or of the installed snapshot) instead of the index its stored result was evaluated at.
    pub duplicate_index: bool,
    /// The log clock runs on each request's own proposer stamp (the replica that took it) instead
    /// of its slot's leader tick: with requests spread over replicas it all but stops, and
    /// sessions never expire (the rule before issue 26).
    pub proposer_clock: bool,
    /// The log clock does not order terms (`kvstore::Store::no_term_order`): a deposed leader's
    /// run of slots adopted after its successor's keepalive counts its own span (the rule before
    /// the second review of the log clock).
    pub clock_without_term_order: bool,
    /// Any message from the known leader's node refreshes the last contact with it, a heartbeat
    /// this replica nacked (its sender was deposed) included (the rule before issue 25).
    pub contact_on_any_message: bool,
    /// A restarted or newly elected replica fixes its catch-up target at the commit point it
    /// knows, ignoring its election barrier and the slots it had voted in before a durable
    /// restart: after a restart of every replica it says `serving` with its snapshot's store.
    pub serve_from_snapshot: bool,
    /// Membership changes skip the cluster-version rule: a replica that reads only an older
    /// version is added (and promoted) after the version was raised (issue 30).
    pub admit_old_members: bool,
    /// A replica that meets a cluster version above its build's skips the change and goes on
    /// applying instead of halting (issue 30).
    pub skip_unknown_version: bool,
    /// Durable mode without the configuration hold (`snapshot.rs`): a configuration change is
    /// acted on before any snapshot file carries it, so after a power cut every replica may
    /// recover into the configuration of its older file (the wedge of seed 11263).
    pub no_config_hold: bool,
}

impl NodeSettings {
    /// Settings with the driver's defaults for everything but the identity and the bootstrap
    /// configuration (tests and the simulator start here and adjust fields).
    pub fn new(me: Member, start_number: u64, bootstrap: Option<Configuration>) -> Self {
        NodeSettings {
            me,
            start_number,
            bootstrap,
            heartbeat_ms: 50,
            leader_lease_ms: 1000,
            batch_delay_ms: 0,
            pipeline_window: DEFAULT_PIPELINE_WINDOW,
            snapshot_every: 10_000,
            max_retained_slots: 100_000,
            snapshot_log_bytes: DEFAULT_SNAPSHOT_LOG_BYTES,
            initial_cluster_version: 1,
            store: StoreConfig::default(),
            max_read_lag_slots: 1000,
            max_read_staleness_ms: 0,
            suspect_leader_after_ms: 400,
            snapshot_chunk_bytes: 256 * 1024,
            seed: me.node.0 ^ me.incarnation.0.rotate_left(17),
            watch_history_changes: 10_000,
            durable: false,
            watch_history_bytes: 64 << 20,
            max_watchers: 10_000,
            #[cfg(feature = "sim")]
            bugs: Bugs::default(),
            #[cfg(feature = "sim")]
            core_bugs: paxos::Bugs::default(),
        }
    }
}

/// Chosen by the shell; identifies one client request (a write, a read or a reconfiguration)
/// from its input to its one answer.
pub type Token = u64;

/// Request ids are `start_number << REQUEST_COUNTER_BITS | counter`: unique across the starts of
/// one node id without trusting the wall clock (the start number is drawn in etcd).
pub const REQUEST_COUNTER_BITS: u32 = 44;
/// Start numbers must stay below this (2^20) for request ids to fit in 64 bits.
pub const MAX_START_NUMBER: u64 = 1 << (64 - REQUEST_COUNTER_BITS);

/// The default of [`NodeSettings::snapshot_log_bytes`]: 16 MiB. Small next to the 64 MiB gRPC
/// message limit and quick to report in phase 1 (in 1 MiB promise pages) and to replay at start;
/// at ~150 bytes a write it is ~110 k writes between snapshots, so a store of 1 M keys (~130 MB
/// encoded) is encoded about once per 16 MiB of writes, a store of 100 k keys rarely more often
/// than the cadence by slots already did.
pub const DEFAULT_SNAPSHOT_LOG_BYTES: u64 = 16 << 20;

/// A snapshot is taken once the log since the previous one has at least `keys / this` slots.
pub const SNAPSHOT_LOG_TO_STORE: u64 = 2;

/// What a read computes on the applied state.
pub type ReadFn = Box<dyn FnOnce(&Store) -> ReadAnswer + Send>;

/// The result of a read closure.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAnswer {
    /// One key.
    Get(Option<Versioned>),
    /// Several keys.
    Many(GetMany),
    /// A range page.
    Range(RangePage),
    /// Leases (one looked up by id: none or one; a listing: a page in id order).
    Leases(Vec<kvstore::LeaseInfo>),
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed by the leader's quorum round (read index); a follower that serves waits until it
    /// applied that index, one that does not is refused with `NotLeader`.
    Linearizable,
    /// From this replica's applied state, once it has applied `min_index`.
    Sequential {
        /// The store index the reply must reflect at least.
        min_index: u64,
    },
}

/// This replica was removed from the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The epoch of the first configuration without it.
    pub epoch: u64,
    /// How it learned: `"log"` (it applied the configuration without it) or `"etcd"` (the
    /// leader's `P/removed/<id>` mark, when it missed the slot).
    pub source: &'static str,
}

/// Why a replica does not answer reads from its own state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotServing {
    /// Not yet caught up after it started or joined.
    CatchingUp(String),
    /// Fell too far behind (or heard nothing from the leader for too long).
    Lagging(String),
    /// Removed from the cluster.
    Removed(Removal),
    /// Stopped applying the log: it met a cluster version this build does not read
    /// (`Node::halted`). It never skips a slot the others applied; replace its binary.
    Halted(String),
}

impl NotServing {
    /// A human reason, as `/v1/status` and `/readyz` show it.
    pub fn reason(&self) -> String {
        match self {
            NotServing::CatchingUp(why) | NotServing::Lagging(why) => why.clone(),
            NotServing::Removed(r) => format!("removed from the cluster at epoch {} (learned from the {})", r.epoch, r.source),
            NotServing::Halted(why) => format!("halted: {why}"),
        }
    }
}

/// Why the node did not take (or could not finish) a request. Each variant says what the caller
/// does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not the leader: forward to `leader` (if known).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The best guess of the leader.
        leader: Option<NodeId>,
    },
    /// The write was definitely not applied (its slot went to another value, twice).
    #[error("the proposal was lost; nothing was applied")]
    Lost,
    /// The write was proposed, and this replica can no longer learn whether it was applied (a
    /// snapshot settled it without a session result to read; duty 5): the REST layer answers
    /// 504 "outcome unknown", as for a timeout, but at once.
    #[error("the outcome of the write is unknown")]
    OutcomeUnknown,
    /// Too much in flight.
    #[error("too many proposals in flight")]
    Busy,
    /// Larger than a slot may carry.
    #[error("command of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The node is shutting down and did not propose the write (a proposed write whose node
    /// stops gets no answer, which the handler reports as 504 outcome unknown).
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A configuration change was refused by the core (or was a no-op at its slot).
    #[error("configuration change refused: {0}")]
    Config(String),
    /// This replica does not answer reads from its own state now (catching up or lagging);
    /// `leader` can (if known).
    #[error("not serving reads: {reason}")]
    NotServing {
        /// The best guess of the leader.
        leader: Option<NodeId>,
        /// Catching up (`true`) or lagging.
        catching_up: bool,
        /// Why, for humans.
        reason: String,
    },
    /// This replica was removed from the cluster: it serves no client request any more.
    #[error("removed from the cluster at epoch {}", .0.epoch)]
    Removed(Removal),
    /// The write needs a newer cluster version than the cluster runs: an upgrade is not finished
    /// (some member runs an older build), or the leader has not raised the version yet.
    #[error("this write needs cluster version {needs}; the cluster runs version {runs}")]
    ClusterVersion {
        /// The cluster version the write's format needs.
        needs: u32,
        /// The cluster version in force at this replica's applied slot.
        runs: u32,
    },
    /// This replica stopped applying the log (a cluster version it does not read).
    #[error("halted: {0}")]
    Halted(String),
}

/// A write's answer: the store's output and the store index after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteDone {
    /// What the state machine answered (success or a deterministic failure).
    pub output: StoreOutput,
    /// The store index the output was evaluated at: where a write took effect, or where a refusal
    /// (a failed guard or CAS, with the key's value then) was decided; for a retry answered from
    /// the session table, the first evaluation's index (kept in the session entry), not the
    /// duplicate's slot or an installed snapshot's index. For a session error decided now (stale
    /// or reused sequence number, expired session), the slot's index.
    pub index: u64,
}

/// A read's answer and the store index it reflects.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadDone {
    /// The answer.
    pub answer: ReadAnswer,
    /// The store's applied index at the time of the read.
    pub index: u64,
    /// How many slots this replica was behind the highest commit point it had heard of.
    pub lag_slots: u64,
    /// Milliseconds since it last heard from the leader (on the leader: since a quorum of acceptors last answered it; `None`: never).
    pub last_contact_ms: Option<u64>,
}

/// A follower's report that the leader it knows has been silent. The driver's etcd task records
/// it and revokes the leader's election lease once a majority of acceptors suspects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspicion {
    /// The silent leader.
    pub leader: NodeId,
    /// The acceptors of the configuration this node runs (the leader among them).
    pub acceptors: Vec<NodeId>,
}

impl Suspicion {
    /// How many acceptors must suspect before the lease is revoked: a majority of all acceptors.
    pub fn quorum(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    /// Of the nodes that recorded a suspicion of this leader, those that count: acceptors of
    /// this configuration other than the leader, each once, in id order.
    pub fn suspects(&self, recorded: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
        let counted: std::collections::BTreeSet<NodeId> =
            recorded.into_iter().filter(|id| *id != self.leader && self.acceptors.contains(id)).collect();
        counted.into_iter().collect()
    }

    /// Whether `suspects` (from [`Suspicion::suspects`]) are a majority of the acceptors: then
    /// the leader's election lease is revoked. A leader cut off from a minority only still
    /// commits and is left alone; one a majority cannot hear cannot commit either.
    pub fn majority(&self, suspects: &[NodeId]) -> bool {
        suspects.len() >= self.quorum()
    }
}

/// What a snapshot transfer sends.
#[derive(Debug)]
pub enum SnapshotSource {
    /// The latest snapshot the shell encoded (the one [`Input::SnapshotEncoded`] reported with
    /// this metadata): the shell keeps the bytes.
    Encoded(SnapshotMeta),
    /// No encoded snapshot matches the store: encode this O(1) clone (off the loop) and send it.
    Store {
        /// Its last slot and configuration.
        meta: SnapshotMeta,
        /// The clone.
        store: Box<Store>,
    },
}

/// An input to the node. Every input comes with the time it is handled at ([`crate::Node::handle`]).
pub enum Input {
    /// A message from a peer (or from this node to itself: see [`Output::Send`]).
    Peer(paxos::Envelope),
    /// The election's view of who should lead.
    Hint(Option<NodeId>),
    /// A client write. Answered once by [`Output::WriteDone`] with the same token.
    Write {
        /// Identifies the request.
        token: Token,
        /// Exactly-once tag.
        session: Option<SessionRef>,
        /// The operation.
        op: WriteOp,
        /// Whether a follower may hand it to the leader itself (`Replica::forward`); false when
        /// the client asked to be redirected.
        forward: bool,
    },
    /// What each registered replica says it reads: the highest cluster version of its build
    /// (`kvstore::MAX_CLUSTER_VERSION`; a registration without one is the previous release's,
    /// version 1). The node checks membership and version changes against it.
    PeerVersions(BTreeMap<NodeId, u32>),
    /// A client read. Answered once by [`Output::ReadDone`].
    Read {
        /// Identifies the request.
        token: Token,
        /// How fresh it must be.
        consistency: Consistency,
        /// What to compute.
        f: ReadFn,
    },
    /// The client stopped waiting (its timeout fired, or its connection went away): forget the
    /// request. No answer follows. A write that was proposed may still be applied.
    Cancel(Token),
    /// Propose a membership change (leader only). Answered by [`Output::ReconfigureDone`] once the
    /// change is applied, or why not.
    Reconfigure {
        /// Identifies the request.
        token: Token,
        /// The change.
        change: ConfigChange,
    },
    /// A snapshot arrived from a peer and decoded.
    InstallSnapshot {
        /// What the core needs to know.
        meta: SnapshotMeta,
        /// The rebuilt store.
        store: Box<Store>,
    },
    /// The shell finished encoding the snapshot of an [`Output::EncodeSnapshot`] (it keeps the
    /// bytes).
    SnapshotEncoded {
        /// The metadata it was asked to encode with.
        meta: SnapshotMeta,
        /// Durable mode: the snapshot file is written and synced (a durable restart would load
        /// it). `false` in memory mode, or when writing the file failed (the log is kept).
        file: bool,
    },
    /// The leader's removal mark names this incarnation (it missed the slot that removed it).
    Removed(Removal),
    /// A transfer started on [`Output::SendSnapshot`] ended: `delivered` when the peer
    /// acknowledged a complete snapshot, `false` when it failed or was refused. Report every
    /// transfer started (one per peer at a time; a `SendSnapshot` for a peer whose transfer is
    /// still running may be dropped).
    SnapshotSent {
        /// The peer.
        to: NodeId,
        /// Whether it acknowledged a complete snapshot.
        delivered: bool,
    },
    /// Wait for changes to a key (or under a prefix) after a store index (`watch.rs`).
    /// Answered once by [`Output::WatchDone`]; [`Input::Cancel`] forgets it.
    Watch {
        /// Identifies the request.
        token: Token,
        /// The key or prefix, and the index the changes must be above.
        spec: WatchSpec,
    },
    /// How far a stream may announce it has come, without waiting (`watch.rs`): answered at
    /// once by [`Output::WatchDone`], with the matching changes above `spec.after` the history
    /// holds (as [`Input::Watch`] would be), or, when there are none, with no changes and the
    /// applied index: then no change matching `spec` has an index in `(spec.after, index]`, so
    /// a stream that delivered every matching change up to `spec.after` may announce `index` as
    /// its progress (a client resuming after it misses nothing). `Compacted` and `Removed` as
    /// for a watch; never `TooMany`, and nothing waits.
    WatchProgress {
        /// Identifies the request.
        token: Token,
        /// The key or prefix, and the index the stream delivered every matching change up to.
        spec: WatchSpec,
    },
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Peer(env) => f.debug_tuple("Peer").field(env).finish(),
            Input::Hint(l) => f.debug_tuple("Hint").field(l).finish(),
            Input::PeerVersions(v) => f.debug_tuple("PeerVersions").field(v).finish(),
            Input::Write { token, session, op, forward } => {
                f.debug_struct("Write").field("token", token).field("session", session).field("op", op).field("forward", forward).finish()
            }
            Input::Read { token, consistency, .. } => f.debug_struct("Read").field("token", token).field("consistency", consistency).finish(),
            Input::Cancel(t) => f.debug_tuple("Cancel").field(t).finish(),
            Input::Reconfigure { token, change } => f.debug_struct("Reconfigure").field("token", token).field("change", change).finish(),
            Input::InstallSnapshot { meta, .. } => f.debug_struct("InstallSnapshot").field("meta", meta).finish(),
            Input::SnapshotEncoded { meta, file } => f.debug_struct("SnapshotEncoded").field("meta", meta).field("file", file).finish(),
            Input::Removed(r) => f.debug_tuple("Removed").field(r).finish(),
            Input::SnapshotSent { to, delivered } => {
                f.debug_struct("SnapshotSent").field("to", to).field("delivered", delivered).finish()
            }
            Input::Watch { token, spec } => f.debug_struct("Watch").field("token", token).field("spec", spec).finish(),
            Input::WatchProgress { token, spec } => {
                f.debug_struct("WatchProgress").field("token", token).field("spec", spec).finish()
            }
        }
    }
}

/// What the node asks its shell to do. Outputs are run in the order they come out.
#[derive(Debug)]
pub enum Output {
    /// Durable mode only: make this acceptor state durable (write-ahead log, fsync) before
    /// running any output after it (a barrier, `paxos::Action::Persist`). Outputs before it may
    /// run while it is being written.
    Persist(paxos::Persist),
    /// Send to a peer, best effort (to this node itself: hand it back as [`Input::Peer`], after
    /// the current input, never re-entering [`crate::Node::handle`]).
    Send(paxos::Envelope),
    /// The answer to [`Input::Write`].
    WriteDone {
        /// The request.
        token: Token,
        /// Its outcome.
        result: Result<WriteDone, Refused>,
    },
    /// The answer to [`Input::Read`].
    ReadDone {
        /// The request.
        token: Token,
        /// Its outcome.
        result: Result<ReadDone, Refused>,
    },
    /// The answer to [`Input::Reconfigure`]: the configuration the change produced.
    ReconfigureDone {
        /// The request.
        token: Token,
        /// Its outcome.
        result: Result<Configuration, Refused>,
    },
    /// Encode this snapshot off the loop (the store is an O(1) clone) and answer
    /// [`Input::SnapshotEncoded`] with the same metadata; keep the bytes for [`Output::SendSnapshot`].
    EncodeSnapshot {
        /// Last slot and configuration.
        meta: SnapshotMeta,
        /// The clone to encode.
        store: Box<Store>,
    },
    /// Stream a snapshot to `to` (the shell skips it if a transfer to `to` is still running).
    SendSnapshot {
        /// The peer.
        to: NodeId,
        /// What to send.
        from: SnapshotSource,
    },
    /// The core stepped down: resign from the election (then campaign again).
    Resign,
    /// The leader suspicion this node holds changed (emitted only on a change).
    Suspect(Option<Suspicion>),
    /// The core's view of the leader changed.
    LeaderChanged {
        /// The leader, if known.
        leader: Option<NodeId>,
        /// Its ballot.
        ballot: Ballot,
    },
    /// A new configuration was applied (it governs the slots after the one that carried it).
    ConfigChanged(Configuration),
    /// This replica learned that it was removed (once).
    Removed(Removal),
    /// Whether this replica answers reads from its own state (emitted only on a change).
    ServingChanged(bool),
    /// The answer to [`Input::Watch`] or [`Input::WatchProgress`].
    WatchDone {
        /// The request.
        token: Token,
        /// The changes, or why not.
        result: Result<Changes, WatchError>,
    },
}

/// Plain counters of the node layer; the shell exports them as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Commands proposed to the core (or forwarded through it) by this node.
    pub proposals: u64,
    /// Writes handed to the leader inside the peer stream (`Replica::forward`).
    pub forwarded: u64,
    /// Proposals the core reported lost.
    pub proposals_lost: u64,
    /// Commands applied to the store.
    pub applied_commands: u64,
    /// Reads refused because this replica does not serve (catching up, lagging, removed).
    pub reads_not_served: u64,
    /// Snapshots encoded (reported by the shell).
    pub snapshots_taken: u64,
    /// Snapshots installed from peers.
    pub snapshots_installed: u64,
    /// Writes settled by a snapshot install (duty 5): answered from the session table.
    pub settled_from_sessions: u64,
    /// Writes settled by a snapshot install with outcome unknown.
    pub settled_unknown: u64,
    /// Lease sweeps this node proposed as leader (`kvstore::WriteOp::LeaseSweep`).
    pub lease_sweeps: u64,
    /// Leases expired by sweeps this replica applied.
    pub leases_expired: u64,
}

/// The node's state for `/v1/status` and `/metrics`. Taking it costs O(sessions + members),
/// never O(keys).
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The core's status.
    pub core: Status,
    /// The core's counters.
    pub counters: Counters,
    /// The store's applied index.
    pub store_index: u64,
    /// Keys in the store.
    pub keys: usize,
    /// Live sessions in the store's session table.
    pub sessions: usize,
    /// The session table's cap.
    pub sessions_max: usize,
    /// The store's log clock.
    pub log_clock_ms: u64,
    /// Writes waiting for their outcome.
    pub pending_writes: usize,
    /// Reads waiting.
    pub pending_reads: usize,
    /// The slot the store reflects.
    pub applied_slot: Slot,
    /// The configuration governing the slots after `applied_slot`, as the node applied it.
    pub config: Configuration,
    /// A hash of the whole replicated state (equal on replicas that applied the same slots).
    pub state_hash: u64,
    /// The store index `state_hash` was taken at (`applied_slot` is the matching slot).
    pub state_hash_index: u64,
    /// Whether this replica answers reads from its own state, and if not, why.
    pub serving: Result<(), NotServing>,
    /// Slots between the applied slot and the highest commit point heard of.
    pub lag_slots: u64,
    /// Milliseconds since it last heard from the leader (on the leader: since a quorum of acceptors last answered it; `None`: never), as of
    /// the last input or timeout the node handled.
    pub last_contact_ms: Option<u64>,
    /// The commit point this replica must apply before its first read (`None`: not fixed yet).
    pub catch_up_target: Option<Slot>,
    /// Watchers waiting.
    pub watchers: usize,
    /// Changes in the watch history.
    pub history_changes: usize,
    /// The smallest first index a watch can ask for (the history holds every change from it).
    pub history_oldest_index: u64,
    /// The cluster version in force at the applied slot: the newest command and snapshot formats
    /// any replica may write (`docs/upgrades.md`).
    pub cluster_version: u32,
    /// The highest cluster version this build runs (`kvstore::MAX_CLUSTER_VERSION`).
    pub max_cluster_version: u32,
    /// Why this replica stopped applying the log, if it did.
    pub halted: Option<String>,
    /// Live leases in the store.
    pub leases: usize,
    /// This node's [`NodeCounters::lease_sweeps`] and [`NodeCounters::leases_expired`].
    pub lease_sweeps: u64,
    /// Leases expired by sweeps applied here.
    pub leases_expired: u64,
}

// ---- watches (`watch.rs` keeps the history and the waiting watchers) ----

/// One applied change to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The store index of the command that made it (equal on every replica).
    pub index: u64,
    /// The key.
    pub key: Vec<u8>,
    /// The new value; `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The key's version after the change (the index for a write; for a deletion, the index
    /// too: the version the deletion happened at).
    pub version: u64,
}

impl Change {
    pub(crate) fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

/// What a watcher is waiting for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// The key, or the prefix.
    pub key: Vec<u8>,
    /// Whether `key` is a prefix.
    pub prefix: bool,
    /// Only changes with an index above this.
    pub after: u64,
}

impl WatchSpec {
    pub(crate) fn matches(&self, c: &Change) -> bool {
        c.index > self.after && if self.prefix { c.key.starts_with(&self.key) } else { c.key == self.key }
    }
}

/// The answer to a watch: the matching changes above its `after`, oldest first (at least one,
/// at most `MAX_CHANGES_PER_ANSWER` (`watch.rs`); none in the answer to
/// [`Input::WatchProgress`] when there is none up to `index`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// The changes.
    pub changes: Vec<Change>,
    /// The store index this replica had applied when it answered.
    pub index: u64,
}

/// Why a watch cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The history no longer holds every change after the index asked for: resume from
    /// `oldest_index` (after reading the current state) or ask a replica with a longer history.
    #[error("changes before index {oldest_index} are no longer in this replica's history")]
    Compacted {
        /// The smallest first index a watch can ask for now.
        oldest_index: u64,
    },
    /// Too many watchers wait on this replica.
    #[error("too many watchers ({limit})")]
    TooMany {
        /// The cap (`max_watchers`).
        limit: usize,
    },
    /// This replica was removed from the cluster.
    #[error("removed from the cluster at epoch {}", .0.epoch)]
    Removed(Removal),
}
