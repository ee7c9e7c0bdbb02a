//! Watches over HTTP: the long-poll (`GET /v1/kv/{key}?wait_index=N&wait=30s`, Consul's
//! blocking query) and the change stream (`GET /v1/watch/{key}`, server-sent events).
//!
//! Both ride on the node's one-shot watches (`node::watch`, via [`loop_io::watch`]): the node
//! answers from its bounded history of changes, or wakes the watcher on the apply that records a
//! matching change. Both are served by any replica from its own applied state, like a sequential
//! read: a follower's stream may trail the leader's, never skips or repeats a change, and numbers
//! changes by the store index, equal on every replica, so a client resumes on another replica
//! with `Last-Event-ID`.
//!
//! The stream is not a buffered request: [`is_stream`] lets the HTTP server hand it to
//! [`stream`] before the dispatcher (which buffers replies and relays requests to the leader).

use super::auth::{Grant, Keys};
use super::kv::{self, Key, RangeParams, ReadParams};
use super::loop_io::{self, Changes, WatchError, WatchSpec};
use super::problem::{bytes_value, Problem};
use super::query::{self, flag, Q};
use super::{Ctx, Outcome};
use axum::body::{Body, Bytes};
use axum::response::Response;
use axum::Extension;
use hyper::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a long-poll waits without `wait` (Consul's default).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest `wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// A stream with nothing to say sends an SSE comment this often, so proxies and clients see a
/// live connection (and this replica sees a dead one).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a stream sends an `event: progress` without `progress=` (etcd's progress notify,
/// issue 28).
pub const DEFAULT_PROGRESS: Duration = Duration::from_secs(10);
/// The shortest `progress` interval accepted (each progress event is one input to the node loop).
pub const MIN_PROGRESS: Duration = Duration::from_millis(100);

const STREAM_PREFIX: &str = "/v1/watch/";

/// Parse a `wait` duration: `500ms`, `30s`, `5m`, or plain seconds; at most [`MAX_WAIT`].
pub fn parse_wait(s: &str) -> Result<Duration, Problem> {
    let bad = || Problem::bad_request(format!("wait {s:?} is not a duration like 500ms, 30s or 5m"));
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    if d > MAX_WAIT {
        return Err(Problem::bad_request(format!("wait {s:?} is longer than the limit of {}s", MAX_WAIT.as_secs())));
    }
    Ok(d)
}

/// Parse a stream's `progress` interval: `0` or `off` (no progress events: `None`), or a
/// duration like `wait`'s (`500ms`, `5s`, `1m`, plain seconds) from [`MIN_PROGRESS`] to
/// [`MAX_WAIT`].
pub fn parse_progress(s: &str) -> Result<Option<Duration>, Problem> {
    if s == "off" {
        return Ok(None);
    }
    let d = parse_wait(s).map_err(|_| {
        Problem::bad_request(format!("progress {s:?} is not a duration like 500ms, 5s or 1m (or 0 or off), at most {}s", MAX_WAIT.as_secs()))
    })?;
    if d.is_zero() {
        return Ok(None);
    }
    if d < MIN_PROGRESS {
        return Err(Problem::bad_request(format!(
            "progress {s:?} is shorter than the minimum of {}ms (0 or off turns progress events off)",
            MIN_PROGRESS.as_millis()
        )));
    }
    Ok(Some(d))
}

/// How much longer than the server's deadline a request may take: its long-poll `wait`.
pub fn extra_time(query: Option<&str>) -> Duration {
    #[derive(Deserialize)]
    struct Only {
        wait_index: Option<String>,
        wait: Option<String>,
    }
    match query.and_then(|q| serde_urlencoded::from_str::<Only>(q).ok()) {
        Some(Only { wait_index: Some(_), wait }) => wait.and_then(|w| parse_wait(&w).ok()).unwrap_or(DEFAULT_WAIT),
        _ => Duration::ZERO,
    }
}

/// A long-poll or a prefix read on `/v1/kv/{key}` (the parameters [`kv::get`] hands over).
pub struct LongPoll {
    /// Answer once a change after this index happened (or `wait` passed).
    pub wait_index: Option<u64>,
    /// How long to wait.
    pub wait: Option<String>,
    /// The key is a prefix: the answer lists the keys under it.
    pub prefix: bool,
}

/// `GET /v1/kv/{key}?wait_index=N[&wait=30s][&prefix=true]`: wait until the key (or a key under
/// the prefix) changes at an index above `N`, or `wait` passes, then answer with the current
/// state, like a read. Without `consistency`, the read is sequential at the index of the change
/// that woke it (this replica's applied state, which reflects that change). If this replica's
/// history no longer reaches back to `N`, it answers at once (a client cannot tell that from a
/// change, which is what Consul clients expect: compare `X-Synod-Index` and re-read).
pub async fn long_poll(ctx: Arc<Ctx>, grant: Arc<super::auth::Grant>, key: Vec<u8>, q: ReadParams, lp: LongPoll, headers: HeaderMap) -> Outcome {
    let wait = match lp.wait.as_deref().map(parse_wait).transpose() {
        Ok(w) => w.unwrap_or(DEFAULT_WAIT),
        Err(p) => return p.into(),
    };
    if lp.wait.is_some() && lp.wait_index.is_none() {
        return Problem::bad_request("wait needs wait_index").into();
    }
    let mut woke_at = None;
    if let Some(n) = lp.wait_index {
        let spec = WatchSpec { key: key.clone(), prefix: lp.prefix, after: n };
        match tokio::time::timeout(wait, loop_io::watch(&ctx, spec)).await {
            Ok(Some(Ok(changes))) => woke_at = changes.changes.last().map(|c| c.index),
            Ok(Some(Err(WatchError::Compacted { .. }))) | Err(_) => {}
            Ok(Some(Err(e))) => return watch_refused(e).into(),
            Ok(None) => return Problem::unavailable("shutting-down", "the node loop is gone").into(),
        }
    }
    // The token may have been removed or narrowed by a reload while the request waited: answer
    // with what the token file says now (the reads below check the current grant).
    let grant = match (&ctx.auth, &grant.token) {
        (Some(auth), Some(hash)) => match auth.lookup(hash) {
            Some(now) => now,
            None => return Outcome::Reply(super::auth::unauthorized(super::auth::Unauthenticated::Unknown)),
        },
        _ => grant,
    };
    let (consistency, min_index) = match q.consistency.as_deref() {
        None => (Some("sequential".to_string()), Some(woke_at.unwrap_or(0))),
        Some(_) => (q.consistency.clone(), q.min_index),
    };
    if !lp.prefix {
        let read = ReadParams { consistency, min_index, redirect: q.redirect, wait_index: None, wait: None, prefix: false };
        return kv::get(Extension(ctx), Extension(grant), Key(key), Q(read), headers).await;
    }
    let range = RangeParams {
        start: None,
        end: None,
        prefix: Some(kv::encode_cursor(&key)),
        encoding: Some("base64url".into()),
        limit: None,
        cursor: None,
        keys_only: false,
        consistency,
        min_index,
        redirect: q.redirect,
    };
    kv::range(Extension(ctx), Extension(grant), Q(range)).await
}

fn watch_refused(e: WatchError) -> Problem {
    match e {
        WatchError::Compacted { oldest_index } => compacted(oldest_index),
        WatchError::TooMany { limit } => {
            Problem::unavailable("busy", format!("too many watchers ({limit}) on this replica; retry or use another"))
        }
        WatchError::Removed(r) => Problem::removed(r),
    }
}

/// 410: the history no longer holds the changes asked for.
pub fn compacted(oldest_index: u64) -> Problem {
    Problem::new(
        StatusCode::GONE,
        "compacted",
        "Changes compacted",
        format!(
            "this replica's history of changes starts at index {oldest_index}; read the current state and watch from its X-Synod-Index + 1, or ask a replica with a longer history"
        ),
    )
    .with("oldest_index", json!(oldest_index))
}

/// Query of `GET /v1/watch/{key}`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The key is a prefix (an empty key with `prefix=true` watches every key).
    #[serde(default, deserialize_with = "flag")]
    pub prefix: bool,
    /// The first index to deliver (default: changes after the index applied now).
    pub from_index: Option<u64>,
    /// Accepted and ignored: a stream is served by any replica.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
    /// How often to send an `event: progress` ([`parse_progress`]; default
    /// [`DEFAULT_PROGRESS`]).
    pub progress: Option<String>,
}

