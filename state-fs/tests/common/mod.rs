//! Helpers shared by state-fs tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use state_api::testkit::TestStorage;
use state_api::{
    BackendContext, CheckpointInput, CheckpointOutput, CheckpointStorage, KeyedStateBackend, Result, StateError,
    StreamHandle, ValueStateDescriptor,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, Location, ObjectStore, ObjectWriter};
use state_heap::HeapKeyedStateBackend;

/// A heap backend whose value state `v` holds `base + k` for keys `0..n`.
pub fn heap_backend(n: u64, base: u64) -> HeapKeyedStateBackend<u64> {
    let mut b = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128)).unwrap();
    let v = b.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in 0..n {
        b.set_current_key(&k).unwrap();
        b.value(&v).update(base + k).unwrap();
    }
    b
}

/// Adds `keyed` to `meta` as the state of operator `op`, subtask 0 of 1 (max parallelism 128).
pub fn add_keyed(meta: &mut CheckpointMetadata, keyed: state_api::KeyedSnapshotHandle) {
    let state = state_api::SubtaskState {
        keyed: vec![keyed],
        ..state_api::SubtaskState::default()
    };
    meta.add_subtask(&state_api::OperatorId::new("op").unwrap(), 1, 128, 0, state)
        .unwrap();
}

/// An incremental-style handle (subtask 0 of 1, max parallelism 128) referencing
/// `files` as its shared data files, for tests of the shared-file registry.
pub fn shared_handle(files: Vec<state_fs::SharedFile>) -> state_api::IncrementalKeyedHandle {
    state_api::IncrementalKeyedHandle {
        checkpoint_id: 0,
        key_group_range: state_api::KeyGroupRange::new(0, 127),
        max_parallelism: 128,
        key_type: "u64".into(),
        key_schema: state_api::Schema::U64,
        states: Vec::new(),
        shared_files: files
            .into_iter()
            .enumerate()
            .map(|(i, f)| state_api::SnapshotFile {
                local_name: format!("{i:06}.sst"),
                stream: StreamHandle::File {
                    path: f.path,
                    size: f.size,
                    crc32c: f.crc32c,
                },
            })
            .collect(),
        private_files: Vec::new(),
    }
}

/// Restores `meta` from `storage` and checks what [`heap_backend`] wrote, every `step`-th key.
pub fn check_restore(storage: &FsCheckpointStorage, meta: &CheckpointMetadata, n: u64, base: u64, step: usize) {
    let mut r = HeapKeyedStateBackend::<u64>::restore(
        &BackendContext::single(128),
        &meta.snapshot.operators[0].keyed(),
        storage,
    )
    .unwrap();
    let v = r.register(ValueStateDescriptor::<u64>::new("v")).unwrap();
    for k in (0..n).step_by(step) {
        r.set_current_key(&k).unwrap();
        assert_eq!(r.value(&v).get().unwrap(), Some(base + k), "key {k}");
    }
}

/// The FS storage on a temp dir, damageable through the local files (for the testkit).
#[derive(Debug, Clone)]
pub struct LocalFs {
    pub storage: FsCheckpointStorage,
    pub job_dir: PathBuf,
    read_base: Arc<AtomicU64>,
    _dir: Arc<tempfile::TempDir>,
}

impl LocalFs {
    pub fn new(options: FsOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = FsCheckpointStorage::open(dir.path().to_str().unwrap(), "job", options).unwrap();
        LocalFs {
            storage,
            job_dir: dir.path().join("job"),
            read_base: Arc::new(AtomicU64::new(0)),
            _dir: Arc::new(dir),
        }
    }

    /// A restart of the job: this storage is dropped (releasing its lease, as a process
    /// that ends does) and the directory opened again; returns the new storage, which
    /// `self.storage` now is too. Clones of the old storage must be gone.
    pub fn restart(&mut self, options: FsOptions) -> FsCheckpointStorage {
        let placeholder = FsCheckpointStorage::savepoint(
            self._dir.path().to_str().unwrap(),
            "restart-placeholder",
            FsOptions::default(),
        )
        .unwrap();
        drop(std::mem::replace(&mut self.storage, placeholder));
        self.storage = FsCheckpointStorage::open(self._dir.path().to_str().unwrap(), "job", options).unwrap();
        self.storage.clone()
    }

    /// Files always (inline threshold 0), so the suite can damage them.
    pub fn files_only() -> Self {
        Self::new(FsOptions::builder().inline_threshold(0).build().unwrap())
    }
}

