//! Client commands: `synod kv get|put|del|ls|cas|incr|batch-get|batch-put`, `synod status`,
//! `synod members ...`, `synod lease grant|keepalive|revoke|show|list` ([`lease`]), `synod lock`
//! and `synod elect` ([`coord`]),
//! `synod snapshot save|inspect` and `synod health`.
//!
//! Output (`-w table|json|simple`): `json` is the server's JSON; `table` aligns columns under a
//! header; `simple` prints one tab-separated line per item with no header, for scripts. `get`
//! writes the value's raw bytes (binary-safe; a newline follows except with `-w simple`). In
//! listings a key or value that is not UTF-8 is printed as `base64:<standard base64>` (the same
//! form problem details use), never replaced by `?`. `put KEY -` reads the value from stdin.
//!
//! Endpoints are tried in turn: a refused connection, a 503, 504 or 410 moves on to the next one,
//! and after a whole round a jittered backoff, until `--retry-deadline-ms`. A write
//! keeps its session sequence number across every attempt, so a retry after a timeout (504) or a
//! leader change returns the first result instead of applying twice (see [`crate::session`]).

use crate::client::{HttpClient, HttpResponse};
use crate::codec::percent_encode;
use crate::session::{Session, SessionLock};
use anyhow::{bail, Context as _};
use hyper::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

mod coord;
mod lease;
pub use coord::{run_elect, run_lock, ElectArgs, LockArgs};
pub use lease::{run_lease, LeaseCmd};

/// A sleep drawn from `[b/2, b]` (`seed` mixes the process id and the clock; no RNG needed for
/// spreading clients out).
fn jittered(b: Duration, seed: u64) -> Duration {
    let mut x = seed ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    // splitmix64
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let half = b / 2;
    half + Duration::from_nanos(x % (half.as_nanos() as u64 + 1))
}

/// How to print answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned columns under a header.
    Table,
    /// The JSON the server sent.
    Json,
    /// One tab-separated line per item, no header (for scripts).
    Simple,
}

/// Options shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Replica REST endpoints, tried in turn (comma separated).
    #[arg(long, env = "SYNOD_ENDPOINTS", value_delimiter = ',', default_value = crate::server::DEFAULT_ENDPOINT, global = true)]
    pub endpoints: Vec<String>,
    /// Output format: table, json or simple (`-o`/`--output` are accepted too).
    #[arg(
        short = 'w',
        long = "write-out",
        visible_short_alias = 'o',
        visible_alias = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: OutputFormat,
    /// Where the session state lives (default ~/.synod/session.json).
    #[arg(long, env = "SYNOD_SESSION_FILE", global = true)]
    pub session_file: Option<PathBuf>,
    /// Use this session id instead of the file's (with --seq).
    #[arg(long, env = "SYNOD_SESSION", global = true, requires = "seq")]
    pub session: Option<u64>,
    /// Use this sequence number for the write (with --session).
    #[arg(long, env = "SYNOD_SEQ", global = true, requires = "session")]
    pub seq: Option<u64>,
    /// Read consistency: linearizable or sequential (sequential sends min_index = the last
    /// index this session saw).
    #[arg(long, default_value = "linearizable", global = true)]
    pub consistency: String,
    /// Per-attempt timeout in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    pub timeout_ms: u64,
    /// How long a command keeps retrying (other endpoints, then jittered backoff) on 503, 504,
    /// 410 and connection errors, in milliseconds. A write keeps its session sequence number
    /// across every attempt, so retrying never applies it twice.
    #[arg(long, env = "SYNOD_RETRY_DEADLINE_MS", default_value_t = 15_000, global = true)]
    pub retry_deadline_ms: u64,
    /// TLS and the bearer token.
    #[command(flatten)]
    pub access: AccessOpts,
}

/// How a client command reaches replicas that use TLS or tokens (docs/security.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AccessOpts {
    /// The CA certificate (PEM) that `https://` endpoints are verified against.
    #[arg(long, env = "SYNOD_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// The bearer token to send (prefer the environment variable: a command line is visible
    /// to other users of the machine).
    #[arg(long, env = "SYNOD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

impl AccessOpts {
    /// As the HTTP clients take it.
    pub fn access(&self) -> crate::client::Access {
        crate::client::Access { cacert: self.cacert.clone(), token: self.token.clone() }
    }
}

