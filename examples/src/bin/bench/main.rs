//! `cargo xtask bench [--quick]`: every measurement is a ratio against a baseline doing
//! the same work in the same run. Writes `BENCHMARKS.md` and `bench.json` (with
//! `--quick`, small sizes and files under `target/`, to check the harness only).
//!
//! Over 500 lines: the bench harness and its report writer; each group of measurements lives in its own file.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use state_api::{
    BackendContext, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, Result, ValueStateDescriptor,
};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::HeapKeyedStateBackend;

mod cluster;
mod flink;
mod job;
#[cfg(feature = "rocksdb")]
mod memory;
mod merge;
mod migrate;
mod nexmark;
#[cfg(feature = "rocksdb")]
mod reads;
mod savepoint;
mod timers;

struct Row {
    name: String,
    ours: f64,
    baseline: f64,
    unit: &'static str,
    baseline_name: &'static str,
    target: &'static str,
}

impl Row {
    /// A row of two durations, in milliseconds.
    fn ms(name: String, ours: Duration, baseline: Duration, baseline_name: &'static str, target: &'static str) -> Row {
        Row {
            name,
            ours: ours.as_secs_f64() * 1e3,
            baseline: baseline.as_secs_f64() * 1e3,
            unit: "ms",
            baseline_name,
            target,
        }
    }

    fn ratio(&self) -> f64 {
        self.ours / self.baseline.max(f64::MIN_POSITIVE)
    }
}