/// What [`open`] hands the stream.
struct Opening {
    /// The first watch: the key or prefix, and the index the client has every change up to.
    spec: WatchSpec,
    /// This replica's applied index now (`X-Synod-Index`).
    index: u64,
    /// The progress interval (`None`: no progress events).
    progress: Option<Duration>,
}

/// Whether the request is a change stream (served by [`stream`], not the dispatcher): `GET`, and
/// `HEAD` (the stream's headers, or its refusal, without opening it).
pub fn is_stream(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD) && path.starts_with(STREAM_PREFIX)
}

/// `GET /v1/watch/{key}` reached through the dispatcher (relayed by a peer: streams are not).
pub async fn relayed() -> Problem {
    Problem::bad_request("GET /v1/watch/{key} is a server-sent event stream: ask any replica directly over HTTP")
}

/// A progress event: every change the stream matches up to `index` has been sent on it (or the
/// client had it: the index it resumed after), so `id: index` is a resume point.
pub fn progress_event(index: u64) -> String {
    format!("id: {index}\nevent: progress\ndata: {}\n\n", json!({ "index": index }))
}

/// One change as a server-sent event: `id` is its index, `event` is `put` or `delete`.
pub fn event(c: &loop_io::Change) -> String {
    let mut data = json!({ "index": c.index, "key": bytes_value(&c.key), "version": c.version });
    let kind = match &c.value {
        Some(v) => {
            data["value"] = bytes_value(v);
            "put"
        }
        None => "delete",
    };
    format!("id: {}\nevent: {kind}\ndata: {data}\n\n", c.index)
}

