//! The wire format between Synod replicas: gRPC over tonic, messages in protobuf.
//!
//! The consensus core speaks plain Rust enums (`paxos::Message`); this crate owns the protobuf
//! mirror (`proto/synod.proto`, compiled into [`pb`]) and the conversions. Decoding is total: a
//! message from a peer that lacks a required field or names an unknown variant becomes a
//! [`DecodeError`], which the driver counts and drops. It never panics.

/// Code generated from `proto/synod.proto` by tonic-build.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("synod.v1");
}

mod convert;

pub use convert::{decode_envelope, decode_message, decode_snapshot_meta, encode_envelope, encode_message, encode_snapshot_meta, DecodeError};
