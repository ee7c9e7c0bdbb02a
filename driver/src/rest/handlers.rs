//! The endpoints: parse, check, hand to the node loop, shape the answer.
//!
//! Writes go through [`write`] (session headers, early limit check, a deadline that turns into
//! 504 "outcome unknown"); reads through [`read`] (`consistency=linearizable|sequential`,
//! `min_index`). Every reply carries `X-Synod-Index`, the store index it reflects.

use super::problem::{bytes_value, Problem};
use super::{json_reply, refused, Ctx, Outcome};
use crate::codec::{fnv1a64, parse_query, percent_decode};
use crate::node::{Consistency, Input, ReadAnswer, ReadDone, ReadFn, WriteDone};
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use kvstore::{BatchOp, CasExpect, ClientId, Guard, RangeQuery, SessionRef, WriteOp, WriteOutcome};
use paxos::RoleKind;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;

type Query = BTreeMap<String, String>;

/// Route one request to its handler.
pub async fn route(ctx: &Arc<Ctx>, req: Request<Bytes>) -> Outcome {
    let Some(query) = parse_query(req.uri().query()) else {
        return Problem::bad_request("malformed query string").into();
    };
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/livez") => Outcome::Reply(text(StatusCode::OK, "ok\n")),
        (Method::GET, "/readyz") => readyz(ctx).await,
        (Method::GET, "/metrics") => {
            let status = ctx.status().await;
            Outcome::Reply(text(StatusCode::OK, &ctx.metrics.render(status.as_ref())))
        }
        (Method::GET, "/v1/status") => status(ctx).await,
        (m, p) if p.starts_with("/v1/kv/") => {
            let Some(key) = percent_decode(&p["/v1/kv/".len()..], false) else {
                return Problem::bad_request("malformed percent-encoding in the key").into();
            };
            if key.is_empty() {
                return Problem::bad_request("empty key").into();
            }
            match m {
                Method::GET => get(ctx, &query, key).await,
                Method::PUT => put(ctx, req.headers(), key, req.body().to_vec()).await,
                Method::DELETE => delete(ctx, req.headers(), key).await,
                _ => method_not_allowed("GET, PUT, DELETE"),
            }
        }
        (Method::GET, "/v1/kv") => range(ctx, &query).await,
        (Method::POST, "/v1/batch/get") => batch_get(ctx, &query, &req).await,
        (Method::POST, "/v1/batch/put") => batch_put(ctx, &req).await,
        (Method::POST, "/v1/rmw") => rmw(ctx, &req).await,
        (Method::GET, "/v1/cluster/members") => super::members::list(ctx, &query).await,
        (Method::POST, "/v1/cluster/members") => super::members::add(ctx, &req).await,
        (Method::DELETE, p) if p.starts_with("/v1/cluster/members/") => super::members::remove(ctx, &p["/v1/cluster/members/".len()..]).await,
        (_, "/v1/cluster/members") => method_not_allowed("GET, POST"),
        (_, "/v1/kv" | "/livez" | "/readyz" | "/metrics" | "/v1/status") => method_not_allowed("GET"),
        (_, "/v1/batch/get" | "/v1/batch/put" | "/v1/rmw") => method_not_allowed("POST"),
        (_, p) => Problem::new(StatusCode::NOT_FOUND, "no-route", "No such endpoint", format!("no endpoint at {p}")).into(),
    }
}