/// `GET /v1/watch/{key}[?prefix=true][&from_index=N][&progress=10s]`, with `Last-Event-ID` to
/// resume: every change to the key (or under the prefix) from `from_index` (or after
/// `Last-Event-ID`, or after the index applied now), in index order, each once, as
/// `text/event-stream`, and every `progress` interval an `event: progress` whose `id` is an
/// index up to which every matching change has been sent. An index the history no longer holds
/// is 410 `compacted` before the stream starts, and an `event: compacted` (then the end of the
/// stream) if a snapshot install skips past it later.
pub async fn stream(ctx: Arc<Ctx>, parts: Parts, grant: Arc<Grant>) -> Response {
    match open(&ctx, &parts, &grant).await {
        Ok(Opening { index, .. }) if parts.method == Method::HEAD => {
            // RFC 9110 9.3.2: the headers a GET would get, no body, and no watch opened.
            let mut r = Response::new(Body::empty());
            stream_headers(&ctx, &mut r, index);
            r
        }
        Ok(Opening { spec, index, progress }) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
            tokio::spawn(pump(ctx.clone(), grant, spec, progress, tx));
            let mut r = Response::new(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)));
            stream_headers(&ctx, &mut r, index);
            r
        }
        Err(p) => super::stamp_index(&ctx, p.into_response()),
    }
}

fn stream_headers(ctx: &Ctx, r: &mut Response, index: u64) {
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(super::INDEX_HEADER, HeaderValue::from(index));
    r.headers_mut().insert(super::SERVED_BY_HEADER, HeaderValue::from(ctx.me.0));
}

/// Check the request and the history: the watch to start with, the applied index, the progress
/// interval.
async fn open(ctx: &Ctx, parts: &Parts, grant: &Grant) -> Result<Opening, Problem> {
    if ctx.draining.load(Ordering::Relaxed) {
        return Err(Problem::unavailable("shutting-down", "this replica is shutting down"));
    }
    let raw = parts.uri.path().strip_prefix(STREAM_PREFIX).unwrap_or("");
    let key = kv::percent_decode_strict(raw).ok_or_else(|| Problem::bad_request("malformed percent-encoding in the key"))?;
    let q: StreamParams = query::parse(parts.uri.query().unwrap_or(""))?;
    let progress = match q.progress.as_deref() {
        None => Some(DEFAULT_PROGRESS),
        Some(p) => parse_progress(p)?,
    };
    if key.is_empty() && !q.prefix {
        return Err(Problem::bad_request("empty key (watch every key with /v1/watch/?prefix=true)"));
    }
    let spec = WatchSpec { key: key.clone(), prefix: q.prefix, after: 0 };
    if !may_watch(grant, &spec) {
        let end = q.prefix.then(|| kvstore::read::prefix_end(&key)).flatten();
        return Err(grant.check_read(if q.prefix { Keys::Range(&key, end.as_deref()) } else { Keys::One(&key) }).unwrap_err());
    }
    let last_id = match parts.headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Problem::bad_request("Last-Event-ID must be an index (a u64)"))?,
        ),
    };
    let status = loop_io::status(ctx).await.ok_or_else(|| Problem::unavailable("shutting-down", "the node loop is not answering"))?;
    if let Err(loop_io::NotServing::Removed(r)) = status.serving {
        return Err(Problem::removed(r));
    }
    // Last-Event-ID (a reconnecting client) wins over the from_index of the URL it reuses.
    let after = match (last_id, q.from_index) {
        (Some(id), _) => id,
        (None, Some(from)) => from.saturating_sub(1),
        (None, None) => status.store_index,
    };
    if after + 1 < status.history_oldest_index {
        return Err(compacted(status.history_oldest_index));
    }
    Ok(Opening { spec: WatchSpec { key, prefix: q.prefix, after }, index: status.store_index, progress })
}

