//! The node loop: the only owner of the core replica and of the state machine.
//!
//! Everything else (gRPC receivers, REST handlers, the etcd task) sends an [`Input`] over one
//! channel and, where an answer is needed, waits on a oneshot. The loop:
//!
//! 1. takes the next input, or wakes at the core's deadline ([`paxos::Replica::poll_timeout`]) and
//!    calls `handle_timeout`;
//! 2. drains [`paxos::Replica::poll_action`] and runs the actions **in order**: `Persist` completes
//!    at once (state is in memory), `Send` goes to the peer's bounded queue (a full queue drops
//!    and counts: the core tolerates loss, and the loop must never wait for a slow peer),
//!    `Apply` goes to the [`Store`] and answers the client waiting on that [`RequestId`];
//! 3. serves the reads whose wait is over (linearizable reads wait for the read index the core
//!    confirmed, sequential reads for the client's `min_index`).
//!
//! Client outcomes are matched by request id, never by slot: a write is done when an `Apply`
//! carries its id, and definitely not done when `ProposalLost` names it (then it is proposed
//! once more under a fresh id, which is safe because nothing happened). A client that stops
//! waiting (its HTTP timeout fired) gets "outcome unknown"; the loop forgets it at the next sweep.
//!
//! Indexes. The core numbers *slots*; a slot holds a batch of commands. The store numbers every
//! command it applies (its `last_applied`), and versions and the `X-Synod-Index` header use the
//! store's numbering, which every replica computes identically because it applies the same
//! slots in the same order. The loop keeps both: `applied_slot` to honour `ReadsReady { index }`
//! and the store's index for `min_index`.
//!
//! Serving. A replica answers reads from its own state only while [`Node::serving`] holds: it
//! has a configuration it belongs to (bootstrapped, or installed a snapshot), has heard from a
//! leader in this incarnation and applied up to the commit point it knew at that moment (the
//! *catch-up target*, fixed once), is not more than `max_read_lag_slots` behind the highest
//! commit point it has heard of (nor, if set, longer than `max_read_staleness_ms` without word
//! from the leader), and was not removed from the cluster. Otherwise a sequential read is
//! refused with [`Refused::NotServing`] (the REST layer forwards it to the leader, or answers
//! 503), and a removed replica refuses everything with [`Refused::Removed`] (410).

use crate::directory::Directory;
use crate::etcd::Suspicion;
use crate::metrics::Metrics;
use crate::peer::PeerSender;
use crate::snapshot::{self, SnapshotBlob};
use kvstore::{GetMany, Output, RangePage, Request, SessionRef, Stamp, Store, StoreConfig, Versioned, WriteOp};
use paxos::{
    Action, Command, ConfigChange, Configuration, Counters, Event, Member, NodeId, Options, ProposeError, ReadId,
    Replica, RequestId, Slot, Status, Time, Value,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// How the node is set up.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// This replica (node id and incarnation).
    pub me: Member,
    /// This process start's number for its node id (1, 2, ...; drawn in etcd, see
    /// [`crate::etcd::draw_start`]): the prefix of every request id it mints.
    pub start_number: u64,
    /// The founding configuration, for a founding member of a fresh cluster.
    pub bootstrap: Option<Configuration>,
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// How long a leader goes without a quorum before stepping down.
    pub leader_lease_ms: u64,
    /// How long a leader holds a partial batch (0: propose at once).
    pub batch_delay_ms: u64,
    /// Snapshot every this many applied slots.
    pub snapshot_every: u64,
    /// Slots retained above the checkpoint before a slow member is left to a snapshot.
    pub max_retained_slots: u64,
    /// The state machine's settings (equal on every replica).
    pub store: StoreConfig,
    /// A replica more than this many slots behind the highest commit point it has heard of
    /// answers no sequential read from its own state.
    pub max_read_lag_slots: u64,
    /// A follower that has not heard from the leader for longer than this (milliseconds)
    /// answers no sequential read from its own state (0: no limit).
    pub max_read_staleness_ms: u64,
    /// An acceptor that has heard nothing from the leader it knows for this long (milliseconds)
    /// reports a suspicion to the etcd task, which revokes the leader's election lease once a
    /// majority of acceptors suspects it (0: never; the lease TTL alone then ends a dead leader).
    pub suspect_leader_after_ms: u64,
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
}

impl NotServing {
    /// A human reason, as `/v1/status` and `/readyz` show it.
    pub fn reason(&self) -> String {
        match self {
            NotServing::CatchingUp(why) | NotServing::Lagging(why) => why.clone(),
            NotServing::Removed(r) => format!("removed from the cluster at epoch {} (learned from the {})", r.epoch, r.source),
        }
    }
}

/// Request ids are `start_number << REQUEST_COUNTER_BITS | counter`: unique across the starts of
/// one node id without trusting the wall clock (the start number is drawn in etcd).
pub const REQUEST_COUNTER_BITS: u32 = 44;
/// Start numbers must stay below this (2^20) for request ids to fit in 64 bits.
pub const MAX_START_NUMBER: u64 = 1 << (64 - REQUEST_COUNTER_BITS);

