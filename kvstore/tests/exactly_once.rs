//! Exactly-once under pressure: a tiny session table, a short TTL, and proposers whose clocks are
//! 25 hours apart and jump. quickcheck drives random mixes of new requests, retries, stale
//! numbers, reused sequence numbers / idempotency keys with another request, and snapshot
//! restores; after every step the harness checks:
//!
//! * a request applies at most once while its session lives, and a session disappears only by
//!   expiry (idle for more than `ttl`) or, when a new session finds the table full, by eviction of
//!   the least recently active one, idle for more than `min_ttl` (the guaranteed window): never
//!   inside that window;
//! * a retry while the session lives gets the first result;
//! * a reused sequence number or idempotency key with another request applies nothing;
//! * the table never holds more than `max_sessions`;
//! * the log clock never goes back, never moves on a change of proposer, and moves at most by
//!   what the same proposer measured since its previous request, capped at `max_clock_step_ms`.

use kvstore::*;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::collections::BTreeMap;

const HOUR: u64 = 60 * 60 * 1000;
const TTL: u64 = 1_000;
const STEP: u64 = 300;
const MAX_SESSIONS: usize = 3;
/// The window a session is kept even when the table is full.
const MIN_TTL: u64 = 400;
const CLIENTS: u64 = 6;
/// Clients at or above this behave like REST idempotency keys: always sequence number 1.
const FIRST_KEY_CLIENT: u64 = 4;
/// Each proposer's clock origin: 25 h ahead, in step, and 25 h behind proposer 1.
const ORIGIN: [u64; 3] = [50 * HOUR, 25 * HOUR, 0];

fn config() -> StoreConfig {
    StoreConfig { session_ttl_ms: TTL, session_min_ttl_ms: MIN_TTL, max_sessions: MAX_SESSIONS, max_clock_step_ms: STEP, ..StoreConfig::default() }
}

#[derive(Debug, Clone)]
struct Ev {
    proposer: u8,
    advance_ms: u16,
    jump: bool,
    client: u8,
    kind: u8,
}

impl Arbitrary for Ev {
    fn arbitrary(g: &mut Gen) -> Self {
        Ev {
            proposer: u8::arbitrary(g) % 3,
            advance_ms: u16::arbitrary(g) % 400,
            jump: u8::arbitrary(g) % 25 == 0,
            client: u8::arbitrary(g),
            kind: u8::arbitrary(g) % 11,
        }
    }
}

/// What a client last sent: its sequence number and request id (the key its `Incr` counts in).
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    id: u64,
}

fn incr(id: u64) -> WriteOp {
    WriteOp::Incr { key: format!("r{id}").into_bytes(), delta: 1, initial: 0 }
}

fn applied(s: &Store, id: u64) -> i64 {
    s.get(format!("r{id}").as_bytes()).map_or(0, |v| String::from_utf8(v.value).unwrap().parse().unwrap())
}

