//! `synod lock` and `synod elect`: the lock and election recipes (`/v1/locks`, `/v1/elections`,
//! `driver/src/rest/locks.rs`, docs/coordination.md) from the command line, like `etcdctl lock`
//! and `etcdctl elect`.
//!
//! Both grant a lease for the process (`--ttl`), keep it alive in the background (every third of
//! the TTL, failing over between the endpoints) and end it when they are done, which deletes
//! their key. A process that dies without ending it (`kill -9`) stops renewing: the lease
//! expires within its TTL and the lock (or the leadership) passes on.
//!
//! **Losing the lease.** The lease is certain to live until the TTL after the *sending* of the
//! last acknowledged keepalive (log time runs no faster than real time): that point is the
//! lease's earliest end, the soonest the lock could pass to another holder. If the keepalive finds
//! the lease gone (404), or no keepalive has been acknowledged by a tenth of the TTL before that
//! point, the process stops acting as the holder: `synod lock` sends SIGTERM to its command and
//! exits 2; `synod elect` exits 2. Either says why on stderr.
//!
//! **The command must be dead before the lock can pass on.** `synod lock` sends SIGKILL to a
//! command still running a twentieth of the TTL before the lease's earliest end ([`kill_at`]):
//! at most half a tenth of the TTL after the SIGTERM when the keepalives went unanswered (0.9 TTL
//! after the last acknowledged one, then SIGKILL at 0.95 TTL), and at once after the SIGTERM when
//! the lease is known gone (the lock may be another's already). A command that needs longer to
//! stop cleanly needs a longer TTL. (A paused `synod lock` notices nothing: fence.)
//!
//! No command here uses the CLI's exactly-once session file: they run for long, and holding the
//! session file's lock that long would stall every other command of the session. The grant is
//! made exactly-once with an `Idempotency-Key` of its own; everything else is idempotent.

use super::{show_bytes, Cli, ClientOpts, OutputFormat};
use crate::client::HttpResponse;
use crate::codec::percent_encode;
use crate::session::Session;
use anyhow::{bail, Context as _};
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The exit status when the lease was lost (the lock or the leadership with it).
pub const LOST: i32 = 2;

/// How long one lock or campaign request waits on the server before the CLI asks again.
const WAIT_MS: u64 = 30_000;

