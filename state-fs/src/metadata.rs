//! The `_metadata` file of a checkpoint or savepoint: every handle of the snapshot,
//! small state inline, the shared files it references, and engine data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::metadata_v2::MetadataV2;
pub use state_api::SharedFile;
use state_api::keygroup::{DEFAULT_LOWER_BOUND_MAX_PARALLELISM, key_group_range_for_operator};
use state_api::raw::framing::{decode_body, frame, unframe};
use state_api::raw::legacy::IncrementalKeyedHandleV1;
use state_api::{
    IncrementalKeyedHandle, JobSnapshot, KeyedSnapshotHandle, OperatorId, OperatorSnapshotHandle, Result, StateError,
    StreamHandle, SubtaskState,
};

const MAGIC: [u8; 8] = *b"\x89RSMETA\n";
const REGISTRY_MAGIC: [u8; 8] = *b"\x89RSSREG\n";
/// The `_metadata` version written: 3 (state metadata with schemas). Version 2
/// (operators, subtasks; no schemas) and version 1 (flat lists of one operator's
/// handles) are still read.
const VERSION: u32 = 3;
const REGISTRY_VERSION: u32 = 1;

/// The operator id that the state of a version-1 `_metadata` (one operator, no ids) is
/// given when it is read; [`JobSnapshot::rename_operator`] maps it to the job's own.
pub const LEGACY_OPERATOR_ID: &str = "legacy";

/// Whether a snapshot is a checkpoint (owned by the storage, subject to retention) or a
/// savepoint (owned by the user, self-contained, never deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// A checkpoint.
    Checkpoint,
    /// A savepoint.
    Savepoint,
}

/// Everything needed to restore a checkpoint or savepoint of a whole job: per operator,
/// its parallelism, max parallelism and every subtask's handles and engine data
/// ([`JobSnapshot`]), plus job-level engine data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id.
    pub checkpoint_id: u64,
    /// The job.
    pub job_id: String,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// When the checkpoint was triggered (milliseconds since the epoch).
    pub timestamp_millis: i64,
    /// Every operator's state and the job's engine data.
    pub snapshot: JobSnapshot,
}

/// The version-1 layout: one operator's handles in flat lists.
#[derive(Deserialize)]
struct MetadataV1 {
    checkpoint_id: u64,
    job_id: String,
    kind: SnapshotKind,
    timestamp_millis: i64,
    keyed: Vec<KeyedSnapshotHandle>,
    incremental: Vec<IncrementalKeyedHandleV1>,
    operator: Vec<OperatorSnapshotHandle>,
    timers: Vec<KeyedSnapshotHandle>,
    #[allow(dead_code)]
    shared: Vec<SharedFile>,
    extra: BTreeMap<String, Vec<u8>>,
}

