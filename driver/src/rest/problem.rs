//! Errors as `application/problem+json` (RFC 9457), with honest status codes.
//!
//! Every error a client can cause maps to a 4xx with a machine-readable `type`; 503 carries
//! `Retry-After`; 504 says the write's outcome is unknown (never "failed"). The mapping from the
//! state machine's deterministic failures lives here so every endpoint answers alike.

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::StatusCode;
use kvstore::{Versioned, WriteError};
use serde_json::{json, Map, Value};

/// The base of every problem `type` URI: a relative reference, resolved against the request's
/// URL to this same server, which serves the page documenting the type at `/problems/<slug>`
/// (the pages are `docs/problems/<slug>.md`, compiled in). A client can therefore always look a
/// type up on the replica that answered, whatever host name it used, and no domain has to be
/// kept alive for the URIs to stay true (RFC 9457 3.1.1 allows relative references).
pub const TYPE_BASE: &str = "/problems/";

/// Every problem type with its page (`docs/problems/<type>.md`), served at `/problems/<type>`.
pub const PAGES: &[(&str, &str)] = &[
    ("busy", include_str!("../../../docs/problems/busy.md")),
    ("campaign-conflict", include_str!("../../../docs/problems/campaign-conflict.md")),
    ("cas-failed", include_str!("../../../docs/problems/cas-failed.md")),
    ("compacted", include_str!("../../../docs/problems/compacted.md")),
    ("catching-up", include_str!("../../../docs/problems/catching-up.md")),
    ("cluster-version", include_str!("../../../docs/problems/cluster-version.md")),
    ("config-refused", include_str!("../../../docs/problems/config-refused.md")),
    ("forbidden", include_str!("../../../docs/problems/forbidden.md")),
    ("forward-failed", include_str!("../../../docs/problems/forward-failed.md")),
    ("guard-failed", include_str!("../../../docs/problems/guard-failed.md")),
    ("halted", include_str!("../../../docs/problems/halted.md")),
    ("idempotency-key-reused", include_str!("../../../docs/problems/idempotency-key-reused.md")),
    ("internal", include_str!("../../../docs/problems/internal.md")),
    ("lagging", include_str!("../../../docs/problems/lagging.md")),
    ("lease-not-found", include_str!("../../../docs/problems/lease-not-found.md")),
    ("lease-ttl", include_str!("../../../docs/problems/lease-ttl.md")),
    ("lock-not-acquired", include_str!("../../../docs/problems/lock-not-acquired.md")),
    ("malformed", include_str!("../../../docs/problems/malformed.md")),
    ("method-not-allowed", include_str!("../../../docs/problems/method-not-allowed.md")),
    ("no-etcd", include_str!("../../../docs/problems/no-etcd.md")),
    ("no-leader", include_str!("../../../docs/problems/no-leader.md")),
    ("no-quorum", include_str!("../../../docs/problems/no-quorum.md")),
    ("no-route", include_str!("../../../docs/problems/no-route.md")),
    ("not-a-member", include_str!("../../../docs/problems/not-a-member.md")),
    ("not-an-integer", include_str!("../../../docs/problems/not-an-integer.md")),
    ("not-found", include_str!("../../../docs/problems/not-found.md")),
    ("not-ready", include_str!("../../../docs/problems/not-ready.md")),
    ("not-registered", include_str!("../../../docs/problems/not-registered.md")),
    ("outcome-unknown", include_str!("../../../docs/problems/outcome-unknown.md")),
    ("overflow", include_str!("../../../docs/problems/overflow.md")),
    ("precondition-failed", include_str!("../../../docs/problems/precondition-failed.md")),
    ("proposal-lost", include_str!("../../../docs/problems/proposal-lost.md")),
    ("redirect", include_str!("../../../docs/problems/redirect.md")),
    ("removed", include_str!("../../../docs/problems/removed.md")),
    ("session-expired", include_str!("../../../docs/problems/session-expired.md")),
    ("session-seq-reused", include_str!("../../../docs/problems/session-seq-reused.md")),
    ("session-stale", include_str!("../../../docs/problems/session-stale.md")),
    ("sessions-full", include_str!("../../../docs/problems/sessions-full.md")),
    ("shutting-down", include_str!("../../../docs/problems/shutting-down.md")),
    ("timeout", include_str!("../../../docs/problems/timeout.md")),
    ("too-large", include_str!("../../../docs/problems/too-large.md")),
    ("too-many-hops", include_str!("../../../docs/problems/too-many-hops.md")),
    ("too-many-lease-keys", include_str!("../../../docs/problems/too-many-lease-keys.md")),
    ("too-many-leases", include_str!("../../../docs/problems/too-many-leases.md")),
    ("unauthorized", include_str!("../../../docs/problems/unauthorized.md")),
    ("unsupported-content-encoding", include_str!("../../../docs/problems/unsupported-content-encoding.md")),
    ("unsupported-media-type", include_str!("../../../docs/problems/unsupported-media-type.md")),
    ("uri-too-long", include_str!("../../../docs/problems/uri-too-long.md")),
];

