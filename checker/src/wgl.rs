//! The Wing–Gong–Lowe search: is there a total order of the operations that respects real time
//! and that the [`Model`] accepts?
//!
//! Wing and Gong (1993, "Testing and verifying concurrent objects") search for a linearization by
//! repeatedly picking a *minimal* operation (one whose invocation precedes every pending
//! completion), applying it to the model and recursing, backtracking when no minimal operation
//! fits. Lowe (2017, "Testing for linearizability") made this practical by memoising every
//! configuration already explored: a pair (set of linearized operations, model state). Two paths
//! that linearized the same set and reached the same state have the same future, so the second is
//! cut. Porcupine (Athalye, `checker.go`) implements exactly this with the history as a doubly
//! linked list of call and return events; we follow it:
//!
//! 1. Sort call and return events by time (a call before a return at equal times, so touching
//!    intervals count as concurrent: the permissive reading).
//! 2. Walk the list from the head. At a call, try the operation on the model; if the model accepts
//!    and the configuration (linearized ∪ {op}, next state) is new, push (op, old state), lift the
//!    op's call and return out of the list, and restart from the head.
//! 3. At a return, the op that returns here should already have been linearized but was not:
//!    pop the last choice, put its events back, and continue after its call.
//! 4. Empty stack at a return: no linearization exists.
//!
//! **Unknown outcomes.** An operation with no definite completion has no return event: it may be
//! linearized anywhere after its call. The search succeeds as soon as every operation *with* a
//! return is linearized; unknown operations still unplaced then "never took effect", which is
//! allowed. This is porcupine's "return at infinity" with the tail cut off.
//!
//! **Budget.** The problem is NP-complete (Gibbons and Korach 1997). A [`Budget`] bounds steps
//! and wall time; when exhausted the answer is [`SearchOutcome::Unknown`], never a hang.

