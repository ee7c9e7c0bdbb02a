//! Query strings: one `Deserialize` struct per endpoint, with unknown parameters refused.
//!
//! [`Q`] parses the query with `serde_urlencoded` into a struct that names every parameter the
//! endpoint takes (`deny_unknown_fields`), so a misspelt or unsupported parameter is a 400, not
//! silently ignored, and a parameter given twice is a 400 too. Values are text: a value that does
//! not percent-decode to UTF-8 is refused with a pointer to the base64 form (range bounds take
//! `encoding=base64`). The structs double as the parameter list of each route.

use super::problem::Problem;
use axum::extract::FromRequestParts;
use hyper::http::request::Parts;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A parsed query string.
pub struct Q<T>(pub T);

#[axum::async_trait]
impl<T: for<'de> Deserialize<'de>, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parse(parts.uri.query().unwrap_or("")).map(Q)
    }
}

/// Parse `query` into `T`.
pub fn parse<T: for<'de> Deserialize<'de>>(query: &str) -> Result<T, Problem> {
    for pair in query.split('&') {
        let plus_as_space = pair.replace('+', " ");
        if percent_encoding::percent_decode_str(&plus_as_space).decode_utf8().is_err() {
            return Err(Problem::bad_request(format!(
                "query parameter {pair:?} does not decode to UTF-8 text; send binary range bounds in base64 with encoding=base64"
            )));
        }
    }
    serde_urlencoded::from_str(query).map_err(|e| Problem::bad_request(format!("query: {e}")))
}

/// One path parameter (`:id`, `:type`) as text. axum's own `Path` answers a segment that does
/// not percent-decode to UTF-8 with a plain-text 400; this answers it as problem+json like every
/// other malformed request.
pub struct Segment(pub String);

#[axum::async_trait]
impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(s)) => Ok(Segment(s)),
            Err(e) => Err(Problem::bad_request(format!("path: {}", e.body_text()))),
        }
    }
}

/// A boolean parameter: `true`/`false`, `1`/`0`, or present without a value (`?keys_only`).
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(de::Error::custom(format!("{other:?} is not a boolean (true or false)"))),
    }
}

/// Parameters every endpoint takes: `redirect=true` answers 307 with the leader's URL instead
/// of forwarding (read by the dispatcher, declared here so it is not an unknown parameter).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct NoParams {
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// Whether the query asks for a redirect (`redirect=true`), whatever else it holds.
pub fn wants_redirect(query: Option<&str>) -> bool {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default, deserialize_with = "flag")]
        redirect: bool,
    }
    query.and_then(|q| serde_urlencoded::from_str::<Only>(q).ok()).is_some_and(|o| o.redirect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default, deserialize_with = "flag")]
        redirect: bool,
        limit: Option<usize>,
    }

    #[test]
    fn unknown_repeated_and_non_utf8_parameters_are_400() {
        let p: P = parse("limit=5&redirect").unwrap();
        assert_eq!((p.limit, p.redirect), (Some(5), true));
        for bad in ["limt=5", "limit=5&limit=6", "limit=x", "redirect=maybe", "limit=%FF"] {
            assert!(parse::<P>(bad).is_err(), "{bad}");
        }
        assert!(wants_redirect(Some("a=1&redirect=true")));
        assert!(!wants_redirect(Some("redirect=false")));
    }
}
