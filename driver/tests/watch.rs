//! Watches with real processes: a long-poll returns on a write and times out without one; an SSE
//! stream from index 1 delivers every change exactly once, in order, across a `kill -9` of the
//! replica serving it (the client resumes with `Last-Event-ID` on another one); an index older
//! than the history is 410 `compacted`. Progress events: a stream on a quiet key announces an
//! index at or past a write to another key, under interleaved writes no progress id passes a
//! change not yet sent, and resuming from a progress id on another replica misses nothing.

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
        if ev.event == "progress" {
            return true;
        }
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

/// The next event of `s` within `limit`; panics on a timeout or the end of the stream.
async fn next_event(s: &mut watch_client::Stream, limit: Duration) -> watch_client::Event {
    tokio::time::timeout(limit, s.next())
        .await
        .expect("an event in time")
        .expect("the stream reads")
        .expect("the stream goes on")
}

/// Open `path` on `base` resuming after `last`; the stream (panics on a refusal).
async fn open_stream(base: &str, path: &str, last: Option<u64>) -> watch_client::Stream {
    match watch_client::open(base, path, last).await.expect("connects") {
        Opened::Stream(s) => s,
        Opened::Refused(status, body) => panic!("{path} refused: {status} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_let_a_quiet_watcher_resume_without_missing_a_change() {
    let c = Cluster::start(3, 2, 100_000).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let (f, g) = (followers[0], followers[1]);
    let path = "/v1/watch/quiet?progress=200ms";

    // Bad intervals are 400 problem+json, on GET and on HEAD.
    for bad in ["abc", "50ms", "11m", "-1s", "1h"] {
        let r = c.req(f, Method::GET, &format!("/v1/watch/quiet?progress={bad}"), &[], "").await.unwrap();
        assert_eq!(r.status, 400, "progress={bad}: {}", r.text());
        assert_eq!(r.json()["type"], "/problems/malformed", "{}", r.text());
        let r = c.req(f, Method::HEAD, &format!("/v1/watch/quiet?progress={bad}"), &[], "").await.unwrap();
        assert_eq!(r.status, 400, "HEAD progress={bad}");
    }
    let r = c.req(f, Method::HEAD, "/v1/watch/quiet?progress=off", &[], "").await.unwrap();
    assert_eq!(r.status, 200);

    // Phase 1: a stream on a key nobody writes, on a follower. A write to another key is
    // followed by a progress event whose id is at or past it, with no change event.
    // (From after that write: the follower may not have applied it yet when the stream opens.)
    let q0 = put(&c, &[leader], "quiet", "0").await;
    let mut s = open_stream(c.url(f), path, Some(q0)).await;
    let other = put(&c, &[leader], "other", "1").await;
    let started = Instant::now();
    let p1 = loop {
        let ev = next_event(&mut s, Duration::from_secs(5)).await;
        assert_eq!(ev.event, "progress", "only progress on a quiet key: {ev:?}");
        let id = ev.id.expect("a progress event has an id");
        let data: serde_json::Value = serde_json::from_str(&ev.data).expect("JSON data");
        assert_eq!(data, serde_json::json!({ "index": id }));
        if id >= other {
            break id;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no progress reached index {other}");
    };
    drop(s);

    // Phase 2: resumed from that progress id on the same follower, with writes to the watched
    // key interleaved with others. Every progress id must have every change to the key up to
    // it sent before it (ground truth: the indexes the writes were acknowledged at).
    let mut s = open_stream(c.url(f), "/v1/watch/quiet?progress=100ms", Some(p1)).await;
    let writer = {
        let (http, url) = (c.http.clone(), c.url(leader).to_string());
        tokio::spawn(async move {
            let mut quiet_writes = Vec::new();
            for n in 0..30 {
                let key = if n % 3 == 0 { "quiet" } else { "other" };
                let r = http
                    .request(Method::PUT, &format!("{url}/v1/kv/{key}"), &[], format!("b{n}"), Duration::from_secs(5))
                    .await
                    .expect("the write answers");
                assert!(r.status == 200 || r.status == 201, "{}", r.text());
                if key == "quiet" {
                    quiet_writes.push((r.json()["index"].as_u64().unwrap(), format!("b{n}")));
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            quiet_writes
        })
    };
    let mut events = Vec::new();
    while events.iter().filter(|e: &&watch_client::Event| e.event == "put").count() < 10 {
        events.push(next_event(&mut s, Duration::from_secs(10)).await);
    }
    let quiet_writes = writer.await.unwrap();
    // A few more progress events after the last write.
    for _ in 0..3 {
        events.push(next_event(&mut s, Duration::from_secs(5)).await);
    }
    drop(s);
    let changes: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e.event == "put")
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            (e.id.unwrap(), data["value"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(changes, quiet_writes, "every change to the key, once, in order");
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("every event has an id")).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids never go down: {events:?}");
    let mut progress_seen = 0;
    for (at, e) in events.iter().enumerate() {
        if e.event != "progress" {
            assert_eq!(e.event, "put", "{e:?}");
            continue;
        }
        progress_seen += 1;
        let p = e.id.unwrap();
        assert!(p >= p1);
        let sent_before: Vec<u64> = events[..at].iter().filter(|e| e.event == "put").map(|e| e.id.unwrap()).collect();
        for (w, _) in quiet_writes.iter().filter(|(w, _)| *w <= p) {
            assert!(sent_before.contains(w), "progress {p} was sent before the change at {w}: {events:?}");
        }
    }
    assert!(progress_seen >= 3, "progress events under load and after it: {events:?}");
    let last_progress = events.iter().rev().find(|e| e.event == "progress").and_then(|e| e.id).unwrap();
    assert!(last_progress >= quiet_writes.last().unwrap().0);

    // Phase 3: resuming from the first progress id on the other follower yields exactly the
    // changes made after it (the first of them first: nothing missed, nothing repeated).
    let mut s = open_stream(c.url(g), path, Some(p1)).await;
    let mut again = Vec::new();
    while again.len() < quiet_writes.len() {
        let ev = next_event(&mut s, Duration::from_secs(10)).await;
        if ev.event == "put" {
            let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap();
            again.push((ev.id.unwrap(), data["value"].as_str().unwrap().to_string()));
        } else {
            assert_eq!(ev.event, "progress", "{ev:?}");
            assert!(ev.id.unwrap() < quiet_writes[again.len()].0, "a progress id past an unsent change: {ev:?}");
        }
    }
    assert_eq!(again, quiet_writes);
    drop(s);

    // And from the last progress id: the next change to the key is the first event after it.
    let mut s = open_stream(c.url(g), path, Some(last_progress)).await;
    let next = put(&c, &[leader], "quiet", "after").await;
    loop {
        let ev = next_event(&mut s, Duration::from_secs(10)).await;
        if ev.event == "progress" {
            assert!(ev.id.unwrap() < next && ev.id.unwrap() >= last_progress, "{ev:?}");
            continue;
        }
        assert_eq!((ev.event.as_str(), ev.id), ("put", Some(next)), "{ev:?}");
        break;
    }

    // The CLI prints progress lines when asked (`-w simple`: INDEX<TAB>progress); `f` has
    // applied `next` first, so its progress is at or past it.
    let r = c.req(f, Method::GET, &format!("/v1/kv/quiet?consistency=sequential&min_index={next}"), &[], "").await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "after"));
    let mut cli = std::process::Command::new(common::synod_bin())
        .args(["kv", "watch", "quiet", "--progress", "200ms", "-w", "simple", "--endpoints", c.url(f)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("synod kv watch starts");
    let out = cli.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(out).lines().next().unwrap().unwrap()
    });
    let line = tokio::time::timeout(Duration::from_secs(10), line).await.expect("a line from the CLI").unwrap();
    let _ = cli.kill();
    let _ = cli.wait();
    let (index, kind) = line.split_once('\t').expect("INDEX<TAB>progress");
    assert_eq!(kind, "progress", "{line}");
    assert!(index.parse::<u64>().unwrap() >= next, "{line}");
}
