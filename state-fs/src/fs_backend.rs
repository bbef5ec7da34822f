//! Flink's `FsStateBackend`: heap keyed state, checkpoints to a file system or object
//! store through state-fs.

use state_api::{BackendContext, DefaultOperatorStateBackend, Result, StateKey, SubtaskAssignment};
use state_heap::HeapKeyedStateBackend;

use crate::{FsCheckpointStorage, FsOptions};

/// The heap backend with file system checkpoints (feature `heap`).
///
/// ```
/// use state_api::{
///     BackendContext, JobAssignment, KeyedStateBackend, OperatorId, OperatorSpec, RestoreOptions, SubtaskState,
///     ValueStateDescriptor,
/// };
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
/// let state = SubtaskState { keyed: vec![keyed.snapshot(1)?.run(fs.storage())?], ..Default::default() };
/// meta.add_subtask(&OperatorId::new("counter")?, 1, 128, 0, state)?;
/// fs.storage().complete_checkpoint(meta)?;
///
/// // Restore at parallelism 2: each subtask reads only its key groups.
/// let latest = fs.storage().latest_checkpoint()?.unwrap();
/// let job = [OperatorSpec::new("counter", 2, 128)?];
/// let plan = JobAssignment::new(&latest.snapshot, &job, RestoreOptions::default())?;
/// let owner = state_api::keygroup::key_group_for_key(&1u64, 128)? * 2 / 128;
/// let mut restored = fs.restore_keyed::<u64>(plan.subtask("counter", owner).unwrap())?;
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

    /// The keyed backend of a subtask, restored from the handles its assignment holds,
    /// reading its key groups only.
    pub fn restore_keyed<K: StateKey>(&self, assignment: &SubtaskAssignment) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::restore(&assignment.context(), &assignment.keyed, &self.storage)
    }

    /// The operator state of a subtask, restored from the slices its assignment holds.
    pub fn restore_operator(&self, assignment: &SubtaskAssignment) -> Result<DefaultOperatorStateBackend> {
        assignment.restore_operator_state(&self.storage)
    }
}
