//! The clients: concurrent tasks that send reads at both consistency levels, writes, CAS,
//! increments and deletes to random replicas, and record every request in a [`History`].
//!
//! How each answer is recorded (docs/checker.md):
//!
//! | answer | recorded as |
//! |---|---|
//! | 2xx; 404 on a read or delete | `Ok` with what came back and the reply's index |
//! | 409 `cas-failed` | `Fail`: the guard was evaluated and did not hold |
//! | 503, 409 session errors, connect refused, on every attempt | discarded: nothing took effect |
//! | 504, timeout, connection lost (on any attempt, without a later definite answer) | `Unknown` |
//!
//! A write keeps its session sequence number across its retries (up to [`WRITE_ATTEMPTS`]), so
//! a retry after a 504 returns the first result rather than applying twice; the op is recorded
//! once, from its first send to its definite answer. After a discarded write the client starts
//! a fresh session, so a sequence number is never reused for a different command.

use crate::cluster::Cluster;
use crate::http::{Reply, SendError};
use checker::{History, OpKind, Outcome};
use hdrhistogram::Histogram;
use hyper::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Register keys (mixed operations).
pub const REGISTERS: usize = 8;
/// Counter keys (increments and reads only: the exactly-once check).
pub const COUNTERS: usize = 4;
/// Attempts per write (same session and sequence number).
pub const WRITE_ATTEMPTS: usize = 4;
/// Attempts per read.
pub const READ_ATTEMPTS: usize = 3;
/// Per-attempt timeout (the replicas' write timeout is 3 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A register key.
pub fn register(i: usize) -> String {
    format!("r{i}")
}

/// A counter key.
pub fn counter(i: usize) -> String {
    format!("c{i}")
}

/// Every key the workload touches.
pub fn all_keys() -> Vec<String> {
    (0..REGISTERS).map(register).chain((0..COUNTERS).map(counter)).collect()
}

/// The kinds of request, for counts and latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpType {
    /// `GET /v1/kv/k` (linearizable).
    ReadLin,
    /// `GET /v1/kv/k?consistency=sequential&min_index=..`.
    ReadSeq,
    /// `PUT /v1/kv/k`.
    Write,
    /// `POST /v1/rmw` cas.
    Cas,
    /// `POST /v1/rmw` incr.
    Incr,
    /// `DELETE /v1/kv/k`.
    Delete,
}

impl OpType {
    /// Every type, in report order.
    pub const ALL: [OpType; 6] = [OpType::ReadLin, OpType::ReadSeq, OpType::Write, OpType::Cas, OpType::Incr, OpType::Delete];

    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            OpType::ReadLin => "read-lin",
            OpType::ReadSeq => "read-seq",
            OpType::Write => "write",
            OpType::Cas => "cas",
            OpType::Incr => "incr",
            OpType::Delete => "delete",
        }
    }
}

/// How one request ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Definite answer (including a failed CAS, which is an observation).
    Ok,
    /// Definite failure (a CAS whose guard did not hold, a non-integer incr).
    Fail,
    /// No definite answer.
    Unknown,
    /// Rejected before it could take effect; left out of the history.
    Discarded,
}

/// Counts and latency histograms per [`OpType`].
#[derive(Debug)]
pub struct Stats {
    /// `(ok, fail, unknown, discarded)` per type.
    pub counts: BTreeMap<OpType, [u64; 4]>,
    /// Latency of definite answers (µs), per type.
    pub latency: BTreeMap<OpType, Histogram<u64>>,
    /// Replies the workload did not expect (status, problem type), with counts.
    pub unexpected: BTreeMap<String, u64>,
}

impl Default for Stats {
    fn default() -> Self {
        let latency = OpType::ALL
            .iter()
            .map(|t| (*t, Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")))
            .collect();
        Stats { counts: BTreeMap::new(), latency, unexpected: BTreeMap::new() }
    }
}

impl Stats {
    /// Count one request.
    pub fn record(&mut self, t: OpType, e: Ending, latency: Duration) {
        let c = self.counts.entry(t).or_default();
        let i = match e {
            Ending::Ok => 0,
            Ending::Fail => 1,
            Ending::Unknown => 2,
            Ending::Discarded => 3,
        };
        c[i] += 1;
        if matches!(e, Ending::Ok | Ending::Fail) {
            if let Some(h) = self.latency.get_mut(&t) {
                let _ = h.record((latency.as_micros() as u64).clamp(1, 120_000_000));
            }
        }
    }

    /// Total definite answers (ok + fail) over every type.
    pub fn completed(&self) -> u64 {
        self.counts.values().map(|c| c[0] + c[1]).sum()
    }
}

/// What the clients share.
pub struct Shared {
    /// Where to send.
    pub cluster: Cluster,
    /// The recorder.
    pub history: Arc<History>,
    /// Counts and latencies.
    pub stats: Mutex<Stats>,
    /// Set to stop the clients after their current request.
    pub stop: AtomicBool,
}

impl Shared {
    fn count(&self, t: OpType, e: Ending, latency: Duration) {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).record(t, e, latency);
    }

    fn unexpected(&self, what: String) {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()).unexpected.entry(what).or_default() += 1;
    }
}

