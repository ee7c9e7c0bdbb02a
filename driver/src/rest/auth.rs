//! Client authentication and permissions: bearer tokens from a file an operator edits.
//!
//! **The file** (`--tokens FILE`, JSON, reloaded on `SIGHUP`):
//!
//! ```json
//! { "tokens": [
//!     { "name": "ops",    "token": "…", "admin": true, "read": [""], "write": [""] },
//!     { "name": "app",    "token_blake3": "<hex of blake3(token)>", "read": ["app/"], "write": ["app/"] },
//!     { "name": "viewer", "token": "…", "read": ["app/public/"] }
//! ] }
//! ```
//!
//! `read` and `write` list key prefixes (`""` is every key); `admin` allows membership changes,
//! backups, `/v1/status` and `/metrics`. A token is given in the clear (`token`) or as the hex of
//! its BLAKE3 hash (`token_blake3`), so the file need not hold secrets. Tokens are looked up by
//! their hash: a guess's timing reveals nothing about a real token.
//!
//! **Where it is checked.** The replica a request enters authenticates it (401 without a valid
//! token) and turns the token into a [`Grant`]; every handler checks the keys it touches against
//! the grant (403). A request relayed to the leader carries the grant (`ForwardRequest.grant`)
//! and the leader holds it to exactly that, so a follower cannot be used to escalate, and a
//! leader with a different token file does not matter. A change stream re-reads the token on
//! every event: a token removed or narrowed by a reload ends the streams it opened.

use super::problem::Problem;
use proto::pb;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What one client may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (for logs and problem bodies).
    pub name: String,
    /// Membership changes, backups, status details, metrics.
    pub admin: bool,
    /// Key prefixes it may read.
    pub read: Vec<Vec<u8>>,
    /// Key prefixes it may write.
    pub write: Vec<Vec<u8>>,
    /// The hash of the token it came from (`None`: not from a token, i.e. no authentication).
    pub token: Option<[u8; 32]>,
}

/// Where a request is allowed: one key, or a range `[start, end)` (`end: None` is unbounded).
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    /// One key.
    One(&'a [u8]),
    /// Every key in `[start, end)`.
    Range(&'a [u8], Option<&'a [u8]>),
}

impl Grant {
    /// Everything (no authentication configured, or a relayed request from a build without it).
    pub fn all() -> Self {
        Grant { name: String::new(), admin: true, read: vec![Vec::new()], write: vec![Vec::new()], token: None }
    }

    /// From a relayed request. Absent means the entry replica authenticates nobody: unrestricted
    /// if this replica does not either (`auth_here` false), else nothing at all (a replica with
    /// tokens never takes a relayed request that names no grant).
    pub fn from_pb(g: Option<pb::Grant>, auth_here: bool) -> Self {
        match g {
            None if auth_here => Grant { name: "(relayed without a grant)".into(), ..Grant::default() },
            None => Grant::all(),
            Some(g) => Grant { name: g.name, admin: g.admin, read: g.read, write: g.write, token: None },
        }
    }

    /// For a relayed request: `None` only for the grant of a replica without authentication
    /// (a token's grant, even an all-powerful one, always travels, named).
    pub fn to_pb(&self) -> Option<pb::Grant> {
        (*self != Grant::all()).then(|| pb::Grant {
            admin: self.admin,
            read: self.read.clone(),
            write: self.write.clone(),
            name: self.name.clone(),
        })
    }

    /// May it read `keys`?
    pub fn may_read(&self, keys: Keys<'_>) -> bool {
        covered(&self.read, keys)
    }

    /// May it write `keys`?
    pub fn may_write(&self, keys: Keys<'_>) -> bool {
        covered(&self.write, keys)
    }

    /// 403 unless it may read `keys`.
    pub fn check_read(&self, keys: Keys<'_>) -> Result<(), Problem> {
        if self.may_read(keys) {
            Ok(())
        } else {
            Err(self.forbidden("read", keys))
        }
    }

    /// 403 unless it may write `keys`.
    pub fn check_write(&self, keys: Keys<'_>) -> Result<(), Problem> {
        if self.may_write(keys) {
            Ok(())
        } else {
            Err(self.forbidden("write", keys))
        }
    }

