//! `synod certs`: a deployment's certificates, made with rcgen.
//!
//! One CA per cluster (`ca.pem`, `ca-key.pem`; an existing one in the directory is reused, so
//! adding a node later signs its certificate with the same CA), and for each node a certificate
//! that names it for the peer protocol (`node-<id>.synod`, see `crate::tls`) and for clients (its
//! `--host` names, where `{id}` stands for the node id, and `localhost`/`127.0.0.1`), usable on
//! both ports. etcd gets a CA of its own (`etcd-ca.pem`): its server certificate (`etcd.pem`,
//! server use only, naming `etcd` and the `--etcd-host` names) and the replicas' client
//! certificate (`etcd-client.pem`, client use only). So no replica certificate opens etcd, and no
//! etcd certificate opens a replica's gRPC or REST port. Also a token file with one admin token
//! when none exists.

use anyhow::Context as _;
use paxos::NodeId;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// `synod certs` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Where to write the files (created if missing; an existing CA there is reused).
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// The node ids to make certificates for (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub nodes: Vec<u64>,
    /// A host name or IP address clients use for a replica (repeatable): `{id}` stands for the
    /// node id (`--host 'db{id}.example'` gives node 2 `db2.example`); a name without `{id}`
    /// goes into every node's certificate. localhost and 127.0.0.1 are always included.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A host name or IP address replicas use for etcd (repeatable; `etcd`, localhost and
    /// 127.0.0.1 are always included).
    #[arg(long = "etcd-host")]
    pub etcd_hosts: Vec<String>,
    /// Days the leaf certificates are valid (the CA: ten times as long).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}

/// A CA that signs certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new CA valid for `days`.
    pub fn generate(days: i64) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: a certificate of another cluster's CA is then refused as from an
        // unknown issuer (with one shared name it was a bad signature, which says less).
        let mut id = [0u8; 6];
        getrandom(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        p.distinguished_name.push(DnType::CommonName, format!("Synod cluster CA {id}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(days);
        let cert = p.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// The CA of `ca.pem` and `ca-key.pem` in `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Ca> {
        Self::load_named(dir, "ca")
    }

    /// The CA of `<name>.pem` and `<name>-key.pem` in `dir`.
    fn load_named(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let cert_pem = std::fs::read_to_string(dir.join(format!("{name}.pem")))?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(dir.join(format!("{name}-key.pem")))?).with_context(|| format!("{name}-key.pem"))?;
        let cert = CertificateParams::from_ca_cert_pem(&cert_pem).with_context(|| format!("{name}.pem"))?.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// The CA `<name>` in `dir`, made (and written) if it is not there yet.
    fn load_or_make(dir: &Path, name: &str, days: i64) -> anyhow::Result<Ca> {
        if dir.join(format!("{name}.pem")).exists() && dir.join(format!("{name}-key.pem")).exists() {
            return Self::load_named(dir, name).with_context(|| format!("reusing {name}.pem in the output directory"));
        }
        let ca = Ca::generate(days)?;
        write(&dir.join(format!("{name}.pem")), &ca.pem(), false)?;
        write(&dir.join(format!("{name}-key.pem")), &ca.key.serialize_pem(), true)?;
        Ok(ca)
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), for servers and clients,
    /// valid from `from` to `until`: (certificate PEM, key PEM).
    pub fn issue(&self, common_name: &str, names: &[String], from: OffsetDateTime, until: OffsetDateTime) -> anyhow::Result<(String, String)> {
        self.issue_for(common_name, names, from, until, vec![Eku::ServerAuth, Eku::ClientAuth])
    }

    /// [`issue`](Self::issue) for the uses `ekus` only.
    fn issue_for(&self, common_name: &str, names: &[String], from: OffsetDateTime, until: OffsetDateTime, ekus: Vec<Eku>) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.to_vec())?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = ekus;
        p.use_authority_key_identifier_extension = true;
        p.not_before = from;
        p.not_after = until;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A replica's certificate: `node-<id>.synod` plus `hosts`, valid for `days`.
    pub fn issue_node(&self, id: NodeId, hosts: &[String], days: i64) -> anyhow::Result<(String, String)> {
        let mut names = vec![crate::tls::peer_name(id)];
        names.extend(hosts.iter().cloned());
        let now = OffsetDateTime::now_utc();
        self.issue(&crate::tls::peer_name(id), &names, now - Duration::hours(1), now + Duration::days(days))
    }
}

