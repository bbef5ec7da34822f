//! [`FsCheckpointStorage`] as the [`CompletedCheckpointStore`] of a
//! [`state_api::CheckpointCoordinator`]: a completed job checkpoint becomes `_metadata`
//! (written last, atomically), an aborted one's files are deleted.

use state_api::{CompletedCheckpointStore, JobSnapshot, Result, StreamHandle, SubtaskState};

use crate::checkpoint_storage::FsCheckpointStorage;
use crate::layout::check_relative_path;
use crate::metadata::{CheckpointMetadata, SnapshotKind};

impl CompletedCheckpointStore for FsCheckpointStorage {
    /// Completes checkpoint `checkpoint_id` (or the savepoint) with
    /// [`FsCheckpointStorage::complete_checkpoint`].
    fn commit(&self, checkpoint_id: u64, snapshot: &JobSnapshot) -> Result<()> {
        let (job, kind) = match self.job_id() {
            Some(job) => (job.to_string(), SnapshotKind::Checkpoint),
            None => ("savepoint".to_string(), SnapshotKind::Savepoint),
        };
        let meta = CheckpointMetadata::with_snapshot(&job, checkpoint_id, kind, snapshot.clone());
        self.complete_checkpoint(meta).map(|_| ())
    }

    /// Deletes the subtasks' exclusive files, the checkpoint's directory, their shared
    /// files that no completed checkpoint references and, with `sweep_shared`, every
    /// shared file no completed checkpoint references.
    fn discard(&self, checkpoint_id: u64, states: &[SubtaskState], sweep_shared: bool) -> Result<()> {
        for stream in states.iter().flat_map(SubtaskState::exclusive_streams) {
            if let StreamHandle::File { path, .. } = stream {
                check_relative_path(path)?;
                self.store().delete(&self.store_path(path))?;
            }
        }
        let shared: Vec<String> = states
            .iter()
            .flat_map(SubtaskState::shared_files)
            .map(|f| f.path)
            .collect();
        self.abort_checkpoint(checkpoint_id, &shared)?;
        if sweep_shared && !self.is_savepoint() {
            self.remove_unreferenced_shared(&self.registry())?;
        }
        tracing::info!(checkpoint_id, subtasks = states.len(), "aborted checkpoint discarded");
        Ok(())
    }
}