/// Whether `grant` may read everything `spec` watches.
fn may_watch(grant: &Grant, spec: &WatchSpec) -> bool {
    if spec.prefix {
        let end = kvstore::read::prefix_end(&spec.key);
        grant.may_read(Keys::Range(&spec.key, end.as_deref()))
    } else {
        grant.may_read(Keys::One(&spec.key))
    }
}

/// The last event of a stream whose token was removed, or narrowed so that it no longer reads
/// what the stream watches, by a reload of the token file.
const REVOKED_EVENT: &str = "event: unauthorized\ndata: {\"detail\":\"the token no longer allows this watch (the token file was reloaded)\"}\n\n";

/// Whether the token behind `grant` was removed or narrowed since the stream opened (checked
/// before every delivery and every second: a reload ends the streams it no longer allows).
fn revoked(ctx: &Ctx, grant: &Grant, spec: &WatchSpec) -> bool {
    let (Some(auth), Some(hash)) = (&ctx.auth, &grant.token) else { return false };
    match auth.lookup(hash) {
        None => true,
        Some(now) => !may_watch(&now, spec),
    }
}

/// Counts a stream in `synod_watch_streams` while it is fed, whichever way the feeding ends.
struct OpenStream(Arc<crate::metrics::Metrics>);

impl OpenStream {
    fn new(ctx: &Ctx) -> Self {
        let m = ctx.metrics.clone();
        m.watch_streams_opened.inc();
        m.watch_streams.inc();
        OpenStream(m)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.watch_streams.dec();
    }
}

