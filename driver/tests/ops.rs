//! Operations on a 3-replica cluster: the CLI's session, redirects, metrics and probes, and a
//! graceful SIGTERM (resign and revoke: peers see the node leave before its lease would expire).

mod common;

use common::{poll, Cluster};
use hyper::Method;
use std::process::Command;
use std::time::{Duration, Instant};

/// Long enough that "left before the TTL" can only mean the lease was revoked.
const LEASE_TTL: u64 = 15;

fn synod(args: &[&str], session_file: &std::path::Path, endpoints: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--session-file={}", session_file.display()))
        .output()
        .expect("synod runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_redirects_metrics_and_graceful_shutdown() {
    let c = Cluster::start(3, LEASE_TTL, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    // The follower first: the CLI's writes land there and are forwarded to the leader.
    let mut order = vec![follower];
    order.extend((1..=3).filter(|i| *i != follower));
    let endpoints = order.iter().map(|i| c.url(*i).to_string()).collect::<Vec<_>>().join(",");
    let session = c.dir.path().join("session.json");

    // Phase 1: the CLI writes and reads through its session; the session file records the
    // sequence number and the highest index seen.
    let (code, _, err) = synod(&["kv", "put", "greeting", "hello"], &session, &endpoints);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = synod(&["kv", "get", "greeting", "--consistency=sequential"], &session, &endpoints);
    assert_eq!((code, out.trim()), (0, "hello"), "{err}");
    for _ in 0..3 {
        let (code, _, err) = synod(&["kv", "incr", "hits"], &session, &endpoints);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, _) = synod(&["kv", "get", "hits", "-o", "json"], &session, &endpoints);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(j["value"], "3");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    assert_eq!(s["seq"], 4, "one sequence number per write");
    assert!(s["last_index"].as_u64().unwrap() >= 4);
    // Replaying the session's last write with the same sequence number returns its first
    // result and applies nothing.
    let id = s["session"].as_u64().unwrap().to_string();
    let (code, _, err) = synod(&["kv", "incr", "hits", "--session", &id, "--seq", "4"], &session, &endpoints);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = synod(&["kv", "get", "hits"], &session, &endpoints);
    assert_eq!(out.trim(), "3", "a replayed increment is not applied twice");
    let (code, _, _) = synod(&["kv", "get", "missing"], &session, &endpoints);
    assert_eq!(code, 1);
    let (code, out, _) = synod(&["status", "-o", "json"], &session, &endpoints);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["members"].as_array().unwrap().len(), 3);

    // Phase 2: `?redirect=true` on a follower answers 307 with the leader's URL.
    let r = c.req(follower, Method::PUT, "/v1/kv/r?redirect=true", &[], "x").await.unwrap();
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("location"), Some(format!("{}/v1/kv/r?redirect=true", c.url(leader)).as_str()));

    // Phase 3: probes and metrics.
    let r = c.req(follower, Method::GET, "/livez", &[], "").await.unwrap();
    assert_eq!(r.status, 200);
    let r = c.req(follower, Method::GET, "/readyz", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let m = c.req(follower, Method::GET, "/metrics", &[], "").await.unwrap().text();
    for name in ["synod_leader ", "synod_ballot_round", "synod_commit_slot", "synod_applied_slot", "synod_forwarded_requests_total", "synod_peer_queue_drops_total", "synod_request_seconds_count"] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
    assert!(m.contains(&format!("synod_leader {leader}")));
    let forwarded: u64 = m.lines().find(|l| l.starts_with("synod_forwarded_requests_total ")).unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert!(forwarded > 0, "the CLI's writes through a follower were forwarded");

    // Phase 4: SIGTERM the leader. It drains, resigns and revokes its lease, so the others see
    // it leave and elect a new leader well before the 15 s TTL could have expired.
    let mut c = c;
    let mut node = c.nodes.remove(&leader).unwrap();
    let t = Instant::now();
    driver::dev::terminate(&node.child);
    let status = poll(Duration::from_secs(10), "the node exits after SIGTERM", || {
        let s = node.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(status.success(), "clean exit: {status}");
    let new_leader = c.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    assert!(t.elapsed() < Duration::from_secs(LEASE_TTL), "took {:?}: the lease was not revoked", t.elapsed());
    let r = poll(Duration::from_secs(10), "a write after the graceful handover", || {
        let c = &c;
        async move { c.req(new_leader, Method::PUT, "/v1/kv/after", &[], "ok").await.ok().filter(|r| r.status == 201) }
    })
    .await;
    assert!(r.index().is_some());
}
