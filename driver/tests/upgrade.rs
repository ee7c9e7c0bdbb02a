//! A rolling upgrade with real processes (docs/upgrades.md): three durable replicas of the
//! previous release (docs/releases/PREVIOUS: 0.2.0, cluster version 2, built once by
//! `scripts/prev-release`) under a write load, replaced one at a time by this build with the same
//! data directories. While one member runs the new build the cluster stays at version 2: the
//! range delete (request format 2) works on the mixed cluster, through either build, and leases
//! (request format 3) are refused. Then a downgrade of one replica while the cluster still runs
//! version 2; then the last replica, after which the leader raises the cluster version to this
//! build's `kvstore::MAX_CLUSTER_VERSION` (3) and leases work. At every step the replicas reach
//! the same state hash, and the whole client history is checked linearizable. Finally a downgrade
//! after the version was raised must not bring the old build back into the cluster.
//!
//! The old binary: `SYNOD_PREV_BIN`, else `target/prev-release/<commit>/synod` (scripts/test runs
//! scripts/prev-release before the tests, so CI builds it once per clean clone).

mod common;

use checker::{Op, OpKind, Outcome};
use common::{poll, Cluster};
use hyper::Method;
use kvstore::MAX_CLUSTER_VERSION;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cluster version the previous release (0.2.0) runs and reads up to: a cluster of its
/// founders starts there.
const PREV_VERSION: u64 = 2;
/// The cluster version leases (request format 3, `POST /v1/leases`) need.
const LEASES_VERSION: u64 = 3;

fn prev_bin() -> String {
    if let Ok(p) = std::env::var("SYNOD_PREV_BIN") {
        return p;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("docs/releases/PREVIOUS")).expect("docs/releases/PREVIOUS");
    let commit = spec.lines().find_map(|l| l.strip_prefix("commit ")).expect("a commit line").trim().to_string();
    let bin = root.join("target/prev-release").join(&commit).join("synod");
    assert!(bin.exists(), "the previous release's binary {} is missing: run scripts/prev-release (scripts/test does)", bin.display());
    bin.to_string_lossy().into_owned()
}

