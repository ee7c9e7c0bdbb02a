//! Lock clients: a lock on one key held through a lease, and the lock verdicts.
//!
//! A lock client ([`Locker`]) loops over rounds:
//!
//! 1. **grant** a lease of a TTL drawn from [`TTLS`] (`WriteOp::LeaseGrant`);
//! 2. **acquire**: put [`LOCK_KEY`] = `L<client>-<round>` attached to the lease, guarded on the
//!    key being absent (`WriteOp::Leased`). If the guard fails, someone holds the lock: retry
//!    after 100-400 ms, keeping the lease alive meanwhile. A guard failure that shows the
//!    client's own value of this round means an earlier attempt of the same put applied (its
//!    answer was lost): the lock is the client's, with that version as its fence;
//! 3. **hold** for 0.1-2.5 s, keeping the lease alive, then either **release** (delete the key
//!    guarded on `Guard::Version(fence)`, then revoke the lease) or, one time in three,
//!    **abandon** it: stop sending keepalives and forget the lock, which only the lease's expiry
//!    can then free.
//!
//! Keepalives (`WriteOp::LeaseKeepAlive`) go every TTL/3 on a second channel with its own
//! session, so they never wait behind an acquire (each channel sends one request at a time, as a
//! session requires). Every request carries a session tag and is retried under it after a
//! timeout or an unknown outcome; every one of them is also harmless if applied twice (a second
//! grant leaks a lease that expires, a second keepalive extends, a second acquire fails its guard
//! and shows the client's own value, a second release or revoke finds nothing), which covers the
//! small-session-table runs where a session may be evicted between two attempts.
//!
//! **What a client believes.** It holds the lock from the acquire's answer until the earliest of
//! the moment it sends its release (or abandons), and `t + ttl` where `t` is the send time (of the
//! first attempt) of the latest grant or keepalive acknowledged OK: the guarantee of
//! `kvstore::lease` ("a holder whose keepalive was sent at its time `t` and acknowledged holds the
//! lease until at least `t + ttl`"). A keepalive answered `LeaseNotFound` ends the belief at once;
//! a belief that runs out with no acknowledgement ends at `t + ttl`, and the client revokes the
//! lease and starts over. Each belief is one [`Interval`].
//!
//! **Verdicts** (kept by [`LockBook`]):
//!
//! 1. *mutual exclusion*: no two clients' intervals overlap in simulated time, and fences grow
//!    with the intervals' starts;
//! 2. *no early expiry*: whenever a lease disappears from any replica's store at time `T` (the
//!    simulator watches every store), unless its owner had sent a revoke by then, every grant or
//!    keepalive of it acknowledged OK was sent at or before `T - ttl`;
//! 3. *liveness* (in the simulator, after the heal): the holder is made to abandon the lock, and
//!    another client must take it within its TTL plus [`HANDOVER_SLACK_MS`].

use kvstore::{BatchOp, ClientId, Guard, Output, SessionRef, WriteError, WriteOp, WriteOutcome};
use paxos::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The lock's key.
pub(super) const LOCK_KEY: &str = "lock";
/// The TTLs a lock client asks for (ms of log time).
pub(super) const TTLS: [u64; 3] = [600, 1_000, 1_500];
/// After the heal, an abandoned lock must be taken by another client within its TTL plus this.
pub const HANDOVER_SLACK_MS: u64 = 2_000;
/// Per-attempt timeout of the main channel (grant, acquire, release, revoke).
pub(super) const MAIN_TIMEOUT_MS: u64 = 800;
/// Attempts of one main-channel request before the client gives up on it.
pub(super) const MAIN_ATTEMPTS: u32 = 8;
/// Attempts of one keepalive before the client gives up on it (and sends a new one).
pub(super) const KEEP_ATTEMPTS: u32 = 3;

/// Bugs to put into the lock clients (negative tests of the lock verdicts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockBugs {
    /// A client believes its lease for twice its TTL after the latest acknowledged keepalive.
    pub double_ttl: bool,
}

/// A lock client's two request channels, each with its own session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Chan {
    /// Grant, acquire, release, revoke.
    Main = 0,
    /// Keepalives.
    Keep = 1,
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Grant,
    Acquire,
    KeepAlive,
    Release,
    Revoke,
}

