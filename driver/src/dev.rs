//! `synod dev`: a whole local cluster for a newcomer, and the etcd launcher the tests share.
//!
//! Start-up, in order, each step bounded:
//! 1. the replicas' REST ports (`127.0.0.1:<base+1>..<base+N>`) are checked: one in use stops
//!    everything before anything starts, naming the port and `--http-base-port`;
//! 2. its own etcd (Debian's `etcd-server` or `etcd` binary, free loopback ports, a directory under
//!    `$TMPDIR/synod-dev/`) is started and must answer `/health` and a status call; nothing is
//!    logged while it comes up;
//! 3. N replicas, each its own OS process (this binary re-executed with `node`), logging to
//!    `node-<i>.log` in the same directory;
//! 4. the start-up is watched until every replica answers `/readyz` (etcd lease held, a leader
//!    known): if etcd or a replica exits, the others are stopped and `synod dev` fails with the
//!    one that exited and the last lines of its log; past `--startup-timeout` it fails saying what
//!    is missing (no leader, which replica is not ready and why).
//!
//! Then it prints the endpoints and a curl example and stays in the foreground, still watching: a
//! replica that exits is reported on the terminal with its log path (its logs are kept), and etcd
//! exiting stops everything with an error. Ctrl-C (or SIGTERM) sends SIGTERM to every replica,
//! waits for them, and stops etcd. The children run in their own process groups, so a terminal's
//! Ctrl-C reaches only `synod dev`, which stops them in order.

use crate::client::HttpClient;
use anyhow::{bail, Context as _};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tracing::debug;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// `n` distinct loopback ports that were free a moment ago, none of them in `avoid`.
fn free_ports(n: usize, avoid: &[u16]) -> anyhow::Result<Vec<u16>> {
    // Every listener stays open until all are picked, so the kernel hands out distinct ports.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
        let port = l.local_addr()?.port();
        if !avoid.contains(&port) {
            ports.push(port);
        }
        held.push(l);
    }
    Ok(ports)
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

/// The last `n` lines of a log file, each indented by four spaces (or a note if it is empty or
/// cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("    (could not read {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "    (the log is empty)".to_string();
    }
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// An etcd server started for a test or a dev cluster; stopped and its directory removed on drop.
pub struct EtcdProcess {
    child: Child,
    dir: PathBuf,
    /// Keep `dir` on drop (a durable dev cluster's etcd).
    keep: bool,
    log: PathBuf,
    /// The client URL (`http://127.0.0.1:port`).
    pub endpoint: String,
}

