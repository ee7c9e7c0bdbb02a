//! The client-facing REST API: the route table, forwarding to the leader, the shape of replies.
//!
//! Every request, whether it arrived over HTTP or was relayed by a peer over gRPC `Forward`,
//! goes through [`dispatch`], which runs it through the one route table ([`routes::router`], an
//! axum `Router`). A handler either answers or says "not the leader" (a write, or a linearizable
//! read, on a follower). Then [`dispatch`] redirects (`?redirect=true`: 307 with the leader's
//! URL), forwards the buffered request to the leader over gRPC and relays its answer verbatim, or
//! answers 503 with `Retry-After` when no leader is known or the hop limit is hit (two replicas
//! with different views of the leader must not bounce a request forever).
//!
//! A forwarded write keeps its `Idempotency-Key` / session headers, so retrying it after a
//! timeout or a leader change is exactly-once whichever replica ends up proposing it.
//!
//! Modules: [`routes`] (the table and the operational endpoints), [`kv`] (single keys and
//! ranges), [`batch`] (batches and read-modify-write), [`leases`] (`/v1/leases`), [`locks`]
//! (`/v1/locks`, `/v1/elections`: recipes over leases), [`members`],
//! [`backup`] (`/v1/snapshot`), [`conditional`] (`If-Match`/`If-None-Match`), [`query`] and
//! [`json`] (request parsing), [`problem`] (errors), [`loop_io`] (the only module that talks to
//! the node loop).

pub mod backup;
pub mod auth;
pub mod batch;
pub mod conditional;
pub mod json;
pub mod kv;
pub mod leases;
pub mod locks;
pub mod loop_io;
pub mod members;
pub mod problem;
pub mod query;
pub mod routes;
pub mod ui;
pub mod watch;

use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::node::NodeHandle;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode};
use kvstore::Limits;
use paxos::NodeId;
use problem::Problem;
use proto::pb;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt as _;

pub use loop_io::refused;

/// Most times a request is relayed between replicas before the answer is 503.
pub const MAX_HOPS: u32 = 2;

/// Internal marker on a request whose write must not be handed to the leader by the core
/// (`?redirect=true`): a follower then answers "not leader" and the REST layer redirects.
pub const NO_CORE_FORWARD: &str = "x-synod-internal-no-forward";

/// The header that carries the store index a reply reflects. On a success it is the index the
/// answer reflects (a read) or the index right after the write applied. On a refusal (any 4xx
/// or 5xx) the request changed nothing: the header is then the store index this replica had
/// applied when it answered, which only tells how current the replica was.
pub const INDEX_HEADER: &str = "x-synod-index";

/// On a read reply: how many slots the serving replica's applied state was behind the highest
/// commit point it had heard of when it answered.
pub const LAG_HEADER: &str = "x-synod-lag";

/// On a read reply: milliseconds since the serving replica last heard from the leader (0 on
/// the leader itself; absent if it never has), like Consul's `X-Consul-LastContact`.
pub const LAST_CONTACT_HEADER: &str = "x-synod-last-contact";

/// On a read reply: the node id of the replica whose state answered (the leader, when a
/// replica that is catching up forwarded the read).
pub const SERVED_BY_HEADER: &str = "x-synod-served-by";
/// On a reply to a write with an exactly-once session (`Idempotency-Key`, `X-Synod-Session`):
/// the seconds for which a retry is recognized whatever else happens (the guaranteed window;
/// it is recognized for up to the session TTL while the table has room).
pub const RETRY_WINDOW_HEADER: &str = "x-synod-retry-window";

