//! `/v1/kv/{key}` (GET, HEAD, PUT, DELETE) and `/v1/kv` (ranges).
//!
//! The key is the rest of the path, percent-decoded to bytes (so any byte string is a key:
//! `/v1/kv/%FF%00`). Reads take `consistency=linearizable|sequential` and, with `sequential`,
//! `min_index`; writes take the exactly-once headers ([`session`]) and `If-Match` /
//! `If-None-Match` ([`super::conditional`]). Every reply carries `X-Synod-Index`.

use super::conditional::{etag, Preconditions, ReadVerdict};
use super::loop_io::{self, Consistency, ReadAnswer, ReadDone};
use super::problem::{bytes_value, Problem};
use super::query::{flag, Q};
use super::{json_reply, Ctx, Outcome, NO_CORE_FORWARD};
use crate::codec::fnv1a64;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use super::auth::{Grant, Keys};
use base64::Engine as _;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, ETAG};
use hyper::http::request::Parts;
use hyper::StatusCode;
use kvstore::{ClientId, RangeQuery, SessionRef, WriteOp, WriteOutcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The key named by the path of `/v1/kv/{key}`, percent-decoded to bytes.
pub struct Key(pub Vec<u8>);

#[axum::async_trait]
impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let raw = parts.uri.path().strip_prefix("/v1/kv/").unwrap_or("");
        let key = percent_decode_strict(raw).ok_or_else(|| Problem::bad_request("malformed percent-encoding in the key"))?;
        if key.is_empty() {
            return Err(Problem::bad_request("empty key"));
        }
        let limit = parts.extensions.get::<Arc<Ctx>>().map_or(usize::MAX, |c| c.limits.max_key_bytes);
        if key.len() > limit {
            // The key is the request target here, so RFC 9110 15.5.15 applies, not 413.
            return Err(Problem::key_too_long(key.len(), limit));
        }
        Ok(Key(key))
    }
}

/// Percent-decode, refusing a `%` not followed by two hex digits (the crate passes it through).
pub(super) fn percent_decode_strict(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let ok = b.iter().enumerate().all(|(i, c)| *c != b'%' || b.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)));
    ok.then(|| percent_encoding::percent_decode(b).collect())
}

/// `/v1/kv/` with nothing after it.
pub async fn empty_key() -> Problem {
    Problem::bad_request("empty key")
}

/// The consistency parameters of a read.
pub(super) fn consistency(level: Option<&str>, min_index: Option<u64>) -> Result<Consistency, Problem> {
    match (level, min_index) {
        (None | Some("linearizable"), None) => Ok(Consistency::Linearizable),
        (None | Some("linearizable"), Some(_)) => Err(Problem::bad_request(
            "min_index needs consistency=sequential (a linearizable read already reflects every acknowledged write)",
        )),
        (Some("sequential"), m) => Ok(Consistency::Sequential { min_index: m.unwrap_or(0) }),
        (Some(other), _) => Err(Problem::bad_request(format!("consistency {other:?} is not linearizable or sequential"))),
    }
}

/// Query of a one-key read.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    /// `linearizable` (default) or `sequential`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the answer must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
    /// Long-poll: answer once the key changed at an index above this ([`super::watch`]).
    pub wait_index: Option<u64>,
    /// Long-poll: how long to wait (`30s`, `5m`; default 5 minutes).
    pub wait: Option<String>,
    /// The key is a prefix: list the keys under it (with `wait_index`: wait for any of them).
    #[serde(default, deserialize_with = "flag")]
    pub prefix: bool,
}

impl ReadParams {
    /// The consistency asked for.
    pub fn consistency(&self) -> Result<Consistency, Problem> {
        consistency(self.consistency.as_deref(), self.min_index)
    }
}

/// Query of a one-key write.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
    /// Not supported on one key (named so the refusal can say so).
    pub prefix: Option<String>,
    /// `PUT` only: attach the key to this lease (a decimal id), which deletes it when the lease
    /// ends ([`super::leases`]).
    pub lease: Option<String>,
}

impl WriteParams {
    fn check(&self) -> Result<(), Problem> {
        match &self.prefix {
            None => Ok(()),
            Some(_) => Err(Problem::bad_request(
                "prefix is not supported on /v1/kv/{key}: a write names one key; delete several keys atomically with POST /v1/batch/put",
            )),
        }
    }