fn ns_per_op(ops: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64 / ops.max(1) as f64
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only job`: run one group and print its table without writing the report files.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let keys: u64 = if quick { 2_000 } else { 100_000 };
    let mut rows = Vec::new();
    let run = |group: &str| only.as_deref().is_none_or(|o| o == group);
    if run("ops") {
        heap_ops(n, keys, &mut rows)?;
        #[cfg(feature = "rocksdb")]
        rocksdb_ops(n, keys, &mut rows)?;
    }
    if run("checkpoints") {
        sync_part(n, &mut rows)?;
        #[cfg(feature = "rocksdb")]
        rocksdb_checkpoints(n, &mut rows)?;
        full_snapshot(n, &mut rows)?;
    }
    if run("timers") {
        timers::timer_rows(n, keys, &mut rows)?;
    }
    if run("nexmark") {
        nexmark::nexmark_rows(if quick { 20_000 } else { 500_000 }, &mut rows)?;
    }
    #[cfg(feature = "rocksdb")]
    if run("memory") {
        memory::rocksdb_memory_rows(quick, &mut rows)?;
    }
    if run("job") {
        job::coordinator_rows(quick, &mut rows)?;
        job::rescale_rows(if quick { 20_000 } else { 1_000_000 }, &mut rows)?;
    }
    if run("merge") {
        merge::merge_rows(if quick { 200 } else { 20_000 }, &mut rows)?;
    }
    if run("migrate") {
        migrate::migrate_rows(if quick { 20_000 } else { 1_000_000 }, &mut rows)?;
    }
    if run("savepoint") {
        savepoint::savepoint_rows(if quick { 20_000 } else { 1_000_000 }, &mut rows)?;
    }
    if run("flink") {
        flink::flink_rows(quick, &mut rows)?;
    }
    #[cfg(feature = "rocksdb")]
    if run("reads") {
        reads::read_option_rows(n, &mut rows)?;
    }
    if run("cluster") {
        cluster::cluster_rows(if quick { 8_000 } else { 400_000 }, &mut rows)?;
    }
    if rows.is_empty() {
        return Err(state_api::StateError::InvalidArgument(format!(
            "no benchmark group {:?}; groups: ops, checkpoints, timers, nexmark, memory, job, merge, migrate, savepoint, flink, reads, cluster",
            only.unwrap_or_default()
        )));
    }
    report(&rows, quick, n, only.is_none());
    Ok(())
}

fn heap_ops(n: u64, keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    let ctx = BackendContext::single(128);
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, u64>::new("m"))?;
    let mut row = |name: &str, ours: f64, baseline: f64| {
        rows.push(Row {
            name: name.into(),
            ours,
            baseline,
            unit: "ns/op",
            baseline_name: "std HashMap",
            target: "≤ 3×",
        });
    };

    let mut hv: HashMap<u64, u64> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hv.insert(i % keys, i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.value(&v).update(i).unwrap();
        }
    });
    row("value update", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            black_box(hv.get(&(i % keys)));
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.value(&v).get().unwrap());
        }
    });
    row("value get", ours, base);

    let mut hl: HashMap<u64, Vec<u64>> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hl.entry(i % keys).or_default().push(i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.list(&l).add(i).unwrap();
        }
    });
    row("list add", ours, base);
    let reads = keys * 10;
    let base = ns_per_op(reads, || {
        for i in 0..reads {
            black_box(hl.get(&(i % keys)).cloned());
        }
    });
    let ours = ns_per_op(reads, || {
        for i in 0..reads {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.list(&l).get().unwrap());
        }
    });
    row("list get (whole list)", ours, base);

    let mut hm: HashMap<u64, HashMap<u32, u64>> = HashMap::new();
    let base = ns_per_op(n, || {
        for i in 0..n {
            hm.entry(i % keys).or_default().insert((i / keys) as u32 % 16, i);
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.map(&m).put((i / keys) as u32 % 16, i).unwrap();
        }
    });
    row("map put", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            black_box(hm.get(&(i % keys)).and_then(|m| m.get(&((i / keys) as u32 % 16))));
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.map(&m).get(&((i / keys) as u32 % 16)).unwrap());
        }
    });
    row("map get", ours, base);
    let base = ns_per_op(keys, || {
        for k in 0..keys {
            black_box(
                hm.get(&k)
                    .map(|m| m.iter().map(|(a, b)| u64::from(*a) + b).sum::<u64>()),
            );
        }
    });
    let ours = ns_per_op(keys, || {
        for k in 0..keys {
            b.set_current_key(&k).unwrap();
            black_box(
                b.map(&m)
                    .iter()
                    .unwrap()
                    .map(|e| e.map(|(a, b)| u64::from(a) + b).unwrap())
                    .sum::<u64>(),
            );
        }
    });
    row("map iterate (per key)", ours, base);
    Ok(())
}

/// The RocksDB backend against raw `rocksdb::DB` calls doing the same work (postcard
/// keys and values, the same options, WAL off, the same merge operator for lists).
#[cfg(feature = "rocksdb")]
fn rocksdb_ops(n: u64, keys: u64, rows: &mut Vec<Row>) -> Result<()> {
    use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    let n = n / 2;
    let config = RocksDbConfig::default();
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), config.clone())?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    let l = b.register(ListStateDescriptor::<u64>::new("l"))?;
    let m = b.register(MapStateDescriptor::<u32, u64>::new("m"))?;
    let raw_dir = std::env::temp_dir().join(format!("state-bench-raw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&raw_dir);
    let mut opts = config.options();
    opts.create_if_missing(true);
    opts.set_merge_operator_associative(
        "concat",
        |_k: &[u8], existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
            let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
            for op in ops.iter() {
                out.extend_from_slice(op);
            }
            Some(out)
        },
    );
    let raw = rocksdb::DB::open(&opts, &raw_dir).map_err(|e| state_api::StateError::storage("raw db", e, false))?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.disable_wal(true);
    let key = |k: u64| postcard::to_stdvec(&k).unwrap_or_default();
    let mut row = |name: &str, ours: f64, baseline: f64| {
        rows.push(Row {
            name: format!("rocksdb {name}"),
            ours,
            baseline,
            unit: "ns/op",
            baseline_name: "raw rust-rocksdb",
            target: "≤ 1.3×",
        });
    };
    let base = ns_per_op(n, || {
        for i in 0..n {
            raw.put_opt(key(i % keys), postcard::to_stdvec(&i).unwrap_or_default(), &wo)
                .unwrap();
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.value(&v).update(i).unwrap();
        }
    });
    row("value update", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            let got = raw.get_pinned(key(i % keys)).unwrap();
            black_box(got.and_then(|g| postcard::from_bytes::<u64>(&g).ok()));
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.value(&v).get().unwrap());
        }
    });
    row("value get", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            let mut k = vec![1u8];
            k.extend(key(i % keys));
            let e = postcard::to_stdvec(&i).unwrap_or_default();
            let mut op = vec![e.len() as u8];
            op.extend(e);
            raw.merge_opt(k, op, &wo).unwrap();
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.list(&l).add(i).unwrap();
        }
    });
    row("list add (merge)", ours, base);
    let reads = keys * 5;
    let base = ns_per_op(reads, || {
        for i in 0..reads {
            let mut k = vec![1u8];
            k.extend(key(i % keys));
            if let Some(g) = raw.get_pinned(k).unwrap() {
                let mut out = Vec::new();
                let mut rest: &[u8] = &g;
                while let Some((&len, tail)) = rest.split_first() {
                    let (e, r) = tail.split_at((len as usize).min(tail.len()));
                    out.push(postcard::from_bytes::<u64>(e).unwrap_or_default());
                    rest = r;
                }
                black_box(out);
            }
        }
    });
    let ours = ns_per_op(reads, || {
        for i in 0..reads {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.list(&l).get().unwrap());
        }
    });
    row("list get (whole list)", ours, base);
    let mk = |i: u64| {
        let mut k = vec![2u8];
        k.extend(key(i % keys));
        k.extend(postcard::to_stdvec(&((i / keys) as u32 % 16)).unwrap_or_default());
        k
    };
    let base = ns_per_op(n, || {
        for i in 0..n {
            raw.put_opt(mk(i), postcard::to_stdvec(&i).unwrap_or_default(), &wo)
                .unwrap();
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            b.map(&m).put((i / keys) as u32 % 16, i).unwrap();
        }
    });
    row("map put", ours, base);
    let base = ns_per_op(n, || {
        for i in 0..n {
            black_box(
                raw.get_pinned(mk(i))
                    .unwrap()
                    .and_then(|g| postcard::from_bytes::<u64>(&g).ok()),
            );
        }
    });
    let ours = ns_per_op(n, || {
        for i in 0..n {
            b.set_current_key(&(i % keys)).unwrap();
            black_box(b.map(&m).get(&((i / keys) as u32 % 16)).unwrap());
        }
    });
    row("map get", ours, base);
    let base = ns_per_op(keys, || {
        for k in 0..keys {
            let mut p = vec![2u8];
            p.extend(key(k));
            let sum: u64 = raw
                .iterator(rocksdb::IteratorMode::From(&p, rocksdb::Direction::Forward))
                .map_while(|r| r.ok().filter(|(kk, _)| kk.starts_with(&p)))
                .map(|(_, v)| postcard::from_bytes::<u64>(&v).unwrap_or_default())
                .sum();
            black_box(sum);
        }
    });
    let ours = ns_per_op(keys, || {
        for k in 0..keys {
            b.set_current_key(&k).unwrap();
            black_box(
                b.map(&m)
                    .iter()
                    .unwrap()
                    .map(|e| e.map(|(_, v)| v).unwrap_or_default())
                    .sum::<u64>(),
            );
        }
    });
    row("map iterate (per key)", ours, base);
    drop(raw);
    let _ = std::fs::remove_dir_all(&raw_dir);
    Ok(())
}

/// A single-subtask RocksDB backend under `config` whose value state `v` holds `k -> k`
/// for the keys `0..n`.
#[cfg(feature = "rocksdb")]
fn rocksdb_filled(
    config: state_rocksdb::RocksDbConfig,
    n: u64,
) -> Result<(
    state_rocksdb::RocksDbKeyedStateBackend<u64>,
    state_api::ValueStateHandle<u64>,
)> {
    let mut b = state_rocksdb::RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), config)?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..n {
        b.set_current_key(&k)?;
        b.value(&v).update(k)?;
    }
    Ok((b, v))
}

/// Waits until `b`'s RocksDB runs no flush and holds no memtable waiting for one (at
/// most 60 s); returns how long that took.
#[cfg(feature = "rocksdb")]
fn background_flushes_done<K: state_api::StateKey>(b: &state_rocksdb::RocksDbKeyedStateBackend<K>) -> Result<Duration> {
    let t = Instant::now();
    let db = b.db();
    let cf = db
        .cf_handle(&state_rocksdb::column_family_name("v"))
        .ok_or_else(|| state_api::StateError::InvalidArgument("no column family for state `v`".into()))?;
    let int = |name: &str, cf| {
        let v = match cf {
            Some(cf) => db.property_int_value_cf(cf, name),
            None => db.property_int_value(name),
        };
        v.map_err(|e| state_api::StateError::storage("bench: RocksDB property", e, false))
            .map(Option::unwrap_or_default)
    };
    while int("rocksdb.num-running-flushes", None)? > 0 || int("rocksdb.num-immutable-mem-table", Some(cf))? > 0 {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(state_api::StateError::InvalidArgument(
                "background flush still running after 60 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t.elapsed())
}

/// RocksDB checkpoints on local disk: incremental after touching 1% of the keys vs full,
/// restore from incremental vs full, rescale 2 -> 3.
#[cfg(feature = "rocksdb")]
fn rocksdb_checkpoints(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
    let dir = std::env::temp_dir().join(format!("state-bench-rocks-cp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = FsCheckpointStorage::open(dir.to_str().unwrap_or("."), "bench", FsOptions::default())?;
    let sub = |p: u32, i: u32| BackendContext::for_subtask(128, p, i);
    let mut handles2 = Vec::new();
    let mut single = RocksDbKeyedStateBackend::<u64>::new(&BackendContext::single(128), RocksDbConfig::default())?;
    let sv = single.register(ValueStateDescriptor::<u64>::new("v"))?;
    let mut two: Vec<_> = (0..2)
        .map(|i| RocksDbKeyedStateBackend::<u64>::new(&sub(2, i)?, RocksDbConfig::default()))
        .collect::<Result<_>>()?;
    let twov: Vec<_> = two
        .iter_mut()
        .map(|b| b.register(ValueStateDescriptor::<u64>::new("v")))
        .collect::<Result<_>>()?;
    for k in 0..n {
        single.set_current_key(&k)?;
        single.value(&sv).update(k)?;
        let owner = state_api::keygroup::operator_index_for_key_group(
            128,
            2,
            state_api::keygroup::key_group_for_key(&k, 128)?,
        )? as usize;
        two[owner].set_current_key(&k)?;
        two[owner].value(&twov[owner]).update(k)?;
    }
    // The first checkpoint finds every entry in memtables: its synchronous part flushes
    // them. The canonical full checkpoint after it finds them flushed.
    let t = Instant::now();
    let pending = single.snapshot_incremental(1)?;
    let first_sync = t.elapsed();
    let first = pending.run(&storage)?;
    let first_time = t.elapsed();
    single.notify_checkpoint_complete(1);
    let t = Instant::now();
    let full = single.snapshot(2)?.run(&storage)?;
    let full_time = t.elapsed();
    for k in (0..n).step_by(100) {
        single.set_current_key(&k)?;
        single.value(&sv).update(k + 1)?;
    }
    let before = storage.bytes_written();
    let t = Instant::now();
    let incr = single.snapshot_incremental(3)?.run(&storage)?;
    let incr_time = t.elapsed();
    let incr_bytes = storage.bytes_written() - before;
    rows.push(Row {
        name: format!("rocksdb incremental checkpoint after updating 1% of {n} keys: bytes uploaded"),
        ours: incr_bytes as f64,
        baseline: full.stream.size() as f64,
        unit: "bytes",
        baseline_name: "full canonical checkpoint",
        target: "≤ 0.05×",
    });
    rows.push(Row::ms(
        format!(
            "rocksdb incremental checkpoint after 1% updates (first, all files: {} bytes in {:.0?})",
            first.size(),
            first_time
        ),
        incr_time,
        full_time,
        "full canonical checkpoint",
        "",
    ));
    rows.push(Row::ms(
        format!("rocksdb first incremental checkpoint of {n} keys: synchronous part (memtable flush, hard links)"),
        first_sync,
        first_time,
        "the whole checkpoint",
        "< 100 ms",
    ));
    // The flush is bounded by the write buffer: with a smaller one RocksDB has flushed
    // most entries in the background before the checkpoint.
    let small = RocksDbConfig {
        options_override: Some(std::sync::Arc::new(|o: &mut rocksdb::Options| {
            o.set_write_buffer_size(8 << 20)
        })),
        ..RocksDbConfig::default()
    };
    let (mut b, _) = rocksdb_filled(small, n)?;
    let t = Instant::now();
    let pending = b.snapshot_incremental(1)?;
    let small_sync = t.elapsed();
    drop(pending);
    drop(b);
    rows.push(Row::ms(
        format!("rocksdb first incremental checkpoint of {n} keys, 8 MiB write buffer: synchronous part"),
        small_sync,
        first_sync,
        "the same with RocksDB's 64 MiB default",
        "< 100 ms",
    ));
    // The default write buffer with a flush started ahead of the barrier: the
    // synchronous part flushes only what was written after it.
    let (mut b, bv) = rocksdb_filled(RocksDbConfig::default(), n)?;
    let t = Instant::now();
    b.flush_ahead()?;
    let started = t.elapsed();
    for k in (0..n).step_by(100) {
        b.set_current_key(&k)?;
        b.value(&bv).update(k + 1)?;
    }
    let background = background_flushes_done(&b)?;
    let t = Instant::now();
    let pending = b.snapshot_incremental(1)?;
    let ahead_sync = t.elapsed();
    drop(pending);
    drop(b);
    rows.push(Row::ms(
        format!(
            "rocksdb first incremental checkpoint of {n} keys, flush_ahead before 1% updates: synchronous part \
             (flush_ahead returned in {:.2} ms; the background flush took {:.0} ms)",
            started.as_secs_f64() * 1e3,
            background.as_secs_f64() * 1e3
        ),
        ahead_sync,
        first_sync,
        "without flush_ahead, same run",
        "< 100 ms",
    ));
    // Flink 2.x's native full checkpoint: every SST uploaded as the checkpoint's own.
    let t = Instant::now();
    let pending = single.native_full_snapshot(4)?;
    let native_sync = t.elapsed();
    let native = pending.run(&storage)?;
    let native_time = t.elapsed();
    rows.push(Row::ms(
        format!(
            "rocksdb native full checkpoint of {n} keys (all SSTs, {} bytes; synchronous part {:.1} ms)",
            native.size(),
            native_sync.as_secs_f64() * 1e3
        ),
        native_time,
        full_time,
        "full canonical checkpoint",
        "",
    ));
    let restore_native = |handle: &state_api::IncrementalKeyedHandle| -> Result<Duration> {
        let t = Instant::now();
        let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(
            &BackendContext::single(128),
            RocksDbConfig::default(),
            std::slice::from_ref(handle),
            &storage,
        )?;
        r.register(ValueStateDescriptor::<u64>::new("v"))?;
        Ok(t.elapsed())
    };
    // Restores take tens of milliseconds: the median of five, interleaved.
    let (mut incr_times, mut native_times) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        incr_times.push(restore_native(&incr)?);
        native_times.push(restore_native(&native)?);
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (incr_restore, native_restore) = (median(incr_times), median(native_times));
    rows.push(Row::ms(
        format!("rocksdb restore {n} keys from the native full checkpoint (median of 5)"),
        native_restore,
        incr_restore,
        "restore from incremental",
        "≤ 1.2×",
    ));
    let t = Instant::now();
    let mut r = RocksDbKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        RocksDbConfig::default(),
        &[full],
        &storage,
    )?;
    r.register(ValueStateDescriptor::<u64>::new("v"))?;
    let full_restore = t.elapsed();
    drop(r);
    rows.push(Row::ms(
        format!("rocksdb restore {n} keys from incremental (native files, median of 5)"),
        incr_restore,
        full_restore,
        "restore from full canonical",
        "",
    ));
    for (i, b) in two.iter_mut().enumerate() {
        handles2.push(b.snapshot_incremental(10 + i as u64)?.run(&storage)?);
    }
    let t = Instant::now();
    for i in 0..3 {
        let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(
            &sub(3, i)?,
            RocksDbConfig::default(),
            &handles2,
            &storage,
        )?;
        r.register(ValueStateDescriptor::<u64>::new("v"))?;
    }
    let rescale = t.elapsed();
    rows.push(Row::ms(
        format!("rocksdb rescale 2 -> 3 of {n} keys from incremental (all three subtasks, sequentially)"),
        rescale,
        incr_restore,
        "one restore without rescaling",
        "",
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn populated(n: u64) -> Result<HeapKeyedStateBackend<u64>> {
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128))?;
    let v = b.register(ValueStateDescriptor::<u64>::new("v"))?;
    for k in 0..n {
        b.set_current_key(&k)?;
        b.value(&v).update(k)?;
    }
    Ok(b)
}

fn sync_part(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    let mut b = populated(n)?;
    let mut times: Vec<Duration> = (0..9)
        .map(|i| {
            let t = Instant::now();
            let pending = b.snapshot(i).unwrap();
            let e = t.elapsed();
            drop(pending);
            e
        })
        .collect();
    times.sort();
    rows.push(Row {
        name: format!("heap snapshot synchronous part, {n} entries (median of 9)"),
        ours: times[4].as_secs_f64() * 1e6,
        baseline: 1000.0,
        unit: "µs",
        baseline_name: "1 ms target",
        target: "< 1×",
    });
    Ok(())
}

fn full_snapshot(n: u64, rows: &mut Vec<Row>) -> Result<()> {
    let mut b = populated(n)?;
    let dir = std::env::temp_dir().join(format!("state-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let io = |e| state_api::StateError::from_io("bench scratch dir", e);
    std::fs::create_dir_all(&dir).map_err(io)?;
    let storage = FsCheckpointStorage::open(dir.to_str().unwrap_or("."), "bench", FsOptions::default())?;
    let t = Instant::now();
    let handle = b.snapshot(1)?.run(&storage)?;
    let write = t.elapsed();
    let bytes = handle.stream.size();
    // Baseline: the same number of bytes written sequentially to a local file, 256 KiB at a time.
    let raw_path = dir.join("raw");
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&raw_path).map_err(io)?;
        let mut left = bytes as usize;
        while left > 0 {
            let k = left.min(chunk.len());
            std::io::Write::write_all(&mut f, &chunk[..k]).map_err(io)?;
            left -= k;
        }
    }
    let raw_write = t.elapsed();
    let t = Instant::now();
    let mut restored = HeapKeyedStateBackend::<u64>::restore(&BackendContext::single(128), &[handle], &storage)?;
    restored.register(ValueStateDescriptor::<u64>::new("v"))?;
    let restore = t.elapsed();
    let t = Instant::now();
    black_box(std::fs::read(&raw_path).map_err(io)?);
    let raw_read = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let mbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e6;
    rows.push(Row {
        name: format!("full snapshot write, {n} entries ({bytes} bytes, local disk via state-fs)"),
        ours: mbps(write),
        baseline: mbps(raw_write),
        unit: "MB/s",
        baseline_name: "raw sequential file write",
        target: "≥ 0.5×",
    });
    rows.push(Row {
        name: format!("full restore, {n} entries (local disk via state-fs, into typed heap state)"),
        ours: mbps(restore),
        baseline: mbps(raw_read),
        unit: "MB/s",
        baseline_name: "raw sequential file read",
        target: "≥ 0.5×",
    });
    Ok(())
}

fn report(rows: &[Row], quick: bool, n: u64, write_files: bool) {
    let machine = format!(
        "{} cores, {}",
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_else(|| "unknown CPU".into())
    );
    let mut md = String::new();
    md.push_str("# Benchmarks\n\nGenerated by `cargo xtask bench` (release build). Every figure is a ratio against a baseline measured in the same run.\n\n");
    md.push_str(&format!("Machine: {machine}. Operations: {n} per row.\n\n"));
    md.push_str("| benchmark | ours | baseline | unit | ratio | target |\n|---|---:|---:|---|---:|---|\n");
    let mut json = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} ({}) | {} | {:.2}× | {} |\n",
            r.name,
            r.ours,
            r.baseline,
            r.baseline_name,
            r.unit,
            r.ratio(),
            r.target
        ));
        json.push_str(&format!(
            "  {{\"name\": {:?}, \"ours\": {:.3}, \"baseline\": {:.3}, \"baseline_name\": {:?}, \"unit\": {:?}, \"ratio\": {:.4}, \"target\": {:?}}}{}\n",
            r.name,
            r.ours,
            r.baseline,
            r.baseline_name,
            r.unit,
            r.ratio(),
            r.target,
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    json.push_str("]\n");
    print!("{md}");
    if !write_files {
        return;
    }
    let (md_path, json_path) = if quick {
        ("target/bench-quick.md", "target/bench-quick.json")
    } else {
        ("BENCHMARKS.md", "bench.json")
    };
    let _ = std::fs::create_dir_all("target");
    if let Err(e) = std::fs::write(md_path, &md).and_then(|_| std::fs::write(json_path, &json)) {
        eprintln!("bench: cannot write {md_path}: {e}");
    } else {
        eprintln!("bench: wrote {md_path} and {json_path}");
    }
}
