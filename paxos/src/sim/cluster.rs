//! The simulated cluster: nodes, network, clients, election oracle, faults, and the event loop.

use super::ghost::Ghost;
use super::nemesis::Nemesis;
use super::net::Net;
use crate::action::{Action, Persist};
use crate::config::{ConfigChange, Configuration};
use crate::event::Event;
use crate::ids::{Incarnation, Member, NodeId, ReadId, RequestId, Slot, Time};
use crate::message::{Command, Envelope, Message, SnapshotMeta, Value};
use crate::options::{Bugs, Options};
use crate::replica::Replica;
use crate::status::RoleKind;
use crate::ProposeError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::cmp::Reverse;

/// What one seed runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub replicas: usize,
    /// Nodes outside the bootstrap configuration: they start as empty learners-to-be, and the
    /// membership steps add them (so that a change can touch learners only).
    pub spares: usize,
    /// Virtual milliseconds of the safety phase (faults on).
    pub safety_ms: u64,
    /// Virtual milliseconds the liveness phase may take at most.
    pub liveness_ms: u64,
    /// Inject faults (loss, duplication, partitions, crashes, amnesia restarts).
    pub faults: bool,
    /// Change membership during the run.
    pub reconfig: bool,
    /// Restart replicas with amnesia (needs `reconfig` to rejoin them).
    pub amnesia: bool,
    /// Mean milliseconds between client commands.
    pub client_gap_ms: u64,
    /// Most commands per slot (1: unbatched); random if `None`.
    pub batch_max_commands: Option<usize>,
    /// Pipelining window; random if `None`.
    pub pipeline_window: Option<u64>,
    /// Commands a client sends at each client step.
    pub client_burst: usize,
    /// Deliberate bugs.
    pub bugs: Bugs,
    /// `Options::promise_page_bytes` and `Options::recovery_window` (the defaults if `None`);
    /// `PAXOS_SIM_PAGE_BYTES` and `PAXOS_SIM_RECOVERY_WINDOW` override both.
    pub promise_page_bytes: Option<usize>,
    pub recovery_window: Option<u64>,
}

/// One seed in four (the 8 consecutive seeds 8..16 of every 32: both cluster sizes, and every
/// shard of `paxos/tests/sim.rs`, whatever the first seed) runs with small promise
/// pages and a small recovery window, so that the CI sweep exercises the paged phase 1 and the
/// windowed re-proposal of adopted slots (review 24). Each page is a round trip: pages much
/// smaller (1 byte, or 100 bytes with window 1) made some seeds too slow for the liveness probe.
pub const PAGED_PAGE_BYTES: usize = 200;
pub const PAGED_RECOVERY_WINDOW: u64 = 2;

/// Whether `SimConfig::for_seed(seed)` runs with small pages.
pub fn paged_seed(seed: u64) -> bool {
    (seed / 8) % 4 == 1
}

impl SimConfig {
    /// The CI mix for a seed: 3 or 5 replicas, faults, and (on most seeds) reconfiguration and
    /// amnesia restarts.
    pub fn for_seed(seed: u64) -> Self {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let reconfig = r.gen_bool(0.7);
        SimConfig {
            seed,
            replicas: [3, 5][(seed % 2) as usize],
            spares: 1,
            safety_ms: r.gen_range(2_000..6_000),
            liveness_ms: 30_000,
            faults: true,
            reconfig,
            // An amnesia restart rejoins only through reconfiguration.
            amnesia: reconfig && r.gen_bool(0.6),
            client_gap_ms: r.gen_range(2..15),
            batch_max_commands: None,
            pipeline_window: None,
            client_burst: 1,
            bugs: Bugs::default(),
            promise_page_bytes: paged_seed(seed).then_some(PAGED_PAGE_BYTES),
            recovery_window: paged_seed(seed).then_some(PAGED_RECOVERY_WINDOW),
        }
    }

    /// A fault-free run for benchmarks: `replicas` nodes, a stable leader, a command every
    /// 16 commands every virtual millisecond for `safety_ms`, at most
    /// `batch` commands per slot, window 8.
    pub fn quiet(seed: u64, replicas: usize, safety_ms: u64, batch: usize) -> Self {
        SimConfig {
            seed,
            replicas,
            spares: 0,
            safety_ms,
            liveness_ms: 10_000,
            faults: false,
            reconfig: false,
            amnesia: false,
            client_gap_ms: 0,
            batch_max_commands: Some(batch),
            pipeline_window: Some(8),
            client_burst: 16,
            bugs: Bugs::default(),
            promise_page_bytes: None,
            recovery_window: None,
        }
    }
}

/// What happened in a run (fault counts prove the faults happened).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub commands_chosen: u64,
    pub commands_lost: u64,
    pub slots_chosen: u64,
    pub snapshot_installs: u64,
    pub config_changes: u64,
    pub amnesia_restarts: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub elections: u64,
    pub reads_served: u64,
    pub slots_disposed: u64,
    pub messages: u64,
    pub virtual_ms: u64,
    /// Links held (stalled streams) and messages they held.
    pub stalls: u64,
    pub held_messages: u64,
    /// Leaders the liveness oracle named (without rescue).
    pub liveness_namings: u64,
    /// Stale-leader sequences started, and those that got as far as cutting the leader off.
    pub stale_leader_runs: u64,
    pub stale_leader_isolations: u64,
    /// `Promise` pages delivered with `more: true` (paging exercised), and the last pages.
    pub promise_pages: u64,
    pub promises_paged_last: u64,
}

