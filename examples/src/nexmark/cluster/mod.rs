//! Nexmark on timely dataflow, across threads and processes: the library's backends
//! inside an existing distributed engine.
//!
//! - Workers are Flink subtasks: every stateful operator runs at parallelism = all
//!   workers of all processes, and records travel to the worker owning their key group
//!   (`operator_index_for_key_group`), never by `hash % peers`.
//! - The source is split deterministically: worker `w` of `W` sends events `i` with
//!   `i % W == w`; epoch `e` holds events `(e-1)·N .. e·N`, so a checkpoint's source
//!   position is its epoch alone and a restart at any number of workers replays exactly.
//! - Each epoch ends in a checkpoint (see [`dataflow`] and [`control`]): one
//!   [`CheckpointCoordinator`] in process 0; acknowledgements from other processes over
//!   a loopback TCP connection; completion notifies every subtask's backend.
//! - Exactly-once results: each worker writes its lines of an epoch as a part file before
//!   the epoch's checkpoint is triggered; the checkpoint records every part (size and
//!   CRC32C); a restart from checkpoint `c` deletes every part it does not list.
//! - Restart: all processes restart, resume from the latest completed checkpoint, and
//!   each worker restores only the handles of its key groups, at any parallelism.
//!
//! Over 500 lines: the timely job's setup, epoch plan and restore, one sequence; the control channel, dataflow and subtask live in their own files.

pub mod control;
pub mod dataflow;
pub mod subtask;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use state_api::{
    CheckpointCoordinator, CheckpointStorage, CoordinatorConfig, JobAssignment, OperatorSpec, RestoreOptions, Result,
    StateError,
};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::MemoryCheckpointStorage;

use control::{ClusterPart, Down, Notices, Up};
use dataflow::{Env, EpochPlan};
use subtask::Subtask;

use super::events::stream;
use super::queries::QueryKind;
use super::runtime::Runtime;
use crate::progress::Progress;

/// The job's maximum parallelism (key groups).
pub const MAX_PARALLELISM: u32 = 128;
const DONE: &str = "results/_done";
/// How long processes wait for each other to connect.
const PATIENCE: Duration = Duration::from_secs(60);

/// What to run, and where this process stands in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Q5 (two chained keyed operators) or Q8 (a keyed join).
    pub query: QueryKind,
    pub events: u64,
    /// Events per epoch; every epoch ends in a checkpoint.
    pub epoch_events: u64,
    /// Checkpoint directory or URI.
    pub dir: String,
    /// Store options (S3 endpoint and credentials).
    pub store_options: std::collections::BTreeMap<String, String>,
    /// Worker threads per process.
    pub workers: usize,
    pub processes: u32,
    pub process: u32,
    /// Host of every process (loopback in tests).
    pub host: String,
    /// Process `i`'s timely port is `base_port + i`; the control port `base_port + processes`.
    pub base_port: u16,
    pub progress: bool,
    /// A test hook: exit abruptly (code 3) as soon as this checkpoint (or a later one)
    /// completed, while later epochs are being processed.
    pub crash_at_epoch: Option<u64>,
    /// A test hook: the asynchronous part of this checkpoint fails on worker 0.
    pub fail_checkpoint: Option<u64>,
}

/// What process 0 reports at the end.
#[derive(Debug, Default)]
pub struct ClusterSummary {
    pub resumed_from: Option<u64>,
    pub results: Vec<String>,
    pub completed: u64,
    pub aborted: u64,
    pub elapsed: Duration,
    pub events: u64,
    pub durations: Vec<Duration>,
    /// The slowest local worker's restore.
    pub restore: Duration,
    /// Bytes the local workers read while restoring.
    pub restore_bytes: u64,
    /// The slowest local worker's time from its start (after the cluster connected) to
    /// the last checkpoint's resolution.
    pub worker_elapsed: Duration,
    /// The local workers' reports.
    pub workers: Vec<WorkerReport>,
}

/// One worker's figures.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub worker: u32,
    pub events: u64,
    /// Bytes this worker read from the checkpoint storage while restoring.
    pub restore_bytes: u64,
    pub restore_time: Duration,
    /// From the worker's start to the last checkpoint's resolution.
    pub elapsed: Duration,
    /// Checkpoints this worker heard completed.
    pub completed: u64,
    /// The longest synchronous part of a checkpoint of any of its subtasks.
    pub sync_max: Duration,
    /// The longest asynchronous part.
    pub async_max: Duration,
    /// Bytes of state its subtasks wrote per checkpoint, on average.
    pub bytes_per_checkpoint: u64,
}

