//! The fault schedule: which faults happen, in what order, when, and for how long; a pure
//! function of `(seed, duration, replicas)`, so a seed replays the same plan.
//!
//! The plan holds every [`FaultKind`] at least once, in a seeded order, then extra faults drawn
//! at random while the run is long enough (one fault per [`SLOT_MIN`]). The run is cut into
//! equal slots; a fault is injected at the start of its slot and healed `hold` later, leaving
//! the rest of the slot for the cluster to settle. Targets that depend on the cluster at that
//! moment (the current leader, a random follower) are resolved at run time; the random part of
//! the choice (`pick`) is fixed here.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::Duration;

/// Shortest slot a fault gets: inject, verify, hold, heal, settle.
pub const SLOT_MIN: Duration = Duration::from_secs(7);

/// One kind of fault injected from outside the containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `docker kill -s KILL` the current leader, then `docker start` it.
    KillLeader,
    /// `docker kill -s KILL` a random replica, then `docker start` it.
    KillReplica,
    /// `docker pause` a random replica, then `docker unpause` it.
    PauseReplica,
    /// Disconnect one random follower from the cluster network, then reconnect it.
    IsolateReplica,
    /// Disconnect the leader from the cluster network, then reconnect it.
    IsolateLeader,
    /// Move a minority of replicas to a side network (they reach each other, not the majority
    /// nor etcd), then move them back.
    SplitMinority,
    /// `docker kill -s KILL` one etcd member, then `docker start` it.
    KillEtcd,
    /// Ask the cluster to add a replica, then remove one (needs the membership API).
    JoinLeave,
}

impl FaultKind {
    /// Every kind; each appears at least once in a plan.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillReplica,
        FaultKind::PauseReplica,
        FaultKind::IsolateReplica,
        FaultKind::IsolateLeader,
        FaultKind::SplitMinority,
        FaultKind::KillEtcd,
        FaultKind::JoinLeave,
    ];

    /// A short stable name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillReplica => "kill-replica",
            FaultKind::PauseReplica => "pause-replica",
            FaultKind::IsolateReplica => "isolate-replica",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::SplitMinority => "split-minority",
            FaultKind::KillEtcd => "kill-etcd",
            FaultKind::JoinLeave => "join-leave",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFault {
    /// When to inject it, from the start of the load.
    pub at: Duration,
    /// What to do.
    pub kind: FaultKind,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// The random part of the target choice: index into the candidates at run time (modulo
    /// their number), so the plan stays independent of the cluster's state.
    pub pick: u64,
}

/// The whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it came from.
    pub seed: u64,
    /// Faults in time order; slots never overlap.
    pub faults: Vec<PlannedFault>,
}

/// Build the plan for a run of `duration` (see the module docs). `kinds` is the set to draw
/// from (normally [`FaultKind::ALL`]).
pub fn plan(seed: u64, duration: Duration, kinds: &[FaultKind]) -> Schedule {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<FaultKind> = kinds.to_vec();
    order.shuffle(&mut rng);
    let fits = (duration.as_millis() / SLOT_MIN.as_millis()) as usize;
    while order.len() < fits && !kinds.is_empty() {
        order.push(kinds[rng.gen_range(0..kinds.len())]);
    }
    let n = order.len().max(1) as u32;
    // Short runs still hold every kind: the slot never drops below SLOT_MIN, and the load runs
    // until the last fault has settled (see `Schedule::end`).
    let slot = (duration / n).max(SLOT_MIN);
    let faults = order
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            // Hold for 30-55% of the slot: long enough for leases (5 s) to expire in long
            // slots, and at least 2 s.
            let frac = rng.gen_range(30..=55) as u32;
            let hold = (slot * frac / 100).max(Duration::from_secs(2));
            PlannedFault { at: slot * i as u32 + Duration::from_secs(1), kind, hold, pick: rng.gen() }
        })
        .collect();
    Schedule { seed, faults }
}

impl Schedule {
    /// When the last fault's slot ends (the load runs at least this long).
    pub fn end(&self) -> Duration {
        match (self.faults.first(), self.faults.last()) {
            (Some(first), Some(last)) => {
                let slot = if self.faults.len() > 1 {
                    self.faults[1].at - first.at
                } else {
                    last.hold * 2
                };
                last.at + slot
            }
            _ => Duration::ZERO,
        }
    }
}

/// Pick `pick mod len` from `candidates` (None when empty).
pub fn choose<T: Copy>(candidates: &[T], pick: u64) -> Option<T> {
    if candidates.is_empty() {
        None
    } else {
        Some(candidates[(pick % candidates.len() as u64) as usize])
    }
}

/// The largest minority of `n` replicas: the side cut off by [`FaultKind::SplitMinority`].
pub fn minority_size(n: usize) -> usize {
    n.saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_plan_and_another_seed_differs() {
        let a = plan(42, Duration::from_secs(120), &FaultKind::ALL);
        let b = plan(42, Duration::from_secs(120), &FaultKind::ALL);
        assert_eq!(a, b);
        let c = plan(43, Duration::from_secs(120), &FaultKind::ALL);
        assert_ne!(a.faults, c.faults);
    }

    #[test]
    fn every_kind_is_planned_even_in_a_short_run() {
        // 30 s holds 4 slots of SLOT_MIN, but all 8 kinds must still be there: the slots keep
        // their minimum and the plan runs past the nominal duration.
        let s = plan(7, Duration::from_secs(30), &FaultKind::ALL);
        assert_eq!(s.faults.len(), 8);
        for k in FaultKind::ALL {
            assert_eq!(s.faults.iter().filter(|f| f.kind == k).count(), 1, "{k}");
        }
        assert!(s.end() >= SLOT_MIN * 8);
    }

    #[test]
    fn long_runs_add_extra_faults_and_slots_do_not_overlap() {
        let s = plan(1, Duration::from_secs(300), &FaultKind::ALL);
        assert_eq!(s.faults.len(), 300 / 7);
        for k in FaultKind::ALL {
            assert!(s.faults.iter().any(|f| f.kind == k), "{k} missing");
        }
        for w in s.faults.windows(2) {
            assert!(w[0].at + w[0].hold < w[1].at, "{:?} overlaps {:?}", w[0], w[1]);
            assert!(w[0].hold >= Duration::from_secs(2));
        }
        assert!(s.end() <= Duration::from_secs(302));
    }

    #[test]
    fn the_plan_only_draws_from_the_given_kinds() {
        let kinds = [FaultKind::PauseReplica, FaultKind::KillEtcd];
        let s = plan(9, Duration::from_secs(60), &kinds);
        assert!(s.faults.iter().all(|f| kinds.contains(&f.kind)));
        assert_eq!(s.faults.len(), 60 / 7);
    }

    #[test]
    fn choice_and_minority() {
        assert_eq!(choose(&[10, 20, 30], 4), Some(20));
        assert_eq!(choose::<u8>(&[], 4), None);
        assert_eq!(minority_size(5), 2);
        assert_eq!(minority_size(9), 4);
        assert_eq!(minority_size(3), 1);
        assert_eq!(minority_size(4), 1);
    }
}
