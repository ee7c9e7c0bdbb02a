//! How a replica is set up.

use crate::config::Configuration;
use crate::ids::Member;

/// Settings of one replica. Times are in milliseconds of the caller's clock.
#[derive(Clone, Debug)]
pub struct Options {
    /// This replica's identity (node and incarnation).
    pub me: Member,
    /// The configuration to start from. `Some` only for a fresh cluster's founding members;
    /// a joining or restarted replica passes `None`, starts as a learner and waits to be sent the
    /// log or a snapshot by the leader that added it.
    pub bootstrap: Option<Configuration>,
    /// Seed of the core's only random number generator.
    pub seed: u64,
    /// How often a leader sends heartbeats.
    pub heartbeat_ms: u64,
    /// How long a leader waits for a phase 1 or phase 2 quorum before resending.
    pub retry_ms: u64,
    /// How long a leader goes without hearing from a quorum before it steps down.
    pub leader_lease_ms: u64,
    /// Most client commands in one slot.
    pub batch_max_commands: usize,
    /// Most payload bytes in one slot.
    pub batch_max_bytes: usize,
    /// How long a leader holds a partial batch before proposing it (0: propose at once).
    pub batch_delay_ms: u64,
    /// How soon a leader pushes a commit point no `Accept` carried (a heartbeat ahead of
    /// time), so that followers apply promptly when the leader has nothing more to propose.
    pub commit_push_ms: u64,
    /// Most slots a leader has in phase 2 at once (pipelining window).
    pub pipeline_window: u64,
    /// Most slots a new leader has in phase 2 at once while it re-proposes the slots it adopted
    /// in phase 1 (before any new command). After every replica restarted, those are every slot
    /// above the newest snapshot (thousands); all at once, they overflowed the peer queues.
    pub recovery_window: u64,
    /// Most payload bytes of those re-proposed slots in phase 2 at once (at least one slot): a
    /// window of 64 slots of 200 KB each (large values batched) kept the acceptors writing and
    /// answering for longer than the leader's lease.
    pub recovery_window_bytes: usize,
    /// Most bytes of accepted values (payload bytes, at least one value) one `Promise` carries.
    /// An acceptor with more above the `Prepare`'s first slot answers with a page and
    /// `more: true`; the candidate asks for the next page (`Prepare` from the slot after the
    /// last one reported) and counts the promise once the last page arrived. Keeps every
    /// phase 1 message small whatever the log's length (one `Promise` used to carry the whole
    /// log above the snapshot: 34 MB after a restart, over the 64 MiB gRPC limit at 1 M keys).
    pub promise_page_bytes: usize,
    /// Most proposals queued at the leader before `propose` answers `Backpressure`.
    pub max_queued_commands: usize,
    /// Ask for a snapshot every this many applied slots.
    pub snapshot_every: u64,
    /// Past this many slots retained above the checkpoint, the leader stops waiting for the
    /// slowest member; that member later catches up from a snapshot.
    pub max_retained_slots: u64,
    /// At most one `Action::SendSnapshot` per peer within this many milliseconds. A learner
    /// without a configuration fetches from slot 0 every `retry_ms` and each such fetch is
    /// answered `Compacted`; without this limit every answer would also start a transfer.
    /// A few times `retry_ms` (default 10 x) leaves room for one transfer to arrive.
    pub snapshot_resend_ms: u64,
    /// How long a whole-store transfer may take. A learner that a peer answered `Compacted`
    /// (a snapshot is coming from it) asks that peer only, and turns to another member only
    /// when no snapshot arrived within this long; a sender that never heard how a transfer it
    /// started ended (`Event::SnapshotSent`) starts another after this long.
    pub snapshot_wait_ms: u64,
    /// How far past what a replica knows a peer's message may name a slot: an `Accept` more
    /// than this past the acceptor's commit point, a `Promise` reporting a value more than this
    /// past its `first_slot`, are malformed (dropped and counted: no vote, no promise counted,
    /// which is always safe). A commit point more than this ahead is believed only that far.
    /// Without the bound one bad message could make a new leader fill billions of holes.
    pub max_slot_gap: u64,
    /// A number that grows with every process start of this replica's incarnation (the driver's
    /// start number). A durable restart keeps the incarnation, so counters that must never repeat
    /// within an incarnation (read rounds, read-index request numbers: a delayed answer to the
    /// previous process must never confirm a request of this one) start at `restart_epoch << 32`.
    pub restart_epoch: u64,
    /// Known-wrong rules, switched on by the simulator's negative tests to prove it finds bugs.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub bugs: Bugs,
}

