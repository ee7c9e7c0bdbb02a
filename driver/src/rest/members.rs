//! `/v1/cluster/members`: who is in the configuration, and requests to change it.
//!
//! * `GET` lists the members of the configuration with their incarnation, addresses, role
//!   (`acceptor` or `learner`), whether their etcd registration is live, and how far each has
//!   learned. Only the leader knows how far everyone learned, so a follower forwards the request
//!   (`?local=true` answers from this replica's own view instead). Pending requests are listed
//!   too.
//! * `POST {"id": N}` posts a join request for the process registered under id `N` (started
//!   with `synod node --id N` and no `--join`); `202 Accepted`.
//! * `DELETE /v1/cluster/members/{id}` posts a leave request; `202 Accepted`. This is the
//!   explicit operator action the failure policy defers to: it may shrink the acceptor set below
//!   a majority of the configured set (the core still refuses a change with no live quorum).
//!
//! Requests go to etcd (`membership.rs`); the leader turns them into configuration commands.

use super::json::Json;
use super::loop_io;
use super::problem::Problem;
use super::query::{flag, NoParams, Segment, Q};
use super::{json_reply, Ctx, Outcome};
use crate::membership::PendingChange;
use axum::Extension;
use hyper::StatusCode;
use paxos::{NodeId, RoleKind};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Query of `GET /v1/cluster/members`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Answer from this replica's own view rather than the leader's.
    #[serde(default, deserialize_with = "flag")]
    pub local: bool,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// `GET /v1/cluster/members`.
pub async fn list(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, Q(q): Q<ListParams>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let Some(s) = loop_io::status(&ctx).await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    if !q.local && s.core.role != RoleKind::Leader {
        return Outcome::NotLeader(s.core.leader.filter(|l| *l != ctx.me));
    }
    let dir = ctx.directory.all();
    let mut members = Vec::new();
    for (m, role) in s.config.acceptors.iter().map(|m| (m, "acceptor")).chain(s.config.learners.iter().map(|m| (m, "learner"))) {
        let info = dir.get(&m.node);
        let learned = if m.node == ctx.me { Some(s.applied_slot.0) } else { s.core.learned.get(&m.node).map(|l| l.0) };
        members.push(json!({
            "id": m.node.0,
            "incarnation": m.incarnation.0,
            "role": role,
            "live": info.is_some_and(|i| i.incarnation == m.incarnation.0),
            "learned": learned,
            "http": info.map(|i| i.http.clone()),
            "grpc": info.map(|i| i.grpc.clone()),
        }));
    }
    let pending = match &ctx.membership {
        Some(m) => m.pending().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let body = json!({
        "epoch": s.config.epoch,
        "leader": s.core.leader.map(|l| l.0),
        "commit_slot": s.core.commit.0,
        "members": members,
        "pending": pending,
    });
    Outcome::Reply(json_reply(StatusCode::OK, &body, Some(s.store_index)))
}

/// Body of `POST /v1/cluster/members`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// The id the new process registered under.
    pub id: u64,
}

/// `POST /v1/cluster/members`.
pub async fn add(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, _: Q<NoParams>, Json(body): Json<AddBody>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let Some(info) = ctx.directory.get(NodeId(body.id)) else {
        return Problem::new(
            StatusCode::CONFLICT,
            "not-registered",
            "Node not running",
            format!("no process is registered under id {}; start `synod node --id {} --join`", body.id, body.id),
        )
        .into();
    };
    post(&ctx, PendingChange::Join { id: body.id, incarnation: info.incarnation }).await
}

/// `DELETE /v1/cluster/members/{id}`.
pub async fn remove(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, Segment(id): Segment, _: Q<NoParams>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let Ok(id) = id.parse::<u64>() else {
        return Problem::bad_request(format!("member id {id:?} is not a number")).into();
    };
    let Some(s) = loop_io::status(&ctx).await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    if !s.config.contains_node(NodeId(id)) {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "not-a-member",
            "Not a member",
            format!("node {id} is not in configuration {}", s.config.epoch),
        )
        .into();
    }
    if let Some(m) = &ctx.membership {
        // An operator's removal is final: it no longer counts in the configured set.
        let _ = m.forget_evicted(id).await;
    }
    post(&ctx, PendingChange::Leave { id }).await
}

async fn post(ctx: &Ctx, change: PendingChange) -> Outcome {
    let Some(m) = &ctx.membership else {
        return Problem::unavailable("no-etcd", "membership changes need etcd").into();
    };
    match m.request(&change).await {
        Ok(()) => Outcome::Reply(json_reply(StatusCode::ACCEPTED, &json!({ "pending": change }), None)),
        Err(e) => Problem::unavailable("no-etcd", format!("could not post the request: {e}")).into(),
    }
}