/// A request in flight on a channel.
#[derive(Clone, Debug)]
pub(super) struct LockReq {
    pub(super) step: Step,
    pub(super) op: WriteOp,
    pub(super) session: Option<SessionRef>,
    /// When its first attempt was sent (what the client counts a lease from).
    pub(super) sent: u64,
    pub(super) attempts: u32,
    pub(super) token: u64,
    pub(super) node: NodeId,
    /// The client's round when it was sent (an answer for an older round is stale).
    round: u64,
}

/// What the world should do for a lock client.
#[derive(Debug)]
pub(super) enum Cmd {
    /// Send the request now stored in the channel (a fresh one: first attempt) after `delay`.
    Send { chan: Chan, delay: u64 },
    /// Wake the channel at `at` (stale once the channel's generation moved on).
    Wake { chan: Chan, at: u64, gen: u64 },
}

/// The lease a round uses.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: u64,
    ttl: u64,
    /// Send time of the latest grant or keepalive acknowledged OK.
    last_ok: u64,
    /// When the next keepalive is due.
    keep_next: u64,
}

#[derive(Clone, Debug)]
enum Phase {
    /// Start a new round at `at`.
    Idle { at: u64 },
    Granting,
    /// Send the acquire at `at` (again, after a failed guard).
    Acquire { at: u64 },
    Acquiring,
    /// Holding with this fence since `since`, until `until`; then release, or abandon.
    Holding { fence: u64, since: u64, until: u64, abandon: bool },
    Releasing,
    Revoking,
}

/// One lock client.
#[derive(Debug)]
pub(super) struct Locker {
    pub(super) id: u64,
    sessions: [ClientId; 2],
    seqs: [u64; 2],
    pub(super) inflight: [Option<LockReq>; 2],
    gens: [u64; 2],
    round: u64,
    /// This round's value of the lock key.
    value: String,
    phase: Phase,
    lease: Option<Held>,
    /// Leases to revoke before the next round (a round given up while its lease may live).
    to_revoke: Vec<u64>,
    /// Forced to abandon at its next chance (the liveness probe after the heal).
    pub(super) force_abandon: bool,
    /// Stops once it abandons (the liveness probe's victim).
    stop_after_abandon: bool,
    pub(super) done: bool,
    bugs: LockBugs,
}

/// A holding interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub client: u64,
    pub start: u64,
    pub end: u64,
    pub fence: u64,
    /// How it ended.
    pub how: End,
}

/// How a holding interval ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Released,
    Abandoned,
    /// A keepalive (or an acquire) answered `LeaseNotFound`.
    Lost,
    /// The belief ran out: no keepalive acknowledged for a TTL.
    Lapsed,
    /// The run ended.
    Stopped,
}

/// What the simulator knows about one lease.
#[derive(Clone, Debug, Default)]
struct LeaseRec {
    ttl: u64,
    /// The latest send time of a grant or keepalive of it acknowledged OK.
    max_ok_sent: Option<u64>,
    /// When its owner first sent a revoke.
    revoke_sent: Option<u64>,
    /// The earliest time it disappeared from some replica's store, and where.
    gone: Option<(u64, NodeId)>,
    /// Its disappearance was checked against an acknowledgement (counted once).
    counted: bool,
}

