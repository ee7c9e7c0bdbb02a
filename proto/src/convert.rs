//! Conversions between `paxos` types and their protobuf mirrors.
//!
//! Encoding cannot fail. Decoding checks that every required sub-message is present and that
//! every `oneof` is set; what is missing is named in the error, so a dropped message can be
//! diagnosed from the log.

use crate::pb;
use paxos::{
    AcceptedEntry, Ballot, Command, ConfigChange, Configuration, Envelope, Incarnation, Member, Message, NodeId,
    RequestId, Slot, SnapshotMeta, Value,
};

/// Why a peer's message could not be turned into a core message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required field was absent.
    #[error("missing field `{0}`")]
    Missing(&'static str),
}

fn need<T>(v: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    v.ok_or(DecodeError::Missing(field))
}

fn member(m: Member) -> pb::Member {
    pb::Member { node: m.node.0, incarnation: m.incarnation.0 }
}
fn from_member(m: pb::Member) -> Member {
    Member { node: NodeId(m.node), incarnation: Incarnation(m.incarnation) }
}
fn ballot(b: Ballot) -> pb::Ballot {
    pb::Ballot { round: b.round, node: b.node.0, incarnation: b.incarnation.0 }
}
fn from_ballot(b: Option<pb::Ballot>, field: &'static str) -> Result<Ballot, DecodeError> {
    let b = need(b, field)?;
    Ok(Ballot { round: b.round, node: NodeId(b.node), incarnation: Incarnation(b.incarnation) })
}
fn request_id(r: RequestId) -> pb::RequestId {
    pb::RequestId { node: r.node.0, seq: r.seq }
}
fn from_request_id(r: Option<pb::RequestId>, field: &'static str) -> Result<RequestId, DecodeError> {
    let r = need(r, field)?;
    Ok(RequestId { node: NodeId(r.node), seq: r.seq })
}

fn change(c: &ConfigChange) -> pb::ConfigChange {
    use pb::config_change::Change;
    let change = match *c {
        ConfigChange::AddLearner(m) => Change::AddLearner(member(m)),
        ConfigChange::Promote(m) => Change::Promote(member(m)),
        ConfigChange::Remove(n) => Change::Remove(n.0),
        ConfigChange::SetVersion(v) => Change::SetVersion(v),
    };
    pb::ConfigChange { change: Some(change) }
}
fn from_change(c: Option<pb::ConfigChange>) -> Result<ConfigChange, DecodeError> {
    use pb::config_change::Change;
    Ok(match need(need(c, "change")?.change, "change.change")? {
        Change::AddLearner(m) => ConfigChange::AddLearner(from_member(m)),
        Change::Promote(m) => ConfigChange::Promote(from_member(m)),
        Change::Remove(n) => ConfigChange::Remove(NodeId(n)),
        Change::SetVersion(v) => ConfigChange::SetVersion(v),
    })
}

fn value(v: &Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match v {
        Value::Noop => Kind::Noop(pb::Noop {}),
        Value::Batch(cmds, tick) => Kind::Batch(pb::Batch {
            commands: cmds
                .iter()
                .map(|c| pb::Command { id: Some(request_id(c.id)), payload: c.payload.clone() })
                .collect(),
            leader: tick.leader.0,
            epoch: tick.epoch,
            mono_ms: tick.mono_ms,
        }),
        Value::Reconfigure { id, change: c } => {
            Kind::Reconfigure(pb::Reconfigure { id: Some(request_id(*id)), change: Some(change(c)) })
        }
    };
    pb::Value { kind: Some(kind) }
}
fn from_value(v: Option<pb::Value>) -> Result<Value, DecodeError> {
    use pb::value::Kind;
    Ok(match need(need(v, "value")?.kind, "value.kind")? {
        Kind::Noop(_) => Value::Noop,
        Kind::Batch(b) => Value::Batch(
            b.commands
                .into_iter()
                .map(|c| Ok(Command { id: from_request_id(c.id, "command.id")?, payload: c.payload }))
                .collect::<Result<_, DecodeError>>()?,
            paxos::Tick { leader: NodeId(b.leader), epoch: b.epoch, mono_ms: b.mono_ms },
        ),
        Kind::Reconfigure(r) => {
            Value::Reconfigure { id: from_request_id(r.id, "reconfigure.id")?, change: from_change(r.change)? }
        }
    })
}

