//! `/v1/locks/{name}` and `/v1/elections/{name}`: distributed locks and leader elections, the
//! recipes of etcd's concurrency package (`Mutex`, `Election`) over client leases
//! ([`super::leases`]), run by the replica that takes the request (docs/coordination.md).
//!
//! **The recipe.** To lock `NAME` under lease `L`, the replica creates the key
//! `_synod/lock/NAME/<L as 16 hex digits>` attached to `L` with a create-only guard (a leased
//! batch of one put guarded `Absent`). The keys under `_synod/lock/NAME/` are the holder and
//! the waiters, ordered by version: a key created once and never rewritten keeps the index of
//! its creation as its version, so the order is the order of arrival. The key with the lowest
//! version holds the lock; every other one waits, watching the key just before it (its
//! predecessor, the largest version below its own) until that key changes, then checks again
//! with a linearizable read (never assuming: the predecessor may have left while an earlier key
//! still holds). The holder's creation index is the lock's **fence**: every later holder's is
//! larger. An election is the same line of keys under `_synod/elect/NAME/` whose values are the
//! candidates' values; the leader is the lowest key.
//!
//! The key of a lease in a lock is a function of the pair, so a request is idempotent: asking
//! again with the same lease (a retry after a timeout, on another replica) finds the key it
//! created and keeps its place. A wait that ends without the lock (`wait_ms`, a failed read at
//! the deadline, or the client gone: its connection closed, which drops the request) deletes the
//! key it waited with, so it blocks nobody (the holder and the other waiters are untouched); a
//! wait cut short by the replica shutting down leaves it, so a retry elsewhere keeps its place.
//! (A retry that reaches a replica while the dropped request's delete is on its way may find its
//! key deleted under it: it answers 409 `lock-not-acquired`, and asking again takes a new place.)
//!
//! **Only leased keys count.** A key under the prefix that is attached to no lease (a plain put
//! by a token that may write there) is not in the line: it would otherwise hold for ever.
//!
//! **No proclaim.** A key's version changes when it is rewritten, and the order is by version:
//! changing a leader's value in place would send it to the back of the line. There is no
//! `proclaim`; a leader that must publish another value resigns and campaigns again (or keeps
//! its value elsewhere, under a key attached to the same lease).
//!
//! Reads are linearizable, writes go through the log like every other write (a follower hands
//! them to the leader), and the waiting is a watch on the replica that took the request, so a
//! follower serves a waiting client without relaying it. A request that cannot be served here
//! before anything was written (a follower that does not serve reads) is sent to the leader like
//! any other ([`super::dispatch`]): the recipe is idempotent, so that is safe.

use super::auth::{Grant, Keys};
use super::json::{Bin, Json};
use super::kv::{consistency, freshness, percent_decode_strict, with_index};
use super::leases::{de_id, parse_id};
use super::loop_io::{self, Consistency, ReadAnswer, WatchError, WatchSpec};
use super::problem::{bytes_value, show, Problem};
use super::query::{self, flag, NoParams, Segment, Q};
use super::{json_reply, Ctx, Outcome, NO_CORE_FORWARD};
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::Extension;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use kvstore::{BatchOp, Guard, WriteError, WriteOp, WriteOutcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The reserved prefix of every lock's keys: lock `NAME` lives under `_synod/lock/NAME/`.
pub const LOCK_PREFIX: &str = "_synod/lock/";
/// The reserved prefix of every election's keys: election `NAME` lives under
/// `_synod/elect/NAME/`.
pub const ELECTION_PREFIX: &str = "_synod/elect/";
/// How long a lock or campaign request waits without `wait_ms`.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// The longest wait: a larger `wait_ms` is taken as this.
pub const MAX_WAIT_MS: u64 = 300_000;
/// The pause before checking again after a read that failed mid-wait or a watch refused.
const RETRY: Duration = Duration::from_millis(100);

/// A lock or an election: the same line of keys under different prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/v1/locks/{name}`.
    Lock,
    /// `/v1/elections/{name}`.
    Election,
}

impl Kind {
    fn base(self) -> &'static str {
        match self {
            Kind::Lock => LOCK_PREFIX,
            Kind::Election => ELECTION_PREFIX,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Election => "election",
        }
    }
}

/// The prefix of the keys of lock (or election) `name`.
pub fn prefix(kind: Kind, name: &str) -> Vec<u8> {
    format!("{}{name}/", kind.base()).into_bytes()
}

/// The key lease `lease` holds or waits with in lock (or election) `name`.
pub fn key_of(kind: Kind, name: &str, lease: u64) -> Vec<u8> {
    format!("{}{name}/{lease:016x}", kind.base()).into_bytes()
}

/// The lease named by a key of the recipe (the 16 hex digits after the prefix), if it is one.
pub fn lease_in_key(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    if rest.len() != 16 || !rest.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(rest).ok()?, 16).ok()
}

/// A name is one path segment: not empty, no `/` (lock `a` would otherwise see the keys of lock
/// `a/b` under its prefix).
pub fn check_name(kind: Kind, name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::bad_request(format!("empty {} name", kind.noun())));
    }
    if name.contains('/') {
        return Err(Problem::bad_request(format!("{} name {name:?} contains '/': a name is one path segment", kind.noun())));
    }
    Ok(())
}

/// One key in the line: the holder or a waiter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// Its value (an election candidate's value; empty for a lock).
    pub value: Vec<u8>,
    /// Its version: the index of its creation, for a key of the recipe.
    pub version: u64,
    /// The lease it is attached to, if any.
    pub lease: Option<u64>,
}

