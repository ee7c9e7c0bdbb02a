//! Crash recovery: a replica killed with `kill -9` and restarted with the same command line
//! comes back as a new incarnation, is re-added as a learner (replacing its forgotten self),
//! catches up from a snapshot, and is promoted, with no operator; all under a steady write load.

mod common;

use common::{spawn_load, Cluster};
use driver::membership::{Membership, PendingChange};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_follower_restarts_and_becomes_an_acceptor_again() {
    let mut c = Cluster::start(3, 2, 20).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    let epoch0 = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;
    let old_inc = c.status(victim).await.unwrap()["incarnation"].as_u64().unwrap();

    // Phase 1: a steady write load through the two replicas that stay up.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let urls = (1..=3).filter(|i| *i != victim).map(|i| c.url(i).to_string()).collect();
    let load = spawn_load(urls, stop);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Phase 2: kill -9 the follower and restart it with the same command line. Its promises
    // are gone with its memory, so it must not vote as its old self (rule 8): it registers a new
    // incarnation and asks to join.
    c.crash(victim);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart(victim);

    // Phase 3: the leader replaces the old incarnation by a learner, streams it a snapshot, and
    // promotes it: the acceptor set is whole again, two changes later, with the new incarnation.
    let epoch = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    assert!(epoch >= epoch0 + 2, "AddLearner and Promote both happened (epoch {epoch0} -> {epoch})");
    let s = c.status(victim).await.unwrap();
    assert_ne!(s["incarnation"].as_u64().unwrap(), old_inc, "the restarted process is a new incarnation");
    assert!(s["snapshots_installed"].as_u64().unwrap() >= 1, "it caught up from a snapshot: {s}");

    // Phase 4: quiet; no acknowledged write lost, none applied twice, equal states everywhere.
    stop_tx.send(true).unwrap();
    let report = load.await.unwrap();
    assert!(report.acked.len() > 5 && report.incrs > 5, "the load ran: {report:?}");
    c.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    for id in 1..=3 {
        c.check_load(id, &report).await;
    }
}

/// A restarted process posts its join request before it registers, and its crashed
/// predecessor's registration lasts until that lease expires. The leader must wait for the new
/// registration: it used to take the old one for a newer process, drop the request as
/// superseded, and leave the restart a learner for good (recovery_two's 90 s timeout). Made
/// deterministic with a long TTL and a join posted by hand while the old registration is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_posted_while_the_crashed_incarnation_is_still_registered_is_kept() {
    let mut c = Cluster::start(3, 8, 20).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;
    let old_inc = c.status(victim).await.unwrap()["incarnation"].as_u64().unwrap();

    // kill -9: its registration stays in etcd until its lease (8 s) expires.
    c.crash(victim);
    let client = driver::etcd::connect(std::slice::from_ref(&c.etcd.endpoint)).await.expect("etcd");
    let membership = Membership::new(client, "/synod".to_string());
    let join = PendingChange::Join { id: victim, incarnation: old_inc + 1 };
    membership.request(&join).await.expect("join posted");

    // Several leader ticks (200 ms each) while the old registration is still there.
    let posted = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = membership.pending().await.expect("pending");
    assert!(posted.elapsed() < Duration::from_secs(8), "checked within the old lease's TTL");
    assert!(pending.contains(&join), "the join of a newer incarnation waits for its registration: {pending:?}");

    // The real restart replaces the request with its own, registers, and is taken in.
    c.restart(victim);
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
}