/// The names every certificate made here carries besides its own: `hosts`, localhost and
/// 127.0.0.1, each once.
fn with_local(hosts: &[String]) -> Vec<String> {
    let mut all: Vec<String> = hosts.to_vec();
    for l in ["localhost", "127.0.0.1"] {
        if !all.iter().any(|h| h == l) {
            all.push(l.to_string());
        }
    }
    all
}

/// Write `text` to `path`, readable by the owner only when it is a secret.
fn write(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A random token: 32 bytes from the OS, base64url.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn getrandom(buf: &mut [u8]) {
    // ring's system random source (getrandom(2)).
    crate::tls::provider().secure_random.fill(buf).expect("the OS random source works");
}

/// How a replica reaches an etcd started with the certificates of `dir` (`synod certs`): etcd's
/// own CA (`etcd-ca.pem`) and the client certificate `etcd-client.pem`.
pub fn etcd_security(dir: &Path) -> anyhow::Result<crate::etcd::EtcdSecurity> {
    let read = |n: &str| std::fs::read(dir.join(n)).with_context(|| format!("reading {}", dir.join(n).display()));
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("etcd-ca.pem")?))
        .identity(etcd_client::Identity::from_pem(read("etcd-client.pem")?, read("etcd-client-key.pem")?));
    Ok(crate::etcd::EtcdSecurity { tls: Some(tls), user: None })
}

/// The clear-text token of the admin entry of a token file written by [`run`].
pub fn admin_token(tokens: &Path) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(tokens).with_context(|| format!("reading {}", tokens.display()))?)?;
    v["tokens"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["admin"] == true && t["token"].is_string()))
        .and_then(|t| t["token"].as_str().map(str::to_string))
        .with_context(|| format!("{} has no admin token in the clear", tokens.display()))
}

/// What `synod certs` wrote.
pub struct Written {
    /// The directory.
    pub dir: PathBuf,
    /// The admin token, if a token file was created.
    pub admin_token: Option<String>,
}

/// Make the files of a deployment in `args.out`.
pub fn run(args: &CertsArgs) -> anyhow::Result<Written> {
    let dir = &args.out;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = Ca::load_or_make(dir, "ca", args.days * 10)?;
    for &id in &args.nodes {
        let hosts: Vec<String> = args.hosts.iter().map(|h| h.replace("{id}", &id.to_string())).collect();
        let (cert, key) = ca.issue_node(NodeId(id), &with_local(&hosts), args.days)?;
        write(&dir.join(format!("node-{id}.pem")), &cert, false)?;
        write(&dir.join(format!("node-{id}-key.pem")), &key, true)?;
    }
    let now = OffsetDateTime::now_utc();
    let (from, until) = (now - Duration::hours(1), now + Duration::days(args.days));
    let etcd_ca = Ca::load_or_make(dir, "etcd-ca", args.days * 10)?;
    let mut etcd_names = vec!["etcd".to_string()];
    etcd_names.extend(with_local(&args.etcd_hosts));
    let (cert, key) = etcd_ca.issue_for("etcd", &etcd_names, from, until, vec![Eku::ServerAuth])?;
    write(&dir.join("etcd.pem"), &cert, false)?;
    write(&dir.join("etcd-key.pem"), &key, true)?;
    let (cert, key) = etcd_ca.issue_for("synod", &["synod-client".to_string()], from, until, vec![Eku::ClientAuth])?;
    write(&dir.join("etcd-client.pem"), &cert, false)?;
    write(&dir.join("etcd-client-key.pem"), &key, true)?;
    let tokens = dir.join("tokens.json");
    let admin_token = if tokens.exists() {
        None
    } else {
        let t = random_token();
        let file = serde_json::json!({ "tokens": [ { "name": "admin", "token": t, "admin": true, "read": [""], "write": [""] } ] });
        write(&tokens, &serde_json::to_string_pretty(&file)?, true)?;
        Some(t)
    };
    Ok(Written { dir: dir.clone(), admin_token })
}