    /// The lease a `PUT` attaches its key to.
    fn lease(&self) -> Result<Option<u64>, Problem> {
        self.lease.as_deref().map(super::leases::parse_id).transpose()
    }
}

/// On a `GET`/`HEAD` of a key attached to a lease: the lease's id.
pub const LEASE_HEADER: &str = "x-synod-lease";

/// Parse the exactly-once headers: `X-Synod-Session` + `X-Synod-Seq`, or `Idempotency-Key`, in
/// the namespace of the token that sent them (`scope`: the token's name; empty without
/// authentication). Sessions of different tokens never meet: one token cannot read another's
/// cached results, replay its key, or make its sequence numbers stale. A scoped id is a
/// cryptographic hash (a 64-bit FNV could be inverted to collide with another token's id).
pub fn session(headers: &HeaderMap, scope: &str) -> Result<Option<SessionRef>, Problem> {
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
            let client = if scope.is_empty() {
                ClientId(fnv1a64(format!("idempotency-key:{k}").as_bytes()) | (1 << 63))
            } else {
                ClientId(scoped_id("idempotency-key", scope, k) | (1 << 63))
            };
            Ok(Some(SessionRef { client, seq: 1 }))
        }
        (Some(s), Some(n), None) => {
            let mut client = s.parse::<u64>().map_err(|_| Problem::bad_request("X-Synod-Session must be a u64"))?;
            if !scope.is_empty() {
                // Below the top bit, which marks idempotency keys.
                client = scoped_id("session", scope, &client.to_string()) & !(1 << 63);
            }
            let seq = n.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| Problem::bad_request("X-Synod-Seq must be a u64 >= 1"))?;
            Ok(Some(SessionRef { client: ClientId(client), seq }))
        }
        (_, _, Some(_)) => Err(Problem::bad_request("give either Idempotency-Key or X-Synod-Session/X-Synod-Seq, not both")),
        _ => Err(Problem::bad_request("X-Synod-Session and X-Synod-Seq go together")),
    }
}

/// A session id in a token's namespace: 64 bits of BLAKE3 of the kind, the token's name and the
/// client's id (length-prefixed, so no two triples share an input).
fn scoped_id(kind: &str, scope: &str, id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    for part in [kind, scope, id] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Propose `op` with the request's session headers, if `grant` allows it (403 otherwise).
pub async fn write(ctx: &Ctx, grant: &Grant, headers: &HeaderMap, op: WriteOp) -> Result<loop_io::WriteDone, Outcome> {
    grant.check_op(&op)?;
    let session = session(headers, &grant.name).map_err(Outcome::from)?;
    loop_io::write(ctx, session, op, !headers.contains_key(NO_CORE_FORWARD)).await
}

/// The headers every read reply carries: who answered and how far behind it was.
pub fn freshness(ctx: &Ctx, done: &ReadDone) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(super::INDEX_HEADER, HeaderValue::from(done.index));
    h.insert(super::LAG_HEADER, HeaderValue::from(done.lag_slots));
    if let Some(ms) = done.last_contact_ms {
        h.insert(super::LAST_CONTACT_HEADER, HeaderValue::from(ms));
    }
    h.insert(super::SERVED_BY_HEADER, HeaderValue::from(ctx.me.0));
    h
}

/// Attach the store index to a reply.
pub fn with_index(mut r: Response, index: u64) -> Outcome {
    r.headers_mut().insert(super::INDEX_HEADER, HeaderValue::from(index));
    Outcome::Reply(r)
}

