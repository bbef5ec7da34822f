//! The job checkpoint model: what a checkpoint of a whole job holds, independent of
//! where it is stored.
//!
//! A job is a set of stateful operators, each identified by a stable [`OperatorId`] (the
//! user's `uid`), running at a parallelism with the job's max parallelism. Subtask `i`
//! of an operator owns key-group range `i` ([`crate::keygroup::key_group_range_for_operator`])
//! and writes a [`SubtaskState`]: its keyed (canonical or incremental), operator and
//! timer handles, plus engine data (source offsets, sink state). A [`JobSnapshot`]
//! gathers them per operator, with job-level engine data. The
//! [`CheckpointCoordinator`](crate::coordinator::CheckpointCoordinator) builds it from
//! acknowledgements; a storage persists it (state-fs's `_metadata`); a
//! [`JobAssignment`](crate::assignment::JobAssignment) hands it out again at any
//! parallelism.
//!
//! ```
//! use state_api::{JobSnapshot, OperatorId, SubtaskState};
//! let mut snapshot = JobSnapshot::default();
//! let op = OperatorId::new("window-count")?;
//! snapshot.add_subtask(&op, 2, 128, 1, SubtaskState::default())?;
//! snapshot.validate()?;
//! // The same subtask twice is an error naming it.
//! assert!(snapshot.add_subtask(&op, 2, 128, 1, SubtaskState::default()).is_err());
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::keygroup::{KeyGroupRange, UPPER_BOUND_MAX_PARALLELISM, key_group_range_for_operator};
use crate::snapshot::{IncrementalKeyedHandle, KeyedSnapshotHandle, OperatorSnapshotHandle, SharedFile, StreamHandle};

/// Checks an identifier that ends up in paths and metadata (a job id, an operator id, a
/// savepoint name): 1 to 128 characters of `A-Z a-z 0-9 . _ -`, and not `.` or `..`.
pub fn check_identifier(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidArgument(format!(
            "{what} {s:?} must be 1 to 128 characters of A-Z a-z 0-9 . _ - (and not `.` or `..`)"
        )))
    }
}

/// The stable id of a stateful operator (Flink's `uid`): state is matched to operators
/// by it when a job restores, so it must not change between versions of a job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OperatorId(String);

impl OperatorId {
    /// An operator id, checked like a job id (1 to 128 characters of `A-Z a-z 0-9 . _ -`).
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_identifier("operator id", &id)?;
        Ok(OperatorId(id))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OperatorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one subtask of an operator wrote for a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    /// Keyed state in the canonical format (heap, RocksDB full snapshots).
    pub keyed: Vec<KeyedSnapshotHandle>,
    /// Keyed state in a backend's native incremental format (RocksDB SST files).
    pub incremental: Vec<IncrementalKeyedHandle>,
    /// Operator (non-keyed) state.
    pub operator: Vec<OperatorSnapshotHandle>,
    /// Timers (canonical format, written by `state-timers`).
    pub timers: Vec<KeyedSnapshotHandle>,
    /// Engine data of this subtask (source offsets, sink state), by name.
    pub engine: BTreeMap<String, Vec<u8>>,
}

impl SubtaskState {
    /// Every stream that belongs to this checkpoint only: keyed, operator and timer
    /// streams and the private files of incremental snapshots.
    pub fn exclusive_streams(&self) -> impl Iterator<Item = &StreamHandle> {
        self.keyed
            .iter()
            .map(|h| &h.stream)
            .chain(self.operator.iter().map(|h| &h.stream))
            .chain(self.timers.iter().map(|h| &h.stream))
            .chain(
                self.incremental
                    .iter()
                    .flat_map(|h| h.private_files.iter().map(|f| &f.stream)),
            )
    }

