//! The small deterministic harness that `config_hold.rs` and `durable.rs` share: a FIFO wire, a
//! virtual clock in 1 ms steps, each node's timer fired when due. Each test file keeps its own
//! view of the outputs (`collect_outputs`) and what happens between the wire and the timers
//! (`between`: snapshot encodings finishing, transfers arriving).

use node::{Input, Node};
use paxos::{Envelope, Time};
use std::collections::{BTreeMap, VecDeque};

/// The accessors of a harness whose struct has `nodes`, `wire` and `now` fields.
macro_rules! harness_fields {
    () => {
        fn nodes(&mut self) -> &mut BTreeMap<u64, Node> {
            &mut self.nodes
        }
        fn wire(&mut self) -> &mut VecDeque<Envelope> {
            &mut self.wire
        }
        fn clock(&mut self) -> &mut u64 {
            &mut self.now
        }
        fn collect_outputs(&mut self, id: u64) {
            self.collect(id);
        }
    };
}

pub trait Harness {
    /// The nodes, by id.
    fn nodes(&mut self) -> &mut BTreeMap<u64, Node>;
    /// Messages in flight, delivered in order.
    fn wire(&mut self) -> &mut VecDeque<Envelope>;
    /// The virtual clock, in milliseconds.
    fn clock(&mut self) -> &mut u64;
    /// Take node `id`'s queued outputs.
    fn collect_outputs(&mut self, id: u64);
    /// What the test does after the wire is delivered and before the clock moves.
    fn between(&mut self) {}

    /// Hand node `id` an input at the current time and take its outputs.
    fn deliver(&mut self, id: u64, input: Input) {
        let now = *self.clock();
        self.nodes().get_mut(&id).expect("a node of the harness").handle(Time(now), input);
        self.collect_outputs(id);
    }

    /// Run `ms` milliseconds: every message arrives at once (FIFO), then `between`, then the
    /// clock moves one step and the timers due fire.
    fn run(&mut self, ms: u64) {
        let end = *self.clock() + ms;
        while *self.clock() < end {
            while let Some(env) = self.wire().pop_front() {
                let to = env.to.0;
                if self.nodes().contains_key(&to) {
                    self.deliver(to, Input::Peer(env));
                }
            }
            self.between();
            *self.clock() += 1;
            let now = *self.clock();
            let ids: Vec<u64> = self.nodes().keys().copied().collect();
            for id in ids {
                let node = self.nodes().get_mut(&id).expect("listed");
                if node.poll_timeout().is_some_and(|t| t.0 <= now) {
                    node.handle_timeout(Time(now));
                    self.collect_outputs(id);
                }
            }
        }
    }
}
