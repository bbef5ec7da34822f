//! One keyed operator's subtask on one worker: its backend and timers, created or
//! restored from its share of a checkpoint, and its part of every checkpoint (the
//! synchronous part on the worker thread, the asynchronous part on a thread of its own
//! that acknowledges or declines to the coordinator).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use state_api::{
    Acknowledgement, CheckpointMessage, CheckpointStorage, Decline, JobAssignment, JobSnapshot, KeyedStateBackend,
    OperatorId, OperatorSpec, RestoreOptions, Result, StateError, SubtaskState, SystemClock,
};
use state_fs::FsCheckpointStorage;

use super::control::Up;
use crate::nexmark::queries::Timers;
use crate::nexmark::runtime::{KeyedPart, Runtime};

/// What a subtask's checkpoints took, shared with their asynchronous parts.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// The longest synchronous part (µs).
    pub sync_max_us: AtomicU64,
    /// The longest asynchronous part (µs).
    pub async_max_us: AtomicU64,
    /// Bytes of state written, over all checkpoints.
    pub bytes: AtomicU64,
    /// Checkpoints acknowledged.
    pub acknowledged: AtomicU64,
}

/// A subtask's state: backend and timers.
pub struct Subtask<R: Runtime> {
    pub backend: R::Backend,
    pub timers: Timers<R::Queue>,
    operator: OperatorId,
    index: u32,
    storage: FsCheckpointStorage,
    target: Arc<dyn CheckpointStorage>,
    up: Sender<Up>,
    /// A test hook: this checkpoint's asynchronous part fails.
    fail_at: Option<u64>,
    /// What its checkpoints took.
    pub stats: Arc<CheckpointStats>,
}

impl<R: Runtime> Subtask<R> {
    /// Subtask `index` of `spec`: restored from `plan` (the assignment of the checkpoint
    /// being restored) or empty.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        rt: &R,
        spec: &OperatorSpec,
        index: u32,
        plan: Option<&JobAssignment>,
        storage: FsCheckpointStorage,
        target: Arc<dyn CheckpointStorage>,
        up: Sender<Up>,
        fail_at: Option<u64>,
    ) -> Result<Self> {
        let fresh;
        let plan = match plan {
            Some(p) => p,
            None => {
                fresh = JobAssignment::new(
                    &JobSnapshot::default(),
                    std::slice::from_ref(spec),
                    RestoreOptions::default(),
                )?;
                &fresh
            }
        };
        let assignment = plan
            .operator(spec.id.as_str())
            .get(index as usize)
            .cloned()
            .ok_or_else(|| StateError::InvalidArgument(format!("no subtask {index} of `{}`", spec.id)))?;
        let mut backend = if assignment.restored {
            rt.restore(&assignment, &storage)?
        } else {
            rt.create(&assignment.context())?
        };
        let (event, processing) = (rt.queue(&mut backend, "event")?, rt.queue(&mut backend, "processing")?);
        let mut timers = Timers::new(event, processing, Arc::new(SystemClock), spec.max_parallelism)?;
        if !assignment.timers.is_empty() {
            timers.restore(&mut backend, &assignment.timers, &storage)?;
        }
        Ok(Subtask {
            backend,
            timers,
            operator: spec.id.clone(),
            index,
            storage,
            target,
            up,
            fail_at,
            stats: Arc::default(),
        })
    }

    /// Takes this subtask's part of checkpoint `id`: the synchronous part now, the
    /// asynchronous part on its own thread, which acknowledges (or declines) when done.
    pub fn checkpoint(&mut self, rt: &R, id: u64) -> Result<()> {
        let t = Instant::now();
        let keyed = rt.snapshot(&mut self.backend, id)?;
        let timers = self.timers.snapshot(&mut self.backend, id)?;
        self.stats
            .sync_max_us
            .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        let (target, storage, up) = (Arc::clone(&self.target), self.storage.clone(), self.up.clone());
        let (operator, subtask, fail) = (self.operator.clone(), self.index, self.fail_at == Some(id));
        let stats = Arc::clone(&self.stats);
        std::thread::spawn(move || {
            let t = Instant::now();
            let written = (|| {
                if fail {
                    return Err(StateError::storage_message(
                        format!("writing checkpoint {id}"),
                        "injected failure (--fail-checkpoint)",
                    ));
                }
                let mut state = SubtaskState::default();
                match keyed {
                    KeyedPart::Full(s) => state.keyed.push(s.run(&*target)?),
                    KeyedPart::Incremental(s) => state.incremental.push(s.run(&storage)?),
                }
                state.timers.push(timers.run(&*target)?);
                Ok::<_, StateError>(state)
            })();
            let msg = match written {
                Ok(state) => {
                    stats
                        .async_max_us
                        .fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    stats.bytes.fetch_add(state.state_size(), Ordering::Relaxed);
                    stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    CheckpointMessage::Acknowledge(Acknowledgement {
                        checkpoint_id: id,
                        operator,
                        subtask,
                        state,
                    })
                }
                Err(e) => CheckpointMessage::Decline(Decline {
                    checkpoint_id: id,
                    operator,
                    subtask,
                    reason: e.to_string(),
                }),
            };
            let _ = up.send(Up::Checkpoint(msg));
        });
        Ok(())
    }

    /// Tells the backend what the coordinator decided.
    pub fn notify(&mut self, completed: bool, id: u64) {
        if completed {
            self.backend.notify_checkpoint_complete(id);
        } else {
            self.backend.notify_checkpoint_aborted(id);
        }
    }
}
