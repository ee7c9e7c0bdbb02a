use node::sim::*;
#[test]
fn scan() {
    let bug = std::env::var("BUG").is_ok();
    let first: u64 = std::env::var("FIRST").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let n: u64 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut caught = 0;
    let mut other = 0;
    for seed in first..first + n {
        let mut cfg = SimConfig::new(seed);
        if std::env::var("ALLB").is_ok() { cfg.bounces = true; }
        cfg.core_bugs.tick_without_term = bug;
        let r = run(cfg);
        if let Ok(st) = &r { if st.max_clock_lead_ms > 0 || seed % 100 == 0 { eprintln!("seed {seed}: lead {} clock {} elapsed {} bounces {} {}", st.max_clock_lead_ms, st.log_clock_ms, st.elapsed_ms, st.bounces, st.bounced_successors); } }
        if let Err(f) = r {
            if f.what.starts_with("log clock") { caught += 1; eprintln!("seed {seed}: {}", f.what); } else { other += 1; eprintln!("seed {seed} OTHER: {}", &f.what[..f.what.len().min(300)]); }
        }
    }
    eprintln!("bug={bug} clock failures {caught}, other {other} of {n}");
}
