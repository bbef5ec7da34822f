//! [`FsCheckpointStorage`]: checkpoint storage on any [`ObjectStore`], with Flink's
//! layout, atomic completion, inlining of small state, retention with a shared-file
//! registry, discovery of the latest checkpoint, and savepoints.
//!
//! Over 500 lines: opening, recovery, completion and retention share one invariant (what a completed checkpoint is) and are kept together; options, transfers and streams are split out.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use state_api::{Result, StateError, StreamHandle};

use crate::counting::CountingStore;
use crate::layout::{
    IN_PROGRESS, METADATA, REGISTRY, SHARED_DIR, check_relative_path, check_segment, checkpoint_dir,
    parse_checkpoint_dir,
};
use crate::lease::Lease;
use crate::metadata::{CheckpointMetadata, SharedRegistry, SnapshotKind};
use crate::options::FsOptions;
use crate::store::ObjectStore;
use crate::uri::Location;

#[derive(Debug)]
pub(crate) enum Mode {
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
pub(crate) struct JobState {
    pub(crate) registry: SharedRegistry,
    /// Completed checkpoint ids, ascending.
    pub(crate) completed: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The store, wrapped to count the bytes read and written (`counting`).
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The same wrapper, for its counters.
    pub(crate) counting: Arc<CountingStore>,
    /// Directory of this storage relative to the store root, ending in `/`.
    pub(crate) prefix: String,
    pub(crate) mode: Mode,
    pub(crate) options: FsOptions,
    pub(crate) state: Mutex<JobState>,
    /// The ownership of a job directory (`None` for savepoints or when turned off).
    pub(crate) lease: Option<Lease>,
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
    pub(crate) inner: Arc<Inner>,
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
        let store = Location::parse(uri)?.open(options.store_options())?;
        Self::with_store(Arc::new(store), job_id, options)
    }

    /// Like [`Self::open`] on an already opened store.
    pub fn with_store(store: Arc<dyn ObjectStore>, job_id: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        check_segment("job id", job_id)?;
        let prefix = format!("{job_id}/");
        // Owning the directory comes first: recovery deletes what a crash left behind,
        // which must never be a running job's files.
        let lease = match options.lease() {
            Some(lease) => {
                let location = format!("{}/{prefix}", store.describe().trim_end_matches('/'));
                Some(Lease::acquire(Arc::clone(&store), &prefix, &location, lease)?)
            }
            None => None,
        };
        let mode = Mode::Job {
            job_id: job_id.to_string(),
        };
        let storage = Self::from_parts(store, prefix, mode, options, lease);
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
        let store = Location::parse(uri)?.open(options.store_options())?;
        let mode = Mode::Participant {
            job_id: job_id.to_string(),
        };
        Ok(Self::from_parts(
            Arc::new(store),
            format!("{job_id}/"),
            mode,
            options,
            None,
        ))
    }

    /// A storage that writes (or reads) the savepoint `name` at `uri`: a directory holding
    /// `_metadata` and every file of the savepoint, with paths relative to it, so that it
    /// can be copied anywhere and restored from there. Retention never touches it.
    pub fn savepoint(uri: &str, name: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        let store = Location::parse(uri)?.open(options.store_options())?;
        Self::savepoint_with_store(Arc::new(store), name, options)
    }

    /// Like [`Self::savepoint`] on an already opened store.
    pub fn savepoint_with_store(store: Arc<dyn ObjectStore>, name: &str, options: FsOptions) -> Result<Self> {
        options.validate()?;
        check_segment("savepoint name", name)?;
        Ok(Self::from_parts(
            store,
            format!("{name}/"),
            Mode::Savepoint,
            options,
            None,
        ))
    }

    fn from_parts(
        store: Arc<dyn ObjectStore>,
        prefix: String,
        mode: Mode,
        options: FsOptions,
        lease: Option<Lease>,
    ) -> Self {
        let counting = Arc::new(CountingStore::new(store));
        FsCheckpointStorage {
            inner: Arc::new(Inner {
                store: Arc::clone(&counting) as Arc<dyn ObjectStore>,
                counting,
                prefix,
                mode,
                options,
                state: Mutex::new(JobState::default()),
                lease,
            }),
        }
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn full(&self, rel: &str) -> String {
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

    /// Bytes read from the store so far: state streams, downloads, metadata and
    /// recovery's checks (not the lease, which has its own handle on the store).
    pub fn bytes_read(&self) -> u64 {
        self.inner.counting.bytes_read()
    }

    /// Bytes written to the store so far: state files, uploads and metadata (inline
    /// state is part of the metadata; the lease is not counted).
    pub fn bytes_written(&self) -> u64 {
        self.inner.counting.bytes_written()
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
        let retained = self.inner.options.retained_checkpoints();
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

    pub(crate) fn write_atomically(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
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

    pub(crate) fn check_file(&self, path: &str, size: u64) -> Result<()> {
        check_relative_path(path)?;
        match self.inner.store.size(&self.full(path))? {
            Some(actual) if actual == size => Ok(()),
            Some(actual) => Err(StateError::Corrupt {
                source_name: path.to_string(),
                section: "file".into(),
                detail: format!("{actual} bytes where {size} were written (partial upload?)"),
                source: None,
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
            .saturating_sub(self.inner.options.retained_checkpoints());
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
            if self.inner.options.verify_before_restore() {
                self.read_verified(&StreamHandle::File {
                    path: path.to_string(),
                    size,
                    crc32c,
                })?;
            }
        }
        Ok(())
    }
}