impl Entry {
    fn json(&self) -> Value {
        json!({ "key": bytes_value(&self.key), "lease": self.lease, "fence": self.version })
    }
}

/// What one read of a line shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The store index of the state read.
    pub index: u64,
    /// Whether the lease asked about exists.
    pub lease_live: bool,
    /// The key of the lease asked about, if it exists.
    pub mine: Option<Entry>,
    /// The key with the lowest version (ties, from one batch, by key).
    pub holder: Option<Entry>,
    /// The key with the largest version below `mine`'s: the one `mine` waits on.
    pub predecessor: Option<Entry>,
    /// How many keys the line holds.
    pub count: usize,
}

impl View {
    /// Whether `mine` holds the lock (leads the election).
    pub fn holds(&self) -> bool {
        matches!((&self.mine, &self.holder), (Some(m), Some(h)) if m.key == h.key)
    }

    /// How many keys wait behind the holder.
    pub fn waiters(&self) -> usize {
        self.count.saturating_sub(1)
    }
}

/// The holder, the predecessor of `mine` and the size of a line of `entries` (any order).
///
/// Only keys attached to a lease are in the line: a key under the prefix written without one (a
/// plain put by a token that may write there) would otherwise hold for ever, as nothing ends it.
/// `mine` is found whatever it is attached to (a waiting key overwritten by a plain put is seen
/// as such), but an unleased `mine` never holds.
pub fn view_of(entries: Vec<Entry>, mine: Option<&[u8]>) -> View {
    let order = |e: &Entry| (e.version, e.key.clone());
    let mine_entry = mine.and_then(|m| entries.iter().find(|e| e.key == m)).cloned();
    let line: Vec<&Entry> = entries.iter().filter(|e| e.lease.is_some()).collect();
    let count = line.len();
    let holder = line.iter().min_by_key(|e| order(e)).map(|e| (*e).clone());
    let predecessor = mine_entry.as_ref().and_then(|m| line.iter().filter(|e| order(e) < order(m)).max_by_key(|e| order(e)).map(|e| (*e).clone()));
    View { index: 0, lease_live: false, mine: mine_entry, holder, predecessor, count }
}

/// Every key under `prefix` in `s`, with its value, version and lease.
fn entries_in(s: &kvstore::Store, prefix: &[u8]) -> Vec<Entry> {
    let end = kvstore::read::prefix_end(prefix);
    s.keys_in(prefix, end.as_deref())
        .into_iter()
        .filter_map(|k| {
            let v = s.get_ref(&k)?;
            Some(Entry { value: v.value.clone(), version: v.version, lease: s.lease_of(&k), key: k })
        })
        .collect()
}

/// Read the line under `prefix` at `consistency`, with `mine` (a key and its lease) placed in it.
async fn look(ctx: &Ctx, consistency: Consistency, prefix: &[u8], mine: Option<(&[u8], u64)>) -> Result<View, Outcome> {
    let slot: Arc<Mutex<Option<View>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let prefix = prefix.to_vec();
    let mine = mine.map(|(k, l)| (k.to_vec(), l));
    // The read answers through `slot`: the node's read answers have no variant for this.
    let read = move |s: &kvstore::Store| {
        let mut view = view_of(entries_in(s, &prefix), mine.as_ref().map(|(k, _)| k.as_slice()));
        view.lease_live = mine.as_ref().is_some_and(|(_, l)| s.lease(*l).is_some());
        *out.lock().expect("never poisoned") = Some(view);
        ReadAnswer::Get(None)
    };
    let done = loop_io::read(ctx, consistency, Box::new(read)).await?;
    let mut view = slot.lock().expect("never poisoned").take().ok_or_else(|| Outcome::from(Problem::internal("the read did not run")))?;
    view.index = done.index;
    Ok(view)
}

/// Every key under `prefix` at `consistency`, and the index read.
async fn line(ctx: &Ctx, consistency: Consistency, prefix: &[u8]) -> Result<(Vec<Entry>, u64), Outcome> {
    let slot: Arc<Mutex<Option<Vec<Entry>>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let prefix = prefix.to_vec();
    let read = move |s: &kvstore::Store| {
        *out.lock().expect("never poisoned") = Some(entries_in(s, &prefix));
        ReadAnswer::Get(None)
    };
    let done = loop_io::read(ctx, consistency, Box::new(read)).await?;
    let entries = slot.lock().expect("never poisoned").take().ok_or_else(|| Outcome::from(Problem::internal("the read did not run")))?;
    Ok((entries, done.index))
}

/// 404 `lease-not-found`.
fn lease_gone(lease: u64) -> Problem {
    super::leases::not_found(lease)
}

/// 409 `lock-not-acquired`: the wait ended without the lock (`why`).
fn not_acquired(kind: Kind, name: &str, view: &View, waited: Duration, why: &str) -> Problem {
    let holder = view.holder.as_ref().filter(|h| view.mine.as_ref().is_none_or(|m| m.key != h.key));
    Problem::new(StatusCode::CONFLICT, "lock-not-acquired", "Lock not acquired", format!("{} {name:?}: {why}", kind.noun()))
        .with("name", json!(name))
        .with("holder", holder.map_or(Value::Null, Entry::json))
        .with("waiters", json!(view.waiters()))
        .with("waited_ms", json!(waited.as_millis() as u64))
}

