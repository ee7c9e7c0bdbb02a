//! The ghost observer: a global view no replica has, used only to check invariants.
//!
//! It watches every `Persist` (an acceptor's vote) and decides "chosen" itself, by counting the
//! votes for a (slot, ballot) against the configuration that governs the slot according to the
//! values it saw chosen before. Each check names the rule it protects.

use crate::config::Configuration;
use crate::ids::{Ballot, Incarnation, Member, NodeId, RequestId, Slot};
use crate::message::{AcceptedEntry, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Votes for one (slot, ballot).
#[derive(Debug)]
struct Votes {
    value: Value,
    voters: BTreeSet<Member>,
}

/// What the ghost knows.
#[derive(Debug)]
pub struct Ghost {
    bootstrap: Configuration,
    votes: BTreeMap<Slot, BTreeMap<Ballot, Votes>>,
    /// The one value chosen per slot (PMS 2.1: safety).
    pub chosen: BTreeMap<Slot, Value>,
    /// Request ids of chosen values, by id.
    pub chosen_ids: BTreeMap<RequestId, Slot>,
    /// Configurations chosen, keyed by slot (each governs the slots after it).
    configs: BTreeMap<Slot, Configuration>,
    /// Every command handed to `propose` that was accepted, with its payload.
    pub proposed: BTreeMap<RequestId, Vec<u8>>,
    /// Every `Reconfigure` id proposed.
    pub proposed_configs: BTreeSet<RequestId>,
    /// Ids reported lost.
    pub lost: BTreeSet<RequestId>,
    /// Highest promise per voting identity.
    promised: BTreeMap<(NodeId, Incarnation), Ballot>,
    /// The value first applied per slot anywhere, and the state hash after it.
    pub applied: BTreeMap<Slot, (Value, u64)>,
}

impl Ghost {
    pub fn new(bootstrap: Configuration) -> Self {
        Ghost {
            bootstrap,
            votes: BTreeMap::new(),
            chosen: BTreeMap::new(),
            chosen_ids: BTreeMap::new(),
            configs: BTreeMap::new(),
            proposed: BTreeMap::new(),
            proposed_configs: BTreeSet::new(),
            lost: BTreeSet::new(),
            promised: BTreeMap::new(),
            applied: BTreeMap::new(),
        }
    }

    /// The configuration governing `slot`, from the reconfigurations seen chosen below it.
    pub fn config_for(&self, slot: Slot) -> &Configuration {
        self.configs.range(..slot).next_back().map_or(&self.bootstrap, |(_, c)| c)
    }

    /// Since which slot `member` has been a member without a break, in the configurations chosen
    /// at or below `upto` (the bootstrap configuration counts from slot 0).
    pub fn member_since(&self, member: &Member, upto: Slot) -> Slot {
        let chain = std::iter::once((Slot(0), &self.bootstrap)).chain(self.configs.range(..=upto).map(|(s, c)| (*s, c)));
        let all: Vec<(Slot, &Configuration)> = chain.collect();
        let mut since = Slot(0);
        for (slot, config) in all.into_iter().rev() {
            if !config.members().any(|m| m == member) {
                break;
            }
            since = slot;
        }
        since
    }

    /// Every configuration that governs some slot after `slot`.
    pub fn configs_after(&self, slot: Slot) -> Vec<&Configuration> {
        let mut v = vec![self.config_for(slot.next())];
        v.extend(self.configs.range(slot.next()..).map(|(_, c)| c));
        v
    }

    /// The newest configuration chosen.
    pub fn latest_config(&self) -> &Configuration {
        self.configs.values().next_back().unwrap_or(&self.bootstrap)
    }

    /// An acceptor persisted a promise: promises never go back within an incarnation.
    pub fn promise(&mut self, m: Member, b: Ballot) -> Result<(), String> {
        let e = self.promised.entry((m.node, m.incarnation)).or_insert(Ballot::ZERO);
        if b < *e {
            return Err(format!("promise of {m} went back from {} to {b}", *e));
        }
        *e = b;
        Ok(())
    }

    /// The highest ballot `m` promised so far (zero if none).
    pub fn promised_to(&self, m: Member) -> Ballot {
        self.promised.get(&(m.node, m.incarnation)).copied().unwrap_or(Ballot::ZERO)
    }

    /// Forget an identity's promise (only for the `amnesia_vote` negative test).
    pub fn forget_promise(&mut self, m: Member) {
        self.promised.remove(&(m.node, m.incarnation));
    }

    /// An acceptor persisted an accepted value.
    pub fn vote(&mut self, m: Member, e: &AcceptedEntry) -> Result<(), String> {
        let p = self.promised.get(&(m.node, m.incarnation)).copied().unwrap_or(Ballot::ZERO);
        if e.ballot < p {
            return Err(format!("{m} accepted slot {} in ballot {} below its promise {p}", e.slot, e.ballot));
        }
        let v = self.votes.entry(e.slot).or_default().entry(e.ballot).or_insert_with(|| Votes { value: e.value.clone(), voters: BTreeSet::new() });
        // One value per slot per ballot: the leader's rule that learning from a commit relies on.
        if v.value != e.value {
            return Err(format!("two values in slot {} ballot {}: {:?} and {:?}", e.slot, e.ballot, v.value, e.value));
        }
        v.voters.insert(m);
        self.check_chosen(e.slot, e.ballot)
    }

    fn check_chosen(&mut self, slot: Slot, ballot: Ballot) -> Result<(), String> {
        let Some(v) = self.votes.get(&slot).and_then(|b| b.get(&ballot)) else { return Ok(()) };
        if !self.config_for(slot).is_quorum(v.voters.iter()) {
            return Ok(());
        }
        let value = v.value.clone();
        match self.chosen.get(&slot) {
            Some(c) if *c != value => Err(format!("slot {slot} chosen twice: {c:?} and then {value:?} (ballot {ballot})")),
            Some(_) => Ok(()),
            None => self.on_chosen(slot, value),
        }
    }

    fn on_chosen(&mut self, slot: Slot, value: Value) -> Result<(), String> {
        match &value {
            Value::Noop => {}
            Value::Batch(cmds, _) => {
                for c in cmds {
                    if self.proposed.get(&c.id) != Some(&c.payload) {
                        return Err(format!("slot {slot} chose command {:?} that nobody proposed", c.id));
                    }
                }
            }
            Value::Reconfigure { id, .. } => {
                if !self.proposed_configs.contains(id) {
                    return Err(format!("slot {slot} chose reconfiguration {id:?} that nobody proposed"));
                }
            }
        }
        for id in value.request_ids() {
            if self.lost.contains(&id) {
                return Err(format!("{id:?} was reported lost but is chosen in slot {slot}"));
            }
            if let Some(prev) = self.chosen_ids.insert(id, slot) {
                return Err(format!("{id:?} chosen twice, in slots {prev} and {slot}"));
            }
        }
        let reconfig = matches!(value, Value::Reconfigure { .. });
        self.chosen.insert(slot, value);
        if reconfig {
            self.rebuild_configs();
            // Votes for later slots count against the new configuration from now on.
            let later: Vec<(Slot, Ballot)> =
                self.votes.range(slot.next()..).flat_map(|(s, bs)| bs.keys().map(move |b| (*s, *b))).collect();
            for (s, b) in later {
                self.check_chosen(s, b)?;
            }
        }
        Ok(())
    }

    fn rebuild_configs(&mut self) {
        self.configs.clear();
        let mut current = self.bootstrap.clone();
        let changes: Vec<(Slot, crate::ConfigChange)> = self
            .chosen
            .iter()
            .filter_map(|(s, v)| match v {
                Value::Reconfigure { change, .. } => Some((*s, *change)),
                _ => None,
            })
            .collect();
        for (s, change) in changes {
            if let Ok(next) = current.apply(&change) {
                self.configs.insert(s, next.clone());
                current = next;
            }
        }
    }

    /// A replica reported a proposal lost: it must not be chosen, now or later.
    pub fn report_lost(&mut self, id: RequestId) -> Result<(), String> {
        if let Some(s) = self.chosen_ids.get(&id) {
            return Err(format!("{id:?} reported lost but chosen in slot {s}"));
        }
        self.lost.insert(id);
        Ok(())
    }

}
