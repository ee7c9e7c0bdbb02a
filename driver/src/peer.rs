//! gRPC between replicas, outbound: one long-lived stream per peer (the inbound side, the `Peer`
//! service, is in `inbound.rs`).
//!
//! **Outbound.** The node loop never waits for a peer. Each peer has a [`PeerSender`]: a bounded
//! queue and a task that keeps one long-lived client-streaming `Stream` call open and feeds the
//! queue into it. When the queue is full the loop drops the message and counts it; when the peer
//! is unreachable the task drops what is queued, backs off, and reconnects. Dropping is safe:
//! the core tolerates loss and resends what matters (phase 1/2 retries, heartbeats, fetches).


use crate::directory::Directory;
use crate::metrics::Metrics;
use paxos::NodeId;
use proto::pb;
use proto::pb::peer_client::PeerClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

/// Largest gRPC message (forwarded requests and replies, snapshot chunks).
pub const MAX_GRPC_MESSAGE: usize = 64 * 1024 * 1024;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;

/// The outbound half towards one peer: a bounded queue and the task that drains it.
#[derive(Debug)]
pub struct PeerSender {
    addr: String,
    tx: mpsc::Sender<paxos::Envelope>,
    task: JoinHandle<()>,
}

impl Drop for PeerSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerSender {
    /// Start streaming to `peer` at `addr` (`host:port`), reached as `directory` says.
    pub fn spawn(peer: NodeId, addr: String, directory: Directory, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let task = tokio::spawn(run_sender(peer, addr.clone(), directory, rx, metrics));
        PeerSender { addr, tx, task }
    }

    /// The address this sender streams to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Queue a message; false if the queue is full (the message is dropped).
    pub fn try_send(&self, env: paxos::Envelope) -> bool {
        self.tx.try_send(env).is_ok()
    }
}

/// A lazily connecting channel to `peer` at `addr`, for calls other than the message stream.
pub fn channel(directory: &Directory, peer: NodeId, addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(directory
        .endpoint(peer, addr)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A peer stream that accepts nothing for this long is treated as broken.
const STALL: Duration = Duration::from_secs(1);

async fn run_sender(peer: NodeId, addr: String, directory: Directory, mut rx: mpsc::Receiver<paxos::Envelope>, metrics: Arc<Metrics>) {
    let mut backoff = Duration::from_millis(20);
    let mut last_refusal = String::new();
    loop {
        let connected = match directory.endpoint(peer, &addr) {
            Ok(e) => {
                // HTTP/2 keep-alives find a peer that vanished without closing the connection.
                e.connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(1))
                    .keep_alive_timeout(Duration::from_secs(2))
                    .keep_alive_while_idle(true)
                    .connect()
                    .await
            }
            Err(e) => {
                tracing::error!(%peer, %addr, error = %e, "bad peer address");
                return;
            }
        };
        let channel = match connected {
            Ok(c) => c,
            Err(e) => {
                let why = error_chain(&e);
                if directory.tls() && is_tls_refusal(&why) {
                    // A certificate problem does not fix itself: say so (once per reason).
                    if why != last_refusal {
                        warn!(%peer, %addr, error = %why, "peer refused: TLS handshake failed");
                        last_refusal = why;
                    }
                } else {
                    debug!(%peer, %addr, error = %why, "peer unreachable");
                }
                // Whatever waited for this peer is stale by the time it comes back: drop it.
                while rx.try_recv().is_ok() {
                    metrics.peer_send_failures.inc();
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        last_refusal.clear();
        let mut client = PeerClient::new(channel);
        let (stx, srx) = mpsc::channel::<pb::Envelope>(256);
        let call = client.stream(ReceiverStream::new(srx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                res = &mut call => {
                    debug!(%peer, ok = res.is_ok(), "peer stream ended");
                    break;
                }
                env = rx.recv() => match env {
                    None => return,
                    Some(env) => match tokio::time::timeout(STALL, stx.send(proto::encode_envelope(&env))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            metrics.peer_send_failures.inc();
                            break;
                        }
                        Err(_) => {
                            // The peer takes nothing (stopped, or a half-open connection): treat it
                            // as unreachable. What is queued for it is stale by the time it comes
                            // back; the core tolerates the loss, and the peer catches up by fetching
                            // (or from a snapshot if the leader has compacted past it).
                            debug!(%peer, "peer stalled; dropping its queue and reconnecting");
                            metrics.peer_send_failures.inc();
                            while rx.try_recv().is_ok() {
                                metrics.peer_queue_drops.inc();
                            }
                            break;
                        }
                    },
                },
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// An error and its sources, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether a connection error is a TLS refusal (a certificate problem rather than a peer that
/// is down).
pub fn is_tls_refusal(chain: &str) -> bool {
    ["certificate", "Certificate", "tls", "TLS", "handshake", "alert"].iter().any(|w| chain.contains(w))
}
