//! `synod-check`: check a saved history (JSON lines), a Jepsen etcd log or an EDN file.
//!
//! Prints the verdict; exits 0 when linearizable, 1 on a violation, 2 when the budget ran out,
//! 3 when the file cannot be read.

use checker::{check_with, load_file, Budget, CheckOptions, CheckResult};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Check client histories for linearizability (per key) and sequential-read consistency.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// History files: `.jsonl` from `History::save`, Jepsen etcd logs, or EDN event lines.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Search step budget per key.
    #[arg(long, default_value_t = 50_000_000)]
    max_steps: u64,
    /// Wall-time budget per key, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = CheckOptions {
        budget: Budget {
            max_steps: args.max_steps,
            timeout: Some(Duration::from_secs_f64(args.timeout_secs)),
        },
    };
    let mut worst = 0u8;
    for file in &args.files {
        let code = match load_file(file) {
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                3
            }
            Ok((format, ops)) => {
                let verdict = check_with(&ops, &options);
                // A closed pipe (`| head`) is not worth a panic; the exit code still tells.
                let _ = writeln!(
                    std::io::stdout().lock(),
                    "{} ({format:?}, {} ops): {verdict}",
                    file.display(),
                    ops.len()
                );
                match verdict.result {
                    CheckResult::Linearizable => 0,
                    CheckResult::Violation => 1,
                    CheckResult::Unknown => 2,
                }
            }
        };
        // A violation outranks an unknown, which outranks success; unreadable files rank last.
        worst = match (worst, code) {
            (1, _) | (_, 1) => 1,
            (a, b) => a.max(b),
        };
    }
    ExitCode::from(worst)
}
