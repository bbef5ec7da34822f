//! Whole-job checkpoints on the file system storage: a coordinator completes them into
//! `_metadata` (version 2); a declined or late part is deleted and the previous
//! checkpoint still restores; a version-1 `_metadata` restores at another parallelism;
//! the version-2 encoding is byte-stable; each subtask reads only its share.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use state_api::keygroup::key_group_for_key;
use state_api::{
    AckOutcome, Acknowledgement, BackendContext, CheckpointCoordinator, CoordinatorConfig, Decline,
    DefaultOperatorStateBackend, JobAssignment, KeyGroupRange, KeyedSnapshotHandle, KeyedStateBackend, ManualClock,
    OperatorId, OperatorSpec, OperatorStateBackend, RestoreOptions, StateError, StreamHandle, SubtaskState,
    ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, LEGACY_OPERATOR_ID, SnapshotKind};
use state_heap::HeapKeyedStateBackend;
use state_timers::{InternalTimerService, TimerStorage};

use common::tree;

const MAX_P: u32 = 128;

/// Subtask `index` of `parallelism` of operator `counts`: value `v` = `base + key` for
/// the keys of `0..2000` it owns, snapshotted as checkpoint `id` into `storage`.
fn counts_subtask(storage: &FsCheckpointStorage, parallelism: u32, index: u32, base: u64, id: u64) -> SubtaskState {
    let ctx = BackendContext::for_subtask(MAX_P, parallelism, index).unwrap();
    let mut b = HeapKeyedStateBackend::<u64>::new(&ctx).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..2000u64 {
        if ctx.key_group_range.contains(key_group_for_key(&k, MAX_P).unwrap()) {
            b.set_current_key(&k).unwrap();
            b.value(&v).update(base + k).unwrap();
        }
    }
    SubtaskState {
        keyed: vec![b.snapshot(id).unwrap().run(storage).unwrap()],
        ..SubtaskState::default()
    }
}

fn source_subtask(storage: &FsCheckpointStorage, offset: u64, id: u64) -> SubtaskState {
    let mut ops = DefaultOperatorStateBackend::new(0);
    let h = ops.list_state::<u64>("offset").unwrap();
    ops.list(&h).add(offset).unwrap();
    SubtaskState {
        operator: vec![ops.snapshot(id).unwrap().run(storage).unwrap()],
        ..SubtaskState::default()
    }
}

fn ack(id: u64, op: &str, subtask: u32, state: SubtaskState) -> Acknowledgement {
    Acknowledgement {
        checkpoint_id: id,
        operator: OperatorId::new(op).unwrap(),
        subtask,
        state,
    }
}

/// Restores `counts` from the latest checkpoint at `parallelism` and checks every key.
fn check_counts(storage: &FsCheckpointStorage, parallelism: u32, base: u64) {
    let latest = storage.latest_checkpoint().unwrap().unwrap();
    let job = [
        OperatorSpec::new("counts", parallelism, MAX_P).unwrap(),
        OperatorSpec::new("source", 1, MAX_P).unwrap(),
    ];
    let plan = JobAssignment::new(&latest.snapshot, &job, RestoreOptions::default()).unwrap();
    let mut seen = 0;
    for a in plan.operator("counts") {
        let mut b = HeapKeyedStateBackend::<u64>::restore(&a.context(), &a.keyed, storage).unwrap();
        let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in b.keys(&v).unwrap() {
            b.set_current_key(&k).unwrap();
            assert_eq!(b.value(&v).get().unwrap(), Some(base + k));
            seen += 1;
        }
    }
    assert_eq!(seen, 2000);
}

