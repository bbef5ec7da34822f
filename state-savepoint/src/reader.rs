//! Reading a savepoint or checkpoint offline: its operators, the states they hold, and
//! their entries, typed (given the types) or raw.

use state_api::raw::format::{KeyedStreamReader, RawEntry, deserialize};
use state_api::raw::{StateMeta, StateShape};
use state_api::{
    CheckpointStorage, DefaultOperatorStateBackend, KeyedSnapshotHandle, Namespace, OperatorSnapshot, Result, Schema,
    StateError, StateKey, StateKind, StateValue,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions};

use crate::location::Location;

/// An opened savepoint or checkpoint (Flink's `SavepointReader`).
///
/// Keyed state is read from canonical streams (heap and RocksDB full snapshots,
/// savepoints); a RocksDB incremental checkpoint is listed by [`crate::inspect`] but its
/// entries need a RocksDB backend restored from it.
pub struct SavepointReader {
    location: Location,
    storage: FsCheckpointStorage,
    meta: CheckpointMetadata,
}

impl std::fmt::Debug for SavepointReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavepointReader")
            .field("location", &self.location)
            .field("checkpoint_id", &self.meta.checkpoint_id)
            .finish()
    }
}

/// One raw entry of a keyed state, with the key group it is in.
pub struct RawKeyedEntry<'a> {
    /// The key group.
    pub key_group: u32,
    /// The state's metadata (names and schemas of its types).
    pub meta: &'a StateMeta,
    /// The key type's schema.
    pub key_schema: &'a Schema,
    /// The entry's canonical bytes.
    pub entry: &'a RawEntry<'a>,
}

