//! Locks and elections (`/v1/locks`, `/v1/elections`, `synod lock`, `synod elect`) on real
//! `synod node` processes, in real time:
//!
//! * the REST recipe: a lock is held at once when free (its fence is its key's creation index),
//!   a try (`wait_ms: 0`) of a held lock is 409 `lock-not-acquired` naming the holder and leaves
//!   no waiting key behind, a waiter through a follower gets the lock as soon as the holder
//!   unlocks, with a larger fence; unlock twice is 404; a lease that does not exist is 404
//!   `lease-not-found`; a wait longer than the server's usual deadline ends in 409 after its
//!   `wait_ms`, its waiting key deleted again;
//! * mutual exclusion through the CLI: two `synod lock` loops on one name, each command logging
//!   its entry and exit: the critical sections never overlap and the fences grow in the order
//!   the sections ran;
//! * a holder killed with `kill -9` (the whole `synod lock` process: its keepalives stop) loses
//!   the lock once its lease expires, and the waiting `synod lock` gets it within TTL + 1 s of
//!   the kill (and not before the lease could have expired);
//! * an election: the leader resigns (SIGTERM to `synod elect`), the next campaigner leads, and
//!   `synod elect --listen` printed both values, in order; a key under the election's prefix
//!   written without a lease never leads (`GET`, `observe`);
//! * a REST waiter whose client closes its connection leaves the line at once (its waiting key
//!   deleted), through a follower and through the leader;
//! * a `synod lock` that lost its lease kills a command that ignores SIGTERM before the lease
//!   could end: at once when the lease was revoked, within the TTL of the last acknowledged
//!   keepalive when every replica is stopped (`SIGSTOP`).

mod common;

