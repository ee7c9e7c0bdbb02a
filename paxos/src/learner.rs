//! The learner: which slots are chosen, applying them in order, and catching up.
//!
//! Every replica learns. A slot is known chosen when
//! * this replica leads and a quorum of the slot's configuration accepted its proposal, or
//! * the leader's commit point (on an `Accept` or a `Heartbeat` of ballot `b`) covers the slot and
//!   this replica accepted a value for it under the same `b`: a leader proposes one value per
//!   slot per ballot, and a leader only reports slots it knows chosen, or
//! * a peer sent the value in `Chosen` (answering a `Fetch`).
//!
//! Known-chosen values are applied strictly in slot order, without gaps (`Action::Apply`). The
//! log keeps chosen values above the compaction point so it can answer peers' fetches.

use crate::action::Action;
use crate::config::Configuration;
use crate::ids::{Ballot, Member, NodeId, Slot, Time};
use crate::message::{Message, Value};
use crate::replica::{Replica, Role};
use crate::timer::Timer;
use rand::Rng;
use std::collections::BTreeMap;

/// Most slots asked for or sent in one `Fetch`/`Chosen`.
pub(crate) const FETCH_BATCH: u64 = 4096;

/// A `Chosen` stops adding slots once their values reach about this many bytes (it carries at
/// least one). With 128 slots per round trip a replica that installed a snapshot at 1 M keys
/// needed 2.7 s for the 85,000 slots chosen during the transfer; and 128 full slots (1 MiB each
/// by default) would have made a message above the peer transport's 64 MiB limit, which is
/// dropped, so the fetch would be retried for ever.
pub(crate) const FETCH_BYTES: usize = 4 << 20;

/// A fetch source that sent nothing useful for this many `retry_ms` is replaced.
pub(crate) const FETCH_SILENCE_RETRIES: u64 = 3;

/// The one peer a replica behind the commit point fetches from (one transfer per restart).
///
/// It is the known leader when there is one (it has every slot). The replica keeps asking the
/// same source; it turns to another member only when the source sent nothing useful (values
/// that advanced the commit point, or `Compacted`) for [`FETCH_SILENCE_RETRIES`] retries, or
/// when the source answered `Compacted` (a snapshot is on its way from it) and no snapshot
/// arrived within `snapshot_wait_ms`. Outside a transfer it follows a new leader at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FetchSource {
    pub(crate) node: NodeId,
    /// The leader known when this source was picked.
    pub(crate) leader: Option<NodeId>,
    /// When the source last sent something useful (or was picked).
    pub(crate) heard: Time,
    /// Since when a snapshot from the source has been awaited (its first `Compacted`).
    pub(crate) waiting: Option<Time>,
}

/// The replica's view of the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log {
    /// Known-chosen values above `compacted`.
    pub(crate) entries: BTreeMap<Slot, Value>,
    /// Every slot up to here is known chosen and applied.
    pub(crate) commit: Slot,
    /// The highest commit point heard from anyone.
    pub(crate) known_commit: Slot,
    /// Slots at or below here are gone from this log (covered by a snapshot).
    pub(crate) compacted: Slot,
    /// Configurations by the slot they were chosen in; each governs the slots after its key.
    pub(crate) configs: BTreeMap<Slot, Configuration>,
}

impl Log {
    /// The configuration governing `slot`, if known.
    pub(crate) fn config_for(&self, slot: Slot) -> Option<&Configuration> {
        self.configs.range(..slot).next_back().map(|(_, c)| c)
    }

    /// The configuration governing the slots after the commit point.
    pub(crate) fn current_config(&self) -> Option<&Configuration> {
        self.configs.values().next_back()
    }

    /// Since which slot `member` has been a member without a break, as far as this log knows
    /// (the oldest configuration it keeps counts as the start).
    pub(crate) fn member_since(&self, member: &Member) -> Slot {
        let mut since = Slot(0);
        for (slot, config) in self.configs.iter().rev() {
            if !config.members().any(|m| m == member) {
                break;
            }
            since = *slot;
        }
        since
    }
}

impl Replica {
    /// Record that `slot` is chosen with `value`, then apply what became contiguous.
    pub(crate) fn learn(&mut self, now: Time, slot: Slot, value: Value) {
        if slot <= self.log.commit || slot <= self.log.compacted {
            return;
        }
        self.log.entries.entry(slot).or_insert(value);
        self.advance(now);
    }