/// `synod kv ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KvCmd {
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
    /// Write one key.
    Put {
        /// The key.
        key: String,
        /// The value; `-` reads it from stdin (any bytes).
        value: String,
        /// Attach the key to this lease (`synod lease grant`): it is deleted when the lease ends.
        #[arg(long, value_name = "ID")]
        lease: Option<u64>,
    },
    /// Delete one key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys by prefix or range.
    Ls {
        /// Only keys with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// From this key (inclusive).
        #[arg(long)]
        start: Option<String>,
        /// To this key (exclusive).
        #[arg(long)]
        end: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Continue after a previous page.
        #[arg(long)]
        cursor: Option<String>,
        /// Keys and versions only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Compare-and-set.
    Cas {
        /// The key.
        key: String,
        /// Expect this value.
        #[arg(long)]
        expected: Option<String>,
        /// Expect this version.
        #[arg(long)]
        expected_version: Option<u64>,
        /// Expect the key to be absent.
        #[arg(long)]
        absent: bool,
        /// The new value.
        #[arg(long, required_unless_present = "delete", conflicts_with = "delete")]
        new: Option<String>,
        /// Delete the key if the expectation holds (instead of `--new`).
        #[arg(long)]
        delete: bool,
    },
    /// Add to an integer value.
    Incr {
        /// The key.
        key: String,
        /// The amount.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Read several keys at one index.
    BatchGet {
        /// The keys.
        keys: Vec<String>,
    },
    /// Write several keys atomically: `key=value` pairs.
    BatchPut {
        /// `key=value` pairs.
        pairs: Vec<String>,
    },
    /// Print every change to a key (or under a prefix) as it is applied, one line each:
    /// `index put|delete key [value]` (tab-separated with `-w simple`, JSON with `-w json`).
    /// Resumes on the next endpoint after a replica fails, without losing or repeating a change.
    Watch {
        /// The key (or prefix).
        key: String,
        /// Watch every key under `key`.
        #[arg(long)]
        prefix: bool,
        /// Start at this index (default: changes from now on).
        #[arg(long)]
        from_index: Option<u64>,
        /// Ask for a progress event this often (`500ms`, `5s`, `1m`; `0` or `off`: none) and
        /// print each: `INDEX progress` (`INDEX<TAB>progress` with `-w simple`,
        /// `{"event":"progress","index":INDEX}` with `-w json`): every change up to INDEX was
        /// printed. Without it the replica's default interval (10 s) applies and progress events
        /// are not printed, only used to resume after a replica fails.
        #[arg(long, value_name = "DURATION")]
        progress: Option<String>,
    },
}

struct Cli {
    opts: ClientOpts,
    http: HttpClient,
    session: Session,
    path: Option<PathBuf>,
    /// Held from before the session is loaded until the process ends (see [`crate::session`]).
    _lock: Option<SessionLock>,
}

impl Cli {
    fn new(opts: ClientOpts) -> anyhow::Result<Self> {
        let (session, path, lock) = match (opts.session, opts.seq) {
            (Some(s), Some(q)) => (Session { session: s, seq: q.saturating_sub(1), last_index: 0 }, None, None),
            _ => {
                let p = opts.session_file.clone().unwrap_or_else(Session::default_path);
                let lock = SessionLock::acquire(&p).with_context(|| format!("locking the session file {}", p.display()))?;
                (Session::load(&p), Some(p), Some(lock))
            }
        };
        let http = HttpClient::with(&opts.access.access())?;
        Ok(Cli { opts, http, session, path, _lock: lock })
    }

    /// Save after a reply: failing only loses the highest index seen, so it is a warning.
    fn save(&self) {
        if let Some(p) = &self.path {
            if let Err(e) = self.session.save(p) {
                eprintln!("warning: could not save the session to {}: {e}", p.display());
            }
        }
    }

    /// Save before sending a write: if the new sequence number is not on disk, the write is not
    /// sent (a later process could otherwise reuse the number for another write).
    fn save_before_send(&self) -> anyhow::Result<()> {
        match &self.path {
            Some(p) => self.session.save(p).with_context(|| format!("could not save the session to {}; nothing was sent", p.display())),
            None => Ok(()),
        }
    }

    /// Send to each endpoint in turn until one answers with something other than 503 / 504 /
    /// 410 (a removed replica: the next endpoint may be a member) or `--retry-deadline-ms` has
    /// passed. A failed attempt moves on to the next endpoint at once (another replica may
    /// already know the new leader); after a whole round of failures it sleeps a jittered,
    /// doubling backoff (50 ms .. 1 s, each sleep drawn from [b/2, b]) so that many clients
    /// retrying after a failover do not arrive in lockstep.
    async fn send(&mut self, method: Method, path_and_query: &str, headers: &[(&str, String)], body: Vec<u8>) -> anyhow::Result<HttpResponse> {
        if self.opts.endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.opts.retry_deadline_ms);
        let per_attempt = Duration::from_millis(self.opts.timeout_ms);
        let mut backoff = Duration::from_millis(50);
        let mut last;
        let mut attempt = 0usize;
        loop {
            let ep = &self.opts.endpoints[attempt % self.opts.endpoints.len()];
            attempt += 1;
            let url = format!("{}{}", ep.trim_end_matches('/'), path_and_query);
            // The last attempt is not cut short below 100 ms.
            let timeout = per_attempt.min(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
            match self.http.request(method.clone(), &url, headers, body.clone(), timeout).await {
                Ok(r) if r.status == 503 || r.status == 504 || r.status == 410 => last = Ok(r),
                Ok(r) => {
                    if let Some(i) = r.index() {
                        self.session.saw_index(i);
                    }
                    return Ok(r);
                }
                Err(e) => last = Err(e.context(format!("calling {url}"))),
            }
            if attempt.is_multiple_of(self.opts.endpoints.len()) {
                let sleep = jittered(backoff, start.elapsed().subsec_nanos() as u64 ^ attempt as u64);
                if Instant::now() + sleep >= deadline {
                    break;
                }
                tokio::time::sleep(sleep).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            } else if Instant::now() >= deadline {
                break;
            }
        }
        last
    }

    async fn read(&mut self, path: &str, mut query: Vec<(String, String)>) -> anyhow::Result<HttpResponse> {
        if self.opts.consistency == "sequential" {
            query.push(("consistency".into(), "sequential".into()));
            query.push(("min_index".into(), self.session.last_index.to_string()));
        }
        let q = query.iter().map(|(k, v)| format!("{k}={}", crate::codec::query_encode(v))).collect::<Vec<_>>().join("&");
        let pq = if q.is_empty() { path.to_string() } else { format!("{path}?{q}") };
        let r = self.send(Method::GET, &pq, &[], Vec::new()).await;
        self.save();
        r
    }

    async fn write(&mut self, method: Method, path: &str, json_body: Option<Value>, raw: Vec<u8>) -> anyhow::Result<HttpResponse> {
        for attempt in 0..2 {
            let seq = self.session.next_seq();
            self.save_before_send()?; // a sequence number is never reused for another write
            let mut headers = vec![("x-synod-session", self.session.session.to_string()), ("x-synod-seq", seq.to_string())];
            let body = match &json_body {
                Some(v) => {
                    headers.push(("content-type", "application/json".into()));
                    serde_json::to_vec(v)?
                }
                None => raw.clone(),
            };
            let r = self.send(method.clone(), path, &headers, body).await?;
            self.save();
            let expired = r.status == 409 && r.json()["type"].as_str().is_some_and(|t| t.ends_with("/session-expired"));
            if expired && attempt == 0 && self.path.is_some() {
                // Nothing was applied: start a new session and send once more.
                self.session = Session::fresh();
                continue;
            }
            return Ok(r);
        }
        unreachable!("the loop returns on its second pass")
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", percent_encode(key.as_bytes()))
}

/// Run a `synod kv` command; returns the process exit code.
pub async fn run_kv(opts: ClientOpts, cmd: KvCmd) -> anyhow::Result<i32> {
    if let KvCmd::Watch { key, prefix, from_index, progress } = &cmd {
        return run_watch(&opts, key, *prefix, *from_index, progress.as_deref()).await;
    }
    let mut cli = Cli::new(opts)?;
    let out = cli.opts.output;
    let r = match &cmd {
        KvCmd::Get { key } => cli.read(&kv_path(key), vec![]).await?,
        // Answered above, before a session is loaded.
        KvCmd::Watch { .. } => return Ok(0),
        KvCmd::Put { key, value, lease } => {
            let bytes = if value == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("reading the value from stdin")?;
                b
            } else {
                value.clone().into_bytes()
            };
            let path = match lease {
                Some(id) => format!("{}?lease={id}", kv_path(key)),
                None => kv_path(key),
            };
            cli.write(Method::PUT, &path, None, bytes).await?
        }
        KvCmd::Del { key } => cli.write(Method::DELETE, &kv_path(key), None, Vec::new()).await?,
        KvCmd::Ls { prefix, start, end, limit, cursor, keys_only } => {
            let mut q = Vec::new();
            for (k, v) in [("prefix", prefix), ("start", start), ("end", end), ("cursor", cursor)] {
                if let Some(v) = v {
                    q.push((k.to_string(), v.clone()));
                }
            }
            if let Some(l) = limit {
                q.push(("limit".into(), l.to_string()));
            }
            if *keys_only {
                q.push(("keys_only".into(), "true".into()));
            }
            cli.read("/v1/kv", q).await?
        }
        KvCmd::Cas { key, expected, expected_version, absent, new, delete } => {
            let mut body = json!({ "op": "cas", "key": key });
            match new {
                Some(n) => body["new"] = json!(n),
                None => body["delete"] = json!(delete),
            }
            if let Some(e) = expected {
                body["expected"] = json!(e);
            }
            if let Some(v) = expected_version {
                body["expected_version"] = json!(v);
            }
            if *absent {
                body["expected_absent"] = json!(true);
            }
            cli.write(Method::POST, "/v1/rmw", Some(body), Vec::new()).await?
        }
        KvCmd::Incr { key, delta } => {
            cli.write(Method::POST, "/v1/rmw", Some(json!({ "op": "incr", "key": key, "delta": delta })), Vec::new()).await?
        }
        KvCmd::BatchGet { keys } => {
            let q = if cli.opts.consistency == "sequential" {
                format!("?consistency=sequential&min_index={}", cli.session.last_index)
            } else {
                String::new()
            };
            let body = serde_json::to_vec(&json!({ "keys": keys }))?;
            let r = cli.send(Method::POST, &format!("/v1/batch/get{q}"), &[("content-type", "application/json".into())], body).await?;
            cli.save();
            r
        }
        KvCmd::BatchPut { pairs } => {
            let mut ops = Vec::new();
            for p in pairs {
                let (k, v) = p.split_once('=').with_context(|| format!("{p:?} is not key=value"))?;
                ops.push(json!({ "op": "put", "key": k, "value": v }));
            }
            cli.write(Method::POST, "/v1/batch/put", Some(json!({ "ops": ops })), Vec::new()).await?
        }
    };
    print_reply(&cmd, &r, out);
    Ok(if (200..300).contains(&r.status) { 0 } else { 1 })
}

/// A byte string from a reply's JSON for a terminal: the text, or `base64:...` for
/// `{"base64": ...}` (never `?`).
pub fn show_bytes(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("base64").and_then(Value::as_str) {
            Some(b) => format!("base64:{b}"),
            None => v.to_string(),
        },
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// Print rows: `table` aligns columns under `header`; `simple` prints tab-separated rows.
pub fn print_rows(out: OutputFormat, header: &[&str], rows: &[Vec<String>]) {
    if out == OutputFormat::Simple {
        for r in rows {
            println!("{}", r.join("\t"));
        }
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0))).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_reply(cmd: &KvCmd, r: &HttpResponse, out: OutputFormat) {
    if !(200..300).contains(&r.status) {
        let j = r.json();
        match out {
            OutputFormat::Json => println!("{}", if j.is_null() { r.text() } else { j.to_string() }),
            OutputFormat::Table | OutputFormat::Simple => {
                eprintln!("error {}: {}", r.status, j["detail"].as_str().unwrap_or(&r.text()));
                if !j["current"].is_null() {
                    eprintln!("current: {}", j["current"]);
                }
            }
        }
        return;
    }
    if let KvCmd::Get { key } = cmd {
        let version = r.header("x-synod-version").and_then(|v| v.parse::<u64>().ok());
        match out {
            OutputFormat::Json => {
                let mut j = json!({ "key": key, "value": crate::rest::problem::bytes_value(&r.body), "version": version, "index": r.index() });
                // Only for a key attached to a lease.
                if let Some(lease) = r.header(crate::rest::kv::LEASE_HEADER).and_then(|v| v.parse::<u64>().ok()) {
                    j["lease"] = json!(lease);
                }
                println!("{j}")
            }
            // The value's bytes as they are: binary-safe when piped.
            OutputFormat::Table | OutputFormat::Simple => {
                use std::io::Write as _;
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&r.body);
                if out == OutputFormat::Table {
                    let _ = o.write_all(b"\n");
                }
            }
        }
        return;
    }
    let j = r.json();
    match (out, cmd) {
        (OutputFormat::Json, _) => println!("{j}"),
        (_, KvCmd::Ls { .. }) => {
            let rows: Vec<Vec<String>> = j["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let mut row = vec![show_bytes(&e["key"])];
                    if let Some(v) = e.get("value") {
                        row.push(show_bytes(v));
                    }
                    row.push(e["version"].to_string());
                    row
                })
                .collect();
            let keys_only = rows.first().is_some_and(|r| r.len() == 2);
            print_rows(out, if keys_only { &["KEY", "VERSION"] } else { &["KEY", "VALUE", "VERSION"] }, &rows);
            // The hint goes to stderr, so `-w simple` output stays one line per key.
            if let Some(c) = j["next_cursor"].as_str() {
                eprintln!("(more: --cursor {c})");
            }
        }
        (_, KvCmd::BatchGet { .. }) => {
            let rows: Vec<Vec<String>> = j["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let value = e.get("value").map_or("(missing)".to_string(), show_bytes);
                    vec![show_bytes(&e["key"]), value, e.get("version").map_or("-".to_string(), Value::to_string)]
                })
                .collect();
            print_rows(out, &["KEY", "VALUE", "VERSION"], &rows);
        }
        (_, KvCmd::Incr { .. }) => println!("{}", j["value"]),
        _ => println!("OK (index {})", j["index"]),
    }
}