impl MetadataV1 {
    /// The v1 state as operator [`LEGACY_OPERATOR_ID`]: subtasks are told apart by their
    /// key-group ranges (and operator-state subtask indexes), the max parallelism is the
    /// incremental handles' or the end of the key-group ranges.
    fn upgrade(self, name: &str) -> Result<CheckpointMetadata> {
        let incremental: Vec<IncrementalKeyedHandle> = self.incremental.into_iter().map(Into::into).collect();
        let corrupt = |detail: String| StateError::Corrupt {
            source_name: name.to_string(),
            section: "checkpoint metadata (version 1)".into(),
            detail,
            source: None,
        };
        let keyed_ranges = self
            .keyed
            .iter()
            .chain(&self.timers)
            .map(|h| h.key_group_range)
            .chain(incremental.iter().map(|h| h.key_group_range))
            .filter(|r| !r.is_empty());
        let mut ranges: Vec<_> = keyed_ranges.collect();
        ranges.sort_by_key(|r| (r.start(), r.end()));
        ranges.dedup();
        let max_parallelism = match incremental.first() {
            Some(h) => h.max_parallelism,
            None => ranges
                .iter()
                .map(|r| r.end() + 1)
                .max()
                .unwrap_or(DEFAULT_LOWER_BOUND_MAX_PARALLELISM),
        };
        let op_subtasks = self.operator.iter().map(|h| h.subtask_index + 1).max().unwrap_or(0);
        let parallelism = u32::try_from(ranges.len()).unwrap_or(u32::MAX).max(op_subtasks).max(1);
        let mut subtasks: Vec<SubtaskState> = Vec::new();
        for i in 0..parallelism {
            let own = key_group_range_for_operator(max_parallelism, parallelism, i)
                .map_err(|e| corrupt(format!("cannot map its state to subtasks: {e}")).with_source(e))?;
            let mine = |r: &state_api::KeyGroupRange| !r.is_empty() && r.intersection(&own) == *r;
            subtasks.push(SubtaskState {
                keyed: self
                    .keyed
                    .iter()
                    .filter(|h| mine(&h.key_group_range))
                    .cloned()
                    .collect(),
                incremental: incremental
                    .iter()
                    .filter(|h| mine(&h.key_group_range))
                    .cloned()
                    .collect(),
                operator: self.operator.iter().filter(|h| h.subtask_index == i).cloned().collect(),
                timers: self
                    .timers
                    .iter()
                    .filter(|h| mine(&h.key_group_range))
                    .cloned()
                    .collect(),
                engine: BTreeMap::new(),
            });
        }
        let placed: usize = subtasks
            .iter()
            .map(|s| s.keyed.len() + s.incremental.len() + s.operator.len() + s.timers.len())
            .sum();
        if placed != self.keyed.len() + incremental.len() + self.operator.len() + self.timers.len() {
            return Err(corrupt(format!(
                "its handles do not fit {parallelism} subtask(s) of max parallelism {max_parallelism}"
            )));
        }
        let mut snapshot = JobSnapshot {
            operators: Vec::new(),
            engine: self.extra,
        };
        let op = OperatorId::new(LEGACY_OPERATOR_ID)?;
        for (i, state) in subtasks.into_iter().enumerate() {
            snapshot.add_subtask(&op, parallelism, max_parallelism, i as u32, state)?;
        }
        Ok(CheckpointMetadata {
            checkpoint_id: self.checkpoint_id,
            job_id: self.job_id,
            kind: self.kind,
            timestamp_millis: self.timestamp_millis,
            snapshot,
        })
    }
}

impl CheckpointMetadata {
    /// Empty metadata for checkpoint `checkpoint_id` of `job_id`, stamped now.
    pub fn new(job_id: &str, checkpoint_id: u64, kind: SnapshotKind) -> Self {
        Self::with_snapshot(job_id, checkpoint_id, kind, JobSnapshot::default())
    }

    /// Metadata for `snapshot` as checkpoint `checkpoint_id` of `job_id`, stamped now.
    pub fn with_snapshot(job_id: &str, checkpoint_id: u64, kind: SnapshotKind, snapshot: JobSnapshot) -> Self {
        CheckpointMetadata {
            checkpoint_id,
            job_id: job_id.to_string(),
            kind,
            timestamp_millis: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            snapshot,
        }
    }

    /// Adds subtask `index` of `operator` (see [`JobSnapshot::add_subtask`]).
    pub fn add_subtask(
        &mut self,
        operator: &OperatorId,
        parallelism: u32,
        max_parallelism: u32,
        index: u32,
        state: SubtaskState,
    ) -> Result<()> {
        self.snapshot
            .add_subtask(operator, parallelism, max_parallelism, index, state)
    }

    /// Every exclusive stream handle (keyed, operator, timers, private files of
    /// incremental snapshots) of every subtask.
    pub fn streams(&self) -> impl Iterator<Item = &StreamHandle> {
        self.snapshot.exclusive_streams()
    }

    /// The shared files this checkpoint references (reference-counted by the storage's
    /// registry), once each.
    pub fn shared(&self) -> Vec<SharedFile> {
        self.snapshot.shared_files()
    }

    /// Paths of every file the metadata references (exclusive and shared).
    pub fn files(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .streams()
            .filter_map(|s| match s {
                StreamHandle::File { path, .. } => Some(path.clone()),
                StreamHandle::Inline { .. } => None,
            })
            .collect();
        out.extend(self.shared().into_iter().map(|s| s.path));
        out.sort();
        out.dedup();
        out
    }

    /// Bytes of state: inline and in files.
    pub fn state_size(&self) -> u64 {
        self.snapshot.state_size()
    }

    /// Encodes (version 3): magic, version, length, postcard body, CRC32C.
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&MAGIC, VERSION, self, "checkpoint metadata")
    }

    /// Decodes and verifies version 1, 2 or 3; `name` names the file in errors. The
    /// operators are validated: an operator or subtask twice, a subtask index not below
    /// the parallelism, handles outside a subtask's key groups are
    /// [`StateError::InvalidCheckpoint`] errors naming them.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        let (version, body) = unframe(&MAGIC, VERSION, bytes, name, "checkpoint metadata")?;
        let meta = if version == 1 {
            decode_body::<MetadataV1>(body, name, "checkpoint metadata")?.upgrade(name)?
        } else if version == 2 {
            decode_body::<MetadataV2>(body, name, "checkpoint metadata")?.into()
        } else {
            decode_body::<CheckpointMetadata>(body, name, "checkpoint metadata")?
        };
        meta.snapshot.validate()?;
        Ok(meta)
    }
}

