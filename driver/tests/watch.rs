//! Watches with real processes: a long-poll returns on a write and times out without one; an SSE
//! stream from index 1 delivers every change exactly once, in order, across a `kill -9` of the
//! replica serving it (the client resumes with `Last-Event-ID` on another one); an index older
//! than the history is 410 `compacted`.

mod common;

use common::Cluster;
use driver::watch_client::{self, Opened};
use hyper::Method;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// PUT through any of `ids` until one acknowledges; the store index it applied at. The
/// `Idempotency-Key` makes a retry after a failover apply at most once.
async fn put(c: &Cluster, ids: &[u64], key: &str, value: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let idem = [("idempotency-key", format!("watch-test-{key}-{value}"))];
    for attempt in 0.. {
        let id = ids[attempt % ids.len()];
        let url = format!("{}/v1/kv/{key}", c.url(id));
        if let Ok(r) = c.http.request(Method::PUT, &url, &idem, value.to_string(), Duration::from_secs(3)).await {
            if r.status == 200 || r.status == 201 {
                return r.json()["index"].as_u64().expect("an index");
            }
        }
        assert!(Instant::now() < deadline, "no replica of {ids:?} took the write of {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Follow `/v1/watch/s/?prefix=true&from_index=1` over `endpoints` until index `until` arrived.
async fn follow_until(endpoints: Vec<String>, seen: Arc<Mutex<Vec<(u64, String)>>>, until: Arc<Mutex<u64>>) {
    watch_client::follow(&endpoints, "/v1/watch/s/?prefix=true&from_index=1", None, Duration::from_secs(30), |ev| {
        let data: serde_json::Value = serde_json::from_str(&ev.data).expect("JSON data");
        let index = ev.id.expect("an id");
        seen.lock().unwrap().push((index, data["key"].as_str().unwrap().to_string()));
        index < *until.lock().unwrap()
    })
    .await
    .expect("the stream is followed to the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_streams_across_a_kill_and_compaction() {
    let mut c = Cluster::start_with(3, 2, 100_000, &["--watch-history=40"]).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let f = followers[0];

    // Phase 1: a long-poll on a follower with no write returns after its wait, with the current
    // state (sequential: this replica's applied state).
    let i = put(&c, &[leader], "k", "1").await;
    let started = Instant::now();
    let r = c.req(f, Method::GET, &format!("/v1/kv/k?wait_index={i}&wait=1500ms"), &[], "").await.unwrap();
    let waited = started.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "1"), "{}", r.text());
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(r.index().unwrap() >= i);

    // Phase 2: a long-poll with a long wait returns as soon as the key changes.
    let url = format!("{}/v1/kv/k?wait_index={i}&wait=20s", c.url(f));
    let http = c.http.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let r = http.request(Method::GET, &url, &[], String::new(), Duration::from_secs(30)).await.unwrap();
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = put(&c, &[leader], "k", "2").await;
    let (r, waited) = poll.await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "2"), "{}", r.text());
    assert!(waited < Duration::from_secs(5), "the long-poll returned {waited:?} after it started, not on the write");
    assert!(r.index().unwrap() >= j);
    // A prefix long-poll answers with the keys under the prefix.
    let r = c.req(f, Method::GET, "/v1/kv/k?prefix=true&wait_index=0&wait=1s", &[], "").await.unwrap();
    assert_eq!(r.json()["entries"][0]["value"], "2", "{}", r.text());

    // Phase 3: a stream from index 1, served first by the leader, while 20 writes go in; the
    // leader is killed after 10, and the client resumes on the followers with Last-Event-ID.
    let until = Arc::new(Mutex::new(u64::MAX));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let endpoints: Vec<String> = std::iter::once(leader).chain(followers.iter().copied()).map(|id| c.url(id).to_string()).collect();
    let stream = tokio::spawn(follow_until(endpoints, seen.clone(), until.clone()));
    for n in 0..10 {
        put(&c, &[leader], &format!("s/{n}"), "v").await;
    }
    common::poll(Duration::from_secs(10), "the stream delivered the first writes", || async {
        (seen.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    // The open stream shows in the leader's metrics.
    assert_eq!(c.metric(leader, "synod_watch_streams").await, Some(1));
    assert!(c.metric(leader, "synod_watch_streams_opened_total").await >= Some(1));
    c.kill9(leader);
    let mut last = 0;
    for n in 10..20 {
        last = put(&c, &followers, &format!("s/{n}"), "v").await;
    }
    *until.lock().unwrap() = last;
    // Wake a stream parked on the last index: one more change under the prefix.
    put(&c, &followers, "s/zz", "end").await;
    tokio::time::timeout(Duration::from_secs(30), stream).await.expect("the stream reached the last write").unwrap();
    let got = seen.lock().unwrap().clone();
    let indexes: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "in order, each once: {indexes:?}");
    for n in 0..20 {
        let key = format!("s/{n}");
        assert_eq!(got.iter().filter(|(_, k)| *k == key).count(), 1, "{key} exactly once in {got:?}");
    }

    // The same history, read again from a survivor, is the same list of changes.
    let again = Arc::new(Mutex::new(Vec::new()));
    follow_until(vec![c.url(f).to_string()], again.clone(), until.clone()).await;
    assert_eq!(*again.lock().unwrap(), got.iter().filter(|(i, _)| *i <= last).cloned().collect::<Vec<_>>());

    // The CLI prints the same changes, one line each (`-w simple`: index, kind, key, value).
    let mut cli = std::process::Command::new(common::synod_bin())
        .args(["kv", "watch", "s/", "--prefix", "--from-index", "1", "-w", "simple", "--endpoints", c.url(f)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("synod kv watch starts");
    let out = cli.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out).lines().take(3).map(|l| l.unwrap()).collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), lines).await.expect("three lines from the CLI").unwrap();
    let _ = cli.kill();
    let _ = cli.wait();
    // Every stream on `f` ended with its client: the gauge is back to 0, the counter kept them.
    common::poll(Duration::from_secs(10), "the streams on f closed", || async {
        (c.metric(f, "synod_watch_streams").await == Some(0)).then_some(())
    })
    .await;
    assert!(c.metric(f, "synod_watch_streams_opened_total").await >= Some(2));
    let want: Vec<String> = got[..3].iter().map(|(i, k)| format!("{i}\tput\t{k}\tv")).collect();
    assert_eq!(lines, want);

    // Phase 4: past the history's 40 changes, index 1 is gone: 410 `compacted` with the oldest
    // index still held.
    for n in 0..30 {
        put(&c, &followers, &format!("t/{n}"), "v").await;
    }
    match watch_client::open(c.url(f), "/v1/watch/s/?prefix=true&from_index=1", None).await.unwrap() {
        Opened::Refused(status, body) => {
            assert_eq!(status, 410, "{body}");
            let p: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(p["type"], "/problems/compacted", "{body}");
            assert!(p["oldest_index"].as_u64().unwrap() > 1, "{body}");
        }
        Opened::Stream(_) => panic!("a stream from a compacted index"),
    }
}
