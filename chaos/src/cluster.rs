//! The cluster as the test sees it from the host: replica endpoints, `/v1/status`, the leader.

use crate::http::Http;
use serde_json::Value;
use std::time::Duration;

/// One replica's `/v1/status`, the fields the test uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Its id.
    pub id: u64,
    /// Its incarnation: the same after a durable restart, a new one after an amnesia restart.
    pub incarnation: u64,
    /// `leader`, `follower`, `candidate`, `learner`.
    pub role: String,
    /// Who it thinks leads.
    pub leader: Option<u64>,
    /// Its ballot `(round, node)`.
    pub ballot: (u64, u64),
    /// Its store index.
    pub index: u64,
    /// Its commit slot.
    pub commit: u64,
    /// Members and their state (`acceptor`, `learner`).
    pub members: Vec<(u64, String)>,
    /// The state hash, if the driver exposes one.
    pub state_hash: Option<String>,
}

impl Status {
    /// Read the fields from the JSON body.
    pub fn from_json(j: &Value) -> Option<Status> {
        Some(Status {
            id: j["id"].as_u64()?,
            incarnation: j["incarnation"].as_u64().unwrap_or(0),
            role: j["role"].as_str().unwrap_or("?").to_string(),
            leader: j["leader"].as_u64(),
            ballot: (j["ballot"]["round"].as_u64().unwrap_or(0), j["ballot"]["node"].as_u64().unwrap_or(0)),
            index: j["index"].as_u64().unwrap_or(0),
            commit: j["commit_slot"].as_u64().unwrap_or(0),
            members: j["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| Some((m["id"].as_u64()?, m["state"].as_str().unwrap_or("?").to_string())))
                .collect(),
            state_hash: match &j["state_hash"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            },
        })
    }
}

/// The replicas, reached through their published ports.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Base URLs, index `i` is replica `i + 1`.
    pub endpoints: Vec<String>,
    /// The client.
    pub http: Http,
}

