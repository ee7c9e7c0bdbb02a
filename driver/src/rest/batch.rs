//! `POST /v1/batch/get`, `POST /v1/batch/put` and `POST /v1/rmw`: JSON bodies.
//!
//! Every key and value in a body is a byte string in either JSON form ([`Bin`]: `"text"` or
//! `{"base64": "..."}`), as in replies. Bodies are strict (unknown fields are 400), and a request
//! that is invalid whatever the state (a key named twice in a batch, a CAS that names neither a
//! new value nor `delete`) is refused before it is proposed.

use super::json::{Bin, Json};
use super::kv::{self, entry_json, freshness, with_index, write};
use super::loop_io::{self, ReadAnswer};
use super::problem::{bytes_value, Problem};
use super::query::{flag, NoParams, Q};
use super::{json_reply, Ctx, Outcome};
use super::auth::{Grant, Keys};
use axum::Extension;
use hyper::header::HeaderMap;
use hyper::StatusCode;
use kvstore::{BatchOp, CasExpect, Guard, WriteOp, WriteOutcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Body of `POST /v1/batch/get`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGetBody {
    /// The keys to read, answered in this order.
    pub keys: Vec<Bin>,
}

/// Query of `POST /v1/batch/get`: the consistency of a read (a batch neither long-polls nor
/// lists a prefix, so `wait_index`, `wait` and `prefix` are unknown parameters here, not
/// silently ignored ones as when this took a one-key read's query).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct BatchReadParams {
    /// `linearizable` (default) or `sequential`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the answer must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// `POST /v1/batch/get`: several keys read at one index.
pub async fn get(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Q(q): Q<BatchReadParams>, Json(body): Json<BatchGetBody>) -> Outcome {
    let consistency = match kv::consistency(q.consistency.as_deref(), q.min_index) {
        Ok(c) => c,
        Err(p) => return p.into(),
    };
    let keys: Vec<Vec<u8>> = body.keys.into_iter().map(Bin::into_bytes).collect();
    if keys.len() > ctx.limits.max_batch_ops {
        return Problem::from_write_error(
            &kvstore::WriteError::TooLarge {
                what: kvstore::LimitKind::BatchOps,
                limit: ctx.limits.max_batch_ops as u64,
                got: keys.len() as u64,
            },
            false,
        )
        .into();
    }
    if let Some(p) = keys.iter().find_map(|k| grant.check_read(Keys::One(k)).err()) {
        return p.into();
    }
    let k2 = keys.clone();
    let done = match loop_io::read(&ctx, consistency, Box::new(move |s| ReadAnswer::Many(s.get_many(&k2)))).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    let fresh = freshness(&ctx, &done);
    let ReadAnswer::Many(many) = done.answer else {
        return Problem::internal("the node loop answered another read").into();
    };
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
pub struct GuardJson {
    /// The key's version equals this (0: absent).
    pub version: Option<u64>,
    /// The key exists (`true`) or not (`false`).
    pub exists: Option<bool>,
    /// The key holds exactly this value.
    pub value: Option<Bin>,
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

/// One operation of a batch.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchOpJson {
    /// Set a key.
    Put {
        /// The key.
        key: Bin,
        /// The value.
        value: Bin,
        /// Optional condition.
        guard: Option<GuardJson>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Bin,
        /// Optional condition.
        guard: Option<GuardJson>,
    },
}

/// Body of `POST /v1/batch/put`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPutBody {
    /// The operations, all or nothing; a key may appear once.
    pub ops: Vec<BatchOpJson>,
    /// Attach every key the batch puts to this lease (a number or a decimal string): the batch
    /// is refused whole if the lease does not exist (404) or would hold too many keys (409).
    #[serde(default, deserialize_with = "super::leases::de_opt_id")]
    pub lease: Option<u64>,
}

/// `POST /v1/batch/put`: puts and deletes applied atomically, guards checked first; with
/// `"lease"`, the keys put are attached to that lease.
pub async fn put(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, _: Q<NoParams>, headers: HeaderMap, Json(body): Json<BatchPutBody>) -> Outcome {
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
    let op = match body.lease {
        Some(lease) => WriteOp::Leased { lease, ops },
        None => WriteOp::PutMany { ops },
    };
    let done = match write(&ctx, &grant, &headers, op).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => {
            let (puts, deletes) = match res.outcome {
                WriteOutcome::Batch { puts, deletes } => (puts, deletes),
                // A leased batch of exactly one put is answered as a put.
                WriteOutcome::Put { .. } => (1, 0),
                _ => (0, 0),
            };
            let body = json!({ "index": done.index, "version": res.index, "puts": puts, "deletes": deletes });
            Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
        }
        Err(e) => with_index(Problem::from_write_error(&e, false).into_response(), done.index),
    }
}

