//! gRPC between replicas: the `Peer` service other replicas call, and one outbound stream per peer.
//!
//! **Outbound.** The node loop never waits for a peer. Each peer has a [`PeerSender`]: a bounded
//! queue and a task that keeps one long-lived client-streaming `Stream` call open and feeds the
//! queue into it. When the queue is full the loop drops the message and counts it; when the peer
//! is unreachable the task drops what is queued, backs off, and reconnects. Dropping is safe:
//! the core tolerates loss and resends what matters (phase 1/2 retries, heartbeats, fetches).
//!
//! **Inbound.** [`PeerService`] decodes every envelope of an incoming stream and hands it to the
//! node loop; a message that does not decode is dropped and counted, never a panic. `Forward`
//! runs a relayed client request through the same REST dispatcher a direct request would use, so
//! the answer is byte-for-byte what the leader would have said. `InstallSnapshot` is in
//! [`crate::snapshot`].

use crate::metrics::Metrics;
use crate::node::Input;
use crate::rest::{self, Ctx};
use bytes::Bytes;
use paxos::NodeId;
use proto::pb;
use proto::pb::peer_client::PeerClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

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
    /// Start streaming to `peer` at `addr` (`host:port`).
    pub fn spawn(peer: NodeId, addr: String, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let task = tokio::spawn(run_sender(peer, addr.clone(), rx, metrics));
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

/// A lazily connecting channel to `addr`, for calls other than the message stream.
pub fn channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A peer stream that accepts nothing for this long is treated as broken.
const STALL: Duration = Duration::from_secs(1);

async fn run_sender(peer: NodeId, addr: String, mut rx: mpsc::Receiver<paxos::Envelope>, metrics: Arc<Metrics>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let connected = match Endpoint::from_shared(format!("http://{addr}")) {
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
                debug!(%peer, %addr, error = %e, "peer unreachable");
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

/// The `Peer` gRPC service of one replica.
#[derive(Clone)]
pub struct PeerService {
    me: NodeId,
    inputs: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    rest: Arc<Ctx>,
}

impl PeerService {
    /// A service that feeds `inputs` and serves forwarded requests with `rest`.
    pub fn new(me: NodeId, inputs: mpsc::Sender<Input>, metrics: Arc<Metrics>, rest: Arc<Ctx>) -> Self {
        PeerService { me, inputs, metrics, rest }
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<pb::Envelope>>) -> Result<Response<pb::StreamAck>, Status> {
        let mut stream = request.into_inner();
        let (mut received, mut dropped) = (0u64, 0u64);
        while let Ok(Some(m)) = stream.message().await {
            received += 1;
            match proto::decode_envelope(m) {
                Ok(env) if env.to == self.me => {
                    if self.inputs.send(Input::Peer(env)).await.is_err() {
                        break;
                    }
                }
                Ok(_) | Err(_) => {
                    dropped += 1;
                    self.metrics.peer_decode_errors.inc();
                }
            }
        }
        Ok(Response::new(pb::StreamAck { received, dropped }))
    }

    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::ForwardReply>, Status> {
        let f = request.into_inner();
        let mut builder = hyper::Request::builder().method(f.method.as_str()).uri(f.path_and_query.as_str());
        for h in &f.headers {
            builder = builder.header(h.name.as_str(), h.value.as_slice());
        }
        let req = builder.body(Bytes::from(f.body)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resp = rest::dispatch(self.rest.clone(), req, f.hops).await;
        let (parts, body) = resp.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| pb::Header { name: k.as_str().to_string(), value: v.as_bytes().to_vec() })
            .collect();
        Ok(Response::new(pb::ForwardReply { status: u32::from(parts.status.as_u16()), headers, body: body.to_vec() }))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        let ack = crate::snapshot::receive(request.into_inner(), &self.inputs).await;
        Ok(Response::new(ack))
    }
}
