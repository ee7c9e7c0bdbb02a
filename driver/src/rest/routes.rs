//! The one route table, and the operational endpoints (`/livez`, `/readyz`, `/metrics`,
//! `/v1/status`, `/problems/{type}`).
//!
//! Each route names its path, its methods and its handler; a handler's arguments name what it
//! reads (a [`super::query::Q`] struct per query, a [`super::json::Json`] body type), so an
//! OpenAPI document can be written from this table and those types. axum answers `HEAD`
//! wherever `GET` is routed (the `GET` handler runs, the body is dropped), and 405 with `Allow`
//! for a method a path does not take; [`bare_errors_as_problems`] gives every such bodiless
//! error a problem+json body.

use super::loop_io::{self, NotServing};
use super::problem::Problem;
use super::query::{NoParams, Segment, Q};
use super::{backup, batch, json_reply, kv, leases, locks, members, watch, Ctx, Outcome};
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use paxos::RoleKind;
use serde_json::json;
use std::sync::Arc;

/// The route a request matched (its path pattern), left on the response for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Every path pattern of [`router`] with the methods it takes (`HEAD` wherever `GET` is: axum
/// answers it with the `GET` handler). The one list the rest of the crate reads: the metrics'
/// route labels come from it, a test checks that [`router`] routes exactly these (every listed
/// method reaches a handler, every other one is 405) and that `docs/openapi.json` documents
/// exactly these paths and methods. Adding a route means adding it here, then to the document.
pub const ROUTES: &[(&str, &[Method])] = &[
    ("/livez", &[Method::GET, Method::HEAD]),
    ("/readyz", &[Method::GET, Method::HEAD]),
    ("/metrics", &[Method::GET, Method::HEAD]),
    ("/problems/:type", &[Method::GET, Method::HEAD]),
    ("/v1/openapi.json", &[Method::GET, Method::HEAD]),
    ("/v1/status", &[Method::GET, Method::HEAD]),
    ("/v1/kv", &[Method::GET, Method::HEAD, Method::DELETE]),
    ("/v1/kv/", &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE]),
    ("/v1/kv/*key", &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE]),
    ("/v1/watch/*key", &[Method::GET, Method::HEAD]),
    ("/v1/batch/get", &[Method::POST]),
    ("/v1/batch/put", &[Method::POST]),
    ("/v1/rmw", &[Method::POST]),
    ("/v1/leases", &[Method::GET, Method::HEAD, Method::POST]),
    ("/v1/leases/:id", &[Method::GET, Method::HEAD, Method::DELETE]),
    ("/v1/leases/:id/keepalive", &[Method::POST]),
    ("/v1/locks/:name", &[Method::GET, Method::HEAD, Method::POST, Method::DELETE]),
    ("/v1/elections/:name", &[Method::GET, Method::HEAD, Method::DELETE]),
    ("/v1/elections/:name/campaign", &[Method::POST]),
    ("/v1/elections/:name/observe", &[Method::GET, Method::HEAD]),
    ("/v1/cluster/members", &[Method::GET, Method::HEAD, Method::POST]),
    ("/v1/cluster/status", &[Method::GET, Method::HEAD]),
    ("/v1/cluster/members/:id", &[Method::DELETE]),
    ("/v1/snapshot", &[Method::GET, Method::HEAD]),
];

