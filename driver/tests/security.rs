//! Security with real processes (a secured cluster: `synod certs` files, etcd on TLS with client
//! certificates, mutual TLS between replicas, HTTPS and bearer tokens for clients).
//!
//! - The gRPC (peer) port: a plaintext client, a TLS client without a certificate, one with a
//!   certificate of another CA and one with an expired certificate of this CA are refused at
//!   the handshake (each refusal counted and logged); a client with a valid certificate of this
//!   CA that names node 9 has every envelope claiming another sender dropped and counted, and
//!   none of them takes effect, while the same envelope from the node it claims does. Forwarding
//!   over mutual TLS still works, and nothing a stranger sent was written.
//! - A relayed request is held to the grant it carries (no escalation through `Forward`).
//! - A replica whose certificate does not name its id refuses to start.
//! - REST: 401 (with `WWW-Authenticate`) without a valid token and 403 with a token that does not
//!   allow the request, for every route group; public routes need no token; plaintext HTTP on
//!   the HTTPS port is refused and counted.
//! - SIGHUP reloads the token file: a removed token gets 401, a narrowed one 403, their open
//!   change streams end with `event: unauthorized`; a file that does not parse keeps the tokens.

mod common;

use common::{poll, Cluster, APP_TOKEN, READER_TOKEN, WRITER_TOKEN};
use driver::certs::Ca;
use driver::client::HttpResponse;
use driver::watch_client::{self, Opened};
use hyper::Method;
use paxos::{Ballot, Incarnation, Member, NodeId, RequestId, Slot};
use proto::pb;
use proto::pb::peer_client::PeerClient;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const REFUSED: &str = "synod_peer_tls_refused_total";
const MISMATCH: &str = "synod_peer_identity_mismatches_total";
const UNKNOWN: &str = "synod_peer_calls_unknown_total";
const UNAUTHENTICATED: &str = "synod_auth_unauthenticated_total";
const FORBIDDEN: &str = "synod_auth_forbidden_total";
const CLIENT_REFUSED: &str = "synod_client_tls_refused_total";

/// The key every stranger on the gRPC port tries to write.
const STRANGER_KEY: &str = "stranger/x";

// ---------------------------------------------------------------------------------------------
// gRPC helpers

/// A TLS configuration towards node `to` of a cluster whose CA is `ca_pem`, presenting
/// `identity` (certificate and key PEM) if given.
fn tls_to(ca_pem: &str, to: u64, identity: Option<&(String, String)>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(format!("node-{to}.synod"));
    if let Some((cert, key)) = identity {
        t = t.identity(Identity::from_pem(cert, key));
    }
    t
}

/// A `Peer` client on `addr`: plaintext (`tls: None`) or TLS; an error if it cannot connect.
async fn peer_client(addr: &str, tls: Option<ClientTlsConfig>) -> Result<PeerClient<Channel>, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| e.to_string())?.connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(10));
    if let Some(t) = tls {
        e = e.tls_config(t).map_err(|e| format!("tls config: {e}"))?;
    }
    let ch = e.connect().await.map_err(|e| format!("connect: {e:?}"))?;
    Ok(PeerClient::new(ch))
}

/// Call `Forward` on `addr` with `req`: the relayed reply, or why there is none.
async fn forward(addr: &str, tls: Option<ClientTlsConfig>, req: pb::ForwardRequest) -> Result<pb::ForwardReply, String> {
    let mut client = peer_client(addr, tls).await?;
    client.forward(req).await.map(|r| r.into_inner()).map_err(|s| format!("call: {s:?}"))
}

/// A relayed `PUT /v1/kv/{key}` carrying `grant` (`None`: unrestricted).
fn relayed_put(key: &str, value: &str, grant: Option<pb::Grant>) -> pb::ForwardRequest {
    pb::ForwardRequest { method: "PUT".into(), path_and_query: format!("/v1/kv/{key}"), headers: vec![], body: value.as_bytes().to_vec(), hops: 1, grant }
}

fn reply_json(r: &pb::ForwardReply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

/// The leader's ballot and every member's incarnation, from the leader's `/v1/status`.
async fn ballot_and_members(c: &Cluster, leader: u64) -> (Ballot, Vec<Member>) {
    let s = c.status(leader).await.expect("the leader's status");
    let b = &s["ballot"];
    let ballot = Ballot::new(b["round"].as_u64().unwrap(), Member { node: NodeId(b["node"].as_u64().unwrap()), incarnation: Incarnation(b["incarnation"].as_u64().unwrap()) });
    let members = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Member { node: NodeId(m["id"].as_u64().unwrap()), incarnation: Incarnation(m["incarnation"].as_u64().unwrap()) })
        .collect();
    (ballot, members)
}

/// A peer `Forward` message from `from` to the leader of `ballot`, carrying one command that
/// writes `key` (what a follower sends when a client writes through it).
fn forward_envelope(from: Member, ballot: Ballot, seq: u64, key: &str) -> pb::Envelope {
    let request = kvstore::Request {
        session: None,
        stamp: kvstore::Stamp::new(from.node.0, 0, 0),
        op: kvstore::WriteOp::Put { key: key.as_bytes().to_vec(), value: b"from-a-peer-message".to_vec(), guard: None },
    };
    let cmd = paxos::Command { id: RequestId { node: from.node, seq }, payload: request.encode() };
    proto::encode_envelope(&paxos::Envelope { from, to: ballot.node, msg: paxos::Message::Forward { to: ballot, cmds: vec![cmd] } })
}

/// Send `envelopes` on one `Peer/Stream` call; the receiver's acknowledgement.
async fn stream_envelopes(addr: &str, tls: ClientTlsConfig, envelopes: Vec<pb::Envelope>) -> Result<pb::StreamAck, String> {
    let mut client = peer_client(addr, Some(tls)).await?;
    client.stream(tokio_stream::iter(envelopes)).await.map(|r| r.into_inner()).map_err(|s| format!("stream: {s:?}"))
}

/// Wait until the counter `name` of node `id` exceeds `before`; its value.
async fn metric_rises(c: &Cluster, id: u64, name: &str, before: u64, why: &str) -> u64 {
    poll(Duration::from_secs(10), &format!("{name} on node {id} rises above {before} ({why})"), || async {
        c.metric(id, name).await.filter(|v| *v > before)
    })
    .await
}

/// Wait until node `id` logged a refused handshake on its gRPC port whose reason says `reason`;
/// the line.
async fn logged_refusal(c: &Cluster, id: u64, reason: &str) -> String {
    poll(Duration::from_secs(5), &format!("node {id} logs a refused gRPC handshake saying {reason:?}"), || async {
        log_lines(c, id, &["TLS handshake refused", "port=\"grpc\"", reason]).into_iter().next()
    })
    .await
}

/// The lines of node `id`'s log that contain every one of `needles`.
fn log_lines(c: &Cluster, id: u64, needles: &[&str]) -> Vec<String> {
    c.log(id).lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string).collect()
}

// ---------------------------------------------------------------------------------------------
// REST helpers

