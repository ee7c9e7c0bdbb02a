//! `/v1/leases`: grant, keep alive, revoke, show and list leases ([`kvstore::lease`]).
//!
//! A lease is time-limited ownership decided by the log: granted with a TTL (`POST /v1/leases`),
//! renewed (`POST /v1/leases/{id}/keepalive`), ended (`DELETE /v1/leases/{id}`, which deletes
//! every key attached to it in that one command), and expired by the leader's sweeps once its
//! TTL of log time passes without a keepalive. Keys are attached by a put that names the lease
//! (`PUT /v1/kv/{key}?lease=ID`, or `"lease"` in a `POST /v1/batch/put` body).
//!
//! The writes go through [`super::kv::write`] like every other write (exactly-once headers,
//! forwarding to the leader, the grant's permissions, the write timeout). The reads take
//! `consistency` and `min_index` like `GET /v1/kv/{key}` (linearizable by default).
//!
//! A lease id is a u64 (the grant's log index): a number in JSON replies, decimal text in paths
//! and queries, and a number or decimal string in request bodies (clients whose JSON numbers are
//! doubles can send it as a string).
//!
//! **Permissions.** Granting needs a token that may write some key ([`Grant::check_op`]).
//! Revoking and keeping alive need that too, and, as etcd does for a revoke, a token that may
//! write every key attached to the lease ([`check_lease_keys`]): a lease id is a log index, easy
//! to guess, and revoking deletes the keys, so an id must not be a capability. The keys are
//! looked up in this replica's store when the request is checked (a revoke after a linearizable
//! read, a keepalive in the applied state); a key attached between the check and the
//! command's turn in the log is not checked, the same race etcd has. A lease with no keys may be
//! revoked or kept alive by any token that may write some key. Showing one lease needs a token
//! that may read some key; the reply lists only the attached keys the token may read
//! (`keys_hidden` counts the others). Listing every lease needs an admin token or one that may
//! read every key: the list names every client's leases.

use super::auth::{Grant, Keys};
use super::json::Json;
use super::kv::{consistency, freshness, with_index, write};
use super::loop_io::{self, Consistency, ReadAnswer};
use super::problem::{bytes_value, Problem};
use super::query::{flag, NoParams, Segment, Q};
use super::{json_reply, Ctx, Outcome};
use axum::Extension;
use hyper::header::{HeaderMap, HeaderValue, LOCATION};
use hyper::StatusCode;
use kvstore::{LeaseInfo, WriteOp, WriteOutcome};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Leases per page of `GET /v1/leases` when `limit` is absent or 0.
pub const DEFAULT_PAGE: usize = 100;
/// The most leases one page of `GET /v1/leases` holds (a larger `limit` is cut to this).
pub const MAX_PAGE: usize = 1000;

/// Parse a lease id given as text (a path segment, a query value): a decimal u64.
pub fn parse_id(s: &str) -> Result<u64, Problem> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::bad_request(format!("lease id {s:?} is not a decimal number")));
    }
    s.parse::<u64>().map_err(|_| Problem::bad_request(format!("lease id {s:?} does not fit in 64 bits")))
}

/// A lease id in a JSON body: a number, or a decimal string.
pub fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Either::deserialize(d).map_err(|_| de::Error::custom("a lease id is a non-negative integer or a decimal string"))? {
        Either::Number(n) => Ok(n),
        Either::Text(s) => parse_id(&s).map_err(|p| de::Error::custom(p.detail)),
    }
}

/// [`de_id`] for an optional field (use with `#[serde(default)]`).
pub fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_id(d).map(Some)
}

/// Parse a TTL like `1500ms`, `2s`, `5m`, `1h` (plain digits are seconds) into milliseconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let bad = || format!("TTL {s:?} is not a duration like 1500ms, 2s, 5m or 1h");
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(per).ok_or_else(bad)
}

/// Body of `POST /v1/leases`: exactly one of `ttl_ms` and `ttl`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The TTL in milliseconds of log time.
    pub ttl_ms: Option<u64>,
    /// The TTL as a duration: `1500ms`, `2s`, `5m`, `1h`.
    pub ttl: Option<String>,
}