/// Everything a handler needs. Shared by the HTTP server and the gRPC `Forward` handler.
pub struct Ctx {
    /// This replica.
    pub me: NodeId,
    /// The node loop's input channel.
    pub inputs: NodeHandle,
    /// Peer addresses.
    pub directory: Directory,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Write limits, checked before proposing (413 without spending a slot).
    pub limits: Limits,
    /// How long a write waits for its outcome before 504.
    pub write_timeout: Duration,
    /// How long a read waits (quorum round, `min_index`) before 503.
    pub read_timeout: Duration,
    /// The retry window every exactly-once session keeps (`--session-min-ttl-ms`), told to
    /// clients on every write that carries a session (`X-Synod-Retry-Window`, seconds).
    pub session_window: Duration,
    /// Set on SIGTERM: new requests get 503.
    pub draining: AtomicBool,
    /// The membership keys in etcd (`None` in tests without etcd).
    pub membership: Option<crate::membership::Membership>,
    /// The client tokens (`None`: no authentication, every client may do everything).
    pub auth: Option<Arc<auth::Auth>>,
    /// `https` when the REST port speaks TLS (every replica's, for the redirect's `Location`).
    pub rest_scheme: &'static str,
    /// The route table (built once; the context reaches handlers as a request extension).
    router: axum::Router,
    /// One gRPC connection per leader address for forwarded requests, shared by all of them:
    /// HTTP/2 multiplexes many forwards in flight on it (a connection per request cost a
    /// follower 90% of its throughput).
    /// Keyed by node and address: under TLS a connection is verified as one node, and must not
    /// serve another that etcd later places at the same address.
    forward_channels: std::sync::Mutex<std::collections::BTreeMap<(NodeId, String), tonic::transport::Channel>>,
}

impl Ctx {
    /// A context for replica `me`.
    pub fn new(me: NodeId, inputs: impl Into<NodeHandle>, directory: Directory, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Ctx {
            me,
            inputs: inputs.into(),
            directory,
            metrics,
            limits,
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            session_window: Duration::from_millis(kvstore::StoreConfig::default().session_min_ttl_ms),
            draining: AtomicBool::new(false),
            membership: None,
            auth: None,
            rest_scheme: "http",
            router: routes::router(),
            forward_channels: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// The longest request target (path and query) served: room for a key of the largest size,
    /// percent-encoded (3 bytes a byte), and parameters. Longer is 414.
    pub fn max_uri_bytes(&self) -> usize {
        3 * self.limits.max_key_bytes + 1024
    }

    /// A connection to `addr` that is ready to take a request: the cached one if it is (a
    /// broken one reconnects inside the readiness check), else a fresh one. An error means
    /// nothing was sent.
    async fn forward_channel(&self, leader: NodeId, addr: &str) -> Result<tonic::transport::Channel, String> {
        let cached = self.forward_channels.lock().expect("never poisoned: no panics while held").get(&(leader, addr.to_string())).cloned();
        if let Some(c) = cached {
            let mut grpc = tonic::client::Grpc::new(c.clone());
            match tokio::time::timeout(FORWARD_CONNECT_TIMEOUT, grpc.ready()).await {
                Ok(Ok(())) => return Ok(c),
                _ => {
                    self.forward_channels.lock().expect("never poisoned").remove(&(leader, addr.to_string()));
                }
            }
        }
        let c = connect(&self.directory, leader, addr).await?;
        self.forward_channels.lock().expect("never poisoned").insert((leader, addr.to_string()), c.clone());
        Ok(c)
    }
}

/// Who is calling: the grant of the request's bearer token, or the 401 to answer. Without a
/// token file every request may do everything; the public routes ([`auth::is_public`]) need no
/// token.
#[allow(clippy::result_large_err)] // the refusal is the response itself
pub fn authenticate(ctx: &Ctx, parts: &hyper::http::request::Parts) -> Result<Arc<auth::Grant>, Response> {
    let Some(a) = &ctx.auth else { return Ok(unrestricted()) };
    if auth::is_public(parts.uri.path()) {
        return Ok(Arc::new(auth::Grant::default()));
    }
    a.authenticate(parts.headers.get(hyper::header::AUTHORIZATION)).map_err(|why| {
        ctx.metrics.auth_unauthenticated.inc();
        auth::unauthorized(why)
    })
}

/// The grant of every request when no token file is configured.
pub fn unrestricted() -> Arc<auth::Grant> {
    static ALL: std::sync::OnceLock<Arc<auth::Grant>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| Arc::new(auth::Grant::all())).clone()
}

/// What a handler produced.
pub enum Outcome {
    /// The answer.
    Reply(Response),
    /// This replica cannot serve it; `leader` can (if known).
    NotLeader(Option<NodeId>),
    /// This replica does not serve it now (catching up, lagging); `leader` can (if known),
    /// else the answer is `problem`.
    NotServing(Option<NodeId>, Problem),
}

impl From<Problem> for Outcome {
    fn from(p: Problem) -> Self {
        Outcome::Reply(p.into_response())
    }
}

/// The marker a handler's "send it to the leader" leaves on its response, for [`dispatch`].
#[derive(Clone)]
struct Deferred {
    leader: Option<NodeId>,
    fallback: Option<Problem>,
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let (leader, fallback) = match self {
            Outcome::Reply(r) => return r,
            Outcome::NotLeader(leader) => (leader, None),
            Outcome::NotServing(leader, p) => (leader, Some(p)),
        };
        // Never sent as is: `serve` replaces it with a redirect, a relayed answer or a 503.
        let mut r = StatusCode::MISDIRECTED_REQUEST.into_response();
        r.extensions_mut().insert(Deferred { leader, fallback });
        r
    }
}