/// Run `synod status`; returns the exit code.
pub async fn run_status(opts: ClientOpts) -> anyhow::Result<i32> {
    let mut cli = Cli::new(opts)?;
    let r = cli.send(Method::GET, "/v1/status", &[], Vec::new()).await?;
    let j = r.json();
    if cli.opts.output == OutputFormat::Json || r.status != 200 {
        println!("{}", if j.is_null() { r.text() } else { j.to_string() });
        return Ok(if r.status == 200 { 0 } else { 1 });
    }
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let summary = vec![
        vec!["node".to_string(), format!("{} ({})", j["id"], s(&j["role"]))],
        vec!["leader".to_string(), format!("{} at {}", j["leader"], s(&j["leader_http"]))],
        vec!["ballot".to_string(), format!("{}.{}@{}", j["ballot"]["round"], j["ballot"]["node"], j["ballot"]["incarnation"])],
        vec![
            "slots".to_string(),
            format!("commit {} applied {} checkpoint {} snapshot {}", j["commit_slot"], j["applied_slot"], j["checkpoint_slot"], j["snapshot_slot"]),
        ],
        vec!["index".to_string(), format!("{} ({} keys)", j["index"], j["keys"])],
        vec!["serving".to_string(), if j["serving"] == json!(true) { "yes".to_string() } else { format!("no: {}", s(&j["reason"])) }],
        vec!["epoch".to_string(), j["epoch"].to_string()],
        vec!["cluster version".to_string(), cluster_version_line(&j)],
    ];
    print_rows(cli.opts.output, &["FIELD", "VALUE"], &summary);
    println!();
    let members: Vec<Vec<String>> = j["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let reads = if m["max_cluster_version"].is_null() { "-".to_string() } else { m["max_cluster_version"].to_string() };
            vec![m["id"].to_string(), s(&m["state"]), m["live"].to_string(), m["learned"].to_string(), reads, s(&m["http"])]
        })
        .collect();
    print_rows(cli.opts.output, &["ID", "STATE", "LIVE", "LEARNED", "READS", "HTTP"], &members);
    Ok(0)
}

