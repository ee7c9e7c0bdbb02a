//! `synod lease grant|keepalive|revoke|show|list`: client leases (`/v1/leases`, see
//! `driver/src/rest/leases.rs` and docs/coordination.md).
//!
//! `grant` and `revoke` are writes of the CLI's exactly-once session (a retry after a timeout
//! does not grant a second lease). `keepalive` runs until interrupted and uses no session: it
//! must not hold the session file's lock for as long as it runs (other commands of the same
//! session would wait for it), and renewing a lease twice is harmless.

use super::{print_rows, show_bytes, Cli, ClientOpts, OutputFormat};
use crate::client::HttpResponse;
use crate::session::Session;
use anyhow::Context as _;
use hyper::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// `synod lease ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum LeaseCmd {
    /// Grant a lease and print its id (`-w json`: `{"id", "ttl_ms", "index"}`). Attach keys to
    /// it with `synod kv put KEY VALUE --lease ID`; they are deleted when it ends.
    Grant {
        /// Its time to live: `1500ms`, `2s`, `5m`, `1h` (plain digits are seconds), within the
        /// cluster's `--min-lease-ttl-ms` and `--max-lease-ttl-ms`.
        #[arg(long, value_parser = parse_ttl_arg)]
        ttl: u64,
    },
    /// Keep a lease alive: renew it now, then every third of its TTL, until Ctrl-C (exit 0) or
    /// until the lease is gone (exit 1, with the reason). Each renewal prints one line
    /// (`-w json`: the server's `{"id", "ttl_ms", "index"}`). A replica that does not answer
    /// is left for the next endpoint.
    Keepalive {
        /// The lease id.
        id: u64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// End a lease now: every key attached to it is deleted in the same command.
    Revoke {
        /// The lease id.
        id: u64,
    },
    /// Show a lease: its TTL, the time left (log time) and its keys (`-w simple`: one line
    /// `ID<TAB>TTL_MS<TAB>REMAINING_MS`, then one key per line).
    Show {
        /// The lease id.
        id: u64,
    },
    /// List the live leases in id order (an admin token, or one that may read every key).
    List {
        /// Only leases with a larger id (the last id of the previous page).
        #[arg(long)]
        after: Option<u64>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
}

fn parse_ttl_arg(s: &str) -> Result<u64, String> {
    crate::rest::leases::parse_ttl(s)
}

impl Cli {
    /// A client without the session file: no lock held, no sequence numbers (for requests
    /// that are harmless to repeat, like a keepalive).
    fn sessionless(opts: ClientOpts) -> anyhow::Result<Cli> {
        let http = crate::client::HttpClient::with(&opts.access.access())?;
        Ok(Cli { opts, http, session: Session::fresh(), path: None, _lock: None })
    }
}

/// Print a refusal (`-w json`: the problem as is; else `error STATUS: detail` on stderr).
fn print_error(out: OutputFormat, r: &HttpResponse) {
    let j = r.json();
    match out {
        OutputFormat::Json => println!("{}", if j.is_null() { r.text() } else { j.to_string() }),
        _ => eprintln!("error {}: {}", r.status, j["detail"].as_str().map_or_else(|| r.text(), str::to_string)),
    }
}

/// Run a `synod lease` command; returns the process exit code.
pub async fn run_lease(opts: ClientOpts, cmd: LeaseCmd) -> anyhow::Result<i32> {
    if let LeaseCmd::Keepalive { id, once } = cmd {
        let mut cli = Cli::sessionless(opts)?;
        return tokio::select! {
            code = keep_alive(&mut cli, id, once) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped keeping lease {id} alive (it expires within its TTL unless renewed)");
                Ok(0)
            }
        };
    }
    let mut cli = Cli::new(opts)?;
    let out = cli.opts.output;
    let r = match &cmd {
        LeaseCmd::Grant { ttl } => cli.write(Method::POST, "/v1/leases", Some(json!({ "ttl_ms": ttl })), Vec::new()).await?,
        LeaseCmd::Revoke { id } => cli.write(Method::DELETE, &format!("/v1/leases/{id}"), None, Vec::new()).await?,
        LeaseCmd::Show { id } => cli.read(&format!("/v1/leases/{id}"), Vec::new()).await?,
        LeaseCmd::List { after, limit } => {
            let mut q = Vec::new();
            if let Some(a) = after {
                q.push(("after".to_string(), a.to_string()));
            }
            if let Some(l) = limit {
                q.push(("limit".to_string(), l.to_string()));
            }
            cli.read("/v1/leases", q).await?
        }
        LeaseCmd::Keepalive { .. } => unreachable!("answered above"),
    };
    if !(200..300).contains(&r.status) {
        print_error(out, &r);
        return Ok(1);
    }
    let j = r.json();
    if out == OutputFormat::Json {
        println!("{j}");
        return Ok(0);
    }
    match cmd {
        LeaseCmd::Grant { .. } => println!("{}", j["id"]),
        LeaseCmd::Revoke { id } => match out {
            OutputFormat::Simple => println!("{id}\t{}", j["deleted"]),
            _ => println!("revoked lease {id}: {} keys deleted (index {})", j["deleted"], j["index"]),
        },
        LeaseCmd::Show { .. } => {
            let keys: Vec<String> = j["keys"].as_array().into_iter().flatten().map(show_bytes).collect();
            if out == OutputFormat::Simple {
                println!("{}\t{}\t{}", j["id"], j["ttl_ms"], j["remaining_ms"]);
                for k in keys {
                    println!("{k}");
                }
            } else {
                let mut rows = vec![
                    vec!["id".to_string(), j["id"].to_string()],
                    vec!["ttl_ms".to_string(), j["ttl_ms"].to_string()],
                    vec!["remaining_ms".to_string(), j["remaining_ms"].to_string()],
                    vec!["keys".to_string(), keys.len().to_string()],
                ];
                if let Some(h) = j["keys_hidden"].as_u64() {
                    rows.push(vec!["keys_hidden".to_string(), h.to_string()]);
                }
                print_rows(out, &["FIELD", "VALUE"], &rows);
                if !keys.is_empty() {
                    println!();
                    print_rows(out, &["KEY"], &keys.into_iter().map(|k| vec![k]).collect::<Vec<_>>());
                }
            }
        }
        LeaseCmd::List { .. } => {
            let leases = j["leases"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| vec![l["id"].to_string(), l["ttl_ms"].to_string(), l["remaining_ms"].to_string(), l["keys_count"].to_string()])
                .collect();
            print_rows(out, &["ID", "TTL_MS", "REMAINING_MS", "KEYS"], &rows);
            if j["more"] == json!(true) {
                if let Some(last) = leases.last() {
                    eprintln!("(more: --after {})", last["id"]);
                }
            }
        }
        LeaseCmd::Keepalive { .. } => {}
    }
    Ok(0)
}

