//! The nexmark binary's command line (`--help`, bad flags) and its exactly-once sink's
//! integrity: a committed result part that is damaged or missing is a typed error
//! naming it on resume, never results silently lost or changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_nexmark");

fn nexmark(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", cwd)
        .output()
        .unwrap()
}

#[test]
fn help_prints_usage_and_bad_flags_are_errors_and_neither_starts_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let out = nexmark(dir.path(), &["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Usage: nexmark") && text.contains("--checkpoint-dir"),
        "{text}"
    );
    let out = nexmark(dir.path(), &["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    let out = nexmark(dir.path(), &["--events", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("checkpoints").exists(), "no job ran");
}

fn parts(dir: &Path) -> Vec<PathBuf> {
    let results = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("results"))
        .find(|p| p.exists())
        .unwrap();
    let mut v: Vec<PathBuf> = std::fs::read_dir(results)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_or_missing_committed_part_is_a_typed_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    let ck_s = ck.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--query",
            "q5",
            "--backend",
            "heap-fs",
            "--quiet",
            "--events",
            "60000",
            "--checkpoint-every",
            "10000",
            "--checkpoint-dir",
            ck_s,
        ];
        args.extend_from_slice(extra);
        nexmark(dir.path(), &args)
    };
    // A crash after 45,000 events: checkpoints up to 4 have completed.
    let crashed = run(&["--crash-after", "45000"]);
    assert_eq!(
        crashed.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    let committed = parts(&ck);
    let victim = committed
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
        .clone();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let original = std::fs::read(&victim).unwrap();
    assert!(!original.is_empty());

    // One flipped byte: the resume refuses, naming the part.
    let mut bad = original.clone();
    bad[original.len() / 2] ^= 0x01;
    std::fs::write(&victim, &bad).unwrap();
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&name) && err.contains("CRC32C"),
        "{err}"
    );

    // Missing: the same.
    std::fs::remove_file(&victim).unwrap();
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&name) && err.contains("missing"),
        "{err}"
    );

    // Repaired: the job resumes and its results equal the reference.
    std::fs::write(&victim, &original).unwrap();
    let out = run(&["--verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("resumed from checkpoint")
            && stdout.contains("results match the reference"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