/// One client's private state.
struct Client {
    id: u64,
    rng: ChaCha8Rng,
    session: u64,
    generation: u64,
    seq: u64,
    last_index: u64,
    seen: BTreeMap<String, Option<String>>,
    next_value: u64,
}

/// What a write attempt loop concluded.
enum WriteEnd {
    Definite(Reply),
    Unknown,
    Rejected,
}

impl Client {
    fn new(id: u64, seed: u64) -> Self {
        let mut c = Client {
            id,
            rng: ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            session: 0,
            generation: 0,
            seq: 0,
            last_index: 0,
            seen: BTreeMap::new(),
            next_value: 0,
        };
        c.fresh_session();
        c
    }

    /// A new session id: the client in the high bits, a generation in the low ones; the top
    /// bit stays clear (the driver keeps it for Idempotency-Key sessions).
    fn fresh_session(&mut self) {
        self.generation += 1;
        self.session = ((self.id + 1) << 32 | self.generation) & !(1 << 63);
        self.seq = 0;
    }

    fn value(&mut self) -> String {
        self.next_value += 1;
        (self.id * 1_000_000 + self.next_value).to_string()
    }

    fn replica(&mut self, sh: &Shared) -> String {
        let i = self.rng.gen_range(0..sh.cluster.len());
        sh.cluster.endpoints[i].clone()
    }

    fn saw(&mut self, index: Option<u64>) {
        if let Some(i) = index {
            self.last_index = self.last_index.max(i);
        }
    }

    async fn step(&mut self, sh: &Shared) {
        let on_counter = self.rng.gen_range(0..3) == 0;
        let roll = self.rng.gen_range(0..100);
        if on_counter {
            let key = counter(self.rng.gen_range(0..COUNTERS));
            match roll {
                0..=59 => self.incr(sh, key).await,
                60..=79 => self.read(sh, key, false).await,
                _ => self.read(sh, key, true).await,
            }
        } else {
            let key = register(self.rng.gen_range(0..REGISTERS));
            match roll {
                0..=24 => self.read(sh, key, false).await,
                25..=44 => self.read(sh, key, true).await,
                45..=69 => self.write(sh, key).await,
                70..=89 => self.cas(sh, key).await,
                90..=96 => self.incr(sh, key).await,
                _ => self.delete(sh, key).await,
            }
        }
    }