/// What a read computes on the applied state.
pub type ReadFn = Box<dyn FnOnce(&Store) -> ReadAnswer + Send>;

/// The result of a read closure.
#[derive(Debug)]
pub enum ReadAnswer {
    /// One key.
    Get(Option<Versioned>),
    /// Several keys.
    Many(GetMany),
    /// A range page.
    Range(RangePage),
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Confirmed by the leader's quorum round (followers are refused and forward).
    Linearizable,
    /// From this replica's applied state, once it has applied `min_index`.
    Sequential {
        /// The store index the reply must reflect at least.
        min_index: u64,
    },
}

/// Why the node did not take a request. Each variant says what the caller does next.
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
    /// stops gets no answer from the loop, which the handler reports as 504 outcome unknown).
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
}

/// A write's answer: the store's output and the store index after it.
#[derive(Debug)]
pub struct WriteDone {
    /// What the state machine answered (success or a deterministic failure).
    pub output: Output,
    /// The store's applied index right after this command.
    pub index: u64,
}

/// A read's answer and the store index it reflects.
#[derive(Debug)]
pub struct ReadDone {
    /// The answer.
    pub answer: ReadAnswer,
    /// The store's applied index at the time of the read.
    pub index: u64,
    /// How many slots this replica was behind the highest commit point it had heard of.
    pub lag_slots: u64,
    /// Milliseconds since it last heard from the leader (0 on the leader; `None`: never).
    pub last_contact_ms: Option<u64>,
}

/// A snapshot is taken once the log since the previous one has at least `keys / this` slots.
pub const SNAPSHOT_LOG_TO_STORE: u64 = 2;

/// A snapshot of the node's state for `/v1/status` and `/metrics`.
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
    /// The slot the store reflects (the driver's own count, equal to the core's applied slot once
    /// the queued actions ran).
    pub applied_slot: Slot,
    /// The configuration governing the slots after `applied_slot`, as the driver applied it.
    pub config: Configuration,
    /// A hash of the whole replicated state (equal on replicas that applied the same slots).
    pub state_hash: u64,
    /// The store index `state_hash` was taken at (read in the same loop turn as the hash, so the
    /// pair is consistent; `applied_slot` is the matching slot).
    pub state_hash_index: u64,
    /// Whether this replica answers reads from its own state, and if not, why.
    pub serving: Result<(), NotServing>,
    /// Slots between the applied slot and the highest commit point heard of.
    pub lag_slots: u64,
    /// Milliseconds since it last heard from the leader (0 on the leader; `None`: never).
    pub last_contact_ms: Option<u64>,
    /// The commit point this replica must apply before its first read (`None`: not fixed yet).
    pub catch_up_target: Option<Slot>,
}

/// An input to the node loop.
pub enum Input {
    /// A message from a peer.
    Peer(paxos::Envelope),
    /// The election's view of who should lead.
    Hint(Option<NodeId>),
    /// A client write.
    Write {
        /// Exactly-once tag.
        session: Option<SessionRef>,
        /// The operation.
        op: WriteOp,
        /// Whether a follower may hand it to the leader itself (`Replica::forward`); false
        /// when the client asked to be redirected.
        forward: bool,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<WriteDone, Refused>>,
    },
    /// A client read.
    Read {
        /// How fresh it must be.
        consistency: Consistency,
        /// What to compute.
        f: ReadFn,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ReadDone, Refused>>,
    },
    /// Report the status.
    Status(oneshot::Sender<NodeStatus>),
    /// Propose a membership change (leader only). Answered with the new configuration once the
    /// change is applied, or why not.
    Reconfigure {
        /// The change.
        change: ConfigChange,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Configuration, Refused>>,
    },
    /// A snapshot arrived from a peer and decoded.
    InstallSnapshot {
        /// What the core needs to know.
        meta: paxos::SnapshotMeta,
        /// The rebuilt store.
        store: Box<Store>,
    },
    /// A snapshot asked for by `Action::TakeSnapshot` finished encoding on a blocking thread.
    SnapshotEncoded(Arc<SnapshotBlob>),
    /// The directory changed: (re)connect peers.
    PeersChanged,
    /// The leader's removal mark names this incarnation (it missed the slot that removed it).
    Removed(Removal),
    /// Stop the loop.
    Shutdown,
}

/// What the node loop asks the etcd task to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionCmd {
    /// The core stepped down: resign, then campaign again.
    Resign,
}

struct PendingWrite {
    session: Option<SessionRef>,
    op: WriteOp,
    forward: bool,
    retried: bool,
    reply: oneshot::Sender<Result<WriteDone, Refused>>,
}

struct PendingRead {
    f: ReadFn,
    reply: oneshot::Sender<Result<ReadDone, Refused>>,
}

