//! Failover time with real processes: `kill -9` of the leader, repeated, and the time from the
//! kill to the first acknowledged write through a surviving replica. Prints every kill, the
//! median and the p99, and the leader changes (phase-1 runs and wins) each kill caused; then a
//! SIGTERM of the leader and the time to the first write after it.
//!
//! `FAILOVER_KILLS` (default 10) and `FAILOVER_LEASE_TTL` (seconds, default 5: the default
//! `--lease-ttl`, so the figure does not ride on a short TTL) change the run.

mod common;

use common::{env_u64, percentile, Cluster};
use hyper::Method;
use std::time::{Duration, Instant};

/// Bounds from the issue (median 1 s, p99 2 s) with slack for two shared, loaded cores.
const MEDIAN_BOUND: Duration = Duration::from_millis(1_300);
const P99_BOUND: Duration = Duration::from_millis(2_500);

/// Write through `ids` (each in its own loop, short per-attempt timeout) until one write is
/// acknowledged; the instant its acknowledgement arrived and who served it.
async fn first_ack(c: &Cluster, ids: &[u64], tag: &str, give_up: Duration) -> Option<(Instant, u64)> {
    let deadline = Instant::now() + give_up;
    let attempts = ids.iter().map(|id| {
        let url = format!("{}/v1/kv/failover-{tag}-{id}", c.url(*id));
        let http = c.http.clone();
        let id = *id;
        Box::pin(async move {
            while Instant::now() < deadline {
                if let Ok(r) = http.request(Method::PUT, &url, &[], "x".to_string(), Duration::from_millis(500)).await {
                    if r.status == 200 || r.status == 201 {
                        return Some((Instant::now(), id));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        })
    });
    let (first, _, _) = futures::future::select_all(attempts).await;
    first
}

async fn counter_sum(c: &Cluster, ids: &[u64], name: &str) -> u64 {
    let mut sum = 0;
    for id in ids {
        sum += c.metric(*id, name).await.unwrap_or(0);
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_failover_time() {
    let kills = env_u64("FAILOVER_KILLS", 10);
    let ttl = env_u64("FAILOVER_LEASE_TTL", 5);
    let mut c = Cluster::start(3, ttl, 1_000).await;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_leader(Duration::from_secs(60)).await;
    let mut times = Vec::new();
    let mut duels = 0;
    for k in 0..kills {
        c.wait_acceptors(&ids, &ids, Duration::from_secs(90)).await;
        let leader = c.wait_leader(Duration::from_secs(60)).await;
        // The cluster writes before the kill (so the clock below measures the failover only).
        let (_, _) = first_ack(&c, &ids, &format!("{k}-before"), Duration::from_secs(30)).await.expect("writes before the kill");
        let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
        let elections_before = counter_sum(&c, &survivors, "synod_core_elections_started_total").await;
        let wins_before = counter_sum(&c, &survivors, "synod_core_became_leader_total").await;

        c.crash(leader);
        let killed_at = Instant::now();
        assert!(c.nodes.get_mut(&leader).unwrap().child.try_wait().unwrap().is_some(), "the old leader's process is dead");
        let (acked_at, via) = first_ack(&c, &survivors, &format!("{k}-after"), Duration::from_secs(30)).await.expect("a write is served after the kill");
        let took = acked_at - killed_at;
        let new_leader = c.wait_leader_among(&survivors, Duration::from_secs(30)).await;
        assert_ne!(new_leader, leader, "a new leader");
        // Let a duel, if any, show itself before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let elections = counter_sum(&c, &survivors, "synod_core_elections_started_total").await - elections_before;
        let wins = counter_sum(&c, &survivors, "synod_core_became_leader_total").await - wins_before;
        eprintln!("kill {k}: leader {leader} killed; write acknowledged via {via} after {took:?}; new leader {new_leader}; phase-1 runs {elections}, leader changes {wins}");
        if elections > 1 || wins > 1 {
            duels += 1;
        }
        times.push(took);
        c.restart(leader);
    }
    let mut sorted = times.clone();
    sorted.sort();
    let median = percentile(&sorted, 0.5);
    let p99 = percentile(&sorted, 0.99);
    eprintln!("failover over {kills} kills (lease TTL {ttl} s): median {median:?}, p99 {p99:?}, max {:?}; kills with more than one phase 1 or leader change: {duels}", sorted.last().unwrap());

    // A clean shutdown hands leadership over (resign + lease revoke).
    c.wait_acceptors(&ids, &ids, Duration::from_secs(90)).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    first_ack(&c, &ids, "term-before", Duration::from_secs(30)).await.expect("writes before SIGTERM");
    c.signal(leader, "TERM");
    let termed_at = Instant::now();
    let (acked_at, _) = first_ack(&c, &survivors, "term-after", Duration::from_secs(30)).await.expect("a write is served after SIGTERM");
    let handover = acked_at - termed_at;
    let status = c.nodes.get_mut(&leader).unwrap().child.wait().unwrap();
    eprintln!("SIGTERM of leader {leader}: a write was acknowledged after {handover:?}; it exited with {status}");
    assert!(status.success(), "clean exit after SIGTERM");

    assert!(median <= MEDIAN_BOUND, "median failover {median:?} above {MEDIAN_BOUND:?}: {times:?}");
    assert!(p99 <= P99_BOUND, "p99 failover {p99:?} above {P99_BOUND:?}: {times:?}");
    assert_eq!(duels, 0, "every kill caused exactly one phase 1 and one leader change");
    assert!(handover <= MEDIAN_BOUND, "SIGTERM handover {handover:?}");
}

/// The majority guard: a follower that hears nothing from the leader (paused here) alone does not
/// get a healthy leader's lease revoked; a leader a majority hears nothing from (paused: alive but
/// cut off, like a partitioned one) is replaced within the failover bound without waiting out
/// the lease, and when it resumes it steps down (its lease is gone, and it sees the higher ballot)
/// with no further leader change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_majority_suspicion_revokes_and_a_paused_leader_steps_down() {
    let c = Cluster::start(3, 5, 1_000).await;
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = ids.iter().copied().find(|i| *i != leader).unwrap();
    first_ack(&c, &ids, "warm", Duration::from_secs(30)).await.expect("writes");

    // One follower paused for 4x the suspicion delay: it suspects on resuming, alone.
    c.signal(follower, "STOP");
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    c.signal(follower, "CONT");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(counter_sum(&c, &ids, "synod_leader_leases_revoked_total").await, 0, "a minority suspicion revoked nothing");
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader, "the healthy leader kept leading");

    // The leader paused: both followers hear nothing, a majority; its lease is revoked.
    let survivors: Vec<u64> = ids.iter().copied().filter(|i| *i != leader).collect();
    let wins_before = counter_sum(&c, &ids, "synod_core_became_leader_total").await;
    c.signal(leader, "STOP");
    let paused_at = Instant::now();
    let (acked_at, _) = first_ack(&c, &survivors, "paused", Duration::from_secs(30)).await.expect("a write is served while the leader is paused");
    let took = acked_at - paused_at;
    let new_leader = c.wait_leader_among(&survivors, Duration::from_secs(30)).await;
    eprintln!("leader {leader} paused: a write was acknowledged after {took:?} via the new leader {new_leader}");
    assert!(took <= P99_BOUND, "{took:?}");
    assert!(counter_sum(&c, &survivors, "synod_leader_leases_revoked_total").await >= 1, "the lease was revoked");
    c.signal(leader, "CONT");
    let back = c.wait_leader(Duration::from_secs(30)).await;
    assert_eq!(back, new_leader, "the resumed old leader follows the new one");
    first_ack(&c, &ids, "resumed", Duration::from_secs(30)).await.expect("writes after the resume");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wins = counter_sum(&c, &ids, "synod_core_became_leader_total").await - wins_before;
    assert_eq!(wins, 1, "exactly one leader change");
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, new_leader);
}
