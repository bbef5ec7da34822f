//! Nexmark on timely across processes (loopback only, every process bounded in time and
//! killed at the end): 2 processes × 2 workers against the reference; `kill -9` of one
//! process and a restart of all; rescaling 4 → 3 → 1 and 1 → 4 with each worker reading
//! only its share of the checkpoint; a failing asynchronous part that aborts one
//! checkpoint while the job goes on.

mod common;
#[path = "../../state-fs/tests/s3_server/mod.rs"]
mod s3_server;

use common::read_sorted;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use state_api::testkit::SplitMix64;
use state_api::{JobAssignment, RestoreOptions};
use state_examples::nexmark::cluster::specs;
use state_examples::nexmark::{QueryKind, reference};
use state_fs::{FsCheckpointStorage, FsOptions};

const BIN: &str = env!("CARGO_BIN_EXE_nexmark-timely");
const LIMIT: Duration = Duration::from_secs(240);

/// One multi-process test at a time: each starts up to 4 workers on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` consecutive free loopback ports.
fn free_ports(n: u16, rng: &mut SplitMix64) -> u16 {
    loop {
        let base = 20_000 + rng.below(30_000) as u16;
        let held: Vec<_> = (0..n)
            .map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
}

struct Run<'a> {
    /// The checkpoint directory (a local path, or with `store` an `s3://` URI's path).
    dir: &'a Path,
    /// `--checkpoint-dir` and `--store-option`s instead of `dir` (S3).
    store: Option<(String, Vec<String>)>,
    query: &'a str,
    backend: &'a str,
    events: u64,
    epoch: u64,
    out: PathBuf,
}

impl Run<'_> {
    fn command(&self, processes: u32, process: u32, workers: u32, base: u16) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--query", self.query, "--backend", self.backend, "--quiet"])
            .args([
                "--events",
                &self.events.to_string(),
                "--epoch-events",
                &self.epoch.to_string(),
            ])
            .args([
                "-n",
                &processes.to_string(),
                "-p",
                &process.to_string(),
                "-w",
                &workers.to_string(),
            ])
            .args(["--base-port", &base.to_string()])
            .arg("--output")
            .arg(&self.out)
            .env("TMPDIR", self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &self.store {
            Some((uri, options)) => {
                c.args(["--checkpoint-dir", uri]);
                for o in options {
                    c.args(["--store-option", o]);
                }
            }
            None => {
                c.arg("--checkpoint-dir").arg(self.dir);
            }
        }
        c
    }

    /// Starts every process of a `processes × workers` run with `extra` flags on
    /// process `on` (all when `None`).
    fn start(&self, processes: u32, workers: u32, extra: &[&str], on: Option<u32>, rng: &mut SplitMix64) -> Vec<Child> {
        let base = free_ports(processes as u16 + 1, rng);
        (0..processes)
            .map(|p| {
                let mut c = self.command(processes, p, workers, base);
                if on.is_none_or(|o| o == p) {
                    c.args(extra);
                }
                c.spawn().unwrap()
            })
            .collect()
    }
}

/// Waits for every child (killing all of them past the limit or once one failed and
/// the others do not end within a few seconds); returns their outputs.
fn finish(mut children: Vec<Child>) -> Vec<Output> {
    let deadline = Instant::now() + LIMIT;
    let mut failed_at: Option<Instant> = None;
    loop {
        let mut running = 0;
        for c in &mut children {
            match c.try_wait().unwrap() {
                None => running += 1,
                Some(s) if !s.success() => {
                    failed_at.get_or_insert_with(Instant::now);
                }
                Some(_) => {}
            }
        }
        if running == 0 {
            break;
        }
        let stuck = failed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5));
        if Instant::now() > deadline || stuck {
            for c in &mut children {
                let _ = c.kill();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn query_kind(q: &str) -> QueryKind {
    QueryKind::parse(q).unwrap()
}

fn two_by_two(query: &str, backend: &str) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        store: None,
        query,
        backend,
        events: 30_000,
        epoch: 5_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(7);
    let outs = finish(run.start(2, 2, &[], None, &mut rng));
    for o in &outs {
        assert!(o.status.success(), "{backend} {query}: {}", text(o));
    }
    let summary = String::from_utf8_lossy(&outs[0].stdout);
    assert!(summary.contains("6 completed, 0 aborted"), "{summary}");
    assert_eq!(
        read_sorted(&run.out),
        reference(query_kind(query), run.events),
        "{backend} {query}"
    );
}

/// Checkpoints on S3 (the in-process server of state-fs's tests), both processes writing
/// to the same bucket.
#[cfg(feature = "rocksdb")]
#[test]
fn q5_on_two_processes_of_two_workers_over_s3() {
    let _serial = serial();
    let options = s3_server::store_options();
    let uri = format!("s3://bucket/cluster-{}", std::process::id());
    if state_fs::FsCheckpointStorage::participant(
        &uri,
        "probe",
        FsOptions::builder().store_options(options.clone()).build().unwrap(),
    )
    .is_err()
    {
        // state-fs was built without its `s3` feature (CI builds it with).
        eprintln!("skipped: no S3 support compiled in");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        store: Some((uri, options.iter().map(|(k, v)| format!("{k}={v}")).collect())),
        query: "q5",
        backend: "rocksdb-incremental",
        events: 30_000,
        epoch: 5_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(17);
    let outs = finish(run.start(2, 2, &[], None, &mut rng));
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    assert!(String::from_utf8_lossy(&outs[0].stdout).contains("6 completed, 0 aborted"));
    assert_eq!(read_sorted(&run.out), reference(QueryKind::Q5, run.events));
}

#[test]
fn q5_on_two_processes_of_two_workers_heap_fs() {
    two_by_two("q5", "heap-fs");
}

#[test]
fn q8_on_two_processes_of_two_workers_heap_fs() {
    two_by_two("q8", "heap-fs");
}

#[cfg(feature = "rocksdb")]
#[test]
fn q5_on_two_processes_of_two_workers_rocksdb_incremental() {
    two_by_two("q5", "rocksdb-incremental");
}

/// The checkpoint a run resumed from, as process 0 reports it when it starts.
fn resumed_from(o: &Output) -> Option<u64> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("resuming from checkpoint ")?.parse().ok())
}

