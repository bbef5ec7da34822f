//! Reading a savepoint or checkpoint offline: its operators, the states they hold, and
//! their entries, typed (given the types) or raw.

use state_api::raw::format::{KeyedStreamReader, RawEntry, deserialize};
use state_api::raw::{StateMeta, StateShape, check_key, type_name_of};
use state_api::{
    CheckpointStorage, DefaultOperatorStateBackend, KeyedSnapshotHandle, Namespace, OperatorSnapshot, Result, Schema,
    StateError, StateKey, StateKind, StateValue,
};
use state_fs::{CheckpointMetadata, FsCheckpointStorage, FsOptions};
use state_timers::{EVENT_TIME, PROCESSING_TIME, TimeDomain, timer_of};

use crate::incremental::Converted;
use crate::location::Location;

/// An opened savepoint or checkpoint (Flink's `SavepointReader`).
///
/// Keyed state is read from canonical streams (heap and RocksDB full snapshots,
/// savepoints, timers). The entries of a RocksDB incremental checkpoint are read with
/// the `rocksdb` feature: its files are downloaded to a temporary directory, opened
/// read-only and read as a full snapshot of them would read; without the feature it is
/// listed by [`crate::inspect`] and checked by [`crate::verify`] only.
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

/// One timer of a savepoint, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord<K, N> {
    /// Its queue.
    pub domain: TimeDomain,
    /// When it fires (milliseconds).
    pub timestamp: i64,
    /// The key group it is in.
    pub key_group: u32,
    /// The key it fires for.
    pub key: K,
    /// Its namespace (a window, say).
    pub namespace: N,
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

    /// The keyed states of operator `id`, as their snapshots record them (timer queues
    /// appear as the pseudo-states [`EVENT_TIME`] and [`PROCESSING_TIME`]).
    pub fn keyed_states(&self, id: &str) -> Result<Vec<StateMeta>> {
        let mut out: Vec<StateMeta> = Vec::new();
        let op = self.operator(id)?;
        for s in &op.subtasks {
            for h in s.state.keyed.iter().chain(&s.state.timers) {
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
    pub fn for_each_entry(&self, id: &str, state: &str, f: impl FnMut(RawKeyedEntry<'_>) -> Result<()>) -> Result<()> {
        self.entries_of(id, state, None, f)
    }

    /// [`for_each_entry`](Self::for_each_entry), first checking every stream's key type
    /// against `key` (name and schema) when given.
    fn entries_of(
        &self,
        id: &str,
        state: &str,
        key: Option<(&String, &Schema)>,
        mut f: impl FnMut(RawKeyedEntry<'_>) -> Result<()>,
    ) -> Result<()> {
        let op = self.operator(id)?;
        let mut found = false;
        for s in &op.subtasks {
            // Incremental (native) snapshots are read through their canonical form.
            let converted = crate::incremental::canonical(id, &s.state.incremental, &self.storage)?;
            // Timer streams hold the pseudo-states `_timers/event_time` and
            // `_timers/processing_time`, readable like any other state.
            let own = s.state.keyed.iter().chain(&s.state.timers);
            let streams = own
                .map(|h| (h, &self.storage as &dyn CheckpointStorage))
                .chain(converted.iter().flat_map(Converted::streams));
            for (h, storage) in streams {
                let name = h.stream.describe();
                let mut reader = KeyedStreamReader::open(storage.open_input(&h.stream)?, &name)?;
                if !reader.header().states.iter().any(|m| m.name == state) {
                    continue;
                }
                found = true;
                if let Some(requested) = key {
                    let header = reader.header();
                    check_key(
                        (&header.key_type, &header.key_schema),
                        (requested.0.as_str(), requested.1),
                    )?;
                }
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
        let key = (type_name_of::<K>(), Schema::of::<K>());
        self.entries_of(id, state, Some((&key.0, &key.1)), |e| {
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
        let key = (type_name_of::<K>(), Schema::of::<K>());
        self.entries_of(id, state, Some((&key.0, &key.1)), |e| {
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
        let key = (type_name_of::<K>(), Schema::of::<K>());
        self.entries_of(id, state, Some((&key.0, &key.1)), |e| {
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

    /// The timers of operator `id` (both queues, every subtask's), with keys of type `K`
    /// and namespaces of type `N`, checked against the stored schemas first; in key-group
    /// order, then firing order within a key group.
    pub fn read_timers<K: StateKey, N: Namespace>(&self, id: &str) -> Result<Vec<TimerRecord<K, N>>> {
        let op = self.operator(id)?;
        let (key, namespace) = (
            (type_name_of::<K>(), Schema::of::<K>()),
            (type_name_of::<N>(), Schema::of::<N>()),
        );
        let mut out = Vec::new();
        for h in op.subtasks.iter().flat_map(|s| &s.state.timers) {
            let name = h.stream.describe();
            let mut reader = KeyedStreamReader::open(self.storage.open_input(&h.stream)?, &name)?;
            let header = reader.header().clone();
            check_key((&header.key_type, &header.key_schema), (&key.0, &key.1))?;
            for m in &header.states {
                let mut requested = m.clone();
                requested.namespace_type = namespace.0.clone();
                requested.namespace_schema = namespace.1.clone();
                m.check_compatible(&requested)?;
            }
            for kg in h.key_group_range.iter() {
                let section = reader.read_section(kg)?;
                for block in section.blocks()? {
                    let domain = match block.meta.name.as_str() {
                        EVENT_TIME => TimeDomain::EventTime,
                        PROCESSING_TIME => TimeDomain::ProcessingTime,
                        _ => continue,
                    };
                    for entry in &block.entries {
                        if let Some(t) = timer_of(entry, kg, &name)? {
                            out.push(TimerRecord {
                                domain,
                                timestamp: t.timestamp,
                                key_group: kg,
                                key: deserialize(&t.key, &block.meta.name, "key")?,
                                namespace: deserialize(&t.namespace, &block.meta.name, "namespace")?,
                            });
                        }
                    }
                }
            }
        }
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
