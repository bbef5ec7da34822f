//! Fault injection: write errors mid-checkpoint, partial uploads, failed metadata
//! writes, missing and corrupted files. Each leaves the last completed checkpoint
//! restorable and gives a typed error.

mod common;

use std::sync::Arc;

use common::{faulty_local, tree};
use state_api::{BackendContext, ErrorKind, KeyedStateBackend, StateError, StreamHandle};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

fn backend(n: u64, base: u64) -> HeapKeyedStateBackend<u64> {
    common::heap_backend(n, base)
}

fn assert_restores(storage: &FsCheckpointStorage, id: u64, base: u64) {
    let meta = storage.latest_checkpoint().unwrap().expect("a completed checkpoint");
    assert_eq!(meta.checkpoint_id, id);
    common::check_restore(storage, &meta, 3000, base, 97);
}

fn setup() -> (tempfile::TempDir, FsCheckpointStorage, Arc<common::Faults>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_local(dir.path());
    let storage = FsCheckpointStorage::with_store(store, "job", FsOptions::default()).unwrap();
    let mut b = backend(3000, 0);
    let mut m = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
    common::add_keyed(&mut m, b.snapshot(1).unwrap().run(&storage).unwrap());
    storage.complete_checkpoint(m).unwrap();
    (dir, storage, faults)
}

#[test]
fn write_error_mid_checkpoint_keeps_the_previous_checkpoint() {
    let (dir, storage, faults) = setup();
    *faults.fail_writes.lock().unwrap() = Some(("chk-2/".into(), 10_000));
    let mut b = backend(3000, 1000);
    let err = b.snapshot(2).unwrap().run(&storage).unwrap_err();
    assert!(
        matches!(err, StateError::Storage { .. }) && err.to_string().contains("chk-2/"),
        "{err}"
    );
    assert!(faults.injected.load(std::sync::atomic::Ordering::SeqCst));
    assert_restores(&storage, 1, 0);
    // The next successful checkpoint removes the leftovers of checkpoint 2.
    *faults.fail_writes.lock().unwrap() = None;
    let mut m = CheckpointMetadata::new("job", 3, SnapshotKind::Checkpoint);
    common::add_keyed(&mut m, b.snapshot(3).unwrap().run(&storage).unwrap());
    storage.complete_checkpoint(m).unwrap();
    assert!(!tree(&dir.path().join("job")).iter().any(|f| f.starts_with("chk-2/")));
    assert_restores(&storage, 3, 1000);
}

#[test]
fn partial_upload_is_refused_at_completion() {
    let (dir, storage, _faults) = setup();
    let mut b = backend(3000, 1000);
    let mut m = CheckpointMetadata::new("job", 2, SnapshotKind::Checkpoint);
    common::add_keyed(&mut m, b.snapshot(2).unwrap().run(&storage).unwrap());
    let StreamHandle::File { path, .. } = m.snapshot.operators[0].subtasks[0].state.keyed[0].stream.clone() else {
        unreachable!()
    };
    // The upload ended short (as a killed multipart upload would leave it).
    let p = dir.path().join("job").join(&path);
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 2).unwrap();
    let err = storage.complete_checkpoint(m).unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { .. }) && err.to_string().contains(path.as_str()),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert_eq!(storage.completed_checkpoints(), vec![1]);
    assert_restores(&storage, 1, 0);
    // After a restart the half-written checkpoint is gone.
    drop(storage);
    let reopened = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    assert!(!tree(&dir.path().join("job")).iter().any(|f| f.starts_with("chk-2/")));
    assert_restores(&reopened, 1, 0);
}

#[test]
fn failed_metadata_write_leaves_no_completed_checkpoint() {
    let (dir, storage, faults) = setup();
    *faults.fail_put.lock().unwrap() = Some("chk-2/_metadata".into());
    let mut b = backend(3000, 1000);
    let mut m = CheckpointMetadata::new("job", 2, SnapshotKind::Checkpoint);
    common::add_keyed(&mut m, b.snapshot(2).unwrap().run(&storage).unwrap());
    let err = storage.complete_checkpoint(m).unwrap_err();
    assert!(err.to_string().contains("chk-2/_metadata"), "{err}");
    assert_eq!(storage.completed_checkpoints(), vec![1]);
    assert!(!tree(&dir.path().join("job")).contains(&"chk-2/_metadata".to_string()));
    drop(storage);
    let reopened = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "job", FsOptions::default()).unwrap();
    assert_restores(&reopened, 1, 0);
}

#[test]
fn missing_and_corrupted_files_at_restore_are_typed_errors() {
    let (dir, storage, _faults) = setup();
    let meta = storage.latest_checkpoint().unwrap().unwrap();
    let StreamHandle::File { path, .. } = &meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream else {
        unreachable!()
    };
    let p = dir.path().join("job").join(path);
    let original = std::fs::read(&p).unwrap();
    let mut bad = original.clone();
    let at = bad.len() / 3;
    bad[at] ^= 0x40;
    std::fs::write(&p, &bad).unwrap();
    let err = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &meta.snapshot.operators[0].keyed(),
        &storage,
    )
    .unwrap_err();
    assert!(
        matches!(err, StateError::Corrupt { .. }) && err.to_string().contains(path.as_str()),
        "{err}"
    );
    std::fs::remove_file(&p).unwrap();
    let err = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &meta.snapshot.operators[0].keyed(),
        &storage,
    )
    .unwrap_err();
    assert!(
        matches!(err, StateError::Io { .. }) && err.to_string().contains(path.as_str()),
        "{err}"
    );
    // The kind says what happened, and the store's own error is kept as the source.
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.is_damage() && !err.is_retryable(), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "{err}: the I/O error is lost"
    );
    // Put it back: the checkpoint restores again (nothing else was touched).
    std::fs::write(&p, &original).unwrap();
    assert_restores(&storage, 1, 0);
}