pub(super) fn text(status: StatusCode, body: &str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(super) fn method_not_allowed(allow: &'static str) -> Outcome {
    let mut r = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", format!("allowed: {allow}"))
        .into_response();
    r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    Outcome::Reply(r)
}

/// Ready: an etcd lease, a known leader, and reads served from this replica's own state (caught
/// up, not lagging, not removed).
async fn readyz(ctx: &Ctx) -> Outcome {
    let etcd = ctx.metrics.etcd_up.get() == 1;
    let Some(s) = ctx.status().await else {
        return Problem::unavailable("not-ready", "the node loop is not answering").into();
    };
    let why = match (&s.serving, etcd, s.core.leader) {
        (Err(not), _, _) => not.reason(),
        (Ok(()), false, _) => "no etcd lease".to_string(),
        (Ok(()), true, None) => "no known leader".to_string(),
        (Ok(()), true, Some(_)) => return Outcome::Reply(text(StatusCode::OK, "ready\n")),
    };
    let mut p = Problem::unavailable("not-ready", why);
    if let Err(crate::node::NotServing::Removed(r)) = &s.serving {
        p = p.with("removed", json!({ "epoch": r.epoch, "source": r.source }));
    }
    p.into()
}

async fn status(ctx: &Ctx) -> Outcome {
    let Some(s) = ctx.status().await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    let dir = ctx.directory.all();
    let removed = match &s.serving {
        Err(crate::node::NotServing::Removed(r)) => Some(*r),
        _ => None,
    };
    let role = match s.core.role {
        _ if removed.is_some() => "removed",
        RoleKind::Follower => "follower",
        RoleKind::Candidate => "candidate",
        RoleKind::Leader => "leader",
        RoleKind::Learner => "learner",
    };
    let mut members = Vec::new();
    for (m, state) in s.core.config.acceptors.iter().map(|m| (m, "acceptor")).chain(s.core.config.learners.iter().map(|m| (m, "learner"))) {
        let info = dir.get(&m.node);
        members.push(json!({
            "id": m.node.0,
            "incarnation": m.incarnation.0,
            "state": state,
            "live": info.is_some_and(|i| i.incarnation == m.incarnation.0),
            "learned": s.core.learned.get(&m.node).map(|l| l.0),
            "http": info.map(|i| i.http.clone()),
            "grpc": info.map(|i| i.grpc.clone()),
        }));
    }
    let leader_http = s.core.leader.and_then(|l| dir.get(&l)).map(|i| i.http.clone());
    let body = json!({
        "id": s.core.me.node.0,
        "incarnation": s.core.me.incarnation.0,
        "role": role,
        "leader": s.core.leader.map(|l| l.0),
        "leader_http": leader_http,
        "ballot": { "round": s.core.ballot.round, "node": s.core.ballot.node.0, "incarnation": s.core.ballot.incarnation.0 },
        "commit_slot": s.core.commit.0,
        "known_commit_slot": s.core.known_commit.0,
        "applied_slot": s.core.applied.0,
        "serving": s.serving.is_ok(),
        "reason": s.serving.as_ref().err().map(|n| n.reason()),
        "removed": removed.map(|r| json!({ "epoch": r.epoch, "source": r.source })),
        "lag_slots": s.lag_slots,
        "last_leader_contact_ms": s.last_contact_ms,
        "catch_up_target_slot": s.catch_up_target.map(|t| t.0),
        "checkpoint_slot": s.core.checkpoint.0,
        "snapshot_slot": s.core.snapshot.0,
        "index": s.store_index,
        "keys": s.keys,
        "epoch": s.core.config.epoch,
        "store_applied_slot": s.applied_slot.0,
        "state_hash": format!("{:016x}", s.state_hash),
        "state_hash_index": s.state_hash_index,
        "snapshots_installed": s.counters.snapshots_installed,
        "config_changes": s.counters.config_changes,
        "members": members,
        "etcd": ctx.metrics.etcd_up.get() == 1,
    });
    Outcome::Reply(json_reply(StatusCode::OK, &body, Some(s.store_index)))
}

fn consistency(q: &Query) -> Result<Consistency, Problem> {
    let min_index = match q.get("min_index") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| Problem::bad_request(format!("min_index {v:?} is not a number")))?,
    };
    match q.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("sequential") => Ok(Consistency::Sequential { min_index }),
        Some(other) => Err(Problem::bad_request(format!("consistency {other:?} is not linearizable or sequential"))),
    }
}

/// Run a read at the asked consistency.
async fn read(ctx: &Ctx, q: &Query, f: ReadFn) -> Result<ReadDone, Outcome> {
    let consistency = consistency(q).map_err(Outcome::from)?;
    let (tx, rx) = oneshot::channel();
    if ctx.inputs.send(Input::Read { consistency, f, reply: tx }).await.is_err() {
        return Err(Problem::unavailable("shutting-down", "the node loop is gone").into());
    }
    match tokio::time::timeout(ctx.read_timeout, rx).await {
        Ok(Ok(Ok(done))) => Ok(done),
        Ok(Ok(Err(r))) => Err(refused(r)),
        Ok(Err(_)) => Err(Problem::unavailable("shutting-down", "the node loop is gone").into()),
        Err(_) => Err(match consistency {
            Consistency::Linearizable => Problem::unavailable("no-quorum", "the leader could not confirm its leadership in time"),
            Consistency::Sequential { min_index } => {
                Problem::unavailable("lagging", format!("this replica has not applied index {min_index} yet"))
                    .with("min_index", json!(min_index))
            }
        }
        .into()),
    }
}

