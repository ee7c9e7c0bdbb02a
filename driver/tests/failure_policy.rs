//! The failure policy: an acceptor whose etcd lease is gone for `--remove-failed-after-s` is
//! removed from the acceptor set, but never below a majority of the configured set; below that
//! it takes an operator (`synod members remove`).

mod common;

use common::{poll, Cluster};
use std::process::Command;
use std::time::Duration;

fn synod(c: &Cluster, endpoint: u64, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod")).args(args).arg(format!("--endpoints={}", c.url(endpoint))).output().expect("synod runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_acceptors_are_removed_down_to_a_majority_of_the_configured_set() {
    let mut c = Cluster::start_with(5, 2, 20, &["--remove-failed-after-s=1"]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let epoch0 = c.wait_acceptors(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5], Duration::from_secs(20)).await;
    let mut others = (1..=5).filter(|i| *i != leader);
    let (a, b, d) = (others.next().unwrap(), others.next().unwrap(), others.next().unwrap());

    // Phase 1: two followers die for good. Each is removed once its lease has been gone for the
    // policy's delay: 5 -> 4 -> 3 acceptors (3 is still a majority of the configured 5).
    c.kill9(a);
    c.kill9(b);
    let up: Vec<u64> = c.nodes.keys().copied().collect();
    let epoch = c.wait_acceptors(&up, &up, Duration::from_secs(30)).await;
    assert_eq!(epoch, epoch0 + 2, "two Remove commands");

    // Phase 2: a third dies. Removing it would leave 2 of a configured 5: the policy refuses
    // (and says so), and the acceptor set stays as it is.
    c.kill9(d);
    poll(Duration::from_secs(20), "the leader keeps the third failed acceptor", || async {
        c.log(leader).contains("failed acceptor kept").then_some(())
    })
    .await;
    let (e, acc, _) = c.config_seen_by(leader).await.unwrap();
    assert_eq!(e, epoch);
    assert!(acc.iter().any(|(id, _)| *id == d), "{d} is still an acceptor: {acc:?}");

    // Phase 3: the operator removes it explicitly (`synod members remove`), and `synod members
    // list` shows the two acceptors left.
    let (ok, out) = synod(&c, leader, &["members", "remove", &d.to_string()]);
    assert!(ok, "synod members remove: {out}");
    let up: Vec<u64> = c.nodes.keys().copied().collect();
    c.wait_acceptors(&up, &up, Duration::from_secs(30)).await;
    let (ok, out) = synod(&c, leader, &["members", "list"]);
    assert!(ok && out.lines().filter(|l| l.contains("acceptor")).count() == 2, "synod members list:\n{out}");
}
