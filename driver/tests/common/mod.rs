//! A loopback cluster for driver tests: a real etcd on free ports in a temp dir, and `synod node`
//! processes (so `kill -9` is real). Everything waits by polling with deadlines; nothing sleeps
//! blindly.

#![allow(dead_code)]

use driver::client::{HttpClient, HttpResponse};
use driver::dev::{find_etcd, free_port, EtcdProcess};
use hyper::Method;
use std::collections::BTreeMap;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One replica process.
pub struct NodeProc {
    pub id: u64,
    pub url: String,
    pub child: Child,
    /// The full `synod node` command line, so a restart uses the same one.
    pub args: Vec<String>,
}

/// A running cluster.
pub struct Cluster {
    pub nodes: BTreeMap<u64, NodeProc>,
    pub http: HttpClient,
    pub lease_ttl: u64,
    pub etcd: EtcdProcess,
    pub dir: tempfile::TempDir,
    /// Flags every node gets (founders and joiners).
    pub common: Vec<String>,
    /// How many times each node was started (names its log file).
    pub starts: BTreeMap<u64, u32>,
    /// The `synod` binary a node runs when it is not [`synod_bin`] (a rolling upgrade's old
    /// release).
    pub bin_of: BTreeMap<u64, String>,
    /// The scheme of the nodes' REST URLs: `http`, or `https` for a [`Cluster::secure`] one.
    pub scheme: &'static str,
    /// The certificates and tokens of a [`Cluster::secure`] cluster (`None`: plaintext, no
    /// tokens).
    pub secured: Option<Secured>,
}

/// What a secured cluster ([`Cluster::secure`]) runs with: `synod certs` files, a token file
/// with the test tokens ([`test_tokens`]), and a client that sends no token.
pub struct Secured {
    /// The directory `synod certs` wrote (`ca.pem`, `ca-key.pem`, `node-<id>.pem`, ...).
    pub certs: std::path::PathBuf,
    /// The token file every node reads (`--tokens`; rewrite it with [`Secured::write_tokens`]).
    pub tokens: std::path::PathBuf,
    /// The admin token (`Cluster::http` sends it).
    pub admin: String,
    /// A client that trusts the cluster CA and sends no token of its own.
    pub anon: HttpClient,
}

/// The `app` token of a secured cluster: reads and writes `app/`.
pub const APP_TOKEN: &str = "app-token-0123456789abcdef";
/// The `reader` token of a secured cluster: reads `app/`.
pub const READER_TOKEN: &str = "reader-token-0123456789abcdef";
/// The `writer` token of a secured cluster: writes `app/`, reads nothing.
pub const WRITER_TOKEN: &str = "writer-token-0123456789abcdef";

/// The token file entries every secured cluster starts with: `admin`, `app` (read and write
/// `app/`), `reader` (read `app/`), `writer` (write `app/` only).
pub fn test_tokens(admin: &str) -> Vec<serde_json::Value> {
    vec![
        serde_json::json!({ "name": "admin", "token": admin, "admin": true, "read": [""], "write": [""] }),
        serde_json::json!({ "name": "app", "token": APP_TOKEN, "read": ["app/"], "write": ["app/"] }),
        serde_json::json!({ "name": "reader", "token": READER_TOKEN, "read": ["app/"] }),
        serde_json::json!({ "name": "writer", "token": WRITER_TOKEN, "write": ["app/"] }),
    ]
}

impl Secured {
    /// The cluster CA file.
    pub fn ca(&self) -> std::path::PathBuf {
        self.certs.join("ca.pem")
    }

    /// How a client with `token` reaches the replicas.
    pub fn access(&self, token: Option<&str>) -> driver::client::Access {
        driver::client::Access { cacert: Some(self.ca()), token: token.map(str::to_string) }
    }

    /// Replace the token file with `entries` (`{"tokens": entries}`); nodes read it on SIGHUP.
    pub fn write_tokens(&self, entries: &[serde_json::Value]) {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "tokens": entries })).unwrap();
        self.write_tokens_text(&text);
    }

    /// Replace the token file with `text` (which need not parse), atomically.
    pub fn write_tokens_text(&self, text: &str) {
        let tmp = self.tokens.with_extension("tmp");
        std::fs::write(&tmp, text).expect("writing the token file");
        std::fs::rename(&tmp, &self.tokens).expect("replacing the token file");
    }

    /// The flags of node `id` that name its own certificate (peer and REST).
    pub fn node_flags(&self, id: u64) -> Vec<String> {
        let f = |name: String| self.certs.join(name).display().to_string();
        vec![
            format!("--tls-ca={}", f("ca.pem".into())),
            format!("--tls-cert={}", f(format!("node-{id}.pem"))),
            format!("--tls-key={}", f(format!("node-{id}-key.pem"))),
            format!("--http-tls-cert={}", f(format!("node-{id}.pem"))),
            format!("--http-tls-key={}", f(format!("node-{id}-key.pem"))),
        ]
    }
}

