//! The `synod-check` binary: exit codes and verdict text on saved and corpus histories.

use checker::{save_jsonl, Op, OpKind, Outcome};
use std::process::Command;

fn run(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_synod-check"))
        .arg(path)
        .output()
        .expect("run synod-check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn saved_history_verdicts_and_exit_codes() {
    let dir = std::env::temp_dir().join(format!("synod-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A linearizable history exits 0.
    let good = vec![
        Op::new(
            1,
            "k",
            OpKind::Write { value: "1".into() },
            0,
            Some(10),
            Outcome::Ok,
        ),
        Op::new(
            2,
            "k",
            OpKind::Read {
                result: Some("1".into()),
            },
            20,
            Some(30),
            Outcome::Ok,
        ),
    ];
    let good_path = dir.join("good.jsonl");
    save_jsonl(&good, &good_path).expect("save");
    let (code, stdout) = run(&good_path);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("linearizable: 2 ops checked"), "{stdout}");
    // A stale read exits 1 and names the key.
    let mut bad = good.clone();
    bad[1].kind = OpKind::Read { result: None };
    let bad_path = dir.join("bad.jsonl");
    save_jsonl(&bad, &bad_path).expect("save");
    let (code, stdout) = run(&bad_path);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("NOT linearizable") && stdout.contains("key \"k\""),
        "{stdout}"
    );
}

#[test]
fn corpus_files_in_both_formats() {
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/histories");
    let p = std::path::Path::new(corpus);
    assert!(p.is_dir(), "test corpus missing at {corpus}");
    assert_eq!(run(&p.join("jepsen-etcd/etcd_002.log")).0, Some(0));
    assert_eq!(run(&p.join("jepsen-etcd/etcd_000.log")).0, Some(1));
    assert_eq!(run(&p.join("kv/c10-ok.txt")).0, Some(0));
    assert_eq!(run(&p.join("kv/c10-bad.txt")).0, Some(1));
}
