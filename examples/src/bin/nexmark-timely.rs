//! Nexmark on timely dataflow, on one or several processes (see
//! `state_examples::nexmark::cluster`): Q5 as two chained keyed operators, or Q8's
//! join, on any backend, checkpointed every epoch, resumed after a crash at any number
//! of processes and workers.
//!
//! ```text
//! # one process, 4 workers
//! nexmark-timely --workers 4 --query q5 --events 200000
//! # two processes of two workers each, on loopback (start both; process 0 coordinates)
//! nexmark-timely --processes 2 --process 0 --workers 2 --base-port 2101 &
//! nexmark-timely --processes 2 --process 1 --workers 2 --base-port 2101
//! # checkpoints on S3 (with the `s3` feature of state-fs), every process the same options
//! nexmark-timely --checkpoint-dir s3://bucket/jobs --store-option endpoint=http://127.0.0.1:9000 \
//!     --store-option access_key_id=KEY --store-option secret_access_key=SECRET
//! ```

use clap::Parser;
use state_api::{Result, StateError};
use state_examples::cli::{count, key_value};
use state_examples::nexmark::cluster::{self, ClusterConfig};
use state_examples::nexmark::runtime::{self, Heap};
use state_examples::nexmark::{QueryKind, reference};

/// Nexmark on timely dataflow across threads and processes, checkpointed and resumable.
#[derive(Parser, Debug)]
#[command(name = "nexmark-timely", version)]
struct Args {
    /// Query: q5 (two chained keyed operators) or q8 (a keyed join).
    #[arg(long, default_value = "q5")]
    query: String,
    /// Backend: heap-fs, heap-lmdb, heap-memory, rocksdb-full, rocksdb-incremental,
    /// rocksdb-native, rocksdb-heap-timers (those compiled in; default heap-fs).
    #[arg(long, default_value = "heap-fs")]
    backend: String,
    /// Events to process.
    #[arg(long, default_value = "200000", value_parser = count)]
    events: u64,
    /// Events per epoch; each epoch ends in a checkpoint.
    #[arg(long, default_value = "20000", value_parser = count)]
    epoch_events: u64,
    /// Checkpoint directory or URI (every process must reach the same one).
    #[arg(long, default_value = "./checkpoints")]
    checkpoint_dir: String,
    /// An option of the checkpoint store, `KEY=VALUE`, repeatable (S3: `endpoint`,
    /// `region`, `access_key_id`, `secret_access_key`, ...; every process needs them).
    #[arg(long = "store-option", value_parser = key_value)]
    store_options: Vec<(String, String)>,
    /// Worker threads per process.
    #[arg(short = 'w', long, default_value = "1")]
    workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long, default_value = "1")]
    processes: u32,
    /// This process's index (0 coordinates).
    #[arg(short = 'p', long, default_value = "0")]
    process: u32,
    /// Host of every process.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Process i listens on base-port + i; the control connection on base-port + processes.
    #[arg(long, default_value = "2101")]
    base_port: u16,
    /// Compare the results with the plain-collections reference (process 0).
    #[arg(long)]
    verify: bool,
    /// Write the committed results to this file (process 0).
    #[arg(long)]
    output: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Test hook: exit abruptly (code 3) once this epoch's checkpoint completed.
    #[arg(long, hide = true)]
    crash_at_epoch: Option<u64>,
    /// Test hook: the asynchronous part of this checkpoint fails on worker 0.
    #[arg(long, hide = true)]
    fail_checkpoint: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    state_examples::cli::exit_code("nexmark-timely", real_main(args))
}

fn real_main(args: Args) -> Result<()> {
    let query = QueryKind::parse(&args.query)
        .ok_or_else(|| StateError::InvalidArgument(format!("unknown query `{}` (q5, q8)", args.query)))?;
    let cfg = ClusterConfig {
        query,
        events: args.events,
        epoch_events: args.epoch_events,
        dir: args.checkpoint_dir.clone(),
        store_options: args.store_options.iter().cloned().collect(),
        workers: args.workers,
        processes: args.processes,
        process: args.process,
        host: args.host.clone(),
        base_port: args.base_port,
        progress: !args.quiet,
        crash_at_epoch: args.crash_at_epoch,
        fail_checkpoint: args.fail_checkpoint,
    };
    let heap = |memory, lmdb_timers| Heap { memory, lmdb_timers };
    let summary = match args.backend.as_str() {
        "heap-memory" => cluster::run(heap(true, false), cfg)?,
        "heap-fs" => cluster::run(heap(false, false), cfg)?,
        "heap-lmdb" => cluster::run(heap(false, true), cfg)?,
        #[cfg(feature = "rocksdb")]
        name if name.starts_with("rocksdb-") => match runtime::RocksDb::from_name(name) {
            Some(rt) => cluster::run(rt, cfg)?,
            None => return Err(runtime::unknown_backend(name)),
        },
        other => return Err(runtime::unknown_backend(other)),
    };
    let Some(s) = summary else {
        return Ok(());
    };
    let eps = s.events as f64 / s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} on {} ({} processes × {} workers): {} results; this process's workers: {} events in {:.2?} ({eps:.0} events/s)",
        query.name(),
        args.backend,
        args.processes,
        args.workers,
        s.results.len(),
        s.events,
        s.elapsed
    );
    let longest = s.durations.iter().max().copied().unwrap_or_default();
    println!(
        "  checkpoints: {} completed, {} aborted, longest trigger-to-complete {longest:.2?}",
        s.completed, s.aborted
    );
    match s.resumed_from {
        Some(id) => println!("  resumed from checkpoint {id}"),
        None => println!("  started fresh"),
    }
    if let Some(path) = &args.output {
        let mut body = s.results.join("\n");
        body.push('\n');
        std::fs::write(path, body).map_err(|e| StateError::from_io(format!("writing `{path}`"), e))?;
    }
    if args.verify {
        let mut got = s.results.clone();
        got.sort();
        let expected = reference(query, args.events);
        if got != expected {
            return Err(StateError::InvalidArgument(format!(
                "results differ from the reference: {} lines, expected {}",
                got.len(),
                expected.len()
            )));
        }
        println!("  verified against the reference: {} lines", expected.len());
    }
    Ok(())
}
