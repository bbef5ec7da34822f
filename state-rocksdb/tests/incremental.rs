//! Incremental checkpoints through the file system storage: a chain with retention,
//! reuse of unchanged files, restore from each, rescaling, and no unreferenced file
//! left in `shared/`.

mod common;

use common::shared_on_disk;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use state_api::keygroup::{key_group_for_key, operator_index_for_key_group};
use state_api::{
    BackendContext, KeyedStateBackend, ManualClock, OperatorId, StateError, SubtaskState, ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

const KEYS: u64 = 20_000;

fn ctx_for(parallelism: u32, index: u32) -> BackendContext {
    BackendContext::for_subtask(128, parallelism, index)
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(0)))
}

/// One subtask holding `KEYS` keys (value = key) in state `v`, and the model of them.
fn populated() -> (
    RocksDbKeyedStateBackend<u64>,
    state_api::ValueStateHandle<u64>,
    BTreeMap<u64, u64>,
) {
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx_for(1, 0), RocksDbConfig::default()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let mut model = BTreeMap::new();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
        model.insert(k, k);
    }
    (b, v, model)
}

/// Subtask `index` of `parallelism` restored from `handles`.
fn restore(
    parallelism: u32,
    index: u32,
    handles: &[state_api::IncrementalKeyedHandle],
    storage: &FsCheckpointStorage,
) -> RocksDbKeyedStateBackend<u64> {
    RocksDbKeyedStateBackend::<u64>::restore_incremental(
        &ctx_for(parallelism, index),
        RocksDbConfig::default(),
        handles,
        storage,
    )
    .unwrap()
}

fn check(b: &mut RocksDbKeyedStateBackend<u64>, model: &BTreeMap<u64, u64>, parallelism: u32, index: u32) {
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let mut owned = 0;
    for (k, want) in model {
        let owner = operator_index_for_key_group(128, parallelism, key_group_for_key(k, 128).unwrap()).unwrap();
        if owner == index {
            b.set_current_key(k).unwrap();
            assert_eq!(b.value(&v).get().unwrap(), Some(*want), "key {k}");
            owned += 1;
        } else {
            assert!(matches!(
                b.set_current_key(k),
                Err(StateError::KeyGroupOutOfRange { .. })
            ));
        }
    }
    let mut keys = b.keys(&v).unwrap();
    keys.sort();
    assert_eq!(keys.len(), owned, "nothing outside the key-group range remains");
}

#[test]
fn incremental_chain_with_retention_restores_and_leaves_no_unreferenced_file() {
    let root = tempfile::tempdir().unwrap();
    let options = FsOptions::builder().retained_checkpoints(2).build().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", options).unwrap();
    let (mut b, v, mut model) = populated();
    let mut uploaded = Vec::new();
    for id in 1..=6u64 {
        if id > 1 {
            // Touch 1% of the keys.
            for k in (0..KEYS).filter(|k| k % 100 == id) {
                b.set_current_key(&k).unwrap();
                b.value(&v).update(id * 1_000_000 + k).unwrap();
                model.insert(k, id * 1_000_000 + k);
            }
        }
        let before = storage.bytes_written();
        let h = b.snapshot_incremental(id).unwrap().run(&storage).unwrap();
        uploaded.push(storage.bytes_written() - before);
        let mut meta = CheckpointMetadata::new("job", id, SnapshotKind::Checkpoint);
        let state = SubtaskState {
            incremental: vec![h],
            ..SubtaskState::default()
        };
        meta.add_subtask(&OperatorId::new("op").unwrap(), 1, 128, 0, state)
            .unwrap();
        storage.complete_checkpoint(meta).unwrap();
        b.notify_checkpoint_complete(id);

        // Restore the latest checkpoint and compare with the model.
        let latest = storage.latest_checkpoint().unwrap().unwrap();
        assert_eq!(latest.checkpoint_id, id);
        let mut r = restore(1, 0, &latest.snapshot.operators[0].incremental(), &storage);
        check(&mut r, &model, 1, 0);

        // shared/ holds exactly what the retained checkpoints reference.
        let mut referenced = BTreeSet::new();
        for cp in storage.completed_checkpoints() {
            for f in storage.load_checkpoint(cp).unwrap().shared() {
                referenced.insert(f.path);
            }
        }
        assert_eq!(shared_on_disk(root.path()), referenced, "after checkpoint {id}");
    }
    assert_eq!(storage.completed_checkpoints(), vec![5, 6]);
    assert!(
        uploaded[1] * 3 < uploaded[0],
        "checkpoint 2 uploaded {} bytes, checkpoint 1 {}",
        uploaded[1],
        uploaded[0]
    );
}