impl Cluster {
    /// Start etcd and `n` founding replicas with a short lease TTL.
    pub async fn start(n: u64, lease_ttl: u64, snapshot_every: u64) -> Cluster {
        Self::start_with(n, lease_ttl, snapshot_every, &[]).await
    }

    /// [`Cluster::start`] with extra `synod node` flags.
    pub async fn start_with(n: u64, lease_ttl: u64, snapshot_every: u64, extra: &[&str]) -> Cluster {
        let mut c = Self::unstarted(n, lease_ttl, snapshot_every, extra).await;
        for id in 1..=n {
            c.launch(id, &[]);
        }
        c
    }

    /// etcd and the flags of an `n`-founder cluster, no replica started yet (the caller launches
    /// each founder, with flags or a binary of its own).
    pub async fn unstarted(n: u64, lease_ttl: u64, snapshot_every: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = find_etcd().expect("an etcd binary (Debian's etcd-server) is needed for driver tests");
        let etcd = EtcdProcess::start(&bin, dir.path()).await.expect("etcd starts");
        let founders = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let mut common = vec![
            format!("--etcd={}", etcd.endpoint),
            format!("--bootstrap={founders}"),
            format!("--lease-ttl={lease_ttl}"),
            format!("--snapshot-every={snapshot_every}"),
            "--write-timeout-ms=3000".to_string(),
        ];
        common.extend(extra.iter().map(|s| s.to_string()));
        Cluster {
            nodes: BTreeMap::new(),
            http: HttpClient::new(),
            lease_ttl,
            etcd,
            dir,
            common,
            starts: BTreeMap::new(),
            bin_of: BTreeMap::new(),
            scheme: "http",
            secured: None,
        }
    }

    /// Start a secured cluster of `n` founders: certificates from `synod certs` in the temp dir
    /// (for nodes `1..=n+2`, so joiners have theirs), etcd on TLS with client certificates,
    /// mutual TLS between replicas, HTTPS and the [`test_tokens`] for clients. `http` sends the
    /// admin token, so the helpers (`status`, `metric`, `wait_leader`) work unchanged.
    pub async fn secure(n: u64, lease_ttl: u64, snapshot_every: u64, extra: &[&str]) -> Cluster {
        let mut c = Self::secure_unstarted(n, lease_ttl, snapshot_every, extra).await;
        for id in 1..=n {
            c.launch(id, &[]);
        }
        c
    }

    /// [`Cluster::secure`] without starting any replica.
    pub async fn secure_unstarted(n: u64, lease_ttl: u64, snapshot_every: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = dir.path().join("certs");
        let args = driver::certs::CertsArgs { out: certs.clone(), nodes: (1..=n + 2).collect(), hosts: Vec::new(), etcd_hosts: Vec::new(), days: 2 };
        driver::certs::run(&args).expect("synod certs");
        let tokens = certs.join("tokens.json");
        let admin = driver::certs::admin_token(&tokens).expect("an admin token");
        let bin = find_etcd().expect("an etcd binary (Debian's etcd-server) is needed for driver tests");
        let etcd = EtcdProcess::start_tls(&bin, dir.path(), &certs).await.expect("etcd starts on TLS");
        let founders = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let f = |name: &str| certs.join(name).display().to_string();
        let mut common = vec![
            format!("--etcd={}", etcd.endpoint),
            format!("--bootstrap={founders}"),
            format!("--lease-ttl={lease_ttl}"),
            format!("--snapshot-every={snapshot_every}"),
            "--write-timeout-ms=3000".to_string(),
            format!("--tokens={}", tokens.display()),
            format!("--etcd-ca={}", f("etcd-ca.pem")),
            format!("--etcd-cert={}", f("etcd-client.pem")),
            format!("--etcd-key={}", f("etcd-client-key.pem")),
        ];
        common.extend(extra.iter().map(|s| s.to_string()));
        let anon = HttpClient::with(&driver::client::Access { cacert: Some(certs.join("ca.pem")), token: None }).expect("a client");
        let secured = Secured { certs, tokens, admin, anon };
        secured.write_tokens(&test_tokens(&secured.admin));
        let http = HttpClient::with(&secured.access(Some(&secured.admin))).expect("an admin client");
        Cluster {
            nodes: BTreeMap::new(),
            http,
            lease_ttl,
            etcd,
            dir,
            common,
            starts: BTreeMap::new(),
            bin_of: BTreeMap::new(),
            scheme: "https",
            secured: Some(secured),
        }
    }

