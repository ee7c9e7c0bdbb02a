//! A deterministic simulator of a Synod cluster over the real [`crate::Replica`] core.
//!
//! Many replicas live in one process, in virtual time, with **one** seeded RNG, so a seed replays
//! a run exactly. The network loses, duplicates, reorders and delays messages, can be
//! partitioned (symmetric and one-way), and **holds streams**: a link stalls for 0.5 to 5 s and
//! then delivers everything in the order it was sent (`net.rs`). Replicas crash (pause, state
//! kept, as with durable persists) and restart with amnesia (a new incarnation that rejoins as a
//! learner through `AddLearner` + `Promote`), also while a change is pending and as learners. A
//! spare node outside the bootstrap configuration joins and leaves. Clients propose through random
//! replicas (a non-leader forwards once to the leader it names) and issue linearizable reads. An
//! election oracle stands in for etcd: it sometimes names two leaders at once, or none. The
//! stale-leader sequence (`nemesis.rs`) lines faults up in the order that hurts most.
//!
//! Each seed runs a **safety phase** (faults on) and then a **liveness phase** without rescue
//! (`liveness.rs`): the network heals, an etcd-like election names any campaigner, lagging or not,
//! and keeps it until it resigns; each named leader must get a probe chosen within a bounded number
//! of lease periods or step down, and at the end every command proposed earlier must be resolved
//! and every member must converge. The invariants (see [`ghost`], `cluster.rs` and `checks.rs`)
//! are checked at every step, against ground truth (what the nodes applied, which messages were
//! delivered), never against what a replica believes of its peers:
//!
//! 1. at most one value is chosen per slot, counted by a ghost observer from the acceptors'
//!    persisted votes against the configuration governing the slot (PMS 2.1, P2);
//! 2. only proposed commands, proposed reconfigurations or no-ops are chosen (PMS 2.1, nontriviality);
//! 3. a voting identity's promise never decreases (PMS 2.2, P1a);
//! 4. replicas apply slots in order without gaps, and every applied value is the chosen one, so the
//!    applied logs of any two replicas are prefixes of one another (SMR);
//! 5. a command reported lost is never chosen, and one reported chosen is in every applied log
//!    that reaches its slot;
//! 6. linearizable reads are served at an index covering every write applied anywhere before the
//!    read was issued, and never by a leader of which a quorum had promised a higher ballot when
//!    the read arrived (architecture rule 4);
//! 7. no slot is disposed of before every member of its configuration really applied it, unless
//!    the lag rule excuses the member by the reports really delivered to the leader (rule 6);
//! 8. a leader never holds a pending stop sign at or below its commit point;
//! 9. a leader with work pending commits something within 8 lease periods, or steps down.
//!
//! A failure names its seed; `PAXOS_SIM_FIRST_SEED=<seed> PAXOS_SIM_SEEDS=1` replays it alone.

mod checks;
pub mod cluster;
pub mod ghost;
mod liveness;
mod nemesis;
mod net;

pub use cluster::{majority_loss, paged_seed, run, Failure, MajorityLoss, SimConfig, SimStats};

/// The seed range from the environment: `PAXOS_SIM_FIRST_SEED` (default `default_first`) and
/// `PAXOS_SIM_SEEDS` (default `default_count`).
pub fn seed_range(default_first: u64, default_count: u64) -> std::ops::Range<u64> {
    let get = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let first = get("PAXOS_SIM_FIRST_SEED", default_first);
    let count = get("PAXOS_SIM_SEEDS", default_count);
    first..first + count
}