/// The cluster version line of `synod status`: the version in force, what this build reads, and
/// whether an upgrade is finished (every member's build reads this build's version and the
/// cluster runs it) or what it waits for. A status from the previous release has none: 1.
fn cluster_version_line(j: &Value) -> String {
    let runs = j["cluster_version"].as_u64().unwrap_or(1);
    let max = j["max_cluster_version"].as_u64().unwrap_or(1);
    if let Some(why) = j["halted"].as_str() {
        return format!("{runs} (HALTED: {why})");
    }
    let members = j["members"].as_array().cloned().unwrap_or_default();
    let behind: Vec<String> = members
        .iter()
        .filter(|m| m["max_cluster_version"].as_u64().unwrap_or(1) < max)
        .map(|m| m["id"].to_string())
        .collect();
    match (runs >= max, behind.is_empty()) {
        (true, _) => format!("{runs} (this build reads up to {max}; upgrade finished)"),
        (false, true) => format!("{runs} (every member reads {max}: the leader raises it shortly)"),
        (false, false) => format!("{runs} (this build reads up to {max}; waiting for members {} to run it)", behind.join(", ")),
    }
}

/// `synod health`: exit 0 if `url` (a replica's `/readyz`) answers 200 within `timeout`, else
/// print why (the problem's `detail`, or the connection error) and exit 1. Made for container
/// healthchecks: the image is `FROM scratch`, so the binary is the only tool there.
pub async fn run_health(url: &str, cacert: Option<PathBuf>, timeout: Duration) -> i32 {
    let http = match HttpClient::with(&crate::client::Access { cacert, token: None }) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("not ready: {e:#}");
            return 1;
        }
    };
    match http.request(Method::GET, url, &[], Vec::new(), timeout).await {
        Ok(r) if r.status == 200 => 0,
        Ok(r) => {
            let j = r.json();
            eprintln!("not ready: {} {}", r.status, j["detail"].as_str().map_or_else(|| r.text(), str::to_string));
            1
        }
        Err(e) => {
            eprintln!("not ready: {e:#}");
            1
        }
    }
}

