//! Synod's driver: everything that touches the outside world.
//!
//! The consensus core (`paxos`), the state machine (`kvstore`) and the node layer around them
//! (`node`: matching client requests to outcomes, the serving rule, snapshot cadence, suspicion,
//! membership decisions) are pure; this crate runs them. One tokio task, the [`node`] loop, owns
//! the `node::Node` and maps its inputs and outputs. Every other task talks to it over three
//! channels (peer, client, control) through a [`node::NodeHandle`]:
//!
//! * [`peer`]: one outbound stream task per peer behind a bounded queue;
//! * [`inbound`]: the gRPC service other replicas call (one long-lived stream per sender, request
//!   forwarding, snapshot install);
//! * [`rest`]: the hyper HTTP server for clients (`/v1/...`, `/metrics`, `/livez`, `/readyz`);
//! * [`etcd`]: registration under a lease (the failure detector), discovery of peers by watching
//!   the cluster prefix, the election that hints who should lead, and the bootstrap barrier;
//! * [`snapshot`]: taking, streaming and installing state-machine snapshots.
//!
//! The `synod` binary ([`cli`], [`dev`]) wraps all of it: `synod node`, `synod dev` (a whole local
//! cluster with its own etcd), and client commands (`synod kv ...`, `synod status`).

pub mod certs;
pub mod cli;
pub mod client;
pub mod codec;
pub mod dev;
pub mod directory;
pub mod durable;
pub mod etcd;
pub mod inbound;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod rest;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod tls;
pub mod watch_client;

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Wall-clock microseconds since the Unix epoch: a process's incarnation is drawn from it.
pub fn wall_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
