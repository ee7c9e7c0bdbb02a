//! The replica: one value per node that plays acceptor, proposer and learner.
//!
//! This file holds the public API and the dispatch of peer messages; the roles live in
//! `acceptor.rs` (durable votes), `leader.rs` (candidate and leader) and `learner.rs` (chosen
//! log, apply, catch-up). Role-only data lives in [`Role`] variants.
//!
//! Messages a replica sends to itself (a leader is also an acceptor) go through an internal
//! loopback queue and the same handlers, so a leader's own vote is persisted exactly like a
//! peer's before it is counted.

use crate::acceptor::{Acceptor, Vote};
use crate::action::{Action, Persist};
use crate::config::ConfigChange;
use crate::error::ProposeError;
use crate::event::Event;
use crate::ids::{Ballot, Member, NodeId, ReadId, RequestId, Slot, Time};
use crate::leader::{Candidate, Leader};
use crate::learner::Log;
use crate::message::{AcceptedEntry, Command, Envelope, Message, Value};
use crate::options::Options;
use crate::status::{Counters, RoleKind, Status};
use crate::timer::{Timer, Timers};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

/// What this replica is doing as a proposer.
#[derive(Clone, Debug)]
pub(crate) enum Role {
    /// Follows a leader, or waits for the election.
    Follower,
    /// Running phase 1.
    Candidate(Candidate),
    /// Running phase 2.
    Leader(Leader),
}

/// One replica of the replicated log.
#[derive(Debug)]
pub struct Replica {
    pub(crate) opts: Options,
    pub(crate) me: Member,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) actions: VecDeque<Action>,
    loopback: VecDeque<Envelope>,
    pub(crate) counters: Counters,
    pub(crate) timers: Timers,
    pub(crate) acceptor: Acceptor,
    pub(crate) log: Log,
    pub(crate) role: Role,
    /// The highest ballot seen in any message.
    pub(crate) max_seen: Ballot,
    /// A ballot of ours that never reached phase 2 and may be used again.
    pub(crate) reusable: Option<Ballot>,
    /// Who leads, as far as we know.
    pub(crate) known_leader: Option<NodeId>,
    /// Our own proposals by slot, until the slot is known chosen.
    pub(crate) pending: BTreeMap<Slot, Vec<RequestId>>,
    /// Slots at or below here are disposed of (checkpoint).
    pub(crate) checkpoint: Slot,
    /// The last snapshot taken or installed.
    pub(crate) snapshot: Slot,
    /// The last slot a snapshot was asked for.
    pub(crate) snapshot_asked: Slot,
    /// Snapshot transfers to peers, and the log held for them (`compaction.rs`).
    pub(crate) transfers: BTreeMap<NodeId, crate::compaction::Transfer>,
    /// The one peer this replica fetches missing slots from (`learner.rs`).
    pub(crate) fetch_source: Option<crate::learner::FetchSource>,
    /// How far each member (in one incarnation) said it has learned, on `Promise`, `Accepted` or
    /// `HeartbeatAck`. A member's learned point only grows within its incarnation, so every report
    /// ever heard is a lower bound, whatever role this replica had when it arrived; a new leader
    /// starts its checkpoint rule from what it heard before (`compaction.rs`).
    pub(crate) learned: BTreeMap<Member, Slot>,
    /// The last read round started by this incarnation. It never goes back, not even across a
    /// stop sign passed under the same ballot: a `(ballot, round)` pair names one round for good,
    /// so an acknowledgement delayed from an earlier round can never confirm a later one.
    pub(crate) read_round: u64,
    /// Linearizable reads this replica, as a follower, asked the leader to confirm
    /// (`read_index.rs`). Empty whenever it leads or campaigns.
    pub(crate) read_index: crate::read_index::ReadIndexClient,
    /// Commands this replica forwarded to a leader and has not seen applied or lost yet, with
    /// when (`forward.rs`).
    /// The ballot each was meant for (`Forward::to`).
    pub(crate) forwarded: BTreeMap<RequestId, (Time, Ballot)>,
    /// The newest leader's fence we know, with its ballot (`forward.rs`).
    pub(crate) fence: Option<(Ballot, Slot)>,
    /// The highest ballot whose fence already settled our forwards.
    pub(crate) fence_settled: Ballot,
    /// When we last installed a snapshot: forwards made until then may have been applied inside
    /// it, so no fence may report them lost.
    pub(crate) forwards_uncertain_until: Option<Time>,
    /// The last word that showed a leader still leads here: its heartbeat, accept or prepare
    /// taken (not nacked) from it, and when.
    pub(crate) leader_word: Option<(NodeId, Time)>,
    /// The first ballot this process campaigned under: a ballot of ours below it belongs to a
    /// process before a durable restart (same incarnation), whose forwards we must neither take
    /// nor refuse (`forward.rs`).
    pub(crate) first_ballot: Option<Ballot>,
    /// Forwarded commands this replica received (taken or refused), and when: duplicates are
    /// ignored (`forward.rs`).
    pub(crate) forwards_seen: std::collections::BTreeSet<RequestId>,
    /// When each id entered `forwarded` or `forwards_seen`, oldest first (for expiry).
    pub(crate) forward_times: VecDeque<(Time, RequestId)>,
}