/// The operators of `query` at parallelism `workers`.
pub fn specs(query: QueryKind, workers: u32) -> Result<Vec<OperatorSpec>> {
    Ok(match query {
        QueryKind::Q5 => vec![
            OperatorSpec::new("q5-counts", workers, MAX_PARALLELISM)?,
            OperatorSpec::new("q5-top", workers, MAX_PARALLELISM)?,
        ],
        QueryKind::Q8 => vec![OperatorSpec::new("q8-join", workers, MAX_PARALLELISM)?],
        other => {
            return Err(StateError::InvalidArgument(format!(
                "`{}` does not run on timely; choose q5 or q8",
                other.name()
            )));
        }
    })
}

fn job_name<R: Runtime>(cfg: &ClusterConfig, rt: &R) -> String {
    format!("nexmark-timely-{}-{}", cfg.query.name(), rt.name())
}

fn fs_options(cfg: &ClusterConfig) -> Result<FsOptions> {
    FsOptions::builder()
        .retained_checkpoints(2)
        .store_options(cfg.store_options.clone())
        .build()
}

/// Opens the job directory as its owner, starting over after a finished run: the
/// checkpoint to restore, its manifest and the verified lines of the parts it lists;
/// parts it does not list are deleted.
fn open_owner<R: Runtime>(cfg: &ClusterConfig, rt: &R) -> Result<Owner> {
    let job = job_name(cfg, rt);
    let mut fs = FsCheckpointStorage::open(&cfg.dir, &job, fs_options(cfg)?)?;
    if fs.store().size(&fs.store_path(DONE))?.is_some() {
        fs.store().delete_dir(&fs.store_path(""))?;
        drop(fs);
        fs = FsCheckpointStorage::open(&cfg.dir, &job, fs_options(cfg)?)?;
    }
    let (restore_from, manifest) = match fs.latest_checkpoint()? {
        Some(meta) => {
            let (epoch, parts) = control::read_engine_data(&meta.snapshot.engine, meta.checkpoint_id)?;
            if epoch != meta.checkpoint_id {
                return Err(StateError::Corrupt {
                    source_name: format!("checkpoint {}", meta.checkpoint_id),
                    section: "engine data `epoch`".into(),
                    detail: format!("epoch {epoch} in checkpoint {}", meta.checkpoint_id),
                    source: None,
                });
            }
            (Some(meta.checkpoint_id), parts)
        }
        None => (None, Vec::new()),
    };
    // The committed parts must be intact: a damaged or missing one is an error naming it,
    // found now rather than after the whole run.
    let committed = read_parts(&fs, &manifest)?;
    // Parts of epochs after the restored checkpoint are written again by this run.
    for name in fs.store().list(&fs.store_path("results/"))? {
        let rel = format!("results/{name}");
        if name.starts_with('e') && !manifest.iter().any(|p| p.name == rel) {
            fs.store().delete(&fs.store_path(&rel))?;
        }
    }
    Ok(Owner {
        fs,
        restore_from,
        manifest,
        committed,
    })
}

/// The job directory as process 0 opened it.
struct Owner {
    fs: FsCheckpointStorage,
    /// The checkpoint to restore.
    restore_from: Option<u64>,
    /// Its part manifest.
    manifest: Vec<ClusterPart>,
    /// The lines of those parts, verified.
    committed: Vec<String>,
}

/// Reads every part `manifest` lists, verifying its size and CRC32C.
fn read_parts(fs: &FsCheckpointStorage, manifest: &[ClusterPart]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for p in manifest {
        let bytes = crate::nexmark::parts::read_committed(fs, &p.name, Some((p.size, p.crc32c)))?;
        lines.extend(String::from_utf8_lossy(&bytes).lines().map(str::to_string));
    }
    Ok(lines)
}