/// Body of `POST /v1/rmw`.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RmwJson {
    /// Compare-and-set: exactly one of `expected`, `expected_version`, `expected_absent`; then
    /// exactly one of `new` (the value to set) and `"delete": true` (remove the key). A CAS
    /// with neither is refused (400): it used to delete the key, which surprised.
    Cas {
        /// The key.
        key: Bin,
        /// The value the key must hold.
        expected: Option<Bin>,
        /// The version the key must have (0: absent).
        expected_version: Option<u64>,
        /// The key must be absent.
        #[serde(default)]
        expected_absent: bool,
        /// The value to set.
        new: Option<Bin>,
        /// Remove the key instead of setting it.
        #[serde(default)]
        delete: bool,
    },
    /// Add `delta` (default 1) to a decimal integer; a missing key counts as `initial` (0).
    Incr {
        /// The key.
        key: Bin,
        /// The amount.
        #[serde(default = "one")]
        delta: i64,
        /// The value a missing key is taken to hold.
        #[serde(default)]
        initial: i64,
    },
    /// Append bytes to the value.
    Append {
        /// The key.
        key: Bin,
        /// The bytes to append.
        value: Bin,
    },
}

fn one() -> i64 {
    1
}

impl RmwJson {
    /// The command, or why it is invalid whatever the state.
    fn into_op(self) -> Result<WriteOp, Problem> {
        Ok(match self {
            RmwJson::Cas { key, expected, expected_version, expected_absent, new, delete } => {
                let expected = match (expected, expected_version, expected_absent) {
                    (Some(v), None, false) => CasExpect::Value(Some(v.into_bytes())),
                    (None, Some(n), false) => CasExpect::Version(n),
                    (None, None, true) => CasExpect::Value(None),
                    _ => return Err(Problem::bad_request("cas needs exactly one of expected, expected_version, expected_absent")),
                };
                let new = match (new, delete) {
                    (Some(v), false) => Some(v.into_bytes()),
                    (None, true) => None,
                    (None, false) => {
                        return Err(Problem::bad_request("cas needs the value to set (\"new\") or \"delete\": true to remove the key"))
                    }
                    (Some(_), true) => return Err(Problem::bad_request("cas takes \"new\" or \"delete\": true, not both")),
                };
                WriteOp::Cas { key: key.into_bytes(), expected, new }
            }
            RmwJson::Incr { key, delta, initial } => WriteOp::Incr { key: key.into_bytes(), delta, initial },
            RmwJson::Append { key, value } => WriteOp::Append { key: key.into_bytes(), value: value.into_bytes() },
        })
    }
}

/// `POST /v1/rmw`: compare-and-set, increment or append on one key.
pub async fn rmw(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, _: Q<NoParams>, headers: HeaderMap, Json(body): Json<RmwJson>) -> Outcome {
    let op = match body.into_op() {
        Ok(op) => op,
        Err(p) => return p.into(),
    };
    let key = match &op {
        WriteOp::Cas { key, .. } | WriteOp::Incr { key, .. } | WriteOp::Append { key, .. } => key.clone(),
        _ => Vec::new(),
    };
    let done = match write(&ctx, &grant, &headers, op).await {
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

    fn op(body: &str) -> Result<WriteOp, Problem> {
        serde_json::from_str::<RmwJson>(body).map_err(|e| Problem::bad_request(e.to_string()))?.into_op()
    }

    #[test]
    fn a_batch_read_takes_no_long_poll_parameters() {
        let q: BatchReadParams = crate::rest::query::parse("consistency=sequential&min_index=3&redirect").unwrap();
        assert_eq!((q.consistency.as_deref(), q.min_index, q.redirect), (Some("sequential"), Some(3), true));
        // These used to be accepted and ignored (the one-key read's query), and `wait_index`
        // stretched the request's deadline by the default long-poll wait.
        for bad in ["wait_index=1", "wait=1s", "prefix=true"] {
            assert!(crate::rest::query::parse::<BatchReadParams>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cas_names_its_new_value_or_delete() {
        assert_eq!(
            op(r#"{"op":"cas","key":"k","expected_absent":true,"new":{"base64":"/w=="}}"#).unwrap(),
            WriteOp::Cas { key: b"k".to_vec(), expected: CasExpect::Value(None), new: Some(vec![0xff]) }
        );
        assert_eq!(
            op(r#"{"op":"cas","key":"k","expected_version":3,"delete":true}"#).unwrap(),
            WriteOp::Cas { key: b"k".to_vec(), expected: CasExpect::Version(3), new: None }
        );
        // No `new` used to delete the key; now it is a 400 before anything is proposed.
        for bad in [
            r#"{"op":"cas","key":"k","expected_version":3}"#,
            r#"{"op":"cas","key":"k","expected_version":3,"new":null}"#,
            r#"{"op":"cas","key":"k","expected_version":3,"new":"v","delete":true}"#,
        ] {
            assert_eq!(op(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
