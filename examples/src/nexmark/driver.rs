//! The job driver: source → query → sink, event-time watermarks, asynchronous
//! checkpoints through a [`CheckpointCoordinator`] (the query is one operator at
//! parallelism 1; its asynchronous part acknowledges from its own thread), restart from
//! the latest completed checkpoint by a [`JobAssignment`], and an exactly-once sink.
//!
//! Exactly once: results produced between two checkpoints are written as the part file
//! of the later checkpoint when it is triggered, *before* its metadata (which completes
//! it); a restart from checkpoint `n` deletes every part above `n`. So after any crash,
//! the parts plus the replay from checkpoint `n` give each result exactly once. A
//! checkpoint that aborts leaves its part to be committed by the next one.
//!
//! Over 500 lines: one job loop (source, query, sink, watermarks, checkpoint triggering, restore) kept in one place so its order of events reads top to bottom.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state_api::{
    Acknowledgement, CheckpointCoordinator, CheckpointEvent, CheckpointStorage, CoordinatorConfig, Decline,
    JobAssignment, JobSnapshot, KeyedStateBackend, OperatorId, OperatorSpec, RestoreOptions, Result, StateError,
    SubtaskState, TimerQueueInfo,
};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::MemoryCheckpointStorage;

use super::events::{WATERMARK_LAG_MS, stream};
use super::queries::{Query, QueryKind, Timers};
use super::runtime::{KeyedPart, Runtime};
use crate::progress::Progress;

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
    /// A test hook: end the process abruptly (exit code 3, nothing flushed or
    /// checkpointed) once this many events were processed, as a crash would.
    pub crash_after: Option<u64>,
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
        let top = cfg.query.top(&self.results, 5);
        if !top.is_empty() {
            println!("  top results:");
            for line in top {
                println!("    {line}");
            }
        }
    }
}

fn progress_bytes(next_event: u64, max_ts: i64) -> Vec<u8> {
    let mut v = next_event.to_be_bytes().to_vec();
    v.extend_from_slice(&max_ts.to_be_bytes());
    v
}

fn read_progress(snapshot: &JobSnapshot, id: u64) -> Result<(u64, i64)> {
    let bad = || StateError::Corrupt {
        source_name: format!("checkpoint {id}"),
        section: "engine data `progress`".into(),
        detail: "missing or malformed".into(),
        source: None,
    };
    let p = snapshot
        .engine
        .get("progress")
        .filter(|p| p.len() == 16)
        .ok_or_else(bad)?;
    let next = u64::from_be_bytes(p[0..8].try_into().map_err(|_| bad())?);
    let max_ts = i64::from_be_bytes(p[8..16].try_into().map_err(|_| bad())?);
    Ok((next, max_ts))
}

fn part_name(id: u64) -> String {
    format!("results/part-{id:08}")
}

/// A checkpoint whose asynchronous part runs (and then acknowledges) on its own thread.
struct Pending {
    job: JoinHandle<Result<(Duration, u64)>>,
}

struct Sink<'a> {
    fs: &'a FsCheckpointStorage,
}

impl Sink<'_> {
    fn path(&self, rel: &str) -> String {
        self.fs.store_path(rel)
    }

    /// Writes the part of checkpoint `id`; returns its record (size and CRC32C).
    fn write_part(&self, id: u64, lines: &[String]) -> Result<PartRecord> {
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        let record = PartRecord {
            id,
            size: body.len() as u64,
            crc32c: crc32c::crc32c(body.as_bytes()),
        };
        self.fs
            .store()
            .write_all(&self.path(&part_name(id)), body.into_bytes())?;
        Ok(record)
    }

    /// The committed parts, in order: those `manifest` lists (each verified against its
    /// recorded size and CRC32C: a damaged or missing part is a typed error naming it);
    /// every other part file is deleted (written for a checkpoint that never completed).
    /// Without a manifest (checkpoints of an older release), the parts up to `up_to`.
    /// Returns the lines and the records of the committed parts.
    fn committed(&self, manifest: Option<&[PartRecord]>, up_to: Option<u64>) -> Result<(Vec<String>, Vec<PartRecord>)> {
        let names: Vec<String> = self
            .fs
            .store()
            .list(&self.path("results/"))?
            .into_iter()
            .filter(|n| n.starts_with("part-"))
            .collect();
        let keep = |id: u64| match manifest {
            Some(m) => m.iter().any(|r| r.id == id),
            None => up_to.is_some_and(|u| id <= u),
        };
        for name in &names {
            let id: u64 = name["part-".len()..].parse().unwrap_or(u64::MAX);
            if !keep(id) {
                self.fs.store().delete(&self.path(&format!("results/{name}")))?;
            }
        }
        // Each committed part with what its checkpoint recorded (nothing, for a checkpoint
        // of an older release).
        let records: Vec<(u64, Option<PartRecord>)> = match manifest {
            Some(m) => m.iter().map(|r| (r.id, Some(*r))).collect(),
            None => {
                let mut ids: Vec<u64> = names
                    .iter()
                    .filter_map(|n| n["part-".len()..].parse().ok())
                    .filter(|id| keep(*id))
                    .collect();
                ids.sort_unstable();
                ids.into_iter().map(|id| (id, None)).collect()
            }
        };
        let mut lines = Vec::new();
        let mut verified = Vec::with_capacity(records.len());
        for (id, recorded) in records {
            let bytes = super::parts::read_committed(self.fs, &part_name(id), recorded.map(|r| (r.size, r.crc32c)))?;
            verified.push(PartRecord {
                id,
                size: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            });
            lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
        }
        Ok((lines, verified))
    }
}

