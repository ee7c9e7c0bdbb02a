//! Conditional requests (RFC 9110 section 13): `If-Match` and `If-None-Match`.
//!
//! A key's entity tag is its version, as a strong tag: `"42"`. The headers hold `*` or a list of
//! entity tags, strong (`"42"`) or weak (`W/"42"`), and are compared as RFC 9110 13.1 says:
//! `If-Match` uses the *strong* comparison (a weak tag never matches), `If-None-Match` the *weak*
//! one (`W/"42"` matches version 42). A tag whose text is not a version is valid and simply
//! matches nothing.
//!
//! * On `GET`/`HEAD` the precondition is evaluated against the state that was read: a failed
//!   `If-Match` is 412, a matching `If-None-Match` is 304 (RFC 9110 13.2.2 order: `If-Match`
//!   first).
//! * On a write it becomes a [`Guard`] that the state machine checks atomically with the write,
//!   in log order ([`write_guard`]); a failed guard is 412.

use super::problem::Problem;
use hyper::header::{HeaderMap, HeaderValue, IF_MATCH, IF_NONE_MATCH};
use kvstore::Guard;

/// One entity tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/` prefix.
    pub weak: bool,
    /// The text between the quotes.
    pub opaque: String,
}

impl EntityTag {
    /// The version this tag names, if its text is one.
    fn version(&self) -> Option<u64> {
        self.opaque.parse().ok()
    }
}

/// The value of `If-Match` or `If-None-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of entity tags.
    Tags(Vec<EntityTag>),
}

impl Condition {
    /// Strong comparison (If-Match): does `version` (of a present key) match?
    pub fn matches_strong(&self, version: u64) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| !t.weak && t.version() == Some(version)),
        }
    }

    /// Weak comparison (If-None-Match): does `version` (of a present key) match?
    pub fn matches_weak(&self, version: u64) -> bool {
        match self {
            Condition::Any => true,
            Condition::Tags(tags) => tags.iter().any(|t| t.version() == Some(version)),
        }
    }
}

/// The strong entity tag of a version.
pub fn etag(version: u64) -> HeaderValue {
    // Digits between quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a quoted number is a valid header value")
}

/// Parse `*` or `#entity-tag` (comma-separated, RFC 9110 5.6.1 list syntax). Several header
/// lines are one list.
pub fn parse(name: &str, values: &[&HeaderValue]) -> Result<Condition, Problem> {
    let bad = |why: String| Problem::bad_request(format!("{name}: {why}"));
    let mut tags = Vec::new();
    let mut any = false;
    for v in values {
        let v = v.to_str().map_err(|_| bad("not ASCII".to_string()))?;
        let mut rest = v.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('*') {
                any = true;
                rest = r;
            } else {
                let (weak, r) = match rest.strip_prefix("W/") {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                let r = r.strip_prefix('"').ok_or_else(|| bad(format!("{rest:?} is not an entity tag (\"...\" or W/\"...\")")))?;
                let end = r.find('"').ok_or_else(|| bad(format!("unterminated entity tag in {v:?}")))?;
                let opaque = &r[..end];
                // etagc = %x21 / %x23-7E / obs-text: no spaces, no quotes, no controls.
                if opaque.bytes().any(|b| b <= 0x20 || b == 0x7f) {
                    return Err(bad(format!("entity tag {opaque:?} holds a space or control character")));
                }
                tags.push(EntityTag { weak, opaque: opaque.to_string() });
                rest = &r[end + 1..];
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(r) => rest = r.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(bad(format!("expected a comma after an entity tag in {v:?}"))),
            }
        }
    }
    match (any, tags.is_empty()) {
        (true, true) => Ok(Condition::Any),
        (true, false) => Err(bad("\"*\" cannot be combined with entity tags".to_string())),
        (false, true) => Err(bad("empty list".to_string())),
        (false, false) => Ok(Condition::Tags(tags)),
    }
}

/// `If-Match` and `If-None-Match` of a request, each parsed if present.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`.
    pub if_match: Option<Condition>,
    /// `If-None-Match`.
    pub if_none_match: Option<Condition>,
}

/// What a read's preconditions say, given the key's current version (`None`: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVerdict {
    /// Answer normally.
    Proceed,
    /// 412 Precondition Failed.
    Failed,
    /// 304 Not Modified.
    NotModified,
}