/// A JSON reply with the index header.
pub fn json_reply(status: StatusCode, body: &serde_json::Value, index: Option<u64>) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, json::JSON);
    if let Some(i) = index {
        resp.headers_mut().insert(INDEX_HEADER, HeaderValue::from(i));
    }
    resp
}

/// Serve one buffered request that has travelled `hops` replicas so far.
/// `grant` is what the client may do (`auth`): checked by every handler, and carried with the
/// request if it is relayed to the leader.
pub async fn dispatch(ctx: Arc<Ctx>, req: Request<Bytes>, hops: u32, grant: Arc<auth::Grant>) -> hyper::Response<Bytes> {
    let started = Instant::now();
    let method = req.method().clone();
    let ops = routes::is_ops(req.uri().path());
    let resp = if ctx.draining.load(Ordering::Relaxed) && !ops {
        Problem::unavailable("shutting-down", "this replica is shutting down").into_response()
    } else if let Some(p) = refuse_early(&ctx, &req) {
        p.into_response()
    } else {
        serve(&ctx, req, hops, grant).await
    };
    if resp.status() == StatusCode::FORBIDDEN {
        ctx.metrics.auth_forbidden.inc();
    }
    let route = resp.extensions().get::<routes::RouteLabel>().map_or("other", |r| r.0);
    if !ops {
        ctx.metrics.observe_request(route, method.as_str(), resp.status().as_u16(), started.elapsed());
    }
    let (parts, body) = stamp_index(&ctx, resp).into_parts();
    // Handlers' bodies are in memory already; collecting them cannot fail.
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    hyper::Response::from_parts(parts, body)
}

/// Every reply says which store index it reflects (but see below): a reply without
/// `X-Synod-Index` gets this replica's applied index (see [`INDEX_HEADER`] for what it means on a refusal).
pub fn stamp_index<B>(ctx: &Ctx, mut resp: hyper::Response<B>) -> hyper::Response<B> {
    // Except a 401 or 403: a caller without a token (or without the permission) learns nothing
    // of the store, not even how fast its index moves.
    // The console's static files ([`ui::Static`]) say nothing of the store either.
    let refused = matches!(resp.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) || resp.extensions().get::<ui::Static>().is_some();
    if !refused && !resp.headers().contains_key(INDEX_HEADER) {
        resp.headers_mut().insert(INDEX_HEADER, HeaderValue::from(ctx.metrics.store_index.get()));
    }
    resp
}