    /// 403 unless it is an admin.
    pub fn check_admin(&self) -> Result<(), Problem> {
        if self.admin {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("token {:?} is not an admin token (membership, backups, status and metrics need one)", self.name))
                .with("token", serde_json::json!(self.name)))
        }
    }

    /// 403 unless it may do `op`: write every key it writes, and also read every key whose
    /// current state the answer can reveal (a guarded write's failure shows the current value,
    /// a compare-and-set or increment answers with it).
    pub fn check_op(&self, op: &kvstore::WriteOp) -> Result<(), Problem> {
        use kvstore::WriteOp as W;
        match op {
            W::Put { key, guard, .. } | W::Delete { key, guard } => {
                self.check_write(Keys::One(key))?;
                if guard.is_some() {
                    self.check_read(Keys::One(key))?;
                }
            }
            W::PutMany { ops } => {
                for o in ops {
                    self.check_write(Keys::One(o.key()))?;
                    if o.guard().is_some() {
                        self.check_read(Keys::One(o.key()))?;
                    }
                }
            }
            W::Cas { key, .. } | W::Incr { key, .. } | W::Append { key, .. } => {
                self.check_write(Keys::One(key))?;
                self.check_read(Keys::One(key))?;
            }
            W::DeleteRange { start, end } => self.check_write(Keys::Range(start, end.as_deref()))?,
            W::Leased { ops, .. } => {
                for o in ops {
                    self.check_write(Keys::One(o.key()))?;
                    if o.guard().is_some() {
                        self.check_read(Keys::One(o.key()))?;
                    }
                }
            }
            // A lease names no key: any token that may write somewhere may hold leases. Keeping
            // one alive or revoking it (which deletes its keys) also needs write permission on
            // every key attached to it, which only the store knows: the lease routes check that
            // (`leases::check_lease_keys`), so a lease id is not a capability.
            W::LeaseGrant { .. } | W::LeaseKeepAlive { .. } | W::LeaseRevoke { .. } => {
                if self.write.is_empty() {
                    return Err(Problem::forbidden(format!("token {:?} may write no key, so it may not hold leases", self.name))
                        .with("token", serde_json::json!(self.name)));
                }
            }
            // Only the leader proposes sweeps; no client route sends one.
            W::LeaseSweep => self.check_admin()?,
        }
        Ok(())
    }

    fn forbidden(&self, what: &str, keys: Keys<'_>) -> Problem {
        let (on, prefixes) = (describe(keys), if what == "read" { &self.read } else { &self.write });
        let allowed: Vec<String> = prefixes.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        Problem::forbidden(format!("token {:?} may not {what} {on}", self.name))
            .with("token", serde_json::json!(self.name))
            .with(if what == "read" { "read_prefixes" } else { "write_prefixes" }, serde_json::json!(allowed))
    }
}

fn describe(keys: Keys<'_>) -> String {
    match keys {
        Keys::One(k) => format!("key {:?}", String::from_utf8_lossy(k)),
        Keys::Range(b"", None) => "every key".to_string(),
        Keys::Range(s, None) => format!("the keys from {:?} on", String::from_utf8_lossy(s)),
        Keys::Range(s, Some(e)) => format!("the keys in [{:?}, {:?})", String::from_utf8_lossy(s), String::from_utf8_lossy(e)),
    }
}

/// Is every key of `keys` under one of `prefixes`? A range is covered when it lies inside one
/// prefix's range `[p, prefix_end(p))` (a range that straddles two granted prefixes is refused:
/// conservative, and what etcd does).
fn covered(prefixes: &[Vec<u8>], keys: Keys<'_>) -> bool {
    prefixes.iter().any(|p| match keys {
        Keys::One(k) => k.starts_with(p),
        Keys::Range(start, end) => {
            let from_inside = start >= p.as_slice();
            match (kvstore::read::prefix_end(p), end) {
                (None, _) => from_inside,
                (Some(_), None) => false,
                (Some(pe), Some(e)) => from_inside && e <= pe.as_slice(),
            }
        }
    })
}