/// Send a request to node `id` with `token`, retrying while the answer is 503 (no leader for a
/// moment) or the request could not be sent; the first other answer.
async fn call(c: &Cluster, id: u64, token: Option<&str>, method: Method, path: &str, headers: &[(&str, String)], body: &str) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.req_as(id, token, method.clone(), path, headers, body).await {
            Ok(r) if r.status != 503 => return r,
            Ok(r) => assert!(Instant::now() < deadline, "{method} {path} on node {id}: still 503 after 20 s: {}", r.text()),
            Err(e) => assert!(Instant::now() < deadline, "{method} {path} on node {id}: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn json_ct() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

/// `r` is a problem of type `/problems/{slug}` with `status`.
fn assert_problem(r: &HttpResponse, status: u16, slug: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "{what}");
    assert_eq!(r.json()["type"], format!("/problems/{slug}"), "{what}: {}", r.text());
}

/// 401 `unauthorized` with the challenge `challenge`.
fn assert_401(r: &HttpResponse, challenge: &str, what: &str) {
    assert_problem(r, 401, "unauthorized", what);
    assert_eq!(r.header("www-authenticate"), Some(challenge), "{what}");
}

/// 403 `forbidden` naming the token `name`.
fn assert_403(r: &HttpResponse, name: &str, what: &str) {
    assert_problem(r, 403, "forbidden", what);
    assert_eq!(r.json()["token"], name, "{what}: {}", r.text());
}

fn assert_2xx(r: &HttpResponse, what: &str) {
    assert!((200..300).contains(&r.status), "{what}: {} {}", r.status, r.text());
}

const CHALLENGE: &str = r#"Bearer realm="synod""#;
const CHALLENGE_UNKNOWN: &str = r#"Bearer realm="synod", error="invalid_token""#;

// ---------------------------------------------------------------------------------------------

/// Strangers on the gRPC port get nothing through; a certificate holder speaks only as itself;
/// a relayed request is held to its grant; a replica with another node's certificate does not
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_admits_members_speaking_as_themselves_only() {
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let addr = c.grpc_addr(leader);
    let certs = c.sec().certs.clone();
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let ca = Ca::load(&certs).expect("the cluster CA");
    let read_pem = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    // Forwarding works over mutual TLS before anything else happens (a baseline).
    let r = call(&c, followers[0], Some(APP_TOKEN), Method::PUT, "/v1/kv/app/before", &[], "1").await;
    assert_2xx(&r, "a write through a follower before the strangers");

    // (a) Each stranger calls `Forward` with an unrestricted PUT of STRANGER_KEY on the leader.
    let put = || relayed_put(STRANGER_KEY, "stranger", None);
    let refused_lines = |c: &Cluster| log_lines(c, leader, &["TLS handshake refused", "grpc"]).len();

    // 1. Plaintext gRPC.
    let before = c.metric(leader, REFUSED).await.expect("the refusal counter");
    let lines = refused_lines(&c);
    let r = forward(&addr, None, put()).await;
    assert!(r.is_err(), "a plaintext Forward got an answer: {r:?}");
    let after_plain = metric_rises(&c, leader, REFUSED, before, "plaintext gRPC").await;
    poll(Duration::from_secs(5), "the plaintext handshake's refusal is logged", || async { (refused_lines(&c) > lines).then_some(()) }).await;

    // 2. TLS without a client certificate.
    let r = forward(&addr, Some(tls_to(&ca_pem, leader, None)), put()).await;
    assert!(r.is_err(), "a Forward without a client certificate got an answer: {r:?}");
    let after_anon = metric_rises(&c, leader, REFUSED, after_plain, "TLS without a client certificate").await;
    logged_refusal(&c, leader, "no certificates").await;

    // 3. A certificate of another CA, naming node 1 (and trusting the real CA).
    let other = Ca::generate(10).unwrap();
    let foreign = other.issue_node(NodeId(1), &["localhost".to_string(), "127.0.0.1".to_string()], 1).unwrap();
    let r = forward(&addr, Some(tls_to(&ca_pem, leader, Some(&foreign))), put()).await;
    assert!(r.is_err(), "a Forward with another CA's certificate got an answer: {r:?}");
    let after_foreign = metric_rises(&c, leader, REFUSED, after_anon, "a certificate of another CA").await;
    // Every CA `synod certs` makes has a name of its own: the issuer is unknown here.
    logged_refusal(&c, leader, "UnknownIssuer").await;

    // 4. An expired certificate of this CA, naming node 1.
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.issue("node-1.synod", &["node-1.synod".to_string()], now - time::Duration::days(3), now - time::Duration::days(1)).unwrap();
    let r = forward(&addr, Some(tls_to(&ca_pem, leader, Some(&expired))), put()).await;
    assert!(r.is_err(), "a Forward with an expired certificate got an answer: {r:?}");
    let after_expired = metric_rises(&c, leader, REFUSED, after_foreign, "an expired certificate").await;
    let line = logged_refusal(&c, leader, "expired").await;
    assert!(line.contains("WARN"), "the refusal is a warning: {line}");

    // 5. A valid certificate of this CA naming node 9 (not a member), streaming envelopes that
    // claim to come from a member: a follower's `Forward` of a write, and a `Prepare` with a
    // ballot far above the leader's (which would depose it). Both are dropped and counted.
    let (ballot, members) = ballot_and_members(&c, leader).await;
    let victim = *members.iter().find(|m| m.node.0 == followers[0]).expect("the follower is a member");
    let node9 = ca.issue_node(NodeId(9), &["localhost".to_string()], 1).unwrap();
    let mismatches = c.metric(leader, MISMATCH).await.expect("the mismatch counter");
    let impostor = vec![
        forward_envelope(victim, ballot, (1 << 60) + 1, STRANGER_KEY),
        proto::encode_envelope(&paxos::Envelope {
            from: victim,
            to: NodeId(leader),
            msg: paxos::Message::Prepare { ballot: Ballot::new(ballot.round + 1_000_000, victim), first_slot: Slot(1) },
        }),
    ];
    let ack = stream_envelopes(&addr, tls_to(&ca_pem, leader, Some(&node9)), impostor).await.expect("node 9's certificate passes the handshake");
    assert_eq!((ack.received, ack.dropped), (2, 2), "every envelope claiming node {} from node 9's certificate is dropped", victim.node.0);
    let now_mismatches = metric_rises(&c, leader, MISMATCH, mismatches, "envelopes claiming another sender").await;
    assert!(now_mismatches >= mismatches + 2, "each dropped envelope is counted: {mismatches} -> {now_mismatches}");
    assert!(
        !log_lines(&c, leader, &["claims a sender its certificate does not name", &format!("node-{}.synod", victim.node.0)]).is_empty(),
        "the leader logs the impostor"
    );
    // The control: the same kind of envelope from the member it names is taken (so the
    // impostor's would have been, had it passed): its write lands.
    let member_cert = (read_pem(&format!("node-{}.pem", victim.node.0)), read_pem(&format!("node-{}-key.pem", victim.node.0)));
    let ack = stream_envelopes(&addr, tls_to(&ca_pem, leader, Some(&member_cert)), vec![forward_envelope(victim, ballot, (1 << 60) + 2, "control/x")])
        .await
        .expect("a member's certificate passes the handshake");
    assert_eq!((ack.received, ack.dropped), (1, 0), "the member's own envelope is taken");
    let r = poll(Duration::from_secs(10), "the member's forwarded write applies", || async {
        c.req(leader, Method::GET, "/v1/kv/control/x", &[], "").await.ok().filter(|r| r.status == 200)
    })
    .await;
    assert_eq!(r.text(), "from-a-peer-message");
    assert_eq!(c.metric(leader, MISMATCH).await, Some(now_mismatches), "the member's envelope was not counted as a mismatch");
    // Nothing of the impostor took effect: the leader still leads under the same ballot.
    let (ballot_now, _) = ballot_and_members(&c, leader).await;
    assert_eq!(ballot_now, ballot, "the impostor's Prepare moved the leader's ballot");
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader, "the impostor's Prepare deposed the leader");
    // A snapshot stream from node 9's certificate claiming the member is refused at its first
    // chunk, before anything of it is decoded.
    let mismatches = c.metric(leader, MISMATCH).await.unwrap();
    let chunk = pb::SnapshotChunk {
        from: Some(pb::Member { node: victim.node.0, incarnation: victim.incarnation.0 }),
        offset: 0,
        data: b"not a snapshot".to_vec(),
        done: true,
        meta: None,
        total_bytes: 14,
    };
    let mut client = peer_client(&addr, Some(tls_to(&ca_pem, leader, Some(&node9)))).await.expect("node 9's certificate passes the handshake");
    let ack = client.install_snapshot(tokio_stream::iter(vec![chunk])).await.expect("the snapshot call is answered").into_inner();
    assert!(!ack.installed && ack.error.contains(&format!("does not name node-{}.synod", victim.node.0)), "{ack:?}");
    metric_rises(&c, leader, MISMATCH, mismatches, "a snapshot chunk claiming another sender").await;

    // (d) No escalation through a relay: a member's certificate calling `Forward` on the leader
    // with the grant of a token that may write only under `app/`.
    let app_only = || Some(pb::Grant { admin: false, read: vec![], write: vec![b"app/".to_vec()], name: "relayed-app".into() });
    let member_tls = || Some(tls_to(&ca_pem, leader, Some(&member_cert)));
    let forbidden_before = c.metric(leader, FORBIDDEN).await.unwrap();
    let r = forward(&addr, member_tls(), relayed_put("other/x", "escalated", app_only())).await.expect("a member's Forward is answered");
    assert_eq!(r.status, 403, "a relayed PUT outside the carried grant: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(reply_json(&r)["type"], "/problems/forbidden");
    assert_eq!(reply_json(&r)["token"], "relayed-app", "the problem names the carried grant");
    let r = forward(&addr, member_tls(), relayed_put("app/x", "relayed", app_only())).await.expect("a member's Forward is answered");
    assert!((200..300).contains(&r.status), "a relayed PUT inside the carried grant: {} {}", r.status, String::from_utf8_lossy(&r.body));
    // The grant holds for every route: not an admin, so no status.
    let status_req = pb::ForwardRequest { method: "GET".into(), path_and_query: "/v1/status".into(), headers: vec![], body: vec![], hops: 1, grant: app_only() };
    let r = forward(&addr, member_tls(), status_req).await.expect("a member's Forward is answered");
    assert_eq!(r.status, 403, "a relayed status request of a non-admin grant: {}", String::from_utf8_lossy(&r.body));
    // A read outside the grant's read prefixes (it has none).
    let read_req = pb::ForwardRequest { method: "GET".into(), path_and_query: "/v1/kv/app/x".into(), headers: vec![], body: vec![], hops: 1, grant: app_only() };
    let r = forward(&addr, member_tls(), read_req).await.expect("a member's Forward is answered");
    assert_eq!(r.status, 403, "a relayed read of a grant without read prefixes: {}", String::from_utf8_lossy(&r.body));
    let forbidden_after = c.metric(leader, FORBIDDEN).await.unwrap();
    assert!(forbidden_after >= forbidden_before + 3, "relayed refusals are counted: {forbidden_before} -> {forbidden_after}");
    let r = c.req(leader, Method::GET, "/v1/kv/app/x", &[], "").await.unwrap();
    assert_eq!((r.status, r.text()), (200, "relayed".to_string()));
    let r = c.req(leader, Method::GET, "/v1/kv/other/x", &[], "").await.unwrap();
    assert_eq!(r.status, 404, "the refused relayed write did not happen: {}", r.text());

    // (d') Only registered replicas relay, and a relay names its grant: node 9's certificate
    // (this CA, not a member) cannot call `Forward` at all; a member that sends no grant gets
    // nothing (this replica authenticates clients); etcd's client certificate (etcd's own CA)
    // does not even pass the handshake; a wildcard certificate speaks for no node.
    let node9_tls = || Some(tls_to(&ca_pem, leader, Some(&node9)));
    let unknown = c.metric(leader, UNKNOWN).await.unwrap();
    let r = forward(&addr, node9_tls(), relayed_put(STRANGER_KEY, "node 9", app_only())).await;
    assert!(r.as_ref().is_err_and(|e| e.contains("no member or registered replica")), "node 9's Forward: {r:?}");
    metric_rises(&c, leader, UNKNOWN, unknown, "a Forward from a certificate of no member").await;
    let r = forward(&addr, member_tls(), relayed_put(STRANGER_KEY, "no grant", None)).await.expect("a member's Forward is answered");
    assert_eq!(r.status, 403, "a relayed PUT without a grant on a replica with tokens: {}", String::from_utf8_lossy(&r.body));
    let etcd_client = (read_pem("etcd-client.pem"), read_pem("etcd-client-key.pem"));
    let refused = c.metric(leader, REFUSED).await.unwrap();
    let r = forward(&addr, Some(tls_to(&ca_pem, leader, Some(&etcd_client))), relayed_put(STRANGER_KEY, "etcd", None)).await;
    assert!(r.is_err(), "etcd's client certificate on the gRPC port: {r:?}");
    metric_rises(&c, leader, REFUSED, refused, "etcd's client certificate").await;
    let now = time::OffsetDateTime::now_utc();
    let wildcard = ca.issue("wildcard", &["*.synod".to_string()], now - time::Duration::hours(1), now + time::Duration::days(1)).unwrap();
    let ack = stream_envelopes(&addr, tls_to(&ca_pem, leader, Some(&wildcard)), vec![forward_envelope(victim, ballot, (1 << 60) + 3, STRANGER_KEY)])
        .await
        .expect("the wildcard certificate passes the handshake");
    assert_eq!((ack.received, ack.dropped), (1, 1), "a wildcard certificate speaks for no node");

    // After all of it: the refusals were each counted once at least, the cluster serves writes
    // through a follower (forwarding over mutual TLS), and no stranger wrote anything.
    assert!(after_expired >= before + 4, "four refused handshakes: {before} -> {after_expired}");
    for f in &followers {
        let r = call(&c, *f, Some(APP_TOKEN), Method::PUT, &format!("/v1/kv/app/after-{f}"), &[], "ok").await;
        assert_2xx(&r, &format!("a write through follower {f} after the strangers"));
    }
    for id in 1..=3 {
        let r = c.req(id, Method::GET, &format!("/v1/kv/{STRANGER_KEY}"), &[], "").await.unwrap();
        assert_eq!(r.status, 404, "node {id}: a stranger's write exists: {}", r.text());
    }
    assert_eq!(c.wait_leader(Duration::from_secs(10)).await, leader, "leadership never moved");

    // (b) A replica given another node's certificate (node 2's for --id 1) refuses to start,
    // naming the name it needed. Its etcd prefix is its own: were the check missing, it would
    // not disturb the cluster.
    let f = |name: &str| certs.join(name).display().to_string();
    let mut cmd = std::process::Command::new(common::synod_bin());
    cmd.arg("node")
        .arg("--id=1")
        .arg(format!("--http-listen=127.0.0.1:{}", driver::dev::free_port()))
        .arg(format!("--grpc-listen=127.0.0.1:{}", driver::dev::free_port()))
        .arg(format!("--tls-ca={}", f("ca.pem")))
        .arg(format!("--tls-cert={}", f("node-2.pem")))
        .arg(format!("--tls-key={}", f("node-2-key.pem")))
        .args(c.common.iter().filter(|a| !a.starts_with("--bootstrap")))
        .arg("--bootstrap=1")
        .arg("--prefix=/wrong-certificate-test/")
        .arg("--bootstrap-timeout=5")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("synod node starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a replica with node 2's certificate as node 1 still runs after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "it exited successfully: {text}");
    assert!(text.contains("node-1.synod"), "the error names node-1.synod: {text}");
    assert!(text.contains("node-2.pem"), "the error names the certificate file: {text}");
}

/// What a case of the REST matrix expects.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// 2xx.
    Ok,
    /// 403 `forbidden` naming this token.
    Forbidden(&'static str),
    /// Exactly this status.
    Status(u16),
}

/// One case of the REST matrix: (token name, method, path, headers, body, expected answer).
type Case = (&'static str, Method, &'static str, Vec<(&'static str, String)>, &'static str, Want);

/// The tokens of the matrix by name.
fn token_of(name: &str) -> Option<&'static str> {
    match name {
        "app" => Some(APP_TOKEN),
        "reader" => Some(READER_TOKEN),
        "writer" => Some(WRITER_TOKEN),
        _ => None,
    }
}

/// Open a change stream on node `id` with `token`.
async fn watch(c: &Cluster, id: u64, token: Option<&str>, path: &str) -> Opened {
    watch_client::open_with(c.url(id), path, None, &c.sec().access(token)).await.expect("the stream request is answered")
}

/// The events of `s` until one of kind `kind` (skipping progress events), within `within`;
/// `None` if the stream ended first.
async fn next_event_of(s: &mut watch_client::Stream, kind: &str, within: Duration) -> Option<watch_client::Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => panic!("no {kind} event within {within:?}"),
            Ok(Err(e)) => panic!("the stream broke: {e:#}"),
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(ev))) if ev.event == kind => return Some(ev),
            Ok(Ok(Some(ev))) if ev.event == "progress" => {}
            Ok(Ok(Some(ev))) => panic!("waiting for {kind}, got {ev:?}"),
        }
    }
}