/// The newest checkpoint of `job_dir` whose `_metadata` exists.
fn newest_completed(job_dir: &Path) -> u64 {
    std::fs::read_dir(job_dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse::<u64>().ok())
                .filter(|id| job_dir.join(format!("chk-{id}/_metadata")).exists())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn kill_9_of_one_process_and_a_restart_of_all() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let job_dir = dir.path().join("nexmark-timely-q5-heap-fs");
    let run = Run {
        dir: dir.path(),
        store: None,
        query: "q5",
        backend: "heap-fs",
        events: 80_000,
        epoch: 4_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(0x5eed);
    let mut kills = 0;
    for _ in 0..2 {
        // Once a checkpoint newer than the last kill's completed, SIGKILL one process a
        // random moment later; then the job restarts as a whole (the other is stopped).
        let known = newest_completed(&job_dir);
        let mut children = run.start(2, 2, &[], None, &mut rng);
        let deadline = Instant::now() + LIMIT;
        while newest_completed(&job_dir) <= known
            && Instant::now() < deadline
            && children.iter_mut().all(|c| c.try_wait().unwrap().is_none())
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        let victim = rng.below(2) as usize;
        let mid_run = children.iter_mut().all(|c| c.try_wait().unwrap().is_none());
        if mid_run {
            children[victim].kill().unwrap();
            kills += 1;
        }
        for c in &mut children {
            let _ = c.kill();
        }
        finish(children);
    }
    assert!(kills > 0, "no kill landed mid-run");
    let resume_point = newest_completed(&job_dir);
    let outs = finish(run.start(2, 2, &[], None, &mut rng));
    assert!(outs.iter().all(|o| o.status.success()), "{}", text(&outs[0]));
    assert_eq!(
        resumed_from(&outs[0]),
        Some(resume_point),
        "the restart resumes from the newest checkpoint the 4 workers completed"
    );
    assert_eq!(read_sorted(&run.out), reference(QueryKind::Q5, run.events));
}

/// Restores bytes per worker, from its report line.
fn restore_bytes(o: &Output) -> Vec<(u32, u64)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("worker ")?;
            let (w, rest) = rest.split_once(':')?;
            let bytes = rest.split("restored ").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((w.parse().ok()?, bytes))
        })
        .collect()
}

/// What each of `workers` workers resuming from checkpoint `id` may read: its key
/// groups' sections of every stream, each stream's header and index, and the metadata.
fn shares(dir: &Path, job: &str, id: u64, workers: u32) -> Vec<u64> {
    let storage = FsCheckpointStorage::participant(dir.to_str().unwrap(), job, FsOptions::default()).unwrap();
    let meta = storage.load_checkpoint(id).unwrap();
    let metadata_bytes = storage.bytes_read();
    let plan = JobAssignment::new(
        &meta.snapshot,
        &specs(QueryKind::Q5, workers).unwrap(),
        RestoreOptions::default(),
    )
    .unwrap();
    (0..workers as usize)
        .map(|w| {
            let mut share = metadata_bytes;
            for op in ["q5-counts", "q5-top"] {
                let a = &plan.operator(op)[w];
                for h in a.keyed.iter().chain(&a.timers) {
                    share += h.section_bytes(a.key_group_range) + 512 + 16 * h.key_group_offsets.len() as u64;
                }
            }
            share
        })
        .collect()
}