    /// The secured cluster's files and tokens (panics on a plaintext cluster).
    pub fn sec(&self) -> &Secured {
        self.secured.as_ref().expect("a secured cluster (Cluster::secure)")
    }

    /// Send a request to node `id` with `token` as the bearer token (`None`: no
    /// `Authorization` header), on a secured cluster.
    pub async fn req_as(&self, id: u64, token: Option<&str>, method: Method, path: &str, headers: &[(&str, String)], body: &str) -> anyhow::Result<HttpResponse> {
        let url = format!("{}{}", self.url(id), path);
        let mut h: Vec<(&str, String)> = headers.to_vec();
        if let Some(t) = token {
            h.push(("authorization", format!("Bearer {t}")));
        }
        self.sec().anon.request(method, &url, &h, body.to_string(), Duration::from_secs(10)).await
    }

    /// Node `id`'s gRPC address (`host:port`), from its command line.
    pub fn grpc_addr(&self, id: u64) -> String {
        self.nodes[&id].args.iter().find_map(|a| a.strip_prefix("--grpc-listen=")).expect("a --grpc-listen flag").to_string()
    }

    /// Start `synod node --id <id>` on fresh ports with the common flags plus `extra`.
    pub fn launch(&mut self, id: u64, extra: &[&str]) {
        let http = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["node".to_string(), format!("--id={id}"), format!("--http-listen={http}"), format!("--grpc-listen=127.0.0.1:{}", free_port())];
        if let Some(s) = &self.secured {
            args.extend(s.node_flags(id));
        }
        args.extend(self.common.iter().cloned());
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = self.spawn(id, &args);
        self.nodes.insert(id, NodeProc { id, url: format!("{}://{http}", self.scheme), child, args });
    }

    /// Start a node that joins the running cluster (`--join`).
    pub fn join(&mut self, id: u64, extra: &[&str]) {
        let mut e = vec!["--join"];
        e.extend_from_slice(extra);
        self.launch(id, &e);
    }

    fn spawn(&mut self, id: u64, args: &[String]) -> Child {
        let n = self.starts.entry(id).or_default();
        *n += 1;
        let name = if *n == 1 { format!("node-{id}.log") } else { format!("node-{id}.{n}.log") };
        let log = std::fs::File::create(self.dir.path().join(name)).expect("log file");
        Command::new(self.bin_of.get(&id).cloned().unwrap_or_else(synod_bin))
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("synod node starts")
    }

    /// kill -9 node `id`, keeping its command line for [`Cluster::restart`].
    pub fn crash(&mut self, id: u64) -> Vec<String> {
        let n = self.nodes.get_mut(&id).expect("a live node");
        n.child.kill().expect("SIGKILL");
        let _ = n.child.wait();
        n.args.clone()
    }

    /// Start node `id` again with exactly the command line it had (after [`Cluster::crash`]).
    pub fn restart(&mut self, id: u64) {
        let args = self.nodes[&id].args.clone();
        let child = self.spawn(id, &args);
        self.nodes.get_mut(&id).expect("known node").child = child;
    }

