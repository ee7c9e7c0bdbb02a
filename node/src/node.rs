//! [`Node`]: the only owner of the core replica and the state machine.
//!
//! One call in, a queue of [`Output`]s out. [`Node::handle`] and [`Node::handle_timeout`] feed
//! the core, then drain its actions **in order** (`paxos/src/lib.rs`, "the driver's duties"):
//! `Persist` completes at once (state is in memory), `Send` becomes [`Output::Send`], `Apply`
//! goes to the [`Store`] and answers the write waiting on that [`RequestId`], and the reads whose
//! wait is over are served. Then the serving rule and the leader-silence check run
//! (`serving.rs`), and snapshot requests become [`Output::EncodeSnapshot`] (`snapshot.rs`).
//!
//! Client outcomes are matched by request id, never by slot: a write is done when an `Apply`
//! carries its id, and definitely not done when `ProposalLost` names it (then it is proposed once
//! more under a fresh id, which is safe because nothing happened); after a snapshot install, a
//! write the core no longer tracks is settled at once from the installed session table, or as
//! "outcome unknown" (duty 5). A client that stops waiting is forgotten on [`Input::Cancel`].
//!
//! Indexes. The core numbers *slots*; a slot holds a batch of commands. The store numbers every
//! command it applies (its `last_applied`), and versions and the `X-Synod-Index` header use the
//! store's numbering, which every replica computes identically because it applies the same slots
//! in the same order. The node keeps both: `applied_slot` to honour `ReadsReady { index }` and the
//! store's index for `min_index`.

use crate::types::*;
use crate::watch::{self, Watches};
use kvstore::{Request, SessionRef, Stamp, Store, WriteOp};
use paxos::{
    Action, Command, ConfigChange, Configuration, Event, Options, ProposeError, ReadId, Replica, RequestId, Slot,
    SnapshotMeta, Time, Value,
};
use std::collections::{BTreeMap, VecDeque};
use tracing::{debug, info, warn};

pub(crate) struct PendingWrite {
    pub(crate) token: Token,
    pub(crate) session: Option<SessionRef>,
    pub(crate) op: WriteOp,
    pub(crate) forward: bool,
    pub(crate) retried: bool,
}

pub(crate) struct PendingRead {
    pub(crate) token: Token,
    pub(crate) f: ReadFn,
}

/// The node layer of one replica (see the module docs).
pub struct Node {
    pub(crate) replica: Replica,
    pub(crate) store: Store,
    pub(crate) settings: NodeSettings,
    /// The time of the latest input or timeout.
    pub(crate) now: Time,
    pub(crate) applied_slot: Slot,
    /// The last request id counter used (ids are `start_number << 44 | counter`).
    pub(crate) next_seq: u64,
    /// The first id counter value of the next start: never reached by this one.
    pub(crate) seq_limit: u64,
    pub(crate) next_read: u64,
    /// The leader as the core last announced it (`Action::LeaderChanged`).
    pub(crate) leader: Option<paxos::NodeId>,
    pub(crate) writes: BTreeMap<RequestId, PendingWrite>,
    /// Which request id a write token is proposed under now (a lost proposal gets a new one).
    pub(crate) write_ids: BTreeMap<Token, RequestId>,
    /// Linearizable reads sent to the core, waiting for `ReadsReady`.
    pub(crate) confirming: BTreeMap<ReadId, PendingRead>,
    /// Reads waiting for the applied slot to reach a read index.
    pub(crate) wait_slot: BTreeMap<Slot, Vec<PendingRead>>,
    /// Reads waiting for the store index to reach a client's `min_index`.
    pub(crate) wait_index: BTreeMap<u64, Vec<PendingRead>>,
    /// Membership changes proposed here, waiting for their slot.
    pub(crate) reconfigs: BTreeMap<RequestId, Token>,
    /// Membership changes whose slot was applied in this drain, waiting for `ConfigChanged`.
    pub(crate) reconfig_applied: Vec<(Slot, Token)>,
    /// The newest snapshot the shell encoded (it holds the bytes).
    pub(crate) latest_encoded: Option<SnapshotMeta>,
    /// A snapshot is being encoded by the shell (at most one at a time).
    pub(crate) snapshot_encoding: bool,
    /// The applied slot of the last snapshot started or installed here (the cadence counts from it).
    pub(crate) last_snapshot_slot: Slot,
    /// Payload bytes of the values applied since `last_snapshot_slot` (durable mode's bound,
    /// `NodeSettings::snapshot_log_bytes`). After a durable restart it counts from the snapshot
    /// file, so a long log found on disk is snapshotted once it has been applied again.
    pub(crate) log_bytes_since_snapshot: u64,
    /// The configuration governing the slots after `applied_slot`, kept in step with the actions
    /// as they run (the core's own view may already be ahead of the store).
    pub(crate) config: Configuration,
    /// When a message from the leader last arrived (now, while this node leads).
    pub(crate) leader_contact: Option<Time>,
    /// The commit point known at the first leader contact as a member: applied before any read.
    pub(crate) catch_up_target: Option<Slot>,
    /// The catch-up target was reached (once per incarnation).
    pub(crate) caught_up: bool,
    /// A durable restart: the highest slot this replica had voted in when it stopped (its
    /// snapshot's slot if none above). The catch-up target is never below it (`serving.rs`).
    pub(crate) recovered_floor: Slot,
    /// This incarnation has been a member of a configuration it applied.
    pub(crate) was_member: bool,
    /// Set once this replica learns it was removed.
    pub(crate) removed: Option<Removal>,
    /// The leader the core knows and when this node last heard from it (or learned of it).
    pub(crate) heard: Option<(paxos::NodeId, Time)>,
    /// The suspicion last emitted.
    pub(crate) suspicion: Option<Suspicion>,
    /// The serving state last emitted.
    pub(crate) serving_said: Option<bool>,
    /// A snapshot was installed in this turn: settle untracked writes after the drain (duty 5).
    pub(crate) settle_after_install: bool,
    /// The history of changes and the watchers waiting on it (`watch.rs`).
    pub(crate) watches: Watches,
    /// What each registered replica reads ([`Input::PeerVersions`]); absent: version 1.
    pub(crate) peer_versions: BTreeMap<paxos::NodeId, u32>,
    /// Set when this replica met a cluster version above what its build reads: it applies
    /// nothing from that slot on (it never skips a slot the others applied) and serves nothing.
    pub(crate) halted: Option<String>,
    /// The lease sweep this node proposed as leader and when, until it is applied or lost.
    pub(crate) lease_sweep: Option<(RequestId, Time)>,
    /// The simulator's view of the log clock: for every request applied, (index, its slot's
    /// reading, what the log clock advanced by) (`sim::World::check_clock_credits`).
    #[cfg(feature = "sim")]
    pub(crate) clock_credits: Vec<(u64, u64, u64)>,
    /// No sweep is proposed before this (after the core refused one).
    pub(crate) sweep_not_before: Time,
    pub(crate) outputs: VecDeque<Output>,
    /// Durable mode: a configuration change was applied (or installed) and its configuration is
    /// not yet in a durable snapshot file (`snapshot.rs`, "the configuration hold").
    pub(crate) config_hold: Option<ConfigHold>,
    /// Outputs produced behind the configuration hold, in order; they run once it is released.
    pub(crate) held: VecDeque<Output>,
    pub(crate) counters: NodeCounters,
}

