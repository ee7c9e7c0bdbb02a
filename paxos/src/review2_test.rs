//! Schedules from the second adversarial review (read index, forwarding): each asserts the
//! correct behaviour and failed on the code as reviewed. (Finding 1, a duplicate `Forward`
//! delivered more than 10 s after the first copy, is a documented limit: docs/REPORT.md.)

use crate::event::Event;
use crate::ids::{Ballot, NodeId, RequestId, Slot, Time};
use crate::message::{Command, Message};
use crate::replica::Replica;
use crate::testkit::*;

fn elect(r: &mut Replica, now: u64) {
    r.handle(Time(now), Event::LeaderHint { leader: Some(r.me.node) });
    let ballot = Ballot::new(r.max_seen.round.max(1), r.me);
    recv_from(r, now + 1, m(2), Message::Promise { ballot, first_slot: Slot(1), accepted: vec![], learned: Slot(0), more: false });
    assert!(r.is_leader());
}

#[test]
fn refused_forwards_do_not_grow_the_duplicate_filter_without_bound() {
    // A `Forward` carrying more than `batch_max_commands` commands is dropped whole; the filter's
    // total is capped at `MAX_FORWARDS_SEEN` (about 10 s of 100 k forwarded writes per second).
    let mut r = replica(1, 3);
    r.opts.max_queued_commands = 4;
    r.opts.pipeline_window = 0;
    elect(&mut r, 0);
    let _ = actions(&mut r);
    for batch in 0..10u64 {
        let cmds: Vec<Command> = (0..10_000).map(|i| cmd(2, batch * 10_000 + i)).collect();
        let to = r.max_seen;
        recv_from(&mut r, 2 + batch, m(2), Message::Forward { to, cmds });
        let _ = actions(&mut r);
    }
    let bound = 10 * r.opts.max_queued_commands;
    assert!(r.forwards_seen.len() <= bound, "{} ids remembered from one peer's input", r.forwards_seen.len());
}

/// Finding 3 (memory from peer input, reads). An honest follower keeps one read-index request
/// outstanding, but the leader takes any number from one peer: while its reads cannot be served
/// (here a stop sign is pending, which can last as long as the change takes to be chosen), every
/// `ReadIndex` is kept in `remote_waiting`, and each is answered separately later.
#[test]
fn read_index_requests_from_one_peer_do_not_pile_up_while_reads_are_blocked() {
    let mut r = replica(1, 3);
    elect(&mut r, 0);
    recv_from(&mut r, 2, m(2), Message::Accepted { ballot: Ballot::new(1, m(1)), slot: Slot(1), learned: Slot(0) });
    let _ = actions(&mut r);
    let id = RequestId { node: NodeId(1), seq: 1 };
    r.propose_config(Time(3), id, crate::config::ConfigChange::AddLearner(m(4))).expect("a stop sign is proposed");
    let _ = actions(&mut r);
    for i in 0..50_000 {
        recv_from(&mut r, 4, m(3), Message::ReadIndex { id: i });
    }
    let waiting = match &r.role {
        crate::replica::Role::Leader(l) => l.remote_waiting.len() + l.rounds.values().map(|x| x.remote.len()).sum::<usize>(),
        _ => 0,
    };
    assert!(waiting <= 1, "{waiting} read-index requests kept for one follower");
}
