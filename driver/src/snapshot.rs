//! Snapshots: taken from the store on the core's request, streamed to peers in chunks, installed.
//!
//! The core never sees snapshot bytes, only [`paxos::SnapshotMeta`] (last slot, configuration).
//! On `Action::TakeSnapshot` the node loop clones the store (O(1): the data is a persistent map)
//! and a blocking thread encodes the clone with the kvstore encoder (a self-checking format with a
//! state hash in its trailer); the loop keeps the latest bytes. On `Action::SendSnapshot { to }` a
//! task streams those bytes (or encodes a fresh clone first, off the loop) over `InstallSnapshot`,
//! one chunk at a time; the first chunk carries the metadata. Nothing here costs the node loop
//! more than O(1) per snapshot. The receiver decodes as chunks arrive (the decoder verifies order,
//! counts and the hash; `inbound.rs`), and only a complete, valid stream reaches the node
//! loop, which replaces its store and reports `Event::SnapshotInstalled`.

use crate::metrics::Metrics;
use kvstore::Store;
use paxos::{Member, NodeId};
use proto::pb;
use proto::pb::peer_client::PeerClient;
use std::sync::Arc;
use tracing::{info, warn};

/// Bytes per `SnapshotChunk` on the wire.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A transfer that has not handed the transport a chunk for this long (the peer stopped reading:
/// its host died, or it was cut off without a FIN or RST, and the gRPC connection has no
/// keepalive), or waits this long for the acknowledgement after the last chunk (the receiver
/// decodes and rebuilds the store then), is abandoned and reported failed. Without it the task
/// never ends, the core never hears `SnapshotSent`, and the node loop, which runs one transfer
/// per peer, would drop every later transfer to that peer (found by review).
pub const SNAPSHOT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The latest snapshot: what the core knows of it and the encoded store.
#[derive(Debug)]
pub struct SnapshotBlob {
    /// Last slot and configuration.
    pub meta: paxos::SnapshotMeta,
    /// The encoded store.
    pub bytes: Vec<u8>,
}

impl SnapshotBlob {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether it holds no bytes (never, for a real snapshot).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encode the store. O(store): call it on a blocking thread with a clone of the store.
pub fn encode(store: &Store, meta: paxos::SnapshotMeta, chunk_bytes: usize) -> SnapshotBlob {
    let bytes = store.snapshot(chunk_bytes).flatten().collect();
    SnapshotBlob { meta, bytes }
}

/// What a transfer sends: bytes already encoded, or a clone of the store to encode first.
pub enum Source {
    /// The latest snapshot taken.
    Encoded(Arc<SnapshotBlob>),
    /// A clone of the store (O(1) to take), encoded on a blocking thread before sending.
    Store {
        /// The clone.
        store: Box<Store>,
        /// Its last slot and configuration.
        meta: paxos::SnapshotMeta,
        /// Encoder chunk size.
        chunk_bytes: usize,
    },
}

/// Stream a snapshot to `to` at `addr` in the background, then hand `report` whether it was
/// delivered (the peer acknowledged an installed snapshot); the node loop passes one that sends
/// it `Input::SnapshotSent` (this module does not import the loop: dependencies go one way).
pub fn spawn_send<R, F>(
    me: Member,
    to: NodeId,
    (addr, directory): (String, crate::directory::Directory),
    source: Source,
    metrics: Arc<Metrics>,
    stall: std::time::Duration,
    report: R,
) -> tokio::task::JoinHandle<()>
where
    R: FnOnce(bool) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let delivered = send(me, to, (addr, directory), source, metrics, stall).await;
        report(delivered).await;
    })
}

async fn send(
    me: Member,
    to: NodeId,
    (addr, directory): (String, crate::directory::Directory),
    source: Source,
    metrics: Arc<Metrics>,
    stall: std::time::Duration,
) -> bool {
    let blob = match source {
        Source::Encoded(b) => b,
        Source::Store { store, meta, chunk_bytes } => {
            match tokio::task::spawn_blocking(move || encode(&store, meta, chunk_bytes)).await {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    warn!(peer = %to, error = %e, "snapshot encoding failed");
                    return false;
                }
            }
        }
    };
    let channel = match crate::peer::channel(&directory, to, &addr) {
        Ok(c) => c,
        Err(e) => {
            warn!(peer = %to, error = %e, "bad address for snapshot");
            return false;
        }
    };
    let total = blob.bytes.len() as u64;
    let from = pb::Member { node: me.node.0, incarnation: me.incarnation.0 };
    let meta = proto::encode_snapshot_meta(&blob.meta);
    // Chunks are cut from the shared bytes as the stream is polled, not copied up front.
    let n = blob.bytes.len().div_ceil(CHUNK_BYTES).max(1);
    let bytes = blob.clone();
    // The time the transport last took a chunk (ms since `started`), for the stall watchdog.
    let started = tokio::time::Instant::now();
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pulled = progress.clone();
    let chunks = (0..n).map(move |i| {
        pulled.store(started.elapsed().as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        let lo = (i * CHUNK_BYTES).min(bytes.bytes.len());
        let hi = ((i + 1) * CHUNK_BYTES).min(bytes.bytes.len());
        pb::SnapshotChunk {
            from: Some(from),
            offset: lo as u64,
            data: bytes.bytes[lo..hi].to_vec(),
            done: i + 1 == n,
            meta: (i == 0).then(|| meta.clone()),
            total_bytes: total,
        }
    });
    info!(peer = %to, slot = %blob.meta.last_slot, bytes = total, "snapshot transfer started");
    let mut client = PeerClient::new(channel);
    let call = client.install_snapshot(tokio_stream::iter(chunks));
    tokio::pin!(call);
    let stall_ms = stall.as_millis() as u64;
    let outcome = loop {
        let last = progress.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = started + std::time::Duration::from_millis(last + stall_ms);
        tokio::select! {
            r = &mut call => break Some(r),
            _ = tokio::time::sleep_until(deadline) => {
                if progress.load(std::sync::atomic::Ordering::Relaxed) == last {
                    break None;
                }
            }
        }
    };
    let Some(outcome) = outcome else {
        metrics.peer_send_failures.inc();
        warn!(peer = %to, after = ?stall, "snapshot transfer stalled: abandoned");
        return false;
    };
    match outcome {
        Ok(ack) => {
            let ack = ack.into_inner();
            metrics.snapshots_sent.inc();
            info!(peer = %to, bytes = total, installed = ack.installed, error = %ack.error, "snapshot sent");
            ack.installed
        }
        Err(e) => {
            metrics.peer_send_failures.inc();
            warn!(peer = %to, error = %e, "snapshot send failed");
            false
        }
    }
}