impl GrantBody {
    fn ttl_ms(&self) -> Result<u64, Problem> {
        match (self.ttl_ms, self.ttl.as_deref()) {
            (Some(ms), None) => Ok(ms),
            (None, Some(t)) => parse_ttl(t).map_err(Problem::bad_request),
            _ => Err(Problem::bad_request("a grant names its TTL: exactly one of ttl_ms (milliseconds) and ttl (\"2s\")")),
        }
    }
}

/// Query of `GET /v1/leases/{id}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ShowParams {
    /// `linearizable` (default) or `sequential`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the answer must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// Query of `GET /v1/leases`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only leases with a larger id (the last id of the previous page).
    pub after: Option<u64>,
    /// Most leases per page ([`DEFAULT_PAGE`]; 0: the default; more than [`MAX_PAGE`]: that).
    pub limit: Option<usize>,
    /// `linearizable` (default) or `sequential`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the answer must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// 404 `lease-not-found` for a read (a refused write gets the same type from
/// [`Problem::from_write_error`]).
pub fn not_found(id: u64) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "lease-not-found",
        "Lease not found",
        format!("lease {id} does not exist: it expired, was revoked, or was never granted"),
    )
    .with("lease", json!(id.to_string()))
}

/// Propose a lease operation and answer: `ok` builds the success reply (status and body) from
/// the outcome and the index.
async fn lease_write(ctx: &Ctx, grant: &Grant, headers: &HeaderMap, op: WriteOp, ok: impl FnOnce(WriteOutcome, u64) -> Option<(StatusCode, Value)>) -> Outcome {
    let done = match write(ctx, grant, headers, op).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => match ok(res.outcome, done.index) {
            Some((status, body)) => {
                let mut r = json_reply(status, &body, Some(done.index));
                if status == StatusCode::CREATED {
                    // A grant: where the new lease is read.
                    if let Some(id) = body["id"].as_u64() {
                        r.headers_mut().insert(LOCATION, HeaderValue::from_str(&format!("/v1/leases/{id}")).expect("ASCII"));
                    }
                }
                Outcome::Reply(r)
            }
            None => Problem::internal("the store answered a lease operation with another outcome").into(),
        },
        Err(e) => with_index(Problem::from_write_error(&e, false).into_response(), done.index),
    }
}

/// `POST /v1/leases`: grant a lease. 201 `{id, ttl_ms, index}` with `Location: /v1/leases/{id}`.
pub async fn grant(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, _: Q<NoParams>, headers: HeaderMap, Json(body): Json<GrantBody>) -> Outcome {
    let ttl_ms = match body.ttl_ms() {
        Ok(t) => t,
        Err(p) => return p.into(),
    };
    lease_write(&ctx, &grant, &headers, WriteOp::LeaseGrant { ttl_ms }, |o, index| match o {
        WriteOutcome::LeaseGranted { id, ttl_ms } => Some((StatusCode::CREATED, json!({ "id": id, "ttl_ms": ttl_ms, "index": index }))),
        _ => None,
    })
    .await
}

/// 403 unless `grant` may write every key attached to lease `id` as this replica's store shows
/// it, read at `consistency` (`what`: the operation, for the refusal). A token that may write
/// every key needs no read, and one that may write none is refused by [`Grant::check_op`]; a
/// lease that does not exist passes (the command answers 404). The refusal names no key: the
/// token may not be allowed to read them.
pub async fn check_lease_keys(ctx: &Ctx, grant: &Grant, id: u64, what: &str, consistency: Consistency) -> Result<(), Outcome> {
    if grant.write.is_empty() || grant.may_write(Keys::Range(b"", None)) {
        return Ok(());
    }
    let done = loop_io::read(ctx, consistency, Box::new(move |s| ReadAnswer::Leases(s.lease(id).into_iter().collect()))).await?;
    let ReadAnswer::Leases(found) = done.answer else {
        return Err(Problem::internal("the node loop answered another read").into());
    };
    let Some(lease) = found.into_iter().next() else { return Ok(()) };
    if lease.keys.iter().all(|k| grant.may_write(Keys::One(k))) {
        return Ok(());
    }
    let prefixes: Vec<String> = grant.write.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    Err(Problem::forbidden(format!(
        "token {:?} may not {what} lease {id}: keys are attached to it that the token may not write (a lease is revoked or kept alive only by a token that may write every key attached to it)",
        grant.name
    ))
    .with("token", json!(grant.name))
    .with("lease", json!(id.to_string()))
    .with("write_prefixes", json!(prefixes))
    .into())
}

