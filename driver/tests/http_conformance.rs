//! HTTP as RFC 9110 and RFC 9457 say, over real HTTP against real `synod node` processes and a
//! real etcd. One phase per conformance item; each asserts the status, the headers and (for a
//! refusal) the problem `type`, and says which rule it checks.

mod common;

use bytes::Bytes;
use common::{poll, Cluster};
use driver::client::HttpResponse;
use hyper::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Send until the answer is neither 503/504 nor a connection error (an election may be running).
async fn settle(c: &Cluster, id: u64, method: Method, path: &str, headers: &[(&str, String)], body: impl Into<Bytes>) -> HttpResponse {
    let body: Bytes = body.into();
    let url = format!("{}{}", c.url(id), path);
    poll(Duration::from_secs(30), &format!("{method} {path} gets a definite answer"), || {
        let (m, b, url) = (method.clone(), body.clone(), url.clone());
        async move {
            match c.http.request(m, &url, headers, b, Duration::from_secs(10)).await {
                Ok(r) if r.status != 503 && r.status != 504 => Some(r),
                _ => None,
            }
        }
    })
    .await
}

fn h(name: &'static str, value: &str) -> (&'static str, String) {
    (name, value.to_string())
}

fn json_ct() -> (&'static str, String) {
    h("content-type", "application/json")
}