impl Cluster {
    /// Replicas `1..=n` on `127.0.0.1:8081..`.
    pub fn local(n: usize) -> Cluster {
        Cluster {
            endpoints: (1..=n).map(|i| format!("http://127.0.0.1:{}", crate::compose::host_port(i))).collect(),
            http: Http::new(),
        }
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Replica `id`'s (1-based) base URL.
    pub fn url(&self, id: u64) -> &str {
        &self.endpoints[(id - 1) as usize]
    }

    /// Replica `id`'s status, if it answers within a second.
    pub async fn status(&self, id: u64) -> Option<Status> {
        let r = self.http.get(&format!("{}/v1/status", self.url(id)), Duration::from_secs(1)).await.ok()?;
        if r.status != 200 {
            return None;
        }
        Status::from_json(&r.json())
    }

    /// Every replica's status (None where it does not answer), asked in parallel.
    pub async fn statuses(&self) -> Vec<Option<Status>> {
        let handles: Vec<_> = (1..=self.len() as u64)
            .map(|id| {
                let c = self.clone();
                tokio::spawn(async move { c.status(id).await })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.ok().flatten());
        }
        out
    }

    /// The leader: a replica that says it leads, with the highest ballot among such claims,
    /// and that at least one other replica (or only itself, on a single-replica cluster) names.
    pub async fn leader(&self, excluding: &[u64]) -> Option<u64> {
        let all = self.statuses().await;
        leader_of(&all, excluding)
    }

    /// Poll until a leader not in `excluding` is known, for at most `within`.
    pub async fn wait_leader(&self, excluding: &[u64], within: Duration) -> Option<u64> {
        self.wait_leader_above(excluding, (0, 0), within).await.map(|(l, _)| l)
    }

    /// Poll until a leader not in `excluding`, with a ballot above `ballot`, is known; returns
    /// it with its ballot.
    pub async fn wait_leader_above(&self, excluding: &[u64], ballot: (u64, u64), within: Duration) -> Option<(u64, (u64, u64))> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let all = self.statuses().await;
            if let Some(l) = leader_of(&all, excluding) {
                let b = all.iter().flatten().find(|s| s.id == l).map_or((0, 0), |s| s.ballot);
                if b > ballot {
                    return Some((l, b));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The value of the counter or gauge `name` (no labels) on replica `id`'s `/metrics`.
    pub async fn metric(&self, id: u64, name: &str) -> Option<f64> {
        let r = self.http.get(&format!("{}/metrics", self.url(id)), Duration::from_secs(2)).await.ok()?;
        if r.status != 200 {
            return None;
        }
        metric_value(&r.text(), name)
    }

    /// Whether replica `id` answers `/livez`.
    pub async fn live(&self, id: u64) -> bool {
        matches!(self.http.get(&format!("{}/livez", self.url(id)), Duration::from_secs(1)).await, Ok(r) if r.status == 200)
    }
}

/// Pick the leader from a set of status answers (see [`Cluster::leader`]).
pub fn leader_of(all: &[Option<Status>], excluding: &[u64]) -> Option<u64> {
    let claims = all.iter().flatten().filter(|s| s.role == "leader" && !excluding.contains(&s.id));
    let best = claims.max_by_key(|s| s.ballot)?;
    let answering = all.iter().flatten().count();
    let named = all.iter().flatten().filter(|s| s.id != best.id && s.leader == Some(best.id)).count();
    (named > 0 || answering == 1).then_some(best.id)
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(id: u64, role: &str, leader: Option<u64>, round: u64) -> Option<Status> {
        Some(Status {
            id,
            incarnation: 1,
            role: role.into(),
            leader,
            ballot: (round, leader.unwrap_or(0)),
            index: 0,
            commit: 0,
            members: vec![],
            state_hash: None,
        })
    }

    #[test]
    fn the_leader_is_a_claim_others_confirm() {
        // A stale leader (round 1) still claiming, the real one (round 2) named by a follower.
        let all = vec![st(1, "leader", Some(1), 1), st(2, "leader", Some(2), 2), st(3, "follower", Some(2), 2), None];
        assert_eq!(leader_of(&all, &[]), Some(2));
        // Excluding the real one leaves the stale claim, which nobody else names.
        assert_eq!(leader_of(&all, &[2]), None);
        // Nobody claims: no leader.
        assert_eq!(leader_of(&[st(1, "follower", Some(3), 1), None], &[]), None);
    }

    #[test]
    fn status_json_parses() {
        let j = serde_json::json!({"id": 3, "incarnation": 12, "role": "follower", "leader": 1, "ballot": {"round": 4, "node": 1},
            "index": 17, "commit_slot": 20, "members": [{"id": 1, "state": "acceptor"}, {"id": 6, "state": "learner"}]});
        let s = Status::from_json(&j).expect("parses");
        assert_eq!((s.id, s.leader, s.ballot, s.index, s.commit), (3, Some(1), (4, 1), 17, 20));
        assert_eq!(s.members, vec![(1, "acceptor".to_string()), (6, "learner".to_string())]);
        assert_eq!(s.state_hash, None);
        assert_eq!(s.incarnation, 12);
    }

    #[test]
    fn metrics_parse() {
        let text = "# HELP synod_durable_restarts Restarts.\n# TYPE synod_durable_restarts counter\nsynod_durable_restarts_total 1\nsynod_durable_restarts_created 9\nsynod_data_dirs_refused_total 0\n";
        assert_eq!(metric_value(text, "synod_durable_restarts_total"), Some(1.0));
        assert_eq!(metric_value(text, "synod_data_dirs_refused_total"), Some(0.0));
        assert_eq!(metric_value(text, "synod_durable_restarts"), None, "a prefix is not the name");
        assert_eq!(metric_value(text, "synod_missing"), None);
    }
}
