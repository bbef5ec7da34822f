//! The checkpoint coordinator (Flink's `CheckpointCoordinator`), transport- and
//! storage-agnostic: it knows the job's operators and parallelisms, collects one
//! acknowledgement per subtask, and completes a checkpoint only when every subtask of
//! every operator has acknowledged it, by handing the [`JobSnapshot`] to a
//! [`CompletedCheckpointStore`] (state-fs writes `_metadata` last). A decline, a timeout,
//! a failed commit or a newer completed checkpoint aborts a pending one; what its
//! subtasks wrote is discarded, and so is anything acknowledged late.
//!
//! Acknowledgements are accepted from any thread; an engine that runs subtasks in other
//! processes sends them as [`CheckpointMessage`]s ([`CheckpointMessage::encode`]) over its
//! own channels. Listeners ([`CheckpointCoordinator::subscribe`]) learn of completions and
//! aborts, so that backends run `notify_checkpoint_complete` / `notify_checkpoint_aborted`.
//!
//! ```
//! use std::sync::Arc;
//! use state_api::{
//!     AckOutcome, Acknowledgement, CheckpointCoordinator, CheckpointEvent, CoordinatorConfig,
//!     InMemoryCheckpointStore, OperatorId, OperatorSpec, SubtaskState,
//! };
//! let store = Arc::new(InMemoryCheckpointStore::new(1));
//! let job = [OperatorSpec::new("source", 1, 128)?, OperatorSpec::new("window", 2, 128)?];
//! let coordinator = CheckpointCoordinator::new(&job, store.clone(), CoordinatorConfig::default())?;
//! let events = coordinator.subscribe();
//! coordinator.trigger(1)?;
//! let ack = |op: &str, subtask| Acknowledgement {
//!     checkpoint_id: 1,
//!     operator: OperatorId::new(op).unwrap(),
//!     subtask,
//!     state: SubtaskState::default(),
//! };
//! assert_eq!(coordinator.acknowledge(ack("window", 1))?, AckOutcome::Pending { remaining: 2 });
//! assert_eq!(coordinator.acknowledge(ack("source", 0))?, AckOutcome::Pending { remaining: 1 });
//! assert_eq!(coordinator.acknowledge(ack("window", 0))?, AckOutcome::Completed);
//! assert_eq!(events.try_recv().unwrap(), CheckpointEvent::Completed { checkpoint_id: 1 });
//! assert_eq!(store.latest().unwrap().0, 1);
//! # Ok::<(), state_api::StateError>(())
//! ```
//!
//! Over 500 lines: one state machine (pending, acknowledged, completed, aborted) whose transitions are kept in one place.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::assignment::OperatorSpec;
use crate::checkpoint::{JobSnapshot, OperatorId, OperatorSnapshot, SubtaskSnapshot, SubtaskState};
use crate::error::{Result, StateError};
use crate::framing::{decode_body, frame, unframe};

/// Where a coordinator puts completed checkpoints and what it asks to delete.
pub trait CompletedCheckpointStore: Send + Sync + std::fmt::Debug {
    /// Persists checkpoint `checkpoint_id` so that it appears complete or not at all
    /// (metadata written last); after `Ok` it is the latest completed checkpoint.
    fn commit(&self, checkpoint_id: u64, snapshot: &JobSnapshot) -> Result<()>;

    /// Deletes what aborted checkpoint `checkpoint_id` wrote: the given subtask states'
    /// files (never a shared file a completed checkpoint references) and anything else
    /// the store keeps for that checkpoint alone. When `sweep_shared` is true no other
    /// checkpoint is pending, so shared files no completed checkpoint references (partial
    /// uploads of a failed subtask) may be deleted too.
    fn discard(&self, checkpoint_id: u64, states: &[SubtaskState], sweep_shared: bool) -> Result<()>;
}

/// Settings of a [`CheckpointCoordinator`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// Checkpoints that may be pending at once (default 1, as Flink's).
    pub max_concurrent_checkpoints: usize,
    /// A checkpoint not complete this long after its trigger is aborted (default 10 minutes).
    pub timeout: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            max_concurrent_checkpoints: 1,
            timeout: Duration::from_secs(600),
        }
    }
}

impl CoordinatorConfig {
    /// Sets how many checkpoints may be pending at once (at least 1).
    pub fn with_max_concurrent_checkpoints(mut self, n: usize) -> Self {
        self.max_concurrent_checkpoints = n;
        self
    }

