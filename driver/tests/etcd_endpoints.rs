//! A node given several `--etcd` endpoints starts and serves when some of them do not resolve or
//! are down: it connects to the reachable ones (and retries, within the bootstrap timeout, if
//! none answers yet). Before, a DNS failure on one endpoint made the founding-incarnation txn or
//! the join request fail and the process exit.

mod common;

use common::{poll, Cluster};
use hyper::Method;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_extra_etcd_endpoints_do_not_stop_a_node() {
    // Every node gets the real etcd plus a name that cannot resolve and a port nobody serves.
    let bogus = "--etcd=http://no-such-host.invalid:2379,http://127.0.0.1:1";
    let mut c = Cluster::start_with(3, 2, 20, &[bogus]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let epoch0 = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(20)).await;
    for id in 1..=3 {
        let r = poll(Duration::from_secs(20), "a write is served", || async {
            let r = c.req(id, Method::PUT, &format!("/v1/kv/k{id}"), &[("idempotency-key", format!("k{id}"))], "v").await.ok()?;
            (r.status == 200 || r.status == 201).then_some(r)
        })
        .await;
        assert!(r.status == 201 || r.status == 200);
    }

    // A restart (the founding-incarnation txn and the join request) works with them too.
    let victim = (1..=3).find(|i| *i != leader).unwrap();
    c.crash(victim);
    c.restart(victim);
    // The restart re-founds nothing: it asks to join (through etcd) and its new incarnation
    // becomes an acceptor again (wait_acceptors checks each acceptor is the live incarnation).
    let epoch = c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    assert!(epoch > epoch0, "the configuration changed to take the new incarnation in ({epoch0} -> {epoch})");
    assert!(c.log(victim).contains("etcd endpoint unreachable"), "the bogus endpoints were seen and left out");

    // `state_hash_index` travels with `state_hash`: equal hashes at equal indexes once quiet.
    let hash = c.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    let mut at = None;
    for id in 1..=3 {
        let s = c.status(id).await.unwrap();
        assert_eq!(s["state_hash"].as_str(), Some(hash.as_str()));
        let i = s["state_hash_index"].as_u64().expect("state_hash_index in /v1/status");
        assert!(i >= 3, "three writes applied: {s}");
        assert!(at.is_none_or(|a| a == i), "same index on every replica: {s}");
        at = Some(i);
    }
}
