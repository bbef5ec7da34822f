//! [`FsCheckpointStorage`]: checkpoint storage on any [`ObjectStore`], with Flink's
//! layout, atomic completion, inlining of small state, retention with a shared-file
//! registry, discovery of the latest checkpoint, and savepoints.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use state_api::{CheckpointInput, CheckpointOutput, CheckpointStorage, Result, StateError, StreamHandle};

use crate::layout::{
    IN_PROGRESS, METADATA, REGISTRY, SHARED_DIR, TASK_OWNED_DIR, check_relative_path, check_segment, checkpoint_dir,
    file_stem, parse_checkpoint_dir, unique_suffix,
};
use crate::lease::{Lease, LeaseOptions};
use crate::metadata::{CheckpointMetadata, SharedFile, SharedRegistry, SnapshotKind};
use crate::store::{ObjectStore, ObjectWriter};
use crate::uri::Location;

/// The default inline threshold: streams below 20 KiB go into the metadata.
pub const DEFAULT_INLINE_THRESHOLD: usize = 20 * 1024;
/// The largest inline threshold allowed.
pub const MAX_INLINE_THRESHOLD: usize = 1024 * 1024;

/// Settings of a [`FsCheckpointStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsOptions {
    /// Streams smaller than this are inlined into the metadata (default 20 KiB, max 1 MiB).
    pub inline_threshold: usize,
    /// Completed checkpoints to keep (default 1).
    pub retained_checkpoints: usize,
    /// Concurrent uploads and downloads (default 4).
    pub transfer_concurrency: usize,
    /// Options of the remote store (S3 endpoint, credentials, ...).
    pub store_options: BTreeMap<String, String>,
    /// Whether [`FsCheckpointStorage::latest_checkpoint`] reads every file of a
    /// checkpoint to verify its CRC32C before choosing it (default true); without it,
    /// only presence and sizes are checked and damage is found during the restore.
    pub verify_before_restore: bool,
    /// Exclusive ownership of the job directory (default: a lease with a 30 s time to
    /// live, see [`LeaseOptions`]); `None` turns it off, for a directory that only one
    /// process can ever reach.
    pub lease: Option<LeaseOptions>,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            inline_threshold: DEFAULT_INLINE_THRESHOLD,
            retained_checkpoints: 1,
            transfer_concurrency: 4,
            store_options: BTreeMap::new(),
            verify_before_restore: true,
            lease: Some(LeaseOptions::default()),
        }
    }
}

