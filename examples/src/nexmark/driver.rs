//! The job driver: source → query → sink, event-time watermarks, asynchronous
//! checkpoints, restart from the latest completed checkpoint, and an exactly-once sink.
//!
//! Exactly once: results produced between two checkpoints are written as the part file
//! of the later checkpoint *before* its metadata (which completes it); a restart from
//! checkpoint `n` deletes every part above `n`. So after any crash, the parts plus the
//! replay from checkpoint `n` give each result exactly once.

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state_api::{
    BackendContext, CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle, Result, StateError, TimerQueueInfo,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::MemoryCheckpointStorage;

use super::events::{WATERMARK_LAG_MS, stream};
use super::queries::{Query, QueryKind, Timers};
use super::runtime::{KeyedPart, Runtime};

/// Events between watermarks.
pub const WATERMARK_EVERY: u64 = 1_000;
const DONE: &str = "results/_done";

/// What to run.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub query: QueryKind,
    pub events: u64,
    /// Events between checkpoints (rounded up to a multiple of [`WATERMARK_EVERY`]).
    pub checkpoint_every: u64,
    /// Checkpoint directory or URI (`./checkpoints`, `file:///…`, `s3://…`).
    pub dir: String,
    /// Print a progress line.
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub backend: String,
    pub resumed_from: Option<u64>,
    pub restore_time: Option<Duration>,
    pub events_processed: u64,
    pub elapsed: Duration,
    pub checkpoints: u64,
    pub sync_max: Duration,
    pub async_total: Duration,
    pub checkpoint_bytes: Vec<u64>,
    pub incremental: bool,
    pub results: Vec<String>,
}

impl Summary {
    pub fn print(&self, cfg: &JobConfig) {
        let eps = self.events_processed as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let (first, last) = (
            self.checkpoint_bytes.first().copied().unwrap_or(0),
            self.checkpoint_bytes.last().copied().unwrap_or(0),
        );
        println!(
            "{} on {}: {} results; {} events in {:.2?} ({eps:.0} events/s)",
            cfg.query.name(),
            self.backend,
            self.results.len(),
            self.events_processed,
            self.elapsed
        );
        println!(
            "  checkpoints: {} ({}), longest synchronous part {:.2?}, asynchronous parts {:.2?} in all, state size first {first} B, last {last} B",
            self.checkpoints,
            if self.incremental { "incremental" } else { "full" },
            self.sync_max,
            self.async_total
        );
        match (self.resumed_from, self.restore_time) {
            (Some(id), Some(t)) => println!("  resumed from checkpoint {id}, restore took {t:.2?}"),
            _ => println!("  started fresh"),
        }
    }
}

fn progress_bytes(next_event: u64, max_ts: i64) -> Vec<u8> {
    let mut v = next_event.to_be_bytes().to_vec();
    v.extend_from_slice(&max_ts.to_be_bytes());
    v
}

fn read_progress(meta: &CheckpointMetadata) -> Result<(u64, i64)> {
    let bad = || StateError::Corrupt {
        source_name: format!("checkpoint {}", meta.checkpoint_id),
        section: "extra/progress".into(),
        detail: "missing or malformed".into(),
    };
    let p = meta.extra.get("progress").filter(|p| p.len() == 16).ok_or_else(bad)?;
    let next = u64::from_be_bytes(p[0..8].try_into().map_err(|_| bad())?);
    let max_ts = i64::from_be_bytes(p[8..16].try_into().map_err(|_| bad())?);
    Ok((next, max_ts))
}

fn part_name(id: u64) -> String {
    format!("results/part-{id:08}")
}

enum Written {
    Full(KeyedSnapshotHandle),
    Incremental(IncrementalKeyedHandle),
}

struct Pending {
    meta: CheckpointMetadata,
    part: Vec<String>,
    job: JoinHandle<Result<(Written, KeyedSnapshotHandle, Duration)>>,
}

struct Sink<'a> {
    fs: &'a FsCheckpointStorage,
}

