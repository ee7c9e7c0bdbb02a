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
            crate::Tick { leader: NodeId(u64::arbitrary(g)), epoch: u64::arbitrary(g), mono_ms: u64::arbitrary(g) },
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
        Msg(match u8::arbitrary(g) % 14 {
            0 => Message::Prepare { ballot: ballot(g), first_slot: s(g) },
            1 => Message::Promise {
                ballot: ballot(g),
                first_slot: s(g),
                accepted: (0..u8::arbitrary(g) % 4).map(|_| AcceptedEntry { slot: s(g), ballot: ballot(g), value: value(g) }).collect(),
                learned: s(g),
                more: bool::arbitrary(g),
            },
            2 => Message::Accept { ballot: ballot(g), slot: s(g), value: value(g), commit: s(g) },
            3 => Message::Accepted { ballot: ballot(g), slot: s(g), learned: s(g) },
            4 => Message::Nack { promised: ballot(g), refused: bool::arbitrary(g).then(|| ballot(g)) },
            5 => Message::Heartbeat { ballot: ballot(g), commit: s(g), checkpoint: s(g), read_round: u64::arbitrary(g), fence: s(g) },
            6 => Message::HeartbeatAck { ballot: ballot(g), read_round: u64::arbitrary(g), learned: s(g) },
            7 => Message::Fetch { from: s(g), to: s(g) },
            8 => Message::Chosen { entries: (0..u8::arbitrary(g) % 4).map(|_| (s(g), value(g))).collect(), commit: s(g) },
            9 => Message::Compacted { snapshot_slot: s(g) },
            10 => Message::ReadIndex { id: u64::arbitrary(g) },
            11 => Message::ReadIndexReply { id: u64::arbitrary(g), incarnation: Incarnation(1), index: Option::<u64>::arbitrary(g).map(Slot) },
            12 => Message::Forward {
                to: ballot(g),
                cmds: (0..u8::arbitrary(g) % 3)
                    .map(|_| Command { id: RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) }, payload: Vec::arbitrary(g) })
                    .collect(),
            },
            _ => Message::ForwardLost { ids: vec![RequestId { node: NodeId(u64::arbitrary(g)), seq: u64::arbitrary(g) }] },
        })
    }
}

/// A hostile peer: messages from nodes 2 and 3 with small ballots (so that they are taken, not
/// refused) and slots that are mostly near the replica's state but sometimes absurd.
#[derive(Clone, Debug)]
struct Hostile(Vec<(u8, Message)>);

impl Arbitrary for Hostile {
    fn arbitrary(g: &mut Gen) -> Self {
        let slot = |g: &mut Gen| match u8::arbitrary(g) % 8 {
            0 => Slot(u64::MAX),
            1 => Slot(u64::MAX / 2 + u64::from(u8::arbitrary(g))),
            2 => Slot(1_000_000_000_000),
            _ => Slot(u64::from(u8::arbitrary(g) % 40)),
        };
        let bal = |g: &mut Gen| Ballot {
            round: u64::from(u8::arbitrary(g) % 4),
            node: NodeId(1 + u64::from(u8::arbitrary(g) % 3)),
            incarnation: Incarnation(1),
        };
        let n = usize::from(u8::arbitrary(g) % 40);
        Hostile(
            (0..n)
                .map(|_| {
                    let from = 2 + u8::arbitrary(g) % 2;
                    let msg = match u8::arbitrary(g) % 14 {
                        0 => Message::Prepare { ballot: bal(g), first_slot: slot(g) },
                        1 => {
                            let first_slot = slot(g);
                            Message::Promise {
                                ballot: bal(g),
                                first_slot,
                                accepted: (0..u8::arbitrary(g) % 3)
                                    .map(|_| AcceptedEntry { slot: slot(g), ballot: bal(g), value: value(g) })
                                    .collect(),
                                learned: slot(g),
                                more: bool::arbitrary(g),
                            }
                        }
                        2 => Message::Accept { ballot: bal(g), slot: slot(g), value: value(g), commit: slot(g) },
                        3 => Message::Accepted { ballot: bal(g), slot: slot(g), learned: slot(g) },
                        4 => Message::Nack { promised: bal(g), refused: bool::arbitrary(g).then(|| bal(g)) },
                        5 => Message::Heartbeat { ballot: bal(g), commit: slot(g), checkpoint: slot(g), read_round: u64::arbitrary(g), fence: slot(g) },
                        6 => Message::HeartbeatAck { ballot: bal(g), read_round: u64::arbitrary(g), learned: slot(g) },
                        7 => Message::Fetch { from: slot(g), to: slot(g) },
                        8 => Message::Chosen { entries: (0..u8::arbitrary(g) % 3).map(|_| (slot(g), value(g))).collect(), commit: slot(g) },
                        9 => Message::Compacted { snapshot_slot: slot(g) },
                        10 => Message::ReadIndex { id: u64::arbitrary(g) },
                        11 => Message::ReadIndexReply { id: u64::arbitrary(g), incarnation: Incarnation(1), index: Some(slot(g)) },
                        12 => Message::Forward {
                            to: bal(g),
                            cmds: vec![Command { id: RequestId { node: NodeId(u64::from(from)), seq: u64::arbitrary(g) }, payload: vec![1] }],
                        },
                        _ => Message::ForwardLost { ids: vec![RequestId { node: NodeId(1), seq: u64::arbitrary(g) }] },
                    };
                    (from, msg)
                })
                .collect(),
        )
    }
}

/// Peer input never panics the core and never makes it do unbounded work: a replica that is a
/// follower, a candidate, or a leader takes any sequence of hostile messages (absurd slots
/// included), with timers firing in between, and each step emits a bounded number of actions.
#[quickcheck]
fn hostile_peers_never_panic_or_explode_the_core(script: Hostile, role: u8) -> bool {
    use crate::event::Event;
    use crate::ids::{ReadId, Time};
    use crate::message::Envelope;
    use crate::options::Options;
    use crate::replica::Replica;
    let m = |n: u64| Member { node: NodeId(n), incarnation: Incarnation(1) };
    let mut opts = Options::new(m(1), Some(Configuration::bootstrap((1..=3).map(m))));
    opts.max_slot_gap = 1_000;
    let mut r = Replica::new(opts, Time(0));
    if !role.is_multiple_of(3) {
        r.handle(Time(0), Event::LeaderHint { leader: Some(NodeId(1)) });
    }
    if role % 3 == 2 {
        let ballot = Ballot { round: 1, node: NodeId(1), incarnation: Incarnation(1) };
        let env = Envelope { from: m(2), to: NodeId(1), msg: Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false } };
        r.handle(Time(1), Event::Receive(env));
    }
    let mut now = 2;
    for (i, (from, msg)) in script.0.into_iter().enumerate() {
        now += 7;
        r.handle(Time(now), Event::Receive(Envelope { from: m(u64::from(from)), to: NodeId(1), msg }));
        if i % 5 == 0 {
            let _ = r.read(Time(now), ReadId(i as u64));
            r.handle_timeout(Time(now + 300));
        }
        if std::iter::from_fn(|| r.poll_action()).count() > 10_000 {
            return false;
        }
    }
    true
}

#[quickcheck]
fn every_message_survives_postcard(m: Msg) -> bool {
    let bytes = postcard::to_stdvec(&m.0).expect("encodes");
    postcard::from_bytes::<Message>(&bytes).expect("decodes") == m.0
}
