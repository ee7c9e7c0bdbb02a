//! TLS: mutual TLS between replicas (the gRPC port), TLS for clients (the REST port), and the
//! certificate files behind both. `synod certs` (`crate::certs`) makes a deployment's files.
//!
//! **Between replicas** every connection is mutual TLS 1.3 under the cluster's CA (`--tls-ca`,
//! `--tls-cert`, `--tls-key`). A replica's certificate names the node id it speaks for, as the
//! DNS name [`peer_name`] (`node-<id>.synod`), and that name is checked both ways:
//! - dialling peer `n`, a replica asks for `node-<n>.synod`, whatever address etcd gave for it,
//!   so an address that now belongs to another machine (a moved container, a stale record)
//!   cannot answer as `n`;
//! - receiving, a replica drops every message whose `from` is not a node the sender's
//!   certificate names (`synod_peer_identity_mismatches_total`).
//!
//! Why the id and not only "signed by the CA": Paxos counts votes per acceptor. If any holder of
//! a cluster certificate could send messages as any node, one compromised or misconfigured
//! replica could cast promises and accepts for the others and make a minority look like a
//! quorum: safety would rest on every certificate holder, not on a majority of them. With the
//! name checked, a bad certificate holder can only lie as itself, which the protocol (crash
//! faults, one vote per acceptor) does not defend against but does not amplify either.
//! Addresses are not in the name: they change (containers, DHCP), node ids do not.
//!
//! Handshakes are done here, not inside tonic, so each refusal is logged with its reason
//! (unknown CA, expired, no certificate) and counted per port; what passes is handed to the
//! gRPC or HTTP server as an established stream.

use anyhow::{anyhow, Context as _};
use paxos::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::warn;

/// The DNS name a replica's certificate carries for node `id`.
pub fn peer_name(id: NodeId) -> String {
    format!("node-{}.synod", id.0)
}

/// The node a certificate speaks for: its one `node-<id>.synod` DNS name, matched exactly (a
/// wildcard such as `*.synod` names no node). `None` if it names none, or more than one.
pub fn named_node(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids = ee.valid_dns_names().filter_map(|n| n.strip_prefix("node-")?.strip_suffix(".synod")?.parse::<u64>().ok());
    let id = ids.next()?;
    ids.all(|other| other == id).then_some(NodeId(id))
}

/// The crypto provider every TLS configuration here uses (ring, as tonic's TLS does).
#[allow(deprecated)] // ring without post-quantum key exchange: the provider tonic's TLS uses too
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// A private key from a PEM file.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{} is not PEM", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no private key", path.display()))
}

/// A root store holding the CA certificates of `path`.
pub fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).with_context(|| format!("{} is not a usable CA certificate", path.display()))?;
    }
    Ok(roots)
}

/// The three files of a TLS identity under a CA.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate(s) trusted.
    pub ca: PathBuf,
    /// This process's certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Mutual TLS between replicas: what this replica presents and whom it trusts.
#[derive(Clone)]
pub struct PeerTls {
    me: NodeId,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("me", &self.me).finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Load and check the files: this replica's certificate must chain to the CA, be valid now,
    /// and name `me` (else the peers would refuse it; better to say so at start).
    pub fn load(files: &TlsFiles, me: NodeId) -> anyhow::Result<PeerTls> {
        let roots = Arc::new(roots(&files.ca)?);
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build()?;
        let name = ServerName::try_from(peer_name(me))?;
        rustls::client::danger::ServerCertVerifier::verify_server_cert(&*verifier, &certs[0], &certs[1..], &name, &[], UnixTime::now())
            .map_err(|e| anyhow!("{} cannot be this replica's peer certificate ({}): {e}", files.cert.display(), peer_name(me)))?;
        let clients = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(clients)
            .with_single_cert(certs, key)
            .context("the peer certificate and key do not match")?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(PeerTls {
            me,
            ca_pem: read(&files.ca)?,
            cert_pem: read(&files.cert)?,
            key_pem: read(&files.key)?,
            server: Arc::new(server),
        })
    }

    /// The server side of the gRPC port.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The client side towards `peer`: its certificate must name it.
    pub fn client(&self, peer: NodeId) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(peer_name(peer))
    }
}