impl FsOptions {
    fn validate(&self) -> Result<()> {
        if self.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(StateError::InvalidArgument(format!(
                "inline threshold {} exceeds the maximum of {MAX_INLINE_THRESHOLD} bytes",
                self.inline_threshold
            )));
        }
        if self.retained_checkpoints == 0 {
            return Err(StateError::InvalidArgument(
                "at least one completed checkpoint must be retained".into(),
            ));
        }
        if let Some(lease) = &self.lease {
            lease.validate()?;
        }
        if self.transfer_concurrency == 0 {
            return Err(StateError::InvalidArgument(
                "transfer concurrency must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Mode {
    Job {
        job_id: String,
    },
    /// A job directory another process owns (see [`FsCheckpointStorage::participant`]).
    Participant {
        job_id: String,
    },
    Savepoint,
}

#[derive(Debug, Default)]
struct JobState {
    registry: SharedRegistry,
    /// Completed checkpoint ids, ascending.
    completed: Vec<u64>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    /// Directory of this storage relative to the store root, ending in `/`.
    prefix: String,
    mode: Mode,
    options: FsOptions,
    bytes_read: Arc<AtomicU64>,
    bytes_written: AtomicU64,
    state: Mutex<JobState>,
    /// The ownership of a job directory (`None` for savepoints or when turned off).
    lease: Option<Lease>,
}

/// Checkpoint storage for one job (or one savepoint) on a file system or object store.
/// Clones share everything.
///
/// ```
/// use state_api::{BackendContext, KeyedStateBackend, OperatorId, SubtaskState, ValueStateDescriptor};
/// use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};
/// use state_heap::HeapKeyedStateBackend;
///
/// let dir = std::env::temp_dir().join(format!("state-fs-doc-{}", std::process::id()));
/// let storage = FsCheckpointStorage::open(dir.to_str().unwrap(), "my-job", FsOptions::default())?;
///
/// let mut backend = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128))?;
/// let count = backend.register(ValueStateDescriptor::<u64>::new("count"))?;
/// backend.set_current_key(&1)?;
/// backend.value(&count).update(41)?;
///
/// // Checkpoint 1: write the state, then complete it (writes `_metadata` last, atomically).
/// let mut meta = CheckpointMetadata::new("my-job", 1, SnapshotKind::Checkpoint);
/// let state = SubtaskState { keyed: vec![backend.snapshot(1)?.run(&storage)?], ..Default::default() };
/// meta.add_subtask(&OperatorId::new("counter")?, 1, 128, 0, state)?;
/// storage.complete_checkpoint(meta)?;
///
/// // After a restart: find the latest completed checkpoint and restore from it. (While
/// // the first storage lives it owns the directory: a second opener gets `LeaseHeld`.)
/// assert!(matches!(
///     FsCheckpointStorage::open(dir.to_str().unwrap(), "my-job", FsOptions::default()),
///     Err(state_api::StateError::LeaseHeld { .. })
/// ));
/// drop(storage);
/// let storage = FsCheckpointStorage::open(dir.to_str().unwrap(), "my-job", FsOptions::default())?;
/// let latest = storage.latest_checkpoint()?.expect("a completed checkpoint");
/// let mut restored = HeapKeyedStateBackend::<u64>::restore(
///     &BackendContext::single(128),
///     &latest.snapshot.operator("counter").unwrap().keyed(),
///     &storage,
/// )?;
/// let count = restored.register(ValueStateDescriptor::<u64>::new("count"))?;
/// restored.set_current_key(&1)?;
/// assert_eq!(restored.value(&count).get()?, Some(41));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FsCheckpointStorage {
    inner: Arc<Inner>,
}

/// What [`FsCheckpointStorage::complete_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedCheckpoint {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// Checkpoints removed by retention.
    pub subsumed: Vec<u64>,
    /// Shared files deleted because no retained checkpoint references them.
    pub deleted_shared: Vec<String>,
}

impl FsCheckpointStorage {
    /// Opens the checkpoint storage of `job_id` at `uri` (`file:///…`, a path, `s3://…`,
    /// `hdfs://…`), cleaning up what a crash left behind: incomplete checkpoints and
    /// shared files no completed checkpoint references.
    pub fn open(uri: &str, job_id: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        let store = Location::parse(uri)?.open(&options.store_options)?;
        Self::with_store(Arc::new(store), job_id, options)
    }

    /// Like [`Self::open`] on an already opened store.
    pub fn with_store(store: Arc<dyn ObjectStore>, job_id: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        check_segment("job id", job_id)?;
        let prefix = format!("{job_id}/");
        // Owning the directory comes first: recovery deletes what a crash left behind,
        // which must never be a running job's files.
        let lease = match &options.lease {
            Some(lease) => {
                let location = format!("{}/{prefix}", store.describe().trim_end_matches('/'));
                Some(Lease::acquire(Arc::clone(&store), &prefix, &location, lease)?)
            }
            None => None,
        };
        let storage = FsCheckpointStorage {
            inner: Arc::new(Inner {
                store,
                prefix,
                mode: Mode::Job {
                    job_id: job_id.to_string(),
                },
                options,
                bytes_read: Arc::new(AtomicU64::new(0)),
                bytes_written: AtomicU64::new(0),
                state: Mutex::new(JobState::default()),
                lease,
            }),
        };
        storage.recover()?;
        Ok(storage)
    }

