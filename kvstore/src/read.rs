//! Reads on the applied state: point gets, multi-gets, and paged range or prefix scans.
//!
//! Reads never change the store and each answer says which applied index it reflects, so the
//! driver can serve sequential reads (`min_index`) and linearizable reads (after its quorum check)
//! from the same calls. Pages are bounded by [`crate::Limits::max_page_entries`]; the cursor is the
//! first key of the next page, so a page boundary stays correct even if keys change between calls.

use crate::output::Versioned;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// The answer to [`Store::get_many`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMany {
    /// The applied index all values reflect.
    pub index: u64,
    /// One entry per requested key, in request order; `None` for a missing key.
    pub values: Vec<Option<Versioned>>,
}

/// A range or prefix scan. The scanned keys are those in `[start, end)` that also start with
/// `prefix` (if given) and are at or after `cursor` (if given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeQuery {
    /// Inclusive lower bound; empty means from the first key.
    #[serde(with = "crate::bytes")]
    pub start: Vec<u8>,
    /// Exclusive upper bound; `None` means to the last key.
    #[serde(with = "crate::bytes::opt")]
    pub end: Option<Vec<u8>>,
    /// Only keys with this prefix.
    #[serde(with = "crate::bytes::opt")]
    pub prefix: Option<Vec<u8>>,
    /// Maximum entries in the page; 0 or anything above the configured maximum means the maximum.
    pub limit: usize,
    /// `next_cursor` from the previous page.
    #[serde(with = "crate::bytes::opt")]
    pub cursor: Option<Vec<u8>>,
    /// Return keys and versions without values.
    pub keys_only: bool,
}

impl RangeQuery {
    /// The keys it can return: `[lo, hi)` (`hi: None` is unbounded), where `lo` is the largest
    /// of start, prefix and cursor, and `hi` the smaller of end and the prefix's successor.
    /// Authorization checks this range, so a cursor cannot reach outside what was asked.
    pub fn bounds(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut lo: &[u8] = &self.start;
        for b in [self.prefix.as_deref(), self.cursor.as_deref()].into_iter().flatten() {
            if b > lo {
                lo = b;
            }
        }
        let pend = self.prefix.as_deref().and_then(prefix_end);
        let hi = match (self.end.as_deref(), pend.as_deref()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (lo.to_vec(), hi.map(<[u8]>::to_vec))
    }
}

/// One entry of a [`RangePage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeEntry {
    /// The key.
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// The value, or `None` for a keys-only scan.
    #[serde(with = "crate::bytes::opt")]
    pub value: Option<Vec<u8>>,
    /// The key's version.
    pub version: u64,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangePage {
    /// The applied index the page reflects.
    pub index: u64,
    /// Entries in key order.
    pub entries: Vec<RangeEntry>,
    /// Where the next page starts, or `None` if the scan is complete.
    #[serde(with = "crate::bytes::opt")]
    pub next_cursor: Option<Vec<u8>>,
}

/// The smallest key greater than every key with this prefix, or `None` if there is none
/// (the prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Store {
    /// The value and version of `key`, if present.
    pub fn get(&self, key: &[u8]) -> Option<Versioned> {
        self.data.get(key).cloned()
    }

    /// Like [`Store::get`] without copying.
    pub fn get_ref(&self, key: &[u8]) -> Option<&Versioned> {
        self.data.get(key)
    }

