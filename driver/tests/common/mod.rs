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
}

/// A running cluster.
pub struct Cluster {
    pub nodes: BTreeMap<u64, NodeProc>,
    pub http: HttpClient,
    pub lease_ttl: u64,
    pub etcd: EtcdProcess,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Start etcd and `n` founding replicas with a short lease TTL.
    pub async fn start(n: u64, lease_ttl: u64, snapshot_every: u64) -> Cluster {
        Self::start_with(n, lease_ttl, snapshot_every, &[]).await
    }

    /// [`Cluster::start`] with extra `synod node` flags.
    pub async fn start_with(n: u64, lease_ttl: u64, snapshot_every: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = find_etcd().expect("an etcd binary (Debian's etcd-server) is needed for driver tests");
        let etcd = EtcdProcess::start(&bin, dir.path()).await.expect("etcd starts");
        let founders = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let http = format!("127.0.0.1:{}", free_port());
            let log = std::fs::File::create(dir.path().join(format!("node-{id}.log"))).expect("log file");
            let child = Command::new(env!("CARGO_BIN_EXE_synod"))
                .arg("node")
                .arg(format!("--id={id}"))
                .arg(format!("--http-listen={http}"))
                .arg(format!("--grpc-listen=127.0.0.1:{}", free_port()))
                .arg(format!("--etcd={}", etcd.endpoint))
                .arg(format!("--bootstrap={founders}"))
                .arg(format!("--lease-ttl={lease_ttl}"))
                .arg(format!("--snapshot-every={snapshot_every}"))
                .arg("--write-timeout-ms=3000")
                .args(extra)
                .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("synod node starts");
            nodes.insert(id, NodeProc { id, url: format!("http://{http}"), child });
        }
        Cluster { nodes, http: HttpClient::new(), lease_ttl, etcd, dir }
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
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        if std::thread::panicking() || std::env::var_os("SYNOD_TEST_KEEP_LOGS").is_some() {
            for id in 1..=5 {
                let tail: String = self.log(id).lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                eprintln!("---- node {id} log tail ----\n{tail}");
            }
        }
    }
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