/// The page documenting problem type `slug`.
pub fn page(slug: &str) -> Option<&'static str> {
    PAGES.iter().find(|(s, _)| *s == slug).map(|(_, p)| *p)
}

/// One problem answer.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The last segment of the `type` URI (`not-found`, `guard-failed`, ...).
    pub slug: &'static str,
    /// A short human summary of the kind of problem.
    pub title: &'static str,
    /// What happened in this instance.
    pub detail: String,
    /// Extension members (the current value after a failed guard, the leader, ...).
    pub extra: Map<String, Value>,
    /// Seconds for `Retry-After` (503 only).
    pub retry_after: Option<u64>,
    /// Send `Accept-Encoding: identity` (a 415 for a content coding).
    pub accept_encoding: bool,
}

impl Problem {
    /// A problem of this kind.
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        debug_assert!(page(slug).is_some(), "problem type {slug} has no page in docs/problems");
        Problem { status, slug, title, detail: detail.into(), extra: Map::new(), retry_after: None, accept_encoding: false }
    }

    /// Add an extension member.
    #[must_use]
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "malformed", "Malformed request", detail)
    }

    /// 401: no valid bearer token (the caller adds `WWW-Authenticate`).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required", detail)
    }

    /// 403: the token does not allow this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not permitted", detail)
    }

    /// 500: a bug in this replica.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }

    /// 414: the request target is longer than any valid one.
    pub fn uri_too_long(len: usize, limit: usize) -> Self {
        Problem::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "URI too long",
            format!("the request target is {len} bytes, limit is {limit}"),
        )
        .with("limit", json!(limit))
        .with("got", json!(len))
    }

    /// 414: the key in the path exceeds the key limit.
    pub fn key_too_long(len: usize, limit: usize) -> Self {
        Problem::new(StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long", format!("the key is {len} bytes, limit is {limit}"))
            .with("limit", json!(limit))
            .with("got", json!(len))
    }

    /// 415: a body in a content coding the server does not decode.
    pub fn unsupported_encoding(got: &str) -> Self {
        let mut p = Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-content-encoding",
            "Unsupported content encoding",
            format!("Content-Encoding {got:?} is not supported; send the body unencoded (identity)"),
        );
        p.accept_encoding = true;
        p
    }

    /// 504: the request did not finish within the server's overall deadline.
    pub fn timeout() -> Self {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "Request timed out",
            "the request did not finish in time; a write may or may not have applied. \
             Retry with the same Idempotency-Key or session sequence number to learn its result",
        )
    }

    /// 404: no such key.
    pub fn not_found(key: &[u8]) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Key not found", format!("no key {}", show(key)))
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(slug: &'static str, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, "Service unavailable", detail);
        p.retry_after = Some(1);
        p
    }

    /// 410: this replica was removed from the cluster and serves no client request.
    pub fn removed(r: crate::node::Removal) -> Self {
        Problem::new(
            StatusCode::GONE,
            "removed",
            "Replica removed",
            format!(
                "this replica was removed from the cluster at epoch {} (learned from the {}); it serves no request any more. \
                 Send requests to another replica",
                r.epoch, r.source
            ),
        )
        .with("epoch", json!(r.epoch))
    }

    /// 504: the write was proposed but its outcome is unknown.
    pub fn outcome_unknown() -> Self {
        Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome-unknown",
            "Outcome unknown",
            "the write was proposed but not known to be chosen in time; it may or may not apply. \
             Retry with the same Idempotency-Key or session sequence number to learn its result",
        )
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media(got: &str) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("expected application/json, got {got}"),
        )
    }

    /// 413: the body exceeds the server's limit.
    pub fn body_too_large(limit: usize) -> Self {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Content too large", format!("the body exceeds {limit} bytes"))
            .with("limit", json!(limit))
    }

    /// Map a state-machine failure. `precondition` is set when the guard came from `If-Match` /
    /// `If-None-Match` headers, which answer 412 rather than 409.
    pub fn from_write_error(e: &WriteError, precondition: bool) -> Self {
        match e {
            WriteError::GuardFailed { index_in_batch, key, guard, current } => {
                let (status, slug, title) = if precondition {
                    (StatusCode::PRECONDITION_FAILED, "precondition-failed", "Precondition failed")
                } else {
                    (StatusCode::CONFLICT, "guard-failed", "Guard failed")
                };
                Problem::new(status, slug, title, format!("guard {guard} does not hold for key {}", show(key)))
                    .with("op_index", json!(index_in_batch))
                    .with("key", bytes_value(key))
                    .with("current", versioned_json(current.as_ref()))
            }
            WriteError::CasFailed { current } => {
                Problem::new(StatusCode::CONFLICT, "cas-failed", "Compare-and-set failed", "the current value differs")
                    .with("current", versioned_json(current.as_ref()))
            }
            WriteError::NotAnInteger { key } => Problem::new(
                StatusCode::CONFLICT,
                "not-an-integer",
                "Not an integer",
                format!("the value of {} is not a decimal integer", show(key)),
            ),
            WriteError::Overflow { current, delta } => {
                Problem::new(StatusCode::CONFLICT, "overflow", "Integer overflow", format!("{current} + {delta} leaves the 64-bit range"))
            }
            WriteError::TooLarge { what, limit, got } => {
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request too large", format!("{what} is {got}, limit is {limit}"))
                    .with("limit", json!(limit))
                    .with("got", json!(got))
            }
            WriteError::EmptyKey { .. } | WriteError::DuplicateKey { .. } | WriteError::Malformed(_) => Problem::bad_request(e.to_string()),
            WriteError::SessionStale { latest_seq } => {
                Problem::new(StatusCode::CONFLICT, "session-stale", "Stale sequence number", e.to_string())
                    .with("latest_seq", json!(latest_seq))
            }
            WriteError::SessionExpired { .. } => Problem::new(
                StatusCode::CONFLICT,
                "session-expired",
                "Session expired",
                "the session is unknown or expired; nothing was applied. Start a new session (seq 1)",
            ),
            // The IETF Idempotency-Key draft answers a key reused with a different payload 422.
            WriteError::RequestMismatch { client, seq } if client.0 >> 63 == 1 => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was already used for a different request (method, key, body or \
                 conditional headers differ); nothing was applied. Use a new key for a new request",
            )
            .with("seq", json!(seq)),
            WriteError::RequestMismatch { seq, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "session-seq-reused",
                "Sequence number reused",
                format!("sequence number {seq} of this session was already used for a different request; nothing was applied"),
            )
            .with("seq", json!(seq)),
            WriteError::SessionsFull { max_sessions, retry_after_ms } => {
                let mut p = Problem::unavailable(
                    "sessions-full",
                    format!(
                        "the session table holds its maximum of {max_sessions} live sessions, all active within the \
                         guaranteed retry window; nothing was applied. Retry after Retry-After (the oldest then leaves the \
                         window and makes room), or write through an existing session"
                    ),
                )
                .with("max_sessions", json!(max_sessions))
                .with("retry_after_ms", json!(retry_after_ms));
                p.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
                p
            }
            WriteError::LeaseNotFound { id } => Problem::new(
                StatusCode::NOT_FOUND,
                "lease-not-found",
                "Lease not found",
                format!("lease {id} does not exist: it expired, was revoked, or was never granted; nothing was applied"),
            )
            .with("lease", json!(id.to_string())),
            WriteError::LeaseTtl { ttl_ms, min_ms, max_ms } => {
                Problem::new(StatusCode::BAD_REQUEST, "lease-ttl", "Lease TTL out of bounds", e.to_string())
                    .with("ttl_ms", json!(ttl_ms))
                    .with("min_ttl_ms", json!(min_ms))
                    .with("max_ttl_ms", json!(max_ms))
            }
            WriteError::TooManyLeases { limit } => Problem::unavailable(
                "too-many-leases",
                format!("the cluster holds {limit} leases, its limit (--max-leases); nothing was applied. Retry after Retry-After, once leases end"),
            )
            .with("limit", json!(limit)),
            WriteError::TooManyLeaseKeys { id, limit } => Problem::new(
                StatusCode::CONFLICT,
                "too-many-lease-keys",
                "Too many keys on the lease",
                format!("lease {id} would hold more than {limit} keys (--max-keys-per-lease); nothing was applied"),
            )
            .with("lease", json!(id.to_string()))
            .with("limit", json!(limit)),
            WriteError::OutOfOrder { .. } => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the replica applied out of order (a driver bug)",
            ),
        }
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("{TYPE_BASE}{}", self.slug)));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.extra);
        let mut resp = Response::new(axum::body::Body::from(Value::Object(body).to_string()));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        if self.accept_encoding {
            resp.headers_mut().insert(hyper::header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        }
        resp
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        Problem::into_response(self)
    }
}

