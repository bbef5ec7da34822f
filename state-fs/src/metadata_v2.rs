//! The `_metadata` layout of version 2 (operators and subtasks, but state metadata
//! without schemas), read and upgraded to version 3: incremental handles get
//! name-only schemas ([`state_api::raw::legacy`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use state_api::raw::legacy::IncrementalKeyedHandleV1;
use state_api::{
    JobSnapshot, KeyedSnapshotHandle, OperatorId, OperatorSnapshot, OperatorSnapshotHandle, SubtaskSnapshot,
    SubtaskState,
};

use crate::metadata::{CheckpointMetadata, SnapshotKind};

#[derive(Deserialize)]
pub(crate) struct MetadataV2 {
    checkpoint_id: u64,
    job_id: String,
    kind: SnapshotKind,
    timestamp_millis: i64,
    snapshot: JobSnapshotV2,
}

#[derive(Deserialize)]
struct JobSnapshotV2 {
    operators: Vec<OperatorSnapshotV2>,
    engine: BTreeMap<String, Vec<u8>>,
}

#[derive(Deserialize)]
struct OperatorSnapshotV2 {
    id: OperatorId,
    parallelism: u32,
    max_parallelism: u32,
    subtasks: Vec<SubtaskSnapshotV2>,
}

#[derive(Deserialize)]
struct SubtaskSnapshotV2 {
    index: u32,
    state: SubtaskStateV2,
}

#[derive(Deserialize)]
struct SubtaskStateV2 {
    keyed: Vec<KeyedSnapshotHandle>,
    incremental: Vec<IncrementalKeyedHandleV1>,
    operator: Vec<OperatorSnapshotHandle>,
    timers: Vec<KeyedSnapshotHandle>,
    engine: BTreeMap<String, Vec<u8>>,
}

impl From<MetadataV2> for CheckpointMetadata {
    fn from(v2: MetadataV2) -> Self {
        CheckpointMetadata {
            checkpoint_id: v2.checkpoint_id,
            job_id: v2.job_id,
            kind: v2.kind,
            timestamp_millis: v2.timestamp_millis,
            snapshot: JobSnapshot {
                operators: v2
                    .snapshot
                    .operators
                    .into_iter()
                    .map(|op| OperatorSnapshot {
                        id: op.id,
                        parallelism: op.parallelism,
                        max_parallelism: op.max_parallelism,
                        subtasks: op
                            .subtasks
                            .into_iter()
                            .map(|s| SubtaskSnapshot {
                                index: s.index,
                                state: SubtaskState {
                                    keyed: s.state.keyed,
                                    incremental: s.state.incremental.into_iter().map(Into::into).collect(),
                                    operator: s.state.operator,
                                    timers: s.state.timers,
                                    engine: s.state.engine,
                                },
                            })
                            .collect(),
                    })
                    .collect(),
                engine: v2.snapshot.engine,
            },
        }
    }
}