/// The server side of the REST port: this replica's certificate (no client certificates).
pub fn rest_server(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("the REST certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CAs of `ca` only (the CLI, tests, the load tool).
pub fn client_config(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth())
}

/// A stream a server reads and writes (plain TCP or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections on `listener`, doing each TLS handshake in its own task (a slow or silent
/// client holds up nobody), and hand the established streams on. A refused handshake is logged
/// with its reason and passed to `refused`. The accepting task ends when the receiver is dropped.
pub fn accept_tls<F>(listener: TcpListener, config: Arc<ServerConfig>, port: &'static str, refused: F) -> mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>
where
    F: Fn() + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let refused = Arc::new(refused);
    tokio::spawn(async move {
        loop {
            let (stream, addr) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                () = tx.closed() => return,
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, addr)).await;
                    }
                    Ok(Err(e)) => {
                        refused();
                        warn!(port, peer = %addr, reason = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        refused();
                        warn!(port, peer = %addr, "TLS handshake refused: not finished in {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            });
        }
    });
    rx
}

/// A `host:port` as a URI for tonic: `https://` when `tls`.
pub fn grpc_uri(addr: &str, tls: bool) -> String {
    if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// A tonic endpoint towards peer `peer` at `addr`, over mutual TLS when `tls` is set.
pub fn peer_endpoint(addr: &str, peer: NodeId, tls: Option<&PeerTls>) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let e = tonic::transport::Endpoint::from_shared(grpc_uri(addr, tls.is_some()))?;
    match tls {
        Some(t) => e.tls_config(t.client(peer)),
        None => Ok(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, id: u64) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("node-{id}.pem")), key: dir.join(format!("node-{id}-key.pem")) }
    }

    /// A replica dialling node 2 at an address where node 3 answers (a stale registration, a
    /// moved container) refuses it at the handshake, and the error says why (the dialler logs
    /// it as a TLS refusal); the same address dialled as node 3 passes the handshake.
    #[tokio::test]
    async fn a_peer_whose_certificate_names_another_node_is_refused_when_dialled() {
        let dir = tempfile::tempdir().unwrap();
        let args = crate::certs::CertsArgs { out: dir.path().to_path_buf(), nodes: vec![1, 2, 3], hosts: vec![], etcd_hosts: vec![], days: 1 };
        crate::certs::run(&args).unwrap();
        let me = PeerTls::load(&files(dir.path(), 1), NodeId(1)).unwrap();
        let three = PeerTls::load(&files(dir.path(), 3), NodeId(3)).unwrap();
        assert!(PeerTls::load(&files(dir.path(), 3), NodeId(2)).is_err_and(|e| e.to_string().contains("node-2.synod")), "node 3's certificate is not node 2's");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut accepted = accept_tls(listener, three.server(), "grpc", || {});
        let held = tokio::spawn(async move {
            let mut keep = Vec::new();
            while let Some(s) = accepted.recv().await {
                keep.push(s);
            }
        });
        let wrong = tokio::time::timeout(Duration::from_secs(5), peer_endpoint(&addr, NodeId(2), Some(&me)).unwrap().connect()).await.expect("answered");
        let why = crate::peer::error_chain(&wrong.expect_err("node 3 answering as node 2"));
        assert!(why.contains("NotValidForName") || why.contains("not valid for name"), "{why}");
        assert!(crate::peer::is_tls_refusal(&why), "logged as a TLS refusal: {why}");
        // As node 3 the handshake passes (the connection then waits for HTTP/2, which this bare
        // acceptor never speaks: the attempt is cut short, not refused).
        let right = tokio::time::timeout(Duration::from_millis(1500), peer_endpoint(&addr, NodeId(3), Some(&me)).unwrap().connect()).await;
        if let Ok(Err(e)) = right {
            let why = crate::peer::error_chain(&e);
            assert!(!why.contains("NotValidForName") && !why.contains("certificate"), "node 3 dialled as node 3: {why}");
        }
        held.abort();
    }

    #[test]
    fn a_certificate_names_one_node_exactly() {
        let ca = crate::certs::Ca::generate(1).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = (now - time::Duration::hours(1), now + time::Duration::hours(1));
        let node = |names: &[&str]| {
            let (pem, _) = ca.issue("x", &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), from, until).unwrap();
            let der = rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap();
            named_node(&der)
        };
        assert_eq!(node(&["node-7.synod", "localhost"]), Some(NodeId(7)));
        assert_eq!(node(&["*.synod"]), None, "a wildcard names no node");
        assert_eq!(node(&["node-7.synod", "node-8.synod"]), None, "two nodes: none");
        assert_eq!(node(&["etcd", "localhost"]), None);
        assert_eq!(node(&["node-x.synod", "xnode-7.synod"]), None);
    }
}
