//! Snapshot round trips and corrupt-input handling.

use kvstore::snapshot::{MAGIC, MAX_FRAME_BYTES, OLDEST_SNAPSHOT_FORMAT};
use kvstore::*;

fn sample_store() -> Store {
    let mut s = Store::default();
    for i in 0..200u64 {
        let op = WriteOp::Put { key: format!("key/{i:04}").into_bytes(), value: vec![i as u8; (i % 50) as usize], guard: None };
        let session = Some(SessionRef { client: ClientId(i % 7), seq: i / 7 + 1 });
        s.apply_request(i + 1, &Request { session, stamp: Stamp::new(0, 0, 1_000 + i), op }).unwrap();
    }
    // A stored error result in the session table, too.
    let op = WriteOp::Incr { key: b"key/0001".to_vec(), delta: 1, initial: 0 };
    let r = Request { session: Some(SessionRef { client: ClientId(99), seq: 1 }), stamp: Stamp::new(0, 0, 2_000), op };
    assert!(s.apply_request(201, &r).is_err());
    s
}

fn encode(s: &Store, chunk: usize) -> Vec<Vec<u8>> {
    s.snapshot(chunk).collect()
}

#[test]
fn round_trip_at_many_chunk_sizes() {
    let s = sample_store();
    let whole: Vec<u8> = encode(&s, usize::MAX).concat();
    for chunk in [1, 7, 64, 4096, 1 << 20] {
        let chunks = encode(&s, chunk);
        assert!(chunks.iter().rev().skip(1).all(|c| c.len() == chunk), "all but the last chunk are full");
        assert_eq!(chunks.concat(), whole, "chunking does not change the bytes");
        let r = Store::restore(StoreConfig::default(), &chunks).unwrap();
        assert_eq!(r, s);
        assert_eq!(r.state_hash(), s.state_hash());
        assert_eq!((r.last_applied(), r.len(), r.sessions().len(), r.data_bytes()), (201, 200, 8, s.data_bytes()));
    }
}

#[test]
fn header_is_readable_early_and_empty_store_round_trips() {
    let s = sample_store();
    let enc = s.snapshot(16);
    let meta = enc.meta();
    let mut d = SnapshotDecoder::new();
    let chunks: Vec<_> = enc.collect();
    d.push(&chunks[0]).unwrap();
    d.push(&chunks[1]).unwrap();
    assert_eq!(d.meta(), Some(meta));
    assert_eq!(meta, SnapshotMeta { format: OLDEST_SNAPSHOT_FORMAT, last_applied: 201, log_clock_ms: 1_000, last_stamp: Some(Stamp::new(0, 0, 2_000)), entries: 200, sessions: 8, cluster_version: 1, leases: 0 });

    let empty = Store::default();
    let r = Store::restore(StoreConfig::default(), encode(&empty, 3)).unwrap();
    assert_eq!(r, empty);
}

#[test]
fn restored_store_keeps_deduplicating() {
    let mut s = sample_store();
    let r = Request { session: Some(SessionRef { client: ClientId(3), seq: 30 }), stamp: Stamp::new(0, 0, 3_000), op: WriteOp::Append { key: b"a".to_vec(), value: b"x".to_vec() } };
    let first = s.apply_request(202, &r);
    let mut restored = Store::restore(StoreConfig::default(), encode(&s, 100)).unwrap();
    assert_eq!(restored.apply_request(203, &r), first);
    assert_eq!(restored.get(b"a").unwrap().value, b"x".to_vec());
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let s = sample_store();
    let good = encode(&s, usize::MAX).concat();
    let restore = |bytes: &[u8]| Store::restore(StoreConfig::default(), [bytes]);

    assert_eq!(restore(b"NOTASNAPSHOT"), Err(SnapshotError::BadMagic));
    assert_eq!(restore(&good[..good.len() - 1]), Err(SnapshotError::Truncated { expecting: "trailer" }));
    assert_eq!(restore(&good[..8]), Err(SnapshotError::Truncated { expecting: "header" }));

    let mut extra = good.clone();
    extra.push(0);
    assert_eq!(restore(&extra), Err(SnapshotError::TrailingData { extra: 1 }));

    // A frame length beyond the maximum is refused before any allocation.
    let mut huge = MAGIC.to_vec();
    huge.extend_from_slice(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes());
    assert_eq!(restore(&huge), Err(SnapshotError::FrameTooLarge { len: MAX_FRAME_BYTES + 1, max: MAX_FRAME_BYTES }));

    // Flip one byte inside the first entry's value: structure stays valid, the hash catches it.
    let needle = b"key/0002";
    let at = good.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len() + 1;
    let mut flipped = good.clone();
    flipped[at] ^= 0x01;
    assert!(matches!(restore(&flipped), Err(SnapshotError::HashMismatch { .. })));

    // Swap the format version in the header.
    let mut v2 = good.clone();
    v2[8 + 5] = 2; // magic, 4-byte length, tag, then the format varint
    assert_eq!(restore(&v2), Err(SnapshotError::UnsupportedFormat { got: 2 }));

    // Every single-byte truncation and every single-byte corruption yields an error (or, for
    // corruption that lands in a length still within bounds, at worst a clean error), never a panic
    // and never a silently different store.
    for cut in 0..good.len().min(2_000) {
        assert!(restore(&good[..cut]).is_err());
    }
    for at in (0..good.len()).step_by(3) {
        let mut bad = good.clone();
        bad[at] = bad[at].wrapping_add(0x41);
        if let Ok(r) = restore(&bad) {
            panic!("corruption at byte {at} accepted: hash {}", r.state_hash());
        }
    }
}

#[test]
fn decoder_stays_failed_after_an_error() {
    let mut d = SnapshotDecoder::new();
    assert_eq!(d.push(b"XXXXXXXX"), Err(SnapshotError::BadMagic));
    assert_eq!(d.push(MAGIC), Err(SnapshotError::BadMagic));
    assert_eq!(d.finish().unwrap_err(), SnapshotError::BadMagic);
}