/// Reference counts of shared files: which retained checkpoints use each file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRegistry {
    refs: BTreeMap<String, BTreeSet<u64>>,
}

impl SharedRegistry {
    /// Records that checkpoint `id` references `paths`.
    pub fn register(&mut self, id: u64, paths: impl IntoIterator<Item = String>) {
        for p in paths {
            self.refs.entry(p).or_default().insert(id);
        }
    }

    /// Drops checkpoint `id`'s references; returns the files nothing references any more.
    pub fn release(&mut self, id: u64) -> Vec<String> {
        let mut unreferenced = Vec::new();
        self.refs.retain(|path, ids| {
            ids.remove(&id);
            if ids.is_empty() {
                unreferenced.push(path.clone());
                false
            } else {
                true
            }
        });
        unreferenced
    }

    /// Whether any retained checkpoint references `path`.
    pub fn is_referenced(&self, path: &str) -> bool {
        self.refs.contains_key(path)
    }

    /// Number of checkpoints referencing `path`.
    pub fn ref_count(&self, path: &str) -> usize {
        self.refs.get(path).map_or(0, BTreeSet::len)
    }

    /// Every referenced path.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.refs.keys()
    }

    /// Encodes like the metadata.
    pub fn encode(&self) -> Result<Vec<u8>> {
        frame(&REGISTRY_MAGIC, REGISTRY_VERSION, self, "shared registry")
    }

    /// Decodes and verifies.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        {
            let (_, body) = unframe(&REGISTRY_MAGIC, REGISTRY_VERSION, bytes, name, "shared registry")?;
            decode_body(body, name, "shared registry")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CheckpointMetadata {
        let mut m = CheckpointMetadata::new("job", 3, SnapshotKind::Checkpoint);
        let state = SubtaskState {
            incremental: vec![IncrementalKeyedHandle {
                checkpoint_id: 3,
                key_group_range: state_api::KeyGroupRange::new(0, 63),
                max_parallelism: 128,
                key_type: "u64".into(),
                key_schema: state_api::Schema::U64,
                states: Vec::new(),
                shared_files: vec![state_api::SnapshotFile {
                    local_name: "000001.sst".into(),
                    stream: StreamHandle::File {
                        path: "shared/a.sst".into(),
                        size: 10,
                        crc32c: 1,
                    },
                }],
                private_files: Vec::new(),
            }],
            engine: [("offset".to_string(), vec![9])].into(),
            ..SubtaskState::default()
        };
        m.add_subtask(&OperatorId::new("op").unwrap(), 2, 128, 0, state)
            .unwrap();
        m.snapshot.engine.insert("source".into(), vec![1, 2, 3]);
        m
    }

    #[test]
    fn metadata_round_trips_and_every_damage_is_an_error() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(CheckpointMetadata::decode(&bytes, "x").unwrap(), m);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x55;
            assert!(
                CheckpointMetadata::decode(&b, "chk-3/_metadata").is_err(),
                "flip at {i}"
            );
        }
        for cut in 0..bytes.len() {
            let err = CheckpointMetadata::decode(&bytes[..cut], "chk-3/_metadata").unwrap_err();
            assert!(err.to_string().contains("chk-3/_metadata"), "{err}");
        }
        assert!(
            SharedRegistry::decode(&bytes, "r").is_err(),
            "a metadata file is not a registry"
        );
    }

    #[test]
    fn registry_counts_references() {
        let mut r = SharedRegistry::default();
        r.register(1, ["shared/a".to_string(), "shared/b".to_string()]);
        r.register(2, ["shared/b".to_string(), "shared/c".to_string()]);
        assert_eq!(r.ref_count("shared/b"), 2);
        assert_eq!(r.release(1), vec!["shared/a".to_string()]);
        assert!(r.is_referenced("shared/b"));
        let mut gone = r.release(2);
        gone.sort();
        assert_eq!(gone, vec!["shared/b".to_string(), "shared/c".to_string()]);
        let bytes = r.encode().unwrap();
        assert_eq!(SharedRegistry::decode(&bytes, "r").unwrap(), r);
    }
}
