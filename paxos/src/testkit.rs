//! Helpers the handler tests share: replicas of a bootstrap configuration of nodes `1..=n`
//! (incarnation 1), feeding them messages, and reading what they emit.

use crate::action::Action;
use crate::config::Configuration;
use crate::event::Event;
use crate::ids::{Ballot, Incarnation, Member, NodeId, RequestId, Time};
use crate::message::{Command, Envelope, Message};
use crate::options::Options;
use crate::replica::Replica;

/// Node `n` in incarnation 1.
pub(crate) fn m(n: u64) -> Member {
    Member { node: NodeId(n), incarnation: Incarnation(1) }
}

/// The ballot of `round` owned by node `node` (incarnation 1).
pub(crate) fn b(round: u64, node: u64) -> Ballot {
    Ballot::new(round, m(node))
}

/// Replica `me` of a fresh cluster of nodes `1..=nodes`, default options.
pub(crate) fn replica(me: u64, nodes: u64) -> Replica {
    Replica::new(Options::new(m(me), Some(Configuration::bootstrap((1..=nodes).map(m)))), Time(0))
}

/// Everything the replica emitted since the last call, in order.
pub(crate) fn actions(r: &mut Replica) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

/// Deliver `msg` from node `from` (incarnation 1).
pub(crate) fn recv(r: &mut Replica, now: u64, from: u64, msg: Message) {
    recv_from(r, now, m(from), msg);
}

/// Deliver `msg` from a given member (any incarnation).
pub(crate) fn recv_from(r: &mut Replica, now: u64, from: Member, msg: Message) {
    let to = r.me.node;
    r.handle(Time(now), Event::Receive(Envelope { from, to, msg }));
}

/// The action "send `msg` from node `from` to node `to`".
pub(crate) fn send(from: u64, to: u64, msg: Message) -> Action {
    Action::Send(Envelope { from: m(from), to: NodeId(to), msg })
}

/// The messages among `acts`, with their destination.
pub(crate) fn sends(acts: &[Action]) -> Vec<(NodeId, Message)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send(e) => Some((e.to, e.msg.clone())),
            _ => None,
        })
        .collect()
}

/// A client command minted by node `node`.
pub(crate) fn cmd(node: u64, seq: u64) -> Command {
    Command { id: RequestId { node: NodeId(node), seq }, payload: vec![seq as u8] }
}
