//! Backup and restore with real processes: `GET /v1/snapshot` through `synod snapshot save`,
//! `synod snapshot inspect`, and a NEW cluster (its own etcd) started with
//! `synod node --bootstrap ... --restore FILE`; damaged files and founders that disagree on
//! the file are refused.

mod common;

use common::{poll, synod_bin, Cluster};
use driver::dev::{find_etcd, free_port, EtcdProcess};
use hyper::Method;
use kvstore::{Request, Stamp, Store, StoreConfig, WriteOp};
use paxos::{Configuration, Incarnation, Member, NodeId, Slot, SnapshotMeta};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEYS: usize = 200;

/// Key `i`'s value: text, and every fifth one binary (every byte value, NUL and 0xFF included).
fn value(i: usize) -> Vec<u8> {
    if i.is_multiple_of(5) {
        (0..=255u8).map(|b| b.wrapping_add(i as u8)).collect()
    } else {
        format!("value-{i}").into_bytes()
    }
}

fn key(i: usize) -> String {
    format!("backup/key-{i:03}")
}

/// Run `synod` with `args` to completion.
fn synod(args: &[&str]) -> Output {
    Command::new(synod_bin()).args(args).env("RUST_LOG", "warn").output().expect("synod runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The number after `label` in `s` (`"index 57,"` -> 57).
fn number_after(s: &str, label: &str) -> u64 {
    let at = s.find(label).unwrap_or_else(|| panic!("{label:?} in {s:?}")) + label.len();
    s[at..].trim_start().chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or_else(|_| panic!("a number after {label:?} in {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_saved_through_a_follower_restores_into_a_new_cluster() {
    let mut old = Cluster::start(3, 5, 10_000).await;
    // A leader change first, so the backed-up state's last stamp is of a second term (round 2 or
    // more): the new cluster's leaders start again at round 1.
    let first = old.wait_leader(Duration::from_secs(60)).await;
    old.crash(first);
    old.restart(first);
    // It rejoins as a new incarnation: wait until it is an acceptor again (the backup's
    // configuration below is then the three of them).
    old.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    let leader = old.wait_leader(Duration::from_secs(60)).await;
    for i in 0..KEYS {
        let url = format!("{}/v1/kv/{}", old.url(leader), key(i));
        let r = old.http.request(Method::PUT, &url, &[], value(i), Duration::from_secs(10)).await.expect("put");
        assert!(r.status == 200 || r.status == 201, "put {i}: {} {}", r.status, r.text());
    }
    old.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let before = old.status(follower).await.expect("the follower's status");

    // Save through a follower: the checksum is checked and the file decoded before it exists.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let out = synod(&["snapshot", "save", file.to_str().unwrap(), "--endpoints", old.url(follower)]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "snapshot save: {said} {}", text(&out.stderr));
    assert!(said.starts_with(&format!("saved {}: index ", file.display())), "{said}");
    assert!(said.contains(&format!("keys {KEYS},")) && said.contains("crc32c="), "{said}");
    let index = number_after(&said, "index ");
    assert_eq!(index, before["index"].as_u64().unwrap(), "the backup reflects the follower's applied index");
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(number_after(&said, "slot "), before["store_applied_slot"].as_u64().unwrap());
    assert!(said.contains(&format!("{} bytes", bytes.len())), "{said}");
    assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("tmp")), "no temp file left");

    // The raw route: headers agree with the body.
    let r = old.req(follower, Method::GET, "/v1/snapshot", &[], "").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-synod-checksum"), Some(format!("crc32c={}", driver::durable::file_checksum(&r.body)).as_str()));
    assert_eq!(r.index(), Some(index));
    assert!(r.header("x-synod-snapshot-slot").is_some());
    // A linearizable one (relayed through the leader) holds at least as much.
    let r = old.req(follower, Method::GET, "/v1/snapshot?consistency=linearizable", &[], "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.index().unwrap() >= index);
    let r = old.req(follower, Method::GET, "/v1/snapshot?consistency=eventual", &[], "").await.unwrap();
    assert_eq!(r.status, 400);

    // Inspect.
    let out = synod(&["snapshot", "inspect", file.to_str().unwrap()]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "inspect: {shown} {}", text(&out.stderr));
    assert!(shown.contains(&format!("keys: {KEYS}\n")), "{shown}");
    assert!(shown.contains(&format!("index: {index}\n")), "{shown}");
    assert!(shown.contains(&format!("bytes: {}\n", bytes.len())), "{shown}");
    assert!(shown.contains(&format!("checksum: crc32c={}\n", driver::durable::file_checksum(&bytes))), "{shown}");
    assert!(shown.contains("acceptors: 1 (incarnation"), "{shown}");

    // A NEW cluster (its own etcd, new incarnations) from the file.
    let restore = format!("--restore={}", file.display());
    let new = Cluster::start_with(3, 5, 10_000, &[&restore]).await;
    let new_leader = new.wait_leader(Duration::from_secs(60)).await;
    new.wait_same_state(&[1, 2, 3], Duration::from_secs(30)).await;
    for id in 1..=3 {
        let s = new.status(id).await.unwrap();
        assert_eq!(s["keys"].as_u64(), Some(KEYS as u64), "node {id}: {s}");
        assert_eq!(s["index"].as_u64(), Some(index), "node {id} starts at the backup's index: {s}");
        assert_eq!(s["state_hash"], new.status(1).await.unwrap()["state_hash"], "node {id} holds the same state as node 1: {s}");
        assert_ne!(s["incarnation"], old.status(id).await.unwrap()["incarnation"], "new incarnations");
    }
    for i in 0..KEYS {
        let url = format!("{}/v1/kv/{}", new.url(new_leader), key(i));
        let r = new.http.request(Method::GET, &url, &[], Vec::new(), Duration::from_secs(10)).await.expect("get");
        assert_eq!(r.status, 200, "key {i} on the restored cluster");
        assert_eq!(r.body.as_ref(), value(i).as_slice(), "key {i} on the restored cluster equals the original");
        let url = format!("{}/v1/kv/{}", old.url(leader), key(i));
        let o = old.http.request(Method::GET, &url, &[], Vec::new(), Duration::from_secs(10)).await.expect("get");
        assert_eq!(r.body, o.body, "key {i}: old and new clusters agree");
    }
    // The store's numbering goes on from the backup.
    let r = new.req(new_leader, Method::PUT, "/v1/kv/after-restore", &[], "x").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    assert_eq!(r.index(), Some(index + 1), "the first write after the restore takes the next index");
    // The restored cluster's log clock runs: a 1 s lease ends (the old cluster's last stamp,
    // compared with the new leaders' terms, used to stall it for as long as the old leader's
    // process had run, or for ever after a leader change there).
    let r = new.req(new_leader, Method::POST, "/v1/leases", &[], r#"{"ttl_ms": 1000}"#).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let lease = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_u64().unwrap();
    let r = new.req(new_leader, Method::PUT, &format!("/v1/kv/leased?lease={lease}"), &[], "x").await.unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let started = Instant::now();
    poll(Duration::from_secs(6), "the restored cluster expires a 1 s lease", || async {
        let r = new.req(new_leader, Method::GET, "/v1/kv/leased", &[], "").await.ok()?;
        (r.status == 404).then_some(())
    })
    .await;
    eprintln!("a 1 s lease on the restored cluster ended after {:?}", started.elapsed());
}

/// A small valid backup file whose store holds `keys` keys.
fn backup_file(path: &Path, keys: usize) -> Vec<u8> {
    let mut store = Store::new(StoreConfig::default());
    for i in 0..keys {
        let op = WriteOp::Put { key: key(i).into_bytes(), value: value(i), guard: None };
        store.apply_request(i as u64 + 1, &Request { session: None, stamp: Stamp::new(1, 1, i as u64), op }).expect("applies");
    }
    let meta = SnapshotMeta { last_slot: Slot(keys as u64), config: Configuration::bootstrap([Member { node: NodeId(1), incarnation: Incarnation(1) }]) };
    let store_bytes: Vec<u8> = store.snapshot(64 * 1024).flatten().collect();
    let file = driver::durable::encode_snapshot(&meta, &store_bytes);
    std::fs::write(path, &file).unwrap();
    file
}

/// Wait for `child` to exit within `timeout`; its status and stderr.
fn wait_exit(mut child: Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
            panic!("the process did not exit within {timeout:?}; its log:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `synod node` for a process that is expected to exit (its stderr is read by [`wait_exit`]).
fn node(id: u64, etcd: &str, prefix: &str, bootstrap: &str, extra: &[String]) -> Child {
    node_at(id, &format!("127.0.0.1:{}", free_port()), etcd, prefix, bootstrap, extra, Stdio::piped())
}

fn node_at(id: u64, http: &str, etcd: &str, prefix: &str, bootstrap: &str, extra: &[String], stderr: Stdio) -> Child {
    let mut args = vec![
        "node".to_string(),
        format!("--id={id}"),
        format!("--http-listen={http}"),
        format!("--grpc-listen=127.0.0.1:{}", free_port()),
        format!("--etcd={etcd}"),
        format!("--prefix={prefix}"),
        format!("--bootstrap={bootstrap}"),
        "--bootstrap-timeout=20".to_string(),
    ];
    args.extend(extra.iter().cloned());
    Command::new(synod_bin()).args(args).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(stderr).spawn().expect("synod node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_damaged_backup_is_refused_by_inspect_and_by_a_founder() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    let file = backup_file(&good, 20);
    let out = synod(&["snapshot", "inspect", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("keys: 20\n"), "{}", text(&out.stdout));

    let truncated = dir.path().join("truncated.snap");
    std::fs::write(&truncated, &file[..file.len() - 100]).unwrap();
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 0x10;
    let damaged = dir.path().join("damaged.snap");
    std::fs::write(&damaged, &flipped).unwrap();

    for bad in [&truncated, &damaged] {
        let out = synod(&["snapshot", "inspect", bad.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "inspect accepted {}", bad.display());
        assert!(err.contains("is not a usable snapshot file") && err.contains("snapshot"), "a clear refusal: {err}");
        assert!(out.stdout.is_empty(), "nothing printed as if valid: {}", text(&out.stdout));

        // A founder refuses it before binding, talking to etcd (none runs at this address) or
        // creating its data directory.
        let data = dir.path().join(format!("data-{}", bad.file_name().unwrap().to_string_lossy()));
        let extra = [format!("--restore={}", bad.display()), format!("--data-dir={}", data.display())];
        let child = node(1, &format!("http://127.0.0.1:{}", free_port()), "/synod", "1,2,3", &extra);
        let (status, err) = wait_exit(child, Duration::from_secs(10));
        assert!(!status.success(), "a founder started with a bad file");
        assert!(err.contains("--restore") && err.contains("refused, nothing was started"), "a clear refusal: {err}");
        assert!(!data.exists(), "the data directory was not touched");
    }
    // --restore on a replica that is not a founder is an error.
    let child = node(4, &format!("http://127.0.0.1:{}", free_port()), "/synod", "1,2,3", &[format!("--restore={}", good.display())]);
    let (status, err) = wait_exit(child, Duration::from_secs(10));
    assert!(!status.success());
    assert!(err.contains("only a founder of a new cluster restores"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn founders_that_restore_different_files_or_not_at_all_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdProcess::start(&find_etcd().expect("etcd"), dir.path()).await.expect("etcd starts");
    let a = dir.path().join("a.snap");
    let b = dir.path().join("b.snap");
    backup_file(&a, 10);
    backup_file(&b, 11);
    let crc = |p: &Path| driver::durable::file_checksum(&std::fs::read(p).unwrap());
    assert_ne!(crc(&a), crc(&b), "two files, two checksums");
    let restore = |p: &Path| vec![format!("--restore={}", p.display())];

    // Two founders, two different files.
    let one = node(1, &etcd.endpoint, "/different", "1,2", &restore(&a));
    let two = node(2, &etcd.endpoint, "/different", "1,2", &restore(&b));
    // Both pass the barrier, then see the checksums differ: well within the 20 s bootstrap timeout.
    for (id, child) in [(1, one), (2, two)] {
        let (status, err) = wait_exit(child, Duration::from_secs(15));
        assert!(!status.success(), "founder {id} went on");
        assert!(err.contains("bootstrap refused") && err.contains("must all restore the same snapshot file"), "founder {id}: {err}");
        assert!(err.contains("node 1: crc32c=") && err.contains("node 2: crc32c="), "founder {id} names the checksums: {err}");
    }

    // One founder restores, the other does not.
    let one = node(1, &etcd.endpoint, "/mixed", "1,2", &restore(&a));
    let two = node(2, &etcd.endpoint, "/mixed", "1,2", &[]);
    for (id, child) in [(1, one), (2, two)] {
        let (status, err) = wait_exit(child, Duration::from_secs(15));
        assert!(!status.success(), "founder {id} went on");
        assert!(err.contains("bootstrap refused") && err.contains("node 2: no --restore"), "founder {id}: {err}");
    }

    // The same file on both, in durable mode: the cluster starts from it (the restored store is
    // the initial snapshot file of each data directory).
    let prefix = "/same";
    let urls: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let mut children = Vec::new();
    for (i, http) in urls.iter().enumerate() {
        let mut extra = restore(&a);
        extra.push(format!("--data-dir={}", dir.path().join(format!("data-{i}")).display()));
        children.push(node_at(i as u64 + 1, http, &etcd.endpoint, prefix, "1,2", &extra, Stdio::null()));
    }
    let http = driver::client::HttpClient::new();
    poll(Duration::from_secs(30), "the restored two-node cluster serves the file's keys", || {
        let (http, url) = (&http, format!("http://{}/v1/kv/{}", urls[0], key(3)));
        async move { http.get(&url).await.ok().filter(|r| r.status == 200 && r.body.as_ref() == value(3).as_slice()) }
    })
    .await;
    let initial = dir.path().join("data-0/snap").join(format!("{:020}.snap", 0));
    let (_, store) = driver::durable::decode_snapshot(&std::fs::read(&initial).expect("the initial snapshot file"), StoreConfig::default()).unwrap();
    assert_eq!((store.len(), store.last_applied()), (10, 10), "the initial snapshot file holds the restored store");
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