/// `synod snapshot ...`: backups (docs/driver.md, "Backup and restore").
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SnapshotCmd {
    /// Download a backup of a replica's applied state (`GET /v1/snapshot`) into FILE: the
    /// checksum header is checked against the bytes and the file decoded fully before a temp
    /// file is renamed into FILE.
    Save {
        /// Where to write it.
        file: PathBuf,
        /// Replica REST endpoints, tried in turn (comma separated).
        #[arg(long, env = "SYNOD_ENDPOINTS", value_delimiter = ',', default_value = crate::server::DEFAULT_ENDPOINT)]
        endpoints: Vec<String>,
        /// Ask the leader for a snapshot that holds every write acknowledged before the request
        /// (default: the asked replica's applied state, as a sequential read would see it).
        #[arg(long)]
        linearizable: bool,
        /// Per-attempt timeout in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// How long to keep trying the endpoints (on 503, 504, 410 and connection errors), in
        /// milliseconds.
        #[arg(long, env = "SYNOD_RETRY_DEADLINE_MS", default_value_t = 15_000)]
        retry_deadline_ms: u64,
        /// TLS and the bearer token (an admin token).
        #[command(flatten)]
        access: AccessOpts,
    },
    /// Check a snapshot file and print what it holds: index, slot, keys, bytes, checksum and the
    /// configuration it was taken under. A damaged or truncated file is refused (exit 1).
    Inspect {
        /// The file.
        file: PathBuf,
    },
}

