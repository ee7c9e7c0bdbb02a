//! Reads and catch-up (issue A): a replica that has not caught up answers no read from its own
//! state. A kill -9'd replica restarted with its own command line comes back empty; under read
//! load it must never answer from that empty (or any older) state: no read through it returns
//! an index older than one it served before the kill, and no read anywhere says that a key
//! written before the kill does not exist. A follower that falls far behind (SIGSTOP) stops
//! serving until it is within the bound again, and every read it serves says how far behind it is.

mod common;

use common::{poll, spawn_load, Cluster};
use driver::client::HttpClient;
use hyper::Method;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One read reply as a reader saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)] // every field shows in failure messages
struct Obs {
    /// The replica the request was sent to.
    via: u64,
    /// 0: before the fault, 1: during/after it.
    phase: u8,
    key: String,
    status: u16,
    index: Option<u64>,
    served_by: Option<u64>,
    lag: Option<u64>,
    last_contact: Option<u64>,
    slug: String,
}

fn slug(body: &serde_json::Value) -> String {
    body["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string()
}

/// Sequential reads (no `min_index`) of `keys` through `url` until `stop`, recorded in `out`.
fn spawn_reader(
    via: u64,
    url: String,
    keys: Vec<String>,
    phase: Arc<AtomicU8>,
    stop: tokio::sync::watch::Receiver<bool>,
    out: Arc<Mutex<Vec<Obs>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = HttpClient::new();
        let mut i = 0usize;
        while !*stop.borrow() {
            let key = keys[i % keys.len()].clone();
            i += 1;
            let p = phase.load(Ordering::SeqCst);
            let u = format!("{url}/v1/kv/{key}?consistency=sequential");
            if let Ok(r) = http.request(Method::GET, &u, &[], "", Duration::from_secs(3)).await {
                let num = |h: &str| r.header(h).and_then(|v| v.parse::<u64>().ok());
                let o = Obs {
                    via,
                    phase: p,
                    key,
                    status: r.status,
                    index: r.index(),
                    served_by: num("x-synod-served-by"),
                    lag: num("x-synod-lag"),
                    last_contact: num("x-synod-last-contact"),
                    slug: slug(&r.json()),
                };
                out.lock().unwrap().push(o);
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_serves_no_read_before_it_has_caught_up() {
    let started = Instant::now();
    let mut c = Cluster::start(3, 2, 20).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;

    // Phase 1: keys written (and acknowledged) before the fault.
    let keys: Vec<String> = (0..30).map(|i| format!("bank-{i}")).collect();
    for k in &keys {
        let r = c.req(leader, Method::PUT, &format!("/v1/kv/{k}"), &[("idempotency-key", format!("w-{k}"))], "100").await.unwrap();
        assert!(r.status == 200 || r.status == 201, "{}", r.text());
    }
    // Every replica is ready (caught up) and serves them.
    for id in 1..=3 {
        poll(Duration::from_secs(20), &format!("node {id} ready"), || async {
            (c.req(id, Method::GET, "/readyz", &[], "").await.ok()?.status == 200).then_some(())
        })
        .await;
    }

    // Phase 2: read load through every replica (the victim most), and a write load through the
    // two that stay up, so the log moves on while the victim is down.
    let phase = Arc::new(AtomicU8::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for id in [victim, victim, 1, 2, 3] {
        readers.push(spawn_reader(id, c.url(id).to_string(), keys.clone(), phase.clone(), stop.clone(), seen.clone()));
    }
    let load = spawn_load((1..=3).filter(|i| *i != victim).map(|i| c.url(i).to_string()).collect(), stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let old_inc = c.status(victim).await.unwrap()["incarnation"].as_u64().unwrap();

    // Phase 3: kill -9 the victim, let the log move on, restart it with its own command line.
    c.crash(victim);
    phase.store(1, Ordering::SeqCst);
    let before_max = seen.lock().unwrap().iter().filter(|o| o.phase == 0 && o.served_by == Some(victim)).filter_map(|o| o.index).max();
    let before_max = before_max.expect("the victim served reads before the kill");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.restart(victim);

    // Watch the restarted process: /readyz and /v1/status until it serves again.
    let http = HttpClient::new();
    let url = c.url(victim).to_string();
    let mut not_ready = Vec::new();
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the restarted victim is not ready again after 60 s: {reasons:?}");
        if let (Ok(s), Ok(r)) = (http.get(&format!("{url}/v1/status")).await, http.get(&format!("{url}/readyz")).await) {
            let s = s.json();
            if s["serving"] == false {
                reasons.push(s["reason"].as_str().unwrap_or_default().to_string());
            }
            if r.status != 200 {
                not_ready.push(r.text());
            } else if s["serving"] == true {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let epoch = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 4: quiet; then the checks.
    stop_tx.send(true).unwrap();
    for r in readers {
        r.await.unwrap();
    }
    let report = load.await.unwrap();
    let seen = seen.lock().unwrap().clone();

    // The fault happened: a new incarnation that installed a snapshot and is an acceptor again.
    let s = c.status(victim).await.unwrap();
    assert_ne!(s["incarnation"].as_u64().unwrap(), old_inc, "a new incarnation: {s}");
    assert!(s["snapshots_installed"].as_u64().unwrap() >= 1, "it caught up from a snapshot: {s}");
    assert!(s["catch_up_target_slot"].as_u64().unwrap() > 0, "its catch-up target was a real commit point: {s}");
    assert!(
        reasons.iter().any(|r| r.starts_with("catching up")) && not_ready.iter().any(|r| r.contains("catching up")),
        "the restarted replica said it was catching up and was not ready meanwhile: {reasons:?} {not_ready:?}"
    );

    // No read anywhere said that a key written before the kill does not exist.
    let missing: Vec<&Obs> = seen.iter().filter(|o| o.status == 404).collect();
    assert!(missing.is_empty(), "reads reported existing keys missing: {:?}", &missing[..missing.len().min(5)]);
    let odd: Vec<&Obs> = seen.iter().filter(|o| o.status != 200 && o.status != 503).collect();
    assert!(odd.is_empty(), "unexpected answers: {:?}", &odd[..odd.len().min(5)]);
    // No read through the victim after the restart reflects a state older than one it served
    // before the kill (the new incarnation's own reads, and those it forwarded while catching up).
    let after: Vec<&Obs> = seen.iter().filter(|o| o.via == victim && o.phase == 1).collect();
    let older: Vec<&&Obs> = after.iter().filter(|o| o.status == 200 && o.index.is_none_or(|i| i < before_max)).collect();
    assert!(older.is_empty(), "reads through the victim went back before index {before_max}: {:?}", &older[..older.len().min(5)]);
    // While it caught up, its reads were forwarded to the leader or refused with the reason.
    let elsewhere = after.iter().filter(|o| o.status == 200 && o.served_by.is_some_and(|b| b != victim)).count();
    let refused = after.iter().filter(|o| o.status == 503 && o.slug == "catching-up").count();
    let own = after.iter().filter(|o| o.status == 200 && o.served_by == Some(victim)).count();
    assert!(elsewhere + refused > 0, "some reads arrived while it caught up: {} after the restart", after.len());
    assert!(own > 0, "it served reads itself once caught up");
    // Every read reply says how far behind its replica was.
    assert!(seen.iter().filter(|o| o.status == 200).all(|o| o.lag.is_some() && o.served_by.is_some()), "lag headers on every read");

    // Nothing acknowledged was lost, nothing applied twice, the same state everywhere.
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    for id in 1..=3 {
        c.check_load(id, &report).await;
    }
    eprintln!(
        "victim {victim}: epoch {epoch}, {} reads through it after the restart ({elsewhere} forwarded, {refused} refused 503, {own} served itself), \
         highest index served before the kill {before_max}; reasons seen: {:?}; {:.1} s",
        after.len(),
        reasons.first(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_stops_serving_until_it_catches_up() {
    let started = Instant::now();
    let bound = 10u64;
    // A long lease, so that the stopped follower is not taken for dead by the election.
    let c = Cluster::start_with(
        3,
        10,
        20,
        &["--max-retained-slots=30", &format!("--max-read-lag-slots={bound}"), "--max-read-staleness-ms=1000"],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let lagger = (1..=3).find(|i| *i != leader).unwrap();
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;
    let r = c.req(leader, Method::PUT, "/v1/kv/k", &[], "0").await.unwrap();
    assert!(r.status == 201 || r.status == 200);
    poll(Duration::from_secs(20), "the lagger serves k", || async {
        let r = c.req(lagger, Method::GET, "/v1/kv/k?consistency=sequential", &[], "").await.ok()?;
        (r.status == 200 && r.header("x-synod-served-by") == Some(&lagger.to_string())).then_some(())
    })
    .await;
    let installed0 = c.metric(lagger, "synod_snapshots_installed_total").await.unwrap_or(0);

    // Pause the follower and write until the leader gives up on its stalled stream, then well
    // past the retained window, so it needs a snapshot (as in snapshot.rs; 2 KB values fill its
    // HTTP/2 window quickly).
    c.signal(lagger, "STOP");
    let failures0 = c.metric(leader, "synod_peer_send_failures_total").await.unwrap_or(0);
    let mut last_index = 0;
    let mut i = 0u64;
    let mut extra = 0;
    while extra < 60 {
        i += 1;
        // Distinct keys, so the snapshot it will need is a few hundred KB (its transfer keeps
        // the lagging window open long enough for the readers to run into it).
        let r = c.req(leader, Method::PUT, &format!("/v1/kv/big-{i}"), &[], &format!("{i}-{}", "x".repeat(2000))).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
        last_index = r.index().unwrap();
        if extra > 0 || c.metric(leader, "synod_peer_send_failures_total").await.unwrap_or(0) > failures0 {
            extra += 1;
        }
        assert!(i < 3000, "the leader never noticed the frozen follower");
    }

    // Read through it from the moment it resumes.
    let phase = Arc::new(AtomicU8::new(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let readers: Vec<_> =
        (0..4).map(|_| spawn_reader(lagger, c.url(lagger).to_string(), vec!["k".into()], phase.clone(), stop.clone(), seen.clone())).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.signal(lagger, "CONT");
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the lagger did not catch up in 60 s: {reasons:?}");
        if let Some(s) = c.status(lagger).await {
            if s["serving"] == false {
                reasons.push(s["reason"].as_str().unwrap_or_default().to_string());
            } else if s["index"].as_u64().unwrap_or(0) >= last_index {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    for r in readers {
        r.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();

    // It fell behind for real: it installed a snapshot.
    let installed = c.metric(lagger, "synod_snapshots_installed_total").await.unwrap_or(0);
    assert!(installed > installed0, "the lagger installed a snapshot ({installed0} -> {installed})");
    assert!(c.metric(lagger, "synod_reads_not_served_total").await.unwrap_or(0) > 0, "it refused reads from its own state");
    // Every read it answered itself was within the bounds and said so.
    let own: Vec<&Obs> = seen.iter().filter(|o| o.status == 200 && o.served_by == Some(lagger)).collect();
    assert!(!own.is_empty(), "it served reads again");
    for o in &own {
        assert!(o.lag.is_some_and(|l| l <= bound), "served beyond the lag bound: {o:?}");
        assert!(o.last_contact.is_some_and(|l| l <= 1000), "served beyond the staleness bound: {o:?}");
    }
    // The others were forwarded to the leader (fresh) or refused with the reason.
    let other: Vec<&Obs> = seen.iter().filter(|o| !(o.status == 200 && o.served_by == Some(lagger))).collect();
    assert!(
        other.iter().all(|o| (o.status == 200 && o.served_by == Some(leader as u64)) || (o.status == 503 && ["lagging", "catching-up", "forward-failed"].contains(&o.slug.as_str()))),
        "{other:?}"
    );
    // The window in which it refuses is short (the snapshot follows within tens of ms), so the
    // status poller may miss it; then the refused or forwarded reads show it.
    assert!(
        reasons.iter().any(|r| r.starts_with("lagging") || r.starts_with("stale")) || !other.is_empty(),
        "its status said it was behind, or reads through it were refused or forwarded: {reasons:?}"
    );
    eprintln!(
        "lagger {lagger}: {} reads ({} served itself, {} forwarded or refused); reasons {:?}; {:.1} s",
        seen.len(),
        own.len(),
        other.len(),
        reasons.iter().collect::<std::collections::BTreeSet<_>>(),
        started.elapsed().as_secs_f64()
    );
}