    /// The data files of incremental snapshots, which later checkpoints may share.
    pub fn shared_files(&self) -> impl Iterator<Item = SharedFile> + '_ {
        self.incremental
            .iter()
            .flat_map(|h| h.shared_files.iter())
            .filter_map(|f| match &f.stream {
                StreamHandle::File { path, size, crc32c } => Some(SharedFile {
                    path: path.clone(),
                    size: *size,
                    crc32c: *crc32c,
                }),
                StreamHandle::Inline { .. } => None,
            })
    }

    /// Bytes of state (exclusive streams and shared files; engine data not counted).
    pub fn state_size(&self) -> u64 {
        self.exclusive_streams().map(StreamHandle::size).sum::<u64>() + self.shared_files().map(|f| f.size).sum::<u64>()
    }

    /// Whether the subtask wrote no state and no engine data.
    pub fn is_empty(&self) -> bool {
        self.keyed.is_empty()
            && self.incremental.is_empty()
            && self.operator.is_empty()
            && self.timers.is_empty()
            && self.engine.is_empty()
    }

    /// Checks that the state fits subtask `index` of `operator` at `parallelism` with
    /// `max_parallelism`: every keyed, incremental and timer handle lies within the
    /// subtask's key-group range, incremental handles agree on the max parallelism, and
    /// operator-state handles name this subtask.
    pub fn check_fits(&self, operator: &OperatorId, parallelism: u32, max_parallelism: u32, index: u32) -> Result<()> {
        let bad = |detail: String| StateError::InvalidCheckpoint {
            operator: operator.to_string(),
            subtask: Some(index),
            detail,
            source: None,
        };
        check_shape(operator, parallelism, max_parallelism)?;
        if index >= parallelism {
            return Err(bad(format!(
                "subtask index {index} is not below the parallelism {parallelism}"
            )));
        }
        let own = key_group_range_for_operator(max_parallelism, parallelism, index)?;
        let ranges = self
            .keyed
            .iter()
            .map(|h| ("keyed", h.key_group_range))
            .chain(self.timers.iter().map(|h| ("timer", h.key_group_range)))
            .chain(self.incremental.iter().map(|h| ("incremental", h.key_group_range)));
        for (what, range) in ranges {
            if !range.is_empty() && range.intersection(&own) != range {
                return Err(bad(format!(
                    "a {what} handle covers key groups {range}, outside the subtask's range {own}"
                )));
            }
        }
        if let Some(h) = self.incremental.iter().find(|h| h.max_parallelism != max_parallelism) {
            return Err(bad(format!(
                "an incremental handle has max parallelism {}, the operator {max_parallelism}",
                h.max_parallelism
            )));
        }
        if let Some(h) = self.operator.iter().find(|h| h.subtask_index != index) {
            return Err(bad(format!(
                "an operator-state handle was written by subtask {}",
                h.subtask_index
            )));
        }
        Ok(())
    }
}

/// Checks an operator's parallelism and max parallelism.
pub(crate) fn check_shape(operator: &OperatorId, parallelism: u32, max_parallelism: u32) -> Result<()> {
    check_identifier("operator id", operator.as_str()).map_err(|e| StateError::InvalidCheckpoint {
        operator: operator.to_string(),
        subtask: None,
        detail: e.to_string(),
        source: Some(Box::new(e)),
    })?;
    if max_parallelism == 0
        || max_parallelism > UPPER_BOUND_MAX_PARALLELISM
        || parallelism == 0
        || parallelism > max_parallelism
    {
        return Err(StateError::InvalidCheckpoint {
            operator: operator.to_string(),
            subtask: None,
            detail: format!(
                "parallelism {parallelism} and max parallelism {max_parallelism} must satisfy \
                 1 <= parallelism <= max parallelism <= {UPPER_BOUND_MAX_PARALLELISM}"
            ),
            source: None,
        });
    }
    Ok(())
}

/// One subtask's entry in an [`OperatorSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskSnapshot {
    /// The subtask index (below the operator's parallelism).
    pub index: u32,
    /// What the subtask wrote.
    pub state: SubtaskState,
}

/// One operator's state in a checkpoint: its parallelism, max parallelism and what each
/// subtask wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    /// The operator's stable id.
    pub id: OperatorId,
    /// Its parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Its max parallelism (number of key groups); a restore must use the same.
    pub max_parallelism: u32,
    /// Every subtask that acknowledged, ascending by index.
    pub subtasks: Vec<SubtaskSnapshot>,
}

impl OperatorSnapshot {
    /// The state of subtask `index`, if it is in the checkpoint.
    pub fn subtask(&self, index: u32) -> Option<&SubtaskState> {
        self.subtasks.iter().find(|s| s.index == index).map(|s| &s.state)
    }

    /// Every subtask's state, ascending by index.
    pub fn states(&self) -> impl Iterator<Item = &SubtaskState> {
        self.subtasks.iter().map(|s| &s.state)
    }

    /// Every canonical keyed handle of every subtask.
    pub fn keyed(&self) -> Vec<KeyedSnapshotHandle> {
        self.states().flat_map(|s| s.keyed.iter().cloned()).collect()
    }

    /// Every incremental keyed handle of every subtask.
    pub fn incremental(&self) -> Vec<IncrementalKeyedHandle> {
        self.states().flat_map(|s| s.incremental.iter().cloned()).collect()
    }

    /// Every timer handle of every subtask.
    pub fn timers(&self) -> Vec<KeyedSnapshotHandle> {
        self.states().flat_map(|s| s.timers.iter().cloned()).collect()
    }

    /// Every operator-state handle of every subtask.
    pub fn operator_state(&self) -> Vec<OperatorSnapshotHandle> {
        self.states().flat_map(|s| s.operator.iter().cloned()).collect()
    }

    /// Whether no subtask wrote anything.
    pub fn is_empty(&self) -> bool {
        self.states().all(SubtaskState::is_empty)
    }