/// A refusal: the status, problem+json, a `type` that this server documents, a readable detail
/// and `X-Synod-Index`.
async fn assert_problem(c: &Cluster, id: u64, r: &HttpResponse, status: u16, slug: &str) -> Value {
    assert_eq!(r.status, status, "expected {status} {slug}, got {} {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{}", r.text());
    assert!(r.index().is_some(), "a refusal carries X-Synod-Index too: {:?}", r.headers);
    let j = r.json();
    assert_eq!(j["status"], status);
    let t = j["type"].as_str().unwrap_or_default();
    assert_eq!(t, format!("/problems/{slug}"), "{}", r.text());
    // RFC 9457 3.1.1: the type URI, resolved against the request URL, documents the type.
    let page = c.http.get(&format!("{}{t}", c.url(id))).await.unwrap();
    assert_eq!(page.status, 200, "no page for {t}");
    assert!(page.text().starts_with(&format!("# {slug}")), "page of {t}: {}", page.text());
    let detail = j["detail"].as_str().unwrap_or_default();
    let debug_bytes = detail
        .split('[')
        .skip(1)
        .any(|s| s.split(']').next().is_some_and(|l| l.contains(", ") && l.split(", ").all(|n| n.parse::<u8>().is_ok())));
    assert!(!debug_bytes, "Debug bytes in the detail: {detail}");
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_head_and_conditional_get() {
    let c = Cluster::start(3, 2, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let put = settle(&c, leader, Method::PUT, "/v1/kv/k", &[], "hello").await;
    assert_eq!(put.status, 201);
    let tag = put.header("etag").unwrap().to_string();

    // RFC 9110 9.3.2: a server that supports GET supports HEAD, with the same headers and no
    // body; on a follower too (the request goes to the leader like the GET would).
    for id in [leader, follower] {
        let r = settle(&c, id, Method::HEAD, "/v1/kv/k", &[], "").await;
        assert_eq!(r.status, 200, "HEAD via {id}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert_eq!(r.header("content-length"), Some("5"));
        assert!(r.index().is_some());
    }
    let r = settle(&c, leader, Method::HEAD, "/v1/kv/missing", &[], "").await;
    assert_eq!((r.status, r.body.len()), (404, 0));
    for path in ["/v1/kv", "/v1/status", "/readyz", "/livez", "/metrics"] {
        let r = settle(&c, leader, Method::HEAD, path, &[], "").await;
        assert_eq!((r.status, r.body.len()), (200, 0), "HEAD {path}");
    }

    // RFC 9110 13.1.2 and 13.2.2: If-None-Match with the current tag is 304, no body, with
    // the ETag; weak comparison, so W/"n" matches too; a list matches if any member does.
    for inm in [tag.clone(), format!("W/{tag}"), format!("\"999\", {tag}"), "*".to_string()] {
        let r = settle(&c, leader, Method::GET, "/v1/kv/k", &[h("if-none-match", &inm)], "").await;
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(tag.as_str()));
        assert!(r.index().is_some());
    }
    let r = settle(&c, leader, Method::GET, "/v1/kv/k", &[h("if-none-match", "\"999\"")], "").await;
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));

    // RFC 9110 13.1.1: If-Match uses the strong comparison: a stale tag, or a weak tag equal
    // to the current one, is 412; a list holding the current tag passes.
    for im in ["\"999\"", &format!("W/{tag}")] {
        let r = settle(&c, leader, Method::GET, "/v1/kv/k", &[h("if-match", im)], "").await;
        let j = assert_problem(&c, leader, &r, 412, "precondition-failed").await;
        assert_eq!(j["key"], "k");
    }
    let r = settle(&c, leader, Method::GET, "/v1/kv/k", &[h("if-match", &format!("\"1\", {tag}"))], "").await;
    assert_eq!((r.status, r.text()), (200, "hello".to_string()));
    // A malformed list is 400, not "no match".
    let r = settle(&c, leader, Method::GET, "/v1/kv/k", &[h("if-match", "soon")], "").await;
    assert_problem(&c, leader, &r, 400, "malformed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_conditions_binary_data_and_validation() {
    let c = Cluster::start(1, 2, 10_000).await;
    let n = c.wait_leader(Duration::from_secs(60)).await;

    // RFC 9110 13.1.2: If-None-Match: * on PUT creates only.
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-none-match", "*")], "1").await;
    assert_eq!(r.status, 201);
    let tag = r.header("etag").unwrap().to_string();
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-none-match", "*")], "2").await;
    assert_problem(&c, n, &r, 412, "precondition-failed").await;
    // If-None-Match with tags on a write: weak comparison, fails when the current one is listed.
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-none-match", &format!("W/{tag}"))], "2").await;
    assert_problem(&c, n, &r, 412, "precondition-failed").await;
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-none-match", "\"12345\"")], "2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tag = r.header("etag").unwrap().to_string();
    // If-Match with a list (strong): passes when the current tag is listed, fails on a weak one.
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-match", &format!("W/{tag}"))], "3").await;
    assert_problem(&c, n, &r, 412, "precondition-failed").await;
    let r = settle(&c, n, Method::PUT, "/v1/kv/once", &[h("if-match", &format!("\"1\", {tag}"))], "3").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Binary keys and values are symmetric: a key sent percent-encoded, a value in base64 in
    // a batch, both read back in the reply's base64 form, and that form accepted as input.
    let r = settle(&c, n, Method::PUT, "/v1/kv/%FF%00", &[], vec![0xfe, 0x00, 0x01]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["key"], json!({ "base64": "/wA=" }));
    let r = settle(&c, n, Method::GET, "/v1/kv/%ff%00", &[], "").await;
    assert_eq!(r.body.as_ref(), &[0xfe, 0x00, 0x01]);
    let body = json!({ "ops": [{ "op": "put", "key": { "base64": "/wE=" }, "value": { "base64": "/gE=" } }] }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/batch/put", &[json_ct()], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({ "keys": [{ "base64": "/wE=" }, "once"] }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/batch/get", &[json_ct()], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["values"][0]["value"], json!({ "base64": "/gE=" }));
    let body = json!({ "op": "cas", "key": { "base64": "/wE=" }, "expected": { "base64": "/gE=" }, "new": "text" }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/rmw", &[json_ct()], body).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Cursors round-trip: a pager that sends next_cursor back as cursor walks every key once,
    // binary keys included.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let r = settle(&c, n, Method::GET, &format!("/v1/kv?limit=1{q}"), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        seen.extend(j["entries"].as_array().unwrap().iter().map(|e| e["key"].clone()));
        match j["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, vec![json!("once"), json!({ "base64": "/wA=" }), json!({ "base64": "/wE=" })]);
    // Binary range bounds in base64url.
    let r = settle(&c, n, Method::GET, "/v1/kv?prefix=_w&encoding=base64url", &[], "").await;
    assert_eq!(r.json()["entries"].as_array().map(Vec::len), Some(2), "{}", r.text());

    // Invalid whatever the state, refused before ordering (the index does not move): a batch
    // naming a key twice, and a CAS without `new` (it used to delete the key).
    let before = settle(&c, n, Method::GET, "/v1/status", &[], "").await.json()["index"].as_u64().unwrap();
    let body = json!({ "ops": [{ "op": "put", "key": "a", "value": "1" }, { "op": "delete", "key": "a" }] }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/batch/put", &[json_ct()], body).await;
    let j = assert_problem(&c, n, &r, 400, "malformed").await;
    assert_eq!(j["detail"], "key \"a\" appears more than once in the batch");
    let body = json!({ "op": "cas", "key": "once", "expected_version": 0 }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/rmw", &[json_ct()], body).await;
    assert_problem(&c, n, &r, 400, "malformed").await;
    let after = settle(&c, n, Method::GET, "/v1/status", &[], "").await.json()["index"].as_u64().unwrap();
    assert_eq!(before, after, "refused requests took no log slot");
    let r = settle(&c, n, Method::GET, "/v1/kv/once", &[], "").await;
    assert_eq!((r.status, r.text()), (200, "3".to_string()), "the CAS without new deleted nothing");
    // A CAS that says `delete` deletes.
    let body = json!({ "op": "cas", "key": "once", "expected": "3", "delete": true }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/rmw", &[json_ct()], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A guard that fails on a binary key names it in base64, never as a Debug byte array.
    let body = json!({ "ops": [{ "op": "delete", "key": { "base64": "/wA=" }, "guard": { "value": { "base64": "/w==" } } }] }).to_string();
    let r = settle(&c, n, Method::POST, "/v1/batch/put", &[json_ct()], body).await;
    let j = assert_problem(&c, n, &r, 409, "guard-failed").await;
    assert_eq!(j["detail"], "guard value = base64:/w== does not hold for key base64:/wA=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_edges_are_problems() {
    let c = Cluster::start(1, 2, 10_000).await;
    let n = c.wait_leader(Duration::from_secs(60)).await;

    // Unknown or contradictory query parameters are 400, not ignored.
    for path in
        ["/v1/kv/k?min_index=3", "/v1/kv?limt=3", "/v1/kv/k?consistency=sequential&consistency=linearizable", "/v1/status?verbose=1"]
    {
        let r = settle(&c, n, Method::GET, path, &[], "").await;
        assert_problem(&c, n, &r, 400, "malformed").await;
    }
    let r = settle(&c, n, Method::DELETE, "/v1/kv/k?prefix=true", &[], "").await;
    let j = assert_problem(&c, n, &r, 400, "malformed").await;
    assert!(j["detail"].as_str().unwrap().contains("prefix"), "{j}");

    // RFC 9110 8.4 and 15.5.16: a content coding the server does not decode is 415 with
    // Accept-Encoding, not stored undecoded.
    let r = settle(&c, n, Method::PUT, "/v1/kv/z", &[h("content-encoding", "gzip")], vec![0x1f, 0x8b]).await;
    assert_problem(&c, n, &r, 415, "unsupported-content-encoding").await;
    assert_eq!(r.header("accept-encoding"), Some("identity"));
    let r = settle(&c, n, Method::GET, "/v1/kv/z", &[], "").await;
    assert_eq!(r.status, 404, "nothing was stored");

    // RFC 9110 15.5.15: a key longer than the limit in the path is 414 with a body; a body
    // larger than the limit is 413 with a body.
    let long = "k".repeat(5_000);
    let r = settle(&c, n, Method::PUT, &format!("/v1/kv/{long}"), &[], "v").await;
    let j = assert_problem(&c, n, &r, 414, "uri-too-long").await;
    assert_eq!((j["limit"].as_u64(), j["got"].as_u64()), (Some(4096), Some(5000)));
    let r = settle(&c, n, Method::GET, &format!("/v1/kv/{}", "k".repeat(20_000)), &[], "").await;
    assert_problem(&c, n, &r, 414, "uri-too-long").await;
    let r = settle(&c, n, Method::PUT, "/v1/kv/big", &[], vec![b'x'; 2 * 1024 * 1024]).await;
    assert_problem(&c, n, &r, 413, "too-large").await;

    // 405 with Allow and a problem body; 404 for no route.
    let r = settle(&c, n, Method::POST, "/v1/kv/k", &[], "").await;
    assert_problem(&c, n, &r, 405, "method-not-allowed").await;
    let allow = r.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("HEAD") && allow.contains("PUT"), "{allow}");
    let r = settle(&c, n, Method::GET, "/v2/nothing", &[], "").await;
    assert_problem(&c, n, &r, 404, "no-route").await;

    // A path segment that is not UTF-8 is a problem like any malformed request (axum's own
    // rejection answered it in text/plain; Schemathesis checks every answer against the document).
    for (m, path) in [(Method::DELETE, "/v1/cluster/members/%FF"), (Method::GET, "/problems/%FF")] {
        let r = settle(&c, n, m, path, &[], "").await;
        assert_problem(&c, n, &r, 400, "malformed").await;
    }
    // RFC 9110 9.3.2: HEAD of a change stream answers the stream's headers without a body (it
    // was a 400 "ask any replica directly"); other methods are 405, as on the empty key.
    let r = settle(&c, n, Method::HEAD, "/v1/watch/k", &[], "").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/event-stream")));
    assert!(r.body.is_empty() && r.index().is_some());
    for (m, path) in [(Method::POST, "/v1/watch/k"), (Method::POST, "/v1/kv/")] {
        let r = settle(&c, n, m.clone(), path, &[], "").await;
        assert_problem(&c, n, &r, 405, "method-not-allowed").await;
    }
    // The API's own description, OpenAPI 3.1, is served.
    let r = settle(&c, n, Method::GET, "/v1/openapi.json", &[], "").await;
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    assert!(r.json()["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(r.json()["paths"]["/v1/kv/{key}"]["put"].is_object());

    // Every reply carries X-Synod-Index, refusals and operational endpoints included.
    for path in ["/livez", "/readyz", "/metrics", "/v1/kv", "/v1/cluster/members"] {
        let r = settle(&c, n, Method::GET, path, &[], "").await;
        assert!(r.index().is_some(), "{path}: {:?}", r.headers);
    }
    // Request ids: the client's is echoed, else one is made.
    let r = settle(&c, n, Method::GET, "/livez", &[h("x-request-id", "abc")], "").await;
    assert_eq!(r.header("x-request-id"), Some("abc"));
    let r = settle(&c, n, Method::GET, "/livez", &[], "").await;
    assert!(r.header("x-request-id").is_some());
}

/// Run the `synod` CLI against `url`, with `stdin` piped in.
fn synod(args: &[&str], url: &str, session: &std::path::Path, stdin: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synod"));
    cmd.args(args);
    if args[0] != "health" {
        cmd.arg(format!("--endpoints={url}")).arg(format!("--session-file={}", session.display()));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("synod runs");
    child.stdin.take().expect("stdin").write_all(stdin).expect("stdin written");
    let out = child.wait_with_output().expect("synod exits");
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_is_binary_safe_and_health_follows_readyz() {
    let c = Cluster::start(1, 2, 10_000).await;
    let n = c.wait_leader(Duration::from_secs(60)).await;
    let url = c.url(n).to_string();
    let session = c.dir.path().join("session.json");

    // A value from stdin, any bytes, read back byte for byte (`-w simple`: no newline added).
    let value = [0xffu8, 0x00, b'\n', 0x80];
    let (code, _, err) = synod(&["kv", "put", "bin", "-"], &url, &session, &value);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = synod(&["kv", "get", "bin", "-w", "simple"], &url, &session, b"");
    assert_eq!((code, out.as_slice()), (0, &value[..]), "{err}");
    // Listings show binary values as base64:..., never `?`, and keep the "more" hint.
    let (code, _, err) = synod(&["kv", "put", "text", "plain"], &url, &session, b"");
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = synod(&["kv", "ls", "--limit", "1", "-w", "simple"], &url, &session, b"");
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("bin\tbase64:/wAKgA==\t"), "{out}");
    let cursor = err.trim().strip_prefix("(more: --cursor ").and_then(|c| c.strip_suffix(')')).expect("a more hint").to_string();
    let (_, out, _) = synod(&["kv", "ls", "--limit", "1", "--cursor", &cursor, "-w", "simple"], &url, &session, b"");
    assert!(String::from_utf8(out).unwrap().starts_with("text\tplain\t"), "the cursor continues after bin");
    // A CAS names its new value or --delete.
    let (code, _, _) = synod(&["kv", "cas", "text", "--expected", "plain"], &url, &session, b"");
    assert_eq!(code, 2, "clap refuses a cas with neither --new nor --delete");
    let (code, _, err) = synod(&["kv", "cas", "text", "--expected", "plain", "--delete"], &url, &session, b"");
    assert_eq!(code, 0, "{err}");
    // Tables have headers.
    let (code, out, err) = synod(&["members", "list"], &url, &session, b"");
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8(out).unwrap().lines().any(|l| l.starts_with("ID ")), "members table header");

    // `synod health` is 0 only while /readyz is 200.
    let (code, _, err) = synod(&["health", "--url", &format!("{url}/readyz")], &url, &session, b"");
    assert_eq!(code, 0, "{err}");
    let mut c = c;
    c.kill9(n);
    let (code, _, err) = synod(&["health", "--url", &format!("{url}/readyz"), "--timeout-ms", "500"], &url, &session, b"");
    assert_eq!(code, 1, "a replica that does not answer is not healthy: {err}");
    assert!(err.starts_with("not ready:"), "{err}");
}