    async fn read(&mut self, sh: &Shared, key: String, sequential: bool) {
        let t = if sequential { OpType::ReadSeq } else { OpType::ReadLin };
        let started = Instant::now();
        let id = sh.history.invoke(self.id, key.clone(), OpKind::Read { result: None });
        if sequential {
            sh.history.mark_sequential(id);
        }
        for attempt in 0..READ_ATTEMPTS {
            let base = self.replica(sh);
            let url = if sequential {
                format!("{base}/v1/kv/{key}?consistency=sequential&min_index={}", self.last_index)
            } else {
                format!("{base}/v1/kv/{key}")
            };
            match sh.cluster.http.get(&url, ATTEMPT_TIMEOUT).await {
                Ok(r) if r.status == 200 || (r.status == 404 && r.problem() == "not-found") => {
                    let result = (r.status == 200).then(|| r.text());
                    self.seen.insert(key.clone(), result.clone());
                    sh.history.complete(id, Outcome::Ok, OpKind::Read { result }, r.index);
                    self.saw(r.index);
                    sh.count(t, Ending::Ok, started.elapsed());
                    return;
                }
                Ok(r) if r.status == 503 => {}
                Ok(r) => sh.unexpected(format!("{} {} {}", t.name(), r.status, r.problem())),
                Err(_) => {}
            }
            if attempt + 1 < READ_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(100 + 100 * attempt as u64)).await;
            }
        }
        // A read that got no answer observed nothing: it is left out.
        sh.history.discard(id);
        sh.count(t, Ending::Discarded, started.elapsed());
    }

    /// Send a write with this client's session, retrying the same sequence number.
    async fn send_write(&mut self, sh: &Shared, method: Method, path: &str, body: Vec<u8>, json: bool) -> WriteEnd {
        let seq = self.seq + 1;
        let mut ambiguous = false;
        for attempt in 0..WRITE_ATTEMPTS {
            let url = format!("{}{path}", self.replica(sh));
            let mut headers = vec![("x-synod-session", self.session.to_string()), ("x-synod-seq", seq.to_string())];
            if json {
                headers.push(("content-type", "application/json".to_string()));
            }
            match sh.cluster.http.send(method.clone(), &url, &headers, body.clone(), ATTEMPT_TIMEOUT).await {
                Ok(r) if r.status == 503 => {}
                Ok(r) if r.status == 504 || r.status >= 500 => {
                    if r.status != 504 {
                        sh.unexpected(format!("write {} {}", r.status, r.problem()));
                    }
                    ambiguous = true;
                }
                Ok(r) if r.status == 409 && r.problem().starts_with("session-") => {
                    sh.unexpected(format!("write 409 {}", r.problem()));
                    break;
                }
                Ok(r) => {
                    self.seq = seq;
                    self.saw(r.index.or(r.json()["index"].as_u64()));
                    return WriteEnd::Definite(r);
                }
                Err(SendError::NotSent(_)) => {}
                Err(SendError::NoReply(_)) => ambiguous = true,
            }
            if attempt + 1 < WRITE_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(150 + 150 * attempt as u64)).await;
            }
        }
        if ambiguous {
            self.seq = seq;
            WriteEnd::Unknown
        } else {
            // Nothing took effect; never reuse this sequence number for another command.
            self.fresh_session();
            WriteEnd::Rejected
        }
    }

    /// Record the end of a write.
    fn finish(&mut self, sh: &Shared, t: OpType, id: checker::OpId, started: Instant, end: (Ending, OpKind, Option<u64>)) {
        let (ending, kind, index) = end;
        match ending {
            Ending::Ok => sh.history.complete(id, Outcome::Ok, kind, index),
            Ending::Fail => sh.history.complete(id, Outcome::Fail, kind, index),
            Ending::Unknown => sh.history.unknown(id),
            Ending::Discarded => sh.history.discard(id),
        }
        sh.count(t, ending, started.elapsed());
    }

    async fn write(&mut self, sh: &Shared, key: String) {
        let value = self.value();
        let kind = OpKind::Write { value: value.clone() };
        let started = Instant::now();
        let id = sh.history.invoke(self.id, key.clone(), kind.clone());
        let end = match self.send_write(sh, Method::PUT, &format!("/v1/kv/{key}"), value.clone().into_bytes(), false).await {
            WriteEnd::Definite(r) if r.status == 200 || r.status == 201 => {
                self.seen.insert(key, Some(value));
                (Ending::Ok, kind, r.index)
            }
            WriteEnd::Definite(r) => {
                sh.unexpected(format!("write {} {}", r.status, r.problem()));
                (Ending::Unknown, kind, None)
            }
            WriteEnd::Unknown => (Ending::Unknown, kind, None),
            WriteEnd::Rejected => (Ending::Discarded, kind, None),
        };
        self.finish(sh, OpType::Write, id, started, end);
    }

    async fn delete(&mut self, sh: &Shared, key: String) {
        let started = Instant::now();
        let id = sh.history.invoke(self.id, key.clone(), OpKind::Delete);
        let end = match self.send_write(sh, Method::DELETE, &format!("/v1/kv/{key}"), Vec::new(), false).await {
            // 404: the key was already absent; deleting it is still a (no-op) success.
            WriteEnd::Definite(r) if r.status == 200 || (r.status == 404 && r.problem() == "not-found") => {
                self.seen.insert(key, None);
                (Ending::Ok, OpKind::Delete, r.index)
            }
            WriteEnd::Definite(r) => {
                sh.unexpected(format!("delete {} {}", r.status, r.problem()));
                (Ending::Unknown, OpKind::Delete, None)
            }
            WriteEnd::Unknown => (Ending::Unknown, OpKind::Delete, None),
            WriteEnd::Rejected => (Ending::Discarded, OpKind::Delete, None),
        };
        self.finish(sh, OpType::Delete, id, started, end);
    }

    async fn cas(&mut self, sh: &Shared, key: String) {
        let expected = self.seen.get(&key).cloned().flatten();
        let new = self.value();
        let kind = OpKind::Cas { expected: expected.clone(), new: new.clone() };
        let mut body = serde_json::json!({ "op": "cas", "key": key, "new": new });
        match &expected {
            Some(v) => body["expected"] = serde_json::json!(v),
            None => body["expected_absent"] = serde_json::json!(true),
        }
        let started = Instant::now();
        let id = sh.history.invoke(self.id, key.clone(), kind.clone());
        let end = match self.send_write(sh, Method::POST, "/v1/rmw", body.to_string().into_bytes(), true).await {
            WriteEnd::Definite(r) if r.status == 200 => {
                self.seen.insert(key, Some(new));
                (Ending::Ok, kind, r.index)
            }
            WriteEnd::Definite(r) if r.status == 409 && r.problem() == "cas-failed" => {
                let current = r.json()["current"]["value"].as_str().map(str::to_string);
                self.seen.insert(key, current);
                (Ending::Fail, kind, r.index)
            }
            WriteEnd::Definite(r) => {
                sh.unexpected(format!("cas {} {}", r.status, r.problem()));
                (Ending::Unknown, kind, None)
            }
            WriteEnd::Unknown => (Ending::Unknown, kind, None),
            WriteEnd::Rejected => (Ending::Discarded, kind, None),
        };
        self.finish(sh, OpType::Cas, id, started, end);
    }

    async fn incr(&mut self, sh: &Shared, key: String) {
        let body = serde_json::json!({ "op": "incr", "key": key, "delta": 1 });
        let started = Instant::now();
        let id = sh.history.invoke(self.id, key.clone(), OpKind::Incr { delta: 1, result: None });
        let end = match self.send_write(sh, Method::POST, "/v1/rmw", body.to_string().into_bytes(), true).await {
            WriteEnd::Definite(r) if r.status == 200 => {
                let result = r.json()["value"].as_i64();
                self.seen.insert(key, result.map(|v| v.to_string()));
                (Ending::Ok, OpKind::Incr { delta: 1, result }, r.index)
            }
            WriteEnd::Definite(r) if r.status == 409 && r.problem() == "not-an-integer" => {
                (Ending::Fail, OpKind::Incr { delta: 1, result: None }, r.index)
            }
            WriteEnd::Definite(r) => {
                sh.unexpected(format!("incr {} {}", r.status, r.problem()));
                (Ending::Unknown, OpKind::Incr { delta: 1, result: None }, None)
            }
            WriteEnd::Unknown => (Ending::Unknown, OpKind::Incr { delta: 1, result: None }, None),
            WriteEnd::Rejected => (Ending::Discarded, OpKind::Incr { delta: 1, result: None }, None),
        };
        self.finish(sh, OpType::Incr, id, started, end);
    }
}