#[test]
fn coordinated_checkpoints_complete_and_declined_ones_leave_nothing() {
    let mut local = common::LocalFs::files_only();
    let storage = local.storage.clone();
    let job = [
        OperatorSpec::new("counts", 2, MAX_P).unwrap(),
        OperatorSpec::new("source", 1, MAX_P).unwrap(),
    ];
    let coordinator =
        CheckpointCoordinator::new(&job, Arc::new(storage.clone()), CoordinatorConfig::default()).unwrap();
    coordinator.trigger(1).unwrap();
    coordinator
        .acknowledge(ack(1, "counts", 1, counts_subtask(&storage, 2, 1, 0, 1)))
        .unwrap();
    coordinator
        .acknowledge(ack(1, "source", 0, source_subtask(&storage, 10, 1)))
        .unwrap();
    assert!(
        !tree(&local.job_dir).contains(&"chk-1/_metadata".to_string()),
        "no metadata before every subtask acknowledged"
    );
    let done = coordinator
        .acknowledge(ack(1, "counts", 0, counts_subtask(&storage, 2, 0, 0, 1)))
        .unwrap();
    assert_eq!(done, AckOutcome::Completed);
    assert!(tree(&local.job_dir).contains(&"chk-1/_metadata".to_string()));
    let meta = storage.latest_checkpoint().unwrap().unwrap();
    assert_eq!(meta.snapshot.operators.len(), 2);
    check_counts(&storage, 3, 0);

    // Checkpoint 2: one subtask writes and acknowledges, another declines.
    coordinator.trigger(2).unwrap();
    coordinator
        .acknowledge(ack(2, "counts", 0, counts_subtask(&storage, 2, 0, 5000, 2)))
        .unwrap();
    assert!(tree(&local.job_dir).iter().any(|f| f.starts_with("chk-2/")));
    coordinator
        .decline(Decline {
            checkpoint_id: 2,
            operator: OperatorId::new("source").unwrap(),
            subtask: 0,
            reason: "source failed".into(),
        })
        .unwrap();
    let files = tree(&local.job_dir);
    assert!(files.iter().all(|f| !f.starts_with("chk-2/")), "{files:?}");
    // A late subtask writes its part and acknowledges: discarded, its file deleted.
    let late = counts_subtask(&storage, 2, 1, 5000, 2);
    let StreamHandle::File { path, .. } = late.keyed[0].stream.clone() else {
        panic!("a file")
    };
    assert!(tree(&local.job_dir).contains(&path));
    assert_eq!(
        coordinator.acknowledge(ack(2, "counts", 1, late)).unwrap(),
        AckOutcome::Discarded
    );
    assert!(!tree(&local.job_dir).contains(&path), "the late part is deleted");
    assert_eq!(storage.completed_checkpoints(), vec![1]);
    check_counts(&storage, 1, 0);

    // Checkpoint 3 completes; a reopened storage finds it.
    coordinator.trigger(3).unwrap();
    for (op, i, st) in [
        ("counts", 0, counts_subtask(&storage, 2, 0, 7000, 3)),
        ("counts", 1, counts_subtask(&storage, 2, 1, 7000, 3)),
        ("source", 0, source_subtask(&storage, 30, 3)),
    ] {
        coordinator.acknowledge(ack(3, op, i, st)).unwrap();
    }
    drop((coordinator, storage));
    let reopened = local.restart(FsOptions::default());
    assert_eq!(reopened.completed_checkpoints(), vec![3]);
    check_counts(&reopened, 4, 7000);
}

