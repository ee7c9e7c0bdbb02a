//! gRPC between replicas, inbound: the `Peer` service other replicas call.
//!
//! [`PeerService`] decodes every envelope of an incoming stream and hands it to the node loop's
//! peer channel; a message that does not decode is dropped and counted, never a panic. `Forward`
//! runs a relayed client request through the same REST dispatcher a direct request would use, so
//! the answer is byte-for-byte what the leader would have said. `InstallSnapshot` decodes the
//! chunks as they arrive ([`receive`]) and hands a complete, valid store to the node loop.
//!
//! **One inbound snapshot at a time.** Decoding a whole store costs O(store) CPU and memory; a
//! second stream arriving while one is being received (from another member the learner turned
//! to, or a late duplicate) is refused at once, before any chunk is read or decoded: its sender
//! hears `installed: false` with [`BUSY`] and reports the transfer failed to its core.

use crate::metrics::Metrics;
use crate::node::{Input, NodeHandle};
use crate::rest::{self, Ctx};
use bytes::Bytes;
use kvstore::SnapshotDecoder;
use paxos::NodeId;
use proto::pb;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// The error of a snapshot stream refused because another is being received.
pub const BUSY: &str = "busy: another snapshot is being received";

/// Admits one inbound snapshot stream at a time (shared by the clones of a service).
#[derive(Clone, Debug, Default)]
pub struct SnapshotGate(Arc<AtomicBool>);

/// Held while a stream is received; dropping it (also when the handler is cancelled) opens the
/// gate again.
#[derive(Debug)]
pub struct GatePass(Arc<AtomicBool>);