    /// Node `id`'s `/v1/status` as JSON.
    pub async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let r = self.req(id, Method::GET, "/v1/status", &[], "").await.ok()?;
        (r.status == 200).then(|| r.json())
    }

    /// The configuration as node `id` runs it: (epoch, acceptor ids, learner ids), from
    /// `/v1/cluster/members?local=true`.
    pub async fn config_seen_by(&self, id: u64) -> Option<(u64, Vec<(u64, u64)>, Vec<(u64, u64)>)> {
        let r = self.req(id, Method::GET, "/v1/cluster/members?local=true", &[], "").await.ok()?;
        if r.status != 200 {
            return None;
        }
        let j = r.json();
        let pick = |role: &str| -> Vec<(u64, u64)> {
            j["members"].as_array().into_iter().flatten().filter(|m| m["role"] == role).map(|m| (m["id"].as_u64().unwrap(), m["incarnation"].as_u64().unwrap())).collect()
        };
        Some((j["epoch"].as_u64()?, pick("acceptor"), pick("learner")))
    }

    /// Wait until every node in `ids` runs a configuration whose acceptor ids are exactly
    /// `acceptors` with no learners, each at the incarnation it reports for itself; returns the
    /// epoch.
    pub async fn wait_acceptors(&self, ids: &[u64], acceptors: &[u64], timeout: Duration) -> u64 {
        poll(timeout, &format!("nodes {ids:?} all run acceptors {acceptors:?} and no learners"), || async {
            let mut epoch = None;
            for id in ids {
                let (e, acc, learners) = self.config_seen_by(*id).await?;
                let acc_ids: Vec<u64> = acc.iter().map(|(i, _)| *i).collect();
                if acc_ids != acceptors || !learners.is_empty() || epoch.is_some_and(|x| x != e) {
                    return None;
                }
                // Each acceptor is the live process of that id (not a forgotten incarnation).
                for (aid, inc) in &acc {
                    if self.nodes.contains_key(aid) {
                        let s = self.status(*aid).await?;
                        if s["incarnation"].as_u64()? != *inc {
                            return None;
                        }
                    }
                }
                epoch = Some(e);
            }
            epoch
        })
        .await
    }

    /// Wait until every node in `ids` has applied the same slot with the same state hash.
    pub async fn wait_same_state(&self, ids: &[u64], timeout: Duration) -> String {
        poll(timeout, &format!("nodes {ids:?} reach the same state hash"), || async {
            let mut seen: Option<(u64, String)> = None;
            for id in ids {
                let s = self.status(*id).await?;
                let here = (s["store_applied_slot"].as_u64()?, s["state_hash"].as_str()?.to_string());
                if seen.as_ref().is_some_and(|x| *x != here) {
                    return None;
                }
                seen = Some(here);
            }
            seen.map(|s| s.1)
        })
        .await
    }

    pub fn url(&self, id: u64) -> &str {
        &self.nodes[&id].url
    }

    /// Send a request to node `id`.
    pub async fn req(&self, id: u64, method: Method, path: &str, headers: &[(&str, String)], body: &str) -> anyhow::Result<HttpResponse> {
        let url = format!("{}{}", self.url(id), path);
        self.http.request(method, &url, headers, body.to_string(), Duration::from_secs(10)).await
    }

    /// The leader as node `id` reports it, if `id` answers and knows one.
    pub async fn leader_seen_by(&self, id: u64) -> Option<u64> {
        let r = self.req(id, Method::GET, "/v1/status", &[], "").await.ok()?;
        r.json()["leader"].as_u64()
    }

    /// Wait until every live node reports the same leader, which reports itself leader.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        poll(timeout, "every live node agrees on a leader", || async {
            let mut seen = None;
            for id in self.nodes.keys() {
                let l = self.leader_seen_by(*id).await?;
                if seen.is_some_and(|s| s != l) {
                    return None;
                }
                seen = Some(l);
            }
            let l = seen?;
            let r = self.req(l, Method::GET, "/v1/status", &[], "").await.ok()?;
            (r.json()["role"] == "leader").then_some(l)
        })
        .await
    }

    /// Wait until every node of `ids` agrees on a leader among them, which reports itself leader.
    /// On timeout the panic names the leader each node last reported (a leader outside `ids` is
    /// never waited out: nothing moves leadership off a healthy leader).
    pub async fn wait_leader_among(&self, ids: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = BTreeMap::new();
            for id in ids {
                seen.insert(*id, self.leader_seen_by(*id).await);
            }
            let mut views = seen.values();
            let first = views.next().copied().flatten();
            if let Some(l) = first.filter(|l| ids.contains(l) && views.all(|v| *v == Some(*l))) {
                if self.status(l).await.is_some_and(|s| s["role"] == "leader") {
                    return l;
                }
            }
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until nodes {ids:?} agree on a leader among them; last seen (node: leader): {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9 one node and forget it.
    pub fn kill9(&mut self, id: u64) {
        let mut n = self.nodes.remove(&id).expect("a live node");
        n.child.kill().expect("SIGKILL");
        let _ = n.child.wait();
    }

    /// A counter or gauge from node `id`'s /metrics.
    pub async fn metric(&self, id: u64, name: &str) -> Option<u64> {
        let m = self.req(id, Method::GET, "/metrics", &[], "").await.ok()?.text();
        let prefix = format!("{name} ");
        m.lines().find(|l| l.starts_with(&prefix))?.split(' ').nth(1)?.parse().ok()
    }

    /// Send a signal to node `id` (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, id: u64, sig: &str) {
        let pid = self.nodes[&id].child.id().to_string();
        assert!(Command::new("kill").arg(format!("-{sig}")).arg(pid).status().unwrap().success());
    }

    /// The log of a node (for failure messages).
    pub fn log(&self, id: u64) -> String {
        let n = self.starts.get(&id).copied().unwrap_or(1);
        let name = if n <= 1 { format!("node-{id}.log") } else { format!("node-{id}.{n}.log") };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        // SYNOD_TEST_LOG_DIR=<dir>: keep every node's whole log under
        // <dir>/<pid>-passed|failed/ for a post-mortem.
        if let Some(keep) = std::env::var_os("SYNOD_TEST_LOG_DIR") {
            let to = std::path::Path::new(&keep).join(format!("{}-{}", std::process::id(), if std::thread::panicking() { "failed" } else { "passed" }));
            if std::fs::create_dir_all(&to).is_ok() {
                for e in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
                    if e.path().extension().is_some_and(|x| x == "log") {
                        let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                    }
                }
            }
        }
        if std::thread::panicking() || std::env::var_os("SYNOD_TEST_KEEP_LOGS").is_some() {
            let ids: Vec<u64> = self.starts.keys().copied().collect();
            for id in ids {
                let tail: String = self.log(id).lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                eprintln!("---- node {id} log tail ----\n{tail}");
            }
        }
    }
}