/// Lock statistics of a run.
#[derive(Clone, Debug, Default)]
pub struct LockStats {
    pub clients: u64,
    pub grants: u64,
    pub keepalives_ok: u64,
    pub acquisitions: u64,
    /// Acquisitions learnt from a failed guard showing the client's own value (an earlier
    /// attempt applied).
    pub acquired_by_retry: u64,
    /// Acquires that found the lock held.
    pub contended: u64,
    pub releases: u64,
    pub abandons: u64,
    /// Holdings ended by `LeaseNotFound`.
    pub lost: u64,
    /// Holdings ended because the belief ran out.
    pub lapses: u64,
    /// Lock-client leases that expired (disappeared from a store without a revoke).
    pub expiries: u64,
    /// Of those, the ones with an acknowledged grant or keepalive the verdict checked.
    pub expiries_checked: u64,
    /// The smallest margin of a checked expiry: disappearance - (last acknowledged send + ttl).
    pub expiry_min_margin_ms: Option<u64>,
    /// Handovers (an acquisition after another client's holding ended): count, longest, total.
    pub handovers: u64,
    pub handover_max_ms: u64,
    pub handover_sum_ms: u64,
    /// Handovers after an abandon (the lease had to expire): count, longest, total.
    pub abandon_handovers: u64,
    pub abandon_handover_max_ms: u64,
    pub abandon_handover_sum_ms: u64,
    /// Acquisitions after the heal.
    pub acquisitions_after_heal: u64,
    /// The liveness probe after the heal ran (some holder abandoned and another took over).
    pub probe_done: bool,
    /// How long after the victim abandoned another client took the lock, and the victim's TTL.
    pub probe_handover_ms: u64,
    pub probe_ttl_ms: u64,
    /// How long after the probe was armed a victim was found.
    pub probe_victim_wait_ms: u64,
}

/// The verdicts' records: holding intervals and what is known about each lease.
#[derive(Debug, Default)]
pub(super) struct LockBook {
    pub(super) intervals: Vec<Interval>,
    leases: BTreeMap<u64, LeaseRec>,
    /// The latest end of a holding: (end, client, abandoned).
    last_end: Option<(u64, u64, bool)>,
    /// Leases granted to lock clients (the others are not theirs: nothing to check).
    owned: BTreeMap<u64, u64>,
    pub(super) stats: LockStats,
    pub(super) healed_at: Option<u64>,
}

impl LockBook {
    /// A grant or keepalive of `lease` (TTL `ttl`) sent at `sent` was acknowledged OK.
    fn ack(&mut self, lease: u64, ttl: u64, sent: u64) -> Result<(), String> {
        let r = self.leases.entry(lease).or_default();
        r.ttl = ttl;
        r.max_ok_sent = Some(r.max_ok_sent.map_or(sent, |m| m.max(sent)));
        self.check(lease)
    }

    fn revoke_sent(&mut self, lease: u64, now: u64) {
        let r = self.leases.entry(lease).or_default();
        r.revoke_sent.get_or_insert(now);
    }

    /// Lease `lease` disappeared from `node`'s store at `now`.
    pub(super) fn gone(&mut self, lease: u64, now: u64, node: NodeId) -> Result<(), String> {
        let r = self.leases.entry(lease).or_default();
        if r.gone.is_none_or(|(t, _)| now < t) {
            r.gone = Some((now, node));
        }
        self.check(lease)
    }

    /// The early-expiry verdict for one lease.
    fn check(&mut self, lease: u64) -> Result<(), String> {
        let Some(r) = self.leases.get_mut(&lease) else { return Ok(()) };
        let (Some((t, node)), Some(sent)) = (r.gone, r.max_ok_sent) else { return Ok(()) };
        if r.revoke_sent.is_some_and(|rv| rv <= t) {
            return Ok(());
        }
        let until = sent + r.ttl;
        if until > t {
            let owner = self.owned.get(&lease).map_or("?".to_string(), u64::to_string);
            return Err(format!(
                "locks: early expiry: lease {lease} (TTL {} ms, client {owner}) disappeared from {node}'s store at {t} ms, but a grant or \
                 keepalive of it sent at {sent} ms was acknowledged OK: it must live until {until} ms",
                r.ttl
            ));
        }
        if !r.counted {
            r.counted = true;
            self.stats.expiries_checked += 1;
            let margin = t - until;
            self.stats.expiry_min_margin_ms = Some(self.stats.expiry_min_margin_ms.map_or(margin, |m| m.min(margin)));
        }
        Ok(())
    }