use crate::model::Model;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One operation as the search sees it: model input and output, and its real-time interval.
#[derive(Clone, Debug)]
pub struct Operation<I, O> {
    /// What was asked.
    pub input: I,
    /// How it ended.
    pub output: O,
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` for an unknown outcome (may take effect any time after `call`, or never).
    pub ret: Option<u64>,
}

/// Limits on one search, so a pathological history yields [`SearchOutcome::Unknown`].
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Maximum search steps (one step = one event visited).
    pub max_steps: u64,
    /// Maximum wall time.
    pub timeout: Option<Duration>,
}

impl Default for Budget {
    /// 50 million steps or 30 seconds, whichever comes first.
    fn default() -> Self {
        Budget {
            max_steps: 50_000_000,
            timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// What the search concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    /// A linearization exists; `order` lists operation indexes in linearization order (unknown
    /// operations not listed never took effect).
    Linearizable {
        /// Indexes into the input slice, in linearization order.
        order: Vec<usize>,
    },
    /// No linearization exists.
    NotLinearizable {
        /// The longest linearizable prefix the search found (operation indexes, in order).
        longest_prefix: Vec<usize>,
        /// An operation that had to be linearized after that prefix but could not be.
        stuck: Option<usize>,
        /// The model state after the longest prefix, as `Debug` text.
        state: String,
    },
    /// The budget ran out before an answer.
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

const HEAD: usize = 0;
const TAIL: usize = 1;

/// One call or return event in the doubly linked list; nodes 0 and 1 are sentinels.
#[derive(Clone, Copy)]
struct Node {
    op: usize,
    is_call: bool,
    /// For a call: the node of its return, if the op has one.
    ret_node: Option<usize>,
    prev: usize,
    next: usize,
}

struct List {
    nodes: Vec<Node>,
}

impl List {
    fn build<I, O>(ops: &[Operation<I, O>]) -> (List, Vec<usize>) {
        // (time, 0 = call / 1 = return, op): calls sort before returns at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, 0, i));
            if let Some(r) = op.ret {
                events.push((r.max(op.call), 1, i));
            }
        }
        events.sort_unstable();
        let sentinel = Node {
            op: usize::MAX,
            is_call: false,
            ret_node: None,
            prev: HEAD,
            next: TAIL,
        };
        let mut nodes = vec![sentinel, sentinel];
        let mut call_node = vec![usize::MAX; ops.len()];
        let mut ret_node = vec![None; ops.len()];
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let idx = k + 2;
            let prev = if k == 0 { HEAD } else { idx - 1 };
            let next = if k + 1 == events.len() { TAIL } else { idx + 1 };
            nodes.push(Node {
                op,
                is_call: kind == 0,
                ret_node: None,
                prev,
                next,
            });
            if kind == 0 {
                call_node[op] = idx;
            } else {
                ret_node[op] = Some(idx);
            }
        }
        if !events.is_empty() {
            nodes[HEAD].next = 2;
            nodes[TAIL].prev = nodes.len() - 1;
        }
        for (op, &c) in call_node.iter().enumerate() {
            nodes[c].ret_node = ret_node[op];
        }
        (List { nodes }, call_node)
    }

    fn unlink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    /// Dancing links: valid because relinks happen in exact reverse order of unlinks.
    fn relink(&mut self, x: usize) {
        let Node { prev, next, .. } = self.nodes[x];
        self.nodes[prev].next = x;
        self.nodes[next].prev = x;
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(r) = self.nodes[call].ret_node {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(r) = self.nodes[call].ret_node {
            self.relink(r);
        }
        self.relink(call);
    }
}

/// Search for a linearization of `ops` under `model`.
pub fn search<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    budget: &Budget,
) -> SearchOutcome {
    let (mut list, _) = List::build(ops);
    let started = Instant::now();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    // (call node, state before it)
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut best: (Vec<usize>, Option<usize>, String) = (Vec::new(), None, format!("{state:?}"));
    let mut steps: u64 = 0;
    let mut entry = list.nodes[HEAD].next;

    loop {
        if remaining == 0 {
            let order = stack.iter().map(|&(n, _)| list.nodes[n].op).collect();
            return SearchOutcome::Linearizable { order };
        }
        steps += 1;
        if steps > budget.max_steps
            || (steps & 0xfff == 0 && budget.timeout.is_some_and(|t| started.elapsed() > t))
        {
            return SearchOutcome::Unknown { steps };
        }
        // Every op with a return still in the list sits before TAIL, so reaching TAIL with
        // `remaining > 0` cannot happen; treat it like a return (backtrack) to stay total.
        let node = list.nodes[entry];
        if entry != TAIL && node.is_call {
            let op = &ops[node.op];
            if let Some(next_state) = model.step(&state, &op.input, &op.output) {
                let (w, b) = (node.op / 64, 1u64 << (node.op % 64));
                linearized[w] |= b;
                if cache.insert((linearized.clone(), next_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    if op.ret.is_some() {
                        remaining -= 1;
                    }
                    list.lift(entry);
                    if stack.len() > best.0.len() {
                        best = (
                            stack.iter().map(|&(n, _)| list.nodes[n].op).collect(),
                            None,
                            format!("{state:?}"),
                        );
                    }
                    entry = list.nodes[HEAD].next;
                    continue;
                }
                linearized[w] &= !b;
            }
            entry = node.next;
        } else {
            if stack.len() == best.0.len() && best.1.is_none() && entry != TAIL {
                best.1 = Some(node.op);
            }
            let Some((call, prev_state)) = stack.pop() else {
                return SearchOutcome::NotLinearizable {
                    longest_prefix: best.0,
                    stuck: best.1,
                    state: best.2,
                };
            };
            let op = list.nodes[call].op;
            linearized[op / 64] &= !(1u64 << (op % 64));
            if ops[op].ret.is_some() {
                remaining += 1;
            }
            state = prev_state;
            list.unlift(call);
            entry = list.nodes[call].next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvModel;
    use crate::op::{OpKind, Outcome};

    fn op(
        kind: OpKind,
        call: u64,
        ret: Option<u64>,
        output: Outcome,
    ) -> Operation<OpKind, Outcome> {
        Operation {
            input: kind,
            output,
            call,
            ret,
        }
    }
    fn w(v: &str) -> OpKind {
        OpKind::Write { value: v.into() }
    }
    fn r(v: Option<&str>) -> OpKind {
        OpKind::Read {
            result: v.map(str::to_string),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        let out = search(&KvModel, &[], &Budget::default());
        assert_eq!(out, SearchOutcome::Linearizable { order: vec![] });
    }

    #[test]
    fn concurrent_read_may_go_before_the_write() {
        // The read overlaps the write, so it may be ordered first and see nil.
        let ops = [
            op(w("1"), 0, Some(10), Outcome::Ok),
            op(r(None), 5, Some(15), Outcome::Ok),
        ];
        let out = search(&KvModel, &ops, &Budget::default());
        assert_eq!(out, SearchOutcome::Linearizable { order: vec![1, 0] });
    }

    #[test]
    fn read_after_completed_write_must_see_it() {
        let ops = [
            op(w("1"), 0, Some(10), Outcome::Ok),
            op(r(None), 11, Some(15), Outcome::Ok),
        ];
        let out = search(&KvModel, &ops, &Budget::default());
        assert_eq!(
            out,
            SearchOutcome::NotLinearizable {
                longest_prefix: vec![0],
                stuck: Some(1),
                state: "Some(\"1\")".into()
            }
        );
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        let ops = [
            op(w("1"), 0, Some(10), Outcome::Ok),
            op(r(Some("1")), 11, Some(15), Outcome::Ok),
        ];
        let out = search(
            &KvModel,
            &ops,
            &Budget {
                max_steps: 1,
                timeout: None,
            },
        );
        assert_eq!(out, SearchOutcome::Unknown { steps: 2 });
    }
}