#[test]
fn each_subtask_reads_only_its_share_of_the_checkpoint() {
    let local = common::LocalFs::files_only();
    let storage = local.storage.clone();
    let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    let op = OperatorId::new("counts").unwrap();
    for i in 0..4 {
        meta.add_subtask(&op, 4, MAX_P, i, counts_subtask(&storage, 4, i, 0, 1))
            .unwrap();
    }
    storage.complete_checkpoint(meta).unwrap();
    let latest = storage.latest_checkpoint().unwrap().unwrap();
    for new_p in [3, 2, 1] {
        let job = [OperatorSpec::new("counts", new_p, MAX_P).unwrap()];
        let plan = JobAssignment::new(&latest.snapshot, &job, RestoreOptions::default()).unwrap();
        for a in plan.operator("counts") {
            let share = a.keyed.iter().map(|h| h.section_bytes(a.key_group_range)).sum::<u64>();
            let before = storage.bytes_read();
            HeapKeyedStateBackend::<u64>::restore(&a.context(), &a.keyed, &storage).unwrap();
            let read = storage.bytes_read() - before;
            // Its key groups' sections plus each stream's header (state metadata) and index.
            let overhead: u64 = a
                .keyed
                .iter()
                .map(|h| 512 + 16 * h.key_group_offsets.len() as u64)
                .sum();
            assert!(
                read as f64 <= 1.1 * share as f64 + overhead as f64,
                "{new_p}: subtask {} read {read} bytes for a share of {share}",
                a.index
            );
        }
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A `_metadata` of format version 1 (written by the previous release: one operator's
/// handles in flat lists, subtasks at parallelism 2) restores at parallelism 3.
#[test]
fn a_version_1_checkpoint_restores_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1"),
        dir.path(),
    );
    let storage = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "fixture-job", FsOptions::default()).unwrap();
    let mut meta = storage.latest_checkpoint().unwrap().unwrap();
    assert_eq!(meta.checkpoint_id, 7);
    assert_eq!(meta.snapshot.engine["progress"], vec![1, 2, 3]);
    let legacy = meta.snapshot.operator(LEGACY_OPERATOR_ID).unwrap();
    assert_eq!((legacy.parallelism, legacy.max_parallelism), (2, 128));
    meta.snapshot
        .rename_operator(LEGACY_OPERATOR_ID, &OperatorId::new("counts").unwrap())
        .unwrap();
    let plan = JobAssignment::new(
        &meta.snapshot,
        &[OperatorSpec::new("counts", 3, 128).unwrap()],
        RestoreOptions::default(),
    )
    .unwrap();
    let (mut keys, mut timers, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    for a in plan.operator("counts") {
        let mut b = HeapKeyedStateBackend::<u64>::restore(&a.context(), &a.keyed, &storage).unwrap();
        let count = b.register(ValueStateDescriptor::<u64>::new("count")).unwrap();
        for k in b.keys(&count).unwrap() {
            b.set_current_key(&k).unwrap();
            assert_eq!(b.value(&count).get().unwrap(), Some(k * 10));
            assert!(a.key_group_range.contains(key_group_for_key(&k, 128).unwrap()));
            keys.push(k);
        }
        let range = a.key_group_range;
        let mut s = InternalTimerService::<u64, i64, _>::new(
            TimerStorage::Heap.create_queue(range, 128).unwrap(),
            TimerStorage::Heap.create_queue(range, 128).unwrap(),
            Arc::new(ManualClock::new(0)),
            128,
        )
        .unwrap();
        s.restore(&mut b, &a.timers, &storage).unwrap();
        s.advance_watermark(&mut b, i64::MAX, |_, _, t| {
            timers.push((t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
        let mut ops = a.restore_operator_state(&storage).unwrap();
        let h = ops.list_state::<u64>("offsets").unwrap();
        let mine = ops.list(&h).get().unwrap();
        assert_eq!(mine.len(), 2, "six offsets over three subtasks");
        offsets.extend(mine);
    }
    keys.sort();
    assert_eq!(keys, (0..100).collect::<Vec<_>>());
    timers.sort();
    assert_eq!(timers, (0..100u64).map(|k| (1000 + k as i64, k)).collect::<Vec<_>>());
    assert_eq!(offsets, vec![0, 1, 2, 100, 101, 102]);
}

/// The version-3 encoding of a fixed metadata is byte-for-byte the committed fixture
/// (`UPDATE_GOLDEN=1` rewrites it after a deliberate format change), and the version-2
/// fixture of the same metadata (written before schemas) still decodes to it.
#[test]
fn version_3_metadata_is_byte_stable_and_version_2_still_reads() {
    let op = |s: &str| OperatorId::new(s).unwrap();
    let mut meta = CheckpointMetadata::new("golden-job", 42, SnapshotKind::Checkpoint);
    meta.timestamp_millis = 1_764_547_200_000;
    let keyed = |range: KeyGroupRange, path: &str| KeyedSnapshotHandle {
        checkpoint_id: 42,
        key_group_range: range,
        key_group_offsets: (0..range.len() as u64).map(|i| 16 + 8 * i).collect(),
        stream: StreamHandle::File {
            path: path.into(),
            size: 1000,
            crc32c: 0xdead_beef,
        },
    };
    for i in 0..2 {
        let range = state_api::keygroup::key_group_range_for_operator(128, 2, i).unwrap();
        let state = SubtaskState {
            keyed: vec![keyed(range, &format!("chk-42/window-{i}"))],
            timers: vec![KeyedSnapshotHandle {
                stream: StreamHandle::Inline {
                    bytes: vec![i as u8; 5],
                },
                ..keyed(range, "")
            }],
            engine: BTreeMap::from([("watermark".to_string(), vec![i as u8, 7])]),
            ..SubtaskState::default()
        };
        meta.add_subtask(&op("window"), 2, 128, i, state).unwrap();
    }
    meta.add_subtask(&op("source"), 1, 128, 0, SubtaskState::default())
        .unwrap();
    meta.snapshot.engine.insert("offsets".into(), vec![0, 1, 2, 3]);
    let bytes = meta.encode().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = fixtures.join("metadata-v3.bin");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert_eq!(
        bytes, golden,
        "the v3 encoding changed: bump the version and keep reading this one"
    );
    assert_eq!(&golden[8..12], &3u32.to_be_bytes());
    assert_eq!(CheckpointMetadata::decode(&golden, "golden").unwrap(), meta);
    let v2 = std::fs::read(fixtures.join("metadata-v2.bin")).unwrap();
    assert_eq!(&v2[8..12], &2u32.to_be_bytes());
    assert_eq!(CheckpointMetadata::decode(&v2, "metadata-v2.bin").unwrap(), meta);
}

/// A version-2 `_metadata` with a RocksDB incremental handle (committed, written before
/// schemas existed) decodes with every type known by name, as it was written.
#[test]
fn version_2_incremental_handles_get_name_only_schemas() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metadata-v2-incremental.bin");
    let meta = CheckpointMetadata::decode(&std::fs::read(path).unwrap(), "metadata-v2-incremental.bin").unwrap();
    let counts = meta.snapshot.operator("counts").unwrap();
    let inc = &counts.subtasks[0].state.incremental[0];
    assert_eq!(
        inc.key_schema,
        state_api::Schema::Opaque {
            type_name: "u64".into()
        }
    );
    assert_eq!(inc.shared_files[0].local_name, "000009.sst");
    let count = &inc.states[0];
    assert_eq!((count.name.as_str(), count.value_type.as_str()), ("count", "u64"));
    assert_eq!(
        count.value_schema,
        state_api::Schema::Opaque {
            type_name: "u64".into()
        }
    );
    // Name-only schemas compare by name: the same types read as is, others do not.
    let now = state_api::ValueStateDescriptor::<u64>::new("count");
    count.check_compatible(now.meta()).unwrap();
    let other = state_api::ValueStateDescriptor::<i64>::new("count");
    assert!(count.check_compatible(other.meta()).is_err());
}

/// Metadata that decodes but does not describe a valid job is a typed error naming the
/// operator and subtask, not a restore that goes wrong later.
#[test]
fn inconsistent_version_2_metadata_is_a_typed_error() {
    let op = OperatorId::new("window").unwrap();
    let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    for i in 0..2 {
        meta.add_subtask(&op, 2, 128, i, SubtaskState::default()).unwrap();
    }
    let mut damaged = meta.clone();
    damaged.snapshot.operators[0].subtasks[1].index = 5;
    let err = CheckpointMetadata::decode(&damaged.encode().unwrap(), "chk-1/_metadata").unwrap_err();
    assert!(
        matches!(&err, StateError::InvalidCheckpoint { operator, subtask: Some(5), .. } if operator == "window"),
        "{err}"
    );
    let mut damaged = meta.clone();
    damaged.snapshot.operators[0].subtasks[1].index = 0;
    let err = CheckpointMetadata::decode(&damaged.encode().unwrap(), "chk-1/_metadata").unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let mut damaged = meta;
    damaged.snapshot.operators[0].max_parallelism = 0;
    assert!(CheckpointMetadata::decode(&damaged.encode().unwrap(), "chk-1/_metadata").is_err());
}
