//! Small encodings the REST layer and the CLI share: a stable hash for idempotency keys, and
//! percent-encoding of a key into a URL path (through the `percent-encoding` crate).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What a key keeps unescaped in a path: RFC 3986 unreserved characters and `/` (the server
/// takes the whole rest of the path as the key, so `/` needs no escape).
const PATH_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Encode a key (any bytes) for a URL path segment.
pub fn percent_encode(b: &[u8]) -> String {
    percent_encoding::percent_encode(b, PATH_KEEP).to_string()
}

/// What a query value keeps unescaped: RFC 3986 unreserved characters.
const QUERY_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Encode a text query value (everything but unreserved characters is escaped).
pub fn query_encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_KEEP).to_string()
}

/// 64-bit FNV-1a: stable across processes, builds and platforms, which an idempotency key's
/// session id must be (a retry may reach a different replica).
pub fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_encode_for_paths() {
        assert_eq!(percent_encode(b"a b/\xff+"), "a%20b/%FF%2B");
        assert_eq!(query_encode("a b&c"), "a%20b%26c");
    }
}