/// The `synod` binary the cluster runs: cargo's, or `SYNOD_BIN` if set (a copy pinned by the
/// caller: two worktrees sharing one `CARGO_TARGET_DIR` overwrite each other's `debug/synod`,
/// as the artifact names do not depend on the worktree's path).
pub fn synod_bin() -> String {
    std::env::var("SYNOD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_synod").to_string())
}

/// Poll `f` until it yields `Some`, or panic after `timeout` naming `what`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a steady write load saw acknowledged.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Keys written and acknowledged (200/201), with their values.
    pub acked: Vec<(String, String)>,
    /// Acknowledged `incr` of the counter key `load-counter` (each by 1).
    pub incrs: u64,
}

/// A steady write load: alternately a `PUT load-<n>` and an `incr load-counter`, each with its own
/// Idempotency-Key and retried with the same key (through the next URL) until it gets a definite
/// answer, so an acknowledged write is exactly-once however often it was sent. Stops when `stop`
/// turns true, after finishing the write in hand.
pub fn spawn_load(urls: Vec<String>, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let http = HttpClient::new();
        let mut report = LoadReport::default();
        let mut n = 0u64;
        let mut turn = 0usize;
        while !*stop.borrow() {
            n += 1;
            let incr = n.is_multiple_of(2);
            let (path, method, body) = if incr {
                ("/v1/rmw".to_string(), Method::POST, r#"{"op":"incr","key":"load-counter","delta":1}"#.to_string())
            } else {
                (format!("/v1/kv/load-{n}"), Method::PUT, format!("v{n}"))
            };
            let headers = [("idempotency-key", format!("load-{n}")), ("content-type", "application/json".to_string())];
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "write {n} got no definite answer within 60 s");
                turn += 1;
                let url = format!("{}{}", urls[turn % urls.len()], path);
                match http.request(method.clone(), &url, &headers, body.clone(), Duration::from_secs(10)).await {
                    Ok(r) if r.status == 200 || r.status == 201 => {
                        if incr {
                            report.incrs += 1;
                        } else {
                            report.acked.push((format!("load-{n}"), format!("v{n}")));
                        }
                        break;
                    }
                    Ok(r) if r.status == 503 || r.status == 504 => {}
                    Ok(r) => panic!("write {n}: unexpected {} {}", r.status, r.text()),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        report
    })
}

impl Cluster {
    /// Every acknowledged write of `report` is on node `id` (sequential read at its current
    /// state, after `wait_same_state`), and the counter equals the acknowledged increments.
    pub async fn check_load(&self, id: u64, report: &LoadReport) {
        for (k, v) in &report.acked {
            let r = self.req(id, Method::GET, &format!("/v1/kv/{k}?consistency=sequential"), &[], "").await.expect("read");
            assert_eq!((r.status, r.text()), (200, v.clone()), "acknowledged write {k} on node {id}");
        }
        let r = self.req(id, Method::GET, "/v1/kv/load-counter?consistency=sequential", &[], "").await.expect("read");
        let got: u64 = if r.status == 404 { 0 } else { r.text().parse().expect("a number") };
        assert_eq!(got, report.incrs, "node {id}: every acknowledged incr applied exactly once");
    }
}

/// A `u64` from the environment (a test's knob), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `p`-th percentile (0..=1) of `sorted` (nearest rank; `sorted` not empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