fn version_of(bin: &str) -> String {
    let out = std::process::Command::new(bin).arg("--version").output().expect("synod --version runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const KEYS: [&str; 4] = ["reg-0", "reg-1", "reg-2", "reg-3"];

/// Clients that write unique values, read linearizably and compare-and-set on a few registers,
/// each request to a random replica, recording every operation for the checker.
fn spawn_clients(urls: Vec<String>, clients: u64, stop: tokio::sync::watch::Receiver<bool>, history: Arc<Mutex<Vec<Op>>>, t0: Instant) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..clients)
        .map(|client| {
            let urls = urls.clone();
            let stop = stop.clone();
            let history = history.clone();
            tokio::spawn(async move {
                let http = driver::client::HttpClient::new();
                let mut state = client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut n = 0u64;
                let mut last_read: Option<String> = None;
                while !*stop.borrow() {
                    n += 1;
                    let key = KEYS[(next() % KEYS.len() as u64) as usize];
                    let url = &urls[(next() % urls.len() as u64) as usize];
                    let value = format!("c{client}-{n}");
                    let pick = next() % 3;
                    let (method, path, body, kind) = match pick {
                        0 => (Method::PUT, format!("/v1/kv/{key}"), value.clone(), OpKind::Write { value: value.clone() }),
                        1 => (Method::GET, format!("/v1/kv/{key}"), String::new(), OpKind::Read { result: None }),
                        _ => {
                            let expected = last_read.clone();
                            let body = match &expected {
                                Some(e) => serde_json::json!({"op": "cas", "key": key, "expected": e, "new": value}),
                                None => serde_json::json!({"op": "cas", "key": key, "expected_absent": true, "new": value}),
                            };
                            (Method::POST, "/v1/rmw".to_string(), body.to_string(), OpKind::Cas { expected, new: value.clone() })
                        }
                    };
                    let invoke = t0.elapsed().as_nanos() as u64;
                    let headers = [("content-type", "application/json".to_string())];
                    let r = http.request(method, &format!("{url}{path}"), &headers, body, Duration::from_secs(5)).await;
                    let complete = t0.elapsed().as_nanos() as u64;
                    let (kind, outcome) = match (kind, r) {
                        (OpKind::Read { .. }, Ok(r)) if r.status == 200 => {
                            let v = r.text();
                            last_read = Some(v.clone());
                            (OpKind::Read { result: Some(v) }, Outcome::Ok)
                        }
                        (OpKind::Read { .. }, Ok(r)) if r.status == 404 => {
                            last_read = None;
                            (OpKind::Read { result: None }, Outcome::Ok)
                        }
                        // A read that was not answered tells nothing.
                        (k @ OpKind::Read { .. }, _) => (k, Outcome::Fail),
                        (k, Ok(r)) if r.status == 200 || r.status == 201 => (k, Outcome::Ok),
                        (k @ OpKind::Cas { .. }, Ok(r)) if r.status == 409 => (k, Outcome::Fail),
                        // A redirect or a refusal before proposing is no write; anything else
                        // (503, 504, a broken connection) may have been applied.
                        (k, Ok(r)) if r.status == 307 || r.status == 400 => (k, Outcome::Fail),
                        (k, _) => (k, Outcome::Unknown),
                    };
                    let done = (outcome != Outcome::Unknown).then_some(complete);
                    history.lock().unwrap().push(Op::new(client, key, kind, invoke, done, outcome));
                    if outcome != Outcome::Ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n
            })
        })
        .collect()
}

impl Cluster {
    /// In memory, node `id` came back as a new process: it must have installed a snapshot (sent
    /// by a peer of the other build at the first steps).
    async fn installed_a_snapshot(&self, id: u64, durable: bool) {
        if !durable {
            let s = self.status(id).await.unwrap();
            assert!(s["snapshots_installed"].as_u64().unwrap_or(0) >= 1, "node {id} rejoined from a snapshot: {s}");
        }
    }

    /// SIGTERM node `id`, wait for it to exit, and start it again with `bin` and the same command
    /// line (the same data directory): one step of a rolling upgrade or downgrade.
    async fn replace(&mut self, id: u64, bin: &str) {
        self.signal(id, "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.nodes.get_mut(&id).unwrap().child.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                self.nodes.get_mut(&id).unwrap().child.kill().expect("SIGKILL");
                let _ = self.nodes.get_mut(&id).unwrap().child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bin_of.insert(id, bin.to_string());
        self.restart(id);
    }

    /// Node `id` serves and is an acceptor again. In memory a replaced replica comes back as a
    /// learner (a new incarnation): replacing the next one before it is promoted leaves one
    /// live acceptor of three, no quorum, and no way to promote it (docs/upgrades.md, step 2).
    async fn serving(&self, id: u64) {
        poll(Duration::from_secs(60), &format!("node {id} serves"), || async {
            let s = self.status(id).await?;
            (s["serving"] == true).then_some(())
        })
        .await;
        self.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    }

    /// The cluster version node `id` reports.
    async fn cluster_version(&self, id: u64) -> Option<u64> {
        self.status(id).await?["cluster_version"].as_u64()
    }

    /// The highest cluster version node `id`'s build reads: which build it runs (`synod
    /// --version` says 0.2.0 for both until the workspace version moves).
    async fn max_cluster_version(&self, id: u64) -> Option<u64> {
        self.status(id).await?["max_cluster_version"].as_u64()
    }

    /// Write `keys`, range-delete the `prefix` through node `via`, and check every replica
    /// lists none of them afterwards and reaches the same state.
    async fn range_delete_works(&self, via: u64, prefix: &str, keys: &[&str]) {
        for k in keys {
            let r = self.req(via, Method::PUT, &format!("/v1/kv/{k}"), &[], "x").await.unwrap();
            assert!(r.status == 200 || r.status == 201, "{}", r.text());
        }
        let r = self.req(via, Method::DELETE, &format!("/v1/kv?prefix={prefix}"), &[], "").await.unwrap();
        assert_eq!((r.status, r.json()["deleted"].as_u64()), (200, Some(keys.len() as u64)), "range delete through node {via}: {}", r.text());
        let h = self.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
        println!("after a range delete through node {via}: state {h}");
        for id in 1..=3 {
            let r = self.req(id, Method::GET, &format!("/v1/kv?prefix={prefix}&consistency=sequential"), &[], "").await.unwrap();
            assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(0), "node {id}: {}", r.text());
        }
    }

    /// `POST /v1/leases` through node `via`.
    async fn grant_lease(&self, via: u64) -> driver::client::HttpResponse {
        let headers = [("content-type", "application/json".to_string())];
        self.req(via, Method::POST, "/v1/leases", &headers, r#"{"ttl_ms": 5000}"#).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_the_previous_release_keeps_one_state() {
    rolling_upgrade(true).await;
}

/// In memory, a replaced replica is a new process that rejoins and is sent a snapshot by a peer
/// of the other build (format 6 both ways while the version is 2; the snapshot cadence is short
/// so every rejoin needs one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_of_in_memory_replicas_keeps_one_state() {
    rolling_upgrade(false).await;
}

async fn rolling_upgrade(durable: bool) {
    let old = prev_bin();
    let new = common::synod_bin();
    let (vo, vn) = (version_of(&old), version_of(&new));
    println!("previous release: {vo} ({old}); this build: {vn} ({new})");
    // Both may say 0.2.0 (the workspace version moves at release time): compare the files; the
    // status checks below tell the builds apart by what they read.
    assert!(std::fs::read(&old).unwrap() != std::fs::read(&new).unwrap(), "the previous release and this build must be different builds");
    let next = u64::from(MAX_CLUSTER_VERSION);
    assert!(next >= LEASES_VERSION, "this build reads cluster version {next}; leases need {LEASES_VERSION}");

    let mut c = Cluster::unstarted(3, 2, if durable { 200 } else { 50 }, &[]).await;
    for id in 1..=3 {
        c.bin_of.insert(id, old.clone());
        let data = c.dir.path().join(format!("data-{id}"));
        let flag = format!("--data-dir={}", data.display());
        let extra: Vec<&str> = if durable { vec![flag.as_str()] } else { Vec::new() };
        c.launch(id, &extra);
    }
    c.wait_leader(Duration::from_secs(30)).await;
    for id in 1..=3 {
        assert_eq!(c.cluster_version(id).await, Some(PREV_VERSION), "a cluster of the previous release runs version {PREV_VERSION}");
        assert_eq!(c.max_cluster_version(id).await, Some(PREV_VERSION), "node {id} runs the previous release");
    }

    let t0 = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let urls: Vec<String> = (1..=3).map(|id| c.url(id).to_string()).collect();
    let clients = spawn_clients(urls, 4, stop_rx, history.clone(), t0);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Upgrade node 3: it reads the old data directory (in memory: an old peer's snapshot) and
    // the others' old formats.
    c.replace(3, &new).await;
    c.serving(3).await;
    c.installed_a_snapshot(3, durable).await;
    let h = c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
    println!("node 3 upgraded: state {h}");
    let s3 = c.status(3).await.unwrap();
    assert_eq!((s3["cluster_version"].as_u64(), s3["max_cluster_version"].as_u64()), (Some(PREV_VERSION), Some(next)), "{s3}");
    // Both builds run version 2: the range delete (request format 2) works on the mixed
    // cluster, proposed through the new build and through the old one, and both apply it alike.
    c.range_delete_works(3, "mixed-new-", &["mixed-new-a", "mixed-new-b"]).await;
    c.range_delete_works(1, "mixed-old-", &["mixed-old-a", "mixed-old-b", "mixed-old-c"]).await;
    // The new command format (leases) stays off while an old member runs.
    let r = c.grant_lease(3).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["type"], "/problems/cluster-version", "{}", r.text());

    // Downgrade node 3 again while the cluster version is still 2: the old build reads what the
    // new one wrote (its data directory, snapshots, messages).
    c.replace(3, &old).await;
    c.serving(3).await;
    c.installed_a_snapshot(3, durable).await;
    let h = c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
    println!("node 3 downgraded: state {h}");
    assert_eq!(c.max_cluster_version(3).await, Some(PREV_VERSION), "node 3 runs the previous release again");
    assert_eq!(c.cluster_version(3).await, Some(PREV_VERSION));

    // Now the real rolling upgrade, one at a time.
    for id in [3, 2] {
        c.replace(id, &new).await;
        c.serving(id).await;
        c.installed_a_snapshot(id, durable).await;
        let h = c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
        println!("node {id} upgraded: state {h}");
        assert_eq!(c.cluster_version(id).await, Some(PREV_VERSION), "node 1 still runs the previous release");
    }
    let r = c.grant_lease(2).await;
    assert_eq!(r.status, 409, "leases before the last member is upgraded: {}", r.text());
    assert_eq!(r.json()["type"], "/problems/cluster-version", "{}", r.text());
    c.replace(1, &new).await;
    c.serving(1).await;
    // Every member reads this build's version: the leader raises it through the log.
    poll(Duration::from_secs(30), &format!("every replica runs cluster version {next}"), || async {
        for id in 1..=3 {
            if c.cluster_version(id).await? != next {
                return None;
            }
        }
        Some(())
    })
    .await;
    let h = c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
    println!("every node upgraded, cluster version {next}: state {h}");

    stop_tx.send(true).unwrap();
    let mut ops = 0;
    for t in clients {
        ops += t.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    let acked = history.iter().filter(|o| o.outcome == Outcome::Ok && o.kind.is_mutation()).count();
    println!("{ops} operations, {acked} acknowledged writes");
    assert!(acked >= 20, "the load made progress through the upgrade ({acked} acknowledged writes)");
    let verdict = checker::check(&history);
    assert!(verdict.ok, "history across the upgrade: {verdict}");

    // The new format works now: a lease is granted and every replica shows it.
    let r = c.grant_lease(2).await;
    assert_eq!(r.status, 201, "a lease after the raise: {}", r.text());
    let lease = r.json();
    let lease_id = lease["id"].as_u64().unwrap_or_else(|| panic!("a lease id: {lease}"));
    assert_eq!(lease["ttl_ms"].as_u64(), Some(5000), "{lease}");
    for id in [2, 1, 3] {
        let r = c.req(id, Method::GET, &format!("/v1/leases/{lease_id}"), &[], "").await.unwrap();
        assert_eq!(r.status, 200, "node {id}: {}", r.text());
        assert_eq!(r.json()["id"].as_u64(), Some(lease_id), "node {id}: {}", r.text());
    }
    let h = c.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    println!("after a lease grant: state {h}");
    // And the range delete still does.
    c.range_delete_works(2, "gone-", &["gone-a", "gone-b"]).await;

    // A downgrade after the version was raised: the old build must not come back into the
    // cluster. It either refuses its data directory (formats it does not read) and exits, or
    // sets it aside and asks to join as a new process, which the leader refuses.
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let victim = if leader == 1 { 2 } else { 1 };
    let refused_before = c.metric(leader, "synod_joins_refused_version_total").await.unwrap_or(0);
    c.replace(victim, &old).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = loop {
        if let Some(code) = c.nodes.get_mut(&victim).unwrap().child.try_wait().expect("wait") {
            break format!("exited ({code})");
        }
        let refused = c.metric(leader, "synod_joins_refused_version_total").await.unwrap_or(0);
        if refused > refused_before {
            break "its join was refused".to_string();
        }
        assert!(Instant::now() < deadline, "the downgraded replica neither exited nor was refused in 30 s:\n{}", c.log(victim));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("downgrade after the version was raised: {outcome}");
    // Whatever it did, it serves nothing from a diverged state and the others still agree.
    if let Some(s) = c.status(victim).await {
        assert_ne!(s["serving"], true, "a downgraded replica must not serve after the version was raised: {s}");
    }
    let others: Vec<u64> = (1..=3).filter(|i| *i != victim).collect();
    let r = c.req(others[0], Method::PUT, "/v1/kv/after", &[], "1").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "the upgraded majority still writes: {}", r.text());
    c.wait_same_state(&others, Duration::from_secs(30)).await;
    // Back to the new build: it rejoins and catches up.
    let _ = c.nodes.get_mut(&victim).unwrap().child.kill();
    let _ = c.nodes.get_mut(&victim).unwrap().child.wait();
    c.bin_of.insert(victim, new.clone());
    c.restart(victim);
    c.serving(victim).await;
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
}