    /// Sets the checkpoint timeout (above zero).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_concurrent_checkpoints == 0 {
            return Err(StateError::InvalidArgument(
                "at least one checkpoint must be allowed to be pending".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(StateError::InvalidArgument(
                "the checkpoint timeout must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// A subtask's acknowledgement: what it wrote for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The operator.
    pub operator: OperatorId,
    /// The subtask index.
    pub subtask: u32,
    /// What it wrote.
    pub state: SubtaskState,
}

/// A subtask's refusal of a checkpoint (its snapshot failed): the checkpoint aborts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// The operator.
    pub operator: OperatorId,
    /// The subtask index.
    pub subtask: u32,
    /// Why (the error's message).
    pub reason: String,
}

/// What a subtask sends the coordinator, as bytes for an engine's own network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointMessage {
    /// An acknowledgement.
    Acknowledge(Acknowledgement),
    /// A decline.
    Decline(Decline),
}

const MESSAGE_MAGIC: [u8; 8] = *b"\x89RSCKMSG";
const MESSAGE_VERSION: u32 = 2;

impl CheckpointMessage {
    /// Encodes the message (framed and checksummed).
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&MESSAGE_MAGIC, MESSAGE_VERSION, self, "checkpoint message")
    }

    /// Decodes a message; damaged bytes are a typed error naming `source`.
    pub fn decode(bytes: &[u8], source: &str) -> Result<Self> {
        let (_, body) = unframe(&MESSAGE_MAGIC, MESSAGE_VERSION, bytes, source, "checkpoint message")?;
        decode_body(body, source, "checkpoint message")
    }
}

/// Why a checkpoint was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortReason {
    /// A subtask declined it.
    Declined {
        /// The operator.
        operator: OperatorId,
        /// The subtask.
        subtask: u32,
        /// The subtask's reason.
        reason: String,
    },
    /// It was not complete within the timeout.
    Expired,
    /// A newer checkpoint completed first.
    Subsumed {
        /// The newer checkpoint.
        by: u64,
    },
    /// Every subtask acknowledged, but the store could not commit it.
    CommitFailed {
        /// The store's error.
        detail: String,
    },
    /// The engine aborted it ([`CheckpointCoordinator::abort`]).
    Cancelled {
        /// The engine's reason.
        reason: String,
    },
}

/// What listeners learn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointEvent {
    /// The checkpoint is complete (its metadata is written): backends may drop what
    /// only older checkpoints needed.
    Completed {
        /// The checkpoint.
        checkpoint_id: u64,
    },
    /// The checkpoint was aborted; what it wrote is discarded.
    Aborted {
        /// The checkpoint.
        checkpoint_id: u64,
        /// Why.
        reason: AbortReason,
    },
}

/// What an acknowledgement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Recorded; this many subtasks have yet to acknowledge.
    Pending {
        /// Subtasks still to acknowledge.
        remaining: usize,
    },
    /// It was the last one: the checkpoint is complete.
    Completed,
    /// The checkpoint had been aborted: the acknowledged state was discarded.
    Discarded,
}

type Listener = Box<dyn Fn(&CheckpointEvent) + Send + Sync>;

/// How many aborted checkpoint ids are remembered to recognize late acknowledgements.
const ABORTED_REMEMBERED: usize = 1024;

struct Pending {
    engine: BTreeMap<String, Vec<u8>>,
    acks: BTreeMap<(OperatorId, u32), SubtaskState>,
    deadline: Instant,
}

#[derive(Default)]
struct Progress {
    pending: BTreeMap<u64, Pending>,
    last_triggered: Option<u64>,
    latest_completed: Option<u64>,
    aborted: VecDeque<u64>,
    aborted_set: BTreeSet<u64>,
}

/// Coordinates the checkpoints of one job. Share it (`Arc`) between the threads that
/// acknowledge.
pub struct CheckpointCoordinator {
    operators: BTreeMap<OperatorId, (u32, u32)>,
    expected: usize,
    store: Arc<dyn CompletedCheckpointStore>,
    config: CoordinatorConfig,
    progress: Mutex<Progress>,
    listeners: Mutex<Vec<Listener>>,
}

