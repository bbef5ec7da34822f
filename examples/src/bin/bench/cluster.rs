//! Nexmark Q5 on timely dataflow (heap-fs): events/s at 2 and 4 workers in one process
//! and on 2 processes × 2 workers against 1 worker, the checkpoints' trigger-to-complete
//! time at 4 workers, and the restore of a 4-worker checkpoint at 4, 2 and 1 workers.

use std::process::{Command, Stdio};
use std::time::Duration;

use state_api::{Result, StateError};
use state_examples::nexmark::QueryKind;
use state_examples::nexmark::cluster::{self, ClusterConfig, ClusterSummary};
use state_examples::nexmark::runtime::Heap;

use super::Row;

const HEAP_FS: Heap = Heap {
    memory: false,
    lmdb_timers: false,
};

fn config(dir: &std::path::Path, events: u64, workers: usize, crash_at_epoch: Option<u64>) -> ClusterConfig {
    ClusterConfig {
        query: QueryKind::Q5,
        events,
        epoch_events: events / 10,
        dir: dir.to_string_lossy().into_owned(),
        store_options: Default::default(),
        workers,
        processes: 1,
        process: 0,
        host: "127.0.0.1".into(),
        base_port: 0,
        progress: false,
        crash_at_epoch,
        fail_checkpoint: None,
    }
}

fn run(dir: &std::path::Path, events: u64, workers: usize) -> Result<ClusterSummary> {
    let _ = std::fs::remove_dir_all(dir);
    cluster::run(HEAP_FS, config(dir, events, workers, None))?
        .ok_or_else(|| StateError::InvalidArgument("process 0 returned no summary".into()))
}

/// Events over the slowest worker's time (from the cluster's start, without the
/// process start-up and connection set-up, to the last checkpoint's completion).
fn events_per_second(s: &ClusterSummary) -> f64 {
    s.events as f64 / s.worker_elapsed.as_secs_f64().max(1e-9)
}

/// A free loopback base port with `n` free ports after it.
fn free_ports(n: u16) -> u16 {
    (20_000..60_000u16)
        .step_by(7)
        .map(|p| p.wrapping_add((std::process::id() % 5000) as u16))
        .find(|&base| (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .unwrap_or(2101)
}

/// The `nexmark-timely` binary beside this one, if it was built.
fn binary() -> Result<Option<std::path::PathBuf>> {
    let bin = std::env::current_exe()
        .map_err(|e| StateError::from_io("locating the bench binary", e))?
        .with_file_name("nexmark-timely");
    if !bin.exists() {
        eprintln!("bench: {} is not built; skipping its rows", bin.display());
        return Ok(None);
    }
    Ok(Some(bin))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| StateError::from_io(format!("creating {}", to.display()), e))?;
    let entries = std::fs::read_dir(from).map_err(|e| StateError::from_io(format!("reading {}", from.display()), e))?;
    for e in entries.flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)
                .map_err(|err| StateError::from_io(format!("copying {}", e.path().display()), err))?;
        }
    }
    Ok(())
}

/// `nexmark-timely` running Q5 on heap-fs over `events` events in 10 epochs, in `dir`.
fn q5_command(bin: &std::path::Path, dir: &std::path::Path, events: u64) -> Command {
    let mut c = Command::new(bin);
    c.args(["--query", "q5", "--backend", "heap-fs", "--quiet"])
        .args([
            "--events",
            &events.to_string(),
            "--epoch-events",
            &(events / 10).to_string(),
        ])
        .arg("--checkpoint-dir")
        .arg(dir);
    c
}

