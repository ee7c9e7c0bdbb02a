//! `synod dev`: a whole local cluster for a newcomer, and the etcd launcher the tests share.
//!
//! It starts its own etcd (Debian's `etcd-server` or `etcd` binary, a temporary data directory,
//! free loopback ports), then N replicas, each its own OS process (this binary re-executed with
//! `node`), REST on `127.0.0.1:<base+1>..<base+N>`. It prints the endpoints and a curl example and
//! stays in the foreground; Ctrl-C sends SIGTERM to every replica, waits for them, and stops etcd.

use crate::client::HttpClient;
use anyhow::{bail, Context as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Find an etcd server binary: `$SYNOD_ETCD_BIN`, then `etcd-server` or `etcd` on the `PATH`.
pub fn find_etcd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYNOD_ETCD_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["etcd-server", "etcd"] {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")]) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Send SIGTERM to a child (through `kill(1)`: no libc binding needed for one signal).
pub fn terminate(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

/// Wait for a child to exit, up to `timeout`; kill it if it does not.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An etcd server started for a test or a dev cluster; stopped and its directory removed on drop.
pub struct EtcdProcess {
    child: Child,
    dir: PathBuf,
    /// The client URL (`http://127.0.0.1:port`).
    pub endpoint: String,
}

impl EtcdProcess {
    /// Start etcd from `bin` under a new directory in `parent`, and wait until it answers.
    pub async fn start(bin: &Path, parent: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("etcd-{}-{}", std::process::id(), crate::wall_micros()));
        std::fs::create_dir_all(&dir)?;
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new(bin)
            .arg("--name=synod-dev")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=synod-dev={peer_url}"))
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut me = EtcdProcess { child, dir, endpoint };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                bail!("etcd exited at start ({status}); see {}", me.dir.join("etcd.log").display());
            }
            if let Ok(mut c) = crate::etcd::connect(std::slice::from_ref(&me.endpoint)).await {
                if c.status().await.is_ok() {
                    return Ok(me);
                }
            }
            if Instant::now() > deadline {
                me.stop();
                bail!("etcd did not answer within 20s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The directory holding its data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop it (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        terminate(&self.child);
        wait_or_kill(&mut self.child, Duration::from_secs(3));
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Flags of `synod dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// How many replicas.
    #[arg(long, env = "SYNOD_DEV_NODES", default_value_t = 5)]
    pub nodes: u64,
    /// Replica i serves REST on 127.0.0.1:<base+i>.
    #[arg(long, env = "SYNOD_HTTP_BASE_PORT", default_value_t = 8080)]
    pub http_base_port: u16,
    /// etcd lease TTL in seconds.
    #[arg(long, env = "SYNOD_LEASE_TTL", default_value_t = 3)]
    pub lease_ttl: u64,
    /// Snapshot every this many applied slots.
    #[arg(long, env = "SYNOD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
}

/// Run a local cluster until Ctrl-C.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    let bin = find_etcd().context("no etcd binary found (install Debian's etcd-server, or set SYNOD_ETCD_BIN)")?;
    let base = std::env::temp_dir().join("synod-dev");
    let etcd = EtcdProcess::start(&bin, &base).await?;
    let exe = std::env::current_exe()?;
    let founders = (1..=args.nodes).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for i in 1..=args.nodes {
        let http = format!("127.0.0.1:{}", u64::from(args.http_base_port) + i);
        let log = std::fs::File::create(etcd.dir().join(format!("node-{i}.log")))?;
        let child = Command::new(&exe)
            .arg("node")
            .arg(format!("--id={i}"))
            .arg(format!("--http-listen={http}"))
            .arg(format!("--grpc-listen=127.0.0.1:{}", free_port()))
            .arg(format!("--etcd={}", etcd.endpoint))
            .arg(format!("--bootstrap={founders}"))
            .arg(format!("--lease-ttl={}", args.lease_ttl))
            .arg(format!("--snapshot-every={}", args.snapshot_every))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a replica")?;
        children.push(child);
        endpoints.push(format!("http://{http}"));
    }
    let http = HttpClient::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    'ready: loop {
        for ep in &endpoints {
            if let Ok(r) = http.get(&format!("{ep}/readyz")).await {
                if r.status == 200 {
                    break 'ready;
                }
            }
        }
        if Instant::now() > deadline {
            eprintln!("warning: no replica became ready within 60s; logs are in {}", etcd.dir().display());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("Synod dev cluster: {} replicas, etcd at {}", args.nodes, etcd.endpoint);
    for (i, ep) in endpoints.iter().enumerate() {
        println!("  node {}: {ep}", i + 1);
    }
    println!("logs: {}", etcd.dir().display());
    println!("try:  curl -X PUT -d world {}/v1/kv/hello && curl {}/v1/kv/hello", endpoints[0], endpoints[endpoints.len() - 1]);
    println!("      synod kv get hello --endpoints {}", endpoints.join(","));
    println!("Ctrl-C stops everything.");
    crate::server::shutdown_signal().await;
    println!("stopping...");
    for c in &children {
        terminate(c);
    }
    for c in &mut children {
        wait_or_kill(c, Duration::from_secs(8));
    }
    drop(etcd);
    Ok(())
}