impl Replica {
    /// A replica as set up by `options`, at time `now`.
    pub fn new(mut options: Options, now: Time) -> Self {
        let _ = now;
        // The fence of every leader rests on this cap (`forward.rs`).
        options.pipeline_window = options.pipeline_window.min(crate::forward::MAX_PIPELINE_WINDOW);
        let mut log = Log::default();
        if let Some(c) = &options.bootstrap {
            log.configs.insert(Slot(0), c.clone());
        }
        Replica {
            me: options.me,
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            opts: options,
            actions: VecDeque::new(),
            loopback: VecDeque::new(),
            counters: Counters::default(),
            timers: Timers::default(),
            acceptor: Acceptor::default(),
            log,
            role: Role::Follower,
            max_seen: Ballot::ZERO,
            reusable: None,
            known_leader: None,
            pending: BTreeMap::new(),
            checkpoint: Slot(0),
            snapshot: Slot(0),
            snapshot_asked: Slot(0),
            transfers: BTreeMap::new(),
            fetch_source: None,
            learned: BTreeMap::new(),
            read_round: 0,
            read_index: Default::default(),
            forwarded: BTreeMap::new(),
            fence: None,
            fence_settled: Ballot::ZERO,
            forwards_uncertain_until: None,
            leader_word: None,
            first_ballot: None,
            forwards_seen: Default::default(),
            forward_times: VecDeque::new(),
        }
    }

    /// Take one input.
    pub fn handle(&mut self, now: Time, event: Event) {
        match event {
            Event::Receive(env) => self.receive(now, env),
            Event::LeaderHint { leader } => self.on_leader_hint(now, leader),
            Event::SnapshotTaken(meta) => self.on_snapshot_taken(now, meta),
            Event::SnapshotInstalled(meta) => self.on_snapshot_installed(now, meta),
            Event::SnapshotSent { to, delivered } => self.on_snapshot_sent(now, to, delivered),
        }
        self.drain_loopback(now);
    }

