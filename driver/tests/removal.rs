//! A removed replica stops serving, says so, and exits (issue B). Node 4 joins a 3-node
//! cluster, serves reads, and is removed with `synod members remove 4`; the command waits for
//! node 4's acknowledgement. Meanwhile every kind of request through node 4 is watched: from
//! the moment it knows, reads (linearizable, sequential, with `min_index`, range, batch) and
//! writes are refused with 410 `removed` (or it is gone); none returns a state without a write
//! made through another replica after the removal. `/readyz` is not ready, `/v1/status` says
//! `removed` with the epoch, and the process exits 0. Started again with `--join`, it comes back
//! as a new member through the normal join path.

mod common;

use common::{poll, Cluster};
use driver::client::HttpClient;
use hyper::Method;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The requests watched on the removed replica: (name, method, path, body).
fn probes() -> Vec<(&'static str, Method, &'static str, &'static str)> {
    vec![
        ("linearizable get", Method::GET, "/v1/kv/after", ""),
        ("sequential get", Method::GET, "/v1/kv/after?consistency=sequential", ""),
        ("sequential get min_index", Method::GET, "/v1/kv/after?consistency=sequential&min_index=1", ""),
        ("sequential range", Method::GET, "/v1/kv?prefix=after&consistency=sequential", ""),
        ("sequential batch get", Method::POST, "/v1/batch/get?consistency=sequential", r#"{"keys":["after"]}"#),
        ("put", Method::PUT, "/v1/kv/from-removed", "x"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_stops_serving_says_so_and_exits() {
    let started = Instant::now();
    let mut c = Cluster::start(3, 2, 20).await;
    c.wait_leader(Duration::from_secs(60)).await;
    c.join(4, &[]);
    let epoch0 = c.wait_acceptors(&[1, 2, 3, 4], &[1, 2, 3, 4], Duration::from_secs(60)).await;
    let r = c.req(1, Method::PUT, "/v1/kv/before", &[], "b").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    poll(Duration::from_secs(20), "node 4 serves the key written before", || async {
        let r = c.req(4, Method::GET, "/v1/kv/before?consistency=sequential", &[], "").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let inc4 = c.status(4).await.unwrap()["incarnation"].as_u64().unwrap();

    // Watch node 4 closely from now on: /readyz, /v1/status, and every kind of request.
    let url4 = c.url(4).to_string();
    let seen: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let statuses: Arc<Mutex<Vec<serde_json::Value>>> = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let watcher = {
        let (seen, statuses, url4) = (seen.clone(), statuses.clone(), url4.clone());
        tokio::spawn(async move {
            let http = HttpClient::new();
            let t = Duration::from_secs(2);
            while !*stop.borrow() {
                if let Ok(r) = http.get(&format!("{url4}/v1/status")).await {
                    statuses.lock().unwrap().push(r.json());
                }
                if let Ok(r) = http.get(&format!("{url4}/readyz")).await {
                    seen.lock().unwrap().push(("readyz".into(), r.status, r.text()));
                }
                for (name, m, path, body) in probes() {
                    let h = [("content-type", "application/json".to_string())];
                    if let Ok(r) = http.request(m, &format!("{url4}{path}"), &h, body, t).await {
                        seen.lock().unwrap().push((name.into(), r.status, r.text()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Remove it with the CLI, which waits for node 4 to acknowledge.
    let bin = env!("CARGO_BIN_EXE_synod");
    let session = c.dir.path().join("session.json");
    let ep = c.url(1).to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["members", "remove", "4", "--endpoints", &ep, "--wait-s", "30"])
            .env("SYNOD_SESSION_FILE", session)
            .output()
            .expect("synod members remove runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "members remove confirmed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("node 4 acknowledged its removal") || stdout.contains("has exited"), "{stdout}");

    // A write through another replica after the removal.
    let epoch1 = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(30)).await;
    assert!(epoch1 > epoch0, "the configuration moved on without node 4");
    let r = c.req(2, Method::PUT, "/v1/kv/after", &[], "a").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());

    // The process exits by itself, cleanly.
    let exit = poll(Duration::from_secs(40), "node 4 exits after its removal", || {
        let n = c.nodes.get_mut(&4).unwrap();
        let e = n.child.try_wait().unwrap();
        async move { e }
    })
    .await;
    stop_tx.send(true).unwrap();
    watcher.await.unwrap();
    assert!(exit.success(), "node 4 exited with status 0: {exit:?}");
    let log = c.log(4);
    assert!(log.contains("removed from the cluster") && log.contains("left the cluster after its removal"), "node 4's log says why it stopped");

    // What node 4 answered while it ran. Once it knew, nothing was served from its state.
    let seen = seen.lock().unwrap().clone();
    let statuses = statuses.lock().unwrap().clone();
    let removed_status = statuses.iter().find(|s| s["role"] == "removed").unwrap_or_else(|| panic!("status said removed: {:?}", statuses.last()));
    assert_eq!(removed_status["serving"], false);
    assert!(removed_status["removed"]["epoch"].as_u64().unwrap() > epoch0, "{removed_status}");
    assert!(removed_status["reason"].as_str().unwrap().contains("removed from the cluster"), "{removed_status}");
    let first_gone = seen.iter().position(|(_, s, _)| *s == 410).expect("node 4 answered 410 Gone");
    let (_, _, body) = &seen[first_gone];
    assert!(body.contains("/problems/removed") && body.contains("epoch"), "{body}");
    for (name, status, body) in &seen[first_gone..] {
        match name.as_str() {
            "readyz" => assert_eq!(*status, 503, "not ready once removed: {body}"),
            // Refused as removed, or shutting down (503) while it drains.
            _ => assert!(
                *status == 410 || (*status == 503 && body.contains("shutting-down")),
                "{name} through the removed node: {status} {body}"
            ),
        }
    }
    for name in probes().iter().map(|p| p.0) {
        assert!(seen[first_gone..].iter().any(|(n, s, _)| n == name && *s == 410), "{name} was refused with 410");
    }
    assert!(seen[first_gone..].iter().any(|(n, s, b)| n == "readyz" && *s == 503 && b.contains("removed")), "/readyz said removed");
    // Before it knew, a read of "after" could only say "not yet written" (404), never a value
    // other than "a" (and that write happened after the removal, through another replica).
    for (name, status, body) in &seen[..first_gone] {
        if name.contains("get") && *status == 200 && name != "sequential batch get" {
            assert_eq!(body, "a", "{name}");
        }
    }

    // Asked to join again, it comes back as a new member through the normal join path.
    c.restart(4);
    poll(Duration::from_secs(60), "node 4 is an acceptor again, as a new incarnation", || async {
        let s = c.status(4).await?;
        (s["incarnation"].as_u64()? != inc4 && s["role"] == "follower" && s["serving"] == true).then_some(())
    })
    .await;
    c.wait_acceptors(&[1, 2, 3, 4], &[1, 2, 3, 4], Duration::from_secs(60)).await;
    let r = c.req(4, Method::GET, "/v1/kv/after?consistency=sequential", &[], "").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "a".to_string()), "the rejoined node serves the current state");
    eprintln!("removal: {} answers watched, first 410 after {first_gone}; {:.1} s", seen.len(), started.elapsed().as_secs_f64());
}
