//! JSON shapes shared by requests and replies, and the JSON body extractor.
//!
//! Keys and values are byte strings. In JSON a byte string is a plain string when it is UTF-8,
//! and `{"base64": "..."}` (standard alphabet, padded) otherwise; replies use the string form
//! whenever they can ([`super::problem::bytes_value`]). A request may use either form anywhere a
//! reply does ([`Bin`]), so whatever a client read it can send back unchanged.

use super::problem::Problem;
use axum::extract::{FromRequest, Request};
use base64::Engine as _;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A byte string from JSON: `"text"` or `{"base64": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin(pub Vec<u8>);

impl Bin {
    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct B64 {
            base64: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            B64(B64),
        }
        match Either::deserialize(d).map_err(|_| de::Error::custom("expected a string or {\"base64\": \"...\"}"))? {
            Either::Text(s) => Ok(Bin(s.into_bytes())),
            Either::B64(B64 { base64 }) => base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map(Bin)
                .map_err(|e| de::Error::custom(format!("invalid base64: {e}"))),
        }
    }
}

/// A JSON request body. Refuses a `Content-Type` other than `application/json` (415) and
/// malformed JSON or unknown fields (400), as problem+json.
pub struct Json<T>(pub T);

#[axum::async_trait]
impl<T: for<'de> Deserialize<'de>, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, _: &S) -> Result<Self, Problem> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if mime != "application/json" {
                return Err(Problem::unsupported_media(ct));
            }
        }
        // The body was buffered whole at the edge (it may be relayed), so this cannot fail.
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .map_err(|e| Problem::bad_request(format!("could not read the body: {e}")))?;
        serde_json::from_slice(&body).map(Json).map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The `Content-Type` of JSON replies.
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_string_is_text_or_base64() {
        let b: Bin = serde_json::from_str("\"héllo\"").unwrap();
        assert_eq!(b.0, "héllo".as_bytes());
        let b: Bin = serde_json::from_str("{\"base64\": \"/wA=\"}").unwrap();
        assert_eq!(b.0, vec![0xff, 0]);
        // What a reply sends for binary bytes decodes to the same bytes.
        let v = super::super::problem::bytes_value(&[0xff, 0, 1]);
        assert_eq!(serde_json::from_value::<Bin>(v).unwrap().0, vec![0xff, 0, 1]);
        for bad in ["{\"base64\": \"***\"}", "{\"hex\": \"00\"}", "5", "{\"base64\": \"AA==\", \"x\": 1}"] {
            assert!(serde_json::from_str::<Bin>(bad).is_err(), "{bad}");
        }
    }
}