impl SimStats {
    pub fn add(&mut self, o: &SimStats) {
        self.commands_chosen += o.commands_chosen;
        self.commands_lost += o.commands_lost;
        self.slots_chosen += o.slots_chosen;
        self.snapshot_installs += o.snapshot_installs;
        self.config_changes += o.config_changes;
        self.amnesia_restarts += o.amnesia_restarts;
        self.crashes += o.crashes;
        self.partitions += o.partitions;
        self.elections += o.elections;
        self.reads_served += o.reads_served;
        self.slots_disposed += o.slots_disposed;
        self.messages += o.messages;
        self.virtual_ms += o.virtual_ms;
        self.stalls += o.stalls;
        self.held_messages += o.held_messages;
        self.liveness_namings += o.liveness_namings;
        self.stale_leader_runs += o.stale_leader_runs;
        self.stale_leader_isolations += o.stale_leader_isolations;
        self.promise_pages += o.promise_pages;
        self.promises_paged_last += o.promises_paged_last;
    }
}

/// A violated invariant, with what replays it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub at: Time,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at {} ms: {}\n  replay: PAXOS_SIM_FIRST_SEED={} PAXOS_SIM_SEEDS=1 cargo test -p paxos --features sim sim_",
            self.seed, self.at.0, self.what, self.seed
        )
    }
}

/// A snapshot as the simulated driver keeps it: the state hash after `slot`.
#[derive(Clone, Debug)]
struct Snap {
    slot: Slot,
    hash: u64,
    config: Configuration,
}

/// What a linearizable read must respect, fixed when it is issued.
#[derive(Clone, Debug)]
struct ReadBound {
    /// Every slot applied anywhere before the read was issued: the index must cover it.
    applied: Slot,
    /// If the target led when the read arrived, and a quorum of its configuration had already
    /// promised a higher ballot: those acceptors had deposed it. Rule 4 says the read needs a
    /// quorum confirming the leader after it arrived, which cannot exist then.
    superseded_by: Option<Vec<Member>>,
}

/// One simulated process plus its driver.
pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) inc: Incarnation,
    pub(super) replica: Replica,
    pub(super) up: bool,
    pub(super) applied: Slot,
    hash: u64,
    config: Option<Configuration>,
    snap: Snap,
    /// Proposals this driver handed to its core, not yet resolved.
    pub(super) outstanding: BTreeSet<RequestId>,
    /// Those of them the core forwarded to a leader, and when: the driver's write timeout
    /// answers them "outcome unknown" if nothing was heard (a lost `Forward`, or a leader that
    /// crashed with it queued).
    pub(super) forwarded_at: BTreeMap<RequestId, Time>,
    /// Reads in flight: id -> what the read must respect (see [`ReadBound`]).
    reads: BTreeMap<ReadId, ReadBound>,
}

enum Ev {
    Deliver(Envelope),
    Snapshot { to: NodeId, snap: Snap },
    Local(NodeId, u64, Event),
    /// A held link's stall may be over.
    Release { from: NodeId, to: NodeId },
}

pub(super) struct Sim {
    pub(super) cfg: SimConfig,
    pub(super) rng: ChaCha8Rng,
    pub(super) now: Time,
    pub(super) nodes: BTreeMap<NodeId, Node>,
    queue: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    pub(super) net: Net,
    pub(super) ghost: Ghost,
    pub(super) stats: SimStats,
    pub(super) next_req: u64,
    next_read: u64,
    bootstrap: Configuration,
    /// Where clients send in the liveness phase: the named leader.
    pub(super) stable_leader: Option<NodeId>,
    /// Reconfiguration proposed and not yet seen applied.
    pub(super) reconfig_pending: Option<(RequestId, Time)>,
    /// Nodes restarted with amnesia that still have to be promoted.
    pub(super) rejoining: BTreeSet<NodeId>,
    pub(super) liveness: bool,
    /// The highest checkpoint a leader announced that passed the check.
    pub(super) valid_checkpoint: Slot,
    /// Every membership change proposed.
    proposed_changes: Vec<(RequestId, ConfigChange)>,
    /// Ground truth for the checkpoint check: the highest learned point each (receiver,
    /// sender) pair really delivered.
    pub(super) reports: BTreeMap<(Member, Member), Slot>,
    /// The same, counting only reports delivered while the receiver campaigned or led, and
    /// forgotten when it steps down (what may excuse a member as lagging).
    pub(super) fresh_reports: BTreeMap<(Member, Member), Slot>,
    /// Per leader identity, what it had applied when it last became leader.
    pub(super) term_start: BTreeMap<Member, Slot>,
    /// Leaders with work pending: since when, at which commit point (the wedge watchdog).
    pub(super) work_since: BTreeMap<NodeId, (Time, Slot)>,
    /// The liveness oracle's leader and when it was named.
    pub(super) named: Option<(NodeId, Time)>,
    /// Nodes that stepped down (resigned from the election) since the last naming.
    pub(super) resigned: BTreeSet<NodeId>,
    /// The liveness probe in flight, and whether one was chosen since the last naming.
    pub(super) probe: Option<(RequestId, Time)>,
    pub(super) probed: bool,
    /// The scripted fault sequence in progress (`nemesis.rs`).
    pub(super) nemesis: Nemesis,
}

pub(super) const CLIENT: NodeId = NodeId(1_000);

/// `PAXOS_SIM_TRACE=<ms>` prints every action from that virtual time on (for replaying a seed).
fn trace_from() -> Option<u64> {
    use std::sync::OnceLock;
    static FROM: OnceLock<Option<u64>> = OnceLock::new();
    *FROM.get_or_init(|| std::env::var("PAXOS_SIM_TRACE").ok().and_then(|v| v.parse().ok()))
}

