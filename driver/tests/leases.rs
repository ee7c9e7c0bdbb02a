//! Client leases through REST and the CLI, on real `synod node` processes and in real time:
//!
//! * the life of a lease: grant, put keys with `?lease=` and a leased batch, `GET` names the
//!   lease, `show` lists the keys, revoke deletes them (404 on every replica, a change stream
//!   sees the deletions), and a keepalive of the revoked lease is 404 `lease-not-found` (the
//!   CLI's keepalive exits non-zero saying so);
//! * expiry: a lease nobody keeps alive (TTL 1 s) ends within TTL + 1 s and its key is gone on
//!   every replica; one kept alive by `synod lease keepalive` (the binary) lives through 3 TTLs,
//!   and expires within TTL + 1 s once that process is killed;
//! * the limits, on a cluster started with `--max-leases=2 --max-keys-per-lease=2
//!   --min-lease-ttl-ms=2000`: 503 `too-many-leases` with `Retry-After`, 400 `lease-ttl`, 409
//!   `too-many-lease-keys`, and the listing's paging.

mod common;

use common::{poll, synod_bin, Cluster};
use hyper::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run the CLI against `endpoints` with its own session file; (exit code, stdout, stderr).
fn synod(args: &[&str], session_file: &Path, endpoints: &str) -> (i32, String, String) {
    let out = Command::new(synod_bin())
        .args(args)
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--session-file={}", session_file.display()))
        .output()
        .expect("synod runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json_body() -> Vec<(&'static str, String)> {
    vec![("content-type", "application/json".to_string())]
}

/// Grant a lease of `ttl_ms` through node `via`; its id.
async fn grant(c: &Cluster, via: u64, ttl_ms: u64) -> u64 {
    let r = c.req(via, Method::POST, "/v1/leases", &json_body(), &json!({ "ttl_ms": ttl_ms }).to_string()).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    assert_eq!(j["ttl_ms"], ttl_ms);
    let id = j["id"].as_u64().expect("a numeric id");
    assert_eq!(r.header("location"), Some(format!("/v1/leases/{id}").as_str()));
    id
}

/// The status of a sequential `GET /v1/kv/{key}` on node `id`.
async fn key_status(c: &Cluster, id: u64, key: &str) -> Option<u16> {
    c.req(id, Method::GET, &format!("/v1/kv/{key}?consistency=sequential"), &[], "").await.ok().map(|r| r.status)
}

/// Wait until `key` is gone (404) on every node; how long that took from `since`.
async fn wait_gone_everywhere(c: &Cluster, key: &str, since: Instant, timeout: Duration) -> Duration {
    poll(timeout, &format!("{key} is gone on every replica"), || async {
        for id in c.nodes.keys() {
            if key_status(c, *id, key).await != Some(404) {
                return None;
            }
        }
        Some(since.elapsed())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_live_expire_and_are_kept_alive() {
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let endpoints = (1..=3).map(|i| c.url(i).to_string()).collect::<Vec<_>>().join(",");
    let session = c.dir.path().join("session.json");

    // Expiry, in real time: a lease nobody keeps alive, with a key. Granted through a follower.
    let t_exp = Instant::now();
    let expiring = grant(&c, follower, 1000).await;
    let r = c.req(follower, Method::PUT, &format!("/v1/kv/exp/k?lease={expiring}"), &[], "v").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    // Kept alive by the CLI, meanwhile: granted and attached with the CLI too.
    let (code, out, err) = synod(&["lease", "grant", "--ttl", "1000ms", "-w", "json"], &session, &endpoints);
    assert_eq!(code, 0, "{err}");
    let kept = serde_json::from_str::<Value>(&out).expect("json")["id"].as_u64().expect("an id");
    let (code, _, err) = synod(&["kv", "put", "kept/k", "v", "--lease", &kept.to_string()], &session, &endpoints);
    assert_eq!(code, 0, "{err}");
    let ka_out = c.dir.path().join("keepalive.out");
    let mut keeper = Command::new(synod_bin())
        .args(["lease", "keepalive", &kept.to_string(), "-w", "json", &format!("--endpoints={endpoints}")])
        .stdout(std::fs::File::create(&ka_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("synod lease keepalive starts");
    let t_keep = Instant::now();

    // The unkept lease ends within TTL + 1 s of its grant, on every replica.
    let took = wait_gone_everywhere(&c, "exp/k", t_exp, Duration::from_secs(5)).await;
    eprintln!("a 1 s lease nobody kept alive: its key was gone on every replica {took:?} after the grant");
    assert!(took <= Duration::from_millis(2000), "expired only after {took:?}");
    assert!(took >= Duration::from_millis(1000), "expired after {took:?}, before its TTL");
    let r = c.req(leader, Method::GET, &format!("/v1/leases/{expiring}"), &[], "").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());

    // The kept lease lives through 3 TTLs.
    tokio::time::sleep((t_keep + Duration::from_millis(3000)).saturating_duration_since(Instant::now())).await;
    assert_eq!(keeper.try_wait().unwrap(), None, "the keepalive process is still running");
    for id in 1..=3 {
        assert_eq!(key_status(&c, id, "kept/k").await, Some(200), "kept/k on node {id} after 3 TTLs");
    }
    let renewals: Vec<Value> = std::fs::read_to_string(&ka_out).unwrap().lines().map(|l| serde_json::from_str(l).expect("one JSON line per renewal")).collect();
    assert!(renewals.len() >= 7, "about one renewal per TTL/3: {renewals:?}");
    assert!(renewals.iter().all(|j| j["id"] == kept && j["ttl_ms"] == 1000), "{renewals:?}");
    // Killed, it renews no more: the lease ends within TTL + 1 s.
    keeper.kill().unwrap();
    let _ = keeper.wait();
    let t_kill = Instant::now();
    let took = wait_gone_everywhere(&c, "kept/k", t_kill, Duration::from_secs(5)).await;
    eprintln!("after the keepalive process was killed: gone on every replica after {took:?}");
    assert!(took <= Duration::from_millis(2000), "expired only {took:?} after the keeper died");

    // The life of a lease: keys put with it, shown, and deleted by a revoke.
    let id = grant(&c, leader, 60_000).await;
    let r = c.req(follower, Method::PUT, &format!("/v1/kv/life/a?lease={id}"), &[("if-none-match", "*".into())], "1").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["previous_version"], Value::Null, "a leased put answers as a put: {}", r.text());
    let put_index = r.index().unwrap();
    // A leased batch, with the id as a string.
    let body = json!({ "lease": id.to_string(), "ops": [{ "op": "put", "key": "life/b", "value": "2" }, { "op": "put", "key": "life/c", "value": "3" }] });
    let r = c.req(follower, Method::POST, "/v1/batch/put", &json_body(), &body.to_string()).await.unwrap();
    assert_eq!((r.status, r.json()["puts"].clone()), (200, json!(2)), "{}", r.text());
    // A plain put detaches a key from its lease.
    let r = c.req(leader, Method::PUT, "/v1/kv/life/c", &[], "plain").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.req(follower, Method::GET, "/v1/kv/life/a", &[], "").await.unwrap();
    assert_eq!((r.status, r.header("x-synod-lease")), (200, Some(id.to_string().as_str())), "GET names the key's lease");
    let r = c.req(follower, Method::GET, "/v1/kv/life/c", &[], "").await.unwrap();
    assert_eq!((r.status, r.header("x-synod-lease")), (200, None), "a detached key has no lease");
    let r = c.req(follower, Method::GET, &format!("/v1/leases/{id}"), &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!((j["id"].clone(), j["ttl_ms"].clone(), j["keys"].clone()), (json!(id), json!(60_000), json!(["life/a", "life/b"])), "{j}");
    assert!(j["remaining_ms"].as_u64().unwrap() <= 60_000);
    let (code, out, err) = synod(&["lease", "show", &id.to_string(), "-w", "simple"], &session, &endpoints);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().skip(1).collect::<Vec<_>>(), vec!["life/a", "life/b"], "{out}");
    let r = c.req(leader, Method::GET, "/v1/leases", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = r.json();
    assert_eq!(listed["leases"], json!([{ "id": id, "ttl_ms": 60_000, "remaining_ms": listed["leases"][0]["remaining_ms"], "keys_count": 2 }]), "{listed}");
    assert_eq!(listed["more"], false);

    // A change stream on the key sees the revoke's deletion.
    let watch = {
        let endpoints: Vec<String> = (1..=3).map(|i| c.url(i).to_string()).collect();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let path = format!("/v1/watch/life/a?from_index={put_index}");
            let access = driver::client::Access::default();
            let res = driver::watch_client::follow_with(&endpoints, &access, &path, None, Duration::from_secs(10), |ev| {
                if ev.event != "progress" {
                    seen.push((ev.id, ev.event.clone()));
                }
                ev.event != "delete"
            });
            let _ = tokio::time::timeout(Duration::from_secs(10), res).await;
            seen
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c.req(follower, Method::DELETE, &format!("/v1/leases/{id}"), &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["id"].clone(), r.json()["deleted"].clone()), (json!(id), json!(2)), "{}", r.text());
    let revoke_index = r.index().unwrap();
    let seen = watch.await.unwrap();
    assert_eq!(seen.last(), Some(&(Some(revoke_index), "delete".to_string())), "the stream saw the deletion at the revoke's index: {seen:?}");
    for node in 1..=3 {
        let r = c.req(node, Method::GET, &format!("/v1/kv/life/a?consistency=sequential&min_index={revoke_index}"), &[], "").await.unwrap();
        assert_eq!(r.status, 404, "life/a on node {node}: {}", r.text());
        let r = c.req(node, Method::GET, &format!("/v1/kv/life/b?consistency=sequential&min_index={revoke_index}"), &[], "").await.unwrap();
        assert_eq!(r.status, 404, "life/b on node {node}");
    }
    let r = c.req(leader, Method::GET, "/v1/kv/life/c", &[], "").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "plain".to_string()), "the detached key outlives the lease");

    // A keepalive of the revoked lease: 404 lease-not-found, from REST and from the CLI.
    let r = c.req(follower, Method::POST, &format!("/v1/leases/{id}/keepalive"), &[], "").await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let p = r.json();
    assert_eq!((p["type"].as_str(), p["title"].as_str(), p["status"].as_u64()), (Some("/problems/lease-not-found"), Some("Lease not found"), Some(404)), "{p}");
    assert_eq!(p["lease"], json!(id.to_string()), "{p}");
    let r = c.req(leader, Method::GET, "/problems/lease-not-found", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "the problem type's page is served");
    let (code, _, err) = synod(&["lease", "keepalive", &id.to_string()], &session, &endpoints);
    assert_eq!(code, 1, "the CLI's keepalive of a revoked lease fails");
    assert!(err.contains(&format!("lease {id} is gone")), "{err}");
    let (code, _, _) = synod(&["lease", "revoke", &id.to_string()], &session, &endpoints);
    assert_eq!(code, 1, "revoking twice is 404");
    let r = c.req(leader, Method::PUT, &format!("/v1/kv/late?lease={id}"), &[], "v").await.unwrap();
    assert_eq!((r.status, r.json()["type"].clone()), (404, json!("/problems/lease-not-found")), "a put onto a gone lease: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_limits_are_refused_with_their_problem_types() {
    let c = Cluster::start_with(1, 2, 10_000, &["--max-leases=2", "--max-keys-per-lease=2", "--min-lease-ttl-ms=2000"]).await;
    c.wait_leader(Duration::from_secs(60)).await;

    // The TTL bounds: 400 lease-ttl with the bounds.
    let r = c.req(1, Method::POST, "/v1/leases", &json_body(), r#"{"ttl":"1s"}"#).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let p = r.json();
    assert_eq!((p["type"].clone(), p["ttl_ms"].clone(), p["min_ttl_ms"].clone()), (json!("/problems/lease-ttl"), json!(1000), json!(2000)), "{p}");
    for bad in [r#"{}"#, r#"{"ttl_ms":3000,"ttl":"3s"}"#, r#"{"ttl":"3 parsecs"}"#, r#"{"ttl_ms":3000,"extra":1}"#] {
        let r = c.req(1, Method::POST, "/v1/leases", &json_body(), bad).await.unwrap();
        assert_eq!((r.status, r.json()["type"].clone()), (400, json!("/problems/malformed")), "{bad}: {}", r.text());
    }
    for bad in ["/v1/leases/x/keepalive", "/v1/leases/-1/keepalive", "/v1/leases/99999999999999999999/keepalive"] {
        let r = c.req(1, Method::POST, bad, &[], "").await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // Two leases, the cluster's maximum: the third grant is 503 too-many-leases with Retry-After.
    let a = grant(&c, 1, 30_000).await;
    let b = grant(&c, 1, 30_000).await;
    let r = c.req(1, Method::POST, "/v1/leases", &json_body(), r#"{"ttl":"30s"}"#).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "/problems/too-many-leases", "{}", r.text());
    assert_eq!(r.json()["limit"], 2);
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "Retry-After: {:?}", r.header("retry-after"));

    // Paging: one lease per page.
    let r = c.req(1, Method::GET, "/v1/leases?limit=1", &[], "").await.unwrap();
    assert_eq!((r.json()["leases"][0]["id"].clone(), r.json()["more"].clone()), (json!(a), json!(true)), "{}", r.text());
    let r = c.req(1, Method::GET, &format!("/v1/leases?limit=1&after={a}"), &[], "").await.unwrap();
    assert_eq!((r.json()["leases"][0]["id"].clone(), r.json()["more"].clone()), (json!(b), json!(false)), "{}", r.text());

    // Two keys per lease: a third is 409 too-many-lease-keys, and the batch applies nothing.
    let body = json!({ "lease": a, "ops": [{ "op": "put", "key": "k1", "value": "1" }, { "op": "put", "key": "k2", "value": "2" }] });
    let r = c.req(1, Method::POST, "/v1/batch/put", &json_body(), &body.to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.req(1, Method::PUT, &format!("/v1/kv/k1?lease={a}"), &[], "again").await.unwrap();
    assert_eq!(r.status, 200, "a key already on the lease does not count twice: {}", r.text());
    let r = c.req(1, Method::PUT, &format!("/v1/kv/k3?lease={a}"), &[], "3").await.unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!((r.json()["type"].clone(), r.json()["limit"].clone()), (json!("/problems/too-many-lease-keys"), json!(2)), "{}", r.text());
    assert_eq!(c.req(1, Method::GET, "/v1/kv/k3", &[], "").await.unwrap().status, 404, "nothing was applied");
    // Bad lease parameters.
    for q in ["lease=x", "lease=", "lease=1&lease=2"] {
        let r = c.req(1, Method::PUT, &format!("/v1/kv/k4?{q}"), &[], "v").await.unwrap();
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    let r = c.req(1, Method::DELETE, &format!("/v1/kv/k1?lease={a}"), &[], "").await.unwrap();
    assert_eq!(r.status, 400, "a delete takes no lease: {}", r.text());

    // Revoking one makes room for a grant.
    let r = c.req(1, Method::DELETE, &format!("/v1/leases/{a}"), &[], "").await.unwrap();
    assert_eq!((r.status, r.json()["deleted"].clone()), (200, json!(2)), "{}", r.text());
    grant(&c, 1, 2000).await;
}
