//! The node loop: a tokio task that owns the pure [`::node::Node`] and runs its outputs.
//!
//! Every decision (matching outcomes to clients, when a read may be served, snapshot cadence,
//! suspicion, removal) is in the `node` crate (`docs/node.md`). This shell only maps:
//!
//! * inputs from three channels to [`::node::Input`]s, with the loop's monotonic clock as
//!   [`paxos::Time`] (milliseconds since the loop started);
//! * [`Output::Send`] to the peer's bounded queue ([`PeerSender`]; a full queue drops and counts:
//!   the core tolerates loss, and the loop must never wait for a slow peer), a send to itself
//!   back into its own peer channel;
//! * answers to the oneshot of the request with that token; a client whose receiver is gone (its
//!   HTTP timeout fired) is swept every 500 ms and the node hears [`::node::Input::Cancel`];
//! * [`Output::EncodeSnapshot`] to a blocking thread (the result comes back on the control
//!   channel, and the shell keeps the bytes), [`Output::SendSnapshot`] to
//!   [`snapshot::spawn_send`] (one transfer per peer at a time; its end goes back to the node
//!   as [`::node::Input::SnapshotSent`]);
//! * election, suspicion and removal outputs to the etcd task's channels, counters to [`Metrics`].
//!
//! **Three channels.** Peer traffic, client requests and control (status, hints, snapshots,
//! removal, membership changes, shutdown) arrive on separate bounded channels, so a flood of one
//! cannot starve the others: the loop waits on all three and on its timers with an unbiased
//! `tokio::select!`, which polls the branches in a random order each turn, so every channel that
//! has something is served with probability at least 1/5 per turn whatever the others hold (a
//! `biased` order would let a flooded first branch starve the rest). Control is light; a status
//! request is answered within a few turns even under full peer and client load. After the input
//! a turn woke for, the loop takes up to [`TURN_INPUTS`] more that already wait on the peer and
//! client channels before it runs the outputs (`NodeLoop::drain_ready`).

