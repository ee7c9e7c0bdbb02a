//! The membership decisions, one rule per test: what the leader proposes for each kind of
//! pending request, when it waits, the barrier, eligibility, the failure policy's floor, and the
//! majority that revokes a silent leader's lease.

use super::*;
use paxos::{Incarnation, Member, NodeId, Time};

fn m(id: u64, inc: u64) -> Member {
    Member { node: NodeId(id), incarnation: Incarnation(inc) }
}

/// Acceptors 1, 2, 3 (incarnation 1), epoch 0; all registered.
fn three() -> (Configuration, Registered) {
    let config = Configuration::bootstrap([m(1, 1), m(2, 1), m(3, 1)]);
    let registered = (1..=3).map(|i| (NodeId(i), 1)).collect();
    (config, registered)
}

fn join(id: u64, incarnation: u64) -> PendingChange {
    PendingChange::Join { id, incarnation }
}

#[test]
fn a_join_adds_a_learner_then_promotes_it_once_caught_up_then_completes() {
    let (config, mut registered) = three();
    let me = m(1, 1);
    let pending = vec![join(4, 7)];

    // Not registered yet (a new process posts its request before it registers): wait.
    assert_eq!(next_step(me, &config, &pending, &registered, |_| true), None);

    // Registered: add it as a learner.
    registered.insert(NodeId(4), 7);
    assert_eq!(next_step(me, &config, &pending, &registered, |_| true), Some(Step::Propose(ConfigChange::AddLearner(m(4, 7)), After::Nothing)));

    // A learner: promoted only once the core's catch-up rule holds.
    let learner = config.apply(&ConfigChange::AddLearner(m(4, 7))).expect("valid change");
    assert_eq!(next_step(me, &learner, &pending, &registered, |_| false), None);
    assert_eq!(next_step(me, &learner, &pending, &registered, |_| true), Some(Step::Propose(ConfigChange::Promote(m(4, 7)), After::Nothing)));

    // An acceptor: the request is complete.
    let acceptor = learner.apply(&ConfigChange::Promote(m(4, 7))).expect("valid change");
    assert_eq!(next_step(me, &acceptor, &pending, &registered, |_| true), Some(Step::Complete(join(4, 7), None)));
}

#[test]
fn a_restart_waits_for_its_own_registration_and_a_superseded_join_is_dropped() {
    let (config, mut registered) = three();
    let me = m(1, 1);
    // Node 3 crashed and restarted as incarnation 9; its old registration (incarnation 1) lingers
    // until its lease expires: the request waits rather than being dropped.
    let pending = vec![join(3, 9)];
    assert_eq!(next_step(me, &config, &pending, &registered, |_| true), None);
    // The new registration appears: the new incarnation replaces the old as a learner.
    registered.insert(NodeId(3), 9);
    assert_eq!(next_step(me, &config, &pending, &registered, |_| true), Some(Step::Propose(ConfigChange::AddLearner(m(3, 9)), After::Nothing)));
    // A newer process (incarnation 10) registered since: the request for 9 is stale.
    registered.insert(NodeId(3), 10);
    assert_eq!(next_step(me, &config, &pending, &registered, |_| true), Some(Step::Complete(join(3, 9), None)));
}

#[test]
fn a_leave_removes_then_completes_with_a_mark_and_a_leaving_leader_hands_off() {
    let (config, registered) = three();
    let me = m(1, 1);
    let leave = PendingChange::Leave { id: 3 };
    assert_eq!(next_step(me, &config, std::slice::from_ref(&leave), &registered, |_| true), Some(Step::Propose(ConfigChange::Remove(NodeId(3)), After::Nothing)));
    let without = config.apply(&ConfigChange::Remove(NodeId(3))).expect("valid change");
    let mark = EpochMark { incarnation: 1, epoch: without.epoch };
    assert_eq!(next_step(me, &without, std::slice::from_ref(&leave), &registered, |_| true), Some(Step::Complete(leave, Some(mark))));
    // The leader itself leaving hands leadership off first; the next leader removes it.
    assert_eq!(next_step(me, &config, &[PendingChange::Leave { id: 1 }], &registered, |_| true), Some(Step::HandOff));
}

#[test]
fn requests_are_taken_oldest_first_skipping_those_that_cannot_move() {
    let (config, registered) = three();
    // The join of an unregistered node cannot move; the leave after it can.
    let pending = vec![join(5, 1), PendingChange::Leave { id: 2 }];
    assert_eq!(next_step(m(1, 1), &config, &pending, &registered, |_| true), Some(Step::Propose(ConfigChange::Remove(NodeId(2)), After::Nothing)));
}

#[test]
fn the_barrier_waits_for_every_live_member_to_run_the_configuration() {
    let (config, mut registered) = three();
    let config = config.apply(&ConfigChange::AddLearner(m(4, 1))).expect("valid change");
    registered.insert(NodeId(4), 1);
    let mut epochs: BTreeMap<u64, EpochMark> = (1..=3).map(|i| (i, EpochMark { incarnation: 1, epoch: config.epoch })).collect();
    // The learner has not reported the epoch that added it (it has not installed a snapshot).
    assert_eq!(barrier_behind(&config, &registered, &epochs), vec![NodeId(4)]);
    // A mark of another incarnation does not count.
    epochs.insert(4, EpochMark { incarnation: 2, epoch: config.epoch });
    assert_eq!(barrier_behind(&config, &registered, &epochs), vec![NodeId(4)]);
    epochs.insert(4, EpochMark { incarnation: 1, epoch: config.epoch });
    assert_eq!(barrier_behind(&config, &registered, &epochs), Vec::<NodeId>::new());
    // A member that is not registered (dead) does not hold the barrier up.
    epochs.remove(&2);
    registered.remove(&NodeId(2));
    assert_eq!(barrier_behind(&config, &registered, &epochs), Vec::<NodeId>::new());
}