/// The node loop's state.
pub struct Node {
    replica: Replica,
    store: Store,
    me: Member,
    start: Instant,
    applied_slot: Slot,
    /// The last request id counter used (ids are `start_number << 44 | counter`).
    next_seq: u64,
    /// The first id counter value of the next start: never reached by this one.
    seq_limit: u64,
    next_read: u64,
    leader: Option<NodeId>,
    writes: HashMap<RequestId, PendingWrite>,
    /// Linearizable reads sent to the core, waiting for ReadsReady.
    confirming: HashMap<ReadId, PendingRead>,
    /// Reads waiting for the applied slot to reach a read index.
    wait_slot: BTreeMap<Slot, Vec<PendingRead>>,
    /// Reads waiting for the store index to reach a client's min_index.
    wait_index: BTreeMap<u64, Vec<PendingRead>>,
    peers: BTreeMap<NodeId, PeerSender>,
    directory: Directory,
    metrics: Arc<Metrics>,
    election: mpsc::UnboundedSender<ElectionCmd>,
    latest_snapshot: Option<Arc<SnapshotBlob>>,
    snapshot_chunk_bytes: usize,
    /// A snapshot is being encoded off the loop (at most one at a time).
    snapshot_encoding: bool,
    /// The applied slot of the last snapshot started here (the cadence counts from it).
    last_snapshot_slot: Slot,
    /// The cadence never waits longer than this many slots (the log retention bound).
    max_retained_slots: u64,
    /// Snapshot transfers in flight, by peer (one at a time per peer).
    snapshot_sends: HashMap<NodeId, tokio::task::JoinHandle<()>>,
    inputs: mpsc::Sender<Input>,
    /// The configuration governing the slots after `applied_slot`, kept in step with the
    /// actions as they run (the core's own view may already be ahead of the store).
    config: Configuration,
    /// Membership changes proposed here, waiting for their slot.
    reconfigs: HashMap<RequestId, oneshot::Sender<Result<Configuration, Refused>>>,
    /// Membership changes whose slot was applied in this drain, waiting for `ConfigChanged`.
    reconfig_applied: Vec<(Slot, oneshot::Sender<Result<Configuration, Refused>>)>,
    max_read_lag_slots: u64,
    max_read_staleness_ms: u64,
    /// When a message from the leader last arrived (now, while this node leads).
    leader_contact: Option<Instant>,
    /// The commit point known at the first leader contact as a member: applied before any read.
    catch_up_target: Option<Slot>,
    /// The catch-up target was reached (once per incarnation).
    caught_up: bool,
    /// This incarnation has been a member of a configuration it applied.
    was_member: bool,
    /// Set once this replica learns it was removed.
    removed: Option<Removal>,
    /// Tells the server (which then drains and exits) that this replica was removed.
    removal: watch::Sender<Option<Removal>>,
    /// After this much silence from the leader, suspect it (`None`: never).
    suspect_after: Option<Duration>,
    /// The leader the core knows and when this node last heard from it (or learned of it).
    heard: Option<(NodeId, Instant)>,
    /// The current suspicion, read by the etcd task ([`crate::etcd::suspect`]).
    suspicion: watch::Sender<Option<Suspicion>>,
}

impl Node {
    /// A node for `settings`. `inputs` is the sending half of the loop's own channel (peer tasks
    /// hand it to snapshot senders).
    pub fn new(
        settings: &NodeSettings,
        directory: Directory,
        metrics: Arc<Metrics>,
        election: mpsc::UnboundedSender<ElectionCmd>,
        inputs: mpsc::Sender<Input>,
        removal: watch::Sender<Option<Removal>>,
    ) -> Self {
        let mut options = Options::new(settings.me, settings.bootstrap.clone());
        options.heartbeat_ms = settings.heartbeat_ms;
        options.leader_lease_ms = settings.leader_lease_ms;
        options.retry_ms = (settings.heartbeat_ms * 4).max(50);
        options.batch_delay_ms = settings.batch_delay_ms;
        options.snapshot_every = settings.snapshot_every;
        options.max_retained_slots = settings.max_retained_slots;
        let start = Instant::now();
        Node {
            replica: Replica::new(options, Time(0)),
            store: Store::new(settings.store),
            me: settings.me,
            start,
            applied_slot: Slot(0),
            // Request ids must never repeat across restarts of this node id, or a waiter could be
            // handed another command's result: the start number (drawn in etcd, strictly
            // increasing per id) is the prefix, a counter the rest. No wall clock involved.
            next_seq: settings.start_number << REQUEST_COUNTER_BITS,
            seq_limit: (settings.start_number + 1) << REQUEST_COUNTER_BITS,
            next_read: 0,
            leader: None,
            writes: HashMap::new(),
            confirming: HashMap::new(),
            wait_slot: BTreeMap::new(),
            wait_index: BTreeMap::new(),
            peers: BTreeMap::new(),
            directory,
            metrics,
            election,
            latest_snapshot: None,
            snapshot_chunk_bytes: 256 * 1024,
            snapshot_encoding: false,
            last_snapshot_slot: Slot(0),
            max_retained_slots: settings.max_retained_slots,
            snapshot_sends: HashMap::new(),
            inputs,
            config: settings.bootstrap.clone().unwrap_or_else(|| Configuration::bootstrap([])),
            reconfigs: HashMap::new(),
            reconfig_applied: Vec::new(),
            max_read_lag_slots: settings.max_read_lag_slots,
            max_read_staleness_ms: settings.max_read_staleness_ms,
            leader_contact: None,
            catch_up_target: None,
            caught_up: false,
            was_member: false,
            removed: None,
            removal,
            suspect_after: (settings.suspect_leader_after_ms > 0).then(|| Duration::from_millis(settings.suspect_leader_after_ms)),
            heard: None,
            suspicion: watch::channel(None).0,
        }
    }

