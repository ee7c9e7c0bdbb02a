//! Runs a range of simulator seeds with an optional bug switched on and prints every failure:
//! `cargo run --release -p paxos --features sim --example sweep -- <first> <count> [bug]`, where
//! `bug` is one of skip_adoption, amnesia_vote, wedge_stop_sign, reset_read_round,
//! early_checkpoint. Used to measure how quickly the simulator finds a bug.

use paxos::sim::{self, SimConfig};
use paxos::Bugs;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let first: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let mut bugs = Bugs::default();
    match args.get(3).map(String::as_str) {
        None => {}
        Some("skip_adoption") => bugs.skip_adoption = true,
        Some("amnesia_vote") => bugs.amnesia_vote = true,
        Some("wedge_stop_sign") => bugs.wedge_stop_sign = true,
        Some("reset_read_round") => bugs.reset_read_round = true,
        Some("early_checkpoint") => bugs.early_checkpoint = true,
        Some("read_index_without_round") => bugs.read_index_without_round = true,
        Some("forward_twice") => bugs.forward_twice = true,
        Some("nack_any_ballot") => bugs.nack_any_ballot = true,
        Some(other) => panic!("unknown bug {other}"),
    }
    let mut failures = 0;
    let mut total = sim::SimStats::default();
    for seed in first..first + count {
        let mut cfg = SimConfig::for_seed(seed);
        cfg.bugs = bugs;
        let r = sim::run(cfg);
        if let Ok(s) = &r {
            total.add(s);
        }
        if let Err(f) = r {
            failures += 1;
            let what: String = f.what.chars().take(std::env::var("SWEEP_WIDTH").ok().and_then(|w| w.parse().ok()).unwrap_or(240)).collect();
            println!("seed {seed} at {} ms: {what}", f.at.0);
        }
    }
    println!("{total:?}");
    println!("{failures} failures in {count} seeds from {first}");
}
