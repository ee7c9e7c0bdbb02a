//! Every core message survives the trip through protobuf bytes, and malformed input is an error,
//! never a panic.

use super::*;
use prost::Message as _;
use quickcheck::{Arbitrary, Gen};
use quickcheck_macros::quickcheck;

#[derive(Clone, Debug)]
struct Arb<T>(T);

fn slot(g: &mut Gen) -> Slot {
    Slot(u64::arbitrary(g) % 1_000_000)
}
fn node(g: &mut Gen) -> NodeId {
    NodeId(u64::arbitrary(g) % 16)
}
fn member_(g: &mut Gen) -> Member {
    Member { node: node(g), incarnation: Incarnation(u64::arbitrary(g)) }
}
fn ballot_(g: &mut Gen) -> Ballot {
    Ballot { round: u64::arbitrary(g), node: node(g), incarnation: Incarnation(u64::arbitrary(g)) }
}
fn rid(g: &mut Gen) -> RequestId {
    RequestId { node: node(g), seq: u64::arbitrary(g) }
}
fn value_(g: &mut Gen) -> Value {
    match u8::arbitrary(g) % 3 {
        0 => Value::Noop,
        1 => Value::Batch(
            (0..usize::arbitrary(g) % 4).map(|_| Command { id: rid(g), payload: Vec::<u8>::arbitrary(g) }).collect(),
            paxos::Tick { leader: node(g), epoch: u64::arbitrary(g), mono_ms: u64::arbitrary(g) },
        ),
        _ => Value::Reconfigure {
            id: rid(g),
            change: match u8::arbitrary(g) % 4 {
                0 => ConfigChange::AddLearner(member_(g)),
                1 => ConfigChange::Promote(member_(g)),
                2 => ConfigChange::SetVersion(u32::arbitrary(g)),
                _ => ConfigChange::Remove(node(g)),
            },
        },
    }
}

impl Arbitrary for Arb<Envelope> {
    fn arbitrary(g: &mut Gen) -> Self {
        let msg = match u8::arbitrary(g) % 14 {
            0 => Message::Prepare { ballot: ballot_(g), first_slot: slot(g) },
            1 => Message::Promise {
                ballot: ballot_(g),
                first_slot: slot(g),
                accepted: (0..usize::arbitrary(g) % 4)
                    .map(|_| AcceptedEntry { slot: slot(g), ballot: ballot_(g), value: value_(g) })
                    .collect(),
                learned: slot(g),
                more: bool::arbitrary(g),
            },
            2 => Message::Accept { ballot: ballot_(g), slot: slot(g), value: value_(g), commit: slot(g) },
            3 => Message::Accepted { ballot: ballot_(g), slot: slot(g), learned: slot(g) },
            4 => Message::Nack { promised: ballot_(g), refused: bool::arbitrary(g).then(|| ballot_(g)) },
            5 => Message::Heartbeat {
                ballot: ballot_(g),
                commit: slot(g),
                checkpoint: slot(g),
                read_round: u64::arbitrary(g),
                fence: slot(g),
            },
            6 => Message::HeartbeatAck { ballot: ballot_(g), read_round: u64::arbitrary(g), learned: slot(g) },
            7 => Message::Fetch { from: slot(g), to: slot(g) },
            8 => Message::Chosen {
                entries: (0..usize::arbitrary(g) % 4).map(|_| (slot(g), value_(g))).collect(),
                commit: slot(g),
            },
            9 => Message::Compacted { snapshot_slot: slot(g) },
            10 => Message::ReadIndex { id: u64::arbitrary(g) },
            12 => Message::Forward {
                to: ballot_(g),
                cmds: (0..usize::arbitrary(g) % 3)
                    .map(|_| paxos::Command { id: paxos::RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) }, payload: Vec::arbitrary(g) })
                    .collect(),
            },
            13 => Message::ForwardLost {
                ids: (0..usize::arbitrary(g) % 3).map(|_| paxos::RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) }).collect(),
            },
            _ => Message::ReadIndexReply { id: u64::arbitrary(g), incarnation: Incarnation(1), index: Option::<u64>::arbitrary(g).map(Slot) },
        };
        Arb(Envelope { from: member_(g), to: node(g), msg })
    }
}