impl Sink<'_> {
    fn path(&self, rel: &str) -> String {
        self.fs.store_path(rel)
    }

    fn write_part(&self, id: u64, lines: &[String]) -> Result<()> {
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        self.fs.store().write_all(&self.path(&part_name(id)), body.into_bytes())
    }

    /// Parts of checkpoints up to `id`, in order; deletes later ones (not committed).
    fn committed(&self, up_to: Option<u64>) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .fs
            .store()
            .list(&self.path("results/"))?
            .into_iter()
            .filter(|n| n.starts_with("part-"))
            .collect();
        names.sort();
        let mut lines = Vec::new();
        for name in names {
            let id: u64 = name["part-".len()..].parse().unwrap_or(u64::MAX);
            let path = self.path(&format!("results/{name}"));
            if up_to.is_some_and(|m| id <= m) {
                let bytes = self.fs.store().read_all(&path)?;
                lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
            } else {
                self.fs.store().delete(&path)?;
            }
        }
        Ok(lines)
    }
}

/// Metadata of checkpoint `id`, with the source position and the largest timestamp seen.
fn checkpoint_meta(job: &str, id: u64, next_event: u64, max_ts: i64) -> CheckpointMetadata {
    let mut meta = CheckpointMetadata::new(job, id, SnapshotKind::Checkpoint);
    meta.extra.insert("progress".into(), progress_bytes(next_event, max_ts));
    meta
}

/// The synchronous part of a checkpoint (keyed backend and timers), then its
/// asynchronous part on a thread of its own while the job goes on.
fn start_checkpoint<R: Runtime>(
    rt: &R,
    backend: &mut R::Backend,
    timers: &mut Timers<R::Queue>,
    meta: CheckpointMetadata,
    part: Vec<String>,
    target: &Arc<dyn CheckpointStorage>,
    fs: &FsCheckpointStorage,
) -> Result<Pending> {
    let id = meta.checkpoint_id;
    let keyed = rt.snapshot(backend, id)?;
    let timer_part = timers.snapshot(backend, id)?;
    let (target, storage) = (Arc::clone(target), fs.clone());
    let job = std::thread::spawn(move || {
        let t = Instant::now();
        let written = match keyed {
            KeyedPart::Full(s) => Written::Full(s.run(&*target)?),
            KeyedPart::Incremental(s) => Written::Incremental(s.run(&storage)?),
        };
        Ok((written, timer_part.run(&*target)?, t.elapsed()))
    });
    Ok(Pending { meta, part, job })
}

