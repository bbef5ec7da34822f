//! Writing a savepoint from typed entries (Flink's `SavepointWriter` bootstrap): a job
//! then starts with this state, restored by any backend at any parallelism.
//!
//! ```
//! use state_savepoint::{OperatorBuilder, SavepointReader, SavepointWriter};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = dir.path().to_str().unwrap();
//! let mut counts = OperatorBuilder::<String>::new("counter", 128)?;
//! counts.value_state::<u64>("count", [("alice".to_string(), 3), ("bob".to_string(), 5)])?;
//! SavepointWriter::new("bootstrap").operator(counts).write(root, "sp-1")?;
//!
//! let reader = SavepointReader::open(&format!("{root}/sp-1"))?;
//! let mut values = reader.read_values::<String, state_api::VoidNamespace, u64>("counter", "count")?;
//! values.sort_by(|a, b| a.0.cmp(&b.0));
//! assert_eq!(values[1].2, 5);
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::BTreeMap;

use state_api::keygroup::{key_group_and_bytes, key_group_range_for_operator};
use state_api::raw::format::{RawEntry, SnapshotHeader, put_raw_entry, write_keyed_stream};
use state_api::raw::{StateMeta, TtlMeta};
use state_api::{
    KeyGroupRange, Namespace, OperatorId, Result, Schema, StateError, StateKey, StateKind, StateValue, SubtaskState,
    TtlConfig, VoidNamespace,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions, SnapshotKind};

/// One state's entries, encoded, sorted by (key group, key, namespace), each (key,
/// namespace) once.
type Entries = Vec<Entry>;

struct Entry {
    key_group: u32,
    key: Vec<u8>,
    namespace: Vec<u8>,
    payload: Payload,
}

enum Payload {
    Value(Vec<u8>),
    List(Vec<Vec<u8>>),
    Map(BTreeMap<Vec<u8>, Vec<u8>>),
}

fn encode<T: serde::Serialize + ?Sized>(value: &T, state: &str, role: &'static str) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| StateError::serialization(state.to_string(), role, e))
}

/// One state of an [`OperatorBuilder`].
struct BuiltState {
    meta: StateMeta,
    entries: Entries,
    /// For a TTL state, the last-access timestamp written with every entry.
    ttl_stamp: Option<i64>,
}

