//! Failover as clients see it (issue 25), with real processes: 8 writers put keys through random
//! replicas while the leader is killed with `kill -9`, repeatedly. Printed per kill and overall:
//! the time from the kill to the first acknowledged write, and how every request that was in
//! flight on a surviving replica at the kill ended (its status, and how long after the kill it
//! was answered). Before the fence (`paxos/src/forward.rs`) a write a follower had handed to the
//! dying leader waited for the whole write timeout and got 504; now the next leader settles it.
//!
//! `INFLIGHT_KILLS` (default 3), `INFLIGHT_NODES` (default 3), `INFLIGHT_DURABLE=1` (durable
//! replicas, `--data-dir`), `INFLIGHT_CLIENT_TIMEOUT_MS`
//! (default 2500: long enough to see how long an in-flight request really waits; the writers of
//! the issue give up after 1 s) change the run. `SYNOD_BIN` runs another build (a baseline).

mod common;

use common::{env_u64, percentile, Cluster};
use hyper::Method;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Goals of the issue (every in-flight request on a survivor answered within 1.5 s; the first
/// acknowledged write within 0.7 s median, 1.5 s max), with slack for two shared, loaded cores
/// running debug builds.
const IN_FLIGHT_BOUND: Duration = Duration::from_millis(2_000);
const FIRST_ACK_MAX: Duration = Duration::from_millis(2_500);

/// One request a writer made.
#[derive(Clone, Debug)]
struct Req {
    node: u64,
    start: Instant,
    end: Instant,
    /// HTTP status, or 0 for a client-side timeout or connection error.
    status: u16,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_when_the_leader_dies_are_answered_after_the_failover() {
    let kills = env_u64("INFLIGHT_KILLS", 3);
    let n = env_u64("INFLIGHT_NODES", 3);
    let client_timeout = Duration::from_millis(env_u64("INFLIGHT_CLIENT_TIMEOUT_MS", 2_500));
    let mut c = Cluster::unstarted(n, 5, 1_000, &[]).await;
    for id in 1..=n {
        // `INFLIGHT_DURABLE=1`: replicas with a data directory each (its WAL, its defaults: the
        // window of one slot, so a new leader fills its fence a slot at a time); a killed
        // leader restarts from its disk.
        let data = format!("--data-dir={}", c.dir.path().join(format!("data-{id}")).display());
        let extra: Vec<&str> = if env_u64("INFLIGHT_DURABLE", 0) == 1 { vec![&data] } else { vec![] };
        c.launch(id, &extra);
    }
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_leader(Duration::from_secs(60)).await;

    let log: Arc<Mutex<Vec<Req>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let urls: Vec<(u64, String)> = ids.iter().map(|id| (*id, c.url(*id).to_string())).collect();
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (log, stop, urls, http) = (log.clone(), stop_rx.clone(), urls.clone(), c.http.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !*stop.borrow() {
                // A pseudo-random replica per request (deterministic per writer and request).
                let (node, url) = &urls[((w * 7919 + i * 104_729) % urls.len() as u64) as usize];
                let start = Instant::now();
                let r = http.request(Method::PUT, &format!("{url}/v1/kv/inflight-{w}-{i}"), &[], "x".to_string(), client_timeout).await;
                let end = Instant::now();
                let status = r.map(|r| r.status).unwrap_or(0);
                log.lock().unwrap().push(Req { node: *node, start, end, status });
                if status != 200 && status != 201 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                i += 1;
            }
        }));
    }

    let mut first_acks = Vec::new();
    let mut waits = Vec::new();
    let mut in_flight_statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for k in 0..kills {
        c.wait_acceptors(&ids, &ids, Duration::from_secs(90)).await;
        let leader = c.wait_leader(Duration::from_secs(60)).await;
        // Load before the kill, so that requests are in flight on every replica.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        c.crash(leader);
        let killed_at = Instant::now();
        assert!(c.nodes.get_mut(&leader).unwrap().child.try_wait().unwrap().is_some(), "the old leader's process is dead");
        // Every request in flight at the kill has ended once the client timeout has passed.
        tokio::time::sleep(client_timeout + Duration::from_millis(1_500)).await;
        let reqs = log.lock().unwrap().clone();
        let first_ack = reqs
            .iter()
            .filter(|r| r.start >= killed_at && (r.status == 200 || r.status == 201))
            .map(|r| r.end - killed_at)
            .min()
            .expect("a write is acknowledged after the kill");
        let in_flight: Vec<&Req> = reqs.iter().filter(|r| r.node != leader && r.start < killed_at && r.end > killed_at).collect();
        let mut line = Vec::new();
        for r in &in_flight {
            let waited = r.end - killed_at;
            *in_flight_statuses.entry(r.status).or_default() += 1;
            line.push(format!("{}:{}ms", r.status, waited.as_millis()));
            waits.push((waited, r.status));
        }
        eprintln!(
            "kill {k}: leader {leader}; first acknowledged write {first_ack:?} after the kill; {} requests in flight on survivors (status:answered-after-kill): {}",
            in_flight.len(),
            line.join(" ")
        );
        assert!(!in_flight.is_empty(), "kill {k}: requests were in flight on the survivors (the fault met load)");
        first_acks.push(first_ack);
        c.restart(leader);
    }
    stop_tx.send(true).unwrap();
    for w in writers {
        w.await.unwrap();
    }

    let mut sorted = first_acks.clone();
    sorted.sort();
    let mut wait_times: Vec<Duration> = waits.iter().map(|(d, _)| *d).collect();
    wait_times.sort();
    eprintln!(
        "over {kills} kills of {n} replicas: first acknowledged write median {:?}, max {:?}; {} requests in flight on survivors answered after median {:?}, max {:?}; statuses {in_flight_statuses:?} (0: client timeout {client_timeout:?})",
        percentile(&sorted, 0.5),
        sorted.last().unwrap(),
        wait_times.len(),
        percentile(&wait_times, 0.5),
        wait_times.last().unwrap(),
    );
    let late: Vec<_> = waits.iter().filter(|(d, _)| *d > IN_FLIGHT_BOUND).collect();
    assert!(late.is_empty(), "requests in flight on survivors answered later than {IN_FLIGHT_BOUND:?} after the kill: {late:?}");
    let unknown = in_flight_statuses.get(&504).copied().unwrap_or(0);
    assert_eq!(unknown, 0, "an in-flight write answered 504 (outcome unknown) though a leader emerged");
    assert!(*sorted.last().unwrap() <= FIRST_ACK_MAX, "first acknowledged write after a kill: {sorted:?}");
}