/// Every REST route group answers 401 without a valid token and 403 with a token that does not
/// allow it; admin routes need the admin token; public routes need none; a reload of the token
/// file (SIGHUP) takes effect at once, ends the streams it no longer allows, and keeps the old
/// tokens when the new file does not parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requests_need_a_token_that_allows_them_and_reloads_apply() {
    let mut c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    // A joiner, with a certificate `synod certs` made for it, joins over mutual TLS; the admin
    // API removes it below.
    c.join(4, &[]);

    // Public routes: no token needed.
    for path in ["/livez", "/readyz", "/v1/openapi.json", "/problems/unauthorized", "/problems/forbidden"] {
        let r = call(&c, f, None, Method::GET, path, &[], "").await;
        assert_eq!(r.status, 200, "public {path} without a token: {}", r.text());
    }

    // Plain HTTP on the HTTPS port is refused at the handshake, and counted.
    let before = c.metric(f, CLIENT_REFUSED).await.expect("the client refusal counter");
    let plain = c.url(f).replacen("https://", "http://", 1);
    let r = driver::client::HttpClient::new().get(&format!("{plain}/v1/kv/app/k")).await;
    assert!(r.as_ref().map_or(true, |r| r.status != 200), "plain HTTP on the HTTPS port was served: {r:?}");
    metric_rises(&c, f, CLIENT_REFUSED, before, "plain HTTP on the HTTPS port").await;

    // Every route, as (method, path, body).
    let admin_routes: Vec<(Method, &str, &str)> = vec![
        (Method::GET, "/metrics", ""),
        (Method::GET, "/v1/status", ""),
        (Method::GET, "/v1/cluster/status", ""),
        (Method::GET, "/v1/cluster/members", ""),
        (Method::POST, "/v1/cluster/members", r#"{"id":4}"#),
        (Method::DELETE, "/v1/cluster/members/4", ""),
        (Method::GET, "/v1/snapshot", ""),
    ];
    let key_routes: Vec<(Method, &str, &str)> = vec![
        (Method::GET, "/v1/kv/app/k", ""),
        (Method::GET, "/v1/kv/app/?prefix=true", ""),
        (Method::GET, "/v1/kv/app/k?wait_index=1&wait=1s", ""),
        (Method::PUT, "/v1/kv/app/k", "v"),
        (Method::DELETE, "/v1/kv/app/k", ""),
        (Method::GET, "/v1/kv?prefix=app/", ""),
        (Method::DELETE, "/v1/kv?prefix=app/", ""),
        (Method::POST, "/v1/batch/get", r#"{"keys":["app/k"]}"#),
        (Method::POST, "/v1/batch/put", r#"{"ops":[{"op":"put","key":"app/k","value":"v"}]}"#),
        (Method::POST, "/v1/rmw", r#"{"op":"incr","key":"app/n"}"#),
    ];

    // 401: no token, an unknown token, a header that is not a bearer token.
    let unauthenticated = c.metric(f, UNAUTHENTICATED).await.expect("the 401 counter");
    let mut refused = 0;
    for (method, path, body) in admin_routes.iter().chain(&key_routes) {
        let what = format!("{method} {path}");
        let r = call(&c, f, None, method.clone(), path, &[json_ct()], body).await;
        assert_401(&r, CHALLENGE, &format!("{what} without a token"));
        let r = call(&c, f, Some("not-a-token-of-this-cluster"), method.clone(), path, &[json_ct()], body).await;
        assert_401(&r, CHALLENGE_UNKNOWN, &format!("{what} with an unknown token"));
        let r = call(&c, f, None, method.clone(), path, &[json_ct(), ("authorization", format!("Basic {APP_TOKEN}"))], body).await;
        assert_problem(&r, 401, "unauthorized", &format!("{what} with a Basic header"));
        assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with(r#"Bearer realm="synod", error="invalid_request""#)), "{what}: {:?}", r.headers);
        refused += 3;
    }
    for token in [None, Some("not-a-token-of-this-cluster")] {
        match watch(&c, f, token, "/v1/watch/app/k").await {
            Opened::Refused(401, body) => assert!(body.contains("/problems/unauthorized"), "{body}"),
            Opened::Refused(s, body) => panic!("a watch with token {token:?}: {s} {body}"),
            Opened::Stream(_) => panic!("a watch with token {token:?} opened"),
        }
        refused += 1;
    }
    let now = c.metric(f, UNAUTHENTICATED).await.unwrap();
    assert!(now >= unauthenticated + refused, "every 401 is counted: {unauthenticated} -> {now}, {refused} refusals");
    // Nothing of it happened.
    // (`call` retries a 503: a leader change while the joiner is added is not what is tested.)
    let admin = c.sec().admin.clone();
    let r = call(&c, leader, Some(&admin), Method::GET, "/v1/kv?prefix=app/", &[], "").await;
    assert_eq!((r.status, r.json()["entries"].as_array().map(Vec::len)), (200, Some(0)), "a refused request wrote: {}", r.text());

    // Admin routes: 403 for a token that is not an admin's, 2xx for the admin's.
    c.wait_acceptors(&[1, 2, 3, 4], &[1, 2, 3, 4], Duration::from_secs(60)).await;
    let forbidden = c.metric(f, FORBIDDEN).await.expect("the 403 counter");
    let mut dispatched_403 = 0;
    for (method, path, body) in &admin_routes {
        for name in ["app", "reader"] {
            let r = call(&c, f, token_of(name), method.clone(), path, &[json_ct()], body).await;
            assert_403(&r, name, &format!("{method} {path} with the {name} token"));
            dispatched_403 += 1;
        }
    }
    for path in ["/metrics", "/v1/status", "/v1/cluster/status", "/v1/cluster/members", "/v1/snapshot"] {
        let r = call(&c, f, Some(&c.sec().admin), Method::GET, path, &[], "").await;
        assert_eq!(r.status, 200, "{path} with the admin token: {}", r.text());
    }
    // The console's view: every member's own status, asked over mutual TLS with the grant.
    let r = call(&c, f, Some(&c.sec().admin), Method::GET, "/v1/cluster/status", &[], "").await;
    let members = r.json()["members"].as_array().cloned().unwrap_or_default();
    assert!(members.len() >= 3 && members.iter().filter(|m| m["ok"] == true).count() >= 3, "every live member answers: {}", r.text());
    // The console's files need no token (the page asks for one) and say nothing of the store.
    let r = call(&c, f, None, Method::GET, "/ui/", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Synod console") && r.header("x-synod-index").is_none());
    // Past the gate: the id is not a registered process.
    let r = call(&c, f, Some(&c.sec().admin), Method::POST, "/v1/cluster/members", &[json_ct()], r#"{"id":77}"#).await;
    assert_problem(&r, 409, "not-registered", "adding an unknown process with the admin token");
    let r = call(&c, f, Some(&c.sec().admin), Method::DELETE, "/v1/cluster/members/4", &[], "").await;
    assert_eq!(r.status, 202, "removing node 4 with the admin token: {}", r.text());
    c.wait_acceptors(&[1, 2, 3], &[1, 2, 3], Duration::from_secs(60)).await;
    c.kill9(4);

    // Keys: the matrix, on a follower (writes are relayed to the leader with their grant).
    for (key, value) in [("app/k", "v0"), ("app/sub/s", "s0"), ("other/k", "o0")] {
        let r = call(&c, leader, Some(&admin), Method::PUT, &format!("/v1/kv/{key}"), &[], value).await;
        assert_2xx(&r, &format!("the admin writes {key}"));
    }
    let if_match = || vec![("if-match", "\"1\"".to_string())];
    let if_none_match = || vec![("if-none-match", "*".to_string())];
    let json = || vec![json_ct()];
    let none: fn() -> Vec<(&'static str, String)> = Vec::new;
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // One key, a prefix, a range.
        ("reader", Method::GET, "/v1/kv/app/k", none(), "", Want::Ok),
        ("app", Method::GET, "/v1/kv/app/k", none(), "", Want::Ok),
        ("writer", Method::GET, "/v1/kv/app/k", none(), "", Want::Forbidden("writer")),
        ("app", Method::GET, "/v1/kv/other/k", none(), "", Want::Forbidden("app")),
        ("reader", Method::GET, "/v1/kv/app/?prefix=true", none(), "", Want::Ok),
        ("reader", Method::GET, "/v1/kv/ap?prefix=true", none(), "", Want::Forbidden("reader")),
        ("reader", Method::GET, "/v1/kv?prefix=app/", none(), "", Want::Ok),
        ("reader", Method::GET, "/v1/kv?start=app/a&end=app/z", none(), "", Want::Ok),
        ("reader", Method::GET, "/v1/kv?prefix=ap", none(), "", Want::Forbidden("reader")),
        ("reader", Method::GET, "/v1/kv?start=app/&end=b", none(), "", Want::Forbidden("reader")),
        ("app", Method::GET, "/v1/kv?start=a&end=z", none(), "", Want::Forbidden("app")),
        ("writer", Method::GET, "/v1/kv?prefix=app/", none(), "", Want::Forbidden("writer")),
        // Writes through the follower.
        ("writer", Method::PUT, "/v1/kv/app/w1", none(), "1", Want::Status(201)),
        ("reader", Method::PUT, "/v1/kv/app/w2", none(), "1", Want::Forbidden("reader")),
        ("app", Method::PUT, "/v1/kv/other/w", none(), "1", Want::Forbidden("app")),
        ("writer", Method::PUT, "/v1/kv/app/k", if_match(), "x", Want::Forbidden("writer")),
        ("writer", Method::PUT, "/v1/kv/app/k", if_none_match(), "x", Want::Forbidden("writer")),
        ("app", Method::PUT, "/v1/kv/app/k", if_none_match(), "x", Want::Status(412)),
        ("writer", Method::DELETE, "/v1/kv/app/w1", none(), "", Want::Ok),
        ("reader", Method::DELETE, "/v1/kv/app/k", none(), "", Want::Forbidden("reader")),
        ("writer", Method::DELETE, "/v1/kv/app/k", if_match(), "", Want::Forbidden("writer")),
        ("app", Method::DELETE, "/v1/kv/other/k", none(), "", Want::Forbidden("app")),
        // Range deletes.
        ("writer", Method::PUT, "/v1/kv/app/tmp/1", none(), "1", Want::Status(201)),
        ("reader", Method::DELETE, "/v1/kv?prefix=app/tmp/", none(), "", Want::Forbidden("reader")),
        ("writer", Method::DELETE, "/v1/kv?prefix=ap", none(), "", Want::Forbidden("writer")),
        ("app", Method::DELETE, "/v1/kv?start=a&end=z", none(), "", Want::Forbidden("app")),
        ("writer", Method::DELETE, "/v1/kv?prefix=app/tmp/", none(), "", Want::Ok),
        // Batches.
        ("reader", Method::POST, "/v1/batch/get", json(), r#"{"keys":["app/k","app/sub/s"]}"#, Want::Ok),
        ("reader", Method::POST, "/v1/batch/get", json(), r#"{"keys":["app/k","other/k"]}"#, Want::Forbidden("reader")),
        ("writer", Method::POST, "/v1/batch/get", json(), r#"{"keys":["app/k"]}"#, Want::Forbidden("writer")),
        ("writer", Method::POST, "/v1/batch/put", json(), r#"{"ops":[{"op":"put","key":"app/b1","value":"1"},{"op":"delete","key":"app/b2"}]}"#, Want::Ok),
        ("writer", Method::POST, "/v1/batch/put", json(), r#"{"ops":[{"op":"put","key":"app/b1","value":"1"},{"op":"put","key":"other/b","value":"1"}]}"#, Want::Forbidden("writer")),
        ("reader", Method::POST, "/v1/batch/put", json(), r#"{"ops":[{"op":"put","key":"app/b1","value":"1"}]}"#, Want::Forbidden("reader")),
        ("writer", Method::POST, "/v1/batch/put", json(), r#"{"ops":[{"op":"put","key":"app/b1","value":"2","guard":{"exists":true}}]}"#, Want::Forbidden("writer")),
        ("app", Method::POST, "/v1/batch/put", json(), r#"{"ops":[{"op":"put","key":"app/b1","value":"2","guard":{"exists":true}}]}"#, Want::Ok),
        // Read-modify-write needs both.
        ("writer", Method::POST, "/v1/rmw", json(), r#"{"op":"incr","key":"app/n"}"#, Want::Forbidden("writer")),
        ("reader", Method::POST, "/v1/rmw", json(), r#"{"op":"incr","key":"app/n"}"#, Want::Forbidden("reader")),
        ("app", Method::POST, "/v1/rmw", json(), r#"{"op":"incr","key":"app/n"}"#, Want::Ok),
        ("writer", Method::POST, "/v1/rmw", json(), r#"{"op":"append","key":"app/log","value":"x"}"#, Want::Forbidden("writer")),
        ("app", Method::POST, "/v1/rmw", json(), r#"{"op":"append","key":"app/log","value":"x"}"#, Want::Ok),
        ("writer", Method::POST, "/v1/rmw", json(), r#"{"op":"cas","key":"app/n","expected":"1","new":"2"}"#, Want::Forbidden("writer")),
        ("app", Method::POST, "/v1/rmw", json(), r#"{"op":"cas","key":"app/n","expected":"1","new":"2"}"#, Want::Ok),
        ("app", Method::POST, "/v1/rmw", json(), r#"{"op":"incr","key":"other/n"}"#, Want::Forbidden("app")),
        // Long-polls.
        ("writer", Method::GET, "/v1/kv/app/k?wait_index=1&wait=1s", none(), "", Want::Forbidden("writer")),
        ("app", Method::GET, "/v1/kv/other/k?wait_index=1&wait=1s", none(), "", Want::Forbidden("app")),
        ("reader", Method::GET, "/v1/kv/ap?prefix=true&wait_index=1&wait=1s", none(), "", Want::Forbidden("reader")),
    ];
    for (name, method, path, headers, body, want) in &cases {
        let what = format!("{method} {path} {headers:?} {body} with the {name} token on node {f}");
        let r = call(&c, f, token_of(name), method.clone(), path, headers, body).await;
        match want {
            Want::Ok => assert_2xx(&r, &what),
            Want::Status(s) => assert_eq!(r.status, *s, "{what}: {}", r.text()),
            Want::Forbidden(token) => {
                assert_403(&r, token, &what);
                dispatched_403 += 1;
            }
        }
    }
    // What the allowed ones did, and that the refused ones did nothing.
    for (key, want) in [("app/k", Some("v0")), ("app/w1", None), ("app/w2", None), ("other/w", None), ("other/k", Some("o0")), ("app/tmp/1", None), ("app/b1", Some("2")), ("other/b", None), ("app/n", Some("2")), ("app/log", Some("x")), ("other/n", None)] {
        let r = c.req(leader, Method::GET, &format!("/v1/kv/{key}"), &[], "").await.unwrap();
        match want {
            Some(v) => assert_eq!((r.status, r.text()), (200, v.to_string()), "{key}"),
            None => assert_eq!(r.status, 404, "{key}: {}", r.text()),
        }
    }
    // A long-poll with a token that may read: answered after its wait, with the value.
    let index = call(&c, f, Some(READER_TOKEN), Method::GET, "/v1/kv/app/k", &[], "").await.index().expect("an index");
    let started = Instant::now();
    let r = call(&c, f, Some(READER_TOKEN), Method::GET, &format!("/v1/kv/app/k?wait_index={index}&wait=1s"), &[], "").await;
    assert_eq!((r.status, r.text()), (200, "v0".to_string()), "a long-poll with the reader token");
    assert!(started.elapsed() >= Duration::from_millis(900), "the long-poll waited: {:?}", started.elapsed());
    let now = c.metric(f, FORBIDDEN).await.unwrap();
    assert!(now >= forbidden + dispatched_403, "every 403 is counted: {forbidden} -> {now}, {dispatched_403} refusals");

    // A redirect to the leader keeps the scheme (a client following it sends its token over
    // TLS again), and the leader serves it.
    let r = call(&c, f, Some(APP_TOKEN), Method::PUT, "/v1/kv/app/redirected?redirect=true", &[], "r").await;
    assert_eq!(r.status, 307, "a write on a follower with redirect=true: {}", r.text());
    let location = r.header("location").expect("a Location").to_string();
    let want = format!("{}/v1/kv/app/redirected?redirect=true", c.url(leader));
    assert_eq!(location, want, "the redirect names the leader's https:// URL");
    let r = c.sec().anon.request(Method::PUT, &location, &[("authorization", format!("Bearer {APP_TOKEN}"))], "r", Duration::from_secs(10)).await.expect("the redirect is followed");
    assert_eq!(r.status, 201, "the redirected write: {}", r.text());

    // Change streams: 403 at the open for a token that may not read all of it.
    for (name, path) in [("writer", "/v1/watch/app/k"), ("app", "/v1/watch/other/k"), ("reader", "/v1/watch/ap?prefix=true"), ("reader", "/v1/watch/?prefix=true")] {
        match watch(&c, f, token_of(name), path).await {
            Opened::Refused(403, body) => {
                let p: serde_json::Value = serde_json::from_str(&body).expect("a problem body");
                assert_eq!((p["type"].as_str(), p["token"].as_str()), (Some("/problems/forbidden"), Some(name)), "{path}: {body}");
            }
            Opened::Refused(s, body) => panic!("a watch of {path} with the {name} token: {s} {body}"),
            Opened::Stream(_) => panic!("a watch of {path} with the {name} token opened"),
        }
    }

    // (e) SIGHUP: a token file with two more tokens, then without one and with the other
    // narrowed, then one that does not parse.
    const VICTIM: &str = "victim-token-0123456789abcdef";
    const NARROWED: &str = "narrowed-token-0123456789abcdef";
    let reloads = |c: &Cluster| log_lines(c, f, &["token file reloaded"]).len();
    let mut tokens = common::test_tokens(&admin);
    tokens.push(serde_json::json!({ "name": "victim", "token": VICTIM, "read": ["app/"] }));
    tokens.push(serde_json::json!({ "name": "narrowed", "token": NARROWED, "read": ["app/"] }));
    c.sec().write_tokens(&tokens);
    let r = call(&c, f, Some(VICTIM), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_401(&r, CHALLENGE_UNKNOWN, "a token added to the file before the SIGHUP");
    let n = reloads(&c);
    c.signal(f, "HUP");
    poll(Duration::from_secs(10), "node f logs the reload", || async { (reloads(&c) > n).then_some(()) }).await;
    for token in [VICTIM, NARROWED] {
        let r = call(&c, f, Some(token), Method::GET, "/v1/kv/app/k", &[], "").await;
        assert_eq!((r.status, r.text()), (200, "v0".to_string()), "a token added by the reload");
    }
    let Opened::Stream(mut removed_stream) = watch(&c, f, Some(VICTIM), "/v1/watch/app/?prefix=true").await else { panic!("the victim's stream opens") };
    let Opened::Stream(mut narrowed_stream) = watch(&c, f, Some(NARROWED), "/v1/watch/app/k").await else { panic!("the narrowed token's stream opens") };
    let Opened::Stream(mut app_stream) = watch(&c, f, Some(APP_TOKEN), "/v1/watch/app/k").await else { panic!("the app token's stream opens") };
    let r = call(&c, leader, Some(&admin), Method::PUT, "/v1/kv/app/k", &[], "v1").await;
    assert_2xx(&r, "a write the streams see");
    for (who, s) in [("victim", &mut removed_stream), ("narrowed", &mut narrowed_stream), ("app", &mut app_stream)] {
        let ev = next_event_of(s, "put", Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{who}'s stream ended"));
        assert!(ev.data.contains("app/k"), "{who}: {ev:?}");
    }

    let mut tokens = common::test_tokens(&admin);
    tokens.push(serde_json::json!({ "name": "narrowed", "token": NARROWED, "read": ["app/sub/"] }));
    c.sec().write_tokens(&tokens);
    let n = reloads(&c);
    c.signal(f, "HUP");
    poll(Duration::from_secs(10), "node f logs the second reload", || async { (reloads(&c) > n).then_some(()) }).await;
    let r = call(&c, f, Some(VICTIM), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_401(&r, CHALLENGE_UNKNOWN, "a token the reload removed");
    let r = call(&c, f, Some(NARROWED), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_403(&r, "narrowed", "a token the reload narrowed, outside its new prefix");
    let r = call(&c, f, Some(NARROWED), Method::GET, "/v1/kv/app/sub/s", &[], "").await;
    assert_eq!((r.status, r.text()), (200, "s0".to_string()), "a token the reload narrowed, inside its new prefix");
    for (who, s) in [("victim", &mut removed_stream), ("narrowed", &mut narrowed_stream)] {
        let ev = next_event_of(s, "unauthorized", Duration::from_secs(10)).await.unwrap_or_else(|| panic!("{who}'s stream ended without event: unauthorized"));
        assert!(ev.data.contains("reloaded"), "{who}: {ev:?}");
        assert!(matches!(tokio::time::timeout(Duration::from_secs(5), s.next()).await, Ok(Ok(None))), "{who}'s stream ends after event: unauthorized");
    }
    // A stream the reload still allows goes on.
    let r = call(&c, leader, Some(&admin), Method::PUT, "/v1/kv/app/k", &[], "v2").await;
    assert_2xx(&r, "a write after the reload");
    let ev = next_event_of(&mut app_stream, "put", Duration::from_secs(10)).await.expect("the app token's stream goes on");
    assert!(ev.data.contains("v2"), "{ev:?}");

    // A file that does not parse: NOT reloaded, the tokens stay as the last good file had them.
    c.sec().write_tokens_text(r#"{"tokens": [ {"name": "broken", "#);
    let not_reloaded = |c: &Cluster| log_lines(c, f, &["token file NOT reloaded"]).len();
    let n = not_reloaded(&c);
    c.signal(f, "HUP");
    poll(Duration::from_secs(10), "node f logs that it did NOT reload", || async { (not_reloaded(&c) > n).then_some(()) }).await;
    let r = call(&c, f, Some(APP_TOKEN), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_eq!((r.status, r.text()), (200, "v2".to_string()), "the app token after a broken file");
    let r = call(&c, f, Some(&admin), Method::GET, "/v1/status", &[], "").await;
    assert_eq!(r.status, 200, "the admin token after a broken file");
    let r = call(&c, f, Some(NARROWED), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_403(&r, "narrowed", "the narrowed token after a broken file");
    let r = call(&c, f, Some(VICTIM), Method::GET, "/v1/kv/app/k", &[], "").await;
    assert_401(&r, CHALLENGE_UNKNOWN, "the removed token after a broken file");
}

/// A lease id is no capability (etcd's rule): revoking a lease needs a token that may write
/// every key attached to it, and so does keeping it alive. Lease ids are log indexes, easy to
/// guess: before this, any token that may write somewhere could revoke another tenant's lease
/// and so delete its keys (found by review). The refusal names no key; a lease with no keys, or
/// only keys the token may write, is revoked as before, through a follower or the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_revoked_or_kept_alive_only_by_a_token_that_may_write_its_keys() {
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let admin = c.sec().admin.clone();
    let grant = |token: String| {
        let c = &c;
        async move {
            let r = call(c, leader, Some(&token), Method::POST, "/v1/leases", &[json_ct()], r#"{"ttl_ms":60000}"#).await;
            assert_eq!(r.status, 201, "a grant: {}", r.text());
            r.json()["id"].as_u64().expect("an id")
        }
    };
    let attach = |token: String, key: &'static str, lease: u64| {
        let c = &c;
        async move {
            let r = call(c, leader, Some(&token), Method::PUT, &format!("/v1/kv/{key}?lease={lease}"), &[], "v").await;
            assert_2xx(&r, &format!("{key} attached to lease {lease}"));
        }
    };
    // Another tenant's leases: one with a key outside app/, one with a key in app/ and one
    // outside; and one of app's own.
    let victim = grant(admin.clone()).await;
    attach(admin.clone(), "other/victim", victim).await;
    let mixed = grant(admin.clone()).await;
    attach(admin.clone(), "app/mixed", mixed).await;
    attach(admin.clone(), "other/mixed", mixed).await;
    let own = grant(APP_TOKEN.to_string()).await;
    attach(APP_TOKEN.to_string(), "app/own", own).await;
    // The follower has applied them (a keepalive is checked against its applied state).
    poll(Duration::from_secs(10), "the follower applied the attachments", || async {
        let r = c.req_as(f, Some(&admin), Method::GET, "/v1/kv/app/own?consistency=sequential", &[], "").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    for via in [f, leader] {
        for id in [victim, mixed] {
            for (what, method, path) in [("revoke", Method::DELETE, format!("/v1/leases/{id}")), ("keepalive", Method::POST, format!("/v1/leases/{id}/keepalive"))] {
                for name in ["app", "writer"] {
                    let r = call(&c, via, token_of(name), method.clone(), &path, &[], "").await;
                    let what = format!("a {what} of lease {id} by {name} on node {via}");
                    assert_403(&r, name, &what);
                    assert!(!r.text().contains("other/"), "{what}: the refusal names no key the token may not read: {}", r.text());
                }
            }
        }
    }
    // Nothing of it happened: the keys and the leases are there.
    for key in ["other/victim", "app/mixed", "other/mixed"] {
        let r = call(&c, leader, Some(&admin), Method::GET, &format!("/v1/kv/{key}"), &[], "").await;
        assert_eq!(r.status, 200, "{key} survived: {}", r.text());
    }
    for id in [victim, mixed] {
        assert_eq!(call(&c, leader, Some(&admin), Method::GET, &format!("/v1/leases/{id}"), &[], "").await.status, 200, "lease {id} survived");
    }

    // A lease whose keys the token may write: kept alive and revoked as before (the writer token
    // may write app/ too, and reads nothing).
    let r = call(&c, f, Some(APP_TOKEN), Method::POST, &format!("/v1/leases/{own}/keepalive"), &[], "").await;
    assert_eq!(r.status, 200, "app keeps its own lease alive: {}", r.text());
    let r = call(&c, f, Some(WRITER_TOKEN), Method::POST, &format!("/v1/leases/{own}/keepalive"), &[], "").await;
    assert_eq!(r.status, 200, "the writer keeps alive a lease of app/ keys: {}", r.text());
    let r = call(&c, f, Some(APP_TOKEN), Method::DELETE, &format!("/v1/leases/{own}"), &[], "").await;
    assert_eq!((r.status, r.json()["deleted"].as_u64()), (200, Some(1)), "app revokes its own lease: {}", r.text());
    assert_eq!(call(&c, leader, Some(&admin), Method::GET, "/v1/kv/app/own", &[], "").await.status, 404);
    // A lease with no keys: any token that may write somewhere (etcd: the same).
    let empty = grant(admin.clone()).await;
    let r = call(&c, f, Some(APP_TOKEN), Method::DELETE, &format!("/v1/leases/{empty}"), &[], "").await;
    assert_eq!(r.status, 200, "a lease with no keys: {}", r.text());
    // A lease that does not exist: 404 as before.
    let r = call(&c, f, Some(APP_TOKEN), Method::DELETE, &format!("/v1/leases/{empty}"), &[], "").await;
    assert_problem(&r, 404, "lease-not-found", "revoking a lease again");
    // A token that may not write at all: 403 whatever the lease.
    assert_403(&call(&c, f, Some(READER_TOKEN), Method::DELETE, &format!("/v1/leases/{victim}"), &[], "").await, "reader", "the reader revokes");
    // The admin token may write everything: it revokes the victim's lease, and its key goes.
    let r = call(&c, f, Some(&admin), Method::DELETE, &format!("/v1/leases/{victim}"), &[], "").await;
    assert_eq!((r.status, r.json()["deleted"].as_u64()), (200, Some(1)), "the admin revokes: {}", r.text());
    assert_eq!(call(&c, leader, Some(&admin), Method::GET, "/v1/kv/other/victim", &[], "").await.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Product bugs these tests found, each a reproduction that fails today (`--ignored` runs them).
// Remove the `ignore` once fixed.

/// A long-poll opened with a token that a reload then removes answers 401 after its wait, not
/// with a value written after the removal (found by this test: `long_poll` checked the grant
/// only when it started; it now re-reads the token file after waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_ends_when_its_token_is_removed() {
    const VICTIM: &str = "victim-token-0123456789abcdef";
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let admin = c.sec().admin.clone();
    let mut tokens = common::test_tokens(&admin);
    tokens.push(serde_json::json!({ "name": "victim", "token": VICTIM, "read": ["app/"] }));
    c.sec().write_tokens(&tokens);
    c.signal(f, "HUP");
    let r = poll(Duration::from_secs(10), "the victim token is loaded", || async {
        c.req_as(f, Some(VICTIM), Method::GET, "/v1/kv/app/lp?consistency=sequential", &[], "").await.ok().filter(|r| r.status == 404)
    })
    .await;
    let url = format!("{}/v1/kv/app/lp?wait_index={}&wait=5s", c.url(f), r.index().unwrap());
    let anon = c.sec().anon.clone();
    let long_poll = tokio::spawn(async move { anon.request(Method::GET, &url, &[("authorization", format!("Bearer {VICTIM}"))], "", Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.sec().write_tokens(&common::test_tokens(&admin));
    c.signal(f, "HUP");
    poll(Duration::from_secs(10), "the victim token is removed", || async {
        c.req_as(f, Some(VICTIM), Method::GET, "/v1/kv/app/lp", &[], "").await.ok().filter(|r| r.status == 401)
    })
    .await;
    let r = call(&c, leader, Some(&admin), Method::PUT, "/v1/kv/app/lp", &[], "written-after-the-removal").await;
    assert_2xx(&r, "the admin writes");
    let r = long_poll.await.unwrap().expect("the long-poll is answered");
    assert!(r.status == 401 || r.status == 403, "a long-poll of a removed token answered {} {}", r.status, r.text());
}

/// SIGHUP (the documented way to reload the token file) does not end a replica that is still
/// starting (found by this test: the handler was installed only after etcd, the founders'
/// barrier and the node loop, and SIGHUP's default action ended the process; it is now the
/// first thing `run_node` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_kill_a_starting_replica() {
    let mut c = Cluster::secure_unstarted(3, 2, 1000, &[]).await;
    c.launch(1, &[]);
    // Node 1 loaded its token file and now waits for founders 2 and 3.
    poll(Duration::from_secs(10), "node 1 loads its token file", || async { c.log(1).contains("clients need a bearer token").then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.signal(1, "HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = c.nodes.get_mut(&1).unwrap().child.try_wait().unwrap();
    assert!(status.is_none(), "SIGHUP ended a starting replica: {status:?}");
}

/// A change stream refused 403 at its open is counted in `synod_auth_forbidden_total` (found by
/// this test: streams are served before the dispatcher, which was the only place that counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_stream_is_counted() {
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let before = c.metric(leader, FORBIDDEN).await.unwrap();
    assert!(matches!(watch(&c, leader, Some(WRITER_TOKEN), "/v1/watch/app/k").await, Opened::Refused(403, _)));
    metric_rises(&c, leader, FORBIDDEN, before, "a change stream refused 403").await;
}

/// Exactly-once sessions belong to the token that made them: another token using the same
/// `Idempotency-Key` (or `X-Synod-Session`) gets a session of its own, never the first token's
/// cached answer (which could hold a value it may not read) and no 422 that tells it the key
/// was used; the first token's retry still gets its first answer. Refusals carry no
/// `X-Synod-Index`. (Found by review: sessions were one table for every token.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_belong_to_their_token() {
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let f = (1..=3).find(|i| *i != leader).unwrap();
    let key = || vec![("idempotency-key", "order-42".to_string()), json_ct()];
    let incr = r#"{"op":"incr","key":"app/counter","delta":41,"initial":1}"#;
    let first = call(&c, f, Some(APP_TOKEN), Method::POST, "/v1/rmw", &key(), incr).await;
    assert_2xx(&first, "app's increment");
    assert_eq!(first.json()["value"], 42);
    // The writer token (write on app/, no read) with the same key and another request.
    let other = call(&c, f, Some(WRITER_TOKEN), Method::PUT, "/v1/kv/app/w", &[("idempotency-key", "order-42".to_string())], "w").await;
    assert_eq!(other.status, 201, "another token's request under the same key is its own: {}", other.text());
    assert!(!other.text().contains("42"), "it learns nothing of app's answer: {}", other.text());
    // app's retry is still exactly-once: the first answer, not a second increment.
    let again = call(&c, leader, Some(APP_TOKEN), Method::POST, "/v1/rmw", &key(), incr).await;
    assert_eq!(again.json()["value"], 42, "app's retry: {}", again.text());
    let r = call(&c, leader, Some(APP_TOKEN), Method::GET, "/v1/kv/app/counter", &[], "").await;
    assert_eq!(r.text(), "42");
    // The same for a client session id.
    let sess = |seq: &str| vec![("x-synod-session", "7".to_string()), ("x-synod-seq", seq.to_string())];
    assert_2xx(&call(&c, f, Some(APP_TOKEN), Method::PUT, "/v1/kv/app/s", &sess("1"), "a").await, "app's session write 1");
    assert_2xx(&call(&c, f, Some(APP_TOKEN), Method::PUT, "/v1/kv/app/s", &sess("2"), "b").await, "app's session write 2");
    let r = call(&c, f, Some(WRITER_TOKEN), Method::PUT, "/v1/kv/app/t", &sess("1"), "b").await;
    assert_2xx(&r, "writer's session 7 is not app's (whose sequence number 1 would be stale)");
    // A refusal says nothing of the store.
    let r = call(&c, f, None, Method::GET, "/v1/kv/app/counter", &[], "").await;
    assert_401(&r, CHALLENGE, "no token");
    assert_eq!(r.header("x-synod-index"), None, "a 401 carries no index");
    let r = call(&c, f, Some(WRITER_TOKEN), Method::GET, "/v1/kv/app/counter", &[], "").await;
    assert_403(&r, "writer", "a write-only token reads");
    assert_eq!(r.header("x-synod-index"), None, "a 403 carries no index");
}

/// etcd with its own authentication on: a replica given etcd's user and password
/// (`--etcd-user`, `--etcd-password` / `SYNOD_ETCD_PASSWORD`) runs and serves; one without them
/// cannot pass etcd and exits after its bootstrap timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_logs_in_to_an_etcd_with_auth() {
    let mut c = Cluster::unstarted(1, 2, 1000, &["--bootstrap-timeout=5"]).await;
    let mut etcd = driver::etcd::connect(std::slice::from_ref(&c.etcd.endpoint)).await.expect("etcd");
    let _ = etcd.role_add("root").await;
    etcd.user_add("root", "etcd-root-password", None).await.expect("user add");
    etcd.user_grant_role("root", "root").await.expect("grant root");
    etcd.auth_enable().await.expect("auth enable");
    // Without the user: refused by etcd, so the replica never starts serving and exits.
    c.launch(1, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = c.nodes.get_mut(&1).unwrap().child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "a replica without etcd's user still runs after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "it exited successfully");
    // With it: a working replica.
    c.launch(1, &["--etcd-user=root", "--etcd-password=etcd-root-password"]);
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    assert_eq!(leader, 1);
    let r = poll(Duration::from_secs(10), "a write on a replica logged in to etcd", || async {
        c.req(1, Method::PUT, "/v1/kv/k", &[], "v").await.ok().filter(|r| (200..300).contains(&r.status))
    })
    .await;
    assert_2xx(&r, "the write");
    assert_eq!(c.req(1, Method::GET, "/v1/kv/k", &[], "").await.unwrap().text(), "v");
    assert!(c.log(1).contains("the etcd password goes to a plaintext endpoint"), "the replica warns of the password in the clear");
}

/// Under mutual TLS a member keeps its vote when its etcd registration vanishes (an operator's
/// `etcdctl del`, a stray process with its id whose lease went, an etcd outage longer than the
/// lease): peer calls are taken from members of the configuration as well as from registered
/// replicas. (Found by review: with "registered only", deleting two followers' `P/nodes/<id>`
/// stopped a healthy cluster for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_registration_vanished_keep_their_vote() {
    let c = Cluster::secure(3, 2, 1000, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(60)).await;
    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let security = driver::certs::etcd_security(&c.sec().certs).expect("etcd's certificates");
    let mut etcd = driver::etcd::connect_secured(std::slice::from_ref(&c.etcd.endpoint), &security).await.expect("etcd");
    for f in &followers {
        let deleted = etcd.delete(format!("/synod/nodes/{f}"), None).await.expect("delete").deleted();
        assert_eq!(deleted, 1, "node {f}'s registration existed");
    }
    let admin = c.sec().admin.clone();
    let unknown_before = c.metric(leader, UNKNOWN).await.unwrap();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let r = call(&c, leader, Some(&admin), Method::PUT, &format!("/v1/kv/app/after-{n}"), &[], "v").await;
        assert_2xx(&r, &format!("write {n} with both followers' registrations gone"));
        n += 1;
    }
    assert_eq!(c.wait_leader(Duration::from_secs(5)).await, leader, "leadership stayed");
    assert_eq!(c.metric(leader, UNKNOWN).await.unwrap(), unknown_before, "no member's call was refused");
    assert!(n >= 10, "only {n} writes in 4 s");
}