/// 409 `campaign-conflict`: the lease already campaigns with another value.
fn campaign_conflict(name: &str, lease: u64, current: &Entry) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "campaign-conflict",
        "Already campaigning with another value",
        format!("lease {lease} already campaigns in election {name:?} with another value; resign first (there is no proclaim)"),
    )
    .with("name", json!(name))
    .with("key", bytes_value(&current.key))
    .with("value", bytes_value(&current.value))
    .with("fence", json!(current.version))
}

/// Propose `op` (no exactly-once session: the recipe's writes are idempotent by construction),
/// if `grant` allows it.
async fn propose(ctx: &Ctx, grant: &Grant, op: WriteOp, forward: bool) -> Result<(u64, Result<kvstore::WriteResult, WriteError>), Outcome> {
    grant.check_op(&op)?;
    let done = loop_io::write(ctx, None, op, forward).await?;
    Ok((done.index, done.output))
}

/// The waiting key of a request that is still waiting: when dropped armed (the request's future
/// dropped because its client disconnected, or a return without the lock that did not delete
/// the key itself), it deletes the key in a task of its own, so the key blocks nobody. Best
/// effort: a delete that fails leaves the key until its lease ends, as before. Disarmed once the
/// lock is held, once the key is gone or no longer the lease's, and on purpose when the replica
/// shuts down (a retry elsewhere keeps the place).
struct Waiting {
    ctx: Arc<Ctx>,
    grant: Arc<Grant>,
    key: Vec<u8>,
    lease: u64,
    forward: bool,
    /// Whether to delete the key when dropped.
    armed: bool,
    /// The key's version as last seen (the delete is guarded on it); `None`: not seen yet (the
    /// put that creates it may or may not have been applied), read before deleting.
    version: Option<u64>,
}

impl Waiting {
    fn arm(&mut self, version: Option<u64>) {
        self.armed = true;
        self.version = version;
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (ctx, grant, key, lease, forward, version) = (self.ctx.clone(), self.grant.clone(), std::mem::take(&mut self.key), self.lease, self.forward, self.version);
        runtime.spawn(async move {
            let version = match version {
                Some(v) => v,
                None => match key_entry(&ctx, &key).await {
                    Some(e) if e.lease == Some(lease) => e.version,
                    _ => return,
                },
            };
            let shown = show(&key);
            let op = WriteOp::Delete { key, guard: Some(Guard::Version(version)) };
            match propose(&ctx, &grant, op, forward).await {
                Ok((_, Ok(_))) => tracing::debug!(key = %shown, "deleted the waiting key of a request that ended without the lock"),
                _ => tracing::debug!(key = %shown, "could not delete the waiting key of a request that ended without the lock; it stays until its lease ends"),
            }
        });
    }
}

/// One key, as the line shows its keys (a linearizable read); `None` if it does not exist or
/// the read failed.
async fn key_entry(ctx: &Ctx, key: &[u8]) -> Option<Entry> {
    let slot: Arc<Mutex<Option<Entry>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let key = key.to_vec();
    let read = move |s: &kvstore::Store| {
        let entry = s.get_ref(&key).map(|v| Entry { value: v.value.clone(), version: v.version, lease: s.lease_of(&key), key: key.clone() });
        *out.lock().expect("never poisoned") = entry;
        ReadAnswer::Get(None)
    };
    loop_io::read(ctx, Consistency::Linearizable, Box::new(read)).await.ok()?;
    let entry = slot.lock().expect("never poisoned").take();
    entry
}

/// A lock held (an election led).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The key.
    pub key: Vec<u8>,
    /// Its creation index.
    pub fence: u64,
    /// Its value.
    pub value: Vec<u8>,
    /// The store index of the read that saw it hold.
    pub index: u64,
    /// How many keys wait behind it.
    pub waiters: usize,
}

