//! Schema migration at registration (issue 17): restoring a state of values written as
//! an old type and registering it with a migration to a new type, against restoring the
//! same state and registering it as written (no migration), heap and RocksDB (full and
//! incremental restores).

use serde::{Deserialize, Serialize};
use state_api::{BackendContext, KeyedSnapshotHandle, KeyedStateBackend, Result, ValueStateDescriptor};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_heap::HeapKeyedStateBackend;

use super::{Row, ns_per_op};

#[derive(Clone, Serialize, Deserialize)]
struct Old {
    count: u64,
    label: u32,
}

#[derive(Clone, Serialize, Deserialize)]
struct New {
    label: String,
    count: i64,
    doubled: u64,
}

fn migrate(o: Old) -> New {
    New {
        label: o.label.to_string(),
        count: o.count as i64,
        doubled: o.count * 2,
    }
}

fn fill<B: KeyedStateBackend<Key = u64>>(b: &mut B, values: u64) -> Result<()> {
    let h = b.register(ValueStateDescriptor::<Old>::new("s"))?;
    for k in 0..values {
        b.set_current_key(&k)?;
        b.value(&h).update(Old {
            count: k,
            label: (k % 1000) as u32,
        })?;
    }
    Ok(())
}

/// ns per value: (restore + register with the migration, restore + register as written).
fn measure<B: KeyedStateBackend<Key = u64>>(values: u64, restore: impl Fn() -> Result<B>) -> Result<(f64, f64)> {
    let ours = ns_per_op(values, || {
        let mut b = restore().unwrap();
        let h = b
            .register(ValueStateDescriptor::<New>::new("s").with_migration(migrate))
            .unwrap();
        b.set_current_key(&(values - 1)).unwrap();
        assert!(b.value(&h).get().unwrap().is_some());
    });
    let base = ns_per_op(values, || {
        let mut b = restore().unwrap();
        let h = b.register(ValueStateDescriptor::<Old>::new("s")).unwrap();
        b.set_current_key(&(values - 1)).unwrap();
        assert!(b.value(&h).get().unwrap().is_some());
    });
    Ok((ours, base))
}

/// The migration rows for the heap and (with the feature) RocksDB.
pub fn migrate_rows(values: u64, rows: &mut Vec<Row>) -> Result<()> {
    let ctx = BackendContext::single(128);
    let dir = std::env::temp_dir().join(format!("state-bench-migrate-{}", std::process::id()));
    let storage = FsCheckpointStorage::open(dir.to_str().unwrap_or("."), "bench", FsOptions::default())?;
    let mut heap = HeapKeyedStateBackend::<u64>::new(&ctx)?;
    fill(&mut heap, values)?;
    let handle: KeyedSnapshotHandle = heap.snapshot(1)?.run(&storage)?;
    drop(heap);
    let handles = std::slice::from_ref(&handle);
    let (ours, base) = measure(values, || {
        HeapKeyedStateBackend::<u64>::restore(&ctx, handles, &storage)
    })?;
    rows.push(row("heap, full snapshot", values, ours, base));
    #[cfg(feature = "rocksdb")]
    {
        use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
        let (ours, base) = measure(values, || {
            RocksDbKeyedStateBackend::<u64>::restore(&ctx, RocksDbConfig::default(), handles, &storage)
        })?;
        rows.push(row("RocksDB, full snapshot", values, ours, base));
        let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx, RocksDbConfig::default())?;
        fill(&mut b, values)?;
        let inc = b.snapshot_incremental(2)?.run(&storage)?;
        drop(b);
        let incs = std::slice::from_ref(&inc);
        let (ours, base) = measure(values, || {
            RocksDbKeyedStateBackend::<u64>::restore_incremental(&ctx, RocksDbConfig::default(), incs, &storage)
        })?;
        rows.push(row("RocksDB, incremental snapshot", values, ours, base));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn row(what: &str, values: u64, ours: f64, base: f64) -> Row {
    Row {
        name: format!("restore and register with a migration (old struct → new struct), {what}, {values} values"),
        ours,
        baseline: base,
        unit: "ns/value",
        baseline_name: "restore and register as written",
        target: "reported",
    }
}
