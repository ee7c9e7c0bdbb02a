//! The repository is self-contained: no tracked file (test, script, document) names a path
//! outside it. Issue 28: the checker's tests read their corpus from a folder beside the
//! checkout, so a plain clone failed three tests. The corpus now lives in `checker/testdata`;
//! this test keeps any file from reaching out of the repository again.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths that leave the repository: the shared folder that sits beside the checkout during
/// development, the development machine's absolute paths, and a crate's manifest directory
/// followed by two `..` (every crate sits one level below the workspace root).
const OUTSIDE: &[&str] = &[
    "../shared",
    "shared/testdata",
    "shared/tools",
    "shared/hooks",
    "/work/",
    "CARGO_MANIFEST_DIR\"), \"/../..",
    "CARGO_MANIFEST_DIR\")).join(\"../..",
];

/// This file names the patterns it looks for.
const SELF: &str = "checker/tests/self_contained.rs";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checker/ has a parent")
        .to_path_buf()
}

/// The repository's files: tracked ones and new ones not ignored (so a file is checked before it
/// is committed). Outside a git checkout (an exported tree), every file but `target*` and `.git`.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    match listed {
        Ok(out) if out.status.success() => out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect(),
        _ => {
            let mut files = Vec::new();
            walk(root, root, &mut files);
            files
        }
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list directory") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            if name == ".git" || name.starts_with("target") {
                continue;
            }
            walk(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

#[test]
fn no_file_names_a_path_outside_the_repository() {
    let root = workspace_root();
    let files = repository_files(&root);
    assert!(
        files
            .iter()
            .any(|f| f == Path::new("checker/tests/corpus.rs")),
        "listing the repository from {} found no checker/tests/corpus.rs",
        root.display()
    );
    let mut found = Vec::new();
    for file in &files {
        if file == Path::new(SELF) {
            continue;
        }
        // A file listed by git but deleted in the work tree is not read by anything.
        let Ok(bytes) = std::fs::read(root.join(file)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for pattern in OUTSIDE {
                if line.contains(pattern) {
                    found.push(format!(
                        "{}:{}: {pattern:?}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "files name paths outside the repository (copy what they need into it, e.g. \
         checker/testdata or scripts/):\n{}",
        found.join("\n")
    );
}

/// The corpus the other tests read is in the repository.
#[test]
fn corpus_is_inside_the_repository() {
    let corpus = workspace_root().join("checker/testdata/histories");
    for sub in ["jepsen-etcd", "kv"] {
        assert!(
            corpus.join(sub).join("verdicts.tsv").is_file(),
            "{}/{sub}/verdicts.tsv missing",
            corpus.display()
        );
    }
    assert!(workspace_root()
        .join("checker/testdata/README.md")
        .is_file());
}
