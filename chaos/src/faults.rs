//! Injecting the planned faults from the host, verifying each one took hold, and healing it.
//!
//! Each fault goes through inject → verify → hold → heal → verify-healed, and ends as a
//! [`FaultRecord`]. Verification asks Docker (the container stopped with exit code 137, is
//! paused, left the network) and the cluster: a different replica leads while the old leader is
//! down or cut off, and a killed replica comes back with the **same incarnation** (the compose
//! cluster is durable: each replica has its data directory on a named volume, so a restart
//! keeps its promises and votes and it is an acceptor again at once, with no rejoin). A fault
//! that could not be injected or verified is recorded as such, and the verdict fails the run: a
//! test must not pass without its faults.

use crate::cluster::Cluster;
use crate::docker::Docker;
use crate::schedule::{choose, minority_size, FaultKind, PlannedFault};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long a new leader may take after the old one dies or is cut off (etcd lease TTL 5 s,
/// then a phase 1).
pub const LEADER_CHANGE_WITHIN: Duration = Duration::from_secs(20);

/// How long every replica may take to answer again after a power cut's `docker start`.
pub const POWER_BACK_WITHIN: Duration = Duration::from_secs(60);

/// What became of one planned fault.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRecord {
    /// Seconds from the start of the load.
    pub at_secs: f64,
    /// What was planned.
    pub kind: FaultKind,
    /// The containers it hit (`synod-3`, `etcd-2`).
    pub targets: Vec<String>,
    /// How it ended.
    pub status: FaultStatus,
    /// What was observed: the evidence that it happened, or why not.
    pub evidence: Vec<String>,
}

/// How a fault ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// Injected, verified, healed.
    Done,
    /// The cluster does not offer what the fault needs (the membership API).
    NotSupported,
    /// It could not be injected, verified or healed.
    Failed,
}

/// Runs faults against a cluster.
pub struct Injector {
    /// The containers.
    pub docker: Docker,
    /// The replicas.
    pub cluster: Cluster,
    /// The side network for minority splits.
    pub side_network: String,
    /// When the load started.
    pub t0: Instant,
    /// Replicas started by join faults so far (each gets a fresh id).
    pub joins: std::sync::atomic::AtomicU64,
}

struct Run {
    targets: Vec<String>,
    evidence: Vec<String>,
}

impl Run {
    fn note(&mut self, s: impl Into<String>) {
        self.evidence.push(s.into());
    }
}

fn replica(id: u64) -> String {
    format!("synod-{id}")
}

