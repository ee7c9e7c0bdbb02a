//! Proposer roles: the candidate (phase 1) and the leader (phase 2, reads).
//!
//! A replica told to lead becomes a [`Candidate`]: it picks a ballot above every ballot it has
//! seen (or re-uses its last one if it never sent an `Accept` under it and saw nothing higher, so
//! that a replica cut off from a quorum does not keep raising ballots) and sends one `Prepare` for
//! every slot from its first unchosen slot on (Paxos Made Simple, 3: "phase 1 for infinitely many
//! instances"). From a quorum of promises it becomes a [`Leader`]: per slot it adopts the value of
//! the highest ballot (PMS 2.2), fills holes with no-ops and re-proposes all of them under its own
//! ballot, at most `recovery_window` slots (and `recovery_window_bytes`) in phase 2 at once,
//! before any new command. A `Reconfigure` among them is a stop sign: nothing after it is proposed until it is
//! chosen, then phase 1 runs again, same ballot, in the new configuration, for the slots after it.
//!
//! The leader batches queued commands into slots and keeps at most `pipeline_window` slots in
//! phase 2. Heartbeats carry the commit point and a read round; a round confirmed by a quorum that
//! started after a read arrived serves that read at the commit point of the round's start.

use crate::action::Action;
use crate::config::Configuration;
use crate::ids::{Ballot, Member, NodeId, ReadId, Slot, Time};
use crate::message::{AcceptedEntry, Command, Message, Value};
use crate::replica::{Replica, Role};
use crate::timer::Timer;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Client commands waiting for a slot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Queue {
    pub(crate) cmds: VecDeque<(Command, Time)>,
    pub(crate) bytes: usize,
}

impl Queue {
    fn push(&mut self, cmd: Command, now: Time) {
        self.bytes += cmd.payload.len();
        self.cmds.push_back((cmd, now));
    }

    /// Take one batch within the limits (at least one command if any is queued).
    fn take_batch(&mut self, max_cmds: usize, max_bytes: usize) -> Vec<Command> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((cmd, _)) = self.cmds.front() {
            if !batch.is_empty() && (batch.len() >= max_cmds || bytes + cmd.payload.len() > max_bytes) {
                break;
            }
            bytes += cmd.payload.len();
            let (cmd, _) = self.cmds.pop_front().expect("front exists");
            batch.push(cmd);
        }
        self.bytes -= bytes;
        batch
    }
}

/// Running phase 1.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) ballot: Ballot,
    /// Phase 1 covers every slot from here on.
    pub(crate) first_slot: Slot,
    /// The configuration governing `first_slot`: whose promises count.
    pub(crate) config: Configuration,
    /// Complete promises: every value the acceptor reported, all pages.
    pub(crate) promises: BTreeMap<Member, Vec<AcceptedEntry>>,
    /// Acceptors part way through a paged promise: the first slot of the page asked for next,
    /// and the values of the pages so far.
    pub(crate) pages: BTreeMap<Member, (Slot, Vec<AcceptedEntry>)>,
    /// When a `Prepare` was last sent to each acceptor (resent only after `retry_ms`).
    pub(crate) asked: BTreeMap<Member, Time>,
    /// When a promise page last arrived (or the candidacy started): the candidate steps down
    /// only after `leader_lease_ms` without one, so a long phase 1 that keeps arriving is not
    /// abandoned half way.
    pub(crate) progress: Time,
    /// When the candidacy started (the old lease rule, `Bugs::whole_phase1`, counts from here).
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    pub(crate) started: Time,
    pub(crate) queue: Queue,
    /// Whether an `Accept` was ever sent under `ballot` (then it may never be re-used).
    pub(crate) sent_accept: bool,
    /// Set when this candidacy continues a leadership past a stop sign: the commit point at which
    /// that leadership began (see [`Leader::since`]).
    pub(crate) since: Option<Slot>,
    /// Members that reported a learned point during this candidacy or leadership.
    pub(crate) reported: BTreeSet<Member>,
}

/// One slot in phase 2.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub(crate) value: Value,
    pub(crate) votes: BTreeSet<Member>,
    pub(crate) sent: Time,
}

