//! `synod-chaos`: the Docker fault test.
//!
//! `synod-chaos run` drives a cluster started by `docker-compose` (see `docker/chaos.sh`):
//!
//! 1. **Ready.** Wait until every replica answers `/v1/status` and a leader is known.
//! 2. **Load and faults.** `--clients` tasks send reads (both levels), writes, CAS, increments
//!    and deletes to random replicas, recording a [`checker::History`]; meanwhile the seeded
//!    [`schedule`] injects its faults one slot at a time through the docker CLI ([`faults`]).
//! 3. **Heal.** Every container is running, unpaused and on the network again; a leader leads.
//! 4. **Read everything.** A final linearizable read of every key (recorded), then every
//!    replica's whole state at one index, compared across replicas.
//! 5. **Verdict** ([`verdict`]). Linearizability per key, sequential-read rules, counters
//!    against acknowledged increments, equal replica states, every planned fault verified, and
//!    enough completed operations. One summary line; exit 0 only on PASS.
//!
//! `synod-chaos compose --replicas N` prints the compose file for N replicas.

mod cluster;
mod compose;
mod docker;
mod faults;
mod http;
mod schedule;
mod verdict;
mod workload;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cluster::Cluster;
use docker::Docker;
use faults::{FaultRecord, FaultStatus, Injector};
use schedule::FaultKind;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use verdict::{Evidence, ReplicaState};
use workload::{OpType, Shared, Stats};

#[derive(Parser, Debug)]
#[command(name = "synod-chaos", about = "Synod's Docker fault test")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the load and the faults against a running compose project, then judge.
    Run(RunArgs),
    /// Print the compose file for N replicas.
    Compose {
        /// Number of replicas.
        #[arg(long, default_value_t = 5)]
        replicas: usize,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The compose project name (`docker-compose -p`).
    #[arg(long, default_value = "synodchaos")]
    project: String,
    /// Replicas in the cluster (published on 127.0.0.1:8081..).
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Seconds of load (the load also lasts until every planned fault has run).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed of the fault plan and of the clients' choices.
    #[arg(long)]
    seed: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u64,
    /// Where the history goes (`history-<seed>.jsonl`).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Fewest completed operations for a valid run (default: 10 per second of load).
    #[arg(long)]
    min_ops: Option<u64>,
    /// Fail the run when the cluster has no membership API for join/leave.
    #[arg(long)]
    require_membership: bool,
    /// Leave out these fault kinds (comma separated names, e.g. `join-leave`).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Compose { replicas } => {
            print!("{}", compose::render(replicas));
            Ok(())
        }
        Cmd::Run(r) => {
            let rt = tokio::runtime::Runtime::new()?;
            let code = rt.block_on(run(r))?;
            drop(rt);
            std::process::exit(code);
        }
    }
}