impl SnapshotGate {
    /// Enter, unless a stream is already being received.
    pub fn try_enter(&self) -> Option<GatePass> {
        (!self.0.swap(true, Ordering::AcqRel)).then(|| GatePass(self.0.clone()))
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The `Peer` gRPC service of one replica.
#[derive(Clone)]
pub struct PeerService {
    me: NodeId,
    inputs: NodeHandle,
    metrics: Arc<Metrics>,
    rest: Arc<Ctx>,
    snapshots: SnapshotGate,
}

impl PeerService {
    /// A service that feeds `inputs` and serves forwarded requests with `rest`.
    pub fn new(me: NodeId, inputs: NodeHandle, metrics: Arc<Metrics>, rest: Arc<Ctx>) -> Self {
        PeerService { me, inputs, metrics, rest, snapshots: SnapshotGate::default() }
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<pb::Envelope>>) -> Result<Response<pb::StreamAck>, Status> {
        let mut sender = Sender::of(&request, self.rest.directory.clone(), self.metrics.clone());
        let mut stream = request.into_inner();
        let (mut received, mut dropped) = (0u64, 0u64);
        while let Ok(Some(m)) = stream.message().await {
            received += 1;
            match proto::decode_envelope(m) {
                Ok(env) if !sender.may_speak_for(env.from.node) => dropped += 1,
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
        let mut sender = Sender::of(&request, self.rest.directory.clone(), self.metrics.clone());
        if !sender.registered() {
            return Err(Status::permission_denied("the client certificate names no member or registered replica"));
        }
        let f = request.into_inner();
        let mut builder = hyper::Request::builder().method(f.method.as_str()).uri(f.path_and_query.as_str());
        for h in &f.headers {
            builder = builder.header(h.name.as_str(), h.value.as_slice());
        }
        let req = builder.body(Bytes::from(f.body)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Held to what the replica the client entered allowed (no escalation through a relay).
        let grant = Arc::new(rest::auth::Grant::from_pb(f.grant, self.rest.auth.is_some()));
        let resp = rest::dispatch(self.rest.clone(), req, f.hops, grant).await;
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
        let sender = Sender::of(&request, self.rest.directory.clone(), self.metrics.clone());
        let stream = Checked { inner: request.into_inner(), sender };
        let ack = receive(stream, &self.inputs, &self.snapshots, SNAPSHOT_IDLE).await;
        Ok(Response::new(ack))
    }
}

/// How long a snapshot stream may go without a chunk before the receiver gives up on it. The
/// gRPC connection has no keepalive, so a sender whose host died (or that was cut off without a
/// FIN or RST) would otherwise hold the one-stream gate for ever, and every later transfer, from
/// any member, would be refused busy (found by review). The sender encodes before it connects,
/// so chunks follow each other at network speed; 30 s is far above any pause between them.
pub const SNAPSHOT_IDLE: Duration = Duration::from_secs(30);

/// Receive a snapshot stream, decode it, and hand the store to the node loop; refused at once
/// (nothing read) while `gate` admits another stream; abandoned when no chunk came for `idle`.
pub async fn receive<S>(mut stream: S, inputs: &NodeHandle, gate: &SnapshotGate, idle: Duration) -> pb::SnapshotAck
where
    S: SnapshotStream,
{
    let fail = |error: String| pb::SnapshotAck { installed: false, last_slot: 0, error };
    let Some(_pass) = gate.try_enter() else {
        tracing::info!("a second snapshot stream refused: one is being received");
        return fail(BUSY.into());
    };
    let mut decoder = SnapshotDecoder::new();
    let mut meta = None;
    let mut expect = 0u64;
    let mut done = false;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.message()).await {
            Ok(Ok(Some(c))) => c,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return fail(format!("stream broke: {e}")),
            Err(_) => {
                tracing::warn!(after = ?idle, "a snapshot stream went silent: abandoned");
                return fail(format!("no chunk for {idle:?}"));
            }
        };
        if chunk.offset != expect {
            return fail(format!("expected offset {expect}, got {}", chunk.offset));
        }
        if chunk.offset == 0 {
            match chunk.meta.map(proto::decode_snapshot_meta) {
                Some(Ok(m)) => meta = Some(m),
                Some(Err(e)) => return fail(format!("bad metadata: {e}")),
                None => return fail("first chunk lacks metadata".into()),
            }
        }
        expect += chunk.data.len() as u64;
        if let Err(e) = decoder.push(&chunk.data) {
            return fail(format!("bad snapshot: {e}"));
        }
        if chunk.done {
            done = true;
            break;
        }
    }
    let Some(meta) = meta else { return fail("empty stream".into()) };
    if !done {
        return fail("stream ended before the last chunk".into());
    }
    let store = match decoder.finish() {
        Ok(s) => s,
        Err(e) => return fail(format!("bad snapshot: {e}")),
    };
    let last_slot = meta.last_slot.0;
    if inputs.send(Input::InstallSnapshot { meta, store: Box::new(store) }).await.is_err() {
        return fail("node is shutting down".into());
    }
    pb::SnapshotAck { installed: true, last_slot, error: String::new() }
}

/// Who sent a peer call, as its TLS certificate says (mutual TLS between replicas, `crate::tls`):
/// a call is taken only from a replica registered in etcd (`P/nodes/<id>`, as the directory
/// holds it) whose certificate names exactly that node, and a message only if it claims to come
/// from that node. A certificate of the CA that names no node (etcd's), a node that is not
/// registered (a removed member, an id issued for later), or another node is refused. Without
/// TLS every sender passes.
struct Sender {
    /// Whether the call came over TLS.
    tls: bool,
    /// The node its certificate names.
    node: Option<NodeId>,
    directory: crate::directory::Directory,
    metrics: Arc<Metrics>,
    warned: bool,
}

impl Sender {
    fn of<T>(request: &Request<T>, directory: crate::directory::Directory, metrics: Arc<Metrics>) -> Self {
        let certs = request.peer_certs();
        let node = certs.as_ref().and_then(|c| c.first()).and_then(crate::tls::named_node);
        // Whether TLS is on is the server's setting, not the connection's: a call that arrives
        // without certificates on a TLS server names no node and is refused (fails closed).
        Sender { tls: directory.tls(), node, directory, metrics, warned: false }
    }

    /// The sender is a member of the configuration or a registered replica (always, without
    /// TLS).
    fn registered(&mut self) -> bool {
        if !self.tls {
            return true;
        }
        let ok = self.node.is_some_and(|n| self.directory.knows(n));
        if !ok {
            self.metrics.peer_calls_unknown.inc();
            self.warn(None);
        }
        ok
    }

    /// A message claiming to come from `node` may be taken.
    fn may_speak_for(&mut self, node: NodeId) -> bool {
        if !self.tls {
            return true;
        }
        if self.node != Some(node) {
            self.metrics.peer_identity_mismatches.inc();
            self.warn(Some(node));
            return false;
        }
        self.registered()
    }

    fn warn(&mut self, claimed: Option<NodeId>) {
        if std::mem::replace(&mut self.warned, true) {
            return;
        }
        let names = self.node.map_or_else(|| "no node".to_string(), crate::tls::peer_name);
        match claimed {
            Some(c) => tracing::warn!(
                claimed = %c,
                "a peer message claims a sender its certificate does not name ({}; the certificate names {names}): dropped",
                crate::tls::peer_name(c)
            ),
            None => tracing::warn!("a peer call from a certificate that names {names}, which is neither a member nor a registered replica: refused"),
        }
    }
}

/// A snapshot stream whose chunks must come from a node the sender's certificate names.
struct Checked {
    inner: Streaming<pb::SnapshotChunk>,
    sender: Sender,
}

#[tonic::async_trait]
impl SnapshotStream for Checked {
    async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status> {
        let chunk = self.inner.message().await?;
        if let Some(c) = &chunk {
            let from = NodeId(c.from.as_ref().map_or(0, |m| m.node));
            if !self.sender.may_speak_for(from) {
                return Err(Status::permission_denied(format!("the certificate does not name {}", crate::tls::peer_name(from))));
            }
        }
        Ok(chunk)
    }
}

/// A stream of snapshot chunks: a gRPC request stream, or (in tests) anything else.
#[tonic::async_trait]
pub trait SnapshotStream: Send {
    /// The next chunk, `None` at the end.
    async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status>;
}

#[tonic::async_trait]
impl SnapshotStream for Streaming<pb::SnapshotChunk> {
    async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status> {
        Streaming::message(self).await
    }
}

#[cfg(test)]
mod tests {
    //! One inbound snapshot stream at a time: a second one is refused before anything of it is
    //! read or decoded, and the gate opens again when the first ends.
    use super::*;
    use crate::node::NodeHandle;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    /// A stream whose chunks come from a channel; counts how often it was polled.
    struct Chunks(mpsc::Receiver<pb::SnapshotChunk>, Arc<AtomicUsize>);

    #[tonic::async_trait]
    impl SnapshotStream for Chunks {
        async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(self.0.recv().await)
        }
    }

    fn stream() -> (mpsc::Sender<pb::SnapshotChunk>, Chunks, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel(4);
        let polled = Arc::new(AtomicUsize::new(0));
        (tx, Chunks(rx, polled.clone()), polled)
    }

    #[tokio::test]
    async fn a_second_concurrent_snapshot_stream_is_refused_unread() {
        let (tx, _inbox) = mpsc::channel(16);
        let inputs = NodeHandle::from(tx);
        let gate = SnapshotGate::default();
        // The first stream is being received (its sender has not sent a chunk yet).
        let (first_tx, first, first_polled) = stream();
        let (inputs1, gate1) = (inputs.clone(), gate.clone());
        let first_task = tokio::spawn(async move { receive(first, &inputs1, &gate1, SNAPSHOT_IDLE).await });
        while first_polled.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // A second one, meanwhile: refused at once, never polled.
        let (_second_tx, second, second_polled) = stream();
        let ack = receive(second, &inputs, &gate, SNAPSHOT_IDLE).await;
        assert!(!ack.installed);
        assert_eq!(ack.error, BUSY);
        assert_eq!(second_polled.load(Ordering::SeqCst), 0, "the refused stream was read");
        // The first ends (here: broken off); the gate opens for the next stream.
        drop(first_tx);
        let ack = first_task.await.unwrap();
        assert!(!ack.installed && ack.error != BUSY, "{ack:?}");
        let (third_tx, third, third_polled) = stream();
        drop(third_tx);
        let ack = receive(third, &inputs, &gate, SNAPSHOT_IDLE).await;
        assert_eq!(third_polled.load(Ordering::SeqCst), 1);
        assert_ne!(ack.error, BUSY);
    }
}

#[cfg(test)]
mod review_tests {
    //! Found by the adversarial review of the one-stream gate: the inbound gate and the
    //! send-side end report under a peer that goes silent without closing its connection (host
    //! death, partition, frozen process). Both failed before the idle and stall bounds.
    use super::*;
    use crate::node::{Input, NodeHandle};
    use paxos::{Configuration, Incarnation, Member, SnapshotMeta, Slot};
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// The receiver's idle bound and the sender's stall bound in these tests (the real ones are
    /// `SNAPSHOT_IDLE` and `snapshot::SNAPSHOT_STALL`), and how long the tests wait for them.
    const IDLE: Duration = Duration::from_millis(300);
    const BOUND: Duration = Duration::from_secs(5);

    /// A stream whose sender went silent: no chunk, no error, no end, ever.
    struct Silent;

    #[tonic::async_trait]
    impl SnapshotStream for Silent {
        async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn review_a_silent_inbound_stream_does_not_hold_the_gate_forever() {
        let (tx, _inbox) = mpsc::channel(16);
        let inputs = NodeHandle::from(tx);
        let gate = SnapshotGate::default();
        let (inputs1, gate1) = (inputs.clone(), gate.clone());
        let silent = tokio::spawn(async move { receive(Silent, &inputs1, &gate1, IDLE).await });
        tokio::time::sleep(IDLE * 3).await;
        // Every later sender (another member, the same one after a restart) is refused.
        let (_chunk_tx, chunk_rx) = mpsc::channel::<pb::SnapshotChunk>(1);
        struct Rx(mpsc::Receiver<pb::SnapshotChunk>);
        #[tonic::async_trait]
        impl SnapshotStream for Rx {
            async fn message(&mut self) -> Result<Option<pb::SnapshotChunk>, Status> {
                Ok(self.0.recv().await)
            }
        }
        let next = tokio::time::timeout(Duration::from_millis(100), receive(Rx(chunk_rx), &inputs, &gate, IDLE)).await;
        let finished = silent.is_finished();
        silent.abort();
        assert!(finished, "a stream silent for {:?} is still being received", IDLE * 3);
        assert!(!matches!(next, Ok(ref ack) if ack.error == BUSY), "the next sender is refused BUSY after {:?}", IDLE * 3);
    }

    #[tokio::test]
    async fn review_a_transfer_to_a_silent_peer_is_reported_ended() {
        // The peer's port accepts the TCP connection and then never says a word.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                held.push(sock);
            }
        });
        let (tx, mut inbox) = mpsc::channel(16);
        let node = NodeHandle::from(tx);
        let me = Member { node: NodeId(1), incarnation: Incarnation(1) };
        let config = Configuration::bootstrap([me]);
        let blob = crate::snapshot::SnapshotBlob {
            meta: SnapshotMeta { last_slot: Slot(7), config },
            bytes: vec![0u8; 64],
        };
        let _task = crate::snapshot::spawn_send(
            me,
            NodeId(2),
            (addr, crate::directory::Directory::new()),
            crate::snapshot::Source::Encoded(Arc::new(blob)),
            Arc::new(Metrics::default()),
            Duration::from_secs(1),
            move |delivered| async move {
                let _ = node.send(Input::SnapshotSent { to: NodeId(2), delivered }).await;
            },
        );
        let report = tokio::time::timeout(BOUND, async {
            loop {
                match inbox.recv().await {
                    Some(Input::SnapshotSent { to, delivered }) => return (to, delivered),
                    Some(_) => continue,
                    None => std::future::pending::<()>().await,
                }
            }
        })
        .await;
        holder.abort();
        // Without a report the core waits `snapshot_wait_ms`, then asks again, and the node loop
        // drops every later `SendSnapshot` to this peer (the task is never finished).
        assert_eq!(report.ok(), Some((NodeId(2), false)), "no failed SnapshotSent within {BOUND:?}: the transfer task never ends");
    }
}