#[test]
fn only_an_acceptor_that_is_neither_leaving_nor_removed_campaigns() {
    let (config, _) = three();
    assert!(eligible(m(1, 1), &config, &[], false));
    assert!(!eligible(m(1, 1), &config, &[PendingChange::Leave { id: 1 }], false));
    assert!(eligible(m(1, 1), &config, &[PendingChange::Leave { id: 2 }], false));
    assert!(!eligible(m(1, 1), &config, &[], true));
    assert!(!eligible(m(1, 2), &config, &[], false), "another incarnation of the id");
    assert!(!eligible(m(4, 1), &config, &[], false), "not a member");
}

#[test]
fn the_failure_policy_removes_an_acceptor_gone_long_enough_but_keeps_a_majority_of_the_configured_set() {
    let (config, mut registered) = three();
    let mut policy = FailurePolicy::new(m(1, 1), 1000);
    let none = BTreeMap::new();
    // Node 3's registration goes away at t=0: counted from when the policy first sees it gone.
    registered.remove(&NodeId(3));
    assert_eq!(policy.decide(Time(0), &config, &registered, &[], &none), None);
    assert_eq!(policy.decide(Time(999), &config, &registered, &[], &none), None);
    assert_eq!(policy.decide(Time(1000), &config, &registered, &[], &none), Some(Verdict::Remove(m(3, 1))));
    // A node with a pending request (a restart joining again) is left alone.
    assert_eq!(policy.decide(Time(1000), &config, &registered, &[join(3, 2)], &none), None);

    // After the removal, node 2 fails too: 2 acceptors plus 1 evicted make a configured set of 3,
    // whose majority is 2, so removing node 2 would go below it: kept, for an operator to decide.
    let two = config.apply(&ConfigChange::Remove(NodeId(3))).expect("valid change");
    let evicted: BTreeMap<u64, EpochMark> = [(3, EpochMark { incarnation: 1, epoch: two.epoch })].into();
    registered.remove(&NodeId(2));
    assert_eq!(policy.decide(Time(2000), &two, &registered, &[], &evicted), None);
    assert_eq!(policy.decide(Time(3000), &two, &registered, &[], &evicted), Some(Verdict::Kept { member: m(2, 1), left: 1, configured: 3 }));

    // Back: its absence is forgotten, and counting starts over if it goes again.
    registered.insert(NodeId(2), 1);
    assert_eq!(policy.decide(Time(3001), &two, &registered, &[], &evicted), None);
    registered.remove(&NodeId(2));
    assert_eq!(policy.decide(Time(3002), &two, &registered, &[], &evicted), None);
    // Losing leadership forgets every absence too.
    policy.clear();
    assert_eq!(policy.decide(Time(5000), &two, &registered, &[], &evicted), None);
}

#[test]
fn a_leader_lease_is_revoked_only_when_a_majority_of_the_acceptors_suspects_it() {
    let s = crate::Suspicion { leader: NodeId(1), acceptors: vec![NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)] };
    // The leader's own record, a non-acceptor's and a duplicate do not count.
    let counted = s.suspects([NodeId(1), NodeId(9), NodeId(2), NodeId(2)]);
    assert_eq!(counted, vec![NodeId(2)]);
    assert!(!s.majority(&counted));
    // Two of five: a leader cut off from a minority still commits; left alone.
    assert!(!s.majority(&s.suspects([NodeId(2), NodeId(3)])));
    // Three of five: a majority cannot hear it, so it cannot commit either.
    assert!(s.majority(&s.suspects([NodeId(4), NodeId(2), NodeId(3)])));
}

#[test]
fn the_cluster_version_is_raised_only_to_what_every_live_member_reads() {
    let config = Configuration::bootstrap([m(1, 1), m(2, 1), m(3, 1)]);
    let registered: Registered = [(NodeId(1), 1), (NodeId(2), 1), (NodeId(3), 1)].into();
    let reads = |v: [u32; 3]| move |n: NodeId| v[n.0 as usize - 1];
    // Mid-upgrade: one member still runs the previous release (reads 1): nothing to raise.
    assert_eq!(version_to_raise(&config, 1, 2, &registered, reads([2, 2, 1])), None);
    // Every member reads 2: raise to 2, but never above this build's own maximum.
    assert_eq!(version_to_raise(&config, 1, 2, &registered, reads([2, 2, 2])), Some(2));
    assert_eq!(version_to_raise(&config, 1, 2, &registered, reads([3, 3, 3])), Some(2));
    // Already there: nothing.
    assert_eq!(version_to_raise(&config, 2, 2, &registered, reads([2, 2, 2])), None);
    // A member that is down may come back as any build: wait for it.
    let mut down = registered.clone();
    down.remove(&NodeId(3));
    assert_eq!(version_to_raise(&config, 1, 2, &down, reads([2, 2, 2])), None);
    // A learner counts as a member.
    let with_learner = config.apply(&ConfigChange::AddLearner(m(4, 1))).expect("valid change");
    let mut reg4 = registered.clone();
    reg4.insert(NodeId(4), 1);
    let reads4 = |n: NodeId| if n.0 == 4 { 1 } else { 2 };
    assert_eq!(version_to_raise(&with_learner, 1, 2, &reg4, reads4), None);

    // A join moves only if the joiner reads the version the cluster runs.
    let join = PendingChange::Join { id: 4, incarnation: 1 };
    assert!(join_allowed(&join, 1, reads4));
    assert!(!join_allowed(&join, 2, reads4));
    assert!(join_allowed(&PendingChange::Leave { id: 4 }, 2, reads4));
}