    /// Several keys at one applied index.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> GetMany {
        GetMany { index: self.last_applied, values: keys.iter().map(|k| self.get(k.as_ref())).collect() }
    }

    /// Every key in `[start, end)` (`end: None`: no upper bound), in order: the keys a
    /// [`crate::WriteOp::DeleteRange`] with these bounds would delete if applied now. An empty or
    /// inverted range gives none. Not paged: it walks the whole range.
    pub fn keys_in(&self, start: &[u8], end: Option<&[u8]>) -> Vec<Vec<u8>> {
        if end.is_some_and(|e| e <= start) {
            return Vec::new(); // The map's range would panic on start > end.
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.data.range::<_, [u8]>((Bound::Included(start), upper)).map(|(k, _)| k.to_vec()).collect()
    }

    /// One page of a range or prefix scan.
    pub fn range(&self, q: &RangeQuery) -> RangePage {
        let max = self.config.limits.max_page_entries.max(1);
        let limit = if q.limit == 0 { max } else { q.limit.min(max) };

        let (lo, hi) = q.bounds();
        let (lo, hi): (&[u8], Option<&[u8]>) = (&lo, hi.as_deref());
        let mut page = RangePage { index: self.last_applied, entries: Vec::new(), next_cursor: None };
        if hi.is_some_and(|h| h <= lo) {
            return page; // Empty range; the map's range would panic on start > end.
        }
        let upper = hi.map_or(Bound::Unbounded, Bound::Excluded);
        let mut iter = self.data.range::<_, [u8]>((Bound::Included(lo), upper));
        for (k, v) in iter.by_ref().take(limit) {
            page.entries.push(RangeEntry {
                key: k.to_vec(),
                value: if q.keys_only { None } else { Some(v.value.clone()) },
                version: v.version,
            });
        }
        page.next_cursor = iter.next().map(|(k, _)| k.to_vec());
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Request, Stamp, WriteOp};

    fn store_with(keys: &[&str]) -> Store {
        let mut s = Store::default();
        for (i, k) in keys.iter().enumerate() {
            let op = WriteOp::Put { key: k.as_bytes().to_vec(), value: format!("v{i}").into_bytes(), guard: None };
            s.apply_request(i as u64 + 1, &Request { session: None, stamp: Stamp::new(0, 0, 0), op }).unwrap();
        }
        s
    }

    fn keys(p: &RangePage) -> Vec<String> {
        p.entries.iter().map(|e| String::from_utf8(e.key.clone()).unwrap()).collect()
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn prefix_scan_pages_with_cursor() {
        let s = store_with(&["a", "b/1", "b/2", "b/3", "c"]);
        let mut q = RangeQuery { prefix: Some(b"b/".to_vec()), limit: 2, ..Default::default() };
        let p1 = s.range(&q);
        assert_eq!(keys(&p1), vec!["b/1", "b/2"]);
        assert_eq!(p1.next_cursor, Some(b"b/3".to_vec()));
        assert_eq!(p1.index, 5);
        q.cursor = p1.next_cursor;
        let p2 = s.range(&q);
        assert_eq!(keys(&p2), vec!["b/3"]);
        assert_eq!(p2.next_cursor, None);
    }

    #[test]
    fn range_is_half_open_and_keys_only_drops_values() {
        let s = store_with(&["a", "b", "c", "d"]);
        let q = RangeQuery { start: b"b".to_vec(), end: Some(b"d".to_vec()), keys_only: true, ..Default::default() };
        let p = s.range(&q);
        assert_eq!(keys(&p), vec!["b", "c"]);
        assert!(p.entries.iter().all(|e| e.value.is_none()));
        assert_eq!(p.entries[0].version, 2);
        // Inverted or empty ranges are empty, not a panic.
        let q = RangeQuery { start: b"d".to_vec(), end: Some(b"b".to_vec()), ..Default::default() };
        assert_eq!(s.range(&q).entries, vec![]);
        let q = RangeQuery { start: b"b".to_vec(), end: Some(b"b".to_vec()), ..Default::default() };
        assert_eq!(s.range(&q).entries, vec![]);
    }

    #[test]
    fn limit_is_clamped_to_the_page_maximum() {
        let mut s = store_with(&["a", "b", "c"]);
        s.config.limits.max_page_entries = 2;
        let p = s.range(&RangeQuery { limit: 0, ..Default::default() });
        assert_eq!(keys(&p), vec!["a", "b"]);
        assert_eq!(p.next_cursor, Some(b"c".to_vec()));
        let p = s.range(&RangeQuery { limit: 100, ..Default::default() });
        assert_eq!(p.entries.len(), 2);
    }

    #[test]
    fn get_many_reports_one_index() {
        let s = store_with(&["a", "b"]);
        let g = s.get_many(&[b"b".to_vec(), b"zz".to_vec()]);
        assert_eq!(g.index, 2);
        assert_eq!(g.values, vec![Some(Versioned { value: b"v1".to_vec(), version: 2 }), None]);
    }
}
