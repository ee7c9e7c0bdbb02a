//! Properties: quorum math against a naive count, and every `Message` surviving its own postcard
//! encoding.

use crate::config::{ConfigChange, Configuration};
use crate::ids::{Ballot, Incarnation, Member, NodeId, RequestId, Slot};
use crate::message::{AcceptedEntry, Command, Message, Value};
use quickcheck::{Arbitrary, Gen};
use quickcheck_macros::quickcheck;

fn member(n: u8) -> Member {
    Member { node: NodeId(u64::from(n % 9)), incarnation: Incarnation(u64::from(n / 9 % 2)) }
}

/// `is_quorum` agrees with "more than half of the acceptors voted", ignoring outsiders and
/// duplicate votes.
#[quickcheck]
fn quorum_matches_naive_majority(acceptors: Vec<u8>, votes: Vec<u8>) -> bool {
    let config = Configuration::bootstrap(acceptors.iter().map(|a| member(*a)));
    let vote_members: Vec<Member> = votes.iter().map(|v| member(*v)).collect();
    let n = config.acceptors.len();
    let mut counted: Vec<Member> = vote_members.iter().filter(|v| config.acceptors.contains(v)).copied().collect();
    counted.sort();
    counted.dedup();
    let naive = n > 0 && 2 * counted.len() > n;
    config.is_quorum(vote_members.iter()) == naive
}

/// Any two quorums of one configuration intersect.
#[quickcheck]
fn quorums_intersect(acceptors: Vec<u8>, a: Vec<u8>, b: Vec<u8>) -> bool {
    let config = Configuration::bootstrap(acceptors.iter().map(|x| member(*x)));
    let qa: Vec<Member> = a.iter().map(|x| member(*x)).collect();
    let qb: Vec<Member> = b.iter().map(|x| member(*x)).collect();
    if !(config.is_quorum(qa.iter()) && config.is_quorum(qb.iter())) {
        return true;
    }
    qa.iter().any(|m| config.is_acceptor(m) && qb.contains(m))
}

#[derive(Clone, Debug)]
struct Msg(Message);

fn ballot(g: &mut Gen) -> Ballot {
    Ballot { round: u64::arbitrary(g), node: NodeId(u64::arbitrary(g)), incarnation: Incarnation(u64::arbitrary(g)) }
}

fn value(g: &mut Gen) -> Value {
    match u8::arbitrary(g) % 3 {
        0 => Value::Noop,
        1 => Value::Batch(
            (0..u8::arbitrary(g) % 4)
                .map(|_| Command { id: RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) }, payload: Vec::arbitrary(g) })
                .collect(),
        ),
        _ => Value::Reconfigure {
            id: RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) },
            change: match u8::arbitrary(g) % 3 {
                0 => ConfigChange::AddLearner(member(u8::arbitrary(g))),
                1 => ConfigChange::Promote(member(u8::arbitrary(g))),
                _ => ConfigChange::Remove(NodeId(u64::arbitrary(g))),
            },
        },
    }
}

impl Arbitrary for Msg {
    fn arbitrary(g: &mut Gen) -> Self {
        let s = |g: &mut Gen| Slot(u64::arbitrary(g));
        Msg(match u8::arbitrary(g) % 10 {
            0 => Message::Prepare { ballot: ballot(g), first_slot: s(g) },
            1 => Message::Promise {
                ballot: ballot(g),
                first_slot: s(g),
                accepted: (0..u8::arbitrary(g) % 4).map(|_| AcceptedEntry { slot: s(g), ballot: ballot(g), value: value(g) }).collect(),
                learned: s(g),
            },
            2 => Message::Accept { ballot: ballot(g), slot: s(g), value: value(g), commit: s(g) },
            3 => Message::Accepted { ballot: ballot(g), slot: s(g), learned: s(g) },
            4 => Message::Nack { promised: ballot(g) },
            5 => Message::Heartbeat { ballot: ballot(g), commit: s(g), checkpoint: s(g), read_round: u64::arbitrary(g) },
            6 => Message::HeartbeatAck { ballot: ballot(g), read_round: u64::arbitrary(g), learned: s(g) },
            7 => Message::Fetch { from: s(g), to: s(g) },
            8 => Message::Chosen { entries: (0..u8::arbitrary(g) % 4).map(|_| (s(g), value(g))).collect(), commit: s(g) },
            _ => Message::Compacted { snapshot_slot: s(g) },
        })
    }
}

#[quickcheck]
fn every_message_survives_postcard(m: Msg) -> bool {
    let bytes = postcard::to_stdvec(&m.0).expect("encodes");
    postcard::from_bytes::<Message>(&bytes).expect("decodes") == m.0
}
