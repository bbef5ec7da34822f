//! Nexmark throughput per query per backend, against the plain-collections reference
//! implementation of the same query over the same events in the same run.

use std::time::Instant;

use state_api::Result;
use state_examples::nexmark::runtime::{Heap, Runtime};
use state_examples::nexmark::{JobConfig, QueryKind, reference, run};

use super::Row;

fn one<R: Runtime>(rt: &R, query: QueryKind, events: u64, reference_eps: f64, rows: &mut Vec<Row>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("state-bench-nexmark-{}", std::process::id()));
    let cfg = JobConfig {
        query,
        events,
        checkpoint_every: (events / 10).max(1000),
        dir: dir.to_string_lossy().into_owned(),
        progress: false,
        crash_after: None,
    };
    let t = Instant::now();
    let summary = run(rt, &cfg)?;
    let eps = events as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rows.push(Row {
        name: format!(
            "nexmark {} on {}, {events} events, {} checkpoints",
            query.name(),
            rt.name(),
            summary.checkpoints
        ),
        ours: eps,
        baseline: reference_eps,
        unit: "events/s",
        baseline_name: "reference (plain collections, no checkpoints)",
        target: "reported",
    });
    Ok(())
}

pub fn nexmark_rows(events: u64, rows: &mut Vec<Row>) -> Result<()> {
    for query in [QueryKind::Q3, QueryKind::Q5, QueryKind::Q8, QueryKind::Q11] {
        let t = Instant::now();
        std::hint::black_box(reference(query, events));
        let reference_eps = events as f64 / t.elapsed().as_secs_f64();
        for (memory, lmdb_timers) in [(true, false), (false, false), (false, true)] {
            one(&Heap { memory, lmdb_timers }, query, events, reference_eps, rows)?;
        }
        #[cfg(feature = "rocksdb")]
        {
            use state_examples::nexmark::runtime::RocksDb;
            for rt in RocksDb::NAMES.iter().filter_map(|name| RocksDb::from_name(name)) {
                one(&rt, query, events, reference_eps, rows)?;
            }
        }
    }
    Ok(())
}
