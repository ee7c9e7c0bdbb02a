//! Exactly-once over REST and the CLI, black box, on 3 real `synod node` processes:
//!
//! * an `Idempotency-Key` reused for another request is 422 and applies nothing (the issue's
//!   example: PUT a, then PUT b and DELETE a with the same key); the true retry gets the first
//!   result; concurrent duplicates through different replicas get one outcome;
//! * 16 parallel `synod kv put` sharing one session file: every write that printed OK and
//!   exited 0 exists, and every other call exits non-zero;
//! * keyed increments retried through different replicas while the leader is killed: the
//!   counter equals the number of keys exactly (each applied once).

mod common;

use common::Cluster;
use hyper::Method;
use std::process::Command;
use std::time::{Duration, Instant};

fn key(k: &str) -> Vec<(&'static str, String)> {
    vec![("idempotency-key", k.to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_cli_sessions_and_retries_across_a_leader_kill() {
    let mut c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();

    // 1. The issue's example.
    let r = c.req(others[0], Method::PUT, "/v1/kv/a", &key("K"), "1").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let version = r.json()["version"].as_u64().unwrap();
    let r = c.req(others[1], Method::PUT, "/v1/kv/b", &key("K"), "1").await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["type"].as_str().unwrap().ends_with("/idempotency-key-reused"), "{}", r.text());
    assert!(r.header("etag").is_none());
    let r = c.req(leader, Method::GET, "/v1/kv/b", &[], "").await.unwrap();
    assert_eq!(r.status, 404, "b was not written");
    let r = c.req(leader, Method::DELETE, "/v1/kv/a", &key("K"), "").await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    let r = c.req(leader, Method::GET, "/v1/kv/a", &[], "").await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "1"), "a is still there");
    // Same method, key and body, another conditional header: another request.
    let mut h = key("K");
    h.push(("if-none-match", "*".into()));
    let r = c.req(leader, Method::PUT, "/v1/kv/a", &h, "1").await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    // The true retry, through another replica: the first result.
    let r = c.req(others[1], Method::PUT, "/v1/kv/a", &key("K"), "1").await.unwrap();
    assert_eq!((r.status, r.json()["version"].as_u64()), (201, Some(version)), "{}", r.text());

    // 2. Concurrent duplicates through three replicas: one outcome for all.
    let dup_h = [("idempotency-key", "dup".to_string()), ("content-type", "application/json".to_string())];
    let reqs = (1..=3).map(|i| c.req(i, Method::POST, "/v1/rmw", &dup_h, r#"{"op":"incr","key":"dups"}"#));
    let answers = futures::future::join_all(reqs).await;
    for a in &answers {
        let a = a.as_ref().unwrap();
        assert_eq!((a.status, a.json()["value"].as_i64()), (200, Some(1)), "{}", a.text());
    }
    let r = c.req(leader, Method::GET, "/v1/kv/dups", &[], "").await.unwrap();
    assert_eq!(r.text(), "1");

    // 3. 16 parallel CLI writes sharing one session file.
    let session = c.dir.path().join("shared-session.json");
    let endpoints = (1..=3).map(|i| c.url(i).to_string()).collect::<Vec<_>>().join(",");
    let t = Instant::now();
    let children: Vec<_> = (0..16)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_synod"))
                .args(["kv", "put", &format!("par/{i}"), &format!("v{i}")])
                .arg(format!("--endpoints={endpoints}"))
                .arg(format!("--session-file={}", session.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("synod runs")
        })
        .collect();
    let mut ok = Vec::new();
    for (i, ch) in children.into_iter().enumerate() {
        let out = ch.wait_with_output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if code == 0 {
            ok.push(i);
        } else {
            assert!(!stdout.contains("OK"), "call {i} printed OK but exited {code}");
        }
    }
    eprintln!("16 parallel CLI puts: {} exited 0 in {:?}", ok.len(), t.elapsed());
    for i in 0..16 {
        let r = c.req(leader, Method::GET, &format!("/v1/kv/par%2F{i}"), &[], "").await.unwrap();
        if ok.contains(&i) {
            assert_eq!((r.status, r.text()), (200, format!("v{i}")), "CLI write {i} said OK but is not there");
        }
    }
    assert_eq!(ok.len(), 16, "with the lock every call gets through");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    assert_eq!(s["seq"], 16, "one sequence number per write");

    // 4. Keyed increments, each retried through the next replica until it has a definite
    //    answer, while the leader is killed: each key applies exactly once.
    let n_keys = 30;
    let mut applied = 0;
    let mut node_order: Vec<u64> = (1..=3).collect();
    let mut killed = false;
    for k in 0..n_keys {
        if k == 10 {
            c.kill9(leader);
            node_order.retain(|i| *i != leader);
            killed = true;
        }
        let body = r#"{"op":"incr","key":"ctr"}"#;
        let h = [("idempotency-key", format!("ctr-{k}")), ("content-type", "application/json".to_string())];
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0usize;
        loop {
            let node = node_order[(k + attempt) % node_order.len()];
            attempt += 1;
            match c.req(node, Method::POST, "/v1/rmw", &h, body).await {
                Ok(r) if r.status == 200 => {
                    applied += 1;
                    break;
                }
                Ok(r) if r.status == 503 || r.status == 504 => {}
                Ok(r) => panic!("key ctr-{k}: unexpected {} {}", r.status, r.text()),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "key ctr-{k} got no definite answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A deliberate duplicate through another replica: the same answer, no second apply.
        if k % 3 == 0 {
            let node = node_order[(k + attempt) % node_order.len()];
            if let Ok(r) = c.req(node, Method::POST, "/v1/rmw", &h, body).await {
                assert!(r.status == 200 || r.status >= 500, "{} {}", r.status, r.text());
            }
        }
    }
    assert!(killed);
    let survivor = node_order[0];
    let r = c.req(survivor, Method::GET, "/v1/kv/ctr", &[], "").await.unwrap();
    assert_eq!((r.status, r.text()), (200, n_keys.to_string()), "{applied} keys applied");
    let sessions = c.metric(survivor, "synod_sessions").await.unwrap();
    assert!(sessions >= n_keys as u64, "every key holds a session ({sessions})");
}
