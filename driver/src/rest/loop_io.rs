//! The REST layer's only contact with the node loop: the messages it sends ([`Input`]), the
//! refusals it maps ([`refused`]), and the ways a handler waits on the loop ([`read`],
//! [`write`], [`status`], [`watch`], [`backup`]). Everything else in `rest/` sees plain results.

use super::problem::Problem;
use super::{Ctx, Outcome};
use kvstore::{SessionRef, WriteOp};
use serde_json::json;
use tokio::sync::oneshot;

pub use crate::node::{Change, Changes, WatchError, WatchSpec, Consistency, Input, NodeStatus, NotServing, ReadAnswer, ReadDone, ReadFn, Refused, WriteDone};

/// Map a refusal from the node loop.
pub fn refused(r: Refused) -> Outcome {
    use hyper::StatusCode;
    match r {
        Refused::NotLeader { leader } => Outcome::NotLeader(leader),
        Refused::OutcomeUnknown => Problem::outcome_unknown().into(),
        Refused::Lost => Problem::unavailable("proposal-lost", "the write was not applied (its slot went to another value); retry").into(),
        Refused::Busy => Problem::unavailable("busy", "too many proposals in flight; retry").into(),
        Refused::TooLarge { size, limit } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Request too large",
            format!("command of {size} bytes exceeds {limit}"),
        )
        .into(),
        Refused::ShuttingDown => Problem::unavailable("shutting-down", "this replica is shutting down").into(),
        Refused::Config(why) => Problem::new(StatusCode::CONFLICT, "config-refused", "Membership change refused", why).into(),
        Refused::NotServing { leader, catching_up, reason } => {
            let slug = if catching_up { "catching-up" } else { "lagging" };
            Outcome::NotServing(leader, Problem::unavailable(slug, reason))
        }
        Refused::Removed(r) => Problem::removed(r).into(),
        Refused::ClusterVersion { needs, runs } => Problem::new(
            StatusCode::CONFLICT,
            "cluster-version",
            "Cluster version too low",
            format!(
                "this request needs cluster version {needs}; the cluster runs version {runs} (it rises once every member runs a build that reads it: finish the upgrade, then retry)"
            ),
        )
        .with("needs", json!(needs))
        .with("cluster_version", json!(runs))
        .into(),
        Refused::Halted(why) => {
            let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "halted", "Replica halted", format!("{why}; send requests to another replica"));
            p.retry_after = Some(1);
            p.into()
        }
    }
}

/// Ask the node loop for its status (`None`: it does not answer).
pub async fn status(ctx: &Ctx) -> Option<NodeStatus> {
    let (tx, rx) = oneshot::channel();
    ctx.inputs.send(Input::Status(tx)).await.ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.ok()?.ok()
}

/// A point-in-time copy of the applied state (`None`: the loop does not answer). The clone
/// is O(1); the caller encodes it off the async workers.
pub async fn backup(ctx: &Ctx) -> Option<(paxos::SnapshotMeta, Box<kvstore::Store>)> {
    let (tx, rx) = oneshot::channel();
    ctx.inputs.send(Input::Backup(tx)).await.ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.ok()?.ok()
}

/// Run a read at `consistency`.
pub async fn read(ctx: &Ctx, consistency: Consistency, f: ReadFn) -> Result<ReadDone, Outcome> {
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

/// Propose a write and wait for its outcome. `forward`: whether a follower may hand the write
/// to the leader inside its peer stream (not with `?redirect=true`). The operation is checked
/// first ([`kvstore::Limits::check_op`]: sizes, empty and repeated keys), so a request that
/// is invalid whatever the state never takes a log slot.
pub async fn write(ctx: &Ctx, session: Option<SessionRef>, op: WriteOp, forward: bool) -> Result<WriteDone, Outcome> {
    ctx.limits.check_op(&op).map_err(|e| Outcome::from(Problem::from_write_error(&e, false)))?;
    let (tx, rx) = oneshot::channel();
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

/// A stream's progress probe (`node::Input::WatchProgress`): `Some(Ok(changes))` at once,
/// empty when no change matching `spec` lies between `spec.after` and `changes.index` (the
/// applied index). `None`: the loop is gone or did not answer within 2 s.
pub async fn watch_progress(ctx: &Ctx, spec: WatchSpec) -> Option<Result<Changes, WatchError>> {
    let (tx, rx) = oneshot::channel();
    ctx.inputs.send(Input::WatchProgress { spec, reply: tx }).await.ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(2), rx).await.ok()?.ok()
}

/// Wait for changes matching `spec` (see `node::watch`). `Ok(None)`: the loop is gone. Dropping
/// the future drops the receiver, and the loop's sweep cancels the watcher.
pub async fn watch(ctx: &Ctx, spec: WatchSpec) -> Option<Result<Changes, WatchError>> {
    let (tx, rx) = oneshot::channel();
    ctx.inputs.send(Input::Watch { spec, reply: tx }).await.ok()?;
    rx.await.ok()
}
