//! The session table as clients see it, on 3 real `synod node` processes with a small TTL and
//! capacity (`--session-ttl-ms 2000 --session-min-ttl-ms 1000 --max-sessions 40`):
//!
//! * keyed writes spread round-robin over the three replicas: the log clock follows real time
//!   (it used to advance only between two requests taken by the same replica, so round-robin
//!   stopped it), sessions expire, and new keys keep being admitted TTL after TTL;
//! * one client floods fresh `Idempotency-Key`s (TTL 60 s this time, far beyond the flood): the
//!   table fills and new keys are refused with a `Retry-After` of at most the guaranteed window;
//!   another client's new key is admitted within that window after the flood (with no eviction,
//!   the rule before, it waited for the TTL), and its retry is applied once;
//! * a replica started with other session settings is refused at start.

mod common;

use common::Cluster;
use hyper::Method;
use std::time::{Duration, Instant};

const FLAGS: [&str; 3] = ["--session-ttl-ms=2000", "--session-min-ttl-ms=1000", "--max-sessions=40"];

fn key(k: &str) -> Vec<(&'static str, String)> {
    vec![("idempotency-key", k.to_string())]
}

async fn log_clock(c: &Cluster, id: u64) -> u64 {
    c.metric(id, "synod_log_clock_ms").await.expect("the log clock metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_keyed_writes_keep_the_clock_and_the_table_moving() {
    let c = Cluster::start_with(3, 2, 10_000, &FLAGS).await;
    c.wait_leader(Duration::from_secs(60)).await;
    let clock0 = log_clock(&c, 1).await;
    let t0 = Instant::now();
    // 6 s of writes, each through the next replica, each with a fresh key: 3 TTLs.
    let mut refused = 0;
    let mut i = 0u64;
    while t0.elapsed() < Duration::from_secs(6) {
        let via = 1 + i % 3;
        let r = c.req(via, Method::PUT, &format!("/v1/kv/rr{i}"), &key(&format!("rr-{i}")), "v").await.unwrap();
        match r.status {
            201 => assert_eq!(r.header("x-synod-retry-window"), Some("1"), "the guaranteed window in seconds"),
            503 => refused += 1,
            s => panic!("PUT through {via}: {s} {}", r.text()),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_millis() as u64;
    let advanced = log_clock(&c, 1).await - clock0;
    eprintln!("{i} keyed writes round-robin in {elapsed} ms: log clock advanced {advanced} ms, {refused} refused");
    assert!(advanced * 10 >= elapsed * 7, "the log clock advanced {advanced} ms in {elapsed} ms of round-robin writes");
    assert!(advanced <= elapsed + 100, "the log clock ran ahead of real time: {advanced} ms in {elapsed} ms");
    let sessions = c.metric(1, "synod_sessions").await.unwrap();
    assert!(sessions <= 40, "{sessions} sessions above the cap");
    // Past the first TTL, writes arrive at ~40/s against 40 sessions of 2 s: the table stays
    // about full, and old sessions (idle past the 1 s window) make room for new ones: most
    // writes are admitted.
    assert!(refused * 4 < i, "{refused} of {i} keyed writes refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_keys_locks_nobody_out_for_longer_than_the_window() {
    let mut c = Cluster::start_with(3, 2, 10_000, &["--session-ttl-ms=60000", "--session-min-ttl-ms=1000", "--max-sessions=40"]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;

    // A retry that must be recognized: its first attempt just before the flood.
    let r = c.req(leader, Method::POST, "/v1/rmw", &[("idempotency-key", "pay-1".into()), ("content-type", "application/json".into())], r#"{"op":"incr","key":"paid"}"#).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // The flood: fresh keys as fast as one client can, for 2 s.
    let t0 = Instant::now();
    let (mut admitted, mut full, mut max_retry_after) = (0, 0, 0u64);
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(2) {
        let r = c.req(1 + n % 3, Method::PUT, &format!("/v1/kv/f{n}"), &key(&format!("flood-{n}")), "x").await.unwrap();
        match r.status {
            201 => admitted += 1,
            503 => {
                assert!(r.json()["type"].as_str().unwrap().ends_with("/sessions-full"), "{}", r.text());
                max_retry_after = max_retry_after.max(r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After"));
                full += 1;
            }
            s => panic!("flood PUT: {s} {}", r.text()),
        }
        n += 1;
    }
    eprintln!("flood: {n} keys, {admitted} admitted, {full} refused (Retry-After at most {max_retry_after} s)");
    assert!(full > 0, "the flood never filled the table: the test shows nothing");
    assert!(max_retry_after <= 1, "Retry-After {max_retry_after} s beyond the 1 s window");
    // Another client's new key, right after the flood.
    let r = c.req(leader, Method::POST, "/v1/rmw", &[("idempotency-key", "pay-2".into()), ("content-type", "application/json".into())], r#"{"op":"incr","key":"paid"}"#).await;
    let first = r.unwrap();
    // pay-2 may be refused while every session is younger than the window: wait as told.
    let mut pay2 = first;
    let waited = Instant::now();
    while pay2.status == 503 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        pay2 = c.req(leader, Method::POST, "/v1/rmw", &[("idempotency-key", "pay-2".into()), ("content-type", "application/json".into())], r#"{"op":"incr","key":"paid"}"#).await.unwrap();
        assert!(waited.elapsed() < Duration::from_secs(5), "another client's new key still refused after 5 s: {}", pay2.text());
    }
    assert_eq!(pay2.status, 200, "{}", pay2.text());
    eprintln!("another client's new key admitted {} ms after the flood", waited.elapsed().as_millis());
    assert!(waited.elapsed() <= Duration::from_millis(1_500), "admitted only after {} ms", waited.elapsed().as_millis());
    // Its retry, at once and through another replica: the first result, applied once.
    let other = (1..=3).find(|i| *i != leader).unwrap();
    let again = c.req(other, Method::POST, "/v1/rmw", &[("idempotency-key", "pay-2".into()), ("content-type", "application/json".into())], r#"{"op":"incr","key":"paid"}"#).await.unwrap();
    assert_eq!((again.status, again.json()["value"].as_i64()), (200, pay2.json()["value"].as_i64()), "{}", again.text());
    let r = c.req(leader, Method::GET, "/v1/kv/paid", &[], "").await.unwrap();
    assert_eq!(r.text(), "2", "pay-1 and pay-2, each once");

    // A replica with other session settings is refused at start, and says why.
    c.common.retain(|a| !a.starts_with("--max-sessions"));
    c.join(4, &["--max-sessions=41"]);
    common::poll(Duration::from_secs(20), "node 4 refuses its settings", || {
        let log = c.log(4);
        async move { log.contains("store settings differ").then_some(()) }
    })
    .await;
}