    fn begin(&mut self, client: u64, start: u64) {
        self.stats.acquisitions += 1;
        if self.healed_at.is_some_and(|h| start >= h) {
            self.stats.acquisitions_after_heal += 1;
        }
        if let Some((end, by, abandoned)) = self.last_end {
            if by != client {
                let wait = start.saturating_sub(end);
                self.stats.handovers += 1;
                self.stats.handover_max_ms = self.stats.handover_max_ms.max(wait);
                self.stats.handover_sum_ms += wait;
                if abandoned {
                    self.stats.abandon_handovers += 1;
                    self.stats.abandon_handover_max_ms = self.stats.abandon_handover_max_ms.max(wait);
                    self.stats.abandon_handover_sum_ms += wait;
                }
            }
        }
    }

    fn close(&mut self, iv: Interval) {
        match iv.how {
            End::Released => self.stats.releases += 1,
            End::Abandoned => self.stats.abandons += 1,
            End::Lost => self.stats.lost += 1,
            End::Lapsed => self.stats.lapses += 1,
            End::Stopped => {}
        }
        if self.last_end.is_none_or(|(e, _, _)| iv.end >= e) {
            self.last_end = Some((iv.end, iv.client, iv.how == End::Abandoned));
        }
        self.intervals.push(iv);
    }

    /// Count the lock clients' leases that expired (at the end of the run).
    pub(super) fn count_expiries(&mut self) {
        self.stats.expiries =
            self.leases.iter().filter(|(id, r)| self.owned.contains_key(id) && r.gone.is_some_and(|(t, _)| r.revoke_sent.is_none_or(|rv| rv > t))).count()
                as u64;
    }

    /// The mutual-exclusion verdict over every interval.
    pub(super) fn mutual_exclusion(&self) -> Result<(), String> {
        let mut ivs = self.intervals.clone();
        ivs.sort_by_key(|i| (i.start, i.end, i.client));
        for w in ivs.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.start < a.end {
                return Err(format!("locks: mutual exclusion: {a:?} and {b:?} overlap"));
            }
            if b.fence <= a.fence {
                return Err(format!("locks: fences do not grow: {a:?} then {b:?}"));
            }
        }
        Ok(())
    }
}

impl Locker {
    pub(super) fn new(id: u64, bugs: LockBugs) -> Self {
        Locker {
            id,
            sessions: [ClientId((3 << 40) | (id << 20)), ClientId((3 << 40) | (id << 20) | 1)],
            seqs: [0, 0],
            inflight: [None, None],
            gens: [0, 0],
            round: 0,
            value: String::new(),
            phase: Phase::Idle { at: 0 },
            lease: None,
            to_revoke: Vec::new(),
            force_abandon: false,
            stop_after_abandon: false,
            done: false,
            bugs,
        }
    }

    /// Start a new session on `chan` (the store answered `SessionExpired`); returns the new tag
    /// for the request in flight there.
    pub(super) fn new_session(&mut self, chan: Chan) -> Option<SessionRef> {
        let c = chan as usize;
        self.sessions[c] = ClientId(self.sessions[c].0 + 2);
        self.seqs[c] = 1;
        let tag = SessionRef { client: self.sessions[c], seq: 1 };
        if let Some(r) = self.inflight[c].as_mut() {
            r.session = Some(tag);
        }
        Some(tag)
    }

    fn tag(&mut self, chan: Chan) -> SessionRef {
        let c = chan as usize;
        self.seqs[c] += 1;
        SessionRef { client: self.sessions[c], seq: self.seqs[c] }
    }

    /// Until when the client believes its lease lives.
    fn valid_until(&self) -> Option<u64> {
        let h = self.lease?;
        let ttl = if self.bugs.double_ttl { 2 * h.ttl } else { h.ttl };
        Some(h.last_ok + ttl)
    }

    /// Whether it holds the lock at `now` (by its own belief).
    pub(super) fn holding(&self, now: u64) -> Option<u64> {
        match self.phase {
            Phase::Holding { .. } if self.valid_until().is_some_and(|v| v > now) => self.valid_until(),
            _ => None,
        }
    }

    /// The TTL of its lease.
    pub(super) fn ttl(&self) -> u64 {
        self.lease.map_or(0, |h| h.ttl)
    }

    fn request(&mut self, chan: Chan, step: Step, op: WriteOp, now: u64, delay: u64) -> Cmd {
        let session = Some(self.tag(chan));
        let node = NodeId(0);
        self.inflight[chan as usize] =
            Some(LockReq { step, op, session, sent: now + delay, attempts: 0, token: 0, node, round: self.round });
        Cmd::Send { chan, delay }
    }