/// Deliberate protocol bugs, for the simulator's negative tests only.
#[cfg(feature = "sim")]
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A new leader ignores the values reported in promises (breaks PMS 2.2).
    pub skip_adoption: bool,
    /// A restarted replica keeps its old incarnation with empty state (breaks rule 8).
    pub amnesia_vote: bool,
    /// A new leader that finds an already-chosen reconfiguration among the slots of its phase 1
    /// keeps it as a pending stop sign instead of passing it: it never proposes again (issue 10,
    /// bug 1: a liveness bug).
    pub wedge_stop_sign: bool,
    /// The read round restarts at 0 when a leader passes a stop sign under the same ballot, so a
    /// stalled acknowledgement of an earlier round confirms a new one (bug 2: a stale read).
    pub reset_read_round: bool,
    /// A new leader forgets the learned points it heard before, and counts a member it has not
    /// heard from as having learned nothing and lagging (bug 3: disposal before all learned).
    pub early_checkpoint: bool,
    /// A leader answers a follower's read-index request at once with its commit point, without
    /// a quorum round (a deposed leader then serves stale follower reads).
    pub read_index_without_round: bool,
    /// A leader takes a duplicated `Forward` again (no dedupe): a command chosen twice.
    pub forward_twice: bool,
    /// A replica told `Compacted` by a peer whose snapshot is above its commit point does not
    /// fetch from that peer (the wedge after a power cut: `node/tests/durable.rs`).
    pub wedge_on_compacted: bool,
    /// A leader or candidate told `Compacted` by a peer whose snapshot is not above its commit
    /// point steps down without asking that peer for the chosen slots it keeps above its
    /// snapshot (the wedge after a durable restart below the checkpoint: `node/tests/durable.rs`).
    pub compacted_without_probe: bool,
    /// A follower persists and sends its vote on an `Accept` before it learns the commit point
    /// the `Accept` carries: its first vote after a configuration change leaves before the
    /// change is applied, so the node's configuration hold does not cover it.
    pub vote_before_commit: bool,
    /// A new leader's fence is the highest slot its phase 1 saw, without the room an old
    /// leader's pipeline window leaves above it: a forwarded command still in an old leader's
    /// window is reported lost, proposed again, and chosen twice (`forward.rs`).
    pub short_fence: bool,
    /// A leader takes a forwarded command under whatever ballot it has now, not only the one it
    /// was meant for: the fence of a leader between them no longer bounds where it is proposed.
    pub forward_any_ballot: bool,
    /// A fence reports lost a command forwarded before a snapshot install, which may have been
    /// applied inside the snapshot.
    pub fence_ignores_install: bool,
    /// The phase 1 before the restart fix: every accepted value above `first_slot` in one
    /// `Promise`, a candidate that steps down `leader_lease_ms` after it started whatever
    /// arrived meanwhile, `Prepare` resent to every silent acceptor every `retry_ms`, and every
    /// adopted slot proposed at once (`paxos/src/restart_test.rs`, `node/tests/durable.rs`).
    pub whole_phase1: bool,
    /// A leader or candidate steps down on any `Nack` whose `promised` is at or above its
    /// ballot, whatever ballot it refuses (before `Nack::refused`): a straggler of its own old
    /// ballot, refused with its new one, abandons its phase 1 (`paxos/src/review24_test.rs`).
    pub nack_any_ballot: bool,
    /// A configuration change is proposed at once, with earlier slots still unchosen (the rule
    /// before the review of issue 30): a later leader may adopt an older stop sign below it, and
    /// the change was decided without knowing the one before it.
    pub change_over_inflight: bool,
    /// A leader's tick names its process only, not its term (the rule before the lease
    /// review): re-elected, its phase 1 adopts its own old-term batch after another leader's
    /// slots and the log clock counts its time out of office, cutting leases short.
    pub tick_without_term: bool,
}

impl Options {
    /// Defaults suited to a LAN cluster.
    pub fn new(me: Member, bootstrap: Option<Configuration>) -> Self {
        Options {
            me,
            bootstrap,
            seed: me.node.0 ^ me.incarnation.0.rotate_left(17),
            heartbeat_ms: 50,
            retry_ms: 200,
            leader_lease_ms: 1_000,
            batch_max_commands: 256,
            batch_max_bytes: 1 << 20,
            batch_delay_ms: 0,
            commit_push_ms: 1,
            pipeline_window: 32,
            recovery_window: 64,
            recovery_window_bytes: 4 << 20,
            promise_page_bytes: 1 << 20,
            max_queued_commands: 10_000,
            snapshot_every: 10_000,
            max_retained_slots: 100_000,
            snapshot_resend_ms: 2_000, // 10 x retry_ms
            snapshot_wait_ms: 60_000,
            max_slot_gap: 1 << 20,
            restart_epoch: 0,
            #[cfg(feature = "sim")]
            bugs: Bugs::default(),
        }
    }
}