impl EtcdProcess {
    /// The etcd process's id (tests pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start etcd from `bin` under a new directory in `parent` (its log in that directory), and
    /// wait until it answers.
    pub async fn start(bin: &Path, parent: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("etcd-{}-{}", std::process::id(), crate::wall_micros()));
        Self::launch(bin, dir, None, false, false, None).await
    }

    /// [`start`](Self::start) on TLS with client certificates required (`etcd.pem`,
    /// `etcd-key.pem` and `ca.pem` of `certs`, as `synod certs` writes them); connect with
    /// [`crate::certs::etcd_security`].
    pub async fn start_tls(bin: &Path, parent: &Path, certs: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("etcd-{}-{}", std::process::id(), crate::wall_micros()));
        Self::launch(bin, dir, None, false, false, Some(certs)).await
    }

    /// Start etcd from `bin` under a new directory in `parent`, logging to `log` (which outlives
    /// the directory), in its own process group; wait until it is healthy.
    async fn start_for_dev(bin: &Path, parent: &Path, log: PathBuf, tls: Option<&Path>) -> anyhow::Result<Self> {
        let dir = parent.join(format!("etcd-{}-{}", std::process::id(), crate::wall_micros()));
        Self::launch(bin, dir, Some(log), true, false, tls).await
    }

    /// Start etcd with its data in `dir` (kept on drop: `synod dev --data-dir`), logging to
    /// `log`, in its own process group.
    async fn start_kept(bin: &Path, dir: PathBuf, log: PathBuf, tls: Option<&Path>) -> anyhow::Result<Self> {
        Self::launch(bin, dir, Some(log), true, true, tls).await
    }

    async fn launch(bin: &Path, dir: PathBuf, log: Option<PathBuf>, own_group: bool, keep: bool, tls: Option<&Path>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = log.unwrap_or_else(|| dir.join("etcd.log"));
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let security = match tls {
            Some(certs) => crate::certs::etcd_security(certs)?,
            None => crate::etcd::EtcdSecurity::default(),
        };
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--name=synod-dev")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=synod-dev={peer_url}"))
            .arg("--log-level=warn")
            .stdout(Stdio::null())
            .stderr(log_file);
        if let Some(certs) = tls {
            // Clients must present a certificate signed by the cluster CA.
            cmd.arg(format!("--cert-file={}", certs.join("etcd.pem").display()))
                .arg(format!("--key-file={}", certs.join("etcd-key.pem").display()))
                .arg(format!("--trusted-ca-file={}", certs.join("etcd-ca.pem").display()))
                .arg("--client-cert-auth");
        }
        if own_group {
            cmd.process_group(0);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e).with_context(|| format!("starting {}", bin.display()));
            }
        };
        let mut me = EtcdProcess { child, dir, keep, log, endpoint };
        let timeout = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        let http = HttpClient::new();
        let addr = format!("127.0.0.1:{client}");
        loop {
            if let Some(status) = me.try_wait() {
                bail!("etcd exited at start ({status}); last lines of {}:\n{}", me.log.display(), log_tail(&me.log, 10));
            }
            // Quietly: a TCP connect, then etcd's own health check, and only then an etcd client
            // (whose connect warns about endpoints that do not answer).
            // On TLS, /health needs a client certificate too: the client's status call is the check.
            if (tls.is_some() && me.accepts(&addr).await) || me.healthy(&http, &addr).await {
                // `connect` makes one status call before it hands out a client.
                match crate::etcd::connect_secured(std::slice::from_ref(&me.endpoint), &security).await {
                    Ok(_) => return Ok(me),
                    Err(e) => debug!(error = format!("{e:#}"), "etcd answers /health but the client cannot connect yet"),
                }
            }
            if Instant::now() > deadline {
                me.stop();
                bail!("etcd was not healthy within {timeout:?}; last lines of {}:\n{}", me.log.display(), log_tail(&me.log, 10));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether etcd accepts a TCP connection on `addr`.
    async fn accepts(&self, addr: &str) -> bool {
        let connect = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await;
        matches!(connect, Ok(Ok(_)))
    }

    /// Whether etcd accepts a connection on `addr` and answers `GET /health` with `"health":"true"`.
    async fn healthy(&self, http: &HttpClient, addr: &str) -> bool {
        if !self.accepts(addr).await {
            return false;
        }
        let url = format!("{}/health", self.endpoint);
        match http.request(hyper::Method::GET, &url, &[], bytes::Bytes::new(), Duration::from_secs(1)).await {
            Ok(r) => r.status == 200 && r.json()["health"] == "true",
            Err(e) => {
                debug!(error = %e, "etcd /health");
                false
            }
        }
    }

    /// The directory holding its data (and its log, unless it was given another path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stop it (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if self.try_wait().is_none() {
            terminate(&self.child);
        }
        wait_or_kill(&mut self.child, Duration::from_secs(3));
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Flags of `synod dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// How many replicas.
    #[arg(long, env = "SYNOD_DEV_NODES", default_value_t = 5)]
    pub nodes: u64,
    /// Replica i serves REST on 127.0.0.1:<base+i> (gRPC and etcd use free ports).
    #[arg(long, env = "SYNOD_HTTP_BASE_PORT", default_value_t = 8080)]
    pub http_base_port: u16,
    /// etcd lease TTL in seconds.
    #[arg(long, env = "SYNOD_LEASE_TTL", default_value_t = 3)]
    pub lease_ttl: u64,
    /// Snapshot every this many applied slots.
    #[arg(long, env = "SYNOD_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Give up (stop everything, exit non-zero, say what is missing) if the cluster is not ready
    /// this many seconds after its etcd is: every replica must answer /readyz.
    #[arg(long, env = "SYNOD_DEV_STARTUP_TIMEOUT", default_value_t = 30)]
    pub startup_timeout: u64,
    /// Tokio worker threads per replica (0: one per core). The replicas share this machine, so
    /// one each by default: a thread per core in every replica measured 10-25% slower under
    /// load on 2 cores (docs/performance.md).
    #[arg(long, env = "SYNOD_DEV_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// Durable mode: each replica keeps its data under DIR/node-<i> and the dev etcd under
    /// DIR/etcd, so stopping and starting `synod dev --data-dir DIR` keeps every key.
    #[arg(long, env = "SYNOD_DEV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Everything on TLS with throwaway certificates (`synod certs`): mutual TLS between
    /// replicas, HTTPS and an admin token for clients, etcd on TLS with client certificates.
    /// The banner gives the `https://` URLs, the CA file and the token.
    #[arg(long, env = "SYNOD_DEV_TLS")]
    pub tls: bool,
}

