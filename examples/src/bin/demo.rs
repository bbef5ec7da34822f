//! The main job: bids per auction per tumbling window (keyed value and reducing state
//! scoped to windows, closed by the watermark), checkpointed asynchronously to local
//! disk (`./checkpoints` by default, any state-fs URI with `--checkpoint-dir`), with a
//! simulated crash, recovery from the latest completed checkpoint found on disk, and
//! the results checked against a reference implementation.
//!
//! `cargo xtask demo -- --backend rocksdb --events 2000000 --checkpoint-every 250000 --checkpoint-dir ./checkpoints`

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state_api::{
    BackendContext, DefaultOperatorStateBackend, KeyedSnapshotHandle, KeyedStateBackend, OperatorSnapshotHandle,
    OperatorStateBackend, Result, StateError,
};
use state_examples::{AuctionWindows, MAX_OUT_OF_ORDER_MS, arg, bid, reference};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

const WINDOW: i64 = 10_000;
const WATERMARK_EVERY: u64 = 1_000;
const JOB: &str = "demo";

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Source position and job progress stored in each checkpoint's metadata.
fn progress(next_event: u64, max_ts: i64, results: usize) -> Vec<u8> {
    let mut v = next_event.to_be_bytes().to_vec();
    v.extend_from_slice(&max_ts.to_be_bytes());
    v.extend_from_slice(&(results as u64).to_be_bytes());
    v
}

fn read_progress(meta: &CheckpointMetadata) -> Result<(u64, i64, usize)> {
    let bad = || StateError::Corrupt {
        source_name: format!("checkpoint {}", meta.checkpoint_id),
        section: "extra/progress".into(),
        detail: "missing or malformed".into(),
    };
    let p = meta.extra.get("progress").filter(|p| p.len() == 24).ok_or_else(bad)?;
    let word = |i: usize| <[u8; 8]>::try_from(&p[i..i + 8]).map_err(|_| bad());
    Ok((
        u64::from_be_bytes(word(0)?),
        i64::from_be_bytes(word(8)?),
        u64::from_be_bytes(word(16)?) as usize,
    ))
}

type Pending = (
    CheckpointMetadata,
    JoinHandle<Result<(KeyedSnapshotHandle, OperatorSnapshotHandle)>>,
);

struct Stats {
    checkpoints: u64,
    bytes: u64,
}

/// Waits for an in-flight checkpoint's asynchronous part and completes it.
fn complete(fs: &FsCheckpointStorage, pending: Pending, stats: &mut Stats) -> Result<()> {
    let (mut meta, job) = pending;
    let (keyed, operator) = job
        .join()
        .map_err(|_| StateError::InvalidArgument("snapshot thread panicked".into()))??;
    meta.keyed.push(keyed);
    meta.operator.push(operator);
    stats.bytes += meta.state_size();
    fs.complete_checkpoint(meta)?;
    stats.checkpoints += 1;
    Ok(())
}

/// Which keyed backend the job runs on: picked at run time among those compiled in
/// (cargo features `heap`, `rocksdb`). The operator code is the same for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Heap,
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

fn main() -> Result<()> {
    let backend = match arg("--backend").as_deref() {
        None | Some("heap") => Backend::Heap,
        #[cfg(feature = "rocksdb")]
        Some("rocksdb") => Backend::RocksDb,
        Some(other) => {
            return Err(StateError::InvalidArgument(format!(
                "unknown or not compiled-in backend `{other}` (heap{})",
                if cfg!(feature = "rocksdb") { ", rocksdb" } else { "" }
            )));
        }
    };
    match backend {
        Backend::Heap => run_job("heap", HeapKeyedStateBackend::<u64>::new, |ctx, meta, storage| {
            HeapKeyedStateBackend::<u64>::restore(ctx, &meta.keyed, storage)
        }),
        #[cfg(feature = "rocksdb")]
        Backend::RocksDb => {
            use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
            run_job(
                "rocksdb",
                |ctx| RocksDbKeyedStateBackend::<u64>::new(ctx, RocksDbConfig::default()),
                |ctx, meta, storage| {
                    RocksDbKeyedStateBackend::<u64>::restore(ctx, RocksDbConfig::default(), &meta.keyed, storage)
                },
            )
        }
    }
}