/// Runs this process's share of the job. Process 0 returns the summary.
pub fn run<R: Runtime + Clone + Send + Sync + 'static>(rt: R, cfg: ClusterConfig) -> Result<Option<ClusterSummary>> {
    let started = Instant::now();
    let threads = cfg.workers.max(1);
    let total = threads as u32 * cfg.processes.max(1);
    if cfg.process >= cfg.processes.max(1) {
        return Err(StateError::InvalidArgument(format!(
            "process {} of {}",
            cfg.process, cfg.processes
        )));
    }
    let specs = specs(cfg.query, total)?;
    let control_addr = format!("{}:{}", cfg.host, u32::from(cfg.base_port) + cfg.processes);
    let (up_tx, up_rx) = channel::<Up>();
    let mut receivers = Vec::new();
    let notices: Notices = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..threads {
        let (tx, rx) = channel::<Down>();
        notices.lock().map_err(|_| poisoned())?.push(tx);
        receivers.push(Some(rx));
    }
    let receivers = Arc::new(Mutex::new(receivers));

    // Process 0 owns the directory and runs the coordinator; the others join it.
    let mut owner = None;
    let restore_from = if cfg.process == 0 {
        let Owner {
            fs,
            restore_from,
            manifest,
            committed,
        } = open_owner(&cfg, &rt)?;
        let committed_parts = manifest.len();
        match restore_from {
            Some(id) => println!("resuming from checkpoint {id}"),
            None => println!("starting fresh"),
        }
        let peers = if cfg.processes > 1 {
            let listener = TcpListener::bind(&control_addr)
                .map_err(|e| StateError::from_io(format!("listening on {control_addr}"), e))?;
            control::accept(&listener, cfg.processes, PATIENCE)?
        } else {
            Default::default()
        };
        let mut writers = Vec::new();
        for (process, mut stream) in peers {
            control::send(&mut stream, &Down::Start { restore_from })?;
            let writer = stream
                .try_clone()
                .map_err(|e| StateError::from_io("cloning a control connection", e))?;
            writers.push(Mutex::new(writer));
            let up = up_tx.clone();
            control::forward::<Up>(stream, format!("process {process}"), move |m| {
                let _ = up.send(m);
            });
        }
        let coordinator = CheckpointCoordinator::new(&specs, Arc::new(fs.clone()), CoordinatorConfig::default())?
            .resume_after(restore_from.unwrap_or(0));
        let plan = EpochPlan::new(cfg.events, cfg.epoch_events, restore_from.unwrap_or(0));
        let local = Arc::clone(&notices);
        let coordinating = std::thread::spawn(move || {
            control::coordinate(&coordinator, up_rx, total, plan.first, plan.last, manifest, |msg| {
                control::broadcast(&local, msg);
                for w in &writers {
                    if let Ok(mut w) = w.lock() {
                        let _ = control::send(&mut w, &msg);
                    }
                }
            })
        });
        owner = Some((fs, coordinating, committed, committed_parts));
        restore_from
    } else {
        let mut stream = control::connect(&control_addr, PATIENCE)?;
        control::send(&mut stream, &Up::Hello { process: cfg.process })?;
        let Some(Down::Start { restore_from }) = control::receive::<Down>(&mut stream, "process 0")? else {
            return Err(StateError::InvalidArgument("process 0 did not start the job".into()));
        };
        let mut writer = stream
            .try_clone()
            .map_err(|e| StateError::from_io("cloning the control connection", e))?;
        std::thread::spawn(move || {
            while let Ok(msg) = up_rx.recv() {
                if control::send(&mut writer, &msg).is_err() {
                    break;
                }
            }
        });
        let local = Arc::clone(&notices);
        control::forward::<Down>(stream, "process 0".into(), move |m| control::broadcast(&local, m));
        restore_from
    };

    // A restart after the last checkpoint completed (a crash before the end was recorded)
    // has nothing left to process.
    let plan = EpochPlan::new(cfg.events, cfg.epoch_events, restore_from.unwrap_or(0));
    let nothing_left = plan.first > plan.last;
    let communication = if cfg.processes <= 1 {
        timely::CommunicationConfig::Process(threads)
    } else {
        timely::CommunicationConfig::Cluster {
            threads,
            process: cfg.process as usize,
            addresses: (0..cfg.processes)
                .map(|i| format!("{}:{}", cfg.host, u32::from(cfg.base_port) + i))
                .collect(),
            report: false,
            zerocopy: false,
        }
    };
    let config = timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    };
    let shared = Arc::new((rt, cfg.clone(), specs, up_tx, receivers));
    let guards = if nothing_left {
        None
    } else {
        Some(
            timely::execute(config, move |worker| {
                let (rt, cfg, specs, up, receivers) = &*shared;
                let local = worker.index() % threads;
                let rx = receivers
                    .lock()
                    .ok()
                    .and_then(|mut r| r.get_mut(local).and_then(Option::take));
                match rx {
                    Some(rx) => run_worker(worker, rt.clone(), cfg, specs, up.clone(), rx, restore_from),
                    None => Err(StateError::InvalidArgument("a worker started twice".into())),
                }
            })
            .map_err(StateError::InvalidArgument)?,
        )
    };
    let mut reports = Vec::new();
    for r in guards.map(|g| g.join()).unwrap_or_default() {
        match r {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => return Err(e),
            Err(panic) => return Err(StateError::InvalidArgument(format!("a worker failed: {panic}"))),
        }
    }
    for r in &reports {
        println!(
            "worker {}: {} events in {} ms ({:.0} events/s), {} checkpoints completed, synchronous part ≤ {:.2?}, asynchronous ≤ {:.2?}, {} B per checkpoint",
            r.worker,
            r.events,
            r.elapsed.as_millis(),
            r.events as f64 / r.elapsed.as_secs_f64().max(1e-9),
            r.completed,
            r.sync_max,
            r.async_max,
            r.bytes_per_checkpoint
        );
    }
    let Some((fs, coordinating, mut results, committed_parts)) = owner else {
        return Ok(None);
    };
    let outcome = coordinating.join().map_err(|_| StateError::Internal {
        what: "the coordinator thread panicked".into(),
    })??;
    if !outcome.finished {
        return Err(StateError::InvalidArgument(
            "the final checkpoint did not complete; run the job again to resume".into(),
        ));
    }
    // The parts committed before this run were verified (and read) at the start; the
    // final manifest extends that manifest with this run's parts.
    results.extend(read_parts(
        &fs,
        outcome.manifest.get(committed_parts..).unwrap_or_default(),
    )?);
    fs.store()
        .write_all(&fs.store_path(DONE), results.len().to_string().into_bytes())?;
    Ok(Some(ClusterSummary {
        resumed_from: restore_from,
        results,
        completed: outcome.completed,
        aborted: outcome.aborted,
        elapsed: started.elapsed(),
        events: reports.iter().map(|r| r.events).sum(),
        durations: outcome.durations,
        restore: reports.iter().map(|r| r.restore_time).max().unwrap_or_default(),
        restore_bytes: reports.iter().map(|r| r.restore_bytes).sum(),
        worker_elapsed: reports.iter().map(|r| r.elapsed).max().unwrap_or_default(),
        workers: reports,
    }))
}

