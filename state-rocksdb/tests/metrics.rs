//! Metrics of a checkpoint cycle, recorded by `metrics-util`'s debugging recorder:
//! sync and async durations, sizes, restore durations, bytes uploaded and downloaded,
//! estimated entries, RocksDB's native properties, managed memory.

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use state_api::metrics as names;
use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::HeapKeyedStateBackend;
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

/// (name, sorted labels) -> value.
type Seen = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn seen(snapshotter: &Snapshotter) -> Seen {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let k = key.key();
            let mut labels: Vec<(String, String)> = k
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            ((k.name().to_string(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    v.sort();
    v
}

fn histogram(seen: &Seen, name: &str, backend: &str) -> Vec<f64> {
    match seen.get(&(name.to_string(), labels(&[("backend", backend)]))) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect(),
        other => panic!("{name} for {backend}: {other:?}"),
    }
}

fn gauge(seen: &Seen, name: &str, l: &[(&str, &str)]) -> f64 {
    match seen.get(&(name.to_string(), labels(l))) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {l:?}: {other:?}"),
    }
}

fn counter(seen: &Seen, name: &str) -> u64 {
    match seen.get(&(name.to_string(), Vec::new())) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

/// The one test of this binary: it installs the global recorder, since uploads and
/// downloads run on storage threads.
#[test]
fn a_checkpoint_cycle_is_measured() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
        let ctx = BackendContext::single(128);
        let mut heap = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
        let mut rocks = RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default()).unwrap();
        let (h, r) = (
            heap.register(ValueStateDescriptor::<u64>::new("v")).unwrap(),
            rocks.register(ValueStateDescriptor::<u64>::new("v")).unwrap(),
        );
        for k in 0..20_000 {
            heap.set_current_key(&k).unwrap();
            heap.value(&h).update(k).unwrap();
            rocks.set_current_key(&k).unwrap();
            rocks.value(&r).update(k).unwrap();
        }
        let full = heap.snapshot(1).unwrap().run(&storage).unwrap();
        let full_rocks = rocks.snapshot(1).unwrap().run(&storage).unwrap();
        let inc = rocks.snapshot_incremental(2).unwrap().run(&storage).unwrap();
        HeapKeyedStateBackend::<u64>::restore(&ctx, std::slice::from_ref(&full), &storage).unwrap();
        RocksDbKeyedStateBackend::<u64>::restore(&ctx, RocksDbConfig::default(), &[full_rocks], &storage).unwrap();
        assert_eq!(state_api::metrics::report_entries(&mut heap, &h).unwrap(), 20_000);
        let heap_bytes = state_api::metrics::report_size(&mut heap, &h).unwrap();
        let rocks_bytes = state_api::metrics::report_size(&mut rocks, &r).unwrap();
        // 20,000 u64 keys and values: at least one byte of each, well under a kilobyte.
        assert!((40_000..20_000_000).contains(&heap_bytes), "{heap_bytes}");
        assert!((40_000..20_000_000).contains(&rocks_bytes), "{rocks_bytes}");
        let native = rocks.report_native_metrics().unwrap();
        assert!(native["rocksdb.estimate-num-keys"] > 0, "{native:?}");
        state_api::metrics::report_managed_memory(0, 1 << 20, 4096);

        let seen = seen(&snapshotter);
        assert_eq!(histogram(&seen, names::CHECKPOINT_SYNC_DURATION, "heap").len(), 1);
        assert_eq!(histogram(&seen, names::CHECKPOINT_SYNC_DURATION, "rocksdb").len(), 2);
        assert_eq!(histogram(&seen, names::CHECKPOINT_ASYNC_DURATION, "rocksdb").len(), 2);
        assert_eq!(histogram(&seen, names::RESTORE_DURATION, "heap").len(), 1);
        assert_eq!(histogram(&seen, names::RESTORE_DURATION, "rocksdb").len(), 1);
        let heap_size = gauge(
            &seen,
            names::LAST_CHECKPOINT_SIZE,
            &[("backend", "heap"), ("kind", "full")],
        );
        assert_eq!(heap_size, full.stream.size() as f64);
        let inc_size = gauge(
            &seen,
            names::LAST_CHECKPOINT_SIZE,
            &[("backend", "rocksdb"), ("kind", "incremental")],
        );
        assert_eq!(inc_size, inc.size() as f64);
        assert!(counter(&seen, names::BYTES_UPLOADED) >= full.stream.size() + inc.size());
        assert!(counter(&seen, names::BYTES_DOWNLOADED) >= full.stream.size());
        assert_eq!(
            gauge(&seen, names::ESTIMATED_ENTRIES, &[("backend", "heap"), ("state", "v")]),
            20_000.0
        );
        assert_eq!(
            gauge(&seen, names::ESTIMATED_SIZE, &[("backend", "heap"), ("state", "v")]),
            heap_bytes as f64
        );
        assert_eq!(
            gauge(&seen, names::ESTIMATED_SIZE, &[("backend", "rocksdb"), ("state", "v")]),
            rocks_bytes as f64
        );
        assert!(
            gauge(
                &seen,
                "state.backend.rocksdb.metric.estimate-num-keys",
                &[("backend", "rocksdb")]
            ) > 0.0
        );
        assert!(
            gauge(
                &seen,
                "state.backend.rocksdb.metric.num-sst-files",
                &[("backend", "rocksdb")]
            ) >= 1.0
        );
        assert_eq!(gauge(&seen, names::MANAGED_MEMORY_USED, &[("slot", "0")]), 4096.0);
    }
}