impl Arbitrary for Arb<SnapshotMeta> {
    fn arbitrary(g: &mut Gen) -> Self {
        let config = Configuration {
            epoch: u64::arbitrary(g),
            acceptors: (0..usize::arbitrary(g) % 6).map(|_| member_(g)).collect(),
            learners: (0..usize::arbitrary(g) % 3).map(|_| member_(g)).collect(),
        };
        Arb(SnapshotMeta { last_slot: slot(g), config })
    }
}

#[quickcheck]
fn envelope_survives_protobuf_bytes(e: Arb<Envelope>) -> bool {
    let bytes = encode_envelope(&e.0).encode_to_vec();
    let back = pb::Envelope::decode(bytes.as_slice()).expect("we just encoded it");
    decode_envelope(back) == Ok(e.0)
}

#[quickcheck]
fn snapshot_meta_survives_protobuf_bytes(m: Arb<SnapshotMeta>) -> bool {
    let bytes = encode_snapshot_meta(&m.0).encode_to_vec();
    decode_snapshot_meta(pb::SnapshotMeta::decode(bytes.as_slice()).expect("we just encoded it")) == Ok(m.0)
}

/// Arbitrary bytes from a peer either fail protobuf decoding or fail or pass conversion; none
/// of it panics.
#[quickcheck]
fn garbage_never_panics(bytes: Vec<u8>) -> bool {
    if let Ok(env) = pb::Envelope::decode(bytes.as_slice()) {
        let _ = decode_envelope(env);
    }
    true
}

#[test]
fn missing_fields_are_named() {
    let empty = pb::Envelope::default();
    assert_eq!(decode_envelope(empty), Err(DecodeError::Missing("envelope.from")));

    let no_kind = pb::Envelope { from: Some(pb::Member { node: 1, incarnation: 2 }), to: 3, msg: Some(pb::Message { kind: None }) };
    assert_eq!(decode_envelope(no_kind), Err(DecodeError::Missing("message.kind")));

    let accept_without_value = pb::Message {
        kind: Some(pb::message::Kind::Accept(pb::Accept {
            ballot: Some(pb::Ballot { round: 1, node: 1, incarnation: 1 }),
            slot: 4,
            value: None,
            commit: 0,
        })),
    };
    assert_eq!(decode_message(accept_without_value), Err(DecodeError::Missing("value")));

    let nack_without_ballot = pb::Message { kind: Some(pb::message::Kind::Nack(pb::Nack { promised: None, refused: None })) };
    assert_eq!(decode_message(nack_without_ballot), Err(DecodeError::Missing("nack.promised")));
}

/// A `Nack` of the previous release (no `refused` field on the wire) decodes with `refused:
/// None`; one of this release keeps the ballot it refuses.
#[test]
fn a_nack_without_refused_decodes_as_unsaid() {
    let b = pb::Ballot { round: 4, node: 2, incarnation: 1 };
    let old = pb::Message { kind: Some(pb::message::Kind::Nack(pb::Nack { promised: Some(b), refused: None })) };
    let bytes = old.encode_to_vec();
    let back = decode_message(pb::Message::decode(bytes.as_slice()).expect("we just encoded it"));
    let promised = Ballot { round: 4, node: NodeId(2), incarnation: Incarnation(1) };
    assert_eq!(back, Ok(Message::Nack { promised, refused: None }));
    let refused = Ballot { round: 3, node: NodeId(1), incarnation: Incarnation(1) };
    let new = encode_message(&Message::Nack { promised, refused: Some(refused) });
    assert_eq!(decode_message(pb::Message::decode(new.encode_to_vec().as_slice()).unwrap()), Ok(Message::Nack { promised, refused: Some(refused) }));
}