/// A batch of reads waiting for a read round.
#[derive(Clone, Debug)]
pub(crate) struct ReadRound {
    /// The commit point when the round started.
    pub(crate) commit: Slot,
    pub(crate) reads: Vec<ReadId>,
    /// Followers' read-index requests (node, request number) this round answers.
    pub(crate) remote: Vec<(Member, u64)>,
}

/// Running phase 2.
#[derive(Clone, Debug)]
pub(crate) struct Leader {
    pub(crate) ballot: Ballot,
    pub(crate) config: Configuration,
    /// The next slot to propose in.
    pub(crate) next_slot: Slot,
    /// A `Reconfigure` proposed or adopted here: nothing after it until it is chosen.
    pub(crate) stop: Option<Slot>,
    /// A `Reconfigure` of ours waiting for its slot (`stop`): it is proposed only once every slot
    /// before it is chosen, so that it is decided knowing every change before it (a later
    /// leader can then never adopt an older, unchosen stop sign below it: review of issue 30).
    pub(crate) change: Option<(Slot, Value)>,
    pub(crate) inflight: BTreeMap<Slot, InFlight>,
    /// Slots adopted at election (values from the promises, or no-ops for holes) not yet
    /// proposed: they go out in slot order, at most `recovery_window` in phase 2 at once (and
    /// `recovery_window_bytes`), ahead
    /// of any client command (`flush`). After a restart of every replica these can be every
    /// slot above the newest snapshot; proposing them all at once overflowed the peer queues and
    /// the acceptors' disks (docs/REPORT.md, "Restart-to-serving").
    pub(crate) adopted: BTreeMap<Slot, Value>,
    pub(crate) queue: Queue,
    /// The last slot proposed at election: reads wait until it is committed (rule 4).
    pub(crate) barrier: Slot,
    pub(crate) last_heard: BTreeMap<Member, Time>,
    /// The commit point when this leadership began (kept across stop signs). A member that has
    /// said nothing of its learned point since is treated as lagging only once the commit point
    /// has moved `max_retained_slots` past here (the checkpoint rule, `compaction.rs`).
    pub(crate) since: Slot,
    /// Members that reported a learned point during this leadership (its phase 1 included).
    pub(crate) reported: BTreeSet<Member>,
    /// The highest commit point sent to followers (on an `Accept` or a heartbeat).
    pub(crate) commit_sent: Slot,
    /// Per acceptor, the highest read round (of `Replica::read_round`) it confirmed.
    pub(crate) acked: BTreeMap<Member, u64>,
    pub(crate) reads_waiting: Vec<ReadId>,
    /// Followers' read-index requests waiting for the next round.
    pub(crate) remote_waiting: Vec<(Member, u64)>,
    pub(crate) rounds: BTreeMap<u64, ReadRound>,
    /// Our fence (`forward.rs`): filled with no-ops when idle, announced in heartbeats.
    pub(crate) fence: Slot,
    /// Filling up to the fence has started (at our first periodic heartbeat: the election's own
    /// proposals go first).
    pub(crate) filling: bool,
}

impl Leader {
    /// The latest time a quorum of acceptors was heard from (the leader counts itself as `now`).
    fn quorum_heard(&self, me: Member, now: Time) -> Option<Time> {
        let mut times: Vec<Time> = self
            .config
            .acceptors
            .iter()
            .filter_map(|m| if *m == me { Some(now) } else { self.last_heard.get(m).copied() })
            .collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(self.config.quorum() - 1).copied()
    }
}

impl Replica {
    /// While leading: the latest time a quorum of the acceptors was heard from (this replica
    /// counted as `now`); `None` in any other role. A leader cut off from its quorum sees it age
    /// (the node layer applies its read staleness bound to it, as to a follower's last contact).
    pub fn quorum_contact(&self, now: Time) -> Option<Time> {
        match &self.role {
            Role::Leader(l) => l.quorum_heard(self.me, now),
            _ => None,
        }
    }

    /// The term this replica stamps its batches with while it leads (`Tick::epoch`); `None` in
    /// any other role. The node layer compares it with the log clock's last stamp.
    pub fn tick_epoch_now(&self) -> Option<u64> {
        match &self.role {
            Role::Leader(l) => Some(self.tick_epoch(l.ballot)),
            _ => None,
        }
    }