    fn wake(&mut self, chan: Chan, at: u64) -> Cmd {
        self.gens[chan as usize] += 1;
        Cmd::Wake { chan, at, gen: self.gens[chan as usize] }
    }

    /// Whether a wake of `chan` with `gen` is current.
    pub(super) fn current(&self, chan: Chan, gen: u64) -> bool {
        self.gens[chan as usize] == gen
    }

    /// End the holding under way (if any) at `end`.
    fn end_holding(&mut self, end: u64, how: End, book: &mut LockBook) {
        if let Phase::Holding { fence, since, .. } = self.phase {
            let end = end.min(self.valid_until().unwrap_or(end)).max(since);
            book.close(Interval { client: self.id, start: since, end, fence, how });
            self.phase = Phase::Idle { at: end };
        }
    }

    /// The main channel is free: do what the phase asks.
    fn drive(&mut self, now: u64, rng: &mut ChaCha8Rng, book: &mut LockBook) -> Vec<Cmd> {
        if self.done || self.inflight[Chan::Main as usize].is_some() {
            return Vec::new();
        }
        if let Some(id) = self.to_revoke.pop() {
            book.revoke_sent(id, now);
            return vec![self.request(Chan::Main, Step::Revoke, WriteOp::LeaseRevoke { id }, now, 0)];
        }
        match self.phase.clone() {
            Phase::Idle { at } if at > now => vec![self.wake(Chan::Main, at)],
            Phase::Idle { .. } => {
                self.round += 1;
                self.value = format!("L{}-{}", self.id, self.round);
                let ttl = TTLS[rng.gen_range(0..TTLS.len())];
                self.phase = Phase::Granting;
                vec![self.request(Chan::Main, Step::Grant, WriteOp::LeaseGrant { ttl_ms: ttl }, now, 0)]
            }
            Phase::Acquire { at } if at > now => vec![self.wake(Chan::Main, at)],
            Phase::Acquire { .. } => {
                let Some(h) = self.lease else {
                    self.phase = Phase::Idle { at: now };
                    return self.drive(now, rng, book);
                };
                self.phase = Phase::Acquiring;
                let put = BatchOp::Put { key: LOCK_KEY.into(), value: self.value.clone().into_bytes(), guard: Some(Guard::Absent) };
                vec![self.request(Chan::Main, Step::Acquire, WriteOp::Leased { lease: h.id, ops: vec![put] }, now, 0)]
            }
            Phase::Holding { until, .. } if until > now && !self.force_abandon => vec![self.wake(Chan::Main, until)],
            Phase::Holding { fence, abandon, .. } => {
                if abandon || self.force_abandon {
                    self.end_holding(now, End::Abandoned, book);
                    self.lease = None;
                    self.gens[Chan::Keep as usize] += 1;
                    self.force_abandon = false;
                    if self.stop_after_abandon {
                        self.done = true;
                        return Vec::new();
                    }
                    self.phase = Phase::Idle { at: now + rng.gen_range(50..500) };
                    return self.drive(now, rng, book);
                }
                // The release is sent now: the belief ends here.
                self.end_holding(now, End::Released, book);
                self.phase = Phase::Releasing;
                let del = WriteOp::Delete { key: LOCK_KEY.into(), guard: Some(Guard::Version(fence)) };
                vec![self.request(Chan::Main, Step::Release, del, now, 0)]
            }
            Phase::Granting | Phase::Acquiring | Phase::Releasing | Phase::Revoking => Vec::new(),
        }
    }

    /// Begin: the first round starts at `at`.
    pub(super) fn start(&mut self, at: u64) -> Vec<Cmd> {
        self.phase = Phase::Idle { at };
        vec![self.wake(Chan::Main, at)]
    }

    /// A wake of `chan` came (and is current).
    pub(super) fn on_wake(&mut self, chan: Chan, now: u64, rng: &mut ChaCha8Rng, book: &mut LockBook) -> Vec<Cmd> {
        if self.done {
            return Vec::new();
        }
        match chan {
            Chan::Main => self.drive(now, rng, book),
            Chan::Keep => self.keep(now, rng, book),
        }
    }