/// Feed the stream: one watch after another, each from the last index delivered, until the
/// client goes away (the channel closes; dropping the pending watch cancels it in the node) or
/// the replica drains.
///
/// Progress: every `progress` interval, a probe (`node::Input::WatchProgress`) asks the node,
/// in one input, whether a matching change lies above the last index delivered
/// (`spec.after`). If none does, the applied index it answers with is sent as `event:
/// progress` with that `id`: every matching change up to it was sent, so a client resuming
/// from it misses nothing. If one does, the pending watch delivers it and no progress is sent
/// this time. Ids on a stream never go down: a change sent after a progress event is above it,
/// and a probe's index below the stream's position (a client resumed from a replica that is
/// further ahead) is not sent.
async fn pump(
    ctx: Arc<Ctx>,
    grant: Arc<Grant>,
    mut spec: WatchSpec,
    progress: Option<Duration>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::convert::Infallible>>,
) {
    let _open = OpenStream::new(&ctx);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut quiet = Duration::ZERO;
    let mut progress_tick = progress.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    // The highest id sent as progress.
    let mut announced = 0;
    loop {
        let w = loop_io::watch(&ctx, spec.clone());
        tokio::pin!(w);
        let answer = loop {
            tokio::select! {
                a = &mut w => break a,
                _ = tx.closed() => return,
                _ = tick.tick() => {
                    if ctx.draining.load(Ordering::Relaxed) {
                        return;
                    }
                    if revoked(&ctx, &grant, &spec) {
                        let _ = tx.send(Ok(Bytes::from(REVOKED_EVENT))).await;
                        return;
                    }
                    quiet += Duration::from_secs(1);
                    if quiet >= KEEPALIVE {
                        quiet = Duration::ZERO;
                        if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                            return;
                        }
                    }
                }
                _ = next_tick(&mut progress_tick) => {
                    let probe = loop_io::watch_progress(&ctx, spec.clone()).await;
                    if let Some(index) = progress_to_send(probe.as_ref(), spec.after, announced) {
                        announced = index;
                        quiet = Duration::ZERO;
                        if tx.send(Ok(Bytes::from(progress_event(index)))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        if revoked(&ctx, &grant, &spec) {
            let _ = tx.send(Ok(Bytes::from(REVOKED_EVENT))).await;
            return;
        }
        let text = match answer {
            None => return,
            Some(Ok(Changes { changes, .. })) => {
                let mut text = String::new();
                for c in &changes {
                    text.push_str(&event(c));
                    spec.after = c.index;
                }
                text
            }
            Some(Err(e)) => {
                let (kind, data) = match e {
                    WatchError::Compacted { oldest_index } => ("compacted", json!({ "oldest_index": oldest_index })),
                    WatchError::TooMany { limit } => ("busy", json!({ "limit": limit })),
                    WatchError::Removed(r) => ("removed", json!({ "epoch": r.epoch })),
                };
                let _ = tx.send(Ok(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")))).await;
                return;
            }
        };
        quiet = Duration::ZERO;
        if tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
    }
}

/// The progress id a stream may send after a probe, given the last index it delivered (`after`)
/// and the highest progress id it sent: the probe's index, if it found no pending change and
/// the index does not go back. `None` when changes are pending (the watch sends them), on an
/// error (the watch reports it), when the loop did not answer (`probe` is `None`), or when this
/// replica is behind the stream's position; the next tick tries again.
fn progress_to_send(probe: Option<&Result<Changes, WatchError>>, after: u64, announced: u64) -> Option<u64> {
    match probe {
        Some(Ok(Changes { changes, index })) if changes.is_empty() && *index >= after && *index >= announced => Some(*index),
        _ => None,
    }
}

/// The next tick of the progress interval; never, without one.
async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_and_are_bounded() {
        assert_eq!(parse_wait("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_wait("7").unwrap(), Duration::from_secs(7));
        for bad in ["", "s", "1h", "-1s", "11m", "1.5s"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
        assert_eq!(extra_time(Some("wait_index=3&wait=20s")), Duration::from_secs(20));
        assert_eq!(extra_time(Some("wait_index=3")), DEFAULT_WAIT);
        assert_eq!(extra_time(Some("wait=20s")), Duration::ZERO);
    }

    #[test]
    fn progress_intervals_parse_and_are_bounded() {
        assert_eq!(parse_progress("5s").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(parse_progress("250ms").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(parse_progress("1m").unwrap(), Some(Duration::from_secs(60)));
        assert_eq!(parse_progress("2").unwrap(), Some(Duration::from_secs(2)));
        for off in ["0", "0s", "0ms", "off"] {
            assert_eq!(parse_progress(off).unwrap(), None, "{off}");
        }
        for bad in ["", "s", "99ms", "1ms", "11m", "1h", "-1s", "1.5s", "on", "OFF"] {
            assert!(parse_progress(bad).is_err(), "{bad}");
        }
        assert_eq!(progress_event(42), "id: 42\nevent: progress\ndata: {\"index\":42}\n\n");
    }

    #[test]
    fn progress_is_sent_only_when_no_change_is_pending_and_never_goes_back() {
        let quiet = |index| Some(Ok(Changes { changes: vec![], index }));
        let change = loop_io::Change { index: 9, key: b"a".to_vec(), value: None, version: 9 };
        // Nothing pending above the stream's position 5: the applied index 12 may be sent.
        assert_eq!(progress_to_send(quiet(12).as_ref(), 5, 0), Some(12));
        // A change at 9 not yet sent: no progress (12 would skip it for a resuming client).
        assert_eq!(progress_to_send(Some(Ok(Changes { changes: vec![change], index: 12 })).as_ref(), 5, 0), None);
        // This replica is behind the position the client resumed from, or behind a progress
        // id already sent: nothing (ids never go down).
        assert_eq!(progress_to_send(quiet(4).as_ref(), 5, 0), None);
        assert_eq!(progress_to_send(quiet(11).as_ref(), 5, 12), None);
        // The same index again is fine (an idle cluster).
        assert_eq!(progress_to_send(quiet(12).as_ref(), 5, 12), Some(12));
        // Errors and silence: the watch reports the error; the next tick tries again.
        assert_eq!(progress_to_send(Some(Err(WatchError::Compacted { oldest_index: 3 })).as_ref(), 5, 0), None);
        assert_eq!(progress_to_send(None, 5, 0), None);
    }

    #[test]
    fn a_change_is_one_event_with_its_index_as_id() {
        let put = loop_io::Change { index: 7, key: b"a".to_vec(), value: Some(b"v".to_vec()), version: 7 };
        assert_eq!(event(&put), "id: 7\nevent: put\ndata: {\"index\":7,\"key\":\"a\",\"value\":\"v\",\"version\":7}\n\n");
        let del = loop_io::Change { index: 8, key: b"a".to_vec(), value: None, version: 8 };
        assert_eq!(event(&del), "id: 8\nevent: delete\ndata: {\"index\":8,\"key\":\"a\",\"version\":8}\n\n");
    }
}