/// A committed result part: its checkpoint, size and CRC32C, recorded in every later
/// checkpoint's engine data (`parts`) so that a resume can verify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartRecord {
    id: u64,
    size: u64,
    crc32c: u32,
}

const PART_RECORD_LEN: usize = 20;

fn encode_parts(parts: &[PartRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.len() * PART_RECORD_LEN);
    for p in parts {
        out.extend_from_slice(&p.id.to_be_bytes());
        out.extend_from_slice(&p.size.to_be_bytes());
        out.extend_from_slice(&p.crc32c.to_be_bytes());
    }
    out
}

fn decode_parts(bytes: &[u8], id: u64) -> Result<Vec<PartRecord>> {
    if !bytes.len().is_multiple_of(PART_RECORD_LEN) {
        return Err(StateError::Corrupt {
            source_name: format!("checkpoint {id}"),
            section: "engine data `parts`".into(),
            detail: format!("{} bytes is not a whole number of part records", bytes.len()),
            source: None,
        });
    }
    Ok(bytes
        .chunks_exact(PART_RECORD_LEN)
        .map(|c| {
            let mut id = [0u8; 8];
            let mut size = [0u8; 8];
            let mut crc = [0u8; 4];
            id.copy_from_slice(&c[0..8]);
            size.copy_from_slice(&c[8..16]);
            crc.copy_from_slice(&c[16..20]);
            PartRecord {
                id: u64::from_be_bytes(id),
                size: u64::from_be_bytes(size),
                crc32c: u32::from_be_bytes(crc),
            }
        })
        .collect())
}

/// Everything a checkpoint of the job needs besides the backend and timers.
struct Checkpointing<'a> {
    operator: OperatorId,
    coordinator: Arc<CheckpointCoordinator>,
    events: Receiver<CheckpointEvent>,
    target: Arc<dyn CheckpointStorage>,
    fs: FsCheckpointStorage,
    sink: Sink<'a>,
    /// Result lines of triggered checkpoints not completed yet, by checkpoint.
    parts: BTreeMap<u64, Vec<String>>,
    /// Every part written so far (committed by the next completed checkpoint at the latest).
    manifest: Vec<PartRecord>,
}

