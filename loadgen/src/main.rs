//! `synod-load`: a closed-loop load generator. `-c` workers each keep one request in flight
//! over their own keep-alive HTTP/1.1 connection for `-d` seconds, against one URL, and the
//! run prints one JSON line: throughput, latency percentiles (from an HDR histogram), errors.
//!
//! Operations (keys are `k<n>` with `n` uniform in `0..keys`, values `value_size` bytes):
//! `put` (`PUT /v1/kv/k`), `get` (linearizable `GET`), `get-seq` (`?consistency=sequential`),
//! `preload` (writes every key once through `POST /v1/batch/put`, 1,000 per request), and
//! `etcd-put` / `etcd-get` / `etcd-get-seq` / `etcd-preload` for etcd's v3 JSON gateway
//! (`/v3/kv/put`, `/v3/kv/range`: linearizable by default, `"serializable": true` for
//! `etcd-get-seq`, etcd's local read; `/v3/kv/txn` for the preload, so etcd needs
//! `--max-txn-ops 1000`), so the same tool measures both in one run.
//!
//! `https://` URLs are verified against `--cacert`; `--token` is sent as a bearer token (a
//! replica with `--tokens`), so the same run measures a cluster on TLS against one without.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(name = "synod-load", about = "Closed-loop HTTP load against Synod or etcd; prints one JSON line")]
struct Args {
    /// Base URL of the replica (or etcd client URL), e.g. http://127.0.0.1:8081.
    #[arg(long)]
    url: String,
    /// put | get | get-seq | preload | etcd-put | etcd-get | etcd-get-seq | etcd-preload.
    #[arg(long)]
    op: String,
    /// Concurrent workers (requests in flight).
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load (ignored by the preload operations, which run to completion).
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 128)]
    value_size: usize,
    /// A label copied into the JSON line.
    #[arg(long, default_value = "")]
    label: String,
    /// The CA (PEM) that an `https://` URL's certificate is verified against.
    #[arg(long, env = "SYNOD_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// A bearer token to send with every request.
    #[arg(long, env = "SYNOD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// TLS trusting the CAs of `ca` only (none: `https://` is refused).
#[allow(deprecated)] // ring without post-quantum key exchange, as the replicas use
fn tls_config(ca: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(c?)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

/// One request for `op` on key number `k`.
fn request(a: &Args, op: &str, k: u64, value: &Bytes) -> Request<Full<Bytes>> {
    let key = format!("k{k}");
    let (method, uri, body) = match op {
        "put" => (Method::PUT, format!("{}/v1/kv/{key}", a.url), value.clone()),
        "get" => (Method::GET, format!("{}/v1/kv/{key}", a.url), Bytes::new()),
        "get-seq" => (Method::GET, format!("{}/v1/kv/{key}?consistency=sequential", a.url), Bytes::new()),
        "etcd-put" => {
            let body = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value)}).to_string();
            (Method::POST, format!("{}/v3/kv/put", a.url), Bytes::from(body))
        }
        "etcd-get" => {
            let body = serde_json::json!({"key": b64(key.as_bytes())}).to_string();
            (Method::POST, format!("{}/v3/kv/range", a.url), Bytes::from(body))
        }
        "etcd-get-seq" => {
            let body = serde_json::json!({"key": b64(key.as_bytes()), "serializable": true}).to_string();
            (Method::POST, format!("{}/v3/kv/range", a.url), Bytes::from(body))
        }
        other => unreachable!("checked: {other}"),
    };
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = &a.token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(body)).expect("valid request")
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<u16> {
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// Write every key once, 1,000 per request (Synod's atomic batch put, or etcd's txn).
async fn preload(a: &Args, client: &HttpClient, etcd: bool) -> Result<()> {
    let value = "v".repeat(a.value_size);
    let mut k = 0;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while k < a.keys {
        let hi = (k + 1_000).min(a.keys);
        let (uri, body) = if etcd {
            let ops: Vec<_> = (k..hi)
                .map(|i| serde_json::json!({"request_put": {"key": b64(format!("k{i}").as_bytes()), "value": b64(value.as_bytes())}}))
                .collect();
            (format!("{}/v3/kv/txn", a.url), serde_json::json!({"success": ops}).to_string())
        } else {
            let ops: Vec<_> = (k..hi).map(|i| serde_json::json!({"op": "put", "key": format!("k{i}"), "value": value})).collect();
            (format!("{}/v1/batch/put", a.url), serde_json::json!({"ops": ops}).to_string())
        };
        let mut req = Request::builder().method(Method::POST).uri(uri);
        if let Some(t) = &a.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let client = client.clone();
        tasks.spawn(async move { send(&client, req).await });
        if tasks.len() >= a.concurrency.clamp(1, 8) {
            let s = tasks.join_next().await.expect("a task").context("join")??;
            if !(200..300).contains(&s) {
                bail!("preload request answered {s}");
            }
        }
        k = hi;
    }
    while let Some(r) = tasks.join_next().await {
        let s = r.context("join")??;
        if !(200..300).contains(&s) {
            bail!("preload request answered {s}");
        }
    }
    println!(
        "{}",
        serde_json::json!({"label": a.label, "op": a.op, "keys": a.keys, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(a.cacert.as_deref())?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(a.concurrency).build(https);
    match a.op.as_str() {
        "preload" => return preload(&a, &client, false).await,
        "etcd-preload" => return preload(&a, &client, true).await,
        "put" | "get" | "get-seq" | "etcd-put" | "etcd-get" | "etcd-get-seq" => {}
        other => bail!("unknown op {other}"),
    }
    let value = Bytes::from(vec![b'x'; a.value_size]);
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (a, client, value) = (a.clone(), client.clone(), value.clone());
        workers.spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let k = rand::random::<u64>() % a.keys.max(1);
                let t = Instant::now();
                match send(&client, request(&a, &a.op, k, &value)).await {
                    Ok(s) if (200..300).contains(&s) || (s == 404 && a.op.starts_with("get")) => {
                        ok += 1;
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (hist, ok, errors)
        });
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut ok, mut errors) = (0u64, 0u64);
    while let Some(r) = workers.join_next().await {
        let (h, o, e) = r.context("worker")?;
        hist.add(h).context("merge")?;
        ok += o;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "label": a.label, "op": a.op, "url": a.url, "concurrency": a.concurrency, "keys": a.keys,
            "seconds": secs, "ok": ok, "errors": errors, "rate": ok as f64 / secs,
            "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
        })
    );
    Ok(())
}