    /// The keepalive loop: lapse if the belief ran out, send a keepalive if due, wake again.
    fn keep(&mut self, now: u64, rng: &mut ChaCha8Rng, book: &mut LockBook) -> Vec<Cmd> {
        let Some(h) = self.lease else { return Vec::new() };
        let until = self.valid_until().unwrap();
        if now >= until {
            // No acknowledgement for a TTL: the lease may be gone. Give the round up.
            self.give_up_round(now, End::Lapsed, true, rng, book);
            return self.drive(now, rng, book);
        }
        let mut cmds = Vec::new();
        let idle = self.inflight[Chan::Keep as usize].is_none();
        if idle && now >= h.keep_next {
            cmds.push(self.request(Chan::Keep, Step::KeepAlive, WriteOp::LeaseKeepAlive { id: h.id }, now, 0));
        }
        let next = if self.inflight[Chan::Keep as usize].is_none() { h.keep_next.min(until) } else { until };
        cmds.push(self.wake(Chan::Keep, next.max(now + 1)));
        cmds
    }

    /// Give the round up (its lease is gone, or may be): end a holding, revoke the lease if it
    /// may live, and start over.
    fn give_up_round(&mut self, now: u64, how: End, revoke: bool, rng: &mut ChaCha8Rng, book: &mut LockBook) {
        self.end_holding(now, how, book);
        if let Some(h) = self.lease.take() {
            if revoke {
                self.to_revoke.push(h.id);
            }
        }
        self.gens[Chan::Keep as usize] += 1;
        self.round += 1;
        self.phase = Phase::Idle { at: now + rng.gen_range(20..200) };
    }

