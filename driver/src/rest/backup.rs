//! `GET /v1/snapshot`: a backup of this replica's applied state, as one snapshot file
//! (`durable.rs`: the checksummed file a durable replica keeps in `snap/`, so `synod snapshot
//! inspect` and `synod node --restore` read both).
//!
//! The copy is point-in-time: the node loop clones its store between two inputs (O(1)), and the
//! clone is encoded on a blocking thread, so the loop never waits for it. How fresh it is:
//!
//! * `consistency=sequential` (the default): the state this replica has applied, under the rules
//!   of a sequential read: a replica that is catching up, lagging or removed does not answer from
//!   its own state (the request goes to the leader); `min_index=N` waits until the replica has
//!   applied store index `N`.
//! * `consistency=linearizable`: the leader confirms its leadership with a quorum first (a
//!   follower relays the request to the leader, or answers 307 with `redirect=true`), so the
//!   snapshot holds every write acknowledged before the request arrived.
//!
//! The reply: `application/octet-stream`, `X-Synod-Index` (the store's last applied index, the
//! index the copy reflects), `X-Synod-Snapshot-Slot` (the last applied log slot),
//! `X-Synod-Keys`, and `X-Synod-Checksum: crc32c=<hex>`: CRC32C of the body up to its 4-byte
//! trailer (the value the trailer holds; the file's own decode checks the trailer against the
//! rest, so header and decode together cover every byte).

use super::kv::consistency;
use super::loop_io::{self, ReadAnswer};
use super::problem::Problem;
use super::query::{flag, Q};
use super::{Ctx, Outcome, INDEX_HEADER};
use axum::body::Body;
use axum::response::Response;
use axum::Extension;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde::Deserialize;
use std::sync::Arc;

/// The slot the snapshot's state machine reflects.
pub const SLOT_HEADER: &str = "x-synod-snapshot-slot";
/// `crc32c=<hex>`: the snapshot file's checksum ([`crate::durable::file_checksum`]).
pub const CHECKSUM_HEADER: &str = "x-synod-checksum";
/// How many keys the snapshot holds.
pub const KEYS_HEADER: &str = "x-synod-keys";

/// Query of `GET /v1/snapshot`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// `sequential` (default) or `linearizable`.
    pub consistency: Option<String>,
    /// With `sequential`: the least store index the snapshot must reflect.
    pub min_index: Option<u64>,
    /// Answer 307 to the leader rather than forwarding.
    #[serde(default, deserialize_with = "flag")]
    pub redirect: bool,
}

/// The value of [`CHECKSUM_HEADER`] for `file`.
pub fn checksum_header(file: &[u8]) -> String {
    format!("crc32c={}", crate::durable::file_checksum(file))
}

/// `GET /v1/snapshot`.
pub async fn get(Extension(ctx): Extension<Arc<Ctx>>, Extension(grant): Extension<Arc<super::auth::Grant>>, Q(q): Q<SnapshotParams>) -> Outcome {
    if let Err(p) = grant.check_admin() {
        return p.into();
    }
    let level = q.consistency.as_deref().unwrap_or("sequential");
    let consistency = match consistency(Some(level), q.min_index) {
        Ok(c) => c,
        Err(p) => return p.into(),
    };
    // A read first: it waits for (or refuses, or sends to the leader) exactly what a read at
    // this consistency would; the copy taken after it is at least as new.
    if let Err(o) = loop_io::read(&ctx, consistency, Box::new(|_| ReadAnswer::Get(None))).await {
        return o;
    }
    let Some((meta, store)) = loop_io::backup(&ctx).await else {
        return Problem::unavailable("shutting-down", "the node loop is not answering").into();
    };
    let (index, keys, slot) = (store.last_applied(), store.len(), meta.last_slot.0);
    let encoded = tokio::task::spawn_blocking(move || {
        let bytes: Vec<u8> = store.snapshot(crate::snapshot::CHUNK_BYTES).flatten().collect();
        crate::durable::encode_snapshot(&meta, &bytes)
    })
    .await;
    let file = match encoded {
        Ok(f) => f,
        Err(e) => return Problem::internal(format!("encoding the snapshot failed: {e}")).into(),
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(INDEX_HEADER, HeaderValue::from(index));
    h.insert(SLOT_HEADER, HeaderValue::from(slot));
    h.insert(KEYS_HEADER, HeaderValue::from(keys as u64));
    h.insert(CHECKSUM_HEADER, HeaderValue::from_str(&checksum_header(&file)).expect("ASCII"));
    *r.body_mut() = Body::from(file);
    Outcome::Reply(r)
}
