//! Durable restart: a replica rebuilt from what its driver kept on disk.
//!
//! In durable mode the driver writes every [`crate::Persist`] (a promise, an accepted value) to a
//! write-ahead log before running the actions after it, and keeps snapshots of the state
//! machine as files. A process that restarts with that data intact keeps its identity (node and
//! incarnation): [`Replica::recover`] gives it back its promise and its accepted values, and the
//! log position of its latest snapshot, so it is an acceptor again at once (architecture rule 8:
//! a replica never votes under promises it forgot; this one forgot none).
//!
//! What the restarted replica does *not* know is which slots above its snapshot were chosen: it
//! learns them like any follower that fell behind (the commit point on heartbeats, then a fetch
//! from a peer, or a snapshot if the peers disposed of those slots). After every replica
//! restarted at once, a new leader's phase 1 re-discovers every chosen value from the accepted
//! values of a quorum, as Paxos guarantees: the driver keeps every accepted value above its
//! latest durable snapshot, and refuses (`Compacted`) any slot at or below it, where it no
//! longer holds its votes.

use crate::ids::{Ballot, Slot, Time};
use crate::message::{AcceptedEntry, SnapshotMeta};
use crate::options::Options;
use crate::replica::Replica;
use crate::action::Persist;

/// What a replica kept on disk, as its driver read it back.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The snapshot the state machine restarts from (the initial empty state at slot 0 with the
    /// bootstrap configuration, before the first one).
    pub snapshot: SnapshotMeta,
    /// The highest ballot promised.
    pub promised: Ballot,
    /// Accepted values, in the order they were persisted (a later record for a slot wins when
    /// its ballot is not lower). Entries at or below the snapshot are ignored.
    pub accepted: Vec<AcceptedEntry>,
}

impl Recovered {
    /// Nothing persisted yet on top of `snapshot`.
    pub fn from_snapshot(snapshot: SnapshotMeta) -> Recovered {
        Recovered { snapshot, promised: Ballot::ZERO, accepted: Vec::new() }
    }

    /// Replay one persisted record, in log order.
    pub fn replay(&mut self, record: Persist) {
        match record {
            Persist::Promised(b) => self.promised = self.promised.max(b),
            Persist::Accepted(e) => self.accepted.push(e),
        }
    }
}

impl Replica {
    /// A replica of the same incarnation as the process that wrote `disk` (`options.me`), with
    /// its promise and accepted values, its log starting after `disk.snapshot` (which the driver
    /// has loaded into its state machine), and every slot at or below the snapshot refused as
    /// compacted. `options.restart_epoch` must exceed that of every earlier start of this
    /// incarnation.
    pub fn recover(mut options: Options, now: Time, disk: Recovered) -> Replica {
        options.bootstrap = None;
        let base = options.restart_epoch << 32;
        let mut r = Replica::new(options, now);
        let last = disk.snapshot.last_slot;
        r.log.commit = last;
        r.log.known_commit = last;
        r.log.compacted = last;
        r.log.configs.insert(last, disk.snapshot.config);
        r.snapshot = last;
        r.snapshot_asked = last;
        // Votes at or below the snapshot are gone from the disk: never vote there again.
        r.checkpoint = last;
        r.acceptor.promised = disk.promised;
        r.acceptor.promised_to = (disk.promised != Ballot::ZERO).then(|| disk.promised.owner());
        let mut max_seen = disk.promised;
        for e in disk.accepted.into_iter().filter(|e| e.slot > last) {
            max_seen = max_seen.max(e.ballot);
            let keep = r.acceptor.accepted.get(&e.slot).is_none_or(|(b, _)| *b <= e.ballot);
            if keep {
                r.acceptor.accept(e.slot, e.ballot, e.value);
            }
        }
        r.max_seen = max_seen;
        r.read_round = r.read_round.max(base);
        r.read_index.start_at(base);
        r.counters.recovered_accepted = r.acceptor.accepted.len() as u64;
        r
    }

    /// The highest slot with an accepted value, if any.
    pub fn last_accepted(&self) -> Option<Slot> {
        self.acceptor.accepted.keys().next_back().copied()
    }
}