    /// Checks the operator: its shape, each subtask index below the parallelism and
    /// present once, and each subtask's handles within its key groups.
    pub fn validate(&self) -> Result<()> {
        check_shape(&self.id, self.parallelism, self.max_parallelism)?;
        let mut seen = BTreeSet::new();
        for s in &self.subtasks {
            if !seen.insert(s.index) {
                return Err(StateError::InvalidCheckpoint {
                    operator: self.id.to_string(),
                    subtask: Some(s.index),
                    detail: "the subtask appears twice".into(),
                    source: None,
                });
            }
            s.state
                .check_fits(&self.id, self.parallelism, self.max_parallelism, s.index)?;
        }
        Ok(())
    }
}

/// The state of a whole job at one checkpoint: every operator's subtasks and job-level
/// engine data. Storage-independent: state-fs persists it as `_metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// Every operator with state, ascending by id.
    pub operators: Vec<OperatorSnapshot>,
    /// Job-level engine data (source positions, watermarks), by name.
    pub engine: BTreeMap<String, Vec<u8>>,
}

impl JobSnapshot {
    /// The operator `id`, if the snapshot has it.
    pub fn operator(&self, id: &str) -> Option<&OperatorSnapshot> {
        self.operators.iter().find(|o| o.id.as_str() == id)
    }

    /// Adds subtask `index` of operator `operator` (created with `parallelism` and
    /// `max_parallelism` if the snapshot does not have it yet). A subtask added twice, an
    /// index not below the parallelism, a shape that differs from the operator's, or
    /// handles outside the subtask's key groups are errors naming the operator and subtask.
    pub fn add_subtask(
        &mut self,
        operator: &OperatorId,
        parallelism: u32,
        max_parallelism: u32,
        index: u32,
        state: SubtaskState,
    ) -> Result<()> {
        state.check_fits(operator, parallelism, max_parallelism, index)?;
        let pos = match self.operators.binary_search_by(|o| o.id.cmp(operator)) {
            Ok(pos) => pos,
            Err(pos) => {
                self.operators.insert(
                    pos,
                    OperatorSnapshot {
                        id: operator.clone(),
                        parallelism,
                        max_parallelism,
                        subtasks: Vec::new(),
                    },
                );
                pos
            }
        };
        let op = &mut self.operators[pos];
        if op.parallelism != parallelism || op.max_parallelism != max_parallelism {
            return Err(StateError::InvalidCheckpoint {
                operator: operator.to_string(),
                subtask: Some(index),
                detail: format!(
                    "the operator has parallelism {} and max parallelism {}, the subtask says {parallelism} and {max_parallelism}",
                    op.parallelism, op.max_parallelism
                ),
                source: None,
            });
        }
        match op.subtasks.binary_search_by_key(&index, |s| s.index) {
            Ok(_) => Err(StateError::InvalidCheckpoint {
                operator: operator.to_string(),
                subtask: Some(index),
                detail: "the subtask appears twice".into(),
                source: None,
            }),
            Err(pos) => {
                op.subtasks.insert(pos, SubtaskSnapshot { index, state });
                Ok(())
            }
        }
    }

    /// Gives operator `from` the id `to` (for state written under another id, such as
    /// the `legacy` operator of a v1 checkpoint). An error when `from` is missing or `to`
    /// exists.
    pub fn rename_operator(&mut self, from: &str, to: &OperatorId) -> Result<()> {
        if self.operator(to.as_str()).is_some() {
            return Err(StateError::InvalidArgument(format!("operator `{to}` already exists")));
        }
        let op = self
            .operators
            .iter_mut()
            .find(|o| o.id.as_str() == from)
            .ok_or_else(|| StateError::InvalidArgument(format!("no operator `{from}` in the snapshot")))?;
        op.id = to.clone();
        self.operators.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(())
    }

    /// Checks every operator (see [`OperatorSnapshot::validate`]) and that no id appears twice.
    pub fn validate(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for op in &self.operators {
            if !seen.insert(&op.id) {
                return Err(StateError::InvalidCheckpoint {
                    operator: op.id.to_string(),
                    subtask: None,
                    detail: "the operator appears twice".into(),
                    source: None,
                });
            }
            op.validate()?;
        }
        Ok(())
    }

    /// Every subtask state of every operator.
    pub fn subtask_states(&self) -> impl Iterator<Item = &SubtaskState> {
        self.operators.iter().flat_map(OperatorSnapshot::states)
    }

    /// Every exclusive stream of every subtask.
    pub fn exclusive_streams(&self) -> impl Iterator<Item = &StreamHandle> {
        self.subtask_states().flat_map(SubtaskState::exclusive_streams)
    }

    /// Every shared file referenced, once each, sorted by path.
    pub fn shared_files(&self) -> Vec<SharedFile> {
        let mut out: Vec<SharedFile> = self.subtask_states().flat_map(SubtaskState::shared_files).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Bytes of state of every subtask.
    pub fn state_size(&self) -> u64 {
        self.exclusive_streams().map(StreamHandle::size).sum::<u64>()
            + self.shared_files().iter().map(|f| f.size).sum::<u64>()
    }
}

/// The key-group range a handle covers, for checks and assignment.
pub(crate) fn intersects(range: KeyGroupRange, other: &KeyGroupRange) -> bool {
    !range.intersection(other).is_empty()
}