/// A key for a human message: quoted UTF-8, or `base64:...` (the same rule as [`bytes_value`]).
pub fn show(key: &[u8]) -> String {
    kvstore::show_bytes(key)
}

/// Bytes as JSON: a string if UTF-8, else `{"base64": ...}` (standard alphabet, padded). A
/// request may use either form wherever a reply does ([`super::json::Bin`]).
pub fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A value and version as JSON, or `null`.
pub fn versioned_json(v: Option<&Versioned>) -> Value {
    match v {
        Some(v) => json!({ "value": bytes_value(&v.value), "version": v.version }),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::ClientId;

    #[test]
    fn every_problem_type_has_its_page_and_every_page_a_type() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/problems");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".md").to_string())
            .filter(|f| f != "README")
            .collect();
        files.sort();
        let mut slugs: Vec<String> = PAGES.iter().map(|(s, _)| s.to_string()).collect();
        slugs.sort();
        assert_eq!(files, slugs);
        for (slug, md) in PAGES {
            assert!(md.starts_with(&format!("# {slug}\n")), "{slug}");
        }
    }

    #[test]
    fn reused_keys_are_422_and_a_full_session_table_is_503_with_retry_after() {
        let key = Problem::from_write_error(&WriteError::RequestMismatch { client: ClientId(5 | 1 << 63), seq: 1 }, true);
        assert_eq!((key.status, key.slug), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"));
        let seq = Problem::from_write_error(&WriteError::RequestMismatch { client: ClientId(5), seq: 4 }, false);
        assert_eq!((seq.status, seq.slug), (StatusCode::UNPROCESSABLE_ENTITY, "session-seq-reused"));
        let full = Problem::from_write_error(&WriteError::SessionsFull { max_sessions: 10, retry_after_ms: 2_500 }, false);
        assert_eq!((full.status, full.slug, full.retry_after), (StatusCode::SERVICE_UNAVAILABLE, "sessions-full", Some(3)));
        let r = Problem::into_response(full);
        assert_eq!(r.headers().get(RETRY_AFTER).unwrap(), "3");
    }
}