use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::peer::PeerSender;
use crate::snapshot::{self, SnapshotBlob};
use ::node::{NodeCounters, Output, SnapshotSource, Token};
use kvstore::{SessionRef, Store, WriteOp};
use paxos::{ConfigChange, Configuration, Member, NodeId, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub use ::node::{
    Change, Changes, WatchError, WatchSpec,
    Consistency, NodeSettings, NodeStatus, NotServing, ReadAnswer, ReadDone, ReadFn, Refused,
    Removal, Suspicion, WriteDone, MAX_START_NUMBER, REQUEST_COUNTER_BITS, SNAPSHOT_LOG_TO_STORE,
};

/// Capacity of the peer and client channels (each).
pub const INPUT_QUEUE: usize = 65_536;
/// At most this many peer and client inputs are taken in one turn of the loop
/// (`NodeLoop::drain_ready`).
pub const TURN_INPUTS: usize = 256;
/// Capacity of the control channel.
pub const CONTROL_QUEUE: usize = 4096;

/// A message to the node loop.
pub enum Input {
    /// A message from a peer (peer channel).
    Peer(paxos::Envelope),
    /// The election's view of who should lead (control).
    Hint(Option<NodeId>),
    /// A client write (client channel).
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
    /// A client read (client channel).
    Read {
        /// How fresh it must be.
        consistency: Consistency,
        /// What to compute.
        f: ReadFn,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ReadDone, Refused>>,
    },
    /// Wait for changes to a key or prefix after an index (client channel). Answered once; a
    /// dropped receiver is cancelled by the sweep.
    Watch {
        /// What to wait for.
        spec: WatchSpec,
        /// Where the changes go.
        reply: oneshot::Sender<Result<Changes, WatchError>>,
    },
    /// A stream's progress probe (client channel): answered at once with the matching changes
    /// above `spec.after`, or none and the applied index (`node::Input::WatchProgress`).
    WatchProgress {
        /// The stream's key or prefix and the index it delivered every matching change up to.
        spec: WatchSpec,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Changes, WatchError>>,
    },
    /// Report the status (control).
    Status(oneshot::Sender<NodeStatus>),
    /// A point-in-time copy of the state machine as applied now, with its slot and
    /// configuration (control; the clone is O(1), the caller encodes it off the loop). For
    /// backups (`synod snapshot save`).
    Backup(oneshot::Sender<(paxos::SnapshotMeta, Box<Store>)>),
    /// Propose a membership change, leader only (control). Answered with the new configuration
    /// once the change is applied, or why not.
    Reconfigure {
        /// The change.
        change: ConfigChange,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Configuration, Refused>>,
    },
    /// A snapshot arrived from a peer and decoded (control).
    InstallSnapshot {
        /// What the core needs to know.
        meta: paxos::SnapshotMeta,
        /// The rebuilt store.
        store: Box<Store>,
    },
    /// A snapshot the node asked for finished encoding on a blocking thread (control); `true`
    /// when its file is written and synced (durable mode).
    SnapshotEncoded(Arc<SnapshotBlob>, bool),
    /// The directory changed: (re)connect peers (control).
    PeersChanged,
    /// The leader's removal mark names this incarnation (control).
    Removed(Removal),
    /// A snapshot transfer to `to` ended; `delivered` when the peer acknowledged an installed
    /// snapshot (control).
    SnapshotSent {
        /// The peer.
        to: NodeId,
        /// Whether it was installed.
        delivered: bool,
    },
    /// Durable mode: the write-ahead log made persist batches up to this number durable, or
    /// failed (control).
    Durable(Result<u64, String>),
    /// Durable mode: a snapshot file at this slot is durable (control).
    SnapshotFileWritten(paxos::Slot),
    /// Stop the loop (control).
    Shutdown,
}

/// The sending side of the node loop's three channels; [`NodeHandle::send`] picks the channel
/// by the kind of input.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    peer: mpsc::Sender<Input>,
    client: mpsc::Sender<Input>,
    control: mpsc::Sender<Input>,
}

/// The receiving side of the node loop's channels.
pub struct NodeInbox {
    peer: mpsc::Receiver<Input>,
    client: mpsc::Receiver<Input>,
    control: mpsc::Receiver<Input>,
}

/// One handle over a single channel (tests that play the node loop themselves).
impl From<mpsc::Sender<Input>> for NodeHandle {
    fn from(tx: mpsc::Sender<Input>) -> Self {
        NodeHandle {
            peer: tx.clone(),
            client: tx.clone(),
            control: tx,
        }
    }
}

impl NodeHandle {
    /// The three channels of a node loop.
    pub fn channels() -> (NodeHandle, NodeInbox) {
        let (peer, peer_rx) = mpsc::channel(INPUT_QUEUE);
        let (client, client_rx) = mpsc::channel(INPUT_QUEUE);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        (
            NodeHandle {
                peer,
                client,
                control,
            },
            NodeInbox {
                peer: peer_rx,
                client: client_rx,
                control: control_rx,
            },
        )
    }

    fn route(&self, input: &Input) -> &mpsc::Sender<Input> {
        match input {
            Input::Peer(_) => &self.peer,
            Input::Write { .. } | Input::Read { .. } | Input::Watch { .. } | Input::WatchProgress { .. } => &self.client,
            _ => &self.control,
        }
    }

    /// Send to the loop, waiting for room; an error means the loop is gone.
    pub async fn send(&self, input: Input) -> Result<(), mpsc::error::SendError<Input>> {
        self.route(&input).send(input).await
    }

    /// Send without waiting; false if the channel is full or the loop is gone (the input is
    /// dropped).
    pub fn try_send(&self, input: Input) -> bool {
        self.route(&input).try_send(input).is_ok()
    }

    /// Send from a blocking thread.
    pub fn blocking_send(&self, input: Input) -> Result<(), mpsc::error::SendError<Input>> {
        self.route(&input).blocking_send(input)
    }