impl Preconditions {
    /// Parse both headers.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, Problem> {
        let get = |name| {
            let v: Vec<&HeaderValue> = h.get_all(name).iter().collect();
            (!v.is_empty()).then_some(v)
        };
        Ok(Preconditions {
            if_match: get(IF_MATCH).map(|v| parse("If-Match", &v)).transpose()?,
            if_none_match: get(IF_NONE_MATCH).map(|v| parse("If-None-Match", &v)).transpose()?,
        })
    }

    /// RFC 9110 13.2.2, steps 1 and 3, for a GET or HEAD.
    pub fn evaluate_read(&self, current: Option<u64>) -> ReadVerdict {
        if let Some(c) = &self.if_match {
            if !current.is_some_and(|v| c.matches_strong(v)) {
                return ReadVerdict::Failed;
            }
        }
        if let Some(c) = &self.if_none_match {
            if current.is_some_and(|v| c.matches_weak(v)) {
                return ReadVerdict::NotModified;
            }
        }
        ReadVerdict::Proceed
    }

    /// The guard a write carries so the state machine checks the preconditions atomically.
    /// Both headers at once are refused (400): the state machine takes one guard per key.
    pub fn write_guard(&self) -> Result<Option<Guard>, Problem> {
        let versions = |tags: &[EntityTag], strong_only: bool| -> Vec<u64> {
            let mut v: Vec<u64> = tags.iter().filter(|t| !(strong_only && t.weak)).filter_map(EntityTag::version).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        Ok(match (&self.if_match, &self.if_none_match) {
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request("give If-Match or If-None-Match on a write, not both"));
            }
            (Some(Condition::Any), None) => Some(Guard::Exists),
            (Some(Condition::Tags(t)), None) => Some(match versions(t, true).as_slice() {
                // A version is at least 1, so `Version(v)` cannot mean "absent" here.
                [v] => Guard::Version(*v),
                vs => Guard::VersionIn(vs.to_vec()),
            }),
            (None, Some(Condition::Any)) => Some(Guard::Absent),
            (None, Some(Condition::Tags(t))) => Some(Guard::VersionNotIn(versions(t, false))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(im: Option<&str>, inm: Option<&str>) -> Result<Preconditions, Problem> {
        let mut h = HeaderMap::new();
        if let Some(v) = im {
            h.insert(IF_MATCH, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = inm {
            h.insert(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        Preconditions::from_headers(&h)
    }

    #[test]
    fn lists_and_weak_tags_parse() {
        let c = parse("If-Match", &[&HeaderValue::from_static("\"1\", W/\"2\" ,\"x\"")]).unwrap();
        assert_eq!(
            c,
            Condition::Tags(vec![
                EntityTag { weak: false, opaque: "1".into() },
                EntityTag { weak: true, opaque: "2".into() },
                EntityTag { weak: false, opaque: "x".into() },
            ])
        );
        assert_eq!(parse("If-Match", &[&HeaderValue::from_static("*")]).unwrap(), Condition::Any);
        for bad in ["soon", "\"1\" \"2\"", "\"1", "*, \"1\"", ""] {
            assert!(parse("If-Match", &[&HeaderValue::from_static(bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc9110_comparison_rules() {
        // 13.1.1: If-Match is strong, a weak tag never matches.
        let p = pre(Some("W/\"5\""), None).unwrap();
        assert_eq!(p.evaluate_read(Some(5)), ReadVerdict::Failed);
        assert_eq!(p.write_guard().unwrap(), Some(Guard::VersionIn(vec![])));
        let p = pre(Some("\"1\", \"5\""), None).unwrap();
        assert_eq!(p.evaluate_read(Some(5)), ReadVerdict::Proceed);
        assert_eq!(p.evaluate_read(None), ReadVerdict::Failed);
        assert_eq!(p.write_guard().unwrap(), Some(Guard::VersionIn(vec![1, 5])));
        assert_eq!(pre(Some("\"5\""), None).unwrap().write_guard().unwrap(), Some(Guard::Version(5)));
        // 13.1.2: If-None-Match is weak.
        let p = pre(None, Some("W/\"5\"")).unwrap();
        assert_eq!(p.evaluate_read(Some(5)), ReadVerdict::NotModified);
        assert_eq!(p.evaluate_read(Some(6)), ReadVerdict::Proceed);
        assert_eq!(p.evaluate_read(None), ReadVerdict::Proceed);
        assert_eq!(p.write_guard().unwrap(), Some(Guard::VersionNotIn(vec![5])));
        assert_eq!(pre(None, Some("*")).unwrap().write_guard().unwrap(), Some(Guard::Absent));
        assert_eq!(pre(Some("*"), None).unwrap().write_guard().unwrap(), Some(Guard::Exists));
        assert!(pre(Some("*"), Some("*")).unwrap().write_guard().is_err());
    }
}