fn mix(h: u64, x: u64) -> u64 {
    // SplitMix64-style chaining: enough to tell applied sequences apart.
    let mut z = h ^ x.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(h << 6).wrapping_add(h >> 2);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn value_digest(v: &Value) -> u64 {
    match v {
        Value::Noop => 1,
        Value::Batch(cmds, _) => cmds.iter().fold(2, |h, c| mix(mix(h, c.id.seq), c.payload.len() as u64)),
        Value::Reconfigure { id, .. } => mix(3, id.seq),
    }
}

/// Run one seed. `Ok` carries what happened; `Err` the first violated invariant.
pub fn run(cfg: SimConfig) -> Result<SimStats, Failure> {
    let mut sim = Sim::new(cfg);
    let r = sim.run_all();
    sim.stats.slots_disposed = sim.nodes.values().map(|n| n.replica.counters().slots_disposed).sum();
    sim.stats.config_changes = sim.ghost.chosen.values().filter(|v| matches!(v, Value::Reconfigure { .. })).count() as u64;
    r.map_err(|what| Failure { seed: sim.cfg.seed, at: sim.now, what })?;
    Ok(sim.stats)
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let members: Vec<Member> =
            (1..=cfg.replicas as u64).map(|n| Member { node: NodeId(n), incarnation: Incarnation(1) }).collect();
        let bootstrap = Configuration::bootstrap(members.iter().copied());
        let snapshot_every = rng.gen_range(5..=100);
        let max_retained = rng.gen_range(20..=200);
        let window = rng.gen_range(1..=8);
        let window = cfg.pipeline_window.unwrap_or(window);
        let batch = cfg.batch_max_commands.unwrap_or_else(|| rng.gen_range(1..=16));
        let mut nodes = BTreeMap::new();
        let spares = (cfg.replicas + 1..=cfg.replicas + cfg.spares).map(|n| Member { node: NodeId(n as u64), incarnation: Incarnation(1) });
        for m in members.iter().copied().chain(spares) {
            let founding = bootstrap.is_acceptor(&m);
            let boot = founding.then(|| bootstrap.clone());
            let opts = Self::options(&cfg, m, boot.clone(), snapshot_every, max_retained, window, batch);
            nodes.insert(
                m.node,
                Node {
                    id: m.node,
                    inc: m.incarnation,
                    replica: Replica::new(opts, Time(0)),
                    up: true,
                    applied: Slot(0),
                    hash: 0,
                    config: boot,
                    snap: Snap { slot: Slot(0), hash: 0, config: bootstrap.clone() },
                    outstanding: BTreeSet::new(),
                    forwarded_at: BTreeMap::new(),
                    reads: BTreeMap::new(),
                },
            );
        }
        let net = if cfg.faults {
            Net {
                loss: rng.gen_range(0.0..0.15),
                dup: rng.gen_range(0.0..0.1),
                max_delay: rng.gen_range(2..40),
                ..Net::default()
            }
        } else {
            Net { max_delay: 2, ..Net::default() }
        };
        Sim {
            ghost: Ghost::new(bootstrap.clone()),
            cfg,
            rng,
            now: Time(0),
            nodes,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            net,
            stats: SimStats::default(),
            next_req: 0,
            next_read: 0,
            bootstrap,
            stable_leader: None,
            reconfig_pending: None,
            rejoining: BTreeSet::new(),
            liveness: false,
            valid_checkpoint: Slot(0),
            proposed_changes: Vec::new(),
            reports: BTreeMap::new(),
            fresh_reports: BTreeMap::new(),
            term_start: BTreeMap::new(),
            work_since: BTreeMap::new(),
            named: None,
            resigned: BTreeSet::new(),
            probe: None,
            probed: false,
            nemesis: Nemesis::Idle,
        }
    }

    fn options(
        cfg: &SimConfig,
        me: Member,
        bootstrap: Option<Configuration>,
        snapshot_every: u64,
        max_retained: u64,
        window: u64,
        batch: usize,
    ) -> Options {
        let mut o = Options::new(me, bootstrap);
        o.seed = cfg.seed.wrapping_mul(31).wrapping_add(me.node.0 * 7 + me.incarnation.0);
        o.heartbeat_ms = 20;
        o.retry_ms = 60;
        o.leader_lease_ms = 300;
        o.batch_max_commands = batch;
        o.batch_max_bytes = 4096;
        o.pipeline_window = window;
        o.max_queued_commands = 256;
        o.snapshot_every = snapshot_every;
        o.max_retained_slots = max_retained;
        o.snapshot_resend_ms = 10 * o.retry_ms;
        o.snapshot_wait_ms = 20 * o.retry_ms;
        o.bugs = cfg.bugs;
        if let Some(p) = cfg.promise_page_bytes {
            o.promise_page_bytes = p;
        }
        if let Some(w) = cfg.recovery_window {
            o.recovery_window = w;
        }
        // Review 24: `PAXOS_SIM_PAGE_BYTES=<n>` sets a tiny promise page on every seed.
        if let Some(p) = std::env::var("PAXOS_SIM_PAGE_BYTES").ok().and_then(|v| v.parse().ok()) {
            o.promise_page_bytes = p;
        }
        if let Some(w) = std::env::var("PAXOS_SIM_RECOVERY_WINDOW").ok().and_then(|v| v.parse().ok()) {
            o.recovery_window = w;
        }
        o
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn run_all(&mut self) -> Result<(), String> {
        // Safety phase: faults, flaky elections, clients everywhere.
        let safety_end = Time(self.cfg.safety_ms);
        let mut next_client = Time(1);
        let mut next_oracle = Time(0);
        let mut next_fault = Time(self.rng.gen_range(50..300));
        let mut next_reconfig = Time(self.rng.gen_range(200..800));
        while self.now < safety_end {
            let t = self.next_time().min(next_client).min(next_oracle).min(next_fault).min(next_reconfig).min(safety_end);
            self.now = t;
            if t == next_client {
                self.client_step()?;
                next_client = t.plus(self.client_gap());
            } else if t == next_oracle {
                if self.cfg.faults {
                    self.oracle_safety()?;
                } else {
                    self.oracle_liveness()?;
                }
                self.check_all_leaders()?;
                next_oracle = t.plus(self.rng.gen_range(100..1_200));
            } else if t == next_fault {
                if self.cfg.faults {
                    self.fault()?;
                }
                self.check_all_leaders()?;
                next_fault = t.plus(self.rng.gen_range(50..500));
            } else if t == next_reconfig {
                if self.cfg.reconfig {
                    self.reconfig_step()?;
                }
                next_reconfig = t.plus(self.rng.gen_range(100..600));
            } else if t < safety_end {
                self.step()?;
            }
        }
        self.liveness_phase()
    }

    fn client_gap(&mut self) -> u64 {
        if self.cfg.client_gap_ms == 0 {
            1
        } else {
            self.rng.gen_range(1..=2 * self.cfg.client_gap_ms)
        }
    }

    /// Earliest pending network event or replica timer.
    pub(super) fn next_time(&self) -> Time {
        let q = self.queue.peek().map_or(Time(u64::MAX), |Reverse((t, _))| *t);
        let timers = self.nodes.values().filter(|n| n.up).filter_map(|n| n.replica.poll_timeout()).min().unwrap_or(Time(u64::MAX));
        q.min(timers).max(self.now)
    }

    /// Run whatever is due at `self.now`: queued events first, then timers.
    pub(super) fn step(&mut self) -> Result<(), String> {
        if let Some(Reverse((t, seq))) = self.queue.peek().copied() {
            if t <= self.now {
                self.queue.pop();
                let ev = self.events.remove(&seq).expect("every queued seq has an event");
                return self.run_event(ev);
            }
        }
        let due: Vec<NodeId> =
            self.nodes.values().filter(|n| n.up && n.replica.poll_timeout().is_some_and(|t| t <= self.now)).map(|n| n.id).collect();
        for id in due {
            let now = self.now;
            if let Some(n) = self.nodes.get_mut(&id) {
                n.replica.handle_timeout(now);
            }
            self.drain(id)?;
        }
        Ok(())
    }

    fn run_event(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Deliver(env) => {
                let to = env.to;
                let now = self.now;
                let Some(n) = self.nodes.get_mut(&to) else { return Ok(()) };
                if !n.up {
                    return Ok(());
                }
                self.stats.messages += 1;
                if let Message::Promise { more, first_slot, .. } = &env.msg {
                    if *more {
                        self.stats.promise_pages += 1;
                    } else if matches!(&n.replica.role, crate::replica::Role::Candidate(c)
                        if c.pages.get(&env.from).is_some_and(|(s, _)| s == first_slot))
                    {
                        self.stats.promises_paged_last += 1;
                    }
                }
                let receiver = Member { node: to, incarnation: n.inc };
                let (from, msg) = (env.from, env.msg.clone());
                let campaigning = !matches!(n.replica.role, crate::replica::Role::Follower);
                n.replica.handle(now, Event::Receive(env));
                self.note_report(receiver, from, &msg, campaigning);
                self.drain(to)
            }
            Ev::Release { from, to } => self.release(from, to),
            Ev::Snapshot { to, snap } => {
                let now = self.now;
                let Some(n) = self.nodes.get_mut(&to) else { return Ok(()) };
                if !n.up || (snap.slot <= n.applied && n.config.is_some()) {
                    return Ok(());
                }
                if let Some((_, h)) = self.ghost.applied.get(&snap.slot) {
                    if *h != snap.hash {
                        return Err(format!("snapshot at slot {} has a state nobody applied", snap.slot));
                    }
                }
                n.applied = snap.slot;
                n.hash = snap.hash;
                n.config = Some(snap.config.clone());
                n.snap = snap.clone();
                self.stats.snapshot_installs += 1;
                n.replica.handle(now, Event::SnapshotInstalled(SnapshotMeta { last_slot: snap.slot, config: snap.config }));
                self.drain(to)?;
                // Outcomes settled inside the snapshot: the "session table" (the chosen prefix up
                // to the snapshot) says whether each untracked command was applied.
                let n = self.nodes.get_mut(&to).expect("node exists");
                let settled: Vec<RequestId> = n.outstanding.iter().copied().filter(|id| !n.replica.tracks(*id)).collect();
                for id in settled {
                    n.outstanding.remove(&id);
                    match self.ghost.chosen_ids.get(&id) {
                        Some(s) if *s <= snap.slot => {}
                        Some(s) => return Err(format!("{id:?} untracked after a snapshot at {} but chosen later, at {s}", snap.slot)),
                        None => self.ghost.report_lost(id)?,
                    }
                }
                Ok(())
            }
            Ev::Local(to, inc, event) => {
                let now = self.now;
                let Some(n) = self.nodes.get_mut(&to) else { return Ok(()) };
                if !n.up || n.inc.0 != inc {
                    return Ok(());
                }
                n.replica.handle(now, event);
                self.drain(to)
            }
        }
    }

    fn send(&mut self, env: Envelope) {
        if self.net.is_blocked(env.from.node, env.to) || self.rng.gen_bool(self.net.loss) {
            return;
        }
        if self.net.hold(&env) {
            self.stats.held_messages += 1;
            return;
        }
        let copies = if self.rng.gen_bool(self.net.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let d = self.rng.gen_range(1..=self.net.max_delay);
            self.schedule(self.now.plus(d), Ev::Deliver(env.clone()));
        }
    }

    /// Stall the directed link for `ms` (a gRPC stream that stops moving, then catches up).
    pub(super) fn hold_link(&mut self, from: NodeId, to: NodeId, ms: u64) {
        let until = self.now.plus(ms);
        if self.net.start_hold(from, to, until) {
            self.schedule(until, Ev::Release { from, to });
        }
    }

    /// A stall may be over: deliver what the link held, in the order it was sent.
    pub(super) fn release(&mut self, from: NodeId, to: NodeId) -> Result<(), String> {
        match self.net.release(from, to, self.now) {
            Ok(msgs) => {
                // One delivery time and increasing sequence numbers: FIFO, as on one stream.
                let at = self.now.plus(1);
                for env in msgs {
                    self.schedule(at, Ev::Deliver(env));
                }
            }
            Err(Some(later)) => self.schedule(later, Ev::Release { from, to }),
            Err(None) => {}
        }
        Ok(())
    }

    /// Run a node's actions in order, checking invariants as they come.
    pub(super) fn drain(&mut self, id: NodeId) -> Result<(), String> {
        self.drain_actions(id)?;
        self.check_checkpoint(id)?;
        self.check_leader_state(id)
    }

    /// Invariant 6: a leader disposes of a slot only once every member of the configuration
    /// learned it (by the members' own reports) or lags more than `max_retained_slots`; no
    /// replica disposes of more than a leader announced on a heartbeat.
    fn check_checkpoint(&mut self, id: NodeId) -> Result<(), String> {
        let Some(n) = self.nodes.get(&id) else { return Ok(()) };
        let cp = n.replica.checkpoint();
        if cp > self.valid_checkpoint {
            return Err(format!("{id} disposed through {cp}, above every leader's checkpoint {}", self.valid_checkpoint));
        }
        Ok(())
    }

    fn drain_actions(&mut self, id: NodeId) -> Result<(), String> {
        loop {
            let Some(n) = self.nodes.get_mut(&id) else { return Ok(()) };
            let Some(a) = n.replica.poll_action() else { return Ok(()) };
            let me = Member { node: id, incarnation: n.inc };
            if let Some(from) = trace_from() {
                if self.now.0 >= from {
                    eprintln!("{:>6} {id}: {a:?}", self.now.0);
                }
            }
            match a {
                Action::Persist(Persist::Promised(b)) => self.ghost.promise(me, b)?,
                Action::Persist(Persist::Accepted(e)) => self.ghost.vote(me, &e)?,
                Action::Send(env) => {
                    if let crate::Message::Heartbeat { checkpoint, .. } = env.msg {
                        self.check_leader_checkpoint(id, checkpoint)?;
                    }
                    self.send(env)
                }
                Action::Apply { slot, value } => self.apply(id, slot, value)?,
                Action::ProposalLost { id: rid } => {
                    self.ghost.report_lost(rid)?;
                    self.stats.commands_lost += 1;
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.outstanding.remove(&rid);
                        n.forwarded_at.remove(&rid);
                    }
                }
                Action::ReadsReady { reads, index } => {
                    let n = self.nodes.get_mut(&id).expect("node exists");
                    for r in reads {
                        let Some(bound) = n.reads.remove(&r) else { return Err(format!("read {r} served twice")) };
                        if index < bound.applied {
                            return Err(format!(
                                "read {r} served at index {index}, but slot {} was applied before it was issued",
                                bound.applied
                            ));
                        }
                        if let Some(q) = bound.superseded_by {
                            return Err(format!(
                                "read {r} served by {id} at index {index}, but before it was issued a quorum {q:?} had promised a higher ballot (a stale read: no quorum can have confirmed the leader after it arrived)"
                            ));
                        }
                        self.stats.reads_served += 1;
                    }
                }
                Action::ReadsFailed { reads, .. } => {
                    for r in reads {
                        n.reads.remove(&r);
                    }
                }
                Action::TakeSnapshot { slot } => {
                    if n.applied != slot {
                        return Err(format!("{id} asked to snapshot at {slot} but applied {}", n.applied));
                    }
                    let config = n.config.clone().ok_or("snapshot without a configuration")?;
                    n.snap = Snap { slot, hash: n.hash, config: config.clone() };
                    let inc = n.inc.0;
                    self.schedule(self.now, Ev::Local(id, inc, Event::SnapshotTaken(SnapshotMeta { last_slot: slot, config })));
                }
                Action::SendSnapshot { to } => {
                    // As the node layer does: the latest snapshot if it is at the applied slot,
                    // else one of the state as it is now (the core holds the log above it).
                    let snap = match &n.config {
                        Some(config) if n.snap.slot < n.applied => {
                            Snap { slot: n.applied, hash: n.hash, config: config.clone() }
                        }
                        _ => n.snap.clone(),
                    };
                    let inc = n.inc.0;
                    let d = self.rng.gen_range(1..=self.net.max_delay * 3);
                    let delivered = !self.net.is_blocked(id, to);
                    if delivered {
                        self.schedule(self.now.plus(d), Ev::Snapshot { to, snap });
                    }
                    // The driver reports the end of the transfer (a blocked one fails).
                    self.schedule(self.now.plus(d + 1), Ev::Local(id, inc, Event::SnapshotSent { to, delivered }));
                }
                Action::LeaderChanged { leader, .. } => {
                    if leader == Some(id) {
                        let applied = n.applied;
                        self.term_start.insert(me, applied);
                    }
                }
                Action::SteppedDown => {
                    self.resigned.insert(id);
                    self.end_term(me);
                }
                Action::ConfigChanged { slot, config } => {
                    if n.applied != slot {
                        return Err(format!("{id}: config change at {slot} but applied {}", n.applied));
                    }
                    n.config = Some(config);
                }
            }
        }
    }

    fn apply(&mut self, id: NodeId, slot: Slot, value: Value) -> Result<(), String> {
        let n = self.nodes.get_mut(&id).expect("node exists");
        if slot != n.applied.next() {
            return Err(format!("{id} applied slot {slot} after {}", n.applied));
        }
        match self.ghost.chosen.get(&slot) {
            Some(c) if *c == value => {}
            Some(c) => return Err(format!("{id} applied {value:?} in slot {slot} but {c:?} was chosen")),
            None => return Err(format!("{id} applied {value:?} in slot {slot}, which is not chosen")),
        }
        n.hash = mix(n.hash, value_digest(&value));
        n.applied = slot;
        for rid in value.request_ids() {
            n.outstanding.remove(&rid);
            n.forwarded_at.remove(&rid);
        }
        match self.ghost.applied.get(&slot) {
            Some((_, h)) if *h != n.hash => {
                return Err(format!("{id} applied slot {slot} from a different prefix"));
            }
            Some(_) => {}
            None => {
                if let Value::Batch(c, _) = &value {
                    self.stats.commands_chosen += c.len() as u64;
                }
                self.stats.slots_chosen += 1;
                self.ghost.applied.insert(slot, (value, n.hash));
            }
        }
        if matches!(self.ghost.chosen.get(&slot), Some(Value::Reconfigure { .. })) {
            if let Some((rid, _)) = self.reconfig_pending {
                if self.ghost.chosen_ids.get(&rid) == Some(&slot) {
                    self.reconfig_pending = None;
                }
            }
        }
        Ok(())
    }

    // ----- clients -----

    fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.up).map(|n| n.id).collect()
    }

    pub(super) fn client_step(&mut self) -> Result<(), String> {
        let ups = self.up_nodes();
        if ups.is_empty() {
            return Ok(());
        }
        self.nemesis_step()?;
        let target = match self.stable_leader {
            Some(l) if self.liveness => l,
            _ => ups[self.rng.gen_range(0..ups.len())],
        };
        if self.rng.gen_bool(0.1) {
            let target = self.stale_leader_target().unwrap_or(target);
            return self.client_read(target);
        }
        for _ in 0..self.cfg.client_burst {
            self.next_req += 1;
            let len = self.rng.gen_range(1..=32);
            let payload: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
            // The replica the client talks to mints the id (as the driver does), so that a
            // leader can report a forwarded command lost to it.
            let cmd = Command { id: RequestId { node: target, seq: self.next_req }, payload };
            self.propose_at(target, cmd, true)?;
        }
        Ok(())
    }

    fn propose_at(&mut self, target: NodeId, cmd: Command, may_forward: bool) -> Result<(), String> {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(&target) else { return Ok(()) };
        if !n.up {
            return Ok(());
        }
        // Record the proposal first: the core may choose it before `propose` returns.
        self.ghost.proposed.insert(cmd.id, cmd.payload.clone());
        let id = cmd.id;
        match n.replica.propose(now, cmd.clone()) {
            Ok(()) => {
                n.outstanding.insert(id);
                self.drain(target)
            }
            Err(ProposeError::NotLeader { leader: Some(l) }) if may_forward && l != target => {
                // The follower hands the command to the leader in the peer stream and learns
                // the outcome by applying the log (`forward.rs`).
                let n = self.nodes.get_mut(&target).expect("target exists");
                match n.replica.forward(now, cmd.clone()) {
                    Ok(()) => {
                        n.outstanding.insert(id);
                        n.forwarded_at.insert(id, now);
                        self.drain(target)
                    }
                    // The leader's incarnation is unknown here: the driver relays the request.
                    Err(ProposeError::NotLeader { leader: Some(l) }) => {
                        self.drain(target)?;
                        self.propose_at(l, cmd, false)
                    }
                    Err(_) => self.drain(target),
                }
            }
            Err(_) => self.drain(target),
        }
    }

    fn client_read(&mut self, target: NodeId) -> Result<(), String> {
        let now = self.now;
        self.next_read += 1;
        let r = ReadId(self.next_read);
        // Every slot applied anywhere is a completed write that the read must observe.
        let applied = self.nodes.values().map(|n| n.applied).max().unwrap_or(Slot(0));
        let superseded_by = match &self.nodes[&target].replica.role {
            crate::replica::Role::Leader(l) => {
                let higher: Vec<Member> =
                    l.config.acceptors.iter().copied().filter(|m| self.ghost.promised_to(*m) > l.ballot).collect();
                l.config.is_quorum(higher.iter()).then_some(higher)
            }
            _ => None,
        };
        let n = self.nodes.get_mut(&target).expect("target is up");
        n.reads.insert(r, ReadBound { applied, superseded_by });
        if n.replica.read(now, r).is_err() {
            n.reads.remove(&r);
        }
        self.drain(target)
    }

    // ----- election oracle -----

    pub(super) fn hint_all(&mut self, leader: Option<NodeId>) -> Result<(), String> {
        for id in self.up_nodes() {
            self.hint(id, leader)?;
        }
        Ok(())
    }

    pub(super) fn hint(&mut self, id: NodeId, leader: Option<NodeId>) -> Result<(), String> {
        let now = self.now;
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.up {
                n.replica.handle(now, Event::LeaderHint { leader });
                self.stats.elections += u64::from(leader == Some(id));
            }
        }
        self.drain(id)
    }

    fn oracle_safety(&mut self) -> Result<(), String> {
        let ups = self.up_nodes();
        if ups.is_empty() {
            return Ok(());
        }
        let a = ups[self.rng.gen_range(0..ups.len())];
        let b = ups[self.rng.gen_range(0..ups.len())];
        match self.rng.gen_range(0..100) {
            0..=69 => self.hint_all(Some(a)),
            70..=84 => {
                // Two leaders at once: ballots must fence them.
                for id in ups {
                    let l = if id == b { b } else { a };
                    self.hint(id, Some(l))?;
                }
                Ok(())
            }
            _ => self.hint_all(None),
        }
    }

    // ----- faults -----

    fn fault(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        match self.rng.gen_range(0..100) {
            0..=19 => {
                // Symmetric partition.
                self.net.blocked.clear();
                let cut: BTreeSet<NodeId> = ids.iter().copied().filter(|_| self.rng.gen_bool(0.4)).collect();
                for a in &ids {
                    for b in &ids {
                        if cut.contains(a) != cut.contains(b) {
                            self.net.blocked.insert((*a, *b));
                        }
                    }
                }
                self.stats.partitions += 1;
            }
            20..=31 => {
                // One-way links.
                for _ in 0..self.rng.gen_range(1..=3) {
                    let a = ids[self.rng.gen_range(0..ids.len())];
                    let b = ids[self.rng.gen_range(0..ids.len())];
                    if a != b {
                        self.net.blocked.insert((a, b));
                    }
                }
                self.stats.partitions += 1;
            }
            32..=45 => self.stall(&ids),
            46..=59 => self.net.blocked.clear(),
            60..=74 => {
                // Crash (a pause: durable state survives); at most a minority down at once.
                let down = self.nodes.values().filter(|n| !n.up).count();
                let a = ids[self.rng.gen_range(0..ids.len())];
                if down < (ids.len() - 1) / 2 {
                    if let Some(n) = self.nodes.get_mut(&a) {
                        if n.up {
                            n.up = false;
                            self.stats.crashes += 1;
                        }
                    }
                    self.forget_leadership(a, self.now);
                }
            }
            75..=89 => {
                for n in self.nodes.values_mut() {
                    n.up = true;
                }
            }
            90..=95 => {
                if self.cfg.amnesia {
                    self.amnesia_restart()?;
                }
            }
            _ => self.start_stale_leader()?,
        }
        Ok(())
    }

    /// Stall streams for 0.5 to 5 s: one directed link, both directions of a pair, every stream
    /// into a node, or every stream out of one. Half the time the node is a current leader, so
    /// that its acknowledgements and its heartbeats are held across leader changes and stop signs.
    fn stall(&mut self, ids: &[NodeId]) {
        let leaders: Vec<NodeId> = self.nodes.values().filter(|n| n.up && n.replica.is_leader()).map(|n| n.id).collect();
        let a = if !leaders.is_empty() && self.rng.gen_bool(0.5) {
            leaders[self.rng.gen_range(0..leaders.len())]
        } else {
            ids[self.rng.gen_range(0..ids.len())]
        };
        let others: Vec<NodeId> = ids.iter().copied().filter(|n| *n != a).collect();
        let b = others[self.rng.gen_range(0..others.len())];
        let ms = self.rng.gen_range(500..=5_000);
        let links: Vec<(NodeId, NodeId)> = match self.rng.gen_range(0..4) {
            0 => vec![(b, a)],
            1 => vec![(a, b), (b, a)],
            2 => others.iter().map(|o| (*o, a)).collect(),
            _ => others.iter().map(|o| (a, *o)).collect(),
        };
        for (from, to) in links {
            self.hold_link(from, to, ms);
        }
        self.stats.stalls += 1;
    }

    /// Restart a node with its memory gone: a fresh incarnation that knows no configuration
    /// (or, with the `amnesia_vote` bug, the old incarnation with empty state).
    fn amnesia_restart(&mut self) -> Result<(), String> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let id = ids[self.rng.gen_range(0..ids.len())];
        if !self.rejoining.is_empty() && !self.rejoining.contains(&id) && !self.cfg.bugs.amnesia_vote {
            return Ok(()); // one rejoin at a time (a rejoining learner may restart again)
        }
        // Never take a quorum's memory: every configuration that still governs an undecided slot
        // (anything after the slowest replica's applied point) must keep a quorum alive in the
        // listed incarnations without the victim.
        let lowest = self.nodes.values().map(|n| n.applied).min().unwrap_or(Slot(0));
        let keeps_quorum = |config: &Configuration| {
            let alive = config
                .acceptors
                .iter()
                .filter(|m| m.node != id && self.nodes.get(&m.node).is_some_and(|n| n.inc == m.incarnation))
                .count();
            alive >= config.quorum()
        };
        // A change proposed and not chosen yet may still be chosen (a new leader can adopt it long
        // after): check the configurations it would make, too.
        let open: Vec<ConfigChange> =
            self.proposed_changes.iter().filter(|(rid, _)| !self.ghost.chosen_ids.contains_key(rid)).map(|(_, c)| *c).collect();
        let safe = self.ghost.configs_after(lowest).iter().all(|config| {
            keeps_quorum(config) && open.iter().all(|ch| config.apply(ch).map_or(true, |next| keeps_quorum(&next)))
        });
        // Restarts are allowed while a change is pending, and of learners (even one that is
        // still catching up): only a quorum's memory must survive.
        if !self.cfg.bugs.amnesia_vote && !safe {
            return Ok(());
        }
        let n = self.nodes.get(&id).expect("listed");
        let inc = if self.cfg.bugs.amnesia_vote { n.inc } else { Incarnation(n.inc.0 + 1) };
        let me = Member { node: id, incarnation: inc };
        let bootstrap = if self.cfg.bugs.amnesia_vote { n.config.clone() } else { None };
        let old = &n.replica.opts;
        let mut opts = Self::options(
            &self.cfg,
            me,
            bootstrap.clone(),
            old.snapshot_every,
            old.max_retained_slots,
            old.pipeline_window,
            old.batch_max_commands,
        );
        opts.seed ^= self.now.0;
        let n = self.nodes.get_mut(&id).expect("listed");
        let mut gone: Vec<RequestId> = n.replica.pending.values().flatten().copied().collect();
        match &n.replica.role {
            crate::replica::Role::Leader(l) => gone.extend(l.queue.cmds.iter().map(|(c, _)| c.id)),
            crate::replica::Role::Candidate(c) => gone.extend(c.queue.cmds.iter().map(|(c, _)| c.id)),
            crate::replica::Role::Follower => {}
        }
        n.inc = inc;
        n.replica = Replica::new(opts, self.now);
        n.up = true;
        n.applied = Slot(0);
        n.hash = 0;
        n.config = bootstrap.clone();
        n.snap = Snap { slot: Slot(0), hash: 0, config: self.bootstrap.clone() };
        // The driver's waiters died with the process: those outcomes are unknown, not lost.
        n.outstanding.clear();
        n.forwarded_at.clear();
        n.reads.clear();
        // So are those of commands other replicas forwarded to it that it had queued or
        // proposed: nobody will report them lost, their drivers time out.
        for other in self.nodes.values_mut() {
            for g in &gone {
                if other.forwarded_at.remove(g).is_some() {
                    other.outstanding.remove(g);
                }
            }
        }
        self.forget_leadership(id, self.now);
        if self.cfg.bugs.amnesia_vote {
            // The bug under test: same identity, no memory. Let the ghost forget this identity's
            // promise too, so the test shows the consequence (a slot chosen twice, or an
            // acknowledged command lost), not just the regressed promise.
            self.ghost.forget_promise(Member { node: id, incarnation: inc });
        } else {
            self.rejoining.insert(id);
        }
        self.stats.amnesia_restarts += 1;
        Ok(())
    }

    // ----- membership -----

    /// Drive rejoins: AddLearner(new incarnation), then Promote once caught up; sometimes remove
    /// and re-add a healthy node.
    pub(super) fn reconfig_step(&mut self) -> Result<(), String> {
        if let Some((_, since)) = self.reconfig_pending {
            if since.plus(2_000) > self.now {
                return Ok(());
            }
            self.reconfig_pending = None;
        }
        let Some(leader) = self.nodes.values().find(|n| n.up && n.replica.is_leader()).map(|n| n.id) else {
            return Ok(());
        };
        let config = self.nodes[&leader].replica.status().config;
        let change = if let Some(&id) = self.rejoining.iter().next() {
            let m = Member { node: id, incarnation: self.nodes[&id].inc };
            if config.learners.contains(&m) {
                ConfigChange::Promote(m)
            } else if config.is_acceptor(&m) {
                self.rejoining.remove(&id);
                return Ok(());
            } else {
                ConfigChange::AddLearner(m)
            }
        } else if let Some(m) = config.learners.iter().next().copied() {
            ConfigChange::Promote(m)
        } else if self.rng.gen_bool(0.3) {
            // Remove a random node, or add back one that was removed.
            let missing: Vec<NodeId> = self.nodes.keys().copied().filter(|n| !config.contains_node(*n)).collect();
            if let Some(&n) = missing.first() {
                ConfigChange::AddLearner(Member { node: n, incarnation: self.nodes[&n].inc })
            } else if config.acceptors.len() > 2 {
                let v: Vec<NodeId> = config.acceptors.iter().map(|m| m.node).collect();
                ConfigChange::Remove(v[self.rng.gen_range(0..v.len())])
            } else {
                return Ok(());
            }
        } else {
            return Ok(());
        };
        self.propose_change(leader, change)
    }

    /// Propose `change` at `leader` (which may refuse it).
    pub(super) fn propose_change(&mut self, leader: NodeId, change: ConfigChange) -> Result<(), String> {
        self.next_req += 1;
        let rid = RequestId { node: CLIENT, seq: self.next_req };
        self.ghost.proposed_configs.insert(rid);
        self.proposed_changes.push((rid, change));
        let now = self.now;
        let n = self.nodes.get_mut(&leader).expect("leader exists");
        if n.replica.propose_config(now, rid, change).is_ok() {
            self.reconfig_pending = Some((rid, now));
        }
        self.drain(leader)
    }

}