/// Run `synod snapshot ...`; returns the exit code.
pub async fn run_snapshot(cmd: SnapshotCmd) -> anyhow::Result<i32> {
    match cmd {
        SnapshotCmd::Inspect { file } => match crate::durable::read_backup(&file, kvstore::StoreConfig::default()) {
            Ok(b) => {
                println!("index: {}", b.store.last_applied());
                println!("slot: {}", b.meta.last_slot.0);
                println!("keys: {}", b.store.len());
                println!("bytes: {}", b.bytes);
                println!("checksum: crc32c={}", b.checksum);
                println!("state hash: {:016x}", b.store.state_hash().0);
                println!("epoch: {}", b.meta.config.epoch);
                let show = |ms: &std::collections::BTreeSet<paxos::Member>| {
                    ms.iter().map(|m| format!("{} (incarnation {})", m.node.0, m.incarnation.0)).collect::<Vec<_>>().join(", ")
                };
                println!("acceptors: {}", show(&b.meta.config.acceptors));
                println!("learners: {}", show(&b.meta.config.learners));
                Ok(0)
            }
            Err(e) => {
                eprintln!("synod snapshot inspect: {e:#}");
                Ok(1)
            }
        },
        SnapshotCmd::Save { file, endpoints, linearizable, timeout_ms, retry_deadline_ms, access } => {
            let http = HttpClient::with(&access.access())?;
            save_snapshot(&http, &file, &endpoints, linearizable, Duration::from_millis(timeout_ms), Duration::from_millis(retry_deadline_ms)).await
        }
    }
}

async fn save_snapshot(
    http: &HttpClient,
    file: &std::path::Path,
    endpoints: &[String],
    linearizable: bool,
    per_attempt: Duration,
    retry: Duration,
) -> anyhow::Result<i32> {
    if endpoints.is_empty() {
        bail!("no endpoints given");
    }
    let path = if linearizable { "/v1/snapshot?consistency=linearizable" } else { "/v1/snapshot" };
    let deadline = Instant::now() + retry;
    let mut attempt = 0usize;
    let r = loop {
        let url = format!("{}{path}", endpoints[attempt % endpoints.len()].trim_end_matches('/'));
        attempt += 1;
        let last = match http.request(Method::GET, &url, &[], Vec::new(), per_attempt).await {
            Ok(r) if r.status == 200 => break r,
            Ok(r) => {
                let j = r.json();
                let why = format!("{url}: {} {}", r.status, j["detail"].as_str().map_or_else(|| r.text(), str::to_string));
                if !matches!(r.status, 503 | 504 | 410) {
                    eprintln!("synod snapshot save: {why}");
                    return Ok(1);
                }
                why
            }
            Err(e) => format!("{url}: {e:#}"),
        };
        if Instant::now() >= deadline {
            eprintln!("synod snapshot save: no replica gave a snapshot; last: {last}");
            return Ok(1);
        }
        if attempt.is_multiple_of(endpoints.len()) {
            tokio::time::sleep(jittered(Duration::from_millis(500), attempt as u64)).await;
        }
    };
    let bytes = r.body.clone();
    // The download is checked end to end before anything is written: the checksum header
    // against the bytes, then a full decode (the file's own trailer, the metadata, the store's
    // self-checking encoding).
    let expected = r.header(crate::rest::backup::CHECKSUM_HEADER).map(str::to_string);
    let got = crate::rest::backup::checksum_header(&bytes);
    if expected.as_deref() != Some(got.as_str()) {
        eprintln!("synod snapshot save: the download does not match its checksum header ({} in the header, {got} computed); nothing written", expected.as_deref().unwrap_or("none"));
        return Ok(1);
    }
    let (meta, store) = match crate::durable::decode_snapshot(&bytes, kvstore::StoreConfig::default()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("synod snapshot save: the download does not decode ({e:#}); nothing written");
            return Ok(1);
        }
    };
    if r.index().is_some_and(|i| i != store.last_applied()) {
        eprintln!("synod snapshot save: the reply says index {:?}, the file {}; nothing written", r.index(), store.last_applied());
        return Ok(1);
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} is not a file name", file.display()))?;
    // A temp file in the same directory, fsynced, renamed into place, the directory fsynced.
    storage::write_atomic(&storage::StdFs, &dir, name, &bytes).with_context(|| format!("writing {}", file.display()))?;
    println!(
        "saved {}: index {}, slot {}, keys {}, {} bytes, {got}",
        file.display(),
        store.last_applied(),
        meta.last_slot.0,
        store.len(),
        bytes.len()
    );
    Ok(0)
}

