//! The heap keyed state backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use state_api::raw::format::{SnapshotHeader, decode_block, open_for_restore, write_keyed_stream};
use state_api::raw::type_name_of;
use state_api::raw::{RawKeyedBackend, RawMapIter};
use state_api::raw::{StateId, StateMeta, TtlValue, check_state_name};
use state_api::{
    AsyncSnapshot, BackendContext, CheckpointStorage, Clock, KeyGroupRange, KeyedBackendFactory, KeyedSnapshotHandle,
    Namespace, Result, StateError, StateKey, StateValue, TtlConfig,
};

use state_memory::{HeapAccounting, MemoryError, SlotMemory};

use crate::table::{ErasedTable, KeyNs, KgMap, PinnedTable, Stored, Table, key_ns_estimate, map_entry_estimate};

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
    /// The managed-memory budget, when the backend has one.
    memory: Option<HeapAccounting>,
}

/// The error a state update gets when the budget cannot cover it.
fn memory_error(e: MemoryError) -> StateError {
    match e {
        MemoryError::Exhausted {
            requested,
            available,
            budget,
            ..
        } => StateError::MemoryExhausted {
            requested,
            available,
            budget,
            source: Some(Box::new(e)),
        },
        other => StateError::Memory {
            source: Box::new(other),
        },
    }
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
            memory: None,
        })
    }

    /// Bounds this backend's state by `slot`'s managed-memory budget (beyond Flink, whose
    /// heap backend can only run out of memory): the estimated bytes of the state are
    /// reserved from the slot, and an update that does not fit fails with
    /// [`StateError::MemoryExhausted`], leaving what is stored unchanged. Restored state
    /// already held is charged now.
    ///
    /// ```
    /// use state_api::{BackendContext, KeyedStateBackend, StateError, ValueStateDescriptor};
    /// use state_heap::HeapKeyedStateBackend;
    /// use state_memory::SlotMemory;
    ///
    /// let slot = SlotMemory::standalone(64 << 10); // 64 KiB
    /// let mut backend = HeapKeyedStateBackend::<u64>::new(&BackendContext::single(128))?.with_memory(&slot)?;
    /// let blobs = backend.register(ValueStateDescriptor::<Vec<u8>>::new("blobs"))?;
    /// backend.set_current_key(&1)?;
    /// backend.value(&blobs).update(vec![0; 40 << 10])?;
    /// backend.set_current_key(&2)?;
    /// let err = backend.value(&blobs).update(vec![0; 40 << 10]).unwrap_err();
    /// assert!(matches!(err, StateError::MemoryExhausted { .. }));
    /// backend.set_current_key(&1)?;
    /// assert_eq!(backend.value(&blobs).get()?.map(|b| b.len()), Some(40 << 10)); // nothing lost
    /// # Ok::<(), StateError>(())
    /// ```
    pub fn with_memory(mut self, slot: &SlotMemory) -> Result<Self> {
        let mut accounting = HeapAccounting::new(slot, "heap keyed state backend");
        accounting.charge(self.estimated_bytes()).map_err(memory_error)?;
        self.memory = Some(accounting);
        Ok(self)
    }

    /// Estimated bytes of the state this backend holds (registered tables and restored
    /// state not registered yet).
    pub fn estimated_bytes(&self) -> u64 {
        let tables: u64 = self.states.iter().map(|s| s.table.estimate_bytes()).sum();
        let raw: u64 = self
            .restored
            .values()
            .flat_map(|r| r.blocks.iter().flatten())
            .map(|b| b.raw.len() as u64)
            .sum();
        tables + raw
    }

    /// Bytes charged to the memory budget (`None` without a budget).
    pub fn memory_used(&self) -> Option<u64> {
        self.memory.as_ref().map(HeapAccounting::used)
    }

    /// Charges `bytes` more to the budget, if there is one.
    fn charge(&mut self, bytes: u64) -> Result<()> {
        match &mut self.memory {
            Some(m) if bytes > 0 => m.charge(bytes).map_err(memory_error),
            _ => Ok(()),
        }
    }

    /// Gives `bytes` back to the budget, if there is one.
    fn release(&mut self, bytes: u64) {
        if let Some(m) = &mut self.memory {
            m.release(bytes);
        }
    }

    /// Charges the growth from `old` to `new` bytes before a write (the write is refused
    /// if it does not fit); a shrink is given back.
    fn account(&mut self, old: u64, new: u64) -> Result<()> {
        if new >= old {
            self.charge(new - old)
        } else {
            self.release(old - new);
            Ok(())
        }
    }

    /// Estimated bytes of the current (key, ns) entry of state `id` (0 when absent).
    fn current_entry_estimate<N: Namespace>(&self, id: StateId, ns: &N) -> u64 {
        match (&self.current, self.states.get(id.0 as usize)) {
            (Some(cur), Some(state)) => state.table.entry_estimate(cur.kg_index, &cur.key, ns),
            _ => 0,
        }
    }

    /// Estimated bytes of a new (key, ns) entry's key part.
    fn new_entry_estimate<N: Namespace>(&self, ns: &N) -> u64 {
        self.current.as_ref().map_or(0, |c| key_ns_estimate(&c.key, ns))
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
        let mut raw_bytes = 0;
        if let Some(restored) = self.restored.get(&meta.name) {
            // Checked before anything is taken out, so a failed registration loses nothing.
            restored.meta.check_compatible(&meta)?;
            for (i, block) in restored.blocks.iter().enumerate() {
                if let Some(b) = block {
                    let kg = self.range.start() + i as u32;
                    let entries = decode_block(&b.raw, &restored.meta, b.count, &b.source, kg)?;
                    table.load(i, &entries, &restored.meta)?;
                    raw_bytes += b.raw.len() as u64;
                }
            }
        }
        if self.memory.is_some() {
            // The decoded table replaces the raw blocks charged at restore.
            self.account(raw_bytes, ErasedTable::<K>::estimate_bytes(&table))?;
        }
        self.restored.remove(&meta.name);
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

impl<K: StateKey> RawKeyedBackend for HeapKeyedStateBackend<K> {
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
        if self.memory.is_some() {
            self.kg::<N, TtlValue<V>>(id)?;
            let old = self.current_entry_estimate(id, ns);
            let new = self.new_entry_estimate(ns) + value.estimate();
            self.account(old, new)?;
        }
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
        if self.memory.is_some() {
            self.kg::<N, Vec<TtlValue<E>>>(id)?;
            let mut added: u64 = values.iter().map(Stored::estimate).sum();
            if self.current_entry_estimate(id, ns) == 0 {
                added += self.new_entry_estimate(ns) + std::mem::size_of::<Vec<TtlValue<E>>>() as u64;
            }
            self.charge(added)?;
        }
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
        if self.memory.is_some() {
            self.kg::<N, Vec<TtlValue<E>>>(id)?;
            let old = self.current_entry_estimate(id, ns);
            let new = self.new_entry_estimate(ns) + values.estimate();
            self.account(old, new)?;
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
        if self.memory.is_some() {
            let (old_entry, has_map) = {
                let (key, map) = self.kg::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
                match map.get(&KeyNs(key, ns)) {
                    Some(m) => (m.get(&user_key).map_or(0, |v| map_entry_estimate(&user_key, v)), true),
                    None => (0, false),
                }
            };
            let mut new = map_entry_estimate(&user_key, &value);
            if !has_map {
                new += self.new_entry_estimate(ns) + std::mem::size_of::<hashbrown::HashMap<UK, TtlValue<UV>>>() as u64;
            }
            self.account(old_entry, new)?;
        }
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
        let measure = self.memory.is_some();
        let (key, map) = self.kg_mut::<N, hashbrown::HashMap<UK, TtlValue<UV>>>(id)?;
        let mut freed = 0;
        let now_empty = match map.get_mut(&KeyNs(key, ns)) {
            Some(m) => {
                if let Some(v) = m.remove(user_key).filter(|_| measure) {
                    freed += map_entry_estimate(user_key, &v);
                }
                m.is_empty()
            }
            None => false,
        };
        if now_empty {
            if measure {
                freed += key_ns_estimate(key, ns) + std::mem::size_of::<hashbrown::HashMap<UK, TtlValue<UV>>>() as u64;
            }
            map.remove(&KeyNs(key, ns));
        }
        self.release(freed);
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
        let freed = if self.memory.is_some() {
            self.current_entry_estimate(id, ns)
        } else {
            0
        };
        let cur = self.current.as_ref().ok_or(StateError::NoCurrentKey)?;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        // Checked first so that clearing nothing never copies a key group a snapshot holds.
        if state.table.contains(cur.kg_index, &cur.key, ns) {
            state.table.remove(cur.kg_index, &cur.key, ns);
        }
        self.release(freed);
        Ok(())
    }

    fn ttl_cleanup_step(&mut self, id: StateId, entries: usize) -> Result<()> {
        let now = self.clock.now_millis();
        let n = self.range.len() as usize;
        let measure = self.memory.is_some();
        let mut freed = 0;
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
            freed += state.table.cleanup_key_group(kg, &ttl, now, measure);
            state.cleanup.kg_index = (kg + 1) % n.max(1);
        }
        self.release(freed);
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
            write_keyed_stream(storage, &header, "keyed-state", |kg, section| {
                let i = range.index_of(kg).unwrap_or_default();
                for (si, (table, cleanup)) in pinned.iter().enumerate() {
                    let filter = cleanup.as_ref().map(|t| (t, now));
                    table.write_key_group(i, section, &header.states[si], filter)?;
                    section.finish_block(si as u32);
                }
                for (ri, blocks) in raw.iter().enumerate() {
                    if let Some(b) = &blocks[i] {
                        section.raw_block((pinned.len() + ri) as u32, b.count, &b.raw);
                    }
                }
                Ok(())
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
