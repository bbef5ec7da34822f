//! Restore assignment (Flink's `StateAssignmentOperation`): from a job snapshot and the
//! new parallelism of each operator, what every new subtask restores.
//!
//! - Keyed and timer state: the subtask's key-group range (Flink's formulas) and exactly
//!   the old handles whose key groups intersect it; the backends then read only the
//!   owned key groups of those handles.
//! - Operator state: even-split lists are cut into contiguous slices in old-subtask
//!   order (as `DefaultOperatorStateBackend` does), union lists go to every subtask, a
//!   broadcast state is taken from one old subtask. Only old streams that contribute are
//!   read.
//! - Engine data: at the same parallelism each subtask gets its own; at another, every
//!   subtask gets every old subtask's (the engine decides, as with union state).
//!
//! ```
//! use state_api::{JobAssignment, JobSnapshot, OperatorId, OperatorSpec, RestoreOptions, SubtaskState};
//! let op = OperatorId::new("counts")?;
//! let mut snapshot = JobSnapshot::default();
//! for i in 0..4 {
//!     snapshot.add_subtask(&op, 4, 128, i, SubtaskState::default())?;
//! }
//! let plan = JobAssignment::new(&snapshot, &[OperatorSpec::new("counts", 3, 128)?], RestoreOptions::default())?;
//! let ranges: Vec<_> = plan.operator("counts").iter().map(|s| s.key_group_range.to_string()).collect();
//! assert_eq!(ranges.len(), 3);
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::BackendContext;
use crate::checkpoint::{JobSnapshot, OperatorId, OperatorSnapshot, check_shape, intersects};
use crate::error::{Result, StateError};
use crate::keygroup::{KeyGroupRange, key_group_range_for_operator};
use crate::operator::DefaultOperatorStateBackend;
use crate::snapshot::{
    CheckpointStorage, IncrementalKeyedHandle, KeyedSnapshotHandle, OperatorSnapshotHandle, OperatorStateInfo,
    Redistribution,
};
use crate::ttl::SystemClock;

/// An operator of the restoring job: its id, new parallelism and max parallelism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSpec {
    /// The operator's stable id.
    pub id: OperatorId,
    /// Its parallelism in the restoring job.
    pub parallelism: u32,
    /// Its max parallelism; must equal the checkpoint's.
    pub max_parallelism: u32,
}

impl OperatorSpec {
    /// An operator `id` at `parallelism` with `max_parallelism` key groups, checked.
    pub fn new(id: &str, parallelism: u32, max_parallelism: u32) -> Result<Self> {
        let id = OperatorId::new(id)?;
        check_shape(&id, parallelism, max_parallelism)?;
        Ok(OperatorSpec {
            id,
            parallelism,
            max_parallelism,
        })
    }
}

/// Options of a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Skip state of operators that the restoring job does not have (Flink's
    /// `--allowNonRestoredState`); without it that is an error.
    pub allow_non_restored_state: bool,
}

impl RestoreOptions {
    /// Allows (or not) state of operators the restoring job does not have.
    pub fn allow_non_restored_state(mut self, allow: bool) -> Self {
        self.allow_non_restored_state = allow;
        self
    }
}

/// One old operator-state stream and which elements of each of its states a new
/// subtask takes (`start..end` in the stream's order). States not listed are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStatePartition {
    /// The old subtask's stream.
    pub handle: OperatorSnapshotHandle,
    /// Per state (its mode and name: list and broadcast states have separate name
    /// spaces), the elements to take.
    pub ranges: BTreeMap<(Redistribution, String), std::ops::Range<u64>>,
}

/// What one new subtask restores.
#[derive(Debug, Clone, PartialEq)]
pub struct SubtaskAssignment {
    /// The operator.
    pub operator: OperatorId,
    /// The new subtask index.
    pub index: u32,
    /// The operator's new parallelism.
    pub parallelism: u32,
    /// The operator's max parallelism.
    pub max_parallelism: u32,
    /// The key groups the subtask owns.
    pub key_group_range: KeyGroupRange,
    /// Canonical keyed handles that intersect the range.
    pub keyed: Vec<KeyedSnapshotHandle>,
    /// Incremental keyed handles that intersect the range.
    pub incremental: Vec<IncrementalKeyedHandle>,
    /// Timer handles that intersect the range.
    pub timers: Vec<KeyedSnapshotHandle>,
    /// The operator-state slices the subtask takes.
    pub operator_state: Vec<OperatorStatePartition>,
    /// Engine data of old subtasks by old index: its own at the same parallelism, every
    /// old subtask's otherwise.
    pub engine: BTreeMap<u32, BTreeMap<String, Vec<u8>>>,
    /// Whether the checkpoint held state for this operator (otherwise it starts empty).
    pub restored: bool,
}