/// Parse the exactly-once headers: `X-Synod-Session` + `X-Synod-Seq`, or `Idempotency-Key`.
pub fn session(headers: &HeaderMap) -> Result<Option<SessionRef>, Problem> {
    let get = |n: &str| headers.get(n).map(|v| v.to_str().map_err(|_| Problem::bad_request(format!("{n} is not ASCII"))));
    let sess = get("x-synod-session").transpose()?;
    let seq = get("x-synod-seq").transpose()?;
    let idem = get("idempotency-key").transpose()?;
    match (sess, seq, idem) {
        (None, None, None) => Ok(None),
        (None, None, Some(k)) => {
            if k.is_empty() || k.len() > 255 {
                return Err(Problem::bad_request("Idempotency-Key must be 1 to 255 characters"));
            }
            // A key names a one-request session: the id is a stable hash (any replica computes
            // the same), the sequence number 1. The top bit keeps these apart from CLI sessions.
            // The store keeps a fingerprint of the request with the session's result, so the
            // same key with a different request is refused (422), not answered with the first
            // request's result.
            let client = ClientId(fnv1a64(format!("idempotency-key:{k}").as_bytes()) | (1 << 63));
            Ok(Some(SessionRef { client, seq: 1 }))
        }
        (Some(s), Some(n), None) => {
            let client = s.parse::<u64>().map_err(|_| Problem::bad_request("X-Synod-Session must be a u64"))?;
            let seq = n.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| Problem::bad_request("X-Synod-Seq must be a u64 >= 1"))?;
            Ok(Some(SessionRef { client: ClientId(client), seq }))
        }
        (_, _, Some(_)) => Err(Problem::bad_request("give either Idempotency-Key or X-Synod-Session/X-Synod-Seq, not both")),
        _ => Err(Problem::bad_request("X-Synod-Session and X-Synod-Seq go together")),
    }
}

/// Propose a write and wait for its outcome.
async fn write(ctx: &Ctx, headers: &HeaderMap, op: WriteOp) -> Result<WriteDone, Outcome> {
    let session = session(headers).map_err(Outcome::from)?;
    ctx.limits.check_op(&op).map_err(|e| Outcome::from(Problem::from_write_error(&e, false)))?;
    let (tx, rx) = oneshot::channel();
    let forward = !headers.contains_key(super::NO_CORE_FORWARD);
    if ctx.inputs.send(Input::Write { session, op, forward, reply: tx }).await.is_err() {
        return Err(Problem::unavailable("shutting-down", "the node loop is gone").into());
    }
    match tokio::time::timeout(ctx.write_timeout, rx).await {
        Ok(Ok(Ok(done))) => Ok(done),
        Ok(Ok(Err(r))) => Err(refused(r)),
        // Proposed, then the loop went away or time ran out: it may still be chosen.
        Ok(Err(_)) | Err(_) => Err(Problem::outcome_unknown().into()),
    }
}

fn parse_etag(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    v.trim_matches('"').parse().ok()
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn guard_from_headers(h: &HeaderMap) -> Result<Option<Guard>, Problem> {
    let im = h.get(IF_MATCH).map(|v| v.to_str().unwrap_or("\u{0}"));
    let inm = h.get(IF_NONE_MATCH).map(|v| v.to_str().unwrap_or("\u{0}"));
    match (im, inm) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Problem::bad_request("give If-Match or If-None-Match, not both")),
        (Some("*"), None) => Ok(Some(Guard::Exists)),
        (Some(v), None) => parse_etag(v).map(|n| Some(Guard::Version(n))).ok_or_else(|| Problem::bad_request(format!("If-Match {v:?} is not a version ETag"))),
        (None, Some("*")) => Ok(Some(Guard::Absent)),
        (None, Some(v)) => Err(Problem::bad_request(format!("If-None-Match supports only \"*\", got {v:?}"))),
    }
}