/// Run client `id` until `sh.stop` is set.
pub async fn run_client(sh: Arc<Shared>, id: u64, seed: u64) {
    let mut c = Client::new(id, seed);
    while !sh.stop.load(Ordering::Relaxed) {
        c.step(&sh).await;
    }
}

/// The final linearizable read of `key`, recorded as client `client`: retried (bounded) until
/// a replica answers. Returns the value read, or `Err` when none answered within `within`.
pub async fn final_read(sh: &Shared, client: u64, key: &str, within: Duration) -> Result<Option<String>, String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    let mut i = 0usize;
    while Instant::now() < deadline {
        let url = format!("{}/v1/kv/{key}", sh.cluster.endpoints[i % sh.cluster.len()]);
        i += 1;
        let id = sh.history.invoke(client, key.to_string(), OpKind::Read { result: None });
        match sh.cluster.http.get(&url, ATTEMPT_TIMEOUT).await {
            Ok(r) if r.status == 200 || (r.status == 404 && r.problem() == "not-found") => {
                let result = (r.status == 200).then(|| r.text());
                sh.history.complete(id, Outcome::Ok, OpKind::Read { result: result.clone() }, r.index);
                return Ok(result);
            }
            Ok(r) => last = format!("{} {}", r.status, r.problem()),
            Err(e) => last = e.to_string(),
        }
        sh.history.discard(id);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("no replica answered a read of {key} within {within:?} (last: {last})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_fresh_per_generation_and_keep_the_top_bit_clear() {
        let mut c = Client::new(7, 1);
        let first = c.session;
        c.seq = 5;
        c.fresh_session();
        assert_ne!(c.session, first);
        assert_eq!(c.seq, 0);
        assert_eq!(c.session >> 32, 8);
        assert_eq!(c.session & (1 << 63), 0);
        // Values are unique per client and integers (so increments on registers stay valid).
        let (a, b) = (c.value(), c.value());
        assert_ne!(a, b);
        assert!(a.parse::<i64>().is_ok());
    }

    #[test]
    fn stats_count_endings_and_latencies() {
        let mut s = Stats::default();
        s.record(OpType::Write, Ending::Ok, Duration::from_millis(3));
        s.record(OpType::Cas, Ending::Fail, Duration::from_millis(5));
        s.record(OpType::Write, Ending::Unknown, Duration::from_secs(5));
        s.record(OpType::ReadLin, Ending::Discarded, Duration::from_millis(1));
        assert_eq!(s.counts[&OpType::Write], [1, 0, 1, 0]);
        assert_eq!(s.completed(), 2);
        assert_eq!(s.latency[&OpType::Write].len(), 1);
        assert_eq!(s.latency[&OpType::ReadLin].len(), 0);
    }

    #[test]
    fn keys_are_few_and_distinct() {
        let k = all_keys();
        assert_eq!(k.len(), REGISTERS + COUNTERS);
        let set: std::collections::BTreeSet<_> = k.iter().collect();
        assert_eq!(set.len(), k.len());
    }
}