    fn tick_epoch(&self, ballot: Ballot) -> u64 {
        #[cfg(feature = "sim")]
        if self.opts.bugs.tick_without_term {
            return self.opts.restart_epoch;
        }
        crate::message::Tick::epoch_of(ballot.round, self.opts.restart_epoch)
    }

    /// The ballot for a new candidacy: re-use the last one if it never reached phase 2 and nothing
    /// higher was seen since; otherwise one round above everything seen.
    fn next_ballot(&mut self) -> Ballot {
        match self.reusable.take() {
            Some(b) if b >= self.max_seen && b.owner() == self.me => b,
            _ => Ballot::new(self.max_seen.round + 1, self.me),
        }
    }

    /// Become a candidate (the election named us).
    pub(crate) fn start_candidacy(&mut self, now: Time) {
        let Some(config) = self.log.current_config().cloned() else { return };
        if !config.is_acceptor(&self.me) || !matches!(self.role, Role::Follower) {
            return;
        }
        let ballot = self.next_ballot();
        self.first_ballot.get_or_insert(ballot);
        self.max_seen = self.max_seen.max(ballot);
        self.counters.elections_started += 1;
        // Reads waiting on another leader's read index: we campaign now, and may never hear.
        self.fail_follower_reads();
        let first_slot = self.log.commit.next();
        self.role = Role::Candidate(Candidate {
            ballot,
            first_slot,
            config,
            promises: BTreeMap::new(),
            pages: BTreeMap::new(),
            asked: BTreeMap::new(),
            progress: now,
            started: now,
            queue: Queue::default(),
            sent_accept: false,
            since: None,
            reported: BTreeSet::new(),
        });
        self.send_prepares(now);
        self.timers.set(Timer::Lease, now.plus(self.opts.leader_lease_ms));
    }

    /// (Re)send `Prepare` to every acceptor whose promise is not complete and that was not asked
    /// within `retry_ms`, from the first slot of the page it owes.
    fn send_prepares(&mut self, now: Time) {
        let retry = self.opts.retry_ms;
        #[cfg(feature = "sim")]
        let whole = self.opts.bugs.whole_phase1;
        #[cfg(not(feature = "sim"))]
        let whole = false;
        let Role::Candidate(c) = &mut self.role else { return };
        let ballot = c.ballot;
        let mut targets = Vec::new();
        for m in c.config.acceptors.iter().filter(|m| !c.promises.contains_key(m)) {
            if !whole && c.asked.get(m).is_some_and(|t| now < t.plus(retry)) {
                continue;
            }
            c.asked.insert(*m, now);
            targets.push((m.node, c.pages.get(m).map_or(c.first_slot, |(s, _)| *s)));
        }
        for (to, first_slot) in targets {
            self.send(to, Message::Prepare { ballot, first_slot });
        }
        self.timers.set(Timer::Retry, now.plus(retry));
    }

    /// Phase 1b arrived (one page of it, with `more` when others follow).
    pub(crate) fn on_promise(
        &mut self,
        now: Time,
        from: Member,
        ballot: Ballot,
        first_slot: Slot,
        accepted: Vec<AcceptedEntry>,
        more: bool,
    ) {
        let Role::Candidate(c) = &mut self.role else {
            self.counters.dropped_messages += 1;
            return;
        };
        let expected = c.pages.get(&from).map_or(c.first_slot, |(s, _)| *s);
        if c.ballot != ballot || first_slot != expected || !c.config.is_acceptor(&from) {
            self.counters.dropped_messages += 1;
            return;
        }
        if c.promises.contains_key(&from) {
            // A duplicate: the values cannot have changed under our promise (only a higher
            // ballot could change them, and that acceptor now refuses us).
            return;
        }
        c.progress = now;
        let mut entries = c.pages.remove(&from).map(|(_, e)| e).unwrap_or_default();
        let next = accepted.last().map(|e| e.slot.next());
        entries.extend(accepted);
        if more {
            // Ask for the next page at once. Each page lists every value the acceptor holds in
            // its range (pages are cut in slot order), and the promise covers every slot, so the
            // pages together are one promise (safe: nothing below our ballot can be accepted in
            // between, and a higher ballot makes the acceptor refuse the next page).
            let next = next.expect("a page with more has values (checked at dispatch)");
            c.pages.insert(from, (next, entries));
            c.asked.insert(from, now);
            self.send(from.node, Message::Prepare { ballot, first_slot: next });
            return;
        }
        c.promises.insert(from, entries);
        if c.config.is_quorum(c.promises.keys()) {
            self.become_leader(now);
        }
    }

