//! Small text codecs the REST layer needs: query strings, percent-decoding, base64 for binary
//! values in JSON, and a stable hash for idempotency keys.
//!
//! They are a few lines each; pulling a crate for each would cost more than it saves.

use std::collections::BTreeMap;

/// Decode `%XX` escapes (and `+` as a space when `plus` is set). `None` if an escape is
/// malformed.
pub fn percent_decode(s: &str, plus: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Encode a path segment or query value (unreserved characters stay as they are).
pub fn percent_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Parse a query string into a map (last value wins). `None` if an escape is malformed.
pub fn parse_query(q: Option<&str>) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = String::from_utf8(percent_decode(k, true)?).ok()?;
        let v = String::from_utf8(percent_decode(v, true)?).ok()?;
        map.insert(k, v);
    }
    Some(map)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn percent_round_trip_and_errors() {
        assert_eq!(percent_decode("a%2Fb+c", true).unwrap(), b"a/b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), b"a+b");
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_encode(b"a b/\xff"), "a%20b/%FF");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn query_parsing_keeps_last_value() {
        let q = parse_query(Some("a=1&b=x%20y&a=2&flag")).unwrap();
        assert_eq!(q["a"], "2");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["flag"], "");
    }
}
