//! Serde helpers that encode byte strings as *bytes*, not as a sequence of `u8`.
//!
//! postcard writes both forms identically on the wire (a varint length, then the raw bytes), but the
//! sequence form goes through the serializer one element at a time. Keys and values can be a
//! mebibyte, and snapshots are mostly keys and values, so this is the difference between copying a
//! slice and running a million calls. Use with `#[serde(with = "crate::bytes")]`.

use serde::de::{Deserializer, Error, SeqAccess, Visitor};
use serde::Serializer;
use std::fmt;

/// Serialize anything that is a byte slice as serde bytes.
pub fn serialize<S: Serializer, T: AsRef<[u8]> + ?Sized>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v.as_ref())
}

/// Deserialize serde bytes (or, for self-describing formats, a sequence of `u8`) into a `Vec<u8>`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// A borrowed byte string in the compact encoding (for sequences of byte strings).
#[derive(serde::Serialize)]
pub(crate) struct Ref<'a>(#[serde(with = "crate::bytes")] pub(crate) &'a [u8]);

/// An owned byte string in the compact encoding.
#[derive(serde::Deserialize)]
pub(crate) struct Owned(#[serde(with = "crate::bytes")] pub(crate) Vec<u8>);

/// The same for `Option<Vec<u8>>`.
pub mod opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize)]
    struct Ref<'a>(#[serde(with = "crate::bytes")] &'a [u8]);

    #[derive(Deserialize)]
    struct Owned(#[serde(with = "crate::bytes")] Vec<u8>);

    /// Serialize an optional byte string.
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        v.as_deref().map(Ref).serialize(s)
    }

    /// Deserialize an optional byte string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|o| o.0))
    }
}

/// Bytes for a human message: `"text"` (quoted, escaped like a Rust string) when they are
/// UTF-8, else `base64:<standard base64>`. Never a Debug byte array.
pub fn show(b: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("base64:{}", base64::engine::general_purpose::STANDARD.encode(b)),
    }
}