    /// A quorum promised: adopt, fill holes, and propose (PMS 2.2, 3).
    fn become_leader(&mut self, now: Time) {
        let Role::Candidate(c) = std::mem::replace(&mut self.role, Role::Follower) else { return };
        // Per slot, the value accepted under the highest ballot.
        let mut adopted: BTreeMap<Slot, (Ballot, Value)> = BTreeMap::new();
        for e in c.promises.into_values().flatten() {
            if e.slot < c.first_slot {
                continue;
            }
            let keep = !matches!(adopted.get(&e.slot), Some((b, _)) if *b >= e.ballot);
            #[cfg(feature = "sim")]
            let keep = keep && !self.opts.bugs.skip_adoption;
            if keep {
                adopted.insert(e.slot, (e.ballot, e.value));
            }
        }
        let mut values: BTreeMap<Slot, Value> = adopted.into_iter().map(|(s, (_, v))| (s, v)).collect();
        // Values we already know chosen are proposed as they are (proposing a chosen value is safe).
        for (s, v) in self.log.entries.range(c.first_slot..) {
            values.insert(*s, v.clone());
        }
        let mut last = values.keys().next_back().copied().unwrap_or(c.first_slot.prev());
        // Every slot accepted under a lower ballot lies at or below this fence (`forward.rs`).
        let fence = crate::forward::fence_after(last.max(self.log.commit));
        #[cfg(feature = "sim")]
        let fence = if self.opts.bugs.short_fence { last.max(self.log.commit) } else { fence };
        // Stop sign: nothing after a reconfiguration until it is chosen. The commit point may
        // have passed `first_slot` during phase 1 (a fetch answered meanwhile), so the first
        // reconfiguration may be chosen already: then it is passed at once, below.
        let stop = values.iter().find(|(_, v)| matches!(v, Value::Reconfigure { .. })).map(|(s, _)| *s);
        if let Some(s) = stop {
            last = s;
        }
        // No fence while an adopted stop sign is pending (review of issue 25, finding 1): this
        // phase 1 ran in a configuration that the stop sign ends, and a later one (two changes on,
        // with no acceptor in common) may still choose slots under lower ballots that this quorum
        // never promised. The phase 1 that passing the stop sign runs in the new configuration
        // announces it. A fence only grows under one ballot (followers keep the highest heard).
        let fence = match self.fence {
            _ if stop.is_some() => Slot(0),
            Some((b, f)) if b == c.ballot => fence.max(f),
            _ => fence,
        };
        let commit = self.log.commit;
        #[cfg(feature = "sim")]
        if self.opts.bugs.early_checkpoint {
            // The bug under test: forget what was heard before this term.
            self.learned.clear();
        }
        let mut leader = Leader {
            ballot: c.ballot,
            config: c.config,
            next_slot: last.next(),
            stop,
            change: None,
            inflight: BTreeMap::new(),
            adopted: BTreeMap::new(),
            queue: c.queue,
            barrier: last,
            last_heard: BTreeMap::new(),
            since: c.since.unwrap_or(commit),
            commit_sent: commit,
            reported: c.reported,
            acked: BTreeMap::new(),
            reads_waiting: Vec::new(),
            remote_waiting: Vec::new(),
            rounds: BTreeMap::new(),
            fence,
            filling: false,
        };
        for m in leader.config.acceptors.iter() {
            leader.last_heard.insert(*m, now);
        }
        self.role = Role::Leader(leader);
        self.counters.became_leader += 1;
        self.set_known_leader(Some(self.me.node), c.ballot);
        if fence > Slot(0) {
            self.note_fence(c.ballot, fence);
        }
        // A stop sign at or below the commit point is chosen already: the configuration after it
        // governs every slot we would propose, and our promises came from the one before it. Run
        // phase 1 again in the new configuration now; waiting for the commit point to move past
        // it would wait for ever, since only we could move it (issue 10, bug 1).
        let passed = stop.is_some_and(|s| s <= commit);
        #[cfg(feature = "sim")]
        let passed = passed && !self.opts.bugs.wedge_stop_sign;
        if passed {
            self.pass_stop_sign(now);
            return;
        }
        // Slots at or below the commit point are chosen and applied: no need to propose them.
        // The others are proposed by `flush`, a window at a time, in slot order.
        let mut slot = c.first_slot.max(commit.next());
        let mut adopted = BTreeMap::new();
        while slot <= last {
            adopted.insert(slot, values.remove(&slot).unwrap_or(Value::Noop));
            slot = slot.next();
        }
        #[cfg(feature = "sim")]
        if self.opts.bugs.whole_phase1 {
            // The old rule under test: every adopted slot proposed at once.
            for (s, v) in std::mem::take(&mut adopted) {
                self.propose_slot(now, s, v);
            }
        }
        if let Role::Leader(l) = &mut self.role {
            l.adopted = adopted;
        }
        self.flush(now);
        if let Role::Leader(l) = &mut self.role {
            if l.inflight.is_empty() && l.adopted.is_empty() && l.stop.is_none() {
                // Reads need a slot of our own ballot chosen (rule 4): propose a no-op.
                let s = l.next_slot;
                l.next_slot = s.next();
                self.propose_slot(now, s, Value::Noop);
            }
        }
        if let Role::Leader(l) = &mut self.role {
            l.barrier = l.next_slot.prev();
        }
        self.send_heartbeats(now);
        self.timers.set(Timer::Retry, now.plus(self.opts.retry_ms));
        self.timers.set(Timer::Lease, now.plus(self.opts.leader_lease_ms));
    }