impl SavepointReader {
    /// Opens `uri` (`<root>/<savepoint>` or `<root>/<job>/chk-<n>`, see [`Location`]).
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with(uri, FsOptions::default())
    }

    /// Opens `uri` with storage options (S3 credentials, say).
    pub fn open_with(uri: &str, options: FsOptions) -> Result<Self> {
        let location = Location::parse(uri)?;
        let (storage, meta) = location.open(options)?;
        Ok(SavepointReader {
            location,
            storage,
            meta,
        })
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Its metadata: every operator's subtasks and their handles.
    pub fn metadata(&self) -> &CheckpointMetadata {
        &self.meta
    }

    /// The storage its files are read from.
    pub fn storage(&self) -> &FsCheckpointStorage {
        &self.storage
    }

    /// The operator `id`.
    pub fn operator(&self, id: &str) -> Result<&OperatorSnapshot> {
        self.meta.snapshot.operator(id).ok_or_else(|| StateError::UnknownState {
            name: format!("operator `{id}`"),
        })
    }

    /// The canonical keyed streams of operator `id` (every subtask's).
    pub fn keyed_handles(&self, id: &str) -> Result<Vec<&KeyedSnapshotHandle>> {
        Ok(self
            .operator(id)?
            .subtasks
            .iter()
            .flat_map(|s| s.state.keyed.iter())
            .collect())
    }

    /// The keyed states of operator `id`, as their snapshots record them.
    pub fn keyed_states(&self, id: &str) -> Result<Vec<StateMeta>> {
        let mut out: Vec<StateMeta> = Vec::new();
        let op = self.operator(id)?;
        for s in &op.subtasks {
            for h in &s.state.keyed {
                let reader = KeyedStreamReader::open(self.storage.open_input(&h.stream)?, &h.stream.describe())?;
                for m in &reader.header().states {
                    if !out.iter().any(|o| o.name == m.name) {
                        out.push(m.clone());
                    }
                }
            }
            for h in &s.state.incremental {
                for m in &h.states {
                    if !out.iter().any(|o| o.name == m.name) {
                        out.push(m.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Calls `f` with every entry of keyed state `state` of operator `id`, key group by
    /// key group, subtask by subtask. Every section read is checksummed.
    pub fn for_each_entry(
        &self,
        id: &str,
        state: &str,
        mut f: impl FnMut(RawKeyedEntry<'_>) -> Result<()>,
    ) -> Result<()> {
        let op = self.operator(id)?;
        let mut found = false;
        for s in &op.subtasks {
            if !s.state.incremental.is_empty() {
                return Err(StateError::Unsupported {
                    what: format!(
                        "reading the entries of operator `{id}`: it holds RocksDB incremental (native) snapshots; \
                         restore a RocksDB backend from them or take a savepoint"
                    ),
                });
            }
            for h in &s.state.keyed {
                let name = h.stream.describe();
                let mut reader = KeyedStreamReader::open(self.storage.open_input(&h.stream)?, &name)?;
                if !reader.header().states.iter().any(|m| m.name == state) {
                    continue;
                }
                found = true;
                let key_schema = reader.header().key_schema.clone();
                for kg in h.key_group_range.iter() {
                    let section = reader.read_section(kg)?;
                    for block in section.blocks()? {
                        if block.meta.name != state {
                            continue;
                        }
                        for entry in &block.entries {
                            f(RawKeyedEntry {
                                key_group: kg,
                                meta: block.meta,
                                key_schema: &key_schema,
                                entry,
                            })?;
                        }
                    }
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(StateError::UnknownState {
                name: format!("{state} (operator `{id}`)"),
            })
        }
    }

    /// The metadata snapshot streams record for state `state` of operator `id`.
    fn stored(&self, id: &str, state: &str) -> Result<StateMeta> {
        self.keyed_states(id)?
            .into_iter()
            .find(|m| m.name == state)
            .ok_or_else(|| StateError::UnknownState {
                name: format!("{state} (operator `{id}`)"),
            })
    }

    /// Checks that the stored state holds the requested kind and types (any TTL).
    fn check_types(stored: &StateMeta, mut requested: StateMeta) -> Result<()> {
        requested.ttl = stored.ttl;
        stored.check_compatible(&requested)
    }

    /// The entries of value (or reducing, aggregating) state `state` of operator `id`:
    /// `(key, namespace, value)`, checked against the stored schemas first.
    pub fn read_values<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        id: &str,
        state: &str,
    ) -> Result<Vec<(K, N, V)>> {
        let stored = self.stored(id, state)?;
        if stored.kind.shape() != StateShape::Value {
            return Err(shape_error(state, stored.kind, "a value"));
        }
        Self::check_types(&stored, StateMeta::of::<N, V>(state, stored.kind, None))?;
        let mut out = Vec::new();
        self.for_each_entry(id, state, |e| {
            if let RawEntry::Value {
                key, namespace, value, ..
            } = e.entry
            {
                out.push((
                    deserialize(key, state, "key")?,
                    deserialize(namespace, state, "namespace")?,
                    deserialize(value, state, "value")?,
                ));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The entries of list state `state` of operator `id`: `(key, namespace, elements)`.
    pub fn read_lists<K: StateKey, N: Namespace, V: StateValue>(
        &self,
        id: &str,
        state: &str,
    ) -> Result<Vec<(K, N, Vec<V>)>> {
        Self::check_types(
            &self.stored(id, state)?,
            StateMeta::of::<N, V>(state, StateKind::List, None),
        )?;
        let mut out = Vec::new();
        self.for_each_entry(id, state, |e| {
            if let RawEntry::List { key, namespace, items } = e.entry {
                let items = items
                    .iter()
                    .map(|(_, v)| deserialize(v, state, "element"))
                    .collect::<Result<Vec<V>>>()?;
                out.push((
                    deserialize(key, state, "key")?,
                    deserialize(namespace, state, "namespace")?,
                    items,
                ));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The entries of map state `state` of operator `id`: `(key, namespace, user key,
    /// user value)`.
    pub fn read_maps<K: StateKey, N: Namespace, UK: StateKey, UV: StateValue>(
        &self,
        id: &str,
        state: &str,
    ) -> Result<Vec<(K, N, UK, UV)>> {
        let user_key = Some((state_api::raw::type_name_of::<UK>(), state_api::Schema::of::<UK>()));
        Self::check_types(
            &self.stored(id, state)?,
            StateMeta::of::<N, UV>(state, StateKind::Map, user_key),
        )?;
        let mut out = Vec::new();
        self.for_each_entry(id, state, |e| {
            if let RawEntry::Map {
                key,
                namespace,
                entries,
            } = e.entry
            {
                let (k, n): (K, N) = (
                    deserialize(key, state, "key")?,
                    deserialize(namespace, state, "namespace")?,
                );
                for (uk, _, uv) in entries {
                    out.push((
                        k.clone(),
                        n.clone(),
                        deserialize(uk, state, "user key")?,
                        deserialize(uv, state, "user value")?,
                    ));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The operator (non-keyed) state of operator `id`, every subtask's, as one backend
    /// (list states hold every subtask's elements; register them to read).
    pub fn operator_state(&self, id: &str) -> Result<DefaultOperatorStateBackend> {
        let handles: Vec<_> = self
            .operator(id)?
            .subtasks
            .iter()
            .flat_map(|s| s.state.operator.iter().cloned())
            .collect();
        DefaultOperatorStateBackend::restore(&handles, 0, 1, &self.storage)
    }
}

fn shape_error(state: &str, kind: StateKind, wanted: &str) -> StateError {
    StateError::InvalidArgument(format!("state `{state}` is {kind:?} state, not {wanted} state"))
}