impl Checkpointing<'_> {
    /// Triggers checkpoint `id` (with the source position), writes its result part, runs
    /// the synchronous part of the keyed backend and timers, and starts the asynchronous
    /// part on a thread of its own that acknowledges (or declines) to the coordinator.
    fn start<R: Runtime>(
        &mut self,
        rt: &R,
        backend: &mut R::Backend,
        timers: &mut Timers<R::Queue>,
        id: u64,
        progress: (u64, i64),
        part: Vec<String>,
    ) -> Result<Pending> {
        // The part first: the metadata that commits it (and records its size and CRC32C)
        // can only come after.
        self.manifest.push(self.sink.write_part(id, &part)?);
        self.parts.insert(id, part);
        let engine = BTreeMap::from([
            ("progress".to_string(), progress_bytes(progress.0, progress.1)),
            ("parts".to_string(), encode_parts(&self.manifest)),
        ]);
        self.coordinator.trigger_with(id, engine)?;
        let keyed = rt.snapshot(backend, id)?;
        let timer_part = timers.snapshot(backend, id)?;
        let (target, storage) = (Arc::clone(&self.target), self.fs.clone());
        let (coordinator, operator) = (Arc::clone(&self.coordinator), self.operator.clone());
        let job = std::thread::spawn(move || {
            let t = Instant::now();
            let written = (|| {
                let mut state = SubtaskState::default();
                match keyed {
                    KeyedPart::Full(s) => state.keyed.push(s.run(&*target)?),
                    KeyedPart::Incremental(s) => state.incremental.push(s.run(&storage)?),
                }
                state.timers.push(timer_part.run(&*target)?);
                Ok::<_, StateError>(state)
            })();
            match written {
                Ok(state) => {
                    let size = state.state_size();
                    coordinator.acknowledge(Acknowledgement {
                        checkpoint_id: id,
                        operator,
                        subtask: 0,
                        state,
                    })?;
                    Ok((t.elapsed(), size))
                }
                Err(e) => {
                    coordinator.decline(Decline {
                        checkpoint_id: id,
                        operator,
                        subtask: 0,
                        reason: e.to_string(),
                    })?;
                    Err(e)
                }
            }
        });
        Ok(Pending { job })
    }

    /// Waits for a checkpoint's asynchronous part, then applies what the coordinator
    /// decided: a completed checkpoint commits its parts (and earlier ones of aborted
    /// checkpoints) and tells the backend; an aborted one leaves its part for the next.
    fn finish<B: KeyedStateBackend>(
        &mut self,
        pending: Pending,
        backend: &mut B,
        summary: &mut Summary,
        results: &mut Vec<String>,
    ) -> Result<()> {
        match pending.job.join().map_err(|_| StateError::Internal {
            what: "the snapshot thread panicked".into(),
        })? {
            Ok((took, size)) => {
                summary.async_total += took;
                summary.checkpoint_bytes.push(size);
            }
            Err(e) => eprintln!("nexmark: a checkpoint failed and was aborted: {e}"),
        }
        while let Ok(event) = self.events.try_recv() {
            match event {
                CheckpointEvent::Completed { checkpoint_id } => {
                    backend.notify_checkpoint_complete(checkpoint_id);
                    let later = self.parts.split_off(&(checkpoint_id + 1));
                    for (_, part) in std::mem::replace(&mut self.parts, later) {
                        results.extend(part);
                    }
                    summary.checkpoints += 1;
                }
                CheckpointEvent::Aborted { checkpoint_id, .. } => backend.notify_checkpoint_aborted(checkpoint_id),
            }
        }
        Ok(())
    }
}