fn poisoned() -> StateError {
    StateError::Internal {
        what: "a lock was poisoned (a thread holding it panicked)".into(),
    }
}

/// One worker: restores its subtasks, builds the dataflow, feeds its share of the
/// source epoch by epoch, and waits until the last checkpoint resolved.
fn run_worker<R: Runtime + 'static>(
    worker: &mut timely::worker::Worker,
    rt: R,
    cfg: &ClusterConfig,
    specs: &[OperatorSpec],
    up: Sender<Up>,
    notices: Receiver<Down>,
    restore_from: Option<u64>,
) -> Result<WorkerReport> {
    let (index, peers) = (worker.index() as u32, worker.peers() as u32);
    let job = job_name(cfg, &rt);
    let storage = FsCheckpointStorage::participant(&cfg.dir, &job, fs_options(cfg)?)?;
    let target: Arc<dyn CheckpointStorage> = if rt.in_memory() {
        Arc::new(MemoryCheckpointStorage::with_max_state_size(256 << 20))
    } else {
        Arc::new(storage.clone())
    };
    let t = Instant::now();
    let assignment = match restore_from {
        Some(id) => {
            let meta = storage.load_checkpoint(id)?;
            Some(JobAssignment::new(&meta.snapshot, specs, RestoreOptions::default())?)
        }
        None => None,
    };
    let fail = |i: u32| {
        if index == 0 && i == 0 {
            cfg.fail_checkpoint
        } else {
            None
        }
    };
    let mut subtasks = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        subtasks.push(Subtask::open(
            &rt,
            spec,
            index,
            assignment.as_ref(),
            storage.clone(),
            Arc::clone(&target),
            up.clone(),
            fail(i as u32),
        )?);
    }
    let mut report = WorkerReport {
        worker: index,
        restore_bytes: storage.bytes_read(),
        restore_time: t.elapsed(),
        ..WorkerReport::default()
    };
    if let Some(id) = restore_from {
        println!(
            "worker {index}: restored {} bytes of checkpoint {id} in {:.2?}",
            report.restore_bytes, report.restore_time
        );
    }
    let plan = EpochPlan::new(cfg.events, cfg.epoch_events, restore_from.unwrap_or(0));
    let env = Env {
        rt: Rc::new(rt),
        plan,
        worker: index,
        workers: peers,
        max_parallelism: MAX_PARALLELISM,
        storage,
        up,
        notices: specs.iter().map(|_| Rc::new(RefCell::new(VecDeque::new()))).collect(),
        error: Rc::new(RefCell::new(None)),
    };
    let mut resolved = false;
    let completed = std::cell::Cell::new(0u64);
    let drain = |resolved: &mut bool| {
        while let Ok(n) = notices.try_recv() {
            if matches!(n, Down::Completed(id) | Down::Aborted(id) if id == plan.last) {
                *resolved = true;
            }
            if let Down::Completed(id) = n {
                completed.set(completed.get() + 1);
                if cfg.crash_at_epoch.is_some_and(|c| id >= c) {
                    // The test hook: a crash right after this checkpoint completed.
                    std::process::exit(3);
                }
            }
            for q in &env.notices {
                q.borrow_mut().push_back(n);
            }
        }
    };
    // The worker keeps its subtasks until the last checkpoint resolved: timely drops an
    // operator once its input is done, and the backends must still hear that their last
    // checkpoint completed. (Their snapshots' asynchronous parts would complete anyway:
    // they keep what they read alive.)
    let subtasks: Vec<Rc<RefCell<Subtask<R>>>> = subtasks.into_iter().map(|s| Rc::new(RefCell::new(s))).collect();
    let mut handed = subtasks.iter().cloned();
    let mut next = || {
        handed
            .next()
            .ok_or_else(|| StateError::InvalidArgument("missing subtask".into()))
    };
    // On a terminal one bar (worker 0's) stands for the job; plain lines come from every worker.
    let mut progress = Progress::new(
        format!("worker {index}"),
        plan.last.saturating_sub(plan.first) + 1,
        cfg.progress && (index == 0 || !std::io::stderr().is_terminal()),
    );
    macro_rules! feed {
        ($input:ident, $probe:ident, $select:expr) => {{
            $input.advance_to(plan.first);
            for e in plan.first..=plan.last {
                let range = plan.range(e);
                for (i, ev) in (range.start..range.end).zip(stream(range.start)) {
                    if i % u64::from(peers) == u64::from(index)
                        && let Some(x) = ($select)(ev)
                    {
                        $input.send(x);
                        report.events += 1;
                    }
                }
                $input.advance_to(e + 1);
                // At most two epochs in flight.
                while $probe.less_than(&e) {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    drain(&mut resolved);
                    if let Some(err) = env.error.borrow_mut().take() {
                        return Err(err);
                    }
                }
                progress.update(e - plan.first + 1, || {
                    format!(
                        "epoch {e}/{}, {} events ({:.0} events/s), {} checkpoints completed",
                        plan.last,
                        report.events,
                        report.events as f64 / t.elapsed().as_secs_f64().max(1e-9),
                        completed.get()
                    )
                });
            }
            drop($input);
        }};
    }
    match cfg.query {
        QueryKind::Q5 => {
            let (counts, top) = (next()?, next()?);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| dataflow::q5(scope, &env, counts, top))?;
            feed!(input, probe, |ev| match ev {
                super::events::Event::Bid(b) => Some(b),
                _ => None,
            });
        }
        _ => {
            let join = next()?;
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| dataflow::q8(scope, &env, join))?;
            feed!(input, probe, |ev| match ev {
                super::events::Event::Bid(_) => None,
                other => Some(other),
            });
        }
    }
    while !resolved {
        worker.step_or_park(Some(Duration::from_millis(2)));
        drain(&mut resolved);
        if let Some(err) = env.error.borrow_mut().take() {
            return Err(err);
        }
    }
    progress.finish();
    let stats: Vec<_> = subtasks.iter().map(|s| Arc::clone(&s.borrow().stats)).collect();
    drop(subtasks);
    report.elapsed = t.elapsed();
    let max = |f: fn(&subtask::CheckpointStats) -> &std::sync::atomic::AtomicU64| {
        let us = stats
            .iter()
            .map(|s| f(s).load(std::sync::atomic::Ordering::Relaxed))
            .max();
        Duration::from_micros(us.unwrap_or(0))
    };
    report.sync_max = max(|s| &s.sync_max_us);
    report.async_max = max(|s| &s.async_max_us);
    let checkpoints = plan.last + 1 - plan.first;
    let bytes: u64 = stats
        .iter()
        .map(|s| s.bytes.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    report.bytes_per_checkpoint = bytes / checkpoints.max(1);
    report.completed = completed.get();
    Ok(report)
}
