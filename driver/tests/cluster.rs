//! Five `synod node` processes and a real etcd on loopback: the whole path from REST through
//! forwarding, the MultiPaxos core, the store, and back, then a `kill -9` of the leader.

mod common;

use common::{poll, Cluster};
use driver::client::HttpResponse;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LEASE_TTL: u64 = 2;

/// Send until the answer is neither 503/504 nor a connection error, trying `ids` in turn. The
/// same headers go with every attempt, so a write with a session or Idempotency-Key is
/// exactly-once however many times it is sent.
async fn settle(c: &Cluster, ids: &[u64], method: Method, path: &str, headers: &[(&str, String)], body: &str) -> HttpResponse {
    let mut i = 0;
    poll(Duration::from_secs(30), &format!("{method} {path} gets a definite answer"), || {
        let id = ids[i % ids.len()];
        i += 1;
        let m = method.clone();
        async move {
            match c.req(id, m, path, headers, body).await {
                Ok(r) if r.status != 503 && r.status != 504 => Some(r),
                _ => None,
            }
        }
    })
    .await
}

fn json_ct() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

fn assert_problem(r: &HttpResponse, status: u16, slug: &str) {
    assert_eq!(r.status, status, "expected {status} {slug}, got {} {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{}", r.text());
    let j = r.json();
    assert_eq!(j["status"], status);
    assert!(j["type"].as_str().unwrap_or("").ends_with(slug), "type {} is not {slug}", j["type"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_replicas_serve_and_survive_a_leader_crash() {
    let c = Cluster::start(5, LEASE_TTL, 50).await;
    let all: Vec<u64> = (1..=5).collect();

    // Phase 1: the founders pass the etcd barrier, one of them wins the election and runs
    // phase 1; every replica learns who leads.
    let leader = c.wait_leader(Duration::from_secs(60)).await;

    // Phase 2: a write through every replica (followers forward to the leader over gRPC), each
    // read back linearizably through a different replica.
    let mut acked: Vec<(String, String)> = Vec::new();
    for id in 1..=5u64 {
        let (k, v) = (format!("k{id}"), format!("v{id}"));
        let r = settle(&c, &[id], Method::PUT, &format!("/v1/kv/{k}"), &[], &v).await;
        assert_eq!(r.status, 201, "put via node {id}: {}", r.text());
        assert!(r.index().is_some(), "every reply carries X-Synod-Index");
        acked.push((k.clone(), v.clone()));
        let other = id % 5 + 1;
        let r = settle(&c, &[other], Method::GET, &format!("/v1/kv/{k}"), &[], "").await;
        assert_eq!((r.status, r.text()), (200, v), "linearizable read via node {other}");
        assert!(r.header("etag").is_some());
    }

    // Phase 3: a sequential read with min_index names a write and sees it, on every replica.
    let r = settle(&c, &[1], Method::PUT, "/v1/kv/seq", &[], "fresh").await;
    let idx = r.index().expect("index");
    for id in 1..=5u64 {
        let r = settle(&c, &[id], Method::GET, &format!("/v1/kv/seq?consistency=sequential&min_index={idx}"), &[], "").await;
        assert_eq!((r.status, r.text()), (200, "fresh".to_string()), "sequential read on node {id}");
        assert!(r.index().unwrap() >= idx);
    }
    acked.push(("seq".into(), "fresh".into()));

    // Phase 4: batch put is all or nothing: a failing guard on the second op leaves the first
    // op unapplied; then the same batch without the bad guard applies both.
    let bad = json!({"ops": [
        {"op": "put", "key": "b1", "value": "x"},
        {"op": "put", "key": "k1", "value": "y", "guard": {"version": 999_999}},
    ]});
    let r = settle(&c, &[2], Method::POST, "/v1/batch/put", &[json_ct()], &bad.to_string()).await;
    assert_problem(&r, 409, "guard-failed");
    assert_eq!(r.json()["current"]["value"], "v1", "the conflict names the current value");
    let r = settle(&c, &[3], Method::POST, "/v1/batch/get", &[json_ct()], &json!({"keys": ["b1", "k1"]}).to_string()).await;
    assert_eq!(r.json()["values"][0]["found"], false, "nothing of the failed batch applied: {}", r.text());
    assert_eq!(r.json()["values"][1]["value"], "v1");
    let good = json!({"ops": [{"op": "put", "key": "b1", "value": "x"}, {"op": "put", "key": "b2", "value": "z"}]});
    let r = settle(&c, &[4], Method::POST, "/v1/batch/put", &[json_ct()], &good.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["puts"], 2);
    acked.push(("b1".into(), "x".into()));
    acked.push(("b2".into(), "z".into()));

    // Phase 5: concurrent clients. 4 clients x 10 increments through different replicas, each
    // client with its own session so its retries are exactly-once: the total is exact. Then
    // 4 clients x 5 successful CAS increments (read version, CAS on it, retry on 409).
    let mut tasks = Vec::new();
    let c = std::sync::Arc::new(c);
    for client in 0..4u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=10u64 {
                let h = [("x-synod-session", (1000 + client).to_string()), ("x-synod-seq", seq.to_string()), json_ct()];
                let body = json!({"op": "incr", "key": "counter", "delta": 1}).to_string();
                let r = settle(&c, &[client % 5 + 1, (client + 2) % 5 + 1], Method::POST, "/v1/rmw", &h, &body).await;
                assert_eq!(r.status, 200, "incr: {}", r.text());
            }
        }));
    }
    for client in 0..4u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 5 {
                let r = settle(&c, &[client + 1], Method::GET, "/v1/kv/cas", &[], "").await;
                let (cur, expect) = match r.status {
                    404 => (0i64, json!({"expected_absent": true})),
                    200 => {
                        let v = r.header("x-synod-version").unwrap().parse::<u64>().unwrap();
                        (r.text().parse().unwrap(), json!({"expected_version": v}))
                    }
                    s => panic!("unexpected {s}"),
                };
                let mut body = json!({"op": "cas", "key": "cas", "new": (cur + 1).to_string()});
                body.as_object_mut().unwrap().extend(expect.as_object().unwrap().clone());
                let idem = format!("cas-{client}-{cur}-{}", body);
                let r = settle(&c, &[client + 1], Method::POST, "/v1/rmw", &[json_ct(), ("idempotency-key", idem)], &body.to_string()).await;
                match r.status {
                    200 => done += 1,
                    409 => assert_problem(&r, 409, "cas-failed"),
                    s => panic!("cas answered {s}: {}", r.text()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let r = settle(&c, &all, Method::GET, "/v1/kv/counter", &[], "").await;
    assert_eq!(r.text(), "40", "40 increments, each exactly once");
    let r = settle(&c, &all, Method::GET, "/v1/kv/cas", &[], "").await;
    assert_eq!(r.text(), "20", "20 successful compare-and-sets");
    acked.push(("counter".into(), "40".into()));
    acked.push(("cas".into(), "20".into()));

    // Phase 6: bad requests get their status code and a problem+json body; none is a 500.
    let r = c.req(2, Method::GET, "/v1/kv/nope", &[], "").await.unwrap();
    assert_problem(&r, 404, "not-found");
    let r = c.req(2, Method::GET, "/v1/kv/k1?min_index=abc&consistency=sequential", &[], "").await.unwrap();
    assert_problem(&r, 400, "malformed");
    let r = c.req(2, Method::GET, "/v1/kv/k1?consistency=eventual", &[], "").await.unwrap();
    assert_problem(&r, 400, "malformed");
    let r = c.req(3, Method::POST, "/v1/rmw", &[json_ct()], "{not json").await.unwrap();
    assert_problem(&r, 400, "malformed");
    let r = c.req(3, Method::POST, "/v1/rmw", &[json_ct()], r#"{"op":"frobnicate","key":"a"}"#).await.unwrap();
    assert_problem(&r, 400, "malformed");
    let r = c.req(3, Method::POST, "/v1/batch/put", &[("content-type", "text/plain".into())], "{}").await.unwrap();
    assert_problem(&r, 415, "unsupported-media-type");
    let big = "x".repeat(1024 * 1024 + 1);
    let r = c.req(4, Method::PUT, "/v1/kv/big", &[], &big).await.unwrap();
    assert_problem(&r, 413, "too-large");
    let r = c.req(4, Method::PUT, "/v1/kv/k1", &[("if-match", "\"999999\"".into())], "nope").await.unwrap();
    assert_problem(&r, 412, "precondition-failed");
    let r = settle(&c, &[5], Method::PUT, "/v1/kv/k1", &[("if-none-match", "*".into())], "nope").await;
    assert_problem(&r, 412, "precondition-failed");
    let r = settle(&c, &[5], Method::POST, "/v1/rmw", &[json_ct()], &json!({"op":"cas","key":"k2","expected":"wrong","new":"q"}).to_string()).await;
    assert_problem(&r, 409, "cas-failed");
    assert_eq!(r.json()["current"]["value"], "v2");
    let r = c.req(1, Method::PUT, "/v1/kv/x", &[("x-synod-session", "abc".into()), ("x-synod-seq", "1".into())], "v").await.unwrap();
    assert_problem(&r, 400, "malformed");
    let r = c.req(1, Method::GET, "/v1/nowhere", &[], "").await.unwrap();
    assert_problem(&r, 404, "no-route");

    // The store was snapshotted on the way (every 50 slots in this test).
    let m = c.req(leader, Method::GET, "/metrics", &[], "").await.unwrap().text();
    let taken: u64 = m.lines().find(|l| l.starts_with("synod_snapshots_taken_total ")).unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert!(taken > 0, "no snapshot taken:\n{m}");

    // Phase 7: a write under an Idempotency-Key, acknowledged before the crash.
    let idem = [("idempotency-key", "order-42".to_string())];
    let first = settle(&c, &[leader % 5 + 1], Method::PUT, "/v1/kv/order", &idem, "first").await;
    assert_eq!(first.status, 201, "{}", first.text());
    acked.push(("order".into(), "first".into()));

    // Phase 8: kill -9 the leader. Its etcd lease expires after the TTL, another replica wins
    // the election and runs phase 1; a write must be served again within a bound derived from
    // the TTL (TTL + election + phase 1, with slack for two shared cores).
    let mut c = std::sync::Arc::try_unwrap(c).ok().expect("no other handles");
    c.kill9(leader);
    let killed_at = Instant::now();
    let live: Vec<u64> = c.nodes.keys().copied().collect();
    let bound = Duration::from_secs(LEASE_TTL * 5 + 10);
    let mut i = 0;
    let after = poll(bound, "a write is served after the leader's crash", || {
        let id = live[i % live.len()];
        i += 1;
        let c = &c;
        async move {
            let r = c.req(id, Method::PUT, "/v1/kv/after", &[("idempotency-key", "after-crash".into())], "yes").await.ok()?;
            (r.status == 201 || r.status == 200).then_some(r)
        }
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!("failover: a write was served {failover:?} after kill -9 of leader {leader}");
    assert!(after.index().is_some());
    let new_leader = c.wait_leader(bound).await;
    assert_ne!(new_leader, leader, "a new leader");

    // Phase 9: no acknowledged write is lost, on any surviving replica (linearizable reads).
    for (k, v) in &acked {
        for id in &live {
            let r = settle(&c, &[*id], Method::GET, &format!("/v1/kv/{k}"), &[], "").await;
            assert_eq!((r.status, r.text()), (200, v.clone()), "key {k} via node {id} after the crash");
        }
    }

    // Phase 10: retrying the Idempotency-Key write through the new leader returns the first
    // result (same version); the same key with another body is refused (422) and applies nothing.
    let retry = settle(&c, &[new_leader], Method::PUT, "/v1/kv/order", &idem, "first").await;
    assert_eq!(retry.status, first.status, "{}", retry.text());
    let (a, b): (Value, Value) = (first.json(), retry.json());
    assert_eq!(a["version"], b["version"], "the retry returns the first result");
    let reused = settle(&c, &[new_leader], Method::PUT, "/v1/kv/order", &idem, "second").await;
    assert_eq!(reused.status, 422, "{}", reused.text());
    let r = settle(&c, &live, Method::GET, "/v1/kv/order", &[], "").await;
    assert_eq!(r.text(), "first");
}