impl SubtaskAssignment {
    /// The backend context of this subtask (its key groups, the system clock).
    pub fn context(&self) -> BackendContext {
        BackendContext {
            key_group_range: self.key_group_range,
            max_parallelism: self.max_parallelism,
            clock: Arc::new(SystemClock),
        }
    }

    /// The subtask's operator state, restored from its slices.
    pub fn restore_operator_state(&self, storage: &dyn CheckpointStorage) -> Result<DefaultOperatorStateBackend> {
        DefaultOperatorStateBackend::restore_partitions(&self.operator_state, self.index, storage)
    }
}

/// What every subtask of a restoring job restores.
#[derive(Debug, Clone, PartialEq)]
pub struct JobAssignment {
    /// Per operator, one assignment per new subtask (index order).
    pub operators: BTreeMap<OperatorId, Vec<SubtaskAssignment>>,
    /// Job-level engine data of the checkpoint.
    pub engine: BTreeMap<String, Vec<u8>>,
}

impl JobAssignment {
    /// Assigns `snapshot` to the operators of `job`. Errors (typed, naming the operator):
    /// a snapshot that does not validate, an operator with state that `job` lacks (unless
    /// `options` allow non-restored state), a max parallelism that differs, an id twice.
    /// An operator of `job` without state in the snapshot starts empty.
    pub fn new(snapshot: &JobSnapshot, job: &[OperatorSpec], options: RestoreOptions) -> Result<Self> {
        snapshot.validate()?;
        let mut specs: BTreeMap<&OperatorId, &OperatorSpec> = BTreeMap::new();
        for spec in job {
            check_shape(&spec.id, spec.parallelism, spec.max_parallelism)?;
            if specs.insert(&spec.id, spec).is_some() {
                return Err(StateError::InvalidArgument(format!(
                    "operator `{}` appears twice in the restoring job",
                    spec.id
                )));
            }
        }
        for op in &snapshot.operators {
            if !specs.contains_key(&op.id) && !op.is_empty() && !options.allow_non_restored_state {
                return Err(StateError::InvalidCheckpoint {
                    operator: op.id.to_string(),
                    subtask: None,
                    detail: "the checkpoint has state for this operator but the job does not have it \
                             (allow non-restored state to skip it)"
                        .into(),
                    source: None,
                });
            }
        }
        let mut operators = BTreeMap::new();
        for spec in job {
            let old = snapshot.operator(spec.id.as_str());
            if let Some(old) = old
                && old.max_parallelism != spec.max_parallelism
            {
                return Err(StateError::InvalidCheckpoint {
                    operator: spec.id.to_string(),
                    subtask: None,
                    detail: format!(
                        "the checkpoint has max parallelism {}, the restoring job {}; key groups cannot be remapped",
                        old.max_parallelism, spec.max_parallelism
                    ),
                    source: None,
                });
            }
            let subtasks = (0..spec.parallelism)
                .map(|i| assign_subtask(old, spec, i))
                .collect::<Result<Vec<_>>>()?;
            operators.insert(spec.id.clone(), subtasks);
        }
        Ok(JobAssignment {
            operators,
            engine: snapshot.engine.clone(),
        })
    }