async fn get(ctx: &Ctx, q: &Query, key: Vec<u8>) -> Outcome {
    let k = key.clone();
    let done = match read(ctx, q, Box::new(move |s| ReadAnswer::Get(s.get(&k)))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let (index, fresh) = (done.index, freshness(ctx, &done));
    let mut r = match done.answer {
        ReadAnswer::Get(Some(v)) => {
            let mut r = Response::new(Bytes::from(v.value));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            r.headers_mut().insert(ETAG, etag(v.version));
            r.headers_mut().insert("x-synod-version", HeaderValue::from(v.version));
            r
        }
        _ => Problem::not_found(&key).into_response(),
    };
    r.headers_mut().insert(super::INDEX_HEADER, HeaderValue::from(index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

/// The headers every read reply carries: who answered and how far behind it was.
fn freshness(ctx: &Ctx, done: &ReadDone) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(super::LAG_HEADER, HeaderValue::from(done.lag_slots));
    if let Some(ms) = done.last_contact_ms {
        h.insert(super::LAST_CONTACT_HEADER, HeaderValue::from(ms));
    }
    h.insert(super::SERVED_BY_HEADER, HeaderValue::from(ctx.me.0));
    h
}

fn with_index(mut r: Response<Bytes>, index: u64) -> Outcome {
    r.headers_mut().insert(super::INDEX_HEADER, HeaderValue::from(index));
    Outcome::Reply(r)
}

async fn put(ctx: &Ctx, h: &HeaderMap, key: Vec<u8>, value: Vec<u8>) -> Outcome {
    let guard = match guard_from_headers(h) {
        Ok(g) => g,
        Err(p) => return p.into(),
    };
    let done = match write(ctx, h, WriteOp::Put { key: key.clone(), value, guard }).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => {
            let prev = match res.outcome {
                WriteOutcome::Put { previous_version } => previous_version,
                _ => None,
            };
            let status = if prev.is_some() { StatusCode::OK } else { StatusCode::CREATED };
            let body = json!({ "key": bytes_value(&key), "version": res.index, "previous_version": prev, "index": done.index });
            let mut r = json_reply(status, &body, Some(done.index));
            r.headers_mut().insert(ETAG, etag(res.index));
            Outcome::Reply(r)
        }
        Err(e) => with_index(Problem::from_write_error(&e, true).into_response(), done.index),
    }
}

async fn delete(ctx: &Ctx, h: &HeaderMap, key: Vec<u8>) -> Outcome {
    let guard = match guard_from_headers(h) {
        Ok(g) => g,
        Err(p) => return p.into(),
    };
    let done = match write(ctx, h, WriteOp::Delete { key: key.clone(), guard }).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => match res.outcome {
            WriteOutcome::Deleted { previous_version: Some(prev) } => {
                let body = json!({ "key": bytes_value(&key), "previous_version": prev, "index": done.index });
                Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
            }
            _ => with_index(Problem::not_found(&key).into_response(), done.index),
        },
        Err(e) => with_index(Problem::from_write_error(&e, true).into_response(), done.index),
    }
}

fn entry_json(key: &[u8], value: Option<&[u8]>, version: u64) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("key".into(), bytes_value(key));
    if let Some(v) = value {
        m.insert("value".into(), bytes_value(v));
    }
    m.insert("version".into(), json!(version));
    Value::Object(m)
}