fn configuration(c: &Configuration) -> pb::Configuration {
    pb::Configuration {
        epoch: c.epoch,
        acceptors: c.acceptors.iter().copied().map(member).collect(),
        learners: c.learners.iter().copied().map(member).collect(),
    }
}
fn from_configuration(c: Option<pb::Configuration>) -> Result<Configuration, DecodeError> {
    let c = need(c, "config")?;
    Ok(Configuration {
        epoch: c.epoch,
        acceptors: c.acceptors.into_iter().map(from_member).collect(),
        learners: c.learners.into_iter().map(from_member).collect(),
    })
}

/// Snapshot metadata to protobuf.
pub fn encode_snapshot_meta(m: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta { last_slot: m.last_slot.0, config: Some(configuration(&m.config)) }
}

/// Snapshot metadata from protobuf.
pub fn decode_snapshot_meta(m: pb::SnapshotMeta) -> Result<SnapshotMeta, DecodeError> {
    Ok(SnapshotMeta { last_slot: Slot(m.last_slot), config: from_configuration(m.config)? })
}

/// A core message to protobuf.
pub fn encode_message(m: &Message) -> pb::Message {
    use pb::message::Kind;
    let kind = match m {
        Message::Prepare { ballot: b, first_slot } => {
            Kind::Prepare(pb::Prepare { ballot: Some(ballot(*b)), first_slot: first_slot.0 })
        }
        Message::Promise { ballot: b, first_slot, accepted, learned, more } => Kind::Promise(pb::Promise {
            ballot: Some(ballot(*b)),
            first_slot: first_slot.0,
            accepted: accepted
                .iter()
                .map(|e| pb::AcceptedEntry {
                    slot: e.slot.0,
                    ballot: Some(ballot(e.ballot)),
                    value: Some(value(&e.value)),
                })
                .collect(),
            learned: learned.0,
            more: *more,
        }),
        Message::Accept { ballot: b, slot, value: v, commit } => Kind::Accept(pb::Accept {
            ballot: Some(ballot(*b)),
            slot: slot.0,
            value: Some(value(v)),
            commit: commit.0,
        }),
        Message::Accepted { ballot: b, slot, learned } => {
            Kind::Accepted(pb::Accepted { ballot: Some(ballot(*b)), slot: slot.0, learned: learned.0 })
        }
        Message::Nack { promised, refused } => {
            Kind::Nack(pb::Nack { promised: Some(ballot(*promised)), refused: refused.map(ballot) })
        }
        Message::Heartbeat { ballot: b, commit, checkpoint, read_round, fence } => Kind::Heartbeat(pb::Heartbeat {
            ballot: Some(ballot(*b)),
            commit: commit.0,
            checkpoint: checkpoint.0,
            read_round: *read_round,
            fence: fence.0,
        }),
        Message::HeartbeatAck { ballot: b, read_round, learned } => Kind::HeartbeatAck(pb::HeartbeatAck {
            ballot: Some(ballot(*b)),
            read_round: *read_round,
            learned: learned.0,
        }),
        Message::Fetch { from, to } => Kind::Fetch(pb::Fetch { from: from.0, to: to.0 }),
        Message::Chosen { entries, commit } => Kind::Chosen(pb::Chosen {
            entries: entries.iter().map(|(s, v)| pb::SlotValue { slot: s.0, value: Some(value(v)) }).collect(),
            commit: commit.0,
        }),
        Message::Compacted { snapshot_slot } => Kind::Compacted(pb::Compacted { snapshot_slot: snapshot_slot.0 }),
        Message::ReadIndex { id } => Kind::ReadIndex(pb::ReadIndex { id: *id }),
        Message::Forward { to, cmds } => Kind::Forward(pb::Forward {
            cmds: cmds.iter().map(|c| pb::Command { id: Some(request_id(c.id)), payload: c.payload.clone() }).collect(),
            to: Some(ballot(*to)),
        }),
        Message::ForwardLost { ids } => Kind::ForwardLost(pb::ForwardLost { ids: ids.iter().map(|i| request_id(*i)).collect() }),
        Message::ReadIndexReply { id, incarnation, index } => Kind::ReadIndexReply(pb::ReadIndexReply {
            id: *id,
            ok: index.is_some(),
            index: index.map_or(0, |s| s.0),
            incarnation: incarnation.0,
        }),
    };
    pb::Message { kind: Some(kind) }
}