    /// The assignments of operator `id` (empty when the job does not have it).
    pub fn operator(&self, id: &str) -> &[SubtaskAssignment] {
        self.operators
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The assignment of subtask `index` of operator `id`.
    pub fn subtask(&self, id: &str, index: u32) -> Option<&SubtaskAssignment> {
        self.operator(id).get(index as usize)
    }
}

fn assign_subtask(old: Option<&OperatorSnapshot>, spec: &OperatorSpec, index: u32) -> Result<SubtaskAssignment> {
    let range = key_group_range_for_operator(spec.max_parallelism, spec.parallelism, index)?;
    let mut a = SubtaskAssignment {
        operator: spec.id.clone(),
        index,
        parallelism: spec.parallelism,
        max_parallelism: spec.max_parallelism,
        key_group_range: range,
        keyed: Vec::new(),
        incremental: Vec::new(),
        timers: Vec::new(),
        operator_state: Vec::new(),
        engine: BTreeMap::new(),
        restored: old.is_some(),
    };
    let Some(old) = old else { return Ok(a) };
    for s in &old.subtasks {
        let st = &s.state;
        a.keyed.extend(
            st.keyed
                .iter()
                .filter(|h| intersects(h.key_group_range, &range))
                .cloned(),
        );
        a.incremental.extend(
            st.incremental
                .iter()
                .filter(|h| intersects(h.key_group_range, &range))
                .cloned(),
        );
        a.timers.extend(
            st.timers
                .iter()
                .filter(|h| intersects(h.key_group_range, &range))
                .cloned(),
        );
        let same = old.parallelism == spec.parallelism;
        if !st.engine.is_empty() && (!same || s.index == index) {
            a.engine.insert(s.index, st.engine.clone());
        }
    }
    a.operator_state = partition_operator_state(&old.operator_state(), index, spec.parallelism).map_err(|e| {
        StateError::InvalidCheckpoint {
            operator: spec.id.to_string(),
            subtask: Some(index),
            detail: e.to_string(),
            source: Some(Box::new(e)),
        }
    })?;
    Ok(a)
}

/// The operator-state slices that new subtask `index` of `parallelism` takes from the
/// old subtasks' `handles`: even-split lists cut into contiguous slices in old-subtask
/// order (the first `n % parallelism` subtasks get one more), union lists whole, a
/// broadcast state from the first old subtask that has it. Old streams that contribute
/// nothing are left out, so they are not read.
pub(crate) fn partition_operator_state(
    handles: &[OperatorSnapshotHandle],
    index: u32,
    parallelism: u32,
) -> Result<Vec<OperatorStatePartition>> {
    if parallelism == 0 || index >= parallelism {
        return Err(StateError::InvalidArgument(format!(
            "subtask index {index} is not below the parallelism {parallelism}"
        )));
    }
    let mut sorted: Vec<&OperatorSnapshotHandle> = handles.iter().collect();
    sorted.sort_by_key(|h| h.subtask_index);
    // Per state (broadcast or list, name): its mode and the total number of elements.
    let space = |info: &OperatorStateInfo| (info.mode == Redistribution::Broadcast, info.name.clone());
    let mut states: BTreeMap<(bool, String), (Redistribution, u64)> = BTreeMap::new();
    for h in &sorted {
        for info in &h.states {
            let entry = states.entry(space(info)).or_insert((info.mode, 0));
            if entry.0 != info.mode {
                return Err(StateError::Corrupt {
                    source_name: h.stream.describe(),
                    section: format!("operator state `{}`", info.name),
                    detail: "old subtasks disagree on its redistribution mode".into(),
                    source: None,
                });
            }
            entry.1 = entry.1.saturating_add(info.elements);
        }
    }
    let (p, i) = (u64::from(parallelism), u64::from(index));
    let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
    let mut broadcast_taken: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::new();
    for h in sorted {
        let mut ranges = BTreeMap::new();
        for info in &h.states {
            let name = info.name.clone();
            let (mode, total) = states[&space(info)];
            let take = match mode {
                Redistribution::EvenSplit => {
                    let start = i * (total / p) + i.min(total % p);
                    let end = start + total / p + u64::from(i < total % p);
                    let offset = offsets.entry(name).or_insert(0);
                    let (from, to) = (*offset, *offset + info.elements);
                    *offset = to;
                    let (s, e) = (start.max(from), end.min(to));
                    (s < e).then(|| (s - from)..(e - from))
                }
                Redistribution::Union => (info.elements > 0).then_some(0..info.elements),
                Redistribution::Broadcast => {
                    let taken = broadcast_taken.entry(name).or_insert(false);
                    let first = !*taken;
                    *taken = true;
                    first.then_some(0..info.elements)
                }
            };
            if let Some(r) = take {
                ranges.insert((info.mode, info.name.clone()), r);
            }
        }
        if !ranges.is_empty() {
            out.push(OperatorStatePartition {
                handle: h.clone(),
                ranges,
            });
        }
    }
    Ok(out)
}
