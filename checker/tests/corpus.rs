//! The checker against recorded histories with known verdicts (`checker/testdata/histories`:
//! porcupine's corpus of Jepsen etcd register logs and multi-key EDN histories; provenance in
//! `checker/testdata/README.md`).
//!
//! Every verdict must match, and each history must be checked within seconds. A missing corpus
//! is a failure, not a skip: a test that cannot fail is a defect.

use checker::{check_with, formats, Budget, CheckOptions, CheckResult};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/histories");
/// Generous against porcupine's milliseconds: debug builds on a loaded shared machine.
const PER_HISTORY: Duration = Duration::from_secs(10);

fn corpus_dir(sub: &str) -> PathBuf {
    let dir = Path::new(CORPUS).join(sub);
    assert!(
        dir.join("verdicts.tsv").is_file(),
        "test corpus missing: expected {}/verdicts.tsv (checker/testdata is part of the \
         repository); refusing to pass without it",
        dir.display()
    );
    dir
}

/// (file name, expected linearizable) from a `verdicts.tsv` with a header row.
fn verdicts(dir: &Path) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(dir.join("verdicts.tsv")).expect("read verdicts.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, v) = l
                .split_once('\t')
                .expect("verdicts.tsv row has two columns");
            let expected = match v.trim() {
                "true" => true,
                "false" => false,
                other => panic!("verdicts.tsv: bad verdict {other:?} for {name}"),
            };
            (name.to_string(), expected)
        })
        .collect()
}

/// Check every history in `sub` with `parse`; return (count, linearizable count, total time).
fn run(
    sub: &str,
    parse: fn(&str) -> Result<Vec<checker::Op>, formats::ParseError>,
) -> (usize, usize, Duration) {
    let dir = corpus_dir(sub);
    let expected = verdicts(&dir);
    assert!(
        !expected.is_empty(),
        "{sub}/verdicts.tsv lists no histories"
    );
    // Every history in the folder has a verdict, so none is silently left unchecked.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("list corpus")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "verdicts.tsv")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "{sub}: files and verdicts.tsv disagree");
    let options = CheckOptions {
        budget: Budget {
            max_steps: u64::MAX,
            timeout: Some(PER_HISTORY),
        },
    };
    let started = Instant::now();
    let mut wrong = Vec::new();
    let mut linearizable = 0;
    for (name, want) in &expected {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ops = parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!ops.is_empty(), "{name}: no operations parsed");
        let verdict = check_with(&ops, &options);
        let want_result = if *want {
            CheckResult::Linearizable
        } else {
            CheckResult::Violation
        };
        if verdict.result != want_result {
            wrong.push(format!("{name}: expected {want_result:?}, got {verdict}"));
        }
        assert!(
            verdict.elapsed < PER_HISTORY,
            "{name} took {:?}",
            verdict.elapsed
        );
        linearizable += usize::from(verdict.ok);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{sub}: {} histories ({linearizable} linearizable) in {elapsed:?}",
        expected.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    (expected.len(), linearizable, elapsed)
}

#[test]
fn jepsen_etcd_register_logs_match_their_verdicts() {
    let (n, ok, _) = run("jepsen-etcd", formats::jepsen::parse);
    // The corpus as shipped: 52 logs, 11 linearizable. A changed corpus should be noticed.
    assert_eq!((n, ok), (52, 11));
}

#[test]
fn kv_edn_histories_match_their_verdicts() {
    let (n, ok, _) = run("kv", formats::edn::parse);
    assert_eq!((n, ok), (4, 2));
}