#[test]
fn incremental_restore_rescales_up_and_down() {
    let root = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let mut model = BTreeMap::new();
    // Two subtasks, each with its own keys, snapshot incrementally.
    let mut handles = Vec::new();
    for index in 0..2 {
        let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx_for(2, index), RocksDbConfig::default()).unwrap();
        let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in 0..3000u64 {
            if operator_index_for_key_group(128, 2, key_group_for_key(&k, 128).unwrap()).unwrap() == index {
                b.set_current_key(&k).unwrap();
                b.value(&v).update(k * 3).unwrap();
                model.insert(k, k * 3);
            }
        }
        handles.push(b.snapshot_incremental(1).unwrap().run(&storage).unwrap());
    }
    // 2 -> 1: both handles merged (copy of owned key groups).
    let mut one = restore(1, 0, &handles, &storage);
    check(&mut one, &model, 1, 0);
    // 1 -> 3: each new subtask opens the covering handle and drops the other key groups.
    let h = one.snapshot_incremental(2).unwrap().run(&storage).unwrap();
    for index in 0..3 {
        let mut r = restore(3, index, std::slice::from_ref(&h), &storage);
        check(&mut r, &model, 3, index);
    }
    // A wrong key type is refused.
    let err = RocksDbKeyedStateBackend::<String>::restore_incremental(
        &ctx_for(1, 0),
        RocksDbConfig::default(),
        &handles,
        &storage,
    )
    .unwrap_err();
    assert!(
        matches!(err, StateError::IncompatibleSchema { role: "key", .. }),
        "{err}"
    );
}

/// The asynchronous part of an incremental checkpoint uploads from a RocksDB checkpoint
/// inside the instance directory: dropping the backend first must not delete it (an
/// engine drops an operator once its input ends, while its last checkpoint uploads).
#[test]
fn an_incremental_upload_completes_after_the_backend_is_dropped() {
    let root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let config = || RocksDbConfig {
        local_dir: local.path().to_path_buf(),
        ..RocksDbConfig::default()
    };
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx_for(1, 0), config()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    let model: BTreeMap<u64, u64> = (0..KEYS).map(|k| (k, k * 3)).collect();
    for (k, value) in &model {
        b.set_current_key(k).unwrap();
        b.value(&v).update(*value).unwrap();
    }
    let pending = b.snapshot_incremental(1).unwrap();
    drop(b);
    let handle = pending.run(&storage).unwrap();
    // Once the upload finished, the instance directory is gone.
    assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 0);
    let mut restored =
        RocksDbKeyedStateBackend::<u64>::restore_incremental(&ctx_for(1, 0), config(), &[handle], &storage).unwrap();
    check(&mut restored, &model, 1, 0);
}

#[test]
fn a_cancelled_incremental_part_uploads_nothing_and_the_next_one_completes() {
    let root = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let mut b = RocksDbKeyedStateBackend::<u64>::new(&ctx_for(1, 0), RocksDbConfig::default()).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..KEYS {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k).unwrap();
    }
    let part = b.snapshot_incremental(1).unwrap();
    part.cancel_handle().cancel();
    let before = storage.bytes_written();
    let err = part.run(&storage).unwrap_err();
    assert_eq!(err.kind(), state_api::ErrorKind::Cancelled, "{err}");
    assert_eq!(
        storage.bytes_written(),
        before,
        "a part cancelled before it ran uploaded nothing"
    );
    b.notify_checkpoint_aborted(1);
    // The next incremental checkpoint uploads everything and restores.
    let h = b.snapshot_incremental(2).unwrap().run(&storage).unwrap();
    assert!(storage.bytes_written() > before);
    let mut r =
        RocksDbKeyedStateBackend::<u64>::restore_incremental(&ctx_for(1, 0), RocksDbConfig::default(), &[h], &storage)
            .unwrap();
    let v = r.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    r.set_current_key(&7).unwrap();
    assert_eq!(r.value(&v).get().unwrap(), Some(7));
}