/// One replica process of a dev cluster.
struct Replica {
    id: u64,
    url: String,
    log: PathBuf,
    child: Child,
    /// Its exit was already reported.
    reported: bool,
}

/// What `synod dev` started; everything is stopped on drop, and the log directory removed unless
/// `keep_logs`.
struct DevCluster {
    dir: PathBuf,
    etcd: Option<EtcdProcess>,
    replicas: Vec<Replica>,
    keep_logs: bool,
}

impl DevCluster {
    /// SIGTERM every replica still running, wait for them (SIGKILL after `grace`), stop etcd.
    fn stop(&mut self, grace: Duration) {
        for r in &mut self.replicas {
            if r.child.try_wait().ok().flatten().is_none() {
                terminate(&r.child);
            }
        }
        let deadline = Instant::now() + grace;
        for r in &mut self.replicas {
            wait_or_kill(&mut r.child, deadline.saturating_duration_since(Instant::now()));
        }
        // Dropping it stops it and removes its data directory (its log is in `dir`).
        self.etcd = None;
    }

    /// The first replica found exited and not yet reported: (id, status, log path).
    fn newly_exited(&mut self) -> Option<(u64, ExitStatus, PathBuf)> {
        for r in &mut self.replicas {
            if r.reported {
                continue;
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                r.reported = true;
                return Some((r.id, status, r.log.clone()));
            }
        }
        None
    }

    /// Fail if etcd or a replica has exited.
    fn check_alive(&mut self, phase: &str) -> anyhow::Result<()> {
        if let Some(etcd) = &mut self.etcd {
            if let Some(status) = etcd.try_wait() {
                bail!("etcd exited {phase} ({status}); last lines of {}:\n{}", etcd.log().display(), log_tail(etcd.log(), 10));
            }
        }
        if let Some((id, status, log)) = self.newly_exited() {
            bail!("replica {id} exited {phase} ({status}); last lines of {}:\n{}", log.display(), log_tail(&log, 10));
        }
        Ok(())
    }

    /// One round of `/readyz` probes: `None` if every replica is ready, else what is missing.
    async fn missing(&self, http: &HttpClient) -> Option<Vec<String>> {
        let probes = self.replicas.iter().map(|r| async move {
            let url = format!("{}/readyz", r.url);
            let why = match http.request(hyper::Method::GET, &url, &[], bytes::Bytes::new(), Duration::from_secs(1)).await {
                Ok(resp) if resp.status == 200 => return None,
                Ok(resp) => resp.json()["detail"].as_str().map_or_else(|| format!("/readyz answered {}", resp.status), str::to_string),
                Err(e) => format!("not answering at {} ({})", r.url, e.root_cause()),
            };
            Some(format!("replica {} not ready: {why}", r.id))
        });
        let missing: Vec<String> = futures::future::join_all(probes).await.into_iter().flatten().collect();
        (!missing.is_empty()).then_some(missing)
    }

    /// Whether any replica knows a leader (from `/v1/status`).
    async fn leader_known(&self, http: &HttpClient) -> bool {
        for r in &self.replicas {
            let url = format!("{}/v1/status", r.url);
            if let Ok(resp) = http.request(hyper::Method::GET, &url, &[], bytes::Bytes::new(), Duration::from_secs(1)).await {
                if resp.status == 200 && resp.json()["leader"].as_u64().is_some() {
                    return true;
                }
            }
        }
        false
    }