/// `synod lock NAME [--ttl 10s] -- COMMAND ARGS...`
#[derive(clap::Args, Debug, Clone)]
pub struct LockArgs {
    /// The lock's name (one path segment: no `/`). Its keys live under `_synod/lock/NAME/`.
    pub name: String,
    /// The TTL of the lease the lock is held under: `1500ms`, `2s`, `5m` (plain digits are
    /// seconds). If the process dies, the lock passes on within about this long.
    #[arg(long, default_value = "10s", value_parser = parse_ttl_arg)]
    pub ttl: u64,
    /// The command to run while the lock is held, after `--`. It sees `SYNOD_LOCK_NAME`,
    /// `SYNOD_LOCK_KEY`, `SYNOD_LOCK_LEASE` and `SYNOD_LOCK_FENCE` (the fencing token: larger
    /// for every later holder).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `synod elect NAME VALUE [--ttl 10s]` or `synod elect NAME --listen`
#[derive(clap::Args, Debug, Clone)]
pub struct ElectArgs {
    /// The election's name (one path segment: no `/`). Its keys live under `_synod/elect/NAME/`.
    pub name: String,
    /// The value to campaign with: published as the leader's value while this process leads.
    #[arg(required_unless_present = "listen", conflicts_with = "listen")]
    pub value: Option<String>,
    /// Do not campaign: print the leader's value now and at every change, until Ctrl-C.
    #[arg(long)]
    pub listen: bool,
    /// The TTL of the lease the campaign runs under (as for `synod lock`).
    #[arg(long, default_value = "10s", value_parser = parse_ttl_arg)]
    pub ttl: u64,
}

fn parse_ttl_arg(s: &str) -> Result<u64, String> {
    crate::rest::leases::parse_ttl(s)
}

/// A client without the session file (see the module docs).
fn client(opts: &ClientOpts) -> anyhow::Result<Cli> {
    let http = crate::client::HttpClient::with(&opts.access.access())?;
    Ok(Cli { opts: opts.clone(), http, session: Session::fresh(), path: None, _lock: None })
}

/// The problem type of a refusal (`lease-not-found`, ...), if it is one.
fn problem_type(r: &HttpResponse) -> Option<String> {
    r.json()["type"].as_str().and_then(|t| t.rsplit('/').next()).map(str::to_string)
}

fn describe(r: &HttpResponse) -> String {
    let j = r.json();
    format!("{} {}", r.status, j["detail"].as_str().map_or_else(|| r.text(), str::to_string))
}

/// Why a lease is lost (or may be), and when it may end.
#[derive(Clone, Debug)]
struct Lost {
    /// What happened, for stderr.
    why: String,
    /// The lease's earliest end as this process knows it: the TTL after the sending of the last
    /// acknowledged keepalive, or the moment it was found gone (it may have ended before).
    ends: Instant,
}

/// When to SIGKILL a command whose lease is lost: a twentieth of the TTL before the lease's
/// earliest end (room for the kill to take effect), so the command is dead before the lock could
/// pass to another holder. In the past (SIGKILL at once) when the lease is known gone.
fn kill_at(lost: &Lost, ttl: Duration) -> Instant {
    lost.ends.checked_sub(ttl / 20).unwrap_or(lost.ends)
}

/// A lease of this process, kept alive by a background task. Dropping it stops the task (every
/// way out of a command, an early return included); [`Lease::end`] also revokes it.
struct Lease {
    id: u64,
    /// Turns `Some` when the lease is lost, or may be.
    lost: watch::Receiver<Option<Lost>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// Grant a lease of `ttl_ms` (exactly once: an `Idempotency-Key` of this process) and start
    /// keeping it alive.
    async fn grant(opts: &ClientOpts, ttl_ms: u64) -> anyhow::Result<Lease> {
        let mut cli = client(opts)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let idem = format!("synod-coord-{}-{nanos}", std::process::id());
        let headers = [("content-type", "application/json".to_string()), ("idempotency-key", idem)];
        let sent = Instant::now();
        let r = cli.send(Method::POST, "/v1/leases", &headers, json!({ "ttl_ms": ttl_ms }).to_string().into_bytes()).await?;
        if r.status != 201 {
            bail!("could not grant a lease: {}", describe(&r));
        }
        let id = r.json()["id"].as_u64().context("the grant's reply has no id")?;
        let (tx, lost) = watch::channel(None);
        let task = tokio::spawn(keep_alive(client(opts)?, id, Duration::from_millis(ttl_ms), sent, tx));
        Ok(Lease { id, lost, task })
    }

    /// Why the lease is lost, once it is.
    async fn lost(&mut self) -> Lost {
        loop {
            if let Some(lost) = self.lost.borrow().clone() {
                return lost;
            }
            if self.lost.changed().await.is_err() {
                // The keeper ended without a reason: it never does, but say something (and
                // assume the worst of the lease).
                return Lost { why: format!("the keepalive of lease {} stopped", self.id), ends: Instant::now() };
            }
        }
    }