/// `synod members ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MembersCmd {
    /// List the members (id, incarnation, role, live, learned, addresses) and pending requests.
    List,
    /// Ask the leader to add the process registered under this id (learner, then acceptor).
    Add {
        /// The node id (the process must be running: `synod node --id N`).
        id: u64,
    },
    /// Ask the leader to remove this node (an explicit operator action), then wait until the
    /// removed replica acknowledges it (its status says `removed`, or it has exited). Exit code
    /// 0: confirmed; 2: requested, but not confirmed within `--wait-s`.
    Remove {
        /// The node id.
        id: u64,
        /// How long to wait for the removed replica's acknowledgement (0: do not wait).
        #[arg(long, default_value_t = 30)]
        wait_s: u64,
    },
}

/// After `members remove`: wait until node `id` acknowledges its removal. It has when its own
/// `/v1/status` says `removed`, or when it stops answering after the configuration moved on
/// without it (it drains and exits). Returns the exit code (0 confirmed, 2 not confirmed).
async fn wait_removal(cli: &mut Cli, id: u64, http: Option<String>, timeout: Duration) -> i32 {
    let deadline = std::time::Instant::now() + timeout;
    let mut epoch = None;
    let mut last = String::from("no answer yet");
    while std::time::Instant::now() < deadline {
        // 1. The configuration (the leader's) no longer holds it.
        if epoch.is_none() {
            if let Ok(r) = cli.send(Method::GET, "/v1/cluster/members", &[], Vec::new()).await {
                let j = r.json();
                let member = j["members"].as_array().is_some_and(|ms| ms.iter().any(|m| m["id"] == json!(id)));
                if r.status == 200 && !member {
                    epoch = j["epoch"].as_u64();
                }
            }
        }
        // 2. The node itself says so, or is gone.
        let Some(url) = &http else {
            if let Some(e) = epoch {
                println!("node {id} removed (configuration epoch {e}); it was not running, so there is nothing to acknowledge");
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // The node's advertised address, in the scheme the cluster's REST ports use.
        let scheme = if cli.opts.endpoints.iter().any(|e| e.starts_with("https://")) { "https" } else { "http" };
        let url = format!("{}/v1/status", if url.starts_with("http") { url.clone() } else { format!("{scheme}://{url}") });
        match cli.http.request(Method::GET, &url, &[], Vec::new(), Duration::from_secs(2)).await {
            Ok(r) if !r.json()["removed"].is_null() => {
                let e = &r.json()["removed"]["epoch"];
                println!("node {id} acknowledged its removal (its status says removed at epoch {e}); it drains and exits");
                return 0;
            }
            Ok(r) => last = format!("it answers as {} at epoch {}", r.json()["role"], r.json()["epoch"]),
            Err(e) if epoch.is_some() => {
                println!("node {id} removed (configuration epoch {}); it no longer answers ({e:#}): it has exited", epoch.unwrap_or(0));
                return 0;
            }
            Err(e) => last = format!("it does not answer: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done = epoch.map_or("the configuration still holds it".to_string(), |e| format!("the configuration moved on without it (epoch {e})"));
    eprintln!("could not confirm within {timeout:?} that node {id} acknowledged its removal: {done}; {last}");
    2
}

/// Run `synod members ...`; returns the exit code.
pub async fn run_members(opts: ClientOpts, cmd: MembersCmd) -> anyhow::Result<i32> {
    let mut cli = Cli::new(opts)?;
    let r = match &cmd {
        MembersCmd::List => cli.send(Method::GET, "/v1/cluster/members", &[], Vec::new()).await?,
        MembersCmd::Add { id } => {
            let body = json!({ "id": id }).to_string().into_bytes();
            cli.send(Method::POST, "/v1/cluster/members", &[("content-type", "application/json".into())], body).await?
        }
        MembersCmd::Remove { id, wait_s } => {
            // Where the node answers, before it is out of the configuration (and of the list).
            let before = cli.send(Method::GET, "/v1/cluster/members", &[], Vec::new()).await.ok();
            let http = before.as_ref().and_then(|b| {
                b.json()["members"].as_array()?.iter().find(|m| m["id"] == json!(id))?["http"].as_str().map(str::to_string)
            });
            let r = cli.send(Method::DELETE, &format!("/v1/cluster/members/{id}"), &[], Vec::new()).await?;
            if (200..300).contains(&r.status) && *wait_s > 0 {
                if cli.opts.output != OutputFormat::Json {
                    println!("requested: {}", r.json()["pending"]);
                }
                return Ok(wait_removal(&mut cli, *id, http, Duration::from_secs(*wait_s)).await);
            }
            r
        }
    };
    let j = r.json();
    let ok = (200..300).contains(&r.status);
    if cli.opts.output == OutputFormat::Json || !ok {
        println!("{}", if j.is_null() { r.text() } else { j.to_string() });
        return Ok(if ok { 0 } else { 1 });
    }
    match cmd {
        MembersCmd::List => {
            let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            if cli.opts.output == OutputFormat::Table {
                println!("epoch {}  leader {}", j["epoch"], j["leader"]);
            }
            let rows: Vec<Vec<String>> = j["members"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    vec![
                        m["id"].to_string(),
                        m["incarnation"].to_string(),
                        s(&m["role"]),
                        m["live"].to_string(),
                        m["learned"].to_string(),
                        s(&m["http"]),
                        s(&m["grpc"]),
                    ]
                })
                .collect();
            print_rows(cli.opts.output, &["ID", "INCARNATION", "ROLE", "LIVE", "LEARNED", "HTTP", "GRPC"], &rows);
            for p in j["pending"].as_array().into_iter().flatten() {
                println!("pending {p}");
            }
        }
        _ => println!("requested: {}", j["pending"]),
    }
    Ok(0)
}

/// `synod kv watch`: print one line per change until interrupted.
async fn run_watch(opts: &ClientOpts, key: &str, prefix: bool, from_index: Option<u64>, progress: Option<&str>) -> anyhow::Result<i32> {
    let mut pq = format!("/v1/watch/{}", crate::codec::percent_encode(key.as_bytes()));
    let mut q = Vec::new();
    if prefix {
        q.push("prefix=true".to_string());
    }
    if let Some(i) = from_index {
        q.push(format!("from_index={i}"));
    }
    if let Some(p) = progress {
        q.push(format!("progress={}", crate::codec::percent_encode(p.as_bytes())));
    }
    if !q.is_empty() {
        pq = format!("{pq}?{}", q.join("&"));
    }
    let out = opts.output;
    let give_up = std::time::Duration::from_millis(opts.retry_deadline_ms);
    crate::watch_client::follow_with(&opts.endpoints, &opts.access.access(), &pq, None, give_up, |ev| {
        let data: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
        let show = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => format!("base64:{}", o.get("base64").and_then(|b| b.as_str()).unwrap_or("")),
            _ => String::new(),
        };
        let index = ev.id.unwrap_or(0);
        if ev.event == "progress" {
            // `follow` resumes after it either way; print it only when asked for.
            if progress.is_some() {
                match out {
                    OutputFormat::Json => println!("{}", serde_json::json!({ "event": "progress", "index": index })),
                    OutputFormat::Simple => println!("{index}\tprogress"),
                    OutputFormat::Table => println!("{index:<8} progress"),
                }
            }
            return true;
        }
        let value = data.get("value").map(show);
        match out {
            OutputFormat::Json => println!("{}", ev.data),
            OutputFormat::Simple => println!("{index}\t{}\t{}\t{}", ev.event, show(&data["key"]), value.unwrap_or_default()),
            OutputFormat::Table => match value {
                Some(v) => println!("{index:<8} {:<6} {} = {v}", ev.event, show(&data["key"])),
                None => println!("{index:<8} {:<6} {}", ev.event, show(&data["key"])),
            },
        }
        true
    })
    .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::jittered;
    use std::time::Duration;

    #[test]
    fn jitter_stays_within_half_to_full_and_spreads() {
        let b = Duration::from_millis(400);
        let draws: Vec<Duration> = (0..64).map(|i| jittered(b, i * 7919)).collect();
        assert!(draws.iter().all(|d| *d >= b / 2 && *d <= b), "{draws:?}");
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 32, "draws spread out: {draws:?}");
    }
}

#[cfg(test)]
mod cluster_version_tests {
    use super::cluster_version_line;
    use serde_json::json;

    #[test]
    fn the_status_line_says_whether_an_upgrade_is_finished() {
        let member = |id: u64, reads: Option<u64>| json!({ "id": id, "max_cluster_version": reads });
        let mid = json!({ "cluster_version": 1, "max_cluster_version": 2, "halted": null,
                          "members": [member(1, Some(2)), member(2, None), member(3, Some(1))] });
        assert_eq!(cluster_version_line(&mid), "1 (this build reads up to 2; waiting for members 2, 3 to run it)");
        let ready = json!({ "cluster_version": 1, "max_cluster_version": 2, "halted": null, "members": [member(1, Some(2))] });
        assert_eq!(cluster_version_line(&ready), "1 (every member reads 2: the leader raises it shortly)");
        let done = json!({ "cluster_version": 2, "max_cluster_version": 2, "halted": null, "members": [member(1, Some(2))] });
        assert_eq!(cluster_version_line(&done), "2 (this build reads up to 2; upgrade finished)");
        let halted = json!({ "cluster_version": 1, "max_cluster_version": 2, "halted": "slot 9 raises the cluster version to 3" });
        assert_eq!(cluster_version_line(&halted), "1 (HALTED: slot 9 raises the cluster version to 3)");
        // A status from the previous release has no version fields: version 1, reads 1.
        assert_eq!(cluster_version_line(&json!({ "members": [] })), "1 (this build reads up to 1; upgrade finished)");
    }
}
