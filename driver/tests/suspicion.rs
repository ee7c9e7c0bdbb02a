//! Suspicion records against a real etcd (issue 25): a record counts towards revoking a leader's
//! lease only while the process that wrote it is the one registered, under the lease the record
//! names. A record left by a follower that was killed (its lease gone) or replaced by a new
//! incarnation (its registration under another lease), or one in the old form (under the
//! leader's lease, no owner), never counts, so it cannot join one follower's brief gap into a
//! majority that revokes a healthy leader.

use driver::dev::{find_etcd, EtcdProcess};
use driver::etcd::{connect, live_suspicions};
use etcd_client::PutOptions;
use paxos::NodeId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_records_of_live_registered_recorders_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = EtcdProcess::start(&find_etcd().expect("etcd"), dir.path()).await.expect("etcd starts");
    let client = connect(std::slice::from_ref(&etcd.endpoint)).await.expect("connects");
    let (kv, mut leases) = (client.kv_client(), client.lease_client());
    let grant = |ttl| {
        let mut l = leases.clone();
        async move { l.grant(ttl, None).await.expect("grant").id() }
    };
    let p = "/t";
    let leader_lease = grant(60).await;
    let (l2, l3_old, l3_new) = (grant(60).await, grant(60).await, grant(60).await);
    let put = |key: String, value: String, lease: i64| {
        let mut kv = kv.clone();
        async move { kv.put(key, value, Some(PutOptions::new().with_lease(lease))).await.expect("put") }
    };
    put(format!("{p}/nodes/2"), "{}".into(), l2).await;
    put(format!("{p}/nodes/3"), "{}".into(), l3_new).await;
    let dir = format!("{p}/suspects/{leader_lease:x}");
    // Node 2 suspects now, as itself.
    put(format!("{dir}/2"), format!("{l2:x}"), l2).await;
    // Node 3's previous process suspected, then was killed and restarted under a new lease.
    put(format!("{dir}/3"), format!("{l3_old:x}"), l3_old).await;
    // Node 4 left a record in the old form (under the leader's lease, no owner).
    put(format!("{dir}/4"), String::new(), leader_lease).await;
    let live = live_suspicions(&client, p, leader_lease).await.expect("reads");
    assert_eq!(live, vec![NodeId(2)], "only node 2's record counts: one of three, no majority");
    // The killed process's lease expires (revoked here): its record is gone from etcd too.
    leases.revoke(l3_old).await.expect("revoke");
    assert_eq!(client.kv_client().get(format!("{dir}/3"), None).await.expect("get").kvs().len(), 0);
    // Node 3's live process suspects: now two records count.
    put(format!("{dir}/3"), format!("{l3_new:x}"), l3_new).await;
    assert_eq!(live_suspicions(&client, p, leader_lease).await.expect("reads"), vec![NodeId(2), NodeId(3)]);
    // Node 3 dies: its registration and its record go with its lease.
    leases.revoke(l3_new).await.expect("revoke");
    assert_eq!(live_suspicions(&client, p, leader_lease).await.expect("reads"), vec![NodeId(2)]);
}
