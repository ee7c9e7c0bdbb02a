//! Durable mode with real processes: every acknowledged write survives kill -9 of every replica
//! at once; a replica whose write-ahead log is corrupt is refused its identity and comes back as
//! a new incarnation.

mod common;

use common::*;
use hyper::Method;
use std::time::Duration;

/// A cluster of `n` founders, each with its own `--data-dir` under the cluster's temp dir.
async fn durable_cluster(n: u64) -> Cluster {
    let mut c = Cluster::start_with(0, 2, 40, &[]).await;
    let founders = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    c.common.retain(|a| !a.starts_with("--bootstrap="));
    c.common.push(format!("--bootstrap={founders}"));
    for id in 1..=n {
        let dir = c.dir.path().join(format!("data-{id}"));
        c.launch(id, &[&format!("--data-dir={}", dir.display())]);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill9_of_every_replica() {
    let mut c = durable_cluster(3).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;

    // Phase 1: a write load through every replica until a few hundred writes are applied.
    let urls: Vec<String> = (1..=3).map(|i| c.url(i).to_string()).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = spawn_load(urls, stop_rx);
    poll(Duration::from_secs(60), "300 writes applied", || async {
        let st = c.status(leader).await?;
        (st["index"].as_u64()? >= 300).then_some(())
    })
    .await;

    // Phase 2: a power cut: kill -9 of every replica at once, in the middle of the load.
    for id in 1..=3 {
        c.crash(id);
    }
    // Phase 3: the same command lines again. The load keeps retrying what was in flight.
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_leader(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    let report = load.await.unwrap();
    assert!(report.acked.len() >= 100, "too few writes acknowledged to show anything: {}", report.acked.len());

    // Every replica restarted durably (same identity), none was refused its data...
    for id in 1..=3 {
        let restarts = poll(Duration::from_secs(10), "the durable-restart metric", || c.metric(id, "synod_durable_restarts_total")).await;
        assert_eq!(restarts, 1, "node {id} did not restart from its data directory:\n{}", c.log(id));
        assert_eq!(c.metric(id, "synod_data_dirs_refused_total").await, Some(0), "node {id}");
        assert!(c.metric(id, "synod_wal_fsyncs_total").await.unwrap_or(0) > 0, "node {id} never fsynced");
    }
    // ...and every acknowledged write is there, on every replica, exactly once.
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
    for id in 1..=3 {
        c.check_load(id, &report).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_write_ahead_log_refuses_the_identity_and_the_replica_rejoins() {
    let mut c = durable_cluster(3).await;
    c.wait_leader(Duration::from_secs(30)).await;
    for i in 0..50 {
        let r = c.req(1, Method::PUT, &format!("/v1/kv/k{i}"), &[], &format!("v{i}")).await.unwrap();
        assert!(r.status == 200 || r.status == 201, "{} {}", r.status, r.text());
    }
    // Node 3 dies; a byte in the first record of its oldest WAL segment rots (a later valid
    // batch vouches that it had been synced: corruption, not a torn tail).
    c.crash(3);
    let wal = c.dir.path().join("data-3").join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[32 + 24] ^= 0xff;
    std::fs::write(&segs[0], &bytes).unwrap();
    c.restart(3);

    // It sets its data aside, comes back as a new incarnation, and catches up.
    let refused = poll(Duration::from_secs(30), "node 3 reports its refused data directory", || c.metric(3, "synod_data_dirs_refused_total")).await;
    assert_eq!(refused, 1, "{}", c.log(3));
    assert!(std::fs::read_dir(c.dir.path().join("data-3")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("refused-")));
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(60)).await;
    let r = c.req(3, Method::GET, "/v1/kv/k49?consistency=sequential", &[], "").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "v49".to_string()));
}
