//! The fault schedule: which faults happen, in what order, when, and for how long; a pure
//! function of `(seed, duration, replicas)`, so a seed replays the same plan.
//!
//! The plan holds every [`FaultKind`] at least once, in a seeded order, then extra faults drawn
//! at random while the run is long enough (each kind needs its [`FaultKind::min_slot`]: 7 s,
//! [`POWER_CUT_SLOT`] for a power cut). Every slot is its kind's minimum stretched by one factor
//! so the slots fill the run; a run shorter than the minimums is not squeezed, it runs past its
//! nominal duration instead. A fault is injected at the start of its slot and healed `hold`
//! later, leaving the rest of the slot for the cluster to settle. Targets that depend on the
//! cluster at that moment (the current leader, a random follower) are resolved at run time;
//! the random part of the choice (`pick`) is fixed here.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::time::Duration;

/// Shortest slot a fault gets: inject, verify, hold, heal, settle.
pub const SLOT_MIN: Duration = Duration::from_secs(7);

/// Shortest slot of a [`FaultKind::PowerCut`]: every replica down for 2-4 s, then all of them
/// start, replay their data directories and elect, the fault checks a write, and the cluster
/// catches up. Measured on 2 shared cores (seed 483404): every replica answered 0.2 s after
/// `docker start`, a leader and an acknowledged write 0.3 s after it; the 10-12 s left after
/// the outage are slack for a loaded machine (a fault that overruns its slot delays the next).
pub const POWER_CUT_SLOT: Duration = Duration::from_secs(14);

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
    /// `docker kill -s KILL` every replica at once (one command), then `docker start` them all:
    /// each must come back with its incarnation (durable mode) and the cluster must serve.
    PowerCut,
}

impl FaultKind {
    /// Every kind; each appears at least once in a plan.
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::KillReplica,
        FaultKind::PauseReplica,
        FaultKind::IsolateReplica,
        FaultKind::IsolateLeader,
        FaultKind::SplitMinority,
        FaultKind::KillEtcd,
        FaultKind::JoinLeave,
        FaultKind::PowerCut,
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
            FaultKind::PowerCut => "power-cut",
        }
    }

    /// The shortest slot this kind gets.
    pub fn min_slot(self) -> Duration {
        match self {
            FaultKind::PowerCut => POWER_CUT_SLOT,
            _ => SLOT_MIN,
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
    /// Its whole slot: the next fault starts `slot` after this one.
    pub slot: Duration,
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
    let minimum = |order: &[FaultKind]| order.iter().map(|k| k.min_slot()).sum::<Duration>();
    // Extras while the next one still fits in the run (the first that does not ends the list).
    while !kinds.is_empty() {
        let k = kinds[rng.gen_range(0..kinds.len())];
        if minimum(&order) + k.min_slot() > duration {
            break;
        }
        order.push(k);
    }
    // Short runs still hold every kind: no slot drops below its minimum, and the load runs
    // until the last fault has settled (see `Schedule::end`).
    let stretch = (duration.as_secs_f64() / minimum(&order).as_secs_f64().max(1e-3)).max(1.0);
    let mut at = Duration::from_secs(1);
    let faults = order
        .into_iter()
        .map(|kind| {
            let slot = kind.min_slot().mul_f64(stretch);
            let hold = match kind {
                // Every replica is down: long enough to be a real outage (the clients see
                // refused connections, the leader's etcd lease runs down), short enough to leave
                // the slot to the restart, the election and the catch-up.
                FaultKind::PowerCut => Duration::from_millis(rng.gen_range(2_000..=4_000)),
                // 30-55% of the slot: long enough for leases (5 s) to expire in long slots, and
                // at least 2 s.
                _ => (slot * rng.gen_range(30..=55) / 100).max(Duration::from_secs(2)),
            };
            let f = PlannedFault { at, kind, hold, slot, pick: rng.gen() };
            at += slot;
            f
        })
        .collect();
    Schedule { seed, faults }
}

impl Schedule {
    /// When the last fault's slot ends (the load runs at least this long).
    pub fn end(&self) -> Duration {
        self.faults.last().map_or(Duration::ZERO, |f| f.at + f.slot)
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
        // 30 s holds 4 slots of SLOT_MIN, but all 9 kinds must still be there: the slots keep
        // their minimum and the plan runs past the nominal duration.
        let s = plan(7, Duration::from_secs(30), &FaultKind::ALL);
        assert_eq!(s.faults.len(), 9);
        for k in FaultKind::ALL {
            assert_eq!(s.faults.iter().filter(|f| f.kind == k).count(), 1, "{k}");
        }
        for f in &s.faults {
            assert_eq!(f.slot, f.kind.min_slot(), "{f:?}");
        }
        assert_eq!(s.end(), Duration::from_secs(1) + SLOT_MIN * 8 + POWER_CUT_SLOT);
    }

    #[test]
    fn seventy_seconds_hold_every_kind_once_with_no_stretch() {
        // CI's `docker/chaos.sh --duration 70`: 8 slots of 7 s and a power cut of 14 s.
        let s = plan(3, Duration::from_secs(70), &FaultKind::ALL);
        assert_eq!(s.faults.len(), FaultKind::ALL.len());
        assert_eq!(s.end(), Duration::from_secs(71));
    }

    #[test]
    fn the_power_cut_gets_a_longer_slot_and_a_short_outage() {
        for seed in 0..50 {
            let s = plan(seed, Duration::from_secs(70), &FaultKind::ALL);
            let cuts: Vec<_> = s.faults.iter().filter(|f| f.kind == FaultKind::PowerCut).collect();
            assert!(!cuts.is_empty(), "seed {seed}");
            for c in cuts {
                assert!(c.slot >= POWER_CUT_SLOT, "{c:?}");
                assert!(c.hold >= Duration::from_secs(2) && c.hold <= Duration::from_secs(4), "{c:?}");
                assert!(c.slot - c.hold >= Duration::from_secs(10), "room to restart and elect: {c:?}");
            }
        }
    }

    #[test]
    fn long_runs_add_extra_faults_and_slots_do_not_overlap() {
        let s = plan(1, Duration::from_secs(300), &FaultKind::ALL);
        assert!(s.faults.len() >= 300 / 14 && s.faults.len() <= 300 / 7, "{}", s.faults.len());
        assert!(s.faults.len() > FaultKind::ALL.len(), "extras in a long run");
        for k in FaultKind::ALL {
            assert!(s.faults.iter().any(|f| f.kind == k), "{k} missing");
        }
        for w in s.faults.windows(2) {
            assert!(w[0].at + w[0].hold < w[1].at, "{:?} overlaps {:?}", w[0], w[1]);
            assert_eq!(w[0].at + w[0].slot, w[1].at, "slots follow each other");
            assert!(w[0].hold >= Duration::from_secs(2));
            assert!(w[0].slot >= w[0].kind.min_slot());
        }
        // The slots fill the run (one second of warm-up first), no more.
        assert!(s.end() <= Duration::from_secs(302), "{:?}", s.end());
        assert!(s.end() >= Duration::from_secs(300), "{:?}", s.end());
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