async fn run(a: RunArgs) -> anyhow::Result<i32> {
    let docker = Docker::discover(&a.project).await?;
    let cluster = Cluster::local(a.replicas);
    println!("== synod-chaos: project {}, {} replicas, seed {}, {} s, {} clients", a.project, a.replicas, a.seed, a.duration, a.clients);

    // 1. Ready.
    let ready = faults::wait_until(Duration::from_secs(120), || async {
        cluster.statuses().await.iter().all(Option::is_some) && cluster.leader(&[]).await.is_some()
    })
    .await;
    anyhow::ensure!(ready, "the cluster did not come up: not every replica answers /v1/status with a leader known within 120 s");
    let leader = cluster.leader(&[]).await;
    println!("cluster ready: leader synod-{}", leader.unwrap_or(0));

    let side = format!("{}_side", a.project);
    let _ = docker::docker(&["network", "rm", &side]).await;
    docker::docker(&["network", "create", "--internal", &side]).await.context("creating the side network")?;

    let kinds: Vec<FaultKind> = FaultKind::ALL.into_iter().filter(|k| !a.skip.iter().any(|s| s == k.name())).collect();
    let plan = schedule::plan(a.seed, Duration::from_secs(a.duration), &kinds);
    println!("fault plan ({} faults, load runs {:.0} s):", plan.faults.len(), plan.end().max(Duration::from_secs(a.duration)).as_secs_f64());
    for f in &plan.faults {
        println!("  t+{:>5.1}s  {:<16} hold {:.1}s of a {:.1}s slot", f.at.as_secs_f64(), f.kind.name(), f.hold.as_secs_f64(), f.slot.as_secs_f64());
    }

    // 2. Load and faults.
    let history = Arc::new(checker::History::new());
    let shared = Arc::new(Shared { cluster: cluster.clone(), history: history.clone(), stats: Mutex::new(Stats::default()), stop: false.into() });
    let t0 = Instant::now();
    let clients: Vec<_> = (0..a.clients).map(|c| tokio::spawn(workload::run_client(shared.clone(), c + 1, a.seed))).collect();
    let injector = Injector { docker: docker.clone(), cluster: cluster.clone(), side_network: side.clone(), t0, joins: 0.into() };
    let mut records: Vec<FaultRecord> = Vec::new();
    for f in &plan.faults {
        tokio::time::sleep_until(t0 + f.at).await;
        let r = injector.run(f).await;
        print_fault(&r);
        records.push(r);
    }
    let end = t0 + plan.end().max(Duration::from_secs(a.duration));
    tokio::time::sleep_until(end).await;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let load_secs = t0.elapsed().as_secs_f64();
    println!("load stopped after {load_secs:.1} s");

    // 3. Heal: whatever a failed fault left behind.
    let leftovers = heal(&docker, &side).await;
    for l in &leftovers {
        println!("heal: {l}");
    }
    let _ = docker::docker(&["network", "rm", &side]).await;
    let settled = faults::wait_until(Duration::from_secs(60), || async {
        cluster.statuses().await.iter().all(Option::is_some) && cluster.leader(&[]).await.is_some()
    })
    .await;
    println!("after healing: {}", if settled { "every replica answers and a leader is known" } else { "NOT settled within 60 s" });

    // 4. Read everything.
    let mut evidence = Evidence {
        min_ops: a.min_ops.unwrap_or(a.duration * 10),
        require_membership: a.require_membership,
        faults: records.clone(),
        ..Evidence::default()
    };
    let mut finals = BTreeMap::new();
    for key in workload::all_keys() {
        match workload::final_read(&shared, 1_000, &key, Duration::from_secs(30)).await {
            Ok(v) => {
                finals.insert(key, v);
            }
            Err(e) => evidence.final_read_errors.push(e),
        }
    }
    let (states, hashes) = final_states(&cluster).await;
    evidence.state_mismatches = verdict::compare_states(&states);
    match hashes {
        Some(h) if h.values().collect::<std::collections::BTreeSet<_>>().len() > 1 => {
            evidence.state_mismatches.push(format!("state hashes differ: {h:?}"));
        }
        Some(h) => println!("state hashes: {h:?}"),
        None => println!("note: /v1/status exposes no state_hash; replicas compared by their full key/value/version listing"),
    }
    if evidence.state_mismatches.is_empty() {
        if let Some(Ok((index, entries))) = states.values().next() {
            println!("replica states equal: {} replicas, {} keys at index {index}", states.len(), entries.len());
        }
    }

    // 5. Verdict.
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("history-{}.jsonl", a.seed));
    history.save(&path).with_context(|| format!("saving {}", path.display()))?;
    let ops = history.ops();
    let lin_ops: Vec<_> = ops.iter().filter(|o| o.consistency == checker::Consistency::Linearizable).cloned().collect();
    let lin = checker::check(&lin_ops);
    evidence.linearizable = lin.ok;
    evidence.inconclusive = lin.result == checker::CheckResult::Unknown;
    evidence.lin_explanation = lin.explanation.clone();
    let seq = checker::check_sequential(&ops);
    evidence.seq_violations = seq.violations.iter().map(|v| v.to_string()).collect();
    for i in 0..workload::COUNTERS {
        let key = workload::counter(i);
        if let Some(v) = finals.get(&key) {
            evidence.counters.push(verdict::counter_check(&key, &ops, v.as_deref()));
        }
    }
    let stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    evidence.completed = OpType::ALL.iter().map(|t| (*t, stats.counts.get(t).map_or(0, |c| c[0] + c[1]))).collect();

    println!();
    println!("== faults");
    for r in &records {
        println!(
            "  {:<16} {:<10} {}",
            r.kind.name(),
            match r.status {
                FaultStatus::Done => "done",
                FaultStatus::NotSupported => "NOT-SUPP",
                FaultStatus::Failed => "FAILED",
            },
            r.targets.join(",")
        );
    }
    println!("== operations ({load_secs:.0} s of load, {} clients)", a.clients);
    println!("  {:<9} {:>7} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}", "type", "ok", "fail", "unknown", "discarded", "p50 ms", "p99 ms", "p999 ms", "max ms");
    for t in OpType::ALL {
        let c = stats.counts.get(&t).copied().unwrap_or_default();
        let h = &stats.latency[&t];
        let ms = |q: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(q) as f64 / 1000.0 };
        println!(
            "  {:<9} {:>7} {:>6} {:>8} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            t.name(),
            c[0],
            c[1],
            c[2],
            c[3],
            ms(0.5),
            ms(0.99),
            ms(0.999),
            if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 }
        );
    }
    let completed = stats.completed();
    println!("  completed {completed} ({:.1}/s)", completed as f64 / load_secs);
    if !stats.unexpected.is_empty() {
        println!("  replies worth a look: {:?}", stats.unexpected);
    }
    drop(stats);
    println!("== checks");
    println!("  linearizability: {lin}");
    println!("  sequential reads: {} checked, {} violation(s)", seq.reads_checked, seq.violations.len());
    for c in &evidence.counters {
        println!("  counter {}: final {:?}, {} acknowledged + {} unknown increments", c.key, c.final_value, c.acked, c.unknown);
    }
    println!("  history: {} ({} ops); re-check with `synod-check {}`", path.display(), ops.len(), path.display());
    let v = verdict::assess(&evidence);
    for p in &v.problems {
        println!("PROBLEM: {p}");
    }
    for n in &v.notes {
        println!("NOTE: {n}");
    }
    let done = records.iter().filter(|r| r.status == FaultStatus::Done).count();
    println!("{}", v.summary(a.seed, completed, done, records.len()));
    Ok(if v.pass { 0 } else { 1 })
}