/// A native full checkpoint: every file is the checkpoint's own (nothing reused from
/// the incremental base, nothing in `shared/`), it does not become the base of the next
/// incremental checkpoint, and it restores by opening its files, rescaling included.
#[test]
fn a_native_full_checkpoint_stands_alone_and_restores_at_any_parallelism() {
    let root = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let (mut b, v, mut model) = populated();
    let base = b.snapshot_incremental(1).unwrap().run(&storage).unwrap();
    b.notify_checkpoint_complete(1);
    let base_names: BTreeSet<String> = base.shared_files.iter().map(|f| f.local_name.clone()).collect();
    assert!(!base_names.is_empty());

    for k in (0..KEYS).step_by(50) {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k + 7).unwrap();
        model.insert(k, k + 7);
    }
    let before = storage.bytes_written();
    let full = b.native_full_snapshot(2).unwrap().run(&storage).unwrap();
    let full_bytes = storage.bytes_written() - before;
    assert!(full.shared_files.is_empty(), "{:?}", full.shared_files);
    let names: BTreeSet<String> = full.private_files.iter().map(|f| f.local_name.clone()).collect();
    assert!(names.iter().any(|n| n.ends_with(".sst")), "{names:?}");
    assert!(
        names.is_superset(&base_names),
        "the full checkpoint uploads the base's data files again"
    );
    let on_disk: u64 = full.private_files.iter().map(|f| f.stream.size()).sum();
    assert_eq!(full_bytes, on_disk, "every byte is the checkpoint's own");
    b.notify_checkpoint_complete(2);

    // The next incremental checkpoint still reuses checkpoint 1's files, not 2's.
    let next = b.snapshot_incremental(3).unwrap().run(&storage).unwrap();
    let reused: Vec<_> = next
        .shared_files
        .iter()
        .filter(|f| base.shared_files.iter().any(|g| g.stream == f.stream))
        .collect();
    assert!(!reused.is_empty(), "checkpoint 3 reuses checkpoint 1's uploads");
    for f in &next.shared_files {
        assert!(
            !full.private_files.iter().any(|g| g.stream == f.stream),
            "{} refers to the full checkpoint's file",
            f.local_name
        );
    }

    let mut one = restore(1, 0, std::slice::from_ref(&full), &storage);
    check(&mut one, &model, 1, 0);
    for index in 0..3 {
        let mut r = restore(3, index, std::slice::from_ref(&full), &storage);
        check(&mut r, &model, 3, index);
    }
}

/// An integer RocksDB property of state `v`'s column family.
fn cf_property(b: &RocksDbKeyedStateBackend<u64>, name: &str) -> u64 {
    let cf = b.db().cf_handle(&state_rocksdb::column_family_name("v")).unwrap();
    b.db().property_int_value_cf(&cf, name).unwrap().unwrap()
}

#[test]
fn flush_ahead_empties_the_memtables_in_the_background_and_the_checkpoint_stays_complete() {
    let root = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let (mut b, v, mut model) = populated();
    assert_eq!(cf_property(&b, "rocksdb.num-entries-active-mem-table"), KEYS);
    assert_eq!(b.db().live_files().unwrap().len(), 0, "nothing flushed yet");

    b.flush_ahead().unwrap();
    let t = std::time::Instant::now();
    while b.db().property_int_value("rocksdb.num-running-flushes").unwrap() != Some(0)
        || cf_property(&b, "rocksdb.num-immutable-mem-table") > 0
    {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "background flush did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(cf_property(&b, "rocksdb.num-entries-active-mem-table"), 0);
    assert!(!b.db().live_files().unwrap().is_empty(), "the entries are in SST files");

    // Written after the flush: in the memtable the checkpoint's own flush takes.
    for k in (0..KEYS).step_by(10) {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k + 3).unwrap();
        model.insert(k, k + 3);
    }
    let handle = b.snapshot_incremental(1).unwrap().run(&storage).unwrap();
    let mut r = restore(1, 0, &[handle], &storage);
    check(&mut r, &model, 1, 0);
}