/// Run the recipe: create the key of `lease` in the line of `name` (or find it), then wait up
/// to `wait` until it is the lowest. A wait that ends without the lock deletes its key (the
/// [`Waiting`] guard, also when the future is dropped), except when the replica shuts down.
#[allow(clippy::too_many_arguments)]
async fn acquire(ctx: &Arc<Ctx>, grant: &Arc<Grant>, kind: Kind, name: &str, lease: u64, value: Vec<u8>, wait: Duration, forward: bool) -> Result<Held, Outcome> {
    let started = Instant::now();
    let deadline = started + wait;
    let prefix = prefix(kind, name);
    let mine = key_of(kind, name, lease);
    let end = kvstore::read::prefix_end(&prefix);
    grant.check_read(Keys::Range(&prefix, end.as_deref()))?;
    let mut waiting = Waiting { ctx: ctx.clone(), grant: grant.clone(), key: mine.clone(), lease, forward, armed: false, version: None };

    // 1. The key exists, attached to the lease: found, or created now.
    let mut first = true;
    loop {
        let view = match look(ctx, Consistency::Linearizable, &prefix, Some((&mine, lease))).await {
            Ok(v) => v,
            // Nothing written yet: the dispatcher may hand the request to the leader.
            Err(o) if first => return Err(o),
            Err(o) if Instant::now() >= deadline => return Err(o),
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        first = false;
        if !view.lease_live {
            return Err(lease_gone(lease).into());
        }
        let guard = match &view.mine {
            Some(m) if m.lease == Some(lease) => {
                if kind == Kind::Election && m.value != value {
                    return Err(campaign_conflict(name, lease, m).into());
                }
                waiting.arm(Some(m.version));
                break;
            }
            // Written by something else than the recipe (a plain put): taken over, guarded on
            // what was read.
            Some(m) => Guard::Version(m.version),
            None => Guard::Absent,
        };
        let op = WriteOp::Leased { lease, ops: vec![BatchOp::Put { key: mine.clone(), value: value.clone(), guard: Some(guard) }] };
        // From here the key may exist: a request dropped now still deletes it (reading it first).
        waiting.arm(None);
        match propose(ctx, grant, op, forward).await {
            Ok((index, Ok(_))) => {
                // Created by this put: its version is the put's index.
                waiting.arm(Some(index));
                break;
            }
            // Another request of the same lease got there first (its key, not this one's to
            // delete unless this one waits with it): look again.
            Ok((_, Err(WriteError::GuardFailed { .. }))) => {
                waiting.disarm();
                continue;
            }
            Ok((index, Err(e))) => {
                waiting.disarm();
                return Err(with_index(Problem::from_write_error(&e, false).into_response(), index));
            }
            // Refused before it was proposed: nothing written (the dispatcher may hand the
            // request to the leader, which then owns the key).
            Err(o @ (Outcome::NotLeader(_) | Outcome::NotServing(..))) => {
                waiting.disarm();
                return Err(o);
            }
            // Perhaps applied: the guard deletes the key if it exists.
            Err(o) => return Err(o),
        }
    }

    // 2. Wait until it is the lowest.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let view = match look(ctx, Consistency::Linearizable, &prefix, Some((&mine, lease))).await {
            Ok(v) => v,
            Err(o) if Instant::now() >= deadline => return Err(o),
            Err(_) => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let version = match &view.mine {
            None if !view.lease_live => {
                waiting.disarm();
                return Err(lease_gone(lease).into());
            }
            None => {
                waiting.disarm();
                let why = "the waiting key was deleted while it waited (an unlock or resign with this lease)";
                return Err(not_acquired(kind, name, &view, started.elapsed(), why).into());
            }
            Some(m) if m.lease != Some(lease) => {
                waiting.disarm();
                let why = "the waiting key was overwritten while it waited";
                return Err(not_acquired(kind, name, &view, started.elapsed(), why).into());
            }
            Some(m) => m.version,
        };
        waiting.arm(Some(version));
        if view.holds() {
            waiting.disarm();
            return Ok(Held { key: mine, fence: version, value, index: view.index, waiters: view.waiters() });
        }
        if Instant::now() >= deadline {
            // Give the place up, so this key blocks nobody once the keys before it are gone
            // (guarded: only the key this wait saw). Best effort: if it fails, the key stays
            // until the lease ends or the client unlocks.
            waiting.disarm();
            let op = WriteOp::Delete { key: mine.clone(), guard: Some(Guard::Version(version)) };
            let _ = propose(ctx, grant, op, forward).await;
            let why = format!("not acquired within wait_ms ({} ms); the waiting key was deleted again", wait.as_millis());
            return Err(not_acquired(kind, name, &view, started.elapsed(), &why).into());
        }
        let Some(pred) = view.predecessor.clone() else {
            // Not the holder, so a key comes before it; a state without one is checked again.
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let before = loop_io::watch(ctx, WatchSpec { key: pred.key, prefix: false, after: view.index });
        let own = loop_io::watch(ctx, WatchSpec { key: mine.clone(), prefix: false, after: view.index });
        tokio::pin!(before, own);
        loop {
            let woke = tokio::select! {
                w = &mut before => Some(w),
                w = &mut own => Some(w),
                _ = tokio::time::sleep_until(deadline.into()) => None,
                _ = tick.tick() => {
                    if ctx.draining.load(Ordering::Relaxed) {
                        // Left in place: a retry on another replica keeps its place.
                        waiting.disarm();
                        return Err(Problem::unavailable("shutting-down", "this replica is shutting down; retry on another (the waiting key keeps its place)").into());
                    }
                    continue;
                }
            };
            match woke {
                Some(None) => {
                    waiting.disarm();
                    return Err(Problem::unavailable("shutting-down", "the node loop is gone").into());
                }
                // Too many watchers, a history that no longer reaches back: check again shortly.
                Some(Some(Err(_))) => tokio::time::sleep(RETRY).await,
                Some(Some(Ok(_))) | None => {}
            }
            break;
        }
    }
}

/// Body of `POST /v1/locks/{name}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    /// The lease to hold the lock under (a number or a decimal string).
    #[serde(deserialize_with = "de_id")]
    pub lease: u64,
    /// How long to wait for the lock, in ms ([`DEFAULT_WAIT_MS`]; at most [`MAX_WAIT_MS`]; 0:
    /// try once).
    pub wait_ms: Option<u64>,
}

/// Body of `POST /v1/elections/{name}/campaign`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    /// The lease to campaign under.
    #[serde(deserialize_with = "de_id")]
    pub lease: u64,
    /// The candidate's value (published while it leads).
    pub value: Bin,
    /// How long to wait for the leadership, in ms (as for a lock).
    pub wait_ms: Option<u64>,
}

/// Query of the routes that name the caller's lease (`DELETE`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LeaseParams {
    /// The lease whose key to delete.
    pub lease: Option<String>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// Query of the reads.
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
}

fn wait_of(wait_ms: Option<u64>) -> Duration {
    Duration::from_millis(wait_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS))
}

/// How much longer than the server's deadline a request may take: a lock or campaign request
/// waits up to [`MAX_WAIT_MS`] (its own `wait_ms` bounds it; this is the safety net's share,
/// also given to a request relayed to the leader).
pub fn extra_time(method: &Method, path: &str) -> Duration {
    let waits = *method == Method::POST
        && (path.strip_prefix("/v1/locks/").is_some_and(|n| !n.is_empty())
            || path.strip_prefix("/v1/elections/").is_some_and(|r| r.ends_with("/campaign")));
    if waits {
        Duration::from_millis(MAX_WAIT_MS) + Duration::from_secs(10)
    } else {
        Duration::ZERO
    }
}

