//! `synod-load`'s etcd operations against a real etcd (the one `scripts/setup` installs): the
//! preload's txns, puts, linearizable and serializable ranges all answer 2xx through etcd's v3
//! JSON gateway, and what the preload wrote is really there (a range over every key counts them).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An etcd member on free loopback ports, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn etcd_bin() -> PathBuf {
    for name in ["etcd-server", "etcd"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).chain([PathBuf::from("/usr/bin")]) {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!("no etcd binary: run `bash scripts/setup` (installs Debian's etcd-server)");
}

/// One HTTP/1.1 POST with `Connection: close`: (status, body).
fn post(url: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(etcd_bin())
        .arg("--name=load-test")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=load-test={peer_url}"))
        .arg("--unsafe-no-fsync")
        .arg("--max-txn-ops=1000") // the preload's txns carry 1,000 puts (etcd's default: 128)
        .arg("--log-level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    let etcd = Etcd { child, url, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = post(&etcd.url, "/v3/maintenance/status", "{}") {
            if body.contains("\"leader\"") {
                return etcd;
            }
        }
        assert!(Instant::now() < deadline, "etcd did not answer within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `synod-load` and parse its JSON line.
fn load(url: &str, op: &str, keys: u64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_synod-load"))
        .args(["--url", url, "--op", op, "--keys", &keys.to_string(), "-c", "4", "-d", "0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "synod-load --op {op} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("synod-load --op {op}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn etcd_operations_work_against_a_real_etcd_gateway() {
    let etcd = start_etcd();
    let keys = 2_500; // three txns, the last one partial

    // The preload writes every key once, 1,000 per txn; it fails on any non-2xx answer.
    let pre = load(&etcd.url, "etcd-preload", keys);
    assert_eq!(pre["keys"], keys, "{pre}");

    // Every key is there: a range over all `k...` keys ("k" to "l"), counted only.
    let (status, body) = post(&etcd.url, "/v3/kv/range", r#"{"key":"aw==","range_end":"bA==","count_only":true}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let count: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(count["count"], keys.to_string(), "the preload wrote every key: {body}");

    // The timed operations: requests answered, none failed.
    for op in ["etcd-put", "etcd-get", "etcd-get-seq"] {
        let r = load(&etcd.url, op, keys);
        assert!(r["ok"].as_u64().unwrap() > 0, "{op}: nothing answered: {r}");
        assert_eq!(r["errors"], 0, "{op}: errors: {r}");
    }

    // A serializable range answers from the member: the key is there.
    let (status, body) = post(&etcd.url, "/v3/kv/range", r#"{"key":"azA=","serializable":true}"#).unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kvs"][0]["key"], "azA=", "k0 exists: {body}");
}