/// What the survivors of a lost majority show (for `docs/paxos.md` and the test).
#[derive(Clone, Debug)]
pub struct MajorityLoss {
    /// Highest slot chosen before the crash, and after the survivors ran on alone.
    pub chosen_before: Slot,
    pub chosen_after: Slot,
    /// Proposals the survivors refused, and the errors' text.
    pub refused: u64,
    pub errors: BTreeSet<String>,
    /// Roles of the survivors at the end.
    pub roles: Vec<RoleKind>,
    /// `SteppedDown` emitted by survivors after the crash.
    pub stepped_down: u64,
}

/// Architecture rule 8: five replicas serve, then three crash at once for good. The two
/// survivors are named leader by the election again and again, and clients keep proposing: no
/// slot may be chosen after the crash.
pub fn majority_loss(seed: u64) -> Result<MajorityLoss, Failure> {
    let mut cfg = SimConfig::quiet(seed, 5, 500, 8);
    cfg.client_gap_ms = 5;
    let mut sim = Sim::new(cfg);
    let fail = |sim: &Sim, what: String| Failure { seed, at: sim.now, what };
    let r = (|| -> Result<MajorityLoss, String> {
        sim.hint_all(Some(NodeId(1)))?;
        let mut next_client = Time(10);
        while sim.now < Time(500) {
            let t = sim.next_time().min(next_client);
            sim.now = t;
            if t == next_client {
                sim.client_step()?;
                next_client = t.plus(5);
            } else {
                sim.step()?;
            }
        }
        let lost_before: BTreeMap<NodeId, u64> = sim.nodes.iter().map(|(id, n)| (*id, n.replica.counters().stepped_down)).collect();
        for id in [1, 2, 3] {
            sim.nodes.get_mut(&NodeId(id)).expect("five nodes").up = false;
        }
        // Accepts already on the wire may still complete a quorum (votes cast before the crash
        // plus a survivor's): let them land before counting, with no new proposals.
        let settle = sim.now.plus(50);
        while sim.now < settle {
            let t = sim.next_time().min(settle);
            sim.now = t;
            if t < settle {
                sim.step()?;
            }
        }
        let chosen_before = sim.ghost.chosen.keys().next_back().copied().unwrap_or(Slot(0));
        let (mut refused, mut errors) = (0, BTreeSet::new());
        let end = sim.now.plus(5_000);
        let mut next_hint = sim.now;
        while sim.now < end {
            let t = sim.next_time().min(next_client).min(next_hint).min(end);
            sim.now = t;
            if t == next_hint {
                let l = NodeId(4 + (t.0 / 1_000) % 2);
                sim.hint_all(Some(l))?;
                next_hint = t.plus(400);
            } else if t == next_client {
                let target = NodeId(4 + sim.rng.gen_range(0..2));
                sim.next_req += 1;
                let cmd = Command { id: RequestId { node: CLIENT, seq: sim.next_req }, payload: vec![1] };
                sim.ghost.proposed.insert(cmd.id, cmd.payload.clone());
                let now = sim.now;
                let n = sim.nodes.get_mut(&target).expect("survivor");
                if let Err(e) = n.replica.propose(now, cmd) {
                    refused += 1;
                    errors.insert(e.to_string());
                }
                sim.drain(target)?;
                next_client = t.plus(20);
            } else if t < end {
                sim.step()?;
            }
        }
        let chosen_after = sim.ghost.chosen.keys().next_back().copied().unwrap_or(Slot(0));
        let survivors = [NodeId(4), NodeId(5)];
        Ok(MajorityLoss {
            chosen_before,
            chosen_after,
            refused,
            errors,
            roles: survivors.iter().map(|id| sim.nodes[id].replica.status().role).collect(),
            stepped_down: survivors.iter().map(|id| sim.nodes[id].replica.counters().stepped_down - lost_before[id]).sum(),
        })
    })();
    r.map_err(|what| fail(&sim, what))
}