    /// Send phase 2a for `slot` to every acceptor (ourselves included).
    pub(crate) fn propose_slot(&mut self, now: Time, slot: Slot, value: Value) {
        let Role::Leader(l) = &mut self.role else { return };
        l.inflight.insert(slot, InFlight { value: value.clone(), votes: BTreeSet::new(), sent: now });
        let (ballot, commit) = (l.ballot, self.log.commit);
        l.commit_sent = l.commit_sent.max(commit);
        let targets: Vec<NodeId> = l.config.acceptors.iter().map(|m| m.node).collect();
        for to in targets {
            self.send(to, Message::Accept { ballot, slot, value: value.clone(), commit });
        }
    }

    /// Propose queued commands while the window and the stop sign allow; then, with nothing
    /// queued, fill the slots up to our fence.
    pub(crate) fn flush(&mut self, now: Time) {
        self.flush_queue(now);
        self.fill_fence(now);
    }

    /// No-ops up to our fence while nothing is queued, within the window (`forward.rs`): until
    /// the log is chosen up to it, commands forwarded to the leaders before us stay unsettled.
    fn fill_fence(&mut self, now: Time) {
        loop {
            let Role::Leader(l) = &mut self.role else { return };
            if !l.filling
                || !l.adopted.is_empty()
                || l.stop.is_some()
                || !l.queue.cmds.is_empty()
                || l.next_slot > l.fence
                || l.inflight.len() as u64 >= self.opts.pipeline_window
            {
                return;
            }
            let slot = l.next_slot;
            l.next_slot = slot.next();
            self.propose_slot(now, slot, Value::Noop);
        }
    }

    /// The periodic heartbeat: start filling up to the fence, then send the heartbeats.
    pub(crate) fn on_heartbeat_timer(&mut self, now: Time) {
        if let Role::Leader(l) = &mut self.role {
            if !l.filling {
                l.filling = true;
                self.fill_fence(now);
            }
        }
        self.send_heartbeats(now);
    }