fn run(events: Vec<Ev>) -> bool {
    let mut s = Store::new(config());
    let mut mono = [0u64; 3];
    let mut next_id = 0u64;
    let mut index = 0u64;
    let mut sent: BTreeMap<u64, Sent> = BTreeMap::new();
    // (client, seq) -> the request id that applied under it, and its output.
    let mut first: BTreeMap<(u64, u64), (u64, Output)> = BTreeMap::new();
    let mut last_stamp: Option<Stamp> = None;
    // The step at which each request id first applied, and the steps at which each client's
    // session disappeared (by expiry): a request may apply again only after its session did.
    let mut applied_at: BTreeMap<u64, usize> = BTreeMap::new();
    let mut vanished: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (step, ev) in events.into_iter().enumerate() {
        if ev.kind == 10 {
            let chunks: Vec<Vec<u8>> = s.snapshot(97).collect();
            let r = Store::restore(config(), &chunks).expect("round trip");
            assert_eq!(r, s);
            s = r;
            continue;
        }
        let p = usize::from(ev.proposer);
        mono[p] += u64::from(ev.advance_ms) + if ev.jump { 25 * HOUR } else { 0 };
        let stamp = Stamp::new(p as u64, 1, ORIGIN[p] + mono[p]);
        let client = u64::from(ev.client) % CLIENTS;
        let keyed = client >= FIRST_KEY_CLIENT;
        let mut fresh = |sent_seq: u64| {
            next_id += 1;
            Sent { seq: sent_seq, id: next_id }
        };
        // Pick the request to send.
        let (req, kind) = match (ev.kind, sent.get(&client).copied()) {
            (0..=4, prev) | (_, prev @ None) => {
                let seq = if keyed { 1 } else { prev.map_or(1, |p| p.seq + 1) };
                let r = fresh(seq);
                sent.insert(client, r);
                (r, "new")
            }
            (5..=7, Some(prev)) => (prev, "retry"),
            (8, Some(prev)) => (fresh(prev.seq), "reuse"),
            // An older number, for another request (a client never sends one request under two
            // numbers: the store could not tell they are the same).
            (_, Some(prev)) => (fresh(prev.seq.saturating_sub(1).max(1)), "stale"),
        };
        let session = SessionRef { client: ClientId(client), seq: req.seq };
        let live_before = s.sessions().get(ClientId(client)).cloned();
        let sessions_before: BTreeMap<ClientId, u64> = s.sessions().iter().map(|(c, e)| (*c, e.last_active_ms)).collect();
        let count_before = applied(&s, req.id);
        let clock_before = s.log_clock_ms();
        index += 1;
        let out = s.apply_request(index, &Request { session: Some(session), stamp, op: incr(req.id) });
        let clock = s.log_clock_ms();
        let count = applied(&s, req.id);
        // The entry as the session check saw it: after this request's own expiry pass.
        let live_before = live_before.filter(|e| clock - e.last_active_ms <= TTL);

        // The log clock.
        assert!(clock >= clock_before, "the log clock went back");
        let measured = match last_stamp {
            Some(l) if l.same_proposer(&stamp) => stamp.mono_ms.saturating_sub(l.mono_ms),
            _ => 0,
        };
        assert!(clock - clock_before <= measured.min(STEP), "clock moved {} with {measured} measured", clock - clock_before);
        if last_stamp.is_none_or(|l| !l.same_proposer(&stamp) || stamp.mono_ms > l.mono_ms) {
            last_stamp = Some(stamp);
        }

        // No session disappears inside its window: only by expiry, or evicted (the least
        // recently active, idle beyond the guaranteed window) for a new session at a full table.
        let oldest_before = sessions_before.iter().filter(|(_, t)| clock - **t <= TTL).map(|(c, t)| (*t, *c)).min();
        let admitted_new = live_before.is_none() && s.sessions().get(ClientId(client)).is_some();
        for (c, last_active) in &sessions_before {
            let evicted = s.sessions().get(*c).is_none() && clock - last_active <= TTL;
            if evicted {
                assert!(admitted_new, "session {c:?} dropped at {clock} (last active {last_active}) without a new session");
                assert!(clock - last_active > MIN_TTL, "session {c:?} evicted inside the guaranteed window");
                assert_eq!(oldest_before, Some((*last_active, *c)), "only the least recently active is evicted");
            }
            if clock - last_active > TTL || s.sessions().get(*c).is_none() {
                // Expired or evicted at this step (this request may have started a new one under its id).
                vanished.entry(c.0).or_default().push(step);
            }
        }
        assert!(s.sessions().len() <= MAX_SESSIONS);

        // At most once within the window: again only once the session that applied it expired.
        if count > count_before {
            if let Some(&at) = applied_at.get(&req.id) {
                let expired_since = vanished.get(&client).is_some_and(|v| v.iter().any(|&x| x >= at));
                assert!(expired_since, "request {} applied again while its session lived ({kind})", req.id);
            }
            applied_at.insert(req.id, step);
        }
        match &out {
            Err(WriteError::RequestMismatch { .. }) => {
                assert!(live_before.is_some());
                assert_eq!(count, count_before, "a mismatched request applied");
            }
            Err(WriteError::SessionsFull { .. }) => {
                assert!(live_before.is_none());
                assert_eq!(count, count_before);
            }
            Err(WriteError::SessionExpired { .. }) => {
                assert!(live_before.is_none());
                assert_eq!(count, count_before);
                sent.remove(&client); // the client starts a new session
            }
            _ => {}
        }
        if let Some(e) = &live_before {
            let owner = first.get(&(client, req.seq)).map(|f| f.0);
            if e.seq == req.seq && owner.is_some_and(|o| o != req.id) {
                assert!(matches!(out, Err(WriteError::RequestMismatch { .. })), "another request's result for a reused number: {out:?}");
            }
        }
        if let (Some(e), Some((owner, first_out))) = (&live_before, first.get(&(client, req.seq))) {
            if e.seq == req.seq && *owner == req.id {
                assert_eq!(&out, first_out, "a retry ({kind}) got another answer");
                assert_eq!(count, count_before, "a retry applied");
            }
        }
        if count > count_before {
            first.insert((client, req.seq), (req.id, out.clone()));
        }
    }
    true
}

#[test]
fn each_request_applies_at_most_once_within_its_window() {
    QuickCheck::new().tests(500).max_tests(2_000).rng(Gen::new(120)).quickcheck(run as fn(Vec<Ev>) -> bool);
}

/// The same, with long runs, so sessions fill the table, expire, get evicted, and get refused.
#[test]
fn long_runs_fill_expire_and_refuse() {
    let mut g = Gen::new(400);
    let mut full = 0;
    let mut evicted = 0;
    for _ in 0..60 {
        let evs: Vec<Ev> = (0..400).map(|_| Ev::arbitrary(&mut g)).collect();
        let mut s = Store::new(config());
        // Count refusals on a plain replay to show the cap was reached.
        for (i, e) in evs.iter().enumerate() {
            let p = usize::from(e.proposer);
            let req = Request {
                session: Some(SessionRef { client: ClientId(u64::from(e.client) % CLIENTS), seq: 1 }),
                stamp: Stamp::new(p as u64, 1, i as u64 * 50),
                op: incr(i as u64),
            };
            let before: Vec<(ClientId, u64)> = s.sessions().iter().map(|(c, e)| (*c, e.last_active_ms)).collect();
            if matches!(s.apply_request(i as u64 + 1, &req), Err(WriteError::SessionsFull { .. })) {
                full += 1;
            }
            let clock = s.log_clock_ms();
            evicted += before.iter().filter(|(c, t)| clock - t <= TTL && s.sessions().get(*c).is_none()).count();
        }
        assert!(run(evs));
    }
    assert!(full > 0, "the cap was never reached");
    assert!(evicted > 0, "no session was ever evicted for a new one");
}