fn print_fault(r: &FaultRecord) {
    let status = match r.status {
        FaultStatus::Done => "done",
        FaultStatus::NotSupported => "NOT SUPPORTED",
        FaultStatus::Failed => "FAILED",
    };
    println!("fault t+{:.1}s {} [{}] {}: {}", r.at_secs, r.kind, r.targets.join(","), status, r.evidence.join("; "));
}

/// Put every container back: running, unpaused, on the cluster network, off the side network.
async fn heal(docker: &Docker, side: &str) -> Vec<String> {
    let mut done = Vec::new();
    for svc in docker.containers.keys() {
        let Ok(s) = docker.state(svc).await else { continue };
        if s.paused && docker.on(&["unpause"], svc).await.is_ok() {
            done.push(format!("unpaused {svc}"));
        }
        if !s.running && docker.on(&["start"], svc).await.is_ok() {
            done.push(format!("started {svc}"));
        }
        if !s.networks.contains(&docker.network) && docker.network("connect", &docker.network, svc).await.is_ok() {
            done.push(format!("reconnected {svc}"));
        }
        if s.networks.iter().any(|n| n == side) && docker.network("disconnect", side, svc).await.is_ok() {
            done.push(format!("took {svc} off {side}"));
        }
    }
    done
}

/// Every replica's full state at one index (the leader's index after the load), and the state
/// hashes if `/v1/status` exposes them.
async fn final_states(cluster: &Cluster) -> (BTreeMap<u64, Result<ReplicaState, String>>, Option<BTreeMap<u64, String>>) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let statuses = cluster.statuses().await;
    let target = statuses.iter().flatten().map(|s| s.index).max().unwrap_or(0);
    let mut states = BTreeMap::new();
    for id in 1..=cluster.len() as u64 {
        let url = format!("{}/v1/kv?consistency=sequential&min_index={target}", cluster.url(id));
        let deadline = Instant::now() + Duration::from_secs(30);
        let state = loop {
            let last = match cluster.http.get(&url, Duration::from_secs(5)).await {
                Ok(r) if r.status == 200 => {
                    let j = r.json();
                    let entries = j["entries"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            (
                                e["key"].as_str().unwrap_or("?").to_string(),
                                e["value"].as_str().map_or_else(|| e["value"].to_string(), str::to_string),
                                e["version"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect();
                    break Ok((j["index"].as_u64().or(r.index).unwrap_or(0), entries));
                }
                Ok(r) => format!("{} {}", r.status, r.problem()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                break Err(format!("did not serve index {target} within 30 s (last: {last})"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        states.insert(id, state);
    }
    // State hashes are comparable only at one index: wait (bounded) until every replica
    // reports the same one. Past the deadline the differing indexes show up as a mismatch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hashes = loop {
        let all = cluster.statuses().await;
        if all.iter().flatten().any(|s| s.state_hash.is_none()) {
            break None;
        }
        let answered: Vec<_> = all.iter().flatten().collect();
        let same = answered.len() == cluster.len() && answered.windows(2).all(|w| w[0].index == w[1].index);
        if same || Instant::now() >= deadline {
            break Some(answered.iter().map(|s| (s.id, format!("{}@{}", s.state_hash.clone().unwrap_or_default(), s.index))).collect());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    (states, hashes)
}