    /// The storage of `job_id` at `uri` as a **participant** of a job that another
    /// process owns (the process running the job's coordinator, which opened it with
    /// [`Self::open`]): the job's other processes write their subtasks' files and read
    /// checkpoints through it. It takes no lease, cleans nothing up, and cannot complete,
    /// abort or list checkpoints (the owner decides which checkpoint to restore and tells
    /// the others its id; [`Self::load_checkpoint`] reads it).
    pub fn participant(uri: &str, job_id: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        check_segment("job id", job_id)?;
        let store = Location::parse(uri)?.open(&options.store_options)?;
        Ok(FsCheckpointStorage {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                prefix: format!("{job_id}/"),
                mode: Mode::Participant {
                    job_id: job_id.to_string(),
                },
                options,
                bytes_read: Arc::new(AtomicU64::new(0)),
                bytes_written: AtomicU64::new(0),
                state: Mutex::new(JobState::default()),
                lease: None,
            }),
        })
    }

    /// A storage that writes (or reads) the savepoint `name` at `uri`: a directory holding
    /// `_metadata` and every file of the savepoint, with paths relative to it, so that it
    /// can be copied anywhere and restored from there. Retention never touches it.
    pub fn savepoint(uri: &str, name: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        let store = Location::parse(uri)?.open(&options.store_options)?;
        Self::savepoint_with_store(Arc::new(store), name, options)
    }

    /// Like [`Self::savepoint`] on an already opened store.
    pub fn savepoint_with_store(store: Arc<dyn ObjectStore>, name: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        check_segment("savepoint name", name)?;
        Ok(FsCheckpointStorage {
            inner: Arc::new(Inner {
                store,
                prefix: format!("{name}/"),
                mode: Mode::Savepoint,
                options,
                bytes_read: Arc::new(AtomicU64::new(0)),
                bytes_written: AtomicU64::new(0),
                state: Mutex::new(JobState::default()),
                lease: None,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn full(&self, rel: &str) -> String {
        format!("{}{rel}", self.inner.prefix)
    }

    /// Where this storage lives, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.inner.store.describe().trim_end_matches('/'),
            self.inner.prefix
        )
    }

    /// The store underneath (to read or repair files by hand, or in tests).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// The path in [`Self::store`] of a path relative to this storage (as in handles).
    pub fn store_path(&self, rel: &str) -> String {
        self.full(rel)
    }

    /// The options.
    pub fn options(&self) -> &FsOptions {
        &self.inner.options
    }

    /// Bytes read through [`CheckpointStorage::open_input`] and downloads so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes written to files (not counting inline state) so far.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written.load(Ordering::Relaxed)
    }

    /// Completed checkpoint ids, ascending.
    pub fn completed_checkpoints(&self) -> Vec<u64> {
        self.state().completed.clone()
    }

    /// How many retained checkpoints reference a shared file.
    pub fn shared_ref_count(&self, path: &str) -> usize {
        self.state().registry.ref_count(path)
    }

    /// This storage's lease epoch, the fencing token of its ownership of the job
    /// directory (`None` without a lease).
    pub fn lease_epoch(&self) -> Option<u64> {
        self.inner.lease.as_ref().map(Lease::epoch)
    }

    /// Fails with [`StateError::Fenced`] when a newer owner took the job directory over.
    pub fn check_lease(&self) -> Result<()> {
        match &self.inner.lease {
            Some(lease) => lease.check(),
            None => Ok(()),
        }
    }

    pub(crate) fn is_savepoint(&self) -> bool {
        matches!(self.inner.mode, Mode::Savepoint)
    }

    /// Scans the job directory: incomplete checkpoints are deleted, completed ones
    /// recorded, retention re-applied, the registry loaded (or rebuilt from the retained
    /// checkpoints' metadata when it is missing or disagrees), and orphaned shared files
    /// deleted.
    fn recover(&self) -> Result<()> {
        let store = &self.inner.store;
        let mut completed = Vec::new();
        for name in store.list(&self.inner.prefix)? {
            if name.ends_with(IN_PROGRESS) {
                // A write-then-rename (the registry) cut short by a crash.
                tracing::info!(file = %name, "removing a leftover in-progress file");
                store.delete(&self.full(&name))?;
                continue;
            }
            let Some(id) = parse_checkpoint_dir(&name) else {
                continue;
            };
            let dir = self.full(&checkpoint_dir(id));
            if store.size(&format!("{dir}{METADATA}"))?.is_some() {
                completed.push(id);
            } else {
                tracing::info!(checkpoint_id = id, dir = %dir, "removing incomplete checkpoint");
                store.delete_dir(&dir)?;
            }
        }
        completed.sort_unstable();
        let retained = self.inner.options.retained_checkpoints;
        let subsumed: Vec<u64> = completed
            .iter()
            .copied()
            .take(completed.len().saturating_sub(retained))
            .collect();
        for id in &subsumed {
            store.delete_dir(&self.full(&checkpoint_dir(*id)))?;
        }
        completed.retain(|id| !subsumed.contains(id));
        // The registry as the retained checkpoints' metadata says it must be.
        let mut derived = SharedRegistry::default();
        for id in &completed {
            // A damaged checkpoint is skipped (it cannot be restored), never fatal: the
            // others may be intact. A storage that cannot be read at all is an error.
            match self.load_checkpoint(*id) {
                Ok(meta) => derived.register(*id, meta.shared().into_iter().map(|s| s.path)),
                Err(e) if e.is_damage() => {
                    tracing::warn!(checkpoint_id = id, error = %e, "damaged checkpoint metadata; it will be skipped");
                }
                Err(e) => return Err(e),
            }
        }
        let registry_path = self.full(REGISTRY);
        let persisted = match store.size(&registry_path)? {
            Some(_) => SharedRegistry::decode(&store.read_all(&registry_path)?, &registry_path).ok(),
            None => None,
        };
        if persisted.as_ref() != Some(&derived) {
            if persisted.is_some() {
                tracing::warn!(path = %registry_path, "shared registry disagrees with the retained checkpoints; rebuilt");
            }
            self.write_atomically(&registry_path, derived.encode()?)?;
        }
        self.remove_unreferenced_shared(&derived)?;
        *self.state() = JobState {
            registry: derived,
            completed,
        };
        Ok(())
    }

    /// Deletes every file in `shared/` that `registry` does not reference.
    pub(crate) fn remove_unreferenced_shared(&self, registry: &SharedRegistry) -> Result<()> {
        let store = &self.inner.store;
        for name in store.list(&self.full(SHARED_DIR))? {
            let rel = format!("{SHARED_DIR}{name}");
            if !name.ends_with('/') && !registry.is_referenced(&rel) {
                tracing::info!(path = %rel, "removing unreferenced shared file");
                store.delete(&self.full(&rel))?;
            }
        }
        Ok(())
    }

    /// A copy of the shared-file registry of the retained checkpoints.
    pub(crate) fn registry(&self) -> SharedRegistry {
        self.state().registry.clone()
    }

    /// The job this storage holds checkpoints of (`None` for a savepoint storage).
    pub fn job_id(&self) -> Option<&str> {
        match &self.inner.mode {
            Mode::Job { job_id } | Mode::Participant { job_id } => Some(job_id),
            Mode::Savepoint => None,
        }
    }

    fn write_atomically(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        crate::store::write_atomically(self.inner.store.as_ref(), path, bytes)
    }

    /// Completes a checkpoint (or, on a savepoint storage, the savepoint): checks that
    /// every referenced file is there with its recorded size, writes `_metadata` last and
    /// atomically, records shared-file references, then applies retention and removes
    /// leftovers of failed checkpoints. An error at any point leaves the previous
    /// checkpoint intact and this one incomplete.
    pub fn complete_checkpoint(&self, meta: CheckpointMetadata) -> Result<CompletedCheckpoint> {
        let started = Instant::now();
        meta.snapshot.validate()?;
        let id = meta.checkpoint_id;
        match &self.inner.mode {
            Mode::Participant { .. } => {
                return Err(StateError::InvalidArgument(
                    "a participant storage cannot complete checkpoints; the job's owner does".into(),
                ));
            }
            Mode::Job { job_id } if *job_id != meta.job_id => {
                return Err(StateError::InvalidArgument(format!(
                    "metadata of job `{}` cannot complete a checkpoint of job `{job_id}`",
                    meta.job_id
                )));
            }
            Mode::Savepoint if meta.kind != SnapshotKind::Savepoint => {
                return Err(StateError::InvalidArgument(
                    "a savepoint storage completes savepoints only".into(),
                ));
            }
            Mode::Job { .. } if meta.kind != SnapshotKind::Checkpoint => {
                return Err(StateError::InvalidArgument(
                    "savepoints are written with FsCheckpointStorage::savepoint, not into the job's checkpoints".into(),
                ));
            }
            _ => {}
        }
        if !self.is_savepoint() && self.state().completed.last().is_some_and(|&last| last >= id) {
            return Err(StateError::InvalidArgument(format!(
                "checkpoint {id} is not newer than the latest completed checkpoint"
            )));
        }
        let mut files = 0usize;
        for stream in meta.streams() {
            if let StreamHandle::File { path, size, .. } = stream {
                self.check_file(path, *size)?;
                files += 1;
            }
        }
        for shared in &meta.shared() {
            self.check_file(&shared.path, shared.size)?;
            files += 1;
        }
        let metadata_path = if self.is_savepoint() {
            self.full(METADATA)
        } else {
            self.full(&format!("{}{METADATA}", checkpoint_dir(id)))
        };
        self.check_lease()?;
        self.write_atomically(&metadata_path, meta.encode()?)?;
        let mut result = CompletedCheckpoint {
            checkpoint_id: id,
            subsumed: Vec::new(),
            deleted_shared: Vec::new(),
        };
        if !self.is_savepoint() {
            result = self.after_completion(&meta)?;
        }
        tracing::info!(
            checkpoint_id = id,
            location = %self.describe(),
            files,
            bytes = meta.state_size(),
            duration_ms = started.elapsed().as_millis() as u64,
            subsumed = ?result.subsumed,
            "checkpoint completed"
        );
        Ok(result)
    }

    fn check_file(&self, path: &str, size: u64) -> Result<()> {
        check_relative_path(path)?;
        match self.inner.store.size(&self.full(path))? {
            Some(actual) if actual == size => Ok(()),
            Some(actual) => Err(StateError::Corrupt {
                source_name: path.to_string(),
                section: "file".into(),
                detail: format!("{actual} bytes where {size} were written (partial upload?)"),
            }),
            None => Err(StateError::Io {
                context: format!("checking `{path}`"),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "file referenced by the checkpoint is missing",
                ),
            }),
        }
    }

    fn after_completion(&self, meta: &CheckpointMetadata) -> Result<CompletedCheckpoint> {
        let id = meta.checkpoint_id;
        let store = &self.inner.store;
        let mut state = self.state();
        state.registry.register(id, meta.shared().into_iter().map(|s| s.path));
        state.completed.push(id);
        let excess = state
            .completed
            .len()
            .saturating_sub(self.inner.options.retained_checkpoints);
        let subsumed: Vec<u64> = state.completed.drain(..excess).collect();
        let mut unreferenced = Vec::new();
        for old in &subsumed {
            unreferenced.extend(state.registry.release(*old));
        }
        // Persist the registry before deleting anything it no longer lists.
        self.write_atomically(&self.full(REGISTRY), state.registry.encode()?)?;
        for old in &subsumed {
            store.delete_dir(&self.full(&checkpoint_dir(*old)))?;
        }
        for path in &unreferenced {
            store.delete(&self.full(path))?;
        }
        // Leftovers of checkpoints older than this one that never completed.
        for name in store.list(&self.inner.prefix)? {
            if let Some(old) = parse_checkpoint_dir(&name)
                && old < id
                && !state.completed.contains(&old)
            {
                store.delete_dir(&self.full(&checkpoint_dir(old)))?;
            }
        }
        Ok(CompletedCheckpoint {
            checkpoint_id: id,
            subsumed,
            deleted_shared: unreferenced,
        })
    }

    /// Discards an aborted checkpoint: its directory and the given shared files it
    /// uploaded, unless a completed checkpoint references them.
    pub fn abort_checkpoint(&self, checkpoint_id: u64, uploaded_shared: &[String]) -> Result<()> {
        if self.state().completed.contains(&checkpoint_id) {
            return Err(StateError::InvalidArgument(format!(
                "checkpoint {checkpoint_id} is completed and cannot be aborted"
            )));
        }
        if matches!(self.inner.mode, Mode::Participant { .. }) {
            return Err(StateError::InvalidArgument(
                "a participant storage cannot abort checkpoints; the job's owner does".into(),
            ));
        }
        self.check_lease()?;
        self.inner
            .store
            .delete_dir(&self.full(&checkpoint_dir(checkpoint_id)))?;
        let state = self.state();
        for path in uploaded_shared {
            check_relative_path(path)?;
            if !state.registry.is_referenced(path) {
                self.inner.store.delete(&self.full(path))?;
            }
        }
        Ok(())
    }

    /// The metadata of completed checkpoint `id` (or of the savepoint).
    pub fn load_checkpoint(&self, id: u64) -> Result<CheckpointMetadata> {
        let rel = if self.is_savepoint() {
            METADATA.to_string()
        } else {
            format!("{}{METADATA}", checkpoint_dir(id))
        };
        let path = self.full(&rel);
        let bytes = self.inner.store.read_all(&path)?;
        self.inner.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let meta = CheckpointMetadata::decode(&bytes, &path)?;
        for p in meta.files() {
            check_relative_path(&p)?;
        }
        tracing::info!(checkpoint_id = meta.checkpoint_id, path = %path, bytes = meta.state_size(), "checkpoint metadata loaded");
        Ok(meta)
    }

    /// The latest completed checkpoint that can be restored (or the savepoint), if there
    /// is one. Retained checkpoints are tried newest first: one whose metadata does not
    /// decode or whose files are missing, of the wrong size or (with
    /// [`FsOptions::verify_before_restore`]) of the wrong CRC32C is reported (a `tracing`
    /// warning naming the file and the reason) and skipped. Only when none can be restored
    /// is it an error, [`StateError::NoRestorableCheckpoint`], listing each one's reason.
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointMetadata>> {
        if self.is_savepoint() {
            let meta = self.load_checkpoint(0)?;
            self.verify(&meta)?;
            return Ok(Some(meta));
        }
        let completed = self.state().completed.clone();
        let mut reasons = Vec::new();
        for id in completed.iter().rev().copied() {
            match self
                .load_checkpoint(id)
                .and_then(|meta| self.verify(&meta).map(|()| meta))
            {
                Ok(meta) => {
                    if !reasons.is_empty() {
                        tracing::warn!(checkpoint_id = id, skipped = ?reasons, "restoring an older checkpoint");
                    }
                    return Ok(Some(meta));
                }
                Err(e) if e.is_damage() => {
                    tracing::warn!(checkpoint_id = id, error = %e, "checkpoint cannot be restored; trying an older one");
                    reasons.push(format!("checkpoint {id}: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        if reasons.is_empty() {
            Ok(None)
        } else {
            Err(StateError::NoRestorableCheckpoint {
                location: self.describe(),
                reasons,
            })
        }
    }

    /// Checks every file `meta` references: present with its size, and with
    /// [`FsOptions::verify_before_restore`] its CRC32C too.
    fn verify(&self, meta: &CheckpointMetadata) -> Result<()> {
        let shared = meta.shared();
        let files = meta
            .streams()
            .filter_map(|s| match s {
                StreamHandle::File { path, size, crc32c } => Some((path.as_str(), *size, *crc32c)),
                StreamHandle::Inline { .. } => None,
            })
            .chain(shared.iter().map(|f| (f.path.as_str(), f.size, f.crc32c)));
        for (path, size, crc32c) in files {
            self.check_file(path, size)?;
            if self.inner.options.verify_before_restore {
                self.read_verified(&StreamHandle::File {
                    path: path.to_string(),
                    size,
                    crc32c,
                })?;
            }
        }
        Ok(())
    }

    /// A path for a file of checkpoint `checkpoint_id` (exclusive), relative to this storage.
    pub fn exclusive_path(&self, checkpoint_id: u64, hint: &str) -> String {
        if self.is_savepoint() {
            format!("{}-{}", file_stem(hint), unique_suffix())
        } else {
            format!(
                "{}{}-{}",
                checkpoint_dir(checkpoint_id),
                file_stem(hint),
                unique_suffix()
            )
        }
    }

    /// A path in `shared/` for `name` (made unique), relative to this storage. On a
    /// savepoint storage, files stay in the savepoint directory.
    pub fn shared_path(&self, name: &str) -> String {
        if self.is_savepoint() {
            format!("{}-{}", file_stem(name), unique_suffix())
        } else {
            format!("{SHARED_DIR}{}-{}", file_stem(name), unique_suffix())
        }
    }

    /// A path in `taskowned/` for `name`, relative to this storage.
    pub fn task_owned_path(&self, name: &str) -> String {
        format!("{TASK_OWNED_DIR}{}", file_stem(name))
    }

    /// Uploads local files to the given relative paths, `transfer_concurrency` at a time,
    /// streaming each file. Returns each file's size and CRC32C, in input order.
    pub fn upload_files(&self, files: &[(PathBuf, String)]) -> Result<Vec<SharedFile>> {
        self.parallel(files, |(local, rel)| {
            check_relative_path(rel)?;
            let mut f = std::fs::File::open(local)
                .map_err(|e| StateError::from_io(format!("opening `{}`", local.display()), e))?;
            let mut w = self.inner.store.writer(&self.full(rel))?;
            let mut buf = vec![0u8; 1024 * 1024];
            let (mut size, mut crc) = (0u64, 0u32);
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| StateError::from_io(format!("reading `{}`", local.display()), e))?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
                w.write(&buf[..n])?;
            }
            w.close()?;
            self.inner.bytes_written.fetch_add(size, Ordering::Relaxed);
            Ok(SharedFile {
                path: rel.clone(),
                size,
                crc32c: crc,
            })
        })
    }

    /// Downloads files to local paths, `transfer_concurrency` at a time, streaming each
    /// and verifying its size and CRC32C; a mismatch is an error naming the file.
    pub fn download_files(&self, files: &[(SharedFile, PathBuf)]) -> Result<()> {
        self.parallel(files, |(file, local)| {
            let mut input = self.open_input(&StreamHandle::File {
                path: file.path.clone(),
                size: file.size,
                crc32c: file.crc32c,
            })?;
            let mut out = std::fs::File::create(local)
                .map_err(|e| StateError::from_io(format!("creating `{}`", local.display()), e))?;
            let mut buf = vec![0u8; 1024 * 1024];
            let (mut size, mut crc) = (0u64, 0u32);
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(|e| StateError::from_io(format!("reading `{}`", file.path), e))?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
                out.write_all(&buf[..n])
                    .map_err(|e| StateError::from_io(format!("writing `{}`", local.display()), e))?;
            }
            if size != file.size || crc != file.crc32c {
                return Err(StateError::Corrupt {
                    source_name: file.path.clone(),
                    section: "file".into(),
                    detail: format!(
                        "checksum or size mismatch ({size} bytes, crc {crc:08x}; expected {} bytes, crc {:08x})",
                        file.size, file.crc32c
                    ),
                });
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// Reads a whole file and verifies its CRC32C.
    pub fn read_verified(&self, handle: &StreamHandle) -> Result<Vec<u8>> {
        let mut input = self.open_input(handle)?;
        let mut bytes = Vec::with_capacity(handle.size() as usize);
        input
            .read_to_end(&mut bytes)
            .map_err(|e| StateError::from_io(format!("reading `{}`", handle.describe()), e))?;
        if let StreamHandle::File { path, crc32c, .. } = handle
            && crc32c::crc32c(&bytes) != *crc32c
        {
            return Err(StateError::Corrupt {
                source_name: path.clone(),
                section: "file".into(),
                detail: "checksum mismatch".into(),
            });
        }
        Ok(bytes)
    }

    fn parallel<T: Sync, R: Send>(&self, items: &[T], work: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<R>>>> = Mutex::new((0..items.len()).map(|_| None).collect());
        let workers = self.inner.options.transfer_concurrency.min(items.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let r = work(item);
                        let failed = r.is_err();
                        if let Ok(mut all) = results.lock() {
                            all[i] = Some(r);
                        }
                        if failed {
                            // Stop handing out work; others finish their current item.
                            next.store(items.len(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let all = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(items.len());
        for r in all {
            match r {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        if out.len() != items.len() {
            return Err(StateError::Storage {
                context: "transferring files".into(),
                detail: "a transfer failed".into(),
            });
        }
        Ok(out)
    }
}

/// A stream being written: buffered in memory up to the inline threshold, then streamed
/// to a file.
struct FsOutput {
    storage: FsCheckpointStorage,
    rel: String,
    buf: Vec<u8>,
    writer: Option<Box<dyn ObjectWriter>>,
    size: u64,
    crc: u32,
}

impl Write for FsOutput {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.size += data.len() as u64;
        if self.writer.is_none() && self.buf.len() + data.len() < self.storage.inner.options.inline_threshold.max(1) {
            self.buf.extend_from_slice(data);
            return Ok(data.len());
        }
        let result = (|| {
            if self.writer.is_none() {
                let mut w = self.storage.inner.store.writer(&self.storage.full(&self.rel))?;
                if !self.buf.is_empty() {
                    w.write(&self.buf)?;
                    self.buf = Vec::new();
                }
                self.writer = Some(w);
            }
            match self.writer.as_mut() {
                Some(w) => w.write(data),
                None => Ok(()),
            }
        })();
        result.map(|()| data.len()).map_err(StateError::into_io)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CheckpointOutput for FsOutput {
    fn finish(self: Box<Self>) -> Result<StreamHandle> {
        let this = *self;
        match this.writer {
            None => Ok(StreamHandle::Inline { bytes: this.buf }),
            Some(w) => {
                w.close()?;
                this.storage.inner.bytes_written.fetch_add(this.size, Ordering::Relaxed);
                Ok(StreamHandle::File {
                    path: this.rel,
                    size: this.size,
                    crc32c: this.crc,
                })
            }
        }
    }
}

struct CountingInput {
    inner: Box<dyn CheckpointInput>,
    counter: Arc<AtomicU64>,
}

impl Read for CountingInput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Seek for CountingInput {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl CheckpointStorage for FsCheckpointStorage {
    /// Uploads concurrently (`transfer_concurrency` at a time), streaming; shared files go
    /// to `shared/`, the others into the checkpoint's directory. Never inlined.
    fn upload_local_files(
        &self,
        checkpoint_id: u64,
        files: &[(PathBuf, String)],
        shared: bool,
    ) -> Result<Vec<StreamHandle>> {
        let targets: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(local, name)| {
                let rel = if shared {
                    self.shared_path(name)
                } else {
                    self.exclusive_path(checkpoint_id, name)
                };
                (local.clone(), rel)
            })
            .collect();
        Ok(self
            .upload_files(&targets)?
            .into_iter()
            .map(|f| StreamHandle::File {
                path: f.path,
                size: f.size,
                crc32c: f.crc32c,
            })
            .collect())
    }

    /// Downloads concurrently, verifying sizes and CRC32C.
    fn download_to_local(&self, files: &[(StreamHandle, PathBuf)]) -> Result<()> {
        let mut remote = Vec::new();
        for (handle, local) in files {
            match handle {
                StreamHandle::File { path, size, crc32c } => remote.push((
                    SharedFile {
                        path: path.clone(),
                        size: *size,
                        crc32c: *crc32c,
                    },
                    local.clone(),
                )),
                StreamHandle::Inline { bytes } => std::fs::write(local, bytes)
                    .map_err(|e| StateError::from_io(format!("writing `{}`", local.display()), e))?,
            }
        }
        self.download_files(&remote)
    }

    fn create_output(&self, checkpoint_id: u64, name: &str) -> Result<Box<dyn CheckpointOutput>> {
        Ok(Box::new(FsOutput {
            storage: self.clone(),
            rel: self.exclusive_path(checkpoint_id, name),
            buf: Vec::new(),
            writer: None,
            size: 0,
            crc: 0,
        }))
    }

    /// Opens a stream. The file's size is checked against the handle (a missing or
    /// truncated file is an error naming it); content is verified by the format's
    /// per-section checksums as it is read (use [`FsCheckpointStorage::read_verified`]
    /// for a whole-file CRC check).
    fn open_input(&self, handle: &StreamHandle) -> Result<Box<dyn CheckpointInput>> {
        if let Some(inline) = handle.open_inline() {
            return Ok(inline);
        }
        let StreamHandle::File { path, size, .. } = handle else {
            return Err(StateError::InvalidArgument("unsupported stream handle".into()));
        };
        self.check_file(path, *size)?;
        let inner = self.inner.store.reader(&self.full(path))?;
        tracing::debug!(path = %path, size, "opened checkpoint file");
        Ok(Box::new(CountingInput {
            inner,
            counter: Arc::clone(&self.inner.bytes_read),
        }))
    }
}