/// The configuration hold: every output queued from `start` on (an index into `Node::outputs`
/// during the current turn) waits until a snapshot file at or above `slot` is durable.
#[derive(Clone, Debug)]
pub(crate) struct ConfigHold {
    pub(crate) slot: Slot,
    /// The epoch of the configuration held for: a file releases the hold only if it carries
    /// that epoch or a later one (and is at or above `slot`).
    pub(crate) epoch: u64,
    pub(crate) start: usize,
    /// The configuration before the held change: what `status()` reports meanwhile (the epoch
    /// marks and the membership barrier built on them must not run ahead of the files).
    pub(crate) shown: Configuration,
}

/// A lease sweep not applied this long after it was proposed is proposed again.
const SWEEP_RETRY_MS: u64 = 1000;

impl Node {
    /// A node for `settings`, at time `now`. Poll its outputs before the first input.
    pub fn new(settings: NodeSettings, now: Time) -> Node {
        Node::start(settings, now, None)
    }

    /// A node restarted in durable mode with what its previous process of the same incarnation
    /// kept on disk: `store` is the state machine of the latest snapshot file (at
    /// `disk.snapshot`), `disk` the core's promise and votes replayed from the write-ahead log
    /// (`paxos::Replica::recover`). It is a member (if its snapshot's configuration says so)
    /// and votes at once; it serves once it has caught up to the leader's commit point, like
    /// any replica after a start.
    pub fn recover(settings: NodeSettings, now: Time, store: Store, disk: paxos::Recovered) -> Node {
        Node::start(settings, now, Some((store, disk)))
    }

