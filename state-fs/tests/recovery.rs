//! Recovery never gives up a good checkpoint: a damaged newest or older `_metadata`, a
//! damaged or missing referenced file, each skipped with the next one restored; only
//! when none restores is it a typed error listing every reason. Leftover in-progress
//! files are removed on open.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use state_api::{KeyedStateBackend, StateError, StreamHandle};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};

fn options() -> FsOptions {
    FsOptions::builder()
        .retained_checkpoints(2)
        .inline_threshold(0)
        .build()
        .unwrap()
}

/// Checkpoints 1 and 2 of `v = base + key` (base 100 and 200), on files.
fn two_checkpoints() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "job", options()).unwrap();
    for (id, base) in [(1u64, 100u64), (2, 200)] {
        let mut b = common::heap_backend(500, base);
        let mut meta = CheckpointMetadata::new("job", id, SnapshotKind::Checkpoint);
        common::add_keyed(&mut meta, b.snapshot(id).unwrap().run(&storage).unwrap());
        storage.complete_checkpoint(meta).unwrap();
    }
    let job = dir.path().join("job");
    (dir, job)
}

fn reopen(dir: &Path) -> FsCheckpointStorage {
    FsCheckpointStorage::open(dir.to_str().unwrap(), "job", options()).unwrap()
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = offset.min(bytes.len() - 1);
    bytes[at] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

/// The state file of checkpoint `id`.
fn state_file(job: &Path, id: u64) -> PathBuf {
    let storage = FsCheckpointStorage::open(job.parent().unwrap().to_str().unwrap(), "job", options()).unwrap();
    let meta = storage.load_checkpoint(id).unwrap();
    let StreamHandle::File { path, .. } = &meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream else {
        panic!("a file")
    };
    job.join(path)
}

fn restored_base(storage: &FsCheckpointStorage) -> (u64, u64) {
    let meta = storage.latest_checkpoint().unwrap().unwrap();
    common::check_restore(storage, &meta, 500, 100 * meta.checkpoint_id, 7);
    (meta.checkpoint_id, 100 * meta.checkpoint_id)
}

#[test]
fn a_damaged_newest_metadata_falls_back_to_the_older_checkpoint() {
    let (dir, job) = two_checkpoints();
    flip(&job.join("chk-2/_metadata"), 30);
    let storage = reopen(dir.path());
    assert_eq!(restored_base(&storage), (1, 100));
}

#[test]
fn a_damaged_older_metadata_does_not_stop_the_job() {
    let (dir, job) = two_checkpoints();
    flip(&job.join("chk-1/_metadata"), 30);
    let storage = reopen(dir.path());
    assert_eq!(restored_base(&storage), (2, 200));
}

#[test]
fn a_damaged_or_missing_referenced_file_falls_back() {
    let (dir, job) = two_checkpoints();
    let file = state_file(&job, 2);
    flip(&file, 200); // same size, other bytes: only the CRC tells
    assert_eq!(restored_base(&reopen(dir.path())), (1, 100));

    let (dir, job) = two_checkpoints();
    std::fs::remove_file(state_file(&job, 2)).unwrap();
    assert_eq!(restored_base(&reopen(dir.path())), (1, 100));
}

#[test]
fn when_nothing_restores_the_error_lists_every_reason() {
    let (dir, job) = two_checkpoints();
    flip(&job.join("chk-2/_metadata"), 30);
    std::fs::remove_file(state_file(&job, 1)).unwrap();
    let storage = reopen(dir.path());
    let err = storage.latest_checkpoint().unwrap_err();
    let StateError::NoRestorableCheckpoint { reasons, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(reasons.len(), 2, "{err}");
    assert!(
        reasons[0].starts_with("checkpoint 2:") && reasons[0].contains("_metadata"),
        "{err}"
    );
    assert!(
        reasons[1].starts_with("checkpoint 1:") && reasons[1].contains("missing"),
        "{err}"
    );
}

#[test]
fn leftover_in_progress_files_are_removed_on_open() {
    let (dir, job) = two_checkpoints();
    std::fs::write(job.join("_shared_registry.inprogress"), b"half").unwrap();
    let storage = reopen(dir.path());
    assert!(!job.join("_shared_registry.inprogress").exists());
    assert_eq!(restored_base(&storage), (2, 200));
}
