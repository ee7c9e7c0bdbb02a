//! Membership changes under a steady write load: grow 3 -> 5 (two `--join` processes, each
//! added as a learner, sent a snapshot, and promoted), shrink 5 -> 3 (one leaves on SIGTERM with
//! `--leave-on-shutdown`, one is removed through the admin API), then remove the leader itself
//! (it hands leadership off first).

mod common;

use common::{poll, spawn_load, Cluster};
use hyper::Method;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_shrink_and_remove_the_leader_under_load() {
    let mut c = Cluster::start(3, 2, 20).await;
    c.wait_leader(Duration::from_secs(60)).await;
    let epoch0 = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;

    // Phase 1: a steady write load through the founders.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = spawn_load((1..=3).map(|i| c.url(i).to_string()).collect(), stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 2: grow 3 -> 5. Each joiner posts a join request; the leader takes them one at a
    // time: AddLearner, snapshot, Promote (two configuration commands each).
    c.join(4, &["--leave-on-shutdown"]);
    c.join(5, &[]);
    let epoch = c.wait_acceptors(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5], Duration::from_secs(60)).await;
    assert!(epoch >= epoch0 + 4, "two AddLearner and two Promote (epoch {epoch0} -> {epoch})");
    for id in [4, 5] {
        let s = c.status(id).await.unwrap();
        assert!(s["snapshots_installed"].as_u64().unwrap() >= 1, "node {id} caught up from a snapshot: {s}");
        assert_eq!(s["role"], "follower", "node {id} votes now");
    }
    // The members list is served by the leader (a follower forwards it) with learned indexes.
    let r = c.req(5, Method::GET, "/v1/cluster/members", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let members = r.json()["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 5);
    assert!(members.iter().all(|m| m["role"] == "acceptor" && m["live"] == true && m["learned"].is_u64() && m["http"].is_string()), "{members:?}");

    // Phase 3: shrink 5 -> 3. Node 4 leaves on SIGTERM: it posts a leave request and exits only
    // once every remaining member runs the configuration without it. Node 5 is removed by an
    // operator through the admin API.
    c.signal(4, "TERM");
    let r = c.req(1, Method::DELETE, "/v1/cluster/members/5", &[], "").await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let status = poll(Duration::from_secs(60), "node 4 leaves and exits", || {
        let n = c.nodes.get_mut(&4).unwrap();
        let exited = n.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "node 4 exited cleanly after leaving: {status:?}");
    assert!(c.log(4).contains("left the cluster"), "node 4 waited for its leave to complete");
    let epoch2 = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    assert!(epoch2 >= epoch + 2, "two Remove commands (epoch {epoch} -> {epoch2})");
    c.nodes.remove(&4);
    let mut n5 = c.nodes.remove(&5).unwrap();
    let _ = n5.child.kill();
    let _ = n5.child.wait();
    let r = c.req(1, Method::DELETE, "/v1/cluster/members/5", &[], "").await.unwrap();
    assert_eq!(r.status, 404, "a removed node is not a member any more: {}", r.text());

    // Phase 4: remove the leader. It withdraws from the election; the next leader removes it.
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let r = c.req(leader, Method::DELETE, &format!("/v1/cluster/members/{leader}"), &[], "").await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let rest: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let epoch3 = c.wait_acceptors(&rest, &rest, Duration::from_secs(60)).await;
    assert!(epoch3 > epoch2);
    assert!(c.log(leader).contains("handing leadership off"), "the old leader handed off first");

    // Phase 5: quiet. Nothing acknowledged was lost or applied twice, and the replicas that
    // remain agree on the state.
    stop_tx.send(true).unwrap();
    let report = load.await.unwrap();
    assert!(report.acked.len() > 10 && report.incrs > 10, "the load ran throughout: {report:?}");
    let mut old = c.nodes.remove(&leader).unwrap();
    let _ = old.child.kill();
    let _ = old.child.wait();
    let new_leader = c.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader);
    c.wait_same_state(&rest, Duration::from_secs(30)).await;
    for id in &rest {
        c.check_load(*id, &report).await;
    }
}