    /// Propose queued commands while the window and the stop sign allow.
    fn flush_queue(&mut self, now: Time) {
        // Adopted slots first (they lie at or below any stop sign, so it does not hold them).
        loop {
            let Role::Leader(l) = &mut self.role else { return };
            if l.inflight.len() as u64 >= self.opts.recovery_window.max(1) {
                return;
            }
            let bytes: usize = l.inflight.values().map(|f| f.value.payload_bytes()).sum();
            if !l.inflight.is_empty() && bytes >= self.opts.recovery_window_bytes {
                return;
            }
            let Some((slot, value)) = l.adopted.pop_first() else { break };
            self.propose_slot(now, slot, value);
        }
        loop {
            let Role::Leader(l) = &mut self.role else { return };
            if !l.adopted.is_empty() || l.stop.is_some() || l.queue.cmds.is_empty() || l.inflight.len() as u64 >= self.opts.pipeline_window {
                return;
            }
            if self.opts.batch_delay_ms > 0
                && l.queue.cmds.len() < self.opts.batch_max_commands
                && l.queue.bytes < self.opts.batch_max_bytes
            {
                let oldest = l.queue.cmds.front().map_or(now, |(_, t)| *t);
                let due = oldest.plus(self.opts.batch_delay_ms);
                if due > now {
                    self.timers.set_if_later(Timer::Batch, due);
                    return;
                }
            }
            let batch = l.queue.take_batch(self.opts.batch_max_commands, self.opts.batch_max_bytes);
            let ballot = l.ballot;
            let slot = l.next_slot;
            l.next_slot = slot.next();
            // Extend, never overwrite: a proposal of an earlier term may still wait on this slot.
            self.pending.entry(slot).or_default().extend(batch.iter().map(|c| c.id));
            let tick = crate::message::Tick { leader: self.me.node, epoch: self.tick_epoch(ballot), mono_ms: now.0 };
            self.propose_slot(now, slot, Value::Batch(batch, tick));
        }
    }

    /// Queue a command (leader or candidate).
    pub(crate) fn enqueue(&mut self, now: Time, cmd: Command) -> Result<(), crate::ProposeError> {
        let limit = self.opts.batch_max_bytes;
        if cmd.payload.len() > limit {
            return Err(crate::ProposeError::TooLarge { size: cmd.payload.len(), limit });
        }
        let queue = match &mut self.role {
            Role::Leader(l) => &mut l.queue,
            Role::Candidate(c) => &mut c.queue,
            Role::Follower => return Err(crate::ProposeError::NotLeader { leader: self.known_leader }),
        };
        if queue.cmds.len() >= self.opts.max_queued_commands {
            return Err(crate::ProposeError::Backpressure);
        }
        queue.push(cmd, now);
        self.flush(now);
        Ok(())
    }

    /// Phase 2b arrived.
    pub(crate) fn on_accepted(&mut self, now: Time, from: Member, ballot: Ballot, slot: Slot) {
        let Role::Leader(l) = &mut self.role else {
            self.counters.dropped_messages += 1;
            return;
        };
        if l.ballot != ballot {
            self.counters.dropped_messages += 1;
            return;
        }
        l.last_heard.insert(from, now);
        let Some(f) = l.inflight.get_mut(&slot) else { return };
        if !l.config.is_acceptor(&from) {
            self.counters.dropped_messages += 1;
            return;
        }
        f.votes.insert(from);
        if l.config.is_quorum(f.votes.iter()) {
            let f = l.inflight.remove(&slot).expect("present: just looked it up");
            self.learn(now, slot, f.value);
            // The window may have room now even if the commit point did not move.
            self.flush(now);
            self.check_reads(now);
        }
    }

