//! The heap keyed state backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use state_api::format::{KeyedStreamWriter, SectionBuilder, SnapshotHeader, decode_block, open_for_restore};
use state_api::state::type_name_of;
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorage, Clock, KeyGroupRange, KeyedBackendFactory, KeyedSnapshotHandle,
    KeyedStateBackend, Namespace, RawMapIter, Result, StateError, StateId, StateKey, StateMeta, StateValue, TtlConfig,
    TtlValue, check_state_name,
};

use crate::table::{ErasedTable, KeyNs, KgMap, PinnedTable, Stored, Table};

struct CurrentKey<K> {
    key: K,
    key_group: u32,
    kg_index: usize,
}

#[derive(Default)]
struct CleanupCursor {
    kg_index: usize,
    credit: usize,
}

struct HeapState<K> {
    meta: StateMeta,
    ttl: Option<TtlConfig>,
    table: Box<dyn ErasedTable<K>>,
    cleanup: CleanupCursor,
}

/// One key group's entries of a restored state that has not been registered yet.
#[derive(Clone)]
struct RawBlock {
    count: u64,
    raw: Arc<[u8]>,
    source: Arc<str>,
}

/// A restored state, kept as canonical bytes until it is registered (only then are its
/// types known). Unregistered states are written to later snapshots unchanged.
struct RestoredState {
    meta: StateMeta,
    blocks: Vec<Option<RawBlock>>,
}

/// Keyed state as Rust values in key-group partitioned, copy-on-write tables
/// (Flink's `HashMapStateBackend`). Gets and updates do not serialize; snapshots are
/// asynchronous and the synchronous part copies no state.
///
/// ```
/// use state_api::{BackendContext, KeyedStateBackend, ListStateDescriptor};
/// use state_heap::{HeapKeyedStateBackend, MemoryCheckpointStorage};
///
/// let mut backend = HeapKeyedStateBackend::<String>::new(&BackendContext::single(128)).unwrap();
/// let recent = backend.register(ListStateDescriptor::<u32>::new("recent")).unwrap();
/// backend.set_current_key(&"alice".to_string()).unwrap();
/// backend.list(&recent).add(7).unwrap();
///
/// // Snapshot: the synchronous part returns at once; the asynchronous part can run on
/// // another thread while the backend keeps changing.
/// let pending = backend.snapshot(1).unwrap();
/// backend.list(&recent).add(8).unwrap();
/// let storage = MemoryCheckpointStorage::default();
/// let handle = pending.run(&storage).unwrap();
///
/// let mut restored = HeapKeyedStateBackend::<String>::restore(&BackendContext::single(128), &[handle], &storage).unwrap();
/// let recent = restored.register(ListStateDescriptor::<u32>::new("recent")).unwrap();
/// restored.set_current_key(&"alice".to_string()).unwrap();
/// assert_eq!(restored.list(&recent).get().unwrap(), vec![7]);
/// ```
pub struct HeapKeyedStateBackend<K: StateKey> {
    range: KeyGroupRange,
    max_parallelism: u32,
    clock: Arc<dyn Clock>,
    key_type: String,
    current: Option<CurrentKey<K>>,
    states: Vec<HeapState<K>>,
    by_name: HashMap<String, StateId>,
    restored: BTreeMap<String, RestoredState>,
    key_scratch: Vec<u8>,
}