    /// Wait until every replica is ready; fail at once if etcd or a replica exits, and after
    /// `timeout` with what is missing.
    async fn wait_ready(&mut self, http: &HttpClient, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive("during start-up")?;
            let Some(missing) = self.missing(http).await else { return Ok(()) };
            // A replica that exited while it was being probed is reported as such, not as "not
            // answering".
            self.check_alive("during start-up")?;
            if Instant::now() >= deadline {
                let mut msg = format!("the cluster was not ready within {}s:", timeout.as_secs());
                if !self.leader_known(http).await {
                    msg.push_str("\n  no leader: no replica knows one yet");
                }
                for m in missing {
                    let _ = write!(msg, "\n  {m}");
                }
                let _ = write!(msg, "\n(a slow machine may need a longer --startup-timeout)");
                bail!(msg);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The replicas' REST ports, checked free before anything starts.
fn check_http_ports(base: u16, nodes: u64) -> anyhow::Result<Vec<u16>> {
    let last = u64::from(base) + nodes;
    if last > u64::from(u16::MAX) {
        bail!("--http-base-port {base} with --nodes {nodes} would need port {last}; choose a lower --http-base-port");
    }
    let ports: Vec<u16> = (1..=nodes).map(|i| base + i as u16).collect();
    let mut busy = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        if let Err(e) = TcpListener::bind(("127.0.0.1", *port)) {
            busy.push(format!("port {port} (replica {}'s REST port): {e}", i + 1));
        }
    }
    if !busy.is_empty() {
        bail!(
            "cannot start: {} in use on 127.0.0.1:\n  {}\nreplica i serves REST on 127.0.0.1:<base+i> (now {}..{}); choose other ports with --http-base-port, e.g. --http-base-port {}",
            if busy.len() == 1 { "a port is" } else { "ports are" },
            busy.join("\n  "),
            ports[0],
            ports[ports.len() - 1],
            suggest_base(nodes).map_or_else(|| "P".to_string(), |b| b.to_string()),
        );
    }
    Ok(ports)
}

/// A base port whose replica ports are all free now (for the error message).
fn suggest_base(nodes: u64) -> Option<u16> {
    (18080u16..60000).step_by(100).find(|b| (1..=nodes).all(|i| TcpListener::bind(("127.0.0.1", b + i as u16)).is_ok()))
}

/// Run a local cluster until Ctrl-C.
pub async fn run_dev(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let http_ports = check_http_ports(args.http_base_port, args.nodes)?;
    let grpc_ports = free_ports(http_ports.len(), &http_ports)?;
    let bin = find_etcd().context("no etcd binary found (install Debian's etcd-server, or set SYNOD_ETCD_BIN)")?;
    let exe = std::env::current_exe()?;

    // One signal future for the whole run: a Ctrl-C during start-up stops everything too.
    let stop = crate::server::shutdown_signal();
    tokio::pin!(stop);

    let dir = std::env::temp_dir().join("synod-dev").join(format!("{}-{}", std::process::id(), crate::wall_micros()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cluster = DevCluster { dir: dir.clone(), etcd: None, replicas: Vec::new(), keep_logs: false };
    // Throwaway certificates (kept with the data in durable mode, so a restart reuses them).
    let certs = if args.tls {
        let out = args.data_dir.as_ref().map_or_else(|| dir.join("certs"), |d| d.join("certs"));
        let c = crate::certs::CertsArgs { out: out.clone(), nodes: (1..=args.nodes).collect(), hosts: Vec::new(), etcd_hosts: Vec::new(), days: 30 };
        crate::certs::run(&c).context("making the dev cluster's certificates")?;
        let token = crate::certs::admin_token(&out.join("tokens.json"))?;
        Some((out, token))
    } else {
        None
    };
    let tls_dir = certs.as_ref().map(|(d, _)| d.as_path());
    eprintln!("synod dev: starting etcd and {} replicas (logs in {})", args.nodes, dir.display());
    let etcd = tokio::select! {
        biased;
        _ = &mut stop => return Ok(()),
        etcd = async {
            match &args.data_dir {
                Some(d) => EtcdProcess::start_kept(&bin, d.join("etcd"), dir.join("etcd.log"), tls_dir).await,
                None => EtcdProcess::start_for_dev(&bin, &dir, dir.join("etcd.log"), tls_dir).await,
            }
        } => {
            match etcd {
                Ok(e) => e,
                Err(e) => {
                    cluster.keep_logs = true;
                    bail!("the dev etcd did not start: {e:#}\nlogs kept in {}", dir.display());
                }
            }
        }
    };
    let etcd_endpoint = etcd.endpoint.clone();
    cluster.etcd = Some(etcd);

    let founders = (1..=args.nodes).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    for (i, (http_port, grpc_port)) in (1..=args.nodes).zip(http_ports.iter().zip(&grpc_ports)) {
        let http = format!("127.0.0.1:{http_port}");
        let log = dir.join(format!("node-{i}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("node");
        if let Some(d) = &args.data_dir {
            cmd.arg(format!("--data-dir={}", d.join(format!("node-{i}")).display()));
        }
        if let Some(c) = tls_dir {
            let f = |name: String| c.join(name).display().to_string();
            cmd.arg(format!("--tls-ca={}", f("ca.pem".into())))
                .arg(format!("--tls-cert={}", f(format!("node-{i}.pem"))))
                .arg(format!("--tls-key={}", f(format!("node-{i}-key.pem"))))
                .arg(format!("--http-tls-cert={}", f(format!("node-{i}.pem"))))
                .arg(format!("--http-tls-key={}", f(format!("node-{i}-key.pem"))))
                .arg(format!("--tokens={}", f("tokens.json".into())))
                .arg(format!("--etcd-ca={}", f("etcd-ca.pem".into())))
                .arg(format!("--etcd-cert={}", f("etcd-client.pem".into())))
                .arg(format!("--etcd-key={}", f("etcd-client-key.pem".into())));
        }
        let scheme = if args.tls { "https" } else { "http" };
        let child = cmd
            .arg(format!("--id={i}"))
            .arg(format!("--http-listen={http}"))
            .arg(format!("--grpc-listen=127.0.0.1:{grpc_port}"))
            .arg(format!("--etcd={etcd_endpoint}"))
            .arg(format!("--bootstrap={founders}"))
            .arg(format!("--lease-ttl={}", args.lease_ttl))
            .arg(format!("--snapshot-every={}", args.snapshot_every))
            .arg(format!("--worker-threads={}", args.worker_threads))
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting replica {i} ({})", exe.display()))?;
        cluster.replicas.push(Replica { id: i, url: format!("{scheme}://{http}"), log, child, reported: false });
    }

    let access = crate::client::Access {
        cacert: tls_dir.map(|d| d.join("ca.pem")),
        token: certs.as_ref().map(|(_, t)| t.clone()),
    };
    let http = HttpClient::with(&access)?;
    let timeout = Duration::from_secs(args.startup_timeout);
    let ready = tokio::select! {
        biased;
        _ = &mut stop => {
            eprintln!("synod dev: interrupted during start-up; stopping");
            return Ok(());
        }
        r = cluster.wait_ready(&http, timeout) => r,
    };
    if let Err(e) = ready {
        cluster.keep_logs = true;
        cluster.stop(Duration::from_secs(3));
        bail!("{e:#}\neverything synod dev started is stopped; logs kept in {}", dir.display());
    }

    let endpoints: Vec<String> = cluster.replicas.iter().map(|r| r.url.clone()).collect();
    println!("Synod dev cluster: {} replicas, etcd at {etcd_endpoint}", args.nodes);
    for r in &cluster.replicas {
        println!("  node {}: {}", r.id, r.url);
    }
    println!("logs: {}", dir.display());
    match &certs {
        None => {
            println!("try:  curl -X PUT -d world {}/v1/kv/hello && curl {}/v1/kv/hello", endpoints[0], endpoints[endpoints.len() - 1]);
            println!("      synod kv get hello --endpoints {}", endpoints.join(","));
        }
        Some((c, token)) => {
            let ca = c.join("ca.pem");
            println!("ca: {}", ca.display());
            println!("token: {token}");
            println!(
                "try:  curl --cacert {ca} -H 'Authorization: Bearer {token}' -X PUT -d world {}/v1/kv/hello",
                endpoints[0],
                ca = ca.display()
            );
            println!(
                "      SYNOD_CACERT={} SYNOD_TOKEN={token} synod kv get hello --endpoints {}",
                ca.display(),
                endpoints.join(",")
            );
        }
    }
    println!("Ctrl-C stops everything.");

    // Running: report replicas that exit; etcd exiting ends the cluster.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {
                while let Some((id, status, log)) = cluster.newly_exited() {
                    cluster.keep_logs = true;
                    eprintln!(
                        "synod dev: replica {id} ({}) exited ({status}); its log: {}\n{}",
                        cluster.replicas[id as usize - 1].url,
                        log.display(),
                        log_tail(&log, 10)
                    );
                }
                if let Err(e) = cluster.check_alive("while the cluster was running") {
                    cluster.keep_logs = true;
                    cluster.stop(Duration::from_secs(8));
                    bail!("{e:#}\nthe dev cluster cannot run without its etcd: everything is stopped; logs kept in {}", dir.display());
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop(Duration::from_secs(8));
    if cluster.keep_logs {
        eprintln!("synod dev: a replica exited while running; logs kept in {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(log_tail(&p, 2), "    c\n    d");
        std::fs::write(&p, "").unwrap();
        assert!(log_tail(&p, 2).contains("empty"));
        assert!(log_tail(&dir.path().join("missing"), 2).contains("could not read"));
    }

    #[test]
    fn a_busy_replica_port_is_named_with_the_flag() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        // Replica 2 of 3 gets `port`.
        let err = check_http_ports(port - 2, 3).unwrap_err().to_string();
        assert!(err.contains(&format!("port {port} (replica 2's REST port)")), "{err}");
        assert!(err.contains("--http-base-port"), "{err}");
        drop(held);
        let err = check_http_ports(65530, 6).unwrap_err().to_string();
        assert!(err.contains("65536") && err.contains("--http-base-port"), "{err}");
    }

    #[test]
    fn free_ports_are_distinct_and_avoid_the_given_ones() {
        let avoid = [free_port()];
        let ports = free_ports(8, &avoid).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
        assert!(!ports.contains(&avoid[0]));
    }
}
