//! The heap keyed state backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use state_api::raw::format::{decode_block, open_for_restore};
use state_api::raw::type_name_of;
use state_api::raw::{Resolution, migrate_block};
use state_api::raw::{StateId, StateMeta, TtlValue, check_state_name};
use state_api::{
    BackendContext, CheckpointStorage, Clock, KeyGroupRange, KeyedBackendFactory, KeyedSnapshotHandle, Migrations,
    Namespace, Result, Schema, StateError, StateKey, StateValue, TtlConfig,
};

use state_memory::{HeapAccounting, MemoryError, SlotMemory};

use crate::table::{ErasedTable, KeyNs, KgMap, Stored, Table, key_ns_estimate};

pub(crate) struct CurrentKey<K> {
    pub(crate) key: K,
    pub(crate) key_group: u32,
    pub(crate) kg_index: usize,
}

#[derive(Default)]
pub(crate) struct CleanupCursor {
    pub(crate) kg_index: usize,
    pub(crate) credit: usize,
}

pub(crate) struct HeapState<K> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<TtlConfig>,
    pub(crate) table: Box<dyn ErasedTable<K>>,
    pub(crate) cleanup: CleanupCursor,
}

/// One key group's entries of a restored state that has not been registered yet.
#[derive(Clone)]
pub(crate) struct RawBlock {
    pub(crate) count: u64,
    pub(crate) raw: Arc<[u8]>,
    pub(crate) source: Arc<str>,
}

/// A restored state, kept as canonical bytes until it is registered (only then are its
/// types known). Unregistered states are written to later snapshots unchanged.
pub(crate) struct RestoredState {
    pub(crate) meta: StateMeta,
    pub(crate) blocks: Vec<Option<RawBlock>>,
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
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: u32,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) key_type: String,
    pub(crate) key_schema: Schema,
    pub(crate) current: Option<CurrentKey<K>>,
    pub(crate) states: Vec<HeapState<K>>,
    pub(crate) by_name: HashMap<String, StateId>,
    pub(crate) restored: BTreeMap<String, RestoredState>,
    pub(crate) key_scratch: Vec<u8>,
    /// The managed-memory budget, when the backend has one.
    pub(crate) memory: Option<HeapAccounting>,
}