/// 2 processes × 2 workers of the `nexmark-timely` binary beside this one; its events/s.
fn two_processes(dir: &std::path::Path, events: u64) -> Result<Option<f64>> {
    let Some(bin) = binary()? else {
        return Ok(None);
    };
    let _ = std::fs::remove_dir_all(dir);
    let base = free_ports(3);
    let children: Vec<_> = (0..2)
        .map(|p| {
            q5_command(&bin, dir, events)
                .args([
                    "-n",
                    "2",
                    "-w",
                    "2",
                    "-p",
                    &p.to_string(),
                    "--base-port",
                    &base.to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| StateError::from_io("starting nexmark-timely", e))?;
    // Every worker's "worker W: E events in T ms" line, from both processes: all events
    // over the slowest time of process 0's workers. (Those start once the cluster is
    // connected and end when the last checkpoint completed, which needs every worker;
    // process 1's workers may start before timely's connection retry, one second.)
    let (mut total, mut slowest) = (0u64, 0u64);
    for (process, c) in children.into_iter().enumerate() {
        let out = c
            .wait_with_output()
            .map_err(|e| StateError::from_io("waiting for nexmark-timely", e))?;
        if !out.status.success() {
            return Err(StateError::InvalidArgument(format!(
                "nexmark-timely failed: {}",
                out.status
            )));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((_, rest)) = line.strip_prefix("worker ").and_then(|l| l.split_once(": ")) else {
                continue;
            };
            let words: Vec<&str> = rest.split(' ').collect();
            if let (Some(e), Some(ms)) = (words.first(), words.get(3))
                && words.get(1) == Some(&"events")
                && let (Ok(e), Ok(ms)) = (e.parse::<u64>(), ms.parse::<u64>())
            {
                total += e;
                if process == 0 {
                    slowest = slowest.max(ms);
                }
            }
        }
    }
    if total == 0 {
        return Err(StateError::InvalidArgument(
            "nexmark-timely printed no worker figures (an older build?)".into(),
        ));
    }
    Ok(Some(total as f64 * 1000.0 / slowest.max(1) as f64))
}

/// The rows.
pub fn cluster_rows(events: u64, rows: &mut Vec<Row>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("state-bench-cluster-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let one = run(&dir, events, 1)?;
    let base = events_per_second(&one);
    for workers in [2, 4] {
        let s = run(&dir, events, workers)?;
        rows.push(Row {
            name: format!("Nexmark Q5 on timely, {events} events, 1 process × {workers} workers (heap-fs)"),
            ours: events_per_second(&s),
            baseline: base,
            unit: "events/s",
            baseline_name: "1 worker",
            target: if cores >= workers {
                "reported"
            } else {
                "reported (more workers than cores)"
            },
        });
        if workers == 4 {
            let sync = s.workers.iter().map(|w| w.sync_max).max().unwrap_or_default();
            let asynchronous = s.workers.iter().map(|w| w.async_max).max().unwrap_or_default();
            let bytes = s.workers.iter().map(|w| w.bytes_per_checkpoint).sum::<u64>() / 4;
            rows.push(Row {
                name: "Q5 on 4 workers: longest synchronous part of a subtask's checkpoint".into(),
                ours: sync.as_secs_f64() * 1e6,
                baseline: asynchronous.as_secs_f64() * 1e6,
                unit: "µs",
                baseline_name: "longest asynchronous part",
                target: "reported",
            });
            rows.push(Row {
                name: "Q5 on 4 workers: state bytes per worker per checkpoint".into(),
                ours: bytes as f64,
                baseline: s.workers.iter().map(|w| w.bytes_per_checkpoint).max().unwrap_or(0) as f64,
                unit: "bytes",
                baseline_name: "the busiest worker",
                target: "reported",
            });
            let longest = s.durations.iter().max().copied().unwrap_or_default();
            let mean = s.durations.iter().sum::<Duration>() / s.durations.len().max(1) as u32;
            rows.push(Row {
                name: format!(
                    "Q5 on 4 workers: longest checkpoint, trigger to complete ({} checkpoints)",
                    s.completed
                ),
                ours: longest.as_secs_f64() * 1e3,
                baseline: mean.as_secs_f64() * 1e3,
                unit: "ms",
                baseline_name: "mean checkpoint",
                target: "reported",
            });
        }
    }
    if let Some(eps) = two_processes(&dir, events)? {
        rows.push(Row {
            name: format!("Nexmark Q5 on timely, {events} events, 2 processes × 2 workers over loopback"),
            ours: eps,
            baseline: base,
            unit: "events/s",
            baseline_name: "1 worker",
            target: "reported",
        });
    }
    // Restore: a 4-worker run killed after epoch 8 (the binary's crash hook), resumed
    // from copies of its directory at 4, 2 and 1 workers.
    if let Some(bin) = binary()? {
        let _ = std::fs::remove_dir_all(&dir);
        let status = q5_command(&bin, &dir, events)
            .args(["-w", "4", "--crash-at-epoch", "8"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| StateError::from_io("starting nexmark-timely", e))?;
        if status.code() != Some(3) {
            return Err(StateError::InvalidArgument(format!(
                "the run to restore ended with {status}"
            )));
        }
        let mut restore = Vec::new();
        for workers in [4usize, 2, 1] {
            let copy = dir.with_extension(format!("w{workers}"));
            let _ = std::fs::remove_dir_all(&copy);
            copy_dir(&dir, &copy)?;
            let s = cluster::run(HEAP_FS, config(&copy, events, workers, None))?
                .ok_or_else(|| StateError::InvalidArgument("no summary".into()))?;
            let _ = std::fs::remove_dir_all(&copy);
            if s.resumed_from.is_none() {
                return Err(StateError::InvalidArgument("the run did not resume".into()));
            }
            restore.push((workers, s.restore, s.restore_bytes));
        }
        let (same, same_bytes) = (restore[0].1.as_secs_f64() * 1e3, restore[0].2);
        for (workers, took, bytes) in &restore[1..] {
            rows.push(Row {
                name: format!("restore a 4-worker Q5 checkpoint at {workers} worker(s): slowest worker"),
                ours: took.as_secs_f64() * 1e3,
                baseline: same,
                unit: "ms",
                baseline_name: "at 4 workers",
                target: "reported",
            });
            rows.push(Row {
                name: format!("bytes read restoring a 4-worker Q5 checkpoint at {workers} worker(s), all workers"),
                ours: *bytes as f64,
                baseline: same_bytes as f64,
                unit: "bytes",
                baseline_name: "at 4 workers",
                target: "≈ 1× + metadata per worker",
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