/// Requests refused before routing, whatever they ask: a request target longer than any valid
/// one (414) and a body in a content coding the server does not decode (415, RFC 9110 15.5.16:
/// the answer lists the codings accepted in `Accept-Encoding`).
fn refuse_early(ctx: &Ctx, req: &Request<Bytes>) -> Option<Problem> {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > ctx.max_uri_bytes() {
        return Some(Problem::uri_too_long(len, ctx.max_uri_bytes()));
    }
    let codings = req.headers().get_all(CONTENT_ENCODING).iter().collect::<Vec<_>>();
    for v in codings {
        let text = v.to_str().unwrap_or("?");
        if text.split(',').map(str::trim).any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")) {
            return Some(Problem::unsupported_encoding(text));
        }
    }
    None
}

async fn serve(ctx: &Arc<Ctx>, req: Request<Bytes>, hops: u32, grant: Arc<auth::Grant>) -> Response {
    // Keep what forwarding needs: handlers consume the request.
    let (mut parts, body) = req.into_parts();
    let redirect = query::wants_redirect(parts.uri.query());
    // A client that asked to be redirected wants the leader's answer, not a write handed to the
    // leader by this replica (the marker is ours: a client's copy is dropped first).
    parts.headers.remove(NO_CORE_FORWARD);
    if redirect {
        parts.headers.insert(NO_CORE_FORWARD, HeaderValue::from_static("1"));
    }
    let copy = Request::from_parts(parts.clone(), body.clone());
    let mut routed = Request::from_parts(parts, Body::from(body));
    routed.extensions_mut().insert(ctx.clone());
    routed.extensions_mut().insert(grant.clone());
    let Ok(mut resp) = ctx.router.clone().oneshot(routed).await;
    let Some(Deferred { leader, fallback }) = resp.extensions_mut().remove::<Deferred>() else {
        return resp;
    };
    let label = resp.extensions().get::<routes::RouteLabel>().copied();
    let mut resp = send_to_leader(ctx, copy, hops, redirect, leader, fallback, &grant).await;
    if let Some(l) = label {
        resp.extensions_mut().insert(l);
    }
    resp
}

/// A read this replica does not serve now goes to the leader like a write; when it cannot (no
/// leader known, hop limit), the answer says why this replica refused it.
async fn send_to_leader(
    ctx: &Arc<Ctx>,
    copy: Request<Bytes>,
    hops: u32,
    redirect: bool,
    leader: Option<NodeId>,
    fallback: Option<Problem>,
    grant: &auth::Grant,
) -> Response {
    let Some(leader) = leader.filter(|l| *l != ctx.me) else {
        return fallback.unwrap_or_else(|| Problem::unavailable("no-leader", "no leader is known; retry shortly")).into_response();
    };
    let Some(info) = ctx.directory.get(leader) else {
        return fallback
            .unwrap_or_else(|| Problem::unavailable("no-leader", format!("leader {leader} has no known address; retry shortly")))
            .with("leader", serde_json::json!(leader.0))
            .into_response();
    };
    if redirect {
        let uri = format!("{}://{}{}", ctx.rest_scheme, info.http, copy.uri().path_and_query().map_or("/", |p| p.as_str()));
        let mut resp = Problem::new(StatusCode::TEMPORARY_REDIRECT, "redirect", "Redirect to the leader", format!("node {leader} leads"))
            .with("leader", serde_json::json!(leader.0))
            .with("location", serde_json::json!(uri))
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&uri) {
            resp.headers_mut().insert(LOCATION, v);
        }
        return resp;
    }
    if hops >= MAX_HOPS {
        if let Some(p) = fallback {
            return p.into_response();
        }
        return Problem::unavailable("too-many-hops", format!("forwarded {hops} times without reaching the leader; retry")).into_response();
    }
    forward(ctx, copy, leader, &info.grpc, hops + 1, grant, true).await
}