use common::{poll, synod_bin, Cluster};
use hyper::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Child processes killed (by their handles) when the test ends, however it ends.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Procs {
    fn add(&mut self, c: Child) -> usize {
        self.0.push(c);
        self.0.len() - 1
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn json_body() -> Vec<(&'static str, String)> {
    vec![("content-type", "application/json".to_string())]
}

/// Grant a lease of `ttl_ms` through node `via`; its id.
async fn grant(c: &Cluster, via: u64, ttl_ms: u64) -> u64 {
    let r = c.req(via, Method::POST, "/v1/leases", &json_body(), &json!({ "ttl_ms": ttl_ms }).to_string()).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_u64().expect("an id")
}

fn problem_type(v: &Value) -> &str {
    v["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default()
}

/// The wall clock in ns (what `date +%s%N` prints in the commands).
fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// `synod lock NAME --ttl TTL -- sh -c SCRIPT` against `endpoints`, output to `log`.
fn lock_cmd(endpoints: &str, name: &str, ttl: &str, script: &str, log: &Path) -> Command {
    let mut cmd = Command::new(synod_bin());
    cmd.args(["lock", name, "--ttl", ttl, &format!("--endpoints={endpoints}"), "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
    cmd
}

/// The lines of `file` that start with `word`, split on spaces.
fn lines(file: &Path, word: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(word))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_exclude_fence_and_pass_on_after_a_kill() {
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let mut endpoints: Vec<String> = (1..=3).map(|i| c.url(i).to_string()).collect();
    // Followers first: the CLI's requests are served (and their writes relayed) by a follower.
    endpoints.sort_by_key(|u| *u == c.url(leader));
    let endpoints = endpoints.join(",");
    let dir = c.dir.path().to_path_buf();
    let mut procs = Procs::default();

    // --- The recipe over REST.
    let a = grant(&c, leader, 5_000).await;
    let b = grant(&c, follower, 5_000).await;
    let r = c.req(leader, Method::POST, "/v1/locks/r", &json_body(), &json!({ "lease": a, "wait_ms": 0 }).to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let held = r.json();
    let fence_a = held["fence"].as_u64().unwrap();
    assert_eq!(held["key"], format!("_synod/lock/r/{a:016x}"));
    // The fence is the key's version (its creation index).
    let k = c.req(follower, Method::GET, &format!("/v1/kv/_synod/lock/r/{a:016x}"), &[], "").await.unwrap();
    assert_eq!((k.status, k.header("x-synod-version").map(str::to_string)), (200, Some(fence_a.to_string())));
    assert_eq!(k.header("x-synod-lease"), Some(a.to_string().as_str()));
    // Asking again with the same lease is idempotent: the same key and fence.
    let again = c.req(follower, Method::POST, "/v1/locks/r", &json_body(), &json!({ "lease": a.to_string(), "wait_ms": 0 }).to_string()).await.unwrap();
    assert_eq!((again.status, again.json()["fence"].as_u64()), (200, Some(fence_a)), "{}", again.text());
    // A try with another lease: 409 naming the holder, and no waiting key left behind.
    let r = c.req(follower, Method::POST, "/v1/locks/r", &json_body(), &json!({ "lease": b, "wait_ms": 0 }).to_string()).await.unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    let p = r.json();
    assert_eq!((problem_type(&p), p["holder"]["lease"].as_u64(), p["holder"]["fence"].as_u64()), ("lock-not-acquired", Some(a), Some(fence_a)), "{p}");
    let s = c.req(follower, Method::GET, "/v1/locks/r", &[], "").await.unwrap().json();
    assert_eq!((s["held"].clone(), s["holder"]["lease"].as_u64(), s["waiters"].as_u64()), (json!(true), Some(a), Some(0)), "{s}");
    // A waiter through a follower gets the lock when the holder unlocks, with a larger fence.
    let (http, url) = (c.http.clone(), format!("{}/v1/locks/r", c.url(follower)));
    let waiter = tokio::spawn(async move {
        let r = http.request(Method::POST, &url, &json_body(), json!({ "lease": b, "wait_ms": 20_000 }).to_string(), Duration::from_secs(30)).await.unwrap();
        (r, Instant::now())
    });
    poll(Duration::from_secs(10), "the waiter queues", || async {
        let s = c.req(leader, Method::GET, "/v1/locks/r", &[], "").await.ok()?.json();
        (s["waiters"] == 1).then_some(())
    })
    .await;
    let unlocked = Instant::now();
    let r = c.req(leader, Method::DELETE, &format!("/v1/locks/r?lease={a}"), &[], "").await.unwrap();
    assert_eq!((r.status, r.json()["fence"].as_u64()), (200, Some(fence_a)), "{}", r.text());
    let (r, got) = waiter.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let fence_b = r.json()["fence"].as_u64().unwrap();
    assert!(fence_b > fence_a, "fences grow: {fence_a} then {fence_b}");
    let handover = got.duration_since(unlocked);
    assert!(handover < Duration::from_secs(2), "the waiter got the lock {handover:?} after the unlock");
    eprintln!("REST: unlock -> waiter holds in {handover:?}");
    let r = c.req(follower, Method::DELETE, &format!("/v1/locks/r?lease={a}"), &[], "").await.unwrap();
    assert_eq!((r.status, problem_type(&r.json()).to_string()), (404, "not-found".to_string()), "{}", r.text());
    let r = c.req(follower, Method::POST, "/v1/locks/r", &json_body(), &json!({ "lease": 999_999_999u64 }).to_string()).await.unwrap();
    assert_eq!((r.status, problem_type(&r.json()).to_string()), (404, "lease-not-found".to_string()), "{}", r.text());
    let r = c.req(follower, Method::POST, "/v1/locks/a%2Fb", &json_body(), &json!({ "lease": b }).to_string()).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Revoking the holder's lease frees the lock.
    assert_eq!(c.req(leader, Method::DELETE, &format!("/v1/leases/{b}"), &[], "").await.unwrap().status, 200);
    let s = c.req(follower, Method::GET, "/v1/locks/r", &[], "").await.unwrap().json();
    assert_eq!((s["held"].clone(), s["holder"].clone()), (json!(false), Value::Null), "{s}");
    let _ = c.req(leader, Method::DELETE, &format!("/v1/leases/{a}"), &[], "").await;

    // A wait longer than the server's deadline for other requests (write + read timeouts + 5 s
    // = 11 s here) ends in 409 after its wait_ms, not in a 504, and leaves no key behind. It
    // runs in the background while the CLI parts go on.
    let (holder_lease, waiter_lease) = (grant(&c, leader, 30_000).await, grant(&c, leader, 30_000).await);
    let r = c.req(leader, Method::POST, "/v1/locks/w", &json_body(), &json!({ "lease": holder_lease }).to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let (http, url) = (c.http.clone(), format!("{}/v1/locks/w", c.url(follower)));
    let long_wait = tokio::spawn(async move {
        let started = Instant::now();
        let r = http.request(Method::POST, &url, &json_body(), json!({ "lease": waiter_lease, "wait_ms": 12_500 }).to_string(), Duration::from_secs(30)).await.unwrap();
        (r, started.elapsed())
    });

    // --- Mutual exclusion through the CLI: two loops of `synod lock` on one name.
    let sections = dir.join("sections.log");
    let script = format!(
        "echo \"enter $(date +%s%N) $SYNOD_LOCK_FENCE\" >> {f}; sleep 0.3; echo \"exit $(date +%s%N) $SYNOD_LOCK_FENCE\" >> {f}",
        f = sections.display()
    );
    let started = Instant::now();
    let loops: Vec<_> = (0..2)
        .map(|w| {
            let mut cmd = lock_cmd(&endpoints, "m", "2s", &script, &dir.join(format!("locker-{w}.log")));
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let st = cmd.status().expect("synod lock runs");
                    assert!(st.success(), "synod lock exited {st:?}");
                }
            })
        })
        .collect();
    for l in loops {
        l.join().expect("a lock loop succeeded (see locker-*.log)");
    }
    let enters = lines(&sections, "enter");
    let exits = lines(&sections, "exit");
    assert_eq!((enters.len(), exits.len()), (6, 6), "{}", std::fs::read_to_string(&sections).unwrap_or_default());
    let mut spans: Vec<(u128, u128, u64)> = enters
        .iter()
        .map(|e| {
            let fence: u64 = e[2].parse().unwrap();
            let exit = exits.iter().find(|x| x[2] == e[2]).expect("every section exits");
            (e[1].parse().unwrap(), exit[1].parse().unwrap(), fence)
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 < w[1].0, "critical sections overlap: {:?} and {:?}", w[0], w[1]);
        assert!(w[0].2 < w[1].2, "fences do not grow with the sections: {:?} then {:?}", w[0], w[1]);
    }
    eprintln!("CLI: 6 critical sections in {:?}, none overlapping, fences {:?}", started.elapsed(), spans.iter().map(|s| s.2).collect::<Vec<_>>());

    // --- A holder killed with kill -9 loses the lock within TTL + 1 s.
    let ttl = Duration::from_secs(2);
    let handoff = dir.join("handoff.log");
    let holder_script = format!("echo \"enter $(date +%s%N) $SYNOD_LOCK_FENCE $$\" >> {f}; exec sleep 30", f = handoff.display());
    let holder = procs.add(lock_cmd(&endpoints, "k", "2s", &holder_script, &dir.join("holder.log")).spawn().unwrap());
    let first = poll(Duration::from_secs(15), "the first locker holds k", || async { lines(&handoff, "enter").first().cloned() }).await;
    let (fence_1, sleeper) = (first[2].parse::<u64>().unwrap(), first[3].clone());
    let next_script = format!("echo \"enter $(date +%s%N) $SYNOD_LOCK_FENCE\" >> {f}", f = handoff.display());
    let next = procs.add(lock_cmd(&endpoints, "k", "2s", &next_script, &dir.join("next.log")).spawn().unwrap());
    poll(Duration::from_secs(10), "the second locker waits for k", || async {
        let s = c.req(follower, Method::GET, "/v1/locks/k", &[], "").await.ok()?.json();
        (s["waiters"] == 1).then_some(())
    })
    .await;
    // Let the holder renew a few times first: the lock lives on past its TTL while renewed.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(lines(&handoff, "enter").len(), 1, "the second locker got k while the first one held it");
    let killed_at = now_ns();
    procs.0[holder].kill().expect("SIGKILL");
    let st = procs.0[holder].wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(st.signal(), Some(9), "synod lock was killed by SIGKILL: {st:?}");
    // Its command (orphaned, still running `sleep`) is stopped by its pid.
    let _ = Command::new("kill").args(["-9", &sleeper]).status();
    let second = poll(ttl + Duration::from_secs(5), "the second locker holds k", || async { lines(&handoff, "enter").get(1).cloned() }).await;
    let handover = Duration::from_nanos((second[1].parse::<u128>().unwrap() - killed_at) as u64);
    let fence_2: u64 = second[2].parse().unwrap();
    eprintln!("kill -9 of the holder -> the waiter holds k after {handover:?} (TTL {ttl:?}); fences {fence_1} -> {fence_2}");
    assert!(handover <= ttl + Duration::from_secs(1), "the lock passed on {handover:?} after the kill, more than TTL + 1 s");
    // The lease was renewed at most a third of the TTL before the kill, so it lived at least
    // two thirds of the TTL after it.
    assert!(handover >= ttl * 2 / 3 - Duration::from_millis(100), "the lock passed on only {handover:?} after the kill: before the lease could expire");
    assert!(fence_2 > fence_1);
    let st = procs.0[next].wait().unwrap();
    assert!(st.success(), "the second synod lock exits with its command's status: {st:?}");
    // It unlocked and revoked on the way out: the lock is free.
    let s = c.req(follower, Method::GET, "/v1/locks/k", &[], "").await.unwrap().json();
    assert_eq!(s["held"], json!(false), "{s}");

    let (r, waited) = long_wait.await.unwrap();
    assert_eq!((r.status, problem_type(&r.json()).to_string()), (409, "lock-not-acquired".to_string()), "after {waited:?}: {}", r.text());
    assert!(waited >= Duration::from_millis(12_500) && waited < Duration::from_secs(15), "the long wait took {waited:?}");
    assert_eq!(r.json()["holder"]["lease"].as_u64(), Some(holder_lease));
    let s = c.req(follower, Method::GET, "/v1/locks/w", &[], "").await.unwrap().json();
    assert_eq!((s["holder"]["lease"].as_u64(), s["waiters"].as_u64()), (Some(holder_lease), Some(0)), "the waiting key was deleted again: {s}");
}

/// Read `file` as text (empty if absent).
fn text(file: &PathBuf) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

/// Send `sig` to a child by its pid.
fn signal(c: &Child, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_passes_on_when_the_leader_resigns() {
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let endpoints = format!("--endpoints={},{}", c.url(follower), c.url(leader));
    let dir = c.dir.path().to_path_buf();
    let mut procs = Procs::default();
    let out = |name: &str| dir.join(name);
    let spawn = |args: &[&str], name: &str| {
        Command::new(synod_bin())
            .args(args)
            .arg(&endpoints)
            .stdout(std::fs::File::create(out(&format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(out(&format!("{name}.err"))).unwrap())
            .spawn()
            .expect("synod elect starts")
    };

    let r = c.req(follower, Method::GET, "/v1/elections/e", &[], "").await.unwrap();
    assert_eq!((r.status, problem_type(&r.json()).to_string()), (404, "not-found".to_string()), "{}", r.text());
    // A key under the prefix written without a lease is no candidate (nothing would ever end
    // it): nobody leads, and the observer never shows it.
    let r = c.req(leader, Method::PUT, "/v1/kv/_synod/elect/e/stray", &[], "stray").await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let r = c.req(follower, Method::GET, "/v1/elections/e", &[], "").await.unwrap();
    assert_eq!(r.status, 404, "an unleased key leads: {}", r.text());
    let observer = procs.add(spawn(&["elect", "e", "--listen"], "observer"));
    let alpha = procs.add(spawn(&["elect", "e", "alpha", "--ttl", "3s"], "alpha"));
    poll(Duration::from_secs(15), "alpha is elected", || async { text(&out("alpha.out")).contains("elected: e = alpha").then_some(()) }).await;
    let beta = procs.add(spawn(&["elect", "e", "beta", "--ttl", "3s"], "beta"));
    poll(Duration::from_secs(10), "beta campaigns", || async {
        let r = c.req(follower, Method::GET, "/v1/kv?prefix=_synod/elect/e/", &[], "").await.ok()?.json();
        (r["entries"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let l = c.req(follower, Method::GET, "/v1/elections/e", &[], "").await.unwrap().json();
    assert_eq!(l["value"], "alpha", "{l}");
    let fence_alpha = l["fence"].as_u64().unwrap();
    // The same lease campaigning with another value is refused: there is no proclaim.
    let alpha_lease = l["lease"].as_u64().unwrap();
    let r = c
        .req(leader, Method::POST, "/v1/elections/e/campaign", &json_body(), &json!({ "lease": alpha_lease, "value": "gamma", "wait_ms": 0 }).to_string())
        .await
        .unwrap();
    assert_eq!((r.status, problem_type(&r.json()).to_string()), (409, "campaign-conflict".to_string()), "{}", r.text());
    assert!(!text(&out("beta.out")).contains("elected"), "beta leads while alpha does");

    // alpha resigns: beta leads, and the observer saw both.
    let resigned = Instant::now();
    signal(&procs.0[alpha], "TERM");
    let st = procs.0[alpha].wait().unwrap();
    assert!(st.success(), "alpha exits 0 after resigning: {st:?} {}", text(&out("alpha.err")));
    poll(Duration::from_secs(10), "beta is elected", || async { text(&out("beta.out")).contains("elected: e = beta").then_some(()) }).await;
    eprintln!("resign -> next leader in {:?}", resigned.elapsed());
    let l = c.req(follower, Method::GET, "/v1/elections/e", &[], "").await.unwrap().json();
    assert_eq!(l["value"], "beta", "{l}");
    assert!(l["fence"].as_u64().unwrap() > fence_alpha, "{l}");
    poll(Duration::from_secs(10), "the observer printed alpha then beta", || async {
        (text(&out("observer.out")).lines().collect::<Vec<_>>() == ["alpha", "beta"]).then_some(())
    })
    .await;

    // beta resigns too: nobody leads, the observer says so.
    signal(&procs.0[beta], "INT");
    assert!(procs.0[beta].wait().unwrap().success());
    poll(Duration::from_secs(10), "no leader", || async {
        let r = c.req(follower, Method::GET, "/v1/elections/e", &[], "").await.ok()?;
        (r.status == 404).then_some(())
    })
    .await;
    poll(Duration::from_secs(10), "the observer saw the vacancy", || async { text(&out("observer.err")).contains("(no leader)").then_some(()) }).await;
    assert_eq!(text(&out("observer.out")).lines().collect::<Vec<_>>(), ["alpha", "beta"]);
    signal(&procs.0[observer], "INT");
    assert!(procs.0[observer].wait().unwrap().success());
}

/// A waiter whose client goes away (its HTTP connection closed while it waits) leaves the line
/// at once: its waiting key is deleted, so it never "holds" the lock for nobody. Before, the key
/// stayed until its lease ended (found by review). Through a follower and through the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_client_disconnects_leaves_the_line() {
    use tokio::io::AsyncWriteExt as _;
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let holder = grant(&c, leader, 60_000).await;
    let waiter = grant(&c, leader, 60_000).await;
    let r = c.req(leader, Method::POST, "/v1/locks/d", &json_body(), &json!({ "lease": holder, "wait_ms": 0 }).to_string()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let waiting_key = format!("/v1/kv/_synod/lock/d/{waiter:016x}");
    for via in [follower, leader] {
        // A raw HTTP/1.1 request, so closing the connection is all that happens.
        let addr = c.url(via).trim_start_matches("http://").to_string();
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let body = json!({ "lease": waiter, "wait_ms": 60_000 }).to_string();
        let req = format!("POST /v1/locks/d HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        conn.write_all(req.as_bytes()).await.unwrap();
        poll(Duration::from_secs(10), "the waiter queues", || async {
            let s = c.req(leader, Method::GET, "/v1/locks/d", &[], "").await.ok()?.json();
            (s["waiters"] == 1).then_some(())
        })
        .await;
        let closed = Instant::now();
        drop(conn);
        poll(Duration::from_secs(5), "the waiting key of the gone client is deleted", || async {
            let k = c.req(leader, Method::GET, &waiting_key, &[], "").await.ok()?;
            let s = c.req(leader, Method::GET, "/v1/locks/d", &[], "").await.ok()?.json();
            (k.status == 404 && s["waiters"] == 0).then_some(())
        })
        .await;
        eprintln!("via node {via}: the waiting key was deleted {:?} after the client closed its connection", closed.elapsed());
        // The holder is untouched, and so is the waiter's lease (only its key went).
        let s = c.req(follower, Method::GET, "/v1/locks/d", &[], "").await.unwrap().json();
        assert_eq!(s["holder"]["lease"].as_u64(), Some(holder), "{s}");
        assert_eq!(c.req(leader, Method::GET, &format!("/v1/leases/{waiter}"), &[], "").await.unwrap().status, 200);
    }
}

/// Whether process `pid` is gone (no such process, or a zombie: dead, not yet reaped).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Wait up to `within` for a child to exit; its status.
async fn exited(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "the process did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `synod lock` whose lease is lost stops a command that ignores SIGTERM before the lock could
/// pass on: SIGKILL at once when the lease is known gone (revoked), and before the lease's
/// earliest end (the TTL after sending the last acknowledged keepalive) when no keepalive is
/// acknowledged (every replica stopped). Before, it waited a fixed 10 s after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_kills_a_command_that_ignores_sigterm_before_the_lease_could_end() {
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let endpoints = (1..=3).map(|i| c.url(i).to_string()).collect::<Vec<_>>().join(",");
    let dir = c.dir.path().to_path_buf();
    let mut procs = Procs::default();
    let ttl = Duration::from_secs(2);
    let pids = dir.join("pids.log");
    let script = |name: &str| format!("trap '' TERM; echo \"pid {name} $$\" >> {f}; while :; do sleep 0.05; done", f = pids.display());
    let pid_of = |name: &'static str| {
        let pids = pids.clone();
        async move {
            poll(Duration::from_secs(15), &format!("the command of lock {name} runs"), || async {
                lines(&pids, "pid").into_iter().find(|l| l[1] == name).map(|l| l[2].clone())
            })
            .await
        }
    };

    // (a) The lease revoked: the keepalive finds it gone within a third of the TTL; the lock may
    // have passed on already, so the command is killed at once.
    let a = procs.add(lock_cmd(&endpoints, "g", "2s", &script("g"), &dir.join("a.log")).spawn().unwrap());
    let pid = pid_of("g").await;
    let s = c.req(leader, Method::GET, "/v1/locks/g", &[], "").await.unwrap().json();
    let lease = s["holder"]["lease"].as_u64().expect("a holder");
    let revoked = Instant::now();
    assert_eq!(c.req(leader, Method::DELETE, &format!("/v1/leases/{lease}"), &[], "").await.unwrap().status, 200);
    poll(ttl, "the command is killed after its lease was revoked", || async { dead(&pid).then_some(()) }).await;
    eprintln!("revoked -> command dead in {:?}", revoked.elapsed());
    let st = exited(&mut procs.0[a], Duration::from_secs(15)).await;
    assert_eq!(st.code(), Some(2), "synod lock exits 2 when it lost the lock: {}", std::fs::read_to_string(dir.join("a.log")).unwrap_or_default());

    // (b) No keepalive acknowledged: every replica stopped. The lease lives at least until the
    // TTL after the sending of the last acknowledged keepalive, which was before the stop: the
    // command must be dead by the stop + TTL.
    let b = procs.add(lock_cmd(&endpoints, "h", "2s", &script("h"), &dir.join("b.log")).spawn().unwrap());
    let pid = pid_of("h").await;
    // A few renewals first; stopped between two of them (they go every third of the TTL).
    tokio::time::sleep(ttl + ttl / 6).await;
    assert!(!dead(&pid), "the command runs while its lease is renewed");
    let stopped = Instant::now();
    for id in 1..=3 {
        c.signal(id, "STOP");
    }
    let killed = poll(ttl + Duration::from_secs(15), "the command is killed after the keepalives stopped", || async { dead(&pid).then(|| stopped.elapsed()) }).await;
    for id in 1..=3 {
        c.signal(id, "CONT");
    }
    eprintln!("every replica stopped -> command dead in {killed:?} (TTL {ttl:?})");
    assert!(killed <= ttl, "the command was still running {killed:?} after the keepalives stopped: past the lease's earliest end (TTL {ttl:?})");
    // Renewed every third of the TTL: the last acknowledged keepalive was sent at most that
    // long before the stop, and SIGTERM comes no sooner than 0.9 TTL after it.
    assert!(killed >= ttl / 2, "the command was killed {killed:?} after the stop: before the lease was in doubt");
    let st = exited(&mut procs.0[b], Duration::from_secs(30)).await;
    assert_eq!(st.code(), Some(2), "{}", std::fs::read_to_string(dir.join("b.log")).unwrap_or_default());
    let log = std::fs::read_to_string(dir.join("b.log")).unwrap_or_default();
    assert!(log.contains("SIGKILL"), "{log}");
    c.wait_leader(Duration::from_secs(60)).await;
}