/// `POST /v1/leases/{id}/keepalive`: renew a lease for its TTL from now. 200 `{id, ttl_ms, index}`.
/// The token must be allowed to write every key attached to it ([`check_lease_keys`], against
/// this replica's applied state: cheap, no round to the leader).
pub async fn keepalive(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(id): Segment, _: Q<NoParams>, headers: HeaderMap) -> Outcome {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(p) => return p.into(),
    };
    if let Err(o) = check_lease_keys(&ctx, &grant, id, "keep alive", Consistency::Sequential { min_index: 0 }).await {
        return o;
    }
    lease_write(&ctx, &grant, &headers, WriteOp::LeaseKeepAlive { id }, |o, index| match o {
        WriteOutcome::LeaseKept { id, ttl_ms } => Some((StatusCode::OK, json!({ "id": id, "ttl_ms": ttl_ms, "index": index }))),
        _ => None,
    })
    .await
}

/// `DELETE /v1/leases/{id}`: end a lease and delete its keys. 200 `{id, deleted, index}`. The
/// token must be allowed to write every key attached to it ([`check_lease_keys`], after a
/// linearizable read: the keys as of the request).
pub async fn revoke(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(id): Segment, _: Q<NoParams>, headers: HeaderMap) -> Outcome {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(p) => return p.into(),
    };
    if let Err(o) = check_lease_keys(&ctx, &grant, id, "revoke", Consistency::Linearizable).await {
        return o;
    }
    lease_write(&ctx, &grant, &headers, WriteOp::LeaseRevoke { id }, |o, index| match o {
        WriteOutcome::LeaseRevoked { id, deleted } => Some((StatusCode::OK, json!({ "id": id, "deleted": deleted, "index": index }))),
        _ => None,
    })
    .await
}

/// 403 unless the token may read some key (or is an admin).
fn check_may_read_leases(grant: &Grant) -> Result<(), Problem> {
    if grant.admin || !grant.read.is_empty() {
        return Ok(());
    }
    Err(Problem::forbidden(format!("token {:?} may read no key, so it may not read leases", grant.name)).with("token", json!(grant.name)))
}