    /// Apply every known-chosen slot after the commit point, in order.
    pub(crate) fn advance(&mut self, now: Time) {
        if self.log.configs.is_empty() {
            // Without a configuration (a fresh incarnation) the log cannot be interpreted: wait
            // for a snapshot.
            return;
        }
        let before = self.log.commit;
        while let Some(value) = self.log.entries.get(&self.log.commit.next()).cloned() {
            let slot = self.log.commit.next();
            self.log.commit = slot;
            self.log.known_commit = self.log.known_commit.max(slot);
            self.apply(slot, value);
        }
        if self.log.commit > before {
            self.after_commit(now);
            self.settle_by_fence();
        }
    }

    fn apply(&mut self, slot: Slot, value: Value) {
        let ids = value.request_ids();
        if let Value::Batch(cmds, _) = &value {
            self.counters.commands_applied += cmds.len() as u64;
        }
        let change = match &value {
            Value::Reconfigure { change, .. } => Some(*change),
            _ => None,
        };
        self.actions.push_back(Action::Apply { slot, value });
        self.settle_forwarded(&ids);
        // Our own proposals (and commands forwarded to us) that lost this slot to another value
        // are lost for good.
        if let Some(mine) = self.pending.remove(&slot) {
            for id in mine.into_iter().filter(|id| !ids.contains(id)) {
                self.report_lost(id);
            }
        }
        if let Some(change) = change {
            self.apply_config_change(slot, change);
        }
        self.maybe_snapshot(slot);
    }

    fn apply_config_change(&mut self, slot: Slot, change: crate::config::ConfigChange) {
        let Some(current) = self.log.config_for(slot.next()).cloned() else { return };
        // A change refused by the configuration it applies to is a no-op (it was validated by the
        // leader against the same configuration, so this only happens after a stale proposal).
        if let Ok(next) = current.apply(&change) {
            self.counters.config_changes += 1;
            // Reports of replaced incarnations are no longer needed. Those of removed members
            // are kept: a member removed and added back is judged by what it last said.
            self.learned.retain(|m, _| next.member(m.node).is_none_or(|n| n == *m));
            self.log.configs.insert(slot, next.clone());
            self.actions.push_back(Action::ConfigChanged { slot, config: next });
        }
    }

    /// Learn from a leader's commit point: slots up to `commit` that we accepted under the same
    /// `ballot` are chosen with that value.
    pub(crate) fn learn_commit(&mut self, now: Time, ballot: Ballot, commit: Slot) {
        let commit = Slot(commit.0.min(self.log.commit.0.saturating_add(self.opts.max_slot_gap)));
        self.log.known_commit = self.log.known_commit.max(commit);
        if commit > self.log.commit {
            let found: Vec<(Slot, Value)> = self
                .acceptor
                .accepted
                .range(self.log.commit.next()..=commit)
                .filter(|(_, (b, _))| *b == ballot)
                .map(|(s, (_, v))| (*s, v.clone()))
                .collect();
            for (s, v) in found {
                self.log.entries.entry(s).or_insert(v);
            }
            self.advance(now);
        }
        self.maybe_fetch(now);
    }

    /// Fetch missing slots unless a fetch is already outstanding.
    pub(crate) fn maybe_fetch(&mut self, now: Time) {
        if self.log.known_commit <= self.log.commit {
            // Caught up: the next time it falls behind, it starts again from the leader.
            self.fetch_source = None;
        }
        if self.log.known_commit > self.log.commit && !self.timers.is_set(Timer::Fetch) {
            self.send_fetch(now);
        }
    }

    /// Ask the fetch source for the slots we miss.
    pub(crate) fn send_fetch(&mut self, now: Time) {
        if self.log.known_commit <= self.log.commit || matches!(self.role, Role::Leader(_)) {
            // Caught up: the next time it falls behind, it starts again from the leader.
            self.fetch_source = None;
            self.timers.cancel(Timer::Fetch);
            return;
        }
        if let Some(to) = self.fetch_target(now) {
            // Without a configuration we cannot interpret the log: ask from slot 0, which every
            // peer answers with `Compacted` and a snapshot (that carries the configuration).
            let from = if self.log.configs.is_empty() { Slot(0) } else { self.log.commit.next() };
            let to_slot = Slot(self.log.known_commit.0.min(self.log.commit.0 + FETCH_BATCH));
            self.send(to, Message::Fetch { from, to: to_slot });
        }
        self.timers.set(Timer::Fetch, now.plus(self.opts.retry_ms));
    }

