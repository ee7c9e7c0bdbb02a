//! A replica that falls too far behind catches up from a snapshot streamed over gRPC.

mod common;

use common::{poll, Cluster};
use hyper::Method;
use std::time::Duration;

fn value(i: usize) -> String {
    // 2 KB values, so the frozen follower's stream fills its HTTP/2 window after a few dozen
    // writes and the leader sees the stall.
    format!("v{i}-{}", "x".repeat(2000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_installs_a_snapshot() {
    // Small numbers: snapshot every 10 slots, and stop waiting for a member 30 slots behind.
    // The lease is long so that a stopped follower is not taken for dead by the election.
    let c = Cluster::start_with(3, 10, 10, &["--max-retained-slots=30"]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let lagger = (1..=3).find(|i| *i != leader).unwrap();
    let put = |i: usize| {
        let c = &c;
        async move {
            poll(Duration::from_secs(20), "a write with one follower frozen", || async move {
                c.req(leader, Method::PUT, &format!("/v1/kv/key{i:04}"), &[], &value(i)).await.ok().filter(|r| r.status == 201)
            })
            .await
            .index()
            .unwrap()
        }
    };

    // Phase 1: freeze one follower (SIGSTOP: its process holds its state but answers nothing)
    // while the other two, a quorum, go on choosing slots: first until the leader's sender has
    // given up on the frozen stream (what was queued for it is dropped), then past
    // --max-retained-slots, so the leader's log no longer holds what the follower misses.
    c.signal(lagger, "STOP");
    let failures0 = c.metric(leader, "synod_peer_send_failures_total").await.unwrap_or(0);
    let mut i = 0;
    loop {
        put(i).await;
        i += 1;
        if c.metric(leader, "synod_peer_send_failures_total").await.unwrap_or(0) > failures0 {
            break;
        }
        assert!(i < 3000, "the leader never noticed the frozen follower");
    }
    let mut last = 0;
    for _ in 0..60 {
        last = put(i).await;
        i += 1;
    }
    let leader_status = c.status(leader).await.unwrap();
    assert!(leader_status["checkpoint_slot"].as_u64().unwrap() > 30, "the leader moved its checkpoint past the frozen follower: {leader_status}");

    // Phase 2: thaw it. The slots it misses are disposed on the leader, so it must be sent a
    // snapshot; a sequential read naming the last write then succeeds on it.
    c.signal(lagger, "CONT");
    let key = format!("/v1/kv/key{:04}?consistency=sequential&min_index={last}", i - 1);
    let r = poll(Duration::from_secs(30), "the lagging replica serves the last write", || {
        let (c, key) = (&c, &key);
        async move { c.req(lagger, Method::GET, key, &[], "").await.ok().filter(|r| r.status == 200) }
    })
    .await;
    assert_eq!(r.text(), value(i - 1));
    let installed = c.metric(lagger, "synod_snapshots_installed_total").await.unwrap_or(0);
    assert!(installed > 0, "the lagging replica caught up by a snapshot, not by the log");
    // Whichever peer it fetched from (the leader, or a random member half the time) streamed it.
    poll(Duration::from_secs(10), "a peer counts the snapshot it streamed over gRPC", || async {
        let mut sent = 0;
        for id in (1..=3).filter(|i| *i != lagger) {
            sent += c.metric(id, "synod_snapshots_sent_total").await?;
        }
        (sent > 0).then_some(())
    })
    .await;
    let r = c.req(lagger, Method::GET, "/v1/kv/key0000?consistency=sequential", &[], "").await.unwrap();
    assert_eq!(r.text(), value(0), "the snapshot holds the early keys too");

    // Phase 3: once quiet, all three replicas hold the same state (hash over data, versions and
    // sessions), so the snapshot was a faithful copy.
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
}