/// One entry of the token file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_blake3: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// The tokens of one reading of the file.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Grant>>,
}

/// The hash a token is looked up by.
pub fn token_hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

impl Tokens {
    /// Parse a token file's text.
    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let file: TokenFile = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("the token file is not valid: {e}"))?;
        let mut by_hash = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, e) in file.tokens.into_iter().enumerate() {
            let hash = match (&e.token, &e.token_blake3) {
                (Some(t), None) if t.len() >= 16 => token_hash(t),
                (Some(_), None) => anyhow::bail!("token {:?} (entry {i}) is shorter than 16 characters", e.name),
                (None, Some(h)) => {
                    let h = blake3::Hash::from_hex(h.trim())
                        .map_err(|err| anyhow::anyhow!("token_blake3 of {:?} (entry {i}) is not 64 hex digits: {err}", e.name))?;
                    *h.as_bytes()
                }
                _ => anyhow::bail!("entry {i} ({:?}) needs exactly one of token and token_blake3", e.name),
            };
            let grant = Grant {
                name: e.name.clone(),
                admin: e.admin,
                read: e.read.into_iter().map(String::into_bytes).collect(),
                write: e.write.into_iter().map(String::into_bytes).collect(),
                token: Some(hash),
            };
            if !names.insert(e.name.clone()) {
                anyhow::bail!("entry {i} repeats the name {:?}: names must be unique (they scope exactly-once sessions)", e.name);
            }
            if e.name.is_empty() {
                anyhow::bail!("entry {i} has an empty name");
            }
            if by_hash.insert(hash, Arc::new(grant)).is_some() {
                anyhow::bail!("entry {i} ({:?}) repeats a token of an earlier entry", e.name);
            }
        }
        Ok(Tokens { by_hash })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The token file and its current contents.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    tokens: RwLock<Arc<Tokens>>,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A header that is not `Bearer <token>`.
    Malformed,
    /// A token the file does not hold.
    Unknown,
}

impl Auth {
    /// Read the token file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Auth> {
        let tokens = Self::read(path)?;
        Ok(Auth { path: path.to_path_buf(), tokens: RwLock::new(Arc::new(tokens)) })
    }

    fn read(path: &Path) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading the token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Read the file again (on `SIGHUP`); a file that does not parse leaves the tokens as they
    /// were. Returns how many tokens are loaded now.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let tokens = Self::read(&self.path)?;
        let n = tokens.len();
        *self.tokens.write().expect("never poisoned: no panics while held") = Arc::new(tokens);
        Ok(n)
    }

    /// How many tokens are loaded.
    pub fn count(&self) -> usize {
        self.tokens.read().expect("never poisoned").len()
    }

    /// The grant of a token hash, as the file reads now.
    pub fn lookup(&self, hash: &[u8; 32]) -> Option<Arc<Grant>> {
        self.tokens.read().expect("never poisoned").by_hash.get(hash).cloned()
    }

    /// The grant of a request's `Authorization` header.
    pub fn authenticate(&self, header: Option<&hyper::header::HeaderValue>) -> Result<Arc<Grant>, Unauthenticated> {
        let Some(v) = header else { return Err(Unauthenticated::Missing) };
        let v = v.to_str().map_err(|_| Unauthenticated::Malformed)?;
        let (scheme, token) = v.split_once(' ').ok_or(Unauthenticated::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Unauthenticated::Malformed);
        }
        self.lookup(&token_hash(token.trim())).ok_or(Unauthenticated::Unknown)
    }
}