/// `GET`/`HEAD /v1/kv/{key}`: the value as `application/octet-stream`, its version as a strong
/// `ETag`, its lease (if it is attached to one) as `X-Synod-Lease`; `If-Match` (strong) and
/// `If-None-Match` (weak) are evaluated on the state read.
pub async fn get(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Key(key): Key, Q(mut q): Q<ReadParams>, headers: HeaderMap) -> Outcome {
    let end = if q.prefix { kvstore::read::prefix_end(&key) } else { None };
    let keys = if q.prefix { Keys::Range(&key, end.as_deref()) } else { Keys::One(&key) };
    if let Err(p) = grant.check_read(keys) {
        return p.into();
    }
    if q.wait_index.is_some() || q.wait.is_some() || q.prefix {
        let lp = super::watch::LongPoll { wait_index: q.wait_index.take(), wait: q.wait.take(), prefix: std::mem::take(&mut q.prefix) };
        return Box::pin(super::watch::long_poll(ctx, grant, key, q, lp, headers)).await;
    }
    let (consistency, pre) = match (q.consistency(), Preconditions::from_headers(&headers)) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(p), _) | (_, Err(p)) => return p.into(),
    };
    let k = key.clone();
    // The key's lease, if any, read at the same state (0: none; no lease has id 0, the id being
    // the grant's log index).
    let lease = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lease_seen = lease.clone();
    let read = move |s: &kvstore::Store| {
        lease_seen.store(s.lease_of(&k).unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        ReadAnswer::Get(s.get(&k))
    };
    let done = match loop_io::read(&ctx, consistency, Box::new(read)).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let lease = lease.load(std::sync::atomic::Ordering::Relaxed);
    let fresh = freshness(&ctx, &done);
    let ReadAnswer::Get(current) = done.answer else {
        return Problem::internal("the node loop answered another read").into();
    };
    let mut r = match (pre.evaluate_read(current.as_ref().map(|v| v.version)), current) {
        (ReadVerdict::Failed, current) => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Precondition failed",
            format!("If-Match does not match the current version of {}", super::problem::show(&key)),
        )
        .with("key", bytes_value(&key))
        .with("current_version", json!(current.map(|v| v.version)))
        .into_response(),
        (ReadVerdict::NotModified, Some(v)) => {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().insert(ETAG, etag(v.version));
            r
        }
        (_, Some(v)) => {
            let mut r = Response::new(Body::from(v.value));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            r.headers_mut().insert(ETAG, etag(v.version));
            r.headers_mut().insert("x-synod-version", HeaderValue::from(v.version));
            if lease != 0 {
                r.headers_mut().insert(LEASE_HEADER, HeaderValue::from(lease));
            }
            r
        }
        (_, None) => Problem::not_found(&key).into_response(),
    };
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