/// The error a state update gets when the budget cannot cover it.
pub(crate) fn memory_error(e: MemoryError) -> StateError {
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

/// The error for a state used with other types than it was registered with.
fn mismatch<S>(meta: &StateMeta) -> StateError {
    StateError::IncompatibleType {
        name: meta.name.clone(),
        role: "value",
        existing: meta.value_type.clone(),
        requested: type_name_of::<S>(),
    }
}

pub(crate) fn unknown_id(id: StateId) -> StateError {
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
            key_schema: Schema::of::<K>(),
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
    pub(crate) fn charge(&mut self, bytes: u64) -> Result<()> {
        match &mut self.memory {
            Some(m) if bytes > 0 => m.charge(bytes).map_err(memory_error),
            _ => Ok(()),
        }
    }

    /// Gives `bytes` back to the budget, if there is one.
    pub(crate) fn release(&mut self, bytes: u64) {
        if let Some(m) = &mut self.memory {
            m.release(bytes);
        }
    }

    /// Charges the growth from `old` to `new` bytes before a write (the write is refused
    /// if it does not fit); a shrink is given back.
    pub(crate) fn account(&mut self, old: u64, new: u64) -> Result<()> {
        if new >= old {
            self.charge(new - old)
        } else {
            self.release(old - new);
            Ok(())
        }
    }

    /// Estimated bytes of the current (key, ns) entry of state `id` (0 when absent).
    pub(crate) fn current_entry_estimate<N: Namespace>(&self, id: StateId, ns: &N) -> u64 {
        match (&self.current, self.states.get(id.0 as usize)) {
            (Some(cur), Some(state)) => state.table.entry_estimate(cur.kg_index, &cur.key, ns),
            _ => 0,
        }
    }

    /// Estimated bytes of a new (key, ns) entry's key part.
    pub(crate) fn new_entry_estimate<N: Namespace>(&self, ns: &N) -> u64 {
        self.current.as_ref().map_or(0, |c| key_ns_estimate(&c.key, ns))
    }

    /// A backend restored from snapshot handles (any backend's full snapshots in the
    /// canonical format), reading only the key groups in `ctx.key_group_range`.
    pub fn restore(
        ctx: &BackendContext,
        handles: &[KeyedSnapshotHandle],
        storage: &dyn CheckpointStorage,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut backend = Self::new(ctx)?;
        let range = backend.range;
        for handle in handles {
            let Some((mut reader, mine)) = open_for_restore(
                handle,
                storage,
                (&backend.key_type, &backend.key_schema),
                backend.max_parallelism,
                range,
            )?
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
        state_api::metrics::restore("heap", started.elapsed());
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

    pub(crate) fn register_shape<N: Namespace, S: Stored>(
        &mut self,
        meta: StateMeta,
        ttl: Option<TtlConfig>,
        migrations: &Migrations,
    ) -> Result<StateId> {
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
            // Resolved before anything is taken out, so a failed registration loses nothing.
            let resolution = restored.meta.resolve(&meta, migrations)?;
            let mut migrated = 0u64;
            for (i, block) in restored.blocks.iter().enumerate() {
                if let Some(b) = block {
                    let kg = self.range.start() + i as u32;
                    let converted;
                    let raw = match resolution {
                        Resolution::AsIs => &b.raw[..],
                        Resolution::Migrate(m) => {
                            converted = migrate_block(&b.raw, &restored.meta, b.count, &b.source, kg, m)?;
                            migrated += b.count;
                            &converted[..]
                        }
                    };
                    let entries = decode_block(raw, &restored.meta, b.count, &b.source, kg)?;
                    table.load(i, &entries, &restored.meta)?;
                    raw_bytes += b.raw.len() as u64;
                }
            }
            if let Resolution::Migrate(m) = resolution {
                tracing::info!(
                    state = %meta.name,
                    from = %m.from_schema(),
                    to = %meta.value_schema,
                    entries = migrated,
                    "migrated restored state to the registered type"
                );
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

    /// The current key and the key group's map of a state, for reading.
    pub(crate) fn kg<N: Namespace, S: Stored>(&self, id: StateId) -> Result<(&K, &KgMap<K, N, S>)> {
        let cur = self.current.as_ref().ok_or_else(|| StateError::NoCurrentKey)?;
        let state = self.states.get(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        let table = state
            .table
            .as_any()
            .downcast_ref::<Table<K, N, S>>()
            .ok_or_else(|| mismatch::<S>(&state.meta))?;
        Ok((&cur.key, table.kgs[cur.kg_index].get()))
    }

    /// Adds to the current key's list in `ns`: `add` gets the existing list to extend,
    /// or `None` and returns the new list. With a memory budget, `estimate` (the bytes
    /// of the added elements, `Some` then) is charged before anything changes.
    pub(crate) fn list_add<E: StateValue, N: Namespace>(
        &mut self,
        id: StateId,
        ns: &N,
        estimate: Option<u64>,
        add: impl FnOnce(Option<&mut Vec<TtlValue<E>>>) -> Option<Vec<TtlValue<E>>>,
    ) -> Result<()> {
        if let Some(mut added) = estimate
            && self.memory.is_some()
        {
            self.kg::<N, Vec<TtlValue<E>>>(id)?;
            if self.current_entry_estimate(id, ns) == 0 {
                added += self.new_entry_estimate(ns) + std::mem::size_of::<Vec<TtlValue<E>>>() as u64;
            }
            self.charge(added)?;
        }
        let (key, map) = self.kg_mut::<N, Vec<TtlValue<E>>>(id)?;
        match map.entry_ref(&KeyNs(key, ns)) {
            EntryRef::Occupied(mut list) => {
                add(Some(list.get_mut()));
            }
            EntryRef::Vacant(slot) => {
                if let Some(list) = add(None) {
                    slot.insert(list);
                }
            }
        }
        Ok(())
    }

    /// The current key and the key group's map of a state, for writing (copies the key
    /// group first if a running snapshot still holds it).
    pub(crate) fn kg_mut<N: Namespace, S: Stored>(&mut self, id: StateId) -> Result<(&K, &mut KgMap<K, N, S>)> {
        let cur = self.current.as_ref().ok_or_else(|| StateError::NoCurrentKey)?;
        let state = self.states.get_mut(id.0 as usize).ok_or_else(|| unknown_id(id))?;
        if !state.table.as_any().is::<Table<K, N, S>>() {
            return Err(mismatch::<S>(&state.meta));
        }
        let table = state
            .table
            .as_any_mut()
            .downcast_mut::<Table<K, N, S>>()
            .ok_or_else(|| unknown_id(id))?;
        Ok((&cur.key, table.kgs[cur.kg_index].get_mut()))
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
