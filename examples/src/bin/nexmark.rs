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
//! `rocksdb-incremental`, `rocksdb-heap-timers`.

use state_api::{Result, StateError};
use state_examples::arg;
use state_examples::nexmark::runtime::{self, Heap, Runtime};
use state_examples::nexmark::{JobConfig, QueryKind, reference, run};

fn num(name: &str, default: u64) -> Result<u64> {
    match arg(name) {
        None => Ok(default),
        Some(v) => v
            .replace('_', "")
            .parse()
            .map_err(|_| StateError::InvalidArgument(format!("{name} wants a number, got `{v}`"))),
    }
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nexmark: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let default_backend = if cfg!(feature = "rocksdb") {
        "rocksdb-incremental"
    } else {
        "heap-fs"
    };
    let query_name = arg("--query").unwrap_or_else(|| "q5".into());
    let query = QueryKind::parse(&query_name)
        .ok_or_else(|| StateError::InvalidArgument(format!("unknown query `{query_name}` (q3, q5, q8, q11)")))?;
    let cfg = JobConfig {
        query,
        events: num("--events", 3_000_000)?,
        checkpoint_every: num("--checkpoint-every", 250_000)?,
        dir: arg("--checkpoint-dir").unwrap_or_else(|| "./checkpoints".into()),
        progress: !std::env::args().any(|a| a == "--quiet"),
    };
    let backend = arg("--backend").unwrap_or_else(|| default_backend.into());
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
        "rocksdb-full" => go(
            &runtime::RocksDb {
                incremental: false,
                heap_timers: false,
            },
            &cfg,
        ),
        #[cfg(feature = "rocksdb")]
        "rocksdb-incremental" => go(
            &runtime::RocksDb {
                incremental: true,
                heap_timers: false,
            },
            &cfg,
        ),
        #[cfg(feature = "rocksdb")]
        "rocksdb-heap-timers" => go(
            &runtime::RocksDb {
                incremental: true,
                heap_timers: true,
            },
            &cfg,
        ),
        other => Err(runtime::unknown_backend(other)),
    }?;
    if let Some(path) = arg("--output") {
        let mut body = summary.results.join("\n");
        body.push('\n');
        std::fs::write(&path, body).map_err(|e| StateError::from_io(format!("writing `{path}`"), e))?;
    }
    if std::env::args().any(|a| a == "--verify") {
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