/// The job, generic over the keyed backend.
fn run_job<B: KeyedStateBackend<Key = u64>>(
    backend_name: &str,
    create: impl Fn(&BackendContext) -> Result<B>,
    restore: impl Fn(&BackendContext, &CheckpointMetadata, &FsCheckpointStorage) -> Result<B>,
) -> Result<()> {
    let events = num("--events", 2_000_000);
    let every = num("--checkpoint-every", 250_000).max(WATERMARK_EVERY);
    let fail_at = num("--fail-at", events * 7 / 10);
    let dir = arg("--checkpoint-dir").unwrap_or_else(|| "./checkpoints".into());
    let lag = MAX_OUT_OF_ORDER_MS;
    let ctx = BackendContext::single(128);
    let options = FsOptions {
        retained_checkpoints: 2,
        ..FsOptions::default()
    };

    // A fresh run: discard checkpoints of earlier demo runs.
    let root = std::path::Path::new(&dir).join(JOB);
    if !dir.contains("://") && root.exists() {
        std::fs::remove_dir_all(&root).map_err(|e| StateError::from_io(format!("clearing `{}`", root.display()), e))?;
    }
    let mut fs = FsCheckpointStorage::open(&dir, JOB, options.clone())?;
    println!(
        "demo on {backend_name}: {events} bids, tumbling {WINDOW} ms windows, checkpoints every {every} events to {}, crash after event {fail_at}",
        fs.describe()
    );
    let started = Instant::now();
    let mut keyed: B = create(&ctx)?;
    let mut ops = DefaultOperatorStateBackend::new(0);
    let mut job = AuctionWindows::open(&mut keyed, &mut ops, WINDOW)?;
    let mut results = Vec::new();
    let mut stats = Stats {
        checkpoints: 0,
        bytes: 0,
    };
    let mut pending: Option<Pending> = None;
    let mut sync_max = Duration::ZERO;
    let mut restore_time = None;
    let mut max_ts = i64::MIN;
    let mut i = 0;
    let mut crashed = false;
    let mut next_id = 1;
    while i < events {
        if i == fail_at && !crashed {
            // Crash: memory and the in-flight checkpoint are lost. Restart: open the
            // storage again, find the latest completed checkpoint, restore, resume.
            crashed = true;
            drop(pending.take());
            let t = Instant::now();
            fs = FsCheckpointStorage::open(&dir, JOB, options.clone())?;
            let meta = fs.latest_checkpoint()?.ok_or_else(|| {
                StateError::InvalidArgument("crash before the first checkpoint: lower --fail-at".into())
            })?;
            keyed = restore(&ctx, &meta, &fs)?;
            ops = DefaultOperatorStateBackend::restore(&meta.operator, 0, 1, &fs)?;
            job = AuctionWindows::open(&mut keyed, &mut ops, WINDOW)?;
            let (next_event, ts, emitted) = read_progress(&meta)?;
            results.truncate(emitted);
            (i, max_ts) = (next_event, ts);
            next_id = meta.checkpoint_id + 1;
            restore_time = Some(t.elapsed());
            println!(
                "  crash at event {fail_at}: restored checkpoint {} (event {i}) in {:.2?}",
                meta.checkpoint_id,
                t.elapsed()
            );
            continue;
        }
        let b = bid(i);
        max_ts = max_ts.max(b.ts);
        job.process(&mut keyed, &mut ops, &b)?;
        i += 1;
        if i % WATERMARK_EVERY == 0 {
            job.on_watermark(&mut keyed, &mut ops, max_ts - lag, &mut results)?;
            // Complete the in-flight checkpoint as soon as its asynchronous part is done.
            if pending.as_ref().is_some_and(|(_, t)| t.is_finished())
                && let Some(p) = pending.take()
            {
                complete(&fs, p, &mut stats)?;
            }
        }
        if i % every == 0 {
            if let Some(p) = pending.take() {
                complete(&fs, p, &mut stats)?;
            }
            let id = next_id;
            next_id += 1;
            let t = Instant::now();
            let keyed_part = keyed.snapshot(id)?;
            let operator_part = ops.snapshot(id)?;
            sync_max = sync_max.max(t.elapsed());
            let mut meta = CheckpointMetadata::new(JOB, id, SnapshotKind::Checkpoint);
            meta.extra.insert("progress".into(), progress(i, max_ts, results.len()));
            let storage = fs.clone();
            let job_thread = std::thread::spawn(move || {
                let t = Instant::now();
                let r = (keyed_part.run(&storage)?, operator_part.run(&storage)?);
                log_async_part(id, t.elapsed());
                Ok(r)
            });
            // The job goes on processing while the asynchronous part writes.
            pending = Some((meta, job_thread));
        }
    }
    if let Some(p) = pending.take() {
        complete(&fs, p, &mut stats)?;
    }
    job.on_watermark(&mut keyed, &mut ops, i64::MAX, &mut results)?;
    let elapsed = started.elapsed();
    results.sort();
    let expected = reference(events, WINDOW, lag, WATERMARK_EVERY);
    println!(
        "done: {} window results in {elapsed:.2?} ({:.0} events/s); {} checkpoints completed, {} bytes; \
         longest synchronous snapshot part {sync_max:.2?}; restore {}",
        results.len(),
        events as f64 / elapsed.as_secs_f64(),
        stats.checkpoints,
        stats.bytes,
        restore_time
            .map(|t| format!("{t:.2?}"))
            .unwrap_or_else(|| "not needed".into())
    );
    if results == expected {
        println!("results match the reference implementation: exactly-once state across the crash");
        Ok(())
    } else {
        Err(StateError::InvalidArgument(format!(
            "results differ from the reference: {} vs {} results",
            results.len(),
            expected.len()
        )))
    }
}

/// With `DEMO_VERBOSE` set, prints how long each asynchronous part took.
fn log_async_part(id: u64, took: Duration) {
    if std::env::var_os("DEMO_VERBOSE").is_some() {
        eprintln!("  checkpoint {id}: asynchronous part took {took:.2?}");
    }
}