#[test]
fn rescale_4_to_3_to_1_and_1_to_4_reading_only_each_share() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let job = "nexmark-timely-q5-heap-fs";
    let run = Run {
        dir: dir.path(),
        store: None,
        query: "q5",
        backend: "heap-fs",
        events: 48_000,
        epoch: 4_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(11);
    // 4 workers (2 × 2) crash once checkpoint 4 completed; 3 workers resume and crash
    // after checkpoint 8; 1 worker resumes and crashes after 10; 4 workers (1 × 4) finish.
    let stages: [(u32, u32, Option<&str>); 4] =
        [(2, 2, Some("4")), (1, 3, Some("8")), (1, 1, Some("10")), (1, 4, None)];
    let mut last_restored = 0;
    for (i, (processes, workers, crash)) in stages.into_iter().enumerate() {
        let extra: Vec<&str> = crash.map(|e| vec!["--crash-at-epoch", e]).unwrap_or_default();
        // Computed before the stage runs: its checkpoints subsume the one it restores.
        let expected = (i > 0).then(|| shares(dir.path(), job, last_restored, processes * workers));
        let outs = finish(run.start(processes, workers, &extra, Some(0), &mut rng));
        if crash.is_some() {
            assert_eq!(outs[0].status.code(), Some(3), "stage {i}: {}", text(&outs[0]));
        } else {
            assert!(outs.iter().all(|o| o.status.success()), "stage {i}: {}", text(&outs[0]));
        }
        if i > 0 {
            let id = resumed_from(&outs[0]).expect("a later stage resumes");
            assert_eq!(id, last_restored, "stage {i} resumed from {id}");
            let reports: Vec<(u32, u64)> = outs.iter().flat_map(restore_bytes).collect();
            let expected = expected.unwrap_or_default();
            assert_eq!(reports.len(), expected.len(), "stage {i}: {reports:?}");
            for (w, read) in reports {
                let share = expected[w as usize];
                assert!(
                    read <= share,
                    "stage {i}: worker {w} read {read} bytes; its share is {share}"
                );
                assert!(read > 0, "stage {i}: worker {w} read nothing");
            }
        }
        if crash.is_some() {
            // What the crashed stage left: the next stage resumes from its newest checkpoint.
            let latest = newest_completed(&dir.path().join(job));
            assert!(latest > last_restored, "stage {i} completed no checkpoint");
            last_restored = latest;
        }
    }
    assert_eq!(read_sorted(&run.out), reference(QueryKind::Q5, run.events));
}

#[test]
fn a_failed_asynchronous_part_aborts_one_checkpoint_and_the_job_goes_on() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        store: None,
        query: "q5",
        backend: "heap-fs",
        events: 24_000,
        epoch: 4_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(3);
    let outs = finish(run.start(1, 2, &["--fail-checkpoint", "3"], None, &mut rng));
    assert!(outs[0].status.success(), "{}", text(&outs[0]));
    let stdout = String::from_utf8_lossy(&outs[0].stdout);
    assert!(stdout.contains("5 completed, 1 aborted"), "{stdout}");
    assert!(String::from_utf8_lossy(&outs[0].stderr).contains("checkpoint 3 aborted"));
    assert_eq!(read_sorted(&run.out), reference(QueryKind::Q5, run.events));
}

#[test]
fn a_damaged_or_missing_committed_part_is_an_error_naming_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let run = Run {
        dir: dir.path(),
        store: None,
        query: "q8",
        backend: "heap-fs",
        events: 24_000,
        epoch: 4_000,
        out: dir.path().join("out.txt"),
    };
    let mut rng = SplitMix64(23);
    // Q8's windows all close at the end: a crash right after the last checkpoint (before
    // the end is recorded) leaves committed parts, and the restart only collects them.
    let outs = finish(run.start(1, 2, &["--crash-at-epoch", "6"], None, &mut rng));
    assert_eq!(outs[0].status.code(), Some(3), "{}", text(&outs[0]));
    let results = dir.path().join("nexmark-timely-q8-heap-fs/results");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&results)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("e0000000"))
        .collect();
    parts.sort();
    let part = parts.first().expect("a committed part").clone();
    let name = part.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&part, &bytes).unwrap();
    let outs = finish(run.start(1, 2, &[], None, &mut rng));
    let err = String::from_utf8_lossy(&outs[0].stderr).into_owned();
    assert!(!outs[0].status.success(), "a damaged part was accepted");
    assert!(err.contains(&name) && err.contains("CRC32C"), "{err}");
    std::fs::remove_file(&part).unwrap();
    let outs = finish(run.start(1, 2, &[], None, &mut rng));
    let err = String::from_utf8_lossy(&outs[0].stderr).into_owned();
    assert!(!outs[0].status.success(), "a missing part was accepted");
    assert!(err.contains(&name) && err.contains("missing"), "{err}");
    // Repaired, the restart finishes the job with nothing left to process.
    bytes[0] ^= 0x20;
    std::fs::write(&part, &bytes).unwrap();
    let outs = finish(run.start(1, 2, &[], None, &mut rng));
    assert!(outs[0].status.success(), "{}", text(&outs[0]));
    assert!(String::from_utf8_lossy(&outs[0].stdout).contains("resuming from checkpoint 6"));
    assert_eq!(read_sorted(&run.out), reference(QueryKind::Q8, run.events));
}