/// `POST /v1/locks/{name}` `{"lease": ID, "wait_ms": N}`: 200 `{name, key, lease, fence,
/// waiters, index}` once the lease holds the lock; 409 `lock-not-acquired` if it does not
/// within `wait_ms` (its waiting key deleted again); 404 `lease-not-found`.
pub async fn lock(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, _: Q<NoParams>, headers: HeaderMap, Json(body): Json<LockBody>) -> Outcome {
    if let Err(p) = check_name(Kind::Lock, &name) {
        return p.into();
    }
    let forward = !headers.contains_key(NO_CORE_FORWARD);
    match acquire(&ctx, &grant, Kind::Lock, &name, body.lease, Vec::new(), wait_of(body.wait_ms), forward).await {
        Ok(h) => {
            let reply = json!({ "name": name, "key": bytes_value(&h.key), "lease": body.lease, "fence": h.fence, "waiters": h.waiters, "index": h.index });
            Outcome::Reply(json_reply(StatusCode::OK, &reply, Some(h.index)))
        }
        Err(o) => o,
    }
}

/// `POST /v1/elections/{name}/campaign` `{"lease", "value", "wait_ms"}`: 200 `{name, key,
/// lease, fence, value, index}` once the lease leads; 409 `lock-not-acquired` if it does not
/// within `wait_ms`; 409 `campaign-conflict` if the lease campaigns with another value.
pub async fn campaign(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, _: Q<NoParams>, headers: HeaderMap, Json(body): Json<CampaignBody>) -> Outcome {
    if let Err(p) = check_name(Kind::Election, &name) {
        return p.into();
    }
    let forward = !headers.contains_key(NO_CORE_FORWARD);
    let value = body.value.into_bytes();
    match acquire(&ctx, &grant, Kind::Election, &name, body.lease, value, wait_of(body.wait_ms), forward).await {
        Ok(h) => {
            let reply = json!({ "name": name, "key": bytes_value(&h.key), "lease": body.lease, "fence": h.fence, "value": bytes_value(&h.value), "index": h.index });
            Outcome::Reply(json_reply(StatusCode::OK, &reply, Some(h.index)))
        }
        Err(o) => o,
    }
}

/// `DELETE /v1/locks/{name}?lease=ID` (unlock) and `DELETE /v1/elections/{name}?lease=ID`
/// (resign): delete the lease's key; 200 `{name, key, fence, index}`, 404 `not-found` if the
/// lease has none there. Takes the exactly-once headers like any delete.
async fn release(ctx: Arc<Ctx>, grant: Arc<Grant>, kind: Kind, name: String, q: LeaseParams, headers: HeaderMap) -> Outcome {
    let lease = match (check_name(kind, &name), q.lease.as_deref().map(parse_id)) {
        (Err(p), _) | (_, Some(Err(p))) => return p.into(),
        (Ok(()), None) => return Problem::bad_request("name the lease whose key to delete: ?lease=ID").into(),
        (Ok(()), Some(Ok(l))) => l,
    };
    let key = key_of(kind, &name, lease);
    let done = match super::kv::write(&ctx, &grant, &headers, WriteOp::Delete { key: key.clone(), guard: None }).await {
        Ok(d) => d,
        Err(o) => return o,
    };
    match done.output {
        Ok(res) => match res.outcome {
            WriteOutcome::Deleted { previous_version: Some(prev) } => {
                let body = json!({ "name": name, "key": bytes_value(&key), "lease": lease, "fence": prev, "index": done.index });
                Outcome::Reply(json_reply(StatusCode::OK, &body, Some(done.index)))
            }
            _ => {
                let p = Problem::not_found(&key).with("name", json!(name));
                let p = Problem { detail: format!("lease {lease} holds no key in {} {name:?} (no key {})", kind.noun(), show(&key)), ..p };
                with_index(p.into_response(), done.index)
            }
        },
        Err(e) => with_index(Problem::from_write_error(&e, false).into_response(), done.index),
    }
}

/// `DELETE /v1/locks/{name}?lease=ID`: unlock (or stop waiting).
pub async fn unlock(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, Q(q): Q<LeaseParams>, headers: HeaderMap) -> Outcome {
    release(ctx, grant, Kind::Lock, name, q, headers).await
}

/// `DELETE /v1/elections/{name}?lease=ID`: resign (or stop campaigning).
pub async fn resign(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, Q(q): Q<LeaseParams>, headers: HeaderMap) -> Outcome {
    release(ctx, grant, Kind::Election, name, q, headers).await
}

/// Read the line of `name` for a `GET`.
async fn read_view(ctx: &Ctx, grant: &Grant, kind: Kind, name: &str, q: &ReadParams) -> Result<(View, HeaderMap), Outcome> {
    check_name(kind, name)?;
    let c = consistency(q.consistency.as_deref(), q.min_index)?;
    let prefix = prefix(kind, name);
    let end = kvstore::read::prefix_end(&prefix);
    grant.check_read(Keys::Range(&prefix, end.as_deref()))?;
    let slot: Arc<Mutex<Option<View>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let read = move |s: &kvstore::Store| {
        *out.lock().expect("never poisoned") = Some(view_of(entries_in(s, &prefix), None));
        ReadAnswer::Get(None)
    };
    let done = loop_io::read(ctx, c, Box::new(read)).await?;
    let mut view = slot.lock().expect("never poisoned").take().ok_or_else(|| Outcome::from(Problem::internal("the read did not run")))?;
    view.index = done.index;
    Ok((view, freshness(ctx, &done)))
}