    /// The definite answer to the request on `chan` (`None`: the client gave up on it).
    pub(super) fn on_answer(
        &mut self,
        chan: Chan,
        output: Option<&Output>,
        now: u64,
        rng: &mut ChaCha8Rng,
        book: &mut LockBook,
    ) -> Result<Vec<Cmd>, String> {
        let Some(req) = self.inflight[chan as usize].take() else { return Ok(Vec::new()) };
        // Facts about leases are recorded whatever the client does next.
        match (req.step, output) {
            (Step::Grant, Some(Ok(r))) => {
                book.stats.grants += 1;
                if let WriteOutcome::LeaseGranted { id, ttl_ms } = r.outcome {
                    book.owned.insert(id, self.id);
                    book.ack(id, ttl_ms, req.sent)?;
                }
            }
            (Step::KeepAlive, Some(Ok(r))) => {
                book.stats.keepalives_ok += 1;
                if let WriteOutcome::LeaseKept { id, ttl_ms } = r.outcome {
                    book.ack(id, ttl_ms, req.sent)?;
                }
            }
            (_, Some(Err(WriteError::LeaseTtl { .. } | WriteError::TooManyLeases { .. } | WriteError::TooManyLeaseKeys { .. }))) => {
                return Err(format!("lock client {}: {:?} refused: {output:?}", self.id, req.op));
            }
            _ => {}
        }
        if self.done {
            return Ok(Vec::new());
        }
        let stale = req.round != self.round;
        let mut cmds = Vec::new();
        match (req.step, output) {
            (Step::KeepAlive, out) => {
                let this = self.lease.filter(|h| matches!(req.op, WriteOp::LeaseKeepAlive { id } if id == h.id));
                if let Some(mut h) = this {
                    match out {
                        Some(Ok(_)) => {
                            h.last_ok = h.last_ok.max(req.sent);
                            h.keep_next = req.sent + h.ttl / 3;
                        }
                        Some(Err(WriteError::LeaseNotFound { .. })) => {
                            self.give_up_round(now, End::Lost, false, rng, book);
                            return Ok(self.drive(now, rng, book));
                        }
                        // Not applied (or unknown): send another soon.
                        _ => h.keep_next = now + 20,
                    }
                    self.lease = Some(h);
                }
                // (An answer about an older lease: the current one's keepalives go on.)
                if self.lease.is_some() {
                    cmds.extend(self.keep(now, rng, book));
                }
                return Ok(cmds);
            }
            (Step::Grant, Some(Ok(r))) if !stale => {
                if let WriteOutcome::LeaseGranted { id, ttl_ms } = r.outcome {
                    self.lease = Some(Held { id, ttl: ttl_ms, last_ok: req.sent, keep_next: req.sent + ttl_ms / 3 });
                    self.phase = Phase::Acquire { at: now };
                    cmds.extend(self.keep(now, rng, book));
                }
            }
            (Step::Grant, Some(Ok(r))) => {
                if let WriteOutcome::LeaseGranted { id, .. } = r.outcome {
                    self.to_revoke.push(id);
                }
            }
            // Not granted (a cluster below version 3 answers `Malformed`), or unknown (a lease
            // may have been granted: it expires unused).
            (Step::Grant, _) if !stale => self.phase = Phase::Idle { at: now + rng.gen_range(100..500) },
            (Step::Acquire, out) => {
                let lease = match req.op {
                    WriteOp::Leased { lease, .. } => lease,
                    _ => unreachable!(),
                };
                let mine = match out {
                    Some(Ok(r)) => Some(r.index),
                    Some(Err(WriteError::GuardFailed { current: Some(c), .. })) if c.value == self.value.as_bytes() => {
                        book.stats.acquired_by_retry += 1;
                        Some(c.version)
                    }
                    _ => None,
                };
                let current = !stale && self.lease.is_some_and(|h| h.id == lease);
                match (mine, out) {
                    (Some(fence), _) if current && self.valid_until().is_some_and(|v| v > now) => {
                        book.begin(self.id, now);
                        let until = now + rng.gen_range(100..2_500);
                        let abandon = rng.gen_ratio(1, 3);
                        self.phase = Phase::Holding { fence, since: now, until, abandon };
                    }
                    // Taken, but the belief already ran out (or the round was given up): the
                    // key hangs on that lease, which is revoked.
                    (Some(_), _) => {
                        if current {
                            self.give_up_round(now, End::Lapsed, true, rng, book);
                        } else if !self.to_revoke.contains(&lease) {
                            self.to_revoke.push(lease);
                        }
                    }
                    _ if !current => {}
                    (None, Some(Err(WriteError::LeaseNotFound { .. }))) => self.give_up_round(now, End::Lost, false, rng, book),
                    (None, Some(Err(WriteError::GuardFailed { .. }))) => {
                        book.stats.contended += 1;
                        self.phase = Phase::Acquire { at: now + rng.gen_range(100..400) };
                    }
                    // Unknown or refused: try again (a failed guard showing its own value will
                    // tell if it applied).
                    (None, _) => self.phase = Phase::Acquire { at: now + rng.gen_range(20..200) },
                }
            }
            (Step::Release, _) if !stale => {
                // Released, already gone, or unknown: revoking the lease deletes the key anyway.
                if let Some(h) = self.lease.take() {
                    self.gens[Chan::Keep as usize] += 1;
                    self.to_revoke.push(h.id);
                }
                self.phase = Phase::Revoking;
            }
            (Step::Revoke, _) if matches!(self.phase, Phase::Revoking) && self.to_revoke.is_empty() => {
                self.phase = Phase::Idle { at: now + rng.gen_range(50..500) };
            }
            _ => {}
        }
        if let Phase::Revoking = self.phase {
            if self.to_revoke.is_empty() && self.inflight[Chan::Main as usize].is_none() && req.step != Step::Release {
                self.phase = Phase::Idle { at: now + rng.gen_range(50..500) };
            }
        }
        cmds.extend(self.drive(now, rng, book));
        Ok(cmds)
    }

    /// Stop (the run ends): close a holding.
    pub(super) fn stop(&mut self, now: u64, book: &mut LockBook) {
        self.end_holding(now, End::Stopped, book);
        self.done = true;
    }

    /// The liveness probe's victim: abandon at once (if holding) and stop.
    pub(super) fn make_victim(&mut self) {
        self.force_abandon = true;
        self.stop_after_abandon = true;
    }
}