    /// Publish this node's leader suspicions on `tx` (for [`crate::etcd::suspect`]).
    pub fn set_suspicion(&mut self, tx: watch::Sender<Option<Suspicion>>) {
        self.suspicion = tx;
    }

    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Run until `Input::Shutdown` or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        self.sync_peers();
        self.drain();
        let mut sweep = tokio::time::interval(Duration::from_millis(500));
        let check = self.suspect_after.map_or(Duration::from_secs(1), |d| (d / 4).clamp(Duration::from_millis(10), Duration::from_millis(100)));
        let mut silence = tokio::time::interval(check);
        silence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.replica.poll_timeout().map(|t| self.start + Duration::from_millis(t.0));
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Shutdown) | None => break,
                    Some(input) => self.on_input(input),
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = self.now();
                    self.replica.handle_timeout(now);
                }
                _ = sweep.tick() => self.sweep(),
                _ = silence.tick(), if self.suspect_after.is_some() => self.check_leader_silence(),
            }
            self.drain();
        }
        info!("node loop stopped");
        // These writes were proposed and may still be chosen by the others: their outcome is
        // unknown, never "not done". Dropping the replies makes the handlers answer 504.
        self.writes.clear();
    }

    fn on_input(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Peer(env) => {
                let from = env.from.node;
                self.replica.handle(now, Event::Receive(env));
                // Word from the leader (a heartbeat, an accept, a commit point) refreshes contact.
                if self.replica.known_leader() == Some(from) {
                    self.leader_contact = Some(Instant::now());
                    self.heard = Some((from, Instant::now()));
                }
            }
            Input::Hint(leader) => {
                debug!(?leader, "leader hint from the election");
                self.replica.handle(now, Event::LeaderHint { leader });
            }
            Input::Write { session, op, forward, reply } => {
                let pending = PendingWrite { session, op, forward, retried: false, reply };
                self.propose(pending);
            }
            Input::Read { consistency, f, reply } => self.read(consistency, PendingRead { f, reply }),
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::Reconfigure { change, reply } => self.reconfigure(change, reply),
            Input::InstallSnapshot { meta, store } => self.install_snapshot(meta, *store),
            Input::SnapshotEncoded(blob) => self.snapshot_encoded(blob),
            Input::PeersChanged => self.sync_peers(),
            Input::Removed(r) => self.mark_removed(r),
            Input::Shutdown => {}
        }
    }

    fn status(&self) -> NodeStatus {
        let pending_reads = self.confirming.len()
            + self.wait_slot.values().map(Vec::len).sum::<usize>()
            + self.wait_index.values().map(Vec::len).sum::<usize>();
        NodeStatus {
            core: self.replica.status(),
            counters: self.replica.counters(),
            store_index: self.store.last_applied(),
            keys: self.store.len(),
            sessions: self.store.sessions().len(),
            sessions_max: self.store.config().max_sessions,
            log_clock_ms: self.store.log_clock_ms(),
            pending_writes: self.writes.len(),
            pending_reads,
            applied_slot: self.applied_slot,
            config: self.config.clone(),
            state_hash: self.store.state_hash().0,
            state_hash_index: self.store.last_applied(),
            serving: self.serving(),
            lag_slots: self.lag_slots(),
            last_contact_ms: self.last_contact_ms(),
            catch_up_target: self.catch_up_target,
        }
    }

    /// Suspect the known leader when it has been silent for `suspect_after` (see
    /// [`crate::etcd::suspect`]); withdraw the suspicion when it speaks again or another leader
    /// is known. Only an acceptor that does not lead suspects.
    fn check_leader_silence(&mut self) {
        let Some(after) = self.suspect_after else { return };
        let known = self.replica.known_leader();
        if known != self.heard.map(|(l, _)| l) {
            // A new leader (or none): its silence counts from now.
            self.heard = known.map(|l| (l, Instant::now()));
        }
        let want = match self.heard {
            Some((leader, since))
                if leader != self.me.node
                    && !self.replica.is_leader()
                    && self.removed.is_none()
                    && self.config.is_acceptor(&self.me)
                    && since.elapsed() >= after =>
            {
                Some(Suspicion { leader, acceptors: self.config.acceptors.iter().map(|m| m.node).collect() })
            }
            _ => None,
        };
        self.suspicion.send_if_modified(|cur| {
            if *cur == want {
                return false;
            }
            match &want {
                Some(s) => info!(leader = %s.leader, silent_ms = after.as_millis() as u64, "no word from the leader: suspecting it"),
                None => debug!("leader suspicion withdrawn"),
            }
            *cur = want.clone();
            true
        });
    }

    fn lag_slots(&self) -> u64 {
        self.replica.known_commit().0.saturating_sub(self.applied_slot.0)
    }

    fn last_contact_ms(&self) -> Option<u64> {
        if self.leader == Some(self.me.node) {
            return Some(0);
        }
        self.leader_contact.map(|t| t.elapsed().as_millis() as u64)
    }

    fn is_member(&self) -> bool {
        self.config.members().any(|m| *m == self.me)
    }

    /// Whether reads may be answered from this replica's state now (see the module docs).
    pub fn serving(&self) -> Result<(), NotServing> {
        if let Some(r) = self.removed {
            return Err(NotServing::Removed(r));
        }
        if !self.caught_up {
            let why = if !self.is_member() {
                "catching up: not yet a member with a configuration (waiting to be added and sent a snapshot)".to_string()
            } else {
                match self.catch_up_target {
                    None => "catching up: no word from a leader yet".to_string(),
                    Some(t) => format!("catching up: applied {} of {}", self.applied_slot.0, t.0),
                }
            };
            return Err(NotServing::CatchingUp(why));
        }
        let lag = self.lag_slots();
        if lag > self.max_read_lag_slots {
            return Err(NotServing::Lagging(format!(
                "lagging: applied {} of {} ({lag} slots behind, bound {})",
                self.applied_slot.0,
                self.replica.known_commit().0,
                self.max_read_lag_slots
            )));
        }
        if self.max_read_staleness_ms > 0 {
            match self.last_contact_ms() {
                Some(ms) if ms <= self.max_read_staleness_ms => {}
                contact => {
                    return Err(NotServing::Lagging(format!(
                        "stale: no word from a leader for {} (bound {} ms)",
                        contact.map_or("ever".to_string(), |ms| format!("{ms} ms")),
                        self.max_read_staleness_ms
                    )))
                }
            }
        }
        Ok(())
    }

    fn refusal(&self, not: NotServing) -> Refused {
        let leader = self.replica.known_leader().or(self.leader).filter(|l| *l != self.me.node);
        match not {
            NotServing::Removed(r) => Refused::Removed(r),
            NotServing::CatchingUp(reason) => Refused::NotServing { leader, catching_up: true, reason },
            NotServing::Lagging(reason) => Refused::NotServing { leader, catching_up: false, reason },
        }
    }

    /// After every turn: note removal by the log, fix the catch-up target, publish the state.
    fn update_serving(&mut self) {
        if self.removed.is_some() {
            return;
        }
        if self.is_member() {
            self.was_member = true;
        } else if self.was_member {
            // It applied a configuration without this incarnation (removed, or replaced by a
            // newer incarnation of the same id).
            self.mark_removed(Removal { epoch: self.config.epoch, source: "log" });
            return;
        }
        if self.leader == Some(self.me.node) {
            self.leader_contact = Some(Instant::now());
        }
        if !self.caught_up {
            if self.catch_up_target.is_none() && self.is_member() && self.leader_contact.is_some() {
                let target = self.replica.known_commit();
                info!(target = %target, applied = %self.applied_slot, "catch-up target fixed: no reads from this replica before it applies it");
                self.catch_up_target = Some(target);
            }
            if self.catch_up_target.is_some_and(|t| self.applied_slot >= t) {
                info!(applied = %self.applied_slot, "caught up: serving reads");
                self.caught_up = true;
            }
        }
        self.metrics.serving.set(u64::from(self.serving().is_ok()));
    }

    fn mark_removed(&mut self, r: Removal) {
        if self.removed.is_some() {
            return;
        }
        warn!(epoch = r.epoch, source = r.source, "this replica was removed from the cluster: it serves no client request any more");
        self.removed = Some(r);
        self.metrics.serving.set(0);
        let _ = self.removal.send(Some(r));
        // Reads waiting here would never be served.
        let waiting: Vec<PendingRead> = self
            .confirming
            .drain()
            .map(|(_, r)| r)
            .chain(std::mem::take(&mut self.wait_slot).into_values().flatten())
            .chain(std::mem::take(&mut self.wait_index).into_values().flatten())
            .collect();
        for read in waiting {
            let _ = read.reply.send(Err(Refused::Removed(r)));
        }
    }

    /// The next request id, or `None` once this start used all 2^44 of its ids.
    fn next_id(&mut self) -> Option<RequestId> {
        if self.next_seq + 1 >= self.seq_limit {
            warn!("this process used up its request ids; restart it");
            return None;
        }
        self.next_seq += 1;
        Some(RequestId { node: self.me.node, seq: self.next_seq })
    }

    fn reconfigure(&mut self, change: ConfigChange, reply: oneshot::Sender<Result<Configuration, Refused>>) {
        let Some(id) = self.next_id() else {
            let _ = reply.send(Err(Refused::Busy));
            return;
        };
        let now = self.now();
        match self.replica.propose_config(now, id, change) {
            Ok(()) => {
                info!(?change, "membership change proposed");
                self.reconfigs.insert(id, reply);
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(Err(Refused::NotLeader { leader: leader.or(self.leader) }));
            }
            Err(e) => {
                let _ = reply.send(Err(Refused::Config(e.to_string())));
            }
        }
    }

    fn propose(&mut self, pending: PendingWrite) {
        if let Some(r) = self.removed {
            let _ = pending.reply.send(Err(Refused::Removed(r)));
            return;
        }
        let Some(id) = self.next_id() else {
            let _ = pending.reply.send(Err(Refused::Busy));
            return;
        };
        // The proposer stamps the request with its identity and its *monotonic* clock; the
        // store's log clock only counts time one proposer measured between its own consecutive
        // requests (capped), so no wall clock, skewed or stepping, can push session expiry.
        let now = self.now();
        let stamp = Stamp::new(self.me.node.0, self.me.incarnation.0, now.0);
        let request = Request { session: pending.session, stamp, op: pending.op.clone() };
        let command = Command { id, payload: request.encode() };
        let mut result = self.replica.propose(now, command.clone());
        if let Err(ProposeError::NotLeader { leader: Some(l) }) = result {
            // A follower that serves hands the command to the leader inside the peer stream
            // and answers from its own log once it applies it (`paxos/src/forward.rs`); one
            // that is catching up or lagging would answer late, so the REST layer relays the
            // request instead (`Refused::NotLeader`).
            if l != self.me.node && pending.forward && self.serving().is_ok() {
                result = self.replica.forward(now, command);
                if result.is_ok() {
                    self.metrics.forwarded.inc();
                }
            }
        }
        match result {
            Ok(()) => {
                self.metrics.proposals.inc();
                self.writes.insert(id, pending);
            }
            Err(e) => {
                let refused = match e {
                    ProposeError::NotLeader { leader } => Refused::NotLeader { leader: leader.or(self.leader) },
                    ProposeError::Backpressure => Refused::Busy,
                    ProposeError::TooLarge { size, limit } => Refused::TooLarge { size, limit },
                    ProposeError::Config(_) => Refused::Busy,
                };
                let _ = pending.reply.send(Err(refused));
            }
        }
    }

    fn read(&mut self, consistency: Consistency, read: PendingRead) {
        if let Some(r) = self.removed {
            self.metrics.reads_not_served.inc();
            let _ = read.reply.send(Err(Refused::Removed(r)));
            return;
        }
        match consistency {
            Consistency::Sequential { min_index } => {
                if let Err(not) = self.serving() {
                    self.metrics.reads_not_served.inc();
                    let _ = read.reply.send(Err(self.refusal(not)));
                    return;
                }
                if self.store.last_applied() >= min_index {
                    self.serve(read);
                } else {
                    self.wait_index.entry(min_index).or_default().push(read);
                }
            }
            Consistency::Linearizable => {
                // A follower serves a linearizable read itself (the core asks the leader for a
                // read index, and the read waits until this replica applied it), unless it is
                // catching up or lagging: then it could not apply the index in time, so the
                // read goes to the leader.
                if !self.replica.is_leader() && self.serving().is_err() {
                    let _ = read.reply.send(Err(Refused::NotLeader { leader: self.leader }));
                    return;
                }
                self.next_read += 1;
                let id = ReadId(self.next_read);
                let now = self.now();
                match self.replica.read(now, id) {
                    Ok(()) => {
                        self.confirming.insert(id, read);
                    }
                    Err(ProposeError::NotLeader { leader }) => {
                        let _ = read.reply.send(Err(Refused::NotLeader { leader: leader.or(self.leader) }));
                    }
                    Err(_) => {
                        let _ = read.reply.send(Err(Refused::Busy));
                    }
                }
            }
        }
    }

    fn serve(&self, read: PendingRead) {
        let answer = (read.f)(&self.store);
        let done = ReadDone { answer, index: self.store.last_applied(), lag_slots: self.lag_slots(), last_contact_ms: self.last_contact_ms() };
        let _ = read.reply.send(Ok(done));
    }

    /// Run every action the core has queued, in order.
    fn drain(&mut self) {
        let mut applied_any = false;
        while let Some(action) = self.replica.poll_action() {
            match action {
                // In-memory mode: the state is "durable" as soon as the core holds it, so the
                // barrier is already passed. A disk-backed mode would write and fsync here,
                // before running anything after it.
                Action::Persist(_) => {}
                Action::Send(env) => self.send(env),
                Action::Apply { slot, value } => {
                    self.apply(slot, value);
                    applied_any = true;
                }
                Action::ProposalLost { id } => self.lost(id),
                Action::ReadsReady { reads, index } => {
                    for id in reads {
                        if let Some(r) = self.confirming.remove(&id) {
                            self.wait_slot.entry(index).or_default().push(r);
                        }
                    }
                    applied_any = true;
                }
                Action::ReadsFailed { reads, leader } => {
                    for id in reads {
                        if let Some(r) = self.confirming.remove(&id) {
                            let _ = r.reply.send(Err(Refused::NotLeader { leader }));
                        }
                    }
                }
                Action::TakeSnapshot { slot } => self.take_snapshot(slot),
                Action::SendSnapshot { to } => self.send_snapshot(to),
                Action::LeaderChanged { leader, ballot } => {
                    info!(?leader, %ballot, "leader changed");
                    self.leader = leader;
                    self.metrics.set_leader(leader, ballot);
                }
                Action::SteppedDown => {
                    info!("stepped down; resigning from the election");
                    let _ = self.election.send(ElectionCmd::Resign);
                }
                Action::ConfigChanged { slot, config } => {
                    info!(%slot, epoch = config.epoch, acceptors = ?config.acceptors, learners = ?config.learners, "configuration changed");
                    self.metrics.config_epoch.set(config.epoch);
                    self.config = config.clone();
                    let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reconfig_applied).into_iter().partition(|(s, _)| *s == slot);
                    self.reconfig_applied = rest;
                    for (_, reply) in done {
                        let _ = reply.send(Ok(config.clone()));
                    }
                }
            }
        }
        // A change whose slot was applied without a `ConfigChanged` was refused by the
        // configuration in force at its slot (a stale proposal): it had no effect.
        for (_, reply) in self.reconfig_applied.drain(..) {
            let _ = reply.send(Err(Refused::Config("the change had no effect at its slot".into())));
        }
        if applied_any {
            self.release_reads();
        }
        self.update_serving();
    }

    fn send(&mut self, env: paxos::Envelope) {
        let to = env.to;
        if to == self.me.node {
            // The core may address itself; loop it back through the channel to keep ordering
            // with other inputs rather than re-entering the core here.
            if self.inputs.try_send(Input::Peer(env)).is_err() {
                self.metrics.peer_queue_drops.inc();
            }
            return;
        }
        if !self.peers.contains_key(&to) {
            self.sync_peers();
        }
        match self.peers.get(&to) {
            Some(p) => {
                if !p.try_send(env) {
                    self.metrics.peer_queue_drops.inc();
                }
            }
            None => self.metrics.peer_send_failures.inc(),
        }
    }

    fn apply(&mut self, slot: Slot, value: Value) {
        if slot <= self.applied_slot {
            warn!(%slot, applied = %self.applied_slot, "core applied a slot twice; ignored");
            return;
        }
        if let Value::Reconfigure { id, .. } = &value {
            if let Some(reply) = self.reconfigs.remove(id) {
                self.reconfig_applied.push((slot, reply));
            }
        }
        if let Value::Batch(cmds) = value {
            for cmd in cmds {
                let index = self.store.last_applied() + 1;
                let output = self.store.apply(index, &cmd.payload);
                self.metrics.applied_commands.inc();
                if let Some(w) = self.writes.remove(&cmd.id) {
                    let _ = w.reply.send(Ok(WriteDone { output, index }));
                }
            }
        }
        self.applied_slot = slot;
        self.metrics.applied_slot.set(slot.0);
        self.metrics.store_index.set(self.store.last_applied());
    }

    fn lost(&mut self, id: RequestId) {
        self.metrics.proposals_lost.inc();
        if let Some(reply) = self.reconfigs.remove(&id) {
            let _ = reply.send(Err(Refused::Lost));
            return;
        }
        let Some(mut w) = self.writes.remove(&id) else { return };
        if w.retried {
            let _ = w.reply.send(Err(Refused::Lost));
        } else {
            // Lost means "not chosen and never will be", so proposing again cannot apply twice.
            w.retried = true;
            self.propose(w);
        }
    }

    fn release_reads(&mut self) {
        while let Some(entry) = self.wait_slot.first_entry() {
            if *entry.key() > self.applied_slot {
                break;
            }
            for r in entry.remove() {
                self.serve(r);
            }
        }
        let index = self.store.last_applied();
        while let Some(entry) = self.wait_index.first_entry() {
            if *entry.key() > index {
                break;
            }
            for r in entry.remove() {
                self.serve(r);
            }
        }
    }

    fn sweep(&mut self) {
        self.writes.retain(|_, w| !w.reply.is_closed());
        self.reconfigs.retain(|_, r| !r.is_closed());
        self.confirming.retain(|_, r| !r.reply.is_closed());
        for list in self.wait_slot.values_mut().chain(self.wait_index.values_mut()) {
            list.retain(|r| !r.reply.is_closed());
        }
        self.wait_slot.retain(|_, l| !l.is_empty());
        self.wait_index.retain(|_, l| !l.is_empty());
    }

    fn sync_peers(&mut self) {
        for (node, info) in self.directory.all() {
            if node == self.me.node {
                continue;
            }
            let stale = self.peers.get(&node).is_none_or(|p| p.addr() != info.grpc);
            if stale {
                info!(peer = %node, addr = %info.grpc, "connecting to peer");
                let sender = PeerSender::spawn(node, info.grpc.clone(), self.metrics.clone());
                self.peers.insert(node, sender);
            }
        }
    }

    /// The core asks every `snapshot_every` slots. The store is cloned (O(1): its data is a
    /// persistent map) and encoded on a blocking thread; the core hears `SnapshotTaken` (and
    /// compacts its log) only when the bytes exist. Cadence: a snapshot costs O(store), so one is
    /// taken only once the log since the last one holds at least 1/[`SNAPSHOT_LOG_TO_STORE`] as
    /// many slots as the store has keys (a slot holds one write or more), which keeps the
    /// amortised encoding cost per write constant and the retained log within a fixed fraction
    /// of the store; but never more than `max_retained_slots` (the operator's bound on the log).
    /// Asks declined here are repeated by the core `snapshot_every` slots later.
    fn take_snapshot(&mut self, slot: Slot) {
        if slot != self.applied_slot {
            warn!(%slot, applied = %self.applied_slot, "snapshot asked at a slot other than the applied one");
        }
        if self.snapshot_encoding {
            debug!(%slot, "snapshot asked while one is being encoded; skipped");
            return;
        }
        let since = self.applied_slot.0.saturating_sub(self.last_snapshot_slot.0);
        if since < (self.store.len() as u64 / SNAPSHOT_LOG_TO_STORE).min(self.max_retained_slots) {
            debug!(%slot, since, keys = self.store.len(), "snapshot deferred: log short relative to the store");
            return;
        }
        // The driver's configuration, not the core's: the core may already have applied (and
        // queued) slots past this one, and a snapshot must carry the configuration governing
        // the slot right after its last one.
        let meta = paxos::SnapshotMeta { last_slot: self.applied_slot, config: self.config.clone() };
        self.snapshot_encoding = true;
        self.last_snapshot_slot = self.applied_slot;
        let store = self.store.clone();
        let chunk = self.snapshot_chunk_bytes;
        let inputs = self.inputs.clone();
        tokio::task::spawn_blocking(move || {
            let blob = snapshot::encode(&store, meta, chunk);
            drop(store);
            // The loop may have stopped meanwhile; then nobody needs the snapshot.
            let _ = inputs.blocking_send(Input::SnapshotEncoded(Arc::new(blob)));
        });
    }

    fn snapshot_encoded(&mut self, blob: Arc<SnapshotBlob>) {
        self.snapshot_encoding = false;
        self.metrics.snapshots_taken.inc();
        debug!(slot = %blob.meta.last_slot, bytes = blob.len(), "snapshot taken");
        let meta = blob.meta.clone();
        if self.latest_snapshot.as_ref().is_none_or(|l| l.meta.last_slot < meta.last_slot) {
            self.latest_snapshot = Some(blob);
        }
        let now = self.now();
        // The core ignores a snapshot at or below one it already has (after an install).
        self.replica.handle(now, Event::SnapshotTaken(meta));
    }

    /// Stream a snapshot to `to`. A learner without a configuration repeats its fetch every
    /// retry period, so a transfer already running to that peer is not started twice; a
    /// transfer that broke off is simply started again on the next ask (from the start).
    fn send_snapshot(&mut self, to: NodeId) {
        if self.snapshot_sends.get(&to).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Some(info) = self.directory.get(to) else {
            self.metrics.peer_send_failures.inc();
            return;
        };
        // The latest snapshot taken here, unless there is none yet or it is older than the
        // store (after a snapshot was installed here, or before the first `TakeSnapshot`): then
        // encode the store as it is now. Any snapshot at or above the core's compaction point
        // serves, and a fresher one leaves less of the log to fetch afterwards.
        // The encoding runs on a blocking thread from an O(1) clone of the store.
        let source = match self.latest_snapshot.clone() {
            Some(b) if b.meta.last_slot == self.applied_slot => snapshot::Source::Encoded(b),
            _ => {
                let meta = paxos::SnapshotMeta { last_slot: self.applied_slot, config: self.config.clone() };
                snapshot::Source::Store { store: Box::new(self.store.clone()), meta, chunk_bytes: self.snapshot_chunk_bytes }
            }
        };
        let handle = snapshot::spawn_send(self.me, to, info.grpc, source, self.metrics.clone());
        self.snapshot_sends.insert(to, handle);
    }

    fn install_snapshot(&mut self, meta: paxos::SnapshotMeta, store: Store) {
        if meta.last_slot <= self.applied_slot {
            debug!(slot = %meta.last_slot, applied = %self.applied_slot, "stale snapshot ignored");
            return;
        }
        info!(slot = %meta.last_slot, keys = store.len(), "installing snapshot");
        let mut store = store;
        store.set_config(*self.store.config());
        self.store = store;
        self.applied_slot = meta.last_slot;
        self.last_snapshot_slot = meta.last_slot;
        self.config = meta.config.clone();
        self.metrics.config_epoch.set(meta.config.epoch);
        self.metrics.snapshots_installed.inc();
        self.metrics.applied_slot.set(meta.last_slot.0);
        self.metrics.store_index.set(self.store.last_applied());
        let now = self.now();
        self.replica.handle(now, Event::SnapshotInstalled(meta));
        self.release_reads();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