    fn start(settings: NodeSettings, now: Time, recovered: Option<(Store, paxos::Recovered)>) -> Node {
        let mut options = Options::new(settings.me, settings.bootstrap.clone());
        options.heartbeat_ms = settings.heartbeat_ms;
        options.leader_lease_ms = settings.leader_lease_ms;
        options.retry_ms = (settings.heartbeat_ms * 4).max(50);
        options.batch_delay_ms = settings.batch_delay_ms;
        options.pipeline_window = settings.pipeline_window;
        options.snapshot_every = settings.snapshot_every;
        options.max_retained_slots = settings.max_retained_slots;
        options.seed = settings.seed;
        #[cfg(feature = "sim")]
        {
            options.bugs = settings.core_bugs;
        }
        options.restart_epoch = settings.start_number;
        let recovered_floor = recovered.as_ref().map_or(Slot(0), |(_, d)| {
            d.accepted.iter().map(|e| e.slot).max().unwrap_or(d.snapshot.last_slot).max(d.snapshot.last_slot)
        });
        let (replica, store, applied_slot, config) = match recovered {
            None => {
                let config = settings.bootstrap.clone().unwrap_or_else(|| Configuration::bootstrap([]));
                let mut store = Store::new(settings.store);
                if settings.bootstrap.is_some() {
                    store.set_cluster_version(settings.initial_cluster_version.min(kvstore::MAX_CLUSTER_VERSION));
                }
                (Replica::new(options, now), store, Slot(0), config)
            }
            Some((mut store, disk)) => {
                store.set_config(settings.store);
                let (slot, config) = (disk.snapshot.last_slot, disk.snapshot.config.clone());
                info!(%slot, keys = store.len(), promised = %disk.promised, accepted = disk.accepted.len(), "recovered from disk");
                (Replica::recover(options, now, disk), store, slot, config)
            }
        };
        let mut node = Node {
            replica,
            store,
            now,
            applied_slot,
            // Request ids must never repeat across restarts of this node id, or a waiter could be
            // handed another command's result: the start number (drawn in etcd, strictly
            // increasing per id) is the prefix, a counter the rest. No wall clock involved.
            next_seq: settings.start_number << REQUEST_COUNTER_BITS,
            seq_limit: (settings.start_number + 1) << REQUEST_COUNTER_BITS,
            next_read: 0,
            leader: None,
            writes: BTreeMap::new(),
            write_ids: BTreeMap::new(),
            confirming: BTreeMap::new(),
            wait_slot: BTreeMap::new(),
            wait_index: BTreeMap::new(),
            reconfigs: BTreeMap::new(),
            reconfig_applied: Vec::new(),
            latest_encoded: None,
            snapshot_encoding: false,
            last_snapshot_slot: applied_slot,
            log_bytes_since_snapshot: 0,
            config,
            leader_contact: None,
            catch_up_target: None,
            caught_up: false,
            recovered_floor,
            was_member: false,
            removed: None,
            heard: None,
            suspicion: None,
            serving_said: None,
            settle_after_install: false,
            watches: Watches::new(settings.watch_history_changes, settings.watch_history_bytes, settings.max_watchers),
            outputs: VecDeque::new(),
            config_hold: None,
            held: VecDeque::new(),
            counters: NodeCounters::default(),
            peer_versions: BTreeMap::new(),
            halted: None,
            lease_sweep: None,
            #[cfg(feature = "sim")]
            clock_credits: Vec::new(),
            sweep_not_before: now,
            settings,
        };
        // A node that starts from a store (a durable restart, a restore) does not know the
        // changes inside it one by one: a watch from below its index is answered `Compacted`,
        // never left waiting as if nothing had changed.
        node.watches.history.reset(node.store.last_applied());
        node.after(now);
        node.fence_outputs();
        node
    }

    /// Handle one input at time `now`, then run what the core asked for.
    pub fn handle(&mut self, now: Time, input: Input) {
        self.now = now;
        self.open_turn();
        match input {
            Input::Peer(env) => {
                let from = env.from.node;
                self.replica.handle(now, Event::Receive(env));
                // Word that shows the leader still leads (its heartbeat or accept taken, not a
                // message this replica refused) refreshes contact.
                let word = self.replica.leader_word() == Some((from, now)) || self.bug(|b| b.contact_on_any_message);
                if word && self.replica.known_leader() == Some(from) {
                    self.leader_contact = Some(now);
                    self.heard = Some((from, now));
                }
            }
            Input::Hint(leader) => {
                debug!(?leader, "leader hint from the election");
                self.replica.handle(now, Event::LeaderHint { leader });
            }
            Input::Write { token, session, op, forward } => {
                self.propose(PendingWrite { token, session, op, forward, retried: false });
            }
            Input::Read { token, consistency, f } => self.read(consistency, PendingRead { token, f }),
            Input::Cancel(token) => self.cancel(token),
            Input::Reconfigure { token, change } => self.reconfigure(token, change),
            Input::PeerVersions(v) => self.peer_versions = v,
            Input::InstallSnapshot { meta, store } => self.install_snapshot(meta, *store),
            Input::SnapshotEncoded { meta, file } => self.snapshot_encoded(meta, file),
            Input::Removed(r) => self.mark_removed(r),
            Input::SnapshotSent { to, delivered } => {
                self.replica.handle(self.now, paxos::Event::SnapshotSent { to, delivered })
            }
            Input::Watch { token, spec } => self.watch(token, spec),
            Input::WatchProgress { token, spec } => self.watch_progress(token, spec),
        }
        self.after(now);
        self.fence_outputs();
    }