    /// Stop renewing and revoke the lease (deleting every key attached to it). Best effort:
    /// a lease not revoked expires within its TTL anyway.
    async fn end(self, opts: &ClientOpts) {
        self.task.abort();
        let Ok(mut cli) = client(opts) else { return };
        cli.opts.retry_deadline_ms = cli.opts.retry_deadline_ms.min(5_000);
        match cli.send(Method::DELETE, &format!("/v1/leases/{}", self.id), &[], Vec::new()).await {
            Ok(r) if r.status == 200 || r.status == 404 => {}
            Ok(r) => eprintln!("warning: could not revoke lease {} ({}); it expires within its TTL", self.id, describe(&r)),
            Err(e) => eprintln!("warning: could not revoke lease {} ({e:#}); it expires within its TTL", self.id),
        }
    }
}

/// Renew lease `id` every third of `ttl` from the sending of the last acknowledged renewal
/// (`last_ok`: at first, the grant's), failing over between endpoints, until it is lost: 404,
/// a definite refusal, or no acknowledgement by `ttl - ttl/10` after `last_ok`. Then `lost`
/// says why, and when the lease may end (`last_ok + ttl`; now if it is gone).
async fn keep_alive(mut cli: Cli, id: u64, ttl: Duration, mut last_ok: Instant, lost: watch::Sender<Option<Lost>>) {
    let path = format!("/v1/leases/{id}/keepalive");
    let stop_margin = ttl / 10;
    loop {
        tokio::time::sleep_until((last_ok + ttl / 3).into()).await;
        let stop_at = last_ok + ttl - stop_margin;
        let round = async {
            loop {
                let sent = Instant::now();
                let left = stop_at.saturating_duration_since(sent);
                cli.opts.timeout_ms = (ttl / 3).min(left).max(Duration::from_millis(100)).as_millis() as u64;
                cli.opts.retry_deadline_ms = left.as_millis() as u64;
                match cli.send(Method::POST, &path, &[], Vec::new()).await {
                    Ok(r) if r.status == 200 => return Ok(sent),
                    Ok(r) if problem_type(&r).as_deref() == Some("lease-not-found") => {
                        let why = format!("lease {id} is gone (404 lease-not-found): it expired or was revoked, and its keys were deleted");
                        return Err(Lost { why, ends: Instant::now() });
                    }
                    Ok(r) if !matches!(r.status, 503 | 504 | 410) => {
                        return Err(Lost { why: format!("a keepalive of lease {id} was refused: {}", describe(&r)), ends: last_ok + ttl });
                    }
                    _ => {
                        cli.opts.endpoints.rotate_left(1);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        match tokio::time::timeout_at(stop_at.into(), round).await {
            Ok(Ok(sent)) => last_ok = sent,
            Ok(Err(l)) => {
                let _ = lost.send(Some(l));
                return;
            }
            Err(_) => {
                let why = format!(
                    "no keepalive of lease {id} was acknowledged within {:?} of sending the last acknowledged one (TTL {ttl:?}): the lease may expire",
                    ttl - stop_margin
                );
                let _ = lost.send(Some(Lost { why, ends: last_ok + ttl }));
                return;
            }
        }
    }
}

/// How an acquisition ended.
enum Acquired {
    /// Held (elected): the server's reply.
    Held(Value),
    /// The lease is gone.
    LeaseGone,
    /// A refusal that asking again would not change.
    Refused(String),
}

/// Ask for the lock (or the leadership) until it is held: each request waits up to
/// [`WAIT_MS`] on the server; a 409 `lock-not-acquired` or an unavailable cluster asks again.
async fn acquire(opts: &ClientOpts, path: &str, body: Value, what: &str) -> anyhow::Result<Acquired> {
    let mut cli = client(opts)?;
    // An attempt lasts as long as the server waits, and some (`send` cuts an attempt at its
    // retry deadline too).
    cli.opts.timeout_ms = WAIT_MS + 10_000;
    cli.opts.retry_deadline_ms = cli.opts.retry_deadline_ms.max(WAIT_MS + 10_000);
    let headers = [("content-type", "application/json".to_string())];
    let mut said = false;
    loop {
        let r = cli.send(Method::POST, path, &headers, body.to_string().into_bytes()).await;
        match r {
            Ok(r) if r.status == 200 => return Ok(Acquired::Held(r.json())),
            Ok(r) if problem_type(&r).as_deref() == Some("lease-not-found") => return Ok(Acquired::LeaseGone),
            Ok(r) if problem_type(&r).as_deref() == Some("lock-not-acquired") => {
                if !said {
                    let h = &r.json()["holder"];
                    if h.is_object() {
                        eprintln!("waiting for {what} (held by lease {}, fence {})", h["lease"], h["fence"]);
                    } else {
                        eprintln!("waiting for {what}");
                    }
                    said = true;
                }
            }
            Ok(r) if matches!(r.status, 503 | 504 | 410) => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(r) => return Ok(Acquired::Refused(describe(&r))),
            Err(e) => {
                eprintln!("warning: {e:#}; asking again");
                cli.opts.endpoints.rotate_left(1);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Delete this lease's key in a lock or an election (best effort: ending the lease does it too).
async fn release(opts: &ClientOpts, path: &str) {
    let Ok(mut cli) = client(opts) else { return };
    cli.opts.retry_deadline_ms = cli.opts.retry_deadline_ms.min(5_000);
    match cli.send(Method::DELETE, path, &[], Vec::new()).await {
        Ok(r) if r.status == 200 || r.status == 404 => {}
        Ok(r) => eprintln!("warning: {path}: {}", describe(&r)),
        Err(e) => eprintln!("warning: {path}: {e:#}"),
    }
}

/// Send `sig` to process `pid` (through `kill(1)`, as `synod dev` does).
fn send_signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// The exit status of a finished command, as a shell reports it (128 + the signal).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Run `synod lock`; returns the exit status: the command's, [`LOST`] if the lock was lost
/// while it ran, 1 if the lock could not be taken.
pub async fn run_lock(opts: ClientOpts, args: LockArgs) -> anyhow::Result<i32> {
    crate::rest::locks::check_name(crate::rest::locks::Kind::Lock, &args.name).map_err(|p| anyhow::anyhow!(p.detail))?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let name = args.name.clone();
    let mut lease = Lease::grant(&opts, args.ttl).await?;
    let id = lease.id;
    let lock_path = format!("/v1/locks/{}", percent_encode(name.as_bytes()));
    let what = format!("lock {name:?}");
    let body = json!({ "lease": id, "wait_ms": WAIT_MS });
    let acquired = tokio::select! {
        a = acquire(&opts, &lock_path, body, &what) => a,
        lost = lease.lost() => {
            eprintln!("synod lock: lost lease {id} before the lock was taken: {}", lost.why);
            lease.end(&opts).await;
            return Ok(LOST);
        }
        _ = term.recv() => {
            lease.end(&opts).await;
            return Ok(143);
        }
        _ = int.recv() => {
            lease.end(&opts).await;
            return Ok(130);
        }
    };
    let held = match acquired {
        Ok(Acquired::Held(j)) => j,
        Ok(Acquired::LeaseGone) => {
            eprintln!("synod lock: lease {id} is gone (it expired or was revoked) before the lock was taken");
            lease.end(&opts).await;
            return Ok(LOST);
        }
        Ok(Acquired::Refused(why)) => {
            eprintln!("synod lock: {what}: {why}");
            lease.end(&opts).await;
            return Ok(1);
        }
        Err(e) => {
            lease.end(&opts).await;
            return Err(e);
        }
    };
    let key = show_bytes(&held["key"]);
    let Some(fence) = held["fence"].as_u64() else {
        // Not run without its fencing token; the place given up like any other way out.
        release(&opts, &format!("{lock_path}?lease={id}")).await;
        lease.end(&opts).await;
        bail!("the lock's reply has no fence: {held}");
    };
    eprintln!("synod lock: holding {what} (key {key}, fence {fence}, lease {id})");
    let mut child = match tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("SYNOD_LOCK_NAME", &name)
        .env("SYNOD_LOCK_KEY", &key)
        .env("SYNOD_LOCK_LEASE", id.to_string())
        .env("SYNOD_LOCK_FENCE", fence.to_string())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod lock: could not run {:?}: {e}", args.command[0]);
            release(&opts, &format!("{lock_path}?lease={id}")).await;
            lease.end(&opts).await;
            return Ok(127);
        }
    };
    let pid = child.id().unwrap_or(0);
    let ended = loop {
        tokio::select! {
            s = child.wait() => break Ok(s),
            lost = lease.lost() => break Err(lost),
            _ = term.recv() => send_signal(pid, "TERM"),
            _ = int.recv() => send_signal(pid, "INT"),
        }
    };
    let result = match ended {
        Ok(Ok(status)) => Ok(exit_code(status)),
        Ok(Err(e)) => {
            // The command's state is unknown: it must not outlive the lock.
            let _ = child.kill().await;
            Err(anyhow::Error::new(e).context("waiting for the command"))
        }
        Err(lost) => {
            let ttl = Duration::from_millis(args.ttl);
            let deadline = kill_at(&lost, ttl);
            let grace = deadline.saturating_duration_since(Instant::now());
            eprintln!(
                "synod lock: LOST {what}: {}. Sending SIGTERM to the command (pid {pid}): it must stop acting as the holder (SIGKILL in {grace:?}, before the lease could end)",
                lost.why
            );
            send_signal(pid, "TERM");
            if tokio::time::timeout_at(deadline.into(), child.wait()).await.is_err() {
                eprintln!("synod lock: the command did not exit within {grace:?} of SIGTERM; sending SIGKILL");
                let _ = child.kill().await;
            }
            Ok(LOST)
        }
    };
    release(&opts, &format!("{lock_path}?lease={id}")).await;
    lease.end(&opts).await;
    result
}

/// Run `synod elect`; returns the exit status: 0 after resigning on Ctrl-C (or SIGTERM),
/// [`LOST`] if the leadership was lost, 1 if stopped before being elected or refused.
pub async fn run_elect(opts: ClientOpts, args: ElectArgs) -> anyhow::Result<i32> {
    crate::rest::locks::check_name(crate::rest::locks::Kind::Election, &args.name).map_err(|p| anyhow::anyhow!(p.detail))?;
    if args.listen {
        return listen(&opts, &args.name).await;
    }
    let value = args.value.clone().context("a value to campaign with (or --listen)")?;
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let name = args.name.clone();
    let base = format!("/v1/elections/{}", percent_encode(name.as_bytes()));
    let mut lease = Lease::grant(&opts, args.ttl).await?;
    let id = lease.id;
    let what = format!("the leadership of {name:?}");
    eprintln!("campaigning in {name:?} with {value:?} (lease {id})");
    let body = json!({ "lease": id, "value": value, "wait_ms": WAIT_MS });
    let campaign = format!("{base}/campaign");
    let acquired = tokio::select! {
        a = acquire(&opts, &campaign, body, &what) => a,
        lost = lease.lost() => {
            eprintln!("synod elect: lost lease {id} before being elected: {}", lost.why);
            lease.end(&opts).await;
            return Ok(LOST);
        }
        _ = term.recv() => {
            lease.end(&opts).await;
            return Ok(1);
        }
        _ = int.recv() => {
            lease.end(&opts).await;
            return Ok(1);
        }
    };
    let j = match acquired {
        Ok(Acquired::Held(j)) => j,
        Ok(Acquired::LeaseGone) => {
            eprintln!("synod elect: lease {id} is gone (it expired or was revoked) before the election was won");
            lease.end(&opts).await;
            return Ok(LOST);
        }
        Ok(Acquired::Refused(why)) => {
            eprintln!("synod elect: {why}");
            lease.end(&opts).await;
            return Ok(1);
        }
        Err(e) => {
            lease.end(&opts).await;
            return Err(e);
        }
    };
    match opts.output {
        OutputFormat::Json => println!("{j}"),
        OutputFormat::Simple => println!("{}\t{}\t{}", name, show_bytes(&j["value"]), j["fence"]),
        OutputFormat::Table => println!("elected: {name} = {} (fence {}, key {}, lease {id})", show_bytes(&j["value"]), j["fence"], show_bytes(&j["key"])),
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tokio::select! {
        lost = lease.lost() => {
            eprintln!("synod elect: LOST {what}: {}; stop acting as the leader", lost.why);
            lease.end(&opts).await;
            Ok(LOST)
        }
        _ = term.recv() => {
            resign(&opts, &base, id, lease).await;
            Ok(0)
        }
        _ = int.recv() => {
            resign(&opts, &base, id, lease).await;
            Ok(0)
        }
    }
}

async fn resign(opts: &ClientOpts, base: &str, id: u64, lease: Lease) {
    release(opts, &format!("{base}?lease={id}")).await;
    lease.end(opts).await;
    eprintln!("resigned");
}

/// `synod elect NAME --listen`: print the leader's value now and at every change, following the
/// observe stream over the endpoints (a replica that fails is left for the next one), until
/// Ctrl-C. The same leader is not printed twice in a row, even across a reconnection.
async fn listen(opts: &ClientOpts, name: &str) -> anyhow::Result<i32> {
    let path = format!("/v1/elections/{}/observe", percent_encode(name.as_bytes()));
    let access = opts.access.access();
    let give_up = Duration::from_millis(opts.retry_deadline_ms);
    let out = opts.output;
    let follow = async {
        let mut shown: Option<(Value, Value, Value)> = None;
        let mut failing_since: Option<Instant> = None;
        for attempt in 0.. {
            let ep = &opts.endpoints[attempt % opts.endpoints.len()];
            match crate::watch_client::open_with(ep, &path, None, &access).await {
                Ok(crate::watch_client::Opened::Stream(mut s)) => {
                    failing_since = None;
                    while let Ok(Some(ev)) = s.next().await {
                        let data: Value = serde_json::from_str(&ev.data).unwrap_or_default();
                        match ev.event.as_str() {
                            "leader" => {
                                let now = (data["key"].clone(), data["fence"].clone(), data["value"].clone());
                                if shown.as_ref() != Some(&now) {
                                    match out {
                                        OutputFormat::Json => println!("{}", ev.data),
                                        OutputFormat::Simple | OutputFormat::Table => println!("{}", show_bytes(&data["value"])),
                                    }
                                    use std::io::Write as _;
                                    let _ = std::io::stdout().flush();
                                    shown = Some(now);
                                }
                            }
                            "vacant" => {
                                let had = shown.take();
                                if had.is_some() {
                                    if out == OutputFormat::Json {
                                        println!("{}", ev.data);
                                    }
                                    eprintln!("(no leader)");
                                }
                            }
                            "unauthorized" => bail!("{ep} ended the stream: the token no longer allows it"),
                            _ => {}
                        }
                    }
                }
                Ok(crate::watch_client::Opened::Refused(503, _)) | Err(_) => {}
                Ok(crate::watch_client::Opened::Refused(status, body)) => bail!("{ep} answered {status}: {body}"),
            }
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > give_up {
                bail!("no replica served the stream for {give_up:?}");
            }
            if attempt % opts.endpoints.len() == opts.endpoints.len() - 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    };
    if opts.endpoints.is_empty() {
        bail!("no endpoints given");
    }
    tokio::select! {
        r = follow => r.map(|()| 0),
        _ = tokio::signal::ctrl_c() => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// What a fake replica was asked.
    #[derive(Default)]
    struct Seen {
        keepalives: AtomicU64,
        revokes: AtomicU64,
        unlocks: AtomicU64,
    }

    /// A fake replica whose lock reply has no fence (a server bug, a proxy that rewrites the
    /// body): lease 7 is granted and kept alive, lock `x` "held".
    async fn fake_replica(seen: Arc<Seen>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let (status, body) = match (req.method().as_str(), req.uri().path()) {
                                ("POST", "/v1/leases") => (201, json!({ "id": 7, "ttl_ms": 300 })),
                                ("POST", "/v1/leases/7/keepalive") => {
                                    seen.keepalives.fetch_add(1, Ordering::SeqCst);
                                    (200, json!({ "id": 7, "ttl_ms": 300 }))
                                }
                                ("DELETE", "/v1/leases/7") => {
                                    seen.revokes.fetch_add(1, Ordering::SeqCst);
                                    (200, json!({ "id": 7, "deleted": 1 }))
                                }
                                ("POST", "/v1/locks/x") => (200, json!({ "name": "x", "key": "_synod/lock/x/0000000000000007", "lease": 7 })),
                                ("DELETE", "/v1/locks/x") => {
                                    seen.unlocks.fetch_add(1, Ordering::SeqCst);
                                    (200, json!({ "name": "x" }))
                                }
                                _ => (404, json!({ "type": "/problems/not-found" })),
                            };
                            let r = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body.to_string())))
                                .expect("a response");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn opts(endpoint: String) -> ClientOpts {
        ClientOpts {
            endpoints: vec![endpoint],
            output: OutputFormat::Table,
            session_file: None,
            session: None,
            seq: None,
            consistency: "linearizable".into(),
            timeout_ms: 2_000,
            retry_deadline_ms: 2_000,
            access: Default::default(),
        }
    }

    /// Every way out of `synod lock` stops the keepalive task; this one (a lock reply without a
    /// fence) returned early and left it renewing the lease for as long as the process lived.
    #[tokio::test]
    async fn a_lock_reply_without_a_fence_stops_the_keepalive_and_ends_the_lease() {
        let seen = Arc::new(Seen::default());
        let url = fake_replica(seen.clone()).await;
        let args = LockArgs { name: "x".into(), ttl: 300, command: vec!["true".into()] };
        let r = run_lock(opts(url), args).await;
        assert!(r.is_err(), "a reply without a fence is an error: {r:?}");
        // Renewals every 100 ms: give a stray keeper several rounds to show itself.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let after_exit = seen.keepalives.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(seen.keepalives.load(Ordering::SeqCst), after_exit, "keepalives went on after synod lock returned");
        assert_eq!(seen.revokes.load(Ordering::SeqCst), 1, "the lease was revoked on the way out");
    }

    /// The rule: SIGKILL a twentieth of the TTL before the lease's earliest end; at once when
    /// that is past (the lease known gone).
    #[test]
    fn the_kill_comes_before_the_lease_could_end() {
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        // Keepalives unanswered: SIGTERM at 0.9 TTL after the last acknowledged one, 1 s before
        // its earliest end; SIGKILL half a second later.
        let lost = Lost { why: String::new(), ends: now + ttl / 10 };
        assert_eq!(kill_at(&lost, ttl), now + Duration::from_millis(500));
        // Gone: the end is now (or was before), so the kill is due.
        let gone = Lost { why: String::new(), ends: now };
        assert!(kill_at(&gone, ttl) <= now);
    }

    /// Dropping a lease (a `?`, a panic) stops its keeper, whatever the path.
    #[tokio::test]
    async fn dropping_a_lease_stops_its_keeper() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let task = tokio::spawn(async move {
            let _held = tx;
            std::future::pending::<()>().await;
        });
        let (_lost_tx, lost) = watch::channel(None);
        drop(Lease { id: 1, lost, task });
        let ended = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        assert!(matches!(ended, Ok(None)), "the keeper still runs after its lease was dropped");
    }
}