/// `GET /v1/leases/{id}`: one lease, with the attached keys the token may read.
pub async fn show(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(id): Segment, Q(q): Q<ShowParams>) -> Outcome {
    let (id, consistency) = match (parse_id(&id), consistency(q.consistency.as_deref(), q.min_index)) {
        (Ok(id), Ok(c)) => (id, c),
        (Err(p), _) | (_, Err(p)) => return p.into(),
    };
    if let Err(p) = check_may_read_leases(&grant) {
        return p.into();
    }
    let done = match loop_io::read(&ctx, consistency, Box::new(move |s| ReadAnswer::Leases(s.lease(id).into_iter().collect()))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(&ctx, &done);
    let ReadAnswer::Leases(found) = done.answer else {
        return Problem::internal("the node loop answered another read").into();
    };
    let mut r = match found.into_iter().next() {
        Some(l) => json_reply(StatusCode::OK, &show_json(&l, &grant), Some(done.index)),
        None => not_found(id).into_response(),
    };
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

/// One lease as `GET /v1/leases/{id}` shows it to `grant`.
fn show_json(l: &LeaseInfo, grant: &Grant) -> Value {
    let (shown, hidden): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) = l.keys.iter().partition(|k| grant.may_read(Keys::One(k)));
    let mut body = json!({
        "id": l.id,
        "ttl_ms": l.ttl_ms,
        "remaining_ms": l.remaining_ms,
        "keys": shown.iter().map(|k| bytes_value(k)).collect::<Vec<_>>(),
    });
    if !hidden.is_empty() {
        body["keys_hidden"] = json!(hidden.len());
    }
    body
}

/// `GET /v1/leases`: a page of leases in id order (`after`, `limit`); `more` says whether
/// another page follows (ask again with `after` = the last id).
pub async fn list(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Q(q): Q<ListParams>) -> Outcome {
    let consistency = match consistency(q.consistency.as_deref(), q.min_index) {
        Ok(c) => c,
        Err(p) => return p.into(),
    };
    if !(grant.admin || grant.may_read(Keys::Range(b"", None))) {
        return Problem::forbidden(format!(
            "token {:?} may not list leases: the list names every client's leases, so it needs an admin token or one that may read every key (show one lease by id instead)",
            grant.name
        ))
        .with("token", json!(grant.name))
        .into();
    }
    let limit = match q.limit {
        None | Some(0) => DEFAULT_PAGE,
        Some(n) => n.min(MAX_PAGE),
    };
    let after = q.after.unwrap_or(0);
    let read = move |s: &kvstore::Store| ReadAnswer::Leases(s.lease_ids(after, limit + 1).into_iter().filter_map(|id| s.lease(id)).collect());
    let done = match loop_io::read(&ctx, consistency, Box::new(read)).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(&ctx, &done);
    let ReadAnswer::Leases(mut found) = done.answer else {
        return Problem::internal("the node loop answered another read").into();
    };
    let more = found.len() > limit;
    found.truncate(limit);
    let leases: Vec<Value> = found
        .iter()
        .map(|l| json!({ "id": l.id, "ttl_ms": l.ttl_ms, "remaining_ms": l.remaining_ms, "keys_count": l.keys.len() }))
        .collect();
    let mut r = json_reply(StatusCode::OK, &json!({ "leases": leases, "more": more }), Some(done.index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decimal_text_in_paths_and_numbers_or_text_in_bodies() {
        assert_eq!(parse_id("42").unwrap(), 42);
        assert_eq!(parse_id("18446744073709551615").unwrap(), u64::MAX);
        for bad in ["", "x", "-1", "+1", "1.0", "18446744073709551616", " 1"] {
            assert_eq!(parse_id(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        #[derive(Deserialize)]
        struct B {
            #[serde(default, deserialize_with = "de_opt_id")]
            lease: Option<u64>,
        }
        for (body, want) in [(r#"{"lease":7}"#, Some(7)), (r#"{"lease":"7"}"#, Some(7)), ("{}", None)] {
            assert_eq!(serde_json::from_str::<B>(body).unwrap().lease, want, "{body}");
        }
        for bad in [r#"{"lease":-1}"#, r#"{"lease":"x"}"#, r#"{"lease":1.5}"#, r#"{"lease":null}"#] {
            assert!(serde_json::from_str::<B>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_grant_names_its_ttl_once() {
        assert_eq!(parse_ttl("1500ms").unwrap(), 1500);
        assert_eq!(parse_ttl("2s").unwrap(), 2000);
        assert_eq!(parse_ttl("3").unwrap(), 3000);
        assert_eq!(parse_ttl("5m").unwrap(), 300_000);
        assert_eq!(parse_ttl("1h").unwrap(), 3_600_000);
        for bad in ["", "s", "2x", "1.5s", "-2s", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
        let g = |b: &str| serde_json::from_str::<GrantBody>(b).unwrap().ttl_ms();
        assert_eq!(g(r#"{"ttl_ms":2000}"#).unwrap(), 2000);
        assert_eq!(g(r#"{"ttl":"2s"}"#).unwrap(), 2000);
        assert!(g("{}").is_err());
        assert!(g(r#"{"ttl_ms":2000,"ttl":"2s"}"#).is_err());
        assert!(serde_json::from_str::<GrantBody>(r#"{"ttl_ms":2000,"x":1}"#).is_err());
    }

    #[test]
    fn a_shown_lease_lists_only_the_keys_the_token_may_read() {
        let l = LeaseInfo { id: 9, ttl_ms: 2000, remaining_ms: 1500, keys: vec![b"app/a".to_vec(), b"other/b".to_vec()] };
        let all = show_json(&l, &Grant::all());
        assert_eq!(all, json!({ "id": 9, "ttl_ms": 2000, "remaining_ms": 1500, "keys": ["app/a", "other/b"] }));
        let app = Grant { name: "app".into(), read: vec![b"app/".to_vec()], ..Grant::default() };
        assert_eq!(show_json(&l, &app), json!({ "id": 9, "ttl_ms": 2000, "remaining_ms": 1500, "keys": ["app/a"], "keys_hidden": 1 }));
        assert!(check_may_read_leases(&app).is_ok());
        assert_eq!(check_may_read_leases(&Grant { name: "w".into(), write: vec![Vec::new()], ..Grant::default() }).unwrap_err().status, StatusCode::FORBIDDEN);
    }
}
