//! Flink's `FsStateBackend`: heap keyed state, checkpoints to a file system or object
//! store through state-fs.

use state_api::{BackendContext, DefaultOperatorStateBackend, Result, StateKey};
use state_heap::HeapKeyedStateBackend;

use crate::{CheckpointMetadata, FsCheckpointStorage, FsOptions};

/// The heap backend with file system checkpoints (feature `heap`).
///
/// ```
/// use state_api::{BackendContext, KeyedStateBackend, ValueStateDescriptor};
/// use state_fs::{CheckpointMetadata, FsOptions, FsStateBackend, SnapshotKind};
///
/// let dir = std::env::temp_dir().join(format!("fs-backend-doc-{}", std::process::id()));
/// let fs = FsStateBackend::open(dir.to_str().unwrap(), "job", FsOptions::default())?;
/// let ctx = BackendContext::single(128);
/// let mut keyed = fs.create_keyed::<u64>(&ctx)?;
/// let v = keyed.register(ValueStateDescriptor::<u64>::new("v"))?;
/// keyed.set_current_key(&1)?;
/// keyed.value(&v).update(5)?;
/// let mut meta = CheckpointMetadata::new("job", 1, SnapshotKind::Checkpoint);
/// meta.keyed.push(keyed.snapshot(1)?.run(fs.storage())?);
/// fs.storage().complete_checkpoint(meta)?;
///
/// let latest = fs.storage().latest_checkpoint()?.unwrap();
/// let mut restored = fs.restore_keyed::<u64>(&ctx, &latest)?;
/// let v = restored.register(ValueStateDescriptor::<u64>::new("v"))?;
/// restored.set_current_key(&1)?;
/// assert_eq!(restored.value(&v).get()?, Some(5));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), state_api::StateError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FsStateBackend {
    storage: FsCheckpointStorage,
}

impl FsStateBackend {
    /// Opens the checkpoint storage of `job_id` at `uri` (see [`FsCheckpointStorage::open`]).
    pub fn open(uri: &str, job_id: &str, options: FsOptions) -> Result<Self> {
        Ok(FsStateBackend {
            storage: FsCheckpointStorage::open(uri, job_id, options)?,
        })
    }

    /// Wraps an opened storage.
    pub fn with_storage(storage: FsCheckpointStorage) -> Self {
        FsStateBackend { storage }
    }

    /// The checkpoint storage.
    pub fn storage(&self) -> &FsCheckpointStorage {
        &self.storage
    }

    /// An empty keyed backend.
    pub fn create_keyed<K: StateKey>(&self, ctx: &BackendContext) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::new(ctx)
    }

    /// A keyed backend restored from a checkpoint's (or savepoint's) handles, reading the
    /// key groups of `ctx` only.
    pub fn restore_keyed<K: StateKey>(
        &self,
        ctx: &BackendContext,
        meta: &CheckpointMetadata,
    ) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::restore(ctx, &meta.keyed, &self.storage)
    }

    /// The operator state of subtask `index` of `parallelism` restored from a checkpoint.
    pub fn restore_operator(
        &self,
        meta: &CheckpointMetadata,
        index: u32,
        parallelism: u32,
    ) -> Result<DefaultOperatorStateBackend> {
        DefaultOperatorStateBackend::restore(&meta.operator, index, parallelism, &self.storage)
    }
}