/// Is this reply the server saying the lease does not exist?
fn lease_gone(r: &HttpResponse) -> bool {
    r.status == 404 && r.json()["type"].as_str().is_some_and(|t| t.ends_with("/lease-not-found"))
}

/// `synod lease keepalive`: renew every third of the TTL until the lease is gone.
async fn keep_alive(cli: &mut Cli, id: u64, once: bool) -> anyhow::Result<i32> {
    let out = cli.opts.output;
    let path = format!("/v1/leases/{id}/keepalive");
    let (base_timeout, base_deadline) = (cli.opts.timeout_ms, cli.opts.retry_deadline_ms);
    // When the last renewal was acknowledged (sent), and the lease's TTL.
    let mut last_ok: Option<(Instant, Duration)> = None;
    loop {
        let sent = Instant::now();
        // Once the TTL is known, an attempt gets at most a third of it, and the retries of one
        // renewal at most the TTL: the next round starts over from the first endpoint that
        // answered well.
        if let Some((_, ttl)) = last_ok {
            let third = (ttl / 3).max(Duration::from_millis(200));
            cli.opts.timeout_ms = base_timeout.min(third.as_millis() as u64);
            cli.opts.retry_deadline_ms = base_deadline.min(ttl.as_millis() as u64);
        }
        let r = cli.send(Method::POST, &path, &[], Vec::new()).await;
        match r {
            Ok(r) if r.status == 200 => {
                let j = r.json();
                let ttl = Duration::from_millis(j["ttl_ms"].as_u64().context("the keepalive reply has no ttl_ms")?);
                match out {
                    OutputFormat::Json => println!("{j}"),
                    OutputFormat::Simple => println!("{id}\t{}\t{}", j["ttl_ms"], j["index"]),
                    OutputFormat::Table => println!("lease {id} kept alive: ttl {} ms (index {})", j["ttl_ms"], j["index"]),
                }
                if once {
                    return Ok(0);
                }
                last_ok = Some((sent, ttl));
                tokio::time::sleep_until((sent + ttl / 3).into()).await;
            }
            Ok(r) if lease_gone(&r) => {
                if out == OutputFormat::Json {
                    println!("{}", r.json());
                }
                eprintln!(
                    "synod lease keepalive: lease {id} is gone (404 lease-not-found): it expired, was revoked, or was never granted, \
                     and every key attached to it was deleted"
                );
                return Ok(1);
            }
            // Definite refusals: another attempt would get the same.
            Ok(r) if !matches!(r.status, 503 | 504 | 410) => {
                print_error(out, &r);
                return Ok(1);
            }
            // Every endpoint failed within the retry deadline: say so and keep trying (the
            // lease may well still be live; a new leader gives every lease a full TTL).
            other => {
                let why = match other {
                    Ok(r) => format!("{} {}", r.status, r.json()["detail"].as_str().map_or_else(|| r.text(), str::to_string)),
                    Err(e) => format!("{e:#}"),
                };
                let left = last_ok.map(|(t, ttl)| (t + ttl).saturating_duration_since(Instant::now()));
                match left {
                    Some(l) => eprintln!("synod lease keepalive: no replica renewed lease {id} ({why}); retrying, at most {l:?} left of its TTL"),
                    None => eprintln!("synod lease keepalive: no replica renewed lease {id} ({why}); retrying"),
                }
                cli.opts.endpoints.rotate_left(1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
