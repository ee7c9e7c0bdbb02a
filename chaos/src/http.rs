//! A small HTTP/1 client (hyper-util's pooled client, no TLS) that tells apart the failures the
//! history needs: a request that never left (connect failed: it had no effect) from one that
//! was sent and got no answer (its effect is unknown).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A reply, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// `X-Synod-Index`, when present.
    pub index: Option<u64>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The last segment of a problem+json `type` (`cas-failed`, `no-leader`, ...).
    pub fn problem(&self) -> String {
        self.json()["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("").to_string()
    }
}

/// Why no reply came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection was never established: the server saw nothing.
    #[error("connect failed: {0}")]
    NotSent(String),
    /// Sent (or possibly sent), but no complete reply: the effect is unknown.
    #[error("no reply: {0}")]
    NoReply(String),
}

/// A pooled client.
#[derive(Clone, Debug)]
pub struct Http {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with a 1-second connect timeout.
    pub fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(1)));
        conn.set_nodelay(true);
        Http { inner: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(5)).build(conn) }
    }

    /// Send one request and read the whole reply within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, SendError> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let req = b.body(Full::new(Bytes::from(body))).map_err(|e| SendError::NotSent(e.to_string()))?;
        let fut = async {
            let resp = self.inner.request(req).await.map_err(|e| {
                if e.is_connect() {
                    SendError::NotSent(e.to_string())
                } else {
                    SendError::NoReply(e.to_string())
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| SendError::NoReply(e.to_string()))?.to_bytes();
            let index = parts.headers.get("x-synod-index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            Ok(Reply { status: parts.status.as_u16(), index, body })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(SendError::NoReply(format!("timed out after {timeout:?}"))),
        }
    }

    /// GET with a timeout.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Reply, SendError> {
        self.send(Method::GET, url, &[], Vec::new(), timeout).await
    }
}