/// `PUT /v1/kv/{key}`: the body is the value. 201 if the key was created, 200 if replaced.
/// `?lease=ID` attaches the key to that lease (404 `lease-not-found` if it does not exist,
/// 409 `too-many-lease-keys` if it is full); without it the put detaches the key from any lease.
pub async fn put(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Key(key): Key, Q(q): Q<WriteParams>, headers: HeaderMap, body: Bytes) -> Outcome {
    let (guard, lease) = match q.check().and_then(|()| Ok((Preconditions::from_headers(&headers)?.write_guard()?, q.lease()?))) {
        Ok(g) => g,
        Err(p) => return p.into(),
    };
    let op = match lease {
        // A leased put is a batch of one put, answered like a put (`WriteOutcome::Put`).
        Some(lease) => WriteOp::Leased { lease, ops: vec![kvstore::BatchOp::Put { key: key.clone(), value: body.to_vec(), guard }] },
        None => WriteOp::Put { key: key.clone(), value: body.to_vec(), guard },
    };
    let done = match write(&ctx, &grant, &headers, op).await {
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

/// `DELETE /v1/kv/{key}`: 200 with the previous version, 404 if there was no such key.
pub async fn delete(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Key(key): Key, Q(q): Q<WriteParams>, headers: HeaderMap) -> Outcome {
    if q.lease.is_some() {
        return Problem::bad_request("lease is a parameter of PUT: a delete detaches the key from its lease anyway").into();
    }
    let guard = match q.check().and_then(|()| Preconditions::from_headers(&headers)?.write_guard()) {
        Ok(g) => g,
        Err(p) => return p.into(),
    };
    let done = match write(&ctx, &grant, &headers, WriteOp::Delete { key: key.clone(), guard }).await {
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

/// One entry of a range or batch reply.
pub fn entry_json(key: &[u8], value: Option<&[u8]>, version: u64) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("key".into(), bytes_value(key));
    if let Some(v) = value {
        m.insert("value".into(), bytes_value(v));
    }
    m.insert("version".into(), json!(version));
    Value::Object(m)
}

/// Query of `GET /v1/kv`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// First key (inclusive).
    pub start: Option<String>,
    /// Last key (exclusive).
    pub end: Option<String>,
    /// Only keys with this prefix.
    pub prefix: Option<String>,
    /// `base64url`: `start`, `end` and `prefix` are base64url (RFC 4648 5), for binary keys.
    pub encoding: Option<String>,
    /// Most entries per page.
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page (an opaque token).
    pub cursor: Option<String>,
    /// Keys and versions only.
    #[serde(default, deserialize_with = "flag")]
    pub keys_only: bool,
    /// `linearizable` (default) or `sequential`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the answer must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// A range cursor as sent to clients: base64url without padding of the key to resume from, so
/// any key (binary too) round-trips as a plain query value.
pub fn encode_cursor(key: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

fn decode_b64url(what: &str, s: &str) -> Result<Vec<u8>, Problem> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| Problem::bad_request(format!("{what} {s:?} is not base64url: {e}")))
}

impl RangeParams {
    fn query(&self) -> Result<RangeQuery, Problem> {
        let bound = |what: &str, v: &Option<String>| -> Result<Option<Vec<u8>>, Problem> {
            match (self.encoding.as_deref(), v) {
                (_, None) => Ok(None),
                (None, Some(s)) => Ok(Some(s.as_bytes().to_vec())),
                (Some("base64url"), Some(s)) => decode_b64url(what, s).map(Some),
                (Some(other), Some(_)) => Err(Problem::bad_request(format!("encoding {other:?} is not base64url"))),
            }
        };
        if let Some(e) = self.encoding.as_deref().filter(|e| *e != "base64url") {
            return Err(Problem::bad_request(format!("encoding {e:?} is not base64url")));
        }
        Ok(RangeQuery {
            start: bound("start", &self.start)?.unwrap_or_default(),
            end: bound("end", &self.end)?,
            prefix: bound("prefix", &self.prefix)?,
            limit: self.limit.unwrap_or(0),
            cursor: self.cursor.as_deref().map(|c| decode_b64url("cursor", c)).transpose()?,
            keys_only: self.keys_only,
        })
    }
}

/// Query of `DELETE /v1/kv`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct DeleteRangeParams {
    /// First key (inclusive).
    pub start: Option<String>,
    /// Last key (exclusive).
    pub end: Option<String>,
    /// Every key with this prefix (not with `start` or `end`).
    pub prefix: Option<String>,
    /// `base64url`: `start`, `end` and `prefix` are base64url (RFC 4648 5), for binary keys.
    pub encoding: Option<String>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

impl DeleteRangeParams {
    /// The range `[start, end)` (`end: None`: no upper bound).
    fn range(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), Problem> {
        let q = RangeParams {
            start: self.start.clone(),
            end: self.end.clone(),
            prefix: self.prefix.clone(),
            encoding: self.encoding.clone(),
            limit: None,
            cursor: None,
            keys_only: false,
            consistency: None,
            min_index: None,
            redirect: false,
        }
        .query()?;
        match (q.prefix, self.start.is_some() || self.end.is_some()) {
            (Some(_), true) => Err(Problem::bad_request("give prefix, or start and end, not both")),
            (Some(p), false) => {
                let end = kvstore::read::prefix_end(&p);
                Ok((p, end))
            }
            (None, true) => Ok((q.start, q.end)),
            (None, false) => Err(Problem::bad_request(
                "a range delete needs prefix=P or start=S (and end=E): DELETE /v1/kv?prefix= deletes every key, explicitly",
            )),
        }
    }
}

/// `DELETE /v1/kv?prefix=P` (or `?start=S&end=E`): delete every key in the range, atomically, in
/// one log slot. Needs cluster version 2 (409 `cluster-version` until every member runs a build
/// that reads it).
pub async fn delete_range(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Q(q): Q<DeleteRangeParams>, headers: HeaderMap) -> Outcome {
    let (start, end) = match q.range() {
        Ok(r) => r,
        Err(p) => return p.into(),
    };
    let done = match write(&ctx, &grant, &headers, WriteOp::DeleteRange { start, end }).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => match res.outcome {
            WriteOutcome::RangeDeleted { deleted } => {
                let body = json!({ "deleted": deleted, "index": done.index });
                Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
            }
            _ => Problem::internal("the store answered a range delete with another outcome").into(),
        },
        Err(e) => with_index(Problem::from_write_error(&e, true).into_response(), done.index),
    }
}

/// `GET /v1/kv`: a page of keys in order; `next_cursor` (absent on the last page) continues it.
pub async fn range(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Q(q): Q<RangeParams>) -> Outcome {
    let (consistency, rq) = match (consistency(q.consistency.as_deref(), q.min_index), q.query()) {
        (Ok(c), Ok(rq)) => (c, rq),
        (Err(p), _) | (_, Err(p)) => return p.into(),
    };
    let (lo, hi) = rq.bounds();
    if let Err(p) = grant.check_read(Keys::Range(&lo, hi.as_deref())) {
        return p.into();
    }
    let done = match loop_io::read(&ctx, consistency, Box::new(move |s| ReadAnswer::Range(s.range(&rq)))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(&ctx, &done);
    let ReadAnswer::Range(page) = done.answer else {
        return Problem::internal("the node loop answered another read").into();
    };
    let entries: Vec<Value> = page.entries.iter().map(|e| entry_json(&e.key, e.value.as_deref(), e.version)).collect();
    let body = json!({
        "index": page.index,
        "entries": entries,
        "next_cursor": page.next_cursor.as_deref().map(encode_cursor),
    });
    let mut r = json_reply(StatusCode::OK, &body, Some(done.index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
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
        assert_eq!(session(&headers(&[]), "").unwrap(), None);
        let s = session(&headers(&[("x-synod-session", "7"), ("x-synod-seq", "3")]), "").unwrap().unwrap();
        assert_eq!((s.client, s.seq), (ClientId(7), 3));
        // The same key gives the same session on any replica, with sequence number 1.
        let a = session(&headers(&[("idempotency-key", "k")]), "").unwrap().unwrap();
        let b = session(&headers(&[("idempotency-key", "k")]), "").unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.seq, 1);
        assert!(a.client.0 >> 63 == 1, "keys live apart from CLI sessions");
        // With tokens, each token's keys and sessions are its own: the same key or session id
        // from another token is another session (and ids stay on their side of the top bit).
        let alice = session(&headers(&[("idempotency-key", "k")]), "alice").unwrap().unwrap();
        let mallory = session(&headers(&[("idempotency-key", "k")]), "mallory").unwrap().unwrap();
        assert!(alice != mallory && alice != a && alice.client.0 >> 63 == 1);
        assert_eq!(alice, session(&headers(&[("idempotency-key", "k")]), "alice").unwrap().unwrap());
        let sa = session(&headers(&[("x-synod-session", "7"), ("x-synod-seq", "3")]), "alice").unwrap().unwrap();
        let sm = session(&headers(&[("x-synod-session", "7"), ("x-synod-seq", "3")]), "mallory").unwrap().unwrap();
        assert!(sa.client != sm.client && sa.client != ClientId(7) && sa.client.0 >> 63 == 0);
        for bad in [
            vec![("x-synod-session", "7")],
            vec![("x-synod-session", "x"), ("x-synod-seq", "1")],
            vec![("x-synod-session", "7"), ("x-synod-seq", "0")],
            vec![("x-synod-session", "7"), ("x-synod-seq", "1"), ("idempotency-key", "k")],
        ] {
            assert_eq!(session(&headers(&bad), "").unwrap_err().status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn consistency_parameters() {
        assert_eq!(consistency(None, None).unwrap(), Consistency::Linearizable);
        assert_eq!(consistency(Some("sequential"), Some(9)).unwrap(), Consistency::Sequential { min_index: 9 });
        assert!(consistency(Some("eventual"), None).is_err());
        // min_index only means something for a sequential read.
        assert!(consistency(None, Some(3)).is_err());
        assert!(consistency(Some("linearizable"), Some(3)).is_err());
    }

    #[test]
    fn keys_percent_decode_strictly_and_cursors_round_trip() {
        assert_eq!(percent_decode_strict("a%2Fb+c%ff").unwrap(), b"a/b+c\xff");
        assert_eq!(percent_decode_strict("%zz"), None);
        assert_eq!(percent_decode_strict("%4"), None);
        for key in [&b"plain"[..], b"\xff\x00/+=", b""] {
            assert_eq!(decode_b64url("cursor", &encode_cursor(key)).unwrap(), key);
        }
    }
}