/// Relay `req` to `leader` over gRPC `Forward` and answer with its reply. `relay` is true for a
/// client request sent to the leader (counted in `synod_forwarded_requests`), false for this
/// replica's own question (`/v1/cluster/status`), which the caller counts.
pub(crate) async fn forward(ctx: &Ctx, req: Request<Bytes>, leader: NodeId, addr: &str, hops: u32, grant: &auth::Grant, relay: bool) -> Response {
    if relay {
        ctx.metrics.forwarded.inc();
    }
    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let (parts, body) = req.into_parts();
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != hyper::header::HOST && *k != hyper::header::CONTENT_LENGTH)
        .map(|(k, v)| pb::Header { name: k.as_str().to_string(), value: v.as_bytes().to_vec() })
        .collect();
    let f = pb::ForwardRequest {
        method: parts.method.as_str().to_string(),
        path_and_query: parts.uri.path_and_query().map_or("/".to_string(), |p| p.as_str().to_string()),
        headers,
        body: body.to_vec(),
        hops,
        grant: grant.to_pb(),
    };
    // Get a ready connection first, then send. tonic reports `Unavailable` both for a
    // connection that never opened and for one that broke mid-call, so the two must be told
    // apart by *when* the error happened: only a failure before the request was handed to the
    // transport (no ready connection) proves the leader never saw it (503, "not done").
    // Anything after that may have been proposed and chosen, so a write gets 504 "outcome
    // unknown", whatever the status code (reads may stay 503).
    let channel = match ctx.forward_channel(leader, addr).await {
        Ok(c) => c,
        Err(why) => {
            if relay {
                ctx.metrics.forward_failures.inc();
            }
            return Problem::unavailable("forward-failed", format!("node {leader} at {addr} is unreachable: {why}")).into_response();
        }
    };
    // A lock or campaign request waits on the leader too (`locks::extra_time`).
    let timeout = ctx.write_timeout + Duration::from_secs(1) + locks::extra_time(&parts.method, parts.uri.path());
    let mut client = pb::peer_client::PeerClient::new(channel).max_decoding_message_size(crate::peer::MAX_GRPC_MESSAGE);
    let call = client.forward(f);
    let reply = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            if relay {
                ctx.metrics.forward_failures.inc();
            }
            // A transport error (the status has a source; a status the leader sent has none):
            // the cached connection may have died since its readiness check. Forget it, so the
            // next forward connects afresh.
            let transport = std::error::Error::source(&status).is_some();
            if transport {
                ctx.forward_channels.lock().expect("never poisoned").remove(&(leader, addr.to_string()));
            }
            if !transport && matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) {
                // The peer refused the caller before dispatching anything (its certificate names
                // no member it knows): not done.
                return Problem::unavailable("forward-failed", format!("node {leader} at {addr} refused the relay: {}", status.message())).into_response();
            }
            if transport && status.code() == tonic::Code::Unavailable && status.message().contains("connect error") {
                // The channel had to reconnect for this call and could not: no connection, so
                // nothing reached the leader ("not done" is the truth).
                return Problem::unavailable("forward-failed", format!("node {leader} at {addr} is unreachable: {}", status.message()))
                    .into_response();
            }
            return sent_and_failed(is_write, format!("the forwarded request failed: {:?}: {}", status.code(), status.message()));
        }
        Err(_) => {
            if relay {
                ctx.metrics.forward_failures.inc();
            }
            return sent_and_failed(is_write, "the leader did not answer in time".to_string());
        }
    };
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    for h in reply.headers {
        if let (Ok(name), Ok(value)) = (hyper::header::HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(&h.value)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// How long connecting to the leader for a forward may take; a failure is a 503.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Open a connection to the leader's gRPC address. Nothing has been sent when this fails, so the
/// caller may answer 503. The connection is made eagerly (not a lazy channel, which would
/// connect inside the call, where a refused connection and a broken one both surface as the
/// same `Unavailable`); a cached one is checked for readiness before each use.
async fn connect(directory: &Directory, leader: NodeId, addr: &str) -> Result<tonic::transport::Channel, String> {
    let endpoint = directory
        .endpoint(leader, addr)
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(FORWARD_CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    match tokio::time::timeout(FORWARD_CONNECT_TIMEOUT + Duration::from_millis(500), endpoint.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(crate::peer::error_chain(&e)),
        Err(_) => Err("connect timed out".to_string()),
    }
}

/// The answer when a forward failed after the request was handed to the transport: the leader
/// may have proposed (and chosen) a write, so only a read may say "not done".
fn sent_and_failed(is_write: bool, why: String) -> Response {
    if is_write {
        Problem::outcome_unknown().with("cause", serde_json::json!(why)).into_response()
    } else {
        Problem::unavailable("forward-failed", why).into_response()
    }
}

#[cfg(test)]
mod tests {
    //! Forwarding failures: 503 ("not done") only when nothing reached the leader.
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::mpsc;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn ctx() -> Ctx {
        let (tx, _rx) = mpsc::channel(1);
        let mut c = Ctx::new(NodeId(1), tx, Directory::new(), Arc::new(Metrics::default()), Limits::default());
        c.write_timeout = Duration::from_secs(2);
        c
    }

    fn req(method: Method) -> Request<Bytes> {
        Request::builder().method(method).uri("/v1/kv/a").body(Bytes::from_static(b"v")).unwrap()
    }

    async fn slug(resp: Response) -> String {
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["type"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Serve one connection: every call is received and answered `Unavailable` (as a proxy, a
    /// draining server or a connection torn down mid-call does).
    async fn answer_unavailable(s: tokio::net::TcpStream) {
        let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
            let resp = hyper::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", "transport is closing")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            Ok::<_, std::convert::Infallible>(resp)
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc).await;
    }

    /// A gRPC server that receives the call and answers `Unavailable` (as a proxy, a draining
    /// server or a connection torn down mid-call does): the request *was* delivered.
    async fn unavailable_after_receiving() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(answer_unavailable(s));
            }
        });
        addr
    }

    /// A server that accepts the connection, reads what the client sends, then closes it.
    async fn drops_after_reading() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // Wait for the request itself (preface + settings + headers + data), then hang up.
                    let mut got = 0;
                    while got < 60 {
                        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => got += n,
                            _ => break,
                        }
                    }
                    drop(s);
                });
            }
        });
        addr
    }

    /// Forwards share one connection to the leader; once the leader is gone, the cached
    /// connection fails its readiness check before anything is sent, so the answer is 503.
    #[tokio::test]
    async fn forwards_share_a_connection_and_a_dead_one_is_503() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(answer_unavailable(s));
            }
        });
        let c = ctx();
        for _ in 0..3 {
            let r = forward(&c, req(Method::GET), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "three forwards, one connection");
        // The leader goes away: listener and connections closed.
        server.abort();
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = forward(&c, req(Method::PUT), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "nothing was sent");
        assert_eq!(slug(r).await, "forward-failed");
    }

    #[tokio::test]
    async fn refused_connection_is_503() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let c = ctx();
        let r = forward(&c, req(Method::PUT), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slug(r).await, "forward-failed");
    }

    #[tokio::test]
    async fn unavailable_after_sending_a_write_is_504() {
        let addr = unavailable_after_receiving().await;
        let c = ctx();
        // The old mapping answered 503 here although the leader had the request.
        let r = forward(&c, req(Method::PUT), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(slug(r).await, "outcome-unknown");
        let r = forward(&c, req(Method::POST), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        // A read did nothing: "retry" is the truth.
        let r = forward(&c, req(Method::GET), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn connection_dropped_after_sending_a_write_is_504() {
        let addr = drops_after_reading().await;
        let c = ctx();
        let r = forward(&c, req(Method::DELETE), NodeId(2), &addr, 1, &auth::Grant::all(), true).await;
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(slug(r).await, "outcome-unknown");
    }
}