/// Runs (or resumes) the job; returns the summary with every result in order of commit.
pub fn run<R: Runtime>(rt: &R, cfg: &JobConfig) -> Result<Summary> {
    let job = format!("nexmark-{}-{}", cfg.query.name(), rt.name());
    let options = FsOptions {
        retained_checkpoints: 2,
        ..FsOptions::default()
    };
    let mut fs = FsCheckpointStorage::open(&cfg.dir, &job, options.clone())?;
    if fs.store().size(&fs.store_path(DONE))?.is_some() {
        // The last run finished: start over.
        fs.store().delete_dir(&fs.store_path(""))?;
        fs = FsCheckpointStorage::open(&cfg.dir, &job, options)?;
    }
    let memory: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::with_max_state_size(256 << 20));
    let target: Arc<dyn CheckpointStorage> = if rt.in_memory() { memory } else { Arc::new(fs.clone()) };
    let ctx = BackendContext::single(128);
    let every = cfg.checkpoint_every.max(1).div_ceil(WATERMARK_EVERY) * WATERMARK_EVERY;
    let mut summary = Summary {
        backend: rt.name().to_string(),
        ..Summary::default()
    };
    let started = Instant::now();

    // Restore from the latest completed checkpoint, if any.
    let latest = fs.latest_checkpoint()?;
    let sink = Sink { fs: &fs };
    let mut results = sink.committed(latest.as_ref().map(|m| m.checkpoint_id))?;
    let (mut backend, mut next_event, mut max_ts, mut next_id) = match &latest {
        Some(meta) => {
            let t = Instant::now();
            let b = rt.restore(&ctx, meta, &fs)?;
            let (next, max_ts) = read_progress(meta)?;
            summary.resumed_from = Some(meta.checkpoint_id);
            summary.restore_time = Some(t.elapsed());
            (b, next, max_ts, meta.checkpoint_id + 1)
        }
        None => (rt.create(&ctx)?, 0, i64::MIN, 1),
    };
    let mut query = Query::open(cfg.query, &mut backend)?;
    let (event_q, processing_q) = (rt.queue(&mut backend, "event")?, rt.queue(&mut backend, "processing")?);
    let mut timers: Timers<R::Queue> = Timers::new(
        event_q,
        processing_q,
        Arc::new(state_api::SystemClock),
        ctx.max_parallelism,
    )?;
    if let Some(meta) = &latest {
        let t = Instant::now();
        timers.restore(&mut backend, &meta.timers, &fs)?;
        summary.restore_time = summary.restore_time.map(|r| r + t.elapsed());
        if max_ts > i64::MIN {
            let mut none = Vec::new();
            query.on_watermark(&mut backend, &mut timers, max_ts - WATERMARK_LAG_MS, &mut none)?;
            if !none.is_empty() {
                return Err(StateError::InvalidArgument("timers were due at a checkpoint".into()));
            }
        }
    }

    let mut out: Vec<String> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut last_print = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let processed_from = next_event;
    let complete = |p: Pending, backend: &mut R::Backend, summary: &mut Summary, results: &mut Vec<String>| {
        let Pending { mut meta, part, job } = p;
        let (written, timer_handle, took) = job
            .join()
            .map_err(|_| StateError::InvalidArgument("snapshot thread panicked".into()))??;
        match written {
            Written::Full(h) => meta.keyed.push(h),
            Written::Incremental(h) => meta.add_incremental(h),
        }
        meta.timers.push(timer_handle);
        let id = meta.checkpoint_id;
        summary.checkpoint_bytes.push(meta.state_size());
        // The part first, then the metadata that commits both.
        sink.write_part(id, &part)?;
        fs.complete_checkpoint(meta)?;
        rt.checkpoint_complete(backend, id);
        results.extend(part);
        summary.checkpoints += 1;
        summary.async_total += took;
        Ok::<(), StateError>(())
    };

    let mut source = stream(next_event);
    while next_event < cfg.events {
        let Some(event) = source.next() else { break };
        max_ts = max_ts.max(event.ts());
        query.process(&mut backend, &mut timers, &event, &mut out)?;
        next_event += 1;
        if next_event % WATERMARK_EVERY == 0 {
            query.on_watermark(&mut backend, &mut timers, max_ts - WATERMARK_LAG_MS, &mut out)?;
            if pending.as_ref().is_some_and(|p| p.job.is_finished())
                && let Some(p) = pending.take()
            {
                complete(p, &mut backend, &mut summary, &mut results)?;
            }
        }
        if next_event % every == 0 && next_event < cfg.events {
            if let Some(p) = pending.take() {
                complete(p, &mut backend, &mut summary, &mut results)?;
            }
            let meta = checkpoint_meta(&job, next_id, next_event, max_ts);
            next_id += 1;
            let t = Instant::now();
            pending = Some(start_checkpoint(
                rt,
                &mut backend,
                &mut timers,
                meta,
                std::mem::take(&mut out),
                &target,
                &fs,
            )?);
            summary.sync_max = summary.sync_max.max(t.elapsed());
        }
        if cfg.progress && last_print.elapsed() > Duration::from_millis(if tty { 250 } else { 5000 }) {
            last_print = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let line = format!(
                "{} {}: {next_event}/{} events ({:.0}%), {:.0} events/s, {} checkpoints, {} timers",
                cfg.query.name(),
                rt.name(),
                cfg.events,
                next_event as f64 * 100.0 / cfg.events.max(1) as f64,
                (next_event - processed_from) as f64 / secs,
                summary.checkpoints,
                timers.event_queue().len()
            );
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
        }
    }
    if let Some(p) = pending.take() {
        complete(p, &mut backend, &mut summary, &mut results)?;
    }
    // End of input: close everything and commit the rest with a final checkpoint.
    query.on_watermark(&mut backend, &mut timers, i64::MAX, &mut out)?;
    let meta = checkpoint_meta(&job, next_id, next_event, max_ts);
    let final_part = start_checkpoint(
        rt,
        &mut backend,
        &mut timers,
        meta,
        std::mem::take(&mut out),
        &target,
        &fs,
    )?;
    complete(final_part, &mut backend, &mut summary, &mut results)?;
    fs.store()
        .write_all(&fs.store_path(DONE), results.len().to_string().into_bytes())?;
    if cfg.progress && tty {
        eprintln!();
    }
    summary.events_processed = next_event - processed_from;
    summary.elapsed = started.elapsed();
    summary.incremental = rt.incremental();
    summary.results = results;
    Ok(summary)
}
