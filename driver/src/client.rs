//! A small HTTP/1 client for the CLI and the tests (hyper-util's pooled client; `https://` URLs
//! are verified against the CA given with `--cacert`, and `--token` is sent as a bearer token).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A reply, fully read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// One header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The `X-Synod-Index` header.
    pub fn index(&self) -> Option<u64> {
        self.header(crate::rest::INDEX_HEADER).and_then(|v| v.parse().ok())
    }
}

/// A pooled HTTP client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    token: Option<String>,
}

/// How a client reaches replicas: the CA that signed their REST certificates (for `https://`)
/// and the bearer token it sends.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The CA file (PEM) that `https://` endpoints are verified against.
    pub cacert: Option<std::path::PathBuf>,
    /// The bearer token sent with every request.
    pub token: Option<String>,
}

impl Access {
    /// The `Authorization` header value, if a token is set.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// A client with a connection pool, no CA (plain `http://` only) and no token.
    pub fn new() -> Self {
        Self::with(&Access::default()).expect("no files to read")
    }

    /// A client that trusts `access.cacert` for `https://` and sends `access.token`.
    pub fn with(access: &Access) -> anyhow::Result<Self> {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(1)));
        conn.set_nodelay(true);
        conn.enforce_http(false);
        let tls = match &access.cacert {
            Some(ca) => crate::tls::client_config(ca)?,
            // No CA given: `https://` is refused at the handshake (nothing is trusted).
            None => rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(conn);
        Ok(HttpClient {
            inner: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(10)).build(https),
            token: access.token.clone(),
        })
    }

    /// Send one request and read the whole reply, within `timeout`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> anyhow::Result<HttpResponse> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        if let Some(t) = &self.token {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                b = b.header("authorization", format!("Bearer {t}"));
            }
        }
        let req = b.body(Full::new(body.into()))?;
        let fut = async {
            let resp = self.inner.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(HttpResponse { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))?
    }

    /// GET.
    pub async fn get(&self, url: &str) -> anyhow::Result<HttpResponse> {
        self.request(Method::GET, url, &[], Bytes::new(), Duration::from_secs(10)).await
    }
}