    /// Whether the loop is gone.
    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}

/// What the node loop asks the etcd task to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionCmd {
    /// The core stepped down: resign, then campaign again.
    Resign,
}

/// Where the node loop's outputs go besides peers and clients.
pub struct Wiring {
    /// Peer addresses.
    pub directory: Directory,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The etcd task's election commands.
    pub election: mpsc::UnboundedSender<ElectionCmd>,
    /// Tells the server (which then drains and exits) that this replica was removed.
    pub removal: watch::Sender<Option<Removal>>,
    /// The node's leader suspicion, read by the etcd task (`etcd::suspect`).
    pub suspicion: watch::Sender<Option<Suspicion>>,
}

/// A backup's copy and where to send it.
type BackupCopy = (oneshot::Sender<(paxos::SnapshotMeta, Box<Store>)>, paxos::SnapshotMeta, Box<Store>);

/// The node loop's state.
pub struct NodeLoop {
    node: ::node::Node,
    me: Member,
    start: Instant,
    handle: NodeHandle,
    wiring: Wiring,
    peers: BTreeMap<NodeId, PeerSender>,
    latest_snapshot: Option<Arc<SnapshotBlob>>,
    /// Snapshot transfers in flight, by peer (one at a time per peer).
    snapshot_sends: BTreeMap<NodeId, tokio::task::JoinHandle<()>>,
    chunk_bytes: usize,
    next_token: Token,
    writes: BTreeMap<Token, oneshot::Sender<Result<WriteDone, Refused>>>,
    reads: BTreeMap<Token, oneshot::Sender<Result<ReadDone, Refused>>>,
    reconfigs: BTreeMap<Token, oneshot::Sender<Result<Configuration, Refused>>>,
    watches: BTreeMap<Token, oneshot::Sender<Result<Changes, WatchError>>>,
    /// The node's counters as last exported to the metrics.
    exported: NodeCounters,
    /// Durable mode: the write-ahead log (`durable.rs`).
    disk: Option<crate::durable::Writer>,
    /// Durable mode: outputs waiting for a persist batch to be durable, with its number.
    held: std::collections::VecDeque<(u64, Output)>,
    /// Backups taken while a persist was not yet durable, answered once it is: the state they
    /// copy may hold a write whose votes (the leader's own) are not on disk yet.
    held_backups: Vec<(u64, BackupCopy)>,
}

/// What a durable node loop starts from.
pub struct DiskSetup {
    /// The data directory.
    pub dir: crate::durable::DataDir,
    /// The opened write-ahead log.
    pub wal: storage::Wal<storage::StdFs>,
    /// A durable restart's state machine and core state; `None` for a new incarnation.
    pub recovered: Option<(Store, paxos::Recovered)>,
}

impl NodeLoop {
    /// A loop for `settings`; `handle` is the sending side of its own channels (it loops sends to
    /// itself back, and snapshot encoders answer on it).
    pub fn new(settings: NodeSettings, handle: NodeHandle, wiring: Wiring) -> Self {
        Self::build(::node::Node::new(settings.clone(), Time(0)), settings, handle, wiring, None)
    }

    /// An in-memory loop for a founder of a new cluster restored from a backup
    /// (`synod node --restore`): the state machine starts from `store` rather than empty, at
    /// slot 0 with the bootstrap configuration (`Node::recover` with no promise and no votes).
    pub fn restored(settings: NodeSettings, handle: NodeHandle, wiring: Wiring, store: Store) -> Self {
        let config = settings.bootstrap.clone().expect("a restoring replica is a founder");
        let disk = paxos::Recovered::from_snapshot(paxos::SnapshotMeta { last_slot: paxos::Slot(0), config });
        Self::build(::node::Node::recover(settings.clone(), Time(0), store, disk), settings, handle, wiring, None)
    }

