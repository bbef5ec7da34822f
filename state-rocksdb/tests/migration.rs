//! Schema migration of a large RocksDB state (issue 17): a state of 1M values, restored
//! from a full and from an incremental snapshot, migrated at registration; every value
//! converted; the next full and incremental snapshots carry the new schema and restore
//! without a migration.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use state_api::testkit::MemFiles;
use state_api::{
    BackendContext, KeyedSnapshotHandle, KeyedStateBackend, ManualClock, Schema, StateError, ValueStateDescriptor,
};
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

const VALUES: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Old {
    count: u64,
    label: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

fn ctx() -> BackendContext {
    BackendContext::single(128).with_clock(Arc::new(ManualClock::new(0)))
}

fn old(k: u64) -> Old {
    Old {
        count: k,
        label: (k % 1000) as u32,
    }
}

fn migrated() -> ValueStateDescriptor<New> {
    ValueStateDescriptor::<New>::new("s").with_migration(migrate)
}

/// Every key holds the migrated value of what was written.
fn check_all(b: &mut RocksDbKeyedStateBackend<u64>, h: &state_api::ValueStateHandle<New>) {
    let mut seen = 0u64;
    b.apply_to_all_keys(&state_api::VoidNamespace, h, |b, k| {
        assert_eq!(b.value(h).get()?, Some(migrate(old(*k))), "key {k}");
        seen += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, VALUES);
}

#[test]
fn a_million_values_migrate_from_full_and_incremental_snapshots() {
    let storage = MemFiles::default();
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx(), RocksDbConfig::default()).unwrap();
    let s = b.register(ValueStateDescriptor::<Old>::new("s")).unwrap();
    for k in 0..VALUES {
        b.set_current_key(&k).unwrap();
        b.value(&s).update(old(k)).unwrap();
    }
    let full: KeyedSnapshotHandle = b.snapshot(1).unwrap().run(&storage).unwrap();
    let incremental = b.snapshot_incremental(2).unwrap().run(&storage).unwrap();
    drop(b);

    // From the full (canonical) snapshot: restored blocks are materialized, then migrated.
    let mut r = RocksDbKeyedStateBackend::<u64>::restore(&ctx(), RocksDbConfig::default(), &[full], &storage).unwrap();
    let err = r.register(ValueStateDescriptor::<New>::new("s")).unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "value", .. }),
        "{err}"
    );
    let h = r.register(migrated()).unwrap();
    check_all(&mut r, &h);
    let full2 = r.snapshot(3).unwrap().run(&storage).unwrap();
    let incremental2 = r.snapshot_incremental(4).unwrap().run(&storage).unwrap();
    assert_eq!(incremental2.states[0].value_schema, Schema::of::<New>());
    drop(r);

    // From the incremental (native) snapshot: the column family arrives as SST files and
    // is rewritten.
    let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(
        &ctx(),
        RocksDbConfig::default(),
        std::slice::from_ref(&incremental),
        &storage,
    )
    .unwrap();
    let h = r.register(migrated()).unwrap();
    check_all(&mut r, &h);
    drop(r);

    // The snapshots taken after the migration hold the new schema only: no migration
    // needed, and the old type is now the one refused.
    let mut r = RocksDbKeyedStateBackend::<u64>::restore(&ctx(), RocksDbConfig::default(), &[full2], &storage).unwrap();
    assert!(r.register(ValueStateDescriptor::<Old>::new("s")).is_err());
    let h = r.register(ValueStateDescriptor::<New>::new("s")).unwrap();
    check_all(&mut r, &h);
    drop(r);
    let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(
        &ctx(),
        RocksDbConfig::default(),
        &[incremental2],
        &storage,
    )
    .unwrap();
    assert!(r.register(ValueStateDescriptor::<Old>::new("s")).is_err());
    let h = r.register(ValueStateDescriptor::<New>::new("s")).unwrap();
    check_all(&mut r, &h);
}

#[test]
fn a_failing_migration_leaves_the_state_as_it_was() {
    let storage = MemFiles::default();
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx(), RocksDbConfig::default()).unwrap();
    let s = b.register(ValueStateDescriptor::<Old>::new("s")).unwrap();
    for k in 0..1000 {
        b.set_current_key(&k).unwrap();
        b.value(&s).update(old(k)).unwrap();
    }
    let inc = b.snapshot_incremental(1).unwrap().run(&storage).unwrap();
    drop(b);
    let mut r =
        RocksDbKeyedStateBackend::<u64>::restore_incremental(&ctx(), RocksDbConfig::default(), &[inc], &storage)
            .unwrap();
    // A declared migration whose old type does not match the stored bytes fails part way.
    let bad = ValueStateDescriptor::<New>::new("s").with_migration_from(
        Schema::of::<Old>(),
        |s: (u64, u64, u64, u64, u64, u64)| New {
            label: String::new(),
            count: s.0 as i64,
            doubled: 0,
        },
    );
    let err = r.register(bad).unwrap_err();
    assert!(matches!(err, StateError::Serialization { .. }), "{err}");
    // Nothing was rewritten: the old type still reads every value.
    let s = r.register(ValueStateDescriptor::<Old>::new("s")).unwrap();
    for k in 0..1000 {
        r.set_current_key(&k).unwrap();
        assert_eq!(r.value(&s).get().unwrap(), Some(old(k)));
    }
}