    /// Called after the commit point advanced: stop-sign handling and more proposals.
    pub(crate) fn leader_after_commit(&mut self, now: Time) {
        let Role::Leader(l) = &mut self.role else { return };
        // Slots known chosen (perhaps learned before we led) need no more votes.
        l.inflight = l.inflight.split_off(&self.log.commit.next());
        l.adopted = l.adopted.split_off(&self.log.commit.next());
        if l.change.as_ref().is_some_and(|(s, _)| self.log.commit.next() == *s) {
            if let Some((slot, value)) = l.change.take() {
                self.propose_slot(now, slot, value);
            }
        }
        let Role::Leader(l) = &mut self.role else { return };
        match l.stop {
            Some(s) if self.log.commit >= s => self.pass_stop_sign(now),
            _ => {
                self.flush(now);
                self.check_reads(now);
                // Followers learn the commit point from the next Accept or heartbeat. If no
                // Accept carried this one (nothing more to propose: clients wait for these
                // answers, perhaps at a follower), push it soon instead of at the next periodic
                // heartbeat: a follower answering a forwarded write or a read-index read waits
                // for it.
                if let Role::Leader(l) = &self.role {
                    if l.commit_sent < self.log.commit {
                        self.timers.set_if_later(Timer::Heartbeat, now.plus(self.opts.commit_push_ms));
                    }
                }
            }
        }
    }

    /// The reconfiguration at the stop sign is chosen: run phase 1 again in the new configuration
    /// for the slots after it, with the same ballot (or step down if we are no longer an acceptor).
    fn pass_stop_sign(&mut self, now: Time) {
        let Some(config) = self.log.current_config().cloned() else { return };
        if !config.is_acceptor(&self.me) {
            self.step_down(now, false);
            return;
        }
        let Role::Leader(l) = std::mem::replace(&mut self.role, Role::Follower) else { return };
        let mut reads = l.reads_waiting;
        let mut remote = l.remote_waiting;
        for r in l.rounds.into_values() {
            reads.extend(r.reads);
            remote.extend(r.remote);
        }
        if !reads.is_empty() {
            self.actions.push_back(Action::ReadsFailed { reads, leader: Some(self.me.node) });
        }
        for (to, id) in remote {
            self.send(to.node, Message::ReadIndexReply { id, incarnation: to.incarnation, index: None });
        }
        #[cfg(feature = "sim")]
        if self.opts.bugs.reset_read_round {
            // The bug under test: the next term of the same ballot re-uses round numbers.
            self.read_round = 0;
        }
        self.role = Role::Candidate(Candidate {
            ballot: l.ballot,
            first_slot: self.log.commit.next(),
            config,
            promises: BTreeMap::new(),
            pages: BTreeMap::new(),
            asked: BTreeMap::new(),
            progress: now,
            started: now,
            queue: l.queue,
            sent_accept: true,
            since: Some(l.since),
            reported: l.reported,
        });
        self.timers.cancel(Timer::Heartbeat);
        self.timers.cancel(Timer::Batch);
        self.send_prepares(now);
        self.timers.set(Timer::Lease, now.plus(self.opts.leader_lease_ms));
    }

    /// Heartbeats to every member: commit point, checkpoint, latest read round.
    pub(crate) fn send_heartbeats(&mut self, now: Time) {
        self.leader_update_checkpoint();
        let read_round = self.read_round;
        let commit_now = self.log.commit;
        let Role::Leader(l) = &mut self.role else { return };
        l.acked.insert(self.me, read_round);
        l.commit_sent = l.commit_sent.max(commit_now);
        let ballot = l.ballot;
        let targets: Vec<NodeId> = l.config.members().map(|m| m.node).filter(|n| *n != self.me.node).collect();
        let (commit, checkpoint, fence) = (self.log.commit, self.checkpoint, l.fence);
        for to in targets {
            self.send(to, Message::Heartbeat { ballot, commit, checkpoint, read_round, fence });
        }
        self.timers.set(Timer::Heartbeat, now.plus(self.opts.heartbeat_ms));
        self.check_reads(now);
    }

    /// A follower confirmed our ballot.
    pub(crate) fn on_heartbeat_ack(&mut self, now: Time, from: Member, ballot: Ballot, read_round: u64) {
        let current = self.read_round;
        let Role::Leader(l) = &mut self.role else {
            self.counters.dropped_messages += 1;
            return;
        };
        if l.ballot != ballot || read_round > current {
            self.counters.dropped_messages += 1;
            return;
        }
        l.last_heard.insert(from, now);
        let e = l.acked.entry(from).or_insert(0);
        *e = (*e).max(read_round);
        self.check_reads(now);
    }