    /// The time from [`Node::poll_timeout`] has come (calling it early is harmless): fire the
    /// core's due timers, and check the leader's silence and the staleness bound.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        self.open_turn();
        self.replica.handle_timeout(now);
        self.after(now);
        self.fence_outputs();
    }

    /// The earliest time [`Node::handle_timeout`] has something to do: the core's deadline, the
    /// moment the known leader's silence turns into a suspicion, and the moment a follower's last
    /// contact grows older than `max_read_staleness_ms`.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.replica.poll_timeout(), self.suspicion_deadline(), self.staleness_deadline(), self.sweep_due()].into_iter().flatten().min()
    }

    /// When this node, as leader, should next propose a lease sweep, if leases exist.
    ///
    /// The log clock moves only with the leader's slots, so the leader proposes the sweeps that
    /// both move it and expire what is due. If the last request applied carries this process's
    /// stamp, the clock will read `deadline` at this process's time `stamp + (deadline - clock)`:
    /// the sweep is due then. Otherwise this leader has no slot of its own yet (it just took
    /// over): a sweep now makes it the clock's reference (and gives every lease a full TTL,
    /// `kvstore::lease`). One sweep is in flight at a time, proposed again after
    /// [`SWEEP_RETRY_MS`] if it was neither applied nor lost.
    pub(crate) fn sweep_due(&self) -> Option<Time> {
        let me = self.settings.me.node;
        if self.leader != Some(me) || self.halted.is_some() || self.removed.is_some() || self.store.cluster_version() < 3 {
            return None;
        }
        let deadline = self.store.next_lease_deadline()?;
        if let Some((_, at)) = self.lease_sweep {
            return Some(Time(at.0 + SWEEP_RETRY_MS));
        }
        let due = match self.store.sessions().last_stamp() {
            // Our own slot of this term (`paxos::Tick::epoch`): the clock runs on our readings.
            Some(s) if s.node == me.0 && self.replica.tick_epoch_now() == Some(s.process) => {
                // A slot adds at most `max_clock_step_ms` to the log clock: wait no longer than
                // that, or an idle cluster's long lease outlives its TTL many times over.
                let step = self.store.config().max_clock_step_ms;
                Time(s.mono_ms.saturating_add(deadline.saturating_sub(self.store.log_clock_ms()).min(step)))
            }
            _ => self.now,
        };
        Some(due.max(self.sweep_not_before))
    }

    /// Propose a lease sweep if one is due (see [`Node::sweep_due`]).
    fn maybe_sweep(&mut self, now: Time) {
        if self.sweep_due().is_none_or(|at| at > now) {
            return;
        }
        let Some(id) = self.next_id() else { return };
        let me = self.settings.me;
        let request = Request { session: None, stamp: Stamp::new(me.node.0, self.settings.start_number, now.0), op: WriteOp::LeaseSweep };
        match self.replica.propose(now, Command { id, payload: request.encode() }) {
            Ok(()) => {
                debug!(?id, "lease sweep proposed");
                self.lease_sweep = Some((id, now));
                self.counters.lease_sweeps += 1;
            }
            Err(e) => {
                debug!(?e, "lease sweep not proposed");
                self.lease_sweep = None;
                self.sweep_not_before = Time(now.0 + 100);
            }
        }
    }

    /// The next thing for the shell to do, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The state machine (read only).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The core replica (read only; the simulator's invariant checks look at it).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The node layer's counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The slot the store reflects.
    pub fn applied_slot(&self) -> Slot {
        self.applied_slot
    }

    /// The configuration governing the slots after the applied one.
    pub fn config(&self) -> &Configuration {
        &self.config
    }

    /// The state for `/v1/status`. Cost: O(members + waiting read slots); the state hash is O(1)
    /// (`kvstore::Store::state_hash` keeps running sums of the keys' and the sessions' hashes).
    pub fn status(&self) -> NodeStatus {
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
            config: self.config_hold.as_ref().map_or(&self.config, |h| &h.shown).clone(),
            state_hash: self.store.state_hash().0,
            state_hash_index: self.store.last_applied(),
            serving: self.serving(),
            lag_slots: self.lag_slots(),
            last_contact_ms: self.last_contact_ms(),
            catch_up_target: self.catch_up_target,
            watchers: self.watches.waiting(),
            history_changes: self.watches.history.len(),
            history_oldest_index: self.watches.history.complete_after() + 1,
            cluster_version: self.store.cluster_version(),
            max_cluster_version: kvstore::MAX_CLUSTER_VERSION,
            halted: self.halted.clone(),
            leases: self.store.lease_count(),
            lease_sweeps: self.counters.lease_sweeps,
            leases_expired: self.counters.leases_expired,
        }
    }

    /// After every input: run the core's actions, then the serving rule and the silence check.
    fn after(&mut self, now: Time) {
        self.maybe_sweep(now);
        self.drain();
        if std::mem::take(&mut self.settle_after_install) {
            self.settle_untracked_writes();
        }
        self.update_serving(now);
        self.check_leader_silence(now);
    }

    /// The next request id, or `None` once this start used all 2^44 of its ids.
    fn next_id(&mut self) -> Option<RequestId> {
        if self.next_seq + 1 >= self.seq_limit {
            warn!("this process used up its request ids; restart it");
            return None;
        }
        self.next_seq += 1;
        Some(RequestId { node: self.settings.me.node, seq: self.next_seq })
    }

    fn write_done(&mut self, token: Token, result: Result<WriteDone, Refused>) {
        self.write_ids.remove(&token);
        self.outputs.push_back(Output::WriteDone { token, result });
    }

    /// The index a write's reply reports: the index its result was evaluated at. A request
    /// answered from the session table (a retry) reports the first evaluation's index, kept in the
    /// entry, not the slot of the duplicate: the stored result (a write that took effect there,
    /// or a refusal carrying the key's value then) reflects that state. A client (and the
    /// checker) takes a write's index as its place among writes: CI chaos seed 50620 found the
    /// later index making a correct read look like a missed write, and a review found a retried
    /// refusal naming an index at which the key no longer held the value it showed.
    fn reply_index(&self, req: &Request, index: u64) -> u64 {
        if self.bug(|b| b.duplicate_index) {
            return index;
        }
        req.session
            .and_then(|s| {
                let e = self.store.sessions().get(s.client)?;
                (e.seq == s.seq && e.fingerprint == req.op.fingerprint()).then_some(e.index)
            })
            .unwrap_or(index)
    }

    fn propose(&mut self, pending: PendingWrite) {
        if let Some(r) = self.removed {
            return self.write_done(pending.token, Err(Refused::Removed(r)));
        }
        if let Some(why) = &self.halted {
            return self.write_done(pending.token, Err(Refused::Halted(why.clone())));
        }
        let (needs, runs) = (u32::from(pending.op.format()), self.store.cluster_version());
        if needs > runs {
            return self.write_done(pending.token, Err(Refused::ClusterVersion { needs, runs }));
        }
        let Some(id) = self.next_id() else {
            return self.write_done(pending.token, Err(Refused::Busy));
        };
        // The stamp a request is applied with is its slot's (`paxos::Tick`, the leader's), put in
        // at apply; this one only serves a request applied outside a slot (tests, tools).
        let now = self.now;
        let me = self.settings.me;
        let stamp = Stamp::new(me.node.0, self.settings.start_number, now.0);
        let request = Request { session: pending.session, stamp, op: pending.op.clone() };
        let command = Command { id, payload: request.encode() };
        let mut result = self.replica.propose(now, command.clone());
        if let Err(ProposeError::NotLeader { leader: Some(l) }) = result {
            // A follower that serves hands the command to the leader inside the peer stream and
            // answers from its own log once it applies it (`paxos/src/forward.rs`); one that is
            // catching up or lagging would answer late, so the REST layer relays the request
            // instead (`Refused::NotLeader`).
            if l != me.node && pending.forward && self.serving().is_ok() {
                result = self.replica.forward(now, command);
                if result.is_ok() {
                    self.counters.forwarded += 1;
                }
            }
        }
        match result {
            Ok(()) => {
                self.counters.proposals += 1;
                self.write_ids.insert(pending.token, id);
                self.writes.insert(id, pending);
            }
            Err(e) => {
                let refused = match e {
                    ProposeError::NotLeader { leader } => Refused::NotLeader { leader: leader.or(self.leader) },
                    ProposeError::Backpressure => Refused::Busy,
                    ProposeError::TooLarge { size, limit } => Refused::TooLarge { size, limit },
                    ProposeError::Config(_) => Refused::Busy,
                };
                self.write_done(pending.token, Err(refused));
            }
        }
    }

    fn reconfigure(&mut self, token: Token, change: ConfigChange) {
        if let Err(why) = self.version_check(change) {
            warn!(?change, %why, "membership change refused");
            self.outputs.push_back(Output::ReconfigureDone { token, result: Err(Refused::Config(why)) });
            return;
        }
        let Some(id) = self.next_id() else {
            self.outputs.push_back(Output::ReconfigureDone { token, result: Err(Refused::Busy) });
            return;
        };
        match self.replica.propose_config(self.now, id, change) {
            Ok(()) => {
                info!(?change, "membership change proposed");
                self.reconfigs.insert(id, token);
            }
            Err(ProposeError::NotLeader { leader }) => {
                let result = Err(Refused::NotLeader { leader: leader.or(self.leader) });
                self.outputs.push_back(Output::ReconfigureDone { token, result });
            }
            Err(e) => {
                self.outputs.push_back(Output::ReconfigureDone { token, result: Err(Refused::Config(e.to_string())) });
            }
        }
    }

    /// The highest cluster version `node` reads, as its registration says (1: no word, the
    /// previous release's registration). This replica's own is its build's.
    pub(crate) fn reads_version(&self, node: paxos::NodeId) -> u32 {
        if node == self.settings.me.node {
            return kvstore::MAX_CLUSTER_VERSION;
        }
        self.peer_versions.get(&node).copied().unwrap_or(1)
    }

    /// The cluster-version rules of a configuration change (docs/upgrades.md): a member is added
    /// or promoted only if it reads the cluster's version, and the version is raised only to one
    /// that this build and every member reads. Exact, because the core admits one change at a
    /// time and applies a chosen one before it takes the next: `self.config` and the store's
    /// version are those in force for the next change.
    fn version_check(&self, change: ConfigChange) -> Result<(), String> {
        let runs = self.store.cluster_version();
        match change {
            ConfigChange::AddLearner(m) | ConfigChange::Promote(m) => {
                let reads = self.reads_version(m.node);
                if reads < runs && !self.bug(|b| b.admit_old_members) {
                    return Err(format!(
                        "node {} reads cluster versions up to {reads}; the cluster runs version {runs}: upgrade its binary",
                        m.node
                    ));
                }
            }
            ConfigChange::SetVersion(v) => {
                if v <= runs {
                    return Err(format!("the cluster already runs version {runs}"));
                }
                if v > kvstore::MAX_CLUSTER_VERSION {
                    return Err(format!("this build runs cluster versions up to {}", kvstore::MAX_CLUSTER_VERSION));
                }
                if let Some(m) = self.config.members().find(|m| self.reads_version(m.node) < v) {
                    return Err(format!("member {} reads cluster versions up to {}", m.node, self.reads_version(m.node)));
                }
            }
            ConfigChange::Remove(_) => {}
        }
        Ok(())
    }

    /// Stop applying the log, loudly (it stays an acceptor: voting does not read values).
    fn halt(&mut self, why: String) {
        if self.halted.is_none() {
            tracing::error!(%why, "HALTED: this replica stops applying the log");
            self.halted = Some(why);
        }
    }

    fn read(&mut self, consistency: Consistency, read: PendingRead) {
        if let Some(r) = self.removed {
            self.counters.reads_not_served += 1;
            self.outputs.push_back(Output::ReadDone { token: read.token, result: Err(Refused::Removed(r)) });
            return;
        }
        match consistency {
            Consistency::Sequential { min_index } => {
                if let Err(not) = self.serving() {
                    self.counters.reads_not_served += 1;
                    let result = Err(self.refusal(not));
                    self.outputs.push_back(Output::ReadDone { token: read.token, result });
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
                // catching up or lagging: then it could not apply the index in time, so the read
                // goes to the leader.
                if !self.replica.is_leader() && self.serving().is_err() {
                    let result = Err(Refused::NotLeader { leader: self.leader });
                    self.outputs.push_back(Output::ReadDone { token: read.token, result });
                    return;
                }
                if self.bug(|b| b.local_linearizable_read) && !self.replica.is_leader() {
                    self.serve(read);
                    return;
                }
                self.next_read += 1;
                let id = ReadId(self.next_read);
                match self.replica.read(self.now, id) {
                    Ok(()) => {
                        self.confirming.insert(id, read);
                    }
                    Err(ProposeError::NotLeader { leader }) => {
                        let result = Err(Refused::NotLeader { leader: leader.or(self.leader) });
                        self.outputs.push_back(Output::ReadDone { token: read.token, result });
                    }
                    Err(_) => {
                        self.outputs.push_back(Output::ReadDone { token: read.token, result: Err(Refused::Busy) });
                    }
                }
            }
        }
    }

    /// A watch: answered from the history now, or it waits for an apply (`watch.rs`). Like a
    /// sequential read, it reflects this replica's applied state; unlike one, it is not refused
    /// while catching up or lagging: it only waits longer.
    fn watch(&mut self, token: Token, spec: WatchSpec) {
        let result = match self.removed {
            Some(r) => Some(Err(crate::WatchError::Removed(r))),
            None => self.watches.watch(token, spec, self.store.last_applied()),
        };
        if let Some(result) = result {
            self.outputs.push_back(Output::WatchDone { token, result });
        }
    }

    fn watch_progress(&mut self, token: Token, spec: WatchSpec) {
        let result = match self.removed {
            Some(r) => Err(crate::WatchError::Removed(r)),
            None => self.watches.progress(&spec, self.store.last_applied()),
        };
        self.outputs.push_back(Output::WatchDone { token, result });
    }

    pub(crate) fn watches_done(&mut self, done: Vec<(Token, Result<crate::Changes, crate::WatchError>)>) {
        for (token, result) in done {
            self.outputs.push_back(Output::WatchDone { token, result });
        }
    }

    fn serve(&mut self, read: PendingRead) {
        let answer = (read.f)(&self.store);
        let done = ReadDone { answer, index: self.store.last_applied(), lag_slots: self.lag_slots(), last_contact_ms: self.last_contact_ms() };
        self.outputs.push_back(Output::ReadDone { token: read.token, result: Ok(done) });
    }

    /// Forget a request whose client stopped waiting. A proposed write stays in the core (it may
    /// still be chosen; nobody hears of it).
    fn cancel(&mut self, token: Token) {
        if let Some(id) = self.write_ids.remove(&token) {
            self.writes.remove(&id);
            return;
        }
        if self.watches.cancel(token) {
            return;
        }
        self.reconfigs.retain(|_, t| *t != token);
        self.confirming.retain(|_, r| r.token != token);
        for list in self.wait_slot.values_mut().chain(self.wait_index.values_mut()) {
            list.retain(|r| r.token != token);
        }
        self.wait_slot.retain(|_, l| !l.is_empty());
        self.wait_index.retain(|_, l| !l.is_empty());
    }

    /// Run every action the core has queued, in order.
    fn drain(&mut self) {
        let mut applied_any = false;
        let mut applied_bytes = false;
        while let Some(action) = self.replica.poll_action() {
            match action {
                // In-memory mode: the state is "durable" as soon as the core holds it, so the
                // barrier is already passed. Durable mode: the shell writes and fsyncs it before
                // it runs any output queued after it (the barrier moves to the output queue,
                // whose order is the actions' order).
                Action::Persist(p) => {
                    if self.settings.durable {
                        self.outputs.push_back(Output::Persist(p));
                    }
                }
                Action::Send(env) => self.outputs.push_back(Output::Send(env)),
                Action::Apply { slot, value } => {
                    self.log_bytes_since_snapshot += value.payload_bytes() as u64;
                    self.apply(slot, value);
                    applied_any = true;
                    applied_bytes = true;
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
                            self.outputs.push_back(Output::ReadDone { token: r.token, result: Err(Refused::NotLeader { leader }) });
                        }
                    }
                }
                Action::TakeSnapshot { slot } => self.take_snapshot(slot),
                Action::SendSnapshot { to } => self.send_snapshot(to),
                Action::LeaderChanged { leader, ballot } => {
                    info!(?leader, %ballot, "leader changed");
                    self.leader = leader;
                    self.outputs.push_back(Output::LeaderChanged { leader, ballot });
                }
                Action::SteppedDown => {
                    info!("stepped down; resigning from the election");
                    self.outputs.push_back(Output::Resign);
                }
                // A halted replica's store stopped below this slot: its configuration stays the
                // one of its applied slot, or a snapshot it hands out (its slot, this
                // configuration) would carry a later slot's (review of issue 30).
                Action::ConfigChanged { .. } if self.halted.is_some() => {}
                Action::ConfigChanged { slot, config } => {
                    info!(%slot, epoch = config.epoch, acceptors = ?config.acceptors, learners = ?config.learners, "configuration changed");
                    let before = std::mem::replace(&mut self.config, config.clone());
                    // Durable mode: after a change of the acceptors nothing leaves the process
                    // before a snapshot file carrying it is durable (`snapshot.rs`).
                    if before.acceptors != config.acceptors {
                        self.hold_for_config(slot, before);
                    }
                    self.outputs.push_back(Output::ConfigChanged(config.clone()));
                    let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reconfig_applied).into_iter().partition(|(s, _)| *s == slot);
                    self.reconfig_applied = rest;
                    for (_, token) in done {
                        self.outputs.push_back(Output::ReconfigureDone { token, result: Ok(config.clone()) });
                    }
                }
            }
        }
        // A change whose slot was applied without a `ConfigChanged` was refused by the
        // configuration in force at its slot (a stale proposal): it had no effect.
        for (_, token) in std::mem::take(&mut self.reconfig_applied) {
            let result = Err(Refused::Config("the change had no effect at its slot".into()));
            self.outputs.push_back(Output::ReconfigureDone { token, result });
        }
        // The byte cadence once every queued action ran: a snapshot at the slot just applied
        // must carry the configuration governing the slot after it, and the core queues a slot's
        // `ConfigChanged` after its `Apply` (taken inside the `Apply` arm, a snapshot at a
        // change's slot carried the configuration before it: a restart from it never applied
        // the change, and its file released the configuration hold; review of the hold).
        if applied_bytes {
            self.snapshot_by_bytes();
        }
        if applied_any {
            self.release_reads();
        }
    }

    fn apply(&mut self, slot: Slot, value: Value) {
        if slot <= self.applied_slot {
            warn!(%slot, applied = %self.applied_slot, "core applied a slot twice; ignored");
            return;
        }
        if self.halted.is_some() {
            return;
        }
        if let Value::Reconfigure { change: ConfigChange::SetVersion(v), .. } = &value {
            if *v > kvstore::MAX_CLUSTER_VERSION && !self.bug(|b| b.skip_unknown_version) {
                self.halt(format!(
                    "slot {slot} raises the cluster version to {v}; this build runs versions up to {}: replace this replica's binary with a newer one",
                    kvstore::MAX_CLUSTER_VERSION
                ));
                return;
            }
            info!(%slot, version = v, "cluster version raised");
            self.store.set_cluster_version(*v);
        }
        if let Value::Reconfigure { id, .. } = &value {
            if let Some(token) = self.reconfigs.remove(id) {
                self.reconfig_applied.push((slot, token));
            }
        }
        if let Value::Batch(cmds, tick) = value {
            // The log clock (session expiry) runs on the leader's ticks: the time one leader
            // measured between two of its slots that follow each other in the log. A request's
            // own stamp is its proposer's, which for a forwarded write is the follower that took
            // it: with clients spread over replicas, consecutive requests rarely shared a
            // proposer and the clock all but stopped (`kvstore::session`).
            #[cfg(feature = "sim")]
            let tick = if self.bug(|b| b.proposer_clock) { None } else { Some(tick) };
            #[cfg(not(feature = "sim"))]
            let tick = Some(tick);
            let stamp = tick.map(|t| Stamp::new(t.leader.0, t.epoch, t.mono_ms));
            for cmd in cmds {
                let index = self.store.last_applied() + 1;
                #[cfg(feature = "sim")]
                if let Some(output) = self.apply_bugs(index, &cmd) {
                    if let Some(w) = self.writes.remove(&cmd.id) {
                        self.write_done(w.token, Ok(WriteDone { output, index }));
                    }
                    continue;
                }
                // Decoded once here (the store would decode it too): the watch history records
                // the change from the operation and its output.
                let (output, reply_index) = match Request::decode(&cmd.payload) {
                    Ok(mut req) => {
                        if let Some(stamp) = stamp {
                            req.stamp = stamp;
                        }
                        let before = watch::keys_before(&self.store, &req);
                        #[cfg(feature = "sim")]
                        let clock_before = self.store.log_clock_ms();
                        #[cfg(feature = "sim")]
                        {
                            self.store.no_term_order = self.bug(|b| b.clock_without_term_order);
                        }
                        let output = self.store.apply_request(index, &req);
                        #[cfg(feature = "sim")]
                        self.clock_credits.push((index, req.stamp.mono_ms, self.store.log_clock_ms().saturating_sub(clock_before)));
                        self.watches.record(index, &req.op, &output, before, &self.store);
                        let at = if self.writes.contains_key(&cmd.id) { self.reply_index(&req, index) } else { index };
                        (output, at)
                    }
                    Err(_) => (self.store.apply(index, &cmd.payload), index),
                };
                #[cfg(feature = "sim")]
                if self.bug(|b| b.forget_sessions) {
                    if let Ok(req) = Request::decode(&cmd.payload) {
                        if let Some(s) = req.session {
                            self.store.forget_session(s.client);
                        }
                    }
                }
                self.counters.applied_commands += 1;
                if let Ok(kvstore::WriteResult { outcome: kvstore::WriteOutcome::LeasesExpired { ids, .. }, .. }) = &output {
                    self.counters.leases_expired += ids.len() as u64;
                }
                if self.lease_sweep.is_some_and(|(s, _)| s == cmd.id) {
                    self.lease_sweep = None;
                    // Our sweep did not make our term the clock's reference (its stamp was of an
                    // older term than the log's last: never with a correct core, but a sweep
                    // then would be due at once, for ever): wait before the next.
                    let me = self.settings.me.node.0;
                    let ours = self.store.sessions().last_stamp().is_some_and(|s| s.node == me && self.replica.tick_epoch_now() == Some(s.process));
                    if !ours {
                        self.sweep_not_before = Time(self.now.0 + SWEEP_RETRY_MS);
                    }
                }
                if let Some(w) = self.writes.remove(&cmd.id) {
                    self.write_done(w.token, Ok(WriteDone { output, index: reply_index }));
                }
            }
        }
        self.applied_slot = slot;
        let done = self.watches.wake(self.store.last_applied());
        self.watches_done(done);
    }

    fn lost(&mut self, id: RequestId) {
        self.counters.proposals_lost += 1;
        if self.lease_sweep.is_some_and(|(s, _)| s == id) {
            self.lease_sweep = None;
            return;
        }
        if let Some(token) = self.reconfigs.remove(&id) {
            self.outputs.push_back(Output::ReconfigureDone { token, result: Err(Refused::Lost) });
            return;
        }
        let Some(mut w) = self.writes.remove(&id) else { return };
        if w.retried {
            self.write_done(w.token, Err(Refused::Lost));
        } else {
            // Lost means "not chosen and never will be", so proposing again cannot apply twice.
            w.retried = true;
            self.propose(w);
        }
    }

    pub(crate) fn release_reads(&mut self) {
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

    /// Duty 5: after a snapshot install, a write the core no longer tracks was settled inside the
    /// snapshot. If it carried a session and the installed session table holds that request's
    /// result, that is its answer; otherwise nobody can say any more whether it was applied, and
    /// the client hears "outcome unknown" now rather than at its timeout.
    pub(crate) fn settle_untracked_writes(&mut self) {
        // A write whose exact request (session, number, fingerprint) the installed session table
        // holds was applied inside the snapshot: answer its result, whether or not the core still
        // tracks the id (it keeps tracking a forwarded id for a while, but that slot will never be
        // applied here). Any other write the core no longer tracks: outcome unknown.
        let pending: Vec<RequestId> = self.writes.keys().copied().collect();
        for id in pending {
            let from_session = self.writes.get(&id).and_then(|w| {
                let s = w.session?;
                let e = self.store.sessions().get(s.client)?;
                (e.seq == s.seq && e.fingerprint == w.op.fingerprint()).then(|| (e.result.clone(), e.index))
            });
            if let Some((output, at)) = from_session {
                let Some(w) = self.writes.remove(&id) else { continue };
                self.counters.settled_from_sessions += 1;
                // The index the stored result was evaluated at (`reply_index`).
                let index = if self.bug(|b| b.duplicate_index) { self.store.last_applied() } else { at };
                self.write_done(w.token, Ok(WriteDone { output, index }));
            } else if !self.replica.tracks(id) {
                let Some(w) = self.writes.remove(&id) else { continue };
                self.counters.settled_unknown += 1;
                self.write_done(w.token, Err(Refused::OutcomeUnknown));
            }
        }
        // A membership change the core forgot: the installed configuration may or may not hold
        // it; the manager re-derives its next step from the configuration.
        let untracked: Vec<RequestId> = self.reconfigs.keys().copied().filter(|id| !self.replica.tracks(*id)).collect();
        for id in untracked {
            if let Some(token) = self.reconfigs.remove(&id) {
                self.outputs.push_back(Output::ReconfigureDone { token, result: Err(Refused::OutcomeUnknown) });
            }
        }
    }
}

#[cfg(feature = "sim")]
impl Node {
    /// Whether a deliberate bug is switched on (always false without the `sim` feature).
    pub(crate) fn bug(&self, f: impl Fn(&Bugs) -> bool) -> bool {
        f(&self.settings.bugs)
    }

    /// `drop_acked_writes`: every third plain put (by request id) is skipped in the store but
    /// acknowledged as applied, identically on every replica.
    fn apply_bugs(&mut self, index: u64, cmd: &paxos::Command) -> Option<kvstore::Output> {
        if !self.bug(|b| b.drop_acked_writes) || !cmd.id.seq.is_multiple_of(3) {
            return None;
        }
        let req = Request::decode(&cmd.payload).ok()?;
        if !matches!(req.op, WriteOp::Put { guard: None, .. }) {
            return None;
        }
        self.store.skip(index).ok()?;
        Some(Ok(kvstore::WriteResult { index, outcome: kvstore::WriteOutcome::Put { previous_version: None } }))
    }
}

#[cfg(not(feature = "sim"))]
impl Node {
    pub(crate) fn bug(&self, _f: impl Fn(&Bugs) -> bool) -> bool {
        false
    }
}