impl Injector {
    /// Inject, verify, hold and heal one fault.
    pub async fn run(&self, f: &PlannedFault) -> FaultRecord {
        let at_secs = self.t0.elapsed().as_secs_f64();
        let mut run = Run { targets: vec![], evidence: vec![] };
        let result = match f.kind {
            FaultKind::KillLeader => self.kill_replica(f, &mut run, true).await,
            FaultKind::KillReplica => self.kill_replica(f, &mut run, false).await,
            FaultKind::PauseReplica => self.pause(f, &mut run).await,
            FaultKind::IsolateReplica => self.isolate(f, &mut run, false).await,
            FaultKind::IsolateLeader => self.isolate(f, &mut run, true).await,
            FaultKind::SplitMinority => self.split(f, &mut run).await,
            FaultKind::KillEtcd => self.kill_etcd(f, &mut run).await,
            FaultKind::JoinLeave => self.join_leave(f, &mut run).await,
            FaultKind::PowerCut => self.power_cut(f, &mut run).await,
        };
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                run.note(format!("FAILED: {e:#}"));
                FaultStatus::Failed
            }
        };
        FaultRecord { at_secs, kind: f.kind, targets: run.targets, status, evidence: run.evidence }
    }

    async fn leader(&self, run: &mut Run) -> anyhow::Result<u64> {
        match self.cluster.wait_leader(&[], LEADER_CHANGE_WITHIN).await {
            Some(l) => Ok(l),
            None => {
                run.note("no leader known before the fault");
                anyhow::bail!("no leader to target within {LEADER_CHANGE_WITHIN:?}")
            }
        }
    }

    /// A replica other than the leader, chosen by `pick`.
    async fn follower(&self, f: &PlannedFault) -> u64 {
        let leader = self.cluster.leader(&[]).await;
        let others: Vec<u64> = (1..=self.cluster.len() as u64).filter(|i| Some(*i) != leader).collect();
        choose(&others, f.pick).unwrap_or(1)
    }

    /// The ballot replica `id` reports (0.0 when it does not answer).
    async fn ballot(&self, id: u64) -> (u64, u64) {
        self.cluster.status(id).await.map_or((0, 0), |s| s.ballot)
    }

    /// After `old` (which led at `old_ballot`) went away: wait for another replica to lead at a
    /// higher ballot, and note it. A higher ballot proves a new phase 1 ran, not a stale claim.
    async fn expect_new_leader(&self, old: u64, old_ballot: (u64, u64), run: &mut Run) -> anyhow::Result<()> {
        let started = Instant::now();
        match self.cluster.wait_leader_above(&[old], old_ballot, LEADER_CHANGE_WITHIN).await {
            Some((new, b)) => {
                run.note(format!(
                    "leader changed {old} -> {new} (ballot {}.{} -> {}.{}) in {:.1}s",
                    old_ballot.0,
                    old_ballot.1,
                    b.0,
                    b.1,
                    started.elapsed().as_secs_f64()
                ));
                Ok(())
            }
            None => anyhow::bail!("no replica other than {old} led within {LEADER_CHANGE_WITHIN:?} after the fault"),
        }
    }

    async fn hold(&self, f: &PlannedFault, since: Instant) {
        let left = f.hold.saturating_sub(since.elapsed());
        tokio::time::sleep(left).await;
    }

    async fn kill_replica(&self, f: &PlannedFault, run: &mut Run, leader: bool) -> anyhow::Result<FaultStatus> {
        let target = if leader {
            self.leader(run).await?
        } else {
            let all: Vec<u64> = (1..=self.cluster.len() as u64).collect();
            choose(&all, f.pick).unwrap_or(1)
        };
        let was_leader = leader || self.cluster.leader(&[]).await == Some(target);
        let old_ballot = self.ballot(target).await;
        let svc = replica(target);
        run.targets.push(svc.clone());
        let incarnation = self.incarnation(target).await?;
        let t = Instant::now();
        self.docker.on(&["kill", "-s", "KILL"], &svc).await?;
        let (s, ok) = self.docker.wait_for(&svc, Duration::from_secs(10), |s| !s.running).await?;
        anyhow::ensure!(ok, "{svc} still running after docker kill");
        anyhow::ensure!(s.exit_code == 137, "{svc} stopped with exit code {}, not 137 (SIGKILL)", s.exit_code);
        run.note(format!(
            "{svc} (incarnation {incarnation}) stopped (exit code {}){}",
            s.exit_code,
            if was_leader { ", it was the leader" } else { "" }
        ));
        if was_leader {
            self.expect_new_leader(target, old_ballot, run).await?;
        }
        self.hold(f, t).await;
        self.docker.on(&["start"], &svc).await?;
        let (_, ok) = self.docker.wait_for(&svc, Duration::from_secs(10), |s| s.running).await?;
        anyhow::ensure!(ok, "{svc} did not start again");
        let started = Instant::now();
        let back = wait_until(Duration::from_secs(30), || self.cluster.live(target)).await;
        anyhow::ensure!(back, "{svc} restarted but its REST API did not answer within 30s");
        run.note(format!("{svc} restarted and answers /livez after {:.1}s", started.elapsed().as_secs_f64()));
        // Durable mode: the process replays its data directory and keeps its incarnation, so it
        // is still a member (no learner phase, no rejoin) and follows the leader at once.
        let answered = Instant::now();
        self.same_incarnation(target, incarnation).await?;
        run.note(format!(
            "{svc} came back with the same incarnation {incarnation} (a durable restart: synod_durable_restarts_total 1, synod_data_dirs_refused_total 0)"
        ));
        let acceptor = wait_until(Duration::from_secs(60), || async {
            self.cluster.status(target).await.is_some_and(|s| s.role == "follower" || s.role == "leader")
                && self.members().await.is_some_and(|(m, _)| m.iter().any(|(i, r, inc)| *i == target && r == "acceptor" && *inc == incarnation))
        })
        .await;
        anyhow::ensure!(acceptor, "{svc} restarted but was not a follower listed as an acceptor of incarnation {incarnation} within 60s");
        run.note(format!(
            "{svc} follows, listed as an acceptor of incarnation {incarnation}, {:.1}s after it answered",
            answered.elapsed().as_secs_f64()
        ));
        Ok(FaultStatus::Done)
    }

    /// Replica `id`'s incarnation from `/v1/status` (it may be settling from the last fault:
    /// 20 s to answer).
    async fn incarnation(&self, id: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + LEADER_CHANGE_WITHIN;
        loop {
            if let Some(s) = self.cluster.status(id).await {
                return Ok(s.incarnation);
            }
            anyhow::ensure!(Instant::now() < deadline, "synod-{id} did not answer /v1/status before the fault");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Check that replica `id`, restarted, reports incarnation `before` (a durable restart) and
    /// that its metrics say so: one durable restart, no data directory refused.
    async fn same_incarnation(&self, id: u64, before: u64) -> anyhow::Result<()> {
        let svc = replica(id);
        let deadline = Instant::now() + Duration::from_secs(30);
        let now = loop {
            if let Some(s) = self.cluster.status(id).await {
                break s.incarnation;
            }
            anyhow::ensure!(Instant::now() < deadline, "{svc} answers /livez but not /v1/status within 30s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let restarts = self.cluster.metric(id, "synod_durable_restarts_total").await;
        let refused = self.cluster.metric(id, "synod_data_dirs_refused_total").await;
        anyhow::ensure!(
            now == before,
            "{svc} came back as incarnation {now}, not {before}: it did not restart from its data directory \
             (synod_durable_restarts_total {restarts:?}, synod_data_dirs_refused_total {refused:?})"
        );
        anyhow::ensure!(
            restarts == Some(1.0) && refused == Some(0.0),
            "{svc} kept incarnation {now} but its metrics disagree: synod_durable_restarts_total {restarts:?}, synod_data_dirs_refused_total {refused:?}"
        );
        Ok(())
    }

    async fn pause(&self, f: &PlannedFault, run: &mut Run) -> anyhow::Result<FaultStatus> {
        let all: Vec<u64> = (1..=self.cluster.len() as u64).collect();
        let target = choose(&all, f.pick).unwrap_or(1);
        let svc = replica(target);
        run.targets.push(svc.clone());
        let t = Instant::now();
        self.docker.on(&["pause"], &svc).await?;
        let (_, ok) = self.docker.wait_for(&svc, Duration::from_secs(5), |s| s.paused).await?;
        anyhow::ensure!(ok, "{svc} not paused after docker pause");
        let answers = self.cluster.live(target).await;
        anyhow::ensure!(!answers, "{svc} is paused but still answers /livez");
        run.note(format!("{svc} paused (docker says Paused, /livez does not answer)"));
        self.hold(f, t).await;
        self.docker.on(&["unpause"], &svc).await?;
        let (_, ok) = self.docker.wait_for(&svc, Duration::from_secs(5), |s| !s.paused).await?;
        anyhow::ensure!(ok, "{svc} still paused after docker unpause");
        let back = wait_until(Duration::from_secs(10), || self.cluster.live(target)).await;
        anyhow::ensure!(back, "{svc} unpaused but /livez does not answer");
        run.note(format!("{svc} unpaused and answers /livez"));
        Ok(FaultStatus::Done)
    }

    /// Disconnect `targets` from the cluster network (and, for a split, attach them to the
    /// side network so they still reach each other), verify, hold, undo.
    async fn cut(&self, targets: &[u64], side: bool, f: &PlannedFault, run: &mut Run, leader: Option<u64>) -> anyhow::Result<FaultStatus> {
        let net = self.docker.network.clone();
        let old_ballot = match leader {
            Some(l) => self.ballot(l).await,
            None => (0, 0),
        };
        let t = Instant::now();
        for id in targets {
            let svc = replica(*id);
            run.targets.push(svc.clone());
            if side {
                self.docker.network("connect", &self.side_network, &svc).await?;
            }
            self.docker.network("disconnect", &net, &svc).await?;
            let (_, ok) = self.docker.wait_for(&svc, Duration::from_secs(5), |s| !s.networks.contains(&net)).await?;
            anyhow::ensure!(ok, "{svc} still on {net} after disconnect");
        }
        run.note(format!(
            "{} disconnected from {net}{}",
            targets.iter().map(|i| replica(*i)).collect::<Vec<_>>().join(", "),
            if side { format!(" and joined {} together", self.side_network) } else { String::new() }
        ));
        let result = match leader {
            Some(old) => self.expect_new_leader(old, old_ballot, run).await,
            None => Ok(()),
        };
        self.hold(f, t).await;
        // Heal even when the verification failed: the rest of the run needs the network back.
        for id in targets {
            let svc = replica(*id);
            self.docker.network("connect", &net, &svc).await?;
            if side {
                self.docker.network("disconnect", &self.side_network, &svc).await?;
            }
            let (_, ok) = self.docker.wait_for(&svc, Duration::from_secs(5), |s| s.networks.contains(&net)).await?;
            anyhow::ensure!(ok, "{svc} not back on {net}");
        }
        run.note("reconnected".to_string());
        result?;
        Ok(FaultStatus::Done)
    }

    async fn isolate(&self, f: &PlannedFault, run: &mut Run, leader: bool) -> anyhow::Result<FaultStatus> {
        if leader {
            let l = self.leader(run).await?;
            run.note(format!("synod-{l} leads"));
            self.cut(&[l], false, f, run, Some(l)).await
        } else {
            let target = self.follower(f).await;
            self.cut(&[target], false, f, run, None).await
        }
    }

    async fn split(&self, f: &PlannedFault, run: &mut Run) -> anyhow::Result<FaultStatus> {
        let n = self.cluster.len();
        let k = minority_size(n);
        anyhow::ensure!(k > 0, "a cluster of {n} has no minority to split off");
        // A rotation starting at `pick`: consecutive ids, so the minority may or may not hold
        // the leader; when it does, the majority must elect another.
        let start = f.pick % n as u64;
        let minority: Vec<u64> = (0..k as u64).map(|j| (start + j) % n as u64 + 1).collect();
        let leader = self.cluster.leader(&[]).await;
        let cut_leader = leader.filter(|l| minority.contains(l));
        if let Some(l) = leader {
            run.note(format!("synod-{l} leads; it is on the {} side", if cut_leader.is_some() { "minority" } else { "majority" }));
        }
        self.cut(&minority, true, f, run, cut_leader).await
    }

    async fn kill_etcd(&self, f: &PlannedFault, run: &mut Run) -> anyhow::Result<FaultStatus> {
        let members = ["etcd-1", "etcd-2", "etcd-3"];
        let svc = choose(&members, f.pick).unwrap_or("etcd-1").to_string();
        run.targets.push(svc.clone());
        let t = Instant::now();
        self.docker.on(&["kill", "-s", "KILL"], &svc).await?;
        let (s, ok) = self.docker.wait_for(&svc, Duration::from_secs(10), |s| !s.running).await?;
        anyhow::ensure!(ok, "{svc} still running after docker kill");
        run.note(format!("{svc} stopped (exit code {})", s.exit_code));
        self.hold(f, t).await;
        self.docker.on(&["start"], &svc).await?;
        let (s, ok) = self.docker.wait_for(&svc, Duration::from_secs(30), |s| s.running && s.health == "healthy").await?;
        anyhow::ensure!(ok, "{svc} restarted but not healthy within 30s (health {:?})", s.health);
        run.note(format!("{svc} restarted and healthy"));
        Ok(FaultStatus::Done)
    }

    /// Kill every replica at once (one `docker kill -s KILL` naming them all), check each
    /// stopped with 137 and none answers, hold, start them all (one `docker start`), then check
    /// that each answers with the incarnation it had before the cut (a durable restart), that a
    /// leader is elected at a ballot above the one before the cut (the promises survived), and
    /// that a write is acknowledged at an index above every index seen before the cut (nothing
    /// acknowledged was rolled back) and read back. The final read-back and the
    /// linearizability check then prove every acknowledged write of the workload survived.
    async fn power_cut(&self, f: &PlannedFault, run: &mut Run) -> anyhow::Result<FaultStatus> {
        let ids: Vec<u64> = (1..=self.cluster.len() as u64).collect();
        let svcs: Vec<String> = ids.iter().map(|i| replica(*i)).collect();
        run.targets.extend(svcs.iter().cloned());
        // Before: a leader, its ballot, every replica's incarnation and the highest index.
        let leader = self.leader(run).await?;
        let old_ballot = self.ballot(leader).await;
        let mut incarnations = BTreeMap::new();
        for id in &ids {
            incarnations.insert(*id, self.incarnation(*id).await?);
        }
        let index_before = self.cluster.statuses().await.iter().flatten().map(|s| s.index).max().unwrap_or(0);
        run.note(format!(
            "before: synod-{leader} leads at ballot {}.{}, highest index {index_before}, incarnations {}",
            old_ballot.0,
            old_ballot.1,
            incarnations.iter().map(|(i, inc)| format!("{i}:{inc}")).collect::<Vec<_>>().join(" ")
        ));

        let t = Instant::now();
        self.docker.on_all(&["kill", "-s", "KILL"], &svcs).await?;
        for svc in &svcs {
            let (s, ok) = self.docker.wait_for(svc, Duration::from_secs(10), |s| !s.running).await?;
            anyhow::ensure!(ok, "{svc} still running after docker kill");
            anyhow::ensure!(s.exit_code == 137, "{svc} stopped with exit code {}, not 137 (SIGKILL)", s.exit_code);
        }
        let finished = self.docker.finished_at(&svcs).await?;
        let spread = finished.iter().copied().fold(f64::MIN, f64::max) - finished.iter().copied().fold(f64::MAX, f64::min);
        for id in &ids {
            anyhow::ensure!(!self.cluster.live(*id).await, "synod-{id} answers /livez after the power cut");
        }
        run.note(format!(
            "all {} replicas killed by one `docker kill -s KILL`: each exited 137, all within {:.0} ms of each other (FinishedAt), none answers",
            svcs.len(),
            spread * 1000.0
        ));
        self.hold(f, t).await;

        let down = t.elapsed();
        self.docker.on_all(&["start"], &svcs).await?;
        let started = Instant::now();
        for svc in &svcs {
            let (_, ok) = self.docker.wait_for(svc, Duration::from_secs(10), |s| s.running).await?;
            anyhow::ensure!(ok, "{svc} did not start again");
        }
        let all_live = wait_until(POWER_BACK_WITHIN, || async {
            let mut all = true;
            for id in &ids {
                all &= self.cluster.live(*id).await;
            }
            all
        })
        .await;
        anyhow::ensure!(all_live, "not every replica answered /livez within {POWER_BACK_WITHIN:?} of docker start");
        run.note(format!(
            "down {:.1}s; all started by one `docker start`, all answer /livez {:.1}s later",
            down.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ));
        for id in &ids {
            self.same_incarnation(*id, incarnations[id]).await?;
        }
        run.note(format!(
            "each of the {} came back with the incarnation it had (durable restarts: synod_durable_restarts_total 1, synod_data_dirs_refused_total 0 on each)",
            ids.len()
        ));
        let Some((new, b)) = self.cluster.wait_leader_above(&[], old_ballot, POWER_BACK_WITHIN).await else {
            anyhow::bail!("no leader above ballot {}.{} within {POWER_BACK_WITHIN:?} of the restart", old_ballot.0, old_ballot.1);
        };
        run.note(format!(
            "synod-{new} leads at ballot {}.{} (above {}.{} before the cut) {:.1}s after the start",
            b.0,
            b.1,
            old_ballot.0,
            old_ballot.1,
            started.elapsed().as_secs_f64()
        ));
        self.write_after_cut(index_before, started, run).await?;
        Ok(FaultStatus::Done)
    }

    /// A write through any replica (30 s), acknowledged above `index_before`, then read back
    /// linearizably through another replica.
    async fn write_after_cut(&self, index_before: u64, started: Instant, run: &mut Run) -> anyhow::Result<()> {
        let key = format!("power-cut-{}", self.t0.elapsed().as_secs());
        let value = format!("{index_before}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0u64;
        let (via, index) = loop {
            let id = i % self.cluster.len() as u64 + 1;
            i += 1;
            let url = format!("{}/v1/kv/{key}", self.cluster.url(id));
            let last = match self.cluster.http.send(hyper::Method::PUT, &url, &[], value.clone().into_bytes(), Duration::from_secs(5)).await {
                Ok(r) if r.status == 200 || r.status == 201 => break (id, r.index.or(r.json()["index"].as_u64()).unwrap_or(0)),
                Ok(r) => format!("synod-{id}: {} {}", r.status, r.problem()),
                Err(e) => format!("synod-{id}: {e}"),
            };
            anyhow::ensure!(Instant::now() < deadline, "no write acknowledged within 30s of the leader's election (last: {last})");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        anyhow::ensure!(
            index > index_before,
            "the write after the power cut was acknowledged at index {index}, not above {index_before} (the highest index before the cut): acknowledged state went back"
        );
        let reader = via % self.cluster.len() as u64 + 1;
        let r = self.cluster.http.get(&format!("{}/v1/kv/{key}", self.cluster.url(reader)), Duration::from_secs(5)).await?;
        anyhow::ensure!(r.status == 200 && r.text() == value, "reading {key} back through synod-{reader}: {} {:?}", r.status, r.text());
        run.note(format!(
            "PUT {key} through synod-{via} acknowledged at index {index} (> {index_before}) {:.1}s after the start, read back through synod-{reader}",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// The membership list as the first replica that answers sees it: `(id, role, incarnation)`
    /// and the epoch.
    async fn members(&self) -> Option<(Vec<(u64, String, u64)>, u64)> {
        for id in 1..=self.cluster.len() as u64 {
            let url = format!("{}/v1/cluster/members", self.cluster.url(id));
            if let Ok(r) = self.cluster.http.get(&url, Duration::from_secs(2)).await {
                if r.status == 200 {
                    let j = r.json();
                    let m = j["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| {
                            Some((m["id"].as_u64()?, m["role"].as_str().unwrap_or("?").to_string(), m["incarnation"].as_u64().unwrap_or(0)))
                        })
                        .collect();
                    return Some((m, j["epoch"].as_u64().unwrap_or(0)));
                }
            }
        }
        None
    }

    /// Start a new replica (`synod node --join` in a container on the cluster network, labelled
    /// with the compose project so `down --remove-orphans` removes it too), wait until the
    /// leader has made it an acceptor, then remove it (`DELETE /v1/cluster/members/{id}`) and
    /// wait until the configuration no longer holds it. The joiner runs durable like the
    /// founders (`SYNOD_DATA_DIR=/data`), but on a tmpfs rather than a named volume: it is
    /// never restarted (it is removed, then `docker rm -f`), so a volume would only be left
    /// behind by `down -v`, which removes the volumes the compose file declares and no others.
    async fn join_leave(&self, f: &PlannedFault, run: &mut Run) -> anyhow::Result<FaultStatus> {
        let probe = format!("{}/v1/cluster/members", self.cluster.url(1));
        if let Ok(r) = self.cluster.http.get(&probe, Duration::from_secs(2)).await {
            if r.status == 404 && r.problem() == "no-route" {
                run.note("NOT SUPPORTED: GET /v1/cluster/members answers 404 no-route; no join or leave was attempted");
                return Ok(FaultStatus::NotSupported);
            }
        }
        let id = self.cluster.len() as u64 + 1 + self.joins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let svc = format!("synod-{id}");
        let name = format!("{}_{svc}_join", self.docker.project);
        run.targets.push(svc.clone());
        let _ = crate::docker::docker(&["rm", "-f", &name]).await;
        let etcd = "http://etcd-1:2379,http://etcd-2:2379,http://etcd-3:2379";
        let env = [
            format!("SYNOD_ID={id}"),
            format!("SYNOD_HTTP_ADVERTISE={svc}:8080"),
            format!("SYNOD_GRPC_ADVERTISE={svc}:9090"),
            format!("SYNOD_ETCD={etcd}"),
            "SYNOD_WRITE_TIMEOUT_MS=3000".to_string(),
            "SYNOD_READ_TIMEOUT_MS=2000".to_string(),
            "SYNOD_SNAPSHOT_EVERY=1000".to_string(),
            format!("SYNOD_DATA_DIR={}", crate::compose::DATA_DIR),
        ];
        let project_label = format!("com.docker.compose.project={}", self.docker.project);
        let service_label = format!("com.docker.compose.service={svc}");
        let mut args: Vec<&str> = vec!["run", "-d", "--name", &name, "--network", &self.docker.network, "--network-alias", &svc];
        args.extend(["--label", &project_label, "--label", &service_label, "--tmpfs", crate::compose::DATA_DIR]);
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.extend(["synod:latest", "node", "--join"]);
        let t = Instant::now();
        crate::docker::docker(&args).await?;
        run.note(format!("started {svc} (`synod node --join`, durable on a tmpfs at {})", crate::compose::DATA_DIR));
        let result = self.join_then_leave(id, f, run, t).await;
        let _ = crate::docker::docker(&["rm", "-f", &name]).await;
        result
    }

    async fn join_then_leave(&self, id: u64, f: &PlannedFault, run: &mut Run, t: Instant) -> anyhow::Result<FaultStatus> {
        let within = Duration::from_secs(60);
        let deadline = Instant::now() + within;
        let mut seen_learner = false;
        loop {
            if let Some((m, epoch)) = self.members().await {
                match m.iter().find(|(i, _, _)| *i == id).map(|(_, r, _)| r.as_str()) {
                    Some("acceptor") => {
                        run.note(format!("synod-{id} is an acceptor in epoch {epoch} after {:.1}s", t.elapsed().as_secs_f64()));
                        break;
                    }
                    Some("learner") if !seen_learner => {
                        seen_learner = true;
                        run.note(format!("synod-{id} joined as a learner (epoch {epoch}) after {:.1}s", t.elapsed().as_secs_f64()));
                    }
                    _ => {}
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "synod-{id} did not become an acceptor within {within:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.hold(f, t).await;
        let leave_started = Instant::now();
        let mut accepted = false;
        for rid in 1..=self.cluster.len() as u64 {
            let url = format!("{}/v1/cluster/members/{id}", self.cluster.url(rid));
            if let Ok(r) = self.cluster.http.send(hyper::Method::DELETE, &url, &[], Vec::new(), Duration::from_secs(5)).await {
                if r.status == 202 {
                    accepted = true;
                    break;
                }
                run.note(format!("DELETE via synod-{rid}: {} {}", r.status, r.problem()));
            }
        }
        anyhow::ensure!(accepted, "no replica accepted DELETE /v1/cluster/members/{id}");
        let deadline = Instant::now() + within;
        loop {
            if let Some((m, epoch)) = self.members().await {
                if !m.iter().any(|(i, _, _)| *i == id) {
                    run.note(format!("synod-{id} left: not a member in epoch {epoch}, {:.1}s after DELETE", leave_started.elapsed().as_secs_f64()));
                    return Ok(FaultStatus::Done);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "synod-{id} still a member {within:?} after DELETE");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Poll `check` every 250 ms until it is true or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
