//! Incremental RocksDB checkpoints of a job with two subtasks through the coordinator:
//! a declined checkpoint leaves no metadata and none of its uploads, the backends'
//! registries move on through the coordinator's events, the next checkpoint reuses the
//! last completed one's files and re-uploads only what it must, and the job restores at
//! another parallelism.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::shared_on_disk;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use state_api::keygroup::{key_group_for_key, operator_index_for_key_group};
use state_api::{
    AckOutcome, Acknowledgement, BackendContext, CheckpointCoordinator, CheckpointEvent, CoordinatorConfig, Decline,
    JobAssignment, KeyedStateBackend, ManualClock, OperatorId, OperatorSpec, RestoreOptions, SubtaskState,
    ValueStateDescriptor,
};
use state_fs::{FsCheckpointStorage, FsOptions};
use state_rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};

const KEYS: u64 = 20_000;

fn referenced(storage: &FsCheckpointStorage) -> BTreeSet<String> {
    storage
        .completed_checkpoints()
        .into_iter()
        .flat_map(|id| storage.load_checkpoint(id).unwrap().shared())
        .map(|f| f.path)
        .collect()
}

#[test]
fn a_declined_incremental_checkpoint_leaves_nothing_and_the_next_reuses_only_completed_files() {
    let root = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(root.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    let op = OperatorId::new("counts").unwrap();
    let coordinator = CheckpointCoordinator::new(
        &[OperatorSpec::new("counts", 2, 128).unwrap()],
        Arc::new(storage.clone()),
        CoordinatorConfig::default(),
    )
    .unwrap();
    let events = coordinator.subscribe();
    let mut backends: Vec<RocksDbKeyedStateBackend<u64>> = (0..2)
        .map(|i| {
            let ctx = BackendContext::for_subtask(128, 2, i)
                .unwrap()
                .with_clock(Arc::new(ManualClock::new(0)));
            RocksDbKeyedStateBackend::new(&ctx, RocksDbConfig::default()).unwrap()
        })
        .collect();
    let mut model = BTreeMap::new();
    let mut write = |backends: &mut Vec<RocksDbKeyedStateBackend<u64>>, round: u64| {
        for k in (0..KEYS).filter(|k| round == 0 || k % 100 == round) {
            let owner = operator_index_for_key_group(128, 2, key_group_for_key(&k, 128).unwrap()).unwrap();
            let b = &mut backends[owner as usize];
            let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
            b.set_current_key(&k).unwrap();
            b.value(&v).update(round * 1_000_000 + k).unwrap();
            model.insert(k, round * 1_000_000 + k);
        }
    };
    // Applies the coordinator's decisions to the backends, as an engine does.
    let deliver = |backends: &mut Vec<RocksDbKeyedStateBackend<u64>>| {
        let got: Vec<CheckpointEvent> = events.try_iter().collect();
        for e in &got {
            for b in backends.iter_mut() {
                match e {
                    CheckpointEvent::Completed { checkpoint_id } => b.notify_checkpoint_complete(*checkpoint_id),
                    CheckpointEvent::Aborted { checkpoint_id, .. } => b.notify_checkpoint_aborted(*checkpoint_id),
                }
            }
        }
        got
    };
    let ack = |id: u64, i: u32, b: &mut RocksDbKeyedStateBackend<u64>| {
        let h = b.snapshot_incremental(id).unwrap().run(&storage).unwrap();
        coordinator
            .acknowledge(Acknowledgement {
                checkpoint_id: id,
                operator: op.clone(),
                subtask: i,
                state: SubtaskState {
                    incremental: vec![h],
                    ..SubtaskState::default()
                },
            })
            .unwrap()
    };

    write(&mut backends, 0);
    coordinator.trigger(1).unwrap();
    let before = storage.bytes_written();
    ack(1, 0, &mut backends[0]);
    assert_eq!(ack(1, 1, &mut backends[1]), AckOutcome::Completed);
    let first_upload = storage.bytes_written() - before;
    assert_eq!(
        deliver(&mut backends),
        vec![CheckpointEvent::Completed { checkpoint_id: 1 }]
    );
    let after_first = shared_on_disk(root.path());
    assert_eq!(after_first, referenced(&storage));

    // Checkpoint 2: subtask 0 uploads its new files and acknowledges, subtask 1 declines.
    write(&mut backends, 2);
    coordinator.trigger(2).unwrap();
    ack(2, 0, &mut backends[0]);
    assert!(
        shared_on_disk(root.path()).len() > after_first.len(),
        "subtask 0 uploaded new files"
    );
    coordinator
        .decline(Decline {
            checkpoint_id: 2,
            operator: op.clone(),
            subtask: 1,
            reason: "upload failed".into(),
        })
        .unwrap();
    assert_eq!(deliver(&mut backends).len(), 1);
    assert_eq!(
        shared_on_disk(root.path()),
        after_first,
        "the aborted checkpoint's uploads are gone"
    );
    assert!(!root.path().join("job/chk-2").exists());
    assert_eq!(storage.completed_checkpoints(), vec![1]);

    // Checkpoint 3: reuses checkpoint 1's files, re-uploads what checkpoint 2 had (deleted).
    write(&mut backends, 3);
    coordinator.trigger(3).unwrap();
    let before = storage.bytes_written();
    ack(3, 0, &mut backends[0]);
    assert_eq!(ack(3, 1, &mut backends[1]), AckOutcome::Completed);
    let third_upload = storage.bytes_written() - before;
    deliver(&mut backends);
    assert!(
        third_upload * 3 < first_upload,
        "checkpoint 3 uploaded {third_upload} bytes, checkpoint 1 {first_upload}"
    );
    assert_eq!(
        shared_on_disk(root.path()),
        referenced(&storage),
        "every retained file, nothing else"
    );
    let latest = storage.latest_checkpoint().unwrap().unwrap();
    let reused: BTreeSet<String> = latest.shared().into_iter().map(|f| f.path).collect();
    assert!(!reused.is_disjoint(&after_first), "files of checkpoint 1 are reused");

    // Restore at parallelism 3: every key once, with its latest value.
    let plan = JobAssignment::new(
        &latest.snapshot,
        &[OperatorSpec::new("counts", 3, 128).unwrap()],
        RestoreOptions::default(),
    )
    .unwrap();
    let mut seen = 0;
    for a in plan.operator("counts") {
        let mut r = RocksDbKeyedStateBackend::<u64>::restore_incremental(
            &a.context(),
            RocksDbConfig::default(),
            &a.incremental,
            &storage,
        )
        .unwrap();
        let v = r.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
        for k in r.keys(&v).unwrap() {
            r.set_current_key(&k).unwrap();
            assert_eq!(r.value(&v).get().unwrap(), Some(model[&k]), "key {k}");
            seen += 1;
        }
    }
    assert_eq!(seen, KEYS);
}