impl CheckpointStorage for LocalFs {
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

impl TestStorage for LocalFs {
    fn content(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.job_dir.join(path)).ok()
    }
    fn replace(&self, path: &str, content: Vec<u8>) {
        std::fs::write(self.job_dir.join(path), content).unwrap();
    }
    fn bytes_read(&self) -> u64 {
        self.storage.bytes_read() - self.read_base.load(Ordering::SeqCst)
    }
    fn reset_bytes_read(&self) {
        self.read_base.store(self.storage.bytes_read(), Ordering::SeqCst);
    }
}

/// Every file under `dir`, relative and sorted, without the ownership lease's files.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    // The ownership lease is not checkpoint data (tests/lease.rs covers it).
    out.retain(|f| !f.starts_with("_lease/"));
    out.sort();
    out
}

/// Faults a [`FaultyStore`] injects.
#[derive(Debug, Default)]
pub struct Faults {
    /// Writes to paths containing this fail after this many bytes.
    pub fail_writes: Mutex<Option<(String, u64)>>,
    /// Whole-object writes and renames to paths containing this fail.
    pub fail_put: Mutex<Option<String>>,
    pub injected: AtomicBool,
}

/// An [`ObjectStore`] that fails where told to.
#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub faults: Arc<Faults>,
}

fn injected(what: &str, path: &str) -> StateError {
    StateError::storage_message(format!("{what} `{path}`"), "injected fault")
}

struct FaultyWriter {
    inner: Box<dyn ObjectWriter>,
    path: String,
    budget: Option<u64>,
    faults: Arc<Faults>,
}

impl ObjectWriter for FaultyWriter {
    fn write(&mut self, buf: &[u8]) -> Result<()> {
        if let Some(b) = self.budget.as_mut() {
            if (buf.len() as u64) > *b {
                // Write what fits (a partial upload), then fail.
                let n = *b as usize;
                self.inner.write(&buf[..n])?;
                *b = 0;
                self.faults.injected.store(true, Ordering::SeqCst);
                return Err(injected("writing", &self.path));
            }
            *b -= buf.len() as u64;
        }
        self.inner.write(buf)
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.inner.close()
    }
}

impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    fn writer(&self, path: &str) -> Result<Box<dyn ObjectWriter>> {
        let budget = match &*self.faults.fail_writes.lock().unwrap() {
            Some((pat, n)) if path.contains(pat.as_str()) => Some(*n),
            _ => None,
        };
        Ok(Box::new(FaultyWriter {
            inner: self.inner.writer(path)?,
            path: path.to_string(),
            budget,
            faults: Arc::clone(&self.faults),
        }))
    }
    fn write_all(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        if let Some(pat) = &*self.faults.fail_put.lock().unwrap()
            && path.contains(pat.as_str())
        {
            self.faults.injected.store(true, Ordering::SeqCst);
            return Err(injected("writing", path));
        }
        self.inner.write_all(path, bytes)
    }
    fn create_new(&self, path: &str, bytes: Vec<u8>) -> Result<bool> {
        self.inner.create_new(path, bytes)
    }
    fn reader(&self, path: &str) -> Result<Box<dyn CheckpointInput>> {
        self.inner.reader(path)
    }
    fn read_all(&self, path: &str) -> Result<Vec<u8>> {
        self.inner.read_all(path)
    }
    fn size(&self, path: &str) -> Result<Option<u64>> {
        self.inner.size(path)
    }
    fn can_rename(&self) -> bool {
        self.inner.can_rename()
    }
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        if let Some(pat) = &*self.faults.fail_put.lock().unwrap()
            && to.contains(pat.as_str())
        {
            self.faults.injected.store(true, Ordering::SeqCst);
            return Err(injected("renaming to", to));
        }
        self.inner.rename(from, to)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn delete_dir(&self, dir: &str) -> Result<()> {
        self.inner.delete_dir(dir)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
}

/// A local store at `dir`, wrapped for fault injection.
pub fn faulty_local(dir: &Path) -> (Arc<FaultyStore>, Arc<Faults>) {
    let inner = Location::parse(dir.to_str().unwrap())
        .unwrap()
        .open(&Default::default())
        .unwrap();
    let faults = Arc::new(Faults::default());
    (
        Arc::new(FaultyStore {
            inner: Arc::new(inner),
            faults: Arc::clone(&faults),
        }),
        faults,
    )
}