/// The OpenAPI 3.1 description of this API (`docs/openapi.json`), served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The route table ([`ROUTES`] lists its paths and methods).
pub fn router() -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/problems/:type", get(problem_page))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/kv", get(kv::range).delete(kv::delete_range))
        .route("/v1/kv/", get(kv::empty_key).put(kv::empty_key).delete(kv::empty_key))
        .route("/v1/kv/*key", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/v1/watch/*key", get(watch::relayed))
        .route("/v1/batch/get", post(batch::get))
        .route("/v1/batch/put", post(batch::put))
        .route("/v1/rmw", post(batch::rmw))
        .route("/v1/leases", get(leases::list).post(leases::grant))
        .route("/v1/leases/:id", get(leases::show).delete(leases::revoke))
        .route("/v1/leases/:id/keepalive", post(leases::keepalive))
        .route("/v1/locks/:name", get(locks::show_lock).post(locks::lock).delete(locks::unlock))
        .route("/v1/elections/:name", get(locks::show_leader).delete(locks::resign))
        .route("/v1/elections/:name/campaign", post(locks::campaign))
        .route("/v1/elections/:name/observe", get(locks::observe_relayed))
        .route("/v1/cluster/members", get(members::list).post(members::add))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/members/:id", delete(members::remove))
        .route("/v1/snapshot", get(backup::get))
        .fallback(no_route)
        .layer(middleware::map_response(bare_errors_as_problems))
        .layer(middleware::from_fn(retry_window))
        .layer(middleware::from_fn(label))
}

/// A write with an exactly-once session learns for how long a retry is surely recognized
/// (`X-Synod-Retry-Window`, whole seconds, rounded down).
async fn retry_window(req: Request, next: Next) -> Response {
    let keyed = req.method() != axum::http::Method::GET
        && req.method() != axum::http::Method::HEAD
        && (req.headers().contains_key("idempotency-key") || req.headers().contains_key("x-synod-session"));
    let window = req.extensions().get::<std::sync::Arc<super::Ctx>>().map(|c| c.session_window.as_secs());
    let mut resp = next.run(req).await;
    if let (true, Some(secs)) = (keyed, window) {
        resp.headers_mut().insert(super::RETRY_WINDOW_HEADER, axum::http::HeaderValue::from(secs));
    }
    resp
}

/// The routes that are not client requests: served while draining, not counted.
pub fn is_ops(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/metrics") || path.starts_with("/problems/")
}

/// The static label of a matched path (the table's patterns), for the metrics.
fn static_label(path: &str) -> &'static str {
    ROUTES.iter().map(|(p, _)| *p).find(|r| *r == path).unwrap_or("other")
}

async fn label(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("other", |m| static_label(m.as_str()));
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(RouteLabel(route));
    resp
}

async fn bare_errors_as_problems(resp: Response) -> Response {
    problem_for_bare_error(resp)
}

/// A 4xx or 5xx without a body of ours (axum's 405, the edge's timeout) becomes problem+json;
/// its headers (`Allow`) stay.
pub fn problem_for_bare_error(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || resp.headers().contains_key(CONTENT_TYPE) {
        return resp;
    }
    if status == StatusCode::MISDIRECTED_REQUEST {
        // A "send it to the leader" marker, replaced by the dispatcher.
        return resp;
    }
    let (parts, _) = resp.into_parts();
    let allow = parts.headers.get(ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let p = match status {
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(status, "method-not-allowed", "Method not allowed", format!("allowed: {allow}")),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => Problem::timeout(),
        _ => Problem::new(status, "internal", "Internal error", format!("HTTP {status} without details")),
    };
    let mut r = p.into_response();
    for (k, v) in parts.headers.iter() {
        if !r.headers().contains_key(k) {
            r.headers_mut().insert(k, v.clone());
        }
    }
    r.extensions_mut().extend(parts.extensions);
    r
}

async fn no_route(req: Request) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "no-route", "No such endpoint", format!("no endpoint at {}", req.uri().path()))
}

pub(super) fn text(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn livez(_: Q<NoParams>) -> Response {
    text(StatusCode::OK, "ok\n".into())
}

/// Ready: a known leader, and reads served from this replica's own state (caught up, not
/// lagging, not removed). An etcd outage alone does not make a serving replica unready (writes
/// and reads go on through the leader; issue 25): the body says so. Without etcd and without a
/// leader, the reason names etcd.
async fn readyz(Extension(ctx): Extension<Arc<Ctx>>, _: Q<NoParams>) -> Outcome {
    let etcd = ctx.metrics.etcd_up.get() == 1;
    let Some(s) = loop_io::status(&ctx).await else {
        return Problem::unavailable("not-ready", "the node loop is not answering").into();
    };
    let why = match (&s.serving, etcd, s.core.leader) {
        (Err(not), _, _) => not.reason(),
        (Ok(()), false, None) => "no etcd lease and no known leader".to_string(),
        (Ok(()), true, None) => "no known leader".to_string(),
        (Ok(()), true, Some(_)) => return Outcome::Reply(text(StatusCode::OK, "ready\n".into())),
        (Ok(()), false, Some(_)) => {
            let body = "ready (etcd unreachable: elections, joins and leaves wait for it)\n";
            return Outcome::Reply(text(StatusCode::OK, body.into()));
        }
    };
    let mut p = Problem::unavailable("not-ready", why);
    if let Err(NotServing::Removed(r)) = &s.serving {
        p = p.with("removed", json!({ "epoch": r.epoch, "source": r.source }));
    }
    p.into()
}

async fn metrics(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, _: Q<NoParams>) -> Response {
    if let Err(p) = grant.check_admin() {
        return p.into_response();
    }
    let status = loop_io::status(&ctx).await;
    let mut r = text(StatusCode::OK, ctx.metrics.render(status.as_ref()));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    r
}

/// `GET /problems/{type}`: the page that documents a problem type (the target of every
/// problem's `type` URI), as Markdown.
async fn problem_page(Segment(slug): Segment, _: Q<NoParams>) -> Response {
    match super::problem::page(&slug) {
        Some(md) => {
            let mut r = text(StatusCode::OK, md.to_string());
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/markdown; charset=utf-8"));
            r
        }
        None => {
            Problem::new(StatusCode::NOT_FOUND, "no-route", "No such problem type", format!("no problem type {slug:?}")).into_response()
        }
    }
}

/// `GET /v1/openapi.json`: [`OPENAPI`].
async fn openapi(_: Q<NoParams>) -> Response {
    let mut r = text(StatusCode::OK, OPENAPI.to_string());
    r.headers_mut().insert(CONTENT_TYPE, super::json::JSON);
    r
}

async fn status(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, _: Q<NoParams>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let Some(s) = loop_io::status(&ctx).await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    let dir = ctx.directory.all();
    let removed = match &s.serving {
        Err(NotServing::Removed(r)) => Some(*r),
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
    for (m, state) in s.config.acceptors.iter().map(|m| (m, "acceptor")).chain(s.config.learners.iter().map(|m| (m, "learner"))) {
        let info = dir.get(&m.node);
        members.push(json!({
            "id": m.node.0,
            "incarnation": m.incarnation.0,
            "state": state,
            "live": info.is_some_and(|i| i.incarnation == m.incarnation.0),
            "learned": s.core.learned.get(&m.node).map(|l| l.0),
            "http": info.map(|i| i.http.clone()),
            "grpc": info.map(|i| i.grpc.clone()),
            "max_cluster_version": info.map(|i| i.max_cluster_version),
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
        "epoch": s.config.epoch,
        "store_applied_slot": s.applied_slot.0,
        "state_hash": format!("{:016x}", s.state_hash),
        "state_hash_index": s.state_hash_index,
        "snapshots_installed": s.counters.snapshots_installed,
        "config_changes": s.counters.config_changes,
        "members": members,
        "etcd": ctx.metrics.etcd_up.get() == 1,
        "cluster_version": s.cluster_version,
        "max_cluster_version": s.max_cluster_version,
        "halted": s.halted,
        "leases": s.leases,
        "log_clock_ms": s.log_clock_ms,
    });
    Outcome::Reply(json_reply(StatusCode::OK, &body, Some(s.store_index)))
}

/// How long `/v1/cluster/status` waits for one member's answer.
const MEMBER_STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// `GET /v1/cluster/status`: every member's own `/v1/status`, asked by this replica over the
/// peer protocol (the relay of `super::forward`, with the caller's grant, never relayed
/// further), at once and each within 0.8 s: one request shows the whole cluster as each member
/// sees itself (role, applied slot, lag, last contact, serving and why not). A member that does
/// not answer is listed with the error. The console (`/ui/`) polls it.
async fn cluster_status(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, _: Q<NoParams>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let Some(s) = loop_io::status(&ctx).await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    let dir = ctx.directory.all();
    let mut ids: std::collections::BTreeSet<paxos::NodeId> = s.config.acceptors.iter().chain(s.config.learners.iter()).map(|m| m.node).collect();
    ids.insert(ctx.me);
    let asks = ids.into_iter().map(|id| {
        let (ctx, grant, info) = (ctx.clone(), grant.clone(), dir.get(&id).cloned());
        async move {
            let req = hyper::Request::builder().method(Method::GET).uri("/v1/status").body(bytes::Bytes::new()).expect("a valid request");
            let answer = if id == ctx.me {
                Ok(super::dispatch(ctx.clone(), req, super::MAX_HOPS, grant).await.map(axum::body::Body::from))
            } else if let Some(info) = &info {
                let call = super::forward(&ctx, req, id, &info.grpc, super::MAX_HOPS, &grant, false);
                tokio::time::timeout(MEMBER_STATUS_TIMEOUT, call).await.map_err(|_| format!("no answer within {MEMBER_STATUS_TIMEOUT:?}"))
            } else {
                Err("not registered (no live process in etcd)".to_string())
            };
            let answer = match answer {
                Ok(r) => {
                    let status = r.status();
                    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(v) if status.is_success() => Ok(v),
                        Ok(v) => Err(format!("{}: {}", v["title"].as_str().unwrap_or("error"), v["detail"].as_str().unwrap_or(""))),
                        Err(_) => Err(format!("answered {status}")),
                    }
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(status) => json!({ "id": id.0, "ok": true, "status": status }),
                Err(error) => {
                    ctx.metrics.member_status_failures.inc();
                    json!({ "id": id.0, "ok": false, "error": error, "http": info.map(|i| i.http) })
                }
            }
        }
    });
    let members: Vec<serde_json::Value> = futures::future::join_all(asks).await;
    let body = json!({
        "asked_by": ctx.me.0,
        "leader": s.core.leader.map(|l| l.0),
        "epoch": s.config.epoch,
        "members": members,
    });
    Outcome::Reply(json_reply(StatusCode::OK, &body, Some(s.store_index)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tower::ServiceExt as _;

    const METHODS: [Method; 8] =
        [Method::GET, Method::HEAD, Method::PUT, Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS, Method::TRACE];

    /// A path that the pattern matches (`:id` and `*key` become `x`).
    fn concrete(pattern: &str) -> String {
        pattern.split('/').map(|s| if s.starts_with(':') || s.starts_with('*') { "x" } else { s }).collect::<Vec<_>>().join("/")
    }

    /// The pattern in OpenAPI's form (`:id` and `*key` become `{id}` and `{key}`).
    fn openapi_form(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| match s.strip_prefix(':').or_else(|| s.strip_prefix('*')) {
                Some(name) => format!("{{{name}}}"),
                None => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The table lists every route `router()` builds: the `.route("...")` calls in its source.
    #[test]
    fn the_table_lists_every_route_of_the_router() {
        let src = include_str!("routes.rs");
        let body = &src[src.find("pub fn router()").unwrap()..];
        let body = &body[..body.find(".fallback(").unwrap()];
        let built: BTreeSet<&str> = body.split(".route(\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
        let listed: BTreeSet<&str> = ROUTES.iter().map(|(p, _)| *p).collect();
        assert_eq!(built, listed, "router() and ROUTES differ");
        assert_eq!(listed.len(), ROUTES.len(), "a path is listed twice");
    }

    /// Every listed method of every listed path reaches that route's handler; every other
    /// method is 405.
    #[tokio::test]
    async fn the_router_takes_exactly_the_listed_methods() {
        for (pattern, methods) in ROUTES {
            let path = concrete(pattern);
            for m in METHODS {
                let req = Request::builder().method(m.clone()).uri(&path).body(Body::empty()).unwrap();
                let resp = router().oneshot(req).await.unwrap();
                let label = resp.extensions().get::<RouteLabel>().map(|l| l.0);
                if methods.contains(&m) {
                    assert_ne!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
                    assert_eq!(label, Some(*pattern), "{m} {path} reaches its route");
                } else {
                    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {path} is not listed");
                }
            }
        }
    }

    /// `docs/openapi.json` is OpenAPI 3.1, documents exactly the table's paths and methods, and
    /// every `$ref` in it resolves.
    #[test]
    fn the_openapi_document_describes_exactly_the_table() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        let version = doc["openapi"].as_str().expect("an openapi field");
        assert!(version.starts_with("3.1."), "OpenAPI {version}, not 3.1.x");
        let verbs = ["get", "head", "put", "post", "delete", "patch", "options", "trace"];
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(p, item)| {
                item.as_object().unwrap().keys().filter(|k| verbs.contains(&k.as_str())).map(move |m| (p.clone(), m.clone()))
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|(p, ms)| ms.iter().map(move |m| (openapi_form(p), m.as_str().to_ascii_lowercase())))
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(undocumented.is_empty() && unrouted.is_empty(), "routed, not documented: {undocumented:?}; documented, not routed: {unrouted:?}");

        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                        out.push(r);
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r} is not local"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    /// Every problem type the document names has a page, so `type` always resolves.
    #[test]
    fn the_document_names_only_problem_types_that_exist() {
        let mut rest = OPENAPI;
        while let Some(i) = rest.find("Problem types: ") {
            rest = &rest[i + "Problem types: ".len()..];
            let list = &rest[..rest.find('.').unwrap()];
            for slug in list.split(", ") {
                let slug = slug.trim_matches('`');
                assert!(super::super::problem::page(slug).is_some(), "no problem type {slug}");
            }
        }
    }
}