    /// Time has reached the deadline given by [`Replica::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Time) {
        for timer in self.timers.take_due(now) {
            match timer {
                Timer::Heartbeat => self.on_heartbeat_timer(now),
                Timer::Retry => self.on_retry(now),
                Timer::Lease => self.on_lease(now),
                Timer::Batch => self.flush(now),
                Timer::Fetch => self.send_fetch(now),
                Timer::ReadIndex => self.on_read_index_timeout(now),
            }
        }
        self.drain_loopback(now);
    }

    /// Propose a client command (leader only). The outcome comes later as an `Action::Apply`
    /// carrying `command.id`, or `Action::ProposalLost`.
    pub fn propose(&mut self, now: Time, command: Command) -> Result<(), ProposeError> {
        let r = self.enqueue(now, command);
        self.drain_loopback(now);
        r
    }

    /// Propose a membership change (leader only; one at a time).
    pub fn propose_config(&mut self, now: Time, id: RequestId, change: ConfigChange) -> Result<(), ProposeError> {
        let r = self.leader_propose_config(now, id, change);
        self.drain_loopback(now);
        r
    }

    /// Start (or join) a leadership confirmation for a linearizable read. A leader runs it
    /// itself; a follower that knows the leader asks it for a read index (`read_index.rs`). The
    /// outcome comes as `Action::ReadsReady { index }` (serve once the state machine has applied
    /// `index`) or `Action::ReadsFailed` (forward, or retry).
    pub fn read(&mut self, now: Time, read: ReadId) -> Result<(), ProposeError> {
        let ok = self.leader_read(now, read) || self.follower_read(now, read);
        self.drain_loopback(now);
        if ok {
            Ok(())
        } else {
            let leader = self.known_leader.filter(|l| *l != self.me.node);
            Err(ProposeError::NotLeader { leader })
        }
    }

    /// The next effect to run, in order.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`Replica::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    /// The replica's state, for status pages.
    pub fn status(&self) -> Status {
        let config = self.log.current_config().cloned().unwrap_or_else(|| crate::Configuration::bootstrap([]));
        let role = match &self.role {
            Role::Leader(_) => RoleKind::Leader,
            Role::Candidate(_) => RoleKind::Candidate,
            Role::Follower if config.is_acceptor(&self.me) => RoleKind::Follower,
            Role::Follower => RoleKind::Learner,
        };
        let (ballot, learned) = match &self.role {
            Role::Leader(l) => (l.ballot.max(self.acceptor.promised), self.learned_map()),
            Role::Candidate(c) => (c.ballot.max(self.acceptor.promised), BTreeMap::new()),
            Role::Follower => (self.acceptor.promised, BTreeMap::new()),
        };
        Status {
            me: self.me,
            role,
            leader: self.known_leader,
            ballot,
            commit: self.log.commit,
            known_commit: self.log.known_commit.max(self.log.commit),
            applied: self.log.commit,
            checkpoint: self.checkpoint,
            snapshot: self.snapshot,
            config,
            learned,
            promote_slack: self.promote_slack(),
        }
    }

    /// Counters of what happened.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// The highest ballot this replica's acceptor promised (never decreases in an incarnation).
    pub fn promised(&self) -> Ballot {
        self.acceptor.promised
    }

    /// Every slot up to here is known chosen and was handed out as `Action::Apply`.
    pub fn commit(&self) -> Slot {
        self.log.commit
    }

    /// The leader as far as this replica knows (itself while it leads).
    pub fn known_leader(&self) -> Option<NodeId> {
        self.known_leader
    }

    /// The last word that showed a leader still leads as far as this acceptor knows (a heartbeat
    /// or an accept of a ballot it has not refused), from whom and when. A message from a
    /// deposed leader (nacked) is not such word.
    pub fn leader_word(&self) -> Option<(NodeId, Time)> {
        self.leader_word
    }

    /// The highest commit point heard of from anyone (at least [`Replica::commit`]).
    pub fn known_commit(&self) -> Slot {
        self.log.known_commit.max(self.log.commit)
    }

    /// Whether this replica still tracks the outcome of `id` (queued, or proposed in a slot not
    /// yet known chosen). After `Event::SnapshotInstalled`, a command its driver waits for that is
    /// no longer tracked was settled inside the snapshot: it was chosen if the state machine's
    /// session table has applied it, and lost otherwise.
    pub fn tracks(&self, id: RequestId) -> bool {
        let queued = match &self.role {
            Role::Leader(l) => l.queue.cmds.iter().any(|(c, _)| c.id == id),
            Role::Candidate(c) => c.queue.cmds.iter().any(|(c, _)| c.id == id),
            Role::Follower => false,
        };
        queued || self.pending.values().any(|ids| ids.contains(&id)) || self.forwarding(id)
    }

    /// Slots at or below here are disposed of (checkpoint).
    pub fn checkpoint(&self) -> Slot {
        self.checkpoint
    }

    /// While leading: the last slot proposed at election (the adopted slots, or the no-op
    /// after them). Every value that may have been chosen before this leadership lies at or
    /// below it, so a replica that has applied it has applied all of them (reads wait for it:
    /// rule 4). `None` in any other role.
    pub fn election_barrier(&self) -> Option<Slot> {
        match &self.role {
            Role::Leader(l) => Some(l.barrier),
            _ => None,
        }
    }

    /// Whether this replica currently leads (phase 2).
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    // ----- plumbing -----

    /// Send `msg` to `to`; to ourselves it goes through the loopback queue.
    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        let env = Envelope { from: self.me, to, msg };
        if to == self.me.node {
            self.loopback.push_back(env);
        } else {
            self.actions.push_back(Action::Send(env));
        }
    }

    fn drain_loopback(&mut self, now: Time) {
        while let Some(env) = self.loopback.pop_front() {
            self.dispatch(now, env);
        }
    }

    fn receive(&mut self, now: Time, env: Envelope) {
        // Misaddressed, or claiming to be us: drop.
        if env.to != self.me.node || env.from.node == self.me.node {
            self.counters.dropped_messages += 1;
            return;
        }
        self.dispatch(now, env);
    }

    fn dispatch(&mut self, now: Time, env: Envelope) {
        let from = env.from;
        match env.msg {
            Message::Prepare { ballot, first_slot } => self.on_prepare(now, from, ballot, first_slot),
            Message::Promise { ballot, first_slot, accepted, learned, more } => {
                self.observe_ballot(now, ballot);
                let gap = self.opts.max_slot_gap;
                if accepted.iter().any(|e| e.slot < first_slot || e.ballot > ballot || e.slot.0 - first_slot.0 > gap)
                    || (more && accepted.is_empty())
                {
                    self.counters.dropped_messages += 1;
                    return;
                }
                self.note_learned(from, learned);
                self.on_promise(now, from, ballot, first_slot, accepted, more);
            }
            Message::Accept { ballot, slot, value, commit } => self.on_accept(now, from, ballot, slot, value, commit),
            Message::Accepted { ballot, slot, learned } => {
                self.note_learned(from, learned);
                self.on_accepted(now, from, ballot, slot)
            }
            Message::Nack { promised, refused } => self.on_nack(now, promised, refused),
            Message::Heartbeat { ballot, commit, checkpoint, read_round, fence } => {
                self.on_heartbeat(now, from, ballot, commit, checkpoint, read_round, fence)
            }
            Message::HeartbeatAck { ballot, read_round, learned } => {
                self.note_learned(from, learned);
                self.on_heartbeat_ack(now, from, ballot, read_round)
            }
            Message::Fetch { from: lo, to: hi } => self.on_fetch(now, from.node, lo, hi),
            Message::Chosen { entries, commit } => self.on_chosen(now, from.node, entries, commit),
            Message::Compacted { snapshot_slot } => self.on_compacted(now, from.node, snapshot_slot),
            Message::ReadIndex { id } => self.on_read_index(now, from, id),
            Message::ReadIndexReply { id, incarnation, index } => self.on_read_index_reply(now, from, id, incarnation, index),
            Message::Forward { to, cmds } => self.on_forward(now, from, to, cmds),
            Message::ForwardLost { ids } => self.on_forward_lost(from, ids),
        }
    }

    /// Keep the highest learned point `from` reported (in any role: see `Replica::learned`).
    fn note_learned(&mut self, from: Member, learned: Slot) {
        let e = self.learned.entry(from).or_insert(learned);
        *e = (*e).max(learned);
        match &mut self.role {
            Role::Leader(l) => {
                l.reported.insert(from);
            }
            Role::Candidate(c) => {
                c.reported.insert(from);
            }
            Role::Follower => {}
        }
    }

    /// Remember the highest ballot seen; a higher one deposes a leader or candidate.
    fn observe_ballot(&mut self, now: Time, ballot: Ballot) {
        self.max_seen = self.max_seen.max(ballot);
        let mine = match &self.role {
            Role::Leader(l) => l.ballot,
            Role::Candidate(c) => c.ballot,
            Role::Follower => return,
        };
        if ballot > mine {
            self.step_down(now, false);
        }
    }

    pub(crate) fn set_known_leader(&mut self, leader: Option<NodeId>, ballot: Ballot) {
        if self.known_leader != leader {
            self.known_leader = leader;
            self.actions.push_back(Action::LeaderChanged { leader, ballot });
        }
    }

    /// Leave the leader or candidate role. Queued commands never got a slot: they are lost now.
    /// `may_reuse`: the ballot may be used again if it never reached phase 2.
    pub(crate) fn step_down(&mut self, now: Time, may_reuse: bool) {
        let _ = now;
        let role = std::mem::replace(&mut self.role, Role::Follower);
        let (queue, reads) = match role {
            Role::Follower => return,
            Role::Candidate(c) => {
                if may_reuse && !c.sent_accept {
                    self.reusable = Some(c.ballot);
                }
                (c.queue, Vec::new())
            }
            Role::Leader(l) => {
                let mut reads = l.reads_waiting;
                let mut remote = l.remote_waiting;
                for r in l.rounds.into_values() {
                    reads.extend(r.reads);
                    remote.extend(r.remote);
                }
                for (to, id) in remote {
                    self.send(to.node, Message::ReadIndexReply { id, incarnation: to.incarnation, index: None });
                }
                (l.queue, reads)
            }
        };
        for (cmd, _) in queue.cmds {
            self.report_lost(cmd.id);
        }
        if !reads.is_empty() {
            self.actions.push_back(Action::ReadsFailed { reads, leader: None });
        }
        for t in [Timer::Heartbeat, Timer::Retry, Timer::Lease, Timer::Batch] {
            self.timers.cancel(t);
        }
        self.counters.stepped_down += 1;
        self.actions.push_back(Action::SteppedDown);
        if self.known_leader == Some(self.me.node) {
            self.set_known_leader(None, self.max_seen);
        }
        self.maybe_fetch(now);
    }

    fn on_leader_hint(&mut self, now: Time, leader: Option<NodeId>) {
        if leader == Some(self.me.node) {
            if matches!(self.role, Role::Follower) {
                self.start_candidacy(now);
            }
            return;
        }
        // The election moved on: stop leading (ballots fence us anyway; this just hurries it).
        self.step_down(now, true);
        if leader.is_some() {
            self.set_known_leader(leader, self.max_seen);
        }
    }

    // ----- acceptor -----

    /// The checks phase 1 and phase 2 share: note the ballot, drop slot 0, answer `Compacted` for
    /// a disposed slot, then ask the acceptor for the promise. `true` when the vote is granted;
    /// a raised promise is persisted before anything the caller sends (the barrier rule).
    fn grant_vote(&mut self, now: Time, from: Member, ballot: Ballot, slot: Slot) -> bool {
        self.observe_ballot(now, ballot);
        if slot == Slot(0) {
            self.counters.dropped_messages += 1;
            return false;
        }
        if slot <= self.checkpoint {
            // Slots at or below the checkpoint are disposed of and never re-opened.
            self.send(from.node, Message::Compacted { snapshot_slot: self.snapshot });
            return false;
        }
        match self.acceptor.promise(ballot, from) {
            Vote::Refuse(promised) => {
                self.send(from.node, Message::Nack { promised, refused: Some(ballot) });
                false
            }
            Vote::Grant { raised } => {
                if raised {
                    self.actions.push_back(Action::Persist(Persist::Promised(ballot)));
                }
                true
            }
        }
    }

    fn on_prepare(&mut self, now: Time, from: Member, ballot: Ballot, first_slot: Slot) {
        if self.grant_vote(now, from, ballot, first_slot) {
            // A promise granted is word from a leader-to-be that leads as far as we know: a long
            // paged phase 1 after a full restart must not look like silence (our suspicion would
            // revoke its election lease mid-way).
            self.leader_word = Some((from.node, now));
            let page = self.opts.promise_page_bytes;
            #[cfg(feature = "sim")]
            let page = if self.opts.bugs.whole_phase1 { usize::MAX } else { page };
            let (accepted, more) = self.acceptor.accepted_from(first_slot, page);
            let learned = self.log.commit;
            self.send(from.node, Message::Promise { ballot, first_slot, accepted, learned, more });
        }
    }

    fn on_accept(&mut self, now: Time, from: Member, ballot: Ballot, slot: Slot, value: Value, commit: Slot) {
        if slot.0.saturating_sub(self.log.commit.0) > self.opts.max_slot_gap {
            // Malformed (or from a leader impossibly far ahead): no vote. Safe: a missing vote
            // never makes anything chosen.
            self.counters.dropped_messages += 1;
            return;
        }
        if self.grant_vote(now, from, ballot, slot) {
            self.acceptor.accept(slot, ballot, value.clone());
            if from != self.me {
                self.set_known_leader(Some(ballot.node), ballot);
                self.leader_word = Some((from.node, now));
                // Learn the commit point first: what it applies (a configuration change above
                // all) comes before this vote in the actions, so a shell that holds outputs
                // after an applied change (the node's configuration hold) holds the vote too.
                // Applying a chosen slot does not depend on this vote being durable.
                #[cfg(feature = "sim")]
                let vote_first = self.opts.bugs.vote_before_commit;
                #[cfg(not(feature = "sim"))]
                let vote_first = false;
                if !vote_first {
                    self.learn_commit(now, ballot, commit);
                }
                self.actions.push_back(Action::Persist(Persist::Accepted(AcceptedEntry { slot, ballot, value })));
                let learned = self.log.commit;
                self.send(from.node, Message::Accepted { ballot, slot, learned });
                if vote_first {
                    self.learn_commit(now, ballot, commit);
                }
            } else {
                self.actions.push_back(Action::Persist(Persist::Accepted(AcceptedEntry { slot, ballot, value })));
                let learned = self.log.commit;
                self.send(from.node, Message::Accepted { ballot, slot, learned });
            }
        }
    }

    /// A refusal. `refused`: the ballot of the message refused (`None`: a peer of the previous
    /// release did not say; then as before, any `promised >= mine` deposes us). A refusal of
    /// another ballot than ours is stale: a straggler we sent under an old ballot, refused with
    /// the promise of our new one, must not abandon the new one's phase 1. Ignoring it is safe:
    /// the acceptor refuses our current ballot's messages too if it promised above it.
    fn on_nack(&mut self, now: Time, promised: Ballot, refused: Option<Ballot>) {
        self.max_seen = self.max_seen.max(promised);
        let mine = match &self.role {
            Role::Leader(l) => l.ballot,
            Role::Candidate(c) => c.ballot,
            Role::Follower => return,
        };
        #[cfg(feature = "sim")]
        let refused = if self.opts.bugs.nack_any_ballot { None } else { refused };
        if refused.is_some_and(|b| b != mine) {
            self.counters.dropped_messages += 1;
            return;
        }
        if promised >= mine {
            self.step_down(now, false);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(&mut self, now: Time, from: Member, ballot: Ballot, commit: Slot, checkpoint: Slot, read_round: u64, fence: Slot) {
        self.observe_ballot(now, ballot);
        if ballot < self.acceptor.promised
            || (ballot == self.acceptor.promised && self.acceptor.promised_to.is_some_and(|m| m != from))
        {
            self.send(from.node, Message::Nack { promised: self.acceptor.promised, refused: Some(ballot) });
            return;
        }
        self.set_known_leader(Some(ballot.node), ballot);
        self.leader_word = Some((from.node, now));
        let learned = self.log.commit;
        self.send(from.node, Message::HeartbeatAck { ballot, read_round, learned });
        self.learn_commit(now, ballot, commit);
        self.on_checkpoint(now, checkpoint);
        self.note_fence(ballot, fence);
    }

    /// Called by the learner whenever the commit point advanced.
    pub(crate) fn after_commit(&mut self, now: Time) {
        self.leader_after_commit(now);
    }

    // ----- snapshots, checkpoints, reconfiguration: see `compaction.rs` -----

    fn leader_propose_config(&mut self, now: Time, id: RequestId, change: ConfigChange) -> Result<(), ProposeError> {
        self.propose_config_change(now, id, change)
    }
}

#[cfg(test)]
pub(crate) fn test_command(node: u64, seq: u64) -> Command {
    Command { id: RequestId { node: NodeId(node), seq }, payload: vec![seq as u8] }
}