    /// The peer to fetch from: the current source while it serves (see [`FetchSource`]), else
    /// the known leader, else (or when the leader is the source that failed) a random member.
    pub(crate) fn fetch_target(&mut self, now: Time) -> Option<NodeId> {
        let leader = self.known_leader.filter(|l| *l != self.me.node);
        let peers: Vec<NodeId> = match self.log.current_config() {
            Some(c) => c.members().map(|m| m.node).filter(|n| *n != self.me.node).collect(),
            None => Vec::new(),
        };
        let mut failed = None;
        if let Some(s) = self.fetch_source {
            // A peer sending us a snapshot is kept while it does, member or not (`on_compacted`).
            let known = Some(s.node) == leader || peers.contains(&s.node) || s.waiting.is_some();
            let silent = now >= s.heard.plus(FETCH_SILENCE_RETRIES * self.opts.retry_ms);
            let stalled = s.waiting.is_some_and(|t| now >= t.plus(self.opts.snapshot_wait_ms));
            let new_leader = s.waiting.is_none() && leader.is_some() && leader != s.leader;
            if known && !silent && !stalled && !new_leader {
                return Some(s.node);
            }
            if silent || stalled {
                failed = Some(s.node);
            }
        }
        let pick = match leader {
            Some(l) if Some(l) != failed => Some(l),
            _ => {
                let others: Vec<NodeId> = peers.iter().copied().filter(|p| Some(*p) != failed).collect();
                if others.is_empty() {
                    // Nobody else is known: try the same one again.
                    leader.or(failed)
                } else {
                    Some(others[self.rng.gen_range(0..others.len())])
                }
            }
        };
        self.fetch_source = pick.map(|node| FetchSource { node, leader, heard: now, waiting: None });
        pick
    }

    /// A peer asks for chosen values.
    pub(crate) fn on_fetch(&mut self, now: Time, from_node: NodeId, from: Slot, to: Slot) {
        if from > to {
            self.counters.dropped_messages += 1;
            return;
        }
        self.prune_transfers(now);
        self.note_transfer_fetch(now, from_node, from);
        if from <= self.log.compacted {
            self.send(from_node, Message::Compacted { snapshot_slot: self.log.compacted });
            // The asker re-fetches every `retry_ms` until a snapshot arrives: one transfer at a
            // time per peer (`compaction.rs`).
            self.start_transfer(now, from_node);
            return;
        }
        let last = Slot(to.0.min(from.0.saturating_add(FETCH_BATCH)));
        let mut bytes = 0;
        let mut entries: Vec<(Slot, Value)> = Vec::new();
        for (s, v) in self.log.entries.range(from..=last) {
            if *s > self.log.commit || (!entries.is_empty() && bytes + v.size_hint() > FETCH_BYTES) {
                break;
            }
            bytes += v.size_hint();
            entries.push((*s, v.clone()));
        }
        self.send(from_node, Message::Chosen { entries, commit: self.log.commit });
    }

    /// Chosen values from a peer.
    pub(crate) fn on_chosen(&mut self, now: Time, from: NodeId, entries: Vec<(Slot, Value)>, commit: Slot) {
        if matches!(self.role, Role::Leader(_)) {
            // A leader knows every slot up to its first proposed one; values for later slots
            // come from its own quorums. A stale answer to an old fetch is dropped.
            self.counters.dropped_messages += 1;
            return;
        }
        if self.log.configs.is_empty() {
            // A learner without a configuration waits for a snapshot.
            self.counters.dropped_messages += 1;
            return;
        }
        let before = self.log.commit;
        let commit = Slot(commit.0.min(self.log.commit.0.saturating_add(self.opts.max_slot_gap)));
        self.log.known_commit = self.log.known_commit.max(commit);
        for (s, v) in entries {
            if s > self.log.commit && s > self.log.compacted {
                self.log.entries.entry(s).or_insert(v);
            }
        }
        self.advance(now);
        if self.log.commit > before {
            self.timers.cancel(Timer::Fetch);
            if let Some(s) = self.fetch_source.as_mut().filter(|s| s.node == from) {
                s.heard = now;
                s.waiting = None;
            }
        }
        self.maybe_fetch(now);
    }
}