/// A core message from protobuf.
pub fn decode_message(m: pb::Message) -> Result<Message, DecodeError> {
    use pb::message::Kind;
    Ok(match need(m.kind, "message.kind")? {
        Kind::Prepare(p) => {
            Message::Prepare { ballot: from_ballot(p.ballot, "prepare.ballot")?, first_slot: Slot(p.first_slot) }
        }
        Kind::Promise(p) => Message::Promise {
            ballot: from_ballot(p.ballot, "promise.ballot")?,
            first_slot: Slot(p.first_slot),
            accepted: p
                .accepted
                .into_iter()
                .map(|e| {
                    Ok(AcceptedEntry {
                        slot: Slot(e.slot),
                        ballot: from_ballot(e.ballot, "accepted_entry.ballot")?,
                        value: from_value(e.value)?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
            learned: Slot(p.learned),
            more: p.more,
        },
        Kind::Accept(a) => Message::Accept {
            ballot: from_ballot(a.ballot, "accept.ballot")?,
            slot: Slot(a.slot),
            value: from_value(a.value)?,
            commit: Slot(a.commit),
        },
        Kind::Accepted(a) => Message::Accepted {
            ballot: from_ballot(a.ballot, "accepted.ballot")?,
            slot: Slot(a.slot),
            learned: Slot(a.learned),
        },
        Kind::Nack(n) => Message::Nack {
            promised: from_ballot(n.promised, "nack.promised")?,
            refused: n.refused.map(|b| from_ballot(Some(b), "nack.refused")).transpose()?,
        },
        Kind::Heartbeat(h) => Message::Heartbeat {
            ballot: from_ballot(h.ballot, "heartbeat.ballot")?,
            commit: Slot(h.commit),
            checkpoint: Slot(h.checkpoint),
            read_round: h.read_round,
            fence: Slot(h.fence),
        },
        Kind::HeartbeatAck(h) => Message::HeartbeatAck {
            ballot: from_ballot(h.ballot, "heartbeat_ack.ballot")?,
            read_round: h.read_round,
            learned: Slot(h.learned),
        },
        Kind::Fetch(f) => Message::Fetch { from: Slot(f.from), to: Slot(f.to) },
        Kind::Chosen(c) => Message::Chosen {
            entries: c
                .entries
                .into_iter()
                .map(|e| Ok((Slot(e.slot), from_value(e.value)?)))
                .collect::<Result<_, DecodeError>>()?,
            commit: Slot(c.commit),
        },
        Kind::Compacted(c) => Message::Compacted { snapshot_slot: Slot(c.snapshot_slot) },
        Kind::ReadIndex(r) => Message::ReadIndex { id: r.id },
        Kind::Forward(f) => Message::Forward {
            to: from_ballot(f.to, "forward.to")?,
            cmds: f
                .cmds
                .into_iter()
                .map(|c| Ok(Command { id: from_request_id(c.id, "forward.cmds.id")?, payload: c.payload }))
                .collect::<Result<_, DecodeError>>()?,
        },
        Kind::ForwardLost(f) => Message::ForwardLost {
            ids: f.ids.into_iter().map(|i| Ok(RequestId { node: NodeId(i.node), seq: i.seq })).collect::<Result<_, DecodeError>>()?,
        },
        Kind::ReadIndexReply(r) => {
            Message::ReadIndexReply { id: r.id, incarnation: Incarnation(r.incarnation), index: r.ok.then_some(Slot(r.index)) }
        }
    })
}

/// An envelope to protobuf.
pub fn encode_envelope(e: &Envelope) -> pb::Envelope {
    pb::Envelope { from: Some(member(e.from)), to: e.to.0, msg: Some(encode_message(&e.msg)) }
}

/// An envelope from protobuf.
pub fn decode_envelope(e: pb::Envelope) -> Result<Envelope, DecodeError> {
    Ok(Envelope {
        from: from_member(need(e.from, "envelope.from")?),
        to: NodeId(e.to),
        msg: decode_message(need(e.msg, "envelope.msg")?)?,
    })
}

#[cfg(test)]
#[path = "convert_test.rs"]
mod tests;