impl<K: StateKey> std::fmt::Debug for HeapKeyedStateBackend<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapKeyedStateBackend")
            .field("key_group_range", &self.range)
            .field("max_parallelism", &self.max_parallelism)
            .field("states", &self.states.iter().map(|s| &s.meta.name).collect::<Vec<_>>())
            .field("unregistered_restored", &self.restored.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn unknown_id(id: StateId) -> StateError {
    StateError::UnknownState {
        name: format!("#{}", id.0),
    }
}

impl<K: StateKey> HeapKeyedStateBackend<K> {
    /// An empty backend.
    pub fn new(ctx: &BackendContext) -> Result<Self> {
        ctx.validate()?;
        Ok(HeapKeyedStateBackend {
            range: ctx.key_group_range,
            max_parallelism: ctx.max_parallelism,
            clock: Arc::clone(&ctx.clock),
            key_type: type_name_of::<K>(),
            current: None,
            states: Vec::new(),
            by_name: HashMap::new(),
            restored: BTreeMap::new(),
            key_scratch: Vec::new(),
        })
    }

    /// A backend restored from snapshot handles (any backend's full snapshots in the
    /// canonical format), reading only the key groups in `ctx.key_group_range`.
    pub fn restore(
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let mut backend = Self::new(ctx)?;
        let range = backend.range;
        for handle in handles {
            let Some((mut reader, mine)) =
                open_for_restore(handle, storage, &backend.key_type, backend.max_parallelism, range)?
            else {
                continue;
            };
            let name: Arc<str> = Arc::from(reader.name());
            let header = reader.header().clone();
            for meta in &header.states {
                match backend.restored.get(&meta.name) {
                    Some(existing) => existing.meta.check_compatible(meta)?,
                    None => {
                        backend.restored.insert(
                            meta.name.clone(),
                            RestoredState {
                                meta: meta.clone(),
                                blocks: vec![None; range.len() as usize],
                            },
                        );
                    }
                }
            }
            for kg in mine.iter() {
                let section = reader.read_section(kg)?;
                let slot = range.index_of(kg).unwrap_or_default();
                for block in section.blocks()? {
                    if let Some(state) = backend.restored.get_mut(&block.meta.name) {
                        state.blocks[slot] = Some(RawBlock {
                            count: block.entries.len() as u64,
                            raw: Arc::from(block.raw),
                            source: Arc::clone(&name),
                        });
                    }
                }
            }
        }
        Ok(backend)
    }

    /// Names of registered states.
    pub fn state_names(&self) -> Vec<&str> {
        self.states.iter().map(|s| s.meta.name.as_str()).collect()
    }

    /// Number of (key, namespace) entries of every registered state.
    pub fn num_entries(&self) -> usize {
        self.states.iter().map(|s| s.table.len()).sum()
    }

    fn register_shape<N: Namespace, S: Stored>(&mut self, meta: StateMeta, ttl: Option<TtlConfig>) -> Result<StateId> {
        check_state_name(&meta.name)?;
        if let Some(&id) = self.by_name.get(&meta.name) {
            let state = &self.states[id.0 as usize];
            state.meta.check_compatible(&meta)?;
            if state.table.as_any().downcast_ref::<Table<K, N, S>>().is_none() {
                return Err(StateError::IncompatibleType {
                    name: meta.name.clone(),
                    role: "value",
                    existing: state.meta.value_type.clone(),
                    requested: format!("{} (same pinned name, different Rust type)", type_name_of::<S>()),
                });
            }
            return Ok(id);
        }
        let mut table = Table::<K, N, S>::new(self.range.len() as usize);
        if let Some(restored) = self.restored.get(&meta.name) {
            // Checked before anything is taken out, so a failed registration loses nothing.
            restored.meta.check_compatible(&meta)?;
            for (i, block) in restored.blocks.iter().enumerate() {
                if let Some(b) = block {
                    let kg = self.range.start() + i as u32;
                    let entries = decode_block(&b.raw, &restored.meta, b.count, &b.source, kg)?;
                    table.load(i, &entries, &restored.meta)?;
                }
            }
            self.restored.remove(&meta.name);
        }
        let id = StateId(self.states.len() as u32);
        self.by_name.insert(meta.name.clone(), id);
        self.states.push(HeapState {
            meta,
            ttl,
            table: Box::new(table),
            cleanup: CleanupCursor::default(),
        });
        Ok(id)
    }

    fn mismatch<S>(&self, id: StateId) -> StateError {
        match self.states.get(id.0 as usize) {
            Some(state) => StateError::IncompatibleType {
                name: state.meta.name.clone(),
                role: "value",
                existing: state.meta.value_type.clone(),
                requested: type_name_of::<S>(),
            },
            None => unknown_id(id),
        }
    }

    /// The current key and the key group's map of a state, for reading.
    fn kg<N: Namespace, S: Stored>(&self, id: StateId) -> Result<(&K, &KgMap<K, N, S>)> {
        let cur = self.current.as_ref().ok_or(StateError::NoCurrentKey)?;
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        let table = state
            .table
            .as_any()
            .downcast_ref::<Table<K, N, S>>()
            .ok_or_else(|| self.mismatch::<S>(id))?;
        Ok((&cur.key, &table.kgs[cur.kg_index]))
    }

    /// The current key and the key group's map of a state, for writing (copies the key
    /// group first if a running snapshot still holds it).
    fn kg_mut<N: Namespace, S: Stored>(&mut self, id: StateId) -> Result<(&K, &mut KgMap<K, N, S>)> {
        if self
            .states
            .get(id.0 as usize)
            .is_some_and(|s| s.table.as_any().downcast_ref::<Table<K, N, S>>().is_none())
        {
            return Err(self.mismatch::<S>(id));
        }
        let cur = self.current.as_ref().ok_or(StateError::NoCurrentKey)?;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        let table = state
            .table
            .as_any_mut()
            .downcast_mut::<Table<K, N, S>>()
            .ok_or_else(|| unknown_id(id))?;
        Ok((&cur.key, Arc::make_mut(&mut table.kgs[cur.kg_index])))
    }
}

impl<K: StateKey> KeyedStateBackend for HeapKeyedStateBackend<K> {
    type Key = K;

    fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    fn set_current_key(&mut self, key: &K) -> Result<()> {
        let key_group = state_api::keygroup::key_group_and_bytes(key, self.max_parallelism, &mut self.key_scratch)?;
        let kg_index = self.range.owned_index(key_group)?;
        self.current = Some(CurrentKey {
            key: key.clone(),
            key_group,
            kg_index,
        });
        Ok(())
    }

    fn current_key(&self) -> Option<&K> {
        self.current.as_ref().map(|c| &c.key)
    }

    fn current_key_group(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.key_group)
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn register_value<V: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N, TtlValue<V>>(meta, ttl)
    }

    fn register_list<E: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N, Vec<TtlValue<E>>>(meta, ttl)
    }

    fn register_map<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
    ) -> Result<StateId> {
        self.register_shape::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(meta, ttl)
    }

    fn raw_value_read<V: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&TtlValue<V>) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, TtlValue<V>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).map(f))
    }

    fn raw_value_write<V: StateValue, N: Namespace>(&mut self, id: StateId, ns: &N, value: TtlValue<V>) -> Result<()> {
        let (key, map) = self.kg_mut::<N, TtlValue<V>>(id)?;
        match map.get_mut(&KeyNs(key, ns)) {
            Some(slot) => *slot = value,
            None => {
                map.insert((key.clone(), ns.clone()), value);
            }
        }
        Ok(())
    }

    fn raw_list_read<E: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        f: impl FnOnce(&[TtlValue<E>]) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, Vec<TtlValue<E>>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).filter(|l| !l.is_empty()).map(|l| f(l)))
    }

    fn raw_list_append<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()> {
        let (key, map) = self.kg_mut::<N, Vec<TtlValue<E>>>(id)?;
        match map.get_mut(&KeyNs(key, ns)) {
            Some(list) => list.extend(values),
            None => {
                map.insert((key.clone(), ns.clone()), values);
            }
        }
        Ok(())
    }

    fn raw_list_write<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        values: Vec<TtlValue<E>>,
    ) -> Result<()> {
        if values.is_empty() {
            return self.raw_clear(id, ns);
        }
        let (key, map) = self.kg_mut::<N, Vec<TtlValue<E>>>(id)?;
        match map.get_mut(&KeyNs(key, ns)) {
            Some(list) => *list = values,
            None => {
                map.insert((key.clone(), ns.clone()), values);
            }
        }
        Ok(())
    }

    fn raw_map_read<UK: StateKey, UV: StateValue, N: Namespace, R>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
        f: impl FnOnce(&TtlValue<UV>) -> R,
    ) -> Result<Option<R>> {
        let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        Ok(map.get(&KeyNs(key, ns)).and_then(|m| m.get(user_key)).map(f))
    }

    fn raw_map_write<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: UK,
        value: TtlValue<UV>,
    ) -> Result<()> {
        let (key, map) = self.kg_mut::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        match map.get_mut(&KeyNs(key, ns)) {
            Some(m) => {
                m.insert(user_key, value);
            }
            None => {
                let mut m = hashbrown::HashMap::new();
                m.insert(user_key, value);
                map.insert((key.clone(), ns.clone()), m);
            }
        }
        Ok(())
    }

    fn raw_map_remove<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        user_key: &UK,
    ) -> Result<()> {
        let present = {
            let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
            map.get(&KeyNs(key, ns)).is_some_and(|m| m.contains_key(user_key))
        };
        if !present {
            return Ok(());
        }
        let (key, map) = self.kg_mut::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        let now_empty = match map.get_mut(&KeyNs(key, ns)) {
            Some(m) => {
                m.remove(user_key);
                m.is_empty()
            }
            None => false,
        };
        if now_empty {
            map.remove(&KeyNs(key, ns));
        }
        Ok(())
    }

    fn raw_map_iter<UK: StateKey, UV: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
    ) -> Result<RawMapIter<'_, UK, UV>> {
        let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        match map.get(&KeyNs(key, ns)) {
            Some(m) => Ok(Box::new(m.iter().map(|(k, v)| Ok((k.clone(), v.clone()))))),
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    fn raw_clear<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<()> {
        let cur = self.current.as_ref().ok_or(StateError::NoCurrentKey)?;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        // Checked first so that clearing nothing never copies a key group a snapshot holds.
        if state.table.contains(cur.kg_index, &cur.key, ns) {
            state.table.remove(cur.kg_index, &cur.key, ns);
        }
        Ok(())
    }

    fn ttl_cleanup_step(&mut self, id: StateId, entries: usize) -> Result<()> {
        let now = self.clock.now_millis();
        let n = self.range.len() as usize;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        let Some(ttl) = state.ttl.clone() else {
            return Ok(());
        };
        // Amortized: every access earns `entries` credits; a key group is cleaned once
        // the credits cover its size, so on average `entries` entries are checked per access.
        state.cleanup.credit = state.cleanup.credit.saturating_add(entries);
        for _ in 0..n {
            let kg = state.cleanup.kg_index % n.max(1);
            let len = state.table.key_group_len(kg);
            if len > state.cleanup.credit {
                break;
            }
            state.cleanup.credit -= len;
            state.table.cleanup_key_group(kg, &ttl, now);
            state.cleanup.kg_index = (kg + 1) % n.max(1);
        }
        Ok(())
    }

    fn keys_in<N: Namespace>(&mut self, id: StateId, ns: &N) -> Result<Vec<K>> {
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        Ok(state.table.keys_in(ns))
    }

    fn snapshot(&mut self, checkpoint_id: u64) -> Result<AsyncSnapshot<KeyedSnapshotHandle>> {
        // Synchronous part: pin every key group (Arc clones) and the restored raw blocks.
        let now = self.clock.now_millis();
        let mut metas: Vec<StateMeta> = Vec::with_capacity(self.states.len() + self.restored.len());
        let mut pinned: Vec<(Box<dyn PinnedTable>, Option<TtlConfig>)> = Vec::with_capacity(self.states.len());
        for state in &self.states {
            metas.push(state.meta.clone());
            pinned.push((
                state.table.pin(),
                state.ttl.clone().filter(TtlConfig::is_cleanup_full_snapshot),
            ));
        }
        let raw: Vec<Vec<Option<RawBlock>>> = self
            .restored
            .values()
            .map(|r| {
                metas.push(r.meta.clone());
                r.blocks.clone()
            })
            .collect();
        let header = SnapshotHeader {
            key_type: self.key_type.clone(),
            max_parallelism: self.max_parallelism,
            key_group_range: self.range,
            checkpoint_id,
            states: metas,
        };
        let range = self.range;
        Ok(AsyncSnapshot::new(checkpoint_id, move |storage| {
            let mut out = storage.create_output(checkpoint_id, "keyed-state")?;
            let offsets = {
                let mut writer = KeyedStreamWriter::new(&mut *out, &header)?;
                let mut section = SectionBuilder::default();
                for (i, _kg) in range.iter().enumerate() {
                    for (si, (table, cleanup)) in pinned.iter().enumerate() {
                        let filter = cleanup.as_ref().map(|t| (t, now));
                        table.write_key_group(i, &mut section, &header.states[si], filter)?;
                        section.finish_block(si as u32);
                    }
                    for (ri, blocks) in raw.iter().enumerate() {
                        if let Some(b) = &blocks[i] {
                            section.raw_block((pinned.len() + ri) as u32, b.count, &b.raw);
                        }
                    }
                    writer.write_section(&section.take_section())?;
                }
                writer.finish()?
            };
            let stream = out.finish()?;
            Ok(KeyedSnapshotHandle {
                checkpoint_id,
                key_group_range: range,
                key_group_offsets: offsets,
                stream,
            })
        }))
    }
}

/// Creates and restores [`HeapKeyedStateBackend`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapBackendFactory;

impl KeyedBackendFactory for HeapBackendFactory {
    type Backend<K: StateKey> = HeapKeyedStateBackend<K>;

    fn name(&self) -> &str {
        "heap"
    }

    fn create<K: StateKey>(&self, ctx: &BackendContext) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::new(ctx)
    }

    fn restore<K: StateKey>(
        &self,
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<HeapKeyedStateBackend<K>> {
        HeapKeyedStateBackend::restore(ctx, handles, storage)
    }
}