/// `GET /v1/locks/{name}`: `{name, held, holder: {key, lease, fence} | null, waiters, index}`.
pub async fn show_lock(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, Q(q): Q<ReadParams>) -> Outcome {
    let (view, fresh) = match read_view(&ctx, &grant, Kind::Lock, &name, &q).await {
        Ok(v) => v,
        Err(o) => return o,
    };
    let body = json!({
        "name": name,
        "held": view.holder.is_some(),
        "holder": view.holder.as_ref().map_or(Value::Null, Entry::json),
        "waiters": view.waiters(),
        "index": view.index,
    });
    let mut r = json_reply(StatusCode::OK, &body, Some(view.index));
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

/// The JSON of a leader.
fn leader_json(name: &str, e: &Entry, index: u64) -> Value {
    json!({ "name": name, "key": bytes_value(&e.key), "lease": e.lease, "fence": e.version, "value": bytes_value(&e.value), "index": index })
}

/// `GET /v1/elections/{name}`: the leader `{name, key, lease, fence, value, index}`, or 404
/// `not-found` when nobody campaigns.
pub async fn show_leader(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<Grant>>, Segment(name): Segment, Q(q): Q<ReadParams>) -> Outcome {
    let (view, fresh) = match read_view(&ctx, &grant, Kind::Election, &name, &q).await {
        Ok(v) => v,
        Err(o) => return o,
    };
    let mut r = match &view.holder {
        Some(h) => json_reply(StatusCode::OK, &leader_json(&name, h, view.index), Some(view.index)),
        None => {
            let p = Problem::not_found(&prefix(Kind::Election, &name));
            Problem { detail: format!("election {name:?} has no leader: nobody campaigns"), ..p }.with("name", json!(name)).into_response()
        }
    };
    r.headers_mut().extend(fresh);
    Outcome::Reply(r)
}

const OBSERVE_PREFIX: &str = "/v1/elections/";
const OBSERVE_SUFFIX: &str = "/observe";

/// Whether the request is an election's leader stream (served by [`observe`], not the
/// dispatcher, like a change stream).
pub fn is_observe(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD)
        && path.strip_prefix(OBSERVE_PREFIX).and_then(|r| r.strip_suffix(OBSERVE_SUFFIX)).is_some_and(|n| !n.is_empty() && !n.contains('/'))
}

/// `GET /v1/elections/{name}/observe` reached through the dispatcher (relayed by a peer).
pub async fn observe_relayed(_: Segment) -> Problem {
    Problem::bad_request("GET /v1/elections/{name}/observe is a server-sent event stream: ask any replica directly over HTTP")
}

/// One leader event: `id` is the index of the state that shows it.
pub fn leader_event(name: &str, leader: Option<&Entry>, index: u64) -> String {
    match leader {
        Some(e) => format!("id: {index}\nevent: leader\ndata: {}\n\n", leader_json(name, e, index)),
        None => format!("id: {index}\nevent: vacant\ndata: {}\n\n", json!({ "name": name, "index": index })),
    }
}

/// The leader of a line: its holder as [`view_of`] finds it (keys attached to no lease ignored),
/// so the stream and `GET /v1/elections/{name}` agree.
fn leader_of(line: &[Entry]) -> Option<Entry> {
    view_of(line.to_vec(), None).holder
}

/// `GET /v1/elections/{name}/observe`: the leader now (`event: leader`, or `event: vacant`),
/// then every change of leader, as server-sent events, from this replica's applied state (like a
/// change stream). `id` is the index of the state that shows the event; a client that
/// reconnects gets the leader of that moment first again (the stream keeps no history of
/// leaders). Comments every 15 s keep idle connections open.
pub async fn observe(ctx: Arc<Ctx>, parts: Parts, grant: Arc<Grant>) -> Response {
    let opened = async {
        if ctx.draining.load(Ordering::Relaxed) {
            return Err(Problem::unavailable("shutting-down", "this replica is shutting down"));
        }
        let raw = parts.uri.path().strip_prefix(OBSERVE_PREFIX).and_then(|r| r.strip_suffix(OBSERVE_SUFFIX)).unwrap_or("");
        let name = percent_decode_strict(raw)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Problem::bad_request("the election name is not percent-encoded UTF-8"))?;
        check_name(Kind::Election, &name)?;
        let _: NoParams = query::parse(parts.uri.query().unwrap_or(""))?;
        let prefix = prefix(Kind::Election, &name);
        let end = kvstore::read::prefix_end(&prefix);
        grant.check_read(Keys::Range(&prefix, end.as_deref()))?;
        let (entries, index) = line(&ctx, Consistency::Sequential { min_index: 0 }, &prefix).await.map_err(|o| match o {
            Outcome::NotServing(_, p) => p,
            _ => Problem::unavailable("not-ready", "this replica does not serve reads now; ask another"),
        })?;
        Ok((name, prefix, entries, index))
    };
    match opened.await {
        Ok(_) if parts.method == Method::HEAD => {
            let mut r = Response::new(Body::empty());
            stream_headers(&ctx, &mut r);
            r
        }
        Ok((name, prefix, entries, index)) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
            tokio::spawn(pump_leaders(ctx.clone(), grant, name, prefix, entries, index, tx));
            let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
            stream_headers(&ctx, &mut r);
            r.headers_mut().insert(super::INDEX_HEADER, HeaderValue::from(index));
            r
        }
        Err(p) => super::stamp_index(&ctx, p.into_response()),
    }
}