    /// A loop in durable mode: every persist goes through the write-ahead log in `setup`
    /// before anything after it runs; snapshots are also written as files.
    pub fn durable(mut settings: NodeSettings, handle: NodeHandle, wiring: Wiring, setup: DiskSetup) -> Self {
        settings.durable = true;
        let (node, promised) = match setup.recovered {
            Some((store, disk)) => {
                let promised = disk.promised;
                (::node::Node::recover(settings.clone(), Time(0), store, disk), promised)
            }
            None => (::node::Node::new(settings.clone(), Time(0)), paxos::Ballot::ZERO),
        };
        let tx = handle.clone();
        let writer = crate::durable::Writer::start(setup.dir, setup.wal, promised, move |r| {
            // The loop may be gone (shutdown); then nobody waits.
            let _ = tx.blocking_send(Input::Durable(r));
        });
        Self::build(node, settings, handle, wiring, Some(writer))
    }

    fn build(node: ::node::Node, settings: NodeSettings, handle: NodeHandle, wiring: Wiring, disk: Option<crate::durable::Writer>) -> Self {
        let me = settings.me;
        let chunk_bytes = settings.snapshot_chunk_bytes;
        let start = Instant::now();
        NodeLoop {
            node,
            me,
            start,
            handle,
            wiring,
            peers: BTreeMap::new(),
            latest_snapshot: None,
            snapshot_sends: BTreeMap::new(),
            chunk_bytes,
            next_token: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reconfigs: BTreeMap::new(),
            watches: BTreeMap::new(),
            exported: NodeCounters::default(),
            disk,
            held: std::collections::VecDeque::new(),
            held_backups: Vec::new(),
        }
    }

    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Run until `Input::Shutdown`.
    pub async fn run(mut self, mut inbox: NodeInbox) {
        self.sync_peers();
        self.push_versions();
        self.run_outputs();
        let mut sweep = tokio::time::interval(Duration::from_millis(500));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .node
                .poll_timeout()
                .map(|t| self.start + Duration::from_millis(t.0));
            // Unbiased on purpose: see the module docs.
            tokio::select! {
                input = inbox.control.recv() => match input {
                    Some(Input::Shutdown) | None => break,
                    Some(input) => self.on_input(input),
                },
                Some(input) = inbox.peer.recv() => self.on_input(input),
                Some(input) = inbox.client.recv() => self.on_input(input),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
                _ = sweep.tick() => self.sweep(),
            }
            let full = self.drain_ready(&mut inbox) == TURN_INPUTS;
            self.run_outputs();
            if full {
                // `try_recv` takes nothing from tokio's cooperative budget: after a full turn,
                // let the peer writers and HTTP tasks run (on one worker they share this thread)
                // before taking more, so their queues drain instead of filling and dropping.
                tokio::task::yield_now().await;
            }
        }
        info!("node loop stopped");
        // These writes were proposed and may still be chosen by the others: their outcome is
        // unknown, never "not done". Dropping the replies makes the handlers answer 504.
        self.writes.clear();
    }

    /// Take what else is already waiting on the peer and client channels (alternating, at most
    /// [`TURN_INPUTS`] in all) before running the outputs: under load one turn then handles many
    /// inputs, so the writes that arrived together leave in one batch and the turn's fixed cost
    /// (the timer, the select, the output pass) is paid once for all of them. Control is not
    /// drained here; the bound keeps the next `select!`, where it competes, within about a
    /// millisecond of work.
    /// Returns how many it took.
    fn drain_ready(&mut self, inbox: &mut NodeInbox) -> usize {
        let mut taken = 0;
        while taken < TURN_INPUTS {
            let mut any = false;
            for rx in [&mut inbox.client, &mut inbox.peer] {
                if let Ok(input) = rx.try_recv() {
                    self.on_input(input);
                    taken += 1;
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        taken
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    fn on_input(&mut self, input: Input) {
        let now = self.now();
        let input = match input {
            Input::Peer(env) => ::node::Input::Peer(env),
            Input::Hint(leader) => ::node::Input::Hint(leader),
            Input::Write {
                session,
                op,
                forward,
                reply,
            } => {
                let token = self.token();
                self.writes.insert(token, reply);
                ::node::Input::Write {
                    token,
                    session,
                    op,
                    forward,
                }
            }
            Input::Read {
                consistency,
                f,
                reply,
            } => {
                let token = self.token();
                self.reads.insert(token, reply);
                ::node::Input::Read {
                    token,
                    consistency,
                    f,
                }
            }
            Input::Watch { spec, reply } => {
                let token = self.token();
                self.watches.insert(token, reply);
                ::node::Input::Watch { token, spec }
            }
            Input::WatchProgress { spec, reply } => {
                let token = self.token();
                self.watches.insert(token, reply);
                ::node::Input::WatchProgress { token, spec }
            }
            Input::Reconfigure { change, reply } => {
                let token = self.token();
                self.reconfigs.insert(token, reply);
                ::node::Input::Reconfigure { token, change }
            }
            Input::Backup(reply) => {
                let meta = paxos::SnapshotMeta { last_slot: self.node.applied_slot(), config: self.node.config().clone() };
                let copy = (reply, meta, Box::new(self.node.store().clone()));
                match self.disk.as_ref().and_then(|d| d.barrier()) {
                    Some(seq) => self.held_backups.push((seq, copy)),
                    None => {
                        let (reply, meta, store) = copy;
                        let _ = reply.send((meta, store));
                    }
                }
                return;
            }
            Input::Status(reply) => {
                // Bring the node's clock (contact ages, staleness) up to now first.
                self.node.handle_timeout(now);
                let _ = reply.send(self.node.status());
                return;
            }
            Input::InstallSnapshot { meta, store } => {
                if let Some(disk) = &self.disk {
                    // Keep the installed state as this replica's newest snapshot file, so a
                    // restart starts from it (off the loop: the clone is O(1), encoding is not).
                    let (dir, clone, meta2, handle) = (disk.dir().clone(), store.clone(), meta.clone(), self.handle.clone());
                    tokio::task::spawn_blocking(move || {
                        let bytes: Vec<u8> = clone.snapshot(snapshot::CHUNK_BYTES).flatten().collect();
                        match dir.write_snapshot(&meta2, &bytes) {
                            Ok(()) => {
                                let _ = handle.blocking_send(Input::SnapshotFileWritten(meta2.last_slot));
                            }
                            Err(e) => warn!(error = %format!("{e:#}"), "writing the installed snapshot failed"),
                        }
                    });
                }
                ::node::Input::InstallSnapshot { meta, store }
            }
            Input::Durable(Ok(seq)) => {
                if let Some(disk) = self.disk.as_mut() {
                    disk.made_durable(seq);
                }
                self.release_held();
                return;
            }
            Input::Durable(Err(e)) => {
                // An fsync error is not retriable (the kernel may have dropped the dirty
                // pages): this process must not acknowledge anything more. A restart reads
                // back what is durable.
                tracing::error!(error = %e, "the write-ahead log failed; exiting");
                std::process::exit(70);
            }
            Input::SnapshotFileWritten(slot) => {
                if let Some(disk) = &self.disk {
                    disk.snapshot_written(slot);
                }
                return;
            }
            Input::SnapshotEncoded(blob, file) => {
                self.wiring.metrics.snapshots_taken.inc();
                let meta = blob.meta.clone();
                if self
                    .latest_snapshot
                    .as_ref()
                    .is_none_or(|l| l.meta.last_slot < meta.last_slot)
                {
                    self.latest_snapshot = Some(blob);
                }
                ::node::Input::SnapshotEncoded { meta, file }
            }
            Input::PeersChanged => {
                self.sync_peers();
                self.push_versions();
                return;
            }
            Input::Removed(r) => ::node::Input::Removed(r),
            Input::SnapshotSent { to, delivered } => ::node::Input::SnapshotSent { to, delivered },
            Input::Shutdown => return,
        };
        self.node.handle(now, input);
    }

    /// Run every output the node has queued, in order; in durable mode, collect the turn's
    /// persists into one write-ahead-log batch and hold what follows a persist not yet durable
    /// (`durable::Writer`).
    fn run_outputs(&mut self) {
        while let Some(output) = self.node.poll_output() {
            if let Some(disk) = self.disk.as_mut() {
                if let Output::Persist(p) = &output {
                    disk.persist(p);
                    continue;
                }
                if let Some(seq) = disk.barrier() {
                    self.held.push_back((seq, output));
                    continue;
                }
            }
            self.run_output(output);
        }
        if let Some(disk) = self.disk.as_mut() {
            disk.end_turn();
        }
        self.export_counters();
    }

    /// Run the held outputs whose persist batch is now durable, in order.
    fn release_held(&mut self) {
        while let Some((seq, _)) = self.held.front() {
            if !self.disk.as_ref().is_some_and(|d| d.is_durable(*seq)) {
                break;
            }
            let (_, output) = self.held.pop_front().expect("just looked");
            self.run_output(output);
        }
        if let Some(disk) = self.disk.as_ref() {
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held_backups).into_iter().partition(|(seq, _)| disk.is_durable(*seq));
            self.held_backups = wait;
            for (_, (reply, meta, store)) in ready {
                let _ = reply.send((meta, store));
            }
        }
        self.export_counters();
    }

    fn run_output(&mut self, output: Output) {
        {
            match output {
                Output::Persist(_) => {}
                Output::Send(env) => self.send(env),
                Output::WriteDone { token, result } => {
                    if let Some(reply) = self.writes.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::ReadDone { token, result } => {
                    if let Some(reply) = self.reads.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::ReconfigureDone { token, result } => {
                    if let Some(reply) = self.reconfigs.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::EncodeSnapshot { meta, store } => {
                    let chunk = self.chunk_bytes;
                    let handle = self.handle.clone();
                    let dir = self.disk.as_ref().map(|d| d.dir().clone());
                    tokio::task::spawn_blocking(move || {
                        let blob = snapshot::encode(&store, meta, chunk);
                        drop(store);
                        if let Some(dir) = dir {
                            // Durable before the core hears of it (and before the log below it
                            // is removed, on `SnapshotEncoded`).
                            if let Err(e) = dir.write_snapshot(&blob.meta, &blob.bytes) {
                                // As on a failed fsync of the WAL: the disk refuses what this
                                // replica must keep (a snapshot file may be what a configuration
                                // change waits for: the node's configuration hold), so it stops
                                // rather than run on without it. A restart reads back what is
                                // durable.
                                tracing::error!(error = %format!("{e:#}"), "writing the snapshot file failed; exiting");
                                std::process::exit(70);
                            }
                            let _ = handle.blocking_send(Input::SnapshotFileWritten(blob.meta.last_slot));
                            let _ = handle.blocking_send(Input::SnapshotEncoded(Arc::new(blob), true));
                            return;
                        }
                        // The loop may have stopped meanwhile; then nobody needs the snapshot.
                        let _ = handle.blocking_send(Input::SnapshotEncoded(Arc::new(blob), false));
                    });
                }
                Output::SendSnapshot { to, from } => self.send_snapshot(to, from),
                Output::Resign => {
                    let _ = self.wiring.election.send(ElectionCmd::Resign);
                }
                Output::Suspect(s) => {
                    let _ = self.wiring.suspicion.send(s);
                }
                Output::LeaderChanged { leader, ballot } => {
                    self.wiring.metrics.set_leader(leader, ballot)
                }
                Output::ConfigChanged(config) => {
                    self.wiring.metrics.config_epoch.set(config.epoch);
                    self.wiring.directory.set_members(config.acceptors.iter().chain(config.learners.iter()).map(|m| m.node));
                }
                Output::Removed(r) => {
                    let _ = self.wiring.removal.send(Some(r));
                }
                Output::ServingChanged(serving) => {
                    self.wiring.metrics.serving.set(u64::from(serving))
                }
                Output::WatchDone { token, result } => {
                    if let Some(reply) = self.watches.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    /// Add what the node counted since the last turn to the metrics (a turn that counted
    /// nothing costs one comparison).
    fn export_counters(&mut self) {
        if let Some(d) = &self.disk {
            let (fsyncs, records) = d.stats();
            self.wiring.metrics.wal_fsyncs.raise_to(fsyncs);
            self.wiring.metrics.wal_records.raise_to(records);
        }
        self.wiring.metrics.applied_slot.set(self.node.applied_slot().0);
        self.wiring.metrics.store_index.set(self.node.store().last_applied());
        let now = self.node.counters();
        if *now == self.exported {
            return;
        }
        let was = &self.exported;
        let m = &self.wiring.metrics;
        m.proposals.add(now.proposals - was.proposals);
        m.forwarded.add(now.forwarded - was.forwarded);
        m.proposals_lost.add(now.proposals_lost - was.proposals_lost);
        m.applied_commands.add(now.applied_commands - was.applied_commands);
        m.reads_not_served.add(now.reads_not_served - was.reads_not_served);
        m.snapshots_installed.add(now.snapshots_installed - was.snapshots_installed);
        self.exported = now.clone();
    }

    fn send(&mut self, env: paxos::Envelope) {
        let to = env.to;
        if to == self.me.node {
            // The core may address itself; loop it back through the channel to keep ordering
            // with other inputs rather than re-entering the node here.
            if !self.handle.try_send(Input::Peer(env)) {
                self.wiring.metrics.peer_queue_drops.inc();
            }
            return;
        }
        if !self.peers.contains_key(&to) {
            self.sync_peers();
        }
        match self.peers.get(&to) {
            Some(p) => {
                if !p.try_send(env) {
                    self.wiring.metrics.peer_queue_drops.inc();
                }
            }
            None => self.wiring.metrics.peer_send_failures.inc(),
        }
    }

    /// Forget the requests whose client stopped waiting, and tell the node.
    fn sweep(&mut self) {
        let gone: Vec<Token> = closed(&self.writes)
            .chain(closed(&self.reads))
            .chain(closed(&self.reconfigs))
            .chain(closed(&self.watches))
            .collect();
        if gone.is_empty() {
            return;
        }
        let now = self.now();
        for token in gone {
            self.writes.remove(&token);
            self.reads.remove(&token);
            self.reconfigs.remove(&token);
            self.watches.remove(&token);
            self.node.handle(now, ::node::Input::Cancel(token));
        }
        self.snapshot_sends.retain(|_, h| !h.is_finished());
    }

    /// Tell the node what each registered replica reads (its cluster-version checks).
    fn push_versions(&mut self) {
        let versions = self.wiring.directory.all().into_iter().map(|(node, info)| (node, info.max_cluster_version)).collect();
        let now = self.now();
        self.node.handle(now, ::node::Input::PeerVersions(versions));
    }

    fn sync_peers(&mut self) {
        for (node, info) in self.wiring.directory.all() {
            if node == self.me.node {
                continue;
            }
            let stale = self.peers.get(&node).is_none_or(|p| p.addr() != info.grpc);
            if stale {
                info!(peer = %node, addr = %info.grpc, "connecting to peer");
                let sender =
                    PeerSender::spawn(node, info.grpc.clone(), self.wiring.directory.clone(), self.wiring.metrics.clone());
                self.peers.insert(node, sender);
            }
        }
    }

    /// Stream a snapshot to `to`. A learner without a configuration repeats its fetch every retry
    /// period, so a transfer already running to that peer is not started twice; a transfer that
    /// broke off is simply started again on the next ask (from the start).
    fn send_snapshot(&mut self, to: NodeId, from: SnapshotSource) {
        if self
            .snapshot_sends
            .get(&to)
            .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        // Every transfer the node asked for is reported as ended, also one never started.
        let failed = |handle: &NodeHandle| {
            let _ = handle.try_send(Input::SnapshotSent { to, delivered: false });
        };
        let Some(info) = self.wiring.directory.get(to) else {
            self.wiring.metrics.peer_send_failures.inc();
            failed(&self.handle);
            return;
        };
        let source = match from {
            SnapshotSource::Encoded(meta) => match &self.latest_snapshot {
                Some(b) if b.meta.last_slot == meta.last_slot => {
                    snapshot::Source::Encoded(b.clone())
                }
                _ => {
                    // The shell keeps the newest blob by the same rule as the node: unreachable.
                    warn!(peer = %to, slot = %meta.last_slot, "the snapshot the node named is not held here; not sent");
                    failed(&self.handle);
                    return;
                }
            },
            SnapshotSource::Store { meta, store } => snapshot::Source::Store {
                store,
                meta,
                chunk_bytes: self.chunk_bytes,
            },
        };
        let node = self.handle.clone();
        let handle = snapshot::spawn_send(
            self.me,
            to,
            (info.grpc, self.wiring.directory.clone()),
            source,
            self.wiring.metrics.clone(),
            snapshot::SNAPSHOT_STALL,
            move |delivered| async move {
                let _ = node.send(Input::SnapshotSent { to, delivered }).await;
            },
        );
        self.snapshot_sends.insert(to, handle);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The tokens of the waiters whose client stopped waiting (the receiving half is gone).
fn closed<T>(waiting: &BTreeMap<Token, oneshot::Sender<T>>) -> impl Iterator<Item = Token> + '_ {
    waiting.iter().filter(|(_, r)| r.is_closed()).map(|(t, _)| *t)
}

#[cfg(test)]
mod tests {
    //! The shell's routing: each kind of input lands on its own channel, so a flood of one kind
    //! cannot fill the queue the others wait in.
    use super::*;
    use paxos::{Incarnation, Message};

    #[tokio::test]
    async fn each_kind_of_input_goes_to_its_own_channel() {
        let (handle, mut inbox) = NodeHandle::channels();
        let me = Member { node: NodeId(1), incarnation: Incarnation(1) };
        let env = || paxos::Envelope {
            from: me,
            to: NodeId(1),
            msg: Message::Heartbeat { ballot: paxos::Ballot::default(), commit: paxos::Slot(0), checkpoint: paxos::Slot(0), read_round: 0, fence: paxos::Slot(0) },
        };
        handle.send(Input::Peer(env())).await.unwrap();
        let (reply, _rx) = oneshot::channel();
        handle.send(Input::Write { session: None, op: WriteOp::Delete { key: b"k".to_vec(), guard: None }, forward: true, reply }).await.unwrap();
        let (reply, _rx) = oneshot::channel();
        handle.send(Input::Status(reply)).await.unwrap();
        handle.send(Input::Hint(None)).await.unwrap();
        assert!(matches!(inbox.peer.try_recv(), Ok(Input::Peer(_))));
        assert!(inbox.peer.try_recv().is_err());
        assert!(matches!(inbox.client.try_recv(), Ok(Input::Write { .. })));
        assert!(inbox.client.try_recv().is_err());
        assert!(matches!(inbox.control.try_recv(), Ok(Input::Status(_))));
        assert!(matches!(inbox.control.try_recv(), Ok(Input::Hint(None))));

        // A full peer channel refuses more peer traffic without blocking, while client and
        // control inputs still go through.
        for _ in 0..INPUT_QUEUE {
            assert!(handle.try_send(Input::Peer(env())));
        }
        assert!(!handle.try_send(Input::Peer(env())));
        let (reply, _rx) = oneshot::channel();
        assert!(handle.try_send(Input::Status(reply)));
        let (reply, _rx) = oneshot::channel();
        assert!(handle.try_send(Input::Read { consistency: Consistency::Linearizable, f: Box::new(|_| ReadAnswer::Get(None)), reply }));
    }
}