    /// Queue a linearizable read; start a round if none is running.
    pub(crate) fn leader_read(&mut self, now: Time, read: ReadId) -> bool {
        let Role::Leader(l) = &mut self.role else { return false };
        l.reads_waiting.push(read);
        if l.rounds.is_empty() {
            self.start_read_round(now);
        }
        true
    }

    pub(crate) fn start_read_round(&mut self, now: Time) {
        let Role::Leader(l) = &mut self.role else { return };
        if l.reads_waiting.is_empty() && l.remote_waiting.is_empty() {
            return;
        }
        self.read_round += 1;
        let reads = std::mem::take(&mut l.reads_waiting);
        let remote = std::mem::take(&mut l.remote_waiting);
        l.rounds.insert(self.read_round, ReadRound { commit: self.log.commit, reads, remote });
        self.send_heartbeats(now);
    }

    /// Serve every read round confirmed by a quorum, once our election barrier is committed.
    pub(crate) fn check_reads(&mut self, now: Time) {
        let Role::Leader(l) = &mut self.role else { return };
        // Not before our election barrier is committed (rule 4), and not across a stop sign: the
        // configuration after it may not count the acceptors that confirm this round.
        if self.log.commit < l.barrier || l.stop.is_some() {
            return;
        }
        let mut ready = Vec::new();
        while let Some((&r, _)) = l.rounds.first_key_value() {
            let votes = l.acked.iter().filter(|(_, a)| **a >= r).map(|(m, _)| m);
            if !l.config.is_quorum(votes) {
                break;
            }
            let round = l.rounds.remove(&r).expect("first key exists");
            ready.push(ReadsReadyEntry { reads: round.reads, remote: round.remote, index: round.commit.max(l.barrier) });
        }
        let start_next = l.rounds.is_empty() && (!l.reads_waiting.is_empty() || !l.remote_waiting.is_empty());
        for r in ready {
            if !r.reads.is_empty() {
                self.actions.push_back(Action::ReadsReady { reads: r.reads, index: r.index });
            }
            for (to, id) in r.remote {
                self.send(to.node, Message::ReadIndexReply { id, incarnation: to.incarnation, index: Some(r.index) });
            }
        }
        if start_next {
            self.start_read_round(now);
        }
    }

    /// Leader/candidate timers.
    pub(crate) fn on_retry(&mut self, now: Time) {
        match &mut self.role {
            Role::Candidate(_) => self.send_prepares(now),
            Role::Leader(l) => {
                let retry = self.opts.retry_ms;
                let (ballot, commit) = (l.ballot, self.log.commit);
                let mut sends = Vec::new();
                for (slot, f) in l.inflight.iter_mut() {
                    if f.sent.plus(retry) <= now {
                        f.sent = now;
                        for m in l.config.acceptors.iter().filter(|m| !f.votes.contains(m)) {
                            sends.push((m.node, Message::Accept { ballot, slot: *slot, value: f.value.clone(), commit }));
                        }
                    }
                }
                for (to, msg) in sends {
                    self.send(to, msg);
                }
                self.timers.set(Timer::Retry, now.plus(retry));
            }
            Role::Follower => {}
        }
    }

    /// Step down if no quorum was heard within the lease.
    pub(crate) fn on_lease(&mut self, now: Time) {
        let lease = self.opts.leader_lease_ms;
        match &self.role {
            Role::Candidate(c) => {
                // Not while promise pages keep arriving (`Candidate::progress`).
                let since = c.progress;
                #[cfg(feature = "sim")]
                let since = if self.opts.bugs.whole_phase1 { c.started } else { since };
                if since.plus(lease) <= now {
                    self.step_down(now, true);
                } else {
                    self.timers.set(Timer::Lease, since.plus(lease));
                }
            }
            Role::Leader(l) => match l.quorum_heard(self.me, now) {
                Some(t) if t.plus(lease) > now => self.timers.set(Timer::Lease, t.plus(lease)),
                _ => self.step_down(now, true),
            },
            Role::Follower => {}
        }
    }
}

struct ReadsReadyEntry {
    reads: Vec<ReadId>,
    remote: Vec<(Member, u64)>,
    index: Slot,
}
