//! state-fs on S3, against a real S3-compatible server (s3s-fs) that the test starts
//! in-process on loopback: no mocks of opendal. Run with `--features s3`.
#![cfg(feature = "s3")]

mod common;
mod s3_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use state_api::testkit::TestStorage;
use state_api::{CheckpointInput, CheckpointOutput, CheckpointStorage, KeyedStateBackend, Result, StreamHandle};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
use state_heap::HeapKeyedStateBackend;

fn options(inline_threshold: usize) -> FsOptions {
    FsOptions::builder()
        .inline_threshold(inline_threshold)
        .store_options(s3_server::store_options())
        .build()
        .unwrap()
}

fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "s3://bucket/run-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn backend(n: u64, base: u64) -> HeapKeyedStateBackend<u64> {
    common::heap_backend(n, base)
}

fn check(storage: &FsCheckpointStorage, meta: &CheckpointMetadata, n: u64, base: u64) {
    common::check_restore(storage, meta, n, base, 1);
}

#[test]
fn s3_checkpoint_restart_retention_and_savepoint() {
    let uri = unique_prefix();
    let storage = FsCheckpointStorage::open(
        &uri,
        "job",
        options(1024).to_builder().retained_checkpoints(2).build().unwrap(),
    )
    .unwrap();
    assert!(!storage.store().can_rename(), "S3 completes by a single PUT");
    let local = tempfile::tempdir().unwrap();
    let mut shared = Vec::new();
    for id in 1..=4u64 {
        let mut b = backend(4000, id * 10_000);
        let src = local.path().join(format!("f{id}"));
        std::fs::write(&src, vec![id as u8; 200_000]).unwrap();
        shared.extend(
            storage
                .upload_files(&[(src, storage.shared_path(&format!("{id}.sst")))])
                .unwrap(),
        );
        let mut meta = CheckpointMetadata::new("job", id, SnapshotKind::Checkpoint);
        common::add_keyed(&mut meta, b.snapshot(id).unwrap().run(&storage).unwrap());
        assert!(matches!(
            meta.snapshot.operators[0].subtasks[0].state.keyed[0].stream,
            StreamHandle::File { .. }
        ));
        // shared_path() keeps names file-safe: "3.sst" becomes "3_sst-<suffix>".
        meta.snapshot.operators[0].subtasks[0].state.incremental = vec![common::shared_handle(
            shared
                .iter()
                .filter(|s| s.path.contains("/1_sst-") || s.path.contains(&format!("/{id}_sst-")))
                .cloned()
                .collect(),
        )];
        storage.complete_checkpoint(meta).unwrap();
    }
    assert_eq!(storage.completed_checkpoints(), vec![3, 4]);
    let names = storage.store().list(&storage.store_path("shared/")).unwrap();
    assert_eq!(
        names.len(),
        3,
        "files of checkpoints 1 (still referenced), 3 and 4: {names:?}"
    );
    // Restart: discovery on S3 (the first process ends, releasing its lease).
    drop(storage);
    let reopened = FsCheckpointStorage::open(
        &uri,
        "job",
        options(1024).to_builder().retained_checkpoints(2).build().unwrap(),
    )
    .unwrap();
    let latest = reopened.latest_checkpoint().unwrap().unwrap();
    assert_eq!(latest.checkpoint_id, 4);
    check(&reopened, &latest, 4000, 40_000);
    let back: Vec<_> = latest
        .shared()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), local.path().join(format!("b{i}"))))
        .collect();
    reopened.download_files(&back).unwrap();
    // A savepoint on S3, restored from the same bucket.
    let sp = FsCheckpointStorage::savepoint(&uri, "savepoint-9", options(1024)).unwrap();
    let mut b = backend(500, 5);
    let mut meta = CheckpointMetadata::new("job", 9, SnapshotKind::Savepoint);
    common::add_keyed(&mut meta, b.snapshot(9).unwrap().run(&sp).unwrap());
    sp.complete_checkpoint(meta).unwrap();
    let sp2 = FsCheckpointStorage::savepoint(&uri, "savepoint-9", options(1024)).unwrap();
    check(&sp2, &sp2.latest_checkpoint().unwrap().unwrap(), 500, 5);
}

#[test]
fn s3_lease_uses_conditional_creates() {
    let uri = unique_prefix();
    let first = FsCheckpointStorage::open(&uri, "job", options(1024)).unwrap();
    assert_eq!(first.lease_epoch(), Some(1));
    let err = FsCheckpointStorage::open(&uri, "job", options(1024)).unwrap_err();
    assert!(matches!(err, state_api::StateError::LeaseHeld { .. }), "{err}");
    // If-None-Match: * refuses to create an epoch file that exists.
    let store = first.store();
    let epoch1 = first.store_path("_lease/00000000000000000001");
    assert!(!store.create_new(&epoch1, b"x".to_vec()).unwrap());
    let fresh = first.store_path("_lease-probe");
    assert!(store.create_new(&fresh, b"x".to_vec()).unwrap());
    assert!(!store.create_new(&fresh, b"y".to_vec()).unwrap());
    assert_eq!(store.read_all(&fresh).unwrap(), b"x");
    store.delete(&fresh).unwrap();
    drop(first);
    let second = FsCheckpointStorage::open(&uri, "job", options(1024)).unwrap();
    assert_eq!(second.lease_epoch(), Some(2));
}

/// FS storage on S3, damaged through its store, for the conformance suite.
#[derive(Debug, Clone)]
struct S3Storage {
    storage: FsCheckpointStorage,
    base: Arc<AtomicU64>,
}

impl CheckpointStorage for S3Storage {
    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>> {
        self.storage.create_output(checkpoint_id, name)
    }
    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        self.storage.open_input(handle)
    }
    fn discard(&self, handles: &[StreamHandle]) -> Result<()> {
        self.storage.discard(handles)
    }
}

impl TestStorage for S3Storage {
    fn content(&self, path: &str) -> Option<Vec<u8>> {
        // A read error must fail the test, never silently skip the damage.
        Some(self.storage.store().read_all(&self.storage.store_path(path)).unwrap())
    }
    fn replace(&self, path: &str, content: Vec<u8>) {
        self.storage
            .store()
            .write_all(&self.storage.store_path(path), content)
            .unwrap();
    }
    fn bytes_read(&self) -> u64 {
        self.storage.bytes_read() - self.base.load(Ordering::SeqCst)
    }
    fn reset_bytes_read(&self) {
        self.base.store(self.storage.bytes_read(), Ordering::SeqCst);
    }
}

fn s3_storage() -> S3Storage {
    S3Storage {
        storage: FsCheckpointStorage::open(&unique_prefix(), "job", options(0)).unwrap(),
        base: Arc::new(AtomicU64::new(0)),
    }
}

mod conformance_on_s3 {
    use super::s3_storage;
    state_api::conformance_tests!(state_heap::HeapBackendFactory, s3_storage);
}