/// The 401 for `why`, with `WWW-Authenticate` (RFC 6750 3).
pub fn unauthorized(why: Unauthenticated) -> axum::response::Response {
    let (detail, challenge) = match why {
        Unauthenticated::Missing => ("this replica requires a bearer token: send Authorization: Bearer <token>", r#"Bearer realm="synod""#),
        Unauthenticated::Malformed => (
            "the Authorization header must be Bearer <token>",
            r#"Bearer realm="synod", error="invalid_request", error_description="expected Bearer <token>""#,
        ),
        Unauthenticated::Unknown => ("the bearer token is not known to this replica", r#"Bearer realm="synod", error="invalid_token""#),
    };
    let mut r = Problem::unauthorized(detail).into_response();
    r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static(challenge));
    r
}

/// The routes any caller may use without a token: liveness and readiness (load balancers,
/// orchestrators), problem pages and the API description.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/v1/openapi.json") || path.starts_with("/problems/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(read: &[&str]) -> Grant {
        Grant { read: read.iter().map(|s| s.as_bytes().to_vec()).collect(), ..Grant::default() }
    }

    #[test]
    fn ranges_are_covered_only_inside_one_prefix() {
        let app = g(&["app/"]);
        assert!(app.may_read(Keys::One(b"app/x")));
        assert!(!app.may_read(Keys::One(b"apq")));
        assert!(!app.may_read(Keys::One(b"app")));
        assert!(app.may_read(Keys::Range(b"app/", Some(b"app0"))));
        assert!(app.may_read(Keys::Range(b"app/a", Some(b"app/b"))));
        assert!(!app.may_read(Keys::Range(b"app/", Some(b"app1"))), "past the prefix's end");
        assert!(!app.may_read(Keys::Range(b"app/", None)), "unbounded");
        assert!(!app.may_read(Keys::Range(b"ap", Some(b"app/z"))), "starts before the prefix");
        assert!(!app.may_read(Keys::Range(b"", None)));
        let all = g(&[""]);
        assert!(all.may_read(Keys::Range(b"", None)));
        assert!(all.may_read(Keys::One(b"")));
        let ff = Grant { read: vec![vec![0xff]], ..Grant::default() };
        assert!(ff.may_read(Keys::Range(&[0xff, 1], None)), "a prefix of 0xff bytes has no end");
        assert!(!ff.may_read(Keys::Range(&[0xfe], None)));
        assert!(!g(&[]).may_read(Keys::One(b"x")));
    }

    #[test]
    fn the_file_is_checked() {
        let t = Tokens::parse(r#"{"tokens":[{"name":"a","token":"0123456789abcdef","read":["x/"]}]}"#).unwrap();
        assert_eq!(t.len(), 1);
        let h = blake3::hash(b"0123456789abcdefXYZ").to_hex().to_string();
        let t = Tokens::parse(&format!(r#"{{"tokens":[{{"name":"b","token_blake3":"{h}","admin":true}}]}}"#)).unwrap();
        assert!(t.by_hash[&token_hash("0123456789abcdefXYZ")].admin);
        for bad in [
            r#"{"tokens":[{"name":"a","token":"short"}]}"#,
            r#"{"tokens":[{"name":"a"}]}"#,
            r#"{"tokens":[{"name":"a","token":"0123456789abcdef","reed":["x"]}]}"#,
            r#"{"tokens":[{"name":"a","token":"0123456789abcdef"},{"name":"b","token":"0123456789abcdef"}]}"#,
            r#"{"tokens":[{"name":"a","token_blake3":"zz"}]}"#,
            r#"{"tokens":[{"name":"a","token":"0123456789abcdef"},{"name":"a","token":"0123456789abcdeX"}]}"#,
            r#"{"tokens":[{"name":"","token":"0123456789abcdef"}]}"#,
            "not json",
        ] {
            assert!(Tokens::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn grants_travel_with_relayed_requests() {
        assert_eq!(Grant::all().to_pb(), None);
        assert_eq!(Grant::from_pb(None, false), Grant::all());
        let none = Grant::from_pb(None, true);
        assert!(!none.admin && !none.may_read(Keys::One(b"x")) && !none.may_write(Keys::One(b"x")), "no grant, with tokens here: nothing");
        let root = Grant { name: "root".into(), token: Some([2; 32]), ..Grant::all() };
        assert!(root.to_pb().is_some(), "a token's grant travels even when it may do everything");
        let app = Grant { name: "app".into(), write: vec![b"app/".to_vec()], token: Some([1; 32]), ..Grant::default() };
        let back = Grant::from_pb(app.to_pb(), true);
        assert_eq!(back, Grant { token: None, ..app });
        assert!(!back.may_write(Keys::One(b"other")));
    }
}