fn stream_headers(ctx: &Ctx, r: &mut Response) {
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(super::SERVED_BY_HEADER, HeaderValue::from(ctx.me.0));
}

/// Whether the token behind `grant` still reads `prefix` (a reload of the token file may have
/// removed or narrowed it).
fn still_allowed(ctx: &Ctx, grant: &Grant, prefix: &[u8]) -> bool {
    let (Some(auth), Some(hash)) = (&ctx.auth, &grant.token) else { return true };
    let end = kvstore::read::prefix_end(prefix);
    auth.lookup(hash).is_some_and(|g| g.may_read(Keys::Range(prefix, end.as_deref())))
}

/// Feed an observe stream: the line as read at `index`, then read again (from this replica's
/// applied state, at least at the index of the last change) whenever the watch on the prefix
/// delivers changes, and send an event whenever the leader (or its value) changes. The line is
/// read rather than patched with the changes, which do not say which lease a key is attached to
/// (keys attached to none are not candidates: [`view_of`]).
async fn pump_leaders(
    ctx: Arc<Ctx>,
    grant: Arc<Grant>,
    name: String,
    prefix: Vec<u8>,
    mut line: Vec<Entry>,
    mut after: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
) {
    let mut shown = leader_of(&line);
    if tx.send(Ok(Bytes::from(leader_event(&name, shown.as_ref(), after)))).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut quiet = Duration::ZERO;
    loop {
        let w = loop_io::watch(&ctx, WatchSpec { key: prefix.clone(), prefix: true, after });
        tokio::pin!(w);
        let answer = loop {
            tokio::select! {
                a = &mut w => break a,
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if ctx.draining.load(Ordering::Relaxed) {
                        return;
                    }
                    if !still_allowed(&ctx, &grant, &prefix) {
                        let _ = tx.send(Ok(Bytes::from_static(b"event: unauthorized\ndata: {\"detail\":\"the token no longer allows this stream (the token file was reloaded)\"}\n\n"))).await;
                        return;
                    }
                    quiet += Duration::from_secs(1);
                    if quiet >= super::watch::KEEPALIVE {
                        quiet = Duration::ZERO;
                        if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let read_from = match answer {
            None => return,
            Some(Ok(changes)) => match changes.changes.last() {
                Some(c) => c.index,
                None => continue,
            },
            Some(Err(WatchError::Compacted { .. })) => after,
            Some(Err(e)) => {
                let _ = tx.send(Ok(Bytes::from(format!("event: unavailable\ndata: {}\n\n", json!({ "detail": e.to_string() }))))).await;
                return;
            }
        };
        match line_again(&ctx, &prefix, read_from).await {
            Some((entries, index)) => {
                line = entries;
                after = index;
            }
            None => return,
        }
        let now = leader_of(&line);
        let same = match (&now, &shown) {
            (Some(a), Some(b)) => a.key == b.key && a.version == b.version && a.value == b.value,
            (None, None) => true,
            _ => false,
        };
        if !same {
            quiet = Duration::ZERO;
            if tx.send(Ok(Bytes::from(leader_event(&name, now.as_ref(), after)))).await.is_err() {
                return;
            }
            shown = now;
        }
    }
}

/// Read the line again, at least at `after` (after changes, or after the history skipped past
/// the stream).
async fn line_again(ctx: &Ctx, prefix: &[u8], after: u64) -> Option<(Vec<Entry>, u64)> {
    line(ctx, Consistency::Sequential { min_index: after }, prefix).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of the recipe: attached to a lease (its number is of no matter to the order).
    fn e(key: &str, version: u64) -> Entry {
        Entry { key: key.as_bytes().to_vec(), value: Vec::new(), version, lease: Some(1) }
    }

    /// A key under the line's prefix written without a lease (a plain put).
    fn unleased(key: &str, version: u64) -> Entry {
        Entry { lease: None, ..e(key, version) }
    }

    #[test]
    fn keys_name_the_lease_in_sixteen_hex_digits() {
        assert_eq!(key_of(Kind::Lock, "db", 0x2a), b"_synod/lock/db/000000000000002a");
        assert_eq!(key_of(Kind::Election, "db", u64::MAX), b"_synod/elect/db/ffffffffffffffff");
        let p = prefix(Kind::Lock, "db");
        assert_eq!(p, b"_synod/lock/db/");
        assert_eq!(lease_in_key(&p, &key_of(Kind::Lock, "db", 77)), Some(77));
        assert_eq!(lease_in_key(&p, b"_synod/lock/db/2a"), None);
        assert_eq!(lease_in_key(&p, b"_synod/lock/db/000000000000002A"), None);
        assert_eq!(lease_in_key(&p, b"_synod/lock/other/000000000000002a"), None);
        assert!(check_name(Kind::Lock, "jobs-1").is_ok());
        assert!(check_name(Kind::Lock, "").is_err());
        assert!(check_name(Kind::Election, "a/b").is_err());
    }

    #[test]
    fn the_lowest_version_holds_and_each_waiter_waits_on_the_one_just_before_it() {
        let line = vec![e("k/c", 30), e("k/a", 50), e("k/b", 10), e("k/d", 40)];
        let v = view_of(line.clone(), Some(b"k/a"));
        assert_eq!(v.holder.as_ref().unwrap().key, b"k/b");
        assert_eq!(v.predecessor.as_ref().unwrap().key, b"k/d", "the largest version below 50");
        assert_eq!((v.count, v.waiters(), v.holds()), (4, 3, false));
        let v = view_of(line.clone(), Some(b"k/b"));
        assert!(v.holds());
        assert_eq!(v.predecessor, None);
        let v = view_of(line, Some(b"k/x"));
        assert_eq!((v.mine.is_none(), v.holds()), (true, false));
        // Keys of one batch share a version: the key breaks the tie, the same way every time.
        let v = view_of(vec![e("k/2", 5), e("k/1", 5)], Some(b"k/2"));
        assert_eq!(v.holder.as_ref().unwrap().key, b"k/1");
        assert_eq!(v.predecessor.as_ref().unwrap().key, b"k/1");
        let empty = view_of(Vec::new(), None);
        assert_eq!((empty.holder.is_none(), empty.count, empty.waiters()), (true, 0, 0));
    }

    #[test]
    fn keys_not_attached_to_a_lease_are_not_in_the_line() {
        // A plain put under the prefix, older than every key of the recipe: it would hold for
        // ever (nothing ends it), so the line ignores it.
        let line = vec![unleased("k/stray", 1), e("k/a", 10), e("k/b", 20)];
        let v = view_of(line.clone(), Some(b"k/b"));
        assert_eq!(v.holder.as_ref().unwrap().key, b"k/a", "the unleased key does not hold");
        assert_eq!(v.predecessor.as_ref().unwrap().key, b"k/a", "nor is it waited on");
        assert_eq!((v.count, v.waiters()), (2, 1), "nor counted");
        assert!(view_of(line, Some(b"k/a")).holds());
        // Only unleased keys: nobody holds.
        let v = view_of(vec![unleased("k/stray", 1), unleased("k/other", 2)], None);
        assert_eq!((v.holder.is_none(), v.count, v.waiters()), (true, 0, 0));
        // A waiting key overwritten by a plain put is still found (detached: the waiter sees it
        // was overwritten) but never holds, even as the oldest key.
        let v = view_of(vec![unleased("k/a", 5), e("k/b", 6)], Some(b"k/a"));
        assert_eq!(v.mine.as_ref().map(|m| m.lease), Some(None));
        assert_eq!((v.holds(), v.holder.as_ref().unwrap().key.as_slice(), v.predecessor.is_none()), (false, &b"k/b"[..], true));
    }

    #[test]
    fn waits_are_bounded_and_only_waiting_requests_get_extra_time() {
        assert_eq!(wait_of(None), Duration::from_millis(DEFAULT_WAIT_MS));
        assert_eq!(wait_of(Some(0)), Duration::ZERO);
        assert_eq!(wait_of(Some(u64::MAX)), Duration::from_millis(MAX_WAIT_MS));
        assert!(extra_time(&Method::POST, "/v1/locks/a") > Duration::from_millis(MAX_WAIT_MS));
        assert!(extra_time(&Method::POST, "/v1/elections/a/campaign") > Duration::from_millis(MAX_WAIT_MS));
        assert_eq!(extra_time(&Method::GET, "/v1/locks/a"), Duration::ZERO);
        assert_eq!(extra_time(&Method::DELETE, "/v1/elections/a"), Duration::ZERO);
        assert_eq!(extra_time(&Method::POST, "/v1/kv/a"), Duration::ZERO);
        assert!(is_observe(&Method::GET, "/v1/elections/a/observe"));
        assert!(!is_observe(&Method::POST, "/v1/elections/a/observe"));
        assert!(!is_observe(&Method::GET, "/v1/elections//observe"));
        assert!(!is_observe(&Method::GET, "/v1/elections/a/campaign"));
    }

    #[test]
    fn leader_events_carry_the_lowest_key_and_its_fence() {
        let candidate = |lease: u64, value: &[u8], version: u64| Entry { key: key_of(Kind::Election, "e", lease), value: value.to_vec(), version, lease: Some(lease) };
        let mut line = vec![candidate(9, b"beta", 12), candidate(7, b"alpha", 8)];
        let l = leader_of(&line).unwrap();
        assert_eq!((l.value.as_slice(), l.version, l.lease), (&b"alpha"[..], 8, Some(7)));
        // A key written without a lease is no candidate, even the oldest.
        line.push(Entry { key: b"_synod/elect/e/stray".to_vec(), value: b"stray".to_vec(), version: 1, lease: None });
        assert_eq!(leader_of(&line).unwrap().value, b"alpha");
        let ev = leader_event("e", Some(&l), 12);
        assert!(ev.starts_with("id: 12\nevent: leader\ndata: {"), "{ev}");
        assert!(ev.contains("\"value\":\"alpha\"") && ev.contains("\"fence\":8") && ev.contains("\"lease\":7"), "{ev}");
        assert_eq!(leader_event("e", None, 13), "id: 13\nevent: vacant\ndata: {\"index\":13,\"name\":\"e\"}\n\n");
    }

    #[test]
    fn bodies_take_a_lease_and_an_optional_wait() {
        let b: LockBody = serde_json::from_str(r#"{"lease":"42","wait_ms":100}"#).unwrap();
        assert_eq!((b.lease, b.wait_ms), (42, Some(100)));
        assert!(serde_json::from_str::<LockBody>(r#"{"wait_ms":100}"#).is_err());
        assert!(serde_json::from_str::<LockBody>(r#"{"lease":1,"ttl":1}"#).is_err());
        let c: CampaignBody = serde_json::from_str(r#"{"lease":1,"value":{"base64":"/wA="}}"#).unwrap();
        assert_eq!(c.value.into_bytes(), vec![0xff, 0]);
    }
}