/// The keyed state of one operator, with key type `K`, at a max parallelism. Entries
/// are encoded when added and held in memory until the savepoint is written.
pub struct OperatorBuilder<K> {
    id: OperatorId,
    max_parallelism: u32,
    states: Vec<BuiltState>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K: StateKey> OperatorBuilder<K> {
    /// The operator `id` with `max_parallelism` key groups (the job's max parallelism,
    /// which a restore must use too).
    pub fn new(id: &str, max_parallelism: u32) -> Result<Self> {
        key_group_range_for_operator(max_parallelism, 1, 0)?;
        Ok(OperatorBuilder {
            id: OperatorId::new(id)?,
            max_parallelism,
            states: Vec::new(),
            _k: std::marker::PhantomData,
        })
    }

    fn add(
        &mut self,
        meta: StateMeta,
        entries: impl IntoIterator<Item = Result<(K, Vec<u8>, Payload)>>,
    ) -> Result<&mut Self> {
        state_api::raw::check_state_name(&meta.name)?;
        if self.states.iter().any(|s| s.meta.name == meta.name) {
            return Err(StateError::InvalidArgument(format!(
                "state `{}` is written twice",
                meta.name
            )));
        }
        let mut grouped = Entries::new();
        for entry in entries {
            let (key, namespace, payload) = entry?;
            let mut key_bytes = Vec::new();
            let key_group = key_group_and_bytes(&key, self.max_parallelism, &mut key_bytes)?;
            grouped.push(Entry {
                key_group,
                key: key_bytes,
                namespace,
                payload,
            });
        }
        // Stable: entries of one (key, namespace) stay in the order given, so a value
        // given twice keeps the last, and list elements and map entries merge in order.
        grouped.sort_by(|a, b| (a.key_group, &a.key, &a.namespace).cmp(&(b.key_group, &b.key, &b.namespace)));
        grouped.dedup_by(|later, earlier| {
            if (later.key_group, &later.key, &later.namespace) != (earlier.key_group, &earlier.key, &earlier.namespace)
            {
                return false;
            }
            match (
                &mut earlier.payload,
                std::mem::replace(&mut later.payload, Payload::List(Vec::new())),
            ) {
                (Payload::List(items), Payload::List(more)) => items.extend(more),
                (Payload::Map(m), Payload::Map(more)) => m.extend(more),
                (slot, p) => *slot = p,
            }
            true
        });
        self.states.push(BuiltState {
            meta,
            entries: grouped,
            ttl_stamp: None,
        });
        Ok(self)
    }

    /// Gives the state `name` (added before) a time to live: a job restoring the
    /// savepoint must register it with a TTL of the same length, and every entry counts
    /// as last written at `written_at` (milliseconds on the job's clock; the bootstrap
    /// time, typically), so it expires `ttl` after that unless it is written again.
    pub fn with_ttl(&mut self, name: &str, ttl: &TtlConfig, written_at: i64) -> Result<&mut Self> {
        let state = self
            .states
            .iter_mut()
            .find(|s| s.meta.name == name)
            .ok_or_else(|| StateError::UnknownState { name: name.to_string() })?;
        state.meta.ttl = Some(TtlMeta::from(ttl));
        state.ttl_stamp = Some(written_at);
        Ok(self)
    }

    /// A value state of `V` (no namespace); a key given twice keeps its last value.
    pub fn value_state<V: StateValue>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<&mut Self> {
        self.value_state_in::<VoidNamespace, V>(name, entries.into_iter().map(|(k, v)| (k, VoidNamespace, v)))
    }

    /// A value state of `V` in namespaces of `N`.
    pub fn value_state_in<N: Namespace, V: StateValue>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, N, V)>,
    ) -> Result<&mut Self> {
        let meta = StateMeta::of::<N, V>(name, StateKind::Value, None);
        let n = name.to_string();
        self.add(
            meta,
            entries.into_iter().map(move |(k, ns, v)| {
                Ok((
                    k,
                    encode(&ns, &n, "namespace")?,
                    Payload::Value(encode(&v, &n, "value")?),
                ))
            }),
        )
    }

    /// A list state of `V` in namespaces of `N`: each entry appends its elements to
    /// its key's list.
    pub fn list_state_in<N: Namespace, V: StateValue>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, N, Vec<V>)>,
    ) -> Result<&mut Self> {
        let meta = StateMeta::of::<N, V>(name, StateKind::List, None);
        let n = name.to_string();
        self.add(
            meta,
            entries.into_iter().map(move |(k, ns, items)| {
                let items = items
                    .iter()
                    .map(|v| encode(v, &n, "element"))
                    .collect::<Result<Vec<_>>>()?;
                Ok((k, encode(&ns, &n, "namespace")?, Payload::List(items)))
            }),
        )
    }

    /// A map state from `UK` to `UV` in namespaces of `N`: each entry is one user key.
    pub fn map_state_in<N: Namespace, UK: StateKey, UV: StateValue>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (K, N, UK, UV)>,
    ) -> Result<&mut Self> {
        let user_key = Some((state_api::raw::type_name_of::<UK>(), Schema::of::<UK>()));
        let meta = StateMeta::of::<N, UV>(name, StateKind::Map, user_key);
        let n = name.to_string();
        self.add(
            meta,
            entries.into_iter().map(move |(k, ns, uk, uv)| {
                let map = BTreeMap::from([(encode(&uk, &n, "user key")?, encode(&uv, &n, "user value")?)]);
                Ok((k, encode(&ns, &n, "namespace")?, Payload::Map(map)))
            }),
        )
    }

    /// Writes the operator's canonical stream (every key group, as one subtask) to `storage`.
    fn write(self, storage: &FsCheckpointStorage, checkpoint_id: u64) -> Result<(OperatorId, u32, SubtaskState)> {
        let header = SnapshotHeader {
            key_type: state_api::raw::type_name_of::<K>(),
            key_schema: Schema::of::<K>(),
            max_parallelism: self.max_parallelism,
            key_group_range: KeyGroupRange::new(0, self.max_parallelism - 1),
            checkpoint_id,
            states: self.states.iter().map(|s| s.meta.clone()).collect(),
        };
        let states = &self.states;
        let handle = write_keyed_stream(storage, &header, &format!("keyed-{}", self.id), |kg, section| {
            for (index, state) in states.iter().enumerate() {
                let (grouped, stamp) = (&state.entries, state.ttl_stamp);
                let start = grouped.partition_point(|e| e.key_group < kg);
                for e in grouped[start..].iter().take_while(|e| e.key_group == kg) {
                    // TTL states carry each value's last-access time.
                    let ts = stamp.unwrap_or(0);
                    let (key, namespace) = (e.key.as_slice(), e.namespace.as_slice());
                    let entry = match &e.payload {
                        Payload::Value(v) => RawEntry::Value {
                            key,
                            namespace,
                            timestamp: ts,
                            value: v,
                        },
                        Payload::List(items) => RawEntry::List {
                            key,
                            namespace,
                            items: items.iter().map(|v| (ts, v.as_slice())).collect(),
                        },
                        Payload::Map(map) => RawEntry::Map {
                            key,
                            namespace,
                            entries: map.iter().map(|(uk, uv)| (uk.as_slice(), ts, uv.as_slice())).collect(),
                        },
                    };
                    put_raw_entry(section.block(), &entry, stamp.is_some());
                    section.entry_done();
                }
                section.finish_block(index as u32);
            }
            Ok(())
        })?;
        Ok((
            self.id,
            self.max_parallelism,
            SubtaskState {
                keyed: vec![handle],
                ..SubtaskState::default()
            },
        ))
    }
}

