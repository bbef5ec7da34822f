//! Transforming a savepoint into a new one (Flink's `SavepointWriter.fromExistingSavepoint`
//! with `removeOperator` and state rewrites): drop operators or keyed states, rewrite a
//! state's values to another type; everything else is copied as it is, subtask by
//! subtask, so the new savepoint restores exactly as the old one did.
//!
//! ```
//! use state_savepoint::{OperatorBuilder, SavepointReader, SavepointTransform, SavepointWriter};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().to_str().unwrap();
//! let mut op = OperatorBuilder::<u64>::new("prices", 128)?;
//! op.value_state::<u64>("cents", (0..10).map(|k| (k, k * 100)))?;
//! op.value_state::<u8>("obsolete", [(1, 1)])?;
//! SavepointWriter::new("shop").operator(op).write(root, "v1")?;
//!
//! let old = SavepointReader::open(&format!("{root}/v1"))?;
//! SavepointTransform::new(&old)
//!     .drop_state("prices", "obsolete")
//!     .map_values("prices", "cents", |c: u64| c as f64 / 100.0)
//!     .write(root, "v2")?;
//!
//! let new = SavepointReader::open(&format!("{root}/v2"))?;
//! assert_eq!(new.keyed_states("prices")?.len(), 1);
//! let euros = new.read_values::<u64, state_api::VoidNamespace, f64>("prices", "cents")?;
//! assert!(euros.iter().all(|(k, _, v)| *v == *k as f64));
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_api::raw::format::{KeyedStreamReader, SnapshotHeader, write_keyed_stream};
use state_api::raw::{StateMeta, migrate_block, type_name_of};
use state_api::{
    CheckpointStorage, KeyedSnapshotHandle, Migration, OperatorSnapshotHandle, Result, Schema, StateError,
    StreamHandle, SubtaskState,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};

use crate::reader::SavepointReader;

/// A rewrite of one state's values: the conversion and the new value type.
struct Rewrite {
    migration: Migration,
    value_type: String,
    value_schema: Schema,
}

/// A new savepoint made from an existing one.
pub struct SavepointTransform<'r> {
    reader: &'r SavepointReader,
    dropped_operators: BTreeSet<String>,
    dropped_states: BTreeSet<(String, String)>,
    rewrites: BTreeMap<(String, String), Rewrite>,
}

impl<'r> SavepointTransform<'r> {
    /// Starts from everything `reader` holds.
    pub fn new(reader: &'r SavepointReader) -> Self {
        SavepointTransform {
            reader,
            dropped_operators: BTreeSet::new(),
            dropped_states: BTreeSet::new(),
            rewrites: BTreeMap::new(),
        }
    }

    /// Leaves operator `id` (all its state) out.
    pub fn drop_operator(mut self, id: &str) -> Self {
        self.dropped_operators.insert(id.to_string());
        self
    }

    /// Leaves keyed state `state` of operator `id` out.
    pub fn drop_state(mut self, id: &str, state: &str) -> Self {
        self.dropped_states.insert((id.to_string(), state.to_string()));
        self
    }