/// Runs (or resumes) the job; returns the summary with every result in order of commit.
pub fn run<R: Runtime>(rt: &R, cfg: &JobConfig) -> Result<Summary> {
    let job = format!("nexmark-{}-{}", cfg.query.name(), rt.name());
    let options = FsOptions::builder().retained_checkpoints(2).build()?;
    let mut fs = FsCheckpointStorage::open(&cfg.dir, &job, options.clone())?;
    if fs.store().size(&fs.store_path(DONE))?.is_some() {
        // The last run finished: start over.
        fs.store().delete_dir(&fs.store_path(""))?;
        drop(fs); // Releases its lease before the directory is owned again.
        fs = FsCheckpointStorage::open(&cfg.dir, &job, options)?;
    }
    let memory: Arc<dyn CheckpointStorage> = Arc::new(MemoryCheckpointStorage::with_max_state_size(256 << 20));
    let target: Arc<dyn CheckpointStorage> = if rt.in_memory() { memory } else { Arc::new(fs.clone()) };
    // The query is one operator at parallelism 1 of a job with max parallelism 128.
    let spec = OperatorSpec::new(cfg.query.name(), 1, 128)?;
    let every = cfg.checkpoint_every.max(1).div_ceil(WATERMARK_EVERY) * WATERMARK_EVERY;
    let mut summary = Summary {
        backend: rt.name().to_string(),
        ..Summary::default()
    };
    let started = Instant::now();

    // Restore from the latest completed checkpoint, if any: the assignment gives the
    // subtask its key groups and exactly the handles that intersect them.
    let latest = fs.latest_checkpoint()?;
    let sink = Sink { fs: &fs };
    let manifest = match &latest {
        Some(meta) => match meta.snapshot.engine.get("parts") {
            Some(bytes) => Some(decode_parts(bytes, meta.checkpoint_id)?),
            None => None,
        },
        None => Some(Vec::new()),
    };
    let (mut results, manifest) = sink.committed(manifest.as_deref(), latest.as_ref().map(|m| m.checkpoint_id))?;
    let restored = match &latest {
        Some(meta) => {
            let t = Instant::now();
            let plan = JobAssignment::new(&meta.snapshot, std::slice::from_ref(&spec), RestoreOptions::default())?;
            let assignment = plan.operator(spec.id.as_str())[0].clone();
            let b = rt.restore(&assignment, &fs)?;
            let (next, max_ts) = read_progress(&meta.snapshot, meta.checkpoint_id)?;
            summary.resumed_from = Some(meta.checkpoint_id);
            summary.restore_time = Some(t.elapsed());
            Some((b, assignment, next, max_ts, meta.checkpoint_id))
        }
        None => None,
    };
    let last_completed = restored.as_ref().map_or(0, |r| r.4);
    let (mut backend, assignment, mut next_event, mut max_ts) = match restored {
        Some((b, a, next, max_ts, _)) => (b, Some(a), next, max_ts),
        None => {
            let plan = JobAssignment::new(
                &JobSnapshot::default(),
                std::slice::from_ref(&spec),
                RestoreOptions::default(),
            )?;
            (
                rt.create(&plan.operator(spec.id.as_str())[0].context())?,
                None,
                0,
                i64::MIN,
            )
        }
    };
    let mut next_id = last_completed + 1;
    let ctx_max_parallelism = spec.max_parallelism;
    let mut query = Query::open(cfg.query, &mut backend)?;
    let (event_q, processing_q) = (rt.queue(&mut backend, "event")?, rt.queue(&mut backend, "processing")?);
    let mut timers: Timers<R::Queue> = Timers::new(
        event_q,
        processing_q,
        Arc::new(state_api::SystemClock),
        ctx_max_parallelism,
    )?;
    if let Some(assignment) = &assignment {
        let t = Instant::now();
        timers.restore(&mut backend, &assignment.timers, &fs)?;
        summary.restore_time = summary.restore_time.map(|r| r + t.elapsed());
        if max_ts > i64::MIN {
            let mut none = Vec::new();
            query.on_watermark(&mut backend, &mut timers, max_ts - WATERMARK_LAG_MS, &mut none)?;
            if !none.is_empty() {
                return Err(StateError::InvalidArgument("timers were due at a checkpoint".into()));
            }
        }
    }

    let coordinator = Arc::new(
        CheckpointCoordinator::new(
            std::slice::from_ref(&spec),
            Arc::new(fs.clone()),
            CoordinatorConfig::default(),
        )?
        .resume_after(last_completed),
    );
    let mut ckpt = Checkpointing {
        operator: spec.id.clone(),
        events: coordinator.subscribe(),
        coordinator,
        target,
        fs: fs.clone(),
        sink,
        parts: BTreeMap::new(),
        manifest,
    };
    let mut out: Vec<String> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut progress = Progress::new(format!("{} {}", cfg.query.name(), rt.name()), cfg.events, cfg.progress);
    let processed_from = next_event;

    let mut source = stream(next_event);
    while next_event < cfg.events {
        let Some(event) = source.next() else { break };
        max_ts = max_ts.max(event.ts());
        query.process(&mut backend, &mut timers, &event, &mut out)?;
        next_event += 1;
        if cfg.crash_after == Some(next_event) {
            std::process::exit(3);
        }
        if next_event % WATERMARK_EVERY == 0 {
            query.on_watermark(&mut backend, &mut timers, max_ts - WATERMARK_LAG_MS, &mut out)?;
            if pending.as_ref().is_some_and(|p| p.job.is_finished())
                && let Some(p) = pending.take()
            {
                ckpt.finish(p, &mut backend, &mut summary, &mut results)?;
            }
        }
        if every >= 5 && next_event % every == every - every / 5 {
            rt.ahead_of_barrier(&mut backend)?;
        }
        if next_event % every == 0 && next_event < cfg.events {
            if let Some(p) = pending.take() {
                ckpt.finish(p, &mut backend, &mut summary, &mut results)?;
            }
            let t = Instant::now();
            pending = Some(ckpt.start(
                rt,
                &mut backend,
                &mut timers,
                next_id,
                (next_event, max_ts),
                std::mem::take(&mut out),
            )?);
            next_id += 1;
            summary.sync_max = summary.sync_max.max(t.elapsed());
        }
        progress.update(next_event, || {
            format!(
                "{:.0} events/s, {} checkpoints, {} timers",
                (next_event - processed_from) as f64 / started.elapsed().as_secs_f64().max(1e-9),
                summary.checkpoints,
                timers.event_queue().len()
            )
        });
    }
    if let Some(p) = pending.take() {
        ckpt.finish(p, &mut backend, &mut summary, &mut results)?;
    }
    // End of input: close everything and commit the rest with a final checkpoint.
    query.on_watermark(&mut backend, &mut timers, i64::MAX, &mut out)?;
    let final_part = ckpt.start(
        rt,
        &mut backend,
        &mut timers,
        next_id,
        (next_event, max_ts),
        std::mem::take(&mut out),
    )?;
    ckpt.finish(final_part, &mut backend, &mut summary, &mut results)?;
    if !ckpt.parts.is_empty() {
        return Err(StateError::InvalidArgument(format!(
            "the final checkpoint {next_id} did not complete; run the job again to resume"
        )));
    }
    fs.store()
        .write_all(&fs.store_path(DONE), results.len().to_string().into_bytes())?;
    progress.finish();
    summary.events_processed = next_event - processed_from;
    summary.elapsed = started.elapsed();
    summary.incremental = rt.incremental();
    summary.results = results;
    Ok(summary)
}