impl std::fmt::Debug for CheckpointCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCoordinator")
            .field("operators", &self.operators)
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl CheckpointCoordinator {
    /// A coordinator for a job of `operators` (ids, parallelism, max parallelism) that
    /// commits to `store`.
    pub fn new(
        operators: &[OperatorSpec],
        store: Arc<dyn CompletedCheckpointStore>,
        config: CoordinatorConfig,
    ) -> Result<Self> {
        config.validate()?;
        if operators.is_empty() {
            return Err(StateError::InvalidArgument("a job needs at least one operator".into()));
        }
        let mut map = BTreeMap::new();
        for op in operators {
            crate::checkpoint::check_shape(&op.id, op.parallelism, op.max_parallelism)?;
            if map
                .insert(op.id.clone(), (op.parallelism, op.max_parallelism))
                .is_some()
            {
                return Err(StateError::InvalidArgument(format!(
                    "operator `{}` appears twice",
                    op.id
                )));
            }
        }
        Ok(CheckpointCoordinator {
            expected: map.values().map(|(p, _)| *p as usize).sum(),
            operators: map,
            store,
            config,
            progress: Mutex::new(Progress::default()),
            listeners: Mutex::new(Vec::new()),
        })
    }

    /// The coordinator of a job restored from checkpoint `checkpoint_id`: later triggers
    /// must use higher ids.
    pub fn resume_after(self, checkpoint_id: u64) -> Self {
        {
            let mut p = self.lock();
            p.last_triggered = Some(checkpoint_id);
            p.latest_completed = Some(checkpoint_id);
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `listener` on every completion and abort, after the coordinator's lock is
    /// released (it may call the coordinator).
    pub fn on_event(&self, listener: impl Fn(&CheckpointEvent) + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(listener));
    }

    /// A channel receiving every completion and abort from now on.
    pub fn subscribe(&self) -> std::sync::mpsc::Receiver<CheckpointEvent> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.on_event(move |e| {
            let _ = tx.send(e.clone());
        });
        rx
    }

    fn emit(&self, events: Vec<CheckpointEvent>) {
        if events.is_empty() {
            return;
        }
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        for e in &events {
            for l in listeners.iter() {
                l(e);
            }
        }
    }

    /// Starts checkpoint `checkpoint_id` (above every earlier one).
    pub fn trigger(&self, checkpoint_id: u64) -> Result<()> {
        self.trigger_with(checkpoint_id, BTreeMap::new())
    }

    /// Starts checkpoint `checkpoint_id` with job-level engine data (source positions).
    /// Refused ([`StateError::CheckpointRejected`]) when the id is not above the last
    /// triggered or completed one, or when the maximum of pending checkpoints is reached.
    pub fn trigger_with(&self, checkpoint_id: u64, engine: BTreeMap<String, Vec<u8>>) -> Result<()> {
        let mut events = Vec::new();
        let result = (|| {
            let mut p = self.lock();
            self.expire(&mut p, &mut events);
            if let Some(last) = p.last_triggered.filter(|&l| l >= checkpoint_id) {
                return Err(StateError::CheckpointRejected {
                    checkpoint_id,
                    reason: format!("not above the last triggered checkpoint {last}"),
                });
            }
            if p.pending.len() >= self.config.max_concurrent_checkpoints {
                return Err(StateError::CheckpointRejected {
                    checkpoint_id,
                    reason: format!(
                        "{} checkpoint(s) pending, the maximum is {}",
                        p.pending.len(),
                        self.config.max_concurrent_checkpoints
                    ),
                });
            }
            p.pending.insert(
                checkpoint_id,
                Pending {
                    engine,
                    acks: BTreeMap::new(),
                    deadline: Instant::now() + self.config.timeout,
                },
            );
            p.last_triggered = Some(checkpoint_id);
            Ok(())
        })();
        self.emit(events);
        result
    }

    /// Records an acknowledgement. The last one of a checkpoint commits it (the store
    /// writes the metadata) and notifies listeners. An acknowledgement of an aborted
    /// checkpoint is discarded (its files deleted); of an unknown operator or subtask, or
    /// with handles outside the subtask's key groups, it is an error; a second one from
    /// the same subtask is [`StateError::DuplicateAcknowledgement`] and the first stands.
    pub fn acknowledge(&self, ack: Acknowledgement) -> Result<AckOutcome> {
        let mut events = Vec::new();
        let result = self.acknowledge_locked(ack, &mut events);
        self.emit(events);
        result
    }

    fn acknowledge_locked(&self, ack: Acknowledgement, events: &mut Vec<CheckpointEvent>) -> Result<AckOutcome> {
        let (parallelism, max_parallelism) = self.shape(&ack.operator, ack.subtask)?;
        ack.state
            .check_fits(&ack.operator, parallelism, max_parallelism, ack.subtask)?;
        let mut p = self.lock();
        self.expire(&mut p, events);
        let id = ack.checkpoint_id;
        let Some(pending) = p.pending.get_mut(&id) else {
            if p.aborted_set.contains(&id) {
                let sweep = p.pending.is_empty();
                self.store.discard(id, std::slice::from_ref(&ack.state), sweep)?;
                return Ok(AckOutcome::Discarded);
            }
            if p.latest_completed.is_some_and(|c| c >= id) {
                return Err(StateError::DuplicateAcknowledgement {
                    checkpoint_id: id,
                    operator: ack.operator.to_string(),
                    subtask: ack.subtask,
                });
            }
            return Err(StateError::CheckpointRejected {
                checkpoint_id: id,
                reason: "it was never triggered (or is too old to be known)".into(),
            });
        };
        let key = (ack.operator.clone(), ack.subtask);
        if pending.acks.contains_key(&key) {
            return Err(StateError::DuplicateAcknowledgement {
                checkpoint_id: id,
                operator: ack.operator.to_string(),
                subtask: ack.subtask,
            });
        }
        pending.acks.insert(key, ack.state);
        let remaining = self.expected - pending.acks.len();
        if remaining > 0 {
            return Ok(AckOutcome::Pending { remaining });
        }
        self.complete(&mut p, id, events).map(|()| AckOutcome::Completed)
    }

    /// Records a decline: checkpoint `decline.checkpoint_id` aborts, what its subtasks
    /// acknowledged is discarded. A decline of a checkpoint that is no longer pending
    /// does nothing.
    pub fn decline(&self, decline: Decline) -> Result<()> {
        self.shape(&decline.operator, decline.subtask)?;
        let mut events = Vec::new();
        let result = {
            let mut p = self.lock();
            self.abort_locked(
                &mut p,
                decline.checkpoint_id,
                AbortReason::Declined {
                    operator: decline.operator,
                    subtask: decline.subtask,
                    reason: decline.reason,
                },
                &mut events,
            )
        };
        self.emit(events);
        result
    }

    /// Takes a message from a subtask: an acknowledgement or a decline.
    pub fn receive(&self, message: CheckpointMessage) -> Result<Option<AckOutcome>> {
        match message {
            CheckpointMessage::Acknowledge(ack) => self.acknowledge(ack).map(Some),
            CheckpointMessage::Decline(d) => self.decline(d).map(|()| None),
        }
    }

    /// Aborts pending checkpoint `checkpoint_id` (an engine shutting down, say).
    pub fn abort(&self, checkpoint_id: u64, reason: &str) -> Result<()> {
        let mut events = Vec::new();
        let result = {
            let mut p = self.lock();
            self.abort_locked(
                &mut p,
                checkpoint_id,
                AbortReason::Cancelled { reason: reason.into() },
                &mut events,
            )
        };
        self.emit(events);
        result
    }

    /// Aborts every pending checkpoint past its timeout; returns their ids. Engines call
    /// it now and then (each trigger and acknowledgement does too).
    pub fn check_timeouts(&self) -> Vec<u64> {
        let mut events = Vec::new();
        {
            let mut p = self.lock();
            self.expire(&mut p, &mut events);
        }
        let ids = events
            .iter()
            .filter_map(|e| match e {
                CheckpointEvent::Aborted { checkpoint_id, .. } => Some(*checkpoint_id),
                CheckpointEvent::Completed { .. } => None,
            })
            .collect();
        self.emit(events);
        ids
    }

    /// Pending checkpoint ids, ascending.
    pub fn pending(&self) -> Vec<u64> {
        self.lock().pending.keys().copied().collect()
    }

    /// The latest completed checkpoint.
    pub fn latest_completed(&self) -> Option<u64> {
        self.lock().latest_completed
    }

    /// The last triggered checkpoint.
    pub fn last_triggered(&self) -> Option<u64> {
        self.lock().last_triggered
    }

    fn shape(&self, operator: &OperatorId, subtask: u32) -> Result<(u32, u32)> {
        let &(parallelism, max_parallelism) =
            self.operators
                .get(operator)
                .ok_or_else(|| StateError::InvalidCheckpoint {
                    operator: operator.to_string(),
                    subtask: Some(subtask),
                    detail: "the job has no such operator".into(),
                    source: None,
                })?;
        if subtask >= parallelism {
            return Err(StateError::InvalidCheckpoint {
                operator: operator.to_string(),
                subtask: Some(subtask),
                detail: format!("subtask index {subtask} is not below the parallelism {parallelism}"),
                source: None,
            });
        }
        Ok((parallelism, max_parallelism))
    }

    fn expire(&self, p: &mut Progress, events: &mut Vec<CheckpointEvent>) {
        let now = Instant::now();
        let expired: Vec<u64> = p
            .pending
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            // A failed discard leaves files behind, which the storage's recovery removes.
            let _ = self.abort_locked(p, id, AbortReason::Expired, events);
        }
    }

    fn abort_locked(
        &self,
        p: &mut Progress,
        id: u64,
        reason: AbortReason,
        events: &mut Vec<CheckpointEvent>,
    ) -> Result<()> {
        let Some(pending) = p.pending.remove(&id) else {
            return Ok(());
        };
        self.discard_aborted(p, id, reason, pending.acks.into_values().collect(), events)
    }

    /// Records checkpoint `id` (no longer pending) as aborted and discards `states`.
    fn discard_aborted(
        &self,
        p: &mut Progress,
        id: u64,
        reason: AbortReason,
        states: Vec<SubtaskState>,
        events: &mut Vec<CheckpointEvent>,
    ) -> Result<()> {
        p.aborted.push_back(id);
        p.aborted_set.insert(id);
        while p.aborted.len() > ABORTED_REMEMBERED {
            if let Some(old) = p.aborted.pop_front() {
                p.aborted_set.remove(&old);
            }
        }
        events.push(CheckpointEvent::Aborted {
            checkpoint_id: id,
            reason,
        });
        self.store.discard(id, &states, p.pending.is_empty())
    }

    fn complete(&self, p: &mut Progress, id: u64, events: &mut Vec<CheckpointEvent>) -> Result<()> {
        let Some(pending) = p.pending.remove(&id) else {
            return Ok(());
        };
        let mut acks = pending.acks;
        let operators = self
            .operators
            .iter()
            .map(|(op, &(parallelism, max_parallelism))| OperatorSnapshot {
                id: op.clone(),
                parallelism,
                max_parallelism,
                subtasks: (0..parallelism)
                    .filter_map(|i| {
                        acks.remove(&(op.clone(), i))
                            .map(|state| SubtaskSnapshot { index: i, state })
                    })
                    .collect(),
            })
            .collect();
        let snapshot = JobSnapshot {
            operators,
            engine: pending.engine,
        };
        if let Err(e) = self.store.commit(id, &snapshot) {
            let states = snapshot
                .operators
                .into_iter()
                .flat_map(|o| o.subtasks.into_iter().map(|s| s.state))
                .collect();
            // The commit's error is what the caller needs; a failed discard leaves files
            // that the storage's recovery removes.
            let _ = self.discard_aborted(
                p,
                id,
                AbortReason::CommitFailed { detail: e.to_string() },
                states,
                events,
            );
            return Err(e);
        }
        p.latest_completed = Some(id);
        let subsumed: Vec<u64> = p.pending.range(..id).map(|(k, _)| *k).collect();
        for old in subsumed {
            let _ = self.abort_locked(p, old, AbortReason::Subsumed { by: id }, events);
        }
        events.push(CheckpointEvent::Completed { checkpoint_id: id });
        Ok(())
    }
}