type WriteOperator = Box<dyn FnOnce(&FsCheckpointStorage, u64) -> Result<(OperatorId, u32, SubtaskState)>>;

/// Writes a savepoint of several operators' keyed state (each with its own key type).
pub struct SavepointWriter {
    job_id: String,
    operators: Vec<WriteOperator>,
}

impl SavepointWriter {
    /// A savepoint for job `job_id`.
    pub fn new(job_id: &str) -> Self {
        SavepointWriter {
            job_id: job_id.to_string(),
            operators: Vec::new(),
        }
    }

    /// Adds an operator's state.
    pub fn operator<K: StateKey>(mut self, operator: OperatorBuilder<K>) -> Self {
        self.operators.push(Box::new(move |storage, checkpoint_id| {
            operator.write(storage, checkpoint_id)
        }));
        self
    }

    /// Writes the savepoint `name` under `root` (a path, `file://`, `s3://`, `hdfs://`).
    pub fn write(self, root: &str, name: &str) -> Result<CheckpointMetadata> {
        self.write_with(root, name, FsOptions::default())
    }

    /// As [`Self::write`], with storage options.
    pub fn write_with(self, root: &str, name: &str, options: FsOptions) -> Result<CheckpointMetadata> {
        let storage = FsCheckpointStorage::savepoint(root, name, options)?;
        let checkpoint_id = 1;
        let mut meta = CheckpointMetadata::new(&self.job_id, checkpoint_id, SnapshotKind::Savepoint);
        for write in self.operators {
            let (id, max_parallelism, state) = write(&storage, checkpoint_id)?;
            meta.add_subtask(&id, 1, max_parallelism, 0, state)?;
        }
        storage.complete_checkpoint(meta.clone())?;
        Ok(meta)
    }
}