    /// Rewrites every value of keyed state `state` of operator `id` (values, list
    /// elements or map values) from `Old` to `New` with `f`. The stored values must be
    /// of `Old`'s schema: checked when the savepoint is written.
    pub fn map_values<Old, New>(mut self, id: &str, state: &str, f: impl Fn(Old) -> New + Send + Sync + 'static) -> Self
    where
        Old: DeserializeOwned + 'static,
        New: Serialize + DeserializeOwned + 'static,
    {
        self.rewrites.insert(
            (id.to_string(), state.to_string()),
            Rewrite {
                migration: Migration::new(f),
                value_type: type_name_of::<New>(),
                value_schema: Schema::of::<New>(),
            },
        );
        self
    }

    /// Writes the new savepoint `name` under `root`.
    pub fn write(self, root: &str, name: &str) -> Result<CheckpointMetadata> {
        self.write_with(root, name, FsOptions::default())
    }

    /// As [`Self::write`], with storage options.
    pub fn write_with(self, root: &str, name: &str, options: FsOptions) -> Result<CheckpointMetadata> {
        let source = self.reader.metadata();
        let target = FsCheckpointStorage::savepoint(root, name, options)?;
        let mut meta = CheckpointMetadata::new(&source.job_id, source.checkpoint_id, SnapshotKind::Savepoint);
        meta.snapshot.engine = source.snapshot.engine.clone();
        for key in self.dropped_states.iter().chain(self.rewrites.keys()) {
            let (op, state) = key;
            if !self.reader.keyed_states(op)?.iter().any(|m| m.name == *state) {
                return Err(StateError::UnknownState {
                    name: format!("{state} (operator `{op}`)"),
                });
            }
        }
        for op in &source.snapshot.operators {
            let id = op.id.to_string();
            if self.dropped_operators.contains(&id) {
                continue;
            }
            for s in &op.subtasks {
                let mut state = SubtaskState {
                    engine: s.state.engine.clone(),
                    ..SubtaskState::default()
                };
                for h in &s.state.keyed {
                    state.keyed.push(self.keyed(&id, h, self.reader.storage(), &target)?);
                }
                // Incremental (native) snapshots become canonical streams (the `rocksdb`
                // feature; an error naming it otherwise).
                let converted = crate::incremental::canonical(&id, &s.state.incremental, self.reader.storage())?;
                for (h, storage) in converted.iter().flat_map(crate::incremental::Converted::streams) {
                    state.keyed.push(self.keyed(&id, h, storage, &target)?);
                }
                for h in &s.state.timers {
                    state.timers.push(KeyedSnapshotHandle {
                        stream: copy(
                            self.reader.storage(),
                            &h.stream,
                            &target,
                            source.checkpoint_id,
                            "timers",
                        )?,
                        ..h.clone()
                    });
                }
                for h in &s.state.operator {
                    state.operator.push(OperatorSnapshotHandle {
                        stream: copy(
                            self.reader.storage(),
                            &h.stream,
                            &target,
                            source.checkpoint_id,
                            "operator",
                        )?,
                        ..h.clone()
                    });
                }
                meta.add_subtask(&op.id, op.parallelism, op.max_parallelism, s.index, state)?;
            }
        }
        target.complete_checkpoint(meta.clone())?;
        Ok(meta)
    }

    /// One keyed stream, with dropped states left out and rewritten states converted.
    fn keyed(
        &self,
        op: &str,
        h: &KeyedSnapshotHandle,
        source: &dyn CheckpointStorage,
        target: &FsCheckpointStorage,
    ) -> Result<KeyedSnapshotHandle> {
        let source_name = h.stream.describe();
        let mut reader = KeyedStreamReader::open(source.open_input(&h.stream)?, &source_name)?;
        let old = reader.header().clone();
        let key = |state: &str| (op.to_string(), state.to_string());
        let mut states: Vec<StateMeta> = Vec::new();
        for m in &old.states {
            if self.dropped_states.contains(&key(&m.name)) {
                continue;
            }
            let mut m = m.clone();
            if let Some(r) = self.rewrites.get(&key(&m.name)) {
                if !state_api::raw::reads_as(
                    &m.value_schema,
                    &m.value_type,
                    r.migration.from_schema(),
                    r.migration.from_type(),
                ) {
                    return Err(StateError::IncompatibleSchema {
                        name: m.name.clone(),
                        role: "value",
                        existing: m.value_schema.to_string(),
                        requested: r.migration.from_schema().to_string(),
                    });
                }
                m.value_type = r.value_type.clone();
                m.value_schema = r.value_schema.clone();
            }
            states.push(m);
        }
        let header = SnapshotHeader { states, ..old };
        let index_of = |name: &str| header.states.iter().position(|m| m.name == name);
        write_keyed_stream(target, &header, &format!("keyed-{op}"), |kg, section| {
            let data = reader.read_section(kg)?;
            for block in data.blocks()? {
                let Some(index) = index_of(&block.meta.name) else {
                    continue;
                };
                let count = block.entries.len() as u64;
                match self.rewrites.get(&key(&block.meta.name)) {
                    Some(r) => {
                        let bytes = migrate_block(block.raw, block.meta, count, &source_name, kg, &r.migration)?;
                        section.raw_block(index as u32, count, &bytes);
                    }
                    None => section.raw_block(index as u32, count, block.raw),
                }
            }
            Ok(())
        })
    }
}

/// Copies a stream into `target` as it is.
fn copy(
    from: &dyn CheckpointStorage,
    stream: &StreamHandle,
    target: &FsCheckpointStorage,
    checkpoint_id: u64,
    name: &str,
) -> Result<StreamHandle> {
    let mut bytes = Vec::new();
    from.open_input(stream)?
        .read_to_end(&mut bytes)
        .map_err(|e| StateError::from_io(format!("reading `{}`", stream.describe()), e))?;
    let mut out = target.create_output(checkpoint_id, name)?;
    out.write_all(&bytes)
        .map_err(|e| StateError::from_io(format!("copying `{}`", stream.describe()), e))?;
    out.finish()
}
