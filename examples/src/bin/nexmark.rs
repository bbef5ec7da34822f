//! The main job: a Nexmark query on a chosen backend, checkpointed to local disk by
//! default (`./checkpoints`), resumed from the latest completed checkpoint when it was
//! interrupted (kill it at any moment and run it again), results checked against a
//! plain-collections reference with `--verify`.
//!
//! ```text
//! cargo xtask demo                                   # Q5 on RocksDB (incremental checkpoints), 3M events
//! cargo xtask demo --query q3 --backend heap-fs --events 500000 --checkpoint-every 50000
//! cargo xtask demo --checkpoint-dir s3://bucket/prefix   # with the `s3` feature of state-fs
//! ```
//!
//! Backends (those compiled in by the `heap` / `rocksdb` cargo features): `heap-memory`
//! (snapshots inlined into the checkpoint metadata, Flink's JobManager storage),
//! `heap-fs`, `heap-lmdb` (heap state, LMDB timers), `rocksdb-full`,
//! `rocksdb-incremental`, `rocksdb-native`, `rocksdb-heap-timers`.

use clap::Parser;
use state_api::{Result, StateError};
use state_examples::cli::count;
use state_examples::nexmark::runtime::{self, Heap, Runtime};
use state_examples::nexmark::{JobConfig, QueryKind, reference, run};

/// The Nexmark job on a chosen backend, checkpointed and resumable after a crash.
#[derive(Parser, Debug)]
#[command(name = "nexmark", version)]
struct Args {
    /// Query: q3, q5, q8 or q11.
    #[arg(long, default_value = "q5")]
    query: String,
    /// Backend: heap-memory, heap-fs, heap-lmdb, rocksdb-full, rocksdb-incremental,
    /// rocksdb-native, rocksdb-heap-timers (those compiled in; default rocksdb-incremental,
    /// else heap-fs).
    #[arg(long)]
    backend: Option<String>,
    /// Events to process.
    #[arg(long, default_value = "3000000", value_parser = count)]
    events: u64,
    /// Events between checkpoints.
    #[arg(long, default_value = "250000", value_parser = count)]
    checkpoint_every: u64,
    /// Checkpoint directory or URI (file://…, s3://… with the s3 feature).
    #[arg(long, default_value = "./checkpoints")]
    checkpoint_dir: String,
    /// Compare the results with the plain-collections reference.
    #[arg(long)]
    verify: bool,
    /// Write the committed results to this file.
    #[arg(long)]
    output: Option<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Test hook: exit abruptly (code 3) after this many events, as a crash would.
    #[arg(long, hide = true, value_parser = count)]
    crash_after: Option<u64>,
}

fn main() -> std::process::ExitCode {
    // `--help`, `--version` and bad flags are handled (and exit) here.
    let args = Args::parse();
    state_examples::cli::exit_code("nexmark", real_main(args))
}

fn real_main(args: Args) -> Result<()> {
    let default_backend = if cfg!(feature = "rocksdb") {
        "rocksdb-incremental"
    } else {
        "heap-fs"
    };
    let query = QueryKind::parse(&args.query)
        .ok_or_else(|| StateError::InvalidArgument(format!("unknown query `{}` (q3, q5, q8, q11)", args.query)))?;
    let cfg = JobConfig {
        query,
        events: args.events,
        checkpoint_every: args.checkpoint_every,
        dir: args.checkpoint_dir.clone(),
        progress: !args.quiet,
        crash_after: args.crash_after,
    };
    let backend = args.backend.clone().unwrap_or_else(|| default_backend.into());
    let summary = match backend.as_str() {
        "heap-memory" => go(
            &Heap {
                memory: true,
                lmdb_timers: false,
            },
            &cfg,
        ),
        "heap-fs" => go(
            &Heap {
                memory: false,
                lmdb_timers: false,
            },
            &cfg,
        ),
        "heap-lmdb" => go(
            &Heap {
                memory: false,
                lmdb_timers: true,
            },
            &cfg,
        ),
        #[cfg(feature = "rocksdb")]
        name if name.starts_with("rocksdb-") => match runtime::RocksDb::from_name(name) {
            Some(rt) => go(&rt, &cfg),
            None => Err(runtime::unknown_backend(name)),
        },
        other => Err(runtime::unknown_backend(other)),
    }?;
    if let Some(path) = &args.output {
        let mut body = summary.results.join("\n");
        body.push('\n');
        std::fs::write(path, body).map_err(|e| StateError::from_io(format!("writing `{path}`"), e))?;
    }
    if args.verify {
        let mut got = summary.results.clone();
        got.sort();
        let expected = reference(cfg.query, cfg.events);
        if got != expected {
            return Err(StateError::InvalidArgument(format!(
                "results differ from the reference: {} results vs {} expected",
                got.len(),
                expected.len()
            )));
        }
        println!(
            "  results match the reference implementation ({} results)",
            expected.len()
        );
    }
    Ok(())
}

fn go<R: Runtime>(rt: &R, cfg: &JobConfig) -> Result<state_examples::nexmark::Summary> {
    let summary = run(rt, cfg)?;
    summary.print(cfg);
    Ok(summary)
}