/// A [`CompletedCheckpointStore`] in memory: keeps the latest `retained` completed
/// snapshots (for tests, and with in-memory checkpoint storage). It cannot delete
/// streams; it records which checkpoints were discarded.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    retained: usize,
    completed: Mutex<VecDeque<(u64, JobSnapshot)>>,
    discarded: Mutex<Vec<u64>>,
}

impl InMemoryCheckpointStore {
    /// A store keeping the latest `retained` checkpoints (at least 1).
    pub fn new(retained: usize) -> Self {
        InMemoryCheckpointStore {
            retained: retained.max(1),
            ..Default::default()
        }
    }

    /// The latest completed checkpoint.
    pub fn latest(&self) -> Option<(u64, JobSnapshot)> {
        self.completed.lock().unwrap_or_else(|e| e.into_inner()).back().cloned()
    }

    /// Retained completed checkpoint ids, ascending.
    pub fn completed_ids(&self) -> Vec<u64> {
        self.completed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Ids of every discard, in order.
    pub fn discarded(&self) -> Vec<u64> {
        self.discarded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CompletedCheckpointStore for InMemoryCheckpointStore {
    fn commit(&self, checkpoint_id: u64, snapshot: &JobSnapshot) -> Result<()> {
        snapshot.validate()?;
        let mut c = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        if c.back().is_some_and(|(last, _)| *last >= checkpoint_id) {
            return Err(StateError::CheckpointRejected {
                checkpoint_id,
                reason: "not newer than the latest completed checkpoint".into(),
            });
        }
        c.push_back((checkpoint_id, snapshot.clone()));
        while c.len() > self.retained {
            c.pop_front();
        }
        Ok(())
    }

    fn discard(&self, checkpoint_id: u64, _states: &[SubtaskState], _sweep_shared: bool) -> Result<()> {
        self.discarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(checkpoint_id);
        Ok(())
    }
}
