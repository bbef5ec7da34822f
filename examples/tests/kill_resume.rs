//! Kill-and-resume, per backend: the Nexmark job is run once without failure, then
//! again in a fresh directory where it is killed with SIGKILL at random moments (several
//! times) and restarted until it completes. The committed results must equal the
//! failure-free run's, which must equal the reference implementation's.

mod common;

use common::read_sorted;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use state_api::testkit::SplitMix64;

const BIN: &str = env!("CARGO_BIN_EXE_nexmark");

fn job(dir: &Path, query: &str, backend: &str, events: u64, every: u64, out: &Path, verify: bool) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--query", query, "--backend", backend, "--quiet"])
        .args([
            "--events",
            &events.to_string(),
            "--checkpoint-every",
            &every.to_string(),
        ])
        .arg("--checkpoint-dir")
        .arg(dir)
        .arg("--output")
        .arg(out)
        .env("TMPDIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if verify {
        c.arg("--verify");
    }
    c
}

fn kill_and_resume(query: &str, backend: &str, events: u64, every: u64, seed: u64) {
    let base = tempfile::tempdir().unwrap();
    // Failure-free run, checked against the reference.
    let clean_dir = base.path().join("clean");
    let clean_out = base.path().join("clean.txt");
    let t = Instant::now();
    let run = job(&clean_dir, query, backend, events, every, &clean_out, true)
        .output()
        .unwrap();
    let clean_time = t.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && stdout.contains("results match the reference"),
        "{backend} {query}: failure-free run failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let expected = read_sorted(&clean_out);
    assert!(!expected.is_empty());

    // Killed at random moments, restarted until done.
    let dir = base.path().join("killed");
    let out = base.path().join("killed.txt");
    let mut rng = SplitMix64(seed);
    let (mut kills, mut attempts) = (0, 0);
    let mut window = clean_time.as_millis() as u64;
    let resumed = loop {
        attempts += 1;
        assert!(attempts < 30, "{backend} {query}: never completed");
        let mut child = job(&dir, query, backend, events, every, &out, false).spawn().unwrap();
        if kills < 3 {
            // The first kill lands after a checkpoint completed (so that the final run has
            // one to resume from, however loaded the machine); later ones anywhere.
            let job_dir = dir.join(format!("nexmark-{query}-{backend}"));
            let has_checkpoint = || {
                std::fs::read_dir(&job_dir).is_ok_and(|rd| {
                    rd.flatten().any(|e| {
                        e.file_name().to_string_lossy().starts_with("chk-") && e.path().join("_metadata").exists()
                    })
                })
            };
            while kills == 0 && !has_checkpoint() && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            let delay = if kills == 0 {
                Duration::from_millis(rng.below(window / 4 + 1))
            } else {
                Duration::from_millis(window / 5 + rng.below(window / 2 + 1))
            };
            let deadline = Instant::now() + delay;
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(2));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                if job_dir.join("results/_done").exists() {
                    // The job had finished (only its exit was cut short): the next run
                    // would start over, so this was no kill mid-run. Start over, sooner.
                    let _ = std::fs::remove_dir_all(&dir);
                    kills = 0;
                    window = window * 2 / 3;
                    continue;
                }
                kills += 1;
                // The restarted run has less left to do: kill it sooner.
                window = window * 2 / 3;
                continue;
            }
            if kills == 0 {
                // Finished before the kill: start over, killing sooner.
                let _ = std::fs::remove_dir_all(&dir);
                window = window * 2 / 3;
                continue;
            }
        }
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{backend} {query}: run failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        break stdout.contains("resumed from checkpoint");
    };
    assert!(kills >= 1, "{backend} {query}: the job was never killed mid-run");
    eprintln!("{backend} {query}: killed {kills} times, final run resumed from a checkpoint: {resumed}");
    assert!(
        resumed,
        "{backend} {query}: the final run did not resume from a checkpoint"
    );
    assert_eq!(
        read_sorted(&out),
        expected,
        "{backend} {query}: results after kills differ"
    );
}

#[test]
fn heap_fs_q5() {
    kill_and_resume("q5", "heap-fs", 600_000, 20_000, 1);
}

#[test]
fn heap_memory_q8() {
    kill_and_resume("q8", "heap-memory", 600_000, 20_000, 2);
}

#[test]
fn heap_lmdb_q11() {
    kill_and_resume("q11", "heap-lmdb", 200_000, 10_000, 3);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_full_q3() {
    kill_and_resume("q3", "rocksdb-full", 200_000, 20_000, 4);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_incremental_q5() {
    kill_and_resume("q5", "rocksdb-incremental", 150_000, 10_000, 5);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_native_q8() {
    kill_and_resume("q8", "rocksdb-native", 300_000, 20_000, 7);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_heap_timers_q11() {
    kill_and_resume("q11", "rocksdb-heap-timers", 150_000, 10_000, 6);
}

/// Every query on every backend matches the reference on a small stream.
#[test]
fn every_query_on_every_backend_matches_the_reference() {
    let base = tempfile::tempdir().unwrap();
    let backends = state_examples::nexmark::runtime::backend_names();
    for query in ["q3", "q5", "q8", "q11"] {
        for backend in &backends {
            let out = base.path().join(format!("{query}-{backend}.txt"));
            let run = job(base.path(), query, backend, 60_000, 10_000, &out, true)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&run.stdout);
            assert!(
                run.status.success() && stdout.contains("results match the reference"),
                "{backend} {query}: {stdout}{}",
                String::from_utf8_lossy(&run.stderr)
            );
        }
    }
}
