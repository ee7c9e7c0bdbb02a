//! A deterministic simulator of whole Synod replicas: the node layer ([`crate::Node`]), with its
//! core, its key-value store, its pending requests and sessions, run in virtual time with one
//! seeded RNG, against a simulated etcd and simulated clients whose histories are checked by the
//! project's own linearizability checker.
//!
//! What the paxos simulator (`paxos/src/sim`) checks is what the core believes and does; this one
//! checks **what a client sees**: a value a read returned, an acknowledgement, a retry. It is the
//! test that would have caught a linearizable read served from stale state, a session table that
//! forgets, or an acknowledged write that is not in the store, whatever layer the bug is in.
//!
//! The world:
//!
//! * **Network** (`net.rs`): loss, duplication, random delay, partitions (a node cut from every
//!   peer, or one-way links) lasting seconds, held links (a stalled stream that delivers everything
//!   at once, in order, 0.5-5 s later). Snapshots travel as whole stores after a delay, unless the
//!   link is cut.
//! * **Pauses** (a `SIGSTOP`): a paused node processes nothing; what is sent to it waits in its
//!   inbox (the TCP buffers) and runs when it resumes, against a world that moved on. Its etcd
//!   lease expires while it sleeps.
//! * **etcd** (`etcd.rs`): leases renewed while a node is up and can reach etcd; an election
//!   that names the oldest campaigner with a live lease; hints that reach each node late and in
//!   order; suspicions (each process's task records its suspicion under its own lease, deletes
//!   it when withdrawn, retrying a delete that failed, and a majority of acceptors whose records
//!   count revokes the leader's lease, as `driver/src/etcd.rs` does; deletes fail while a node is
//!   cut from etcd and, in one run in two, in short flaps); and a nemesis that tells a node a
//!   wrong leader for a while.
//! * **Clients** (`client.rs`): one request at a time each, to a random replica, with a timeout;
//!   writes with a session (retried under the same sequence number on another replica after a
//!   timeout or an unknown outcome), with an idempotency key (a session of one request), or with
//!   neither (never retried once the outcome is unknown); linearizable and sequential reads (with
//!   the client's `min_index`), compare-and-set and increments.
//! * **A small session table** (`SimConfig::sessions`, one run in five): a TTL of 2-5 s and 8-20
//!   sessions, a client flooding keyed puts through a round-robin balancer over every replica, and
//!   after the heal a probe client that must get a new session in ([`SessionShape`]).
//!
//! After a safety phase with faults, everything heals, each client reads every key, and the run
//! must quiesce. The verdicts:
//!
//! 1. the history of writes, compare-and-sets, increments and linearizable reads is linearizable
//!    (`checker::check`): every acknowledged write is in the store, no write applied twice (an
//!    increment applied twice, or a retried write that lands after a later one, is not
//!    linearizable), no read returned a stale value;
//! 2. sequential reads carry indexes that never go back per client and show the client's own
//!    writes (`checker::check_sequential`);
//! 3. every client request settles once the cluster heals (no wedged leader, no request waiting
//!    forever);
//! 4. every replica ends with the same state hash at the same applied index;
//! 5. with a small session table, the probe is admitted within [`PROBE_TTLS`] x TTL of its start
//!    ([`PROBE_SETTLE_MS`] after the heal; runs with the smallest table have no lock clients, so
//!    the probe races the flood alone there: [`SMALLEST_TABLE_WITHOUT_LOCKS`]), and under one leader the log clock advances at least
//!    half the time between the proposals it counts (over stretches of [`CLOCK_STRETCH_MS`]);
//! 6. in every run, no replica's log clock is ever above the simulated time;
//! 7. every revocation of a leader's etcd lease by suspicion happened to a leader that a majority
//!    of the acceptors (of the configuration the revoking node runs) could not hear: each was not
//!    running, or had taken no word from that leader for at least `suspect_leader_after_ms`, now
//!    or within the last TTL and a little (how long a withdrawn record may still count in a
//!    correct system: `World::check_revocations`).
//!
//! A failure names its seed; `NODE_SIM_FIRST_SEED=<seed> NODE_SIM_SEEDS=1` replays it alone.

mod client;
mod etcd;
mod locker;
mod net;
mod world;

pub use locker::{End, Interval, LockBugs, LockStats, HANDOVER_SLACK_MS};
pub use world::{run, Failure, SessionShape, SimConfig, SimStats, CLOCK_STRETCH_MS, LOCK_IDLE_MS, LOCK_SETTLE_MS, PROBE_SETTLE_MS, PROBE_TTLS, SMALLEST_TABLE_WITHOUT_LOCKS};

/// The seed range from the environment: `NODE_SIM_FIRST_SEED` (default `default_first`) and
/// `NODE_SIM_SEEDS` (default `default_count`).
pub fn seed_range(default_first: u64, default_count: u64) -> std::ops::Range<u64> {
    let get = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let first = get("NODE_SIM_FIRST_SEED", default_first);
    let count = get("NODE_SIM_SEEDS", default_count);
    first..first + count
}