async fn range(ctx: &Ctx, q: &Query) -> Outcome {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Problem::bad_request("limit is not a number").into(),
    };
    let keys_only = match q.get("keys_only").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(v) => return Problem::bad_request(format!("keys_only {v:?} is not a boolean")).into(),
    };
    let rq = RangeQuery {
        start: q.get("start").map(|s| s.as_bytes().to_vec()).unwrap_or_default(),
        end: q.get("end").map(|s| s.as_bytes().to_vec()),
        prefix: q.get("prefix").map(|s| s.as_bytes().to_vec()),
        limit,
        cursor: q.get("cursor").map(|s| s.as_bytes().to_vec()),
        keys_only,
    };
    let done = match read(ctx, q, Box::new(move |s| ReadAnswer::Range(s.range(&rq)))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(ctx, &done);
    let ReadAnswer::Range(page) = done.answer else { return Problem::bad_request("internal: wrong answer").into() };
    let entries: Vec<Value> = page.entries.iter().map(|e| entry_json(&e.key, e.value.as_deref(), e.version)).collect();
    let body = json!({
        "index": page.index,
        "entries": entries,
        "next_cursor": page.next_cursor.as_deref().map(bytes_value),
    });
    let mut r = json_reply(StatusCode::OK, &body, Some(done.index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(req: &Request<Bytes>) -> Result<T, Problem> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" {
            return Err(Problem::unsupported_media(ct));
        }
    }
    serde_json::from_slice(req.body()).map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchGetBody {
    keys: Vec<String>,
}

async fn batch_get(ctx: &Ctx, q: &Query, req: &Request<Bytes>) -> Outcome {
    let body: BatchGetBody = match parse_json(req) {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    let keys: Vec<Vec<u8>> = body.keys.into_iter().map(String::into_bytes).collect();
    if keys.len() > ctx.limits.max_batch_ops {
        return Problem::from_write_error(
            &kvstore::WriteError::TooLarge { what: kvstore::LimitKind::BatchOps, limit: ctx.limits.max_batch_ops as u64, got: keys.len() as u64 },
            false,
        )
        .into();
    }
    let k2 = keys.clone();
    let done = match read(ctx, q, Box::new(move |s| ReadAnswer::Many(s.get_many(&k2)))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(ctx, &done);
    let ReadAnswer::Many(many) = done.answer else { return Problem::bad_request("internal: wrong answer").into() };
    let values: Vec<Value> = keys
        .iter()
        .zip(many.values.iter())
        .map(|(k, v)| match v {
            Some(v) => entry_json(k, Some(&v.value), v.version),
            None => json!({ "key": bytes_value(k), "found": false }),
        })
        .collect();
    let mut r = json_reply(StatusCode::OK, &json!({ "index": many.index, "values": values }), Some(done.index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

/// A guard in JSON: exactly one of the fields.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GuardJson {
    version: Option<u64>,
    exists: Option<bool>,
    value: Option<String>,
}

impl GuardJson {
    fn into_guard(self) -> Result<Guard, Problem> {
        match (self.version, self.exists, self.value) {
            (Some(v), None, None) => Ok(Guard::Version(v)),
            (None, Some(true), None) => Ok(Guard::Exists),
            (None, Some(false), None) => Ok(Guard::Absent),
            (None, None, Some(v)) => Ok(Guard::Value(v.into_bytes())),
            _ => Err(Problem::bad_request("a guard has exactly one of version, exists, value")),
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum BatchOpJson {
    Put { key: String, value: String, guard: Option<GuardJson> },
    Delete { key: String, guard: Option<GuardJson> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchPutBody {
    ops: Vec<BatchOpJson>,
}

async fn batch_put(ctx: &Ctx, req: &Request<Bytes>) -> Outcome {
    let body: BatchPutBody = match parse_json(req) {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    if body.ops.is_empty() {
        return Problem::bad_request("a batch needs at least one op").into();
    }
    let mut ops = Vec::with_capacity(body.ops.len());
    for op in body.ops {
        let g = |g: Option<GuardJson>| g.map(GuardJson::into_guard).transpose();
        ops.push(match op {
            BatchOpJson::Put { key, value, guard } => match g(guard) {
                Ok(guard) => BatchOp::Put { key: key.into_bytes(), value: value.into_bytes(), guard },
                Err(p) => return p.into(),
            },
            BatchOpJson::Delete { key, guard } => match g(guard) {
                Ok(guard) => BatchOp::Delete { key: key.into_bytes(), guard },
                Err(p) => return p.into(),
            },
        });
    }
    let done = match write(ctx, req.headers(), WriteOp::PutMany { ops }).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => {
            let (puts, deletes) = match res.outcome {
                WriteOutcome::Batch { puts, deletes } => (puts, deletes),
                _ => (0, 0),
            };
            let body = json!({ "index": done.index, "version": res.index, "puts": puts, "deletes": deletes });
            Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
        }
        Err(e) => with_index(Problem::from_write_error(&e, false).into_response(), done.index),
    }
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum RmwJson {
    /// Compare-and-set: exactly one of `expected`, `expected_version`, `expected_absent`;
    /// `new` absent or null deletes the key.
    Cas {
        key: String,
        expected: Option<String>,
        expected_version: Option<u64>,
        #[serde(default)]
        expected_absent: bool,
        new: Option<String>,
    },
    Incr {
        key: String,
        #[serde(default = "one")]
        delta: i64,
        #[serde(default)]
        initial: i64,
    },
    Append { key: String, value: String },
}

fn one() -> i64 {
    1
}

async fn rmw(ctx: &Ctx, req: &Request<Bytes>) -> Outcome {
    let body: RmwJson = match parse_json(req) {
        Ok(b) => b,
        Err(p) => return p.into(),
    };
    let (op, key) = match body {
        RmwJson::Cas { key, expected, expected_version, expected_absent, new } => {
            let expected = match (expected, expected_version, expected_absent) {
                (Some(v), None, false) => CasExpect::Value(Some(v.into_bytes())),
                (None, Some(n), false) => CasExpect::Version(n),
                (None, None, true) => CasExpect::Value(None),
                _ => return Problem::bad_request("cas needs exactly one of expected, expected_version, expected_absent").into(),
            };
            let k = key.into_bytes();
            (WriteOp::Cas { key: k.clone(), expected, new: new.map(String::into_bytes) }, k)
        }
        RmwJson::Incr { key, delta, initial } => {
            let k = key.into_bytes();
            (WriteOp::Incr { key: k.clone(), delta, initial }, k)
        }
        RmwJson::Append { key, value } => {
            let k = key.into_bytes();
            (WriteOp::Append { key: k.clone(), value: value.into_bytes() }, k)
        }
    };
    let done = match write(ctx, req.headers(), op).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => {
            let mut body = json!({ "key": bytes_value(&key), "index": done.index, "version": res.index });
            match res.outcome {
                WriteOutcome::Swapped { previous_version } => body["previous_version"] = json!(previous_version),
                WriteOutcome::Incremented { value } => body["value"] = json!(value),
                WriteOutcome::Appended { len } => body["len"] = json!(len),
                _ => {}
            }
            Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
        }
        Err(e) => with_index(Problem::from_write_error(&e, false).into_response(), done.index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn session_headers_and_idempotency_keys() {
        assert_eq!(session(&headers(&[])).unwrap(), None);
        let s = session(&headers(&[("x-synod-session", "7"), ("x-synod-seq", "3")])).unwrap().unwrap();
        assert_eq!((s.client, s.seq), (ClientId(7), 3));
        // The same key gives the same session on any replica, with sequence number 1.
        let a = session(&headers(&[("idempotency-key", "k")])).unwrap().unwrap();
        let b = session(&headers(&[("idempotency-key", "k")])).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.seq, 1);
        assert!(a.client.0 >> 63 == 1, "keys live apart from CLI sessions");
        for bad in [
            vec![("x-synod-session", "7")],
            vec![("x-synod-session", "x"), ("x-synod-seq", "1")],
            vec![("x-synod-session", "7"), ("x-synod-seq", "0")],
            vec![("x-synod-session", "7"), ("x-synod-seq", "1"), ("idempotency-key", "k")],
        ] {
            assert_eq!(session(&headers(&bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn conditional_headers_become_guards() {
        assert_eq!(guard_from_headers(&headers(&[("if-match", "\"5\"")])).unwrap(), Some(Guard::Version(5)));
        assert_eq!(guard_from_headers(&headers(&[("if-match", "W/\"5\"")])).unwrap(), Some(Guard::Version(5)));
        assert_eq!(guard_from_headers(&headers(&[("if-match", "*")])).unwrap(), Some(Guard::Exists));
        assert_eq!(guard_from_headers(&headers(&[("if-none-match", "*")])).unwrap(), Some(Guard::Absent));
        assert!(guard_from_headers(&headers(&[("if-none-match", "\"5\"")])).is_err());
        assert!(guard_from_headers(&headers(&[("if-match", "soon")])).is_err());
    }

    #[test]
    fn consistency_parameters() {
        let q = |s: &str| parse_query(Some(s)).unwrap();
        assert_eq!(consistency(&q("")).unwrap(), Consistency::Linearizable);
        assert_eq!(consistency(&q("consistency=sequential&min_index=9")).unwrap(), Consistency::Sequential { min_index: 9 });
        assert!(consistency(&q("consistency=eventual")).is_err());
        assert!(consistency(&q("min_index=-1")).is_err());
    }
}
