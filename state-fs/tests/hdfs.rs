//! state-fs on a real HDFS cluster: runs only when `STATE_FS_HDFS_URI` names one
//! (for example `hdfs://namenode:8020/tmp/state-fs-test`), with `--features hdfs --
//! --ignored`. CI builds this file under the feature; no cluster is reachable there.
#![cfg(feature = "hdfs")]

mod common;

use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

#[test]
#[ignore = "needs an HDFS cluster named by STATE_FS_HDFS_URI"]
fn hdfs_checkpoint_round_trip() {
    let uri = std::env::var("STATE_FS_HDFS_URI").expect("STATE_FS_HDFS_URI names an HDFS directory");
    let job = format!("job-{}", std::process::id());
    let storage =
        FsCheckpointStorage::open(&uri, &job, FsOptions::builder().inline_threshold(0).build().unwrap()).unwrap();
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128)).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..1000 {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(k * 2).unwrap();
    }
    let mut meta = CheckpointMetadata::new(&job, 1, SnapshotKind::Checkpoint);
    common::add_keyed(&mut meta, b.snapshot(1).unwrap().run(&storage).unwrap());
    storage.complete_checkpoint(meta).unwrap();
    let reopened = FsCheckpointStorage::open(&uri, &job, FsOptions::default()).unwrap();
    let latest = reopened.latest_checkpoint().unwrap().unwrap();
    let mut r = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &latest.snapshot.operators[0].keyed(),
        &reopened,
    )
    .unwrap();
    let v = r.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    r.set_current_key(&500).unwrap();
    assert_eq!(r.value(&v).get().unwrap(), Some(1000));
}
