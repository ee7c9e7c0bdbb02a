//! A client for the change stream (`GET /v1/watch/{key}`, server-sent events), for
//! `synod kv watch` and the tests.
//!
//! The request is HTTP/1.0, so the server ends the body by closing the connection instead of
//! chunking it, and the events are read line by line as they arrive. [`follow`] resumes on the
//! next endpoint with `Last-Event-ID` whenever a stream ends or a replica cannot be reached, so
//! every change is delivered once, in index order, across a replica's crash.

use anyhow::{bail, Context as _};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use crate::client::Access;

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field (the change's index, or a progress event's), if any.
    pub id: Option<u64>,
    /// The `event:` field (`put`, `delete`, `progress`, `compacted`, ...).
    pub event: String,
    /// The `data:` field (JSON).
    pub data: String,
}

/// An open stream, or the server's refusal.
pub enum Opened {
    /// 200: read events with [`Stream::next`].
    Stream(Stream),
    /// Anything else: the status and the body (problem+json).
    Refused(u16, String),
}

/// A change stream being read.
pub struct Stream {
    reader: BufReader<Box<dyn crate::tls::Io>>,
}

/// Open `GET {path_and_query}` on `base` (`http://host:port`), resuming after `last_event_id`.
pub async fn open(base: &str, path_and_query: &str, last_event_id: Option<u64>) -> anyhow::Result<Opened> {
    open_with(base, path_and_query, last_event_id, &Access::default()).await
}

/// [`open`] on `http://` or `https://` (verified against `access.cacert`), with `access.token`.
pub async fn open_with(base: &str, path_and_query: &str, last_event_id: Option<u64>, access: &Access) -> anyhow::Result<Opened> {
    let tls = base.starts_with("https://");
    let host = base.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    let tcp = TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
    let stream: Box<dyn crate::tls::Io> = if tls {
        let ca = access.cacert.as_deref().context("an https:// endpoint needs --cacert (the CA that signed the replicas' certificates)")?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(crate::tls::client_config(ca)?));
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).with_context(|| format!("{name} is not a server name"))?;
        Box::new(connector.connect(name, tcp).await.with_context(|| format!("TLS with {host}"))?)
    } else {
        Box::new(tcp)
    };
    let mut reader = BufReader::new(stream);
    let mut req = format!("GET {path_and_query} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
    if let Some(b) = access.bearer() {
        req.push_str(&format!("Authorization: {b}\r\n"));
    }
    if let Some(id) = last_event_id {
        req.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    req.push_str("\r\n");
    reader.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("bad status line {line:?}"))?;
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    if status != 200 {
        let mut body = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut body).await;
        return Ok(Opened::Refused(status, body));
    }
    Ok(Opened::Stream(Stream { reader }))
}

impl Stream {
    /// The next event (comments skipped); `None` when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        let mut ev = Event { id: None, event: "message".into(), data: String::new() };
        let mut any = false;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Ok(None);
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if any {
                    return Ok(Some(ev));
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) = l.split_once(':').map_or((l, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            any = true;
            match field {
                "id" => ev.id = value.parse().ok(),
                "event" => ev.event = value.to_string(),
                "data" => ev.data.push_str(value),
                _ => {}
            }
        }
    }
}

/// Follow the stream over `endpoints` in turn, calling `on` for each change (`put`/`delete`)
/// and `progress` event, from `from_index` (or from now), until `on` returns false. A stream
/// that ends or a replica that cannot be reached moves on to the next endpoint with
/// `Last-Event-ID`: the id of the last change or progress event (a progress id is an index up to
/// which the stream sent every matching change, so resuming after it misses none); a refusal
/// other than 503 (a 410 `compacted`, a 400) ends it with an error; the retries end after
/// `give_up` without an open stream.
pub async fn follow(endpoints: &[String], path_and_query: &str, last: Option<u64>, give_up: Duration, on: impl FnMut(&Event) -> bool) -> anyhow::Result<()> {
    follow_with(endpoints, &Access::default(), path_and_query, last, give_up, on).await
}

/// [`follow`] with TLS and a token ([`open_with`]).
pub async fn follow_with(
    endpoints: &[String],
    access: &Access,
    path_and_query: &str,
    mut last: Option<u64>,
    give_up: Duration,
    mut on: impl FnMut(&Event) -> bool,
) -> anyhow::Result<()> {
    if endpoints.is_empty() {
        bail!("no endpoints given");
    }
    let mut failing_since: Option<tokio::time::Instant> = None;
    for attempt in 0.. {
        let ep = &endpoints[attempt % endpoints.len()];
        match open_with(ep, path_and_query, last, access).await {
            Ok(Opened::Stream(mut s)) => {
                failing_since = None;
                while let Ok(Some(ev)) = s.next().await {
                    match ev.event.as_str() {
                        "put" | "delete" | "progress" => {
                            last = ev.id.or(last);
                            if !on(&ev) {
                                return Ok(());
                            }
                        }
                        // The history skipped past us here (a snapshot install): another
                        // replica may still hold it.
                        "compacted" | "busy" | "removed" => break,
                        "unauthorized" => bail!("{ep} ended the stream: the token no longer allows it"),
                        _ => {}
                    }
                }
            }
            Ok(Opened::Refused(503, _)) | Err(_) => {}
            Ok(Opened::Refused(status, body)) => bail!("{ep} answered {status}: {body}"),
        }
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() > give_up {
            bail!("no replica served the stream for {give_up:?}");
        }
        if attempt % endpoints.len() == endpoints.len() - 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
